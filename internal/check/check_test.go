package check

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

func findCheck(rep Report, name string) Result {
	for _, c := range rep.Checks {
		if strings.HasPrefix(c.Name, name) {
			return c
		}
	}
	return Result{Name: "missing " + name}
}

func TestDeploymentChecks(t *testing.T) {
	webhook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(405) }))
	defer webhook.Close()
	for _, tc := range []struct {
		name    string
		args    []string
		dead    bool
		overall string
		want    map[string]bool // check name → passed
		detail  map[string]string
	}{
		{name: "sound", args: []string{"--appendonly", "yes", "--maxmemory", "256mb", "--maxmemory-policy", "noeviction"},
			overall: "READY", want: map[string]bool{"Redis reachable": true, "Eviction policy": true, "Persistence": true, "Memory headroom": true, "Webhook": true, "Spool directory": true}},
		{name: "evicting", args: []string{"--appendonly", "yes", "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"},
			overall: "FAILED", want: map[string]bool{"Redis reachable": true, "Eviction policy": false},
			detail: map[string]string{"Eviction policy": "allkeys-lru can delete streams; set maxmemory-policy noeviction"}},
		{name: "no persistence", args: []string{"--maxmemory-policy", "noeviction"},
			overall: "DEGRADED", want: map[string]bool{"Persistence": false, "Eviction policy": true}},
		{name: "dead", dead: true, overall: "FAILED", want: map[string]bool{"Redis reachable": false, "Webhook": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rdb redis.UniversalClient
			url := ""
			if tc.dead {
				url = "redis://127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)) + "/0"
				rdb = redis.NewClient(&redis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(url, "redis://"), "/0"), MaxRetries: -1})
			} else {
				srv := redistest.StartProcessWith(t, 0, tc.args...)
				url = srv.URL
				rdb = srv.Client(t)
			}
			topic := redistest.UniqueTopic(t, "check")
			rep := Run(context.Background(), Input{
				RedisURL: url, Redis: rdb, MinReplicas: -1, SpoolDir: t.TempDir(), SpoolMaxBytes: 1 << 20, HTTP: http.DefaultClient,
				Webhooks: []Webhook{{Topic: topic, Group: "calendar", URL: webhook.URL + "/manual-sync"}},
			})
			var text bytes.Buffer
			rep.WriteText(&text)
			if rep.Overall != tc.overall {
				t.Fatalf("overall: got %s, want %s\n%s", rep.Overall, tc.overall, text.String())
			}
			for name, passed := range tc.want {
				if c := findCheck(rep, name); c.Passed != passed {
					t.Errorf("%s: got passed=%v (%s), want %v", name, c.Passed, c.Detail, passed)
				}
			}
			for name, want := range tc.detail {
				if c := findCheck(rep, name); !strings.Contains(c.Detail, want) {
					t.Errorf("%s detail: got %q, want it to contain %q", name, c.Detail, want)
				}
			}
			if !strings.Contains(text.String(), "Overall Status: "+tc.overall) || rep.Total != rep.Passed+rep.Failed {
				t.Fatalf("report text:\n%s", text.String())
			}
			t.Logf("\n%s", text.String())
		})
	}
}
