package test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// A webhook that is down for longer than the old default horizon (10
// attempts, backoff capped) loses nothing: with max_attempts left at its
// default (0, no count limit) the subscription keeps retrying for retry_for.
// The backoff here is scaled down (10–50 ms) so "down for minutes" fits in a
// few seconds: what matters is far more failed attempts than the old limit.
func TestWebhookDownPastTheOldHorizonDeadLettersNothing(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "horizon")
	rc := newReceiver(t)
	down := time.Now().Add(3 * time.Second)
	rc.set(0, func(received, int) int {
		if time.Now().Before(down) {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	cfg := writeConfig(t, fmt.Sprintf(`service: calendar
subscriptions:
  - topic: %s
    url: %s
    backoff: {initial: 10ms, max: 50ms}
`, topic, rc.url()))
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+cfg)

	var want []string
	for i := range 5 {
		want = append(want, pub.mustPublish(topic, body(i)).ID)
	}
	eventually.True(t, 30*time.Second, "the webhook back up and all 5 delivered", func() bool {
		seen := map[string]bool{}
		for _, r := range rc.all() {
			if r.At.After(down) {
				seen[r.Header.Get("webhook-id")] = true
			}
		}
		return len(seen) == len(want)
	})
	failed := 0
	for _, r := range rc.all() {
		if r.At.Before(down) {
			failed++
		}
	}
	ctx := context.Background()
	if n, err := redis.Client(t).XLen(ctx, "sidecar:{"+topic+"}:dlq").Result(); err != nil || n != 0 {
		t.Fatalf("DLQ length: got %d (%v), want 0: nothing may be dead-lettered while retry_for has not passed", n, err)
	}
	if failed <= 10 {
		t.Fatalf("the webhook failed %d attempts: the test must outlast the old 10-attempt horizon", failed)
	}
	// In order: the first delivery after the outage is event 0, and the
	// successful deliveries follow the publish order.
	var ok []string
	for _, r := range rc.all() {
		if r.At.After(down) {
			ok = append(ok, r.Header.Get("webhook-id"))
		}
	}
	for i := range want {
		if ok[i] != want[i] {
			t.Fatalf("successful delivery %d: got %s, want %s", i, ok[i], want[i])
		}
	}
	t.Logf("measured: webhook down 3s with %d failed attempts (old horizon: 10); acked 5, delivered 5, dead-lettered 0, lost 0", failed)
}

// Past retry_for the event is dead-lettered (not lost), with the reason.
func TestRetryForExpiresIntoTheDLQ(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "retryfor")
	rc := newReceiver(t)
	rc.set(0, func(received, int) int { return http.StatusInternalServerError })
	cfg := writeConfig(t, fmt.Sprintf(`service: calendar
subscriptions:
  - topic: %s
    url: %s
    retry_for: 1s
    backoff: {initial: 20ms, max: 100ms}
`, topic, rc.url()))
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+cfg)
	sent := time.Now()
	id := pub.mustPublish(topic, body(0)).ID
	ctx := context.Background()
	rdb := redis.Client(t)
	eventually.True(t, 20*time.Second, "the event in the DLQ", func() bool {
		n, err := rdb.XLen(ctx, "sidecar:{"+topic+"}:dlq").Result()
		return err == nil && n == 1
	})
	took := time.Since(sent)
	msgs, err := rdb.XRange(ctx, "sidecar:{"+topic+"}:dlq", "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("DLQ: %v %v", msgs, err)
	}
	v := msgs[0].Values
	if v["id"] != id || !strings.Contains(fmt.Sprint(v["error"]), "retry_for 1s") || v["group"] != "calendar" {
		t.Fatalf("DLQ entry: got %v, want id %s, an error naming retry_for 1s, group calendar", v, id)
	}
	if took < time.Second {
		t.Fatalf("dead-lettered after %v, before retry_for (1s) had passed", took)
	}
	p, err := rdb.XPending(ctx, "sidecar:{"+topic+"}", "calendar").Result()
	if err != nil || p.Count != 0 {
		t.Fatalf("pending after dead-lettering: %+v %v, want 0", p, err)
	}
	t.Logf("measured: retry_for 1s; dead-lettered after %v and %d attempts with error %q", took.Round(time.Millisecond), rc.count(), v["error"])
}
