package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// BatchLog is a Log that appends many events in one round trip.
type BatchLog interface {
	PublishBatch(ctx context.Context, topics []string, evs []*event.Event) ([]event.Receipt, []error)
}

// PublishBatch publishes evs[i] to topics[i], for every i, as Publish
// would one by one — to the stream, or to the spool for a topic whose
// events wait there or that Redis does not take now — but with every
// direct write in one round trip. Each event's receipt or error comes back
// in its place; per topic the events keep their order.
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
	for i := range evs {
		if toSpool[i] {
			rcs[i], errs[i] = r.toSpool(r.state(topics[i]), topics[i], evs[i], causes[i])
		}
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
