package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// clusterSet is the six-node Cluster of redistest (three masters, one
// replica each). The harness kills a node but cannot start it again, so the
// chaos program kills nodes itself (by pid) and relaunches them with the
// configuration the node reports (CONFIG GET): a killed master comes back
// from its nodes.conf, learns it lost its slots, and rejoins as a replica —
// so the shard can lose a master again later in the run.
type clusterSet struct {
	c      *redistest.Cluster
	rdb    *redis.ClusterClient
	names  [2]string
	master [2]string // master address at the start, per topic

	mu         sync.Mutex
	relaunched []*exec.Cmd
}

func startCluster(ctx context.Context, h *harnessT) (*clusterSet, error) {
	c := redistest.StartCluster(h)
	cs := &clusterSet{c: c, rdb: redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})}
	// Topics on different masters, so one shard's faults leave the other
	// topic's path alone (isolation is part of what is checked).
	cs.names[0] = defaultTopics[0]
	m0, err := cs.masterOf(ctx, topicKey(cs.names[0]))
	if err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		name := defaultTopics[1]
		if i > 0 {
			name = fmt.Sprintf("%s.%d", defaultTopics[1], i)
		}
		m1, err := cs.masterOf(ctx, topicKey(name))
		if err != nil {
			return nil, err
		}
		if m1 != m0 {
			cs.names[1], cs.master = name, [2]string{m0, m1}
			return cs, nil
		}
	}
}

func (c *clusterSet) url() string                   { return c.c.URL }
func (c *clusterSet) topics() [2]string             { return c.names }
func (c *clusterSet) client() redis.UniversalClient { return c.rdb }
func (c *clusterSet) describe() string {
	return fmt.Sprintf("Cluster of 6 nodes %v; %s on master %s, %s on master %s",
		c.c.Addrs, c.names[0], c.master[0], c.names[1], c.master[1])
}

// close kills the nodes this program relaunched (the harness kills its own).
func (c *clusterSet) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cmd := range c.relaunched {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
	}
	_ = c.rdb.Close()
}

func (c *clusterSet) faults() []faultKind {
	topics := []string{"topic1", "topic2"}
	idx := func(target string) int { return slices.Index(topics, target) }
	return []faultKind{
		{name: "cluster-kill-master", weight: 3, minHold: time.Second, maxHold: 6 * time.Second, targets: topics,
			apply: func(ctx context.Context, s spec) (string, healFunc, error) { return c.killMaster(ctx, idx(s.target)) }},
		{name: "cluster-stop-master", weight: 2, minHold: 500 * time.Millisecond, maxHold: 4 * time.Second, targets: topics,
			apply: func(ctx context.Context, s spec) (string, healFunc, error) {
				m, err := c.masterOf(ctx, topicKey(c.names[idx(s.target)]))
				if err != nil {
					return "", nil, err
				}
				return c.stopNode(ctx, m)
			}},
		{name: "cluster-stop-replica", weight: 2, minHold: 500 * time.Millisecond, maxHold: 5 * time.Second, targets: topics,
			apply: func(ctx context.Context, s spec) (string, healFunc, error) {
				m, err := c.masterOf(ctx, topicKey(c.names[idx(s.target)]))
				if err != nil {
					return "", nil, err
				}
				rs, err := replicaOf(ctx, m)
				if err != nil || len(rs) == 0 {
					return "", nil, errors.Join(errors.New("the master lists no replica"), err)
				}
				return c.stopNode(ctx, rs[0])
			}},
	}
}

// killMaster SIGKILLs the master of topic i's slot, waits for its replica's
// promotion, and heals by relaunching the node, which rejoins as a replica.
func (c *clusterSet) killMaster(ctx context.Context, i int) (string, healFunc, error) {
	addr, err := c.masterOf(ctx, topicKey(c.names[i]))
	if err != nil {
		return "", nil, err
	}
	nodes, err := redistest.ClusterNodes(ctx, addr)
	if err != nil {
		return "", nil, err
	}
	var id string
	for _, n := range nodes {
		if n.Myself {
			id = n.ID
		}
	}
	var replicas []string
	for _, n := range nodes {
		if n.MasterID == id && n.Healthy() {
			replicas = append(replicas, n.ID)
		}
	}
	if len(replicas) == 0 {
		return "", nil, fmt.Errorf("master %s has no healthy replica: not killed (the shard would be lost)", addr)
	}
	args, err := relaunchArgs(ctx, addr)
	if err != nil {
		return "", nil, err
	}
	pid, err := signalNode(ctx, addr, syscall.SIGKILL)
	if err != nil {
		return "", nil, err
	}
	heal := func(ctx context.Context) (string, error) { return c.relaunch(ctx, addr, args) }
	if err := waitPortClosed(ctx, addr, 10*time.Second); err != nil {
		return "", heal, err
	}
	killed := time.Now()
	var promoted string
	err = waitFor(ctx, 30*time.Second, "a replica of "+addr+" promoted", func() bool {
		for _, a := range c.c.Addrs {
			if a == addr {
				continue
			}
			ns, err := redistest.ClusterNodes(ctx, a)
			if err != nil {
				continue
			}
			for _, n := range ns {
				if n.Myself && n.Master && slices.Contains(replicas, n.ID) && redistest.ClusterStateOK(ctx, a) {
					promoted = a
					return true
				}
			}
		}
		return false
	})
	if err != nil {
		return fmt.Sprintf("SIGKILL master %s (pid %d)", addr, pid), heal, err
	}
	return fmt.Sprintf("SIGKILL master %s (pid %d), replica %s promoted after %v", addr, pid, promoted,
		time.Since(killed).Round(time.Millisecond)), heal, nil
}

// relaunch starts a killed node again with its own configuration and waits
// until it replicates and the cluster is healthy.
func (c *clusterSet) relaunch(ctx context.Context, addr string, args []string) (string, error) {
	start := time.Now()
	cmd := exec.Command("redis-server", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("relaunch %s: %w", addr, err)
	}
	go func() { _ = cmd.Wait() }()
	c.mu.Lock()
	c.relaunched = append(c.relaunched, cmd)
	c.mu.Unlock()
	if err := waitFor(ctx, 30*time.Second, addr+" replicating again", func() bool {
		role, _, state := redistest.Role(ctx, addr)
		return role == "slave" && state == "connected"
	}); err != nil {
		return "relaunched", err
	}
	if err := c.waitHealthy(ctx, 30*time.Second); err != nil {
		return "relaunched, replicating", err
	}
	return fmt.Sprintf("relaunched (pid %d), a replica again, cluster healthy in %v", cmd.Process.Pid, time.Since(start).Round(time.Millisecond)), nil
}

// stopNode SIGSTOPs a node; a master stopped past cluster-node-timeout
// (1 s) is failed over, so the heal waits for the cluster to be healthy.
func (c *clusterSet) stopNode(ctx context.Context, addr string) (string, healFunc, error) {
	return stopNode(ctx, addr, func(ctx context.Context) (string, error) {
		start := time.Now()
		if err := c.waitHealthy(ctx, 30*time.Second); err != nil {
			return "", err
		}
		m0, _ := c.masterOf(ctx, topicKey(c.names[0]))
		m1, _ := c.masterOf(ctx, topicKey(c.names[1]))
		return fmt.Sprintf("healthy in %v (masters now %s, %s)", time.Since(start).Round(time.Millisecond), m0, m1), nil
	})
}

// waitHealthy waits until every node says cluster_state:ok and sees all
// six nodes connected and none failing, and every replica is in sync.
func (c *clusterSet) waitHealthy(ctx context.Context, d time.Duration) error {
	return waitFor(ctx, d, "a healthy cluster", func() bool {
		for _, a := range c.c.Addrs {
			ns, err := redistest.ClusterNodes(ctx, a)
			if err != nil || len(ns) != len(c.c.Addrs) || !redistest.ClusterStateOK(ctx, a) {
				return false
			}
			for _, n := range ns {
				if !n.Healthy() {
					return false
				}
				if n.Myself && !n.Master {
					if role, _, state := redistest.Role(ctx, a); role != "slave" || state != "connected" {
						return false
					}
				}
			}
		}
		return true
	})
}

// masterOf asks the live nodes which master serves key's slot.
func (c *clusterSet) masterOf(ctx context.Context, key string) (string, error) {
	var last error
	for _, a := range c.c.Addrs {
		n := nodeClient(a)
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		slot, err := n.ClusterKeySlot(cctx, key).Result()
		var slots []redis.ClusterSlot
		if err == nil {
			slots, err = n.ClusterSlots(cctx).Result()
		}
		cancel()
		n.Close()
		if err != nil {
			last = err
			continue
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				return s.Nodes[0].Addr, nil
			}
		}
	}
	return "", fmt.Errorf("no node knows the master of %s: %v", key, last)
}

// relaunchArgs is the command line that starts the node at addr again as
// it runs now: its settings as CONFIG GET reports them.
func relaunchArgs(ctx context.Context, addr string) ([]string, error) {
	n := nodeClient(addr)
	defer n.Close()
	var args []string
	for _, name := range []string{"port", "bind", "dir", "logfile", "daemonize", "save", "appendonly",
		"cluster-enabled", "cluster-config-file", "cluster-node-timeout", "cluster-port",
		"cluster-require-full-coverage", "cluster-replica-validity-factor", "repl-diskless-sync-delay"} {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := n.ConfigGet(cctx, name).Result()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("CONFIG GET %s of %s: %w", name, addr, err)
		}
		v, ok := m[name]
		if !ok {
			return nil, fmt.Errorf("CONFIG GET %s of %s: not reported", name, addr)
		}
		args = append(args, "--"+name, v)
	}
	return args, nil
}
