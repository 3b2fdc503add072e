package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/spool"
)

// BatchLog is a Log that appends many events in one round trip.
type BatchLog interface {
	PublishBatch(ctx context.Context, topics []string, evs []*event.Event) ([]event.Receipt, []error)
}

// PublishBatch publishes evs[i] to topics[i], for every i, as Publish
// would one by one — to the stream, or to the spool for a topic whose
// events wait there or that Redis does not take now — but with every
// direct write in one round trip. Each event's receipt or error comes back
// in its place; per topic the events keep their order — unless Redis
// refuses one command of the pipeline and takes a later one of the same
// topic (then the refused event, spooled, lands after it).
func (r *Relay) PublishBatch(ctx context.Context, topics []string, evs []*event.Event) ([]event.Receipt, []error) {
	start := time.Now()
	rcs, errs := make([]event.Receipt, len(evs)), make([]error, len(evs))
	bl, ok := r.log.(BatchLog)
	if !ok {
		for i := range evs {
			rcs[i], errs[i] = r.Publish(ctx, topics[i], evs[i])
		}
		return rcs, errs
	}
	// Decided once per topic, before anything is written, so a topic's
	// events all go the same way unless Redis fails part-way.
	var direct []int
	spooling := map[string]bool{}
	for i, t := range topics {
		s, seen := spooling[t]
		if !seen {
			s = r.state(t).spooling.Load()
			spooling[t] = s
		}
		if !s {
			direct = append(direct, i)
		}
	}
	causes := make([]error, len(evs)) // why an event goes to the spool (nil: the topic was spooling)
	toSpool := make([]bool, len(evs))
	for i, t := range topics {
		toSpool[i] = spooling[t]
	}
	if len(direct) > 0 {
		dt, de := make([]string, len(direct)), make([]*event.Event, len(direct))
		for n, i := range direct {
			dt[n], de[n] = topics[i], evs[i]
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
		drc, derr := bl.PublishBatch(dctx, dt, de)
		cancel()
		failed := map[string]bool{}
		for n, i := range direct {
			err := derr[n]
			switch {
			case err == nil:
				// Written — also behind a failed event of its topic (Redis
				// refused one command of the pipeline but took the next):
				// it stays written; that event then lands after it.
				rcs[i] = drc[n]
			case r.opts.Rejected(err):
				r.logger.Warn().Err(err).Str("topic", topics[i]).Msg("redis rejected a publish; the publisher is told (not spooled)")
				errs[i] = &Error{code: "redis_rejected", err: fmt.Errorf("redis rejected the event: %w", err)}
			default:
				toSpool[i], causes[i] = true, err
				if !failed[topics[i]] {
					failed[topics[i]] = true
					if r.state(topics[i]).spooling.CompareAndSwap(false, true) {
						r.logger.Warn().Err(err).Str("topic", topics[i]).Msg("redis unavailable for this topic: publishing to the spool until it returns")
					}
					r.lastErr.Store(err.Error())
				}
			}
		}
	}
	// Per topic, in order: one spool append (one fsync) for its events.
	var order []string
	byTopic := map[string][]int{}
	for i := range evs {
		if toSpool[i] {
			if _, seen := byTopic[topics[i]]; !seen {
				order = append(order, topics[i])
			}
			byTopic[topics[i]] = append(byTopic[topics[i]], i)
		}
	}
	for _, t := range order {
		r.toSpoolBatch(t, byTopic[t], evs, causes, rcs, errs)
	}
	d := time.Since(start)
	for i := range evs {
		outcome := "stream"
		switch {
		case errs[i] != nil:
			outcome = "rejected"
		case rcs[i].Spooled:
			outcome = "spooled"
		}
		r.opts.Observer.Published(topics[i], outcome, d)
	}
	return rcs, errs
}

// batchSpool is a Spool that appends many events of a topic durably at once.
type batchSpool interface {
	AppendBatch(topic string, evs []*event.Event, flags []byte) (int, error)
}

// toSpoolBatch spools the events at idx (all of topic), in order, as
// toSpool would one by one, but made durable together.
func (r *Relay) toSpoolBatch(topic string, idx []int, evs []*event.Event, causes []error, rcs []event.Receipt, errs []error) {
	ts := r.state(topic)
	bs, ok := r.spool.(batchSpool)
	if !ok {
		for _, i := range idx {
			rcs[i], errs[i] = r.toSpool(ts, topic, evs[i], causes[i])
		}
		return
	}
	batch, flags, uncertain := make([]*event.Event, len(idx)), make([]byte, len(idx)), make([]bool, len(idx))
	for n, i := range idx {
		batch[n] = evs[i]
		flags[n], uncertain[n] = r.spoolFlags(causes[i])
	}
	ts.mu.RLock()
	ts.spooling.Store(true) // under the lock, so the drainer cannot flip back past this append
	written, err := bs.AppendBatch(topic, batch, flags)
	ts.mu.RUnlock()
	r.kick()
	r.refusing.Store(err != nil)
	for n, i := range idx {
		if n < written {
			r.spooled.Add(1)
			rcs[i] = event.Receipt{ID: evs[i].ID, Topic: topic, Spooled: true}
			continue
		}
		r.spoolErrors.Add(1)
		errs[i] = spoolRefusal(err, causes[i], uncertain[n])
	}
}

// spoolRefusal is the error for an event the spool could not take; cause
// is the failed direct write that sent it there (nil: the topic was
// spooling already), uncertain whether that write may have landed.
func spoolRefusal(err, cause error, uncertain bool) error {
	if uncertain {
		// The write may have reached Redis (no confirmation came) and
		// nothing records it here: it may yet be delivered. Saying "not
		// accepted" would be a lie the publisher acts on.
		return &Error{code: "outcome_unknown", err: fmt.Errorf("redis may have taken the event but did not confirm it (%v), and the spool could not record it (%w): it may or may not be delivered; retry with the same Idempotency-Key to make sure it is, once", cause, err)}
	}
	if errors.Is(err, spool.ErrFull) {
		return &Error{code: "spool_full", err: fmt.Errorf("redis is unavailable and the spool is full: %w", err)}
	}
	return &Error{code: "unavailable", err: fmt.Errorf("redis is unavailable and the spool failed: %w", err)}
}
