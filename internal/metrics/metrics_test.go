package metrics

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

func TestMetricsExposition(t *testing.T) {
	m := New()
	m.Published("match.updated", "stream", time.Millisecond)
	m.Published("match.updated", "spooled", time.Millisecond)
	m.Published("match.updated", "spooled", time.Millisecond)
	m.Attempt("match.updated", "calendar", "delivered", 2*time.Millisecond)
	m.Delivered("match.updated", "calendar", time.Now().Add(-time.Second))
	m.SetConsumer("match.updated", "calendar", 7, 2, 3*time.Second, 1)
	m.SetSpool(4, 400, 1000)
	m.SetRedis(true, time.Millisecond, 10, 100)
	m.Fallback("delivered")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`sidecar_publish_total{outcome="spooled",topic="match.updated"} 2`,
		`sidecar_delivery_total{group="calendar",outcome="delivered",topic="match.updated"} 1`,
		`sidecar_end_to_end_seconds_count{group="calendar",topic="match.updated"} 1`,
		`sidecar_consumer_lag{group="calendar",topic="match.updated"} 7`,
		`sidecar_dlq_length{topic="match.updated"} 1`,
		`sidecar_spool_events 4`,
		`sidecar_redis_up 1`,
		`sidecar_fallback_total{outcome="delivered"} 1`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if c := m.TopicCounts()["match.updated"]; c["stream"] != 1 || c["spooled"] != 2 {
		t.Fatalf("topic counts: got %v", c)
	}
	if f := m.FallbackCounts(); f["delivered"] != 1 {
		t.Fatalf("fallback counts: got %v", f)
	}
}

func TestTopicLabelIsBounded(t *testing.T) {
	m := New()
	for i := range maxTopics * 4 {
		for _, o := range []string{"stream", "spooled", "rejected"} {
			m.Published(fmt.Sprintf("topic.%d", i), o, time.Millisecond)
		}
	}
	counts := m.TopicCounts()
	if len(counts) > maxTopics+1 {
		t.Fatalf("got %d topic label values, want at most %d", len(counts), maxTopics+1)
	}
	if counts[OtherTopic]["stream"] != maxTopics*3 {
		t.Fatalf("publishes past the bound: got %v, want %d under %s", counts[OtherTopic], maxTopics*3, OtherTopic)
	}
	if counts["topic.0"]["stream"] != 1 {
		t.Fatal("an early topic lost its own label")
	}
}

// TestEndToEndIgnoresSkew: an entry time in this host's future (a
// publisher's clock, or Redis's, ahead of ours) is observed as 0 and
// counted, never as a negative latency that drives the histogram's _sum
// below zero and breaks rate().
func TestEndToEndIgnoresSkew(t *testing.T) {
	m := New()
	m.Delivered("t", "g", time.Now().Add(1000*24*time.Hour)) // 2.7 years ahead
	m.Delivered("t", "g", time.Now().Add(-250*time.Millisecond))
	m.Delivered("t", "g", time.Time{}) // unknown: not observed
	h := gather(t, m, "sidecar_end_to_end_seconds")
	if len(h) != 1 {
		t.Fatalf("got %d end-to-end series, want 1", len(h))
	}
	hist := h[0].GetHistogram()
	if hist.GetSampleCount() != 2 {
		t.Errorf("count: got %d, want 2", hist.GetSampleCount())
	}
	if sum := hist.GetSampleSum(); sum < 0.25 || sum > 5 {
		t.Errorf("sum: got %g, want about 0.25 (the skewed one observed as 0)", sum)
	}
	skew := gather(t, m, "sidecar_event_time_skew_total")
	if len(skew) != 1 || skew[0].GetCounter().GetValue() != 1 {
		t.Fatalf("skew counter: got %v, want 1 for topic t, group g", skew)
	}
	t.Logf("measured: end-to-end count %d, sum %.3fs, skewed %g", hist.GetSampleCount(), hist.GetSampleSum(), skew[0].GetCounter().GetValue())
}

// TestMetricsLint runs Prometheus's linter (what testutil.GatherAndLint
// does) over every series the sidecar exposes.
func TestMetricsLint(t *testing.T) {
	m := New()
	m.Published("t", "stream", time.Millisecond)
	m.Attempt("t", "g", "delivered", time.Millisecond)
	m.Delivered("t", "g", time.Now().Add(time.Hour))
	m.SetConsumer("t", "g", 1, 1, time.Second, 1)
	m.SetSpool(1, 1, 1)
	m.SetRedis(true, time.Millisecond, 1, 1)
	m.Fallback("delivered")
	m.Trimmed("t", 1)
	m.RetentionHeld("t", "g", 1)
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	t.Logf("measured: %d metric families linted, %d problems", len(mfs), len(problems))
}

// gather returns the series of one metric family.
func gather(t *testing.T, m *Metrics, name string) []*dto.Metric {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}
