package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// sentinelSet is a master, its replica and three sentinels (redistest),
// default asynchronous replication: the sidecar's WAIT is what keeps an
// acknowledged event through a failover.
type sentinelSet struct {
	s   *redistest.Sentinel
	rdb *redis.Client
}

func startSentinel(h *harnessT) *sentinelSet {
	s := redistest.StartSentinel(h)
	return &sentinelSet{s: s, rdb: s.Client(h)}
}

func (s *sentinelSet) url() string                   { return s.s.URL }
func (s *sentinelSet) topics() [2]string             { return defaultTopics }
func (s *sentinelSet) client() redis.UniversalClient { return s.rdb }
func (s *sentinelSet) close()                        {}
func (s *sentinelSet) describe() string {
	master := "unknown (no sentinel answers)"
	_ = guard(func() { master = s.s.MasterAddr() })
	return fmt.Sprintf("Sentinel: master %s with one replica, sentinels %v", master, s.s.SentinelAddrs)
}

func (s *sentinelSet) faults() []faultKind {
	return []faultKind{
		{name: "sentinel-failover", weight: 2, targets: []string{"master"},
			apply: func(context.Context, spec) (string, healFunc, error) {
				from, to := s.s.Failover()
				return fmt.Sprintf("SENTINEL FAILOVER %s → %s", from, to), s.settle, nil
			}},
		{name: "sentinel-kill-master", weight: 3, minHold: time.Second, maxHold: 6 * time.Second, targets: []string{"master"},
			apply: func(context.Context, spec) (string, healFunc, error) {
				start := time.Now()
				killed, promoted := s.s.KillMaster()
				return fmt.Sprintf("SIGKILL master %s, %s promoted after %v", killed, promoted, time.Since(start).Round(time.Millisecond)),
					func(context.Context) (string, error) {
						start := time.Now()
						s.s.RestartOld()
						return fmt.Sprintf("old master back (empty) as a replica, settled in %v", time.Since(start).Round(time.Millisecond)), nil
					}, nil
			}},
		{name: "sentinel-stop-master", weight: 2, minHold: 500 * time.Millisecond, maxHold: 4 * time.Second, targets: []string{"master"},
			apply: func(ctx context.Context, _ spec) (string, healFunc, error) {
				return s.stopNode(ctx, s.s.MasterAddr())
			}},
		{name: "sentinel-stop-replica", weight: 2, minHold: 500 * time.Millisecond, maxHold: 5 * time.Second, targets: []string{"replica"},
			apply: func(ctx context.Context, _ spec) (string, healFunc, error) {
				rs, err := replicaOf(ctx, s.s.MasterAddr())
				if err != nil {
					return "", nil, err
				}
				if len(rs) == 0 {
					return "", nil, errors.New("the master lists no replica")
				}
				return s.stopNode(ctx, rs[0])
			}},
	}
}

// stopNode SIGSTOPs a data node; a master stopped past the sentinels'
// down-after (1 s) is failed over, so the heal waits for the set to settle.
func (s *sentinelSet) stopNode(ctx context.Context, addr string) (string, healFunc, error) {
	return stopNode(ctx, addr, func(ctx context.Context) (string, error) {
		// A failover the stop set off may still be under way: WaitSettled
		// takes the master's address once, so let the sentinels agree first.
		if err := s.waitAgreed(ctx); err != nil {
			return "", err
		}
		return s.settle(ctx)
	})
}

// waitAgreed waits until every sentinel names the same master, flags it
// plainly "master" (no s_down, o_down or failover in progress) twice in a
// row a second apart, and that node answers ROLE master.
func (s *sentinelSet) waitAgreed(ctx context.Context) error {
	agreed := func() string {
		master := ""
		for _, a := range s.s.SentinelAddrs {
			sc := redis.NewSentinelClient(&redis.Options{Addr: a, MaxRetries: -1, DialTimeout: 300 * time.Millisecond})
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			m, err := sc.Master(cctx, redistest.MasterName).Result()
			cancel()
			sc.Close()
			addr := m["ip"] + ":" + m["port"]
			if err != nil || m["flags"] != "master" || (master != "" && addr != master) {
				return ""
			}
			master = addr
		}
		if role, _, _ := redistest.Role(ctx, master); role != "master" {
			return ""
		}
		return master
	}
	var prev string
	return waitFor(ctx, 40*time.Second, "the sentinels to agree on a master", func() bool {
		now := agreed()
		stable := now != "" && now == prev
		prev = now
		if !stable {
			backoff.Sleep(ctx, time.Second)
		}
		return stable
	})
}

// settle waits until every data node replicates from the master and the
// sentinels agree: after a failover the old master has then been demoted
// and has discarded what it took meanwhile.
func (s *sentinelSet) settle(context.Context) (string, error) {
	start := time.Now()
	s.s.WaitSettled()
	return fmt.Sprintf("settled in %v, master %s", time.Since(start).Round(time.Millisecond), s.s.MasterAddr()), nil
}
