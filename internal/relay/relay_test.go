package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/spool"
)

// fakeLog is a stream that can be switched down; it records what it took.
type fakeLog struct {
	mu        sync.Mutex
	down      bool
	hang      bool            // down by not answering: publishes wait for their deadline
	reject    map[string]bool // topics Redis refuses (WRONGTYPE)
	ids       []string
	uncertain []string
	commits   int
}

// errRejected stands for a key-level Redis refusal (WRONGTYPE).
var errRejected = errors.New("WRONGTYPE Operation against a key holding the wrong kind of value")

func isRejected(err error) bool { return errors.Is(err, errRejected) }

func (f *fakeLog) set(down, hang bool) { f.mu.Lock(); f.down, f.hang = down, hang; f.mu.Unlock() }

func (f *fakeLog) take(ctx context.Context, topic string, ev *event.Event, uncertain bool) (event.Receipt, error) {
	f.mu.Lock()
	down, hang, reject := f.down, f.hang, f.reject[topic]
	f.mu.Unlock()
	if reject && !down && !hang {
		return event.Receipt{}, fmt.Errorf("xadd sidecar:{%s}: %w", topic, errRejected)
	}
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
	return f.take(ctx, topic, ev, false)
}

func (f *fakeLog) PublishDrained(ctx context.Context, topic string, ev *event.Event, uncertain bool) (event.Receipt, error) {
	return f.take(ctx, topic, ev, uncertain)
}

func (f *fakeLog) Committed(ctx context.Context, topic string, ids []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commits++
	return nil
}

func (f *fakeLog) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ids...)
}

func newRelay(t *testing.T, log *fakeLog, opts spool.Options) (*Relay, func()) {
	t.Helper()
	sp, err := spool.OpenSet(t.TempDir(), opts, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	r := New(log, sp, 50*time.Millisecond, Options{Rejected: isRejected}, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done; sp.Close() }
	t.Cleanup(stop)
	return r, stop
}

func pub(t *testing.T, r *Relay, i int) event.Receipt {
	t.Helper()
	return pubTo(t, r, "t", i)
}

func pubTo(t *testing.T, r *Relay, topic string, i int) event.Receipt {
	t.Helper()
	rc, err := r.Publish(context.Background(), topic, &event.Event{ID: fmt.Sprintf("e%03d", i), Time: time.Now(), Data: []byte("x")})
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
	sp, _ := spool.OpenSet(dir, spool.Options{}, zerolog.Nop())
	for i := range 3 {
		sp.Append("t", &event.Event{ID: fmt.Sprintf("old%d", i), Time: time.Now()}, 0)
	}
	sp.Close()
	sp, _ = spool.OpenSet(dir, spool.Options{}, zerolog.Nop())
	defer sp.Close()
	log := &fakeLog{}
	r := New(log, sp, 50*time.Millisecond, Options{}, zerolog.Nop())
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

// A spool written by a version with one spool for all topics is moved into
// the per-topic spools on open, in order, and drained.
func TestSingleSpoolOfAnOlderVersionIsMigrated(t *testing.T) {
	dir := t.TempDir()
	old, err := spool.Open(dir, spool.Options{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		old.Append([]string{"a", "b"}[i%2], &event.Event{ID: fmt.Sprintf("old%d", i), Time: time.Now()}, 0)
	}
	old.Close()
	sp, err := spool.OpenSet(dir, spool.Options{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if got := fmt.Sprint(sp.Topics()); got != "[a b]" {
		t.Fatalf("topics after migration: got %s, want [a b]", got)
	}
	log := &fakeLog{}
	r := New(log, sp, 50*time.Millisecond, Options{}, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	eventually.True(t, 5*time.Second, "drained", func() bool { return len(log.got()) == 4 })
	pos := map[string]int{}
	for i, id := range log.got() {
		pos[id] = i
	}
	if pos["old0"] > pos["old2"] || pos["old1"] > pos["old3"] {
		t.Fatalf("per-topic order lost in migration: %v", log.got())
	}
	// A second open finds nothing left to move.
	sp.Close()
	again, err := spool.OpenSet(dir, spool.Options{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if st := again.Stats(); st.Events != 0 {
		t.Fatalf("after the drain and a reopen: %d events, want 0", st.Events)
	}
}

// A key Redis refuses fails its publish at once with redis_rejected —
// nothing spooled — and publishing to other topics is untouched.
func TestRejectedPublishFailsAtOnceUnspooled(t *testing.T) {
	log := &fakeLog{reject: map[string]bool{"bad": true}}
	r, _ := newRelay(t, log, spool.Options{})
	_, err := r.Publish(context.Background(), "bad", &event.Event{ID: "x", Time: time.Now()})
	var coded interface{ Code() string }
	if !errors.As(err, &coded) || coded.Code() != "redis_rejected" {
		t.Fatalf("publish to a refused key: got %v, want code redis_rejected", err)
	}
	if r.Spooling() || r.Stats().Spool.Events != 0 {
		t.Fatalf("a rejected publish was spooled: %+v", r.Stats())
	}
	for i := range 5 {
		if rc := pubTo(t, r, "good", i); rc.Spooled {
			t.Fatalf("publish %d to another topic: got %+v, want direct", i, rc)
		}
	}
}

// Events spooled during an outage for a topic Redis then refuses stay on
// disk and are reported; every other topic drains and goes direct again.
func TestStuckTopicHoldsBackOnlyItself(t *testing.T) {
	log := &fakeLog{}
	r, _ := newRelay(t, log, spool.Options{})
	log.set(true, false)
	for i := range 3 {
		pubTo(t, r, "bad", i)
		pubTo(t, r, "good", 10+i)
	}
	log.mu.Lock()
	log.reject = map[string]bool{"bad": true}
	log.mu.Unlock()
	log.set(false, false)
	eventually.True(t, 5*time.Second, "good drained and direct again", func() bool {
		return len(log.got()) == 3 && !r.state("good").spooling.Load()
	})
	if rc := pubTo(t, r, "good", 20); rc.Spooled {
		t.Fatal("good still spooling behind bad")
	}
	if rc := pubTo(t, r, "bad", 21); !rc.Spooled {
		t.Fatalf("bad: got %+v, want spooled behind its stuck events (order)", rc)
	}
	eventually.True(t, 5*time.Second, "bad reported stalled", func() bool {
		st := r.Stalled()
		return len(st) == 1 && strings.Contains(st[0], "topic bad") && strings.Contains(st[0], "WRONGTYPE")
	})
	if st := r.Stats(); st.Spool.Events != 4 || len(st.Topics) != 1 || st.Topics[0].Topic != "bad" {
		t.Fatalf("stats: got %+v, want bad's 4 events waiting", st)
	}
	// The key is fixed: bad drains in order.
	log.mu.Lock()
	log.reject = nil
	log.mu.Unlock()
	eventually.True(t, 10*time.Second, "bad drained", func() bool { return len(log.got()) == 8 })
	if got := fmt.Sprint(log.got()[4:]); got != "[e000 e001 e002 e021]" {
		t.Fatalf("bad's order: got %s", got)
	}
	eventually.True(t, 5*time.Second, "no stalled topic after the fix", func() bool { return len(r.Stalled()) == 0 })
}

// A spooled record damaged on disk while the sidecar runs is skipped
// (logged); the topic's other events drain and it goes back to direct
// publishing — before, the drain spun on it forever.
func TestRecordDamagedWhileRunningDoesNotWedgeItsTopic(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.OpenSet(dir, spool.Options{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	log := &fakeLog{down: true}
	r := New(log, sp, 50*time.Millisecond, Options{}, zerolog.Nop())
	for i := range 3 {
		pub(t, r, i)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "topics", "t", "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments: %v", segs)
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(b, []byte("e001"))
	if at < 0 {
		t.Fatal("record e001 not found in the segment")
	}
	b[at] ^= 0xff // the payload no longer matches its checksum
	if err := os.WriteFile(segs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	log.set(false, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	eventually.True(t, 5*time.Second, "the intact events drained and the topic direct again", func() bool {
		return fmt.Sprint(log.got()) == "[e000 e002]" && !r.Spooling()
	})
	if rc := pub(t, r, 3); rc.Spooled {
		t.Fatal("the topic still spools after its drain")
	}
}
