package httpbridge

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// The Standard Webhooks reference vector (the specification's example and
// the Go library's TestWebhookSign).
const (
	refSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	refID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	refTimestamp = 1614265330
	refPayload   = `{"test": 2432232314}`
	refSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	// A well-formed v1 entry that matches nothing (from the library's tests).
	refWrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
)

func refKey(t *testing.T) []byte {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(refSecret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func webhookHeaders(id string, ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	h.Set("webhook-signature", sig)
	return h
}

// TestVerify runs the reference vector and the reference library's test
// cases (webhook_test.go of standard-webhooks/libraries/go) through Verify,
// plus the tolerance's edges.
func TestVerify(t *testing.T) {
	key := refKey(t)
	at := time.Unix(refTimestamp, 0)
	tol := int64(SignatureTolerance / time.Second)
	resigned := func(ts int64) http.Header {
		return webhookHeaders(refID, ts, Sign(key, refID, ts, []byte(refPayload)))
	}
	for _, tc := range []struct {
		name    string
		h       http.Header
		body    string
		wantErr string // "" = verifies
	}{
		{name: "reference vector", h: webhookHeaders(refID, refTimestamp, refSignature)},
		{name: "missing id", h: func() http.Header {
			h := webhookHeaders(refID, refTimestamp, refSignature)
			h.Del("webhook-id")
			return h
		}(), wantErr: "missing webhook-id"},
		{name: "missing timestamp", h: func() http.Header {
			h := webhookHeaders(refID, refTimestamp, refSignature)
			h.Del("webhook-timestamp")
			return h
		}(), wantErr: "missing webhook-timestamp"},
		{name: "missing signature", h: func() http.Header {
			h := webhookHeaders(refID, refTimestamp, refSignature)
			h.Del("webhook-signature")
			return h
		}(), wantErr: "missing webhook-signature"},
		{name: "invalid signature", h: webhookHeaders(refID, refTimestamp, refWrong), wantErr: "no v1 entry"},
		{name: "partial signature", h: webhookHeaders(refID, refTimestamp, "v1,"), wantErr: "no v1 entry"},
		{name: "not base64", h: webhookHeaders(refID, refTimestamp, "v1,!!!"), wantErr: "no v1 entry"},
		{name: "no version", h: webhookHeaders(refID, refTimestamp, strings.TrimPrefix(refSignature, "v1,")), wantErr: "no v1 entry"},
		{name: "valid multi sig", h: webhookHeaders(refID, refTimestamp,
			refWrong+" v2,"+strings.TrimPrefix(refWrong, "v1,")+" "+refSignature+" "+refWrong)},
		{name: "several spaces between entries", h: webhookHeaders(refID, refTimestamp, refWrong+"   "+refSignature)},
		{name: "right value under another version", h: webhookHeaders(refID, refTimestamp, "v2,"+strings.TrimPrefix(refSignature, "v1,")), wantErr: "no v1 entry"},
		{name: "other body", h: webhookHeaders(refID, refTimestamp, refSignature), body: `{"test": 2432232315}`, wantErr: "no v1 entry"},
		{name: "other id", h: webhookHeaders(refID+"x", refTimestamp, refSignature), wantErr: "no v1 entry"},
		{name: "other timestamp", h: webhookHeaders(refID, refTimestamp+1, refSignature), wantErr: "no v1 entry"},
		{name: "timestamp not a number", h: func() http.Header {
			h := webhookHeaders(refID, refTimestamp, refSignature)
			h.Set("webhook-timestamp", "2021-02-25T15:02:10Z")
			return h
		}(), wantErr: "not Unix seconds"},
		{name: "exactly 5 minutes old", h: resigned(refTimestamp - tol)},
		{name: "5 minutes and 1 second old", h: resigned(refTimestamp - tol - 1), wantErr: "too old"},
		{name: "exactly 5 minutes ahead", h: resigned(refTimestamp + tol)},
		{name: "5 minutes and 1 second ahead", h: resigned(refTimestamp + tol + 1), wantErr: "too new"},
		{name: "a year old", h: resigned(refTimestamp - 365*24*3600), wantErr: "too old"},
		{name: "year 2000 (library: invalid timestamp)", h: resigned(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).Unix()), wantErr: "too old"},
		{name: "far future, no overflow", h: resigned(1 << 62), wantErr: "too new"},
		{name: "far past, no overflow", h: resigned(-1 << 62), wantErr: "too old"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := refPayload
			if tc.body != "" {
				body = tc.body
			}
			err := Verify(key, tc.h, []byte(body), at)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("got %v, want it to verify", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want an error saying %q", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), strings.TrimPrefix(refSignature, "v1,")) {
				t.Fatalf("the error %q reveals the expected signature", err)
			}
		})
	}
}

// TestSignaturesInteroperateWithTheReferenceLibrary: what SetHeaders
// signs, the reference library verifies (a service's receiver uses it), and
// what the library signs, Verify accepts; tampering fails both ways.
func TestSignaturesInteroperateWithTheReferenceLibrary(t *testing.T) {
	key := refKey(t)
	wh, err := standardwebhooks.NewWebhook(refSecret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ev := &event.Event{ID: "01JABCDEF", Source: "processor", Type: "match_updates", Time: now, ContentType: "application/json",
		Data: []byte(`{"match":1,"text":"åäö \u2028"}`)}

	t.Run("ours signs, the library verifies", func(t *testing.T) {
		h := http.Header{}
		SetHeaders(h, "match.updated", 1, ev, key, now)
		if err := wh.Verify(ev.Data, h); err != nil {
			t.Fatalf("reference library: %v (headers %v)", err, h)
		}
		if err := Verify(key, h, ev.Data, now); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if err := wh.Verify([]byte(`{"match":2}`), h); err == nil {
			t.Fatal("reference library verified a tampered body")
		}
	})
	t.Run("the library signs, ours verifies", func(t *testing.T) {
		sig, err := wh.Sign(ev.ID, now, ev.Data)
		if err != nil {
			t.Fatal(err)
		}
		h := webhookHeaders(ev.ID, now.Unix(), sig)
		if err := Verify(key, h, ev.Data, now); err != nil {
			t.Fatalf("Verify of the library's signature: %v", err)
		}
		h.Set("webhook-signature", refWrong+" "+sig) // a rotated key's entry first
		if err := Verify(key, h, ev.Data, now); err != nil {
			t.Fatalf("Verify of the library's signature after another entry: %v", err)
		}
		if err := Verify(key, h, ev.Data, now.Add(SignatureTolerance+time.Second)); err == nil || !strings.Contains(err.Error(), "too old") {
			t.Fatalf("Verify past the tolerance: got %v, want too old", err)
		}
	})
	t.Run("inbox key: the library verifies with it, not with the secret", func(t *testing.T) {
		ik := InboxKey(key, "match.updated")
		h := http.Header{}
		SetHeaders(h, "match.updated", 1, ev, ik, now)
		raw, _ := standardwebhooks.NewWebhookRaw(ik)
		if err := raw.Verify(ev.Data, h); err != nil {
			t.Fatalf("reference library with the inbox key: %v", err)
		}
		if err := wh.Verify(ev.Data, h); err == nil {
			t.Fatal("an inbox-signed POST verified with the plain secret: a service's receiver would take it")
		}
	})
}

// TestInboxKey: the derivation the contract names, different per topic and
// from the secret itself.
func TestInboxKey(t *testing.T) {
	key := refKey(t)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("sidecar-inbox:billing"))
	if got, want := InboxKey(key, "billing"), m.Sum(nil); !hmac.Equal(got, want) {
		t.Fatalf("InboxKey: got %x, want HMAC-SHA256(secret, \"sidecar-inbox:billing\") = %x", got, want)
	}
	a, b := InboxKey(key, "alerts"), InboxKey(key, "billing")
	if hmac.Equal(a, b) || hmac.Equal(a, key) || hmac.Equal(InboxKey(key, "a"), InboxKey(key[1:], "a")) {
		t.Fatal("inbox keys collide across topics or secrets, or equal the secret")
	}
}

// recordingInbox takes every event; room says whether Room refuses.
type recordingInbox struct {
	mu   sync.Mutex
	got  []*event.Event
	room error
}

func (r *recordingInbox) Room(string, int64) error { return r.room }

func (r *recordingInbox) Accept(topic string, ev *event.Event) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, ev)
	return 1, nil
}

func (r *recordingInbox) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.got) }

// TestInboxAuthentication: who the inbox hears, for each way it can be
// configured; every refusal is the JSON error shape and reaches no Accept.
func TestInboxAuthentication(t *testing.T) {
	key := refKey(t)
	const token = "tok-0123456789"
	const topic = "billing"
	body := `{"m":1}`
	now := time.Now()
	ev := &event.Event{ID: "01ABC", Source: "processor", Type: "match_updates", Time: now, ContentType: "application/json", Data: []byte(body)}
	headers := func(k []byte, at time.Time, edit func(map[string]string)) map[string]string {
		h := http.Header{}
		SetHeaders(h, topic, 1, ev, k, at)
		m := map[string]string{}
		for name := range h {
			m[name] = h.Get(name)
		}
		if edit != nil {
			edit(m)
		}
		return m
	}
	signed := headers(InboxKey(key, topic), now, nil)
	bearer := func(tok string) func(map[string]string) {
		return func(m map[string]string) { m["Authorization"] = "Bearer " + tok }
	}
	for _, tc := range []struct {
		name     string
		secret   []byte
		token    string
		headers  map[string]string
		want     int
		wantCode string
		wantMsg  string
	}{
		{"nothing configured: disabled, even when signed", nil, "", signed, 403, "inbox_disabled", "SIDECAR_WEBHOOK_SECRET"},
		{"nothing configured: disabled, even with a token", nil, "", headers(nil, now, bearer(token)), 403, "inbox_disabled", "SIDECAR_API_TOKEN"},
		{"secret: signed with the inbox key", key, "", signed, 202, "", ""},
		{"secret: unsigned", key, "", headers(nil, now, nil), 401, "bad_signature", "missing webhook-signature"},
		{"secret: signed with the secret itself", key, "", headers(key, now, nil), 401, "bad_signature", "no v1 entry"},
		{"secret: signed for another topic", key, "", headers(InboxKey(key, "alerts"), now, nil), 401, "bad_signature", "no v1 entry"},
		{"secret: an hour old", key, "", headers(InboxKey(key, topic), now.Add(-time.Hour), nil), 401, "bad_signature", "too old"},
		{"secret: ce-id not the signed id", key, "", headers(InboxKey(key, topic), now, func(m map[string]string) { m["Ce-Id"] = "order-42" }), 401, "bad_signature", "webhook-id"},
		{"secret: a token that is not configured", key, "", headers(nil, now, bearer(token)), 401, "unauthorized", "bearer token"},
		{"token: bearer", nil, token, headers(nil, now, bearer(token)), 202, "", ""},
		{"token: none", nil, token, headers(nil, now, nil), 401, "unauthorized", "bearer token"},
		{"token: wrong", nil, token, headers(nil, now, bearer("nope")), 401, "unauthorized", "bearer token"},
		{"token: a signature is no token", nil, token, signed, 401, "unauthorized", "bearer token"},
		{"both: signature alone", key, token, signed, 202, "", ""},
		{"both: token alone", key, token, headers(nil, now, bearer(token)), 202, "", ""},
		{"both: wrong token, good signature", key, token, headers(InboxKey(key, topic), now, bearer("nope")), 202, "", ""},
		{"both: wrong token, no signature", key, token, headers(nil, now, bearer("nope")), 401, "unauthorized", "bearer token"},
		{"both: neither", key, token, headers(nil, now, nil), 401, "bad_signature", "Authorization: Bearer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := &recordingInbox{}
			h := NewAPI(APIConfig{Service: "calendar", MaxBody: 1024, Secret: tc.secret, Token: tc.token}, &fakePublisher{}, in, http.NotFoundHandler(), zerolog.Nop())
			rec := do(h, http.MethodPost, "/v1/inbox/"+topic, body, tc.headers)
			var resp map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("body: got %q, want JSON", rec.Body)
			}
			if rec.Code != tc.want {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tc.want)
			}
			if tc.want != http.StatusAccepted {
				msg, _ := resp["error"].(string)
				if resp["code"] != tc.wantCode || !strings.Contains(msg, tc.wantMsg) {
					t.Fatalf("got %v, want code %q and a message saying %q", resp, tc.wantCode, tc.wantMsg)
				}
				if n := in.count(); n != 0 {
					t.Fatalf("refused, yet %d events reached Accept", n)
				}
				return
			}
			if n := in.count(); n != 1 || in.got[0].ID != ev.ID || string(in.got[0].Data) != body {
				t.Fatalf("accepted: Accept got %d events, want the one sent", n)
			}
		})
	}
}

// TestInboxFullSaysOnlyFull: a full queue is refused before the sender is
// authenticated, so the answer names no subscription and no count.
func TestInboxFullSaysOnlyFull(t *testing.T) {
	in := &recordingInbox{room: codedErr("inbox_full")}
	h := NewAPI(APIConfig{Service: "calendar", MaxBody: 1024, Secret: refKey(t)}, &fakePublisher{}, in, http.NotFoundHandler(), zerolog.Nop())
	rec := do(h, http.MethodPost, "/v1/inbox/billing", `{}`, nil)
	var resp map[string]string
	_ = json.Unmarshal(rec.Body.Bytes(), &resp)
	if rec.Code != 503 || resp["code"] != "inbox_full" || resp["error"] != "inbox queue is full; retry later" || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("got %d %v Retry-After %q, want 503 inbox_full with only \"full\" said", rec.Code, resp, rec.Header().Get("Retry-After"))
	}
}

// TestFallbackSignsForThePeersInbox: the publishing side's fallback POST
// is signed with the inbox key of its topic, and a subscribing sidecar's
// inbox with the same secret and no token takes it — also for an event id
// that is percent-encoded in ce-id and hashed in webhook-id.
func TestFallbackSignsForThePeersInbox(t *testing.T) {
	key := refKey(t)
	for _, id := range []string{"", "order-42", "match 42/Malmö 100%"} {
		t.Run("ce-id "+strconv.Quote(id), func(t *testing.T) {
			in := &recordingInbox{}
			var seen http.Header
			subscriber := NewAPI(APIConfig{Service: "calendar", MaxBody: 1024, Secret: key}, &fakePublisher{}, in, http.NotFoundHandler(), zerolog.Nop())
			peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = r.Header.Clone()
				subscriber.ServeHTTP(w, r)
			}))
			defer peer.Close()
			pub := &spooledPublisher{}
			publisher := NewAPI(APIConfig{Service: "processor", MaxBody: 1024, Secret: key, Token: "publisher-only-token", FallbackClient: peer.Client(),
				Routes: []Route{{Path: "/sync", Topic: "billing", Fallback: peer.URL + "/v1/inbox/billing"}},
			}, pub, nil, http.NotFoundHandler(), zerolog.Nop())
			hdr := map[string]string{"Content-Type": "application/json", "Authorization": "Bearer publisher-only-token"}
			if id != "" {
				hdr["ce-id"] = id
			}
			rec := do(publisher, http.MethodPost, "/sync", `{"m":1}`, hdr)
			var resp map[string]any
			_ = json.Unmarshal(rec.Body.Bytes(), &resp)
			if rec.Code != 202 || resp["fallback"] != "delivered" || in.count() != 1 {
				t.Fatalf("route publish: got %d %v, %d events at the peer inbox; want 202 fallback delivered, 1 event", rec.Code, resp, in.count())
			}
			if got, want := in.got[0].ID, pub.events[0].ID; got != want {
				t.Fatalf("peer inbox got id %q, want %q", got, want)
			}
			if err := Verify(InboxKey(key, "billing"), seen, []byte(`{"m":1}`), time.Now()); err != nil {
				t.Fatalf("fallback POST with the inbox key: %v", err)
			}
			if err := Verify(key, seen, []byte(`{"m":1}`), time.Now()); err == nil {
				t.Fatal("fallback POST verified with the plain secret; want it bound to the inbox key")
			}
		})
	}
}

// spooledPublisher answers as the relay does while Redis is down.
type spooledPublisher struct{ fakePublisher }

func (s *spooledPublisher) Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	rc, err := s.fakePublisher.Publish(ctx, topic, ev)
	rc.StreamID, rc.Spooled = "", true
	return rc, err
}
