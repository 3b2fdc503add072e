package tracing_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/fogis-sidecar/sidecar/internal/tracing"
	"github.com/fogis-sidecar/sidecar/internal/tracing/otlptest"
)

const (
	// The publisher's span, as its traceparent names it.
	inTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	inSpanID  = "00f067aa0ba902b7"
	inParent  = "00-" + inTraceID + "-" + inSpanID + "-01"
	inState   = "vendor=opaque,other=1"
)

// syncBuffer is a log sink the SDK's goroutines may write to as well.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cleanEnv blanks every OTEL_* variable of the test process (an empty
// variable counts as unset), then sets env.
func cleanEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// setup runs tracing.Setup and registers its shutdown; it returns the
// shutdown (for the test to flush with, idempotent) and the log.
func setup(t *testing.T) (func(), *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	shutdown, err := tracing.Setup(context.Background(), "sidecar-test", zerolog.New(logs))
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	var once sync.Once
	flush := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		})
	}
	t.Cleanup(flush)
	return flush, logs
}

func byName(t *testing.T, spans []otlptest.Span, name string) otlptest.Span {
	t.Helper()
	for _, s := range spans {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no span %q among %d spans", name, len(spans))
	return otlptest.Span{}
}

func wantAttrs(t *testing.T, span otlptest.Span, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got, ok := span.Attributes[k]; !ok || got != v {
			t.Errorf("%s: attribute %s = %q (present %v), want %q", span.Name, k, got, ok, v)
		}
	}
}

// TestPublishAndDeliveryJoinThePublishersTrace follows one event through
// both call sites, over each OTLP/HTTP encoding the exporter can send and
// the receiver must decode.
func TestPublishAndDeliveryJoinThePublishersTrace(t *testing.T) {
	for _, tc := range []struct {
		name, protocol, compression string
		wantContentType             string
	}{
		{"protobuf", "http/protobuf", "", "application/x-protobuf"},
		{"protobuf gzip", "http/protobuf", "gzip", "application/x-protobuf"},
		{"json", "http/json", "", "application/json"},
		{"json gzip", "http/json", "gzip", "application/json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcv := otlptest.Start(t)
			cleanEnv(t, map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":    rcv.Endpoint(),
				"OTEL_EXPORTER_OTLP_PROTOCOL":    tc.protocol,
				"OTEL_EXPORTER_OTLP_COMPRESSION": tc.compression,
			})
			flush, logs := setup(t)
			if want := `"endpoint":"` + rcv.Endpoint() + `/v1/traces"`; !strings.Contains(logs.String(), "tracing on") || !strings.Contains(logs.String(), want) {
				t.Errorf("log %q: want a tracing on line with %s", logs.String(), want)
			}

			// The publish handler.
			in := http.Header{}
			in.Set("traceparent", inParent)
			in.Set("tracestate", inState)
			ctx, pub := tracing.StartPublish(context.Background(), "orders", in)
			if !pub.IsRecording() {
				t.Fatal("publish span is not recording")
			}
			tracing.SetEventID(pub, "ev-1")
			storedParent, storedState := tracing.HopContext(ctx)
			tracing.End(pub, nil, http.StatusAccepted)
			pubID := pub.SpanContext().SpanID().String()
			if want := "00-" + inTraceID + "-" + pubID + "-01"; storedParent != want {
				t.Errorf("HopContext traceparent = %q, want %q", storedParent, want)
			}
			if storedState != inState {
				t.Errorf("HopContext tracestate = %q, want %q", storedState, inState)
			}

			// The webhook deliverer, second attempt, which the webhook answers 503.
			out := http.Header{}
			out.Set("traceparent", storedParent) // what SetHeaders writes from the event
			out.Set("tracestate", storedState)
			dctx, del := tracing.StartDelivery(context.Background(), "orders", "billing", 2, storedParent, storedState)
			tracing.SetEventID(del, "ev-1")
			tracing.Inject(dctx, out)
			tracing.End(del, errors.New(`webhook answered 503: "busy"`), http.StatusServiceUnavailable)
			delID := del.SpanContext().SpanID().String()
			if want := "00-" + inTraceID + "-" + delID + "-01"; out.Get("traceparent") != want {
				t.Errorf("injected traceparent = %q, want %q (the delivery span)", out.Get("traceparent"), want)
			}
			if got := out.Get("tracestate"); got != inState {
				t.Errorf("injected tracestate = %q, want %q", got, inState)
			}

			flush()
			spans := rcv.WaitSpans(t, 2, 5*time.Second)
			if len(spans) != 2 {
				t.Fatalf("received %d spans, want 2", len(spans))
			}
			for _, r := range rcv.Requests() {
				if r.ContentType != tc.wantContentType || r.ContentEncoding != tc.compression {
					t.Errorf("request %+v: want Content-Type %s, Content-Encoding %q", r, tc.wantContentType, tc.compression)
				}
			}

			p := byName(t, spans, "publish orders")
			if p.Kind != trace.SpanKindProducer || p.TraceID != inTraceID || p.SpanID != pubID || p.ParentSpanID != inSpanID {
				t.Errorf("publish span: kind %v trace %s span %s parent %s, want producer %s %s %s", p.Kind, p.TraceID, p.SpanID, p.ParentSpanID, inTraceID, pubID, inSpanID)
			}
			if p.TraceState != inState || p.Service != "sidecar-test" || p.Status.Code != codes.Unset || len(p.Links) != 0 {
				t.Errorf("publish span: tracestate %q service %q status %v links %v, want %q sidecar-test Unset none", p.TraceState, p.Service, p.Status, p.Links, inState)
			}
			wantAttrs(t, p, map[string]string{
				"messaging.system": "redis_streams", "messaging.operation.type": "send",
				"messaging.operation.name": "publish", "messaging.destination.name": "orders",
				"messaging.message.id": "ev-1", "http.response.status_code": "202",
			})

			d := byName(t, spans, "deliver orders")
			if d.Kind != trace.SpanKindClient || d.TraceID != inTraceID || d.SpanID != delID || d.ParentSpanID != pubID {
				t.Errorf("delivery span: kind %v trace %s span %s parent %s, want client %s %s %s", d.Kind, d.TraceID, d.SpanID, d.ParentSpanID, inTraceID, delID, pubID)
			}
			// (The exporter does not send a link's tracestate; the span's own
			// TraceState, checked below, carries it.)
			if len(d.Links) != 1 || d.Links[0].TraceID != inTraceID || d.Links[0].SpanID != pubID {
				t.Errorf("delivery links = %+v, want one to %s/%s", d.Links, inTraceID, pubID)
			}
			if d.TraceState != inState {
				t.Errorf("delivery tracestate = %q, want %q", d.TraceState, inState)
			}
			if d.Status.Code != codes.Error || !strings.Contains(d.Status.Message, "503") {
				t.Errorf("delivery status = %+v, want Error naming 503", d.Status)
			}
			if len(d.Events) != 1 || d.Events[0].Name != "exception" {
				t.Errorf("delivery events = %+v, want the recorded exception", d.Events)
			}
			wantAttrs(t, d, map[string]string{
				"messaging.system": "redis_streams", "messaging.operation.name": "deliver",
				"messaging.destination.name": "orders", "messaging.consumer.group.name": "billing",
				"messaging.message.id": "ev-1", "sidecar.delivery.attempt": "2",
				"http.request.resend_count": "1", "http.request.method": "POST",
				"http.response.status_code": "503", "error.type": "503",
			})
		})
	}
}

// TestNoTraceContextStartsATrace: a publisher without (or with a broken)
// traceparent gets a new trace; an event stored without trace context
// (published while tracing was off) gets a delivery span of its own.
func TestNoTraceContextStartsATrace(t *testing.T) {
	for _, tc := range []struct{ name, traceparent string }{
		{"absent", ""},
		{"malformed", "00-not-a-trace-01"},
		{"all-zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcv := otlptest.Start(t)
			cleanEnv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.Endpoint()})
			flush, _ := setup(t)

			in := http.Header{}
			if tc.traceparent != "" {
				in.Set("traceparent", tc.traceparent)
			}
			ctx, pub := tracing.StartPublish(context.Background(), "orders", in)
			tp, _ := tracing.HopContext(ctx)
			tracing.End(pub, nil, http.StatusAccepted)
			_, del := tracing.StartDelivery(context.Background(), "orders", "billing", 1, tp, "")
			tracing.End(del, nil, http.StatusNoContent)

			// Stored before tracing was on: no trace context at all.
			out := http.Header{}
			octx, orphan := tracing.StartDelivery(context.Background(), "orders", "billing", 1, "", "")
			tracing.Inject(octx, out)
			tracing.End(orphan, nil, http.StatusNoContent)

			flush()
			spans := rcv.WaitSpans(t, 3, 5*time.Second)
			p := byName(t, spans, "publish orders")
			if p.ParentSpanID != "" || p.TraceID == inTraceID || len(p.TraceID) != 32 {
				t.Errorf("publish span: trace %s parent %q, want a new trace and no parent", p.TraceID, p.ParentSpanID)
			}
			var deliveries []otlptest.Span
			for _, s := range spans {
				if s.Name == "deliver orders" {
					deliveries = append(deliveries, s)
				}
			}
			if len(deliveries) != 2 {
				t.Fatalf("got %d delivery spans, want 2", len(deliveries))
			}
			for _, d := range deliveries {
				switch d.SpanID {
				case del.SpanContext().SpanID().String():
					if d.TraceID != p.TraceID || d.ParentSpanID != p.SpanID || len(d.Links) != 1 {
						t.Errorf("delivery: trace %s parent %s links %d, want %s %s 1", d.TraceID, d.ParentSpanID, len(d.Links), p.TraceID, p.SpanID)
					}
				case orphan.SpanContext().SpanID().String():
					if d.TraceID == p.TraceID || d.ParentSpanID != "" || len(d.Links) != 0 {
						t.Errorf("orphan delivery: trace %s parent %q links %d, want its own trace, no parent, no link", d.TraceID, d.ParentSpanID, len(d.Links))
					}
					if want := "00-" + d.TraceID + "-" + d.SpanID + "-01"; out.Get("traceparent") != want {
						t.Errorf("injected traceparent = %q, want %q", out.Get("traceparent"), want)
					}
				default:
					t.Errorf("unexpected delivery span %s", d.SpanID)
				}
			}
		})
	}
}

// TestOff: without an endpoint, or with one but disabled, Setup installs
// nothing: spans do not record, nothing reaches the collector, the
// publisher's headers pass untouched, and the hot path allocates nothing.
func TestOff(t *testing.T) {
	for _, tc := range []struct {
		name       string
		env        map[string]string // "RECEIVER" is replaced by its endpoint
		wantReason string
	}{
		{"no endpoint", nil, "neither OTEL_EXPORTER_OTLP_ENDPOINT nor OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set"},
		{"blank endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, "neither"},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "RECEIVER", "OTEL_SDK_DISABLED": "true"}, "OTEL_SDK_DISABLED=true"},
		{"sdk disabled, upper case", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "RECEIVER", "OTEL_SDK_DISABLED": "TRUE"}, "OTEL_SDK_DISABLED=true"},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "RECEIVER", "OTEL_TRACES_EXPORTER": "none"}, "OTEL_TRACES_EXPORTER=none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcv := otlptest.Start(t)
			env := map[string]string{}
			for k, v := range tc.env {
				env[k] = strings.ReplaceAll(v, "RECEIVER", rcv.Endpoint())
			}
			cleanEnv(t, env)
			before := runtime.NumGoroutine()
			flush, logs := setup(t)
			// (Fewer is fine: earlier tests' connections may still be closing.)
			if got := runtime.NumGoroutine(); got > before {
				t.Errorf("goroutines: %d after Setup, %d before; want no new one", got, before)
			}
			if !strings.Contains(logs.String(), "tracing off") || !strings.Contains(logs.String(), tc.wantReason) {
				t.Errorf("log %q: want tracing off with reason %q", logs.String(), tc.wantReason)
			}

			in := http.Header{}
			in.Set("traceparent", inParent)
			in.Set("tracestate", inState)
			ctx, pub := tracing.StartPublish(context.Background(), "orders", in)
			if pub.IsRecording() || pub.SpanContext().IsValid() || trace.SpanContextFromContext(ctx).IsValid() {
				t.Errorf("publish span recording %v, valid %v: want a no-op", pub.IsRecording(), pub.SpanContext().IsValid())
			}
			if tp, ts := tracing.HopContext(ctx); tp != "" || ts != "" {
				t.Errorf("HopContext = %q, %q; want empty (the caller keeps the publisher's)", tp, ts)
			}
			tracing.End(pub, nil, http.StatusAccepted)
			dctx, del := tracing.StartDelivery(context.Background(), "orders", "billing", 1, inParent, inState)
			if del.IsRecording() || del.SpanContext().IsValid() {
				t.Error("delivery span: want a no-op")
			}
			out := http.Header{}
			out.Set("traceparent", inParent)
			out.Set("tracestate", inState)
			tracing.Inject(dctx, out)
			if out.Get("traceparent") != inParent || out.Get("tracestate") != inState || len(out) != 2 {
				t.Errorf("headers after Inject = %v, want the publisher's unchanged", out)
			}
			tracing.End(del, errors.New("webhook answered 503"), http.StatusServiceUnavailable)

			allocs := testing.AllocsPerRun(100, func() {
				ctx, pub := tracing.StartPublish(context.Background(), "orders", in)
				_, _ = tracing.HopContext(ctx)
				tracing.SetEventID(pub, "ev-1")
				tracing.End(pub, nil, http.StatusAccepted)
				dctx, del := tracing.StartDelivery(context.Background(), "orders", "billing", 1, inParent, inState)
				tracing.Inject(dctx, out)
				tracing.End(del, nil, http.StatusOK)
			})
			t.Logf("off: %.0f allocations per publish and delivery", allocs)
			if allocs != 0 {
				t.Errorf("off: %.0f allocations per publish and delivery, want 0", allocs)
			}

			flush() // would export synchronously if anything had been recorded
			if n := len(rcv.Requests()); n != 0 {
				t.Errorf("receiver got %d requests, want 0", n)
			}
		})
	}
}

// TestSetupRefuses: settings that ask for tracing the sidecar cannot do
// are an error naming the variable, without echoing credentials, and
// leave tracing off.
func TestSetupRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no scheme", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "otel-collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT=otel-collector:4318: want an http:// or https:// URL"},
		{"wrong scheme", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://u:s3cret@collector/"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=ftp://REDACTED@collector/: want an http:// or https://"},
		{"not a URL", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://u:s3cret@[::1"}, "OTEL_EXPORTER_OTLP_ENDPOINT is not a URL"},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: the sidecar exports OTLP over HTTP only"},
		{"grpc for traces", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc"},
		{"zipkin only", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin: the sidecar exports traces only over OTLP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t, tc.env)
			shutdown, err := tracing.Setup(context.Background(), "sidecar-test", zerolog.Nop())
			if err == nil {
				_ = shutdown(context.Background())
				t.Fatalf("Setup: no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("Setup error = %q, want it to contain %q and no credential", err, tc.want)
			}
			if _, span := tracing.StartPublish(context.Background(), "orders", http.Header{}); span.IsRecording() {
				t.Error("tracing is on after a refused Setup")
			}
		})
	}
}

// TestSetupLogRedactsCredentials: the one log line names where spans go,
// without the userinfo or query values an endpoint URL may carry; the
// exporter does not send those either, and spans still arrive.
func TestSetupLogRedactsCredentials(t *testing.T) {
	rcv := otlptest.Start(t)
	base := strings.TrimPrefix(rcv.Endpoint(), "http://")
	cleanEnv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:s3cret@" + base + "?api-key=hunter2&tenant=blue"})
	flush, logs := setup(t)
	log := logs.String()
	if want := `"endpoint":"http://REDACTED@` + base + `/v1/traces?api-key=REDACTED&tenant=REDACTED"`; !strings.Contains(log, want) {
		t.Errorf("log %q: want %s", log, want)
	}
	for _, secret := range []string{"s3cret", "hunter2", "blue"} {
		if strings.Contains(log, secret) {
			t.Errorf("log %q contains %q", log, secret)
		}
	}
	_, span := tracing.StartPublish(context.Background(), "orders", http.Header{})
	tracing.End(span, nil, http.StatusAccepted)
	flush()
	rcv.WaitSpans(t, 1, 5*time.Second)
}

// TestSamplerFromEnv: OTEL_TRACES_SAMPLER is the SDK's; a value it does
// not know is a warning and the default sampler, never a refusal.
func TestSamplerFromEnv(t *testing.T) {
	t.Run("always_off", func(t *testing.T) {
		rcv := otlptest.Start(t)
		cleanEnv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.Endpoint(), "OTEL_TRACES_SAMPLER": "always_off"})
		flush, logs := setup(t)
		if !strings.Contains(logs.String(), `"sampler":"always_off"`) {
			t.Errorf("log %q: want sampler always_off", logs.String())
		}
		in := http.Header{}
		in.Set("traceparent", inParent)
		ctx, pub := tracing.StartPublish(context.Background(), "orders", in)
		if pub.IsRecording() {
			t.Error("publish span records under always_off")
		}
		// The trace continues, unsampled, so the webhook's spans follow the decision.
		tp, _ := tracing.HopContext(ctx)
		if want := "00-" + inTraceID + "-" + pub.SpanContext().SpanID().String() + "-00"; tp != want {
			t.Errorf("HopContext = %q, want %q", tp, want)
		}
		tracing.End(pub, nil, http.StatusAccepted)
		flush()
		if n := len(rcv.Spans()); n != 0 {
			t.Errorf("received %d spans, want 0", n)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		rcv := otlptest.Start(t)
		cleanEnv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.Endpoint(), "OTEL_TRACES_SAMPLER": "sometimes"})
		flush, logs := setup(t)
		if log := logs.String(); !strings.Contains(log, `"sampler":"parentbased_always_on"`) || !strings.Contains(log, "unsupported sampler: sometimes") {
			t.Errorf("log %q: want the default sampler and a warning naming the value", log)
		}
		_, pub := tracing.StartPublish(context.Background(), "orders", http.Header{})
		tracing.End(pub, nil, http.StatusAccepted)
		flush()
		rcv.WaitSpans(t, 1, 5*time.Second)
	})
}

// TestResourceFromEnv: OTEL_SERVICE_NAME beats both the service argument
// and OTEL_RESOURCE_ATTRIBUTES' service.name; other attributes are kept.
func TestResourceFromEnv(t *testing.T) {
	rcv := otlptest.Start(t)
	cleanEnv(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.Endpoint(),
		"OTEL_SERVICE_NAME":           "billing-sidecar",
		"OTEL_RESOURCE_ATTRIBUTES":    "service.name=ignored,deployment.environment.name=staging",
	})
	flush, logs := setup(t)
	if !strings.Contains(logs.String(), `"service_name":"billing-sidecar"`) {
		t.Errorf("log %q: want service_name billing-sidecar", logs.String())
	}
	_, pub := tracing.StartPublish(context.Background(), "orders", http.Header{})
	tracing.End(pub, nil, http.StatusAccepted)
	flush()
	s := rcv.WaitSpans(t, 1, 5*time.Second)[0]
	if s.Service != "billing-sidecar" || s.Resource["deployment.environment.name"] != "staging" {
		t.Errorf("resource = %v, want service.name billing-sidecar and deployment.environment.name staging", s.Resource)
	}
	if s.Scope != "github.com/fogis-sidecar/sidecar/internal/tracing" {
		t.Errorf("scope = %q", s.Scope)
	}
}

// BenchmarkSpans measures the two call sites' cost per event: one publish
// and one delivery attempt, off and on (exporting to an in-test receiver).
func BenchmarkSpans(b *testing.B) {
	in := http.Header{}
	in.Set("traceparent", inParent)
	in.Set("tracestate", inState)
	out := http.Header{}
	run := func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, pub := tracing.StartPublish(context.Background(), "orders", in)
			tp, ts := tracing.HopContext(ctx)
			tracing.SetEventID(pub, "ev-1")
			tracing.End(pub, nil, http.StatusAccepted)
			dctx, del := tracing.StartDelivery(context.Background(), "orders", "billing", 1, tp, ts)
			tracing.Inject(dctx, out)
			tracing.End(del, nil, http.StatusOK)
		}
	}
	blank := func(b *testing.B) {
		for _, kv := range os.Environ() {
			if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
				b.Setenv(k, "")
			}
		}
	}
	b.Run("off", func(b *testing.B) {
		blank(b)
		shutdown, err := tracing.Setup(context.Background(), "bench", zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		defer shutdown(context.Background())
		run(b)
	})
	b.Run("on", func(b *testing.B) {
		rcv := otlptest.Start(b)
		blank(b)
		b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.Endpoint())
		shutdown, err := tracing.Setup(context.Background(), "bench", zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		defer shutdown(context.Background())
		run(b)
	})
}

// TestMalformedResourceAttributesWarn: a malformed OTEL_RESOURCE_ATTRIBUTES
// entry is a warning; the well-formed ones and tracing itself stay.
func TestMalformedResourceAttributesWarn(t *testing.T) {
	rcv := otlptest.Start(t)
	cleanEnv(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.Endpoint(),
		"OTEL_RESOURCE_ATTRIBUTES":    "team=payments,novalue",
	})
	flush, logs := setup(t)
	if log := logs.String(); !strings.Contains(log, `"level":"warn"`) || !strings.Contains(log, "novalue") || !strings.Contains(log, "tracing on") {
		t.Errorf("log %q: want a warning naming novalue, and tracing on", log)
	}
	_, pub := tracing.StartPublish(context.Background(), "orders", http.Header{})
	tracing.End(pub, nil, http.StatusAccepted)
	flush()
	if s := rcv.WaitSpans(t, 1, 5*time.Second)[0]; s.Resource["team"] != "payments" || s.Service != "sidecar-test" {
		t.Errorf("resource = %v, want team payments and service.name sidecar-test", s.Resource)
	}
}
