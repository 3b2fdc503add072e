package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
)

// seenReq is one request the fake admin API received.
type seenReq struct {
	Method, Path, Query, Body, Auth, ContentType string
}

// fakeAPI stands in for internal/admin: it records every request and
// answers with what the test scripted for it.
type fakeAPI struct {
	srv    *httptest.Server
	mu     sync.Mutex
	reqs   []seenReq
	answer func(r seenReq, n int) (int, string) // n counts requests from 0
}

func newFakeAPI(t *testing.T, answer func(r seenReq, n int) (int, string)) *fakeAPI {
	t.Helper()
	f := &fakeAPI{answer: answer}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sr := seenReq{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Body: string(b),
			Auth: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type")}
		f.mu.Lock()
		n := len(f.reqs)
		f.reqs = append(f.reqs, sr)
		f.mu.Unlock()
		status, body := f.answer(sr, n)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) requests() []seenReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenReq(nil), f.reqs...)
}

// env is a getenv over a map.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// runCLI runs the whole program with args, as main would.
func runCLI(ctx context.Context, getenv func(string) string, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	err := run(ctx, args, getenv, &out, &errOut)
	return out.String(), errOut.String(), err
}

// sameJSON reports whether a and b are the same JSON document.
func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, a)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// threeMinAgo is a stream id three minutes old (for the "3m ago" columns).
func threeMinAgo() string {
	return strconv.FormatInt(time.Now().Add(-3*time.Minute-5*time.Second).UnixMilli(), 10) + "-0"
}

// TestCLICommands runs each command against the fake API, with a table and
// with --json: the request it sends (method, path, query, body, token) and
// what it prints.
func TestCLICommands(t *testing.T) {
	dlqID := threeMinAgo()
	cases := []struct {
		name                string
		args                []string
		answer              string
		method, path, query string
		body                string // JSON, compared as a document; "" = no body
		wantOut, wantStderr []string
		wantNoOut           []string
	}{
		{
			name: "topics", args: []string{"topics"},
			answer: `{"topics":[
				{"topic":"orders","length":12345,"first_id":"1-0","last_id":"9-0","dlq_length":3,"groups":[
					{"group":"billing","lag":1234567,"pending":2,"last_delivered_id":"8-0","consumers":2,"paused":true,"dlq_length":3},
					{"group":"shipping","lag":-1,"pending":0,"last_delivered_id":"9-0","consumers":1,"paused":false,"dlq_length":-1}]},
				{"topic":"empty","length":0,"first_id":"","last_id":"","dlq_length":0,"groups":[]},
				{"topic":"odd","length":0,"first_id":"","last_id":"","dlq_length":0,"groups":[],"error":"WRONGTYPE Operation against a key holding the wrong kind of value"}]}`,
			method: "GET", path: "/v1/topics",
			wantOut: []string{
				"TOPIC   LENGTH  DLQ  GROUP     LAG        PENDING  GROUP DLQ  CONSUMERS  PAUSED",
				"orders  12,345  3    billing   1,234,567  2        3          2          yes",
				"                     shipping  ?          0        ?          1          no",
				"empty   0       0    -",
				"odd     -                                                                (cannot read it: WRONGTYPE Operation against a key holding the wrong kind of value)",
			},
		},
		{
			name: "events page", args: []string{"events", "orders", "--from", "2026-11-26T17:00:00Z", "--limit", "2"},
			answer: `{"topic":"orders","events":[
				{"stream_id":"1764176400000-0","id":"01JQ0000000000000000000001","source":"calendar","type":"match.updated","time":"2026-11-26T17:00:00.123456Z","content_type":"application/json","data":"{\"match_id\":42,\n\"x\":1}","size":21},
				{"stream_id":"1764176400001-0","id":"01JQ0000000000000000000002","source":"calendar","type":"blob","time":"2026-11-26T17:00:01Z","content_type":"application/octet-stream","data_base64":"AAEC","size":3},
				{"stream_id":"1764176400001-1","id":"01JQ0000000000000000000001","source":"calendar","type":"match.updated","time":"2026-11-26T17:00:00.123456Z","content_type":"application/json","data":"{}","size":2,"redrive_group":"billing","redriven_from":"1764176400005-0"}],
				"next":"1764176400002-0"}`,
			method: "GET", path: "/v1/topics/orders/events", query: "from=2026-11-26T17%3A00%3A00Z&limit=2",
			wantOut: []string{
				"STREAM ID             TIME                      ID                          TYPE                      SIZE  DATA",
				`1764176400000-0       2026-11-26T17:00:00.123Z  01JQ0000000000000000000001  match.updated               21  {"match_id":42,\n"x":1}`,
				"1764176400001-0       2026-11-26T17:00:01.000Z  01JQ0000000000000000000002  blob                         3  (binary)",
				"1764176400001-1       2026-11-26T17:00:00.123Z  01JQ0000000000000000000001  match.updated                2  (redrive to billing) {}",
			},
			wantStderr: []string{"more: sidecar events orders --from 1764176400002-0"},
		},
		{
			name: "dlq ls", args: []string{"dlq", "ls", "orders", "--group", "billing"},
			answer: `{"topic":"orders","entries":[
				{"stream_id":"` + dlqID + `","dlq_id":"` + dlqID + `","group":"billing","attempts":"5","error":"webhook answered 500:\nboom","original_id":"1-0",
				 "id":"01JQ0000000000000000000001","type":"match.updated","time":"2026-11-26T17:00:00Z","data":"{}","size":2}],"next":""}`,
			method: "GET", path: "/v1/topics/orders/dlq", query: "group=billing",
			wantOut: []string{
				"DLQ ID           DEAD    GROUP    ATTEMPTS  EVENT ID                    TYPE           ERROR",
				dlqID + "  3m ago  billing  5         01JQ0000000000000000000001  match.updated  webhook answered 500:\\nboom",
			},
		},
		{
			name: "dlq redrive by id", args: []string{"dlq", "redrive", "orders", "--group", "billing", "1700000000000-0", "01JQ0000000000000000000001"},
			answer: `{"topic":"orders","group":"billing","redriven":2,"remaining":0}`,
			method: "POST", path: "/v1/topics/orders/dlq/redrive",
			body:    `{"group":"billing","ids":["1700000000000-0","01JQ0000000000000000000001"],"limit":1000}`,
			wantOut: []string{"redriven 2 dead letters of orders to group billing"},
		},
		{
			name: "dlq redrive names ids it did not find", args: []string{"dlq", "redrive", "orders", "--group", "billing", "1-0", "nope", "gone"},
			answer: `{"topic":"orders","group":"billing","redriven":1,"remaining":0,"not_found":["gone","nope"]}`,
			method: "POST", path: "/v1/topics/orders/dlq/redrive",
			body:       `{"group":"billing","ids":["1-0","nope","gone"],"limit":1000}`,
			wantOut:    []string{"redriven 1 dead letter of orders to group billing"},
			wantStderr: []string{"not dead letters of group billing (left alone): gone, nope"},
		},
		{
			name: "dlq purge by id", args: []string{"dlq", "purge", "orders", "--group", "billing", "1-0", "2-0"},
			answer: `{"topic":"orders","group":"billing","purged":2}`,
			method: "DELETE", path: "/v1/topics/orders/dlq", query: "group=billing&ids=1-0%2C2-0",
			wantOut: []string{"purged 2 dead letters of orders (group billing)"},
		},
		{
			name: "dlq purge all", args: []string{"dlq", "purge", "orders", "--group", "billing", "--yes"},
			answer: `{"topic":"orders","group":"billing","purged":1}`,
			method: "DELETE", path: "/v1/topics/orders/dlq", query: "group=billing",
			wantOut: []string{"purged 1 dead letter of orders (group billing)"},
		},
		{
			name: "seek", args: []string{"seek", "orders", "--group", "billing", "--to", "2026-11-26T17:00:00Z"},
			answer: `{"topic":"orders","group":"billing","from":"1764176500000-0","to":"1764176399999-0"}`,
			method: "POST", path: "/v1/subscriptions/orders/billing/seek", body: `{"to":"2026-11-26T17:00:00Z"}`,
			wantOut: []string{"orders/billing: last delivered id moved from 1764176500000-0 to 1764176399999-0 (entries already pending stay pending)"},
		},
		{
			name: "pause", args: []string{"pause", "orders", "--group", "billing"},
			answer: `{"topic":"orders","group":"billing","paused":true}`,
			method: "POST", path: "/v1/subscriptions/orders/billing/pause",
			wantOut: []string{"orders/billing: paused (every replica stops reading; deliveries in flight finish)"},
		},
		{
			name: "resume", args: []string{"resume", "orders", "--group", "billing"},
			answer: `{"topic":"orders","group":"billing","paused":false}`,
			method: "POST", path: "/v1/subscriptions/orders/billing/resume",
			wantOut: []string{"orders/billing: delivering"}, wantNoOut: []string{"paused"},
		},
		{
			name: "consumers", args: []string{"consumers", "orders", "--group", "billing"},
			answer: `{"consumers":[{"name":"pod-a","pending":1500,"idle_ms":180500,"inactive_ms":7200000},{"name":"pod-b","pending":0,"idle_ms":200,"inactive_ms":-1}]}`,
			method: "GET", path: "/v1/subscriptions/orders/billing/consumers",
			wantOut: []string{
				"CONSUMER  PENDING  LAST SEEN  LAST ACTIVE",
				"pod-a     1,500    3m ago     2h ago",
				"pod-b     0        just now   -",
			},
		},
		{
			name: "consumers cleanup", args: []string{"consumers", "orders", "--group", "billing", "--cleanup", "--idle", "2h"},
			answer: `{"removed":["old-1","old-2"],"kept":[{"name":"pod-a","pending":3,"idle_ms":10800000,"why":"3 pending entries (a live replica claims them)"}]}`,
			method: "POST", path: "/v1/subscriptions/orders/billing/consumers/cleanup", body: `{"idle":"2h"}`,
			wantOut: []string{
				"removed 2 consumers: old-1, old-2",
				"kept:",
				"pod-a     3        3h ago     3 pending entries (a live replica claims them)",
			},
		},
		{
			name: "consumers cleanup default idle", args: []string{"consumers", "orders", "--cleanup", "--group", "billing"},
			answer: `{"removed":[],"kept":[]}`,
			method: "POST", path: "/v1/subscriptions/orders/billing/consumers/cleanup", body: `{"idle":"1h"}`,
			wantOut: []string{"removed no consumers (none idle over 1h without pending entries)"},
		},
	}
	for _, tc := range cases {
		for _, asJSON := range []bool{false, true} {
			name := tc.name
			if asJSON {
				name += " --json"
			}
			t.Run(name, func(t *testing.T) {
				api := newFakeAPI(t, func(seenReq, int) (int, string) { return 200, tc.answer })
				args := tc.args
				getenv := env("SIDECAR_ADDR", api.srv.URL, "SIDECAR_API_TOKEN", "s3cret")
				if asJSON {
					// The bare host:port form, and --json after the positionals.
					args = append(append([]string(nil), args...), "--json")
					getenv = env("SIDECAR_ADDR", strings.TrimPrefix(api.srv.URL, "http://"), "SIDECAR_API_TOKEN", "s3cret")
				}
				out, errOut, err := runCLI(context.Background(), getenv, args...)
				if err != nil {
					t.Fatalf("got %v, want success; stderr:\n%s", err, errOut)
				}
				reqs := api.requests()
				if len(reqs) != 1 {
					t.Fatalf("got %d requests, want 1: %+v", len(reqs), reqs)
				}
				r := reqs[0]
				if r.Method != tc.method || r.Path != tc.path || r.Query != tc.query || r.Auth != "Bearer s3cret" {
					t.Fatalf("got %s %s ?%s auth %q, want %s %s ?%s auth %q", r.Method, r.Path, r.Query, r.Auth, tc.method, tc.path, tc.query, "Bearer s3cret")
				}
				if tc.body == "" && r.Body != "" {
					t.Fatalf("got body %q, want none", r.Body)
				}
				if tc.body != "" && (!sameJSON(t, r.Body, tc.body) || r.ContentType != "application/json") {
					t.Fatalf("got body %s (%s), want %s (application/json)", r.Body, r.ContentType, tc.body)
				}
				if asJSON {
					if !sameJSON(t, out, tc.answer) || strings.Count(out, "\n") != strings.Count(strings.TrimSpace(tc.answer), "\n")+1 {
						t.Fatalf("--json: got\n%s\nwant the API's answer as it came:\n%s", out, tc.answer)
					}
					return
				}
				for _, want := range tc.wantOut {
					if !containsLine(out, want) {
						t.Errorf("output lacks the line %q; got:\n%s", want, out)
					}
				}
				for _, no := range tc.wantNoOut {
					if strings.Contains(out, no) {
						t.Errorf("output has %q; got:\n%s", no, out)
					}
				}
				for _, want := range tc.wantStderr {
					if !strings.Contains(errOut, want) {
						t.Errorf("stderr lacks %q; got:\n%s", want, errOut)
					}
				}
			})
		}
	}
}

// containsLine reports whether out has a line that is want (trailing
// spaces aside) or, for want with leading spaces, ends like it.
func containsLine(out, want string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimRight(l, " ") == strings.TrimRight(want, " ") {
			return true
		}
	}
	return false
}

// TestCLIRedriveLoops: 2,500 dead letters take three calls of 1,000; the
// CLI keeps calling until remaining is 0 and shows progress on stderr.
func TestCLIRedriveLoops(t *testing.T) {
	steps := []string{
		`{"topic":"orders","group":"billing","redriven":1000,"remaining":1500}`,
		`{"topic":"orders","group":"billing","redriven":1000,"remaining":500}`,
		`{"topic":"orders","group":"billing","redriven":500,"remaining":0}`,
	}
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", asJSON), func(t *testing.T) {
			api := newFakeAPI(t, func(_ seenReq, n int) (int, string) {
				if n >= len(steps) {
					return 500, `{"error":"called too often","code":"test"}`
				}
				return 200, steps[n]
			})
			args := []string{"dlq", "redrive", "orders", "--group", "billing", "--addr", api.srv.URL}
			if asJSON {
				args = append(args, "--json")
			}
			out, errOut, err := runCLI(context.Background(), env(), args...)
			if err != nil {
				t.Fatalf("got %v; stderr:\n%s", err, errOut)
			}
			reqs := api.requests()
			if len(reqs) != 3 {
				t.Fatalf("got %d calls, want 3", len(reqs))
			}
			// The last call asks for no more than the 500 left of the 2,500.
			for i, limit := range []int{1000, 1000, 500} {
				r, body := reqs[i], fmt.Sprintf(`{"group":"billing","limit":%d}`, limit)
				if r.Method != "POST" || r.Path != "/v1/topics/orders/dlq/redrive" || !sameJSON(t, r.Body, body) || r.Auth != "" {
					t.Fatalf("call %d: got %s %s %s auth %q, want POST …/dlq/redrive %s, no token", i, r.Method, r.Path, r.Body, r.Auth, body)
				}
			}
			wantProgress := "redriven 1,000 of 2,500\nredriven 2,000 of 2,500\nredriven 2,500 of 2,500\n"
			if errOut != wantProgress {
				t.Fatalf("progress: got %q, want %q", errOut, wantProgress)
			}
			if asJSON {
				if !sameJSON(t, out, `{"topic":"orders","group":"billing","redriven":2500,"remaining":0}`) {
					t.Fatalf("--json: got %s, want the sum of the calls", out)
				}
			} else if out != "redriven 2,500 dead letters of orders to group billing\n" {
				t.Fatalf("got %q", out)
			}
		})
	}
	t.Run("stops at what there was", func(t *testing.T) {
		// A webhook that still fails sends each redriven event straight back:
		// remaining never reaches 0, and the CLI stops after the 2,500 it found.
		api := newFakeAPI(t, func(r seenReq, _ int) (int, string) {
			var req struct{ Limit int }
			json.Unmarshal([]byte(r.Body), &req)
			return 200, fmt.Sprintf(`{"topic":"orders","group":"billing","redriven":%d,"remaining":1500}`, req.Limit)
		})
		out, errOut, err := runCLI(context.Background(), env("SIDECAR_ADDR", api.srv.URL), "dlq", "redrive", "orders", "--group", "billing")
		if err != nil {
			t.Fatalf("got %v", err)
		}
		var limits []string
		for _, r := range api.requests() {
			var req struct{ Limit int }
			json.Unmarshal([]byte(r.Body), &req)
			limits = append(limits, strconv.Itoa(req.Limit))
		}
		if got := strings.Join(limits, ","); got != "1000,1000,500" {
			t.Fatalf("got calls with limits %s, want 1000,1000,500", got)
		}
		if out != "redriven 2,500 dead letters of orders to group billing\n" || !strings.Contains(errOut, "redriven 2,500 of 2,500\n") ||
			!strings.Contains(errOut, "1,500 dead letters of group billing are in the DLQ again or arrived meanwhile") {
			t.Fatalf("got stdout %q, stderr %q", out, errOut)
		}
	})
	t.Run("no progress stops", func(t *testing.T) {
		api := newFakeAPI(t, func(seenReq, int) (int, string) {
			return 200, `{"topic":"orders","group":"billing","redriven":0,"remaining":7}`
		})
		_, _, err := runCLI(context.Background(), env("SIDECAR_ADDR", api.srv.URL), "dlq", "redrive", "orders", "--group", "billing")
		if err == nil || !strings.Contains(err.Error(), "no progress") || len(api.requests()) != 1 {
			t.Fatalf("got %v after %d calls, want a no-progress error after 1", err, len(api.requests()))
		}
	})
	t.Run("error midway says how far it got", func(t *testing.T) {
		api := newFakeAPI(t, func(_ seenReq, n int) (int, string) {
			if n == 0 {
				return 200, steps[0]
			}
			return 503, `{"error":"redis unavailable","code":"redis_unavailable"}`
		})
		_, _, err := runCLI(context.Background(), env("SIDECAR_ADDR", api.srv.URL), "dlq", "redrive", "orders", "--group", "billing")
		var ae *apiError
		if !errors.As(err, &ae) || ae.Code != "redis_unavailable" || !strings.Contains(err.Error(), "after redriving 1,000") {
			t.Fatalf("got %v, want the API error and how many were redriven", err)
		}
	})
}

// followLog is a fake event log for --follow: events e1, e2, … with stream
// ids "100<n>-0", paged like the spec (from inclusive, next = the first
// entry not returned, empty at the end; order=desc = newest first).
type followLog struct {
	mu      sync.Mutex
	n       int
	fail503 int // answer this many requests with 503
	reqs    []url.Values
}

func (l *followLog) add(k int) {
	l.mu.Lock()
	l.n += k
	l.mu.Unlock()
}

func (l *followLog) event(i int) map[string]any {
	return map[string]any{"stream_id": fmt.Sprintf("%d-0", 1000+i), "id": fmt.Sprintf("e%d", i), "type": "t",
		"time": "2026-11-26T17:00:00Z", "data": fmt.Sprintf("body-%d", i), "size": 6}
}

func (l *followLog) serve(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := r.URL.Query()
	l.reqs = append(l.reqs, q)
	if l.fail503 > 0 {
		l.fail503--
		w.WriteHeader(503)
		io.WriteString(w, `{"error":"redis unavailable","code":"redis_unavailable"}`)
		return
	}
	limit := 50
	if s := q.Get("limit"); s != "" {
		limit, _ = strconv.Atoi(s)
	}
	evs := []map[string]any{}
	next := ""
	if q.Get("order") == "desc" {
		for i := l.n; i >= 1 && len(evs) < limit; i-- {
			evs = append(evs, l.event(i))
		}
	} else {
		start := 1
		if f := q.Get("from"); f != "" {
			ms, seq, _ := strings.Cut(f, "-")
			m, _ := strconv.Atoi(ms)
			start = m - 1000
			if s, _ := strconv.Atoi(seq); s > 0 {
				start++
			}
		}
		for i := max(start, 1); i <= l.n; i++ {
			if len(evs) == limit {
				next = fmt.Sprintf("%d-0", 1000+i)
				break
			}
			evs = append(evs, l.event(i))
		}
	}
	json.NewEncoder(w).Encode(map[string]any{"topic": "orders", "events": evs, "next": next})
}

// TestCLIFollow: --follow prints the newest events, then each new one once
// and in order (paging through a burst), survives a 503, and returns nil
// promptly when its context ends.
func TestCLIFollow(t *testing.T) {
	log := &followLog{n: 12}
	srv := httptest.NewServer(http.HandlerFunc(log.serve))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"events", "orders", "--follow", "--interval", "10ms", "--addr", srv.URL}, env(), &out, &errOut)
	}()
	bodies := func() []string {
		var got []string
		for _, l := range strings.Split(out.String(), "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[len(f)-1], "body-") {
				got = append(got, f[len(f)-1])
			}
		}
		return got
	}
	want := func(from, to int) []string {
		var w []string
		for i := from; i <= to; i++ {
			w = append(w, fmt.Sprintf("body-%d", i))
		}
		return w
	}
	eventually.True(t, 5*time.Second, "the 10 newest events", func() bool { return len(bodies()) >= 10 })
	log.add(3)
	eventually.True(t, 5*time.Second, "3 new events", func() bool { return len(bodies()) >= 13 })
	log.mu.Lock()
	log.fail503 = 2
	log.mu.Unlock()
	eventually.True(t, 5*time.Second, "a retry notice", func() bool { return strings.Contains(errOut.String(), "still trying") })
	log.add(120) // more than one page (the API's default 50)
	eventually.True(t, 5*time.Second, "the burst", func() bool { return len(bodies()) >= 133 })
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after cancel: got %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("--follow did not return within 2s of its context ending")
	}
	t.Logf("--follow returned %v after cancel", time.Since(start))
	if got, w := bodies(), want(3, 135); strings.Join(got, ",") != strings.Join(w, ",") {
		t.Fatalf("got events\n%v\nwant each of 3..135 once, in order", got)
	}
	if strings.Count(out.String(), "STREAM ID") != 1 {
		t.Fatalf("header printed %d times, want once", strings.Count(out.String(), "STREAM ID"))
	}
	if n := strings.Count(errOut.String(), "still trying"); n != 1 {
		t.Fatalf("retry notice printed %d times for one outage, want 1:\n%s", n, errOut.String())
	}
	log.mu.Lock()
	first, second := log.reqs[0], log.reqs[1]
	log.mu.Unlock()
	if first.Get("order") != "desc" || first.Get("limit") != "10" || second.Get("from") != "1012-1" {
		t.Fatalf("got first requests %v then %v, want order=desc&limit=10 then from=1012-1", first, second)
	}
}

// TestCLIFollowJSON: with --from and --json, --follow prints each event
// object on its own line, from that position.
func TestCLIFollowJSON(t *testing.T) {
	log := &followLog{n: 5}
	srv := httptest.NewServer(http.HandlerFunc(log.serve))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		// An hour between polls: the cancel must end the wait itself.
		done <- run(ctx, []string{"events", "orders", "-f", "--from", "1004-0", "--json", "--interval", "1h", "--addr", srv.URL}, env(), &out, io.Discard)
	}()
	eventually.True(t, 5*time.Second, "events 4 and 5", func() bool { return strings.Count(out.String(), "\n") >= 2 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after cancel: got %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("--follow did not return within 2s of its context ending while waiting to poll")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), out.String())
	}
	for i, l := range lines {
		var ev struct {
			ID       string `json:"id"`
			StreamID string `json:"stream_id"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.ID != fmt.Sprintf("e%d", i+4) {
			t.Fatalf("line %d: got %s (%v), want event e%d", i, l, err, i+4)
		}
	}
}

// TestCLIErrors: API errors print their message and code and exit 1;
// usage errors exit 2 and send nothing; a dead address is named.
func TestCLIErrors(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		answer   string
		token    string
		args     []string
		wantErr  []string // in the error main prints (exit 1)
		wantCode string
	}{
		{"unknown group", 404, `{"error":"no consumer group billing on topic orders","code":"no_such_group"}`, "t",
			[]string{"pause", "orders", "--group", "billing"}, []string{"no consumer group billing on topic orders (no_such_group)"}, "no_such_group"},
		{"bad position", 400, `{"error":"to: not a stream id, RFC 3339 time, earliest or latest","code":"bad_position"}`, "t",
			[]string{"seek", "orders", "--group", "g", "--to", "yesterday"}, []string{"(bad_position)"}, "bad_position"},
		{"no token", 401, `{"error":"missing or bad bearer token","code":"unauthorized"}`, "",
			[]string{"topics"}, []string{"(unauthorized)", "set SIDECAR_API_TOKEN"}, "unauthorized"},
		{"loopback only", 403, `{"error":"admin API serves loopback clients only; set api_token","code":"admin_loopback_only"}`, "",
			[]string{"dlq", "ls", "orders"}, []string{"set api_token (admin_loopback_only)"}, "admin_loopback_only"},
		{"not the admin API", 404, "404 page not found\n", "",
			[]string{"topics"}, []string{"GET http://", "/v1/topics answered 404 404 page not found", "admin API"}, ""},
		{"not JSON on success", 200, "<html>", "",
			[]string{"topics"}, []string{"answered something unexpected"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, func(seenReq, int) (int, string) { return tc.status, tc.answer })
			out, _, err := runCLI(context.Background(), env("SIDECAR_ADDR", api.srv.URL, "SIDECAR_API_TOKEN", tc.token), tc.args...)
			var exit exitError
			if err == nil || errors.As(err, &exit) {
				t.Fatalf("got %v, want an error main prints and exits 1 on", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			var ae *apiError
			if tc.wantCode != "" && (!errors.As(err, &ae) || ae.Code != tc.wantCode) {
				t.Errorf("got %v, want an API error with code %s", err, tc.wantCode)
			}
			if out != "" {
				t.Errorf("printed %q on an error", out)
			}
		})
	}

	t.Run("connection refused names the address", func(t *testing.T) {
		addr := freeAddr(t)
		_, _, err := runCLI(context.Background(), env("SIDECAR_ADDR", addr), "topics")
		if err == nil || !strings.Contains(err.Error(), "cannot reach the sidecar at http://"+addr) {
			t.Fatalf("got %v, want it to name http://%s", err, addr)
		}
	})

	usage := []struct {
		name string
		args []string
		want string
	}{
		{"purge all without --yes", []string{"dlq", "purge", "orders", "--group", "g"}, "add --yes"},
		{"redrive without group", []string{"dlq", "redrive", "orders", "1-0"}, "--group is required"},
		{"seek without to", []string{"seek", "orders", "--group", "g"}, "--to is required"},
		{"missing topic", []string{"events"}, "missing the topic"},
		{"extra argument", []string{"pause", "orders", "extra", "--group", "g"}, `unexpected argument "extra"`},
		{"unknown flag", []string{"topics", "--nope"}, "flag provided but not defined: -nope"},
		{"unknown dlq command", []string{"dlq", "rm", "orders"}, `unknown dlq command "rm"`},
		{"idle without cleanup", []string{"consumers", "orders", "--group", "g", "--idle", "1h"}, "--idle goes with --cleanup"},
		{"bad addr", []string{"topics", "--addr", "ftp://x"}, "want host:port or an http(s):// URL"},
	}
	for _, tc := range usage {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, func(seenReq, int) (int, string) { return 200, `{}` })
			_, errOut, err := runCLI(context.Background(), env("SIDECAR_ADDR", api.srv.URL), tc.args...)
			var exit exitError
			if !errors.As(err, &exit) || exit.code != 2 || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "usage: ") {
				t.Fatalf("got %v and stderr %q, want exit 2 with %q and a usage line", err, errOut, tc.want)
			}
			if n := len(api.requests()); n != 0 {
				t.Fatalf("a usage error sent %d requests, want none", n)
			}
		})
	}
}

func TestCLIHelp(t *testing.T) {
	out, _, err := runCLI(context.Background(), env(), "help")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"sidecar topics", "sidecar events <topic>", "--follow", "sidecar dlq ls", "sidecar dlq redrive", "sidecar dlq purge",
		"sidecar seek", "sidecar pause", "sidecar resume", "sidecar consumers", "sidecar check", "sidecar version", "SIDECAR_ADDR", "SIDECAR_API_TOKEN", "--json"} {
		if !strings.Contains(out, cmd) {
			t.Errorf("help lacks %q", cmd)
		}
	}
	out, _, err = runCLI(context.Background(), env(), "dlq", "redrive", "-h")
	if err != nil || !strings.Contains(out, "usage: sidecar dlq redrive") || !strings.Contains(out, "-group") {
		t.Fatalf("dlq redrive -h: got %v\n%s", err, out)
	}
}

func TestCLIAddress(t *testing.T) {
	cases := []struct {
		flag string
		env  []string
		want string
	}{
		{"", nil, "http://127.0.0.1:7700"},
		{"", []string{"SIDECAR_ADDR", "sidecar:8080"}, "http://sidecar:8080"},
		{"", []string{"SIDECAR_ADDR", "https://admin.example/sidecar/"}, "https://admin.example/sidecar"},
		{"", []string{"SIDECAR_ADDR", ":9000"}, "http://127.0.0.1:9000"},
		{"", []string{"SIDECAR_LISTEN", "0.0.0.0:7801"}, "http://127.0.0.1:7801"},
		{"", []string{"SIDECAR_LISTEN", "[::]:7801"}, "http://127.0.0.1:7801"},
		{"", []string{"SIDECAR_ADDR", "a:1", "SIDECAR_LISTEN", "0.0.0.0:7801"}, "http://a:1"},
		{"http://b:2", []string{"SIDECAR_ADDR", "a:1"}, "http://b:2"},
	}
	for _, tc := range cases {
		c, err := newAdminClient(tc.flag, env(tc.env...))
		if err != nil || c.base != tc.want {
			t.Errorf("flag %q env %v: got %v %v, want %s", tc.flag, tc.env, c, err, tc.want)
		}
	}
}

func TestCLIFormats(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0"}, {999, "999"}, {1000, "1,000"}, {12345, "12,345"}, {1234567, "1,234,567"}, {-1234, "-1,234"}} {
		if got := humanInt(tc.n); got != tc.want {
			t.Errorf("humanInt(%d): got %s, want %s", tc.n, got, tc.want)
		}
	}
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{0, "just now"}, {12 * time.Second, "12s ago"}, {3*time.Minute + 59*time.Second, "3m ago"}, {5 * time.Hour, "5h ago"}, {72 * time.Hour, "3d ago"}} {
		if got := ago(tc.d); got != tc.want {
			t.Errorf("ago(%v): got %s, want %s", tc.d, got, tc.want)
		}
	}
	if got := afterID("1700000000000-41"); got != "1700000000000-42" {
		t.Errorf("afterID: got %s", got)
	}
	if got := oneLine("a\nb\x00c"+strings.Repeat("x", 100), 10); got != `a\nb\x00cxxxxx…` {
		t.Errorf("oneLine: got %q", got)
	}
}
