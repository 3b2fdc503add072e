package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// The CloudEvents SDK for Go is the independent implementation these tests
// hold the sidecar to: it produces the publish requests and parses what
// the webhook receives. One gap of the SDK's (v2.16.2, cloudevents/sdk-go
// issue 1331): it neither percent-encodes header values when it writes nor
// decodes them when it reads, which the HTTP binding §3.1.3.2 requires. So
// the SDK's publish requests carry raw UTF-8 in ce-* headers (the sidecar
// accepts that), and the tests percent-decode each delivered ce-* header
// with net/url before handing the request to the SDK, as a conforming
// receiver does.

// sdkEvent is a CloudEvent with every kind of attribute: a subject and an
// extension outside ASCII, a value with a bare '%' and quotes (which the
// SDK sends unencoded), a time with a zone and nanoseconds, a dataschema,
// and string, integer and boolean extensions.
func sdkEvent(t *testing.T, id string, data []byte) cloudevents.Event {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetSource("https://fogis.example/match-list-processor")
	e.SetType("match_updates")
	e.SetSubject("Malmö")
	e.SetTime(time.Date(2026, 5, 17, 15, 0, 0, 123456789, time.FixedZone("CEST", 2*3600)))
	e.SetDataSchema("https://fogis.example/schemas/match/v3.json")
	e.SetExtension("region", "Skåne län")
	e.SetExtension("note", `50% off, "quoted"`)
	e.SetExtension("attempt", 3)
	e.SetExtension("urgent", true)
	if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
		t.Fatal(err)
	}
	if err := e.Validate(); err != nil {
		t.Fatalf("the test's own event is invalid: %v", err)
	}
	return e
}

// sdkPublish has the SDK write e into a publish request (structured or
// binary mode) for url, sends it, and returns the status and answer.
func sdkPublish(t *testing.T, url string, e cloudevents.Event, structured bool) (int, receipt) {
	t.Helper()
	ctx := binding.WithForceBinary(context.Background())
	if structured {
		ctx = binding.WithForceStructured(context.Background())
	}
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		t.Fatalf("SDK WriteRequest: %v", err)
	}
	if structured != (req.Header.Get("Content-Type") == cloudevents.ApplicationCloudEventsJSON) {
		t.Fatalf("SDK wrote Content-Type %q; want structured=%v", req.Header.Get("Content-Type"), structured)
	}
	return doPublish(t, req)
}

func doPublish(t *testing.T, req *http.Request) (int, receipt) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r receipt
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("publish answered %d with non-JSON %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, r
}

// wireSafe matches a header value the HTTP binding §3.1.3.2 allows on the
// wire: printable ASCII without space, '"', or a '%' that starts no escape.
var wireSafe = regexp.MustCompile(`^(?:[\x21\x23\x24\x26-\x7e]|%[0-9A-F]{2})*$`)

// sdkParse percent-decodes the delivered ce-* headers (net/url, not the
// sidecar's code) and has the SDK parse the request as a binary-mode
// CloudEvent. Every ce-* value must be wire-safe as delivered.
func sdkParse(t *testing.T, r received) *cloudevents.Event {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/manual-sync", bytes.NewReader(r.Body))
	for k, vs := range r.Header {
		for _, v := range vs {
			if strings.HasPrefix(k, "Ce-") {
				if !wireSafe.MatchString(v) {
					t.Errorf("delivered %s: %q is not percent-encoded per §3.1.3.2", k, v)
				}
				dec, err := url.PathUnescape(v)
				if err != nil {
					t.Fatalf("delivered %s: %q does not percent-decode: %v", k, v, err)
				}
				v = dec
			}
			req.Header.Add(k, v)
		}
	}
	ev, err := binding.ToEvent(context.Background(), cehttp.NewMessageFromHttpRequest(req))
	if err != nil {
		t.Fatalf("the SDK cannot parse the delivery: %v (headers %v)", err, r.Header)
	}
	return ev
}

// sameEvent compares every attribute, the data byte for byte, and the
// extensions by their canonical string form (binary mode carries no types).
func sameEvent(t *testing.T, got, want *cloudevents.Event) {
	t.Helper()
	for _, a := range []struct{ name, got, want string }{
		{"specversion", got.SpecVersion(), want.SpecVersion()},
		{"id", got.ID(), want.ID()},
		{"source", got.Source(), want.Source()},
		{"type", got.Type(), want.Type()},
		{"subject", got.Subject(), want.Subject()},
		{"dataschema", got.DataSchema(), want.DataSchema()},
		{"datacontenttype", got.DataContentType(), want.DataContentType()},
	} {
		if a.got != a.want {
			t.Errorf("%s: got %q, want %q", a.name, a.got, a.want)
		}
	}
	if !got.Time().Equal(want.Time()) {
		t.Errorf("time: got %v, want %v", got.Time(), want.Time())
	}
	if !bytes.Equal(got.Data(), want.Data()) {
		t.Errorf("data: got %q, want %q", got.Data(), want.Data())
	}
	gotExt, wantExt := map[string]string{}, map[string]string{}
	for k, v := range got.Extensions() {
		gotExt[k], _ = types.Format(v)
	}
	for k, v := range want.Extensions() {
		wantExt[k], _ = types.Format(v)
	}
	if fmt.Sprint(gotExt) != fmt.Sprint(wantExt) {
		t.Errorf("extensions: got %v, want %v", gotExt, wantExt)
	}
}

// deliveryOf waits for the delivery whose ce-id decodes to id.
func deliveryOf(t *testing.T, rc *receiver, id string) received {
	t.Helper()
	var d received
	eventually.True(t, 10*time.Second, "delivery of "+id, func() bool {
		for _, r := range rc.all() {
			if got, err := url.PathUnescape(r.Header.Get("ce-id")); err == nil && got == id {
				d = r
				return true
			}
		}
		return false
	})
	return d
}

// TestCloudEventsSDKRoundTrip: events the CloudEvents SDK writes, in
// structured and in binary mode, reach the webhook with every attribute
// intact as the SDK reads them: source, time, subject (Malmö), dataschema,
// datacontenttype, string/integer/boolean extensions and the data's bytes.
func TestCloudEventsSDKRoundTrip(t *testing.T) {
	_, topic, rc, pub, _ := startPair(t, "ce-sdk")
	for _, tc := range []struct {
		name       string
		structured bool
		data       []byte
	}{
		// data_base64 in structured mode: the SDK encodes []byte data so.
		{"structured", true, []byte(`{"match_id": 7, "venue": "Malmö IP", "note": "\u00e5"}` + "\n")},
		{"binary", false, []byte(`{"match_id": 8, "venue": "Eleda Stadion"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := sdkEvent(t, "match-"+tc.name, tc.data)
			code, r := sdkPublish(t, pub.url("/v1/publish/"+topic), want, tc.structured)
			if code != http.StatusAccepted || r.ID != want.ID() {
				t.Fatalf("publish: got %d %+v, want 202 with id %s", code, r, want.ID())
			}
			d := deliveryOf(t, rc, want.ID())
			if got := d.Header.Get("ce-subject"); got != "Malm%C3%B6" {
				t.Errorf("ce-subject on the wire: got %q, want Malm%%C3%%B6", got)
			}
			sameEvent(t, sdkParse(t, d), &want)
			t.Logf("on the wire: ce-subject %s, ce-region %s, ce-note %s, ce-time %s", d.Header.Get("ce-subject"),
				d.Header.Get("ce-region"), d.Header.Get("ce-note"), d.Header.Get("ce-time"))
		})
	}
	// The same event in structured mode with JSON data ("data": {...}).
	want := sdkEvent(t, "match-structured-json", nil)
	if err := want.SetData(cloudevents.ApplicationJSON, map[string]any{"match_id": 9, "venue": "Ullevi åäö"}); err != nil {
		t.Fatal(err)
	}
	if code, r := sdkPublish(t, pub.url("/v1/publish/"+topic), want, true); code != http.StatusAccepted {
		t.Fatalf("publish: got %d %+v", code, r)
	}
	sameEvent(t, sdkParse(t, deliveryOf(t, rc, want.ID())), &want)
	t.Logf("measured: 3 SDK-written events (structured base64, binary, structured JSON) delivered with every attribute as the SDK reads them back; %d webhook requests", rc.count())
}

// TestCloudEventsFallbackKeepsAttributes: with Redis down, a route with a
// fallback spools the event and POSTs it to the calendar sidecar's inbox,
// which delivers it to the webhook: every attribute survives that path too
// (publisher → spool → fallback → peer inbox → webhook), the webhook-id is
// the one the stream path gives, and once Redis is back the spooled copy
// (the spool's record encoding) drains with every attribute.
func TestCloudEventsFallbackKeepsAttributes(t *testing.T) {
	redis, topic, rc, pub, _ := startFallbackPair(t, "ce-fallback")
	warm := pub.mustPublish(topic, []byte(`{"warm":1}`))
	deliveryOf(t, rc, warm.ID)
	redis.Kill()

	// An id that is no safe webhook-id: the peer's inbox checks the
	// signature over evt_…, and the webhook gets that same webhook-id.
	want := sdkEvent(t, "ordre-ö.2", []byte(`{"match_id": 10}`))
	req, _ := http.NewRequest(http.MethodPost, pub.url("/sync"), nil)
	if err := cehttp.WriteRequest(binding.WithForceBinary(context.Background()), binding.ToMessage(&want), req); err != nil {
		t.Fatal(err)
	}
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	req.Header.Set("tracestate", "fogis=p1,congo=t61rcWkgMzE")
	code, r := doPublish(t, req)
	if code != http.StatusAccepted || !r.Spooled || r.Fallback != "delivered" || r.ID != want.ID() {
		t.Fatalf("route publish with Redis dead: got %d %+v, want spooled, fallback delivered, id %s", code, r, want.ID())
	}
	d := deliveryOf(t, rc, want.ID())
	sameEvent(t, sdkParse(t, d), &want)
	if got := d.Header.Get("webhook-id"); got != webhookIDFor(want.ID()) {
		t.Errorf("webhook-id through the fallback: got %q, want %q", got, webhookIDFor(want.ID()))
	}
	if tp, ts := d.Header.Get("traceparent"), d.Header.Get("tracestate"); tp != req.Header.Get("traceparent") || ts != req.Header.Get("tracestate") {
		t.Errorf("trace context through the fallback: got %q %q, want %q %q", tp, ts, req.Header.Get("traceparent"), req.Header.Get("tracestate"))
	}

	// The spooled copy drains into the (new, empty) stream with its attributes.
	redis.Restart()
	rdb := redis.Client(t)
	key := "sidecar:{" + topic + "}"
	eventually.True(t, 30*time.Second, "spool drained", func() bool { return rdb.XLen(context.Background(), key).Val() == 1 })
	got := rdb.XRange(context.Background(), key, "-", "+").Val()[0].Values
	for field, wantV := range map[string]string{
		"id": want.ID(), "subject": "Malmö", "dataschema": want.DataSchema(), "source": want.Source(),
		"tracestate": "fogis=p1,congo=t61rcWkgMzE", "ext.region": "Skåne län", "ext.attempt": "3", "ext.urgent": "true",
		"ext.note": `50% off, "quoted"`,
	} {
		if got[field] != wantV {
			t.Errorf("drained entry field %s: got %v, want %q", field, got[field], wantV)
		}
	}
	t.Logf("measured: the fallback delivery carried every attribute; the drained stream entry has fields %v", got)
}

// TestCloudEventsBatchFromTheSDK: a batch the CloudEvents SDK marshals is
// a bulk publish: one receipt per event, in order, with the SDK's ids, and
// exactly those events in the stream.
func TestCloudEventsBatchFromTheSDK(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "ce-batch")
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	e1, e2 := sdkEvent(t, "b-1", []byte(`{"n":1}`)), sdkEvent(t, "b-2", []byte(`{"n":2}`))
	batch, err := json.Marshal([]cloudevents.Event{e1, e2})
	if err != nil {
		t.Fatal(err)
	}
	for i, ct := range []string{cloudevents.ApplicationCloudEventsBatchJSON, cloudevents.ApplicationCloudEventsBatchJSON + "; charset=utf-8"} {
		resp, err := http.Post(pub.url("/v1/publish/"+topic), ct, bytes.NewReader(batch))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Events []receipt `json:"events"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusAccepted || len(got.Events) != 2 || got.Events[0].ID != "b-1" || got.Events[1].ID != "b-2" ||
			got.Events[0].StreamID == "" || got.Events[1].StreamID == "" {
			t.Fatalf("%s: got %d %+v (%v), want 202 with receipts for b-1, b-2", ct, resp.StatusCode, got, err)
		}
		msgs := redis.Client(t).XRange(context.Background(), "sidecar:{"+topic+"}", "-", "+").Val()
		if len(msgs) != 2*(i+1) || msgs[2*i].Values["id"] != "b-1" || msgs[2*i+1].Values["data"] != `{"n":2}` {
			t.Fatalf("%s: stream holds %v", ct, msgs)
		}
	}
}

// TestCloudEventsRefusals: a specversion other than 1.0 (binary or
// structured mode) and an id that is not valid UTF-8 are refused with 400,
// nothing written.
func TestCloudEventsRefusals(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "ce-refuse")
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	binary := func(kv ...string) []string {
		return append([]string{"Content-Type", "application/json", "ce-specversion", "1.0", "ce-id", "r-1", "ce-type", "t", "ce-source", "/p"}, kv...)
	}
	for _, tc := range []struct {
		name     string
		body     string
		headers  []string
		wantCode string
	}{
		{"binary specversion 0.3", `{}`, binary("ce-specversion", "0.3"), "malformed_cloudevent"},
		{"binary specversion 9.9", `{}`, binary("ce-specversion", "9.9"), "malformed_cloudevent"},
		{"structured specversion 0.3", `{"specversion":"0.3","id":"r-1","type":"t","source":"/p"}`, []string{"Content-Type", "application/cloudevents+json"}, "malformed_cloudevent"},
		{"structured specversion 9.9", `{"specversion":"9.9","id":"r-1","type":"t","source":"/p"}`, []string{"Content-Type", "application/cloudevents+json"}, "malformed_cloudevent"},
		{"binary id with an encoded invalid UTF-8 byte", `{}`, binary("ce-id", "ordre-%FF"), "malformed_cloudevent"},
		{"binary id with a raw invalid UTF-8 byte", `{}`, binary("ce-id", "ordre-\xff"), "malformed_cloudevent"},
		{"plain publish id with a raw invalid UTF-8 byte", `{}`, []string{"ce-id", "ordre-\xc3"}, "invalid_header"},
		{"structured id with a raw invalid UTF-8 byte", "{\"specversion\":\"1.0\",\"id\":\"ordre-\xff\",\"type\":\"t\"}", []string{"Content-Type", "application/cloudevents+json"}, "malformed_cloudevent"},
		{"binary ce-time not RFC 3339", `{}`, binary("ce-time", "yesterday"), "malformed_cloudevent"},
		{"binary extension with a control character", `{}`, binary("ce-region", "sk%01ne"), "malformed_cloudevent"},
		{"binary extension name not [a-z0-9]", `{}`, binary("ce-my_ext", "x"), "malformed_cloudevent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, r := pub.publish(topic, []byte(tc.body), tc.headers...)
			if code != http.StatusBadRequest || r.Code != tc.wantCode || r.Error == "" {
				t.Fatalf("publish: got %d %+v, want 400 %s with a message", code, r, tc.wantCode)
			}
			t.Logf("refused: %s", r.Error)
		})
	}
	if n := redis.Client(t).XLen(context.Background(), "sidecar:{"+topic+"}").Val(); n != 0 {
		t.Fatalf("stream length: got %d, want 0 (nothing refused is written)", n)
	}
}

// webhookIDFor is the contract's webhook-id for a publisher's event id that
// is not already a safe token: evt_ + base32 (lowercase, no padding) of the
// first 20 bytes of SHA-256(id).
func webhookIDFor(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "evt_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:20]))
}

// TestWebhookIDIsSafeForStandardWebhooks: a publisher's id "ordre-ö.1"
// (non-ASCII, and a '.', which Standard Webhooks forbids in ids) is
// delivered with webhook-id evt_…: ASCII, no '.', the same on the retry,
// and the signature verifies with the Standard Webhooks reference library.
// ce-id carries the id itself, percent-encoded. A safe id is used as is.
func TestWebhookIDIsSafeForStandardWebhooks(t *testing.T) {
	_, topic, rc, pub, _ := startPair(t, "ce-whid", "SIDECAR_WEBHOOK_SECRET="+secret)
	rc.set(0, func(r received, n int) int {
		if n == 1 {
			return http.StatusInternalServerError // once per event: the retry must keep the webhook-id
		}
		return http.StatusOK
	})
	verifier, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	safeToken := regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	for _, tc := range []struct{ id, wantWebhookID, wantCEID string }{
		{"ordre-ö.1", webhookIDFor("ordre-ö.1"), "ordre-%C3%B6.1"},
		{"match-7_v3", "match-7_v3", "match-7_v3"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			ce := fmt.Sprintf(`{"specversion":"1.0","id":%q,"type":"order.created","source":"/shop","data":{"order":1}}`, tc.id)
			r := pub.mustPublish(topic, []byte(ce), "Content-Type", "application/cloudevents+json")
			if r.ID != tc.id {
				t.Fatalf("receipt id: got %q, want %q", r.ID, tc.id)
			}
			var got []received
			eventually.True(t, 10*time.Second, "two attempts of "+tc.id, func() bool {
				got = got[:0]
				for _, d := range rc.all() {
					if id, _ := url.PathUnescape(d.Header.Get("ce-id")); id == tc.id {
						got = append(got, d)
					}
				}
				return len(got) == 2
			})
			for i, d := range got {
				whid := d.Header.Get("webhook-id")
				if whid != tc.wantWebhookID || !safeToken.MatchString(whid) {
					t.Errorf("attempt %d webhook-id: got %q, want %q (ASCII, no '.')", i+1, whid, tc.wantWebhookID)
				}
				if err := verifier.Verify(d.Body, d.Header); err != nil {
					t.Errorf("attempt %d: the Standard Webhooks library does not verify the signature: %v", i+1, err)
				}
				if raw := d.Header.Get("ce-id"); raw != tc.wantCEID {
					t.Errorf("attempt %d ce-id on the wire: got %q, want %q", i+1, raw, tc.wantCEID)
				}
			}
			if a, b := got[0].Header.Get("Sidecar-Attempt"), got[1].Header.Get("Sidecar-Attempt"); a != "1" || b != "2" {
				t.Errorf("attempts: got %s, %s, want 1, 2", a, b)
			}
			t.Logf("id %q: webhook-id %s, ce-id on the wire %s, signature verified on both attempts", tc.id, got[0].Header.Get("webhook-id"), got[0].Header.Get("ce-id"))
		})
	}
}

// TestTraceContextForwarded: the hop's traceparent and tracestate reach the
// webhook unchanged; a structured event's traceparent attribute (the
// CloudEvents distributed-tracing extension) is delivered as ce-traceparent
// and never becomes the traceparent header.
func TestTraceContextForwarded(t *testing.T) {
	_, topic, rc, pub, _ := startPair(t, "ce-trace")
	const (
		hopParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		hopState  = "fogis=p1,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
		ceParent  = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		ceState   = "origin=shop"
	)
	plain := pub.mustPublish(topic, []byte(`{"m":1}`), "traceparent", hopParent, "tracestate", hopState)
	d := deliveryOf(t, rc, plain.ID)
	if tp, ts := d.Header.Get("traceparent"), d.Header.Get("tracestate"); tp != hopParent || ts != hopState {
		t.Errorf("plain publish: got traceparent %q tracestate %q, want %q %q", tp, ts, hopParent, hopState)
	}

	structured := fmt.Sprintf(`{"specversion":"1.0","id":"traced-1","type":"t","source":"/p","traceparent":%q,"tracestate":%q,"data":{"m":2}}`, ceParent, ceState)
	pub.mustPublish(topic, []byte(structured), "Content-Type", "application/cloudevents+json")
	d = deliveryOf(t, rc, "traced-1")
	if got := d.Header.Get("ce-traceparent"); got != ceParent {
		t.Errorf("ce-traceparent: got %q, want %q", got, ceParent)
	}
	if got := d.Header.Get("ce-tracestate"); got != ceState {
		t.Errorf("ce-tracestate: got %q, want %q", got, ceState)
	}
	if got := d.Header.Values("traceparent"); len(got) != 0 {
		t.Errorf("traceparent header: got %q, want none (the event's attribute is not the hop's)", got)
	}

	both := fmt.Sprintf(`{"specversion":"1.0","id":"traced-2","type":"t","source":"/p","traceparent":%q,"data":{"m":3}}`, ceParent)
	pub.mustPublish(topic, []byte(both), "Content-Type", "application/cloudevents+json", "traceparent", hopParent, "tracestate", hopState)
	d = deliveryOf(t, rc, "traced-2")
	if tp, ts, ce := d.Header.Get("traceparent"), d.Header.Get("tracestate"), d.Header.Get("ce-traceparent"); tp != hopParent || ts != hopState || ce != ceParent {
		t.Errorf("both: got traceparent %q tracestate %q ce-traceparent %q, want %q %q %q", tp, ts, ce, hopParent, hopState, ceParent)
	}
}
