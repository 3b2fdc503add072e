// Package metrics holds sidecar's Prometheus collectors on a registry of its
// own, and keeps the per-topic counts that /v1/status reports.
package metrics

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the collectors. Methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	publishedVec    *prometheus.CounterVec
	publishLatency  *prometheus.HistogramVec
	deliveries      *prometheus.CounterVec
	attemptLatency  *prometheus.HistogramVec
	endToEnd        *prometheus.HistogramVec
	timeSkew        *prometheus.CounterVec
	lag             *prometheus.GaugeVec
	pending         *prometheus.GaugeVec
	oldestPending   *prometheus.GaugeVec
	dlqLength       *prometheus.GaugeVec
	spoolEvents     prometheus.Gauge
	spoolBytes      prometheus.Gauge
	spoolMaxBytes   prometheus.Gauge
	redisUp         prometheus.Gauge
	redisLatency    prometheus.Gauge
	redisUsedMemory prometheus.Gauge
	redisMaxMemory  prometheus.Gauge
	fallbacks       *prometheus.CounterVec
	trimmed         *prometheus.CounterVec
	retentionHeld   *prometheus.GaugeVec
	adminOps        *prometheus.CounterVec
	adminEntries    *prometheus.CounterVec

	mu        sync.RWMutex
	published map[pubKey]*pubCount // bound counters per topic and outcome, also read by /v1/status
	fallbackN map[string]uint64    // outcome → count, for /v1/status
}

type pubKey struct{ topic, outcome string }

// pubCount is a topic/outcome's Prometheus counter, bound once (no label
// hashing per publish), with a plain copy of its value for /v1/status.
type pubCount struct {
	counter prometheus.Counter
	latency prometheus.Observer
	n       atomic.Uint64
}

// latencyBuckets span 100 µs to 10 s: a loopback publish to a slow webhook.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New registers sidecar's collectors, and the Go runtime and process
// collectors, on a new registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{reg: reg, published: map[pubKey]*pubCount{}, fallbackN: map[string]uint64{}}
	m.publishedVec = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_publish_total",
		Help: "Publishes by topic and outcome: stream (in Redis), spooled (on local disk), rejected (503)."}, []string{"topic", "outcome"})
	m.publishLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sidecar_publish_duration_seconds",
		Help: "Time to accept a publish (to the stream or the spool).", Buckets: latencyBuckets}, []string{"outcome"})
	m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_delivery_total",
		Help: "Webhook delivery attempts and results by topic, group and outcome: delivered, retried, dead_lettered, gone, deduplicated."},
		[]string{"topic", "group", "outcome"})
	m.attemptLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sidecar_delivery_attempt_duration_seconds",
		Help: "Duration of one webhook attempt.", Buckets: latencyBuckets}, []string{"topic", "group"})
	m.endToEnd = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sidecar_end_to_end_seconds",
		Help:    "From the entry's arrival in the Redis stream (its stream id's time) to the webhook's 2xx; time in a publisher's spool during an outage is not included.",
		Buckets: latencyBuckets}, []string{"topic", "group"})
	m.timeSkew = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_event_time_skew_total",
		Help: "Acknowledged deliveries whose start time lay in this host's future (clocks disagree); sidecar_end_to_end_seconds observed them as 0."},
		[]string{"topic", "group"})
	m.lag = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sidecar_consumer_lag",
		Help: "Entries in the stream not yet read by the group."}, []string{"topic", "group"})
	m.pending = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sidecar_consumer_pending",
		Help: "Entries read by the group and not yet acknowledged."}, []string{"topic", "group"})
	m.oldestPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sidecar_consumer_oldest_pending_seconds",
		Help: "Age of the group's oldest unacknowledged entry."}, []string{"topic", "group"})
	m.dlqLength = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sidecar_dlq_length",
		Help: "Entries in the topic's dead-letter stream."}, []string{"topic"})
	m.spoolEvents = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sidecar_spool_events", Help: "Events in the local spool, not yet in Redis."})
	m.spoolBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sidecar_spool_bytes", Help: "Bytes in the local spool."})
	m.spoolMaxBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sidecar_spool_max_bytes", Help: "The spool's size bound."})
	m.redisUp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sidecar_redis_up", Help: "1 when Redis answered the last ping."})
	m.redisLatency = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sidecar_redis_ping_seconds", Help: "Round trip of the last Redis ping."})
	m.redisUsedMemory = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sidecar_redis_used_memory_bytes", Help: "Redis used_memory."})
	m.redisMaxMemory = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sidecar_redis_maxmemory_bytes", Help: "Redis maxmemory (0 = unlimited)."})
	m.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_fallback_total",
		Help: "Direct fallback POSTs while Redis was unavailable, by outcome."}, []string{"outcome"})
	m.trimmed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_retention_trimmed_total",
		Help: "Stream entries removed by retention (every consumer group had acknowledged them)."}, []string{"topic"})
	m.retentionHeld = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sidecar_retention_held_entries",
		Help: "Entries retention would remove but keeps because the named group has not acknowledged them."}, []string{"topic", "group"})
	m.adminOps = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_admin_operations_total",
		Help: "State changes through the admin API, by operation: redrive, purge, seek, pause, resume, cleanup."}, []string{"operation"})
	m.adminEntries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sidecar_admin_entries_total",
		Help: "Entries the admin API's operations changed: dead letters redriven or purged, consumers removed."}, []string{"operation"})
	for _, c := range []prometheus.Collector{m.publishedVec, m.publishLatency, m.deliveries, m.attemptLatency, m.endToEnd, m.timeSkew,
		m.lag, m.pending, m.oldestPending, m.dlqLength, m.spoolEvents, m.spoolBytes, m.spoolMaxBytes,
		m.redisUp, m.redisLatency, m.redisUsedMemory, m.redisMaxMemory, m.fallbacks, m.trimmed, m.retentionHeld,
		m.adminOps, m.adminEntries,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	return m
}

// Trimmed counts entries retention removed from topic's stream.
func (m *Metrics) Trimmed(topic string, entries int64) {
	m.trimmed.WithLabelValues(topic).Add(float64(entries))
}

// RetentionHeld sets how many entries group keeps from being trimmed.
func (m *Metrics) RetentionHeld(topic, group string, entries int64) {
	if entries == 0 {
		m.retentionHeld.DeleteLabelValues(topic, group)
		return
	}
	m.retentionHeld.WithLabelValues(topic, group).Set(float64(entries))
}

// AdminOperation counts one state change through the admin API and the
// entries it changed.
func (m *Metrics) AdminOperation(operation string, entries int) {
	m.adminOps.WithLabelValues(operation).Inc()
	m.adminEntries.WithLabelValues(operation).Add(float64(entries))
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// maxTopics bounds the topic label: publishers choose topic names, and every
// new one would otherwise add series to every scrape forever.
const maxTopics = 1000

// OtherTopic is the topic label of publishes past the first maxTopics topics.
const OtherTopic = "_other"

// Published records one publish: outcome is stream, spooled or rejected.
func (m *Metrics) Published(topic, outcome string, d time.Duration) {
	k := pubKey{topic, outcome}
	m.mu.RLock()
	c := m.published[k]
	m.mu.RUnlock()
	if c == nil {
		m.mu.Lock()
		if c = m.published[k]; c == nil {
			if len(m.published) >= maxTopics*3 { // three outcomes per topic
				k.topic = OtherTopic
			}
			if c = m.published[k]; c == nil {
				c = &pubCount{counter: m.publishedVec.WithLabelValues(k.topic, outcome), latency: m.publishLatency.WithLabelValues(outcome)}
				m.published[k] = c
			}
		}
		m.mu.Unlock()
	}
	c.counter.Inc()
	c.latency.Observe(d.Seconds())
	c.n.Add(1)
}

// TopicCounts returns publishes per topic and outcome.
func (m *Metrics) TopicCounts() map[string]map[string]uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := map[string]map[string]uint64{}
	for k, c := range m.published {
		if out[k.topic] == nil {
			out[k.topic] = map[string]uint64{}
		}
		out[k.topic][k.outcome] = c.n.Load()
	}
	return out
}

// Attempt records one webhook attempt and its result.
func (m *Metrics) Attempt(topic, group, outcome string, d time.Duration) {
	m.deliveries.WithLabelValues(topic, group, outcome).Inc()
	if d > 0 {
		m.attemptLatency.WithLabelValues(topic, group).Observe(d.Seconds())
	}
}

// Delivered records the end-to-end latency of an acknowledged delivery,
// from since: when the entry reached the stream (the subscriber passes
// its stream id's time, else the event's time; zero = unknown, not
// observed). A since in the future — another host's clock ahead of this
// one's — is observed as 0 and counted in sidecar_event_time_skew_total:
// a negative observation would drive the histogram's _sum down and break
// rate() over it.
func (m *Metrics) Delivered(topic, group string, since time.Time) {
	if since.IsZero() {
		return
	}
	d := time.Since(since)
	if d < 0 {
		m.timeSkew.WithLabelValues(topic, group).Inc()
		d = 0
	}
	m.endToEnd.WithLabelValues(topic, group).Observe(d.Seconds())
}

// Fallback records a fallback POST's outcome: delivered or failed.
func (m *Metrics) Fallback(outcome string) {
	m.fallbacks.WithLabelValues(outcome).Inc()
	m.mu.Lock()
	m.fallbackN[outcome]++
	m.mu.Unlock()
}

// FallbackCounts returns fallback POSTs by outcome.
func (m *Metrics) FallbackCounts() map[string]uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string]uint64, len(m.fallbackN))
	for k, v := range m.fallbackN {
		out[k] = v
	}
	return out
}

// SetConsumer sets a subscription's Redis-side gauges.
func (m *Metrics) SetConsumer(topic, group string, lag, pending int64, oldest time.Duration, dlq int64) {
	m.lag.WithLabelValues(topic, group).Set(float64(lag))
	m.pending.WithLabelValues(topic, group).Set(float64(pending))
	m.oldestPending.WithLabelValues(topic, group).Set(oldest.Seconds())
	m.dlqLength.WithLabelValues(topic).Set(float64(dlq))
}

// SetSpool sets the spool gauges.
func (m *Metrics) SetSpool(events int, bytes, maxBytes int64) {
	m.spoolEvents.Set(float64(events))
	m.spoolBytes.Set(float64(bytes))
	m.spoolMaxBytes.Set(float64(maxBytes))
}

// SetRedis sets the Redis gauges.
func (m *Metrics) SetRedis(up bool, latency time.Duration, usedMemory, maxMemory int64) {
	v := 0.0
	if up {
		v = 1
	}
	m.redisUp.Set(v)
	m.redisLatency.Set(latency.Seconds())
	m.redisUsedMemory.Set(float64(usedMemory))
	m.redisMaxMemory.Set(float64(maxMemory))
}
