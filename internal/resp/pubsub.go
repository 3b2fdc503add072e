package resp

import (
	"context"
	"errors"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// errNoListener leaves an event pending in the group: nobody listens to
// its topic now; it is offered again when somebody subscribes.
var errNoListener = errors.New("no client listens to this topic")

// hub knows who listens to what and runs one feed per topic somebody
// listens to, directly (SUBSCRIBE) or through a pattern (PSUBSCRIBE).
//
// Lock order: a client's mu, then the hub's mu; a delivery takes the hub's
// mu only to list listeners, then each listener's mu on its own.
type hub struct {
	streams  Streams
	rescan   time.Duration
	reserved map[string]bool // topics read by a webhook subscription in the same group
	log      zerolog.Logger
	wake     chan struct{} // a pattern was added: list the topics now

	mu       sync.Mutex
	ctx      context.Context // Run's; feeds stop with it
	feeds    map[string]*feed
	channels map[string]map[*client]struct{} // topic → clients subscribed to it
	patterns map[string]map[*client]struct{} // pattern → clients subscribed to it
	topics   map[string]struct{}             // topics known to exist, for patterns
	running  sync.WaitGroup                  // feed goroutines
}

// feed is the reader of one topic through the consumer group.
type feed struct {
	cancel   context.CancelFunc
	done     chan struct{}
	stopping bool
}

func newHub(streams Streams, rescan time.Duration, reserved []string, log zerolog.Logger) *hub {
	res := map[string]bool{}
	for _, t := range reserved {
		res[t] = true
	}
	return &hub{
		streams: streams, rescan: rescan, reserved: res, log: log, wake: make(chan struct{}, 1),
		ctx: context.Background(), feeds: map[string]*feed{},
		channels: map[string]map[*client]struct{}{}, patterns: map[string]map[*client]struct{}{},
		topics: map[string]struct{}{},
	}
}

// begin sets the context feeds run under; call before any client is served.
func (h *hub) begin(ctx context.Context) {
	h.mu.Lock()
	h.ctx = ctx
	h.mu.Unlock()
}

// run lists the topics for patterns: at once when a pattern is added, then
// every rescan while any pattern is active. It returns when ctx is done.
func (h *hub) run(ctx context.Context) {
	t := time.NewTicker(h.rescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.wake:
		}
		h.mu.Lock()
		active := len(h.patterns) > 0
		h.mu.Unlock()
		if !active {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		topics, err := h.streams.Topics(lctx)
		cancel()
		if err != nil {
			h.log.Debug().Err(err).Msg("listing topics for patterns failed; trying again later")
			continue
		}
		for _, t := range topics {
			h.known(t)
		}
	}
}

// wait returns when every feed has stopped; call once no client is left.
func (h *hub) wait() { h.running.Wait() }

// known records that topic exists; a pattern that matches it starts its
// feed. Reserved topics are never known: no pattern reaches them.
func (h *hub) known(topic string) {
	if h.reserved[topic] {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.topics[topic]; ok {
		return
	}
	h.topics[topic] = struct{}{}
	if len(h.patterns) > 0 {
		h.sync(topic)
	}
}

// add registers c for a channel or pattern; the caller holds c.mu and has
// written the confirmation, so no message can overtake it.
func (h *hub) add(c *client, pattern bool, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.channels
	if pattern {
		set = h.patterns
	}
	if set[name] == nil {
		set[name] = map[*client]struct{}{}
	}
	set[name][c] = struct{}{}
	h.syncCovered(pattern, name)
	if !pattern {
		return
	}
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// remove unregisters c from a channel or pattern; the caller holds c.mu.
func (h *hub) remove(c *client, pattern bool, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.channels
	if pattern {
		set = h.patterns
	}
	delete(set[name], c)
	if len(set[name]) == 0 {
		delete(set, name)
	}
	h.syncCovered(pattern, name)
}

// syncCovered syncs the topics a channel (itself) or a pattern (every
// known topic it matches) covers; the caller holds h.mu.
func (h *hub) syncCovered(pattern bool, name string) {
	if !pattern {
		h.sync(name)
		return
	}
	for t := range h.topics {
		if match(name, t) {
			h.sync(t)
		}
	}
}

// leaveAll unregisters every subscription of c (it is gone or RESET).
func (h *hub) leaveAll(c *client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.channels {
		h.remove(c, false, ch)
	}
	for p := range c.patterns {
		h.remove(c, true, p)
	}
	clear(c.channels)
	clear(c.patterns)
}

// listeners are the clients that listen to topic now. Called with h.mu held.
func (h *hub) listeners(topic string) []*client {
	var out []*client
	for c := range h.channels[topic] {
		out = append(out, c)
	}
	if _, ok := h.topics[topic]; ok || len(h.channels[topic]) > 0 {
		for p, cs := range h.patterns {
			if !match(p, topic) {
				continue
			}
			for c := range cs {
				if !slices.Contains(out, c) {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// sync starts topic's feed when somebody listens and none runs, and stops
// it when nobody does. Called with h.mu held.
func (h *hub) sync(topic string) {
	wanted := len(h.listeners(topic)) > 0
	f := h.feeds[topic]
	switch {
	case wanted && (f == nil || f.stopping):
		h.feeds[topic] = h.start(topic, f)
	case !wanted && f != nil && !f.stopping:
		f.stopping = true
		f.cancel()
	}
}

// start runs a feed for topic. A feed that is still stopping is waited
// for first: two readers under one consumer name would hand out the same
// pending entries twice.
func (h *hub) start(topic string, prev *feed) *feed {
	ctx, cancel := context.WithCancel(h.ctx)
	f := &feed{cancel: cancel, done: make(chan struct{})}
	log := h.log.With().Str("topic", topic).Logger()
	h.running.Go(func() {
		defer close(f.done)
		if prev != nil {
			<-prev.done
		}
		log.Debug().Msg("feed started")
		for attempt := 1; ctx.Err() == nil; attempt++ {
			err := h.streams.Consume(ctx, topic, func(_ context.Context, ev *event.Event) error {
				return h.deliver(topic, ev)
			})
			if err == nil || ctx.Err() != nil {
				break
			}
			log.Warn().Err(err).Msg("feed failed; restarting")
			select {
			case <-ctx.Done():
			case <-time.After(min(100*time.Millisecond<<min(attempt, 6), 5*time.Second)):
			}
		}
		log.Debug().Msg("feed stopped")
	})
	return f
}

// deliver writes an event to every client that listens to its topic. It is
// delivered when at least one of them took it.
func (h *hub) deliver(topic string, ev *event.Event) error {
	h.mu.Lock()
	cs := h.listeners(topic)
	h.mu.Unlock()
	n := 0
	for _, c := range cs {
		if c.message(topic, ev.Data) {
			n++
		}
	}
	if n == 0 {
		return errNoListener
	}
	return nil
}

// message writes a Pub/Sub message (and a pmessage per matching pattern)
// and flushes it; false when the client no longer listens or the write failed.
func (c *client) message(topic string, data []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken {
		return false
	}
	o := out{w: c.w, proto: c.proto}
	wrote := false
	if _, ok := c.channels[topic]; ok {
		o.push(3)
		o.bulkString("message")
		o.bulkString(topic)
		o.bulk(data)
		wrote = true
	}
	for p := range c.patterns {
		if match(p, topic) {
			o.push(4)
			o.bulkString("pmessage")
			o.bulkString(p)
			o.bulkString(topic)
			o.bulk(data)
			wrote = true
		}
	}
	return wrote && c.flushLocked()
}

// subscribe is SUBSCRIBE / PSUBSCRIBE: one confirmation per name, with the
// connection's subscription count, as Redis sends them.
func (c *client) subscribe(pattern bool, names []string) {
	kind := "subscribe"
	if pattern {
		kind = "psubscribe"
	} else {
		for _, n := range names {
			if err := event.ValidateTopic(n); err != nil {
				c.write(func(o out) { o.err("ERR " + err.Error()) })
				return
			}
			if c.s.hub.reserved[n] {
				c.write(func(o out) {
					o.err("ERR topic " + n + " is delivered to a webhook by this sidecar's subscription in the same consumer group; subscribe through another sidecar (another service name)")
				})
				return
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	o := out{w: c.w, proto: c.proto}
	for _, n := range names {
		set := c.channels
		if pattern {
			set = c.patterns
		}
		_, had := set[n]
		set[n] = struct{}{}
		o.push(3)
		o.bulkString(kind)
		o.bulkString(n)
		o.integer(int64(len(c.channels) + len(c.patterns)))
		if !had {
			c.s.hub.add(c, pattern, n)
		}
	}
}

// unsubscribe is UNSUBSCRIBE / PUNSUBSCRIBE: the named ones, or all.
func (c *client) unsubscribe(pattern bool, names []string) {
	kind := "unsubscribe"
	if pattern {
		kind = "punsubscribe"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	set := c.channels
	if pattern {
		set = c.patterns
	}
	if len(names) == 0 {
		for n := range set {
			names = append(names, n)
		}
		slices.Sort(names)
	}
	o := out{w: c.w, proto: c.proto}
	if len(names) == 0 {
		o.push(3)
		o.bulkString(kind)
		o.null()
		o.integer(int64(len(c.channels) + len(c.patterns)))
		return
	}
	for _, n := range names {
		if _, ok := set[n]; ok {
			delete(set, n)
			c.s.hub.remove(c, pattern, n)
		}
		o.push(3)
		o.bulkString(kind)
		o.bulkString(n)
		o.integer(int64(len(c.channels) + len(c.patterns)))
	}
}

// match is Redis's glob (*, ?, [...], \ escapes) on a topic name; topic
// names have no '/', so path.Match's rules are the same. A malformed
// pattern matches nothing.
func match(pattern, topic string) bool {
	ok, err := path.Match(pattern, topic)
	return ok && err == nil
}
