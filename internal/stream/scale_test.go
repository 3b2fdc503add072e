package stream

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// keyRecorder records, per partition key, the arrival order and how many
// deliveries of that key were ever in flight at once.
type keyRecorder struct {
	mu        sync.Mutex
	inflight  map[string]int
	worst     map[string]int
	order     map[string][]string
	now, peak int
	total     int
}

func (k *keyRecorder) Handle(ctx context.Context, d Delivery) error {
	key := d.Event.PartitionKey()
	k.mu.Lock()
	k.inflight[key]++
	k.worst[key] = max(k.worst[key], k.inflight[key])
	k.now++
	k.peak = max(k.peak, k.now)
	k.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	k.mu.Lock()
	k.inflight[key]--
	k.now--
	k.order[key] = append(k.order[key], string(d.Event.Data))
	k.total++
	k.mu.Unlock()
	return nil
}

func TestByKeyNeverTwoOfOneKeyInFlightAndKeepsKeyOrder(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "bykey", Retention{})
	const keys, perKey = 8, 25
	for i := range perKey {
		for k := range keys {
			ev := newEvent(fmt.Sprintf("%03d", i))
			ev.SetPartitionKey(fmt.Sprintf("key-%d", k))
			if _, err := p.Publish(context.Background(), topic, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	rec := &keyRecorder{inflight: map[string]int{}, worst: map[string]int{}, order: map[string][]string{}}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, Concurrency: 8, ByKey: true}, rec)
	eventually.True(t, 20*time.Second, "all delivered", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.total == keys*perKey })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for key, got := range rec.order {
		if rec.worst[key] != 1 {
			t.Errorf("%s: %d deliveries in flight at once", key, rec.worst[key])
		}
		for i, data := range got {
			if want := fmt.Sprintf("%03d", i); data != want {
				t.Fatalf("%s: delivery %d is %s, want %s (key order broken)", key, i, data, want)
			}
		}
	}
	if rec.peak < 2 {
		t.Errorf("at most %d deliveries ran at once: keys were not delivered in parallel", rec.peak)
	}
	t.Logf("peak parallel deliveries %d of 8 workers", rec.peak)
}

// batchRecorder is a BatchHandler failing as told.
type batchRecorder struct {
	mu      sync.Mutex
	batches []Batch
	fail    func(b Batch) error
}

func (b *batchRecorder) Handle(context.Context, Delivery) error {
	return fmt.Errorf("single delivery in batch mode")
}

func (b *batchRecorder) HandleBatch(_ context.Context, bt Batch) error {
	b.mu.Lock()
	b.batches = append(b.batches, bt)
	f := b.fail
	b.mu.Unlock()
	if f != nil {
		return f(bt)
	}
	return nil
}

func (b *batchRecorder) events() (n int, data []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bt := range b.batches {
		for _, ev := range bt.Events {
			data = append(data, string(ev.Data))
		}
	}
	return len(b.batches), data
}

func TestBatchedDeliveryInOrderRetriedAndDeadLetteredWhole(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "batch", Retention{})
	publishN(t, p, topic, 35)
	rec := &batchRecorder{}
	sub := startSub(t, rdb, SubscriptionConfig{Topic: topic, BatchMax: 10, BatchWait: 50 * time.Millisecond}, rec)
	eventually.True(t, 10*time.Second, "35 delivered", func() bool { _, d := rec.events(); return len(d) == 35 })
	batches, data := rec.events()
	for i, d := range data {
		if want := fmt.Sprintf("event-%03d", i); d != want {
			t.Fatalf("event %d is %s, want %s", i, d, want)
		}
	}
	rec.mu.Lock()
	for _, b := range rec.batches {
		if len(b.Events) > 10 || b.Topic != topic {
			t.Errorf("batch of %d on %q", len(b.Events), b.Topic)
		}
	}
	rec.mu.Unlock()
	t.Logf("35 events in %d batches", batches)
	sub.stop()

	// Fails twice, then succeeds: the same events, in the same order, again.
	rec = &batchRecorder{}
	calls := 0
	rec.fail = func(b Batch) error {
		calls++
		if calls <= 2 {
			return fmt.Errorf("503")
		}
		return nil
	}
	sub = startSub(t, rdb, SubscriptionConfig{Topic: topic, Group: "g2", BatchMax: 100, BatchWait: 50 * time.Millisecond}, rec)
	eventually.True(t, 10*time.Second, "three attempts", func() bool { n, _ := rec.events(); return n >= 3 })
	rec.mu.Lock()
	a, b := rec.batches[0], rec.batches[1]
	rec.mu.Unlock()
	if len(a.Events) != len(b.Events) || a.Events[0].ID != b.Events[0].ID || b.Attempt != 2 {
		t.Fatalf("retry changed the batch: %d events attempt %d, then %d events attempt %d", len(a.Events), a.Attempt, len(b.Events), b.Attempt)
	}
	sub.stop()

	// Permanent failure: every event of the batch is dead-lettered, each its own DLQ entry.
	rec = &batchRecorder{fail: func(Batch) error { return permErr{} }}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, Group: "g3", BatchMax: 100, BatchWait: 100 * time.Millisecond}, rec)
	eventually.True(t, 10*time.Second, "35 dead letters", func() bool {
		n, _ := rdb.XLen(context.Background(), DLQKey(topic)).Result()
		return n == 35
	})
	dl, err := rdb.XRange(context.Background(), DLQKey(topic), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range dl {
		if m.Values["data"] != fmt.Sprintf("event-%03d", i) || m.Values[DLQFieldGroup] != "g3" || m.Values[DLQFieldError] != "410 gone" {
			t.Fatalf("dead letter %d: %v", i, m.Values)
		}
	}
	pend, err := rdb.XPending(context.Background(), Key(topic), "g3").Result()
	if err != nil || pend.Count != 0 {
		t.Fatalf("pending after dead-lettering: %v %v", pend, err)
	}
}

func TestPartitionNaming(t *testing.T) {
	if got := PartitionTopics("orders", 3); fmt.Sprint(got) != "[orders orders#1 orders#2]" {
		t.Fatal(got)
	}
	if Key(PartitionTopic("orders", 7)) != "sidecar:{orders#7}" || BaseTopic("orders#7") != "orders" || BaseTopic("orders") != "orders" {
		t.Fatal("partition naming")
	}
	seen := map[int]int{}
	for i := range 8000 {
		seen[PartitionOf(fmt.Sprintf("key-%d", i), 8)]++
	}
	for k := range 8 {
		if seen[k] < 800 || seen[k] > 1200 {
			t.Errorf("partition %d got %d of 8000 keys: poor spread", k, seen[k])
		}
	}
	if PartitionOf("x", 1) != 0 || PartitionOf("same", 8) != PartitionOf("same", 8) {
		t.Fatal("partition of")
	}
}

func TestPublishBatchOnePipelineInOrderIdempotentPerEvent(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "bulk", Retention{})
	mk := func() ([]string, []*event.Event) {
		var topics []string
		var evs []*event.Event
		for i := range 10 {
			ev := newEvent(fmt.Sprintf("bulk-%d", i))
			if i%2 == 0 {
				ev.IdempotencyKey = fmt.Sprintf("req#%d", i)
			}
			topics, evs = append(topics, PartitionTopic(topic, i%3)), append(evs, ev)
		}
		return topics, evs
	}
	topics, evs := mk()
	rcs, errs := p.PublishBatch(context.Background(), topics, evs)
	for i := range evs {
		if errs[i] != nil || rcs[i].ID != evs[i].ID || rcs[i].StreamID == "" || rcs[i].Duplicate || rcs[i].Topic != topics[i] {
			t.Fatalf("event %d: %+v %v", i, rcs[i], errs[i])
		}
	}
	for k := range 3 {
		msgs := rdb.XRange(context.Background(), Key(PartitionTopic(topic, k)), "-", "+").Val()
		var got []string
		for _, m := range msgs {
			got = append(got, m.Values["data"].(string))
		}
		var want []string
		for i := k; i < 10; i += 3 {
			want = append(want, fmt.Sprintf("bulk-%d", i))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("partition %d holds %v, want %v", k, got, want)
		}
	}
	// The same request again: the idempotent events replay their first
	// receipts and add nothing; the others are new events.
	_, again := mk()
	rcs2, errs2 := p.PublishBatch(context.Background(), topics, again)
	for i := range again {
		if errs2[i] != nil {
			t.Fatal(errs2[i])
		}
		if i%2 == 0 && (!rcs2[i].Duplicate || rcs2[i].ID != evs[i].ID || rcs2[i].StreamID != rcs[i].StreamID) {
			t.Fatalf("replay %d: %+v, want the first receipt %+v", i, rcs2[i], rcs[i])
		}
		if i%2 == 1 && (rcs2[i].Duplicate || rcs2[i].ID != again[i].ID) {
			t.Fatalf("new event %d: %+v", i, rcs2[i])
		}
	}
	var total int64
	for k := range 3 {
		total += rdb.XLen(context.Background(), Key(PartitionTopic(topic, k))).Val()
	}
	if total != 15 {
		t.Fatalf("streams hold %d entries, want 10 + 5 new", total)
	}
}

// A retried publish without a partition key gets a new event id but keeps
// its Idempotency-Key: it must go to the partition that remembers the key.
func TestPartitionerRoutesARetryToItsKeysPartition(t *testing.T) {
	p := Partitioner{Partitions: map[string]int{"orders": 8}}
	seen := map[string]bool{}
	for range 20 {
		ev := newEvent("x")
		ev.IdempotencyKey = "req-1#0"
		seen[p.StreamTopic("orders", ev)] = true
	}
	if len(seen) != 1 {
		t.Fatalf("one Idempotency-Key went to partitions %v", seen)
	}
	ev := newEvent("x")
	ev.IdempotencyKey = "req-1#0"
	ev.SetPartitionKey("match-7")
	want := PartitionTopic("orders", PartitionOf("match-7", 8))
	if got := p.StreamTopic("orders", ev); got != want {
		t.Fatalf("partition key ignored: %s, want %s", got, want)
	}
	if p.StreamTopic("plain", ev) != "plain" {
		t.Fatal("an unpartitioned topic was partitioned")
	}
}

// An entry this process delivered that comes back from its pending
// history — its XACK lost, as when a master dies before replicating it —
// is acknowledged, not delivered twice; a seek (new reads) still replays.
func TestLostAcknowledgementIsNotASecondDelivery(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "lostack", Retention{})
	publishN(t, p, topic, 3)
	rec := &recorder{}
	sub := startSub(t, rdb, SubscriptionConfig{Topic: topic, PauseCheck: 100 * time.Millisecond}, rec)
	eventually.True(t, 10*time.Second, "3 delivered", func() bool { return len(rec.deliveries()) == 3 })
	ctx := context.Background()
	eventually.True(t, 5*time.Second, "acknowledged", func() bool { return rdb.XPending(ctx, Key(topic), "g").Val().Count == 0 })

	// Paused, so the subscriber reads nothing while the test puts the three
	// back on its pending list, as a lost XACK leaves them.
	if err := Pause(ctx, rdb, topic, "g", PauseInfo{}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 2*time.Second, "the subscriber sees the pause", sub.pause.isOn)
	settle(100 * time.Millisecond) // a read begun before the pause ends within PauseCheck
	if err := rdb.XGroupSetID(ctx, Key(topic), "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if n := len(rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{Key(topic), ">"}, Count: 10}).Val()[0].Messages); n != 3 {
		t.Fatalf("re-pended %d entries", n)
	}
	if _, err := Resume(ctx, rdb, topic, "g"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "pending history settled", func() bool { return rdb.XPending(ctx, Key(topic), "g").Val().Count == 0 })
	if n := len(rec.deliveries()); n != 3 || sub.Stats().Deduplicated != 3 {
		t.Fatalf("%d deliveries, %d deduplicated: want 3 and 3", n, sub.Stats().Deduplicated)
	}

	// A seek back is an operator's replay: new reads, delivered again.
	if err := rdb.XGroupSetID(ctx, Key(topic), "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "replayed", func() bool { return len(rec.deliveries()) == 6 })
}

// A dead replica's entries are claimed a batch at a time on a batched
// subscription, not one entry per claim.
func TestBatchedSubscriptionClaimsInBatches(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "batchclaim", Retention{})
	publishN(t, p, topic, 30)
	ctx := context.Background()
	rdb.XGroupCreateMkStream(ctx, Key(topic), "g", "0")
	if n := len(rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "dead", Streams: []string{Key(topic), ">"}, Count: 30}).Val()[0].Messages); n != 30 {
		t.Fatalf("the dead replica read %d", n)
	}
	rec := &batchRecorder{}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, BatchMax: 10, ClaimTimeout: 200 * time.Millisecond}, rec)
	eventually.True(t, 15*time.Second, "30 delivered", func() bool { _, d := rec.events(); return len(d) == 30 })
	batches, data := rec.events()
	for i, d := range data {
		if want := fmt.Sprintf("event-%03d", i); d != want {
			t.Fatalf("event %d is %s, want %s", i, d, want)
		}
	}
	if batches > 6 {
		t.Fatalf("30 claimed events went out in %d batches (max_events 10): claimed one by one", batches)
	}
	t.Logf("30 claimed events in %d batches", batches)
}
