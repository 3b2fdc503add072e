package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
)

// The bodies the load generators send are what the sidecar and the sink
// must accept: exact size, valid JSON, and the seq and key the sink reads.
func TestBodies(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string
	}{{"plain", ""}, {"keyed", "k17"}} {
		t.Run(tc.name, func(t *testing.T) {
			b := keyedBody(1024, 42, tc.key)
			if len(b) != 1024 || !json.Valid(b) {
				t.Fatalf("got %d bytes, valid %v, want 1024 valid: %s", len(b), json.Valid(b), b)
			}
			if got := field(b, `"seq":`); got != 42 {
				t.Errorf("seq: got %d, want 42", got)
			}
			if got := strField(b, `"key":"`); got != tc.key {
				t.Errorf("key: got %q, want %q", got, tc.key)
			}
			want := fmt.Sprintf(`{"seq":42,"sent_ns":%d,`, field(b, `"sent_ns":`))
			if !bytes.HasPrefix(b, []byte(want)) {
				t.Errorf("got %.60s, want prefix %s", b, want)
			}
		})
	}
	lines := bytes.Split(bytes.TrimSuffix(bulkBody(ndjson, 256, 1, 100, nil), []byte("\n")), []byte("\n"))
	for i, l := range lines {
		if !json.Valid(l) || field(l, `"seq":`) != int64(i+1) {
			t.Fatalf("ndjson line %d: %s", i, l)
		}
	}
	if len(lines) != 100 {
		t.Errorf("ndjson: got %d lines, want 100", len(lines))
	}
	var batch []struct {
		ID           string          `json:"id"`
		PartitionKey string          `json:"partitionkey"`
		Data         json.RawMessage `json:"data"`
	}
	raw := bulkBody(ceBatch, 256, 1, 3, func(seq int64) string { return fmt.Sprintf("k%d", seq%2) })
	if err := json.Unmarshal(raw, &batch); err != nil || len(batch) != 3 {
		t.Fatalf("batch: %v, %d members: %s", err, len(batch), raw)
	}
	for i, m := range batch {
		if m.ID != fmt.Sprintf("bench-%d", i+1) || m.PartitionKey != strField(m.Data, `"key":"`) || field(m.Data, `"seq":`) != int64(i+1) {
			t.Errorf("member %d: got id %s key %s data %.40s", i, m.ID, m.PartitionKey, m.Data)
		}
	}
}

// The sink counts every event of a batch and flags a key's seq arriving
// below one already delivered; a redelivery is a duplicate, not disorder.
func TestSinkRecord(t *testing.T) {
	st := &sinkState{}
	st.clear()
	send := func(ctype, body string) {
		r := httptest.NewRequest("POST", "/hook", strings.NewReader(body))
		r.Header.Set("Content-Type", ctype)
		r.Header.Set("Sidecar-Batch-Size", "2")
		r.Header.Set("webhook-id", "batch_abc")
		st.record(r, []byte(body))
	}
	send("application/cloudevents-batch+json", `[{"data":{"seq":1,"sent_ns":1,"key":"a"}},{"data_base64":"eyJzZXEiOjMsInNlbnRfbnMiOjEsImtleSI6ImEifQ=="}]`)
	send("application/json", `{"seq":2,"sent_ns":1,"key":"a"}`) // after 3: out of order
	send("application/json", `{"seq":3,"sent_ns":1,"key":"a"}`) // redelivery
	send("application/json", `{"seq":4,"sent_ns":1,"key":"b"}`)
	if len(st.seen) != 4 || st.seen[3] != 2 || st.ooo != 1 || st.requests != 4 || st.bad != 0 {
		t.Errorf("got seen %v ooo %d requests %d bad %d, want 4 seqs (3 twice), 1 out of order, 4 requests, 0 bad", st.seen, st.ooo, st.requests, st.bad)
	}
}
