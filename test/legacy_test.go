package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// legacyAnswer is one HTTP exchange as an unmodified caller sees it.
type legacyAnswer struct {
	status int
	header http.Header
	body   string
	took   time.Duration
}

// legacySync does what the legacy processor's sync_contacts does:
// requests.post(f"{PHONEBOOK_SYNC_SERVICE_URL}/sync", timeout=30), no body
// (Content-Length: 0), and success only on exactly 200.
func legacySync(t *testing.T, base string) legacyAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/sync", nil)
	for k, v := range map[string]string{"User-Agent": "python-requests/2.34.2", "Accept-Encoding": "gzip, deflate", "Accept": "*/*"} {
		req.Header.Set(k, v)
	}
	return legacyDo(t, req, 30*time.Second)
}

// legacyHealth does what the processor's health check of the calendar
// does: GET {PHONEBOOK_SYNC_SERVICE_URL}/health, timeout 5, healthy on 200.
func legacyHealth(t *testing.T, base string) legacyAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/health", nil)
	req.Header.Set("User-Agent", "match-list-processor-health-check")
	return legacyDo(t, req, 5*time.Second)
}

func legacyDo(t *testing.T, req *http.Request, timeout time.Duration) legacyAnswer {
	t.Helper()
	start := time.Now()
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return legacyAnswer{resp.StatusCode, resp.Header, string(b), time.Since(start)}
}

// standInCalendar answers GET /health like fogis-calendar-phonebook-sync
// with a token (200 {"status":"healthy",…}) and records what reached it.
type standInCalendar struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []*http.Request
}

const calendarHealth = `{"auth_status":"authenticated","environment":"development","status":"healthy","version":"dev"}`

func newStandInCalendar(t *testing.T) *standInCalendar {
	c := &standInCalendar{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.got = append(c.got, r.Clone(context.Background()))
		c.mu.Unlock()
		if r.Method == http.MethodGet && r.URL.Path == "/health" {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(calendarHealth))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *standInCalendar) requests() []*http.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*http.Request(nil), c.got...)
}

// TestLegacyFogisThroughSidecars: the legacy processor, unmodified, with
// only PHONEBOOK_SYNC_SERVICE_URL pointed at its sidecar. Its POST /sync
// gets the exactly-200 answer it requires (also while Redis is down) and
// is delivered to the calendar; its health check of the calendar reaches
// the calendar; and the FOGIS envelope published to a topic reaches the
// calendar's /manual-sync as the payload alone, which is what that
// endpoint takes.
func TestLegacyFogisThroughSidecars(t *testing.T) {
	redis := redistest.StartProcess(t)
	syncTopic := redistest.UniqueTopic(t, "legacy.sync")
	matchTopic := redistest.UniqueTopic(t, "legacy.matches")
	calendar := newStandInCalendar(t)
	manualSync := newReceiver(t) // the calendar's POST /manual-sync
	oldSync := newReceiver(t)    // the legacy calendar's POST /sync

	startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+writeConfig(t, fmt.Sprintf(`service: calendar
subscriptions:
  - topic: %s
    url: %s
    body: /payload
    backoff: {initial: 20ms, max: 100ms}
  - topic: %s
    url: %s/sync
    backoff: {initial: 20ms, max: 100ms}
`, matchTopic, manualSync.url(), syncTopic, oldSync.srv.URL)))
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+writeConfig(t, fmt.Sprintf(`service: processor
upstream: %s
routes:
  - path: /sync
    topic: %s
    response: {status: 200, body: '{"status":"success"}', content_type: application/json}
`, calendar.srv.URL, syncTopic)))
	base := "http://" + pub.addr

	// The legacy POST /sync: exactly 200 {"status":"success"}, and the
	// (empty) event reaches the old calendar's /sync.
	a := legacySync(t, base)
	if a.status != http.StatusOK || a.body != `{"status":"success"}` || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("POST /sync: got %d %q (%s), want 200 {\"status\":\"success\"} application/json", a.status, a.body, a.header.Get("Content-Type"))
	}
	syncID := a.header.Get("Sidecar-Event-Id")
	if syncID == "" || a.header.Get("Sidecar-Stream-Id") == "" {
		t.Fatalf("POST /sync: no Sidecar-Event-Id / Sidecar-Stream-Id in %v", a.header)
	}
	eventually.True(t, 10*time.Second, "the /sync event delivered", func() bool { return oldSync.count() == 1 })
	if got := oldSync.all()[0]; got.Header.Get("webhook-id") != syncID || len(got.Body) != 0 {
		t.Fatalf("old /sync got webhook-id %s body %q, want %s and no body", got.Header.Get("webhook-id"), got.Body, syncID)
	}

	// The processor's health check of the calendar, through the sidecar.
	h := legacyHealth(t, base)
	if h.status != http.StatusOK || h.body != calendarHealth || h.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /health: got %d %q, want the calendar's 200 %q", h.status, h.body, calendarHealth)
	}
	reqs := calendar.requests()
	if len(reqs) != 1 || reqs[0].URL.Path != "/health" || reqs[0].Header.Get("User-Agent") != "match-list-processor-health-check" ||
		reqs[0].Header.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Fatalf("calendar got %d requests; first %s %v", len(reqs), reqs[0].URL, reqs[0].Header)
	}

	// The FOGIS envelope: /manual-sync gets exactly the payload object.
	payload := `{"matches":[{"matchid":6170001,"hemmalag":"IK Sirius","bortalag":"IFK Uppsala","speldatum":"2026-05-01","avsparkstid":"15:00"}],` +
		`"schema_version":"2.0","detailed_changes":[],"high_priority":false,"metadata":{"has_changes":true}}`
	envelope := `{"message_id":"4c5b0f0e-1","timestamp":"2026-04-30T10:00:00","source":"match-list-processor","version":"1.0",` +
		`"type":"match_updates","payload":` + payload + `}`
	r := pub.mustPublish(matchTopic, []byte(envelope))
	eventually.True(t, 10*time.Second, "envelope delivered", func() bool { return manualSync.count() == 1 })
	got := manualSync.all()[0]
	if string(got.Body) != payload || got.Header.Get("Content-Type") != "application/json" || got.Header.Get("webhook-id") != r.ID {
		t.Fatalf("/manual-sync got %q (%s, id %s), want exactly %q (application/json, id %s)",
			got.Body, got.Header.Get("Content-Type"), got.Header.Get("webhook-id"), payload, r.ID)
	}

	// Events without a payload go to the DLQ at once, the reason in error.
	rdb := redis.Client(t)
	ctx := context.Background()
	bad := map[string]string{
		pub.mustPublish(matchTopic, []byte("not json"), "Content-Type", "text/plain").ID: "body /payload: event is not JSON",
		pub.mustPublish(matchTopic, []byte(`{"type":"system_alert","message":"x"}`)).ID:  `body /payload: no member "payload"`,
	}
	dlqKey := "sidecar:{" + matchTopic + "}:dlq"
	eventually.True(t, 10*time.Second, "two dead letters", func() bool { return rdb.XLen(ctx, dlqKey).Val() == 2 })
	for _, m := range rdb.XRange(ctx, dlqKey, "-", "+").Val() {
		id, _ := m.Values["id"].(string)
		if want, ok := bad[id]; !ok || m.Values["error"] != want || m.Values["attempts"] != "1" {
			t.Errorf("DLQ entry %s: got error %q attempts %v, want %q after 1 attempt", id, m.Values["error"], m.Values["attempts"], want)
		}
	}
	if n := manualSync.count(); n != 1 {
		t.Fatalf("/manual-sync got %d requests, want 1: an event without payload reached it", n)
	}

	// Redis down: POST /sync still answers exactly 200 (spooled), the
	// health check still reaches the calendar; the event is delivered
	// once Redis is back.
	redis.Kill()
	a = legacySync(t, base)
	if a.status != http.StatusOK || a.body != `{"status":"success"}` || a.header.Get("Sidecar-Spooled") != "true" {
		t.Fatalf("POST /sync with Redis dead: got %d %q %v, want 200 {\"status\":\"success\"}, spooled", a.status, a.body, a.header)
	}
	spooledID := a.header.Get("Sidecar-Event-Id")
	if h := legacyHealth(t, base); h.status != http.StatusOK || h.body != calendarHealth {
		t.Fatalf("GET /health with Redis dead: got %d %q", h.status, h.body)
	}
	restarted := time.Now()
	redis.Restart()
	eventually.True(t, 30*time.Second, "the spooled /sync event delivered after Redis returned", func() bool {
		for _, g := range oldSync.all() {
			if g.Header.Get("webhook-id") == spooledID {
				return true
			}
		}
		return false
	})
	t.Logf("measured: POST /sync answered 200 with Redis dead in %v; delivered %v after the Redis restart began",
		a.took.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
}
