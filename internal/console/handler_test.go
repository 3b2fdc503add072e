package console

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestHandlerServesPageAndAssets(t *testing.T) {
	h := Handler()
	index, _ := assets.ReadFile("assets/index.html")
	js, _ := assets.ReadFile("assets/app.js")
	cases := []struct {
		name, method, path string
		status             int
		contentType        string
		body               []byte // nil: not checked
		code               string // JSON error code
	}{
		{"root is the page", "GET", "/", 200, "text/html; charset=utf-8", index, ""},
		{"/console is the page", "GET", "/console", 200, "text/html; charset=utf-8", index, ""},
		{"/console/ is the page", "GET", "/console/", 200, "text/html; charset=utf-8", index, ""},
		{"script", "GET", "/console/app.js", 200, "text/javascript; charset=utf-8", js, ""},
		{"style", "GET", "/console/app.css", 200, "text/css; charset=utf-8", nil, ""},
		{"icon", "GET", "/console/icon.svg", 200, "image/svg+xml", nil, ""},
		{"HEAD has no body", "HEAD", "/console/app.js", 200, "text/javascript; charset=utf-8", []byte{}, ""},
		{"unknown asset", "GET", "/console/nope.js", 404, "application/json", nil, "not_found"},
		{"no subdirectories", "GET", "/console/assets/app.js", 404, "application/json", nil, "not_found"},
		{"not under /console", "GET", "/app.js", 404, "application/json", nil, "not_found"},
		{"POST refused", "POST", "/", 405, "application/json", nil, "method_not_allowed"},
		{"DELETE refused", "DELETE", "/console/app.js", 405, "application/json", nil, "method_not_allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.status {
				t.Fatalf("status: got %d, want %d (body %q)", rec.Code, tc.status, rec.Body.String())
			}
			if got := rec.Header().Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type: got %q, want %q", got, tc.contentType)
			}
			if got := rec.Header().Get("Content-Security-Policy"); !strings.Contains(got, "script-src 'self'") || !strings.Contains(got, "connect-src 'self'") {
				t.Errorf("Content-Security-Policy: got %q, want one limited to this origin", got)
			}
			if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options: got %q, want nosniff", got)
			}
			if tc.body != nil && rec.Body.String() != string(tc.body) {
				t.Errorf("body: got %d bytes, want %d", rec.Body.Len(), len(tc.body))
			}
			if tc.code != "" {
				var e struct{ Error, Code string }
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != tc.code || e.Error == "" {
					t.Errorf("error body: got %q (%v), want {\"error\":…,\"code\":%q}", rec.Body.String(), err, tc.code)
				}
			}
			if tc.status == 405 && rec.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow: got %q, want \"GET, HEAD\"", rec.Header().Get("Allow"))
			}
		})
	}
}

func TestHandlerRevalidatesWithETag(t *testing.T) {
	h := Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/console/app.js", nil))
	etag := rec.Header().Get("ETag")
	if etag == "" || rec.Header().Get("Cache-Control") != "no-cache" {
		t.Fatalf("got ETag %q, Cache-Control %q; want an ETag and no-cache", etag, rec.Header().Get("Cache-Control"))
	}
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag} {
		req := httptest.NewRequest("GET", "/console/app.js", nil)
		req.Header.Set("If-None-Match", inm)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
			t.Errorf("If-None-Match %s: got %d with %d bytes, want 304 and no body", inm, rec.Code, rec.Body.Len())
		}
	}
	req := httptest.NewRequest("GET", "/console/app.js", nil)
	req.Header.Set("If-None-Match", `"stale"`)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("stale ETag: got %d, want 200", rec.Code)
	}
}

// TestAssetsAreSelfContained: nothing loads from elsewhere (no CDN, no
// external URL), every asset the page names is served, and the script never
// parses event data as HTML.
func TestAssetsAreSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := assets.ReadFile(path)
		text := strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", "") // the SVG namespace is a name, not a fetch
		if m := external.FindString(text); m != "" {
			t.Errorf("%s names an external URL %q: the console must work offline", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	index, _ := assets.ReadFile("assets/index.html")
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(string(index), -1)
	if len(refs) < 3 {
		t.Fatalf("index.html names %d assets, want the script, the style and the icon", len(refs))
	}
	h := Handler()
	for _, ref := range refs {
		if !strings.HasPrefix(ref[1], "/console/") {
			t.Errorf("index.html names %q; assets must be absolute /console/ URLs (the page is served at / and /console/)", ref[1])
			continue
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", ref[1], nil))
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s: got %d, want 200", ref[1], rec.Code)
		}
	}

	js, _ := assets.ReadFile("assets/app.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %s: event data is untrusted, build nodes with textContent", bad)
		}
	}
}
