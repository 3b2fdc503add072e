package health

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

func netOut(t *testing.T, rdb redis.UniversalClient) int64 {
	raw := rdb.Info(context.Background(), "stats").Val()
	for _, l := range strings.Split(raw, "\r\n") {
		if v, ok := strings.CutPrefix(l, "total_net_output_bytes:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no total_net_output_bytes")
	return 0
}

// On a real Redis 7 that reports an exact lag, a group that has
// read nothing yet (created at 0, subscription paused or not started)
// makes every status refresh (each 5 s) XRANGE up to 10,001 whole entries.
func TestLagOfAGroupThatReadNothingCostsNoScan(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(strings.TrimSuffix(srv.URL, "/0"), "redis://")})
	defer rdb.Close()
	ctx := context.Background()
	data := strings.Repeat("x", 4096)
	pipe := rdb.Pipeline()
	for i := range 12000 {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: "sidecar:{t}", Values: []any{"id", i, "data", data}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	rdb.XGroupCreate(ctx, "sidecar:{t}", "g", "0")
	g, _ := rdb.XInfoGroups(ctx, "sidecar:{t}").Result()
	before := netOut(t, rdb)
	st := ReadConsumer(ctx, rdb, "t", "g")
	cost := netOut(t, rdb) - before
	t.Logf("Redis reported lag %d (entries-read %d); ReadConsumer lag %d; Redis sent %d bytes for one refresh", g[0].Lag, g[0].EntriesRead, st.Lag, cost)
	if cost > 1<<20 {
		t.Errorf("one status refresh cost %d bytes of XRANGE although Redis's lag %d was exact", cost, g[0].Lag)
	}
}
