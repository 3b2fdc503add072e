package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/event"
)

// process delivers one entry: acknowledge on success, retry with backoff,
// dead-letter when attempts run out or the handler says the failure is
// permanent. ctx stops retrying; dctx (ctx plus the grace period) bounds
// the attempt in flight and the final XACK.
func (s *Subscriber) process(ctx, dctx context.Context, j job, acks chan<- string) {
	// A dead letter an operator sent back to one group: every other group
	// has had it (or dead-lettered it itself) and acknowledges it unseen.
	target, _ := j.values[FieldRedriveGroup].(string)
	if target != "" && target != s.cfg.Group {
		acks <- j.id
		s.log.Debug().Str("stream_id", j.id).Str("redrive_group", target).Msg("redriven for another group; acknowledged without delivery")
		return
	}
	redrive := target != ""
	ev, err := event.FromValues(j.values)
	if errors.Is(err, event.ErrNoData) {
		// Trimmed or deleted before we got to it: nothing to deliver, and
		// retrying would never succeed. Acknowledge and count it.
		s.gone.Add(1)
		s.cfg.Observer.Attempt(s.cfg.Topic, s.cfg.Group, "gone", 0)
		s.log.Warn().Str("stream_id", j.id).Msg("pending entry no longer in the stream; acknowledged without delivery")
		acks <- j.id
		return
	}
	if err != nil {
		s.deadLetter(dctx, j, nil, err, 0)
		return
	}
	// A redrive is an operator's explicit "deliver again": never deduplicated.
	if !redrive && s.cfg.Dedup != nil && s.cfg.Dedup.Delivered(dctx, ev) {
		acks <- j.id
		s.deduplicated.Add(1)
		s.cfg.Observer.Attempt(s.cfg.Topic, s.cfg.Group, "deduplicated", 0)
		s.log.Debug().Str("stream_id", j.id).Str("event_id", ev.ID).Msg("already delivered through the inbox; acknowledged")
		return
	}
	obs := s.cfg.Observer
	// An entry read before (by a process that died mid-delivery, or claimed
	// from another replica) continues its attempt count, at least one
	// attempt per earlier read.
	first := int(max(j.reads, 1))
	if s.cfg.MaxAttempts > 0 && first > s.cfg.MaxAttempts {
		cause := fmt.Errorf("read %d times without being acknowledged (max_attempts %d): its deliveries keep being interrupted", j.reads, s.cfg.MaxAttempts)
		obs.Attempt(s.cfg.Topic, s.cfg.Group, "dead_lettered", 0)
		s.setLastError(cause)
		s.deadLetter(dctx, j, ev, cause, int(j.reads)-1)
		return
	}
	// The retry horizon runs from the first attempt this process makes: a
	// restart starts it afresh, which can only mean more retrying, never an
	// early dead letter.
	began := time.Now()
	for attempt := first; ; attempt++ {
		start := time.Now()
		err := s.h.Handle(dctx, Delivery{Topic: s.cfg.Topic, StreamID: j.id, Attempt: attempt, Event: ev, Redrive: redrive})
		took := time.Since(start)
		if err == nil {
			acks <- j.id // acknowledged in batches by ackLoop
			obs.Attempt(s.cfg.Topic, s.cfg.Group, "delivered", took)
			// End to end from the entry's arrival in the stream (its id's
			// milliseconds), not from the event's time, which a publisher
			// may set anywhere; the event's time only if the id is not Redis's.
			since := ev.Time
			if ms, err := strconv.ParseInt(j.id[:max(strings.IndexByte(j.id, '-'), 0)], 10, 64); err == nil && ms > 0 {
				since = time.UnixMilli(ms)
			}
			obs.Delivered(s.cfg.Topic, s.cfg.Group, since)
			s.delivered.Add(1)
			s.mu.Lock()
			s.lastDelivery = time.Now()
			s.mu.Unlock()
			s.log.Debug().Str("stream_id", j.id).Str("event_id", ev.ID).Int("attempt", attempt).Msg("delivered")
			return
		}
		if dctx.Err() != nil {
			return // shutting down past the grace period: stays pending
		}
		s.setLastError(err)
		wait := backoff.RetryAfter(err)
		if wait <= 0 {
			wait = s.cfg.Backoff.Delay(attempt)
		}
		elapsed := time.Since(began)
		if backoff.Permanent(err) || s.exhausted(attempt, elapsed) {
			if !backoff.Permanent(err) {
				err = fmt.Errorf("%w (gave up after %d attempts over %v: %s)", err, attempt, elapsed.Round(time.Millisecond), s.horizon())
			}
			obs.Attempt(s.cfg.Topic, s.cfg.Group, "dead_lettered", took)
			s.deadLetter(dctx, j, ev, err, attempt)
			return
		}
		if s.cfg.RetryFor > 0 && elapsed+wait > s.cfg.RetryFor {
			wait = s.cfg.RetryFor - elapsed // the last try comes at the horizon, not before it
		}
		obs.Attempt(s.cfg.Topic, s.cfg.Group, "retried", took)
		s.retried.Add(1)
		s.log.Debug().Str("stream_id", j.id).Str("event_id", ev.ID).Err(err).Int("attempt", attempt).Dur("wait", wait).Msg("delivery failed; will retry")
		if !s.sleepUnlessPaused(ctx, wait) {
			if ctx.Err() == nil {
				// Paused: no more attempts; it stays pending and is read
				// again, attempts counting on, once the group is resumed.
				s.setAside.Store(true)
				s.log.Debug().Str("stream_id", j.id).Str("event_id", ev.ID).Int("attempt", attempt).Msg("paused; retrying after the resume")
			}
			return // stopping: stays pending, delivered again after restart
		}
	}
}

// exhausted reports whether an entry that failed its attempt-th try,
// elapsed after its first, is out of retries: max_attempts reached (when
// set) or retry_for passed (when set).
func (s *Subscriber) exhausted(attempt int, elapsed time.Duration) bool {
	return (s.cfg.MaxAttempts > 0 && attempt >= s.cfg.MaxAttempts) ||
		(s.cfg.RetryFor > 0 && elapsed >= s.cfg.RetryFor)
}

// horizon describes the retry limits, for a dead letter's error.
func (s *Subscriber) horizon() string {
	switch {
	case s.cfg.MaxAttempts > 0 && s.cfg.RetryFor > 0:
		return fmt.Sprintf("max_attempts %d, retry_for %v", s.cfg.MaxAttempts, s.cfg.RetryFor)
	case s.cfg.MaxAttempts > 0:
		return fmt.Sprintf("max_attempts %d", s.cfg.MaxAttempts)
	}
	return fmt.Sprintf("retry_for %v", s.cfg.RetryFor)
}

// ackQueue bounds acknowledgements waiting for the acker.
const ackQueue = 1024

// ackLoop acknowledges delivered entries, many per XACK: while one XACK is
// in flight the next ids queue. Until its XACK lands an entry stays pending,
// so a crash in between means a redelivery (at-least-once), never a loss.
// It returns when acks is closed and drained, or ctx ends.
func (s *Subscriber) ackLoop(ctx context.Context, acks <-chan string) {
	key := Key(s.cfg.Topic)
	for {
		id, ok := <-acks
		if !ok {
			return
		}
		ids := []string{id}
	fill:
		for len(ids) < 512 {
			select {
			case id, ok := <-acks:
				if !ok {
					break fill
				}
				ids = append(ids, id)
			default:
				break fill
			}
		}
		s.finish(ctx, func(ctx context.Context) error { return s.rdb.XAck(ctx, key, s.cfg.Group, ids...).Err() })
	}
}

// deadLetter writes the entry to the topic's DLQ stream and acknowledges it,
// in one transaction (both keys share the topic's hash slot).
func (s *Subscriber) deadLetter(ctx context.Context, j job, ev *event.Event, cause error, attempts int) {
	var vals []any
	if ev != nil {
		vals = ev.Values()
	} else {
		for k, v := range j.values {
			vals = append(vals, k, v)
		}
	}
	vals = append(vals, DLQFieldError, cause.Error(), DLQFieldAttempts, strconv.Itoa(attempts),
		DLQFieldGroup, s.cfg.Group, DLQFieldOriginalID, j.id)
	s.finish(ctx, func(ctx context.Context) error {
		_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.XAdd(ctx, &redis.XAddArgs{Stream: DLQKey(s.cfg.Topic), Values: vals, MaxLen: s.cfg.DLQMaxLen, Approx: s.cfg.DLQMaxLen > 0})
			p.XAck(ctx, Key(s.cfg.Topic), s.cfg.Group, j.id)
			return nil
		})
		return err
	})
	s.deadLettered.Add(1)
	evID := ""
	if ev != nil {
		evID = ev.ID
	}
	s.log.Warn().Str("stream_id", j.id).Str("event_id", evID).Int("attempts", attempts).
		Str("error", cause.Error()).Msg("dead-lettered")
}

// finish runs a closing write (XACK, DLQ) until it succeeds or ctx ends.
// Failing to record an outcome means a second delivery later, so it is
// worth waiting out a short Redis outage for. A lost group (NOGROUP) has
// nothing left to acknowledge.
func (s *Subscriber) finish(ctx context.Context, write func(context.Context) error) {
	for n := 1; ; n++ {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := write(cctx)
		cancel()
		if err == nil || isNoGroup(err) || ctx.Err() != nil {
			return
		}
		if n == 1 {
			s.log.Warn().Err(err).Msg("recording a delivery outcome failed; retrying")
		}
		s.setLastError(fmt.Errorf("record outcome: %w", err))
		if !backoff.Sleep(ctx, backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}.Delay(n)) {
			return
		}
	}
}

// keepAlive resets the idle time of every entry this consumer holds, so
// that no other replica claims an event whose webhook is merely slow.
func (s *Subscriber) keepAlive(ctx context.Context, done <-chan struct{}) {
	t := time.NewTicker(max(s.cfg.ClaimTimeout/3, 300*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		ids := s.inflight.list()
		if len(ids) == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := s.rdb.XClaimJustID(cctx, &redis.XClaimArgs{
			Stream: Key(s.cfg.Topic), Group: s.cfg.Group, Consumer: s.cfg.Consumer, MinIdle: 0, Messages: ids,
		}).Err()
		cancel()
		if err != nil && !errors.Is(err, redis.Nil) {
			s.log.Debug().Err(err).Int("entries", len(ids)).Msg("keep-alive failed")
		}
	}
}

// inflight is the set of entry ids read by this consumer and not yet finished.
type inflight struct {
	mu  sync.Mutex
	ids map[string]struct{}
}

func (f *inflight) add(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.ids[id]; ok {
		return false
	}
	f.ids[id] = struct{}{}
	return true
}

func (f *inflight) remove(id string) {
	f.mu.Lock()
	delete(f.ids, id)
	f.mu.Unlock()
}

func (f *inflight) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.ids))
	for id := range f.ids {
		out = append(out, id)
	}
	return out
}
