// Package health provides liveness, readiness and the Redis health monitor.
package health

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Monitor pings Redis on an interval, reads INFO every few pings, and
// remembers what it saw. It logs changes of state — up/down, memory above
// 80 % of maxmemory, an evicting policy, failing persistence — once per
// change, not every tick.
type Monitor struct {
	rdb      redis.UniversalClient
	interval time.Duration
	gauges   RedisGauges
	log      zerolog.Logger

	mu      sync.Mutex
	state   RedisState
	info    RedisInfo
	checked bool
	ticks   int
	warned  map[string]string // condition → what was logged
}

// RedisGauges receives what the monitor measures (metrics).
type RedisGauges interface {
	SetRedis(up bool, latency time.Duration, usedMemory, maxMemory int64)
}

type nopGauges struct{}

func (nopGauges) SetRedis(bool, time.Duration, int64, int64) {}

// infoEvery is how many pings pass between INFO reads.
const infoEvery = 5

// RedisState is the monitor's latest view of Redis.
type RedisState struct {
	Up        bool          `json:"up"`
	Latency   time.Duration `json:"-"`
	LatencyMS float64       `json:"latency_ms"`
	LastError string        `json:"last_error,omitempty"`
	Since     time.Time     `json:"since"`
}

// NewMonitor returns a Monitor; Run starts it. gauges may be nil.
func NewMonitor(rdb redis.UniversalClient, interval time.Duration, gauges RedisGauges, log zerolog.Logger) *Monitor {
	if gauges == nil {
		gauges = nopGauges{}
	}
	return &Monitor{rdb: rdb, interval: interval, gauges: gauges, log: log, warned: map[string]string{}}
}

// Run pings until ctx is done.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		m.Check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check pings Redis once (and every infoEvery pings reads INFO) and records the outcome.
func (m *Monitor) Check(ctx context.Context) RedisState {
	cctx, cancel := context.WithTimeout(ctx, max(m.interval, time.Second))
	start := time.Now()
	err := m.rdb.Ping(cctx).Err()
	lat := time.Since(start)
	cancel()
	if ctx.Err() != nil {
		return m.State()
	}
	st, readInfo := m.record(err, lat)
	if readInfo {
		cctx, cancel := context.WithTimeout(ctx, max(m.interval, time.Second))
		info, err := ReadInfo(cctx, m.rdb)
		cancel()
		if err == nil {
			m.mu.Lock()
			m.info = info
			m.mu.Unlock()
			m.warnOnChange(info)
		}
	}
	info := m.Info()
	m.gauges.SetRedis(st.Up, st.Latency, info.UsedMemory, info.MaxMemory)
	return st
}

// record stores a ping's outcome, logging a change of state; it says
// whether this tick should also read INFO.
func (m *Monitor) record(err error, lat time.Duration) (RedisState, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	up := err == nil
	if !m.checked || up != m.state.Up {
		m.state.Since = time.Now()
		if up {
			m.log.Info().Dur("latency", lat).Msg("redis up")
		} else {
			m.log.Warn().Err(err).Msg("redis down")
		}
	}
	m.checked = true
	m.state.Up = up
	if up {
		m.state.Latency = lat
		m.state.LatencyMS = float64(lat.Microseconds()) / 1000
	} else {
		m.state.LastError = err.Error()
	}
	readInfo := up && m.ticks%infoEvery == 0
	m.ticks++
	return m.state, readInfo
}

// warnOnChange logs each risky Redis condition when it starts and when it ends.
func (m *Monitor) warnOnChange(info RedisInfo) {
	conds := map[string]string{}
	if info.Evicts() {
		conds["policy"] = "maxmemory-policy " + info.MaxMemoryPolicy + " may evict streams; set noeviction"
	}
	if r := info.MemoryRatio(); r > 0.8 {
		conds["memory"] = fmt.Sprintf("redis memory at %.0f%% of maxmemory", r*100)
	}
	if f := info.PersistenceFailing(); f != "" {
		conds["persistence"] = "redis persistence failing: " + f
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, msg := range conds {
		if _, seen := m.warned[k]; !seen {
			m.log.Warn().Str("condition", k).Msg(msg)
		}
		m.warned[k] = msg
	}
	for k := range m.warned {
		if _, still := conds[k]; !still {
			m.log.Info().Str("condition", k).Msg("redis condition cleared")
			delete(m.warned, k)
		}
	}
}

// Info returns the latest INFO reading (zero before the first).
func (m *Monitor) Info() RedisInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.info
}

// State returns the latest state without pinging.
func (m *Monitor) State() RedisState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Runner is a component with a running state, e.g. a subscription.
type Runner interface {
	Running() bool
}

// Buffer is the durable fallback for publishes while Redis is away (the spool).
type Buffer interface {
	Writable() bool
	// Stalled describes spooled topics whose drain makes no progress.
	Stalled() []string
}

// Readiness decides /readyz. "ready": Redis reachable and every
// subscription running. "degraded" (still 200): publishes are accepted
// durably by the spool though Redis or a subscription is not running.
// "not_ready" (503): nothing can take a publish durably. "draining" (503):
// shutting down.
type Readiness struct {
	monitor  *Monitor
	buffer   Buffer
	subs     map[string]Runner
	draining atomic.Bool
}

// NewReadiness returns the readiness of a sidecar with this spool and these
// subscriptions (by name). buffer may be nil: no spool.
func NewReadiness(m *Monitor, buffer Buffer, subs map[string]Runner) *Readiness {
	return &Readiness{monitor: m, buffer: buffer, subs: subs}
}

// SetDraining turns readiness off for good: the process is shutting down.
func (r *Readiness) SetDraining() { r.draining.Store(true) }

// Report is the JSON body of /readyz.
type Report struct {
	Status        string            `json:"status"` // ready | degraded | not_ready | draining
	Redis         RedisState        `json:"redis"`
	Spool         string            `json:"spool"` // writable | unavailable | none
	Subscriptions map[string]string `json:"subscriptions"`
	Reasons       []string          `json:"reasons,omitempty"`
}

// Check evaluates readiness now.
func (r *Readiness) Check() Report {
	rep := Report{Status: "ready", Redis: r.monitor.State(), Subscriptions: map[string]string{}, Spool: "none"}
	writable := false
	if r.buffer != nil {
		writable = r.buffer.Writable()
		rep.Spool = "unavailable"
		if writable {
			rep.Spool = "writable"
		}
	}
	if !rep.Redis.Up {
		rep.Reasons = append(rep.Reasons, "redis unreachable")
	} else if r.buffer != nil {
		// Redis answers, yet spooled events do not move: a key Redis
		// refuses, a shard that is down. Publishes still go somewhere
		// durable, so this degrades rather than fails readiness.
		rep.Reasons = append(rep.Reasons, r.buffer.Stalled()...)
	}
	names := make([]string, 0, len(r.subs))
	for n := range r.subs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if r.subs[n].Running() {
			rep.Subscriptions[n] = "running"
		} else {
			rep.Subscriptions[n] = "waiting"
			rep.Reasons = append(rep.Reasons, "subscription "+n+" not running")
		}
	}
	switch {
	case r.draining.Load():
		rep.Status = "draining"
		rep.Reasons = append([]string{"shutting down"}, rep.Reasons...)
	case len(rep.Reasons) > 0 && (writable && r.buffer != nil):
		rep.Status = "degraded"
	case len(rep.Reasons) > 0:
		rep.Status = "not_ready"
	}
	return rep
}

// Handler serves /healthz (alive while the process serves) and /readyz.
func (r *Readiness) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if req.URL.Path == "/healthz" {
			_, _ = w.Write([]byte(`{"status":"alive"}` + "\n"))
			return
		}
		rep := r.Check()
		if rep.Status != "ready" && rep.Status != "degraded" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rep)
	})
}
