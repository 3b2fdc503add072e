package health

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/stream"
)

type fakeSub struct {
	cfg   stream.SubscriptionConfig
	stats stream.Stats
}

func (f fakeSub) Running() bool                     { return true }
func (f fakeSub) Config() stream.SubscriptionConfig { return f.cfg }
func (f fakeSub) Stats() stream.Stats               { return f.stats }

// TestStatusShowsNoCredentials: /v1/status is open to every client that
// reaches the listener, so what it shows of URLs and errors is redacted.
func TestStatusShowsNoCredentials(t *testing.T) {
	const secret = "hook-Pa55word"
	sub := fakeSub{
		cfg:   stream.SubscriptionConfig{Topic: "match.updated", Group: "calendar", Consumer: "c1"},
		stats: stream.Stats{LastError: `Post "http://127.0.0.1:1/hook?token=` + secret + `": connection refused`},
	}
	st := NewStatus(nil, Sources{
		Service: "calendar", RedisURL: "redis://:xxxxx@127.0.0.1:6379/0",
		Monitor:       NewMonitor(nil, time.Second, nil, zerolog.Nop()),
		Subscriptions: []Subscription{sub},
		URLs:          map[string]string{"match.updated/calendar": "http://127.0.0.1:1/hook?token=xxxxx"},
		Redact:        func(b []byte) []byte { return bytes.ReplaceAll(b, []byte(secret), []byte("xxxxx")) },
	}, time.Second, zerolog.Nop())
	rec := httptest.NewRecorder()
	st.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/status", nil))
	body := rec.Body.String()
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %s, want 200 application/json", rec.Code, rec.Header().Get("Content-Type"))
	}
	if strings.Contains(body, secret) {
		t.Fatalf("/v1/status shows the secret:\n%s", body)
	}
	var rep StatusReport
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	if len(rep.Subscriptions) != 1 || rep.Subscriptions[0].URL != "http://127.0.0.1:1/hook?token=xxxxx" ||
		!strings.Contains(rep.Subscriptions[0].LastError, "token=xxxxx") || rep.Redis.URL != "redis://:xxxxx@127.0.0.1:6379/0" {
		t.Fatalf("got %+v", rep)
	}
}
