package check

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// state names a result as the report marks it: PASS, WARN (a failed
// non-critical check) or FAIL.
func state(r Result) string {
	switch {
	case strings.HasPrefix(r.Name, "missing "):
		return "missing"
	case r.Passed:
		return "PASS"
	case !r.Critical:
		return "WARN"
	}
	return "FAIL"
}

// sound is a master the rest of the report has nothing against, so a
// case's overall status is its replication's and durability's.
var sound = []string{"--maxmemory", "256mb", "--maxmemory-policy", "noeviction", "--appendonly", "yes",
	"--repl-diskless-sync-delay", "0"} // replicas sync at once, not after 5 s

// startReplicated starts a master with args and n replicas of it, and
// waits until the master reports them all online (and, with
// min-replicas-to-write, within its lag).
func startReplicated(t *testing.T, n int, args ...string) (master *redistest.Server, replicas []*redistest.Server) {
	t.Helper()
	master = redistest.StartProcessWith(t, 0, append(append([]string{}, sound...), args...)...)
	host, port, _ := net.SplitHostPort(master.Addr)
	for range n {
		replicas = append(replicas, redistest.StartProcessWith(t, 0, "--replicaof", host, port))
	}
	c := master.Client(t)
	eventually.True(t, 20*time.Second, fmt.Sprintf("%d replicas online at %s", n, master.Addr), func() bool {
		r, err := readReplication(context.Background(), c)
		return err == nil && r.online == n && (!r.minSet || r.good == n)
	})
	return master, replicas
}

func TestReplicationAndDurability(t *testing.T) {
	for _, tc := range []struct {
		name        string
		args        []string
		replicas    int
		atReplica   bool // REDIS_URL names the replica, not the master
		minReplicas int
		overall     string
		want        map[string]string // check name → PASS | WARN | FAIL
		detail      map[string]string // check name → part of its detail
	}{
		{name: "single node, AOF everysec", args: []string{"--appendfsync", "everysec"}, minReplicas: -1, overall: "READY",
			want: map[string]string{"Durability": "PASS", "Replication": "PASS", "Persistence": "PASS"},
			detail: map[string]string{
				"Durability":  "appendonly yes, appendfsync everysec: up to 1 s of writes can be lost on a Redis crash without a replica",
				"Replication": "no replica; a failover has nothing to promote, so none can lose an acknowledged event (single node: durability rests on persistence)"}},
		{name: "AOF always", args: []string{"--appendfsync", "always"}, minReplicas: -1, overall: "READY",
			want:   map[string]string{"Durability": "PASS"},
			detail: map[string]string{"Durability": "appendfsync always: every write fsync'd"}},
		{name: "AOF always, no fsync during rewrites", args: []string{"--appendfsync", "always", "--no-appendfsync-on-rewrite", "yes"}, minReplicas: -1, overall: "READY",
			want:   map[string]string{"Durability": "PASS"},
			detail: map[string]string{"Durability": "no-appendfsync-on-rewrite yes"}},
		{name: "appendfsync no", args: []string{"--appendfsync", "no"}, minReplicas: -1, overall: "DEGRADED",
			want:   map[string]string{"Durability": "WARN", "Persistence": "PASS"},
			detail: map[string]string{"Durability": "appendfsync no: the kernel decides when writes reach the disk"}},
		{name: "AOF off", args: []string{"--appendonly", "no"}, minReplicas: -1, overall: "DEGRADED",
			want:   map[string]string{"Durability": "WARN", "Persistence": "WARN"},
			detail: map[string]string{"Durability": "appendonly no"}},
		{name: "CONFIG refused", args: []string{"--rename-command", "CONFIG", ""}, minReplicas: -1, overall: "READY",
			want:   map[string]string{"Durability": "PASS", "Replication": "PASS"},
			detail: map[string]string{"Durability": "appendfsync unknown (CONFIG GET refused)", "Replication": "no replica"}},
		{name: "online replica, auto", replicas: 1, minReplicas: -1, overall: "READY",
			want:   map[string]string{"Replication": "PASS", "Durability": "PASS"},
			detail: map[string]string{"Replication": "master with 1 online replica; publishes wait for 1 replica (WAIT) before 202 — a failover loses no acknowledged event"}},
		{name: "two online replicas, min_replicas 2", replicas: 2, minReplicas: 2, overall: "READY",
			want:   map[string]string{"Replication": "PASS"},
			detail: map[string]string{"Replication": "master with 2 online replicas; publishes wait for 2 replicas (WAIT)"}},
		{name: "min_replicas 2 with 1 replica", replicas: 1, minReplicas: 2, overall: "FAILED",
			want:   map[string]string{"Replication": "FAIL"},
			detail: map[string]string{"Replication": "redis.min_replicas 2 but 1 online replica: WAIT cannot reach 2, so every publish would be spooled"}},
		{name: "min_replicas 1 without a replica", minReplicas: 1, overall: "FAILED",
			want:   map[string]string{"Replication": "FAIL"},
			detail: map[string]string{"Replication": "redis.min_replicas 1 but 0 online replicas"}},
		{name: "min_replicas 0 with a replica", replicas: 1, minReplicas: 0, overall: "DEGRADED",
			want:   map[string]string{"Replication": "WARN"},
			detail: map[string]string{"Replication": "master with 1 online replica, but redis.min_replicas 0: publishes do not wait for a replica"}},
		{name: "min-replicas-to-write met", args: []string{"--min-replicas-to-write", "1"}, replicas: 1, minReplicas: -1, overall: "READY",
			want:   map[string]string{"Replication": "PASS"},
			detail: map[string]string{"Replication": "; Redis itself refuses writes with fewer than 1 replica lagging ≤ 10 s (min-replicas-to-write)"}},
		{name: "min-replicas-to-write, CONFIG refused", args: []string{"--min-replicas-to-write", "1", "--rename-command", "CONFIG", ""}, replicas: 1, minReplicas: -1, overall: "READY",
			want:   map[string]string{"Replication": "PASS"},
			detail: map[string]string{"Replication": "; min-replicas-to-write is on (its value unknown: CONFIG GET refused), 1 replica within its lag"}},
		{name: "min-replicas-to-write unmet", args: []string{"--min-replicas-to-write", "2"}, replicas: 1, minReplicas: -1, overall: "FAILED",
			want:   map[string]string{"Replication": "FAIL"},
			detail: map[string]string{"Replication": "min-replicas-to-write 2 but 1 replica within 10 s lag: Redis refuses every write (NOREPLICAS)"}},
		{name: "URL names a replica", replicas: 1, atReplica: true, minReplicas: -1, overall: "FAILED",
			want:   map[string]string{"Replication": "FAIL"},
			detail: map[string]string{"Replication": "REDIS_URL reaches a replica (of 127.0.0.1:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, replicas := startReplicated(t, tc.replicas, tc.args...)
			srv := master
			if tc.atReplica {
				srv = replicas[0]
			}
			rep := Run(context.Background(), Input{
				RedisURL: srv.URL, Redis: srv.Client(t), MinReplicas: tc.minReplicas,
				SpoolDir: t.TempDir(), SpoolMaxBytes: 1 << 20, HTTP: http.DefaultClient,
			})
			assertReport(t, rep, tc.overall, tc.want, tc.detail)
		})
	}
}

// TestReplicationOnCluster: each master of a Cluster acknowledges its own
// slots, so each one's replicas are read, not one picked at random.
func TestReplicationOnCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	rep := Run(context.Background(), Input{
		RedisURL: cl.URL, Redis: cl.Client(t), MinReplicas: -1,
		SpoolDir: t.TempDir(), SpoolMaxBytes: 1 << 20, HTTP: http.DefaultClient,
	})
	assertReport(t, rep, "", map[string]string{"Replication": "PASS", "Durability": "WARN"}, map[string]string{
		"Replication": "cluster of 3 masters, each: master with 1 online replica; publishes wait for 1 replica (WAIT)",
		"Durability":  "cluster of 3 masters, each: appendonly no"})

	// One master losing its replica makes it the weakest, named.
	var replica, itsMaster string
	for _, a := range cl.Addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		r, err := readReplication(context.Background(), c)
		c.Close()
		if err == nil && r.role == "slave" {
			replica, itsMaster = a, r.master
			break
		}
	}
	if replica == "" {
		t.Fatalf("no replica among %v", cl.Addrs)
	}
	cl.KillNode(replica)
	mc := redis.NewClient(&redis.Options{Addr: itsMaster})
	defer mc.Close()
	eventually.True(t, 10*time.Second, itsMaster+" to report no online replica", func() bool {
		r, err := readReplication(context.Background(), mc)
		return err == nil && r.online == 0
	})
	rep = Run(context.Background(), Input{
		RedisURL: cl.URL, Redis: cl.Client(t), MinReplicas: -1,
		SpoolDir: t.TempDir(), SpoolMaxBytes: 1 << 20, HTTP: http.DefaultClient,
	})
	assertReport(t, rep, "", map[string]string{"Replication": "PASS"}, map[string]string{
		"Replication": "cluster of 3 masters, the weakest " + itsMaster + ": no replica; a failover has nothing to promote"})
}

// assertReport checks the overall status (unless overall is "") and each
// named check's state and detail, and logs the report.
func assertReport(t *testing.T, rep Report, overall string, want, detail map[string]string) {
	t.Helper()
	var text bytes.Buffer
	rep.WriteText(&text)
	if overall != "" && rep.Overall != overall {
		t.Errorf("overall: got %s, want %s", rep.Overall, overall)
	}
	for name, st := range want {
		if c := findCheck(rep, name); state(c) != st {
			t.Errorf("%s: got %s (%s), want %s", name, state(c), c.Detail, st)
		}
	}
	for name, part := range detail {
		if c := findCheck(rep, name); !strings.Contains(c.Detail, part) {
			t.Errorf("%s detail: got %q, want it to contain %q", name, c.Detail, part)
		}
	}
	if rep.Total != rep.Passed+rep.Failed || !strings.Contains(text.String(), "Overall Status: "+rep.Overall) {
		t.Errorf("inconsistent report: %+v", rep)
	}
	t.Logf("\n%s", text.String())
}
