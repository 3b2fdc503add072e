package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// opsRecorder is an Observer that remembers what it was told.
type opsRecorder struct {
	mu  sync.Mutex
	ops map[string][2]int // operation → calls, entries
}

func (o *opsRecorder) AdminOperation(op string, entries int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.ops[op]
	o.ops[op] = [2]int{c[0] + 1, c[1] + entries}
}

func (o *opsRecorder) get(op string) [2]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ops[op]
}

// fixture is an admin API over a private Redis.
type fixture struct {
	t     *testing.T
	rdb   *redis.Client
	srv   *httptest.Server
	ops   *opsRecorder
	topic string
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	ops := &opsRecorder{ops: map[string][2]int{}}
	cfg.Observer = ops
	if cfg.Settle == 0 {
		cfg.Settle = time.Millisecond
	}
	srv := httptest.NewServer(New(rdb, cfg, zerolog.Nop()))
	t.Cleanup(srv.Close)
	return &fixture{t: t, rdb: rdb, srv: srv, ops: ops, topic: redistest.UniqueTopic(t, "admin")}
}

// call sends a request and decodes the JSON answer into out (when not nil);
// it returns the status and the raw body.
func (f *fixture) call(method, path string, body any, out any) (int, string) {
	f.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		f.t.Fatalf("%s %s: Content-Type %q, want application/json: %s", method, path, ct, raw)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			f.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return resp.StatusCode, string(raw)
}

// wantError checks an error answer's status and code.
func (f *fixture) wantError(method, path string, body any, status int, code string) {
	f.t.Helper()
	got, raw := f.call(method, path, body, nil)
	var e struct{ Error, Code string }
	_ = json.Unmarshal([]byte(raw), &e)
	if got != status || e.Code != code || e.Error == "" {
		f.t.Fatalf("%s %s: got %d %s, want %d code %q with a message", method, path, got, raw, status, code)
	}
}

func testEvent(i int) *event.Event {
	return &event.Event{ID: fmt.Sprintf("ev-%02d", i), Source: "processor", Type: "match_updates",
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), ContentType: "application/json",
		Data: fmt.Appendf(nil, `{"i":%d}`, i)}
}

// add appends event i at stream id sid ("*" = now) and returns the id.
func (f *fixture) add(sid string, ev *event.Event) string {
	f.t.Helper()
	id, err := f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream.Key(f.topic), ID: sid, Values: ev.Values()}).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// deadLetter writes a dead letter the way a subscriber does.
func (f *fixture) deadLetter(ev *event.Event, group string, attempts int, originalID string) string {
	f.t.Helper()
	vals := append(ev.Values(), "error", "webhook answered 400: \"no\"", "attempts", fmt.Sprint(attempts), "group", group, "original_id", originalID)
	id, err := f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream.DLQKey(f.topic), Values: vals}).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

func (f *fixture) group(name, start string) {
	f.t.Helper()
	if err := f.rdb.XGroupCreateMkStream(context.Background(), stream.Key(f.topic), name, start).Err(); err != nil {
		f.t.Fatal(err)
	}
}

func ids(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.StreamID
	}
	return out
}

func TestEventsPaging(t *testing.T) {
	f := newFixture(t, Config{})
	var all []string
	for i, sid := range []string{"1000-0", "1000-1", "2000-0", "3000-0", "3000-1", "4000-0", "5000-0"} {
		all = append(all, f.add(sid, testEvent(i)))
	}
	base := "/v1/topics/" + f.topic + "/events"

	// Forward, 3 a page, following next to the end.
	var got []string
	from, pages := "", 0
	for {
		var page eventsPage
		q := "?limit=3"
		if from != "" {
			q += "&from=" + from
		}
		if code, raw := f.call("GET", base+q, nil, &page); code != 200 {
			t.Fatalf("page %d: got %d %s", pages, code, raw)
		}
		pages++
		got = append(got, ids(page.Events)...)
		if page.Next == "" {
			break
		}
		from = page.Next
	}
	if !slices.Equal(got, all) || pages != 3 {
		t.Fatalf("forward: got %v in %d pages, want %v in 3", got, pages, all)
	}

	for _, tc := range []struct {
		name, query string
		want        []string
		next        string
	}{
		{"default: oldest first", "", all, ""},
		{"from an id, inclusive", "?from=3000-0", all[3:], ""},
		{"from a bare millisecond", "?from=3000&limit=1", all[3:4], "3000-1"},
		{"from a time, inclusive", "?from=1970-01-01T00:00:02Z", all[2:], ""},
		{"from a time between entries", "?from=1970-01-01T00:00:02.5%2B00:00", all[3:], ""},
		{"newest first", "?order=desc&limit=2", []string{all[6], all[5]}, all[4]},
		{"newest first from an id", "?order=desc&from=3000-1&limit=2", []string{all[4], all[3]}, all[2]},
		{"newest first from a time", "?order=desc&from=1970-01-01T00:00:03Z", []string{all[4], all[3], all[2], all[1], all[0]}, ""},
		{"past the end", "?from=9000-0", []string{}, ""},
		{"limit 1000", "?limit=1000", all, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var page eventsPage
			if code, raw := f.call("GET", base+tc.query, nil, &page); code != 200 {
				t.Fatalf("got %d %s", code, raw)
			}
			if got := ids(page.Events); !slices.Equal(got, tc.want) || page.Next != tc.next || page.Topic != f.topic {
				t.Fatalf("got %v next %q topic %q, want %v next %q", got, page.Next, page.Topic, tc.want, tc.next)
			}
		})
	}

	for _, tc := range []struct{ name, path, code string }{
		{"limit 0", base + "?limit=0", "bad_limit"},
		{"limit past the max", base + "?limit=1001", "bad_limit"},
		{"limit not a number", base + "?limit=ten", "bad_limit"},
		{"garbage from", base + "?from=yesterday", "bad_position"},
		{"bad order", base + "?order=sideways", "bad_order"},
		{"bad topic", "/v1/topics/" + "bad%20topic/events", "invalid_topic"},
	} {
		t.Run(tc.name, func(t *testing.T) { f.wantError("GET", tc.path, nil, 400, tc.code) })
	}
}

func TestEventShape(t *testing.T) {
	f := newFixture(t, Config{})
	ev := testEvent(1)
	ev.Subject, ev.DataSchema = "match/1", "https://example.com/schema"
	ev.TraceParent, ev.TraceState = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k=v"
	ev.Extensions = map[string]string{"tenant": "fogis"}
	sid := f.add("*", ev)
	bin := testEvent(2)
	bin.ContentType, bin.Data = "application/octet-stream", []byte{0xff, 0x00, 0xfe}
	f.add("*", bin)
	var page struct {
		Events []map[string]any `json:"events"`
	}
	f.call("GET", "/v1/topics/"+f.topic+"/events", nil, &page)
	if len(page.Events) != 2 {
		t.Fatalf("got %d events, want 2", len(page.Events))
	}
	want := map[string]any{
		"stream_id": sid, "id": "ev-01", "source": "processor", "type": "match_updates", "time": "2026-01-02T03:04:05Z",
		"subject": "match/1", "content_type": "application/json", "dataschema": "https://example.com/schema",
		"traceparent": ev.TraceParent, "tracestate": "k=v", "extensions": map[string]any{"tenant": "fogis"},
		"data": `{"i":1}`, "size": float64(7),
	}
	for k, v := range want {
		if fmt.Sprint(page.Events[0][k]) != fmt.Sprint(v) {
			t.Errorf("event %s: got %v, want %v", k, page.Events[0][k], v)
		}
	}
	if _, ok := page.Events[0]["data_base64"]; ok {
		t.Error("text event has data_base64")
	}
	if page.Events[1]["data_base64"] != "/wD+" || page.Events[1]["size"] != float64(3) {
		t.Errorf("binary event: got data_base64 %v size %v, want /wD+ 3", page.Events[1]["data_base64"], page.Events[1]["size"])
	}
	if _, ok := page.Events[1]["data"]; ok {
		t.Error("binary event has data")
	}
}

func TestDLQListRedrivePurge(t *testing.T) {
	f := newFixture(t, Config{})
	f.group("g1", "$")
	f.group("g2", "$")
	d := []string{
		f.deadLetter(testEvent(0), "g1", 3, "100-0"),
		f.deadLetter(testEvent(1), "g2", 1, "101-0"),
		f.deadLetter(testEvent(2), "g1", 1, "102-0"),
		f.deadLetter(testEvent(3), "g1", 2, "103-0"),
		f.deadLetter(testEvent(4), "g2", 1, "104-0"),
	}
	base := "/v1/topics/" + f.topic + "/dlq"

	var page dlqPage
	f.call("GET", base, nil, &page)
	if len(page.Entries) != 5 || page.Next != "" {
		t.Fatalf("all groups: got %d entries next %q, want 5", len(page.Entries), page.Next)
	}
	f.call("GET", base+"?group=g1&limit=2", nil, &page)
	if len(page.Entries) != 2 || page.Next != d[3] {
		t.Fatalf("g1, 2 a page: got %d entries next %q, want 2 next %s", len(page.Entries), page.Next, d[3])
	}
	e := page.Entries[0]
	if e.DLQID != d[0] || e.Group != "g1" || e.Attempts != 3 || e.Error != `webhook answered 400: "no"` ||
		e.OriginalID != "100-0" || e.StreamID != "100-0" || e.ID != "ev-00" || *e.Data != `{"i":0}` {
		t.Fatalf("first dead letter: got %+v", e)
	}
	f.call("GET", base+"?group=g1&from="+page.Next, nil, &page)
	if len(page.Entries) != 1 || page.Entries[0].DLQID != d[3] || page.Next != "" {
		t.Fatalf("g1 second page: got %+v", page)
	}
	f.wantError("GET", base+"?group=nope", nil, 404, "no_such_group")
	f.wantError("GET", base+"?group=bad%20group", nil, 400, "invalid_group")

	redrive := base + "/redrive"
	f.wantError("POST", redrive, nil, 400, "missing_group")
	f.wantError("POST", redrive, `{"group":`, 400, "bad_request")
	f.wantError("POST", redrive, `{"group":"g1","idz":[]}`, 400, "bad_request")
	f.wantError("POST", redrive, map[string]any{"group": "g1", "limit": 10001}, 400, "bad_limit")
	f.wantError("POST", redrive, map[string]any{"group": "nope"}, 404, "no_such_group")

	// By DLQ id and by event id, named newest first: redriven oldest first.
	var rr redriveResponse
	if code, raw := f.call("POST", redrive, map[string]any{"group": "g1", "ids": []string{"ev-03", d[0], "bogus"}}, &rr); code != 200 {
		t.Fatalf("redrive: got %d %s", code, raw)
	}
	if rr.Topic != f.topic || rr.Group != "g1" || rr.Redriven != 2 || rr.Remaining != 0 || !slices.Equal(rr.NotFound, []string{"bogus"}) {
		t.Fatalf("redrive by id: got %+v, want 2 redriven, 0 remaining, bogus not found", rr)
	}
	entries := f.rdb.XRange(context.Background(), stream.Key(f.topic), "-", "+").Val()
	if len(entries) != 2 {
		t.Fatalf("stream after redrive: got %d entries, want 2", len(entries))
	}
	for i, want := range []struct{ id, from string }{{"ev-00", d[0]}, {"ev-03", d[3]}} {
		v := entries[i].Values
		if v["id"] != want.id || v["redrive_group"] != "g1" || v["redriven_from"] != want.from || v["data"] == nil {
			t.Fatalf("redriven entry %d: got %v, want event %s from %s for g1", i, v, want.id, want.from)
		}
		for _, k := range []string{"error", "attempts", "group", "original_id"} {
			if _, ok := v[k]; ok {
				t.Fatalf("redriven entry %d keeps the DLQ field %s: %v", i, k, v)
			}
		}
	}
	// The remaining g1 dead letter, one call with limit 1; g2's stay.
	f.call("POST", redrive, map[string]any{"group": "g1", "limit": 1}, &rr)
	if rr.Redriven != 1 || rr.Remaining != 0 {
		t.Fatalf("redrive all of g1: got %+v, want 1 redriven, 0 remaining", rr)
	}
	// Remaining counts what a limit left behind.
	extra := []string{f.deadLetter(testEvent(5), "g1", 1, "105-0"), f.deadLetter(testEvent(6), "g1", 1, "106-0")}
	f.call("POST", redrive, map[string]any{"group": "g1", "limit": 1}, &rr)
	if rr.Redriven != 1 || rr.Remaining != 1 {
		t.Fatalf("redrive with limit 1 of 2: got %+v, want 1 redriven, 1 remaining", rr)
	}
	if got := f.ops.get("redrive"); got != [2]int{3, 4} {
		t.Fatalf("redrive operations counted: got %v, want 3 calls, 4 entries", got)
	}

	// Purge: group required; by id; then all of the group's.
	var pr purgeResponse
	f.wantError("DELETE", base, nil, 400, "missing_group")
	f.wantError("DELETE", base+"?group=nope", nil, 404, "no_such_group")
	if code, raw := f.call("DELETE", base+"?group=g2&ids="+d[1], nil, &pr); code != 200 || pr != (purgeResponse{Topic: f.topic, Group: "g2", Purged: 1}) {
		t.Fatalf("purge by id: got %d %s", code, raw)
	}
	f.call("DELETE", base+"?group=g2", nil, &pr)
	if pr.Purged != 1 {
		t.Fatalf("purge all of g2: got %+v, want 1", pr)
	}
	f.call("DELETE", base+"?group=g1&ids=ev-06,"+extra[0], nil, &pr)
	if pr.Purged != 1 {
		t.Fatalf("purge g1 by event id (one left): got %+v, want 1", pr)
	}
	f.call("GET", base, nil, &page)
	if len(page.Entries) != 0 {
		t.Fatalf("DLQ after purges: got %d entries, want 0", len(page.Entries))
	}
	if got := f.ops.get("purge"); got != [2]int{3, 3} {
		t.Fatalf("purge operations counted: got %v, want 3 calls, 3 entries", got)
	}
}

// TestDLQPageSkipsOtherGroupsWithinBudget: a group's page reads past other
// groups' dead letters at most dlqScanBudget entries; next says where to
// go on, and following it finds the group's dead letter.
func TestDLQPageSkipsOtherGroupsWithinBudget(t *testing.T) {
	f := newFixture(t, Config{})
	f.group("g1", "$")
	f.group("g2", "$")
	ctx := context.Background()
	pipe := f.rdb.Pipeline()
	for i := range dlqScanBudget + 5 {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream.DLQKey(f.topic), Values: []any{"id", fmt.Sprint(i), "data", "", "group", "g2"}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	mine := f.deadLetter(testEvent(1), "g1", 1, "1-0")
	var page dlqPage
	path := "/v1/topics/" + f.topic + "/dlq?group=g1"
	f.call("GET", path, nil, &page)
	if len(page.Entries) != 0 || page.Next == "" {
		t.Fatalf("first page: got %d entries next %q, want 0 and a next", len(page.Entries), page.Next)
	}
	f.call("GET", path+"&from="+page.Next, nil, &page)
	if len(page.Entries) != 1 || page.Entries[0].DLQID != mine || page.Next != "" {
		t.Fatalf("second page: got %+v, want %s and no next", page, mine)
	}
}

func TestSeek(t *testing.T) {
	f := newFixture(t, Config{})
	for i, sid := range []string{"1000-0", "2000-0", "2000-1", "3000-0"} {
		f.add(sid, testEvent(i))
	}
	f.group("g", "$")
	path := "/v1/subscriptions/" + f.topic + "/g/seek"
	read := func() []string {
		t.Helper()
		res, err := f.rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream.Key(f.topic), ">"}, Count: 10, Block: -1}).Result()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range res {
			for _, m := range s.Messages {
				out = append(out, m.ID)
			}
		}
		return out
	}
	prev := "3000-0"
	for _, tc := range []struct {
		to, wantTo string
		wantRead   []string
	}{
		{"2000-1", "2000-0", []string{"2000-1", "3000-0"}},                                            // an id: that entry again, and on
		{"1970-01-01T00:00:02Z", "1999-18446744073709551615", []string{"2000-0", "2000-1", "3000-0"}}, // a time: the first entry at or after it
		{"1970-01-01T00:00:01.5Z", "1999-18446744073709551615", []string{"2000-0", "2000-1", "3000-0"}},
		{"earliest", "0-0", []string{"1000-0", "2000-0", "2000-1", "3000-0"}},
		{"latest", "3000-0", nil},
		{"1970-01-01T01:00:00Z", "3000-0", nil}, // after the last entry: only what comes
		{"2000", "1999-18446744073709551615", []string{"2000-0", "2000-1", "3000-0"}},
	} {
		var sr seekResponse
		if code, raw := f.call("POST", path, map[string]string{"to": tc.to}, &sr); code != 200 {
			t.Fatalf("seek to %s: got %d %s", tc.to, code, raw)
		}
		if sr != (seekResponse{Topic: f.topic, Group: "g", From: prev, To: tc.wantTo}) {
			t.Fatalf("seek to %s: got %+v, want from %s to %s", tc.to, sr, prev, tc.wantTo)
		}
		if got := read(); !slices.Equal(got, tc.wantRead) {
			t.Fatalf("after seek to %s: read %v, want %v", tc.to, got, tc.wantRead)
		}
		prev = "3000-0"
	}
	f.wantError("POST", path, map[string]string{"to": "yesterday"}, 400, "bad_position")
	f.wantError("POST", path, nil, 400, "bad_position")
	f.wantError("POST", "/v1/subscriptions/"+f.topic+"/nope/seek", map[string]string{"to": "earliest"}, 404, "no_such_group")
	f.wantError("POST", "/v1/subscriptions/bad%20topic/g/seek", map[string]string{"to": "earliest"}, 400, "invalid_topic")
	if got := f.ops.get("seek"); got[0] != 7 {
		t.Fatalf("seek operations counted: got %v, want 7", got)
	}
}

func TestPauseResume(t *testing.T) {
	f := newFixture(t, Config{Settle: 200 * time.Millisecond})
	f.group("g", "$")
	base := "/v1/subscriptions/" + f.topic + "/g/"
	var pr pauseResponse
	start := time.Now()
	if code, raw := f.call("POST", base+"pause", nil, &pr); code != 200 || pr != (pauseResponse{Topic: f.topic, Group: "g", Paused: true}) {
		t.Fatalf("pause: got %d %s", code, raw)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("pause answered after %v, want after the settle time (200ms)", took)
	}
	var info stream.PauseInfo
	if err := json.Unmarshal([]byte(f.rdb.Get(context.Background(), stream.PauseKey(f.topic, "g")).Val()), &info); err != nil ||
		!strings.Contains(info.By, "loopback") || time.Since(info.At) > time.Minute {
		t.Fatalf("pause key: got %+v, %v; want who and when", info, err)
	}
	var topics map[string][]Topic
	f.call("GET", "/v1/topics", nil, &topics)
	if len(topics["topics"]) != 1 || !topics["topics"][0].Groups[0].Paused {
		t.Fatalf("topics while paused: got %+v, want g paused", topics)
	}
	if code, raw := f.call("POST", base+"resume", nil, &pr); code != 200 || pr.Paused {
		t.Fatalf("resume: got %d %s", code, raw)
	}
	if n := f.rdb.Exists(context.Background(), stream.PauseKey(f.topic, "g")).Val(); n != 0 {
		t.Fatal("pause key still set after the resume")
	}
	f.wantError("POST", "/v1/subscriptions/"+f.topic+"/nope/pause", nil, 404, "no_such_group")
	if p, r := f.ops.get("pause"), f.ops.get("resume"); p[0] != 1 || r[0] != 1 {
		t.Fatalf("counted: pause %v resume %v, want 1 each", p, r)
	}
}

func TestConsumersAndCleanup(t *testing.T) {
	f := newFixture(t, Config{Consumer: "me"})
	f.add("*", testEvent(1))
	f.group("g", "0")
	ctx := context.Background()
	key := stream.Key(f.topic)
	for _, c := range []string{"me", "gone"} {
		if err := f.rdb.XGroupCreateConsumer(ctx, key, "g", c).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "holder", Streams: []string{key, ">"}, Count: 1, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	base := "/v1/subscriptions/" + f.topic + "/g/consumers"
	var cs map[string][]Consumer
	f.call("GET", base, nil, &cs)
	byName := map[string]Consumer{}
	for _, c := range cs["consumers"] {
		byName[c.Name] = c
	}
	if len(byName) != 3 || byName["holder"].Pending != 1 || byName["gone"].Pending != 0 || byName["gone"].IdleMS < 0 {
		t.Fatalf("consumers: got %+v", cs)
	}

	// Still active within an hour (the default): nothing removed.
	var cr cleanupResponse
	f.call("POST", base+"/cleanup", nil, &cr)
	if len(cr.Removed) != 0 || len(cr.Kept) != 3 {
		t.Fatalf("cleanup with the default idle: got %+v, want nothing removed", cr)
	}
	f.call("POST", base+"/cleanup", map[string]string{"idle": "0s"}, &cr)
	if !slices.Equal(cr.Removed, []string{"gone"}) || len(cr.Kept) != 2 {
		t.Fatalf("cleanup: got %+v, want gone removed, 2 kept", cr)
	}
	for _, k := range cr.Kept {
		switch {
		case k.Name == "me" && strings.Contains(k.Why, "own"):
		case k.Name == "holder" && k.Pending == 1 && strings.Contains(k.Why, "pending"):
		default:
			t.Fatalf("kept: got %+v", k)
		}
	}
	left := f.rdb.XInfoConsumers(ctx, key, "g").Val()
	if len(left) != 2 || f.rdb.XPending(ctx, key, "g").Val().Count != 1 {
		t.Fatalf("after cleanup: consumers %+v, pending %d; want 2 consumers and the pending entry kept", left, f.rdb.XPending(ctx, key, "g").Val().Count)
	}
	f.wantError("POST", base+"/cleanup", map[string]string{"idle": "soon"}, 400, "bad_duration")
	if got := f.ops.get("cleanup"); got != [2]int{2, 1} {
		t.Fatalf("cleanup operations counted: got %v, want 2 calls, 1 entry", got)
	}
}

func TestTopicsList(t *testing.T) {
	f := newFixture(t, Config{Topics: []string{"configured.only"}})
	f.add("1000-0", testEvent(0))
	f.add("2000-0", testEvent(1))
	f.add("3000-0", testEvent(2))
	f.group("calendar", "0")
	f.group("phonebook", "$")
	f.deadLetter(testEvent(9), "calendar", 1, "1-0")
	ctx := context.Background()
	// Keys that are not topic streams.
	f.rdb.Set(ctx, "sidecar:{"+f.topic+"}:idem:abc", "x", time.Minute)
	f.rdb.XAdd(ctx, &redis.XAddArgs{Stream: "other:stream", Values: []any{"a", "b"}})
	// A seek leaves Redis without a lag figure: it is counted instead.
	if err := f.rdb.XGroupSetID(ctx, stream.Key(f.topic), "calendar", "1000-0").Err(); err != nil {
		t.Fatal(err)
	}
	var got map[string][]Topic
	if code, raw := f.call("GET", "/v1/topics", nil, &got); code != 200 {
		t.Fatalf("got %d %s", code, raw)
	}
	want := []Topic{
		{Topic: "configured.only", Groups: []Group{}},
		{Topic: f.topic, Length: 3, FirstID: "1000-0", LastID: "3000-0", DLQLength: 1, Groups: []Group{
			{Group: "calendar", Lag: 2, LastDeliveredID: "1000-0", DLQLength: 1},
			{Group: "phonebook", Lag: 0, LastDeliveredID: "3000-0"},
		}},
	}
	if fmt.Sprintf("%+v", got["topics"]) != fmt.Sprintf("%+v", want) {
		t.Fatalf("topics:\n got %+v\nwant %+v", got["topics"], want)
	}
}

// TestTopicsListSurvivesABrokenTopic: a configured topic whose key holds
// another type is listed with its error; the others as usual.
func TestTopicsListSurvivesABrokenTopic(t *testing.T) {
	f := newFixture(t, Config{Topics: []string{"broken"}})
	f.add("*", testEvent(1))
	f.rdb.Set(context.Background(), stream.Key("broken"), "not a stream", 0)
	var got map[string][]Topic
	if code, raw := f.call("GET", "/v1/topics", nil, &got); code != 200 {
		t.Fatalf("got %d %s", code, raw)
	}
	ts := got["topics"]
	if len(ts) != 2 || ts[0].Topic != "broken" || !strings.Contains(ts[0].Error, "WRONGTYPE") || ts[1].Topic != f.topic || ts[1].Length != 1 || ts[1].Error != "" {
		t.Fatalf("topics: got %+v, want broken with a WRONGTYPE error, then %s", ts, f.topic)
	}
}
