package httpbridge

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// TestSignMatchesStandardWebhooks checks Sign against an independent
// computation of the Standard Webhooks scheme, and against the example
// published with the specification.
func TestSignMatchesStandardWebhooks(t *testing.T) {
	key, _ := base64.StdEncoding.DecodeString("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	id, ts, body := "msg_p5jXN8AQM9LWM0D4loKWxJek", int64(1614265330), []byte(`{"test": 2432232314}`)
	got := Sign(key, id, ts, body)
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign: got %s, want %s (the spec's example)", got, want)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + ".1614265330." + string(body)))
	if want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil)); got != want {
		t.Fatalf("Sign: got %s, want %s", got, want)
	}
}

func TestDeliverOutcomes(t *testing.T) {
	ev := &event.Event{ID: "01ABC", Source: "processor", Type: "match_updates", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		ContentType: "application/json", Data: []byte(`{"a":1}`), Subject: "m/1", TraceParent: "00-abc-def-01"}
	now := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		wantErr    bool
		permanent  bool
		wantWait   time.Duration
	}{
		{name: "200", status: 200},
		{name: "204", status: 204},
		{name: "500 retried", status: 500, wantErr: true},
		{name: "503 retry-after seconds", status: 503, retryAfter: "7", wantErr: true, wantWait: 7 * time.Second},
		{name: "429 retry-after date", status: 429, retryAfter: now.Add(30 * time.Second).UTC().Format(http.TimeFormat), wantErr: true, wantWait: 30 * time.Second},
		{name: "429 retry-after capped", status: 429, retryAfter: "999999", wantErr: true, wantWait: maxRetryAfter},
		{name: "408 retried", status: 408, wantErr: true},
		{name: "400 permanent", status: 400, wantErr: true, permanent: true},
		{name: "404 permanent", status: 404, wantErr: true, permanent: true},
		{name: "410 permanent", status: 410, wantErr: true, permanent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *http.Request
			var gotBody []byte
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r
				gotBody, _ = io.ReadAll(r.Body)
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			key := []byte("0123456789abcdef0123")
			wh := &Webhook{URL: srv.URL + "/manual-sync", Timeout: time.Second, Secret: key, Client: srv.Client(), Now: func() time.Time { return now }}
			err := wh.Deliver(context.Background(), "match.updated", 3, ev)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got err %v, want error: %v", err, tc.wantErr)
			}
			if err != nil {
				var de *DeliveryError
				if !errors.As(err, &de) || de.Permanent() != tc.permanent || de.RetryAfter() != tc.wantWait || de.Status != tc.status {
					t.Fatalf("got %+v, want permanent=%v wait=%v", de, tc.permanent, tc.wantWait)
				}
			}
			if string(gotBody) != `{"a":1}` || got.URL.Path != "/manual-sync" || got.Method != http.MethodPost {
				t.Fatalf("request: got %s %s %q", got.Method, got.URL.Path, gotBody)
			}
			for h, want := range map[string]string{
				"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "01ABC", "ce-source": "processor",
				"ce-type": "match_updates", "ce-time": "2026-01-01T00:00:00Z", "ce-subject": "m/1", "traceparent": "00-abc-def-01",
				"webhook-id": "01ABC", "webhook-timestamp": "1700000000", "Sidecar-Topic": "match.updated", "Sidecar-Attempt": "3",
				"webhook-signature": Sign(key, "01ABC", 1700000000, []byte(`{"a":1}`)),
			} {
				if v := got.Header.Get(h); v != want {
					t.Errorf("header %s: got %q, want %q", h, v, want)
				}
			}
		})
	}
}

func TestDeliverConnectionErrorAndTimeoutAreRetryable(t *testing.T) {
	ev := &event.Event{ID: "x", ContentType: "text/plain", Data: []byte("x")}
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer slow.Close()
	defer close(release)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for name, url := range map[string]string{"timeout": slow.URL, "refused": closed.URL} {
		t.Run(name, func(t *testing.T) {
			wh := &Webhook{URL: url, Timeout: 100 * time.Millisecond, Client: http.DefaultClient}
			start := time.Now()
			err := wh.Deliver(context.Background(), "t", 1, ev)
			var de *DeliveryError
			if !errors.As(err, &de) || de.Permanent() || de.Status != 0 {
				t.Fatalf("got %v, want a retryable DeliveryError without status", err)
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Fatalf("attempt took %v; the timeout is 100ms", el)
			}
		})
	}
	if got := (&Webhook{URL: "http://127.0.0.1:1/", Timeout: time.Second, Client: http.DefaultClient}).Deliver(context.Background(), "t", 1, ev); got == nil {
		t.Fatal("delivery to a closed port: got nil error")
	}
}

// TestDeliverRedirectIsPermanent: a 3xx is never followed (the target
// would acknowledge an event it never received, as a body-less GET for a
// 301/302) and goes to the DLQ at once, the Location in the error.
func TestDeliverRedirectIsPermanent(t *testing.T) {
	ev := &event.Event{ID: "01ABC", Source: "processor", Type: "t", ContentType: "application/json", Data: []byte(`{"a":1}`)}
	var targetHits int
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { targetHits++ }))
	defer target.Close()
	for _, tc := range []struct {
		name     string
		status   int
		location string // "" = no Location header
		want     string // in the error text
	}{
		{name: "301", status: 301, location: target.URL + "/moved", want: "webhook answered 301: redirect to " + target.URL + "/moved is not followed"},
		{name: "302", status: 302, location: target.URL + "/found", want: "webhook answered 302: redirect to " + target.URL + "/found is not followed"},
		{name: "303", status: 303, location: target.URL + "/other", want: target.URL + "/other"},
		{name: "307", status: 307, location: target.URL + "/temp", want: target.URL + "/temp"},
		{name: "308", status: 308, location: target.URL + "/perm", want: target.URL + "/perm"},
		{name: "relative Location", status: 302, location: "/elsewhere", want: "redirect to /elsewhere is not followed"},
		{name: "304 without Location", status: 304, want: "webhook answered 304: redirect (no Location) is not followed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			targetHits = 0
			var posts int
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				posts++
				if tc.location != "" {
					w.Header().Set("Location", tc.location)
				}
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			wh := &Webhook{URL: srv.URL + "/manual-sync", Timeout: time.Second, Client: NewClient(1)}
			err := wh.Deliver(context.Background(), "t", 1, ev)
			var de *DeliveryError
			if !errors.As(err, &de) || !de.Permanent() || de.Status != tc.status {
				t.Fatalf("got %v, want a permanent DeliveryError with status %d", err, tc.status)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error: got %q, want it to contain %q", err, tc.want)
			}
			if posts != 1 || targetHits != 0 {
				t.Fatalf("requests: got %d to the webhook and %d to the redirect target, want 1 and 0", posts, targetHits)
			}
		})
	}
}

// redirectingDoer answers as a client that followed a redirect: the
// response's Request is for another URL.
type redirectingDoer struct{ to string }

func (d redirectingDoer) Do(req *http.Request) (*http.Response, error) {
	followed, _ := http.NewRequest(http.MethodGet, d.to, nil)
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok")), Request: followed}, nil
}

// TestDeliverRefusesAFollowedRedirect: defence in depth for a Doer that
// follows redirects (http.DefaultClient does): the final answer came from
// another URL, so even a 200 there is no acknowledgement.
func TestDeliverRefusesAFollowedRedirect(t *testing.T) {
	ev := &event.Event{ID: "01ABC", Source: "processor", Type: "t", ContentType: "application/json", Data: []byte(`{"a":1}`)}
	var gets int
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			gets++
		}
	}))
	defer target.Close()
	hook := httptest.NewServer(http.RedirectHandler(target.URL+"/moved", http.StatusFound))
	defer hook.Close()
	for _, tc := range []struct {
		name   string
		url    string
		client Doer
		want   string
	}{
		{name: "http.DefaultClient follows a 302", url: hook.URL + "/manual-sync", client: http.DefaultClient, want: "followed a redirect to " + target.URL + "/moved"},
		{name: "fake Doer", url: "http://hook.invalid/manual-sync", client: redirectingDoer{to: "http://elsewhere.invalid/x"}, want: "followed a redirect to http://elsewhere.invalid/x"},
		{name: "same URL is an answer", url: "http://hook.invalid/manual-sync", client: redirectingDoer{to: "http://hook.invalid/manual-sync"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wh := &Webhook{URL: tc.url, Timeout: time.Second, Client: tc.client}
			err := wh.Deliver(context.Background(), "t", 1, ev)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			var de *DeliveryError
			if !errors.As(err, &de) || !de.Permanent() || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a permanent DeliveryError containing %q", err, tc.want)
			}
		})
	}
	if gets != 1 {
		t.Fatalf("the following client sent %d GETs to the target, want 1 (the fault this guards against)", gets)
	}
}

// TestSetHeadersCarriesEveryAttribute: each attribute is a ce-* header,
// percent-encoded (HTTP binding §3.1.3.2); the hop's trace context is
// forwarded; webhook-id is safe and the signature (over that webhook-id)
// verifies with the Standard Webhooks reference library.
func TestSetHeadersCarriesEveryAttribute(t *testing.T) {
	ev := &event.Event{ID: "ordre-ö.1", Source: "https://shop.example/a b", Type: "order.created", Subject: `Malmö "C"`,
		Time: time.Date(2026, 5, 17, 13, 0, 0, 5e8, time.FixedZone("CEST", 2*3600)), DataSchema: "https://shop.example/order.json",
		ContentType: "application/json", Data: []byte(`{"o":1}`),
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "shop=1,congo=t61rcWkgMzE",
		Extensions: map[string]string{"region": "Skåne", "note": "100%", "attempt": "3", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	now := time.Now()
	h := http.Header{}
	SetHeaders(h, "orders", 2, ev, key, now)
	wantWebhookID := WebhookID("ordre-ö.1")
	for name, want := range map[string]string{
		"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "ordre-%C3%B6.1",
		"ce-source": "https://shop.example/a%20b", "ce-type": "order.created", "ce-time": "2026-05-17T11:00:00.5Z",
		"ce-subject": "Malm%C3%B6%20%22C%22", "ce-dataschema": "https://shop.example/order.json",
		"ce-region": "Sk%C3%A5ne", "ce-note": "100%25", "ce-attempt": "3",
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "shop=1,congo=t61rcWkgMzE",
		"ce-traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"webhook-id":     wantWebhookID, "Sidecar-Topic": "orders", "Sidecar-Attempt": "2",
	} {
		if got := h.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("header %s: got %q, want %q", name, got, want)
		}
	}
	if !regexp.MustCompile(`^evt_[a-z2-7]{32}$`).MatchString(wantWebhookID) {
		t.Errorf("webhook-id %q: want evt_ and 32 lower-case base32 characters", wantWebhookID)
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(ev.Data, h); err != nil {
		t.Fatalf("the Standard Webhooks reference library does not verify the delivery: %v", err)
	}
	// What the sidecar sends comes back from the inbox as it was.
	back, err := eventFromWebhook(h, ev.Data, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sameEvent(back, ev); err != nil {
		t.Fatalf("eventFromWebhook(SetHeaders(ev)): %v", err)
	}
}

func TestWebhookID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		same bool
	}{
		{"01JC9Z5Y4M3K2J1H0G9F8E7D6C", true},
		{"match-7_v3", true},
		{strings.Repeat("a", 256), true},
		{strings.Repeat("a", 257), false},
		{"ordre-ö.1", false},
		{"a.b", false},
		{"a b", false},
		{"a/b", false},
		{"", false},
	} {
		t.Run(tc.id, func(t *testing.T) {
			got := WebhookID(tc.id)
			if tc.same {
				if got != tc.id {
					t.Fatalf("WebhookID(%q): got %q, want the id itself", tc.id, got)
				}
				return
			}
			// Independently: evt_ + lower-case base32, no padding, of the
			// first 20 bytes of SHA-256(id).
			sum := sha256.Sum256([]byte(tc.id))
			want := "evt_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:20]))
			if got != want || len(got) != 36 || WebhookID(tc.id) != got {
				t.Fatalf("WebhookID(%q): got %q, want %q (deterministic)", tc.id, got, want)
			}
		})
	}
	if WebhookID("a.b") == WebhookID("a.c") {
		t.Fatal("different ids, same webhook-id")
	}
}

// TestEventFromWebhook: the inbox reads percent-encoded ce-* headers, and
// also what an older sidecar sends (no encoding, no new attributes);
// attributes it cannot keep are refused.
func TestEventFromWebhook(t *testing.T) {
	base := func() http.Header {
		return http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"01ABC"}, "Ce-Source": {"processor"}, "Ce-Type": {"t"},
			"Ce-Time": {"2026-01-01T00:00:00Z"}, "Content-Type": {"application/json"}}
	}
	ev, err := eventFromWebhook(base(), []byte(`{}`), time.Time{})
	if err != nil || ev.ID != "01ABC" || ev.Extensions != nil || ev.DataSchema != "" || ev.TraceState != "" {
		t.Fatalf("an older sidecar's delivery: got %+v, %v", ev, err)
	}
	h := base()
	h.Set("ce-subject", "Malmö") // an older sidecar sent it raw
	h.Add("tracestate", "a=1")
	h.Add("tracestate", "b=2")
	if ev, err = eventFromWebhook(h, nil, time.Time{}); err != nil || ev.Subject != "Malmö" || ev.TraceState != "a=1,b=2" {
		t.Fatalf("raw subject, two tracestate headers: got %+v, %v", ev, err)
	}
	for _, tc := range []struct{ name, header, value, wantErr string }{
		{"specversion", "ce-specversion", "0.3", "not supported"},
		{"invalid UTF-8 id", "ce-id", "a%FF", "not valid UTF-8"},
		{"bad time", "ce-time", "now", "not RFC 3339"},
		{"relative dataschema", "ce-dataschema", "x.json", "not an absolute URI"},
		{"extension control character", "ce-region", "a%00", "control character 0x00"},
		{"extension name", "ce-my_ext", "x", "must match"},
		{"tracestate not ASCII", "tracestate", "a=ö", "must be ASCII"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := base()
			h.Set(tc.header, tc.value)
			if _, err := eventFromWebhook(h, nil, time.Time{}); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestDeliverOverTheWire: the headers survive a real HTTP round trip
// (net/http sends every encoded value, an empty extension included).
func TestDeliverOverTheWire(t *testing.T) {
	ev := &event.Event{ID: "ordre-ö.1", Source: "/shop", Type: "t", Time: time.Unix(1700000000, 0).UTC(), Subject: "Malmö",
		ContentType: "text/plain", Data: []byte("hej"), Extensions: map[string]string{"empty": "", "region": "Skåne"}}
	var got *event.Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var err error
		if got, err = eventFromWebhook(r.Header, body, time.Time{}); err != nil {
			t.Errorf("eventFromWebhook: %v", err)
		}
	}))
	defer srv.Close()
	wh := &Webhook{URL: srv.URL, Timeout: time.Second, Client: srv.Client()}
	if err := wh.Deliver(context.Background(), "t", 1, ev); err != nil {
		t.Fatal(err)
	}
	if err := sameEvent(got, ev); err != nil {
		t.Fatal(err)
	}
}
