// Package console serves the embedded web console: one static page whose
// script reads /readyz, /v1/status and the admin API from the browser.
//
// The page, its script and its style are embedded (no build step, no
// external asset): the binary is the whole console. The handler serves the
// page at "/", "/console" and "/console/", and the assets at
// "/console/<name>"; the page names them with absolute /console/ URLs, so it
// works under either mount point.
package console

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assets embed.FS

// securityHeaders go on every answer. The CSP allows only this origin's
// script, style and API: event data shown in the page is untrusted, and
// nothing may load from elsewhere.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
	"X-Content-Type-Options": "nosniff",
	"X-Frame-Options":        "DENY",
	"Referrer-Policy":        "no-referrer",
}

// contentTypes are set here, not read from the system's mime table, so
// the answer does not depend on the host.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the console's page and assets. Anything else under it
// answers a JSON 404; a method other than GET or HEAD a JSON 405.
func Handler() http.Handler {
	files := map[string]asset{}
	entries, err := fs.ReadDir(assets, "assets")
	if err != nil {
		panic("console: embedded assets unreadable: " + err.Error()) // a build defect, not a runtime state
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		body, err := assets.ReadFile("assets/" + e.Name())
		if err != nil {
			panic("console: embedded asset unreadable: " + err.Error())
		}
		ct, ok := contentTypes[path.Ext(e.Name())]
		if !ok {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(body)
		files[e.Name()] = asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the console only answers GET")
			return
		}
		name, ok := assetName(r.URL.Path)
		a, found := files[name]
		if !ok || !found {
			writeError(w, http.StatusNotFound, "not_found", "no such console page or asset")
			return
		}
		w.Header().Set("Content-Type", a.contentType)
		// Revalidate every time: an upgraded sidecar serves a new page at
		// the same URL, and the ETag makes the check cheap.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("ETag", a.etag)
		if etagMatches(r.Header.Get("If-None-Match"), a.etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(a.body)
	})
}

// assetName maps a request path to an embedded file.
func assetName(p string) (string, bool) {
	switch p {
	case "/", "/console", "/console/", "/console/index.html":
		return "index.html", true
	}
	name, ok := strings.CutPrefix(p, "/console/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", false
	}
	return name, true
}

func etagMatches(header, etag string) bool {
	for c := range strings.SplitSeq(header, ",") {
		c = strings.TrimSpace(c)
		if c == etag || c == "*" || strings.TrimPrefix(c, "W/") == etag {
			return true
		}
	}
	return false
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg, "code": code})
}
