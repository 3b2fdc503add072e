package httpbridge

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

func deliverBatchEvents() []*event.Event {
	at := time.Date(2026, 5, 17, 13, 0, 0, 5e8, time.UTC)
	return []*event.Event{
		{ID: "01ABC", Source: "/shop", Type: "order.created", Time: at, ContentType: "application/json", Data: []byte(`{"o": 1}`),
			Subject: "Malmö", TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "shop=1",
			Extensions: map[string]string{"partitionkey": "kund-1"}},
		{ID: "ordre-ö.2", Source: "/shop", Type: "order.created", Time: at, ContentType: "text/plain", Data: []byte("två"),
			TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{ID: "01ABD", Source: "/shop", Type: "order.paid", Time: at, ContentType: "application/json", Data: []byte(`[3]`),
			DataSchema: "https://shop.example/paid.json", Extensions: map[string]string{"partitionkey": "kund-1", "region": "Skåne"}},
	}
}

// independentBatchWebhookID computes the contract's batch webhook-id on its own:
// "batch_" + lower-case unpadded base32 of SHA-256(webhook-ids joined by
// "\n")[:20].
func independentBatchWebhookID(ids ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	return "batch_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:20]))
}

// deliverBatchRequest is what a test receiver saw of one POST.
type deliverBatchRequest struct {
	method, path string
	header       http.Header
	body         []byte
}

func deliverBatchReceiver(t *testing.T, answer func(w http.ResponseWriter)) (*httptest.Server, func() []deliverBatchRequest) {
	t.Helper()
	var (
		mu  sync.Mutex
		got []deliverBatchRequest
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, deliverBatchRequest{r.Method, r.URL.Path, r.Header.Clone(), body})
		mu.Unlock()
		answer(w)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []deliverBatchRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]deliverBatchRequest(nil), got...)
	}
}

func TestDeliverBatchOutcomes(t *testing.T) {
	evs := deliverBatchEvents()
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key := refKey(t)
	lib, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	// The reference library checks the timestamp against the clock.
	now := time.Now().Truncate(time.Second)
	wantID := independentBatchWebhookID("01ABC", WebhookID("ordre-ö.2"), "01ABD")
	wantBody := string(event.AppendBatch(nil, evs))
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
		{name: "429 retry-after seconds", status: 429, retryAfter: "12", wantErr: true, wantWait: 12 * time.Second},
		{name: "429 retry-after date", status: 429, retryAfter: now.Add(30 * time.Second).UTC().Format(http.TimeFormat), wantErr: true, wantWait: 30 * time.Second},
		{name: "429 retry-after capped", status: 429, retryAfter: "999999", wantErr: true, wantWait: maxRetryAfter},
		{name: "408 retried", status: 408, wantErr: true},
		{name: "400 permanent", status: 400, wantErr: true, permanent: true},
		{name: "413 permanent", status: 413, wantErr: true, permanent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := deliverBatchReceiver(t, func(w http.ResponseWriter) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, "nope")
			})
			wh := &Webhook{URL: srv.URL + "/orders-hook", Timeout: time.Second, Secret: key, Client: srv.Client(), Now: func() time.Time { return now }}
			err := wh.DeliverBatch(context.Background(), "orders", 3, evs)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got err %v, want error: %v", err, tc.wantErr)
			}
			if err != nil {
				var de *DeliveryError
				if !errors.As(err, &de) || de.Permanent() != tc.permanent || de.RetryAfter() != tc.wantWait || de.Status != tc.status {
					t.Fatalf("got %+v, want status %d permanent=%v wait=%v", de, tc.status, tc.permanent, tc.wantWait)
				}
				if !strings.Contains(err.Error(), `"nope"`) {
					t.Fatalf("error %q does not quote the answer", err)
				}
			}
			reqs := got()
			if len(reqs) != 1 {
				t.Fatalf("got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.method != http.MethodPost || r.path != "/orders-hook" || string(r.body) != wantBody {
				t.Fatalf("request: got %s %s\n%s\nwant POST /orders-hook\n%s", r.method, r.path, r.body, wantBody)
			}
			for name, want := range map[string]string{
				"Content-Type": "application/cloudevents-batch+json", "webhook-id": wantID,
				"webhook-timestamp": strconv.FormatInt(now.Unix(), 10), "webhook-signature": Sign(key, wantID, now.Unix(), []byte(wantBody)),
				"Sidecar-Topic": "orders", "Sidecar-Attempt": "3", "Sidecar-Batch-Size": "3",
				"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "shop=1",
			} {
				if v := r.header.Values(name); len(v) != 1 || v[0] != want {
					t.Errorf("header %s: got %q, want %q", name, v, want)
				}
			}
			for name := range r.header {
				if strings.HasPrefix(name, "Ce-") {
					t.Errorf("header %s on a batch: the attributes belong in the body", name)
				}
			}
			if err := Verify(key, r.header, r.body, now); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if err := lib.Verify(r.body, r.header); err != nil {
				t.Fatalf("the Standard Webhooks reference library does not verify the batch: %v", err)
			}
			// The receiver reads back every event, in order.
			back, err := event.ParseCloudEventsBatch(r.body, "default", time.Time{}, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(back) != len(evs) {
				t.Fatalf("receiver parsed %d events, want %d", len(back), len(evs))
			}
			for i := range evs {
				want := *evs[i]
				want.TraceParent, want.TraceState = "", "" // hop context: the header, not the body
				if err := sameEvent(back[i], &want); err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
			}
		})
	}
}

// TestDeliverBatchRetryIsTheSameBatch: a retry sends the same body under
// the same webhook-id (a receiver deduplicates on it); another batch, or
// the same events in another order, gets another webhook-id.
func TestDeliverBatchRetryIsTheSameBatch(t *testing.T) {
	srv, got := deliverBatchReceiver(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) })
	evs := deliverBatchEvents()
	wh := &Webhook{URL: srv.URL, Timeout: time.Second, Client: srv.Client()}
	for attempt := 1; attempt <= 2; attempt++ {
		var de *DeliveryError
		if err := wh.DeliverBatch(context.Background(), "orders", attempt, evs); !errors.As(err, &de) || de.Permanent() {
			t.Fatalf("attempt %d: got %v, want a retriable DeliveryError", attempt, err)
		}
	}
	reqs := got()
	if len(reqs) != 2 {
		t.Fatalf("got %d requests, want 2", len(reqs))
	}
	if string(reqs[0].body) != string(reqs[1].body) || reqs[0].header.Get("webhook-id") != reqs[1].header.Get("webhook-id") {
		t.Fatalf("the retry differs: %s %s vs %s %s", reqs[0].header.Get("webhook-id"), reqs[0].body, reqs[1].header.Get("webhook-id"), reqs[1].body)
	}
	if a, b := reqs[0].header.Get("Sidecar-Attempt"), reqs[1].header.Get("Sidecar-Attempt"); a != "1" || b != "2" {
		t.Fatalf("Sidecar-Attempt: got %s, %s, want 1, 2", a, b)
	}
	if reqs[0].header.Get("webhook-signature") != "" {
		t.Fatal("webhook-signature without a secret")
	}
	id := BatchWebhookID(evs)
	if !regexp.MustCompile(`^batch_[a-z2-7]{32}$`).MatchString(id) {
		t.Fatalf("webhook-id %q: want batch_ and 32 lower-case base32 characters", id)
	}
	for name, other := range map[string][]*event.Event{
		"reordered": {evs[1], evs[0], evs[2]},
		"fewer":     evs[:2],
		"one":       evs[:1],
	} {
		if BatchWebhookID(other) == id {
			t.Errorf("%s: same webhook-id as the batch", name)
		}
	}
	// A batch of one is still a batch: its id is not the event's own.
	if got, want := BatchWebhookID(evs[:1]), independentBatchWebhookID("01ABC"); got != want || got == WebhookID("01ABC") {
		t.Fatalf("batch of one: got %s, want %s", got, want)
	}
}

func TestDeliverBatchRefusals(t *testing.T) {
	evs := deliverBatchEvents()
	t.Run("body pointer", func(t *testing.T) {
		srv, got := deliverBatchReceiver(t, func(w http.ResponseWriter) {})
		wh := &Webhook{URL: srv.URL, Timeout: time.Second, Client: srv.Client(), Body: "/payload"}
		var de *DeliveryError
		if err := wh.DeliverBatch(context.Background(), "orders", 1, evs); !errors.As(err, &de) || !de.Permanent() || !errors.Is(err, errBatchWithBody) {
			t.Fatalf("got %v, want a permanent DeliveryError", err)
		}
		if n := len(got()); n != 0 {
			t.Fatalf("got %d requests, want none", n)
		}
	})
	t.Run("redirect", func(t *testing.T) {
		var targetHits int
		target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { targetHits++ }))
		defer target.Close()
		srv, got := deliverBatchReceiver(t, func(w http.ResponseWriter) {
			w.Header().Set("Location", target.URL+"/moved")
			w.WriteHeader(http.StatusTemporaryRedirect)
		})
		wh := &Webhook{URL: srv.URL, Timeout: time.Second, Client: NewClient(1)}
		err := wh.DeliverBatch(context.Background(), "orders", 1, evs)
		var de *DeliveryError
		if !errors.As(err, &de) || !de.Permanent() || de.Status != 307 || !strings.Contains(err.Error(), "redirect to "+target.URL+"/moved is not followed") {
			t.Fatalf("got %v, want a permanent 307 naming the Location", err)
		}
		if n := len(got()); n != 1 || targetHits != 0 {
			t.Fatalf("requests: got %d to the webhook and %d to the target, want 1 and 0", n, targetHits)
		}
	})
	t.Run("followed redirect", func(t *testing.T) {
		wh := &Webhook{URL: "http://hook.invalid/x", Timeout: time.Second, Client: redirectingDoer{to: "http://elsewhere.invalid/y"}}
		var de *DeliveryError
		if err := wh.DeliverBatch(context.Background(), "orders", 1, evs); !errors.As(err, &de) || !de.Permanent() || !strings.Contains(err.Error(), "followed a redirect") {
			t.Fatalf("got %v, want a permanent DeliveryError", err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close()
		wh := &Webhook{URL: closed.URL, Timeout: time.Second, Client: http.DefaultClient}
		var de *DeliveryError
		if err := wh.DeliverBatch(context.Background(), "orders", 1, evs); !errors.As(err, &de) || de.Permanent() || de.Status != 0 {
			t.Fatalf("got %v, want a retriable DeliveryError without status", err)
		}
	})
	t.Run("no traceparent on the first event", func(t *testing.T) {
		srv, got := deliverBatchReceiver(t, func(w http.ResponseWriter) {})
		wh := &Webhook{URL: srv.URL, Timeout: time.Second, Client: srv.Client()}
		if err := wh.DeliverBatch(context.Background(), "orders", 1, []*event.Event{evs[2], evs[0]}); err != nil {
			t.Fatal(err)
		}
		h := got()[0].header
		if h.Get("traceparent") != "" || h.Get("tracestate") != "" || h.Get("Sidecar-Batch-Size") != "2" {
			t.Fatalf("got traceparent %q tracestate %q size %q, want none, none, 2", h.Get("traceparent"), h.Get("tracestate"), h.Get("Sidecar-Batch-Size"))
		}
	})
	t.Run("empty", func(t *testing.T) {
		wh := &Webhook{URL: "http://hook.invalid/", Timeout: time.Second, Client: redirectingDoer{}}
		if err := wh.DeliverBatch(context.Background(), "orders", 1, nil); err != nil {
			t.Fatalf("got %v, want nil (nothing to send)", err)
		}
	})
}
