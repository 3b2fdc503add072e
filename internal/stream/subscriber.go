package stream

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/event"
)

// Delivery is one attempt to hand an event to a subscriber.
type Delivery struct {
	Topic    string
	StreamID string
	Attempt  int // 1, 2, … within this sidecar's handling of the entry
	Event    *event.Event
	// Redrive is set for a dead letter an operator sent back to this
	// group (the admin API's redrive): the receiver is told so.
	Redrive bool
}

// Handler delivers one event. A nil error acknowledges it. An error is
// retried unless it has a method Permanent() bool that returns true; a
// method RetryAfter() time.Duration > 0 sets the wait before the next try.
type Handler interface {
	Handle(ctx context.Context, d Delivery) error
}

// SubscriptionConfig says what a Subscriber reads and how it retries.
type SubscriptionConfig struct {
	Topic       string
	Group       string
	Consumer    string
	StartLatest bool // where a new group starts: "$" instead of "0"
	Concurrency int  // deliveries in flight; 1 = stream order
	// ByKey: entries are handed to workers by partition key (hash), so
	// two entries of one key are never in flight together and each key's
	// entries are delivered in stream order; keys go in parallel.
	ByKey bool
	// BatchMax > 0 delivers up to BatchMax entries per call of the
	// handler's HandleBatch (it must be a BatchHandler), waiting at most
	// BatchWait after the first entry for more.
	BatchMax  int
	BatchWait time.Duration
	// RetryFor is how long retriable failures of one entry are retried,
	// from its first attempt in this process; then it is dead-lettered.
	// 0 = forever (until MaxAttempts, if set).
	RetryFor     time.Duration
	MaxAttempts  int            // also dead-letter after this many attempts; 0 = no count limit
	Backoff      backoff.Policy // between delivery attempts
	ClaimTimeout time.Duration  // idle time after which another consumer's entry is claimed
	Grace        time.Duration  // on stop, how long in-flight deliveries may finish
	DLQMaxLen    int64          // approximate MAXLEN of the DLQ stream; 0 = unbounded
	Block        time.Duration  // XREADGROUP BLOCK; default 2s
	// Dedup, when set, reports events already delivered another way (the
	// inbox fallback); those are acknowledged without a second delivery.
	Dedup Deduper
	// Observer, when set, is told every attempt and delivery (metrics).
	Observer Observer
	// PauseCheck is how often the group's pause key is read; default
	// PauseCheck (1s).
	PauseCheck time.Duration
}

// BatchHandler delivers several events in one call (batched delivery); a
// nil error acknowledges them all, an error is classified as for Handler
// and applies to the whole batch.
type BatchHandler interface {
	HandleBatch(ctx context.Context, b Batch) error
}

// Batch is one attempt to hand several events, in stream order, to a subscriber.
type Batch struct {
	Topic   string
	Attempt int
	Events  []*event.Event
	// Redrive: a dead letter an operator sent back to this group (then
	// the batch's only event).
	Redrive bool
}

// Observer records delivery outcomes: delivered, retried, dead_lettered,
// gone, deduplicated.
type Observer interface {
	Attempt(topic, group, outcome string, d time.Duration)
	Delivered(topic, group string, eventTime time.Time)
}

type nopObserver struct{}

func (nopObserver) Attempt(string, string, string, time.Duration) {}
func (nopObserver) Delivered(string, string, time.Time)           {}

// Deduper knows events delivered outside the stream. Delivered gets the
// whole event, so it can tell the event apart from another with the same
// id; it may wait while such a delivery is still under way.
type Deduper interface {
	Delivered(ctx context.Context, ev *event.Event) bool
}

// Stats are a subscription's counters since start.
type Stats struct {
	Delivered    uint64    `json:"delivered"`
	Retried      uint64    `json:"retried"`
	DeadLettered uint64    `json:"dead_lettered"`
	Gone         uint64    `json:"gone"`         // pending entries the stream no longer held
	Deduplicated uint64    `json:"deduplicated"` // acknowledged: already delivered through the inbox
	LastDelivery time.Time `json:"last_delivery,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
}

// Subscriber consumes one topic through one consumer group and hands each
// entry to a Handler: own pending entries first, then entries idle on dead
// consumers, then new ones.
type Subscriber struct {
	rdb redis.UniversalClient
	cfg SubscriptionConfig
	h   Handler
	log zerolog.Logger
	// topic is the user's topic (cfg.Topic may be one of its partitions):
	// what deliveries and metrics name.
	topic string

	running  atomic.Bool
	inflight inflight
	// recent are entries this process delivered lately: one read again
	// from the pending history was acknowledged, and its XACK lost.
	recent *recentSet
	pause  *pauseFlag
	// setAside is set when a worker leaves an entry it was handed pending
	// because the group was paused: the reader reads its own pending
	// history again, in order, before anything new.
	setAside    atomic.Bool
	idleWorkers atomic.Int32
	lastReload  atomic.Int64 // cluster slot-map refreshes, rate-limited

	delivered, retried, deadLettered, gone, deduplicated atomic.Uint64
	mu                                                   sync.Mutex
	lastDelivery                                         time.Time
	lastError                                            string
}

// job is one stream entry handed from the reader to a worker.
type job struct {
	id     string
	values map[string]any
	// reads is how many times Redis has handed this entry to a consumer
	// (its delivery count): above 1 it was read before, by a process that
	// died or a replica that was claimed from.
	reads int64
	// reread: it came from this consumer's own pending history, not as a
	// new entry nor a claim: it may be one this process delivered whose
	// XACK was lost (a failover to a replica that never saw the XACK).
	reread bool
}

// NewSubscriber returns a Subscriber; Run starts it.
func NewSubscriber(rdb redis.UniversalClient, cfg SubscriptionConfig, h Handler, log zerolog.Logger) *Subscriber {
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	if cfg.MaxAttempts < 0 {
		cfg.MaxAttempts = 0
	}
	if cfg.Block <= 0 {
		cfg.Block = 2 * time.Second
	}
	if cfg.ClaimTimeout <= 0 {
		cfg.ClaimTimeout = 30 * time.Second
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.PauseCheck <= 0 {
		cfg.PauseCheck = PauseCheck
	}
	if _, ok := h.(BatchHandler); !ok {
		cfg.BatchMax = 0
	}
	return &Subscriber{rdb: rdb, cfg: cfg, h: h, log: log, topic: BaseTopic(cfg.Topic),
		inflight: inflight{ids: map[string]struct{}{}}, pause: newPauseFlag(), recent: newRecentSet(recentDelivered)}
}

// SetDedup sets the Deduper; call before Run.
func (s *Subscriber) SetDedup(d Deduper) { s.cfg.Dedup = d }

// Config returns the subscription's configuration.
func (s *Subscriber) Config() SubscriptionConfig { return s.cfg }

// Running reports whether the subscriber has its group and is reading.
func (s *Subscriber) Running() bool { return s.running.Load() }

// Stats returns the counters.
func (s *Subscriber) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Delivered: s.delivered.Load(), Retried: s.retried.Load(),
		DeadLettered: s.deadLettered.Load(), Gone: s.gone.Load(), Deduplicated: s.deduplicated.Load(),
		LastDelivery: s.lastDelivery, LastError: s.lastError,
	}
}

func (s *Subscriber) setLastError(err error) {
	s.mu.Lock()
	s.lastError = err.Error()
	s.mu.Unlock()
}

// Run reads and delivers until ctx is done, then stops reading and gives
// in-flight deliveries up to Grace to finish. Entries not finished stay
// pending in Redis and are delivered again after a restart.
func (s *Subscriber) Run(ctx context.Context) error {
	// Deliveries outlive ctx by Grace so a webhook mid-request can answer.
	dctx, dcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer dcancel()
	stopAfter := context.AfterFunc(ctx, func() {
		t := time.NewTimer(s.cfg.Grace)
		defer t.Stop()
		select {
		case <-t.C:
			dcancel()
		case <-dctx.Done():
		}
	})
	defer stopAfter()

	// Tokens bound the entries this consumer holds: one per worker plus a
	// small read-ahead, so the reader fetches the next entries while workers
	// deliver. Claiming from other consumers is done only for idle workers,
	// so a busy replica does not take over entries it cannot deliver now.
	per := max(s.cfg.BatchMax, 1) // entries a worker takes at once
	slots := s.cfg.Concurrency*per + max(s.cfg.Concurrency*per, readAhead)
	tokens := make(chan struct{}, slots)
	for range slots {
		tokens <- struct{}{}
	}
	// One queue shared by every worker, or under ByKey one per worker, an
	// entry going to the queue its key hashes to. Each holds a slot per
	// token, so the reader never blocks on it.
	queues := make([]chan job, 1)
	if s.cfg.ByKey {
		queues = make([]chan job, s.cfg.Concurrency)
	}
	for i := range queues {
		queues[i] = make(chan job, slots)
	}
	// The queue hash is not the partition hash: on a partitioned topic
	// every key of this stream has the same partition hash mod N, and
	// reusing it would leave all but C/gcd(N, C) workers idle.
	seed := maphash.MakeSeed()
	dispatch := func(j job) {
		q := 0
		if len(queues) > 1 {
			q = int(maphash.String(seed, event.PartitionKeyOf(j.values)) % uint64(len(queues)))
		}
		queues[q] <- j
	}
	acks := make(chan string, ackQueue)
	var acker sync.WaitGroup
	acker.Go(func() { s.ackLoop(dctx, acks) })
	var workers sync.WaitGroup
	for w := range s.cfg.Concurrency {
		jobs := queues[w%len(queues)]
		workers.Go(func() {
			for {
				s.idleWorkers.Add(1)
				j, ok := <-jobs
				s.idleWorkers.Add(-1)
				if !ok {
					return
				}
				batch := []job{j}
				if s.cfg.BatchMax > 1 {
					batch = s.gather(ctx, jobs, batch)
				}
				// Stopping: entries read ahead but not started stay pending
				// for the next start; only deliveries under way finish.
				// Paused: likewise, until the group is resumed; and once one
				// entry is set aside, every one behind it too, so the reader
				// reads them again in order.
				switch {
				case ctx.Err() != nil:
				case s.setAside.Load() || s.pause.isOn():
					s.setAside.Store(true)
				case s.cfg.BatchMax > 0:
					s.processBatch(ctx, dctx, batch, acks)
				default:
					s.process(ctx, dctx, j, acks)
				}
				for _, j := range batch {
					s.inflight.remove(j.id)
				}
				release(tokens, len(batch))
			}
		})
	}
	keepaliveDone := make(chan struct{})
	var keepalive sync.WaitGroup
	keepalive.Go(func() { s.keepAlive(dctx, keepaliveDone) })
	keepalive.Go(func() { s.watchPause(dctx, keepaliveDone) })

	s.read(ctx, dispatch, tokens)
	for _, q := range queues {
		close(q)
	}
	workers.Wait()
	close(acks) // the acker flushes what is queued, then returns
	acker.Wait()
	close(keepaliveDone)
	keepalive.Wait()
	s.running.Store(false)
	return nil
}

// gather adds to batch the entries queued behind its first, up to
// BatchMax, waiting at most BatchWait (or until ctx ends) for more.
func (s *Subscriber) gather(ctx context.Context, jobs <-chan job, batch []job) []job {
	var deadline <-chan time.Time
	if s.cfg.BatchWait > 0 {
		t := time.NewTimer(s.cfg.BatchWait)
		defer t.Stop()
		deadline = t.C
	}
	for len(batch) < s.cfg.BatchMax {
		select {
		case j, ok := <-jobs:
			if !ok {
				return batch
			}
			batch = append(batch, j)
			continue
		default:
		}
		if deadline == nil {
			return batch
		}
		select {
		case j, ok := <-jobs:
			if !ok {
				return batch
			}
			batch = append(batch, j)
		case <-deadline:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

// readAhead is the minimum number of entries read ahead of the workers.
const readAhead = 16

// claimPoll is the longest XREADGROUP block while a claim scan is unfinished.
const claimPoll = 50 * time.Millisecond

// read fetches entries and dispatches them until ctx is done. Redis errors
// back off; a lost group (NOGROUP: Redis restarted empty) is recreated.
func (s *Subscriber) read(ctx context.Context, dispatch func(job), tokens chan struct{}) {
	key := Key(s.cfg.Topic)
	var (
		needGroup     = true
		recreate      = false
		failures      = 0
		pendingCursor string
		claimCursor   = "0-0"
		nextClaim     time.Time
		claimEvery    = max(s.cfg.ClaimTimeout/2, time.Second)
		paused        = false
	)
	fail := func(what string, err error) {
		if ctx.Err() != nil {
			return
		}
		failures++
		s.setLastError(err)
		// A read whose answer was lost (Redis stopped or died after
		// handing out entries, the connection broke mid-reply) left those
		// entries pending on this consumer without our knowing: read our
		// own pending history again before anything new, or they would be
		// delivered late — out of order — when the claim scan finds them.
		pendingCursor = "0"
		if !IsRejected(err) {
			// On Cluster the slot's master may have died and its replica
			// taken over: look again now, not on go-redis's schedule.
			RefreshClusterState(s.rdb, &s.lastReload)
		}
		if failures == 1 {
			s.running.Store(false)
			s.log.Warn().Err(err).Str("op", what).Msg("subscription paused: redis error; retrying with backoff")
		}
		backoff.Sleep(ctx, backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}.Delay(failures))
	}
	for ctx.Err() == nil {
		if needGroup {
			if err := s.ensureGroup(ctx, key, recreate); err != nil {
				fail("xgroup create", err)
				continue
			}
			needGroup = false
			pendingCursor = "0" // re-deliver what this consumer had read but not acknowledged
		}
		// An operator's pause: read and claim nothing until resumed. The
		// key is read here when the watcher's view is stale (the first
		// round), so a sidecar starting on a paused group reads nothing.
		if s.pause.age() > s.cfg.PauseCheck*3/2 {
			if err := s.refreshPause(ctx); err != nil {
				fail("pause check", err)
				continue
			}
		}
		if s.pause.isOn() {
			// Paused is healthy: readiness must not turn the replica away.
			paused, failures = true, 0
			s.running.Store(true)
			if !s.waitUnpaused(ctx) {
				return
			}
			continue
		}
		if paused || s.setAside.Load() {
			// Entries handed out as the pause took hold were left pending:
			// once every worker is done with them, read this consumer's
			// pending history again, in order, before anything new.
			if !drainWorkers(ctx, tokens) {
				return
			}
			s.setAside.Store(false)
			pendingCursor, paused = "0", false
		}
		n := acquire(ctx, tokens)
		if n == 0 {
			return
		}
		var (
			msgs []redis.XMessage
			err  error
			op   string
		)
		switch {
		case pendingCursor != "":
			op = "xreadgroup pending"
			msgs, err = s.readGroup(ctx, key, pendingCursor, n, 0)
			msgs = msgs[:min(len(msgs), n)] // some Redis look-alikes ignore COUNT here
			if err == nil {
				if len(msgs) == 0 {
					pendingCursor = ""
				} else {
					pendingCursor = msgs[len(msgs)-1].ID
				}
			}
		case time.Now().After(nextClaim) && s.idleWorkers.Load() > 0:
			op = "xautoclaim"
			// As many as the idle workers take at once: a batch each
			// with batched delivery (else a dead replica's backlog
			// would go out in batches of one).
			msgs, claimCursor, err = s.autoClaim(ctx, key, claimCursor, min(n, int(s.idleWorkers.Load())*max(s.cfg.BatchMax, 1)))
			if err == nil && claimCursor == "0-0" {
				nextClaim = time.Now().Add(claimEvery)
			}
		default:
			op = "xreadgroup"
			// A read begun before a pause took hold ends within PauseCheck
			// (PauseSettle counts on it).
			block := min(s.cfg.Block, s.cfg.PauseCheck)
			if claimCursor != "0-0" {
				// A claim scan is under way and waits only for a worker to be
				// free: do not park on new entries for the full block.
				block = min(block, claimPoll)
			}
			msgs, err = s.readGroup(ctx, key, ">", n, block)
		}
		if err != nil {
			release(tokens, n)
			if isNoGroup(err) {
				// The stream or group vanished (Redis restarted without data, or
				// someone deleted it). Recreate from the start of what is there
				// now: everything in it was written after the loss.
				s.log.Warn().Str("op", op).Msg("consumer group missing; recreating it")
				needGroup, recreate = true, true
				continue
			}
			fail(op, err)
			continue
		}
		if failures > 0 || !s.running.Load() {
			if failures > 0 {
				s.log.Info().Int("failures", failures).Msg("subscription resumed")
			}
			failures = 0
			s.running.Store(true)
		}
		if len(msgs) > n {
			// Redis honours COUNT; never hold more entries than there are tokens.
			msgs = msgs[:n]
		}
		if len(msgs) > 0 && s.pause.isOn() {
			// Paused while the read was blocked: the entries stay pending
			// on this consumer and are read again after the resume.
			s.setAside.Store(true)
			release(tokens, n)
			continue
		}
		var reads map[string]int64
		if op != "xreadgroup" && len(msgs) > 0 {
			reads = s.deliveryCounts(ctx, key, msgs)
		}
		for _, m := range msgs {
			if !s.inflight.add(m.ID) {
				continue // already being delivered here
			}
			if op == "xreadgroup" {
				// A new read of an entry delivered here before: the group
				// was moved back (a seek) — an operator's replay, delivered.
				s.recent.forget(m.ID)
			}
			dispatch(job{id: m.ID, values: m.Values, reads: reads[m.ID], reread: op == "xreadgroup pending"}) // never blocks: a queue has a slot per token
			n--
		}
		release(tokens, n)
	}
}

// acquire waits for a token, then takes every other free one too; it
// returns how many it took, or 0 when ctx is done.
func acquire(ctx context.Context, tokens chan struct{}) int {
	select {
	case <-tokens:
	case <-ctx.Done():
		return 0
	}
	n := 1
	for {
		select {
		case <-tokens:
			n++
		default:
			return n
		}
	}
}

func release(tokens chan struct{}, n int) {
	for range n {
		tokens <- struct{}{}
	}
}

func (s *Subscriber) readGroup(ctx context.Context, key, id string, count int, block time.Duration) ([]redis.XMessage, error) {
	args := &redis.XReadGroupArgs{
		Group: s.cfg.Group, Consumer: s.cfg.Consumer, Streams: []string{key, id},
		Count: int64(count), Block: block,
	}
	if block == 0 {
		args.Block = -1 // no BLOCK clause: pending history answers at once
	}
	// A bound on the call, so a stalled Redis cannot hold the reader (and shutdown).
	cctx, cancel := context.WithTimeout(ctx, block+3*time.Second)
	defer cancel()
	streams, err := s.rdb.XReadGroup(cctx, args).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("xreadgroup %s %s: %w", key, id, err)
	}
	var msgs []redis.XMessage
	for _, st := range streams {
		msgs = append(msgs, st.Messages...)
	}
	return msgs, nil
}

// deliveryCounts reads how often each re-read entry was handed out
// (XPENDING), so a restart or a claim does not reset max_attempts: an event
// that crashes its sidecar every time is dead-lettered instead of looping.
// On error it returns nil: attempts then count from 1, as before.
func (s *Subscriber) deliveryCounts(ctx context.Context, key string, msgs []redis.XMessage) map[string]int64 {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	lo, hi := msgs[0].ID, msgs[0].ID
	for _, m := range msgs {
		if IDLess(m.ID, lo) {
			lo = m.ID
		}
		if IDLess(hi, m.ID) {
			hi = m.ID
		}
	}
	ext, err := s.rdb.XPendingExt(cctx, &redis.XPendingExtArgs{
		Stream: key, Group: s.cfg.Group, Start: lo, End: hi, Count: int64(len(msgs)) * 4, Consumer: s.cfg.Consumer,
	}).Result()
	if err != nil {
		return nil
	}
	out := make(map[string]int64, len(ext))
	for _, p := range ext {
		out[p.ID] = p.RetryCount
	}
	return out
}

// IDLess orders stream ids ("ms-seq") numerically.
func IDLess(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	if len(am) != len(bm) {
		return len(am) < len(bm)
	}
	if am != bm {
		return am < bm
	}
	if len(as) != len(bs) {
		return len(as) < len(bs)
	}
	return as < bs
}

func (s *Subscriber) autoClaim(ctx context.Context, key, cursor string, count int) ([]redis.XMessage, string, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	msgs, next, err := s.rdb.XAutoClaim(cctx, &redis.XAutoClaimArgs{
		Stream: key, Group: s.cfg.Group, Consumer: s.cfg.Consumer,
		MinIdle: s.cfg.ClaimTimeout, Start: cursor, Count: int64(count),
	}).Result()
	if err != nil {
		return nil, cursor, fmt.Errorf("xautoclaim %s: %w", key, err)
	}
	if len(msgs) > 0 {
		s.log.Info().Int("entries", len(msgs)).Msg("claimed entries idle on another consumer")
	}
	return msgs, next, nil
}

func (s *Subscriber) ensureGroup(ctx context.Context, key string, recreate bool) error {
	start := "0"
	if s.cfg.StartLatest && !recreate {
		start = "$"
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err := s.rdb.XGroupCreateMkStream(cctx, key, s.cfg.Group, start).Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("xgroup create %s %s: %w", key, s.cfg.Group, err)
	}
	if err == nil {
		s.log.Info().Str("start", start).Msg("consumer group created")
	}
	return nil
}

func isNoGroup(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "NOGROUP")
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, d Delivery) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, d Delivery) error { return f(ctx, d) }
