package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// newPartitionedFixture is an admin API over a private Redis whose config
// gives f.topic n partitions.
func newPartitionedFixture(t *testing.T, n int, cfg Config) *fixture {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	topic := redistest.UniqueTopic(t, "parts")
	cfg.Partitions = map[string]int{topic: n}
	ops := &opsRecorder{ops: map[string][2]int{}}
	cfg.Observer = ops
	if cfg.Settle == 0 {
		cfg.Settle = time.Millisecond
	}
	srv := httptest.NewServer(New(rdb, cfg, zerolog.Nop()))
	t.Cleanup(srv.Close)
	return &fixture{t: t, rdb: rdb, srv: srv, ops: ops, topic: topic}
}

// addTo appends ev to partition k at stream id sid ("*" = now).
func (f *fixture) addTo(k int, sid string, i int) string {
	f.t.Helper()
	id, err := f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream.Key(stream.PartitionTopic(f.topic, k)), ID: sid, Values: testEvent(i).Values()}).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// deadLetterIn writes a dead letter into partition k's DLQ at DLQ id sid.
func (f *fixture) deadLetterIn(k int, sid string, i int, group, originalID string) string {
	f.t.Helper()
	vals := append(testEvent(i).Values(), "error", "webhook answered 400", "attempts", "1", "group", group, "original_id", originalID)
	id, err := f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream.DLQKey(stream.PartitionTopic(f.topic, k)), ID: sid, Values: vals}).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// groupOn creates group on partitions ks of f.topic (with their streams).
func (f *fixture) groupOn(name, start string, ks ...int) {
	f.t.Helper()
	for _, k := range ks {
		if err := f.rdb.XGroupCreateMkStream(context.Background(), stream.Key(stream.PartitionTopic(f.topic, k)), name, start).Err(); err != nil {
			f.t.Fatal(err)
		}
	}
}

// lastDelivered is group's last-delivered-id on partition k.
func (f *fixture) lastDelivered(k int, group string) string {
	f.t.Helper()
	gs, err := f.rdb.XInfoGroups(context.Background(), stream.Key(stream.PartitionTopic(f.topic, k))).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, g := range gs {
		if g.Name == group {
			return g.LastDeliveredID
		}
	}
	f.t.Fatalf("partition %d has no group %s", k, group)
	return ""
}

// partID is an entry as the merged pages show it.
func partID(e Event) string {
	if e.Partition == nil {
		return e.StreamID
	}
	return fmt.Sprintf("%s/%d", e.StreamID, *e.Partition)
}

// TestPartitionedEventsMerge: a partitioned topic's log is read as one,
// in id order, partition breaking ties (the streams share ids), pages
// follow next in both directions without losing or repeating an entry.
func TestPartitionedEventsMerge(t *testing.T) {
	f := newPartitionedFixture(t, 3, Config{})
	f.addTo(0, "1000-0", 0)
	f.addTo(1, "1000-0", 1)
	f.addTo(2, "1000-0", 2)
	f.addTo(1, "2000-0", 3)
	f.addTo(0, "3000-0", 4)
	f.addTo(2, "4000-0", 5)
	asc := []string{"1000-0/0", "1000-0/1", "1000-0/2", "2000-0/1", "3000-0/0", "4000-0/2"}
	base := "/v1/topics/" + f.topic + "/events"

	page := func(q string) eventsPage {
		t.Helper()
		var p eventsPage
		if code, raw := f.call("GET", base+q, nil, &p); code != 200 {
			t.Fatalf("GET %s: got %d %s", q, code, raw)
		}
		if p.Topic != f.topic {
			t.Fatalf("GET %s: topic %q, want %q", q, p.Topic, f.topic)
		}
		return p
	}
	walk := func(q, from string) (got, nexts []string) {
		t.Helper()
		for range 10 {
			qq := q
			if from != "" {
				qq += "&from=" + from
			}
			p := page(qq)
			for _, e := range p.Events {
				got = append(got, partID(e))
			}
			if p.Next == "" {
				return got, nexts
			}
			nexts = append(nexts, p.Next)
			from = p.Next
		}
		t.Fatalf("%s: no end after 10 pages", q)
		return nil, nil
	}
	for _, tc := range []struct {
		name, query, from string
		want, nexts       []string
	}{
		{"oldest first, 2 a page", "?limit=2", "", asc, []string{"1000-0@2", "3000-0"}},
		{"newest first, 2 a page", "?order=desc&limit=2", "", reversed(asc), []string{"2000-0@1", "1000-0@1"}},
		{"oldest first, 4 a page", "?limit=4", "", asc, []string{"3000-0"}},
		{"one page", "?limit=1000", "", asc, nil},
		{"from a time", "?limit=1", "1970-01-01T00:00:01.5Z", asc[3:], []string{"3000-0", "4000-0@2"}},
		{"from an id, in every partition", "?limit=10", "1000-0", asc, nil},
		{"from a page's cursor", "?limit=10", "1000-0@1", asc[1:], nil},
		{"newest first from a cursor", "?order=desc&limit=10", "1000-0@1", []string{"1000-0/1", "1000-0/0"}, nil},
		{"newest first from an id, in every partition", "?order=desc&limit=10", "1000-0", []string{"1000-0/2", "1000-0/1", "1000-0/0"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, nexts := walk(tc.query, tc.from)
			if !slices.Equal(got, tc.want) || !slices.Equal(nexts, tc.nexts) {
				t.Fatalf("got %v (nexts %v), want %v (nexts %v)", got, nexts, tc.want, tc.nexts)
			}
		})
	}

	// Partition 0 is shown as such: the number is there, not left out.
	var raw struct {
		Events []map[string]any `json:"events"`
	}
	f.call("GET", base+"?limit=1", nil, &raw)
	if p, ok := raw.Events[0]["partition"]; !ok || p != float64(0) {
		t.Fatalf("partition of the first event: got %v (present %v), want 0", p, ok)
	}

	for _, tc := range []struct{ name, from string }{
		{"partition past the count", "1000-0@3"},
		{"cursor without the sequence", "1000@1"},
		{"cursor with a time", "1970-01-01T00:00:01Z@1"},
		{"negative partition", "1000-0@-1"},
	} {
		t.Run(tc.name, func(t *testing.T) { f.wantError("GET", base+"?from="+tc.from, nil, 400, "bad_position") })
	}
}

func reversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

// TestUnpartitionedEventHasNoPartition: the JSON of an unpartitioned
// topic is as it was.
func TestUnpartitionedEventHasNoPartition(t *testing.T) {
	f := newFixture(t, Config{})
	f.add("*", testEvent(1))
	f.group("g", "$")
	f.deadLetter(testEvent(2), "g", 1, "1-0")
	var events struct {
		Events []map[string]any `json:"events"`
	}
	f.call("GET", "/v1/topics/"+f.topic+"/events", nil, &events)
	var dlq struct {
		Entries []map[string]any `json:"entries"`
	}
	f.call("GET", "/v1/topics/"+f.topic+"/dlq", nil, &dlq)
	var topics struct {
		Topics []map[string]any `json:"topics"`
	}
	f.call("GET", "/v1/topics", nil, &topics)
	_, inEvent := events.Events[0]["partition"]
	_, inDead := dlq.Entries[0]["partition"]
	_, inTopic := topics.Topics[0]["partitions"]
	if inEvent || inDead || inTopic {
		t.Fatalf("partition shown for an unpartitioned topic: event %v, dead letter %v, topic %v", inEvent, inDead, inTopic)
	}
	var seek map[string]any
	f.call("POST", "/v1/subscriptions/"+f.topic+"/g/seek", map[string]string{"to": "earliest"}, &seek)
	if _, ok := seek["partitions"]; ok || len(seek) != 4 {
		t.Fatalf("seek answer: got %v, want topic, group, from, to", seek)
	}
}

// TestPartitionedTopicsList: one entry per user topic, its partitions'
// figures summed; streams of partitions the config does not name fold
// into their topic.
func TestPartitionedTopicsList(t *testing.T) {
	f := newPartitionedFixture(t, 3, Config{})
	ctx := context.Background()
	pub := stream.NewPublisher(f.rdb, stream.PublisherOptions{IdempotencyTTL: time.Minute}, zerolog.Nop())
	f.groupOn("g", "0", 0, 1, 2)
	var first, last string
	for i, k := range []int{0, 1, 1, 2, 2, 2} {
		rc, err := pub.Publish(ctx, stream.PartitionTopic(f.topic, k), testEvent(i))
		if err != nil {
			t.Fatal(err)
		}
		if first == "" {
			first = rc.StreamID
		}
		last = rc.StreamID
	}
	f.groupOn("late", "$", 1)
	// g read everything of partition 2 (3 pending there); 1 + 2 lag elsewhere.
	if err := f.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream.Key(f.topic + "#2"), ">"}, Count: 10, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	f.deadLetterIn(0, "*", 10, "g", "1-0")
	f.deadLetterIn(2, "*", 11, "g", "1-0")
	f.deadLetterIn(1, "*", 12, "late", "1-0")

	// Another sidecar's partitions of a topic this config does not know,
	// and keys that are no partitions.
	other := f.topic + ".other"
	for _, key := range []string{stream.Key(other), stream.Key(other + "#1"), stream.Key(other + "#4"), "sidecar:{" + other + "#01}", "sidecar:{" + other + "#5000}"} {
		if err := f.rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: testEvent(0).Values()}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	var got map[string][]Topic
	if code, raw := f.call("GET", "/v1/topics", nil, &got); code != 200 {
		t.Fatalf("got %d %s", code, raw)
	}
	ts := got["topics"]
	if len(ts) != 2 || ts[0].Topic != f.topic || ts[1].Topic != other {
		t.Fatalf("topics: got %+v, want %s and %s alone", ts, f.topic, other)
	}
	want := Topic{Topic: f.topic, Partitions: 3, Length: 6, FirstID: first, LastID: last, DLQLength: 3, Groups: []Group{
		{Group: "g", Lag: 3, Pending: 3, LastDeliveredID: f.lastDelivered(2, "g"), Consumers: 1, DLQLength: 2},
		{Group: "late", Lag: 0, LastDeliveredID: f.lastDelivered(1, "late"), DLQLength: 1},
	}}
	if fmt.Sprintf("%+v", ts[0]) != fmt.Sprintf("%+v", want) {
		t.Fatalf("partitioned topic:\n got %+v\nwant %+v", ts[0], want)
	}
	if ts[1].Partitions != 5 || ts[1].Length != 3 {
		t.Fatalf("unconfigured topic: got %d partitions, length %d; want 5, 3 (partitions 0, 1 and 4)", ts[1].Partitions, ts[1].Length)
	}

	// The events of the unconfigured topic come from all its partitions too.
	var page eventsPage
	f.call("GET", "/v1/topics/"+other+"/events", nil, &page)
	var parts []int
	for _, e := range page.Events {
		if e.Partition == nil {
			t.Fatalf("events of %s: one without a partition: %+v", other, e)
		}
		parts = append(parts, *e.Partition)
	}
	if !slices.Equal(parts, []int{0, 1, 4}) {
		t.Fatalf("events of %s: got partitions %v, want 0, 1, 4", other, parts)
	}
}

// TestPartitionedDLQ: dead letters of all partitions listed as one, each
// with its partition; a redrive sends each back to its own partition's
// stream; purge and redrive of all cover every partition.
func TestPartitionedDLQ(t *testing.T) {
	f := newPartitionedFixture(t, 3, Config{})
	ctx := context.Background()
	f.groupOn("g", "$", 0, 1, 2)
	f.groupOn("h", "$", 0, 1, 2)
	pub := stream.NewPublisher(f.rdb, stream.PublisherOptions{IdempotencyTTL: time.Minute}, zerolog.Nop())
	orig := map[int]string{}
	for k := range 3 {
		rc, err := pub.Publish(ctx, stream.PartitionTopic(f.topic, k), testEvent(20+k))
		if err != nil {
			t.Fatal(err)
		}
		orig[k] = rc.StreamID
	}
	// DLQ ids chosen: 5000-0 is in partitions 1 and 2 both.
	f.deadLetterIn(2, "1000-0", 0, "g", orig[2])
	f.deadLetterIn(0, "2000-0", 1, "g", orig[0])
	f.deadLetterIn(1, "3000-0", 2, "h", orig[1])
	f.deadLetterIn(1, "5000-0", 3, "g", orig[1])
	f.deadLetterIn(2, "5000-0", 4, "g", orig[2])
	f.deadLetterIn(0, "6000-0", 5, "g", orig[0])
	base := "/v1/topics/" + f.topic + "/dlq"
	dead := func(ds []DeadLetter) []string {
		out := make([]string, len(ds))
		for i, d := range ds {
			out[i] = fmt.Sprintf("%s/%d %s", d.DLQID, *d.Partition, d.ID)
		}
		return out
	}

	var page dlqPage
	f.call("GET", base, nil, &page)
	all := []string{"1000-0/2 ev-00", "2000-0/0 ev-01", "3000-0/1 ev-02", "5000-0/1 ev-03", "5000-0/2 ev-04", "6000-0/0 ev-05"}
	if got := dead(page.Entries); !slices.Equal(got, all) || page.Next != "" {
		t.Fatalf("all dead letters: got %v next %q, want %v", got, page.Next, all)
	}
	if e := page.Entries[0]; e.Group != "g" || e.OriginalID != orig[2] || e.StreamID != orig[2] {
		t.Fatalf("first dead letter: got %+v, want group g, original id %s", e, orig[2])
	}
	f.call("GET", base+"?group=g&limit=3", nil, &page)
	if got := dead(page.Entries); !slices.Equal(got, []string{all[0], all[1], all[3]}) || page.Next != "5000-0@2" {
		t.Fatalf("g, 3 a page: got %v next %q, want %v next 5000-0@2", got, page.Next, []string{all[0], all[1], all[3]})
	}
	f.call("GET", base+"?group=g&from="+page.Next, nil, &page)
	if got := dead(page.Entries); !slices.Equal(got, []string{all[4], all[5]}) || page.Next != "" {
		t.Fatalf("g, second page: got %v next %q, want %v", got, page.Next, []string{all[4], all[5]})
	}
	f.wantError("GET", base+"?group=nope", nil, 404, "no_such_group")

	partEntries := func(k int) []redis.XMessage {
		t.Helper()
		return f.rdb.XRange(ctx, stream.Key(stream.PartitionTopic(f.topic, k)), "-", "+").Val()
	}
	// By event id: ev-00 was partition 2's; back there, for g alone.
	var rr redriveResponse // reset before each call: not_found may be left out
	redrive := base + "/redrive"
	if code, raw := f.call("POST", redrive, map[string]any{"group": "g", "ids": []string{"ev-00", "nope"}}, &rr); code != 200 {
		t.Fatalf("redrive: got %d %s", code, raw)
	}
	if rr.Topic != f.topic || rr.Redriven != 1 || rr.Remaining != 0 || !slices.Equal(rr.NotFound, []string{"nope"}) {
		t.Fatalf("redrive ev-00: got %+v, want 1 redriven, nope not found", rr)
	}
	p2 := partEntries(2)
	if len(p2) != 2 || p2[1].Values["id"] != "ev-00" || p2[1].Values["redrive_group"] != "g" || p2[1].Values["redriven_from"] != "1000-0" {
		t.Fatalf("partition 2 after the redrive: got %v, want its event then ev-00 for g from 1000-0", p2)
	}
	if n0, n1 := len(partEntries(0)), len(partEntries(1)); n0 != 1 || n1 != 1 {
		t.Fatalf("partitions 0 and 1 after the redrive: %d and %d entries, want 1 each", n0, n1)
	}
	// A DLQ id two partitions share: "<id>@<k>" picks one.
	rr = redriveResponse{}
	f.call("POST", redrive, map[string]any{"group": "g", "ids": []string{"5000-0@2"}}, &rr)
	if rr.Redriven != 1 || len(rr.NotFound) != 0 {
		t.Fatalf("redrive 5000-0@2: got %+v, want 1 redriven", rr)
	}
	if p2 := partEntries(2); len(p2) != 3 || p2[2].Values["id"] != "ev-04" {
		t.Fatalf("partition 2 after redriving 5000-0@2: got %v, want ev-04 last", p2)
	}
	if n := f.rdb.XLen(ctx, stream.DLQKey(f.topic+"#1")).Val(); n != 2 {
		t.Fatalf("partition 1's DLQ after redriving 5000-0@2: %d entries, want 2 (untouched)", n)
	}

	// Redrive all of g, one at a time: oldest first over the partitions,
	// remaining counted over them.
	rr = redriveResponse{}
	f.call("POST", redrive, map[string]any{"group": "g", "limit": 1}, &rr)
	if rr.Redriven != 1 || rr.Remaining != 2 || f.rdb.XLen(ctx, stream.DLQKey(f.topic)).Val() != 1 {
		t.Fatalf("redrive 1 of g: got %+v, want 1 redriven (2000-0 of partition 0), 2 remaining", rr)
	}
	rr = redriveResponse{}
	f.call("POST", redrive, map[string]any{"group": "g"}, &rr)
	if rr.Redriven != 2 || rr.Remaining != 0 {
		t.Fatalf("redrive all of g: got %+v, want 2 redriven, 0 remaining", rr)
	}
	if n0, n1, n2 := len(partEntries(0)), len(partEntries(1)), len(partEntries(2)); n0 != 3 || n1 != 2 || n2 != 3 {
		t.Fatalf("streams after redriving g: %d, %d, %d entries, want 3, 2, 3", n0, n1, n2)
	}

	// Purge by plain DLQ id and by event id; then all of a group's.
	f.deadLetterIn(0, "7000-0", 6, "h", orig[0])
	f.deadLetterIn(2, "7000-0", 7, "h", orig[2])
	f.deadLetterIn(2, "8000-0", 8, "h", orig[2])
	var pr purgeResponse
	f.call("DELETE", base+"?group=h&ids=7000-0", nil, &pr)
	if pr.Purged != 2 {
		t.Fatalf("purge 7000-0 (in two partitions): got %+v, want 2", pr)
	}
	f.call("DELETE", base+"?group=h&ids=ev-08", nil, &pr)
	if pr.Purged != 1 {
		t.Fatalf("purge ev-08: got %+v, want 1", pr)
	}
	f.call("DELETE", base+"?group=h", nil, &pr)
	if pr.Purged != 1 {
		t.Fatalf("purge all of h: got %+v, want 1 (3000-0 of partition 1)", pr)
	}
	for k := range 3 {
		if n := f.rdb.XLen(ctx, stream.DLQKey(stream.PartitionTopic(f.topic, k))).Val(); n != 0 {
			t.Fatalf("partition %d's DLQ: %d entries left, want 0", k, n)
		}
	}
	if r, p := f.ops.get("redrive"), f.ops.get("purge"); r != [2]int{4, 5} || p != [2]int{3, 4} {
		t.Fatalf("counted: redrive %v purge %v, want 4 calls 5 entries, 3 calls 4 entries", r, p)
	}
}

// TestPartitionedDLQRedriveNeedsTheGroupOnThePartition: a dead letter of
// a partition whose stream lacks the group is not redriven (no subscriber
// would deliver it), and nothing else is either.
func TestPartitionedDLQRedriveNeedsTheGroupOnThePartition(t *testing.T) {
	f := newPartitionedFixture(t, 2, Config{})
	f.groupOn("g", "$", 0)
	f.deadLetterIn(0, "1000-0", 0, "g", "1-0")
	f.deadLetterIn(1, "2000-0", 1, "g", "1-0")
	f.wantError("POST", "/v1/topics/"+f.topic+"/dlq/redrive", map[string]any{"group": "g"}, 404, "no_such_group")
	if n := f.rdb.XLen(context.Background(), stream.DLQKey(f.topic)).Val(); n != 1 {
		t.Fatalf("partition 0's DLQ: %d entries, want 1 (nothing redriven)", n)
	}
}

// TestPartitionedPauseSeek: pause and resume set and clear every
// partition's key; seek moves every partition's group.
func TestPartitionedPauseSeek(t *testing.T) {
	f := newPartitionedFixture(t, 3, Config{Settle: 100 * time.Millisecond})
	ctx := context.Background()
	f.addTo(0, "1000-0", 0)
	f.addTo(1, "1500-0", 1)
	f.addTo(2, "2000-0", 2)
	f.addTo(0, "2500-0", 3)
	f.addTo(1, "3000-0", 4)
	f.groupOn("g", "$", 0, 1, 2)
	base := "/v1/subscriptions/" + f.topic + "/g/"

	var pr pauseResponse
	start := time.Now()
	if code, raw := f.call("POST", base+"pause", nil, &pr); code != 200 || pr != (pauseResponse{Topic: f.topic, Group: "g", Paused: true, Partitions: 3}) {
		t.Fatalf("pause: got %d %s", code, raw)
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Fatalf("pause answered after %v, want after the settle time (100ms)", took)
	}
	for k := range 3 {
		var info stream.PauseInfo
		if err := json.Unmarshal([]byte(f.rdb.Get(ctx, stream.PauseKey(stream.PartitionTopic(f.topic, k), "g")).Val()), &info); err != nil || !strings.Contains(info.By, "loopback") {
			t.Fatalf("pause key of partition %d: got %+v, %v", k, info, err)
		}
	}
	var topics map[string][]Topic
	f.call("GET", "/v1/topics", nil, &topics)
	if g := topics["topics"][0].Groups; len(g) != 1 || !g[0].Paused {
		t.Fatalf("topics while paused: got %+v, want g paused", topics)
	}
	if code, raw := f.call("POST", base+"resume", nil, &pr); code != 200 || pr.Paused || pr.Partitions != 3 {
		t.Fatalf("resume: got %d %s", code, raw)
	}
	for k := range 3 {
		if n := f.rdb.Exists(ctx, stream.PauseKey(stream.PartitionTopic(f.topic, k), "g")).Val(); n != 0 {
			t.Fatalf("pause key of partition %d still set after the resume", k)
		}
	}
	if p, r := f.ops.get("pause"), f.ops.get("resume"); p[0] != 1 || r[0] != 1 {
		t.Fatalf("counted: pause %v resume %v, want 1 each", p, r)
	}

	const beforeID = "1999-18446744073709551615"
	for _, tc := range []struct {
		to       string
		wantTo   [3]string
		wantFrom string
	}{
		{"earliest", [3]string{"0-0", "0-0", "0-0"}, "3000-0"},
		{"2000-0", [3]string{beforeID, beforeID, beforeID}, "0-0"},
		// A time: per partition, the first entry at or after it; none: the end.
		{"1970-01-01T00:00:01.2Z", [3]string{"2499-18446744073709551615", "1499-18446744073709551615", beforeID}, beforeID},
		{"latest", [3]string{"2500-0", "3000-0", "2000-0"}, "2499-18446744073709551615"},
	} {
		var sr partitionedSeekResponse
		if code, raw := f.call("POST", base+"seek", map[string]string{"to": tc.to}, &sr); code != 200 {
			t.Fatalf("seek to %s: got %d %s", tc.to, code, raw)
		}
		if sr.Topic != f.topic || sr.Group != "g" || sr.From != tc.wantFrom || len(sr.Partitions) != 3 {
			t.Fatalf("seek to %s: got %+v, want from %s and 3 partitions", tc.to, sr, tc.wantFrom)
		}
		for k := range 3 {
			if got := f.lastDelivered(k, "g"); got != tc.wantTo[k] || sr.Partitions[k].To != got || sr.Partitions[k].Partition != k {
				t.Fatalf("seek to %s, partition %d: last delivered %s (answer %+v), want %s", tc.to, k, got, sr.Partitions[k], tc.wantTo[k])
			}
		}
		if want := maxID(maxID(tc.wantTo[0], tc.wantTo[1]), tc.wantTo[2]); sr.To != want {
			t.Fatalf("seek to %s: answer to %s, want the latest, %s", tc.to, sr.To, want)
		}
	}
	f.wantError("POST", "/v1/subscriptions/"+f.topic+"/nope/seek", map[string]string{"to": "earliest"}, 404, "no_such_group")
}

// TestPartitionedConsumersAndCleanup: consumers listed once over the
// partitions; cleanup removes a gone consumer from every partition and
// keeps one that holds entries on any.
func TestPartitionedConsumersAndCleanup(t *testing.T) {
	f := newPartitionedFixture(t, 3, Config{Consumer: "me"})
	ctx := context.Background()
	f.addTo(1, "*", 1)
	f.groupOn("g", "0", 0, 1, 2)
	for k := range 3 {
		for _, c := range []string{"me", "gone"} {
			if err := f.rdb.XGroupCreateConsumer(ctx, stream.Key(stream.PartitionTopic(f.topic, k)), "g", c).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	p1 := stream.Key(f.topic + "#1")
	if err := f.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "holder", Streams: []string{p1, ">"}, Count: 1, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	base := "/v1/subscriptions/" + f.topic + "/g/consumers"
	var cs map[string][]Consumer
	f.call("GET", base, nil, &cs)
	var names []string
	for _, c := range cs["consumers"] {
		names = append(names, fmt.Sprintf("%s:%d", c.Name, c.Pending))
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"gone:0", "holder:1", "me:0"}) {
		t.Fatalf("consumers: got %v, want gone, holder (1 pending), me", names)
	}

	var cr cleanupResponse
	f.call("POST", base+"/cleanup", map[string]string{"idle": "0s"}, &cr)
	if !slices.Equal(cr.Removed, []string{"gone"}) || len(cr.Kept) != 2 {
		t.Fatalf("cleanup: got %+v, want gone removed, me and holder kept", cr)
	}
	for _, k := range cr.Kept {
		switch {
		case k.Name == "me" && strings.Contains(k.Why, "own"):
		case k.Name == "holder" && k.Pending == 1 && strings.HasPrefix(k.Why, "partition 1: 1 pending"):
		default:
			t.Fatalf("kept: got %+v", k)
		}
	}
	for k := range 3 {
		key := stream.Key(stream.PartitionTopic(f.topic, k))
		for _, c := range f.rdb.XInfoConsumers(ctx, key, "g").Val() {
			if c.Name == "gone" {
				t.Fatalf("partition %d still has consumer gone", k)
			}
		}
	}
	if got := f.ops.get("cleanup"); got != [2]int{1, 3} {
		t.Fatalf("cleanup counted: got %v, want 1 call, 3 consumers removed", got)
	}
}

// TestPartitionedEventsSkewed: one partition holds most of the log, so the
// merge reads it in several chunks; pages of every size see every entry
// once, in order, both ways.
func TestPartitionedEventsSkewed(t *testing.T) {
	f := newPartitionedFixture(t, 3, Config{})
	ctx := context.Background()
	pipe := f.rdb.Pipeline()
	var want []string
	for i := range 120 {
		k := 0
		switch {
		case i%17 == 0:
			k = 1
		case i%29 == 0:
			k = 2
		}
		sid := fmt.Sprintf("%d-%d", 1000+i/3, i%3)
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream.Key(stream.PartitionTopic(f.topic, k)), ID: sid, Values: testEvent(i).Values()})
		want = append(want, fmt.Sprintf("%s/%d", sid, k))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for _, order := range []string{"asc", "desc"} {
		for _, n := range []int{1, 7, 30, 119, 1000} {
			var got []string
			from, pages := "", 0
			for ; pages <= 200; pages++ {
				q := fmt.Sprintf("?order=%s&limit=%d", order, n)
				if from != "" {
					q += "&from=" + from
				}
				var page eventsPage
				if code, raw := f.call("GET", "/v1/topics/"+f.topic+"/events"+q, nil, &page); code != 200 {
					t.Fatalf("%s: got %d %s", q, code, raw)
				}
				for _, e := range page.Events {
					got = append(got, partID(e))
				}
				if from = page.Next; from == "" {
					break
				}
			}
			w := want
			if order == "desc" {
				w = reversed(want)
			}
			if !slices.Equal(got, w) || pages != (len(want)-1)/n {
				t.Fatalf("%s, %d a page: got %d entries in %d pages, want %d in %d; got %v", order, n, len(got), pages+1, len(w), (len(want)-1)/n+1, got)
			}
		}
	}
}

// TestCursors: where each partition's read starts for a page's from, and
// the from each page's end gives.
func TestCursors(t *testing.T) {
	p := parts{topic: "t", n: 3}
	for _, tc := range []struct {
		from string
		desc bool
		want [3]string
	}{
		{"5-1", false, [3]string{"5-1", "5-1", "5-1"}},
		{"5-1@0", false, [3]string{"5-1", "5-1", "5-1"}},
		{"5-1@2", false, [3]string{"5-2", "5-2", "5-1"}},
		{"5-1", true, [3]string{"5-1", "5-1", "5-1"}},
		{"5-1@2", true, [3]string{"5-1", "5-1", "5-1"}},
		{"5-1@0", true, [3]string{"5-1", "5-0", "5-0"}},
		{"5-0@1", true, [3]string{"5-0", "5-0", "4-18446744073709551615"}},
		{"earliest", false, [3]string{"-", "-", "-"}},
	} {
		c, err := parseCursor(tc.from, p)
		if err != nil {
			t.Fatalf("%s: %v", tc.from, err)
		}
		var got [3]string
		for k := range 3 {
			got[k] = c.bound(k, tc.desc)
		}
		if got != tc.want {
			t.Errorf("%s (desc %v): got %v, want %v", tc.from, tc.desc, got, tc.want)
		}
	}
	for _, tc := range []struct {
		id        string
		k         int
		desc      bool
		next, aft string
	}{
		{"5-1", 0, false, "5-1", "5-1@1"},
		{"5-1", 1, false, "5-1@1", "5-1@2"},
		{"5-1", 2, false, "5-1@2", "5-2"},
		{"5-1", 2, true, "5-1", ""},
		{"5-1", 0, true, "5-1@0", ""},
	} {
		if got := formatCursor(tc.id, tc.k, p, tc.desc); got != tc.next {
			t.Errorf("formatCursor(%s, %d, desc %v): got %s, want %s", tc.id, tc.k, tc.desc, got, tc.next)
		}
		if tc.aft != "" {
			if got := cursorAfter(tc.id, tc.k, p); got != tc.aft {
				t.Errorf("cursorAfter(%s, %d): got %s, want %s", tc.id, tc.k, got, tc.aft)
			}
		}
	}
	if got := formatCursor("5-1", 0, parts{topic: "t", n: 1}, true); got != "5-1" {
		t.Errorf("unpartitioned cursor: got %s, want the plain id", got)
	}
}

// TestPartitionedOnCluster: a partitioned topic's streams live in other
// slots, on other masters; listing, reading, redriving, pausing and
// seeking reach them all.
func TestPartitionedOnCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	rdb := c.Client(t)
	const n = 4
	// A topic whose partitions are on more than one master (chance puts
	// all four on one now and then: take another name then).
	var topic string
	masters := map[string]bool{}
	for range 20 {
		topic = redistest.UniqueTopic(t, "parts")
		clear(masters)
		for k := range n {
			masters[c.MasterFor(stream.Key(stream.PartitionTopic(topic, k)))] = true
		}
		if len(masters) > 1 {
			break
		}
	}
	srv := httptest.NewServer(New(rdb, Config{Partitions: map[string]int{topic: n}, Settle: time.Millisecond}, zerolog.Nop()))
	t.Cleanup(srv.Close)
	f := &fixture{t: t, srv: srv, topic: topic}
	ctx := context.Background()
	pub := stream.NewPublisher(rdb, stream.PublisherOptions{IdempotencyTTL: time.Minute}, zerolog.Nop())
	for k := range n {
		pt := stream.PartitionTopic(topic, k)
		if err := rdb.XGroupCreateMkStream(ctx, stream.Key(pt), "g", "$").Err(); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			rc, err := pub.Publish(ctx, pt, testEvent(10*k+i))
			if err != nil {
				t.Fatal(err)
			}
			vals := append(testEvent(10*k+i).Values(), "error", "no", "attempts", "1", "group", "g", "original_id", rc.StreamID)
			if i == 0 {
				if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream.DLQKey(pt), Values: vals}).Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	t.Logf("%d partitions on %d masters", n, len(masters))
	if len(masters) < 2 {
		t.Fatalf("the %d partitions share one master; want them spread", n)
	}

	var topics map[string][]Topic
	f.call("GET", "/v1/topics", nil, &topics)
	if ts := topics["topics"]; len(ts) != 1 || ts[0].Partitions != n || ts[0].Length != 2*n || ts[0].DLQLength != n ||
		len(ts[0].Groups) != 1 || ts[0].Groups[0].Lag != 2*n || ts[0].Groups[0].DLQLength != n {
		t.Fatalf("topics: got %+v, want %s with %d partitions, %d events, %d dead letters, g lagging %d", ts, topic, n, 2*n, n, 2*n)
	}

	var page eventsPage
	f.call("GET", "/v1/topics/"+topic+"/events", nil, &page)
	seen := map[int]int{}
	for i, e := range page.Events {
		seen[*e.Partition]++
		if i > 0 && idLess(e.StreamID, page.Events[i-1].StreamID) {
			t.Fatalf("events out of order: %s after %s", e.StreamID, page.Events[i-1].StreamID)
		}
	}
	if len(page.Events) != 2*n || len(seen) != n {
		t.Fatalf("events: got %d from partitions %v, want %d from all %d", len(page.Events), seen, 2*n, n)
	}

	var dlq dlqPage
	f.call("GET", "/v1/topics/"+topic+"/dlq?group=g", nil, &dlq)
	if len(dlq.Entries) != n {
		t.Fatalf("dead letters: got %d, want %d", len(dlq.Entries), n)
	}
	var rr redriveResponse
	if code, raw := f.call("POST", "/v1/topics/"+topic+"/dlq/redrive", map[string]any{"group": "g", "ids": []string{"ev-30"}}, &rr); code != 200 || rr.Redriven != 1 {
		t.Fatalf("redrive ev-30: got %d %s", code, raw)
	}
	if l := rdb.XLen(ctx, stream.Key(stream.PartitionTopic(topic, 3))).Val(); l != 3 {
		t.Fatalf("partition 3 after redriving ev-30: %d entries, want 3", l)
	}
	f.call("POST", "/v1/topics/"+topic+"/dlq/redrive", map[string]any{"group": "g"}, &rr)
	if rr.Redriven != n-1 || rr.Remaining != 0 {
		t.Fatalf("redrive the rest: got %+v, want %d redriven", rr, n-1)
	}

	var pr pauseResponse
	if code, raw := f.call("POST", "/v1/subscriptions/"+topic+"/g/pause", nil, &pr); code != 200 || pr.Partitions != n {
		t.Fatalf("pause: got %d %s", code, raw)
	}
	for k := range n {
		if rdb.Exists(ctx, stream.PauseKey(stream.PartitionTopic(topic, k), "g")).Val() != 1 {
			t.Fatalf("partition %d not paused", k)
		}
	}
	f.call("POST", "/v1/subscriptions/"+topic+"/g/resume", nil, &pr)
	var sr partitionedSeekResponse
	if code, raw := f.call("POST", "/v1/subscriptions/"+topic+"/g/seek", map[string]string{"to": "latest"}, &sr); code != 200 || len(sr.Partitions) != n {
		t.Fatalf("seek: got %d %s", code, raw)
	}
	for k := range n {
		key := stream.Key(stream.PartitionTopic(topic, k))
		if rdb.Exists(ctx, stream.PauseKey(stream.PartitionTopic(topic, k), "g")).Val() != 0 {
			t.Fatalf("partition %d still paused after the resume", k)
		}
		info := rdb.XInfoStream(ctx, key).Val()
		if sr.Partitions[k].To != info.LastGeneratedID {
			t.Fatalf("partition %d after seek to latest: %+v, want to %s", k, sr.Partitions[k], info.LastGeneratedID)
		}
	}
}
