package inbox

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/event"
)

// Defaults for a Target's zero fields.
const (
	// DefaultRetryFor matches the subscription's documented retry_for.
	DefaultRetryFor = 24 * time.Hour
	// DefaultQueueEvents holds minutes of an outage at the rates the
	// inbox is for (a publisher's events while Redis is down); past it a
	// refusal costs only latency, because the sender keeps the event in
	// its spool and the stream copy arrives when Redis returns.
	DefaultQueueEvents = 1000
	// DefaultQueueBytes bounds what one subscription's queue holds of
	// event data: 16 largest (1 MiB) events, or thousands of ordinary
	// ones. The Go heap may grow to about twice what is live before it
	// collects, so a full queue costs up to ~32 MiB of RSS beside an
	// idle sidecar's ~16 MB — memory a sidecar in a small pod can spare.
	DefaultQueueBytes = 16 << 20
)

// Target is one subscription the inbox delivers to.
type Target struct {
	Key   string // unique per subscription, e.g. topic/group
	Topic string
	// Deliver makes one delivery attempt. It must return soon after ctx
	// is cancelled: Run waits for it when stopping.
	Deliver func(ctx context.Context, attempt int, ev *event.Event) error
	// Concurrency is how many deliveries are in flight at once; 1 (and
	// below) means one at a time, in arrival order.
	Concurrency int
	// RetryFor is how long retriable failures are retried, counted from
	// the first attempt; 0 means DefaultRetryFor.
	RetryFor time.Duration
	// MaxAttempts caps attempts as well; 0 = no count limit.
	MaxAttempts int
	Backoff     backoff.Policy
	// QueueEvents and QueueBytes bound the events accepted and not yet
	// finished (queued or being delivered); 0 means the default.
	QueueEvents int
	QueueBytes  int64
}

// ErrNoSubscription is returned for a topic this sidecar does not subscribe to.
var ErrNoSubscription error = codedError{"no_subscription", "this sidecar has no subscription for the topic"}

// ErrClosed is returned once the inbox is shutting down.
var ErrClosed error = codedError{"unavailable", "inbox is shutting down"}

// ErrFull is returned when a subscription's queue is at its bound. Nothing
// is lost by refusing: the sender keeps the event in its spool and the copy
// that arrives through the stream is delivered then.
var ErrFull error = codedError{"inbox_full", "inbox queue is full; the event will be delivered from the stream when redis returns"}

// codedError carries the API's error code (the HTTP layer reads Code).
type codedError struct{ code, msg string }

func (e codedError) Error() string { return e.msg }
func (e codedError) Code() string  { return e.code }

// Inbox delivers fallback events to local subscriptions: per subscription a
// FIFO queue, bounded in events and bytes, served by Concurrency workers
// that Run starts and waits for.
type Inbox struct {
	ledger *Ledger
	topics map[string][]*queue
	queues []*queue
	grace  time.Duration
	log    zerolog.Logger

	// mu makes Accept all-or-nothing across a topic's queues and orders
	// it against Run closing the inbox; it guards every queue's counters.
	mu     sync.Mutex
	closed bool
}

// queue is one subscription's waiting room.
type queue struct {
	t      Target
	events chan item // FIFO; capacity t.QueueEvents, so a send under the bound never blocks
	held   int       // accepted, not finished (queued or in delivery)
	bytes  int64     // their data
	full   bool      // refusing now: logged once per episode
}

// item is an accepted event and its ledger digest.
type item struct {
	ev     *event.Event
	digest string
}

// New returns an Inbox for these targets. It starts nothing: Run does.
func New(ledger *Ledger, targets []Target, grace time.Duration, log zerolog.Logger) *Inbox {
	in := &Inbox{ledger: ledger, topics: map[string][]*queue{}, grace: grace, log: log}
	for _, t := range targets {
		t.Concurrency = max(t.Concurrency, 1)
		if t.RetryFor <= 0 {
			t.RetryFor = DefaultRetryFor
		}
		if t.QueueEvents <= 0 {
			t.QueueEvents = DefaultQueueEvents
		}
		if t.QueueBytes <= 0 {
			t.QueueBytes = DefaultQueueBytes
		}
		q := &queue{t: t, events: make(chan item, t.QueueEvents)}
		in.topics[t.Topic] = append(in.topics[t.Topic], q)
		in.queues = append(in.queues, q)
	}
	return in
}

// Accept queues ev for every subscription of topic it was not delivered
// (or queued) to already, and returns how many deliveries it queued. It
// never waits for a delivery. When any of those queues is at its bound it
// queues none and returns ErrFull, leaving no trace in the ledger.
func (in *Inbox) Accept(topic string, ev *event.Event) (int, error) {
	queues := in.topics[topic]
	if len(queues) == 0 {
		return 0, ErrNoSubscription
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return 0, ErrClosed
	}
	size := int64(len(ev.Data))
	d := digest(topic, ev)
	var begun []*queue
	for _, q := range queues {
		if in.ledger.begin(q.t.Key, d) {
			begun = append(begun, q)
		}
	}
	for _, q := range begun {
		if q.fits(size) {
			continue
		}
		for _, b := range begun {
			_ = in.ledger.end(b.t.Key, d, false) // not delivered: writes nothing
		}
		return 0, in.refuse(q)
	}
	for _, q := range begun {
		q.held++
		q.bytes += size
		q.full = false
		q.events <- item{ev: ev, digest: d}
	}
	return len(begun), nil
}

// Room returns ErrFull when an event of size bytes for topic would be
// refused now, else nil. It lets the HTTP handler refuse a flood before
// reading bodies it would throw away (read and dropped, they tripled the
// sidecar's memory growth); Accept still decides. The error names no
// subscription: the caller is not yet authenticated.
func (in *Inbox) Room(topic string, size int64) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, q := range in.topics[topic] {
		if !q.fits(size) {
			_ = in.refuse(q) // for its log line
			return ErrFull
		}
	}
	return nil
}

// fits reports whether q has room for an event of size bytes. One event
// always fits an empty queue, so an event larger than the byte bound is
// slow, not refused forever. The caller holds Inbox.mu.
func (q *queue) fits(size int64) bool {
	return q.held == 0 || (q.held < q.t.QueueEvents && q.bytes+size <= q.t.QueueBytes)
}

// refuse returns q's ErrFull, logging once per episode of refusals rather
// than once per request. The caller holds Inbox.mu.
func (in *Inbox) refuse(q *queue) error {
	if !q.full {
		q.full = true
		in.log.Warn().Str("subscription", q.t.Key).Int("events", q.held).Int64("bytes", q.bytes).
			Msg("inbox: queue full, refusing fallback events; they arrive through the stream when redis returns")
	}
	return fmt.Errorf("subscription %s holds %d events, %d bytes: %w", q.t.Key, q.held, q.bytes, ErrFull)
}

// release gives back the room ev took in q once it is finished.
func (in *Inbox) release(q *queue, ev *event.Event) {
	in.mu.Lock()
	q.held--
	q.bytes -= int64(len(ev.Data))
	in.mu.Unlock()
}

// Deduper returns the view of the ledger a subscriber uses for key: it asks
// about the events it reads from the stream.
func (in *Inbox) Deduper(key string) interface {
	Delivered(ctx context.Context, ev *event.Event) bool
} {
	for _, q := range in.queues {
		if q.t.Key == key {
			return dedup{l: in.ledger, key: key, topic: q.t.Topic}
		}
	}
	return nothingDelivered{} // no target: the inbox never delivers for key
}

type dedup struct {
	l          *Ledger
	key, topic string
}

func (d dedup) Delivered(ctx context.Context, ev *event.Event) bool {
	return d.l.Delivered(ctx, d.key, digest(d.topic, ev))
}

type nothingDelivered struct{}

func (nothingDelivered) Delivered(context.Context, *event.Event) bool { return false }

// Run starts each subscription's workers and owns them until ctx is done.
// Then it refuses new events, lets deliveries under way finish for up to
// grace (after which their context is cancelled), waits for the workers,
// and releases what was queued but not started: the stream copies of those
// events will be delivered instead. Run is called once.
func (in *Inbox) Run(ctx context.Context) error {
	// Deliveries outlive ctx by grace so a webhook mid-request can answer.
	dctx, dcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer dcancel()
	var workers sync.WaitGroup
	for _, q := range in.queues {
		for range q.t.Concurrency {
			workers.Go(func() { in.work(ctx, dctx, q) })
		}
	}
	<-ctx.Done()
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()

	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(in.grace):
		in.log.Warn().Msg("inbox: grace period ended with deliveries under way; their stream copies will be delivered")
		dcancel()
		<-done
	}
	for _, q := range in.queues {
		for len(q.events) > 0 {
			in.abandon(q, <-q.events)
		}
	}
	return nil
}

// abandon ends an event's inbox delivery unstarted, so the subscriber's
// stream copy does not wait for it.
func (in *Inbox) abandon(q *queue, it item) {
	_ = in.ledger.end(q.t.Key, it.digest, false)
	in.release(q, it.ev)
}
