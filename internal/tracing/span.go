package tracing

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The W3C header names, as stored with an event and sent to webhooks.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// messagingSystem names the sidecar's broker in messaging.system; the
// semantic conventions have no value for Redis Streams.
var messagingSystem = semconv.MessagingSystemKey.String("redis_streams")

// attemptKey is the delivery attempt, 1 for the first.
const attemptKey = attribute.Key("sidecar.delivery.attempt")

// w3c reads and writes traceparent and tracestate. It is this package's
// own, never installed as OTel's global propagator.
var w3c propagation.TraceContext

// StartPublish starts the Producer span of one publish to topic, in the
// publisher's trace when in carries a valid traceparent (and tracestate),
// in a new trace otherwise. End it with End.
//
// Off, it returns ctx and a span that does nothing.
func StartPublish(ctx context.Context, topic string, in http.Header) (context.Context, trace.Span) {
	t := active.Load()
	if t == nil {
		return ctx, noop.Span{}
	}
	ctx = w3c.Extract(ctx, propagation.HeaderCarrier(in))
	return t.t.Start(ctx, "publish "+topic,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			messagingSystem,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("publish"),
			semconv.MessagingDestinationName(topic),
		))
}

// HopContext returns the traceparent and tracestate to store with the
// event: those of the span in ctx (the publish span), so that each delivery
// becomes its child.
//
// Off, it returns "", "": the caller stores the publisher's traceparent and
// tracestate unchanged, so that they still reach the webhook. The same
// holds for "" when on, which happens only for a ctx without a span.
func HopContext(ctx context.Context) (traceparent, tracestate string) {
	if active.Load() == nil {
		return "", ""
	}
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	return c[HeaderTraceParent], c[HeaderTraceState]
}

// StartDelivery starts the Client span of one delivery attempt (attempt 1
// is the first) of an event of topic to group's webhook. traceparent and
// tracestate are what was stored with the event: the span is their child,
// in the publisher's trace, and links to them as the messaging conventions
// ask. Without a valid traceparent it starts a new trace. Pass the returned
// context to Inject, and end the span with End.
//
// Off, it returns ctx and a span that does nothing.
func StartDelivery(ctx context.Context, topic, group string, attempt int, traceparent, tracestate string) (context.Context, trace.Span) {
	t := active.Load()
	if t == nil {
		return ctx, noop.Span{}
	}
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			messagingSystem,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("deliver"),
			semconv.MessagingDestinationName(topic),
			semconv.MessagingConsumerGroupName(group),
			attemptKey.Int(attempt),
			semconv.HTTPRequestMethodPost,
		),
	}
	if attempt > 1 {
		opts = append(opts, trace.WithAttributes(semconv.HTTPRequestResendCount(attempt-1)))
	}
	stored := trace.SpanContextFromContext(w3c.Extract(context.Background(),
		propagation.MapCarrier{HeaderTraceParent: traceparent, HeaderTraceState: tracestate}))
	if stored.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, stored)
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: stored}))
	} else {
		// Not whatever span ctx may carry: an event without trace context
		// is a trace of its own.
		opts = append(opts, trace.WithNewRoot())
	}
	return t.t.Start(ctx, "deliver "+topic, opts...)
}

// Inject writes the traceparent and tracestate of the span in ctx into
// outgoing headers, replacing those already there; the webhook's own spans
// then become children of the delivery attempt. Call it after the headers
// are otherwise complete.
//
// Off, it leaves h as it is (with the stored traceparent the caller set).
func Inject(ctx context.Context, h http.Header) {
	if active.Load() == nil {
		return
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	h.Del(HeaderTraceState) // the span's may be empty where the stored one was not
	w3c.Inject(ctx, propagation.HeaderCarrier(h))
}

// SetEventID records the event's id on a publish or delivery span.
func SetEventID(span trace.Span, id string) {
	if span.IsRecording() {
		span.SetAttributes(semconv.MessagingMessageID(id))
	}
}

// End ends span with the outcome: status is the HTTP status of the answer
// (the publish's to its caller, the webhook's to a delivery; 0 when none
// came), err the failure if any. A span with an err has status Error.
func End(span trace.Span, err error, status int) {
	if !span.IsRecording() {
		span.End()
		return
	}
	if status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	if err != nil {
		if status >= 400 {
			span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
		} else {
			span.SetAttributes(semconv.ErrorType(err))
		}
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
