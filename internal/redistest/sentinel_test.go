package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

func TestSentinelFailoverKillAndRestart(t *testing.T) {
	s := redistest.StartSentinel(t)
	ctx := context.Background()
	c := s.Client(t)
	if err := c.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatalf("set on the first master: %v", err)
	}
	first := s.MasterAddr()

	start := time.Now()
	from, to := s.Failover()
	if from != first || to == first {
		t.Fatalf("Failover: got %s -> %s, want from %s to another node", from, to, first)
	}
	if got := s.MasterAddr(); got != to {
		t.Fatalf("master after Failover: got %s, want %s", got, to)
	}
	t.Logf("measured: planned failover %s -> %s promoted in %v", from, to, time.Since(start).Round(time.Millisecond))
	s.WaitSettled()
	t.Logf("measured: old master %s converted to a replica %v after SENTINEL FAILOVER", from, time.Since(start).Round(time.Millisecond))
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "before" {
		t.Fatalf("get after failover: got %q, %v; want \"before\"", v, err)
	}

	start = time.Now()
	killed, promoted := s.KillMaster()
	if killed != to || promoted != from {
		t.Fatalf("KillMaster: got %s killed, %s promoted; want %s, %s", killed, promoted, to, from)
	}
	t.Logf("measured: SIGKILL of master %s -> %s promoted in %v", killed, promoted, time.Since(start).Round(time.Millisecond))
	if err := c.Set(ctx, "k", "after", 0).Err(); err != nil {
		// The client's pool may hold a connection to the dead master once.
		if err := c.Set(ctx, "k", "after", 0).Err(); err != nil {
			t.Fatalf("set on the promoted master: %v", err)
		}
	}

	start = time.Now()
	s.RestartOld()
	t.Logf("measured: old master restarted as replica in %v", time.Since(start).Round(time.Millisecond))
	from, to = s.Failover() // the restarted node can take over again
	if from != promoted || to != killed {
		t.Fatalf("second Failover: got %s -> %s, want %s -> %s", from, to, promoted, killed)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "after" {
		t.Fatalf("get after the second failover: got %q, %v; want \"after\"", v, err)
	}
}
