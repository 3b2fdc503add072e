package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// TestInboxFallbackKeepsOrderWithConcurrencyOne: with Redis dead, a
// publisher's route falls back to the calendar sidecar's inbox. The
// subscription says concurrency 1, so the webhook must see the events in
// publish order, one at a time, even though it answers after a random
// 0–20 ms and the publisher does not wait for it; once Redis returns and the
// spool drains, the stream copies must not be delivered again.
func TestInboxFallbackKeepsOrderWithConcurrencyOne(t *testing.T) {
	const n = 200
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "inbox-order")
	rc := newReceiver(t)
	var inFlight, maxInFlight atomic.Int32
	rc.set(0, func(received, int) int {
		cur := inFlight.Add(1)
		for m := maxInFlight.Load(); cur > m && !maxInFlight.CompareAndSwap(m, cur); m = maxInFlight.Load() {
		}
		time.Sleep(time.Duration(rand.N(21)) * time.Millisecond) // a randomly slow service
		inFlight.Add(-1)
		return http.StatusOK
	})
	cal := startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_WEBHOOK_SECRET="+secret,
		"SIDECAR_CONFIG="+subscriberConfig(t, topic, rc.url(), "    concurrency: 1"))
	pubCfg := writeConfig(t, fmt.Sprintf(`service: processor
routes:
  - path: /sync
    topic: %s
    fallback: %s
`, topic, cal.url("/v1/inbox/"+topic)))
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+pubCfg, "SIDECAR_WEBHOOK_SECRET="+secret)

	// One event through Redis first, so the calendar's group exists and
	// both sidecars have seen Redis up before it dies.
	code, first := pub.post("/sync", body(0))
	if code != http.StatusAccepted || first.Spooled {
		t.Fatalf("route publish with Redis up: got %d %+v", code, first)
	}
	eventually.True(t, 10*time.Second, "first event delivered through the stream", func() bool { return rc.count() == 1 })
	redis.Kill()

	want := []string{first.ID}
	start := time.Now()
	for i := 1; i <= n; i++ {
		code, r := pub.post("/sync", body(i))
		if code != http.StatusAccepted || !r.Spooled || r.Fallback != "delivered" {
			t.Fatalf("route publish %d with Redis dead: got %d %+v, want spooled and fallback delivered", i, code, r)
		}
		want = append(want, r.ID)
	}
	published := time.Since(start)
	eventually.True(t, 30*time.Second, fmt.Sprintf("%d fallback deliveries", n), func() bool { return rc.distinct() == n+1 })
	viaInbox := time.Since(start)

	redis.Restart()
	eventually.True(t, 30*time.Second, "spool drained into the stream", func() bool {
		l, err := redis.Client(t).XLen(context.Background(), "sidecar:{"+topic+"}").Result()
		return err == nil && l == n
	})
	// A stream copy is acknowledged only after the subscriber decided about
	// it, so once all are acknowledged any second delivery has happened.
	eventually.True(t, 30*time.Second, "stream copies acknowledged", func() bool {
		p, err := redis.Client(t).XPending(context.Background(), "sidecar:{"+topic+"}", "calendar").Result()
		info, ierr := redis.Client(t).XInfoGroups(context.Background(), "sidecar:{"+topic+"}").Result()
		return err == nil && ierr == nil && p.Count == 0 && len(info) == 1 && info[0].EntriesRead == n
	})

	got := ids(rc.all())
	pos := map[string]int{}
	for i, id := range want {
		pos[id] = i
	}
	seen := map[string]bool{}
	dups, inversions, last := 0, 0, -1
	for _, id := range got {
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		if pos[id] < last {
			inversions++
		}
		last = max(last, pos[id])
	}
	t.Logf("measured: %d events via the inbox with Redis dead (published in %v, all delivered %v after the first publish); webhook saw %d requests, %d distinct, %d duplicates, %d order inversions, max in flight %d",
		n, published.Round(time.Millisecond), viaInbox.Round(time.Millisecond), len(got), len(seen), dups, inversions, maxInFlight.Load())
	if len(seen) != len(want) || dups != 0 || inversions != 0 {
		t.Errorf("got %d distinct, %d duplicates, %d inversions; want %d distinct in publish order, no duplicates", len(seen), dups, inversions, len(want))
	}
	if m := maxInFlight.Load(); m != 1 {
		t.Errorf("max deliveries in flight: got %d, want 1 (concurrency: 1)", m)
	}
}

// TestInboxFullRefusesAndBoundsMemory: a webhook that hangs must not let
// inbox posts pile up in memory. 200 posts of 256 KiB (50 MiB) go straight
// to the calendar sidecar's inbox; the sidecar queues what its bound allows
// and answers the rest 503 inbox_full (the sender keeps them in its spool),
// and its resident memory stays bounded.
func TestInboxFullRefusesAndBoundsMemory(t *testing.T) {
	const (
		posts = 200
		size  = 256 << 10
		// Sender parallelism: a peer sidecar sends one fallback per
		// publish request, so a few at a time is what it looks like.
		senders = 8
	)
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "inbox-full")
	release := make(chan struct{})
	var arrived atomic.Int32
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		<-release // until the test ends
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) }) // runs first: lets Close return
	cal := startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_WEBHOOK_SECRET="+secret,
		"SIDECAR_CONFIG="+subscriberConfig(t, topic, hang.URL+"/manual-sync", "    concurrency: 1\n    timeout: 5m"))
	redis.Kill() // the outage the inbox exists for
	pid := cal.cmd.Process.Pid
	baseline := procStatusKiB(t, pid, "VmRSS")

	var accepted, refused atomic.Int32
	var next atomic.Int32
	var wg sync.WaitGroup
	payload := bytes.Repeat([]byte("x"), size-64)
	for range senders {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > posts {
					return
				}
				data := fmt.Appendf(nil, `{"i":%d,"pad":"%s"}`, i, payload)
				switch code, rep, retryAfter := postInbox(t, cal, topic, fmt.Sprintf("inbox-full-%04d", i), data); {
				case code == http.StatusAccepted:
					accepted.Add(1)
				case code == http.StatusServiceUnavailable && rep.Code == "inbox_full" && rep.Error != "" && retryAfter == "1":
					refused.Add(1)
				default:
					t.Errorf("inbox post %d: got %d %+v Retry-After %q, want 202 or 503 inbox_full with Retry-After 1", i, code, rep, retryAfter)
					return
				}
			}
		})
	}
	wg.Wait()
	eventually.True(t, 10*time.Second, "the first delivery reached the hanging webhook", func() bool { return arrived.Load() >= 1 })
	rss, peak := procStatusKiB(t, pid, "VmRSS"), procStatusKiB(t, pid, "VmHWM")

	// The bound: the inbox holds at most its byte bound (16 MiB per
	// subscription) of event data, and refuses a full queue before reading
	// the body; at most senders × 256 KiB of bodies are being read at once.
	// Go's heap may grow to twice what is live before it collects
	// (GOGC=100), plus 8 MiB for the runtime, stacks and connection
	// buffers: 44 MiB. A -race binary (the harness builds one under -race)
	// keeps shadow memory beside the heap: twice that. Without a bound all
	// 50 MiB stay resident, with a goroutine and a connection per event.
	growthLimit := int64(2*(16<<10+senders*size>>10) + 8<<10)
	if raceEnabled {
		growthLimit *= 2
	}
	t.Logf("measured: %d inbox posts of %d KiB to a hanging webhook: %d accepted (202), %d refused (503 inbox_full); webhook requests in flight %d; calendar RSS baseline %d KiB, now %d KiB, peak %d KiB (growth %d KiB, limit %d KiB, race %v)",
		posts, size>>10, accepted.Load(), refused.Load(), arrived.Load(), baseline, rss, peak, peak-baseline, growthLimit, raceEnabled)
	if accepted.Load() == 0 || refused.Load() == 0 || accepted.Load()+refused.Load() != posts {
		t.Errorf("accepted %d, refused %d of %d: want some of each and nothing else", accepted.Load(), refused.Load(), posts)
	}
	if n := arrived.Load(); n != 1 {
		t.Errorf("webhook requests in flight: got %d, want 1 (concurrency: 1)", n)
	}
	if peak-baseline > growthLimit {
		t.Errorf("calendar RSS grew %d KiB (peak %d KiB from %d KiB), want at most %d KiB", peak-baseline, peak, baseline, growthLimit)
	}
}

// postInbox POSTs data to the sidecar's inbox as a peer sidecar would:
// CloudEvents binary-mode headers and a Standard Webhooks signature made
// with the topic's inbox key.
func postInbox(t *testing.T, s *sidecar, topic, id string, data []byte) (int, receipt, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url("/v1/inbox/"+topic), bytes.NewReader(data))
	ts := time.Now().Unix()
	for k, v := range map[string]string{
		"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": id, "ce-source": "processor",
		"ce-type": "match_updates", "webhook-id": id, "webhook-timestamp": strconv.FormatInt(ts, 10),
		"webhook-signature": sigWith(inboxKey(t, topic), id, ts, data),
	} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("inbox post: %v", err)
		return 0, receipt{}, ""
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r receipt
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Errorf("inbox answered %d with non-JSON %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, r, resp.Header.Get("Retry-After")
}

// procStatusKiB reads one kB field (VmRSS, VmHWM) of /proc/<pid>/status.
func procStatusKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q", field, line)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}
