package test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// subscribe starts a calendar sidecar delivering topic to a new receiver.
func subscribe(t *testing.T, redisURL, topic string) *receiver {
	t.Helper()
	rc := newReceiver(t)
	startSidecar(t, "calendar-"+topic[len(topic)-6:], "REDIS_URL="+redisURL,
		"SIDECAR_CONFIG="+subscriberConfig(t, topic, rc.url(), ""))
	return rc
}

// A key Redis refuses (WRONGTYPE) fails only its own publishes, at once and
// honestly (502 redis_rejected, nothing spooled); every other topic keeps
// publishing directly and delivering. Before, one such publish wedged every
// topic behind it while /readyz said ready.
func TestWrongTypeKeyFailsOnlyItsTopic(t *testing.T) {
	redis := redistest.StartProcess(t)
	bad, good := redistest.UniqueTopic(t, "bad"), redistest.UniqueTopic(t, "good")
	ctx := context.Background()
	if err := redis.Client(t).Set(ctx, "sidecar:{"+bad+"}", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	rc := subscribe(t, redis.URL, good)
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")

	code, r := pub.publish(bad, body(0))
	if code != http.StatusBadGateway || r.Code != "redis_rejected" || !strings.Contains(r.Error, "WRONGTYPE") {
		t.Fatalf("publish to a WRONGTYPE key: got %d %+v, want 502 redis_rejected naming WRONGTYPE", code, r)
	}
	var want []string
	for i := range 300 {
		if i%50 == 0 { // the bad topic keeps failing alongside
			if code, _ := pub.publish(bad, body(i)); code != http.StatusBadGateway {
				t.Fatalf("publish %d to the bad topic: got %d, want 502", i, code)
			}
		}
		want = append(want, pub.mustPublish(good, body(i)).ID) // 202 with a stream_id: never spooled
	}
	exactlyOnceInOrder(t, rc, want)
	if code, rep := pub.readyz(); code != http.StatusOK || rep["status"] != "ready" {
		t.Fatalf("/readyz: got %d %v, want 200 ready (nothing is spooled)", code, rep)
	}
	t.Logf("measured: WRONGTYPE topic answered 502 redis_rejected 7/7; good topic acked 300, delivered 300, spooled 0, lost 0")
}

// Spooled events of a topic whose key Redis refuses when it returns stay
// on disk and are reported by /readyz and /v1/status; other topics drain
// and go direct again; once the key is fixed, the stuck topic drains in
// order. The refusal here is an ACL that denies the topic's keys.
func TestStuckSpooledTopicHoldsBackOnlyItself(t *testing.T) {
	dir := t.TempDir()
	acl := filepath.Join(dir, "users.acl")
	writeACL := func(keys string) {
		t.Helper()
		content := "user default on nopass ~* &* +@all\nuser sidecar on >pw " + keys + " &* +@all\n"
		if err := os.WriteFile(acl, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeACL("~*")
	redis := redistest.StartProcessWith(t, 0, "--aclfile", acl)
	bad, good := redistest.UniqueTopic(t, "bad"), redistest.UniqueTopic(t, "good")
	userURL := strings.Replace(redis.URL, "redis://", "redis://sidecar:pw@", 1)
	rcBad, rcGood := subscribe(t, redis.URL, bad), subscribe(t, redis.URL, good)
	pub := startSidecar(t, "processor", "REDIS_URL="+userURL, "SIDECAR_SERVICE=processor")

	var wantBad, wantGood []string
	wantBad = append(wantBad, pub.mustPublish(bad, body(0)).ID)
	wantGood = append(wantGood, pub.mustPublish(good, body(0)).ID)
	eventually.True(t, 10*time.Second, "first events delivered", func() bool { return rcBad.count() == 1 && rcGood.count() == 1 })

	redis.Kill()
	for i := 1; i <= 20; i++ {
		wantBad = append(wantBad, pub.mustPublishSpooled(bad, body(i)).ID)
		wantGood = append(wantGood, pub.mustPublishSpooled(good, body(i)).ID)
	}
	// Redis returns, refusing the bad topic's keys to the sidecar's user.
	writeACL("~sidecar:{" + good + "}*")
	redis.Restart()
	// The subscriber sidecars recreate their groups on the empty Redis.
	eventually.True(t, 30*time.Second, "the good topic drained and direct again", func() bool {
		code, r := pub.publish(good, body(99))
		if code == http.StatusAccepted && !r.Spooled {
			wantGood = append(wantGood, r.ID)
			return true
		}
		if code == http.StatusAccepted {
			wantGood = append(wantGood, r.ID)
		}
		return false
	})
	eventually.True(t, 30*time.Second, "/readyz degraded naming the stuck topic", func() bool {
		code, rep := pub.readyz()
		reasons := fmt.Sprint(rep["reasons"])
		return code == http.StatusOK && rep["status"] == "degraded" && strings.Contains(reasons, bad) && strings.Contains(reasons, "NOPERM")
	})
	// A publish to the stuck topic queues behind its spooled events (order).
	wantBad = append(wantBad, pub.mustPublishSpooled(bad, body(21)).ID)
	if n := rcBad.count(); n != 1 {
		t.Fatalf("the refused topic delivered %d events while refused, want 1", n)
	}
	// The operator fixes the ACL: the stuck topic drains, in order.
	if err := redis.Client(t).Do(context.Background(), "ACL", "SETUSER", "sidecar", "~*").Err(); err != nil {
		t.Fatal(err)
	}
	exactlyOnceInOrder(t, rcBad, wantBad)
	exactlyOnceInOrder(t, rcGood, wantGood)
	eventually.True(t, 10*time.Second, "/readyz ready again", func() bool {
		code, rep := pub.readyz()
		return code == http.StatusOK && rep["status"] == "ready"
	})
	t.Logf("measured: refused topic: acked %d, delivered %d after the fix, in order; healthy topic: acked %d, delivered %d, never held back; lost 0, duplicated 0",
		len(wantBad), rcBad.count(), len(wantGood), rcGood.count())
}

// An ACL user without @scripting: an Idempotency-Key publish (a script) is
// refused at once (NOPERM, 502), plain publishes keep flowing.
func TestNoScriptPermissionFailsOnlyScriptedPublishes(t *testing.T) {
	dir := t.TempDir()
	acl := filepath.Join(dir, "users.acl")
	if err := os.WriteFile(acl, []byte("user default on nopass ~* &* +@all\nuser sidecar on >pw ~* &* +@all -@scripting\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	redis := redistest.StartProcessWith(t, 0, "--aclfile", acl)
	topic := redistest.UniqueTopic(t, "noscript")
	rc := subscribe(t, redis.URL, topic)
	pub := startSidecar(t, "processor", "REDIS_URL="+strings.Replace(redis.URL, "redis://", "redis://sidecar:pw@", 1), "SIDECAR_SERVICE=processor")
	code, r := pub.publish(topic, body(0), "Idempotency-Key", "k-1")
	if code != http.StatusBadGateway || r.Code != "redis_rejected" || !strings.Contains(r.Error, "NOPERM") {
		t.Fatalf("keyed publish without @scripting: got %d %+v, want 502 redis_rejected NOPERM", code, r)
	}
	var want []string
	for i := range 100 {
		want = append(want, pub.mustPublish(topic, body(i)).ID)
	}
	exactlyOnceInOrder(t, rc, want)
	t.Logf("measured: keyed publish refused 502 NOPERM; 100 plain publishes acked and delivered, 0 spooled, 0 lost")
}

// Redis out of memory under noeviction is an outage, not a rejection:
// publishes spool, and drain once memory is available.
func TestRedisOOMSpoolsAndDrains(t *testing.T) {
	redis := redistest.StartProcessWith(t, 0, "--maxmemory-policy", "noeviction")
	topic := redistest.UniqueTopic(t, "oom")
	rc := subscribe(t, redis.URL, topic)
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	ctx := context.Background()
	rdb := redis.Client(t)
	var want []string
	for i := range 20 {
		want = append(want, pub.mustPublish(topic, body(i)).ID)
	}
	eventually.True(t, 10*time.Second, "first 20", func() bool { return rc.count() == 20 })
	// A maxmemory far below what is used: every write is refused with OOM.
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	spooled := 0
	for i := 20; i < 120; i++ {
		code, r := pub.publish(topic, body(i))
		if code != http.StatusAccepted || !r.Spooled {
			t.Fatalf("publish %d with Redis OOM: got %d %+v, want 202 spooled", i, code, r)
		}
		spooled++
		want = append(want, r.ID)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	exactlyOnceInOrder(t, rc, want)
	t.Logf("measured: Redis OOM (noeviction): %d publishes spooled (202), all %d delivered in order after memory returned, lost 0", spooled, len(want))
}
