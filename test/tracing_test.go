package test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
	"github.com/fogis-sidecar/sidecar/internal/tracing/otlptest"
)

// With the standard OTEL_* variables set, the real binaries export a span
// per publish and per delivery attempt to an OTLP/HTTP collector (an
// in-test receiver decoding the protobuf): the publish span in the
// publisher's trace, each attempt its child and linked to it, and the
// webhook's traceparent naming the attempt's span, tracestate carried.
func TestOpenTelemetrySpansJoinThePublishersTrace(t *testing.T) {
	otlp := otlptest.Start(t)
	otel := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + otlp.Endpoint(), "OTEL_BSP_SCHEDULE_DELAY=100"}
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "otel")
	rc := newReceiver(t)
	rc.set(0, func(_ received, n int) int { // the first attempt fails: two attempt spans
		if n == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	pub := startSidecar(t, "processor", append([]string{"REDIS_URL=" + redis.URL, "SIDECAR_SERVICE=processor"}, otel...)...)
	startSidecar(t, "calendar", append([]string{"REDIS_URL=" + redis.URL,
		"SIDECAR_CONFIG=" + subscriberConfig(t, topic, rc.url(), "")}, otel...)...)

	const (
		traceID  = "4bf92f3577b34da6a3ce929d0e0e4736"
		parentID = "00f067aa0ba902b7"
		state    = "fogis=p1,congo=t61rcWkgMzE"
	)
	r := pub.mustPublish(topic, []byte(`{"match":42}`), "traceparent", "00-"+traceID+"-"+parentID+"-01", "tracestate", state)
	eventually.True(t, 20*time.Second, "two attempts, the second acknowledged", func() bool { return rc.count() >= 2 })

	spans := otlp.WaitSpans(t, 3, 20*time.Second)
	var publish *otlptest.Span
	var deliveries []otlptest.Span
	for i, s := range spans {
		switch {
		case strings.HasPrefix(s.Name, "publish "):
			publish = &spans[i]
		case strings.HasPrefix(s.Name, "deliver "):
			deliveries = append(deliveries, s)
		}
	}
	if publish == nil || len(deliveries) != 2 {
		t.Fatalf("spans: got %+v, want one publish and two delivery attempts", spans)
	}
	if publish.TraceID != traceID || publish.ParentSpanID != parentID || publish.Kind != trace.SpanKindProducer || publish.Service != "processor" {
		t.Errorf("publish span: trace %s parent %s kind %v service %q; want trace %s parent %s, producer, processor",
			publish.TraceID, publish.ParentSpanID, publish.Kind, publish.Service, traceID, parentID)
	}
	if publish.TraceState != state {
		t.Errorf("publish span tracestate %q, want %q", publish.TraceState, state)
	}
	got := rc.all()
	for i, d := range deliveries {
		if d.TraceID != traceID || d.ParentSpanID != publish.SpanID || d.Kind != trace.SpanKindClient || d.Service != "calendar" {
			t.Errorf("delivery span %d: trace %s parent %s kind %v service %q; want trace %s, parent the publish span %s, client, calendar",
				i, d.TraceID, d.ParentSpanID, d.Kind, d.Service, traceID, publish.SpanID)
		}
		if len(d.Links) != 1 || d.Links[0].SpanID != publish.SpanID {
			t.Errorf("delivery span %d links %+v, want one to the publish span %s", i, d.Links, publish.SpanID)
		}
		if d.Attributes["messaging.message.id"] != r.ID {
			t.Errorf("delivery span %d messaging.message.id %q, want %q", i, d.Attributes["messaging.message.id"], r.ID)
		}
	}
	// Each webhook request names its own attempt's span as parent.
	want := map[string]bool{}
	for _, d := range deliveries {
		want["00-"+traceID+"-"+d.SpanID+"-01"] = true
	}
	for i, q := range got[:2] {
		if tp := q.Header.Get("traceparent"); !want[tp] {
			t.Errorf("webhook request %d traceparent %q, want one of the attempt spans %v", i+1, tp, want)
		}
		if ts := q.Header.Get("tracestate"); ts != state {
			t.Errorf("webhook request %d tracestate %q, want %q", i+1, ts, state)
		}
	}
}
