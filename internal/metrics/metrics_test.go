package metrics

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
