package stream

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/config"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// reviewHandler records successful single and batch deliveries (event
// data, in order) and fails as told.
type reviewHandler struct {
	mu       sync.Mutex
	ok       []string // data of every successfully delivered event, in order
	singles  []string // data of events delivered through Handle
	batches  int
	failSing func(d Delivery) error
	failBat  func(b Batch) error
	paused   func() bool
	inPause  []string // data delivered (successfully) while paused
}

func (h *reviewHandler) Handle(_ context.Context, d Delivery) error {
	h.mu.Lock()
	f := h.failSing
	h.mu.Unlock()
	if f != nil {
		if err := f(d); err != nil {
			return err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.singles = append(h.singles, string(d.Event.Data))
	h.ok = append(h.ok, string(d.Event.Data))
	if h.paused != nil && h.paused() {
		h.inPause = append(h.inPause, string(d.Event.Data))
	}
	return nil
}

func (h *reviewHandler) HandleBatch(_ context.Context, b Batch) error {
	h.mu.Lock()
	f := h.failBat
	h.mu.Unlock()
	if f != nil {
		if err := f(b); err != nil {
			return err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.batches++
	for _, ev := range b.Events {
		h.ok = append(h.ok, string(ev.Data))
		if h.paused != nil && h.paused() {
			h.inPause = append(h.inPause, string(ev.Data))
		}
	}
	return nil
}

func (h *reviewHandler) snapshot() (ok, singles, inPause []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ok), slices.Clone(h.singles), slices.Clone(h.inPause)
}

// R1: an operator's seek replays entries this process delivered before;
// the replay fails, the operator pauses, fixes the webhook, resumes. The
// replayed entries come back from the pending history (set aside by the
// pause) and recentSet takes them for lost XACKs: acknowledged, never
// delivered. The replay is silently lost.
func TestReviewSeekReplayPausedThenResumedIsDelivered(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "rv-seek", Retention{})
	publishN(t, p, topic, 3)
	var failing atomic.Bool
	h := &reviewHandler{failSing: func(Delivery) error {
		if failing.Load() {
			return errors.New("503")
		}
		return nil
	}}
	sub := startSub(t, rdb, SubscriptionConfig{Topic: topic, MaxAttempts: 1000, PauseCheck: 50 * time.Millisecond,
		Backoff: backoff.Policy{Initial: 20 * time.Millisecond, Max: 20 * time.Millisecond}}, h)
	ctx := context.Background()
	eventually.True(t, 10*time.Second, "3 delivered and acknowledged", func() bool {
		ok, _, _ := h.snapshot()
		return len(ok) == 3 && groupCaughtUp(t, rdb, topic, "g")
	})
	// The operator replays from the start; the webhook is failing now.
	failing.Store(true)
	if err := rdb.XGroupSetID(ctx, Key(topic), "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, "the replay is read (3 pending)", func() bool {
		return rdb.XPending(ctx, Key(topic), "g").Val().Count == 3
	})
	time.Sleep(100 * time.Millisecond) // a few failed attempts of the replay
	if err := Pause(ctx, rdb, topic, "g", PauseInfo{By: "review", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Second, "the subscriber sees the pause", sub.pause.isOn)
	time.Sleep(150 * time.Millisecond) // the worker leaves the replay pending
	failing.Store(false)
	if _, err := Resume(ctx, rdb, topic, "g"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "caught up", func() bool { return groupCaughtUp(t, rdb, topic, "g") })
	ok, _, _ := h.snapshot()
	t.Logf("successful deliveries: %v; deduplicated %d", ok, sub.Stats().Deduplicated)
	if len(ok) != 6 {
		t.Fatalf("the seek's replay: %d of 3 events delivered after the resume (deduplicated %d): acknowledged without delivery",
			len(ok)-3, sub.Stats().Deduplicated)
	}
}

// R2: on a batch subscription a redrive (dead letter sent back to this
// group) is handed to Handle — the single-event path — not HandleBatch;
// in the sidecar that is wh.Deliver, a binary-mode POST to a webhook
// that was promised application/cloudevents-batch+json.
func TestReviewBatchSubscriptionRedriveIsABatch(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "rv-redrive", Retention{})
	ctx := context.Background()
	ev := newEvent("redriven")
	vals := append(ev.Values(), FieldRedriveGroup, "g", FieldRedrivenFrom, "1-1")
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: Key(topic), Values: vals}).Err(); err != nil {
		t.Fatal(err)
	}
	publishN(t, p, topic, 2)
	h := &reviewHandler{}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, BatchMax: 10, BatchWait: 20 * time.Millisecond}, h)
	eventually.True(t, 10*time.Second, "3 delivered", func() bool { ok, _, _ := h.snapshot(); return len(ok) == 3 })
	_, singles, _ := h.snapshot()
	if len(singles) > 0 {
		t.Fatalf("batch subscription: %v delivered through Handle (single-event POST), not as a batch", singles)
	}
}

// R3: a batch [a b R c d] (R a redrive for this group). [a b] fails and
// is retrying when the group is paused: it is set aside, but processBatch
// goes on — R is delivered, then [c d] — while paused, and before a, b.
func TestReviewBatchPausedMidBatchDeliversNothingAndKeepsOrder(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "rv-batchpause", Retention{})
	ctx := context.Background()
	for _, d := range []string{"a", "b"} {
		if _, err := p.Publish(ctx, topic, newEvent(d)); err != nil {
			t.Fatal(err)
		}
	}
	r := newEvent("R")
	vals := append(r.Values(), FieldRedriveGroup, "g", FieldRedrivenFrom, "1-1")
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: Key(topic), Values: vals}).Err(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"c", "d"} {
		if _, err := p.Publish(ctx, topic, newEvent(d)); err != nil {
			t.Fatal(err)
		}
	}
	var failing atomic.Bool
	failing.Store(true)
	var sub *runningSub
	var attempts atomic.Int32
	h := &reviewHandler{failBat: func(b Batch) error {
		if failing.Load() && string(b.Events[0].Data) == "a" {
			attempts.Add(1)
			return errors.New("503")
		}
		return nil
	}}
	h.paused = func() bool { return sub != nil && sub.pause.isOn() }
	sub = startSub(t, rdb, SubscriptionConfig{Topic: topic, BatchMax: 10, BatchWait: 100 * time.Millisecond,
		MaxAttempts: 1000, PauseCheck: 50 * time.Millisecond,
		Backoff: backoff.Policy{Initial: 10 * time.Second, Max: 10 * time.Second}}, h)
	eventually.True(t, 5*time.Second, "[a b] failed once", func() bool { return attempts.Load() >= 1 })
	if err := Pause(ctx, rdb, topic, "g", PauseInfo{By: "review", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Second, "the subscriber sees the pause", sub.pause.isOn)
	time.Sleep(300 * time.Millisecond)
	_, _, inPause := h.snapshot()
	failing.Store(false)
	if _, err := Resume(ctx, rdb, topic, "g"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "caught up", func() bool { return groupCaughtUp(t, rdb, topic, "g") })
	ok, _, _ := h.snapshot()
	t.Logf("delivered in order %v; while paused %v", ok, inPause)
	if len(inPause) > 0 {
		t.Errorf("delivered while paused: %v", inPause)
	}
	if want := []string{"a", "b", "R", "c", "d"}; !slices.Equal(ok, want) {
		t.Errorf("delivery order %v, want %v", ok, want)
	}
}

// R4: ordering: key on a partitioned topic. Every key in partition k of
// N has FNV(key) % N == k; the worker queue is FNV(key) % concurrency,
// the same hash: with N = concurrency every key of a partition lands on
// ONE worker (gcd(N, C) = g → C/g workers used). The spec's own example
// (partitions 8, concurrency 16) uses 2 of 16 workers per partition.
func TestReviewByKeyOnPartitionUsesAllWorkers(t *testing.T) {
	const n, conc = 16, 16
	_, rdb, topic, p := setup(t, redistest.Start, "rv-bykeypart", Retention{})
	// 16 distinct keys that all belong to partition 0 of n.
	var keys []string
	for i := 0; len(keys) < 16; i++ {
		k := fmt.Sprintf("key-%d", i)
		if PartitionOf(k, n) == 0 {
			keys = append(keys, k)
		}
	}
	workers := map[int]bool{}
	for _, k := range keys {
		workers[PartitionOf(k, conc)] = true
	}
	for i := range 4 {
		for _, k := range keys {
			ev := newEvent(fmt.Sprintf("%s-%d", k, i))
			ev.SetPartitionKey(k)
			if _, err := p.Publish(context.Background(), topic, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	rec := &keyRecorder{inflight: map[string]int{}, worst: map[string]int{}, order: map[string][]string{}}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, Concurrency: conc, ByKey: true}, rec)
	eventually.True(t, 20*time.Second, "all delivered", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.total == 64 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	t.Logf("16 keys of partition 0/%d map to %d of %d worker queues; peak parallel deliveries %d", n, len(workers), conc, rec.peak)
	if rec.peak < 4 {
		t.Errorf("16 distinct keys, concurrency %d: at most %d in flight at once", conc, rec.peak)
	}
}

// R5: recentSet's memory per subscriber once full (one per partition
// stream and subscription).
func TestReviewRecentSetMemory(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := newRecentSet(recentDelivered)
	base := time.Now().UnixMilli()
	for i := range recentDelivered {
		r.add(fmt.Sprintf("%d-%d", base+int64(i/3), i%3))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	used := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	t.Logf("recentSet full: %.1f MiB, %.0f bytes per id", used/(1<<20), used/recentDelivered)
	runtime.KeepAlive(r)
	// One per partition and subscription: it must stay small.
	if used > 2<<20 {
		t.Errorf("a full recentSet takes %.1f MiB; keep it under 2 MiB", used/(1<<20))
	}
}

// R6 (a check, passes): every partition of every subscription is its own
// Subscriber with a reader parked in XREADGROUP BLOCK on the shared
// client; publishes must not queue behind them for a pool connection.
func TestReviewPartitionReadersStarvePublishPool(t *testing.T) {
	srv := redistest.Start(t)
	cfgClient, err := config.NewRedisClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer cfgClient.Close()
	topic := redistest.UniqueTopic(t, "rv-pool")
	p := NewPublisher(cfgClient, PublisherOptions{IdempotencyTTL: time.Minute}, zerolog.Nop())
	measure := func() (worst time.Duration, failed int) {
		for i := range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			start := time.Now()
			_, err := p.Publish(ctx, topic, newEvent(fmt.Sprint(i)))
			cancel()
			worst = max(worst, time.Since(start))
			if err != nil {
				failed++
			}
		}
		return worst, failed
	}
	w0, f0 := measure()
	parts := 10*runtime.GOMAXPROCS(0) + 2 // e.g. 8 partitions × 3 subscriptions on 2 cores
	for k := range parts {
		h := &reviewHandler{}
		startSub(t, cfgClient, SubscriptionConfig{Topic: PartitionTopic(topic, k+1), Group: "g", Block: 2 * time.Second}, h)
	}
	eventually.True(t, 5*time.Second, "readers parked in XREADGROUP BLOCK", func() bool {
		list, _ := srv.Client(t).ClientList(context.Background()).Result()
		return strings.Count(list, "cmd=xreadgroup") >= parts/2 // each re-reads at least once a second
	})
	w1, f1 := measure()
	t.Logf("20 publishes: worst %v, %d failed with no readers; worst %v, %d failed (500 ms timeout) with %d partition readers", w0, f0, w1, f1, parts)
	if f1 > 0 || w1 > 200*time.Millisecond {
		t.Errorf("publishes starved by %d idle partition readers: worst %v, %d of 20 timed out", parts, w1, f1)
	}
}
