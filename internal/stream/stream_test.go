package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

func newEvent(data string) *event.Event {
	return &event.Event{ID: event.NewID(), Source: "test", Type: "t", Time: time.Now(), ContentType: "text/plain", Data: []byte(data)}
}

// recorder is a Handler that records deliveries and fails as told.
type recorder struct {
	mu    sync.Mutex
	got   []Delivery
	fail  func(d Delivery) error
	block chan struct{} // when set, Handle waits on it
}

func (r *recorder) Handle(ctx context.Context, d Delivery) error {
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	r.got = append(r.got, d)
	f := r.fail
	r.mu.Unlock()
	if f != nil {
		return f(d)
	}
	return nil
}

func (r *recorder) deliveries() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.got...)
}

type permErr struct{}

func (permErr) Error() string   { return "410 gone" }
func (permErr) Permanent() bool { return true }

func startSub(t *testing.T, rdb redis.UniversalClient, cfg SubscriptionConfig, h Handler) *runningSub {
	t.Helper()
	if cfg.Group == "" {
		cfg.Group = "g"
	}
	if cfg.Consumer == "" {
		cfg.Consumer = "c1"
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Backoff == (backoff.Policy{}) {
		cfg.Backoff = backoff.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	}
	if cfg.Grace == 0 {
		cfg.Grace = time.Second
	}
	if cfg.Block == 0 {
		cfg.Block = 200 * time.Millisecond
	}
	sub := NewSubscriber(rdb, cfg, h, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = sub.Run(ctx); close(done) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("subscriber did not stop within 10s")
			}
		})
	}
	t.Cleanup(stop)
	return &runningSub{Subscriber: sub, stop: stop}
}

// runningSub is a Subscriber running in the background of a test.
type runningSub struct {
	*Subscriber
	stop func()
}

// setup starts a Redis with start, and returns it, a client, a fresh topic
// and a publisher with the given retention.
func setup(t *testing.T, start func(testing.TB) *redistest.Server, prefix string, r Retention) (*redistest.Server, *redis.Client, string, *Publisher) {
	t.Helper()
	srv := start(t)
	rdb := srv.Client(t)
	return srv, rdb, redistest.UniqueTopic(t, prefix), NewPublisher(rdb, PublisherOptions{IdempotencyTTL: time.Minute, MinReplicas: AutoReplicas}, zerolog.Nop())
}

func publishN(t *testing.T, p *Publisher, topic string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		ev := newEvent(fmt.Sprintf("event-%03d", i))
		if _, err := p.Publish(context.Background(), topic, ev); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.ID)
	}
	return ids
}

func TestPublishWritesContractFields(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "pub", Retention{MaxLen: 1000})
	ev := newEvent("hello")
	ev.Subject, ev.TraceParent = "match/1", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	rc, err := p.Publish(context.Background(), topic, ev)
	if err != nil {
		t.Fatal(err)
	}
	if rc.ID != ev.ID || rc.StreamID == "" || rc.Topic != topic {
		t.Fatalf("receipt: got %+v", rc)
	}
	msgs, err := rdb.XRange(context.Background(), "sidecar:{"+topic+"}", "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("xrange: got %v, %v; want one entry", msgs, err)
	}
	v := msgs[0].Values
	for k, want := range map[string]string{"id": ev.ID, "source": "test", "type": "t", "content_type": "text/plain",
		"data": "hello", "subject": "match/1", "traceparent": ev.TraceParent, "time": ev.Time.UTC().Format(time.RFC3339Nano)} {
		if v[k] != want {
			t.Errorf("field %s: got %v, want %q", k, v[k], want)
		}
	}
}

func TestIdempotencyKeyPublishesOnce(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "idem", Retention{MaxLen: 1000})
	first := newEvent("a")
	first.IdempotencyKey = "order-1"
	r1, err := p.Publish(context.Background(), topic, first)
	if err != nil {
		t.Fatal(err)
	}
	second := newEvent("a")
	second.IdempotencyKey = "order-1"
	r2, err := p.Publish(context.Background(), topic, second)
	if err != nil {
		t.Fatal(err)
	}
	if r2.ID != r1.ID || r2.StreamID != r1.StreamID || !r2.Duplicate || r1.Duplicate {
		t.Fatalf("replay: got %+v after %+v, want the same ids and Duplicate", r2, r1)
	}
	other := newEvent("b")
	other.IdempotencyKey = "order-2"
	if r3, err := p.Publish(context.Background(), topic, other); err != nil || r3.ID == r1.ID {
		t.Fatalf("another key: got %+v, %v", r3, err)
	}
	if n := rdb.XLen(context.Background(), Key(topic)).Val(); n != 2 {
		t.Fatalf("stream length: got %d, want 2", n)
	}
}

func TestDeliversInOrderAndAcks(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "order", Retention{})
	ids := publishN(t, p, topic, 50)
	rec := &recorder{}
	startSub(t, rdb, SubscriptionConfig{Topic: topic}, rec)
	more := publishN(t, p, topic, 50)
	ids = append(ids, more...)
	eventually.True(t, 10*time.Second, "100 deliveries", func() bool { return len(rec.deliveries()) >= 100 })
	got := rec.deliveries()
	if len(got) != 100 {
		t.Fatalf("got %d deliveries, want 100", len(got))
	}
	for i, d := range got {
		if d.Event.ID != ids[i] || d.Attempt != 1 || string(d.Event.Data) != fmt.Sprintf("event-%03d", i%50) {
			t.Fatalf("delivery %d: got id %s attempt %d data %q, want id %s attempt 1", i, d.Event.ID, d.Attempt, d.Event.Data, ids[i])
		}
	}
	eventually.True(t, 5*time.Second, "no pending entries", func() bool {
		return rdb.XPending(context.Background(), Key(topic), "g").Val().Count == 0
	})
}

func TestRetryThenSuccessCountsAttempts(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "retry", Retention{})
	rec := &recorder{fail: func(d Delivery) error {
		if d.Attempt < 3 {
			return errors.New("503")
		}
		return nil
	}}
	startSub(t, rdb, SubscriptionConfig{Topic: topic}, rec)
	publishN(t, p, topic, 2)
	eventually.True(t, 5*time.Second, "6 attempts", func() bool { return len(rec.deliveries()) >= 6 })
	got := rec.deliveries()
	want := []int{1, 2, 3, 1, 2, 3}
	for i, d := range got {
		if d.Attempt != want[i] {
			t.Fatalf("attempt %d: got %d, want %d (a retrying event must hold back the next)", i, d.Attempt, want[i])
		}
		if i < 3 && d.Event.ID != got[0].Event.ID {
			t.Fatalf("delivery %d is of another event while the first still retried", i)
		}
	}
}

func TestPoisonEventDeadLettersAndLaterEventsFlow(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "dlq", Retention{})
	rec := &recorder{fail: func(d Delivery) error {
		switch string(d.Event.Data) {
		case "event-001":
			return errors.New("500 boom")
		case "event-003":
			return permErr{}
		}
		return nil
	}}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, MaxAttempts: 4}, rec)
	ids := publishN(t, p, topic, 5)
	eventually.True(t, 5*time.Second, "two DLQ entries", func() bool { return rdb.XLen(context.Background(), DLQKey(topic)).Val() == 2 })
	dlq := rdb.XRange(context.Background(), DLQKey(topic), "-", "+").Val()
	if dlq[0].Values["id"] != ids[1] || dlq[0].Values["attempts"] != "4" ||
		!strings.HasPrefix(fmt.Sprint(dlq[0].Values["error"]), "500 boom (gave up after 4 attempts") ||
		dlq[0].Values["group"] != "g" || dlq[0].Values["data"] != "event-001" || dlq[0].Values["original_id"] == "" {
		t.Fatalf("dlq[0]: got %v", dlq[0].Values)
	}
	if dlq[1].Values["id"] != ids[3] || dlq[1].Values["attempts"] != "1" {
		t.Fatalf("dlq[1] (permanent failure, no retry): got %v", dlq[1].Values)
	}
	eventually.True(t, 5*time.Second, "all acknowledged", func() bool {
		return rdb.XPending(context.Background(), Key(topic), "g").Val().Count == 0
	})
	var ok []string
	for _, d := range rec.deliveries() {
		if d.Event.ID != ids[1] && d.Event.ID != ids[3] {
			ok = append(ok, d.Event.ID)
		}
	}
	if len(ok) != 3 || ok[0] != ids[0] || ok[1] != ids[2] || ok[2] != ids[4] {
		t.Fatalf("healthy events: got %v, want %v", ok, []string{ids[0], ids[2], ids[4]})
	}
}

func TestRestartRedeliversOwnPendingFirst(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "pending", Retention{})
	ids := publishN(t, p, topic, 3)
	// A previous life of consumer c1 read all three and died before acking.
	if err := rdb.XGroupCreate(context.Background(), Key(topic), "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{Key(topic), ">"}, Count: 3, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	later := publishN(t, p, topic, 2)
	rec := &recorder{}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, Consumer: "c1"}, rec)
	eventually.True(t, 5*time.Second, "5 deliveries", func() bool { return len(rec.deliveries()) >= 5 })
	want := append(ids, later...)
	for i, d := range rec.deliveries() {
		if d.Event.ID != want[i] {
			t.Fatalf("delivery %d: got %s, want %s", i, d.Event.ID, want[i])
		}
	}
}

func TestClaimsFromDeadConsumerButNotFromSlowOne(t *testing.T) {
	// The embedded server does not age pending entries in real time, so
	// claiming by idle time needs a real Redis.
	_, rdb, topic, p := setup(t, redistest.StartProcess, "claim", Retention{})
	ids := publishN(t, p, topic, 1)
	if err := rdb.XGroupCreate(context.Background(), Key(topic), "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// "dead" read the first entry and vanished.
	rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{Group: "g", Consumer: "dead", Streams: []string{Key(topic), ">"}, Count: 1, Block: -1})

	// A slow consumer holds the second entry in its webhook far past the claim timeout.
	slow := &recorder{block: make(chan struct{})}
	slowSub := startSub(t, rdb, SubscriptionConfig{Topic: topic, Consumer: "slow", ClaimTimeout: time.Second}, slow)
	second := publishN(t, p, topic, 1)
	eventually.True(t, 5*time.Second, "slow consumer holding an entry", func() bool {
		ext := rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: Key(topic), Group: "g", Start: "-", End: "+", Count: 10, Consumer: "slow"}).Val()
		return len(ext) >= 1
	})
	live := &recorder{}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, Consumer: "live", ClaimTimeout: time.Second}, live)
	eventually.True(t, 10*time.Second, "dead consumer's entry claimed and delivered", func() bool {
		for _, d := range live.deliveries() {
			if d.Event.ID == ids[0] {
				return true
			}
		}
		return false
	})
	// Hold the slow webhook for 3 claim timeouts: keep-alive must keep its entry.
	time.Sleep(3 * time.Second)
	for _, d := range live.deliveries() {
		if d.Event.ID == second[0] {
			t.Fatalf("entry in flight on the slow consumer was stolen")
		}
	}
	close(slow.block)
	slowSub.stop()
	eventually.True(t, 5*time.Second, "all acknowledged", func() bool {
		return rdb.XPending(context.Background(), Key(topic), "g").Val().Count == 0
	})
}

func TestPendingEntryNoLongerInStreamIsAcked(t *testing.T) {
	// The embedded server drops deleted entries from the PEL; Redis keeps
	// them, which is the case this test is about.
	_, rdb, topic, p := setup(t, redistest.StartProcess, "gone", Retention{})
	ids := publishN(t, p, topic, 2)
	ctx := context.Background()
	rdb.XGroupCreate(ctx, Key(topic), "g", "0")
	msgs := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{Key(topic), ">"}, Count: 2, Block: -1}).Val()
	rdb.XDel(ctx, Key(topic), msgs[0].Messages[0].ID)
	rec := &recorder{}
	sub := startSub(t, rdb, SubscriptionConfig{Topic: topic, Consumer: "c1"}, rec)
	eventually.True(t, 5*time.Second, "all acknowledged", func() bool { return rdb.XPending(ctx, Key(topic), "g").Val().Count == 0 })
	got := rec.deliveries()
	if len(got) != 1 || got[0].Event.ID != ids[1] {
		t.Fatalf("got %d deliveries, want only %s", len(got), ids[1])
	}
	if st := sub.Stats(); st.Gone != 1 || st.Delivered != 1 {
		t.Fatalf("stats: got %+v, want 1 gone and 1 delivered", st)
	}
}

func TestConcurrencyDeliversInParallel(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "conc", Retention{})
	var mu sync.Mutex
	cur, peak := 0, 0
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, d Delivery) error {
		mu.Lock()
		cur++
		peak = max(peak, cur)
		mu.Unlock()
		<-release
		mu.Lock()
		cur--
		mu.Unlock()
		return nil
	})
	sub := startSub(t, rdb, SubscriptionConfig{Topic: topic, Concurrency: 8}, h)
	publishN(t, p, topic, 20)
	eventually.True(t, 5*time.Second, "8 deliveries in flight at once", func() bool { mu.Lock(); defer mu.Unlock(); return peak == 8 })
	close(release)
	eventually.True(t, 5*time.Second, "all 20 acknowledged", func() bool {
		return sub.Stats().Delivered == 20 && rdb.XPending(context.Background(), Key(topic), "g").Val().Count == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if peak != 8 {
		t.Fatalf("peak concurrency: got %d, want 8", peak)
	}
}

func TestHealsAfterRedisRestartLosesGroup(t *testing.T) {
	srv, rdb, topic, p := setup(t, redistest.StartProcess, "heal", Retention{})
	rec := &recorder{}
	sub := NewSubscriber(rdb, SubscriptionConfig{Topic: topic, Group: "g", Consumer: "c1", MaxAttempts: 3,
		Backoff: backoff.Policy{Initial: time.Millisecond, Max: time.Millisecond}, Grace: time.Second, Block: 200 * time.Millisecond}, rec, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = sub.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	publishN(t, p, topic, 3)
	eventually.True(t, 5*time.Second, "3 deliveries", func() bool { return len(rec.deliveries()) == 3 })

	srv.Restart() // empty: stream and group are gone
	eventually.True(t, 10*time.Second, "publish after restart", func() bool {
		_, err := p.Publish(context.Background(), topic, newEvent("after-restart"))
		return err == nil
	})
	eventually.True(t, 15*time.Second, "delivery after the group was recreated", func() bool { return len(rec.deliveries()) == 4 })
	if got := string(rec.deliveries()[3].Event.Data); got != "after-restart" {
		t.Fatalf("got %q, want after-restart", got)
	}
	if !sub.Running() {
		t.Fatal("subscriber not running after healing")
	}
}

func TestPublishDrainedIsIdempotentByEventID(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.Start, "drain", Retention{})
	ctx := context.Background()
	ev := newEvent("spooled")
	r1, err := p.PublishDrained(ctx, topic, ev, false)
	if err != nil {
		t.Fatal(err)
	}
	// A crash between XADD and the spool's ack replays the same record.
	r2, err := p.PublishDrained(ctx, topic, ev, false)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Duplicate || r1.Duplicate || r1.StreamID == "" {
		t.Fatalf("replayed drain: got %+v after %+v, want a duplicate", r2, r1)
	}
	// The batch is committed: its drain set is emptied, nothing is left behind.
	if err := p.Committed(ctx, topic, []string{ev.ID}); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, Key(topic)+":drain:default", Key(topic)+":drain:default:mark").Val(); n != 0 {
		t.Fatalf("drain keys left after commit: %d, want 0", n)
	}
	// An uncertain record whose timed-out XADD did land is found, not re-added.
	landed := newEvent("landed")
	direct, err := p.Publish(ctx, topic, landed)
	if err != nil {
		t.Fatal(err)
	}
	r3, err := p.PublishDrained(ctx, topic, landed, true)
	if err != nil || r3.StreamID != direct.StreamID || !r3.Duplicate {
		t.Fatalf("uncertain drain of a landed event: got %+v, %v; want its entry %s", r3, err, direct.StreamID)
	}
	// An uncertain record that never landed is added.
	lost := newEvent("never-landed")
	if r4, err := p.PublishDrained(ctx, topic, lost, true); err != nil || r4.Duplicate || r4.StreamID == "" {
		t.Fatalf("uncertain drain of a lost event: got %+v, %v", r4, err)
	}
	// A publish retried with the same Idempotency-Key while Redis was down is
	// spooled as a new event; its drain finds the key and adds nothing.
	keyed := newEvent("keyed")
	keyed.IdempotencyKey = "order-7"
	first, err := p.Publish(ctx, topic, keyed)
	if err != nil {
		t.Fatal(err)
	}
	retry := newEvent("keyed")
	retry.IdempotencyKey = "order-7"
	if r5, err := p.PublishDrained(ctx, topic, retry, false); err != nil || !r5.Duplicate || r5.ID != first.ID {
		t.Fatalf("drained retry with a used key: got %+v, %v; want the first publish %s", r5, err, first.ID)
	}
	if n := rdb.XLen(ctx, Key(topic)).Val(); n != 4 {
		t.Fatalf("stream length: got %d, want 4", n)
	}
}

func TestEntryReadTooOftenIsDeadLetteredNotLooped(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.StartProcess, "crashloop", Retention{})
	ctx := context.Background()
	ids := publishN(t, p, topic, 2)
	rdb.XGroupCreate(ctx, Key(topic), "g", "0")
	// Six earlier lives of consumer c1 read the first entry and died before acking
	// (XPENDING's delivery count also counts a read of the pending history).
	rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{Key(topic), ">"}, Count: 1, Block: -1})
	for range 5 {
		rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{Key(topic), "0"}, Count: 1, Block: -1})
	}
	rec := &recorder{}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, Consumer: "c1", MaxAttempts: 5}, rec)
	eventually.True(t, 5*time.Second, "the crash-looping entry dead-lettered", func() bool { return rdb.XLen(ctx, DLQKey(topic)).Val() == 1 })
	dlq := rdb.XRange(ctx, DLQKey(topic), "-", "+").Val()[0].Values
	if dlq["id"] != ids[0] || !strings.Contains(dlq["error"].(string), "read 7 times") {
		t.Fatalf("DLQ entry: got %v", dlq)
	}
	eventually.True(t, 5*time.Second, "the next entry delivered", func() bool { return len(rec.deliveries()) == 1 })
	if d := rec.deliveries()[0]; d.Event.ID != ids[1] || d.Attempt != 1 {
		t.Fatalf("got %s attempt %d, want %s attempt 1 (the crash-looping one never reaches the webhook)", d.Event.ID, d.Attempt, ids[1])
	}
}

func TestRedeliveryAfterRestartContinuesAttemptCount(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.StartProcess, "attempts", Retention{})
	ctx := context.Background()
	publishN(t, p, topic, 1)
	rdb.XGroupCreate(ctx, Key(topic), "g", "0")
	rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{Key(topic), ">"}, Count: 1, Block: -1})
	rec := &recorder{}
	startSub(t, rdb, SubscriptionConfig{Topic: topic, Consumer: "c1"}, rec)
	eventually.True(t, 5*time.Second, "redelivery", func() bool { return len(rec.deliveries()) == 1 })
	if a := rec.deliveries()[0].Attempt; a != 2 {
		t.Fatalf("attempt after a restart: got %d, want 2", a)
	}
}

// With a replica attached, a publish is acknowledged only once the replica
// has it (WAIT): a replica that stops answering turns publishes into
// ErrNotReplicated — uncertain, so the relay spools them — instead of
// acknowledging writes a failover could drop.
func TestPublishWaitsForAReplica(t *testing.T) {
	master := redistest.StartProcess(t)
	host, port, _ := strings.Cut(master.Addr, ":")
	replica := redistest.StartProcessWith(t, 0, "--replicaof", host, port)
	rdb := master.Client(t)
	ctx := context.Background()
	eventually.True(t, 10*time.Second, "replica online", func() bool {
		info, err := rdb.Info(ctx, "replication").Result()
		return err == nil && onlineReplicas(info) == 1
	})
	topic := redistest.UniqueTopic(t, "wait")
	p := NewPublisher(rdb, PublisherOptions{IdempotencyTTL: time.Minute, MinReplicas: AutoReplicas}, zerolog.Nop())
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go p.Run(pctx) // the batcher: XADDs and their WAIT share a pipeline
	publish := func(ev *event.Event) error {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := p.Publish(c, topic, ev)
		return err
	}
	keyed := newEvent("keyed")
	keyed.IdempotencyKey = "k1"
	for _, ev := range []*event.Event{newEvent("a"), keyed} {
		if err := publish(ev); err != nil {
			t.Fatalf("publish %q with the replica up: %v", ev.Data, err)
		}
	}
	if n, err := replica.Client(t).XLen(ctx, Key(topic)).Result(); err != nil || n != 2 {
		t.Fatalf("replica's stream length right after the acknowledgements: got %d (%v), want 2", n, err)
	}
	replica.Stop()
	defer replica.Cont()
	keyed2 := newEvent("keyed")
	keyed2.IdempotencyKey = "k2"
	for _, ev := range []*event.Event{newEvent("b"), keyed2} {
		// WAIT gives up within the publish's deadline: ErrNotReplicated, or on
		// a loaded machine the deadline itself. Either way: not acknowledged,
		// uncertain (the relay spools it and drains it idempotently).
		err := publish(ev)
		if err == nil || !IsUncertain(err) || IsRejected(err) {
			t.Fatalf("publish %q with the replica stopped: got %v, want an uncertain error (ErrNotReplicated)", ev.Data, err)
		}
	}
	// A client retrying the keyed publish finds its Idempotency-Key on the
	// master; the original is still there alone, so the replay is no more
	// certain than the original was.
	// The retry comes on a connection that never wrote (another sidecar, or
	// this one restarted). Redis 7.0 sets a client's WAIT offset after any
	// command; newer versions only after one that propagated, so the replay
	// writes (the key's own TTL, unchanged) for WAIT to cover the original.
	p2 := NewPublisher(master.Client(t), PublisherOptions{IdempotencyTTL: time.Minute, MinReplicas: AutoReplicas}, zerolog.Nop())
	go p2.Run(pctx)
	retry := newEvent("keyed")
	retry.IdempotencyKey = "k2"
	rctx, rcancel := context.WithTimeout(ctx, time.Second)
	defer rcancel()
	if _, err := p2.Publish(rctx, topic, retry); err == nil || !IsUncertain(err) || IsRejected(err) {
		t.Fatalf("retry of the unreplicated keyed publish with the replica stopped: got %v, want an uncertain error (its original is on the master alone)", err)
	}
	drained := newEvent("drained")
	if _, err := p.PublishDrained(ctx, topic, drained, false); err != nil {
		t.Fatal(err)
	}
	c, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	if err := p.Committed(c, topic, []string{drained.ID}); err == nil || !IsUncertain(err) {
		t.Fatalf("drain commit with the replica stopped: got %v, want ErrNotReplicated (the batch stays spooled)", err)
	}
	replica.Cont()
	if err := publish(newEvent("c")); err != nil {
		t.Fatalf("publish after the replica resumed: %v", err)
	}
	if err := p.Committed(ctx, topic, []string{drained.ID}); err != nil {
		t.Fatalf("drain commit after the replica resumed: %v", err)
	}
}

func TestClassifyRedisErrors(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	key := "sidecar:{" + redistest.UniqueTopic(t, "wrongtype") + "}"
	rdb.Set(ctx, key, "x", time.Minute)
	wrongType := rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"a", "b"}}).Err()
	if !IsRejected(wrongType) || IsUncertain(wrongType) {
		t.Fatalf("WRONGTYPE: rejected %v, uncertain %v; want rejected, certain", IsRejected(wrongType), IsUncertain(wrongType))
	}
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + fmt.Sprint(redistest.FreePort(t)), MaxRetries: -1})
	defer dead.Close()
	refused := dead.Ping(ctx).Err()
	if IsRejected(refused) || IsUncertain(refused) {
		t.Fatalf("connection refused: rejected %v, uncertain %v; want an outage that certainly wrote nothing", IsRejected(refused), IsUncertain(refused))
	}
	for _, tc := range []struct {
		reply    string
		rejected bool
	}{
		{"OOM command not allowed when used memory > 'maxmemory'.", false},
		{"READONLY You can't write against a read only replica.", false},
		{"LOADING Redis is loading the dataset in memory", false},
		{"NOPERM this user has no permissions to run the 'evalsha' command", true},
		{"ERR Error running script (call to f_x): @user_script:1: WRONGTYPE", true},
		{"CLUSTERDOWN The cluster is down", false},
		{"UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)", false},
		{"MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.", false},
	} {
		t.Run(tc.reply, func(t *testing.T) {
			if got := IsRejected(redisReply(tc.reply)); got != tc.rejected {
				t.Fatalf("IsRejected: got %v, want %v", got, tc.rejected)
			}
		})
	}
}

// redisReply is an error reply as go-redis returns it.
type redisReply string

func (e redisReply) Error() string { return string(e) }
func (redisReply) RedisError()     {}

// Review findings (each lost acknowledged events before its fix).

// A drain batch written to one master and committed on another (the
// failover client switched, or the slot moved) is not acknowledged.
func TestCommitOnAnotherNodeIsRefused(t *testing.T) {
	a, b := redistest.StartProcess(t), redistest.StartProcess(t)
	var target atomic.Value
	target.Store(a.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: "switching", MaxRetries: 3,
		Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, target.Load().(string))
		}})
	defer rdb.Close()
	topic := redistest.UniqueTopic(t, "moved")
	p := NewPublisher(rdb, PublisherOptions{IdempotencyTTL: time.Minute, MinReplicas: 0}, zerolog.Nop())
	ctx := context.Background()
	ev := newEvent("x")
	if _, err := p.PublishDrained(ctx, topic, ev, false); err != nil {
		t.Fatal(err)
	}
	target.Store(b.Addr) // the master changed under the drain
	a.Kill()
	err := p.Committed(ctx, topic, []string{ev.ID})
	if !errors.Is(err, ErrBatchMoved) || IsRejected(err) {
		t.Fatalf("commit on a node without the batch: got %v, want ErrBatchMoved (the batch is drained again)", err)
	}
	// Drained again, on the new master, it lands and commits.
	if rc, err := p.PublishDrained(ctx, topic, ev, false); err != nil || rc.Duplicate {
		t.Fatalf("re-drain on the new master: got %+v, %v; want a fresh append", rc, err)
	}
	if err := p.Committed(ctx, topic, []string{ev.ID}); err != nil {
		t.Fatal(err)
	}
	if n := b.Client(t).XLen(ctx, Key(topic)).Val(); n != 1 {
		t.Fatalf("new master's stream: %d entries, want 1", n)
	}
}

// An uncertain event found on a master that then lost it (restarted empty,
// or demoted) is appended when drained again, not skipped on the strength
// of a cached look-up.
func TestUncertainFoundThenLostIsAppended(t *testing.T) {
	srv, rdb, topic, p := setup(t, redistest.StartProcess, "stale", Retention{})
	ctx := context.Background()
	ev := newEvent("x")
	if _, err := p.Publish(ctx, topic, ev); err != nil {
		t.Fatal(err)
	}
	if rc, err := p.PublishDrained(ctx, topic, ev, true); err != nil || !rc.Duplicate {
		t.Fatalf("uncertain, present: got %+v, %v; want found", rc, err)
	}
	srv.Restart() // the stream is gone; the look-up cache is younger than 2 s
	if rc, err := p.PublishDrained(ctx, topic, ev, true); err != nil || rc.Duplicate {
		t.Fatalf("uncertain, lost meanwhile: got %+v, %v; want appended", rc, err)
	}
	if err := p.Committed(ctx, topic, []string{ev.ID}); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, Key(topic)).Val(); n != 1 {
		t.Fatalf("stream: %d entries, want 1", n)
	}
}

// A user that may not run INFO (it is in @dangerous) still waits for the
// replica: the count comes from WAIT 0 0.
func TestReplicaCountedWithoutINFO(t *testing.T) {
	master := redistest.StartProcess(t)
	host, port, _ := strings.Cut(master.Addr, ":")
	replica := redistest.StartProcessWith(t, 0, "--replicaof", host, port)
	admin := master.Client(t)
	ctx := context.Background()
	eventually.True(t, 10*time.Second, "replica online", func() bool {
		info, err := admin.Info(ctx, "replication").Result()
		return err == nil && onlineReplicas(info) == 1
	})
	if err := admin.Do(ctx, "ACL", "SETUSER", "noinfo", "on", ">pw", "~*", "&*", "+@all", "-info").Err(); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: master.Addr, Username: "noinfo", Password: "pw"})
	defer rdb.Close()
	if err := rdb.Info(ctx, "replication").Err(); err == nil {
		t.Fatal("the test user can run INFO")
	}
	p := NewPublisher(rdb, PublisherOptions{IdempotencyTTL: time.Minute, MinReplicas: AutoReplicas}, zerolog.Nop())
	topic := redistest.UniqueTopic(t, "noinfo")
	replica.Stop()
	defer replica.Cont()
	c, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if rc, err := p.Publish(c, topic, newEvent("x")); err == nil || !IsUncertain(err) {
		t.Fatalf("publish with the only replica stopped, no INFO permission: got %+v, %v; want unacknowledged (uncertain)", rc, err)
	}
}

// Found by the chaos soak (standalone, seed 102): Redis handed an entry to
// this consumer and the answer never arrived (it shut down mid-reply).
// After the read error the subscriber must read its own pending history
// before new entries — before, it went on with new ones and the orphan came
// back only through the claim scan, delivered out of order.
func TestEntryOrphanedByALostReadIsDeliveredFirst(t *testing.T) {
	_, rdb, topic, p := setup(t, redistest.StartProcess, "orphan", Retention{})
	ctx := context.Background()
	if err := rdb.XGroupCreateMkStream(ctx, Key(topic), "g", "$").Err(); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	// As the sidecar reads: through a client that never retries by itself.
	reads := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr, MaxRetries: -1})
	defer reads.Close()
	startSub(t, reads, SubscriptionConfig{Topic: topic, Group: "g", Consumer: "c1", ClaimTimeout: time.Minute}, rec)
	eventually.True(t, 5*time.Second, "subscriber blocked on new entries", func() bool {
		list, err := rdb.ClientList(ctx).Result()
		return err == nil && strings.Contains(list, "cmd=xreadgroup")
	})
	// One transaction appends e0 and hands it to c1 — as the lost read
	// did — before the subscriber's blocked read can be served.
	orphan := newEvent("e0")
	if _, err := rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: Key(topic), Values: orphan.Values()})
		pipe.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{Key(topic), ">"}, Count: 1, Block: -1})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The subscriber's connection breaks: its read fails.
	if err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	ids := publishN(t, p, topic, 3)
	eventually.True(t, 10*time.Second, "4 deliveries", func() bool { return len(rec.deliveries()) >= 4 })
	got := rec.deliveries()
	if got[0].Event.ID != orphan.ID {
		t.Fatalf("first delivery: got %q, want the orphaned entry %q first (then %v)", got[0].Event.Data, orphan.Data, ids)
	}
	for i, id := range ids {
		if got[i+1].Event.ID != id {
			t.Fatalf("delivery %d: got %s, want %s", i+1, got[i+1].Event.ID, id)
		}
	}
}
