package inbox

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/event"
)

// Target is one subscription the inbox delivers to.
type Target struct {
	Key         string // unique per subscription, e.g. topic/group
	Topic       string
	Deliver     func(ctx context.Context, attempt int, ev *event.Event) error
	MaxAttempts int
	Backoff     backoff.Policy
}

// ErrNoSubscription is returned for a topic this sidecar does not subscribe to.
var ErrNoSubscription error = codedError{"no_subscription", "this sidecar has no subscription for the topic"}

// ErrClosed is returned once the inbox is shutting down.
var ErrClosed error = codedError{"unavailable", "inbox is shutting down"}

// codedError carries the API's error code (the HTTP layer reads Code).
type codedError struct{ code, msg string }

func (e codedError) Error() string { return e.msg }
func (e codedError) Code() string  { return e.code }

// Inbox delivers fallback events to local subscriptions. Deliveries run in
// goroutines that Run owns: it waits for them (up to grace) when stopping.
type Inbox struct {
	ledger  *Ledger
	targets map[string][]Target
	grace   time.Duration
	log     zerolog.Logger

	ctx    context.Context // set by Run; deliveries stop retrying when it ends
	ready  chan struct{}
	wg     sync.WaitGroup
	stopMu sync.RWMutex
	closed bool
}

// New returns an Inbox for these targets.
func New(ledger *Ledger, targets []Target, grace time.Duration, log zerolog.Logger) *Inbox {
	in := &Inbox{ledger: ledger, targets: map[string][]Target{}, grace: grace, log: log, ready: make(chan struct{})}
	for _, t := range targets {
		in.targets[t.Topic] = append(in.targets[t.Topic], t)
	}
	return in
}

// Accept starts delivering ev to every subscription of topic, unless it was
// delivered already. It returns how many deliveries it started.
func (in *Inbox) Accept(topic string, ev *event.Event) (int, error) {
	targets := in.targets[topic]
	if len(targets) == 0 {
		return 0, ErrNoSubscription
	}
	in.stopMu.RLock()
	defer in.stopMu.RUnlock()
	if in.closed {
		return 0, ErrClosed
	}
	<-in.ready
	started := 0
	for _, t := range targets {
		if !in.ledger.begin(t.Key, ev.ID) {
			continue
		}
		started++
		in.wg.Go(func() { in.deliver(t, ev) })
	}
	return started, nil
}

func (in *Inbox) deliver(t Target, ev *event.Event) {
	log := in.log.With().Str("subscription", t.Key).Str("event_id", ev.ID).Logger()
	dctx := context.WithoutCancel(in.ctx)
	for attempt := 1; ; attempt++ {
		err := t.Deliver(dctx, attempt, ev)
		if err == nil {
			if lerr := in.ledger.end(t.Key, ev.ID, true); lerr != nil {
				log.Error().Err(lerr).Msg("inbox: delivered, but could not record it; the stream copy may be delivered again")
			}
			log.Debug().Int("attempt", attempt).Msg("inbox: delivered")
			return
		}
		var p interface{ Permanent() bool }
		if (errors.As(err, &p) && p.Permanent()) || attempt >= t.MaxAttempts || !backoff.Sleep(in.ctx, t.Backoff.Delay(attempt)) {
			// The stream copy will arrive later and go through the full
			// policy (retries, DLQ); nothing is lost by giving up here.
			_ = in.ledger.end(t.Key, ev.ID, false)
			log.Warn().Err(err).Int("attempts", attempt).Msg("inbox: delivery failed; the stream copy will be retried when redis returns")
			return
		}
	}
}

// Deduper returns the view of the ledger a subscriber uses for key.
func (in *Inbox) Deduper(key string) interface {
	Delivered(ctx context.Context, id string) bool
} {
	return dedup{l: in.ledger, key: key}
}

type dedup struct {
	l   *Ledger
	key string
}

func (d dedup) Delivered(ctx context.Context, id string) bool { return d.l.Delivered(ctx, d.key, id) }

// Run owns the inbox's deliveries until ctx is done, then waits up to grace
// for those under way.
func (in *Inbox) Run(ctx context.Context) error {
	in.ctx = ctx
	close(in.ready)
	<-ctx.Done()
	in.stopMu.Lock()
	in.closed = true
	in.stopMu.Unlock()
	done := make(chan struct{})
	go func() { in.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(in.grace):
		in.log.Warn().Msg("inbox: grace period ended with deliveries under way; their stream copies will be delivered")
	}
	return nil
}
