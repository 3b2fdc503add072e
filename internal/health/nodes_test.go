package health

import (
	"context"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// On Cluster /v1/status lists every node, masters and replicas.
func TestReadNodesCoversEveryClusterNode(t *testing.T) {
	c := redistest.StartCluster(t)
	cc := c.Client(t)
	// The client learns replicas from its slot map, refreshed as it runs.
	var nodes []NodeStatus
	roles := map[string]int{}
	eventually.True(t, 20*time.Second, "3 masters and 3 replicas listed", func() bool {
		cc.ReloadState(context.Background())
		nodes, roles = ReadNodes(context.Background(), cc), map[string]int{}
		for _, n := range nodes {
			if n.Up && n.Version != "" && n.Addr != "" {
				roles[n.Role]++
			}
		}
		return len(nodes) == 6 && roles["master"] == 3 && roles["slave"] == 3
	})
	if ReadNodes(context.Background(), redistest.Start(t).Client(t)) != nil {
		t.Fatal("a standalone Redis has no node list")
	}
}
