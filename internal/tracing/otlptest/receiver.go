// Package otlptest provides an in-test OTLP/HTTP trace receiver: a
// collector stand-in that decodes what an exporter sends, for tests to
// assert on the spans.
package otlptest

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, ids as lowercase hex ("" when absent).
type Span struct {
	Name         string
	Kind         trace.SpanKind
	TraceID      string
	SpanID       string
	ParentSpanID string
	TraceState   string
	Links        []Link
	Events       []Event
	Attributes   map[string]string // values as text: "42", "true", "a,b"
	Status       Status
	Service      string            // the resource's service.name
	Resource     map[string]string // all resource attributes
	Scope        string            // instrumentation scope name
}

// Link is a span link.
type Link struct {
	TraceID    string
	SpanID     string
	TraceState string
	Attributes map[string]string
}

// Event is a span event, such as the "exception" of a recorded error.
type Event struct {
	Name       string
	Attributes map[string]string
}

// Status is a span's status.
type Status struct {
	Code    codes.Code
	Message string
}

// Request describes one export request the receiver answered.
type Request struct {
	ContentType     string // application/x-protobuf or application/json
	ContentEncoding string // "gzip" or ""
	Spans           int
}

// Receiver is an OTLP/HTTP endpoint on 127.0.0.1 that keeps every span
// it receives. It fails the test on a request it cannot decode.
type Receiver struct {
	srv *httptest.Server
	t   testing.TB

	mu       sync.Mutex
	spans    []Span
	requests []Request
}

// maxBody bounds one export request; the SDK's batches are far smaller.
const maxBody = 64 << 20

// Start starts a receiver, closed by t.Cleanup.
func Start(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{t: t}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// Endpoint is the base URL for OTEL_EXPORTER_OTLP_ENDPOINT; spans are
// accepted at Endpoint()+"/v1/traces".
func (r *Receiver) Endpoint() string { return r.srv.URL }

// Spans returns the spans received so far, in arrival order.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Requests returns the export requests answered so far.
func (r *Receiver) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}

// WaitSpans waits until at least n spans have arrived and returns them;
// after timeout it fails the test, listing what did arrive.
func (r *Receiver) WaitSpans(t testing.TB, n int, timeout time.Duration) []Span {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		spans := r.Spans()
		if len(spans) >= n {
			return spans
		}
		if time.Now().After(deadline) {
			names := make([]string, len(spans))
			for i, s := range spans {
				names[i] = s.Name
			}
			t.Fatalf("timed out after %v waiting for %d spans: got %d %q", timeout, n, len(spans), names)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/v1/traces" {
		r.t.Errorf("otlptest: %s %s: traces go to /v1/traces", req.Method, req.URL.Path)
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	enc := strings.ToLower(req.Header.Get("Content-Encoding"))
	var body io.Reader = http.MaxBytesReader(w, req.Body, maxBody)
	if enc == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			r.fail(w, http.StatusBadRequest, "gzip: %v", err)
			return
		}
		defer zr.Close()
		body = io.LimitReader(zr, maxBody)
	} else if enc != "" && enc != "identity" {
		r.fail(w, http.StatusUnsupportedMediaType, "Content-Encoding %q", enc)
		return
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		r.fail(w, http.StatusBadRequest, "reading body: %v", err)
		return
	}
	var msg collectorpb.ExportTraceServiceRequest
	switch ct {
	case "application/x-protobuf":
		err = proto.Unmarshal(raw, &msg)
	case "application/json":
		err = unmarshalJSON(raw, &msg)
	default:
		r.fail(w, http.StatusUnsupportedMediaType, "Content-Type %q: want application/x-protobuf or application/json", ct)
		return
	}
	if err != nil {
		r.fail(w, http.StatusBadRequest, "decoding %s: %v", ct, err)
		return
	}
	spans := flatten(&msg)
	r.mu.Lock()
	r.spans = append(r.spans, spans...)
	r.requests = append(r.requests, Request{ContentType: ct, ContentEncoding: enc, Spans: len(spans)})
	r.mu.Unlock()

	w.Header().Set("Content-Type", ct)
	if ct == "application/json" {
		_, _ = io.WriteString(w, "{}")
		return
	}
	out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

// fail answers a request the receiver cannot take and fails the test: an
// exporter should never send one.
func (r *Receiver) fail(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.t.Errorf("otlptest: %s", msg)
	http.Error(w, msg, status)
}

func flatten(msg *collectorpb.ExportTraceServiceRequest) []Span {
	var out []Span
	for _, rs := range msg.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{
					Name:         s.GetName(),
					Kind:         trace.SpanKind(s.GetKind()), // same numbering as OTLP's
					TraceID:      hexID(s.GetTraceId()),
					SpanID:       hexID(s.GetSpanId()),
					ParentSpanID: hexID(s.GetParentSpanId()),
					TraceState:   s.GetTraceState(),
					Attributes:   attrs(s.GetAttributes()),
					Status:       status(s.GetStatus()),
					Service:      res["service.name"],
					Resource:     res,
					Scope:        ss.GetScope().GetName(),
				}
				for _, l := range s.GetLinks() {
					sp.Links = append(sp.Links, Link{
						TraceID: hexID(l.GetTraceId()), SpanID: hexID(l.GetSpanId()),
						TraceState: l.GetTraceState(), Attributes: attrs(l.GetAttributes()),
					})
				}
				for _, e := range s.GetEvents() {
					sp.Events = append(sp.Events, Event{Name: e.GetName(), Attributes: attrs(e.GetAttributes())})
				}
				out = append(out, sp)
			}
		}
	}
	return out
}

func hexID(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return hex.EncodeToString(b)
}

func status(s *tracepb.Status) Status {
	st := Status{Message: s.GetMessage()}
	switch s.GetCode() {
	case tracepb.Status_STATUS_CODE_OK:
		st.Code = codes.Ok
	case tracepb.Status_STATUS_CODE_ERROR:
		st.Code = codes.Error
	default:
		st.Code = codes.Unset
	}
	return st
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = text(kv.GetValue())
	}
	return m
}

// text renders an attribute value: scalars as Go prints them, arrays
// comma-separated, maps as k=v pairs in braces, bytes as hex.
func text(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	case *commonpb.AnyValue_BytesValue:
		return hex.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		parts := make([]string, len(x.ArrayValue.GetValues()))
		for i, e := range x.ArrayValue.GetValues() {
			parts[i] = text(e)
		}
		return strings.Join(parts, ",")
	case *commonpb.AnyValue_KvlistValue:
		parts := make([]string, len(x.KvlistValue.GetValues()))
		for i, kv := range x.KvlistValue.GetValues() {
			parts[i] = kv.GetKey() + "=" + text(kv.GetValue())
		}
		return "{" + strings.Join(parts, ",") + "}"
	default:
		return ""
	}
}
