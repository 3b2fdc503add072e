package httpbridge

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

var success = &RouteResponse{Status: 200, Body: []byte(`{"status":"success"}`), ContentType: "application/json"}

// TestRouteResponse: a route with a response answers the unmodified
// caller with exactly that on acceptance, spooled or not; refusals keep
// their status and the JSON error shape.
func TestRouteResponse(t *testing.T) {
	for _, tc := range []struct {
		name        string
		pub         Publisher
		body        string
		wantStatus  int
		wantBody    string
		wantCT      string
		wantSpooled string
		wantCode    string
	}{
		{name: "accepted", pub: &fakePublisher{}, wantStatus: 200, wantBody: `{"status":"success"}`, wantCT: "application/json"},
		{name: "spooled", pub: &spoolingPublisher{}, wantStatus: 200, wantBody: `{"status":"success"}`, wantCT: "application/json", wantSpooled: "true"},
		{name: "refused", pub: &fakePublisher{err: codedErr("spool_full")}, wantStatus: 503, wantCode: "spool_full"},
		{name: "too large", pub: &fakePublisher{}, body: strings.Repeat("x", 300), wantStatus: 413, wantCode: "too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewAPI(APIConfig{Service: "processor", MaxBody: 256,
				Routes: []Route{{Path: "/sync", Topic: "fogis.sync", Response: success}},
			}, tc.pub, nil, http.NotFoundHandler(), zerolog.Nop())
			// What the legacy processor sends: no body, no Content-Type.
			req := httptest.NewRequest(http.MethodPost, "/sync", strings.NewReader(tc.body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status: got %d %s, want %d", rec.Code, rec.Body, tc.wantStatus)
			}
			if tc.wantCode != "" {
				var e map[string]string
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["code"] != tc.wantCode || e["error"] == "" {
					t.Fatalf("error body: got %s, want {error, code: %s}", rec.Body, tc.wantCode)
				}
				if rec.Header().Get("Sidecar-Event-Id") != "" {
					t.Fatal("a refusal carries Sidecar-Event-Id")
				}
				return
			}
			if rec.Body.String() != tc.wantBody || rec.Header().Get("Content-Type") != tc.wantCT {
				t.Fatalf("answer: got %q (%s), want %q (%s)", rec.Body, rec.Header().Get("Content-Type"), tc.wantBody, tc.wantCT)
			}
			var published string
			switch p := tc.pub.(type) {
			case *fakePublisher:
				published = p.events[0].ID
				if len(p.events[0].Data) != 0 || p.topics[0] != "fogis.sync" {
					t.Fatalf("published %q to %s, want an empty event to fogis.sync", p.events[0].Data, p.topics[0])
				}
			case *spoolingPublisher:
				published = p.events[0].ID
			}
			if got := rec.Header().Get("Sidecar-Event-Id"); got == "" || got != published {
				t.Fatalf("Sidecar-Event-Id: got %q, want the event id %q", got, published)
			}
			if got := rec.Header().Get("Sidecar-Spooled"); got != tc.wantSpooled {
				t.Fatalf("Sidecar-Spooled: got %q, want %q", got, tc.wantSpooled)
			}
		})
	}
}

// TestUpstreamProxy: what matches no route and no sidecar endpoint reaches
// the upstream intact, and its answer reaches the caller intact.
func TestUpstreamProxy(t *testing.T) {
	type seen struct {
		method, path, query, body string
		header                    http.Header
	}
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.URL.Path, r.URL.RawQuery, string(must(io.ReadAll(r.Body))), r.Header.Clone()}
		w.Header().Set("X-Calendar", "yes")
		switch r.URL.Path {
		case "/health":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"status":"healthy"}`))
		case "/manual-sync":
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"Missing 'matches' in request data","success":false}`))
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	defer up.Close()
	pub := &fakePublisher{}
	health := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("sidecar health")) })
	api := httptest.NewServer(NewAPI(APIConfig{Service: "processor", MaxBody: 1024,
		Routes:   []Route{{Path: "/sync", Topic: "fogis.sync", Response: success}},
		Upstream: must(url.Parse(up.URL)),
	}, pub, nil, health, zerolog.Nop()))
	defer api.Close()

	for _, tc := range []struct {
		name, method, path, body string
		header                   map[string]string
		wantStatus               int
		wantBody                 string
		proxied                  bool
		wantPath, wantQuery      string
	}{
		{name: "GET /health proxied", method: "GET", path: "/health", wantStatus: 200, wantBody: `{"status":"healthy"}`, proxied: true, wantPath: "/health"},
		{name: "POST with query, body and headers", method: "POST", path: "/manual-sync?force=1&x=a%20b", body: `{"nope":1}`,
			header:     map[string]string{"Content-Type": "application/json", "X-Request-Id": "r-1", "X-Forwarded-For": "10.0.0.1"},
			wantStatus: 400, wantBody: `{"error":"Missing 'matches' in request data","success":false}`, proxied: true, wantPath: "/manual-sync", wantQuery: "force=1&x=a%20b"},
		{name: "DELETE anything", method: "DELETE", path: "/redis-stats", wantStatus: 418, proxied: true, wantPath: "/redis-stats"},
		{name: "GET on a route path is the upstream's", method: "GET", path: "/sync", wantStatus: 418, proxied: true, wantPath: "/sync"},
		{name: "POST on a route path publishes", method: "POST", path: "/sync", wantStatus: 200, wantBody: `{"status":"success"}`},
		{name: "sidecar endpoint wins", method: "GET", path: "/healthz", wantStatus: 200, wantBody: "sidecar health"},
		{name: "sidecar namespace is never proxied", method: "GET", path: "/v1/nope", wantStatus: 404},
		{name: "wrong method on a sidecar endpoint", method: "GET", path: "/v1/publish/t", wantStatus: 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, api.URL+tc.path, strings.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := must(io.ReadAll(resp.Body))
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || (tc.wantBody != "" && string(body) != tc.wantBody) {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			if !tc.proxied {
				select {
				case s := <-got:
					t.Fatalf("reached the upstream: %+v", s)
				default:
				}
				return
			}
			if resp.Header.Get("X-Calendar") != "yes" {
				t.Fatalf("upstream header lost: %v", resp.Header)
			}
			s := <-got
			if s.method != tc.method || s.path != tc.wantPath || s.query != tc.wantQuery || s.body != tc.body {
				t.Fatalf("upstream got %s %s ?%s %q, want %s %s ?%s %q", s.method, s.path, s.query, s.body, tc.method, tc.wantPath, tc.wantQuery, tc.body)
			}
			for k, v := range tc.header {
				if k == "X-Forwarded-For" {
					continue
				}
				if s.header.Get(k) != v {
					t.Errorf("header %s: got %q, want %q", k, s.header.Get(k), v)
				}
			}
			wantXFF := "127.0.0.1"
			if prior := tc.header["X-Forwarded-For"]; prior != "" {
				wantXFF = prior + ", 127.0.0.1"
			}
			if xff := strings.Join(s.header.Values("X-Forwarded-For"), ", "); xff != wantXFF {
				t.Errorf("X-Forwarded-For: got %q, want %q", xff, wantXFF)
			}
		})
	}
}

func TestUpstreamUnavailable(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	h := NewAPI(APIConfig{Service: "p", MaxBody: 64, Upstream: must(url.Parse(dead.URL))}, &fakePublisher{}, nil, http.NotFoundHandler(), zerolog.Nop())
	rec := do(h, http.MethodGet, "/health", "", nil)
	var e map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &e); rec.Code != http.StatusBadGateway || err != nil || e["code"] != "upstream_unavailable" || e["error"] == "" {
		t.Fatalf("got %d %s, want 502 {error, code: upstream_unavailable}", rec.Code, rec.Body)
	}
	// Without an upstream, an unknown path stays the sidecar's 404.
	rec = do(newTestAPI(&fakePublisher{}, ""), http.MethodGet, "/health", "", nil)
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), `"not_found"`) {
		t.Fatalf("no upstream: got %d %s, want 404 not_found", rec.Code, rec.Body)
	}
}

// TestUpstreamBehindToken: with api_token set the proxy, like the routes,
// needs the token, and the token is not passed on to the upstream.
func TestUpstreamBehindToken(t *testing.T) {
	var auth []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = append(auth, r.Header.Get("Authorization"))
	}))
	defer up.Close()
	h := NewAPI(APIConfig{Service: "p", MaxBody: 64, Token: "tok", Upstream: must(url.Parse(up.URL))}, &fakePublisher{}, nil, http.NotFoundHandler(), zerolog.Nop())
	if rec := do(h, http.MethodGet, "/health", "", nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("no token: got %d, want 401", rec.Code)
	}
	if rec := do(h, http.MethodGet, "/health", "", map[string]string{"Authorization": "Bearer tok"}); rec.Code != http.StatusOK {
		t.Fatalf("token: got %d %s, want 200", rec.Code, rec.Body)
	}
	if len(auth) != 1 || auth[0] != "" {
		t.Fatalf("upstream saw Authorization %q, want one request without it", auth)
	}
}
