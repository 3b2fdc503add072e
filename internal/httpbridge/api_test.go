package httpbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// fakePublisher records events; it fails when err is set.
type fakePublisher struct {
	mu      sync.Mutex
	events  []*event.Event
	topics  []string
	err     error
	discard bool // record nothing (benchmarks)
}

func (f *fakePublisher) Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return event.Receipt{}, f.err
	}
	if f.discard {
		return event.Receipt{ID: ev.ID, Topic: topic, StreamID: "1-0"}, nil
	}
	f.events = append(f.events, ev)
	f.topics = append(f.topics, topic)
	return event.Receipt{ID: ev.ID, Topic: topic, StreamID: "1-0"}, nil
}

type codedErr string

func (c codedErr) Error() string { return "refused: " + string(c) }
func (c codedErr) Code() string  { return string(c) }

func newTestAPI(pub Publisher, token string) http.Handler {
	health := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	return NewAPI(APIConfig{Service: "processor", Token: token, MaxBody: 256}, pub, nil, health, zerolog.Nop())
}

func do(h http.Handler, method, path, body string, headers map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestPublishResponses(t *testing.T) {
	ce := map[string]string{"Content-Type": "application/cloudevents+json"}
	for _, tc := range []struct {
		name       string
		path, body string
		headers    map[string]string
		pubErr     error
		wantStatus int
		wantCode   string
	}{
		{name: "ok", path: "/v1/publish/match.updated", body: `{"a":1}`, headers: map[string]string{"Content-Type": "application/json"}, wantStatus: 202},
		{name: "bad topic", path: "/v1/publish/bad%20topic", body: "x", wantStatus: 400, wantCode: "invalid_topic"},
		{name: "too large", path: "/v1/publish/t", body: strings.Repeat("x", 257), wantStatus: 413, wantCode: "too_large"},
		{name: "exactly the limit", path: "/v1/publish/t", body: strings.Repeat("x", 256), wantStatus: 202},
		{name: "cloudevent missing id", path: "/v1/publish/t", body: `{"specversion":"1.0","type":"x"}`, headers: map[string]string{"Content-Type": "application/cloudevents+json"}, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "bad ce-id", path: "/v1/publish/t", body: "x", headers: map[string]string{"ce-id": strings.Repeat("i", 300)}, wantStatus: 400, wantCode: "invalid_header"},
		// Attributes that become delivery headers: a value net/http cannot
		// send would fail every attempt and hold the topic.
		{name: "cloudevent CR LF in source", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e","type":"x","source":"a\r\nb"}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent empty source", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e","type":"x","source":""}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent source not a URI", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e","type":"x","source":"%zz"}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent control char in subject", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e","type":"x","subject":"m\u0001"}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent DEL in subject", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e","type":"x","subject":"m\u007f"}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent newline in id", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e\n","type":"x"}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent control char in type", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e","type":"x\u001b"}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent bad datacontenttype", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e","type":"x","datacontenttype":"not a media type","data":"x"}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent datacontenttype without subtype", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e","type":"x","datacontenttype":"json","data":"x"}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent CR in datacontenttype", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e","type":"x","datacontenttype":"text/plain\r","data":"x"}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent control char in traceparent", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e","type":"x","traceparent":"00-\u0000"}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent specversion 0.3", path: "/v1/publish/t", body: `{"specversion":"0.3","id":"e","type":"x"}`, headers: ce, wantStatus: 400, wantCode: "malformed_cloudevent"},
		{name: "cloudevent valid attributes", path: "/v1/publish/t", body: `{"specversion":"1.0","id":"e","type":"x","source":"https://example.com/processor","subject":"match/7\tx","datacontenttype":"application/json; charset=utf-8","data":{}}`, headers: ce, wantStatus: 202},
		{name: "binary control char in ce-subject", path: "/v1/publish/t", body: "x", headers: map[string]string{"ce-subject": "m\x01"}, wantStatus: 400, wantCode: "invalid_header"},
		{name: "binary CR in ce-type", path: "/v1/publish/t", body: "x", headers: map[string]string{"ce-type": "a\rb"}, wantStatus: 400, wantCode: "invalid_header"},
		{name: "binary DEL in Idempotency-Key", path: "/v1/publish/t", body: "x", headers: map[string]string{"Idempotency-Key": "k\x7f"}, wantStatus: 400, wantCode: "invalid_header"},
		{name: "binary Content-Type not a media type", path: "/v1/publish/t", body: "x", headers: map[string]string{"Content-Type": "not a media type"}, wantStatus: 400, wantCode: "invalid_header"},
		{name: "binary Content-Type bad parameter", path: "/v1/publish/t", body: "x", headers: map[string]string{"Content-Type": "text/plain; charset"}, wantStatus: 400, wantCode: "invalid_header"},
		{name: "binary Content-Type with parameters", path: "/v1/publish/t", body: "x", headers: map[string]string{"Content-Type": "text/plain; charset=utf-8"}, wantStatus: 202},
		{name: "redis down", path: "/v1/publish/t", body: "x", pubErr: errors.New("dial tcp: connection refused"), wantStatus: 503, wantCode: "unavailable"},
		{name: "spool full", path: "/v1/publish/t", body: "x", pubErr: codedErr("spool_full"), wantStatus: 503, wantCode: "spool_full"},
		{name: "unknown path", path: "/v1/nope", body: "x", wantStatus: 404, wantCode: "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := &fakePublisher{err: tc.pubErr}
			rec := do(newTestAPI(pub, ""), http.MethodPost, tc.path, tc.body, tc.headers)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", rec.Code, tc.wantStatus, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type: got %q, want application/json", ct)
			}
			var body map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body is not JSON: %s", rec.Body)
			}
			if tc.wantCode != "" {
				if body["code"] != tc.wantCode || body["error"] == "" {
					t.Fatalf("error body: got %v, want code %q and a message", body, tc.wantCode)
				}
				if len(pub.events) != 0 {
					t.Fatal("a refused publish reached the publisher")
				}
				return
			}
			if body["id"] == "" || body["stream_id"] != "1-0" || body["topic"] == "" {
				t.Fatalf("receipt: got %v", body)
			}
		})
	}
	rec := do(newTestAPI(&fakePublisher{}, ""), http.MethodGet, "/v1/publish/t", "", nil)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET publish: got %d, want 405", rec.Code)
	}
}

func TestPublishBuildsEvent(t *testing.T) {
	pub := &fakePublisher{}
	h := newTestAPI(pub, "")
	rec := do(h, http.MethodPost, "/v1/publish/match.updated", `{"x":1}`, map[string]string{
		"Content-Type": "application/json", "ce-id": "evt-1", "ce-type": "match_updates", "ce-subject": "match/7",
		"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "Idempotency-Key": "k-1",
	})
	if rec.Code != 202 {
		t.Fatalf("got %d: %s", rec.Code, rec.Body)
	}
	ev := pub.events[0]
	if ev.ID != "evt-1" || ev.Type != "match_updates" || ev.Subject != "match/7" || ev.Source != "processor" ||
		ev.ContentType != "application/json" || string(ev.Data) != `{"x":1}` || ev.IdempotencyKey != "k-1" ||
		ev.TraceParent != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Fatalf("event: got %+v", ev)
	}
	// Without headers: a fresh ULID, type = topic, default content type.
	do(h, http.MethodPost, "/v1/publish/match.updated", "raw", nil)
	ev = pub.events[1]
	if len(ev.ID) != 26 || ev.Type != "match.updated" || ev.ContentType != event.DefaultContentType || time.Since(ev.Time) > time.Minute {
		t.Fatalf("defaults: got %+v", ev)
	}
	// A structured CloudEvent's attributes are used.
	do(h, http.MethodPost, "/v1/publish/t", `{"specversion":"1.0","id":"ce-9","type":"x.y","data":{"k":1}}`,
		map[string]string{"Content-Type": "application/cloudevents+json"})
	if ev = pub.events[2]; ev.ID != "ce-9" || ev.Type != "x.y" || string(ev.Data) != `{"k":1}` {
		t.Fatalf("cloudevent: got %+v", ev)
	}
}

func TestBearerToken(t *testing.T) {
	h := newTestAPI(&fakePublisher{}, "s3cret")
	for _, tc := range []struct {
		name, path, auth string
		want             int
	}{
		{"no token", "/v1/publish/t", "", 401},
		{"wrong token", "/v1/publish/t", "Bearer nope", 401},
		{"prefix of token", "/v1/publish/t", "Bearer s3cre", 401},
		{"right token", "/v1/publish/t", "Bearer s3cret", 202},
		{"healthz open", "/healthz", "", 200},
		{"readyz open", "/readyz", "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := http.MethodPost
			if tc.path != "/v1/publish/t" {
				method = http.MethodGet
			}
			rec := do(h, method, tc.path, "x", map[string]string{"Authorization": tc.auth})
			if rec.Code != tc.want {
				t.Fatalf("got %d, want %d", rec.Code, tc.want)
			}
			if tc.want == 401 && !strings.Contains(rec.Body.String(), `"code":"unauthorized"`) {
				t.Fatalf("401 body: got %s", rec.Body)
			}
		})
	}
}

// TestPublishBinaryModeReadsEveryAttribute: a binary-mode publish keeps
// every ce-* header, percent-decoded (HTTP binding §3.1.3.2): the
// publisher's source and time, dataschema, extensions; and the hop's
// traceparent and tracestate (several tracestate headers are one list).
func TestPublishBinaryModeReadsEveryAttribute(t *testing.T) {
	pub := &fakePublisher{}
	h := newTestAPI(pub, "")
	req := httptest.NewRequest(http.MethodPost, "/v1/publish/orders", strings.NewReader(`{"o":1}`))
	for k, v := range map[string]string{
		"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "ordre-%C3%B6.1", "ce-type": "order.created",
		"ce-source": "https://shop.example/orders", "ce-time": "2026-05-17T15:00:00.5+02:00", "ce-subject": "Malm%C3%B6",
		"ce-dataschema": "https://shop.example/order.json", "ce-region": "Sk%C3%A5ne%20l%C3%A4n", "ce-attempt": "3",
		"ce-note": "50% off", "ce-raw": "Malmö", // a sender that does not encode
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "Idempotency-Key": "k-1",
	} {
		req.Header.Set(k, v)
	}
	req.Header.Add("tracestate", "shop=1")
	req.Header.Add("tracestate", "congo=t61rcWkgMzE")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 202 {
		t.Fatalf("got %d: %s", rec.Code, rec.Body)
	}
	var receipt map[string]any
	json.Unmarshal(rec.Body.Bytes(), &receipt)
	if receipt["id"] != "ordre-ö.1" {
		t.Fatalf("receipt id: got %v, want ordre-ö.1", receipt["id"])
	}
	ev := pub.events[0]
	want := &event.Event{ID: "ordre-ö.1", Type: "order.created", Source: "https://shop.example/orders", Subject: "Malmö",
		Time: time.Date(2026, 5, 17, 13, 0, 0, 5e8, time.UTC), DataSchema: "https://shop.example/order.json",
		ContentType: "application/json", Data: []byte(`{"o":1}`), IdempotencyKey: "k-1",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "shop=1,congo=t61rcWkgMzE",
		Extensions: map[string]string{"region": "Skåne län", "attempt": "3", "note": "50% off", "raw": "Malmö"}}
	if err := sameEvent(ev, want); err != nil {
		t.Fatal(err)
	}

	// A structured event's traceparent is the tracing extension, not the hop's.
	do(h, http.MethodPost, "/v1/publish/t", `{"specversion":"1.0","id":"s-1","type":"t","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","data":{}}`,
		map[string]string{"Content-Type": "application/cloudevents+json"})
	if ev = pub.events[1]; ev.TraceParent != "" || ev.Extensions["traceparent"] != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Fatalf("structured traceparent: got TraceParent %q, extensions %v", ev.TraceParent, ev.Extensions)
	}
}

// TestPublishCloudEventRefusals: each is a 400 (or the batch a 415) with
// the contract's JSON error, and nothing reaches the publisher.
func TestPublishCloudEventRefusals(t *testing.T) {
	ce := func(kv ...string) [][2]string {
		h := [][2]string{{"Content-Type", "application/json"}, {"ce-specversion", "1.0"}, {"ce-id", "e-1"}, {"ce-type", "t"}, {"ce-source", "/p"}}
	next:
		for i := 0; i+1 < len(kv); i += 2 {
			for j := range h {
				if h[j][0] == kv[i] {
					h[j][1] = kv[i+1]
					continue next
				}
			}
			h = append(h, [2]string{kv[i], kv[i+1]})
		}
		return h
	}
	for _, tc := range []struct {
		name       string
		headers    [][2]string
		body       string
		wantStatus int
		wantCode   string
		wantErr    string
	}{
		{"specversion 0.3", ce("ce-specversion", "0.3"), "x", 400, "malformed_cloudevent", `ce-specversion "0.3" is not supported`},
		{"specversion 9.9", ce("ce-specversion", "9.9"), "x", 400, "malformed_cloudevent", `ce-specversion "9.9" is not supported`},
		{"specversion empty", ce("ce-specversion", ""), "x", 400, "malformed_cloudevent", `ce-specversion "" is not supported`},
		{"time not RFC 3339", ce("ce-time", "yesterday"), "x", 400, "malformed_cloudevent", `ce-time "yesterday" is not RFC 3339`},
		{"id encoded invalid UTF-8", ce("ce-id", "ordre-%FF"), "x", 400, "malformed_cloudevent", "not valid UTF-8"},
		{"id raw invalid UTF-8", ce("ce-id", "ordre-\xff"), "x", 400, "malformed_cloudevent", "not valid UTF-8"},
		{"subject encoded control character", ce("ce-subject", "a%0Ab"), "x", 400, "malformed_cloudevent", "ce-subject contains control character 0x0a"},
		{"source not a URI-reference", ce("ce-source", "%zz"), "x", 400, "malformed_cloudevent", "not a URI-reference"},
		{"relative dataschema", ce("ce-dataschema", "a.json"), "x", 400, "malformed_cloudevent", "not an absolute URI"},
		{"datacontenttype header", ce("ce-datacontenttype", "text/plain"), "x", 400, "malformed_cloudevent", "send the media type as Content-Type"},
		{"extension name", ce("ce-my_ext", "x"), "x", 400, "malformed_cloudevent", `extension name "my_ext" must match`},
		{"extension control character", ce("ce-region", "a%09b"), "x", 400, "malformed_cloudevent", "extension region contains control character 0x09"},
		{"header sent twice", append(ce("ce-region", "a"), [2]string{"ce-region", "b"}), "x", 400, "malformed_cloudevent", "sent 2 times"},
		{"plain publish id raw invalid UTF-8", [][2]string{{"ce-id", "ordre-\xc3"}}, "x", 400, "invalid_header", "not valid UTF-8"},
		{"plain publish bad extension", [][2]string{{"ce-my-ext", "x"}}, "x", 400, "invalid_header", "must match"},
		{"tracestate not ASCII", [][2]string{{"tracestate", "a=ö"}}, "x", 400, "invalid_header", "tracestate must be ASCII"},
		{"structured specversion 9.9", [][2]string{{"Content-Type", "application/cloudevents+json"}}, `{"specversion":"9.9","id":"e","type":"t"}`, 400, "malformed_cloudevent", "not supported"},
		{"structured invalid UTF-8 id", [][2]string{{"Content-Type", "application/cloudevents+json"}}, "{\"specversion\":\"1.0\",\"id\":\"\xff\",\"type\":\"t\"}", 400, "malformed_cloudevent", "not valid UTF-8"},
		{"batch to a publisher without bulk", [][2]string{{"Content-Type", "application/cloudevents-batch+json"}}, `[{"specversion":"1.0","id":"e","type":"t"}]`, 415, "batch_not_supported", "cannot publish in bulk"},
		{"ndjson to a publisher without bulk", append(ce(), [2]string{"Content-Type", "application/x-ndjson; charset=utf-8"}), `{}`, 415, "batch_not_supported", "cannot publish in bulk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := &fakePublisher{}
			req := httptest.NewRequest(http.MethodPost, "/v1/publish/t", strings.NewReader(tc.body))
			for _, kv := range tc.headers {
				if kv[0] == "Content-Type" {
					req.Header.Set(kv[0], kv[1])
					continue
				}
				req.Header.Add(kv[0], kv[1])
			}
			rec := httptest.NewRecorder()
			newTestAPI(pub, "").ServeHTTP(rec, req)
			var body map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body is not JSON: %s", rec.Body)
			}
			if rec.Code != tc.wantStatus || body["code"] != tc.wantCode || !strings.Contains(body["error"], tc.wantErr) {
				t.Fatalf("got %d %v, want %d %s with an error containing %q", rec.Code, body, tc.wantStatus, tc.wantCode, tc.wantErr)
			}
			if len(pub.events) != 0 {
				t.Fatal("a refused publish reached the publisher")
			}
		})
	}
}

// sameEvent reports the first field in which got differs from want.
func sameEvent(got, want *event.Event) error {
	for _, f := range []struct{ name, got, want string }{
		{"id", got.ID, want.ID}, {"source", got.Source, want.Source}, {"type", got.Type, want.Type},
		{"subject", got.Subject, want.Subject}, {"dataschema", got.DataSchema, want.DataSchema},
		{"content type", got.ContentType, want.ContentType}, {"data", string(got.Data), string(want.Data)},
		{"traceparent", got.TraceParent, want.TraceParent}, {"tracestate", got.TraceState, want.TraceState},
		{"idempotency key", got.IdempotencyKey, want.IdempotencyKey},
		{"extensions", fmt.Sprint(got.Extensions), fmt.Sprint(want.Extensions)},
	} {
		if f.got != f.want {
			return fmt.Errorf("%s: got %q, want %q", f.name, f.got, f.want)
		}
	}
	if !got.Time.Equal(want.Time) {
		return fmt.Errorf("time: got %v, want %v", got.Time, want.Time)
	}
	return nil
}
