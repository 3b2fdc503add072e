package redistest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// What the harnesses (and test/chaos) read of a node about itself: its
// ROLE, its view of a Cluster (CLUSTER NODES) and the cluster's state.

// nodeClient is a plain client to one node, failing fast when it is dead.
func nodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
}

// ClusterNode is one line of CLUSTER NODES.
type ClusterNode struct {
	ID, Addr, MasterID string
	Flags              []string
	Myself, Master     bool
	Connected          bool
}

// Healthy is a node its peers neither suspect nor fail, on a live link.
func (n ClusterNode) Healthy() bool {
	for _, f := range n.Flags {
		if f == "fail" || f == "fail?" || f == "handshake" || f == "noaddr" {
			return false
		}
	}
	return n.Connected
}

// ClusterNodes parses CLUSTER NODES as the node at addr sees the cluster.
func ClusterNodes(ctx context.Context, addr string) ([]ClusterNode, error) {
	n := nodeClient(addr)
	defer n.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	text, err := n.ClusterNodes(cctx).Result()
	if err != nil {
		return nil, err
	}
	var out []ClusterNode
	for line := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		// <id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <epoch> <link-state> <slot>…
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("cluster nodes line %q", line)
		}
		cn := ClusterNode{ID: f[0], Addr: strings.SplitN(f[1], "@", 2)[0], Flags: strings.Split(f[2], ","), Connected: f[7] == "connected"}
		if f[3] != "-" {
			cn.MasterID = f[3]
		}
		cn.Myself = slices.Contains(cn.Flags, "myself")
		cn.Master = slices.Contains(cn.Flags, "master")
		out = append(out, cn)
	}
	return out, nil
}

// ClusterStateOK is whether the node at addr reports cluster_state:ok.
func ClusterStateOK(ctx context.Context, addr string) bool {
	n := nodeClient(addr)
	defer n.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	info, err := n.ClusterInfo(cctx).Result()
	return err == nil && strings.Contains(info, "cluster_state:ok")
}

// Role returns a node's ROLE: "master", or "slave" with its master's
// address and link state ("connected" when in sync); "" when it does not answer.
func Role(ctx context.Context, addr string) (role, master, state string) {
	c := nodeClient(addr)
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	r, err := c.Do(cctx, "ROLE").Slice()
	if err != nil || len(r) == 0 {
		return "", "", ""
	}
	role, _ = r[0].(string)
	if role == "slave" && len(r) >= 4 {
		host, _ := r[1].(string)
		port, _ := r[2].(int64)
		state, _ = r[3].(string)
		master = net.JoinHostPort(host, fmt.Sprint(port))
	}
	return role, master, state
}

// Subscribe opens a Pub/Sub on c with one SUBSCRIBE per channel (as the
// FOGIS calendar sends them) and waits for each confirmation; it is closed
// when the test ends.
func Subscribe(t testing.TB, c *redis.Client, channels ...string) *redis.PubSub {
	t.Helper()
	ctx := context.Background()
	ps := c.Subscribe(ctx)
	t.Cleanup(func() { _ = ps.Close() })
	for _, ch := range channels {
		if err := ps.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
			t.Fatalf("subscribe %s: %v", ch, err)
		}
	}
	return ps
}
