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

// Room always has room: the roomyInbox below can say otherwise.
func (f *fakeInbox) Room(string, int64) error { return nil }

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
		fallbackReq.Header.Get("webhook-signature") != Sign(InboxKey(key, "match.updated"), pub.events[0].ID, ts, fallbackBody) {
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
	signedFor := func(topic string) map[string]string {
		hdr := http.Header{}
		SetHeaders(hdr, topic, 1, ev, InboxKey(key, topic), time.Now())
		m := map[string]string{}
		for k := range hdr {
			m[k] = hdr.Get(k)
		}
		return m
	}
	signed := func() map[string]string { return signedFor("match.updated") }
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
	// The signature covers webhook-id: without it nothing is authenticated.
	noID := signed()
	delete(noID, "Ce-Id")
	delete(noID, "Webhook-Id")
	if rec := do(h, http.MethodPost, "/v1/inbox/match.updated", `{"m":1}`, noID); rec.Code != 401 {
		t.Fatalf("no id: got %d, want 401", rec.Code)
	}
	noType := signed()
	delete(noType, "Ce-Type")
	if rec := do(h, http.MethodPost, "/v1/inbox/match.updated", `{"m":1}`, noType); rec.Code != 400 {
		t.Fatalf("no ce-type: got %d, want 400", rec.Code)
	}
	in.err = codedErr("no_subscription")
	if rec := do(h, http.MethodPost, "/v1/inbox/other", `{"m":1}`, signedFor("other")); rec.Code != 404 {
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

// TestFallbackRedirectIsNotFollowed: a peer answering 3xx has not taken the
// event; the fallback says where it pointed and reports failed, and no
// request reaches the Location (nor one that a following client made).
func TestFallbackRedirectIsNotFollowed(t *testing.T) {
	var mu sync.Mutex
	targetHits := 0
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		targetHits++
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer target.Close()
	for _, tc := range []struct {
		name       string
		status     int
		location   string
		client     func() Doer
		want       string
		wantTarget int
	}{
		{name: "302", status: 302, location: target.URL + "/inbox", client: func() Doer { return NewClient(1) },
			want: "failed: redirected to " + target.URL + "/inbox (not followed)"},
		{name: "307", status: 307, location: target.URL + "/inbox", client: func() Doer { return NewClient(1) },
			want: "failed: redirected to " + target.URL + "/inbox (not followed)"},
		{name: "308", status: 308, location: target.URL + "/inbox", client: func() Doer { return NewClient(1) },
			want: "failed: redirected to " + target.URL + "/inbox (not followed)"},
		{name: "300 without Location", status: 300, client: func() Doer { return NewClient(1) },
			want: "failed: answered 300, a redirect without Location (not followed)"},
		{name: "a following client", status: 307, location: target.URL + "/inbox", client: func() Doer { return http.DefaultClient },
			want: "failed: redirected to " + target.URL + "/inbox (the client followed it)", wantTarget: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			targetHits = 0
			mu.Unlock()
			peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.location != "" {
					w.Header().Set("Location", tc.location)
				}
				w.WriteHeader(tc.status)
			}))
			defer peer.Close()
			obs := &countingObserver{}
			h := NewAPI(APIConfig{Service: "processor", MaxBody: 1024, FallbackClient: tc.client(), Observer: obs,
				Routes: []Route{{Path: "/sync", Topic: "match.updated", Fallback: peer.URL + "/v1/inbox/match.updated"}},
			}, &spoolingPublisher{}, nil, http.NotFoundHandler(), zerolog.Nop())
			rec := do(h, http.MethodPost, "/sync", `{"m":1}`, map[string]string{"Content-Type": "application/json"})
			var resp map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || rec.Code != 202 {
				t.Fatalf("route publish: got %d %s, want 202 (spooled)", rec.Code, rec.Body)
			}
			if resp["fallback"] != tc.want {
				t.Fatalf("fallback: got %q, want %q", resp["fallback"], tc.want)
			}
			if obs.got["failed"] != 1 || obs.got["delivered"] != 0 {
				t.Fatalf("fallback outcomes: got %v, want 1 failed", obs.got)
			}
			mu.Lock()
			defer mu.Unlock()
			if targetHits != tc.wantTarget {
				t.Fatalf("redirect target: got %d requests, want %d", targetHits, tc.wantTarget)
			}
		})
	}
}

// TestInboxEndpointAnswersAcceptOutcomes: what the inbox's Room and Accept
// say becomes the contract's status and JSON error; a full queue is 503 with
// Retry-After, so the sending sidecar backs off (it keeps the event spooled).
func TestInboxEndpointAnswersAcceptOutcomes(t *testing.T) {
	key := []byte("0123456789abcdef")
	ev := &event.Event{ID: "01ABC", Source: "processor", Type: "match_updates", Time: time.Unix(1700000000, 0).UTC(), ContentType: "application/json", Data: []byte(`{"m":1}`)}
	hdr := http.Header{}
	SetHeaders(hdr, "match.updated", 1, ev, InboxKey(key, "match.updated"), time.Now())
	signed := map[string]string{}
	for k := range hdr {
		signed[k] = hdr.Get(k)
	}
	for _, tc := range []struct {
		name           string
		err            error // from Accept
		checksRoom     bool  // the inbox has Room
		room           error // from Room
		wantStatus     int
		wantCode       string
		wantRetryAfter string
	}{
		{name: "accepted", wantStatus: http.StatusAccepted},
		{name: "no subscription", err: codedErr("no_subscription"), wantStatus: http.StatusNotFound, wantCode: "no_subscription"},
		{name: "queue full", err: codedErr("inbox_full"), wantStatus: http.StatusServiceUnavailable, wantCode: "inbox_full", wantRetryAfter: "1"},
		{name: "shutting down", err: codedErr("unavailable"), wantStatus: http.StatusServiceUnavailable, wantCode: "unavailable"},
		// Full before the body is read: Accept is never asked.
		{name: "no room", checksRoom: true, room: codedErr("inbox_full"), wantStatus: http.StatusServiceUnavailable, wantCode: "inbox_full", wantRetryAfter: "1"},
		{name: "room", checksRoom: true, wantStatus: http.StatusAccepted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeInbox{err: tc.err}
			var in Inbox = fake
			if tc.checksRoom {
				in = roomyInbox{fake, tc.room}
			}
			h := NewAPI(APIConfig{Service: "calendar", MaxBody: 1024, Secret: key}, &fakePublisher{}, in, http.NotFoundHandler(), zerolog.Nop())
			rec := do(h, http.MethodPost, "/v1/inbox/match.updated", `{"m":1}`, signed)
			if accepted := len(fake.got); accepted != 0 && tc.wantStatus != http.StatusAccepted {
				t.Fatalf("Accept took the event (%d), want it refused before", accepted)
			}
			var resp map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("body: got %q, want JSON", rec.Body)
			}
			if rec.Code != tc.wantStatus || rec.Header().Get("Retry-After") != tc.wantRetryAfter {
				t.Fatalf("got %d Retry-After %q, want %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"), tc.wantStatus, tc.wantRetryAfter)
			}
			if tc.wantCode != "" && (resp["code"] != tc.wantCode || resp["error"] == "") {
				t.Fatalf("error body: got %v, want code %q and a message", resp, tc.wantCode)
			}
		})
	}
}

// roomyInbox is an inbox that can say it is full before the body is read.
type roomyInbox struct {
	*fakeInbox
	room error
}

func (r roomyInbox) Room(topic string, size int64) error { return r.room }
