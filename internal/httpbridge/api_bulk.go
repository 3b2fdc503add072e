package httpbridge

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/tracing"
)

// BatchPublisher is a Publisher that also takes many events of a topic in
// one call (bulk publish): each event's receipt or error in its place.
type BatchPublisher interface {
	PublishBatch(ctx context.Context, topic string, evs []*event.Event) ([]event.Receipt, []error)
}

// NDJSONContentType announces a bulk publish of one event per line.
const NDJSONContentType = "application/x-ndjson"

// Bulk publish limits: events per request, and the body as a multiple of
// max_body (each event's data stays within max_body).
const (
	MaxBulkEvents  = 1000
	bulkBodyFactor = 16
)

// isBulk reports a bulk publish: a CloudEvents batch or NDJSON.
func isBulk(r *http.Request) bool {
	k := contentKindOf(r.Header.Get("Content-Type"))
	return k.batch || k.ndjson
}

// bulkItem is one event's line in a bulk answer: its receipt, or why it
// was not accepted.
type bulkItem struct {
	ID       string `json:"id"`
	Topic    string `json:"topic,omitempty"`
	StreamID string `json:"stream_id,omitempty"`
	Spooled  bool   `json:"spooled,omitempty"`
	Fallback string `json:"fallback,omitempty"`
	Error    string `json:"error,omitempty"`
	Code     string `json:"code,omitempty"`
}

// publishBulk accepts many events of topic in one request: validated all
// or nothing, then published in one round trip (spooled per event as a
// single publish would be), answered with every event's receipt in order.
func (a *api) publishBulk(w http.ResponseWriter, r *http.Request, topic string) {
	if err := event.ValidateTopic(topic); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_topic", err.Error())
		return
	}
	bp, ok := a.pub.(BatchPublisher)
	if !ok {
		writeError(w, http.StatusUnsupportedMediaType, "batch_not_supported", "this sidecar cannot publish in bulk; send one event per request")
		return
	}
	evs, status, code, index, err := a.readBulk(w, r, topic)
	if err != nil {
		body := map[string]any{"error": err.Error(), "code": code}
		if index >= 0 {
			body["index"] = index
		}
		writeJSON(w, status, body)
		return
	}
	ctx, span := tracing.StartPublish(r.Context(), topic, r.Header)
	if tp, ts := tracing.HopContext(ctx); tp != "" {
		for _, ev := range evs {
			ev.TraceParent, ev.TraceState = tp, ts
		}
	}
	rcs, errs := bp.PublishBatch(ctx, topic, evs)
	items := make([]bulkItem, len(evs))
	status, code, msg := http.StatusAccepted, "", ""
	replayed := true
	for i, ev := range evs {
		if err := errs[i]; err != nil {
			c := errorCode(err, "unavailable")
			items[i] = bulkItem{ID: ev.ID, Error: err.Error(), Code: c}
			if code == "" {
				status, code, msg = bulkStatus(c), c, "event "+strconv.Itoa(i)+" was not accepted: "+err.Error()
			}
			a.log.Warn().Err(err).Str("topic", topic).Str("event_id", ev.ID).Int("index", i).Msg("bulk publish: event refused")
			replayed = false
			continue
		}
		rc := rcs[i]
		replayed = replayed && rc.Duplicate
		items[i] = bulkItem{ID: rc.ID, Topic: rc.Topic, StreamID: rc.StreamID, Spooled: rc.Spooled}
		if fb := a.cfg.Fallbacks[topic]; rc.Spooled && fb != "" {
			items[i].Fallback = a.sendFallback(ctx, fb, topic, ev)
		}
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	if code == "" {
		writeBulkReceipts(w, items)
		tracing.End(span, nil, status)
		return
	}
	writeJSON(w, status, map[string]any{"error": msg + "; the others' receipts are in events (retry with the same Idempotency-Key to publish the rest once)", "code": code, "events": items})
	tracing.End(span, errors.New(msg), status)
}

// writeBulkReceipts writes the 202 answer of a bulk publish: the same
// bytes writeJSON writes for {"events": items}, appended by hand (up to
// 1,000 receipts per request).
func writeBulkReceipts(w http.ResponseWriter, items []bulkItem) {
	b := make([]byte, 0, 16+len(items)*96)
	b = append(b, `{"events":[`...)
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendReceipt(b, it.ID, it.Topic, it.StreamID, it.Spooled, it.Fallback)
	}
	b = append(b, "]}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(b)
}

// bulkStatus is the answer to a bulk publish one of whose events failed
// with code, as a single publish of it would get.
func bulkStatus(code string) int {
	switch code {
	case "redis_rejected":
		return http.StatusBadGateway
	case "outcome_unknown":
		return http.StatusGatewayTimeout
	}
	return http.StatusServiceUnavailable
}

// readBulk reads and validates a bulk publish's events; on error it
// returns the status, code and the index of the event at fault (-1: the
// request as a whole).
func (a *api) readBulk(w http.ResponseWriter, r *http.Request, topic string) ([]*event.Event, int, string, int, error) {
	limit := bulkBodyFactor * a.cfg.MaxBody
	body, err := readBody(w, r, limit)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, http.StatusRequestEntityTooLarge, "too_large", -1, errors.New("bulk body exceeds " + humanBytes(limit))
		}
		return nil, http.StatusBadRequest, "bad_body", -1, errors.New("reading body: " + err.Error())
	}
	var evs []*event.Event
	ndjson := !event.IsCloudEventsBatch(r.Header.Get("Content-Type"))
	if !ndjson {
		evs, err = event.ParseCloudEventsBatch(body, a.cfg.Service, a.now(), MaxBulkEvents, int(a.cfg.MaxBody))
	} else {
		tmpl := event.Event{Source: a.cfg.Service, Type: topic, Time: a.now()}
		if _, ok := r.Header[http.CanonicalHeaderKey("ce-id")]; ok {
			return nil, http.StatusBadRequest, "invalid_header", -1, errors.New("ce-id cannot name every event of a bulk publish; each line gets its own id")
		}
		if code, err := readBinaryAttributes(r.Header, &tmpl); err != nil {
			return nil, http.StatusBadRequest, code, -1, err
		}
		evs, err = event.ParseNDJSON(body, tmpl, MaxBulkEvents, int(a.cfg.MaxBody))
	}
	if err != nil {
		var be *event.BatchError
		if !errors.As(err, &be) {
			return nil, http.StatusBadRequest, "malformed_batch", -1, err
		}
		status := http.StatusBadRequest
		if be.Code == event.CodeTooManyEvents || be.Code == event.CodeTooLarge {
			status = http.StatusRequestEntityTooLarge
		}
		return nil, status, be.Code, be.Index, err
	}
	tp, ts, idem, err := hopHeaders(r)
	if err != nil {
		return nil, http.StatusBadRequest, "invalid_header", -1, err
	}
	hasIdem, hasTP := idem != "", tp != ""
	for i, ev := range evs {
		// Event i of a retried request has the same key as before, so the
		// retry replays what was published and publishes only the rest.
		if hasIdem {
			ev.IdempotencyKey = idem + "#" + strconv.Itoa(i)
		}
		if hasTP {
			ev.TraceParent, ev.TraceState = tp, ts
		}
		if err := readPartitionKey(r, ev); err != nil {
			return nil, http.StatusBadRequest, "invalid_header", -1, err
		}
		// NDJSON events differ only in id (a ULID), data (checked JSON)
		// and idempotency key (K#i): the first one's check covers all.
		if ndjson && i > 0 {
			continue
		}
		if err := ev.Validate(); err != nil {
			return nil, http.StatusBadRequest, "malformed_cloudevent", i, err
		}
	}
	return evs, 0, "", -1, nil
}

// readPartitionKey applies the Partition-Key header to an event that has
// no partitionkey attribute of its own.
func readPartitionKey(r *http.Request, ev *event.Event) error {
	v, ok := header(r, "Partition-Key")
	if !ok || ev.Extensions[event.PartitionKeyExtension] != "" {
		return nil
	}
	if err := event.ValidateAttr("Partition-Key", v); err != nil {
		return err
	}
	ev.SetPartitionKey(v)
	return nil
}
