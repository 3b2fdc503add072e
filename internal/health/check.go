package health

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// CheckInput is what `sidecar check` validates.
type CheckInput struct {
	RedisURL      string // for the report (redacted)
	Redis         redis.UniversalClient
	Webhooks      []Webhook
	SpoolDir      string
	SpoolMaxBytes int64
	HTTP          Doer
}

// Webhook is one subscription's endpoint.
type Webhook struct {
	Topic, Group, URL string
}

// Check is one line of the report. A failed critical check makes the
// deployment FAILED; a failed non-critical one makes it DEGRADED.
type Check struct {
	Name     string `json:"name"`
	Passed   bool   `json:"passed"`
	Critical bool   `json:"critical"`
	Detail   string `json:"detail"`
}

// CheckReport is the deployment validation report.
type CheckReport struct {
	Checks  []Check `json:"checks"`
	Overall string  `json:"overall"` // READY | DEGRADED | FAILED
	Total   int     `json:"total"`
	Passed  int     `json:"passed"`
	Failed  int     `json:"failed"`
}

// Thresholds of the report.
const (
	memoryWarn   = 0.80 // of maxmemory
	memoryFail   = 0.95
	lagWarn      = 10000 // entries
	checkTimeout = 3 * time.Second
)

// RunChecks validates a deployment: Redis reachable, version, eviction
// policy, persistence, memory headroom, each webhook reachable, the spool
// directory writable with room, and each group's lag and DLQ.
func RunChecks(ctx context.Context, in CheckInput) CheckReport {
	var rep CheckReport
	add := func(name string, passed, critical bool, format string, a ...any) {
		rep.Checks = append(rep.Checks, Check{Name: name, Passed: passed, Critical: critical, Detail: fmt.Sprintf(format, a...)})
	}

	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	start := time.Now()
	err := in.Redis.Ping(cctx).Err()
	lat := time.Since(start)
	var info RedisInfo
	if err == nil {
		info, err = ReadInfo(cctx, in.Redis)
	}
	cancel()
	if err != nil {
		add("Redis reachable", false, true, "%s: %v", in.RedisURL, err)
	} else {
		add("Redis reachable", true, true, "%s (%s, %.1f ms)", in.RedisURL, info.Version, float64(lat.Microseconds())/1000)
		checkRedis(info, add)
		for _, w := range in.Webhooks {
			st := ReadConsumer(ctx, in.Redis, w.Topic, w.Group)
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
	for _, w := range in.Webhooks {
		checkWebhook(ctx, in.HTTP, w, add)
	}
	checkSpool(in.SpoolDir, in.SpoolMaxBytes, add)

	rep.Overall = "READY"
	for _, c := range rep.Checks {
		rep.Total++
		if c.Passed {
			rep.Passed++
			continue
		}
		rep.Failed++
		if c.Critical {
			rep.Overall = "FAILED"
		} else if rep.Overall == "READY" {
			rep.Overall = "DEGRADED"
		}
	}
	return rep
}

func checkRedis(info RedisInfo, add func(string, bool, bool, string, ...any)) {
	switch {
	case !VersionAtLeast(info.Version, 6, 2):
		add("Redis version", false, true, "%s is older than 6.2: XAUTOCLAIM (claiming from dead replicas) is missing", info.Version)
	case VersionAtLeast(info.Version, 7, 0):
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

func checkWebhook(ctx context.Context, client Doer, w Webhook, add func(string, bool, bool, string, ...any)) {
	name := "Webhook " + w.Topic
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodHead, w.URL, nil)
	if err != nil {
		add(name, false, false, "%s: %v", w.URL, err)
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		add(name, false, false, "%s unreachable: %v (events wait in Redis until it answers)", w.URL, err)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	add(name, true, false, "%s answers (HTTP %d)", w.URL, resp.StatusCode)
}

// Doer models http.Client.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

func checkSpool(dir string, maxBytes int64, add func(string, bool, bool, string, ...any)) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		add("Spool directory", false, true, "%s cannot be created: %v", dir, err)
		return
	}
	probe := filepath.Join(dir, ".check-probe")
	f, err := os.Create(probe)
	if err == nil {
		_, err = f.Write([]byte("probe"))
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		os.Remove(probe)
	}
	if err != nil {
		add("Spool directory", false, true, "%s is not writable: %v", dir, err)
		return
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		add("Spool directory", true, false, "%s writable (free space unknown: %v)", dir, err)
		return
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < maxBytes {
		add("Spool directory", false, false, "%s writable, but %s free is less than spool.max_bytes %s", dir, human(free), human(maxBytes))
		return
	}
	add("Spool directory", true, false, "%s writable, %s free (spool.max_bytes %s)", dir, human(free), human(maxBytes))
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// WriteText prints the report for people.
func (r CheckReport) WriteText(w io.Writer) {
	fmt.Fprintln(w, "Sidecar Deployment Validation Report")
	fmt.Fprintln(w, "====================================")
	for _, c := range r.Checks {
		mark := "✅"
		if !c.Passed {
			mark = "❌"
			if !c.Critical {
				mark = "⚠️ "
			}
		}
		fmt.Fprintf(w, "%s %s: %s\n", mark, c.Name, c.Detail)
	}
	fmt.Fprintf(w, "\nOverall Status: %s   (Total Checks: %d / Passed: %d / Failed: %d)\n", r.Overall, r.Total, r.Passed, r.Failed)
}

// WriteJSON prints the report for scripts.
func (r CheckReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
