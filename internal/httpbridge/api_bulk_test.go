package httpbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// fakeBulk records bulk publishes; fail[i] refuses event i with that code.
type fakeBulk struct {
	fakePublisher
	calls int
	got   []*event.Event
	fail  map[int]string
}

func (f *fakeBulk) PublishBatch(_ context.Context, topic string, evs []*event.Event) ([]event.Receipt, []error) {
	f.calls++
	f.got = evs
	rcs, errs := make([]event.Receipt, len(evs)), make([]error, len(evs))
	for i, ev := range evs {
		if c, ok := f.fail[i]; ok {
			errs[i] = codedErr(c)
			continue
		}
		rcs[i] = event.Receipt{ID: ev.ID, Topic: topic, StreamID: fmt.Sprintf("1-%d", i), Spooled: i == 2}
	}
	return rcs, errs
}

type bulkAnswer struct {
	Events []bulkItem `json:"events"`
	Error  string     `json:"error"`
	Code   string     `json:"code"`
	Index  *int       `json:"index"`
}

func postBulk(t *testing.T, pub Publisher, ct, body string, headers map[string]string) (int, bulkAnswer) {
	t.Helper()
	h := map[string]string{"Content-Type": ct}
	for k, v := range headers {
		h[k] = v
	}
	rec := do(newTestAPI(pub, ""), http.MethodPost, "/v1/publish/orders", body, h)
	var a bulkAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatalf("body is not JSON: %s", rec.Body)
	}
	return rec.Code, a
}

func TestBulkPublishNDJSON(t *testing.T) {
	pub := &fakeBulk{}
	code, a := postBulk(t, pub, "application/x-ndjson", "{\"n\":0}\n\n{\"n\":1}\r\n{\"n\":2}\n", map[string]string{
		"Idempotency-Key": "req-7", "Partition-Key": "match-9", "ce-type": "match.updated"})
	if code != http.StatusAccepted || len(a.Events) != 3 || pub.calls != 1 {
		t.Fatalf("got %d %+v after %d calls", code, a, pub.calls)
	}
	for i, ev := range pub.got {
		if string(ev.Data) != fmt.Sprintf(`{"n":%d}`, i) || ev.IdempotencyKey != fmt.Sprintf("req-7#%d", i) ||
			ev.PartitionKey() != "match-9" || ev.Type != "match.updated" || ev.Source != "processor" || ev.ContentType != "application/json" {
			t.Fatalf("event %d: %+v", i, ev)
		}
		if a.Events[i].ID != ev.ID || a.Events[i].StreamID != fmt.Sprintf("1-%d", i) {
			t.Fatalf("receipt %d: %+v", i, a.Events[i])
		}
	}
	if !a.Events[2].Spooled || a.Events[2].StreamID == "" {
		t.Fatalf("spooled receipt: %+v", a.Events[2])
	}
}

func TestBulkPublishRefusals(t *testing.T) {
	ce := func(id string) string { return `{"specversion":"1.0","id":"` + id + `","type":"t","data":{}}` }
	many := strings.Repeat("{}\n", MaxBulkEvents+1)
	for _, tc := range []struct {
		name, ct, body string
		headers        map[string]string
		status         int
		code           string
		index          int // -1: none
	}{
		{"bad event at 1", "application/cloudevents-batch+json", "[" + ce("a") + `,{"specversion":"1.0","type":"t"}]`, nil, 400, "malformed_cloudevent", 1},
		{"not an array", "application/cloudevents-batch+json", ce("a"), nil, 400, "malformed_batch", -1},
		{"empty batch", "application/cloudevents-batch+json", "[]", nil, 400, "empty_batch", -1},
		{"empty ndjson", "application/x-ndjson", "\n\n", nil, 400, "empty_batch", -1},
		{"bad line", "application/x-ndjson", "{}\nnot json\n", nil, 400, "malformed_event", 1},
		{"too many", "application/x-ndjson", many, nil, 413, "too_many_events", -1},
		{"event too large", "application/x-ndjson", "{}\n\"" + strings.Repeat("x", 300) + "\"\n", nil, 413, "too_large", 1},
		{"body too large", "application/x-ndjson", strings.Repeat("{}\n", 16*256/3+10), nil, 413, "too_large", -1},
		{"ce-id on ndjson", "application/x-ndjson", "{}\n", map[string]string{"ce-id": "x"}, 400, "invalid_header", -1},
		{"bad partition key", "application/x-ndjson", "{}\n", map[string]string{"Partition-Key": "a\x01b"}, 400, "invalid_header", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := &fakeBulk{}
			code, a := postBulk(t, pub, tc.ct, tc.body, tc.headers)
			if code != tc.status || a.Code != tc.code || a.Error == "" {
				t.Fatalf("got %d %+v, want %d %s", code, a, tc.status, tc.code)
			}
			if (tc.index < 0) != (a.Index == nil) || (a.Index != nil && *a.Index != tc.index) {
				t.Fatalf("index: got %v, want %d", a.Index, tc.index)
			}
			if pub.calls != 0 {
				t.Fatal("a refused bulk publish reached the publisher")
			}
		})
	}
}

// One event the publisher could not take: the answer says which, with
// the others' receipts, under the status a single publish of it would get.
func TestBulkPublishPartialFailure(t *testing.T) {
	for code, status := range map[string]int{"spool_full": 503, "redis_rejected": 502, "outcome_unknown": 504} {
		pub := &fakeBulk{fail: map[int]string{1: code}}
		got, a := postBulk(t, pub, "application/x-ndjson", "{}\n{}\n{}\n", nil)
		if got != status || a.Code != code || len(a.Events) != 3 || a.Events[1].Code != code || a.Events[1].StreamID != "" ||
			a.Events[0].StreamID == "" || a.Events[2].ID == "" || !strings.Contains(a.Error, "event 1") {
			t.Fatalf("%s: got %d %+v, want %d naming event 1", code, got, a, status)
		}
	}
}

// The hand-written bulk answer is byte for byte what encoding/json writes.
func TestBulkReceiptsAsEncodingJSON(t *testing.T) {
	items := []bulkItem{
		{ID: "01M8CNEDGPY6KM4H2ST52P3MND", Topic: "orders", StreamID: "1795721475611-0"},
		{ID: `a "quoted" <id>`, Topic: "orders", Spooled: true, Fallback: "delivered"},
		{ID: "ordre-ö.1", Topic: "orders", StreamID: "1-1"},
	}
	rec := httptest.NewRecorder()
	writeBulkReceipts(rec, items)
	want := httptest.NewRecorder()
	writeJSON(want, http.StatusAccepted, map[string]any{"events": items})
	if rec.Body.String() != want.Body.String() || rec.Code != 202 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q\nwant %q", rec.Code, rec.Body, want.Body)
	}
}
