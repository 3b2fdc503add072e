package httpbridge

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
)

// TestAdminAndConsoleGuard: with no api_token the admin API and the console
// serve loopback clients only (403 admin_loopback_only names the setting);
// with one, the admin API wants the bearer token (401) while the console's
// page loads without it. Publishing is guarded as before.
func TestAdminAndConsoleGuard(t *testing.T) {
	// The fake admin API echoes the topic it routed, proving the full
	// path and its parameters reach it.
	adminAPI := chi.NewRouter()
	adminAPI.Get("/v1/topics", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("topics")) })
	adminAPI.Get("/v1/topics/{topic}/events", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("events of " + chi.URLParam(r, "topic")))
	})
	adminAPI.Post("/v1/subscriptions/{topic}/{group}/pause", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("pause " + chi.URLParam(r, "topic") + "/" + chi.URLParam(r, "group")))
	})
	console := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("console " + r.URL.Path)) })
	health := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	newAPI := func(token string) http.Handler {
		return NewAPI(APIConfig{Service: "calendar", Token: token, MaxBody: 1024, Admin: adminAPI, Console: console},
			&fakePublisher{}, nil, health, zerolog.Nop())
	}
	const (
		remote   = "192.0.2.7:40000"
		loopback = "127.0.0.1:40000"
	)
	for _, tc := range []struct {
		name, token, method, path, from, auth string
		wantStatus                            int
		wantCode, wantBody                    string
	}{
		{name: "no token: remote admin refused", method: "GET", path: "/v1/topics", from: remote, wantStatus: 403, wantCode: "admin_loopback_only"},
		{name: "no token: remote admin write refused", method: "POST", path: "/v1/subscriptions/t/g/pause", from: remote, wantStatus: 403, wantCode: "admin_loopback_only"},
		{name: "no token: remote console refused", method: "GET", path: "/", from: remote, wantStatus: 403, wantCode: "admin_loopback_only"},
		{name: "no token: remote console asset refused", method: "GET", path: "/console/app.js", from: remote, wantStatus: 403, wantCode: "admin_loopback_only"},
		{name: "no token: remote publish as before", method: "POST", path: "/v1/publish/t", from: remote, wantStatus: 202},
		{name: "no token: loopback admin", method: "GET", path: "/v1/topics", from: loopback, wantStatus: 200, wantBody: "topics"},
		{name: "no token: loopback 127/8", method: "GET", path: "/v1/topics/match.updated/events", from: "127.9.8.7:1", wantStatus: 200, wantBody: "events of match.updated"},
		{name: "no token: loopback ::1", method: "POST", path: "/v1/subscriptions/t/calendar/pause", from: "[::1]:1", wantStatus: 200, wantBody: "pause t/calendar"},
		{name: "no token: loopback v4-mapped", method: "GET", path: "/v1/topics", from: "[::ffff:127.0.0.1]:1", wantStatus: 200, wantBody: "topics"},
		{name: "no token: v4-mapped remote", method: "GET", path: "/v1/topics", from: "[::ffff:10.0.0.1]:1", wantStatus: 403, wantCode: "admin_loopback_only"},
		{name: "no token: loopback console", method: "GET", path: "/", from: loopback, wantStatus: 200, wantBody: "console /"},
		{name: "token: admin without it", token: "s3cret", method: "GET", path: "/v1/topics", from: loopback, wantStatus: 401, wantCode: "unauthorized"},
		{name: "token: admin with a wrong one", token: "s3cret", method: "GET", path: "/v1/topics", from: remote, auth: "Bearer nope", wantStatus: 401, wantCode: "unauthorized"},
		{name: "token: remote admin with it", token: "s3cret", method: "GET", path: "/v1/topics", from: remote, auth: "Bearer s3cret", wantStatus: 200, wantBody: "topics"},
		{name: "token: remote console page without it", token: "s3cret", method: "GET", path: "/", from: remote, wantStatus: 200, wantBody: "console /"},
		{name: "token: remote console asset without it", token: "s3cret", method: "GET", path: "/console/app.js", from: remote, wantStatus: 200, wantBody: "console /console/app.js"},
		{name: "unknown admin path is JSON 404 of the admin API", method: "GET", path: "/v1/topics/t/nope", from: loopback, wantStatus: 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader("{}"))
			req.RemoteAddr = tc.from
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			newAPI(tc.token).ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("got %d %q, want %d", rec.Code, rec.Body, tc.wantStatus)
			}
			if tc.wantBody != "" && rec.Body.String() != tc.wantBody {
				t.Fatalf("body: got %q, want %q", rec.Body, tc.wantBody)
			}
			if tc.wantCode != "" {
				var e struct{ Error, Code string }
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != tc.wantCode || e.Error == "" {
					t.Fatalf("error body: got %q, want code %q", rec.Body, tc.wantCode)
				}
				if tc.wantCode == "admin_loopback_only" && !strings.Contains(e.Error, "api_token") {
					t.Fatalf("403 does not name the setting: %q", e.Error)
				}
			}
		})
	}
}

// TestConsoleLeavesRootToUpstream: with an upstream, GET / stays the old
// service's; the console answers under /console/.
func TestConsoleLeavesRootToUpstream(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("upstream " + r.URL.Path)) }))
	defer up.Close()
	console := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("console " + r.URL.Path)) })
	api := NewAPI(APIConfig{Service: "calendar", MaxBody: 1024, Console: console, Upstream: must(url.Parse(up.URL))},
		&fakePublisher{}, nil, http.NotFoundHandler(), zerolog.Nop())
	for path, want := range map[string]string{"/": "upstream /", "/console/": "console /console/", "/console": "console /console"} {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Body.String() != want {
			t.Errorf("GET %s: got %d %q, want 200 %q", path, rec.Code, rec.Body, want)
		}
	}
}
