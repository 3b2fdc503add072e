package check

import (
	"context"
	"strings"
	"testing"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// Against dev mode's embedded server the report says what it is — not
// durable, no replicas — instead of INFO's "wrong number of arguments".
func TestCheckAgainstTheEmbeddedDevServer(t *testing.T) {
	rdb := redistest.StartDevServer(t)
	rep := Run(context.Background(), Input{RedisURL: "redis://" + rdb.Options().Addr, Redis: rdb, MinReplicas: -1, SpoolDir: t.TempDir(), SpoolMaxBytes: 1 << 20})
	got := map[string]Result{}
	for _, c := range rep.Checks {
		got[c.Name] = c
		if strings.Contains(c.Detail, "wrong number of arguments") || strings.Contains(c.Detail, "not supported") {
			t.Errorf("%s: %s", c.Name, c.Detail)
		}
	}
	if c := got["Redis reachable"]; !c.Passed || !strings.Contains(c.Detail, "embedded dev-mode server") {
		t.Errorf("reachable: %+v", c)
	}
	if c := got["Persistence"]; c.Passed || !c.Critical {
		t.Errorf("persistence: %+v", c)
	}
	if rep.Overall != "FAILED" {
		t.Errorf("overall %s: the dev server is not durable", rep.Overall)
	}
}
