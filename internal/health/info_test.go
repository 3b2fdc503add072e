package health

import "testing"

func TestParseInfoAndVersions(t *testing.T) {
	info := parseInfo("# Server\r\nredis_version:7.2.4\r\n# Memory\r\nused_memory:900\r\nmaxmemory:1000\r\nmaxmemory_policy:volatile-lru\r\n# Persistence\r\naof_enabled:1\r\naof_last_write_status:err\r\n")
	if info.Version != "7.2.4" || info.MemoryRatio() != 0.9 || !info.Evicts() || !info.AOFEnabled || info.PersistenceFailing() != "AOF last write err" {
		t.Fatalf("got %+v", info)
	}
	for v, want := range map[string]bool{"6.2.0": true, "6.0.16": false, "7.0.15": true, "10.1": true, "x": false} {
		if VersionAtLeast(v, 6, 2) != want {
			t.Errorf("VersionAtLeast(%s, 6, 2): got %v", v, !want)
		}
	}
}
