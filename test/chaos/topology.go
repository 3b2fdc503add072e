package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// topology is the Redis the sidecars use, with the faults it can suffer.
type topology interface {
	// url is the sidecars' REDIS_URL.
	url() string
	// topics are the two topics of the run (on Cluster, on different masters).
	topics() [2]string
	// faults are the Redis lane's fault kinds.
	faults() []faultKind
	// client reads the streams and groups at the end (and while settling).
	client() redis.UniversalClient
	// describe says what runs, for the report.
	describe() string
	// close stops what the topology started beyond the harness's own
	// cleanups (processes it relaunched itself).
	close()
}

func startTopology(ctx context.Context, name string, h *harnessT) (topology, error) {
	var (
		t   topology
		err error
	)
	herr := guard(func() {
		switch name {
		case "standalone":
			t = startStandalone(h)
		case "sentinel":
			t = startSentinel(h)
		case "cluster":
			t, err = startCluster(ctx, h)
		default:
			err = fmt.Errorf("--topology %q: want standalone, sentinel or cluster", name)
		}
	})
	if herr != nil {
		return nil, herr
	}
	return t, err
}

// defaultTopics are the run's topics where any two names will do.
var defaultTopics = [2]string{"chaos.orders", "chaos.matches"}

// standalone is one redis-server with AOF, fsync'd on every write: a
// restart keeps everything Redis acknowledged, which the sidecar's promise
// rests on (docs/reliability.md).
type standalone struct {
	srv *redistest.Server
	rdb *redis.Client
}

func startStandalone(h *harnessT) *standalone {
	srv := redistest.StartProcessWith(h, 0, "--appendonly", "yes", "--appendfsync", "always")
	return &standalone{srv: srv, rdb: srv.Client(h)}
}

func (s *standalone) url() string                   { return s.srv.URL }
func (s *standalone) topics() [2]string             { return defaultTopics }
func (s *standalone) client() redis.UniversalClient { return s.rdb }
func (s *standalone) close()                        {}
func (s *standalone) describe() string {
	return "standalone redis-server " + s.srv.Addr + " (appendonly yes, appendfsync always)"
}

func (s *standalone) faults() []faultKind {
	return []faultKind{
		{name: "redis-kill", weight: 3, minHold: time.Second, maxHold: 6 * time.Second, targets: []string{"redis"},
			apply: func(context.Context, spec) (string, healFunc, error) {
				s.srv.Kill()
				return "SIGKILL", s.restart, nil
			}},
		{name: "redis-term", weight: 2, minHold: 0, maxHold: 4 * time.Second, targets: []string{"redis"},
			apply: func(ctx context.Context, _ spec) (string, healFunc, error) {
				pid, err := signalNode(ctx, s.srv.Addr, syscall.SIGTERM)
				if err != nil {
					return "", nil, err
				}
				if err := waitPortClosed(ctx, s.srv.Addr, 20*time.Second); err != nil {
					return "", s.restart, err
				}
				return fmt.Sprintf("SIGTERM pid %d, exited", pid), s.restart, nil
			}},
		{name: "redis-stop", weight: 3, minHold: 500 * time.Millisecond, maxHold: 5 * time.Second, targets: []string{"redis"},
			apply: func(context.Context, spec) (string, healFunc, error) {
				s.srv.Stop()
				return "SIGSTOP", func(context.Context) (string, error) { s.srv.Cont(); return "SIGCONT", nil }, nil
			}},
	}
}

// restart starts Redis again on its port and directory: it loads its AOF.
func (s *standalone) restart(context.Context) (string, error) {
	start := time.Now()
	s.srv.Restart()
	return fmt.Sprintf("restarted with its AOF in %v", time.Since(start).Round(time.Millisecond)), nil
}
