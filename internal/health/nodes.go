package health

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// NodeStatus is one Redis Cluster node as /v1/status shows it: every
// master and replica, since each holds (or will hold, after a failover)
// some partitions' streams.
type NodeStatus struct {
	Addr  string `json:"addr"`
	Role  string `json:"role,omitempty"` // master | slave
	Up    bool   `json:"up"`
	Error string `json:"error,omitempty"`
	// Keys is how many keys the node holds (its slots' streams among them).
	Keys int64 `json:"keys"`
	RedisInfo
}

// ReadNodes reads every node of a Cluster (nil for other clients).
func ReadNodes(ctx context.Context, rdb redis.UniversalClient) []NodeStatus {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var (
		mu    sync.Mutex
		nodes []NodeStatus
	)
	_ = cc.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
		n := NodeStatus{Addr: c.Options().Addr}
		raw, err := c.Info(ctx, "server", "memory", "persistence", "replication", "keyspace").Result()
		if err != nil {
			n.Error = err.Error()
		} else {
			n.Up = true
			n.RedisInfo = parseInfo(raw)
			for _, line := range strings.Split(raw, "\n") {
				line = strings.TrimSpace(line)
				if r, ok := strings.CutPrefix(line, "role:"); ok {
					n.Role = r
				}
				if ks, ok := strings.CutPrefix(line, "db0:keys="); ok {
					k, _, _ := strings.Cut(ks, ",")
					n.Keys, _ = strconv.ParseInt(k, 10, 64)
				}
			}
		}
		mu.Lock()
		nodes = append(nodes, n)
		mu.Unlock()
		return nil // one node down must not hide the others
	})
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Addr < nodes[j].Addr })
	return nodes
}
