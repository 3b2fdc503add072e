package check

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// replication is what a master says of its replicas: the facts
// redis.min_replicas acts on.
type replication struct {
	role    string // "master" or "slave"
	master  string // a replica's master, host:port
	online  int    // replicas with state=online: the ones WAIT counts
	syncing int    // connected, not yet online
	// minToWrite is the server's min-replicas-to-write (0 = off, -1 =
	// unknown: CONFIG refused); minSet says INFO shows it on all the same.
	minToWrite int
	minSet     bool
	good       int // replicas within min-replicas-max-lag, when minSet
	maxLag     string
}

// replicaLine matches INFO replication's "slave0:ip=…,state=online,…".
var replicaLine = regexp.MustCompile(`^slave\d+$`)

func readReplication(ctx context.Context, c redis.Cmdable) (replication, error) {
	raw, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return replication{}, fmt.Errorf("info replication: %w", err)
	}
	kv := infoFields(raw)
	r := replication{role: kv["role"], minToWrite: -1}
	if r.role == "slave" {
		r.master = net.JoinHostPort(kv["master_host"], kv["master_port"])
	}
	for k, v := range kv {
		if !replicaLine.MatchString(k) {
			continue
		}
		if strings.Contains(","+v+",", ",state=online,") {
			r.online++
		} else {
			r.syncing++
		}
	}
	// Redis prints min_slaves_good_slaves only while min-replicas-to-write is on.
	if g, ok := kv["min_slaves_good_slaves"]; ok {
		r.minSet = true
		r.good, _ = strconv.Atoi(g)
	}
	if v, ok := configValue(ctx, c, "min-replicas-to-write"); ok {
		r.minToWrite, _ = strconv.Atoi(v)
		r.maxLag, _ = configValue(ctx, c, "min-replicas-max-lag")
	}
	return r, nil
}

// judge says what redis.min_replicas (want; -1 = auto) does with these
// replicas, as the publisher decides it: auto waits for 1 replica when the
// master has one online, a fixed number always waits for that many.
func (r replication) judge(want int) verdict {
	switch r.role {
	case "master":
	case "slave":
		return verdict{critical: true, detail: fmt.Sprintf("REDIS_URL reaches a replica (of %s), which refuses writes (READONLY), so every publish would be spooled; point it at the master, or at the sentinels with ?master_name=", r.master)}
	default:
		return verdict{detail: fmt.Sprintf("unknown: INFO replication reports role %q", r.role)}
	}
	need, setting := want, fmt.Sprintf("redis.min_replicas %d", want)
	if want < 0 {
		need, setting = 0, "redis.min_replicas auto"
		if r.online > 0 {
			need = 1
		}
	}
	notes := ""
	if r.syncing > 0 {
		notes += fmt.Sprintf(" (%d more connected, not yet in sync)", r.syncing)
	}
	// Redis enforces min-replicas-to-write only with a max lag too, and
	// then reports min_slaves_good_slaves: minSet says it is in force.
	switch {
	case r.minSet && r.minToWrite > 0:
		notes += fmt.Sprintf("; Redis itself refuses writes with fewer than %s lagging ≤ %s s (min-replicas-to-write)", count(r.minToWrite, "replica"), r.maxLag)
	case r.minSet:
		notes += fmt.Sprintf("; min-replicas-to-write is on (its value unknown: CONFIG GET refused), %s within its lag", count(r.good, "replica"))
	}
	v := verdict{strength: r.online}
	switch {
	case r.minSet && r.good < r.minToWrite:
		v.critical = true
		v.detail = fmt.Sprintf("min-replicas-to-write %d but %s within %s s lag: Redis refuses every write (NOREPLICAS), so every publish would be spooled", r.minToWrite, count(r.good, "replica"), r.maxLag)
	case need > r.online:
		v.critical = true
		v.detail = fmt.Sprintf("%s but %s: WAIT cannot reach %d, so every publish would be spooled until enough replicas are online%s", setting, count(r.online, "online replica"), need, notes)
	case r.online == 0:
		v.passed = true
		v.detail = "no replica; a failover has nothing to promote, so none can lose an acknowledged event (single node: durability rests on persistence)" + notes
	case need == 0:
		v.detail = fmt.Sprintf("master with %s, but %s: publishes do not wait for a replica, so a failover can lose events acknowledged just before it; set redis.min_replicas auto%s", count(r.online, "online replica"), setting, notes)
	default:
		v.passed = true
		v.detail = fmt.Sprintf("master with %s; publishes wait for %s (WAIT) before 202 — a failover loses no acknowledged event%s", count(r.online, "online replica"), count(need, "replica"), notes)
	}
	return v
}

// count is "1 replica", "2 replicas".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// checkReplication reports the master's replicas and what
// redis.min_replicas makes of them: the "failover loses no acknowledged
// event" promise holds only when publishes wait for a replica.
func checkReplication(ctx context.Context, rdb redis.UniversalClient, want int, add addFunc) {
	nodes, err := onMasters(ctx, rdb, readReplication)
	if err != nil {
		add("Replication", false, false, "unknown: %v", err)
		return
	}
	verdicts := make([]node[verdict], len(nodes))
	for i, n := range nodes {
		verdicts[i] = node[verdict]{addr: n.addr, val: n.val.judge(want)}
	}
	weakest("Replication", verdicts, add)
}
