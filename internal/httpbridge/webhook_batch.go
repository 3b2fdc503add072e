package httpbridge

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/tracing"
)

// errBatchWithBody refuses a batched delivery on a webhook with a body
// pointer: the batch is whole CloudEvents, there is no one member to send.
// Config refuses the combination; this guards a Webhook built elsewhere.
var errBatchWithBody = errors.New("a subscription with body: cannot deliver in batches")

// DeliverBatch makes one delivery attempt of evs, in order, as one
// application/cloudevents-batch+json POST (see AppendBatch). A 2xx
// acknowledges every event; the error is a *DeliveryError classified as
// Deliver's is, so the stream layer retries (the same events, in the same
// order, under the same webhook-id) or dead-letters the batch alike. topic
// is the user topic (never a partition's).
func (w *Webhook) DeliverBatch(ctx context.Context, topic string, attempt int, evs []*event.Event) (err error) {
	if len(evs) == 0 {
		return nil // nothing to send, nothing to acknowledge
	}
	first := evs[0]
	// One span per attempt, in the first event's trace: a batch has one
	// parent (tracing off: no-op).
	ctx, span := tracing.StartDelivery(ctx, topic, w.Group, attempt, first.TraceParent, first.TraceState)
	status := 0
	defer func() { tracing.End(span, err, status) }()
	if w.Body != "" {
		return &DeliveryError{Err: errBatchWithBody, permanent: true}
	}
	body := event.AppendBatch(make([]byte, 0, batchBodySizeHint(evs)), evs)
	status, err = w.post(ctx, body, func(h http.Header, now time.Time) { setBatchHeaders(h, topic, attempt, evs, body, w.Secret, now) })
	return err
}

// batchBodySizeHint is about the encoded size of evs (base64 is 4/3 of the
// data; attributes rarely pass 256 bytes), so the body is built in one
// allocation.
func batchBodySizeHint(evs []*event.Event) int {
	n := 2
	for _, ev := range evs {
		n += 256 + len(ev.Data)*4/3
	}
	return n
}

// setBatchHeaders writes the headers of a batched delivery of evs whose
// body is body: Content-Type application/cloudevents-batch+json, the
// first event's W3C trace context, Standard Webhooks (webhook-id is
// BatchWebhookID(evs); signed over body when secret is set) and the
// sidecar's own, with Sidecar-Batch-Size. No ce-* headers: each event's
// attributes are in the body.
func setBatchHeaders(h http.Header, topic string, attempt int, evs []*event.Event, body, secret []byte, now time.Time) {
	h.Set("Content-Type", event.CloudEventsBatchContentType)
	var traceparent, tracestate string
	if len(evs) > 0 {
		traceparent, tracestate = evs[0].TraceParent, evs[0].TraceState
	}
	setDeliveryHeaders(h, topic, attempt, BatchWebhookID(evs), traceparent, tracestate, body, secret, now)
	h.Set("Sidecar-Batch-Size", strconv.Itoa(len(evs)))
}

// BatchWebhookID is the webhook-id of a batch: "batch_" + base32 (lower
// case, no padding) of the first 20 bytes of SHA-256 over the events'
// webhook-ids joined by "\n". It depends on the events and their order
// alone, so a retried batch carries the same webhook-id and a receiver can
// deduplicate it; a WebhookID never contains "\n", so two different lists
// never join to the same text.
func BatchWebhookID(evs []*event.Event) string {
	h := sha256.New()
	for i, ev := range evs {
		if i > 0 {
			h.Write([]byte{'\n'})
		}
		h.Write([]byte(WebhookID(ev.ID)))
	}
	return "batch_" + webhookIDEncoding.EncodeToString(h.Sum(nil)[:20])
}
