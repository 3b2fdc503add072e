package check

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/devredis"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// Against dev mode's embedded server the report says what it is — not
// durable, no replicas — instead of INFO's "wrong number of arguments".
func TestCheckAgainstTheEmbeddedDevServer(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	m, err := devredis.StartIfAbsent(addr)
	if err != nil || m == nil {
		t.Fatalf("embedded server: %v", err)
	}
	defer m.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	rep := Run(context.Background(), Input{RedisURL: "redis://" + addr, Redis: rdb, MinReplicas: -1, SpoolDir: t.TempDir(), SpoolMaxBytes: 1 << 20})
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
