package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// The event log's admin API end to end: real sidecar binaries, a real
// Redis, real webhook receivers. Two services subscribe to one topic:
// calendar (the group an operator works on) and phonebook (another group,
// which must never see the operator's redrives or replays).

// admSetup is one topic with a publisher and two subscribing services.
type admSetup struct {
	t          *testing.T
	redis      *redistest.Server
	topic      string
	pub        *sidecar
	cal, phone *sidecar
	rcCal      *receiver
	rcPhone    *receiver
	token      string
}

// admSubscriberYAML is a subscriber's config: one subscription, in order
// (concurrency 1), a 4xx dead-lettered at once.
func admSubscriberYAML(service, consumer, topic, url, extra string) string {
	return fmt.Sprintf(`service: %s
consumer: %s
subscriptions:
  - topic: %s
    url: %s
    concurrency: 1
    max_attempts: 3
    backoff: {initial: 20ms, max: 100ms}
%s`, service, consumer, topic, url, extra)
}

func startAdmSetup(t *testing.T, prefix string, calEnv ...string) *admSetup {
	t.Helper()
	s := &admSetup{t: t, redis: redistest.StartProcess(t), rcCal: newReceiver(t), rcPhone: newReceiver(t)}
	s.topic = redistest.UniqueTopic(t, prefix)
	s.pub = startSidecar(t, "processor", "REDIS_URL="+s.redis.URL, "SIDECAR_SERVICE=processor")
	s.cal = startSidecar(t, "calendar", append([]string{"REDIS_URL=" + s.redis.URL,
		"SIDECAR_CONFIG=" + writeConfig(t, admSubscriberYAML("calendar", "cal-1", s.topic, s.rcCal.url(), ""))}, calEnv...)...)
	s.phone = startSidecar(t, "phonebook", "REDIS_URL="+s.redis.URL,
		"SIDECAR_CONFIG="+writeConfig(t, admSubscriberYAML("phonebook", "phone-1", s.topic, s.rcPhone.url(), "")))
	return s
}

// call sends an admin request to the calendar sidecar and decodes a 2xx
// JSON answer into out; it returns the status and the body.
func (s *admSetup) call(method, path string, body any, out any) (int, string) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, s.cal.url(path), rd)
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return resp.StatusCode, string(raw)
}

// mustCall is call requiring a 200.
func (s *admSetup) mustCall(method, path string, body any, out any) {
	s.t.Helper()
	if code, raw := s.call(method, path, body, out); code != http.StatusOK {
		s.t.Fatalf("%s %s: got %d %s, want 200", method, path, code, raw)
	}
}

type admGroup struct {
	Group           string `json:"group"`
	Lag             int64  `json:"lag"`
	Pending         int64  `json:"pending"`
	LastDeliveredID string `json:"last_delivered_id"`
	Paused          bool   `json:"paused"`
	DLQLength       int64  `json:"dlq_length"`
}

type admTopic struct {
	Topic     string     `json:"topic"`
	Length    int64      `json:"length"`
	LastID    string     `json:"last_id"`
	DLQLength int64      `json:"dlq_length"`
	Groups    []admGroup `json:"groups"`
}

// topicInfo reads the topic from GET /v1/topics.
func (s *admSetup) topicInfo() admTopic {
	s.t.Helper()
	var got struct {
		Topics []admTopic `json:"topics"`
	}
	s.mustCall("GET", "/v1/topics", nil, &got)
	for _, tp := range got.Topics {
		if tp.Topic == s.topic {
			return tp
		}
	}
	s.t.Fatalf("GET /v1/topics does not list %s: %+v", s.topic, got.Topics)
	return admTopic{}
}

func (tp admTopic) group(name string) admGroup {
	for _, g := range tp.Groups {
		if g.Group == name {
			return g
		}
	}
	return admGroup{Lag: -2}
}

// caughtUpAll reports whether every listed group has read the whole
// stream and acknowledged what it read.
func (s *admSetup) caughtUpAll(groups ...string) bool {
	tp := s.topicInfo()
	for _, name := range groups {
		g := tp.group(name)
		if g.LastDeliveredID != tp.LastID || g.Pending != 0 || g.Lag != 0 {
			return false
		}
	}
	return true
}

type admDeadLetter struct {
	DLQID      string `json:"dlq_id"`
	ID         string `json:"id"`
	StreamID   string `json:"stream_id"`
	Group      string `json:"group"`
	Attempts   int    `json:"attempts"`
	Error      string `json:"error"`
	OriginalID string `json:"original_id"`
	Data       string `json:"data"`
}

func (s *admSetup) deadLetters(group string) []admDeadLetter {
	s.t.Helper()
	var page struct {
		Entries []admDeadLetter `json:"entries"`
		Next    string          `json:"next"`
	}
	s.mustCall("GET", "/v1/topics/"+s.topic+"/dlq?group="+group+"&limit=1000", nil, &page)
	return page.Entries
}

type admRedrive struct {
	Redriven  int `json:"redriven"`
	Remaining int `json:"remaining"`
}

// since returns what rc received after its first n requests.
func since(rc *receiver, n int) []received { return rc.all()[n:] }

// poisonBody is event i's body; the calendar receiver refuses it (400)
// while refusing is on.
func poisonBody(i int) []byte { return fmt.Appendf(nil, `{"i":%d,"poison":true}`, i) }

// refuseWhile makes rc answer 400 to poison bodies while on is set.
func refuseWhile(rc *receiver, on *atomic.Bool) {
	rc.set(0, func(r received, _ int) int {
		if on.Load() && bytes.Contains(r.Body, []byte(`"poison":true`)) {
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
}

func TestAdminDeadLettersRedriveAndPurge(t *testing.T) {
	s := startAdmSetup(t, "adm-dlq")
	var refusing atomic.Bool
	refusing.Store(true)
	refuseWhile(s.rcCal, &refusing)

	// Six events, three of them refused by calendar: dead-lettered at once.
	var sent []receipt
	for i := range 6 {
		b := body(i)
		if i%2 == 1 {
			b = poisonBody(i)
		}
		sent = append(sent, s.pub.mustPublish(s.topic, b))
	}
	poison := []receipt{sent[1], sent[3], sent[5]}
	eventually.True(t, 15*time.Second, "3 dead letters and phonebook's 6 deliveries", func() bool {
		return len(s.deadLetters("calendar")) == 3 && s.rcPhone.count() == 6
	})
	dead := s.deadLetters("calendar")
	for i, d := range dead {
		if d.ID != poison[i].ID || d.Group != "calendar" || d.Attempts != 1 || !strings.Contains(d.Error, "400") ||
			d.OriginalID != poison[i].StreamID || d.StreamID != poison[i].StreamID || d.Data != string(poisonBody(2*i+1)) {
			t.Fatalf("dead letter %d: got %+v, want event %s (stream id %s), attempts 1, a 400 error", i, d, poison[i].ID, poison[i].StreamID)
		}
	}
	if n := len(s.deadLetters("phonebook")); n != 0 {
		t.Fatalf("phonebook: got %d dead letters, want 0", n)
	}
	eventually.True(t, 10*time.Second, "both groups caught up", func() bool { return s.caughtUpAll("calendar", "phonebook") })
	calBefore, phoneBefore := s.rcCal.count(), s.rcPhone.count()
	refusing.Store(false)

	// Redrive two, one by its DLQ id and one by its event id, named in
	// reverse order: exactly those two reach calendar, in stream order.
	var rr admRedrive
	s.mustCall("POST", "/v1/topics/"+s.topic+"/dlq/redrive",
		map[string]any{"group": "calendar", "ids": []string{dead[2].DLQID, poison[0].ID}}, &rr)
	// Remaining counts what matches the request: the two named.
	if rr != (admRedrive{Redriven: 2, Remaining: 0}) {
		t.Fatalf("redrive 2: got %+v, want 2 redriven, 0 remaining", rr)
	}
	if left := s.deadLetters("calendar"); len(left) != 1 || left[0].ID != poison[1].ID {
		t.Fatalf("calendar DLQ after redriving 2: got %+v, want only %s", left, poison[1].ID)
	}
	eventually.True(t, 10*time.Second, "2 redriven deliveries and both groups caught up", func() bool {
		return s.rcCal.count() >= calBefore+2 && s.caughtUpAll("calendar", "phonebook")
	})
	got := since(s.rcCal, calBefore)
	if want := []string{poison[0].ID, poison[2].ID}; !slices.Equal(ids(got), want) {
		t.Fatalf("calendar after the redrive: got %v, want exactly %v", ids(got), want)
	}
	for i, r := range got {
		if r.Header.Get("Sidecar-Redrive") != "true" || r.Header.Get("Sidecar-Attempt") != "1" || r.Header.Get("ce-id") != r.Header.Get("webhook-id") {
			t.Fatalf("redriven delivery %d headers: %v", i, r.Header)
		}
	}
	if string(got[0].Body) != string(poisonBody(1)) {
		t.Fatalf("redriven body: got %q, want %q", got[0].Body, poisonBody(1))
	}
	if n := s.rcPhone.count(); n != phoneBefore {
		t.Fatalf("phonebook after calendar's redrive: got %d deliveries, want still %d", n, phoneBefore)
	}

	// Redrive the rest (no ids): the third.
	s.mustCall("POST", "/v1/topics/"+s.topic+"/dlq/redrive", map[string]any{"group": "calendar"}, &rr)
	if rr != (admRedrive{Redriven: 1, Remaining: 0}) {
		t.Fatalf("redrive all: got %+v, want 1 redriven, 0 remaining", rr)
	}
	eventually.True(t, 10*time.Second, "the third and both groups caught up", func() bool {
		return s.rcCal.count() >= calBefore+3 && s.caughtUpAll("calendar", "phonebook")
	})
	if got := ids(since(s.rcCal, calBefore+2)); !slices.Equal(got, []string{poison[1].ID}) {
		t.Fatalf("calendar after redrive all: got %v, want %v", got, []string{poison[1].ID})
	}
	if n := s.rcPhone.count(); n != phoneBefore {
		t.Fatalf("phonebook: got %d deliveries, want still %d", n, phoneBefore)
	}
	if n := len(s.deadLetters("calendar")); n != 0 {
		t.Fatalf("calendar DLQ after redrive all: got %d, want 0", n)
	}

	// Purge: two more dead letters, purged; nothing is delivered again.
	refusing.Store(true)
	for i := 6; i < 8; i++ {
		s.pub.mustPublish(s.topic, poisonBody(i))
	}
	eventually.True(t, 10*time.Second, "2 new dead letters, groups caught up", func() bool {
		return len(s.deadLetters("calendar")) == 2 && s.caughtUpAll("calendar", "phonebook")
	})
	calBefore = s.rcCal.count()
	var pr struct {
		Purged int `json:"purged"`
	}
	s.mustCall("DELETE", "/v1/topics/"+s.topic+"/dlq?group=calendar", nil, &pr)
	if pr.Purged != 2 {
		t.Fatalf("purge: got %d purged, want 2", pr.Purged)
	}
	refusing.Store(false)
	if n := len(s.deadLetters("calendar")); n != 0 {
		t.Fatalf("calendar DLQ after purge: got %d, want 0", n)
	}
	if tp := s.topicInfo(); tp.DLQLength != 0 || tp.group("calendar").DLQLength != 0 {
		t.Fatalf("topic after purge: %+v, want no dead letters", tp)
	}
	if !s.caughtUpAll("calendar", "phonebook") || s.rcCal.count() != calBefore {
		t.Fatalf("after purge: calendar got %d more deliveries, want 0", s.rcCal.count()-calBefore)
	}

	// Counted in the metrics and logged with who did it.
	code, metrics := getBody(t, s.cal.url("/metrics"), "")
	for _, want := range []string{
		`sidecar_admin_operations_total{operation="redrive"} 2`, `sidecar_admin_entries_total{operation="redrive"} 3`,
		`sidecar_admin_operations_total{operation="purge"} 1`, `sidecar_admin_entries_total{operation="purge"} 2`,
	} {
		if code != 200 || !strings.Contains(metrics, want) {
			t.Errorf("/metrics: missing %q", want)
		}
	}
	t.Logf("measured: 3 dead letters listed, redriven 2+1 to calendar only (phonebook %d deliveries, unchanged), 2 purged", phoneBefore)
}

// TestAdminRedriveKeepsStreamOrder: with concurrency 1, dead letters
// redriven in several limited calls arrive once each, in the order they
// were published.
func TestAdminRedriveKeepsStreamOrder(t *testing.T) {
	s := startAdmSetup(t, "adm-order")
	var refusing atomic.Bool
	refusing.Store(true)
	refuseWhile(s.rcCal, &refusing)
	var want []string
	for i := range 12 {
		want = append(want, s.pub.mustPublish(s.topic, poisonBody(i)).ID)
	}
	eventually.True(t, 15*time.Second, "12 dead letters, groups caught up", func() bool {
		return len(s.deadLetters("calendar")) == 12 && s.caughtUpAll("calendar", "phonebook")
	})
	refusing.Store(false)
	calBefore, phoneBefore := s.rcCal.count(), s.rcPhone.count()
	var progress []admRedrive
	for len(progress) < 10 {
		var rr admRedrive
		s.mustCall("POST", "/v1/topics/"+s.topic+"/dlq/redrive", map[string]any{"group": "calendar", "limit": 5}, &rr)
		progress = append(progress, rr)
		if rr.Remaining == 0 {
			break
		}
	}
	if fmt.Sprint(progress) != "[{5 7} {5 2} {2 0}]" {
		t.Fatalf("redrive progress: got %v, want [{5 7} {5 2} {2 0}]", progress)
	}
	eventually.True(t, 15*time.Second, "12 redriven deliveries, groups caught up", func() bool {
		return s.rcCal.count() >= calBefore+12 && s.caughtUpAll("calendar", "phonebook")
	})
	if got := ids(since(s.rcCal, calBefore)); !slices.Equal(got, want) {
		t.Fatalf("redriven deliveries: got %v, want once each in publish order %v", got, want)
	}
	if n := s.rcPhone.count(); n != phoneBefore {
		t.Fatalf("phonebook: got %d deliveries, want still %d", n, phoneBefore)
	}
}

// TestAdminSeekReplaysFromATime: seeking calendar to a time before the
// third of five events delivers exactly those three again, in order, to
// calendar alone.
func TestAdminSeekReplaysFromATime(t *testing.T) {
	s := startAdmSetup(t, "adm-seek")
	var sent []receipt
	var at time.Time
	for i := range 5 {
		if i == 2 {
			// T lies after the second event's millisecond, before the third.
			ms := streamMillis(t, sent[1].StreamID)
			at = time.UnixMilli(ms + 1)
			eventually.True(t, time.Second, "the clock past T", func() bool { return time.Now().After(at) })
		}
		sent = append(sent, s.pub.mustPublish(s.topic, body(i)))
	}
	eventually.True(t, 10*time.Second, "5 deliveries each, groups caught up", func() bool {
		return s.rcCal.count() == 5 && s.rcPhone.count() == 5 && s.caughtUpAll("calendar", "phonebook")
	})
	var seek struct{ Topic, Group, From, To string }
	s.mustCall("POST", "/v1/subscriptions/"+s.topic+"/calendar/seek", map[string]string{"to": at.UTC().Format(time.RFC3339Nano)}, &seek)
	if seek.From != sent[4].StreamID || seek.Group != "calendar" || seek.To != streamIDBefore(t, sent[2].StreamID) {
		t.Fatalf("seek: got %+v, want from %s to %s (just before %s)", seek, sent[4].StreamID, streamIDBefore(t, sent[2].StreamID), sent[2].StreamID)
	}
	eventually.True(t, 10*time.Second, "3 replayed deliveries, groups caught up", func() bool {
		return s.rcCal.count() >= 8 && s.caughtUpAll("calendar", "phonebook")
	})
	want := []string{sent[2].ID, sent[3].ID, sent[4].ID}
	if got := ids(since(s.rcCal, 5)); !slices.Equal(got, want) {
		t.Fatalf("replayed to calendar: got %v, want exactly %v", got, want)
	}
	if n := s.rcPhone.count(); n != 5 {
		t.Fatalf("phonebook after calendar's seek: got %d deliveries, want still 5", n)
	}
	t.Logf("measured: seek to %s replayed 3 of 5 events to calendar, 0 to phonebook", at.UTC().Format(time.RFC3339Nano))
}

// TestAdminPauseResume: while calendar is paused nothing reaches it (its
// lag grows to the 4 events published meanwhile) and phonebook goes on;
// resumed, the 4 arrive in order.
func TestAdminPauseResume(t *testing.T) {
	s := startAdmSetup(t, "adm-pause")
	first := s.pub.mustPublish(s.topic, body(0))
	eventually.True(t, 10*time.Second, "the first event delivered to both", func() bool {
		return s.rcCal.count() == 1 && s.rcPhone.count() == 1
	})
	var p struct {
		Paused bool `json:"paused"`
	}
	start := time.Now()
	s.mustCall("POST", "/v1/subscriptions/"+s.topic+"/calendar/pause", nil, &p)
	if !p.Paused {
		t.Fatal("pause answered paused false")
	}
	t.Logf("pause answered in %v (it waits until every replica has stopped reading)", time.Since(start).Round(time.Millisecond))
	if g := s.topicInfo().group("calendar"); !g.Paused {
		t.Fatalf("GET /v1/topics after pause: %+v, want paused", g)
	}
	var want []string
	for i := 1; i <= 4; i++ {
		want = append(want, s.pub.mustPublish(s.topic, body(i)).ID)
	}
	// Phonebook is not paused: its 4 deliveries show the events flowed.
	eventually.True(t, 10*time.Second, "phonebook's 4 deliveries", func() bool { return s.rcPhone.count() == 5 })
	// Calendar: nothing while paused, for longer than a pause check and a
	// blocked read, and the group's lag grows to 4.
	sawLag := false
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end) || !sawLag; time.Sleep(20 * time.Millisecond) {
		if n := s.rcCal.count(); n != 1 {
			t.Fatalf("paused calendar got %d deliveries, want still 1", n)
		}
		if g := s.topicInfo().group("calendar"); g.Lag == 4 && g.Pending == 0 {
			sawLag = true
		}
		if time.Now().After(end.Add(10 * time.Second)) {
			t.Fatalf("calendar's lag never reached 4: %+v", s.topicInfo().group("calendar"))
		}
	}
	eventually.True(t, 10*time.Second, "/v1/status shows calendar paused", func() bool {
		var st struct {
			Subscriptions []struct {
				Group  string `json:"group"`
				Paused bool   `json:"paused"`
			} `json:"subscriptions"`
		}
		_, raw := getBody(t, s.cal.url("/v1/status"), "")
		return json.Unmarshal([]byte(raw), &st) == nil && len(st.Subscriptions) == 1 && st.Subscriptions[0].Paused
	})
	s.mustCall("POST", "/v1/subscriptions/"+s.topic+"/calendar/resume", nil, &p)
	if p.Paused {
		t.Fatal("resume answered paused true")
	}
	eventually.True(t, 10*time.Second, "4 deliveries after the resume, caught up", func() bool {
		return s.rcCal.count() >= 5 && s.caughtUpAll("calendar", "phonebook")
	})
	if got := ids(s.rcCal.all()); !slices.Equal(got, append([]string{first.ID}, want...)) {
		t.Fatalf("calendar: got %v, want %v once each in order", got, append([]string{first.ID}, want...))
	}
	if g := s.topicInfo().group("calendar"); g.Paused {
		t.Fatalf("GET /v1/topics after resume: %+v, want not paused", g)
	}
}

// TestAdminConsumerCleanup: the consumer a stopped replica left (no
// pending entries) is removed; one holding a pending entry is kept and
// named, and once the group is resumed the live replica claims and
// delivers that entry.
func TestAdminConsumerCleanup(t *testing.T) {
	s := startAdmSetup(t, "adm-cleanup", "SIDECAR_CLAIM_TIMEOUT=1s")
	// A second calendar replica reads (creating its consumer), then stops.
	cal2 := startSidecar(t, "calendar-2", "REDIS_URL="+s.redis.URL,
		"SIDECAR_CONFIG="+writeConfig(t, admSubscriberYAML("calendar", "cal-2", s.topic, s.rcCal.url(), "")))
	type consumer struct {
		Name    string `json:"name"`
		Pending int64  `json:"pending"`
		IdleMS  int64  `json:"idle_ms"`
	}
	consumers := func() map[string]consumer {
		var got struct {
			Consumers []consumer `json:"consumers"`
		}
		s.mustCall("GET", "/v1/subscriptions/"+s.topic+"/calendar/consumers", nil, &got)
		out := map[string]consumer{}
		for _, c := range got.Consumers {
			out[c.Name] = c
		}
		return out
	}
	eventually.True(t, 10*time.Second, "cal-1 and cal-2 consumers", func() bool {
		cs := consumers()
		_, ok1 := cs["cal-1"]
		_, ok2 := cs["cal-2"]
		return ok1 && ok2
	})
	if err := cal2.term(15 * time.Second); err != nil {
		t.Fatalf("cal-2 SIGTERM: got %v, want exit 0", err)
	}
	// A third replica's consumer holds an entry: read by hand while the
	// group is paused, so cal-1 does not take it first.
	s.mustCall("POST", "/v1/subscriptions/"+s.topic+"/calendar/pause", nil, nil)
	held := s.pub.mustPublish(s.topic, body(1))
	rdb := s.redis.Client(t)
	if err := rdb.XReadGroup(context.Background(), &goredis.XReadGroupArgs{Group: "calendar", Consumer: "cal-3",
		Streams: []string{"sidecar:{" + s.topic + "}", ">"}, Count: 1, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "cal-2 idle past 200ms", func() bool { return consumers()["cal-2"].IdleMS > 200 })
	var res struct {
		Removed []string `json:"removed"`
		Kept    []struct {
			Name    string `json:"name"`
			Pending int64  `json:"pending"`
			Why     string `json:"why"`
		} `json:"kept"`
	}
	s.mustCall("POST", "/v1/subscriptions/"+s.topic+"/calendar/consumers/cleanup", map[string]string{"idle": "200ms"}, &res)
	if !slices.Equal(res.Removed, []string{"cal-2"}) {
		t.Fatalf("cleanup removed %v, want [cal-2]", res.Removed)
	}
	kept := map[string]string{}
	for _, k := range res.Kept {
		kept[k.Name] = fmt.Sprintf("%d %s", k.Pending, k.Why)
	}
	if len(kept) != 2 || !strings.HasPrefix(kept["cal-3"], "1 ") || !strings.Contains(kept["cal-3"], "pending") || !strings.Contains(kept["cal-1"], "own") {
		t.Fatalf("cleanup kept %v, want cal-3 (1 pending) and cal-1 (own)", kept)
	}
	if cs := consumers(); len(cs) != 2 || cs["cal-3"].Pending != 1 {
		t.Fatalf("consumers after cleanup: %+v, want cal-1 and cal-3 with its pending entry", cs)
	}
	// Resumed, cal-1 claims the entry cal-3 holds and delivers it.
	before := s.rcCal.count()
	s.mustCall("POST", "/v1/subscriptions/"+s.topic+"/calendar/resume", nil, nil)
	eventually.True(t, 15*time.Second, "the held entry delivered", func() bool {
		for _, id := range ids(since(s.rcCal, before)) {
			if id == held.ID {
				return true
			}
		}
		return false
	})
}

// TestAdminGuardWithToken: with api_token set the admin API wants the
// bearer token, while the console's page loads without it.
func TestAdminGuardWithToken(t *testing.T) {
	s := startAdmSetup(t, "adm-token", "SIDECAR_API_TOKEN=adm-t0ken")
	code, raw := s.call("GET", "/v1/topics", nil, nil)
	if code != http.StatusUnauthorized || !strings.Contains(raw, `"unauthorized"`) {
		t.Fatalf("without the token: got %d %s, want 401 unauthorized", code, raw)
	}
	code, raw = s.call("POST", "/v1/subscriptions/"+s.topic+"/calendar/pause", nil, nil)
	if code != http.StatusUnauthorized {
		t.Fatalf("pause without the token: got %d %s, want 401", code, raw)
	}
	s.token = "adm-t0ken"
	if tp := s.topicInfo(); tp.group("calendar").Group != "calendar" {
		t.Fatalf("with the token: got %+v, want calendar listed", tp)
	}
	code, page := getBody(t, s.cal.url("/"), "")
	if code != http.StatusOK || !strings.Contains(strings.ToLower(page), "<html") {
		t.Fatalf("console without the token: got %d %.100q, want the page", code, page)
	}
	// No token set: this loopback client is served.
	if code, raw := getBody(t, s.phone.url("/v1/topics"), ""); code != http.StatusOK || !strings.Contains(raw, s.topic) {
		t.Fatalf("no token, loopback: got %d %.200s, want 200 listing the topic", code, raw)
	}
}

func streamMillis(t *testing.T, id string) int64 {
	t.Helper()
	var ms int64
	if _, err := fmt.Sscanf(id, "%d-", &ms); err != nil {
		t.Fatalf("stream id %q: %v", id, err)
	}
	return ms
}

// streamIDBefore is the stream id just before id.
func streamIDBefore(t *testing.T, id string) string {
	t.Helper()
	var ms, seq uint64
	if _, err := fmt.Sscanf(id, "%d-%d", &ms, &seq); err != nil {
		t.Fatalf("stream id %q: %v", id, err)
	}
	if seq > 0 {
		return fmt.Sprintf("%d-%d", ms, seq-1)
	}
	return fmt.Sprintf("%d-18446744073709551615", ms-1)
}
