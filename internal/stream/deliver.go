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
	ev, redrive, first, ok := s.prepare(dctx, j, acks)
	if !ok {
		return
	}
	s.retry(ctx, dctx, first, ev.ID, func(attempt int) error {
		return s.h.Handle(dctx, Delivery{Topic: s.topic, StreamID: j.id, Attempt: attempt, Event: ev, Redrive: redrive})
	}, func(took time.Duration, attempt int) {
		acks <- j.id // acknowledged in batches by ackLoop
		s.delivered1(j.id, ev, took, attempt)
	}, func(err error, attempt int) {
		s.deadLetter(dctx, []job{j}, []*event.Event{ev}, err, attempt)
	})
}

// processBatch delivers entries as one batch (BatchHandler), retrying
// and dead-lettering the batch as a whole. Entries that need no delivery
// (another group's redrive, gone, already delivered, unreadable) are
// settled on their own first; a redrive to this group is delivered alone,
// in its place, so the batch around it keeps stream order.
func (s *Subscriber) processBatch(ctx, dctx context.Context, js []job, acks chan<- string) {
	var (
		batch []job
		evs   []*event.Event
		first = 1
	)
	// flush delivers what is gathered as one batch; false when the
	// subscriber stops or is paused meanwhile: what follows stays pending
	// (read again, in order, after the resume or restart).
	flush := func(redrive bool) bool {
		if len(batch) == 0 {
			return ctx.Err() == nil && !s.setAside.Load()
		}
		b, bevs, f := batch, evs, first
		batch, evs, first = nil, nil, 1
		s.retry(ctx, dctx, f, bevs[0].ID, func(attempt int) error {
			return s.h.(BatchHandler).HandleBatch(dctx, Batch{Topic: s.topic, Attempt: attempt, Events: bevs, Redrive: redrive})
		}, func(took time.Duration, attempt int) {
			for i, j := range b {
				acks <- j.id
				s.delivered1(j.id, bevs[i], took, attempt)
			}
		}, func(err error, attempt int) {
			s.deadLetter(dctx, b, bevs, err, attempt)
		})
		return ctx.Err() == nil && !s.setAside.Load()
	}
	for _, j := range js {
		target, _ := j.values[FieldRedriveGroup].(string)
		if target == s.cfg.Group && !flush(false) {
			return
		}
		ev, redrive, f, ok := s.prepare(dctx, j, acks)
		if !ok {
			continue
		}
		batch, evs, first = append(batch, j), append(evs, ev), max(first, f)
		if redrive {
			// An operator's redrive goes alone, flagged, in its place.
			if !flush(true) {
				return
			}
		}
	}
	flush(false)
}

// prepare settles an entry that needs no delivery — redriven for another
// group, gone from the stream, already delivered through the inbox,
// unreadable, or read too often — and reports ok=false then; else it
// returns the event, whether it is a redrive to this group, and the
// attempt number to start at.
func (s *Subscriber) prepare(dctx context.Context, j job, acks chan<- string) (ev *event.Event, redrive bool, first int, ok bool) {
	// A dead letter an operator sent back to one group: every other group
	// has had it (or dead-lettered it itself) and acknowledges it unseen.
	target, _ := j.values[FieldRedriveGroup].(string)
	if target != "" && target != s.cfg.Group {
		acks <- j.id
		s.log.Debug().Str("stream_id", j.id).Str("redrive_group", target).Msg("redriven for another group; acknowledged without delivery")
		return nil, false, 0, false
	}
	redrive = target != ""
	ev, err := event.FromValues(j.values)
	if errors.Is(err, event.ErrNoData) {
		// Trimmed or deleted before we got to it: nothing to deliver, and
		// retrying would never succeed. Acknowledge and count it.
		s.gone.Add(1)
		s.cfg.Observer.Attempt(s.topic, s.cfg.Group, "gone", 0)
		s.log.Warn().Str("stream_id", j.id).Msg("pending entry no longer in the stream; acknowledged without delivery")
		acks <- j.id
		return nil, false, 0, false
	}
	if err != nil {
		s.deadLetter(dctx, []job{j}, nil, err, 0)
		return nil, false, 0, false
	}
	// Read again from the pending history, yet delivered by this process
	// already: its XACK was lost (written to a master that died before
	// replicating it). Acknowledge it rather than deliver it twice. Only
	// re-read entries: a seek replays entries as new reads, and delivers.
	if j.reread && s.recent.has(j.id) {
		acks <- j.id
		s.deduplicated.Add(1)
		s.cfg.Observer.Attempt(s.topic, s.cfg.Group, "deduplicated", 0)
		s.log.Debug().Str("stream_id", j.id).Str("event_id", ev.ID).Msg("delivered by this process before, its acknowledgement lost; acknowledged again")
		return nil, false, 0, false
	}
	// A redrive is an operator's explicit "deliver again": never deduplicated.
	if !redrive && s.cfg.Dedup != nil && s.cfg.Dedup.Delivered(dctx, ev) {
		acks <- j.id
		s.deduplicated.Add(1)
		s.cfg.Observer.Attempt(s.topic, s.cfg.Group, "deduplicated", 0)
		s.log.Debug().Str("stream_id", j.id).Str("event_id", ev.ID).Msg("already delivered through the inbox; acknowledged")
		return nil, false, 0, false
	}
	// An entry read before (by a process that died mid-delivery, or claimed
	// from another replica) continues its attempt count, at least one
	// attempt per earlier read.
	first = int(max(j.reads, 1))
	if s.cfg.MaxAttempts > 0 && first > s.cfg.MaxAttempts {
		cause := fmt.Errorf("read %d times without being acknowledged (max_attempts %d): its deliveries keep being interrupted", j.reads, s.cfg.MaxAttempts)
		s.cfg.Observer.Attempt(s.topic, s.cfg.Group, "dead_lettered", 0)
		s.setLastError(cause)
		s.deadLetter(dctx, []job{j}, []*event.Event{ev}, cause, int(j.reads)-1)
		return nil, false, 0, false
	}
	return ev, redrive, first, true
}

// retry makes attempts from first on until one succeeds (delivered is
// called), the failure is permanent or the retry horizon passes (dead is
// called), or it stops (ctx done, or paused: the entries stay pending).
// what names the attempt in debug logs (an event id).
func (s *Subscriber) retry(ctx, dctx context.Context, first int, what string, try func(attempt int) error,
	delivered func(took time.Duration, attempt int), dead func(err error, attempt int)) {
	obs := s.cfg.Observer
	// The retry horizon runs from the first attempt this process makes: a
	// restart starts it afresh, which can only mean more retrying, never an
	// early dead letter.
	began := time.Now()
	for attempt := first; ; attempt++ {
		start := time.Now()
		err := try(attempt)
		took := time.Since(start)
		if err == nil {
			obs.Attempt(s.topic, s.cfg.Group, "delivered", took)
			delivered(took, attempt)
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
			obs.Attempt(s.topic, s.cfg.Group, "dead_lettered", took)
			dead(err, attempt)
			return
		}
		if s.cfg.RetryFor > 0 && elapsed+wait > s.cfg.RetryFor {
			wait = s.cfg.RetryFor - elapsed // the last try comes at the horizon, not before it
		}
		obs.Attempt(s.topic, s.cfg.Group, "retried", took)
		s.retried.Add(1)
		s.log.Debug().Str("event_id", what).Err(err).Int("attempt", attempt).Dur("wait", wait).Msg("delivery failed; will retry")
		if !s.sleepUnlessPaused(ctx, wait) {
			if ctx.Err() == nil {
				// Paused: no more attempts; it stays pending and is read
				// again, attempts counting on, once the group is resumed.
				s.setAside.Store(true)
				s.log.Debug().Str("event_id", what).Int("attempt", attempt).Msg("paused; retrying after the resume")
			}
			return // stopping: stays pending, delivered again after restart
		}
	}
}

// delivered1 records one delivered entry (its acknowledgement is queued).
func (s *Subscriber) delivered1(id string, ev *event.Event, took time.Duration, attempt int) {
	// End to end from the entry's arrival in the stream (its id's
	// milliseconds), not from the event's time, which a publisher may set
	// anywhere; the event's time only if the id is not Redis's.
	since := ev.Time
	if ms, err := strconv.ParseInt(id[:max(strings.IndexByte(id, '-'), 0)], 10, 64); err == nil && ms > 0 {
		since = time.UnixMilli(ms)
	}
	s.cfg.Observer.Delivered(s.topic, s.cfg.Group, since)
	s.recent.add(id)
	s.delivered.Add(1)
	s.mu.Lock()
	s.lastDelivery = time.Now()
	s.mu.Unlock()
	s.log.Debug().Str("stream_id", id).Str("event_id", ev.ID).Int("attempt", attempt).Dur("took", took).Msg("delivered")
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

// deadLetter writes entries to the topic's DLQ stream (one DLQ entry
// each, with its own event) and acknowledges them, in one transaction
// (both keys share the stream's hash slot). evs[i] is js[i]'s event, or
// evs is nil when the entry could not be decoded (its raw fields go).
func (s *Subscriber) deadLetter(ctx context.Context, js []job, evs []*event.Event, cause error, attempts int) {
	vals := make([][]any, len(js))
	ids := make([]string, len(js))
	for i, j := range js {
		if evs != nil {
			vals[i] = evs[i].Values()
		} else {
			for k, v := range j.values {
				vals[i] = append(vals[i], k, v)
			}
		}
		vals[i] = append(vals[i], DLQFieldError, cause.Error(), DLQFieldAttempts, strconv.Itoa(attempts),
			DLQFieldGroup, s.cfg.Group, DLQFieldOriginalID, j.id)
		ids[i] = j.id
	}
	s.finish(ctx, func(ctx context.Context) error {
		_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, v := range vals {
				p.XAdd(ctx, &redis.XAddArgs{Stream: DLQKey(s.cfg.Topic), Values: v, MaxLen: s.cfg.DLQMaxLen, Approx: s.cfg.DLQMaxLen > 0})
			}
			p.XAck(ctx, Key(s.cfg.Topic), s.cfg.Group, ids...)
			return nil
		})
		return err
	})
	s.deadLettered.Add(uint64(len(js)))
	for i, j := range js {
		evID := ""
		if evs != nil {
			evID = evs[i].ID
		}
		s.log.Warn().Str("stream_id", j.id).Str("event_id", evID).Int("attempts", attempts).Int("batch", len(js)).
			Str("error", cause.Error()).Msg("dead-lettered")
	}
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

// recentDelivered bounds how many delivered entries a subscriber (one
// per partition) remembers, about 90 bytes each (1.4 MiB when full): the
// XACKs a dying master loses are those of its last milliseconds.
const recentDelivered = 1 << 14

// recentSet is a bounded set of stream ids, the oldest forgotten first.
type recentSet struct {
	mu   sync.Mutex
	max  int
	ids  map[string]struct{}
	ring []string
	next int
}

func newRecentSet(max int) *recentSet {
	return &recentSet{max: max, ids: make(map[string]struct{}), ring: make([]string, 0, min(max, 1024))}
}

func (r *recentSet) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.ids[id]; ok {
		return
	}
	if len(r.ring) < r.max {
		r.ring = append(r.ring, id)
	} else {
		delete(r.ids, r.ring[r.next])
		r.ring[r.next] = id
		r.next = (r.next + 1) % len(r.ring)
	}
	r.ids[id] = struct{}{}
}

func (r *recentSet) forget(id string) {
	r.mu.Lock()
	delete(r.ids, id) // its ring slot stays until it is reused
	r.mu.Unlock()
}

func (r *recentSet) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.ids[id]
	return ok
}
