package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// redirector is a webhook that answers every request with a redirect: the
// status is taken from the event's body ("code":NNN), the Location points
// at another host's /moved/NNN.
type redirector struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []received
	method []string
}

func newRedirector(t *testing.T, target string) *redirector {
	rd := &redirector{}
	rd.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rd.mu.Lock()
		rd.got = append(rd.got, received{Header: r.Header.Clone(), Body: b, At: time.Now()})
		rd.method = append(rd.method, r.Method)
		rd.mu.Unlock()
		code := redirectCode(b)
		w.Header().Set("Location", fmt.Sprintf("%s/moved/%d", target, code))
		w.WriteHeader(code)
	}))
	t.Cleanup(rd.srv.Close)
	return rd
}

func (rd *redirector) all() ([]received, []string) {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return append([]received(nil), rd.got...), append([]string(nil), rd.method...)
}

func redirectBody(code int) []byte {
	return fmt.Appendf(nil, `{"message_id":"redirect-%d","type":"match_updates","payload":{"code":%d}}`, code, code)
}

func redirectCode(b []byte) int {
	s := string(b)
	i := strings.Index(s, `"code":`)
	if i < 0 {
		return http.StatusFound
	}
	n, err := strconv.Atoi(strings.TrimRight(s[i+len(`"code":`):], "}"))
	if err != nil {
		return http.StatusFound
	}
	return n
}

// TestWebhookRedirectIsDeadLetteredNotFollowed: a webhook answering 301,
// 302, 307 or 308 must not have the event acknowledged by whatever the
// Location points at (a 301/302 followed by Go's client is a body-less GET,
// whose 200 would acknowledge an event nobody received). Each event goes to
// the DLQ at once, with the Location in its error.
func TestWebhookRedirectIsDeadLetteredNotFollowed(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "redirect")
	target := newReceiver(t) // answers 200 to anything: the acknowledgement we must not take
	hook := newRedirector(t, target.srv.URL)
	sub := startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+subscriberConfig(t, topic, hook.srv.URL+"/manual-sync", ""))
	rdb := redis.Client(t)
	ctx := context.Background()
	dlqKey := "sidecar:{" + topic + "}:dlq"

	codes := []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect}
	sent := map[int]receipt{}
	start := time.Now()
	for _, code := range codes {
		sent[code] = sub.mustPublish(topic, redirectBody(code), "ce-type", "match_updates")
	}
	eventually.True(t, 20*time.Second, fmt.Sprintf("%d redirected events settled (dead-lettered or acknowledged)", len(codes)), func() bool {
		p, err := rdb.XPending(ctx, "sidecar:{"+topic+"}", "calendar").Result()
		got, _ := hook.all()
		return err == nil && p.Count == 0 && len(got) >= len(codes)
	})
	settled := time.Since(start)

	dlq := map[string]map[string]any{}
	for _, m := range rdb.XRange(ctx, dlqKey, "-", "+").Val() {
		id, _ := m.Values["id"].(string)
		dlq[id] = m.Values
	}
	for _, code := range codes {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			r := sent[code]
			loc := fmt.Sprintf("%s/moved/%d", target.srv.URL, code)
			entry, ok := dlq[r.ID]
			if !ok {
				t.Fatalf("event %s (webhook answered %d) is not in the DLQ %s; DLQ holds %d entries, the redirect target got %d requests",
					r.ID, code, dlqKey, len(dlq), target.count())
			}
			if errText, _ := entry["error"].(string); !strings.Contains(errText, loc) {
				t.Errorf("DLQ error: got %q, want it to contain the Location %q", errText, loc)
			}
			if entry["attempts"] != "1" {
				t.Errorf("DLQ attempts: got %v, want 1 (a redirect is permanent)", entry["attempts"])
			}
			if entry["data"] != string(redirectBody(code)) || entry["original_id"] != r.StreamID || entry["group"] != "calendar" {
				t.Errorf("DLQ entry: got data %q original_id %v group %v, want the payload byte for byte, %s, calendar",
					entry["data"], entry["original_id"], entry["group"], r.StreamID)
			}
		})
	}

	// The webhook saw each event once, as a POST with its payload; the
	// redirect target saw nothing: no body-less GET, no re-POST elsewhere.
	got, methods := hook.all()
	if len(got) != len(codes) {
		t.Errorf("webhook requests: got %d, want %d (one attempt per event)", len(got), len(codes))
	}
	for i, g := range got {
		if methods[i] != http.MethodPost || string(g.Body) != string(redirectBody(redirectCode(g.Body))) {
			t.Errorf("webhook request %d: got %s %q, want a POST with the payload", i, methods[i], g.Body)
		}
	}
	if n := target.count(); n != 0 {
		for _, g := range target.all() {
			t.Logf("redirect target got: ce-id %s, %d body bytes", g.Header.Get("ce-id"), len(g.Body))
		}
		t.Errorf("redirect target: got %d requests, want 0 (redirects are never followed)", n)
	}
	if p := rdb.XPending(ctx, "sidecar:{"+topic+"}", "calendar").Val(); p.Count != 0 {
		t.Errorf("pending: got %d, want 0", p.Count)
	}
	if n := rdb.XLen(ctx, dlqKey).Val(); n != int64(len(codes)) {
		t.Errorf("DLQ length: got %d, want %d", n, len(codes))
	}
	t.Logf("measured: %d redirected events (301, 302, 307, 308) → %d dead-lettered at attempt 1 in %v, redirect target got %d requests, %d acknowledged without their payload",
		len(codes), len(dlq), settled.Round(time.Millisecond), target.count(), len(codes)-len(dlq))
}
