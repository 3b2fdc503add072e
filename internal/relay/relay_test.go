package relay

import (
	"context"
	"errors"
	"fmt"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/spool"
)

// fakeLog is a stream that can be switched down; it records what it took.
type fakeLog struct {
	mu        sync.Mutex
	down      bool
	hang      bool // down by not answering: publishes wait for their deadline
	ids       []string
	uncertain []string
}

func (f *fakeLog) set(down, hang bool) { f.mu.Lock(); f.down, f.hang = down, hang; f.mu.Unlock() }

func (f *fakeLog) take(ctx context.Context, ev *event.Event, uncertain bool) (event.Receipt, error) {
	f.mu.Lock()
	down, hang := f.down, f.hang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return event.Receipt{}, ctx.Err()
	}
	if down {
		return event.Receipt{}, errors.New("dial tcp: connection refused")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = append(f.ids, ev.ID)
	if uncertain {
		f.uncertain = append(f.uncertain, ev.ID)
	}
	return event.Receipt{ID: ev.ID, StreamID: fmt.Sprintf("%d-0", len(f.ids))}, nil
}

func (f *fakeLog) Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	return f.take(ctx, ev, false)
}

func (f *fakeLog) PublishDrained(ctx context.Context, topic string, ev *event.Event, uncertain bool) (event.Receipt, error) {
	return f.take(ctx, ev, uncertain)
}

func (f *fakeLog) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ids...)
}

func newRelay(t *testing.T, log *fakeLog, opts spool.Options) (*Relay, func()) {
	t.Helper()
	sp, err := spool.Open(t.TempDir(), opts, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	r := New(log, sp, 50*time.Millisecond, nil, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done; sp.Close() }
	t.Cleanup(stop)
	return r, stop
}

func pub(t *testing.T, r *Relay, i int) event.Receipt {
	t.Helper()
	rc, err := r.Publish(context.Background(), "t", &event.Event{ID: fmt.Sprintf("e%03d", i), Time: time.Now(), Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func TestOutageSpoolsAndDrainsInOrder(t *testing.T) {
	log := &fakeLog{}
	r, _ := newRelay(t, log, spool.Options{})
	var want []string
	for i := 0; i < 5; i++ {
		if rc := pub(t, r, i); rc.Spooled || rc.StreamID == "" {
			t.Fatalf("Redis up: got %+v, want a direct publish", rc)
		}
		want = append(want, fmt.Sprintf("e%03d", i))
	}
	log.set(true, false)
	for i := 5; i < 20; i++ {
		if rc := pub(t, r, i); !rc.Spooled {
			t.Fatalf("Redis down: got %+v, want spooled", rc)
		}
		want = append(want, fmt.Sprintf("e%03d", i))
	}
	if !r.Spooling() {
		t.Fatal("relay not spooling during the outage")
	}
	log.set(false, false)
	// Publishes after Redis returns still queue behind the spool until it drains.
	for i := 20; i < 25; i++ {
		pub(t, r, i)
		want = append(want, fmt.Sprintf("e%03d", i))
	}
	eventually.True(t, 5*time.Second, "spool drained", func() bool { return !r.Spooling() && len(log.got()) == 25 })
	if got := log.got(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stream order: got %v, want %v", got, want)
	}
	if rc := pub(t, r, 25); rc.Spooled {
		t.Fatal("after the drain publishes should go direct again")
	}
	if st := r.Stats(); st.Spooled < 15 || st.Drained < 15 || st.Spool.Events != 0 {
		t.Fatalf("stats: got %+v", st)
	}
}

func TestStalledRedisSpoolsWithinTimeoutAsUncertain(t *testing.T) {
	log := &fakeLog{}
	r, _ := newRelay(t, log, spool.Options{})
	log.set(false, true)
	start := time.Now()
	rc := pub(t, r, 0)
	if el := time.Since(start); !rc.Spooled || el > time.Second {
		t.Fatalf("stalled Redis: got %+v after %v, want spooled within the 50ms timeout", rc, el)
	}
	start = time.Now()
	pub(t, r, 1) // spooling already: no wait at all
	if el := time.Since(start); el > 200*time.Millisecond {
		t.Fatalf("second publish during the stall took %v", el)
	}
	log.set(false, false)
	eventually.True(t, 5*time.Second, "drained", func() bool { return len(log.got()) == 2 })
	log.mu.Lock()
	defer log.mu.Unlock()
	if fmt.Sprint(log.uncertain) != "[e000]" {
		t.Fatalf("uncertain: got %v, want only the timed-out publish e000", log.uncertain)
	}
}

func TestSpoolFullIsAnErrorWithCode(t *testing.T) {
	log := &fakeLog{down: true}
	r, _ := newRelay(t, log, spool.Options{MaxBytes: 300})
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = r.Publish(context.Background(), "t", &event.Event{ID: fmt.Sprint(i), Time: time.Now(), Data: make([]byte, 50)})
	}
	var coded interface{ Code() string }
	if !errors.As(err, &coded) || coded.Code() != "spool_full" {
		t.Fatalf("got %v, want an error with code spool_full", err)
	}
	if r.Writable() {
		t.Fatal("Writable: got true for a full spool")
	}
}

func TestLeftoverSpoolDrainsFirstAfterRestart(t *testing.T) {
	dir := t.TempDir()
	sp, _ := spool.Open(dir, spool.Options{}, zerolog.Nop())
	for i := range 3 {
		sp.Append("t", &event.Event{ID: fmt.Sprintf("old%d", i), Time: time.Now()}, 0)
	}
	sp.Close()
	sp, _ = spool.Open(dir, spool.Options{}, zerolog.Nop())
	defer sp.Close()
	log := &fakeLog{}
	r := New(log, sp, 50*time.Millisecond, nil, zerolog.Nop())
	if !r.Spooling() {
		t.Fatal("a relay over a non-empty spool must spool new publishes behind it")
	}
	pub(t, r, 9)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	eventually.True(t, 5*time.Second, "drained", func() bool { return len(log.got()) == 4 })
	if got := log.got(); fmt.Sprint(got) != "[old0 old1 old2 e009]" {
		t.Fatalf("got %v", got)
	}
}
