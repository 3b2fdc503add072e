package relay

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/spool"
)

// Publishes that start within one tick share a deadline; none is later
// than the timeout after its start, none more than a tick sooner.
func TestPublishDeadlinesSharedWithinATick(t *testing.T) {
	const timeout = 500 * time.Millisecond
	d := newDeadlines(timeout)
	if d.tick <= 0 || d.tick > 10*time.Millisecond {
		t.Fatalf("tick %v; want (0, 10ms]", d.tick)
	}
	t0 := time.Now()
	first := d.next(t0)
	for _, at := range []time.Duration{0, d.tick / 2, d.tick - 1} {
		start := t0.Add(at)
		ctx := d.next(start)
		if ctx != first {
			t.Fatalf("publish %v into the tick got a deadline of its own", at)
		}
		dl, ok := ctx.Deadline()
		if !ok || dl.After(start.Add(timeout)) || !dl.After(start.Add(timeout-d.tick)) {
			t.Fatalf("publish %v into the tick: deadline %v after its start; want in (%v, %v]", at, dl.Sub(start), timeout-d.tick, timeout)
		}
	}
	next := d.next(t0.Add(d.tick))
	if next == first {
		t.Fatal("a publish a tick later shares the old deadline")
	}
	if dl, _ := next.Deadline(); !dl.Equal(t0.Add(d.tick + timeout)) {
		t.Fatalf("next tick's deadline: %v after t0; want %v", dl.Sub(t0), d.tick+timeout)
	}
	// The shared context ends by itself at its deadline.
	short := newDeadlines(20 * time.Millisecond)
	ctx := short.next(time.Now())
	select {
	case <-ctx.Done():
		if ctx.Err() != context.DeadlineExceeded {
			t.Fatalf("expired shared deadline: %v; want DeadlineExceeded", ctx.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shared deadline never expired")
	}
}

type ctxKey struct{}

// ctxLog records the context of each direct publish.
type ctxLog struct{ ctxs chan context.Context }

func (l ctxLog) Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	l.ctxs <- ctx
	return event.Receipt{ID: ev.ID, Topic: topic, StreamID: "1-0"}, ctx.Err()
}

func (l ctxLog) PublishDrained(ctx context.Context, topic string, ev *event.Event, uncertain bool) (event.Receipt, error) {
	return l.Publish(ctx, topic, ev)
}

func (ctxLog) Committed(context.Context, string, []string) error { return nil }

// A direct publish carries the request's values, not its cancellation
// (a client hanging up must not fail a healthy write), and is bounded
// by the relay's timeout.
func TestDirectPublishKeepsRequestValuesNotCancellation(t *testing.T) {
	sp, err := spool.OpenSet(t.TempDir(), spool.Options{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	const timeout = 300 * time.Millisecond
	log := ctxLog{ctxs: make(chan context.Context, 1)}
	r := New(log, sp, timeout, Options{}, zerolog.Nop())
	req, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "trace-1"))
	cancel() // the client is gone before the write
	start := time.Now()
	rc, err := r.Publish(req, "t", &event.Event{ID: "e1", Time: start, Data: []byte("x")})
	end := time.Now()
	if err != nil || rc.Spooled || rc.StreamID != "1-0" {
		t.Fatalf("publish after the client hung up: %+v, %v; want written directly", rc, err)
	}
	ctx := <-log.ctxs
	if v := ctx.Value(ctxKey{}); v != "trace-1" {
		t.Fatalf("request value in the publish's context: %v; want trace-1", v)
	}
	dl, ok := ctx.Deadline()
	if !ok || dl.After(end.Add(timeout)) || dl.Before(start.Add(timeout-10*time.Millisecond)) {
		t.Fatalf("publish deadline %v after the call began (set: %v); want the %v timeout, at most 10ms short", dl.Sub(start), ok, timeout)
	}
	if context.Cause(ctx) != nil {
		t.Fatalf("publish context's cause: %v; want none (the request's cancellation stays behind)", context.Cause(ctx))
	}
}
