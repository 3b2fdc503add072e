// Package relay decides where a publish goes — straight to the stream, or,
// while Redis is unavailable, to the durable spool — and drains the spool
// back into the stream in order when Redis returns.
package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
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
}

// Spool is what the relay needs of the local spool.
type Spool interface {
	Append(topic string, ev *event.Event, flags byte) error
	Peek(max int) ([]spool.Record, error)
	Ack(drained []spool.Record) error
	Empty() bool
	Stats() spool.Stats
}

// Observer records each publish's outcome (stream, spooled, rejected) and duration.
type Observer interface {
	Published(topic, outcome string, d time.Duration)
}

type nopObserver struct{}

func (nopObserver) Published(string, string, time.Duration) {}

// Error is a publish the relay could not accept; Code is the API's error code.
type Error struct {
	code string
	err  error
}

func (e *Error) Error() string { return e.err.Error() }
func (e *Error) Unwrap() error { return e.err }

// Code is "spool_full" or "unavailable".
func (e *Error) Code() string { return e.code }

// Relay routes publishes and drains the spool. Ordering: once an event is
// spooled, every later publish is spooled behind it until the drain has
// emptied the spool, so events reach the stream in the order they were
// acknowledged.
type Relay struct {
	log     Log
	spool   Spool
	timeout time.Duration
	obs     Observer
	logger  zerolog.Logger

	// mu orders spool appends against the switch back to direct publishing:
	// appends hold it shared, the drainer takes it exclusively to flip.
	mu       sync.RWMutex
	spooling atomic.Bool
	draining atomic.Bool // the drainer is moving spooled events into Redis now
	wake     chan struct{}

	refusing                      atomic.Bool // the last spool append failed (full or broken), until space is freed
	spooled, drained, spoolErrors atomic.Uint64
	lastErr                       atomic.Value // string
}

// New returns a Relay; timeout bounds a direct publish to Redis. obs may be nil.
func New(log Log, sp Spool, timeout time.Duration, obs Observer, logger zerolog.Logger) *Relay {
	if obs == nil {
		obs = nopObserver{}
	}
	r := &Relay{log: log, spool: sp, timeout: timeout, obs: obs, logger: logger, wake: make(chan struct{}, 1)}
	if !sp.Empty() {
		r.spooling.Store(true) // a spool left by an earlier run drains first
	}
	return r
}

// Publish appends ev to the stream, or to the spool when Redis does not take
// it within the timeout (or events are already waiting in the spool).
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
	r.obs.Published(topic, outcome, time.Since(start))
	return rc, err
}

func (r *Relay) publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	if !r.spooling.Load() {
		dctx, cancel := context.WithTimeout(ctx, r.timeout)
		rc, err := r.log.Publish(dctx, topic, ev)
		cancel()
		if err == nil {
			return rc, nil
		}
		if r.spooling.CompareAndSwap(false, true) {
			r.logger.Warn().Err(err).Msg("redis unavailable: publishing to the spool until it returns")
		}
		r.lastErr.Store(err.Error())
		return r.toSpool(topic, ev, isUncertain(err))
	}
	return r.toSpool(topic, ev, false)
}

func (r *Relay) toSpool(topic string, ev *event.Event, uncertain bool) (event.Receipt, error) {
	var flags byte
	if uncertain {
		flags = spool.FlagUncertain
	}
	r.mu.RLock()
	r.spooling.Store(true) // under the lock, so the drainer cannot flip back past this append
	err := r.spool.Append(topic, ev, flags)
	r.mu.RUnlock()
	r.kick()
	r.refusing.Store(err != nil)
	if err != nil {
		r.spoolErrors.Add(1)
		if errors.Is(err, spool.ErrFull) {
			return event.Receipt{}, &Error{code: "spool_full", err: fmt.Errorf("redis is unavailable and the spool is full: %w", err)}
		}
		return event.Receipt{}, &Error{code: "unavailable", err: fmt.Errorf("redis is unavailable and the spool failed: %w", err)}
	}
	r.spooled.Add(1)
	return event.Receipt{ID: ev.ID, Topic: topic, Spooled: true}, nil
}

// isUncertain reports whether a failed XADD may still have been applied:
// it was sent but no answer came in time.
func isUncertain(err error) bool {
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

// Spooling reports whether publishes currently go to the spool.
func (r *Relay) Spooling() bool { return r.spooling.Load() }

// Stats are the relay's counters and the spool's size.
type Stats struct {
	Spooling    bool        `json:"spooling"` // publishes go to the spool
	Draining    bool        `json:"draining"` // spooled events are moving into Redis
	Spool       spool.Stats `json:"spool"`
	Spooled     uint64      `json:"spooled"`
	Drained     uint64      `json:"drained"`
	SpoolErrors uint64      `json:"spool_errors"`
	LastError   string      `json:"last_error,omitempty"`
}

// Stats returns the counters now.
func (r *Relay) Stats() Stats {
	last, _ := r.lastErr.Load().(string)
	return Stats{Spooling: r.spooling.Load(), Draining: r.draining.Load(), Spool: r.spool.Stats(), Spooled: r.spooled.Load(),
		Drained: r.drained.Load(), SpoolErrors: r.spoolErrors.Load(), LastError: last}
}

// Run drains the spool whenever it holds events, until ctx is done.
func (r *Relay) Run(ctx context.Context) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-tick.C:
		}
		if !r.spooling.Load() {
			continue
		}
		if err := r.drain(ctx); err != nil {
			failures++
			r.lastErr.Store(err.Error())
			if failures == 1 {
				r.logger.Debug().Err(err).Msg("spool drain waiting for redis")
			}
			backoff.Sleep(ctx, backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}.Delay(failures))
			continue
		}
		failures = 0
	}
}

// drainBatch is how many spooled events one Peek/Ack round moves.
const drainBatch = 256

// drain moves every spooled event into the stream, oldest first, then
// switches publishing back to direct.
func (r *Relay) drain(ctx context.Context) error {
	start, moved := time.Now(), 0
	defer r.draining.Store(false)
	for {
		recs, err := r.spool.Peek(drainBatch)
		if err != nil {
			return fmt.Errorf("spool peek: %w", err)
		}
		if len(recs) == 0 {
			r.mu.Lock()
			flipped := r.spool.Empty()
			if flipped {
				r.spooling.Store(false)
			}
			r.mu.Unlock()
			if flipped {
				if moved > 0 {
					r.logger.Info().Int("events", moved).Dur("took", time.Since(start)).Msg("spool drained into redis; publishing directly again")
				}
				return nil
			}
			continue // appends landed meanwhile
		}
		done := 0
		var perr error
		for _, rec := range recs {
			dctx, cancel := context.WithTimeout(ctx, r.timeout*4)
			_, perr = r.log.PublishDrained(dctx, rec.Topic, rec.Event, rec.Uncertain)
			cancel()
			if perr != nil {
				break
			}
			done++
		}
		if done > 0 {
			r.draining.Store(true) // Redis takes events: the drain is under way
			if err := r.spool.Ack(recs[:done]); err != nil {
				return fmt.Errorf("spool ack: %w", err)
			}
			r.refusing.Store(false) // space was freed: worth trying again
			if moved == 0 {
				r.logger.Info().Int("spooled", r.spool.Stats().Events+done).Msg("redis is back: draining the spool")
			}
			moved += done
			r.drained.Add(uint64(done))
		}
		if perr != nil {
			return fmt.Errorf("drain: %w", perr)
		}
	}
}
