package health

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisInfo is what sidecar reads of Redis's INFO: the facts that decide
// whether streams are safe there.
type RedisInfo struct {
	Version          string `json:"version"`
	UsedMemory       int64  `json:"used_memory"`
	MaxMemory        int64  `json:"maxmemory"` // 0 = unlimited
	MaxMemoryPolicy  string `json:"maxmemory_policy"`
	AOFEnabled       bool   `json:"aof_enabled"`
	AOFLastWrite     string `json:"aof_last_write_status,omitempty"`
	RDBSaves         bool   `json:"rdb_saves"` // a save schedule is configured
	RDBLastBgsave    string `json:"rdb_last_bgsave_status,omitempty"`
	RDBChangesUnsave int64  `json:"rdb_changes_since_last_save"`
	// Embedded: the server reports no version, memory or persistence (it
	// answers INFO only without sections): dev mode's in-memory server,
	// not durable.
	Embedded bool `json:"embedded_dev_server,omitempty"`
}

// Persistent reports whether Redis keeps data across a restart.
func (i RedisInfo) Persistent() bool { return i.AOFEnabled || i.RDBSaves }

// PersistenceFailing names a failing persistence mechanism, or "".
func (i RedisInfo) PersistenceFailing() string {
	switch {
	case i.AOFEnabled && i.AOFLastWrite != "" && i.AOFLastWrite != "ok":
		return "AOF last write " + i.AOFLastWrite
	case i.RDBSaves && i.RDBLastBgsave != "" && i.RDBLastBgsave != "ok":
		return "RDB last bgsave " + i.RDBLastBgsave
	}
	return ""
}

// Evicts reports whether the maxmemory policy may delete keys — streams included.
func (i RedisInfo) Evicts() bool { return i.MaxMemoryPolicy != "" && i.MaxMemoryPolicy != "noeviction" }

// MemoryRatio is used/max memory, or 0 without a limit.
func (i RedisInfo) MemoryRatio() float64 {
	if i.MaxMemory <= 0 {
		return 0
	}
	return float64(i.UsedMemory) / float64(i.MaxMemory)
}

// ReadInfo reads INFO server, memory and persistence, and the save schedule.
func ReadInfo(ctx context.Context, rdb redis.UniversalClient) (RedisInfo, error) {
	raw, err := rdb.Info(ctx, "server", "memory", "persistence").Result()
	if err != nil {
		// A server that answers INFO only without sections (the embedded
		// in-memory server --dev starts) has none of these facts: say so
		// rather than fail, and let every judgement see "not persistent".
		if all, err2 := rdb.Info(ctx).Result(); err2 == nil && !strings.Contains(all, "redis_version:") {
			return RedisInfo{Embedded: true}, nil
		}
		return RedisInfo{}, fmt.Errorf("info: %w", err)
	}
	info := parseInfo(raw)
	// "save" is a config, not in INFO; CONFIG may be disabled on managed Redis.
	if cfg, err := rdb.ConfigGet(ctx, "save").Result(); err == nil {
		info.RDBSaves = strings.TrimSpace(cfg["save"]) != ""
	} else {
		info.RDBSaves = info.RDBLastBgsave != "" && info.RDBChangesUnsave >= 0
	}
	return info, nil
}

func parseInfo(raw string) RedisInfo {
	kv := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(raw))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if ok {
			kv[k] = v
		}
	}
	num := func(k string) int64 { n, _ := strconv.ParseInt(kv[k], 10, 64); return n }
	return RedisInfo{
		Version: kv["redis_version"], UsedMemory: num("used_memory"), MaxMemory: num("maxmemory"),
		MaxMemoryPolicy: kv["maxmemory_policy"], AOFEnabled: kv["aof_enabled"] == "1",
		AOFLastWrite: kv["aof_last_write_status"], RDBLastBgsave: kv["rdb_last_bgsave_status"],
		RDBChangesUnsave: num("rdb_changes_since_last_save"),
	}
}

// VersionAtLeast reports whether version v (e.g. "7.0.15") is at least major.minor.
func VersionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}
