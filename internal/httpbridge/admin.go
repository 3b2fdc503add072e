package httpbridge

import (
	"net"
	"net/http"
	"net/netip"
)

// adminPaths are where the admin API answers (internal/admin routes on
// the full paths below them).
var adminPaths = []string{"/v1/topics", "/v1/topics/*", "/v1/subscriptions/*"}

// adminGuard lets a request reach the admin API: with api_token set, the
// bearer token (else 401); without one, loopback clients only (else 403),
// since the admin API changes what is delivered.
func (a *api) adminGuard(next http.Handler) http.Handler {
	if a.cfg.Token != "" {
		return a.authenticate(next)
	}
	return loopbackOnly(next)
}

// consoleGuard lets a request reach the web console's page and assets:
// with api_token set, anyone (the page asks for the token and sends it with
// each API call); without one, loopback clients only.
func (a *api) consoleGuard(next http.Handler) http.Handler {
	if a.cfg.Token != "" {
		return next
	}
	return loopbackOnly(next)
}

func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isLoopback(r.RemoteAddr) {
			writeError(w, http.StatusForbidden, "admin_loopback_only",
				"with no api_token set, the admin API and console serve only loopback clients (127.0.0.0/8, ::1); "+
					"set api_token (SIDECAR_API_TOKEN) to reach them from elsewhere with Authorization: Bearer <token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isLoopback reports whether a RemoteAddr ("host:port") is a loopback
// address: 127.0.0.0/8, ::1, or 127.x as an IPv4-mapped IPv6 address.
func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
