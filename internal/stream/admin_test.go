package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// eventIDs returns the event id of each delivery, in order.
func eventIDs(ds []Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Event.ID
	}
	return out
}

// groupCaughtUp reports whether group has read every entry of topic and
// acknowledged all it read.
func groupCaughtUp(t *testing.T, rdb redis.UniversalClient, topic, group string) bool {
	t.Helper()
	ctx := context.Background()
	last, err := rdb.XRevRangeN(ctx, Key(topic), "+", "-", 1).Result()
	if err != nil || len(last) == 0 {
		return false
	}
	groups, err := rdb.XInfoGroups(ctx, Key(topic)).Result()
	if err != nil {
		return false
	}
	for _, g := range groups {
		if g.Name == group {
			return g.LastDeliveredID == last[0].ID && g.Pending == 0
		}
	}
	return false
}

// TestRedriveDeliversToItsGroupOnly: a dead letter sent back to one group
// reaches that group again (same event, attempts from 1, marked as a
// redrive, never swallowed by the inbox dedup) and no other group, which
// acknowledges the entry without delivering it.
func TestRedriveDeliversToItsGroupOnly(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "redrive", Retention{})
	var failing, dedup atomic.Bool
	failing.Store(true)
	ids := publishN(t, p, topic, 4)
	poison := map[string]bool{ids[1]: true, ids[2]: true}
	mine := &recorder{fail: func(d Delivery) error {
		if failing.Load() && poison[d.Event.ID] {
			return permErr{}
		}
		return nil
	}}
	other := &recorder{}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, Group: "mine", Dedup: dedupWhen{&dedup}}, mine)
	startSub(t, rdb, SubscriptionConfig{Topic: topic, Group: "other"}, other)
	ctx := context.Background()
	eventually.True(t, 10*time.Second, "2 dead letters and the other group's 4 deliveries", func() bool {
		return rdb.XLen(ctx, DLQKey(topic)).Val() == 2 && len(other.deliveries()) == 4
	})
	eventually.True(t, 5*time.Second, "mine caught up", func() bool { return groupCaughtUp(t, rdb, topic, "mine") })
	failing.Store(false)
	dedup.Store(true)
	before := len(mine.deliveries())
	dead := rdb.XRange(ctx, DLQKey(topic), "-", "+").Val()
	// Given newest first: redriven in the order given.
	n, err := Redrive(ctx, rdb, topic, "mine", []string{dead[1].ID, dead[0].ID})
	if err != nil || n != 2 {
		t.Fatalf("Redrive: got %d, %v; want 2, nil", n, err)
	}
	if l := rdb.XLen(ctx, DLQKey(topic)).Val(); l != 0 {
		t.Fatalf("DLQ after redrive: got %d entries, want 0", l)
	}
	eventually.True(t, 10*time.Second, "both groups caught up", func() bool {
		return groupCaughtUp(t, rdb, topic, "mine") && groupCaughtUp(t, rdb, topic, "other")
	})
	got := mine.deliveries()[before:]
	if want := []string{ids[2], ids[1]}; !slices.Equal(eventIDs(got), want) {
		t.Fatalf("redriven deliveries to mine: got %v, want %v", eventIDs(got), want)
	}
	for _, d := range got {
		if !d.Redrive || d.Attempt != 1 || string(d.Event.Data) != fmt.Sprintf("event-%03d", slices.Index(ids, d.Event.ID)) {
			t.Fatalf("redriven delivery: got redrive %v attempt %d data %q, want redrive, attempt 1, the original data", d.Redrive, d.Attempt, d.Event.Data)
		}
	}
	if n := len(other.deliveries()); n != 4 {
		t.Fatalf("other group: got %d deliveries, want still 4 (a redrive is for its group only)", n)
	}
	// Redriving them again finds nothing: no second copy.
	if n, err := Redrive(ctx, rdb, topic, "mine", []string{dead[0].ID}); err != nil || n != 0 {
		t.Fatalf("second Redrive: got %d, %v; want 0, nil", n, err)
	}
}

// dedupWhen is a Deduper that, while on, claims every event arrived
// through the inbox: only a redrive may get through it then.
type dedupWhen struct{ on *atomic.Bool }

func (d dedupWhen) Delivered(context.Context, *event.Event) bool { return d.on.Load() }

// TestRedriveLeavesOtherGroupsDeadLetters: a redrive for one group does
// not touch another group's dead letter, even when asked for its id.
func TestRedriveLeavesOtherGroupsDeadLetters(t *testing.T) {
	_, rdb, topic, _ := setup(t, redistest.Start, "redrive-other", Retention{})
	ctx := context.Background()
	id := rdb.XAdd(ctx, &redis.XAddArgs{Stream: DLQKey(topic), Values: []any{"id", "e1", "data", "x", "group", "g2", "error", "boom", "attempts", "1", "original_id", "1-1"}}).Val()
	if n, err := Redrive(ctx, rdb, topic, "g1", []string{id}); err != nil || n != 0 {
		t.Fatalf("Redrive for g1 of g2's dead letter: got %d, %v; want 0, nil", n, err)
	}
	if l := rdb.XLen(ctx, DLQKey(topic)).Val(); l != 1 {
		t.Fatalf("DLQ: got %d entries, want 1", l)
	}
	if l := rdb.XLen(ctx, Key(topic)).Val(); l != 0 {
		t.Fatalf("stream: got %d entries, want 0", l)
	}
}

// TestPauseStopsReadingAndResumeContinuesInOrder: while the pause key is
// set, nothing is read (the group's lag grows); after the resume the
// events arrive once each, in order.
func TestPauseStopsReadingAndResumeContinuesInOrder(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "pause", Retention{})
	rec := &recorder{}
	sub := startSub(t, rdb, SubscriptionConfig{Topic: topic, PauseCheck: 50 * time.Millisecond}, rec)
	ids := publishN(t, p, topic, 2)
	eventually.True(t, 5*time.Second, "2 deliveries", func() bool { return len(rec.deliveries()) == 2 })
	ctx := context.Background()
	if err := Pause(ctx, rdb, topic, "g", PauseInfo{By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Second, "the subscriber sees the pause", sub.pause.isOn)
	settle(50 * time.Millisecond)
	more := publishN(t, p, topic, 5)
	stayedPaused(t, rdb, topic, 2, rec, 5)
	if !sub.Running() {
		t.Fatal("paused subscriber reports not running: readiness would turn the replica away")
	}
	if was, err := Resume(ctx, rdb, topic, "g"); err != nil || !was {
		t.Fatalf("Resume: got %v, %v; want true, nil", was, err)
	}
	eventually.True(t, 5*time.Second, "7 deliveries", func() bool { return len(rec.deliveries()) >= 7 })
	eventually.True(t, 5*time.Second, "caught up", func() bool { return groupCaughtUp(t, rdb, topic, "g") })
	if got, want := eventIDs(rec.deliveries()), append(ids, more...); !slices.Equal(got, want) {
		t.Fatalf("deliveries: got %v, want %v", got, want)
	}
}

// settle waits out a read begun before the pause (PauseSettle for a
// PauseCheck of check): the contract under test is a time bound.
func settle(check time.Duration) { time.Sleep(check + check/2) }

// stayedPaused fails the test if rec gets more than delivered deliveries
// within 3 pause checks, and unless the group's lag reaches lag.
func stayedPaused(t *testing.T, rdb redis.UniversalClient, topic string, delivered int, rec *recorder, lag int64) {
	t.Helper()
	sawLag := false
	for end := time.Now().Add(600 * time.Millisecond); time.Now().Before(end) || !sawLag; {
		if n := len(rec.deliveries()); n > delivered {
			t.Fatalf("paused: got %d deliveries, want %d", n, delivered)
		}
		if !sawLag {
			for _, g := range rdb.XInfoGroups(context.Background(), Key(topic)).Val() {
				sawLag = sawLag || (g.Name == "g" && g.Lag == lag)
			}
		}
		if time.Now().After(end.Add(5 * time.Second)) {
			t.Fatalf("paused: the group's lag never reached %d: %+v", lag, rdb.XInfoGroups(context.Background(), Key(topic)).Val())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPauseSetsAsideEntriesAlreadyHandedOut: the delivery under way when
// the pause lands finishes; the entries read ahead behind it are not
// delivered until the resume, and then in order, once each.
func TestPauseSetsAsideEntriesAlreadyHandedOut(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "pause-ahead", Retention{})
	block := make(chan struct{})
	rec := &recorder{block: block}
	sub := startSub(t, rdb, SubscriptionConfig{Topic: topic, PauseCheck: 50 * time.Millisecond}, rec)
	ids := publishN(t, p, topic, 6)
	ctx := context.Background()
	eventually.True(t, 5*time.Second, "all 6 read (1 in flight, 5 read ahead)", func() bool {
		return rdb.XPending(ctx, Key(topic), "g").Val().Count == 6
	})
	if err := Pause(ctx, rdb, topic, "g", PauseInfo{By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Second, "the subscriber sees the pause", sub.pause.isOn)
	close(block) // the delivery in flight answers
	eventually.True(t, 5*time.Second, "the delivery in flight finished", func() bool { return len(rec.deliveries()) == 1 })
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if n := len(rec.deliveries()); n != 1 {
			t.Fatalf("paused: got %d deliveries, want 1 (the one in flight)", n)
		}
	}
	if _, err := Resume(ctx, rdb, topic, "g"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, "caught up", func() bool { return groupCaughtUp(t, rdb, topic, "g") })
	if got := eventIDs(rec.deliveries()); !slices.Equal(got, ids) {
		t.Fatalf("deliveries: got %v, want %v", got, ids)
	}
}

// TestPauseStopsRetries: an entry failing and retrying when the group is
// paused gets no more attempts until the resume; then its attempts count
// on and the entries behind it follow in order.
func TestPauseStopsRetries(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "pause-retry", Retention{})
	var failing atomic.Bool
	failing.Store(true)
	rec := &recorder{fail: func(d Delivery) error {
		if failing.Load() {
			return errors.New("503")
		}
		return nil
	}}
	sub := startSub(t, rdb, SubscriptionConfig{Topic: topic, MaxAttempts: 1000, PauseCheck: 50 * time.Millisecond,
		Backoff: backoff.Policy{Initial: 20 * time.Millisecond, Max: 20 * time.Millisecond}}, rec)
	ids := publishN(t, p, topic, 3)
	eventually.True(t, 5*time.Second, "3 failed attempts", func() bool { return len(rec.deliveries()) >= 3 })
	ctx := context.Background()
	if err := Pause(ctx, rdb, topic, "g", PauseInfo{By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Second, "the subscriber sees the pause", sub.pause.isOn)
	// One attempt may have been starting as the pause landed; no more.
	attempts := len(rec.deliveries())
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if n := len(rec.deliveries()); n > attempts+1 {
			t.Fatalf("paused: attempts went from %d to %d, want at most one more", attempts, n)
		}
	}
	attempts = len(rec.deliveries())
	failing.Store(false)
	if _, err := Resume(ctx, rdb, topic, "g"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, "caught up", func() bool { return groupCaughtUp(t, rdb, topic, "g") })
	got := rec.deliveries()
	resumed := got[attempts]
	// Like a restart: the count goes on from the entry's reads (XPENDING).
	if resumed.Event.ID != ids[0] || resumed.Attempt < 2 {
		t.Fatalf("first attempt after the resume: got %s attempt %d, want %s attempt >= 2", resumed.Event.ID, resumed.Attempt, ids[0])
	}
	if tail := eventIDs(got[attempts:]); !slices.Equal(tail, ids) {
		t.Fatalf("after the resume: got %v, want %v", tail, ids)
	}
}

// TestStartOnPausedGroupReadsNothing: a sidecar (re)started while its
// group is paused reads nothing, not even its first batch.
func TestStartOnPausedGroupReadsNothing(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "pause-start", Retention{})
	ctx := context.Background()
	if err := rdb.XGroupCreateMkStream(ctx, Key(topic), "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := Pause(ctx, rdb, topic, "g", PauseInfo{By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	ids := publishN(t, p, topic, 3)
	rec := &recorder{}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, PauseCheck: 50 * time.Millisecond}, rec)
	stayedPaused(t, rdb, topic, 0, rec, 3)
	if _, err := Resume(ctx, rdb, topic, "g"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, "caught up", func() bool { return groupCaughtUp(t, rdb, topic, "g") })
	if got := eventIDs(rec.deliveries()); !slices.Equal(got, ids) {
		t.Fatalf("deliveries: got %v, want %v", got, ids)
	}
}
