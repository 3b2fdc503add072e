package httpbridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// The hand-written receipt is byte for byte what encoding/json writes,
// also for ids that encoding/json escapes.
func TestWriteReceiptMatchesEncodingJSON(t *testing.T) {
	for _, rc := range []publishResponse{
		{Receipt: event.Receipt{ID: "01JEXAMPLE0000000000000000", Topic: "orders", StreamID: "1700000000000-0"}},
		{Receipt: event.Receipt{ID: "ordre-1", Topic: "orders.eu:v1", Spooled: true}, Fallback: "delivered"},
		{Receipt: event.Receipt{ID: `<script>&"quoted"\back`, Topic: "t", StreamID: "1-1", Duplicate: true}},
		{Receipt: event.Receipt{ID: "Malmö \u2028 \u2029 ✓", Topic: "t"}},
		{Receipt: event.Receipt{ID: "ctl\x01\t\x7f", Topic: "t", Spooled: true}, Fallback: "failed"},
		{Receipt: event.Receipt{ID: "bad-utf8-\xff", Topic: "t"}},
		{},
	} {
		rec := httptest.NewRecorder()
		writeReceipt(rec, rc)
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(rc); err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusAccepted || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%q: status %d, Content-Type %q; want 202, application/json", rc.ID, rec.Code, rec.Header().Get("Content-Type"))
		}
		if got := rec.Body.String(); got != want.String() {
			t.Fatalf("receipt for %q:\n got %q\nwant %q", rc.ID, got, want.String())
		}
	}
}

// A Content-Type's kind is remembered, so a value is judged the same way
// on every request: an invalid one is refused each time, a structured
// CloudEvent is parsed as one each time.
func TestContentKindRememberedAndBounded(t *testing.T) {
	pub := &fakePublisher{}
	h := newTestAPI(pub, "")
	for i := range 3 {
		rec := do(h, http.MethodPost, "/v1/publish/orders", "x", map[string]string{"Content-Type": "text/"})
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"invalid_header"`) {
			t.Fatalf("request %d with an invalid Content-Type: %d %s; want 400 invalid_header", i, rec.Code, rec.Body)
		}
		rec = do(h, http.MethodPost, "/v1/publish/orders", `{"specversion":"1.0","id":"ce-`+fmt.Sprint(i)+`","type":"t","data":1}`,
			map[string]string{"Content-Type": "application/cloudevents+json; charset=utf-8"})
		if rec.Code != http.StatusAccepted || !strings.Contains(rec.Body.String(), `"id":"ce-`+fmt.Sprint(i)+`"`) {
			t.Fatalf("request %d, structured CloudEvent: %d %s; want 202 with its id", i, rec.Code, rec.Body)
		}
	}
	if len(pub.events) != 3 || pub.events[2].ID != "ce-2" {
		t.Fatalf("published %d events; want the 3 CloudEvents", len(pub.events))
	}
	// Past the bound, values are still judged right (parsed each time),
	// and the cache does not grow.
	for i := range maxContentKinds + 10 {
		contentKindOf(fmt.Sprintf("application/x-%d", i))
	}
	if n := contentKindsN.Load(); n > maxContentKinds {
		t.Fatalf("%d Content-Type values remembered; at most %d", n, maxContentKinds)
	}
	long := "application/json; p=" + strings.Repeat("x", maxContentKindLen)
	for _, tc := range []struct {
		ct   string
		want contentKind
	}{
		{"application/cloudevents-batch+json", contentKind{batch: true}},
		{"application/x-ndjson", contentKind{ndjson: true}},
		{"Application/CloudEvents+JSON", contentKind{structured: true}},
		{long, contentKind{}},
	} {
		if got := contentKindOf(tc.ct); got != tc.want {
			t.Fatalf("kind of %q past the bound: %+v; want %+v", tc.ct, got, tc.want)
		}
	}
	if k := contentKindOf("text/"); k.invalid == nil {
		t.Fatal(`"text/" past the bound: judged valid`)
	}
}

// BenchmarkWriteReceipt is the 202 answer of a publish.
func BenchmarkWriteReceipt(b *testing.B) {
	rc := publishResponse{Receipt: event.Receipt{ID: "01JEXAMPLE0000000000000000", Topic: "match.updated", StreamID: "1700000000000-0"}}
	b.ReportAllocs()
	for b.Loop() {
		writeReceipt(discardWriter{h: http.Header{}}, rc)
	}
}

type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}
