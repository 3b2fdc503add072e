package inbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
)

// running is an Inbox under Run, stopped by stop or at the test's end.
type running struct {
	*Inbox
	ledger *Ledger
	cancel context.CancelFunc
	done   chan struct{}
}

func startInbox(t *testing.T, grace time.Duration, targets ...Target) *running {
	t.Helper()
	l, err := OpenLedger(filepath.Join(t.TempDir(), "ledger"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Inbox: New(l, targets, grace, zerolog.Nop()), ledger: l, cancel: cancel, done: make(chan struct{})}
	go func() { r.Run(ctx); close(r.done) }()
	t.Cleanup(func() { r.stop(); l.Close() })
	return r
}

// stop ends Run and says how long it took to return.
func (r *running) stop() time.Duration {
	start := time.Now()
	r.cancel()
	<-r.done
	return time.Since(start)
}

// inFlight is how many ledger entries are marked under way.
func (r *running) inFlight() int {
	r.ledger.mu.Lock()
	defer r.ledger.mu.Unlock()
	return len(r.ledger.inFlight)
}

// gauge counts deliveries in flight and remembers the most at once.
type gauge struct{ cur, peak atomic.Int32 }

func (g *gauge) enter() {
	c := g.cur.Add(1)
	for p := g.peak.Load(); c > p && !g.peak.CompareAndSwap(p, c); p = g.peak.Load() {
	}
}

func (g *gauge) leave() { g.cur.Add(-1) }

func ev(i int) *event.Event { return &event.Event{ID: fmt.Sprintf("e%04d", i), Data: []byte("data")} }

func TestConcurrencyOneDeliversInArrivalOrderOneAtATime(t *testing.T) {
	const n = 200
	var g gauge
	var mu sync.Mutex
	var got []string
	in := startInbox(t, time.Second, Target{Key: "t/g", Topic: "t", Concurrency: 1,
		Deliver: func(ctx context.Context, attempt int, e *event.Event) error {
			g.enter()
			defer g.leave()
			time.Sleep(time.Duration(rand.N(1000)) * time.Microsecond) // a randomly slow webhook
			mu.Lock()
			got = append(got, e.ID)
			mu.Unlock()
			return nil
		}})
	for i := range n {
		if k, err := in.Accept("t", ev(i)); k != 1 || err != nil {
			t.Fatalf("Accept %d: got %d, %v", i, k, err)
		}
	}
	eventually.True(t, 10*time.Second, "all delivered", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == n })
	for i, id := range got {
		if want := ev(i).ID; id != want {
			t.Fatalf("delivery %d: got %s, want %s", i, id, want)
		}
	}
	if p := g.peak.Load(); p != 1 {
		t.Fatalf("deliveries in flight at once: got %d, want 1", p)
	}
	if !in.Deduper("t/g").Delivered(context.Background(), ev(n-1)) {
		t.Fatal("the last event is not recorded as delivered")
	}
}

func TestConcurrencyNRunsNAtOnceAndNoMore(t *testing.T) {
	for _, n := range []int{2, 4, 8} {
		t.Run(fmt.Sprint("concurrency ", n), func(t *testing.T) {
			var g gauge
			var delivered atomic.Int32
			gate := make(chan struct{})
			in := startInbox(t, time.Second, Target{Key: "t/g", Topic: "t", Concurrency: n,
				Deliver: func(ctx context.Context, attempt int, e *event.Event) error {
					g.enter()
					defer g.leave()
					<-gate
					delivered.Add(1)
					return nil
				}})
			for i := range 3 * n {
				if _, err := in.Accept("t", ev(i)); err != nil {
					t.Fatal(err)
				}
			}
			eventually.True(t, 5*time.Second, fmt.Sprintf("%d deliveries in flight", n), func() bool { return g.cur.Load() >= int32(n) })
			close(gate)
			eventually.True(t, 5*time.Second, "all delivered", func() bool { return delivered.Load() == int32(3*n) })
			if p := g.peak.Load(); p != int32(n) {
				t.Fatalf("deliveries in flight at once: got %d, want %d", p, n)
			}
		})
	}
}

func TestFullQueueRefusesAndLeavesNoLedgerTrace(t *testing.T) {
	big := func(i int) *event.Event { e := ev(i); e.Data = make([]byte, 40); return e }
	for _, tc := range []struct {
		name     string
		targets  []Target // Deliver is filled in
		event    func(int) *event.Event
		accepted int // before the first refusal
	}{
		// One in delivery plus two queued.
		{"event bound", []Target{{Key: "t/a", QueueEvents: 3}}, ev, 3},
		// 100 bytes hold two 40-byte events; the third would make 120.
		{"byte bound", []Target{{Key: "t/a", QueueBytes: 100}}, big, 2},
		// An event larger than the byte bound still fits an empty queue.
		{"oversized event alone", []Target{{Key: "t/a", QueueBytes: 10}}, big, 1},
		// One full subscription refuses the event for the topic's others too.
		{"all or nothing", []Target{{Key: "t/a", QueueEvents: 100}, {Key: "t/b", QueueEvents: 2}}, ev, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gate := make(chan struct{})
			var started atomic.Int32
			targets := tc.targets
			for i := range targets {
				targets[i].Topic = "t"
				targets[i].Deliver = func(ctx context.Context, attempt int, e *event.Event) error {
					started.Add(1)
					<-gate
					return nil
				}
			}
			in := startInbox(t, time.Second, targets...)
			for i := range tc.accepted {
				if k, err := in.Accept("t", tc.event(i)); err != nil || k != len(targets) {
					t.Fatalf("Accept %d: got %d, %v, want %d deliveries", i, k, err, len(targets))
				}
			}
			refused := tc.event(tc.accepted)
			k, err := in.Accept("t", refused)
			var coded interface{ Code() string }
			if k != 0 || !errors.Is(err, ErrFull) || !errors.As(err, &coded) || coded.Code() != "inbox_full" {
				t.Fatalf("Accept past the bound: got %d, %v, want 0 and inbox_full", k, err)
			}
			if err := in.Room("t", int64(len(refused.Data))); !errors.Is(err, ErrFull) {
				t.Fatalf("Room while full: got %v, want ErrFull", err)
			}
			if got, want := in.inFlight(), tc.accepted*len(targets); got != want {
				t.Fatalf("ledger entries under way: got %d, want %d (the refused event left a mark)", got, want)
			}
			for _, tg := range targets {
				if in.Deduper(tg.Key).Delivered(context.Background(), refused) {
					t.Fatalf("%s: the refused event counts as delivered", tg.Key)
				}
			}
			close(gate)
			// Room is given back once a delivery is finished and recorded.
			eventually.True(t, 5*time.Second, "room once the queue drained", func() bool { return in.Room("t", int64(len(refused.Data))) == nil })
			if n := in.inFlight(); n != 0 {
				t.Fatalf("ledger entries under way after the queue drained: %d", n)
			}
			if k, err := in.Accept("t", refused); err != nil || k != len(targets) {
				t.Fatalf("Accept of the refused event once there is room: got %d, %v", k, err)
			}
		})
	}
}

func TestStopWaitsForDeliveriesUpToGrace(t *testing.T) {
	const grace = 200 * time.Millisecond
	for _, tc := range []struct {
		name          string
		takes         time.Duration // how long the webhook needs
		wantDelivered bool
	}{
		{"finishes within grace", 50 * time.Millisecond, true},
		{"hangs past grace", time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var started atomic.Int32
			var cancelled atomic.Bool
			in := startInbox(t, grace, Target{Key: "t/g", Topic: "t", MaxAttempts: 1,
				Deliver: func(ctx context.Context, attempt int, e *event.Event) error {
					started.Add(1)
					select {
					case <-time.After(tc.takes):
						return nil
					case <-ctx.Done():
						cancelled.Store(true)
						return ctx.Err()
					}
				}})
			for i := range 3 {
				if _, err := in.Accept("t", ev(i)); err != nil {
					t.Fatal(err)
				}
			}
			eventually.True(t, 5*time.Second, "first delivery under way", func() bool { return started.Load() == 1 })
			took := in.stop()
			t.Logf("measured: Run returned %v after stop (grace %v, webhook needs %v)", took.Round(time.Millisecond), grace, tc.takes)
			if took > grace+time.Second {
				t.Fatalf("Run returned after %v, want within about the grace period %v", took, grace)
			}
			if !tc.wantDelivered && (took < grace || !cancelled.Load()) {
				t.Fatalf("hanging delivery: Run returned after %v, cancelled %v; want it to wait out the grace, then cancel", took, cancelled.Load())
			}
			ctx := context.Background()
			if got := in.Deduper("t/g").Delivered(ctx, ev(0)); got != tc.wantDelivered {
				t.Fatalf("delivery under way at stop: delivered %v, want %v", got, tc.wantDelivered)
			}
			if n := started.Load(); n != 1 {
				t.Fatalf("deliveries started: got %d, want 1 (queued events stay for the stream)", n)
			}
			if n := in.inFlight(); n != 0 {
				t.Fatalf("ledger entries left under way after Run returned: %d, want 0", n)
			}
			if _, err := in.Accept("t", ev(9)); !errors.Is(err, ErrClosed) {
				t.Fatalf("Accept after stop: got %v, want ErrClosed", err)
			}
		})
	}
}

// retriable is a failure the webhook may recover from.
var retriable = errors.New("503")

type permanent struct{}

func (permanent) Error() string   { return "400" }
func (permanent) Permanent() bool { return true }

func TestRetryHorizonAndOrderBehindARetry(t *testing.T) {
	fast := backoff.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	for _, tc := range []struct {
		name         string
		maxAttempts  int
		retryFor     time.Duration
		err          error
		failures     int // first event fails this often, then succeeds
		wantAttempts int // of the first event; -1 = "several", bounded by time
		wantOK       bool
	}{
		{"retried until it succeeds", 0, time.Minute, retriable, 4, 5, true},
		{"max attempts", 3, time.Minute, retriable, 100, 3, false},
		{"no count limit: retry_for decides", 0, 100 * time.Millisecond, retriable, 1 << 30, -1, false},
		{"permanent: once", 0, time.Minute, permanent{}, 100, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var calls []string
			in := startInbox(t, time.Second, Target{Key: "t/g", Topic: "t", MaxAttempts: tc.maxAttempts, RetryFor: tc.retryFor, Backoff: fast,
				Deliver: func(ctx context.Context, attempt int, e *event.Event) error {
					mu.Lock()
					defer mu.Unlock()
					calls = append(calls, e.ID)
					if e.ID == ev(0).ID && attempt <= tc.failures {
						return tc.err
					}
					return nil
				}})
			start := time.Now()
			in.Accept("t", ev(0))
			in.Accept("t", ev(1))
			ctx := context.Background()
			if got := in.Deduper("t/g").Delivered(ctx, ev(0)); got != tc.wantOK {
				t.Fatalf("first event delivered: got %v, want %v", got, tc.wantOK)
			}
			took := time.Since(start)
			if !in.Deduper("t/g").Delivered(ctx, ev(1)) {
				t.Fatal("the second event was not delivered after the first finished")
			}
			mu.Lock()
			defer mu.Unlock()
			first := len(calls) - 1
			for i, id := range calls {
				if want := ev(0).ID; i < first && id != want {
					t.Fatalf("call %d: got %s while the first event was still being retried (calls %v)", i, id, calls)
				}
			}
			if calls[first] != ev(1).ID {
				t.Fatalf("last call: got %s, want the second event", calls[first])
			}
			t.Logf("measured: %d attempts of the first event in %v", first, took.Round(time.Millisecond))
			switch {
			case tc.wantAttempts >= 0 && first != tc.wantAttempts:
				t.Fatalf("attempts of the first event: got %d, want %d", first, tc.wantAttempts)
			case tc.wantAttempts < 0 && (first < 3 || took > tc.retryFor+time.Second):
				t.Fatalf("retry_for %v: got %d attempts in %v, want several within about retry_for", tc.retryFor, first, took)
			}
		})
	}
}
