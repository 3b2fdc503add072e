package httpbridge

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// spoolingPublisher answers like the relay while Redis is down.
type spoolingPublisher struct{ fakePublisher }

func (s *spoolingPublisher) Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	rc, err := s.fakePublisher.Publish(ctx, topic, ev)
	rc.StreamID, rc.Spooled = "", true
	return rc, err
}

type fakeInbox struct {
	mu  sync.Mutex
	got []*event.Event
	err error
}

func (f *fakeInbox) Accept(topic string, ev *event.Event) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	f.got = append(f.got, ev)
	return 1, nil
}

func TestRouteWithFallbackWhileRedisIsDown(t *testing.T) {
	var fallbackReq *http.Request
	var fallbackBody []byte
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fallbackReq, fallbackBody = r, must(io.ReadAll(r.Body))
		w.WriteHeader(http.StatusAccepted)
	}))
	defer peer.Close()
	key := []byte("0123456789abcdef")
	pub := &spoolingPublisher{}
	obs := &countingObserver{}
	h := NewAPI(APIConfig{Service: "processor", MaxBody: 1024, Secret: key, Token: "tok", FallbackClient: peer.Client(), Observer: obs,
		Routes: []Route{{Path: "/sync", Topic: "match.updated", Fallback: peer.URL + "/v1/inbox/match.updated"}},
	}, pub, nil, http.NotFoundHandler(), zerolog.Nop())
	rec := do(h, http.MethodPost, "/sync", `{"m":1}`, map[string]string{"Content-Type": "application/json", "Authorization": "Bearer tok"})
	if rec.Code != 202 {
		t.Fatalf("route publish: got %d %s", rec.Code, rec.Body)
	}
	var resp map[string]any
	json.Unmarshal(rec.Body.Bytes(), &resp)
	if resp["spooled"] != true || resp["fallback"] != "delivered" || resp["topic"] != "match.updated" {
		t.Fatalf("response: got %v", resp)
	}
	if pub.topics[0] != "match.updated" || string(pub.events[0].Data) != `{"m":1}` {
		t.Fatalf("route published %v %q", pub.topics, pub.events[0].Data)
	}
	ts, _ := strconv.ParseInt(fallbackReq.Header.Get("webhook-timestamp"), 10, 64)
	if fallbackReq.URL.Path != "/v1/inbox/match.updated" || string(fallbackBody) != `{"m":1}` ||
		fallbackReq.Header.Get("ce-id") != pub.events[0].ID || fallbackReq.Header.Get("Authorization") != "Bearer tok" ||
		fallbackReq.Header.Get("webhook-signature") != Sign(key, pub.events[0].ID, ts, fallbackBody) {
		t.Fatalf("fallback request: %s %q %v", fallbackReq.URL.Path, fallbackBody, fallbackReq.Header)
	}
	if obs.got["delivered"] != 1 || obs.got["failed"] != 0 {
		t.Fatalf("fallback outcomes: got %v", obs.got)
	}
	peer.Close()
	rec = do(h, http.MethodPost, "/sync", `{"m":2}`, map[string]string{"Authorization": "Bearer tok"})
	json.Unmarshal(rec.Body.Bytes(), &resp)
	if rec.Code != 202 || !strings.HasPrefix(resp["fallback"].(string), "failed") {
		t.Fatalf("fallback down: got %d %v, want 202 (spooled) with fallback failed", rec.Code, resp)
	}
	if obs.got["failed"] != 1 {
		t.Fatalf("fallback outcomes: got %v", obs.got)
	}
}

func TestInboxEndpoint(t *testing.T) {
	key := []byte("0123456789abcdef")
	in := &fakeInbox{}
	h := NewAPI(APIConfig{Service: "calendar", MaxBody: 1024, Secret: key}, &fakePublisher{}, in, http.NotFoundHandler(), zerolog.Nop())
	ev := &event.Event{ID: "01ABC", Source: "processor", Type: "match_updates", Time: time.Unix(1700000000, 0).UTC(), ContentType: "application/json", Data: []byte(`{"m":1}`)}
	signed := func() map[string]string {
		hdr := http.Header{}
		SetHeaders(hdr, "match.updated", 1, ev, key, time.Now())
		m := map[string]string{}
		for k := range hdr {
			m[k] = hdr.Get(k)
		}
		return m
	}
	rec := do(h, http.MethodPost, "/v1/inbox/match.updated", `{"m":1}`, signed())
	if rec.Code != 202 || len(in.got) != 1 {
		t.Fatalf("inbox: got %d %s", rec.Code, rec.Body)
	}
	got := in.got[0]
	if got.ID != ev.ID || got.Source != "processor" || got.Type != "match_updates" || !got.Time.Equal(ev.Time) || string(got.Data) != `{"m":1}` || got.ContentType != "application/json" {
		t.Fatalf("inbox event: got %+v", got)
	}
	bad := signed()
	bad["Webhook-Signature"] = "v1,AAAA"
	if rec := do(h, http.MethodPost, "/v1/inbox/match.updated", `{"m":1}`, bad); rec.Code != 401 {
		t.Fatalf("bad signature: got %d, want 401", rec.Code)
	}
	noID := signed()
	delete(noID, "Ce-Id")
	delete(noID, "Webhook-Id")
	if rec := do(h, http.MethodPost, "/v1/inbox/match.updated", `{"m":1}`, noID); rec.Code != 400 {
		t.Fatalf("no id: got %d, want 400", rec.Code)
	}
	in.err = codedErr("no_subscription")
	if rec := do(h, http.MethodPost, "/v1/inbox/other", `{"m":1}`, signed()); rec.Code != 404 {
		t.Fatalf("unsubscribed topic: got %d, want 404", rec.Code)
	}
}

type countingObserver struct{ got map[string]int }

func (c *countingObserver) Fallback(outcome string) {
	if c.got == nil {
		c.got = map[string]int{}
	}
	c.got[outcome]++
}

func must[T any](v T, _ error) T { return v }
