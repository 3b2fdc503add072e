package inbox

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/event"
)

func TestLedgerSurvivesReopenAndForgetsOldEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inbox.ledger")
	l, err := OpenLedger(path, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !l.begin("t/g", "e1") || l.begin("t/g", "e1") {
		t.Fatal("begin: want true once, then false while under way")
	}
	if err := l.end("t/g", "e1", true); err != nil {
		t.Fatal(err)
	}
	l.begin("t/g", "e2")
	l.end("t/g", "e2", false) // failed: not remembered
	l.Close()

	l2, err := OpenLedger(path, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	ctx := context.Background()
	if !l2.Delivered(ctx, "t/g", "e1") || l2.Delivered(ctx, "t/g", "e2") || l2.Delivered(ctx, "t/other", "e1") {
		t.Fatal("after reopen: want e1 delivered to t/g only")
	}
	l3, _ := OpenLedger(path, time.Nanosecond)
	defer l3.Close()
	if l3.Delivered(ctx, "t/g", "e1") {
		t.Fatal("an entry older than the ttl was kept")
	}
}

func TestDeliveredWaitsForTheInboxOutcome(t *testing.T) {
	l, _ := OpenLedger(filepath.Join(t.TempDir(), "l"), time.Hour)
	defer l.Close()
	l.begin("k", "e1")
	got := make(chan bool)
	go func() { got <- l.Delivered(context.Background(), "k", "e1") }()
	select {
	case <-got:
		t.Fatal("Delivered answered while the inbox delivery was under way")
	case <-time.After(50 * time.Millisecond):
	}
	l.end("k", "e1", true)
	if !<-got {
		t.Fatal("Delivered: got false after the inbox delivered")
	}
}

func TestInboxDeliversRetriesAndRecords(t *testing.T) {
	l, _ := OpenLedger(filepath.Join(t.TempDir(), "l"), time.Hour)
	defer l.Close()
	var calls atomic.Int32
	target := Target{Key: "t/g", Topic: "t", MaxAttempts: 5, Backoff: backoff.Policy{Initial: time.Millisecond, Max: time.Millisecond},
		Deliver: func(ctx context.Context, attempt int, ev *event.Event) error {
			if calls.Add(1) < 3 {
				return errors.New("503")
			}
			return nil
		}}
	in := New(l, []Target{target}, time.Second, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.Run(ctx); close(done) }()
	if _, err := in.Accept("nope", &event.Event{ID: "x"}); !errors.Is(err, ErrNoSubscription) {
		t.Fatalf("unknown topic: got %v", err)
	}
	n, err := in.Accept("t", &event.Event{ID: "e1"})
	if err != nil || n != 1 {
		t.Fatalf("Accept: got %d, %v", n, err)
	}
	if !in.Deduper("t/g").Delivered(context.Background(), "e1") || calls.Load() != 3 {
		t.Fatalf("after Delivered returned: calls %d, want 3 and delivered", calls.Load())
	}
	if n, _ := in.Accept("t", &event.Event{ID: "e1"}); n != 0 {
		t.Fatal("a delivered event was accepted for delivery again")
	}
	cancel()
	<-done
}
