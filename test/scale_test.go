package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
	goredis "github.com/redis/go-redis/v9"
)

// Issue 12 acceptance: bulk publish (CloudEvents batch and NDJSON),
// partitioned topics, per-key ordering and batched delivery, each through
// the real binary, a real redis-server (or a six-node Cluster) and a real
// webhook receiver.

const (
	ctBatch  = "application/cloudevents-batch+json"
	ctNDJSON = "application/x-ndjson"
)

// bulkAnswer is the bulk publish API's answer: receipts in request order,
// or an error naming the 0-based index of the event that failed validation.
type bulkAnswer struct {
	Events []receipt `json:"events"`
	Error  string    `json:"error"`
	Code   string    `json:"code"`
	Index  *int      `json:"index"`
}

// postBulk POSTs a bulk publish and decodes the answer; headers are
// name, value pairs.
func postBulk(t *testing.T, s *sidecar, topic, contentType string, payload []byte, headers ...string) (int, bulkAnswer) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url("/v1/publish/"+topic), bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := publishClient.Do(req)
	if err != nil {
		t.Fatalf("bulk publish: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a bulkAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("bulk publish answered %d with non-JSON %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, a
}

// runTag is a short random tag that keeps one run's event ids apart.
func runTag() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// structuredData is event i's JSON data: compact, with non-ASCII text, so
// any re-encoding on the way shows.
func structuredData(i int) []byte {
	return fmt.Appendf(nil, `{"i":%d,"venue":"Ullevi åäö","nested":{"a":[1,2,%d]}}`, i, i)
}

// structuredEvent is a structured CloudEvent with id and structuredData(i).
func structuredEvent(id string, i int) []byte {
	return fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"type":"scale.test","source":"/scale","datacontenttype":"application/json","data":%s}`, id, structuredData(i))
}

// jsonArray joins encoded JSON values into an array.
func jsonArray(items [][]byte) []byte {
	return append(append([]byte("["), bytes.Join(items, []byte(","))...), ']')
}

// streamIDLess orders two Redis stream ids ("ms-seq").
func streamIDLess(t *testing.T, a, b string) bool {
	t.Helper()
	parse := func(id string) (uint64, uint64) {
		ms, seq, ok := strings.Cut(id, "-")
		m, err1 := strconv.ParseUint(ms, 10, 64)
		s, err2 := strconv.ParseUint(seq, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			t.Fatalf("stream id %q is not <ms>-<seq>", id)
		}
		return m, s
	}
	am, as := parse(a)
	bm, bs := parse(b)
	return am < bm || (am == bm && as < bs)
}

// requireDirectReceipts checks a bulk 202: one receipt per id, in order,
// naming the topic, each written to the stream at an ascending stream id.
func requireDirectReceipts(t *testing.T, got []receipt, topic string, wantIDs []string) {
	t.Helper()
	if len(got) != len(wantIDs) {
		t.Fatalf("receipts: got %d, want %d", len(got), len(wantIDs))
	}
	for i, r := range got {
		if wantIDs[i] != "" && r.ID != wantIDs[i] {
			t.Fatalf("receipt %d: got id %q, want %q (request order)", i, r.ID, wantIDs[i])
		}
		if r.ID == "" || r.Topic != topic || r.StreamID == "" || r.Spooled {
			t.Fatalf("receipt %d: got %+v, want id, topic %q and a stream_id", i, r, topic)
		}
		if i > 0 && !streamIDLess(t, got[i-1].StreamID, r.StreamID) {
			t.Fatalf("receipt %d: stream_id %s not after %s, want ascending", i, r.StreamID, got[i-1].StreamID)
		}
	}
}

func xlen(t *testing.T, rdb goredis.Cmdable, key string) int64 {
	t.Helper()
	n, err := rdb.XLen(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("XLEN %s: %v", key, err)
	}
	return n
}

// settledWith publishes a marker and waits for it: the subscriber reads
// in stream order, so whatever a request wrote before it has been
// delivered by then. It returns the marker's id.
func settledWith(t *testing.T, pub *sidecar, rc *receiver, topic string) string {
	t.Helper()
	id := pub.mustPublish(topic, []byte(`{"marker":true}`)).ID
	eventually.True(t, 20*time.Second, "the marker's delivery", func() bool {
		return slices.Contains(ids(rc.all()), id)
	})
	return id
}

// TestScaleBulkPublishCloudEventsBatch: 100 structured events in one
// request get 100 receipts in order; the webhook gets all 100, in order,
// data bytes unchanged; the same request again with its Idempotency-Key
// answers the same receipts and writes nothing; one invalid event refuses
// the whole request naming its index.
func TestScaleBulkPublishCloudEventsBatch(t *testing.T) {
	redis, topic, rc, pub, _ := startPair(t, "bulk-ce")
	rdb := redis.Client(t)
	const n = 100
	tag := runTag()
	var wantIDs []string
	var events [][]byte
	for i := range n {
		id := fmt.Sprintf("bulk-%s-%03d", tag, i)
		wantIDs = append(wantIDs, id)
		events = append(events, structuredEvent(id, i))
	}
	batch := jsonArray(events)
	idem := "bulk-" + tag

	start := time.Now()
	code, first := postBulk(t, pub, topic, ctBatch, batch, "Idempotency-Key", idem)
	took := time.Since(start)
	if code != http.StatusAccepted {
		t.Fatalf("bulk publish: got %d %+v, want 202", code, first)
	}
	requireDirectReceipts(t, first.Events, topic, wantIDs)

	eventually.True(t, 30*time.Second, "100 deliveries", func() bool { return rc.count() >= n })
	got := rc.all()
	for i := range n {
		r := got[i]
		if id := r.Header.Get("webhook-id"); id != wantIDs[i] {
			t.Fatalf("delivery %d: got webhook-id %s, want %s (order)", i, id, wantIDs[i])
		}
		if ce := r.Header.Get("ce-id"); ce != wantIDs[i] {
			t.Fatalf("delivery %d: got ce-id %q, want %q", i, ce, wantIDs[i])
		}
		if !bytes.Equal(r.Body, structuredData(i)) {
			t.Fatalf("delivery %d: got body %q, want %q", i, r.Body, structuredData(i))
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("delivery %d: got Content-Type %q, want application/json", i, ct)
		}
	}

	// The same request again: a client retrying after a lost answer.
	code, again := postBulk(t, pub, topic, ctBatch, batch, "Idempotency-Key", idem)
	if code != http.StatusAccepted {
		t.Fatalf("bulk retry: got %d %+v, want 202", code, again)
	}
	if len(again.Events) != n {
		t.Fatalf("bulk retry: got %d receipts, want %d", len(again.Events), n)
	}
	for i := range n {
		if again.Events[i].ID != first.Events[i].ID || again.Events[i].StreamID != first.Events[i].StreamID {
			t.Fatalf("bulk retry receipt %d: got %+v, want %+v (the same receipt)", i, again.Events[i], first.Events[i])
		}
	}
	if l := xlen(t, rdb, "sidecar:{"+topic+"}"); l != n {
		t.Fatalf("stream length after the retry: got %d, want %d", l, n)
	}
	marker := settledWith(t, pub, rc, topic)
	if got := ids(rc.all()); len(got) != n+1 || got[n] != marker {
		t.Fatalf("webhook after the retry: got %d deliveries, want %d and the marker (nothing twice)", len(got), n+1)
	}

	// Event 37 invalid: nothing of the request is written.
	bad := make([][]byte, n)
	for i := range n {
		bad[i] = structuredEvent(fmt.Sprintf("bad-%s-%03d", tag, i), i)
	}
	bad[37] = fmt.Appendf(nil, `{"specversion":"0.3","id":"bad-%s-037","type":"scale.test","source":"/scale","data":{}}`, tag)
	code, refused := postBulk(t, pub, topic, ctBatch, jsonArray(bad))
	if code != http.StatusBadRequest || refused.Index == nil || *refused.Index != 37 || refused.Code != "malformed_cloudevent" || refused.Error == "" {
		idx := "absent"
		if refused.Index != nil {
			idx = strconv.Itoa(*refused.Index)
		}
		t.Fatalf("bulk with event 37 invalid: got %d code %q index %s error %q, want 400 malformed_cloudevent index 37 with a message", code, refused.Code, idx, refused.Error)
	}
	if l := xlen(t, rdb, "sidecar:{"+topic+"}"); l != n+1 {
		t.Fatalf("stream length after the refused bulk: got %d, want %d (nothing written)", l, n+1)
	}
	t.Logf("measured: 100 structured events in one request answered in %v, delivered in order with bytes intact; idempotent retry wrote 0, delivered 0 more; invalid event 37 refused: %s",
		took.Round(time.Millisecond), refused.Error)
}

// TestScaleBulkPublishNDJSON: each NDJSON line is one event whose data is
// the line; an invalid line refuses the whole request naming its index;
// an empty batch is refused.
func TestScaleBulkPublishNDJSON(t *testing.T) {
	redis, topic, rc, pub, _ := startPair(t, "bulk-nd")
	rdb := redis.Client(t)
	const n = 50
	line := func(i int) []byte { return fmt.Appendf(nil, `{"line":%d,"text":"rad %d åäö \"x\""}`, i, i) }
	var lines [][]byte
	for i := range n {
		lines = append(lines, line(i))
	}
	payload := append(bytes.Join(lines, []byte("\n")), '\n')
	headers := []string{"ce-type", "scale.ndjson", "ce-subject", "lines", "Idempotency-Key", "nd-" + runTag()}
	code, a := postBulk(t, pub, topic, ctNDJSON, payload, headers...)
	if code != http.StatusAccepted {
		t.Fatalf("ndjson publish: got %d %+v, want 202", code, a)
	}
	requireDirectReceipts(t, a.Events, topic, make([]string, n))
	seen := map[string]bool{}
	for _, r := range a.Events {
		if seen[r.ID] {
			t.Fatalf("receipt id %s given twice, want a fresh id per line", r.ID)
		}
		seen[r.ID] = true
	}

	eventually.True(t, 30*time.Second, "50 deliveries", func() bool { return rc.count() >= n })
	for i, r := range rc.all()[:n] {
		if id := r.Header.Get("webhook-id"); id != a.Events[i].ID {
			t.Fatalf("delivery %d: got webhook-id %s, want %s (order)", i, id, a.Events[i].ID)
		}
		if !bytes.Equal(r.Body, line(i)) {
			t.Fatalf("delivery %d: got body %q, want line %d %q", i, r.Body, i, line(i))
		}
		for h, want := range map[string]string{"Content-Type": "application/json", "ce-type": "scale.ndjson", "ce-subject": "lines", "ce-source": "processor"} {
			if v := r.Header.Get(h); v != want {
				t.Fatalf("delivery %d: got %s %q, want %q", i, h, v, want)
			}
		}
	}

	// The same request again: the lines' generated ids are the first answer's.
	code, again := postBulk(t, pub, topic, ctNDJSON, payload, headers...)
	if code != http.StatusAccepted || len(again.Events) != n {
		t.Fatalf("ndjson retry: got %d with %d receipts, want 202 with %d", code, len(again.Events), n)
	}
	for i := range n {
		if again.Events[i].ID != a.Events[i].ID || again.Events[i].StreamID != a.Events[i].StreamID {
			t.Fatalf("ndjson retry receipt %d: got %+v, want %+v (the same receipt)", i, again.Events[i], a.Events[i])
		}
	}
	if l := xlen(t, rdb, "sidecar:{"+topic+"}"); l != n {
		t.Fatalf("stream length after the retry: got %d, want %d", l, n)
	}

	for _, tc := range []struct {
		name      string
		payload   string
		headers   []string
		wantCode  string
		wantIndex int // -1: no index expected
	}{
		{"invalid JSON on line 7", `{"a":0}` + "\n" + strings.Repeat(`{"a":1}`+"\n", 6) + `{"a":` + "\n" + `{"a":8}` + "\n", nil, "", 7},
		{"empty body", "", nil, "empty_batch", -1},
		{"only blank lines", "\n\n\n", nil, "empty_batch", -1},
		{"ce-id header", `{"a":1}` + "\n", []string{"ce-id", "one-id-for-all"}, "", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, a := postBulk(t, pub, topic, ctNDJSON, []byte(tc.payload), tc.headers...)
			if code != http.StatusBadRequest || a.Error == "" || a.Code == "" || (tc.wantCode != "" && a.Code != tc.wantCode) {
				t.Fatalf("got %d %+v, want 400 %s with a JSON error", code, a, tc.wantCode)
			}
			if tc.wantIndex >= 0 && (a.Index == nil || *a.Index != tc.wantIndex) {
				t.Fatalf("got index %v, want %d", a.Index, tc.wantIndex)
			}
			t.Logf("refused: %d %s: %s", code, a.Code, a.Error)
		})
	}
	code, over := postBulk(t, pub, topic, ctNDJSON, bytes.Repeat([]byte(`{"a":1}`+"\n"), 1001))
	if code != http.StatusRequestEntityTooLarge || over.Code != "too_many_events" {
		t.Fatalf("1001 lines: got %d %+v, want 413 too_many_events", code, over)
	}
	if l := xlen(t, rdb, "sidecar:{"+topic+"}"); l != n {
		t.Fatalf("stream length after the refusals: got %d, want %d (nothing written)", l, n)
	}
	t.Logf("measured: 50 NDJSON lines → 50 receipts, delivered in order, each body its line byte for byte; the retry with its Idempotency-Key returned the same 50 receipts and wrote 0; 1001 lines refused: %s", over.Error)
}

// TestScaleBulkPublishSpooledWhileRedisDown: with Redis dead a bulk is
// spooled like single publishes, and after Redis returns (empty) every
// event is delivered once, in the order the sidecar acknowledged them.
func TestScaleBulkPublishSpooledWhileRedisDown(t *testing.T) {
	redis, topic, rc, pub, _ := startPair(t, "bulk-spool")
	var want []string
	for i := range 5 {
		want = append(want, pub.mustPublish(topic, body(i)).ID)
	}
	// Delivered before the kill: Redis restarts empty, and what it loses
	// then is nothing the sidecar owes.
	eventually.True(t, 20*time.Second, "caught up before the kill", func() bool { return rc.count() == 5 })
	redis.Kill()
	for i := 5; i < 8; i++ {
		want = append(want, pub.mustPublishSpooled(topic, body(i)).ID)
	}
	tag := runTag()
	var bulkIDs []string
	var events [][]byte
	for i := range 20 {
		id := fmt.Sprintf("spooled-%s-%02d", tag, i)
		bulkIDs = append(bulkIDs, id)
		events = append(events, structuredEvent(id, i))
	}
	idem := "spooled-" + tag
	// Sent twice while Redis is dead (a client retrying a lost answer):
	// both copies are spooled, and the drain writes the events once.
	for try := 1; try <= 2; try++ {
		code, a := postBulk(t, pub, topic, ctBatch, jsonArray(events), "Idempotency-Key", idem)
		if code != http.StatusAccepted || len(a.Events) != 20 {
			t.Fatalf("bulk (try %d) with Redis dead: got %d %+v, want 202 with 20 receipts", try, code, a)
		}
		for i, r := range a.Events {
			if r.ID != bulkIDs[i] || !r.Spooled || r.Topic != topic {
				t.Fatalf("bulk (try %d) receipt %d with Redis dead: got %+v, want id %s, spooled", try, i, r, bulkIDs[i])
			}
		}
	}
	want = append(want, bulkIDs...)
	for i := 8; i < 11; i++ {
		want = append(want, pub.mustPublishSpooled(topic, body(i)).ID)
	}
	redis.Restart() // empty: no stream, no group
	for i := 11; i < 14; i++ {
		code, r := pub.publish(topic, body(i))
		if code != http.StatusAccepted || r.ID == "" {
			t.Fatalf("publish %d after the restart: got %d %+v, want 202", i, code, r)
		}
		want = append(want, r.ID)
	}
	start := time.Now()
	exactlyOnceInOrder(t, rc, want)
	got := rc.all()
	for i := range bulkIDs {
		if b := got[8+i].Body; !bytes.Equal(b, structuredData(i)) {
			t.Fatalf("spooled bulk event %d: got body %q, want %q", i, b, structuredData(i))
		}
	}
	drained := time.Since(start)

	// The same bulk once more, now that Redis has it: the same ids, nothing new.
	code, a := postBulk(t, pub, topic, ctBatch, jsonArray(events), "Idempotency-Key", idem)
	if code != http.StatusAccepted || len(a.Events) != 20 {
		t.Fatalf("bulk retry after the drain: got %d %+v, want 202 with 20 receipts", code, a)
	}
	for i, r := range a.Events {
		if r.ID != bulkIDs[i] {
			t.Fatalf("bulk retry after the drain, receipt %d: got %+v, want id %s", i, r, bulkIDs[i])
		}
	}
	marker := settledWith(t, pub, rc, topic)
	if got := ids(rc.all()); len(got) != len(want)+1 || got[len(want)] != marker {
		t.Fatalf("after the retry: got %d deliveries, want %d and the marker (nothing twice)", len(got), len(want)+1)
	}
	t.Logf("measured: 5 direct, 3 spooled, a bulk of 20 spooled (sent twice with one Idempotency-Key), 3 spooled, Redis restarted empty, 3 more: all %d delivered once in acknowledgement order, %v after the last publish; a third send after the drain wrote nothing",
		len(want), drained.Round(time.Millisecond))
}

// TestScaleBulkPublishPartialWhenSpoolFills: with Redis dead and a small
// spool, a bulk that does not fit is answered 503 spool_full, naming each
// event's fate in request order; exactly the accepted ones are delivered.
func TestScaleBulkPublishPartialWhenSpoolFills(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "bulk-full")
	rc := newReceiver(t)
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor", "SIDECAR_SPOOL_MAX_BYTES=4KiB")
	startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+subscriberConfig(t, topic, rc.url(), ""))
	redis.Kill()
	const n = 50
	tag := runTag()
	var bulkIDs []string
	var events [][]byte
	pad := strings.Repeat("x", 200)
	for i := range n {
		id := fmt.Sprintf("full-%s-%02d", tag, i)
		bulkIDs = append(bulkIDs, id)
		events = append(events, fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"type":"scale.full","source":"/scale","data":{"i":%d,"pad":%q}}`, id, i, pad))
	}
	code, a := postBulk(t, pub, topic, ctBatch, jsonArray(events))
	if code != http.StatusServiceUnavailable || a.Code != "spool_full" || a.Error == "" || len(a.Events) != n {
		t.Fatalf("bulk of %d × 250 bytes into a 4 KiB spool: got %d code %q error %q with %d entries, want 503 spool_full naming all %d events", n, code, a.Code, a.Error, len(a.Events), n)
	}
	accepted := 0
	for accepted < n && a.Events[accepted].Spooled {
		accepted++
	}
	for i, r := range a.Events {
		if r.ID != bulkIDs[i] {
			t.Fatalf("entry %d: got id %q, want %q (request order)", i, r.ID, bulkIDs[i])
		}
		if i >= accepted && (r.Spooled || r.StreamID != "" || r.Code == "" || r.Error == "") {
			t.Fatalf("entry %d after the first refused (%d): got %+v, want refused with error and code (order kept)", i, accepted, r)
		}
	}
	redis.Restart()
	// A marker after the drain: until the spool has room again it is
	// refused (nothing written), so it is retried.
	eventually.True(t, 20*time.Second, "the accepted events delivered", func() bool { return rc.count() >= accepted })
	var marker string
	eventually.True(t, 20*time.Second, "the marker accepted", func() bool {
		code, r := pub.publish(topic, []byte(`{"marker":true}`))
		marker = r.ID
		return code == http.StatusAccepted
	})
	want := append(slices.Clone(bulkIDs[:accepted]), marker)
	exactlyOnceInOrder(t, rc, want)
	t.Logf("measured: bulk of %d into a full spool: %d accepted (spooled), %d refused (%s: %s); after Redis returned exactly the %d accepted were delivered, in order",
		n, accepted, n-accepted, a.Events[n-1].Code, a.Events[n-1].Error, accepted)
}

// webhookIDSafeRE is an id Standard Webhooks takes as is.
var webhookIDSafeRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

// eventWebhookID is the contract's webhook-id of one event id.
func eventWebhookID(id string) string {
	if webhookIDSafeRE.MatchString(id) {
		return id
	}
	return webhookIDFor(id)
}

// batchWebhookID is the contract's webhook-id of a batch: batch_ + base32
// (lower case, no padding) of the first 20 bytes of SHA-256 over the
// events' webhook-ids joined by "\n".
func batchWebhookID(eventIDs []string) string {
	whs := make([]string, len(eventIDs))
	for i, id := range eventIDs {
		whs[i] = eventWebhookID(id)
	}
	sum := sha256.Sum256([]byte(strings.Join(whs, "\n")))
	return "batch_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:20]))
}

// batchPost is one batched delivery, checked against the contract.
type batchPost struct {
	received
	ids  []string
	data [][]byte            // JSON data compacted; data_base64 decoded
	attr []map[string]string // every string member but data and data_base64
}

// parseBatchPost checks one batched delivery's headers and body and
// returns its events; it fails the test on any breach of the contract.
func parseBatchPost(t *testing.T, r received, topic string) batchPost {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != ctBatch {
		t.Fatalf("batch POST: got Content-Type %q, want %s", ct, ctBatch)
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &items); err != nil {
		t.Fatalf("batch POST body is not a JSON array of objects: %v\n%s", err, r.Body)
	}
	if size := r.Header.Get("Sidecar-Batch-Size"); size != strconv.Itoa(len(items)) {
		t.Fatalf("batch POST: got Sidecar-Batch-Size %q, want %d (the array's length)", size, len(items))
	}
	if st := r.Header.Get("Sidecar-Topic"); st != topic {
		t.Fatalf("batch POST: got Sidecar-Topic %q, want %q", st, topic)
	}
	p := batchPost{received: r}
	for i, m := range items {
		attr := map[string]string{}
		for name, raw := range m {
			if name == "data" {
				continue
			}
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatalf("batch element %d: member %q is %s, want a string (attributes and extensions are strings)\n%s", i, name, raw, r.Body)
			}
			attr[name] = v
		}
		for _, name := range []string{"id", "source", "type", "time", "datacontenttype"} {
			if attr[name] == "" {
				t.Fatalf("batch element %d: no %s\n%s", i, name, r.Body)
			}
		}
		if attr["specversion"] != "1.0" {
			t.Fatalf("batch element %d: specversion %q, want 1.0", i, attr["specversion"])
		}
		if _, err := time.Parse(time.RFC3339Nano, attr["time"]); err != nil {
			t.Fatalf("batch element %d: time: %v", i, err)
		}
		raw, hasData := m["data"]
		b64, hasB64 := attr["data_base64"]
		var data []byte
		switch {
		case hasData && hasB64:
			t.Fatalf("batch element %d: both data and data_base64", i)
		case hasData:
			if !strings.HasPrefix(attr["datacontenttype"], "application/json") {
				t.Fatalf("batch element %d: data for content type %q, want data_base64", i, attr["datacontenttype"])
			}
			data = compactJSON(t, raw)
		case hasB64:
			var err error
			if data, err = base64.StdEncoding.DecodeString(b64); err != nil {
				t.Fatalf("batch element %d: data_base64: %v", i, err)
			}
			if strings.HasPrefix(attr["datacontenttype"], "application/json") && json.Valid(data) {
				t.Fatalf("batch element %d: valid JSON data as data_base64, want data as the JSON value", i)
			}
		}
		p.ids = append(p.ids, attr["id"])
		p.data = append(p.data, data)
		p.attr = append(p.attr, attr)
	}
	if len(items) > 0 {
		if wh, want := r.Header.Get("webhook-id"), batchWebhookID(p.ids); wh != want {
			t.Fatalf("batch POST: got webhook-id %q, want %q", wh, want)
		}
	}
	sig := signFor(t, r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Body)
	if !slices.Contains(strings.Fields(r.Header.Get("webhook-signature")), sig) {
		t.Fatalf("batch POST: webhook-signature %q does not verify (want %s among them)", r.Header.Get("webhook-signature"), sig)
	}
	return p
}

func compactJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestScaleBatchedDelivery: a subscription with batch: gets CloudEvents
// batches of at most max_events, in stream order, each event once; a
// retried batch is the same batch; a refused batch dead-letters each of
// its events.
func TestScaleBatchedDelivery(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "batch")
	rdb := redis.Client(t)
	rc := newReceiver(t)
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	// Group audit batches with ordering: key: each worker batches only its keys.
	audit := newReceiver(t)
	startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_WEBHOOK_SECRET="+secret,
		"SIDECAR_CONFIG="+subscriberConfig(t, topic, rc.url(), fmt.Sprintf(`    batch: {max_events: 10, max_wait: 100ms}
  - topic: %s
    group: audit
    url: %s
    ordering: key
    concurrency: 4
    batch: {max_events: 10, max_wait: 100ms}
`, topic, audit.url())))

	// Phase 1: 35 events, each acknowledged in batches of at most 10.
	const n = 35
	var want []string
	dataOf := map[string][]byte{}
	keyOf := map[string]string{}
	for i := range n {
		key := fmt.Sprintf("p%d", i%3)
		r := pub.mustPublish(topic, structuredData(i), "Partition-Key", key)
		want = append(want, r.ID)
		dataOf[r.ID], keyOf[r.ID] = structuredData(i), key
	}
	var posts []batchPost
	var got []string
	eventually.True(t, 30*time.Second, "35 events in batches", func() bool {
		posts, got = nil, nil
		for _, r := range rc.all() {
			posts = append(posts, parseBatchPost(t, r, topic))
			got = append(got, posts[len(posts)-1].ids...)
		}
		return len(got) >= n
	})
	if len(got) != n {
		t.Fatalf("got %d events in %d batches, want exactly %d", len(got), len(posts), n)
	}
	sizes := make([]int, len(posts))
	for i, p := range posts {
		sizes[i] = len(p.ids)
		if len(p.ids) == 0 || len(p.ids) > 10 {
			t.Fatalf("batch %d: %d events, want 1..10", i, len(p.ids))
		}
		for j, id := range p.ids {
			if !bytes.Equal(p.data[j], dataOf[id]) {
				t.Fatalf("batch %d event %s: got data %s, want %s", i, id, p.data[j], dataOf[id])
			}
			if pk := p.attr[j]["partitionkey"]; pk != keyOf[id] {
				t.Fatalf("batch %d event %s: got partitionkey %q, want %q (a string member)", i, id, pk, keyOf[id])
			}
			if ct := p.attr[j]["datacontenttype"]; ct != "application/json" {
				t.Fatalf("batch %d event %s: got datacontenttype %q, want application/json", i, id, ct)
			}
		}
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d across the batches: got %s, want %s (publish order, each once)", i, got[i], want[i])
		}
	}
	t.Logf("measured: 35 events in %d batches of sizes %v", len(posts), sizes)

	// Group audit: every event once, each key's events in publish order
	// across its batches.
	var auditSizes []int
	eventually.True(t, 30*time.Second, "35 events in audit's batches", func() bool {
		auditSizes, got = nil, nil
		for _, r := range audit.all() {
			p := parseBatchPost(t, r, topic)
			auditSizes = append(auditSizes, len(p.ids))
			got = append(got, p.ids...)
		}
		return len(got) >= n
	})
	if len(got) != n || slices.Max(auditSizes) > 10 {
		t.Fatalf("audit: got %d events in batches of sizes %v, want %d, at most 10 per batch", len(got), auditSizes, n)
	}
	for key := range map[string]bool{"p0": true, "p1": true, "p2": true} {
		var gotKey, wantKey []string
		for _, id := range got {
			if keyOf[id] == key {
				gotKey = append(gotKey, id)
			}
		}
		for _, id := range want {
			if keyOf[id] == key {
				wantKey = append(wantKey, id)
			}
		}
		if strings.Join(gotKey, ",") != strings.Join(wantKey, ",") {
			t.Fatalf("audit, key %s: got %v, want publish order %v, each once", key, gotKey, wantKey)
		}
	}
	t.Logf("measured: group audit (ordering key, concurrency 4): 35 events in batches of sizes %v, per key in order", auditSizes)

	// Phase 2: every batch answered 500 twice, then 200.
	rc.set(0, func(r received, n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	before := rc.count()
	tag := runTag()
	var retryIDs []string
	var events [][]byte
	// Every attribute a batch element carries: subject, dataschema, an
	// extension, and one event whose data is not JSON (data_base64).
	wantData := map[string][]byte{}
	for i := range 5 {
		id := fmt.Sprintf("retry-%s-%d", tag, i)
		retryIDs = append(retryIDs, id)
		ct, data := "application/json", structuredData(100+i)
		member := fmt.Sprintf(`"data":%s`, data)
		if i == 4 {
			ct, data = "text/plain; charset=utf-8", []byte("hej åäö\n")
			member = fmt.Sprintf(`"data":%q`, data)
		}
		wantData[id] = data
		events = append(events, fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"type":"scale.retry","source":"/scale","subject":"match/%d","dataschema":"https://fogis.example/schema/v1","region":"skåne","datacontenttype":%q,%s}`,
			id, i, ct, member))
	}
	if code, a := postBulk(t, pub, topic, ctBatch, jsonArray(events)); code != http.StatusAccepted {
		t.Fatalf("bulk publish: got %d %+v, want 202", code, a)
	}
	byID := map[string][]batchPost{}
	var order []string // webhook-ids, first attempt order
	eventually.True(t, 20*time.Second, "the retried batches acknowledged", func() bool {
		byID, order = map[string][]batchPost{}, nil
		acked := 0
		for _, r := range rc.all()[before:] {
			p := parseBatchPost(t, r, topic)
			wh := r.Header.Get("webhook-id")
			if len(byID[wh]) == 0 {
				order = append(order, wh)
			}
			byID[wh] = append(byID[wh], p)
			if len(byID[wh]) == 3 {
				acked += len(p.ids)
			}
		}
		return acked >= len(retryIDs)
	})
	var retried []string
	for _, wh := range order {
		tries := byID[wh]
		if len(tries) != 3 {
			t.Fatalf("batch %s: %d attempts, want 3 (500, 500, 200)", wh, len(tries))
		}
		for k, p := range tries {
			if !bytes.Equal(p.Body, tries[0].Body) {
				t.Fatalf("batch %s attempt %d: body differs from the first attempt's\n%s\n%s", wh, k+1, p.Body, tries[0].Body)
			}
			if a := p.Header.Get("Sidecar-Attempt"); a != strconv.Itoa(k+1) {
				t.Fatalf("batch %s attempt %d: Sidecar-Attempt %q", wh, k+1, a)
			}
		}
		retried = append(retried, tries[0].ids...)
		for j, id := range tries[0].ids {
			a := tries[0].attr[j]
			k := slices.Index(retryIDs, id)
			if a["subject"] != fmt.Sprintf("match/%d", k) || a["dataschema"] != "https://fogis.example/schema/v1" || a["region"] != "skåne" || a["type"] != "scale.retry" || a["source"] != "/scale" {
				t.Fatalf("batch element %s: got attributes %v, want subject match/%d, dataschema, region skåne, type and source as published", id, a, k)
			}
			if !bytes.Equal(tries[0].data[j], wantData[id]) {
				t.Fatalf("batch element %s: got data %q, want %q", id, tries[0].data[j], wantData[id])
			}
			if _, b64 := a["data_base64"]; b64 != (k == 4) {
				t.Fatalf("batch element %s: data_base64 present %v, want %v (only the text/plain event)", id, b64, k == 4)
			}
		}
	}
	if strings.Join(retried, ",") != strings.Join(retryIDs, ",") {
		t.Fatalf("retried batches carried %v, want %v", retried, retryIDs)
	}
	t.Logf("measured: 5 events in %d batch(es), each answered 500, 500, 200: same webhook-id and bytes on every attempt", len(order))

	// Phase 3: a batch answered 400 dead-letters each of its events.
	rc.set(0, func(received, int) int { return http.StatusBadRequest })
	var dlqIDs []string
	events = nil
	for i := range 4 {
		id := fmt.Sprintf("dlq-%s-%d", tag, i)
		dlqIDs = append(dlqIDs, id)
		events = append(events, structuredEvent(id, 200+i))
	}
	if code, a := postBulk(t, pub, topic, ctBatch, jsonArray(events)); code != http.StatusAccepted {
		t.Fatalf("bulk publish: got %d %+v, want 202", code, a)
	}
	dlq := "sidecar:{" + topic + "}:dlq"
	eventually.True(t, 20*time.Second, "4 dead letters", func() bool { return xlen(t, rdb, dlq) >= 4 })
	entries, err := rdb.XRange(context.Background(), dlq, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 4 {
		t.Fatalf("DLQ: got %d entries, want 4 (one per event of the refused batch)", len(entries))
	}
	for i, e := range entries {
		if e.Values["id"] != dlqIDs[i] {
			t.Fatalf("DLQ entry %d: got id %v, want %s (its own event id, in order)", i, e.Values["id"], dlqIDs[i])
		}
		if s, _ := e.Values["error"].(string); s == "" {
			t.Fatalf("DLQ entry %d: no error field: %v", i, e.Values)
		}
		if s, _ := e.Values["attempts"].(string); s == "" {
			t.Fatalf("DLQ entry %d: no attempts field: %v", i, e.Values)
		}
		if got := compactJSON(t, []byte(e.Values["data"].(string))); !bytes.Equal(got, structuredData(200+i)) {
			t.Fatalf("DLQ entry %d: data %s, want %s", i, got, structuredData(200+i))
		}
	}
	eventually.True(t, 10*time.Second, "nothing pending for the group", func() bool {
		p, err := rdb.XPending(context.Background(), "sidecar:{"+topic+"}", "calendar").Result()
		return err == nil && p.Count == 0
	})
	t.Logf("measured: a batch answered 400 → %d DLQ entries, each with its own id, error %q", len(entries), entries[0].Values["error"])
}

// keyedReceiver is a webhook that takes 20 ms per request and records,
// per partition key, how many requests were in flight together and the
// order they arrived in. It answers 503 to the first attempt of an event
// whose body says "fail":true.
type keyedReceiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	inflight map[string]int
	maxKey   map[string]int
	arrivals map[string][]string // key → webhook-ids, every attempt
	attempts map[string]int      // webhook-id → requests
	acked    map[string]int      // webhook-id → 2xx answers
	bodies   map[string][]byte
	total    int
	cur      int
	maxAll   int
	topics   map[string]int // Sidecar-Topic values
}

func newKeyedReceiver(t *testing.T) *keyedReceiver {
	k := &keyedReceiver{inflight: map[string]int{}, maxKey: map[string]int{}, arrivals: map[string][]string{},
		attempts: map[string]int{}, acked: map[string]int{}, bodies: map[string][]byte{}, topics: map[string]int{}}
	k.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		key, id := r.Header.Get("ce-partitionkey"), r.Header.Get("webhook-id")
		k.mu.Lock()
		k.inflight[key]++
		k.maxKey[key] = max(k.maxKey[key], k.inflight[key])
		k.cur++
		k.maxAll = max(k.maxAll, k.cur)
		k.arrivals[key] = append(k.arrivals[key], id)
		k.attempts[id]++
		fail := k.attempts[id] == 1 && bytes.Contains(b, []byte(`"fail":true`))
		k.bodies[id] = b
		k.topics[r.Header.Get("Sidecar-Topic")]++
		k.total++
		k.mu.Unlock()
		time.Sleep(20 * time.Millisecond) // the webhook's work: overlap must come from the sidecar
		k.mu.Lock()
		k.inflight[key]--
		k.cur--
		if !fail {
			k.acked[id]++
		}
		k.mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(k.srv.Close)
	return k
}

// ackedCount is how many different events were answered 2xx.
func (k *keyedReceiver) ackedCount() int { k.mu.Lock(); defer k.mu.Unlock(); return len(k.acked) }

// TestScalePerKeyOrdering: with ordering: key and concurrency 8, events of
// one key are never in flight together and arrive in publish order, while
// different keys are delivered in parallel; an event being retried holds
// back the later events of its key only.
func TestScalePerKeyOrdering(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "keyed")
	kr := newKeyedReceiver(t)
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	startSidecar(t, "calendar", "REDIS_URL="+redis.URL,
		"SIDECAR_CONFIG="+subscriberConfig(t, topic, kr.srv.URL+"/hook", "    ordering: key\n    concurrency: 8\n"))

	// Phase 1: 200 events over 10 keys, interleaved, every one answered 200.
	// Phase 2: 100 more, every fifth answered 503 once (one retry each).
	const n1, n2, keys = 200, 100, 10
	want := map[string][]string{}
	bodyOf := map[string][]byte{}
	publish := func(i int, b []byte) {
		key := fmt.Sprintf("key-%d", i%keys)
		r := pub.mustPublish(topic, b, "Partition-Key", key)
		want[key] = append(want[key], r.ID)
		bodyOf[r.ID] = b
	}
	start := time.Now()
	for i := range n1 {
		publish(i, body(i))
	}
	eventually.True(t, 30*time.Second, "200 deliveries", func() bool { return kr.ackedCount() >= n1 })
	elapsed := time.Since(start)
	kr.mu.Lock()
	phase1Max, phase1Total := kr.maxAll, kr.total
	kr.mu.Unlock()
	failing := 0
	for i := n1; i < n1+n2; i++ {
		fail := i%5 == 0
		if fail {
			failing++
		}
		publish(i, fmt.Appendf(nil, `{"i":%d,"fail":%t}`, i, fail))
	}
	eventually.True(t, 30*time.Second, "300 events acknowledged", func() bool { return kr.ackedCount() >= n1+n2 })
	// The last answers may still be on their way to the sidecar.
	eventually.True(t, 5*time.Second, "no request in flight", func() bool { kr.mu.Lock(); defer kr.mu.Unlock(); return kr.cur == 0 })

	kr.mu.Lock()
	defer kr.mu.Unlock()
	if phase1Total != n1 {
		t.Fatalf("phase 1: got %d deliveries, want exactly %d", phase1Total, n1)
	}
	if kr.total != n1+n2+failing {
		t.Fatalf("got %d requests, want %d (%d events, %d answered 503 once)", kr.total, n1+n2+failing, n1+n2, failing)
	}
	if len(kr.arrivals) != keys {
		var got []string
		for k := range kr.arrivals {
			got = append(got, k)
		}
		t.Fatalf("ce-partitionkey values: got %q, want key-0..key-%d", got, keys-1)
	}
	for key, ws := range want {
		// A retry follows its first attempt at once: nothing of the key in between.
		got := slices.Compact(slices.Clone(kr.arrivals[key]))
		if strings.Join(got, ",") != strings.Join(ws, ",") {
			t.Fatalf("key %s: arrival order %v, want publish order %v (a retry directly after its first attempt)", key, kr.arrivals[key], ws)
		}
		if kr.maxKey[key] > 1 {
			t.Fatalf("key %s: %d deliveries in flight together, want at most 1", key, kr.maxKey[key])
		}
	}
	for id, b := range bodyOf {
		if !bytes.Equal(kr.bodies[id], b) {
			t.Fatalf("event %s: got body %q, want %q", id, kr.bodies[id], b)
		}
		if kr.acked[id] != 1 {
			t.Fatalf("event %s: answered 2xx %d times, want once", id, kr.acked[id])
		}
	}
	if phase1Max <= 1 {
		t.Fatalf("at most %d deliveries in flight at once, want > 1 (different keys in parallel)", phase1Max)
	}
	if kr.topics[topic] != kr.total {
		t.Fatalf("Sidecar-Topic: got %v, want %q on all %d", kr.topics, topic, kr.total)
	}
	t.Logf("measured: 200 events over 10 keys, concurrency 8, webhook 20 ms: per key in flight ≤ 1 and in publish order; up to %d in flight at once; all delivered %v after the first publish; then 100 more with %d retried once: per key order kept, each acknowledged once",
		phase1Max, elapsed.Round(time.Millisecond), failing)
}

// partitionOf is the contract's partition of a key: FNV-1a 32-bit mod n.
func partitionOf(key string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// partitionTopic is the internal topic of partition k ("orders#3").
func partitionTopic(topic string, k int) string {
	if k == 0 {
		return topic
	}
	return fmt.Sprintf("%s#%d", topic, k)
}

// publishRaw POSTs a publish from any goroutine; headers are name, value
// pairs. err is a transport error: the sidecar did not answer.
func publishRaw(s *sidecar, topic, contentType string, payload []byte, headers ...string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, s.url("/v1/publish/"+topic), bytes.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := publishClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// publishKeyed publishes one event (body b) from any goroutine.
func publishKeyed(s *sidecar, topic string, b []byte, headers ...string) pacedOutcome {
	o := pacedOutcome{topic: topic, sent: time.Now()}
	o.code, b, o.err = publishRaw(s, topic, "application/json", b, headers...)
	if err := json.Unmarshal(b, &o.r); o.err == nil && err != nil && o.code/100 == 2 {
		o.err = fmt.Errorf("2xx with a non-JSON body %q", b)
	}
	o.done = time.Now()
	return o
}

// publishBulk publishes a CloudEvents batch from any goroutine and returns
// one outcome per event: on a partial failure the events that have a
// receipt (stream_id or spooled) count as accepted, the others as failed.
func publishBulk(s *sidecar, topic string, events [][]byte) []pacedOutcome {
	sent := time.Now()
	code, raw, err := publishRaw(s, topic, ctBatch, jsonArray(events))
	var a bulkAnswer
	if err == nil && json.Unmarshal(raw, &a) != nil && code/100 == 2 {
		err = fmt.Errorf("2xx with a non-JSON body %q", raw)
	}
	if err == nil && code/100 == 2 && len(a.Events) != len(events) {
		err = fmt.Errorf("2xx with %d receipts for %d events", len(a.Events), len(events))
	}
	outs := make([]pacedOutcome, len(events))
	for i := range outs {
		o := pacedOutcome{topic: topic, sent: sent, done: time.Now(), code: code, err: err}
		if i < len(a.Events) {
			o.r = a.Events[i]
			if o.r.StreamID != "" || o.r.Spooled {
				o.code = http.StatusAccepted // accepted even when a later event of the request failed
			}
		}
		outs[i] = o
	}
	return outs
}

// TestScalePartitionedTopicOnCluster: a topic of 8 partitions spreads over
// the Cluster's masters; under steady keyed load, killing the master with
// the most partitions loses no acknowledged event and breaks no key's
// order, and the webhook only ever sees the user topic.
func TestScalePartitionedTopicOnCluster(t *testing.T) {
	const (
		topic      = "orders"
		partitions = 8
		keys       = 20
		clients    = 4 // client g owns the keys k with k%clients == g: one key, one publisher, a defined order
		events     = 2000
		perClient  = 50 // publishes per second per client
		killAfter  = 800
		drain      = 30 * time.Second
	)
	c := redistest.StartCluster(t)
	cc := c.Client(t) // before the kill: WaitPromotion reloads it
	rc := newReceiver(t)
	topics := fmt.Sprintf("topics:\n  %s: {partitions: %d}\n", topic, partitions)
	sub := startSidecar(t, "calendar", "REDIS_URL="+c.URL, "SIDECAR_CONFIG="+writeConfig(t, fmt.Sprintf(`service: calendar
%ssubscriptions:
  - topic: %s
    url: %s
    start: earliest
    ordering: key
    concurrency: 4
    max_attempts: 1000000
    retry_for: 10m
    backoff: {initial: 20ms, max: 200ms}
`, topics, topic, rc.url())))
	pub := startSidecar(t, "processor", "REDIS_URL="+c.URL, "SIDECAR_CONFIG="+writeConfig(t, "service: processor\n"+topics))

	streamKey := func(k int) string { return "sidecar:{" + partitionTopic(topic, k) + "}" }
	perMaster := map[string][]int{}
	for k := range partitions {
		m := c.MasterFor(streamKey(k))
		perMaster[m] = append(perMaster[m], k)
	}
	if len(perMaster) < 2 {
		t.Fatalf("the %d partition streams are all on one master (%v), want them spread", partitions, perMaster)
	}
	victim := ""
	for m, ks := range perMaster {
		if victim == "" || len(ks) > len(perMaster[victim]) {
			victim = m
		}
	}
	keyOf := func(seq int) string { return fmt.Sprintf("cust-%02d", seq%keys) }
	hit := map[int]bool{}
	for k := range keys {
		hit[partitionOf(keyOf(k), partitions)] = true
	}
	t.Logf("partitions by master: %v; killing %s (partitions %v); the %d keys fall in %d of %d partitions", perMaster, victim, perMaster[victim], keys, len(hit), partitions)

	// The key reaches the sidecar three ways: client 0 sends bulks of 5
	// structured events with a partitionkey member, client 1 binary-mode
	// events with ce-partitionkey, the others the Partition-Key header.
	tag := runTag()
	publishSeqs := func(g int, seqs []int) []pacedOutcome {
		switch g {
		case 0:
			var evs [][]byte
			for _, seq := range seqs {
				evs = append(evs, fmt.Appendf(nil, `{"specversion":"1.0","id":"bulk-%s-%05d","type":"scale.order","source":"/scale","datacontenttype":"application/json","partitionkey":%q,"data_base64":%q}`,
					tag, seq, keyOf(seq), base64.StdEncoding.EncodeToString(body(seq))))
			}
			return publishBulk(pub, topic, evs)
		case 1:
			return []pacedOutcome{publishKeyed(pub, topic, body(seqs[0]), "ce-specversion", "1.0", "ce-id", fmt.Sprintf("bin-%s-%05d", tag, seqs[0]),
				"ce-type", "scale.order", "ce-source", "/scale", "ce-partitionkey", keyOf(seqs[0]))}
		default:
			return []pacedOutcome{publishKeyed(pub, topic, body(seqs[0]), "Partition-Key", keyOf(seqs[0]))}
		}
	}
	var mu sync.Mutex
	var outs []pacedOutcome
	sent, bulks := 0, 0
	var wg sync.WaitGroup
	start := time.Now()
	for g := range clients {
		wg.Go(func() {
			var mine []int
			for seq := g; seq < events; seq += clients {
				mine = append(mine, seq)
			}
			per := 1
			if g == 0 {
				per = 5
			}
			tick := time.NewTicker(time.Second * time.Duration(per) / perClient)
			defer tick.Stop()
			for i := 0; i < len(mine); i += per {
				<-tick.C // a slow answer drops ticks: the pace lowers, requests do not bunch up
				seqs := mine[i:min(i+per, len(mine))]
				res := publishSeqs(g, seqs)
				mu.Lock()
				for j := range res {
					res[j].seq = seqs[j]
				}
				outs = append(outs, res...)
				sent += len(res)
				if g == 0 {
					bulks++
				}
				mu.Unlock()
			}
		})
	}
	eventually.True(t, 60*time.Second, fmt.Sprintf("%d publishes answered", killAfter), func() bool { mu.Lock(); defer mu.Unlock(); return sent >= killAfter })
	killAt := time.Now()
	c.KillNode(victim)
	promoted, promotedAt := c.WaitPromotion(victim)
	t.Logf("master %s SIGKILLed %v into the load; replica %s promoted %v later",
		victim, killAt.Sub(start).Round(time.Millisecond), promoted, promotedAt.Sub(killAt).Round(time.Millisecond))
	wg.Wait()
	loadEnd := time.Now()

	waitAcknowledgedDelivered(rc, outs, drain)
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show
	var all []string
	for k := range partitions {
		all = append(all, streamEventIDs(t, cc, partitionTopic(topic, k))...)
	}
	f := tallyLoss(outs, rc, all)
	f.log(t, fmt.Sprintf("group calendar, 8 partitions, ordering key; %d of the events in %d bulk requests", bulks*5, bulks), loadEnd.Sub(start).Seconds())

	// Every partition stream exists, and holds only its keys' events.
	for k := range partitions {
		entries, err := cc.XRange(context.Background(), streamKey(k), "-", "+").Result()
		if err != nil {
			t.Fatalf("XRANGE %s: %v", streamKey(k), err)
		}
		if n, err := cc.Exists(context.Background(), streamKey(k)).Result(); err != nil || n != 1 {
			t.Errorf("stream %s: exists %d %v, want it created", streamKey(k), n, err)
		}
		for _, e := range entries {
			pk, _ := e.Values["ext.partitionkey"].(string)
			if pk == "" {
				t.Fatalf("event %v in %s has no ext.partitionkey, want the Partition-Key it was published with", e.Values["id"], streamKey(k))
			}
			if p := partitionOf(pk, partitions); p != k {
				t.Fatalf("event %v with key %q is in partition %d, want %d (FNV-1a mod %d)", e.Values["id"], pk, k, p, partitions)
			}
		}
	}

	// Per key, the first arrival of each acknowledged event follows publish order.
	seqOf := map[string]int{}
	for _, o := range outs {
		if o.acked() {
			seqOf[o.r.ID] = o.seq
			if o.r.Topic != topic {
				t.Fatalf("receipt %+v: topic %q, want the user topic %q", o.r, o.r.Topic, topic)
			}
		}
	}
	last := map[string]int{}
	seen := map[string]bool{}
	outOfOrder, dups, badTopic, badKey := 0, 0, 0, 0
	for _, r := range rc.all() {
		if r.Header.Get("Sidecar-Topic") != topic {
			badTopic++
		}
		id := r.Header.Get("webhook-id")
		seq, ok := seqOf[id]
		if !ok {
			continue
		}
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		key := keyOf(seq)
		if r.Header.Get("ce-partitionkey") != key {
			badKey++
		}
		if prev, ok := last[key]; ok && seq < prev {
			outOfOrder++
			if outOfOrder <= 3 {
				t.Logf("key %s: event seq %d arrived after seq %d", key, seq, prev)
			}
		}
		last[key] = max(last[key], seq)
	}
	t.Logf("measured: per key out of order %d, duplicate deliveries %d (at-least-once, allowed), wrong Sidecar-Topic %d, wrong ce-partitionkey %d",
		outOfOrder, dups, badTopic, badKey)
	f.checkStream(t)
	f.check(t, "calendar")
	if outOfOrder > 0 {
		t.Errorf("%d acknowledged events arrived before an earlier event of their key, want 0", outOfOrder)
	}
	if badTopic > 0 {
		t.Errorf("%d deliveries with a Sidecar-Topic other than %q, want 0", badTopic, topic)
	}
	if badKey > 0 {
		t.Errorf("%d deliveries without their ce-partitionkey, want 0", badKey)
	}

	// The subscriber reports its partitions' subscriptions running and caught up.
	var entries []statusSubscription
	eventually.True(t, 20*time.Second, "every orders subscription running with lag 0", func() bool {
		entries = nil
		var st struct {
			Subscriptions []statusSubscription `json:"subscriptions"`
		}
		if !getJSON(sub.url("/v1/status"), &st) {
			return false
		}
		for _, s := range st.Subscriptions {
			if strings.HasPrefix(s.Topic, topic) {
				entries = append(entries, s)
			}
		}
		for _, s := range entries {
			if !s.Running || s.Lag != 0 || s.Pending != 0 || s.Error != "" {
				return false
			}
		}
		return len(entries) > 0
	})
	var names []string
	for _, e := range entries {
		names = append(names, e.Topic+"/"+e.Group)
	}
	t.Logf("status: %d subscription entries for %s (%v), all running, lag 0, pending 0", len(entries), topic, names)
	slices.Sort(names)
	if len(entries) != 1 && len(slices.Compact(names)) != partitions {
		t.Errorf("status: entries %v for %s, want one, or one per partition (%d)", names, topic, partitions)
	}
}

// statusSubscription is what these tests read of one /v1/status subscription.
type statusSubscription struct {
	Topic   string `json:"topic"`
	Group   string `json:"group"`
	Running bool   `json:"running"`
	Lag     int64  `json:"lag"`
	Pending int64  `json:"pending"`
	Error   string `json:"error"`
}
