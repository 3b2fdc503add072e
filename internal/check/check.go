// Package check provides the deployment validation report of `sidecar check`:
// whether this Redis, these webhooks and this spool can keep the sidecar's promises.
package check

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/health"
)

// Input is what `sidecar check` validates.
type Input struct {
	RedisURL string // for the report (redacted)
	Redis    redis.UniversalClient
	// MinReplicas is redis.min_replicas, how many replicas a publish waits
	// for (WAIT) before it is acknowledged; -1 = auto, as in config.
	MinReplicas int
	// Sentinels is set when RedisURL is a Sentinel URL: the report asks
	// each one for the master, as a failover depends on them agreeing.
	Sentinels     *Sentinels
	Webhooks      []Webhook
	SpoolDir      string
	SpoolMaxBytes int64
	HTTP          Doer
	// Redact removes credentials from each line of the report (a server's
	// or a library's error may quote them); nil = none. URLs are shown
	// through config.RedactURL in any case.
	Redact func(string) string
}

// Webhook is one subscription's endpoint.
type Webhook struct {
	Topic, Group, URL string
}

// Sentinels are the sentinels a Sentinel URL names, and how to reach them.
type Sentinels struct {
	MasterName         string
	Addrs              []string
	Username, Password string
	TLSConfig          *tls.Config
}

// Result is one line of the report. A failed critical check makes the
// deployment FAILED; a failed non-critical one makes it DEGRADED.
type Result struct {
	Name     string `json:"name"`
	Passed   bool   `json:"passed"`
	Critical bool   `json:"critical"`
	Detail   string `json:"detail"`
}

// Report is the deployment validation report.
type Report struct {
	Checks  []Result `json:"checks"`
	Overall string   `json:"overall"` // READY | DEGRADED | FAILED
	Total   int      `json:"total"`
	Passed  int      `json:"passed"`
	Failed  int      `json:"failed"`
}

// Thresholds of the report.
const (
	memoryWarn   = 0.80 // of maxmemory
	memoryFail   = 0.95
	lagWarn      = 10000 // entries
	checkTimeout = 3 * time.Second
)

// addFunc records one check's outcome.
type addFunc func(name string, passed, critical bool, format string, a ...any)

// Run validates a deployment: Redis reachable, version, eviction policy,
// persistence and durability, memory headroom, replication (and the
// sentinels), each group's lag and DLQ, each webhook reachable, and the
// spool directory writable with room.
func Run(ctx context.Context, in Input) Report {
	var rep Report
	add := func(name string, passed, critical bool, format string, a ...any) {
		detail := fmt.Sprintf(format, a...)
		if in.Redact != nil {
			detail = in.Redact(detail)
		}
		rep.Checks = append(rep.Checks, Result{Name: name, Passed: passed, Critical: critical, Detail: detail})
	}

	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	start := time.Now()
	err := in.Redis.Ping(cctx).Err()
	lat := time.Since(start)
	var info health.RedisInfo
	if err == nil {
		info, err = health.ReadInfo(cctx, in.Redis)
	}
	cancel()
	if err != nil {
		add("Redis reachable", false, true, "%s: %v", in.RedisURL, err)
	} else {
		version := info.Version
		if info.Embedded {
			version = "embedded dev-mode server"
		}
		add("Redis reachable", true, true, "%s (%s, %.1f ms)", in.RedisURL, version, float64(lat.Microseconds())/1000)
		checkRedis(ctx, in.Redis, info, add)
		if info.Embedded {
			add("Replication", false, false, "none: the embedded dev-mode server has no replicas")
		} else {
			checkReplication(ctx, in.Redis, in.MinReplicas, add)
		}
	}
	// Asked even when Redis is unreachable: sentinels that do not know
	// the master are a common reason for it.
	if in.Sentinels != nil {
		checkSentinels(ctx, *in.Sentinels, add)
	}
	if err == nil {
		checkConsumers(ctx, in.Redis, in.Webhooks, add)
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
