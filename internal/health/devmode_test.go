package health

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// Dev mode's embedded server answers INFO only without sections and
// reports a stream's length as a group's lag: status must still say what
// it is and how far the group is behind.
func TestEmbeddedDevServerInfoAndLag(t *testing.T) {
	rdb := redistest.StartDevServer(t)
	ctx := context.Background()
	info, err := ReadInfo(ctx, rdb)
	if err != nil || !info.Embedded || info.Persistent() {
		t.Fatalf("ReadInfo: %+v, %v; want embedded and not persistent", info, err)
	}
	for i := range 5 {
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: "sidecar:{t}", Values: []any{"id", i, "data", "x"}})
	}
	rdb.XGroupCreate(ctx, "sidecar:{t}", "g", "0")
	rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{"sidecar:{t}", ">"}, Count: 3})
	st := ReadConsumer(ctx, rdb, "t", "g")
	if st.Error != "" || st.Lag != 2 || st.Pending != 3 {
		t.Fatalf("consumer state %+v, want lag 2 (5 entries, 3 read) and 3 pending", st)
	}
}
