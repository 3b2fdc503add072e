// Package relay decides where a publish goes — straight to the stream, or,
// while Redis cannot take it, to the durable spool — and drains the spool
// back into the stream in order when Redis returns. Order and outages are
// per topic: a topic Redis refuses, or whose Cluster shard is down, holds
// back only itself.
package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/spool"
)

// Log is what the relay needs of the Redis stream.
type Log interface {
	Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error)
	PublishDrained(ctx context.Context, topic string, ev *event.Event, uncertain bool) (event.Receipt, error)
	// Committed ends a drain batch (the events with these ids): they are
	// all on the topic's current master and durable (replicated as
	// required); only then is the batch acknowledged in the spool.
	Committed(ctx context.Context, topic string, ids []string) error
}

// Spool is what the relay needs of the local spool: one ordered queue per topic.
type Spool interface {
	Append(topic string, ev *event.Event, flags byte) error
	Topics() []string
	Peek(topic string, max int) ([]spool.Record, error)
	Ack(topic string, drained []spool.Record) error
	Empty(topic string) bool
	Stats() spool.Stats
}

// Observer records each publish's outcome (stream, spooled, rejected) and duration.
type Observer interface {
	Published(topic, outcome string, d time.Duration)
}

type nopObserver struct{}

func (nopObserver) Published(string, string, time.Duration) {}

// Options tell the relay how to read Redis errors; the stream layer knows.
type Options struct {
	// Rejected reports an error Redis gives for this key that waiting will
	// not fix (WRONGTYPE, NOPERM): the publish fails at once, unspooled.
	// nil: every error is an outage.
	Rejected func(error) bool
	// Uncertain reports a failed write that may still have been applied
	// (no answer came); such an event is spooled marked uncertain. nil: timeouts.
	Uncertain func(error) bool
	// Observer counts publishes; nil = none.
	Observer Observer
}

// Error is a publish the relay could not accept; Code is the API's error code.
type Error struct {
	code string
	err  error
}

func (e *Error) Error() string { return e.err.Error() }
func (e *Error) Unwrap() error { return e.err }

// Code is "spool_full", "unavailable" or "redis_rejected".
func (e *Error) Code() string { return e.code }

// Relay routes publishes and drains the spool. Ordering, per topic: once
// an event of a topic is spooled, every later publish of that topic is
// spooled behind it until the drain has emptied the topic's spool, so a
// topic's events reach its stream in the order they were acknowledged.
type Relay struct {
	log       Log
	spool     Spool
	timeout   time.Duration
	deadlines *deadlines // of direct publishes (timeout)
	opts      Options
	logger    zerolog.Logger

	topics sync.Map // topic → *topicState
	wake   chan struct{}

	refusing                      atomic.Bool // the last spool append failed (full or broken), until space is freed
	spooled, drained, spoolErrors atomic.Uint64
	lastErr                       atomic.Value // string
}

// topicState is one topic's routing and drain state.
type topicState struct {
	// mu orders spool appends against the switch back to direct
	// publishing: appends hold it shared, the drainer takes it to flip.
	mu       sync.RWMutex
	spooling atomic.Bool
	draining atomic.Bool // a drain of this topic runs now
	moving   atomic.Bool // the drain is moving events into Redis (not just trying)

	// Owned by the topic's drain (one at a time).
	failures  int
	nextTry   time.Time
	failSince atomic.Int64 // unix nanos of the first failure of the current streak; 0 = none
	rejected  atomic.Bool  // the last failure was Redis refusing the key
	lastErr   atomic.Value // string
}

// New returns a Relay; timeout bounds a direct publish to Redis.
func New(log Log, sp Spool, timeout time.Duration, opts Options, logger zerolog.Logger) *Relay {
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.Rejected == nil {
		opts.Rejected = func(error) bool { return false }
	}
	if opts.Uncertain == nil {
		opts.Uncertain = isTimeout
	}
	r := &Relay{log: log, spool: sp, timeout: timeout, deadlines: newDeadlines(timeout), opts: opts, logger: logger, wake: make(chan struct{}, 1)}
	for _, t := range sp.Topics() {
		r.state(t).spooling.Store(true) // a spool left by an earlier run drains first
	}
	return r
}

func (r *Relay) state(topic string) *topicState {
	if ts, ok := r.topics.Load(topic); ok {
		return ts.(*topicState)
	}
	ts, _ := r.topics.LoadOrStore(topic, &topicState{})
	return ts.(*topicState)
}

// Publish appends ev to the stream, or to the spool when Redis does not take
// it within the timeout (or the topic's events are already waiting in the
// spool). A rejection by Redis is returned at once.
func (r *Relay) Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	start := time.Now()
	rc, err := r.publish(ctx, topic, ev)
	outcome := "stream"
	switch {
	case err != nil:
		outcome = "rejected"
	case rc.Spooled:
		outcome = "spooled"
	}
	r.opts.Observer.Published(topic, outcome, time.Since(start))
	return rc, err
}

func (r *Relay) publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	ts := r.state(topic)
	if !ts.spooling.Load() {
		// Not the request's context: a client that hangs up must not turn
		// a healthy write into a "timed-out, uncertain" outage.
		dctx := detached{Context: r.deadlines.next(time.Now()), values: context.WithoutCancel(ctx)}
		rc, err := r.log.Publish(dctx, topic, ev)
		if err == nil {
			return rc, nil
		}
		if r.opts.Rejected(err) {
			r.logger.Warn().Err(err).Str("topic", topic).Msg("redis rejected a publish; the publisher is told (not spooled)")
			return event.Receipt{}, &Error{code: "redis_rejected", err: fmt.Errorf("redis rejected the event: %w", err)}
		}
		if ts.spooling.CompareAndSwap(false, true) {
			r.logger.Warn().Err(err).Str("topic", topic).Msg("redis unavailable for this topic: publishing to the spool until it returns")
		}
		r.lastErr.Store(err.Error())
		return r.toSpool(ts, topic, ev, err)
	}
	return r.toSpool(ts, topic, ev, nil)
}

// detached is a direct publish's context: the request's values, but not
// its cancellation, and a deadline shared with the publishes that started
// at about the same time.
type detached struct {
	context.Context                 // the shared deadline: Deadline, Done, Err
	values          context.Context // the request's, without its cancellation
}

func (c detached) Value(key any) any { return c.values.Value(key) }

// deadlines bounds direct publishes without a timer per publish: the
// publishes that start within one tick share a context whose deadline is
// the tick's start plus the timeout — never later than the timeout after
// a publish starts, at most one tick (a sixty-fourth of it, ≤ 10 ms) sooner.
// Each expires on its own: at most timeout/tick are alive at a time.
type deadlines struct {
	timeout, tick time.Duration
	cur           atomic.Pointer[sharedDeadline]
}

type sharedDeadline struct {
	from   time.Time
	ctx    context.Context
	cancel context.CancelFunc // never called early: others may still use ctx; its timer ends it
}

func newDeadlines(timeout time.Duration) *deadlines {
	return &deadlines{timeout: timeout, tick: min(timeout/64, 10*time.Millisecond)}
}

// next is the deadline context of a publish starting at now.
func (d *deadlines) next(now time.Time) context.Context {
	if c := d.cur.Load(); c != nil && !now.Before(c.from) && now.Sub(c.from) < d.tick {
		return c.ctx
	}
	c := &sharedDeadline{from: now}
	c.ctx, c.cancel = context.WithDeadline(context.Background(), now.Add(d.timeout))
	d.cur.Store(c)
	return c.ctx
}

// toSpool appends ev to the spool. cause is the failed direct write that
// sent it here (nil when the topic was already spooling); one that may
// still have been applied marks the event uncertain.
func (r *Relay) toSpool(ts *topicState, topic string, ev *event.Event, cause error) (event.Receipt, error) {
	flags, uncertain := r.spoolFlags(cause)
	ts.mu.RLock()
	ts.spooling.Store(true) // under the lock, so the drainer cannot flip back past this append
	err := r.spool.Append(topic, ev, flags)
	ts.mu.RUnlock()
	r.kick()
	r.refusing.Store(err != nil)
	if err != nil {
		r.spoolErrors.Add(1)
		return event.Receipt{}, spoolRefusal(err, cause, uncertain)
	}
	r.spooled.Add(1)
	return event.Receipt{ID: ev.ID, Topic: topic, Spooled: true}, nil
}

// spoolFlags are the spool record flags of an event sent to the spool by
// cause (nil: its topic was spooling already): uncertain when that write
// may still have been applied.
func (r *Relay) spoolFlags(cause error) (flags byte, uncertain bool) {
	if cause != nil && r.opts.Uncertain(cause) {
		return spool.FlagUncertain, true
	}
	return 0, false
}

// isTimeout reports whether a failed write may still have been applied: it
// was sent but no answer came in time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		(errors.As(err, &ne) && ne.Timeout())
}

func (r *Relay) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Writable reports whether the spool can take a publish now: its last
// append did not fail (or the drain freed space since), and it is not full.
func (r *Relay) Writable() bool {
	st := r.spool.Stats()
	return !r.refusing.Load() && st.Bytes < st.MaxBytes
}

// Spooling reports whether publishes of any topic currently go to the spool.
func (r *Relay) Spooling() bool {
	spooling := false
	r.topics.Range(func(_, v any) bool {
		spooling = v.(*topicState).spooling.Load()
		return !spooling
	})
	return spooling
}

// stallAfter is how long a topic's drain may fail before readiness reports it.
const stallAfter = 10 * time.Second

// Stalled describes topics whose spool drain has made no progress for a
// while, or that Redis refuses: events wait on disk for them. Readiness
// reports these while Redis is up (then the cause is not an outage).
func (r *Relay) Stalled() []string {
	var out []string
	now := time.Now()
	r.topics.Range(func(k, v any) bool {
		ts := v.(*topicState)
		since := ts.failSince.Load()
		if since == 0 || !ts.spooling.Load() {
			return true
		}
		if ts.rejected.Load() || now.Sub(time.Unix(0, since)) >= stallAfter {
			last, _ := ts.lastErr.Load().(string)
			out = append(out, fmt.Sprintf("spool drain of topic %s makes no progress for %v: %s",
				k.(string), now.Sub(time.Unix(0, since)).Round(time.Second), last))
		}
		return true
	})
	sort.Strings(out)
	return out
}

// TopicStats is one spooling topic's drain state, for /v1/status.
type TopicStats struct {
	Topic     string    `json:"topic"`
	Draining  bool      `json:"draining"`
	Failing   time.Time `json:"failing_since,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// Stats are the relay's counters and the spool's size.
type Stats struct {
	Spooling    bool         `json:"spooling"` // publishes of some topic go to the spool
	Draining    bool         `json:"draining"` // spooled events are moving into Redis
	Spool       spool.Stats  `json:"spool"`
	Spooled     uint64       `json:"spooled"`
	Drained     uint64       `json:"drained"`
	SpoolErrors uint64       `json:"spool_errors"`
	LastError   string       `json:"last_error,omitempty"`
	Topics      []TopicStats `json:"topics,omitempty"` // topics spooling now (at most 100)
}

// maxTopicStats bounds Stats.Topics.
const maxTopicStats = 100

// Stats returns the counters now.
func (r *Relay) Stats() Stats {
	last, _ := r.lastErr.Load().(string)
	st := Stats{Spool: r.spool.Stats(), Spooled: r.spooled.Load(),
		Drained: r.drained.Load(), SpoolErrors: r.spoolErrors.Load(), LastError: last}
	r.topics.Range(func(k, v any) bool {
		ts := v.(*topicState)
		if !ts.spooling.Load() {
			return true
		}
		st.Spooling = true
		st.Draining = st.Draining || ts.moving.Load()
		if len(st.Topics) < maxTopicStats {
			le, _ := ts.lastErr.Load().(string)
			t := TopicStats{Topic: k.(string), Draining: ts.moving.Load(), LastError: le}
			if n := ts.failSince.Load(); n != 0 {
				t.Failing = time.Unix(0, n)
			}
			st.Topics = append(st.Topics, t)
		}
		return true
	})
	sort.Slice(st.Topics, func(i, j int) bool { return st.Topics[i].Topic < st.Topics[j].Topic })
	return st
}

// maxDrains bounds the topics drained at once.
const maxDrains = 16

// Run drains every topic's spool whenever it holds events, until ctx is
// done. Each topic drains on its own (up to maxDrains at once) with its own
// backoff, so one failing topic or shard does not hold back the others.
func (r *Relay) Run(ctx context.Context) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxDrains)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-tick.C:
		}
		now := time.Now()
		for _, topic := range r.pending() {
			ts := r.state(topic)
			if ts.draining.Load() || now.Before(ts.nextTry) {
				continue
			}
			select {
			case slots <- struct{}{}:
			default:
				continue // all slots busy: the next tick
			}
			ts.draining.Store(true)
			wg.Go(func() {
				defer func() { ts.draining.Store(false); <-slots }()
				r.drainTopic(ctx, topic, ts)
			})
		}
	}
}

// pending lists the topics with spooled events or still marked spooling.
func (r *Relay) pending() []string {
	seen := map[string]bool{}
	for _, t := range r.spool.Topics() {
		seen[t] = true
	}
	r.topics.Range(func(k, v any) bool {
		if v.(*topicState).spooling.Load() {
			seen[k.(string)] = true
		}
		return true
	})
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// drainTopic drains one topic; on failure it records why and when to try again.
func (r *Relay) drainTopic(ctx context.Context, topic string, ts *topicState) {
	err := r.drain(ctx, topic, ts)
	ts.moving.Store(false)
	if err == nil || ctx.Err() != nil {
		if ts.failures > 0 {
			ts.failures = 0
			ts.failSince.Store(0)
			ts.rejected.Store(false)
		}
		return
	}
	ts.failures++
	if ts.failures == 1 {
		ts.failSince.Store(time.Now().UnixNano())
		r.logger.Debug().Err(err).Str("topic", topic).Msg("spool drain waiting for redis")
	}
	rejected := r.opts.Rejected(err)
	if rejected && !ts.rejected.Load() {
		r.logger.Error().Err(err).Str("topic", topic).
			Msg("redis refuses this topic's spooled events; they stay on disk until the key is fixed (other topics are not held back)")
	}
	ts.rejected.Store(rejected)
	ts.lastErr.Store(err.Error())
	r.lastErr.Store(err.Error())
	ts.nextTry = time.Now().Add(backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}.Delay(ts.failures))
}

// drainBatch is how many spooled events one Peek/Commit/Ack round moves.
const drainBatch = 256

// drain moves every spooled event of topic into its stream, oldest first,
// then switches the topic back to direct publishing. Each batch is
// committed (replicated as required) before the spool forgets it; a batch
// that fails part-way is drained again, and the stream layer makes that
// add nothing twice.
func (r *Relay) drain(ctx context.Context, topic string, ts *topicState) error {
	start, moved, idle := time.Now(), 0, 0
	for ctx.Err() == nil {
		recs, err := r.spool.Peek(topic, drainBatch)
		if err != nil {
			return fmt.Errorf("spool peek: %w", err)
		}
		if len(recs) > 0 {
			idle = 0
		}
		if len(recs) == 0 {
			ts.mu.Lock()
			flipped := r.spool.Empty(topic)
			if flipped {
				ts.spooling.Store(false)
			}
			ts.mu.Unlock()
			if flipped {
				if moved > 0 {
					r.logger.Info().Str("topic", topic).Int("events", moved).Dur("took", time.Since(start)).
						Msg("spool drained into redis; publishing directly again")
				}
				return nil
			}
			// Appends under way (they finish within milliseconds) — or the
			// spool counts records it cannot read (damage several records
			// long): wait a little, then back off rather than spin; new
			// records still drain.
			if idle++; idle > 50 {
				return errors.New("spool counts records the drain cannot read")
			}
			time.Sleep(time.Millisecond)
			continue
		}
		done := 0
		var perr error
		ids := make([]string, 0, len(recs))
		for _, rec := range recs {
			dctx, cancel := context.WithTimeout(ctx, r.timeout*4)
			_, perr = r.log.PublishDrained(dctx, topic, rec.Event, rec.Uncertain)
			cancel()
			if perr != nil {
				break
			}
			ids = append(ids, rec.Event.ID)
			done++
		}
		if done > 0 {
			cctx, cancel := context.WithTimeout(ctx, r.timeout*4)
			cerr := r.log.Committed(cctx, topic, ids)
			cancel()
			if cerr != nil {
				return fmt.Errorf("drain commit: %w", cerr) // the batch stays in the spool
			}
			ts.moving.Store(true) // Redis takes events: the drain is under way
			if err := r.spool.Ack(topic, recs[:done]); err != nil {
				return fmt.Errorf("spool ack: %w", err)
			}
			r.refusing.Store(false) // space was freed: worth trying again
			// Progress: the topic is not stalled, whatever failed before.
			ts.failures = 0
			ts.failSince.Store(0)
			ts.rejected.Store(false)
			if moved == 0 {
				r.logger.Info().Str("topic", topic).Msg("redis is back: draining the spool")
			}
			moved += done
			r.drained.Add(uint64(done))
		}
		if perr != nil {
			return fmt.Errorf("drain: %w", perr)
		}
	}
	return ctx.Err()
}
