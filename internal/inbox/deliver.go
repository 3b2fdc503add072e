package inbox

import (
	"context"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
)

// work is one of a subscription's workers: it takes events off the queue
// in arrival order and delivers each to the end (retries included) before
// taking the next, so with one worker later events wait behind a retrying
// one. ctx ending stops it taking events; dctx ending (grace over) stops
// the delivery under way.
func (in *Inbox) work(ctx, dctx context.Context, q *queue) {
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-q.events:
			if ctx.Err() != nil {
				// Stopping: an event not started stays for the stream.
				in.abandon(q, it)
				return
			}
			in.deliver(ctx, dctx, q.t, it)
			in.release(q, it.ev)
		}
	}
}

// deliver attempts ev until it is delivered, fails permanently, runs out of
// attempts or of the retry horizon, or the inbox stops, and records the
// outcome in the ledger. Giving up loses nothing: the stream copy arrives
// later and goes through the subscription's full policy (retries, DLQ).
func (in *Inbox) deliver(ctx, dctx context.Context, t Target, it item) {
	ev := it.ev
	log := in.log.With().Str("subscription", t.Key).Str("event_id", ev.ID).Logger()
	first := time.Now()
	for attempt := 1; ; attempt++ {
		err := t.Deliver(dctx, attempt, ev)
		if err == nil {
			if lerr := in.ledger.end(t.Key, it.digest, true); lerr != nil {
				log.Error().Err(lerr).Msg("inbox: delivered, but could not record it; the stream copy may be delivered again")
			}
			log.Debug().Int("attempt", attempt).Msg("inbox: delivered")
			return
		}
		wait := backoff.RetryAfter(err)
		if wait <= 0 {
			wait = t.Backoff.Delay(attempt)
		}
		var why string
		switch {
		case dctx.Err() != nil:
			why = "stopped past the grace period"
		case backoff.Permanent(err):
			why = "permanent failure"
		case t.MaxAttempts > 0 && attempt >= t.MaxAttempts:
			why = "attempts exhausted"
		case time.Since(first)+wait > t.RetryFor:
			// The next attempt would start past the horizon.
			why = "retry_for exhausted"
		case !backoff.Sleep(ctx, wait):
			why = "stopped while waiting to retry"
		default:
			log.Debug().Err(err).Int("attempt", attempt).Dur("wait", wait).Msg("inbox: delivery failed; will retry")
			continue
		}
		_ = in.ledger.end(t.Key, it.digest, false)
		log.Warn().Err(err).Int("attempts", attempt).Str("reason", why).
			Msg("inbox: delivery given up; the stream copy will be delivered when redis returns")
		return
	}
}
