package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Sentinel and Cluster harnesses do not hand out their processes, so
// faults they offer no method for (SIGSTOP, a replica's or a cluster
// node's restart) act on a node through what it says of itself: its pid
// (INFO server) and its configuration (CONFIG GET).

// nodeClient is a client to one node that fails fast when it is dead or stopped.
func nodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 300 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second})
}

// nodeInfo returns one INFO section of the node at addr as key → value.
func nodeInfo(ctx context.Context, addr, section string) (map[string]string, error) {
	c := nodeClient(addr)
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	text, err := c.Info(cctx, section).Result()
	if err != nil {
		return nil, fmt.Errorf("INFO %s of %s: %w", section, addr, err)
	}
	out := map[string]string{}
	for line := range strings.SplitSeq(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok {
			out[k] = v
		}
	}
	return out, nil
}

// nodePid is the process id of the redis-server at addr.
func nodePid(ctx context.Context, addr string) (int, error) {
	info, err := nodeInfo(ctx, addr, "server")
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(info["process_id"])
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("INFO server of %s: process_id %q", addr, info["process_id"])
	}
	return pid, nil
}

// signalNode sends sig to the redis-server at addr and returns its pid.
func signalNode(ctx context.Context, addr string, sig syscall.Signal) (int, error) {
	pid, err := nodePid(ctx, addr)
	if err != nil {
		return 0, err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return pid, fmt.Errorf("kill -%d %d (%s): %w", sig, pid, addr, err)
	}
	return pid, nil
}

// stopNode SIGSTOPs the redis-server at addr; its heal SIGCONTs it and
// then waits with settled (the topology's own convergence), whose detail
// follows "SIGCONT, " in the timeline.
func stopNode(ctx context.Context, addr string, settled func(context.Context) (string, error)) (string, healFunc, error) {
	pid, err := signalNode(ctx, addr, syscall.SIGSTOP)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("SIGSTOP %s (pid %d)", addr, pid), func(ctx context.Context) (string, error) {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			return "", fmt.Errorf("SIGCONT %d: %w", pid, err)
		}
		detail, err := settled(ctx)
		if err != nil {
			return "SIGCONT", err
		}
		return "SIGCONT, " + detail, nil
	}, nil
}

// replicaOf returns the addresses of the replicas the master at addr lists
// in INFO replication (online or not).
func replicaOf(ctx context.Context, addr string) ([]string, error) {
	info, err := nodeInfo(ctx, addr, "replication")
	if err != nil {
		return nil, err
	}
	var out []string
	for k, v := range info {
		if !strings.HasPrefix(k, "slave") || !strings.Contains(v, "ip=") {
			continue
		}
		f := map[string]string{}
		for kv := range strings.SplitSeq(v, ",") {
			a, b, _ := strings.Cut(kv, "=")
			f[a] = b
		}
		out = append(out, net.JoinHostPort(f["ip"], f["port"]))
	}
	return out, nil
}

// waitPortClosed waits until nothing accepts connections at addr.
func waitPortClosed(ctx context.Context, addr string, d time.Duration) error {
	return waitFor(ctx, d, "port "+addr+" closed", func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
}

// waitFor polls cond every 20 ms until it holds, d passes or ctx ends.
func waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
