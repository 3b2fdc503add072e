package check

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/health"
)

// checkRedis judges what INFO says of the server: version, eviction
// policy, persistence and its durability, memory headroom.
func checkRedis(ctx context.Context, rdb redis.UniversalClient, info health.RedisInfo, add addFunc) {
	if info.Embedded {
		add("Redis version", false, true, "an in-memory server without INFO sections (dev mode's embedded Redis, --dev): events vanish when it stops; run a real Redis ≥ 6.2 with appendonly yes")
		add("Persistence", false, true, "none: the embedded dev-mode server keeps everything in memory")
		return
	}
	switch {
	case !health.VersionAtLeast(info.Version, 6, 2):
		add("Redis version", false, true, "%s is older than 6.2: XAUTOCLAIM (claiming from dead replicas) is missing", info.Version)
	case health.VersionAtLeast(info.Version, 7, 0):
		add("Redis version", true, true, "%s ≥ 6.2; 7.x extras used: consumer-group lag, XAUTOCLAIM reports deleted entries", info.Version)
	default:
		add("Redis version", true, true, "%s ≥ 6.2 (XAUTOCLAIM); 7.x would add consumer-group lag in status", info.Version)
	}
	if info.Evicts() {
		add("Eviction policy", false, true, "%s can delete streams; set maxmemory-policy noeviction", info.MaxMemoryPolicy)
	} else {
		add("Eviction policy", true, true, "noeviction: Redis refuses writes rather than deleting streams")
	}
	switch f := info.PersistenceFailing(); {
	case f != "":
		add("Persistence", false, true, "%s: events may not survive a Redis restart", f)
	case info.AOFEnabled:
		add("Persistence", true, false, "AOF on (last write %s)", info.AOFLastWrite)
	case info.RDBSaves:
		add("Persistence", false, false, "RDB snapshots only: a crash loses events since the last save (%d changes); enable appendonly yes", info.RDBChangesUnsave)
	default:
		add("Persistence", false, false, "off: a Redis restart loses every stream; enable appendonly yes")
	}
	checkDurability(ctx, rdb, add)
	switch r := info.MemoryRatio(); {
	case info.MaxMemory == 0:
		add("Memory headroom", true, false, "%s used, no maxmemory set (bounded by the host); set maxmemory with noeviction", human(info.UsedMemory))
	case r >= memoryFail:
		add("Memory headroom", false, true, "%s of %s (%.0f%%): writes are about to be refused", human(info.UsedMemory), human(info.MaxMemory), r*100)
	case r >= memoryWarn:
		add("Memory headroom", false, false, "%s of %s (%.0f%%): trim retention or raise maxmemory", human(info.UsedMemory), human(info.MaxMemory), r*100)
	default:
		add("Memory headroom", true, false, "%s of %s (%.0f%%)", human(info.UsedMemory), human(info.MaxMemory), r*100)
	}
}

// checkConsumers reports each subscription's group: lag, pending, DLQ.
func checkConsumers(ctx context.Context, rdb redis.UniversalClient, webhooks []Webhook, add addFunc) {
	for _, w := range webhooks {
		st := health.ReadConsumer(ctx, rdb, w.Topic, w.Group)
		name := "Consumer group " + w.Topic + "/" + w.Group
		switch {
		case st.Error != "" && strings.Contains(st.Error, "does not exist"), st.Error != "" && strings.Contains(st.Error, "no such key"):
			add(name, true, false, "not created yet: the sidecar creates it on start")
		case st.Error != "":
			add(name, false, false, "%s", st.Error)
		case st.DLQLength > 0:
			add(name, false, false, "lag %d, pending %d, %d dead-lettered events in %s: inspect and replay or trim them", st.Lag, st.Pending, st.DLQLength, "sidecar:{"+w.Topic+"}:dlq")
		case st.Lag > lagWarn:
			add(name, false, false, "lag %d entries (over %d): the subscriber is falling behind", st.Lag, lagWarn)
		default:
			add(name, true, false, "lag %d, pending %d, DLQ empty", st.Lag, st.Pending)
		}
	}
}
