package test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// body returns event i's payload: a FOGIS-style envelope, with bytes that
// must survive untouched (unicode, escapes, a trailing newline).
func body(i int) []byte {
	return fmt.Appendf(nil, `{"message_id":"m-%04d","type":"match_updates","source":"match-list-processor","version":"1.0","payload":{"match_id":%d,"venue":"Ullevi \u00e5\u00e4\u00f6 \"G\u00f6teborg\"","i":%d}}`+"\n", i, 1000+i, i)
}

func TestPublishAndDeliverExactly(t *testing.T) {
	_, topic, rc, pub, _ := startPair(t, "e2e", "SIDECAR_WEBHOOK_SECRET="+secret)

	const n = 300
	start := time.Now()
	var sent []receipt
	for i := range n {
		sent = append(sent, pub.mustPublish(topic, body(i), "ce-type", "match_updates"))
	}
	eventually.True(t, 30*time.Second, fmt.Sprintf("%d deliveries", n), func() bool { return rc.count() >= n })
	elapsed := time.Since(start)
	// Give a duplicate time to show up before counting exactly.
	time.Sleep(200 * time.Millisecond)
	got := rc.all()
	if len(got) != n {
		t.Fatalf("got %d deliveries, want exactly %d", len(got), n)
	}
	key, _ := base64.StdEncoding.DecodeString(secret[len("whsec_"):])
	for i, r := range got {
		h := r.Header
		if string(r.Body) != string(body(i)) {
			t.Fatalf("delivery %d: body %q, want %q", i, r.Body, body(i))
		}
		for name, want := range map[string]string{
			"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": sent[i].ID, "ce-source": "processor",
			"ce-type": "match_updates", "webhook-id": sent[i].ID, "Sidecar-Topic": topic, "Sidecar-Attempt": "1",
		} {
			if v := h.Get(name); v != want {
				t.Fatalf("delivery %d header %s: got %q, want %q", i, name, v, want)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, h.Get("ce-time")); err != nil {
			t.Fatalf("delivery %d ce-time %q: %v", i, h.Get("ce-time"), err)
		}
		ts, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
		if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
			t.Fatalf("delivery %d webhook-timestamp %q is not now", i, h.Get("webhook-timestamp"))
		}
		m := hmac.New(sha256.New, key)
		fmt.Fprintf(m, "%s.%d.%s", sent[i].ID, ts, r.Body)
		if want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil)); h.Get("webhook-signature") != want {
			t.Fatalf("delivery %d webhook-signature: got %q, want %q", i, h.Get("webhook-signature"), want)
		}
	}
	t.Logf("measured: %d events published and delivered in order in %v, 0 duplicates", n, elapsed.Round(time.Millisecond))
}

func TestIdempotencyKeyOverHTTP(t *testing.T) {
	_, topic, rc, pub, _ := startPair(t, "idem")
	first := pub.mustPublish(topic, body(1), "Idempotency-Key", "match-1001-v2")
	again := pub.mustPublish(topic, body(1), "Idempotency-Key", "match-1001-v2")
	if again != first {
		t.Fatalf("retried publish: got %+v, want the first result %+v", again, first)
	}
	other := pub.mustPublish(topic, body(2))
	eventually.True(t, 10*time.Second, "the marker event", func() bool {
		for _, id := range ids(rc.all()) {
			if id == other.ID {
				return true
			}
		}
		return false
	})
	if got := ids(rc.all()); len(got) != 2 || got[0] != first.ID {
		t.Fatalf("deliveries: got %v, want [%s %s]", got, first.ID, other.ID)
	}
}

func TestSubscriberDownWhilePublishingGetsEverything(t *testing.T) {
	_, topic, rc, pub, sub := startPair(t, "down")
	var sent []string
	for i := range 10 {
		sent = append(sent, pub.mustPublish(topic, body(i)).ID)
	}
	eventually.True(t, 10*time.Second, "first 10", func() bool { return rc.count() == 10 })
	if err := sub.term(15 * time.Second); err != nil {
		t.Fatalf("SIGTERM: got exit %v, want 0", err)
	}
	for i := 10; i < 200; i++ {
		sent = append(sent, pub.mustPublish(topic, body(i)).ID)
	}
	sub.restart()
	exactlyOnceInOrder(t, rc, sent)
}

func TestKill9MidDeliveryLosesNothing(t *testing.T) {
	_, topic, rc, pub, sub := startPair(t, "kill")
	rc.set(5*time.Millisecond, nil)
	const n = 300
	var sent []string
	for i := range n {
		sent = append(sent, pub.mustPublish(topic, body(i)).ID)
	}
	eventually.True(t, 30*time.Second, "deliveries under way", func() bool { return rc.count() >= 60 })
	sub.kill()
	atKill := rc.count()
	sub.restart()
	eventually.True(t, 60*time.Second, "every event delivered", func() bool { return rc.distinct() == n })
	time.Sleep(200 * time.Millisecond)
	got := ids(rc.all())
	dups := len(got) - n
	// concurrency 1: at most the one delivery in flight at the kill repeats.
	if dups > 1 {
		t.Fatalf("got %d duplicates, want at most 1 (the in-flight delivery)", dups)
	}
	// Order holds too: the first-seen sequence equals the published one.
	var firsts []string
	seen := map[string]bool{}
	for _, id := range got {
		if !seen[id] {
			seen[id] = true
			firsts = append(firsts, id)
		}
	}
	if fmt.Sprint(firsts) != fmt.Sprint(sent) {
		t.Fatal("deliveries out of publish order after kill -9")
	}
	t.Logf("measured: %d events, kill -9 after %d deliveries, %d duplicates, 0 lost", n, atKill, dups)
}

func TestRetryThenSuccessCarriesAttemptNumber(t *testing.T) {
	_, topic, rc, pub, _ := startPair(t, "retry")
	rc.set(0, func(r received, n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	r := pub.mustPublish(topic, body(0))
	eventually.True(t, 10*time.Second, "third attempt", func() bool { return rc.count() >= 3 })
	time.Sleep(300 * time.Millisecond)
	got := rc.all()
	if len(got) != 3 {
		t.Fatalf("got %d requests, want 3 (503, 503, 200)", len(got))
	}
	for i, g := range got {
		if g.Header.Get("Sidecar-Attempt") != strconv.Itoa(i+1) || g.Header.Get("webhook-id") != r.ID || g.Header.Get("ce-id") != r.ID {
			t.Fatalf("request %d: attempt %q id %q, want attempt %d and id %s", i, g.Header.Get("Sidecar-Attempt"), g.Header.Get("webhook-id"), i+1, r.ID)
		}
	}
	if gap := got[1].At.Sub(got[0].At); gap < 10*time.Millisecond {
		t.Fatalf("retry came %v after the failure; backoff (initial 20ms, jittered ≥10ms) was skipped", gap)
	}
}

func TestPoisonEventGoesToDLQAndLaterEventsFlow(t *testing.T) {
	redis, topic, rc, pub, _ := startPair(t, "poison")
	poison := body(1)
	rc.set(0, func(r received, n int) int {
		if string(r.Body) == string(poison) {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	var sent []receipt
	for i := range 5 {
		sent = append(sent, pub.mustPublish(topic, body(i)))
	}
	rdb := redis.Client(t)
	dlqKey := "sidecar:{" + topic + "}:dlq"
	eventually.True(t, 15*time.Second, "poison event in the DLQ", func() bool { return rdb.XLen(context.Background(), dlqKey).Val() == 1 })
	eventually.True(t, 15*time.Second, "later events delivered", func() bool { return rc.count() >= 7 })
	entry := rdb.XRange(context.Background(), dlqKey, "-", "+").Val()[0].Values
	if entry["id"] != sent[1].ID || entry["attempts"] != "3" || entry["group"] != "calendar" ||
		entry["original_id"] != sent[1].StreamID || entry["data"] != string(poison) || entry["error"] == "" {
		t.Fatalf("DLQ entry: got %v", entry)
	}
	var healthy []string
	for _, r := range rc.all() {
		if string(r.Body) != string(poison) {
			healthy = append(healthy, r.Header.Get("webhook-id"))
		}
	}
	if want := []string{sent[0].ID, sent[2].ID, sent[3].ID, sent[4].ID}; fmt.Sprint(healthy) != fmt.Sprint(want) {
		t.Fatalf("healthy deliveries: got %v, want %v", healthy, want)
	}
	eventually.True(t, 5*time.Second, "nothing pending", func() bool {
		return rdb.XPending(context.Background(), "sidecar:{"+topic+"}", "calendar").Val().Count == 0
	})
}

func TestRedisRestartedEmptySubscriptionHeals(t *testing.T) {
	redis, topic, rc, pub, sub := startPair(t, "heal")
	pub.mustPublish(topic, body(0))
	eventually.True(t, 10*time.Second, "first delivery", func() bool { return rc.count() == 1 })

	redis.Restart() // a new, empty Redis: stream and group are gone
	var after receipt
	eventually.True(t, 15*time.Second, "publish accepted again", func() bool {
		code, r := pub.publish(topic, body(1))
		after = r
		return code == http.StatusAccepted
	})
	eventually.True(t, 20*time.Second, "delivery after the restart", func() bool { return rc.count() >= 2 })
	if got := ids(rc.all()); len(got) != 2 || got[1] != after.ID {
		t.Fatalf("got %v, want the post-restart event %s delivered once", got, after.ID)
	}
	eventually.True(t, 10*time.Second, "subscriber ready", func() bool {
		resp, err := http.Get(sub.url("/readyz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func TestStartsWithoutRedisSpoolsThenDrains(t *testing.T) {
	port := redistest.FreePort(t)
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	topic := redistest.UniqueTopic(t, "late")
	rc := newReceiver(t)
	sub := startSidecar(t, "calendar", "REDIS_URL="+url, "SIDECAR_CONFIG="+subscriberConfig(t, topic, rc.url(), ""))
	if code, rep := sub.readyz(); code != http.StatusOK || rep["status"] != "degraded" || rep["spool"] != "writable" {
		t.Fatalf("/readyz with Redis down: got %d %v, want 200 degraded (the spool takes publishes)", code, rep)
	}
	start := time.Now()
	code, r := sub.publish(topic, body(0))
	if el := time.Since(start); code != http.StatusAccepted || !r.Spooled || r.StreamID != "" || el > 2*time.Second {
		t.Fatalf("publish with Redis down: got %d %+v after %v, want a quick 202 spooled", code, r, el)
	}
	redistest.StartProcessOnPort(t, port)
	eventually.True(t, 20*time.Second, "ready once Redis appears", func() bool {
		code, rep := sub.readyz()
		return code == 200 && rep["status"] == "ready"
	})
	got := sub.mustPublish(topic, body(1))
	eventually.True(t, 10*time.Second, "both delivered", func() bool { return rc.count() >= 2 })
	time.Sleep(200 * time.Millisecond)
	if ids := ids(rc.all()); fmt.Sprint(ids) != fmt.Sprint([]string{r.ID, got.ID}) {
		t.Fatalf("got %v, want the spooled event then the direct one, once each", ids)
	}
}

func TestSIGTERMFinishesInFlightDeliveryAndExitsZero(t *testing.T) {
	redis, topic, rc, pub, sub := startPair(t, "term")
	rc.set(700*time.Millisecond, nil)
	first := pub.mustPublish(topic, body(0))
	second := pub.mustPublish(topic, body(1))
	eventually.True(t, 10*time.Second, "first delivery in flight", func() bool { return rc.count() == 1 })
	if err := sub.term(15 * time.Second); err != nil {
		t.Fatalf("SIGTERM: got exit %v, want 0", err)
	}
	rdb := redis.Client(t)
	pending := rdb.XPendingExt(context.Background(), &goredis.XPendingExtArgs{Stream: "sidecar:{" + topic + "}", Group: "calendar", Start: "-", End: "+", Count: 10}).Val()
	for _, p := range pending {
		if p.ID == first.StreamID {
			t.Fatalf("the in-flight delivery was not acknowledged before exit")
		}
	}
	rc.set(0, nil)
	sub.restart()
	eventually.True(t, 10*time.Second, "second event", func() bool { return rc.count() >= 2 })
	time.Sleep(200 * time.Millisecond)
	if got := ids(rc.all()); fmt.Sprint(got) != fmt.Sprint([]string{first.ID, second.ID}) {
		t.Fatalf("got %v, want each event once", got)
	}
}

func TestTwoReplicasShareTheGroupAndClaimFromADeadOne(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "replicas")
	rc := newReceiver(t)
	rc.set(2*time.Millisecond, nil)
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	cfg := subscriberConfig(t, topic, rc.url(), "")
	a := startSidecar(t, "calendar-a", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+cfg, "SIDECAR_CONSUMER=calendar-a", "SIDECAR_CLAIM_TIMEOUT=2s")
	startSidecar(t, "calendar-b", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+cfg, "SIDECAR_CONSUMER=calendar-b", "SIDECAR_CLAIM_TIMEOUT=2s")
	const n = 200
	sent := map[string]bool{}
	for i := range n {
		sent[pub.mustPublish(topic, body(i)).ID] = true
	}
	eventually.True(t, 20*time.Second, "deliveries under way on both replicas", func() bool { return rc.count() >= 40 })
	a.kill() // its read-ahead and in-flight entries are now stranded in its pending list
	killed := time.Now()
	eventually.True(t, 30*time.Second, "every event delivered", func() bool { return rc.distinct() == n })
	time.Sleep(300 * time.Millisecond)
	got := ids(rc.all())
	for _, id := range got {
		if !sent[id] {
			t.Fatalf("delivered an event nobody published: %s", id)
		}
	}
	dups := len(got) - n
	// Bound: what replica a had in flight (concurrency 1) when it died.
	if dups > 1 {
		t.Fatalf("got %d duplicates, want at most 1", dups)
	}
	// The last entry a had in flight may be delivered already (a counts
	// it above) yet still pending on a: b claims it once it has been idle
	// for the claim timeout, one scan at a time.
	eventually.True(t, 15*time.Second, "nothing left pending on the dead replica", func() bool {
		p, err := redis.Client(t).XPending(context.Background(), "sidecar:{"+topic+"}", "calendar").Result()
		return err == nil && p.Count == 0
	})
	if got := len(rc.all()) - n; got > 1 {
		t.Fatalf("got %d duplicates once the claims were done, want at most 1", got)
	}
	all := rc.all()
	t.Logf("measured: %d events over 2 replicas, one SIGKILLed after ≥40 deliveries; its stranded entries were claimed by the other (claim timeout 2 s); all delivered %v after the kill; 0 lost, %d duplicated",
		n, all[len(all)-1].At.Sub(killed).Round(10*time.Millisecond), dups)
}
