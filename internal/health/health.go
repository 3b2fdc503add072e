// Package health provides liveness, readiness and the Redis health monitor.
package health

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Monitor pings Redis on an interval and remembers whether it answers.
// It logs changes of state, not every tick.
type Monitor struct {
	rdb      redis.UniversalClient
	interval time.Duration
	log      zerolog.Logger

	mu      sync.Mutex
	state   RedisState
	checked bool
}

// RedisState is the monitor's latest view of Redis.
type RedisState struct {
	Up        bool          `json:"up"`
	Latency   time.Duration `json:"-"`
	LatencyMS float64       `json:"latency_ms"`
	LastError string        `json:"last_error,omitempty"`
	Since     time.Time     `json:"since"`
}

// NewMonitor returns a Monitor; Run starts it.
func NewMonitor(rdb redis.UniversalClient, interval time.Duration, log zerolog.Logger) *Monitor {
	return &Monitor{rdb: rdb, interval: interval, log: log}
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

// Check pings Redis once and records the outcome.
func (m *Monitor) Check(ctx context.Context) RedisState {
	cctx, cancel := context.WithTimeout(ctx, max(m.interval, time.Second))
	start := time.Now()
	err := m.rdb.Ping(cctx).Err()
	lat := time.Since(start)
	cancel()
	if ctx.Err() != nil {
		return m.State()
	}
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
	return m.state
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
