package redistest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

func TestClusterKillMasterPromotesReplica(t *testing.T) {
	start := time.Now()
	c := redistest.StartCluster(t)
	t.Logf("measured: 6-node cluster healthy in %v", time.Since(start).Round(time.Millisecond))
	ctx := context.Background()
	cc := c.Client(t)
	const key = "sidecar:{harness}"
	if err := cc.Set(ctx, key, "before", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	master := c.MasterFor(key)
	other := ""
	for i := 0; other == "" || c.MasterFor(other) == master; i++ {
		other = fmt.Sprintf("sidecar:{elsewhere-%d}", i)
	}
	// The replica has the key before its master dies.
	node, err := cc.MasterForKey(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, "WAIT 1 replica on the key's master", func() bool {
		n, err := node.Do(ctx, "WAIT", 1, 100).Int()
		return err == nil && n == 1
	})

	killed := time.Now()
	c.KillNode(master)
	promoted, at := c.WaitPromotion(master)
	if promoted == master {
		t.Fatalf("WaitPromotion: got the killed node %s", promoted)
	}
	t.Logf("measured: master %s SIGKILLed, replica %s promoted %v later", master, promoted, at.Sub(killed).Round(time.Millisecond))
	if got := c.MasterFor(key); got != promoted {
		t.Fatalf("MasterFor after promotion: got %s, want %s", got, promoted)
	}
	if got := c.MasterFor(other); got == master || got == promoted {
		t.Fatalf("MasterFor(%s) after the kill: got %s, want its own, live master", other, got)
	}
	if v, err := cc.Get(ctx, key).Result(); err != nil || v != "before" {
		t.Fatalf("get through the promoted replica: got %q, %v; want \"before\"", v, err)
	}
}
