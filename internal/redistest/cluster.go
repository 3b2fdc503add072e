package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a six-node Redis Cluster for failover tests: three masters,
// each with one replica, redis-server processes on free 127.0.0.1 ports.
//
// Its methods fail the test through the testing.TB it was started with, so
// call them from the test's goroutine.
type Cluster struct {
	// URL is the sidecar's REDIS_URL: redis+cluster://first?addr=…&addr=….
	URL string
	// Addrs are the nodes' host:port, in start order.
	Addrs []string

	t      testing.TB
	mu     sync.Mutex
	nodes  map[string]*Server
	killed map[string]killedNode // by address
	// clients handed out by Client, made to follow a promotion
	clients []*redis.ClusterClient
}

// killedNode is what KillNode learnt of a node before it killed it.
type killedNode struct {
	id       string
	replicas []string // node ids of its replicas
}

// clusterNodeTimeout is cluster-node-timeout: a dead master is flagged
// FAIL after it, and its replica elected some 0.5–1.5 s later.
const clusterNodeTimeout = 1000 * time.Millisecond

// StartCluster starts six cluster-enabled nodes, joins them with
// redis-cli --cluster create (one replica per master), and returns once
// every node says cluster_state:ok, knows all six nodes, and every replica
// is in sync. All are killed by t.Cleanup.
//
// The nodes run with cluster-require-full-coverage no, so that a master's
// death stops only its own slots, never the others': the tests measure the
// sidecar's isolation, not Redis refusing every key while a shard is down.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		SkipOrFail(t, "this test needs the redis-server binary on PATH (apt-get install redis-server)")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		SkipOrFail(t, "this test needs the redis-cli binary on PATH (apt-get install redis-tools)")
	}
	c := &Cluster{t: t, nodes: map[string]*Server{}, killed: map[string]killedNode{}}
	for range 6 {
		n := startProcessOn(t, bin, FreePort(t),
			"--cluster-enabled", "yes",
			"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
			"--cluster-config-file", "nodes.conf", // relative to the node's own --dir
			"--cluster-port", strconv.Itoa(FreePort(t)), // not port+10000, which may be taken or out of range
			"--cluster-require-full-coverage", "no",
			"--cluster-replica-validity-factor", "0", // a replica may always take over
			"--repl-diskless-sync-delay", "0")
		c.nodes[n.Addr] = n
		c.Addrs = append(c.Addrs, n.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.URL = "redis+cluster://" + c.Addrs[0] + "?addr=" + strings.Join(c.Addrs[1:], "&addr=")
	c.waitHealthy(30 * time.Second)
	return c
}

// Client returns a cluster client for assertions, closed by t.Cleanup.
// go-redis refreshes its slot map only every 10 s or on a redirect, and
// keeps dialling a dead master meanwhile; WaitPromotion therefore reloads
// the clients Client handed out before it returns.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { _ = cc.Close() })
	c.mu.Lock()
	c.clients = append(c.clients, cc)
	c.mu.Unlock()
	return cc
}

// MasterFor returns the address of the master serving key's slot, as the
// first live node answering says.
func (c *Cluster) MasterFor(key string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, a := range c.live() {
		n := nodeClient(a)
		slot, err := n.ClusterKeySlot(ctx, key).Result()
		var slots []redis.ClusterSlot
		if err == nil {
			slots, err = n.ClusterSlots(ctx).Result()
		}
		n.Close()
		if err != nil {
			continue
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				return s.Nodes[0].Addr
			}
		}
	}
	c.t.Fatalf("no live node knows the master for %q", key)
	return ""
}

// KillNode SIGKILLs the node at addr, first noting its replicas for
// WaitPromotion.
func (c *Cluster) KillNode(addr string) {
	c.t.Helper()
	c.mu.Lock()
	srv := c.nodes[addr]
	c.mu.Unlock()
	if srv == nil {
		c.t.Fatalf("KillNode %s: not a node of this cluster", addr)
	}
	nodes, err := ClusterNodes(context.Background(), addr)
	if err != nil {
		c.t.Fatalf("KillNode %s: cluster nodes: %v", addr, err)
	}
	var k killedNode
	for _, n := range nodes {
		if n.Myself {
			k.id = n.ID
		}
	}
	// Its replicas as any live node sees them: one node's table can lag
	// (a replica that just attached), and a replica missed here would make
	// WaitPromotion give up.
	for _, a := range c.live() {
		view := nodes
		if a != addr {
			if view, err = ClusterNodes(context.Background(), a); err != nil {
				continue
			}
		}
		for _, n := range view {
			if n.MasterID == k.id && !slices.Contains(k.replicas, n.ID) {
				k.replicas = append(k.replicas, n.ID)
			}
		}
	}
	srv.Kill()
	c.mu.Lock()
	c.killed[addr] = k
	c.mu.Unlock()
}

// WaitPromotion waits until a replica of the master KillNode killed at addr
// has been elected: it flags itself master and says cluster_state:ok. It
// returns that node's address and when the promotion was first seen
// (polled every 10 ms), then waits until every surviving node agrees.
func (c *Cluster) WaitPromotion(addr string) (promoted string, at time.Time) {
	c.t.Helper()
	c.mu.Lock()
	k, ok := c.killed[addr]
	c.mu.Unlock()
	if !ok || len(k.replicas) == 0 {
		c.t.Fatalf("WaitPromotion %s: KillNode did not kill a master with replicas there", addr)
	}
	var newID string
	ok = waitUntil(30*time.Second, func() bool {
		for _, a := range c.live() {
			nodes, err := ClusterNodes(context.Background(), a)
			if err != nil {
				continue
			}
			for _, n := range nodes {
				if n.Myself && n.Master && slices.Contains(k.replicas, n.ID) && ClusterStateOK(context.Background(), a) {
					promoted, newID = a, n.ID
					return true
				}
			}
		}
		return false
	})
	at = time.Now()
	if !ok {
		c.t.Fatalf("no replica of %s (%s) was promoted within 30s\n%s", addr, k.id, c.logs())
	}
	ok = waitUntil(10*time.Second, func() bool {
		for _, a := range c.live() {
			nodes, err := ClusterNodes(context.Background(), a)
			if err != nil || !ClusterStateOK(context.Background(), a) {
				return false
			}
			for _, n := range nodes {
				if n.ID == newID && !n.Master {
					return false
				}
			}
		}
		return true
	})
	if !ok {
		c.t.Fatalf("surviving nodes do not agree that %s is a master\n%s", promoted, c.logs())
	}
	c.reloadClients(addr)
	return promoted, at
}

// reloadClients makes the clients Client handed out load the slot map
// again, and waits until none of them routes to the dead node.
func (c *Cluster) reloadClients(dead string) {
	c.t.Helper()
	c.mu.Lock()
	clients := slices.Clone(c.clients)
	c.mu.Unlock()
	for _, cc := range clients {
		ok := waitUntil(10*time.Second, func() bool {
			cc.ReloadState(context.Background())
			var mu sync.Mutex
			stale := false
			err := cc.ForEachMaster(context.Background(), func(_ context.Context, m *redis.Client) error {
				mu.Lock()
				stale = stale || m.Options().Addr == dead
				mu.Unlock()
				return nil
			})
			return err == nil && !stale
		})
		if !ok {
			c.t.Fatalf("a cluster client still routes to the dead node %s after 10s", dead)
		}
	}
}

// live is the addresses of the nodes not killed.
func (c *Cluster) live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, a := range c.Addrs {
		if _, dead := c.killed[a]; !dead {
			out = append(out, a)
		}
	}
	return out
}

// waitHealthy waits until every node says cluster_state:ok and lists six
// connected nodes, none in handshake or failing, and every replica is in sync.
func (c *Cluster) waitHealthy(d time.Duration) {
	c.t.Helper()
	ok := waitUntil(d, func() bool {
		for _, a := range c.Addrs {
			nodes, err := ClusterNodes(context.Background(), a)
			if err != nil || len(nodes) != len(c.Addrs) || !ClusterStateOK(context.Background(), a) {
				return false
			}
			for _, n := range nodes {
				if !n.Healthy() {
					return false
				}
				if n.Myself && !n.Master {
					if role, _, state := Role(context.Background(), a); role != "slave" || state != "connected" {
						return false
					}
				}
			}
		}
		return true
	})
	if !ok {
		c.t.Fatalf("cluster not healthy within %v\n%s", d, c.logs())
	}
}

func (c *Cluster) logs() string {
	var b strings.Builder
	for _, a := range c.Addrs {
		c.mu.Lock()
		n := c.nodes[a]
		c.mu.Unlock()
		fmt.Fprintf(&b, "---- cluster node %s ----\n%s\n", a, nodeLogTail(n.dir, 15))
	}
	return b.String()
}
