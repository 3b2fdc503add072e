package httpbridge

import (
	"net"
	"net/http"
	"time"
)

// NewClient returns a keep-alive client for webhook and fallback POSTs that
// never follows a redirect. Go's default would turn a 301/302 into a
// body-less GET (whose 2xx would acknowledge an event nobody received) and
// re-POST a 307/308 to any host; instead the 3xx itself is the answer, and
// Deliver and the fallback treat it as a failure.
func NewClient(conns int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns * 2,
			MaxIdleConnsPerHost: conns * 2,
			IdleConnTimeout:     90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
