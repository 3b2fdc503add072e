package httpbridge

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/config"
	"github.com/rs/zerolog"
)

// newUpstreamProxy forwards a request to the service the sidecar stands in
// front of, as it came: method, path, query, body and end-to-end headers,
// plus X-Forwarded-For/-Host/-Proto. An upstream that does not answer gets
// the caller a 502 upstream_unavailable in the API's error shape.
func newUpstreamProxy(target *url.URL, token string, log zerolog.Logger) http.Handler {
	where := config.RedactURL(target.String()) // also query tokens, unlike url.Redacted
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// Rewrite starts without the inbound X-Forwarded-For; keep the
			// chain a proxy in front of the caller began, then add the caller.
			if prior := pr.In.Header.Values("X-Forwarded-For"); len(prior) > 0 {
				pr.Out.Header["X-Forwarded-For"] = append([]string(nil), prior...)
			}
			pr.SetXForwarded()
			if token != "" {
				// The bearer token authenticated the caller to the sidecar;
				// it is not the upstream's to see.
				pr.Out.Header.Del("Authorization")
			}
		},
		// Like the webhook client: keep-alive, and a 3xx is passed back to
		// the caller, never followed here.
		Transport: NewClient(16).Transport,
		ErrorLog:  newStdLogger(log),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				log.Debug().Err(err).Str("path", r.URL.Path).Msg("upstream request abandoned by the caller")
				return
			}
			log.Warn().Err(err).Str("upstream", where).Str("method", r.Method).Str("path", r.URL.Path).Msg("upstream unavailable")
			writeError(w, http.StatusBadGateway, "upstream_unavailable",
				"upstream "+where+" unavailable: "+err.Error())
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The API server's write timeout suits publishes, not an upstream
		// that may take minutes (a full calendar sync): the caller's own
		// timeout bounds a proxied request, and its leaving cancels it.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		rp.ServeHTTP(w, r)
	})
}

// ownPathsOr serves the sidecar's own namespace (/v1/…) with own, so a
// mistyped API call gets the sidecar's 404 instead of reaching the
// upstream, and every other path with proxy.
func ownPathsOr(own, proxy http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1" || strings.HasPrefix(r.URL.Path, "/v1/") {
			own.ServeHTTP(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	})
}

// routePathsOr sends a route's path with another method than POST (say,
// GET /sync) to the upstream, which owns that URL for everything but
// publishing; other endpoints answer 405 with own.
func routePathsOr(routed map[string]bool, own, proxy http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if routed[r.URL.Path] {
			proxy.ServeHTTP(w, r)
			return
		}
		own.ServeHTTP(w, r)
	})
}
