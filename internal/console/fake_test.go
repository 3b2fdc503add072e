package console

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/health"
	"github.com/fogis-sidecar/sidecar/internal/relay"
	"github.com/fogis-sidecar/sidecar/internal/spool"
	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// fakeAPI serves the console beside a fake of /readyz, /v1/status (built
// from internal/health's own types, so its JSON is the real shape) and the
// admin API of the shared spec, and records every API request.
type fakeAPI struct {
	t      *testing.T
	token  string // "" = open
	server *httptest.Server

	mu        sync.Mutex
	ready     string
	reasons   []string
	topics    []*fakeTopic
	subs      []fakeSub
	requests  []apiRequest
	fail      map[string]apiError // "METHOD /path" → the answer
	statusN   int
	wobble    bool // vary the lag on every /v1/status (sparklines)
	wobbleN   int  // the step of the curve; frozen with wobble off
	frozen    bool
	spoolSize int64
	seq       int64
}

type fakeSub struct{ topic, group string }

type apiError struct {
	status  int
	code, m string
}

// apiRequest is one request the fake received.
type apiRequest struct {
	Method, Path, Query, Body, Auth string
}

type fakeTopic struct {
	name   string
	groups []*fakeGroup
	events []fakeEvent // oldest first
	dlq    []fakeEvent // oldest first
}

type fakeGroup struct {
	Group           string `json:"group"`
	Lag             int64  `json:"lag"`
	Pending         int64  `json:"pending"`
	LastDeliveredID string `json:"last_delivered_id"`
	Consumers       int    `json:"consumers"`
	Paused          bool   `json:"paused"`
	DLQLength       int64  `json:"dlq_length"`
	delivered       uint64
	retried         uint64
	lastError       string
}

// fakeEvent is EVENT of the spec, with the dead-letter fields.
type fakeEvent struct {
	StreamID    string            `json:"stream_id"`
	ID          string            `json:"id"`
	Source      string            `json:"source"`
	Type        string            `json:"type"`
	Time        string            `json:"time"`
	Subject     string            `json:"subject,omitempty"`
	ContentType string            `json:"content_type"`
	DataSchema  string            `json:"dataschema,omitempty"`
	Traceparent string            `json:"traceparent,omitempty"`
	Tracestate  string            `json:"tracestate,omitempty"`
	Extensions  map[string]string `json:"extensions"`
	Data        *string           `json:"data,omitempty"`
	DataBase64  string            `json:"data_base64,omitempty"`
	Size        int               `json:"size"`
	DLQID       string            `json:"dlq_id,omitempty"`
	Group       string            `json:"group,omitempty"`
	Attempts    int               `json:"attempts,omitempty"`
	Error       string            `json:"error,omitempty"`
	OriginalID  string            `json:"original_id,omitempty"`
}

func newFakeAPI(t *testing.T, token string) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, token: token, ready: "ready", fail: map[string]apiError{}, spoolSize: 1258291}
	mux := http.NewServeMux()
	mux.Handle("GET /", Handler())
	mux.Handle("GET /console/", Handler())
	mux.HandleFunc("GET /readyz", f.readyz)
	mux.HandleFunc("GET /v1/status", f.guard(f.status))
	mux.HandleFunc("GET /v1/topics", f.guard(f.listTopics))
	mux.HandleFunc("GET /v1/topics/{topic}/events", f.guard(f.events))
	mux.HandleFunc("GET /v1/topics/{topic}/dlq", f.guard(f.listDLQ))
	mux.HandleFunc("DELETE /v1/topics/{topic}/dlq", f.guard(f.purge))
	mux.HandleFunc("POST /v1/topics/{topic}/dlq/redrive", f.guard(f.redrive))
	mux.HandleFunc("POST /v1/subscriptions/{topic}/{group}/{op}", f.guard(f.subscription))
	f.server = httptest.NewServer(mux)
	t.Cleanup(f.server.Close)
	return f
}

// streamID returns an id ago before now, unique within the fake.
func (f *fakeAPI) streamID(ago time.Duration) string {
	f.seq++
	return fmt.Sprintf("%d-%d", time.Now().Add(-ago).UnixMilli(), f.seq)
}

func (f *fakeAPI) addTopic(name string, groups ...*fakeGroup) *fakeTopic {
	f.mu.Lock()
	defer f.mu.Unlock()
	tp := &fakeTopic{name: name, groups: groups}
	f.topics = append(f.topics, tp)
	for _, g := range groups {
		f.subs = append(f.subs, fakeSub{name, g.Group})
	}
	return tp
}

func (f *fakeAPI) newEvent(topic string, ago time.Duration, typ, subject, data string) fakeEvent {
	d := data
	return fakeEvent{
		StreamID: f.streamID(ago), ID: fmt.Sprintf("01JF%022d", f.seq), Source: "match-list-processor", Type: typ,
		Time: time.Now().Add(-ago).UTC().Format(time.RFC3339Nano), Subject: subject, ContentType: "application/json",
		Traceparent: fmt.Sprintf("00-%032x-%016x-01", f.seq, f.seq), Extensions: map[string]string{"topic": topic},
		Data: &d, Size: len(data),
	}
}

// addEvent appends an event to a topic's log.
func (f *fakeAPI) addEvent(tp *fakeTopic, ago time.Duration, typ, subject, data string) fakeEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.newEvent(tp.name, ago, typ, subject, data)
	tp.events = append(tp.events, e)
	return e
}

// addDead adds a dead letter of group to a topic's DLQ.
func (f *fakeAPI) addDead(tp *fakeTopic, group string, ago time.Duration, typ, data, errText string, attempts int) fakeEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.newEvent(tp.name, ago+time.Minute, typ, "", data)
	e.OriginalID, e.DLQID, e.Group, e.Attempts, e.Error = e.StreamID, f.streamID(ago), group, attempts, errText
	tp.dlq = append(tp.dlq, e)
	return e
}

func (f *fakeAPI) setReady(status string, reasons ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready, f.reasons = status, reasons
}

// setWobble varies the lag on every /v1/status, for sparklines.
func (f *fakeAPI) setWobble(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wobble = on
}

// freezeWobble holds the varied lag where it is.
func (f *fakeAPI) freezeWobble() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = true
}

// failWith makes "METHOD /path" answer an error.
func (f *fakeAPI) failWith(route string, status int, code, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[route] = apiError{status, code, msg}
}

// requestsTo returns the recorded requests with this method and path.
func (f *fakeAPI) requestsTo(method, path string) []apiRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []apiRequest
	for _, r := range f.requests {
		if r.Method == method && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeAPI) allRequests() []apiRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func (f *fakeAPI) statusCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statusN
}

func (f *fakeAPI) topic(name string) *fakeTopic {
	for _, tp := range f.topics {
		if tp.name == name {
			return tp
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeAPI) guard(h func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests = append(f.requests, apiRequest{r.Method, r.URL.Path, r.URL.RawQuery, string(body), r.Header.Get("Authorization")})
		failed, fails := f.fail[r.Method+" "+r.URL.Path]
		f.mu.Unlock()
		if f.token != "" && r.Header.Get("Authorization") != "Bearer "+f.token {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token", "code": "unauthorized"})
			return
		}
		if fails {
			writeJSON(w, failed.status, map[string]string{"error": failed.m, "code": failed.code})
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		f.mu.Lock()
		defer f.mu.Unlock()
		h(w, r)
	}
}

func (f *fakeAPI) readyz(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	subs := map[string]string{}
	for _, s := range f.subs {
		subs[s.topic+"/"+s.group] = "running"
	}
	code := http.StatusOK
	if f.ready == "not_ready" || f.ready == "draining" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, health.Report{Status: f.ready, Redis: health.RedisState{Up: true, LatencyMS: 0.41, Since: time.Now().Add(-time.Hour)},
		Spool: "writable", Subscriptions: subs, Reasons: f.reasons})
}

func (f *fakeAPI) status(w http.ResponseWriter, _ *http.Request) {
	f.statusN++
	if f.wobble && !f.frozen {
		f.wobbleN++
	}
	rep := health.StatusReport{
		Service: "match-list-processor", Consumer: "match-list-processor-7d9f", Version: "v1.4.0", UptimeSeconds: 3*3600 + 25*60,
		Redis: health.RedisStatus{URL: "redis://redis:6379/0", RedisState: health.RedisState{Up: true, LatencyMS: 0.41, Since: time.Now().Add(-3 * time.Hour)},
			RedisInfo: health.RedisInfo{Version: "7.4.2", UsedMemory: 38 << 20, MaxMemory: 256 << 20, MaxMemoryPolicy: "noeviction", AOFEnabled: true, AOFLastWrite: "ok"}, Persistent: true},
		Spool:     relay.Stats{Spool: spool.Stats{Events: 3, Bytes: f.spoolSize, MaxBytes: 1 << 30, Segments: 1}, Spooled: 1520, Drained: 1517},
		Topics:    map[string]map[string]uint64{},
		Fallbacks: map[string]uint64{},
	}
	for _, s := range f.subs {
		tp := f.topic(s.topic)
		var g *fakeGroup
		for _, x := range tp.groups {
			if x.Group == s.group {
				g = x
			}
		}
		lag := g.Lag
		if f.wobble && lag > 0 {
			lag = wobble(lag, f.wobbleN, len(s.group))
		}
		dead := 0
		for _, e := range tp.dlq {
			if e.Group == s.group {
				dead++
			}
		}
		var oldest float64
		if g.Pending > 0 {
			oldest = 4.2
		}
		rep.Subscriptions = append(rep.Subscriptions, health.SubscriptionStatus{
			Topic: s.topic, Group: s.group, Consumer: "match-list-processor-7d9f", URL: "http://" + s.group + ":8080/events", Running: true,
			ConsumerState: health.ConsumerState{Lag: lag, Pending: g.Pending, OldestSeconds: oldest, DLQLength: int64(len(tp.dlq)), Paused: g.Paused, ReadAt: time.Now()},
			Stats:         stream.Stats{Delivered: g.delivered, Retried: g.retried, DeadLettered: uint64(dead), LastDelivery: time.Now().Add(-3 * time.Second), LastError: g.lastError},
		})
		rep.Topics[s.topic] = map[string]uint64{"stream": uint64(len(tp.events)) * 40, "spooled": 12}
	}
	writeJSON(w, http.StatusOK, rep)
}

// wobble makes a believable lag curve: a backlog that builds and drains.
func wobble(base int64, n, salt int) int64 {
	x := float64((n + salt*3) % 24)
	if x > 12 {
		x = 24 - x
	}
	return base/4 + int64(float64(base)*x/12*0.75)
}

func (f *fakeAPI) listTopics(w http.ResponseWriter, _ *http.Request) {
	type topicJSON struct {
		Topic     string       `json:"topic"`
		Length    int          `json:"length"`
		FirstID   string       `json:"first_id"`
		LastID    string       `json:"last_id"`
		DLQLength int          `json:"dlq_length"`
		Groups    []*fakeGroup `json:"groups"`
	}
	out := []topicJSON{}
	for _, tp := range f.topics {
		var groups []*fakeGroup
		for _, g := range tp.groups {
			c := *g
			if f.wobble && c.Lag > 0 {
				c.Lag = wobble(c.Lag, f.wobbleN, len(c.Group))
			}
			c.DLQLength = int64(len(f.deadOf(tp, c.Group)))
			groups = append(groups, &c)
		}
		j := topicJSON{Topic: tp.name, Length: len(tp.events), DLQLength: len(tp.dlq), Groups: groups}
		if n := len(tp.events); n > 0 {
			j.FirstID, j.LastID = tp.events[0].StreamID, tp.events[n-1].StreamID
		}
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b topicJSON) int { return strings.Compare(a.Topic, b.Topic) })
	writeJSON(w, http.StatusOK, map[string]any{"topics": out})
}

func (f *fakeAPI) topicOr404(w http.ResponseWriter, r *http.Request) *fakeTopic {
	tp := f.topic(r.PathValue("topic"))
	if tp == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such topic", "code": "not_found"})
	}
	return tp
}

func limitOf(r *http.Request, def int) int {
	if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 {
		return n
	}
	return def
}

func (f *fakeAPI) events(w http.ResponseWriter, r *http.Request) {
	tp := f.topicOr404(w, r)
	if tp == nil {
		return
	}
	evs := slices.Clone(tp.events)
	if r.URL.Query().Get("order") == "desc" {
		slices.Reverse(evs)
	}
	limit, next := limitOf(r, 50), ""
	if len(evs) > limit {
		next, evs = evs[limit].StreamID, evs[:limit]
	}
	writeJSON(w, http.StatusOK, map[string]any{"topic": tp.name, "events": evs, "next": next})
}

func (f *fakeAPI) deadOf(tp *fakeTopic, group string) []fakeEvent {
	var out []fakeEvent
	for _, e := range tp.dlq {
		if group == "" || e.Group == group {
			out = append(out, e)
		}
	}
	return out
}

func (f *fakeAPI) listDLQ(w http.ResponseWriter, r *http.Request) {
	tp := f.topicOr404(w, r)
	if tp == nil {
		return
	}
	entries := f.deadOf(tp, r.URL.Query().Get("group"))
	if entries == nil {
		entries = []fakeEvent{}
	}
	limit, next := limitOf(r, 50), ""
	if len(entries) > limit {
		next, entries = entries[limit].DLQID, entries[:limit]
	}
	writeJSON(w, http.StatusOK, map[string]any{"topic": tp.name, "entries": entries, "next": next})
}

// take removes up to limit dead letters of group (those named in ids, or
// all) and returns how many it removed and how many matching remain.
func (f *fakeAPI) take(tp *fakeTopic, group string, ids []string, limit int) (taken, remaining int) {
	var keep []fakeEvent
	for _, e := range tp.dlq {
		match := e.Group == group && (len(ids) == 0 || slices.Contains(ids, e.DLQID) || slices.Contains(ids, e.ID))
		switch {
		case match && taken < limit:
			taken++
		case match:
			remaining++
			keep = append(keep, e)
		default:
			keep = append(keep, e)
		}
	}
	tp.dlq = keep
	return taken, remaining
}

func (f *fakeAPI) hasGroup(tp *fakeTopic, group string) bool {
	return slices.ContainsFunc(tp.groups, func(g *fakeGroup) bool { return g.Group == group })
}

func (f *fakeAPI) redrive(w http.ResponseWriter, r *http.Request) {
	tp := f.topicOr404(w, r)
	if tp == nil {
		return
	}
	var req struct {
		Group string   `json:"group"`
		IDs   []string `json:"ids"`
		Limit int      `json:"limit"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error(), "code": "bad_body"})
		return
	}
	if !f.hasGroup(tp, req.Group) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no consumer group %q on topic %q", req.Group, tp.name), "code": "no_such_group"})
		return
	}
	if req.Limit <= 0 {
		req.Limit = 1000
	}
	n, rest := f.take(tp, req.Group, req.IDs, req.Limit)
	writeJSON(w, http.StatusOK, map[string]any{"topic": tp.name, "group": req.Group, "redriven": n, "remaining": rest})
}

func (f *fakeAPI) purge(w http.ResponseWriter, r *http.Request) {
	tp := f.topicOr404(w, r)
	if tp == nil {
		return
	}
	group := r.URL.Query().Get("group")
	if !f.hasGroup(tp, group) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no consumer group %q on topic %q", group, tp.name), "code": "no_such_group"})
		return
	}
	var ids []string
	if s := r.URL.Query().Get("ids"); s != "" {
		ids = strings.Split(s, ",")
	}
	n, _ := f.take(tp, group, ids, 1<<30)
	writeJSON(w, http.StatusOK, map[string]any{"topic": tp.name, "group": group, "purged": n})
}

func (f *fakeAPI) subscription(w http.ResponseWriter, r *http.Request) {
	tp := f.topicOr404(w, r)
	if tp == nil {
		return
	}
	var g *fakeGroup
	for _, x := range tp.groups {
		if x.Group == r.PathValue("group") {
			g = x
		}
	}
	if g == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such group", "code": "no_such_group"})
		return
	}
	switch r.PathValue("op") {
	case "pause", "resume":
		g.Paused = r.PathValue("op") == "pause"
		writeJSON(w, http.StatusOK, map[string]any{"topic": tp.name, "group": g.Group, "paused": g.Paused})
	case "seek":
		var req struct {
			To string `json:"to"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.To == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "to: a stream id, an RFC 3339 time, earliest or latest", "code": "bad_position"})
			return
		}
		from := g.LastDeliveredID
		g.LastDeliveredID = map[string]string{"earliest": "0-0", "latest": "9999999999999-0"}[req.To]
		if g.LastDeliveredID == "" {
			g.LastDeliveredID = req.To
		}
		writeJSON(w, http.StatusOK, map[string]any{"topic": tp.name, "group": g.Group, "from": from, "to": g.LastDeliveredID})
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such endpoint", "code": "not_found"})
	}
}

// realistic fills the fake with what a FOGIS deployment shows: two
// topics, three groups, a few dead letters. It returns the dead letters.
func (f *fakeAPI) realistic() []fakeEvent {
	matches := f.addTopic("fogis:matches:updates",
		&fakeGroup{Group: "calendar", Lag: 0, Pending: 1, Consumers: 2, delivered: 48213, retried: 37},
		&fakeGroup{Group: "notifier", Lag: 12345, Pending: 3, Consumers: 1, delivered: 30877, retried: 412,
			lastError: "POST http://notifier:8080/events: 503 Service Unavailable"})
	cal := f.addTopic("fogis:calendar:sync",
		&fakeGroup{Group: "calendar-sync", Lag: 4, Pending: 0, Consumers: 1, delivered: 9120, retried: 2})
	teams := []string{"IFK Göteborg – AIK", "Hammarby IF – Djurgårdens IF", "Malmö FF – BK Häcken", "IF Elfsborg – IFK Norrköping", "Kalmar FF – Mjällby AIF"}
	for i := range 18 {
		id := 6140000 + i*17
		f.addEvent(matches, time.Duration(18-i)*47*time.Second, "se.fogis.match.updated", fmt.Sprintf("match/%d", id),
			fmt.Sprintf(`{"matchid":%d,"match":%q,"arena":"Gamla Ullevi","kickoff":"2026-12-0%dT15:00:00+01:00","referees":[{"name":"Anna Berg","role":"huvuddomare"}],"changed":["kickoff"]}`,
				id, teams[i%len(teams)], 1+i%9))
	}
	for i := range 6 {
		f.addEvent(cal, time.Duration(6-i)*5*time.Minute, "se.fogis.calendar.sync", "",
			fmt.Sprintf(`{"status":"requested","matches":%d}`, 3+i))
	}
	f.mu.Lock()
	for _, tp := range f.topics {
		last := tp.events[len(tp.events)-1].StreamID
		for _, g := range tp.groups {
			g.LastDeliveredID = last
			if g.Lag > 0 {
				g.LastDeliveredID = tp.events[len(tp.events)/2].StreamID
			}
		}
	}
	f.mu.Unlock()
	var dead []fakeEvent
	dead = append(dead, f.addDead(matches, "notifier", 41*time.Minute, "se.fogis.match.updated",
		`{"matchid":6140017,"match":"Hammarby IF – Djurgårdens IF","changed":["referees"]}`, "POST http://notifier:8080/events: 500 Internal Server Error: template \"referee-changed\" not found", 8))
	dead = append(dead, f.addDead(matches, "notifier", 26*time.Minute, "se.fogis.match.updated",
		`{"matchid":6140034,"match":"Malmö FF – BK Häcken","changed":["arena"]}`, "POST http://notifier:8080/events: 503 Service Unavailable", 8))
	dead = append(dead, f.addDead(matches, "calendar", 12*time.Minute, "se.fogis.match.updated",
		`{"matchid":6140051,"match":"IF Elfsborg – IFK Norrköping","kickoff":"not a time"}`, "POST http://calendar:5003/sync: 422 Unprocessable Entity: kickoff: invalid RFC 3339 time", 8))
	dead = append(dead, f.addDead(cal, "calendar-sync", 3*time.Minute, "se.fogis.calendar.sync",
		`{"status":"requested","matches":4}`, "POST http://calendar:5003/sync: context deadline exceeded (Client.Timeout exceeded while awaiting headers)", 8))
	return dead
}
