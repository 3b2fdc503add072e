package inbox

import (
	"context"
	"errors"
	"fmt"
	"os"
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
	if !in.Deduper("t/g").Delivered(context.Background(), &event.Event{ID: "e1"}) || calls.Load() != 3 {
		t.Fatalf("after Delivered returned: calls %d, want 3 and delivered", calls.Load())
	}
	if n, _ := in.Accept("t", &event.Event{ID: "e1"}); n != 0 {
		t.Fatal("a delivered event was accepted for delivery again")
	}
	cancel()
	<-done
}

// TestForgedIDDoesNotSuppressTheGenuineEvent: the ledger knows an event by
// topic, id, source and data. A delivery of "order-42" with a forged body
// (or source) does not make the genuine order-42 look delivered, to the
// inbox or to the subscriber reading the stream; the very same event does.
func TestForgedIDDoesNotSuppressTheGenuineEvent(t *testing.T) {
	l, _ := OpenLedger(filepath.Join(t.TempDir(), "l"), time.Hour)
	defer l.Close()
	var calls atomic.Int32
	deliver := func(ctx context.Context, attempt int, ev *event.Event) error { calls.Add(1); return nil }
	in := New(l, []Target{{Key: "orders/g", Topic: "orders", Deliver: deliver}, {Key: "bills/g", Topic: "bills", Deliver: deliver}},
		time.Second, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	genuine := &event.Event{ID: "order-42", Source: "processor", Data: []byte(`{"amount":"genuine"}`)}
	forged := &event.Event{ID: "order-42", Source: "processor", Data: []byte(`{"amount":"forged"}`)}
	if n, err := in.Accept("orders", forged); n != 1 || err != nil {
		t.Fatalf("Accept forged: got %d, %v", n, err)
	}
	orders := in.Deduper("orders/g")
	if !orders.Delivered(context.Background(), forged) {
		t.Fatal("the forged event itself: got not delivered, want delivered")
	}
	for _, tc := range []struct {
		name  string
		dedup interface {
			Delivered(context.Context, *event.Event) bool
		}
		ev *event.Event
	}{
		{"same id, genuine data", orders, genuine},
		{"same id and data, other source", orders, &event.Event{ID: forged.ID, Source: "intruder", Data: forged.Data}},
		{"same event, other topic", in.Deduper("bills/g"), forged},
		{"unknown subscription", in.Deduper("nope/g"), forged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.dedup.Delivered(context.Background(), tc.ev) {
				t.Fatal("got delivered, want not delivered: the stream copy would be dropped")
			}
		})
	}
	if n, err := in.Accept("orders", genuine); n != 1 || err != nil {
		t.Fatalf("Accept genuine after forged: got %d, %v, want it queued", n, err)
	}
	if !orders.Delivered(context.Background(), genuine) || calls.Load() != 2 {
		t.Fatalf("genuine: delivered %v after %d calls, want delivered after 2", orders.Delivered(context.Background(), genuine), calls.Load())
	}
	if n, _ := in.Accept("orders", &event.Event{ID: genuine.ID, Source: genuine.Source, Data: append([]byte(nil), genuine.Data...)}); n != 0 {
		t.Fatal("a copy of a delivered event was accepted for delivery again")
	}
}

// TestLedgerReadsFilesOfThePreviousVersion: a ledger written when entries
// were "key\x00<event id>" opens; its entries match no digest (a second
// delivery at worst, never a loss), and new entries are kept beside them.
func TestLedgerReadsFilesOfThePreviousVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inbox.ledger")
	old := fmt.Sprintf("%d t/g\x00e1\n%d t/g\x00e2\n", time.Now().UnixMilli(), time.Now().UnixMilli())
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := OpenLedger(path, time.Hour)
	if err != nil {
		t.Fatalf("opening a ledger of the previous version: %v", err)
	}
	ev := &event.Event{ID: "e1", Source: "processor", Data: []byte("x")}
	if l.Delivered(context.Background(), "t/g", digest("t", ev)) {
		t.Fatal("an id-only entry matched a digest")
	}
	l.begin("t/g", digest("t", ev))
	if err := l.end("t/g", digest("t", ev), true); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l2, err := OpenLedger(path, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if !l2.Delivered(context.Background(), "t/g", digest("t", ev)) {
		t.Fatal("after reopen: the digest entry is gone")
	}
	if got := len(l2.delivered); got != 3 {
		t.Fatalf("entries after reopen: got %d, want 3 (2 old, 1 new)", got)
	}
}
