package httpbridge

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The Authorization header over a real connection (net/http
// trims the value's surrounding whitespace) against tokens a config may hold.
func TestBearerEdgeCasesOverTheWire(t *testing.T) {
	for _, tc := range []struct {
		token, header string
		want          int
	}{
		{"s3cret-token", "Bearer\ts3cret-token", http.StatusUnauthorized}, // RFC 9110: 1*SP only
		{"s3cret-token", "Bearer s3cret-token\t", http.StatusAccepted},    // trailing OWS trimmed by net/http
		{"s3cret-token", "Bearer ", http.StatusUnauthorized},
		{"two words", "Bearer two words", http.StatusAccepted},
		{" lead", "Bearer  lead", http.StatusUnauthorized},   // a token with a leading space can never match
		{"trail ", "Bearer trail ", http.StatusUnauthorized}, // nor one with a trailing space (e.g. a Secret file's "\n")
		{"nl-token\n", "Bearer nl-token", http.StatusUnauthorized},
	} {
		srv := httptest.NewServer(newTestAPI(&fakePublisher{}, tc.token))
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /v1/publish/t HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx", tc.header)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		conn.Close()
		srv.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("token %q, Authorization %q: got %d, want %d", tc.token, strings.TrimSpace(tc.header), resp.StatusCode, tc.want)
		}
	}
}

// HEAD on the health endpoints over a real server: no body, same status.
func TestHeadOverTheWire(t *testing.T) {
	srv := httptest.NewServer(newTestAPI(&fakePublisher{}, "tok-tok"))
	defer srv.Close()
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Head(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t.Logf("HEAD %s: %d, Content-Length %d, Content-Type %q", p, resp.StatusCode, resp.ContentLength, resp.Header.Get("Content-Type"))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("HEAD %s: %d", p, resp.StatusCode)
		}
	}
}
