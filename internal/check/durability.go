package check

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// durability is how soon a master's writes reach its disk.
type durability struct {
	aof   bool
	fsync string // appendfsync: always | everysec | no; "" when CONFIG is refused
	// noFsyncOnRewrite: fsync pauses while a rewrite or save runs.
	noFsyncOnRewrite bool
}

func readDurability(ctx context.Context, c redis.Cmdable) (durability, error) {
	raw, err := c.Info(ctx, "persistence").Result()
	if err != nil {
		return durability{}, fmt.Errorf("info persistence: %w", err)
	}
	d := durability{aof: infoFields(raw)["aof_enabled"] == "1"}
	d.fsync, _ = configValue(ctx, c, "appendfsync")
	v, _ := configValue(ctx, c, "no-appendfsync-on-rewrite")
	d.noFsyncOnRewrite = v == "yes"
	return d, nil
}

// judge says what a Redis crash can take from acknowledged events. WAIT
// on a replica guards against losing the master, not against every node
// restarting from its own disk; so fsync matters with replicas too.
func (d durability) judge() verdict {
	if !d.aof {
		return verdict{detail: "appendonly no: no write is on disk when it is acknowledged; a Redis crash loses what the last RDB save (if any) missed — set appendonly yes, appendfsync everysec or always"}
	}
	rewrite := ""
	if d.noFsyncOnRewrite && d.fsync != "no" {
		rewrite = "; no-appendfsync-on-rewrite yes: nothing is fsync'd while an AOF rewrite or RDB save runs"
	}
	switch d.fsync {
	case "always":
		return verdict{passed: true, strength: 3, detail: "appendonly yes, appendfsync always: every write fsync'd before Redis answers" + rewrite}
	case "everysec":
		return verdict{passed: true, strength: 2, detail: "appendonly yes, appendfsync everysec: up to 1 s of writes can be lost on a Redis crash without a replica" + rewrite}
	case "no":
		return verdict{strength: 0, detail: "appendonly yes, appendfsync no: the kernel decides when writes reach the disk (often 30 s); a host crash can lose acknowledged events — set appendfsync everysec or always"}
	case "":
		return verdict{passed: true, strength: 1, detail: "appendonly yes, appendfsync unknown (CONFIG GET refused): make sure it is everysec or always"}
	}
	return verdict{passed: true, strength: 1, detail: "appendonly yes, appendfsync " + d.fsync + rewrite}
}

// checkDurability reports appendonly and appendfsync: what the no-loss
// promise rests on when a Redis process or host crashes. On Cluster every
// node is read, replicas too: a failover makes one of them a master.
func checkDurability(ctx context.Context, rdb redis.UniversalClient, add addFunc) {
	nodes, err := onNodes(ctx, rdb, true, readDurability)
	if err != nil {
		add("Durability", false, false, "unknown: %v", err)
		return
	}
	verdicts := make([]node[verdict], len(nodes))
	for i, n := range nodes {
		verdicts[i] = node[verdict]{addr: n.addr, val: n.val.judge()}
	}
	weakest("Durability", verdicts, add)
}
