package httpbridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/fogis-sidecar/sidecar/internal/config"
	"github.com/fogis-sidecar/sidecar/internal/event"
)

// Route answers an unmodified publisher at its old URL.
type Route struct {
	Path     string
	Topic    string
	Fallback string // "" = none
	// Response is what the caller gets once the event is accepted (also
	// when spooled); nil = the 202 receipt.
	Response *RouteResponse
}

// RouteResponse is a route's fixed answer on acceptance, for a caller that
// insists on its old service's reply (e.g. exactly 200 {"status":"success"}).
// Refusals keep the JSON error shape and their status.
type RouteResponse struct {
	Status      int // 2xx
	Body        []byte
	ContentType string // "" = no Content-Type header
}

// Inbox is what the API needs of the fallback receiver.
type Inbox interface {
	Accept(topic string, ev *event.Event) (int, error)
	// Room is an advisory check that an event of size bytes would fit.
	Room(topic string, size int64) error
}

// fallbackTimeout bounds the direct POST to a peer while Redis is down: the
// publisher is waiting for its answer, and the event is safe in the spool.
const fallbackTimeout = 2 * time.Second

// sendFallback POSTs a spooled event straight to url (normally a peer
// sidecar's /v1/inbox/{topic}) and says how that went, for the publisher.
func (a *api) sendFallback(ctx context.Context, url, topic string, ev *event.Event) string {
	outcome := a.postFallback(ctx, url, topic, ev)
	if outcome == "delivered" {
		a.cfg.Observer.Fallback("delivered")
	} else {
		a.cfg.Observer.Fallback("failed")
	}
	return outcome
}

func (a *api) postFallback(ctx context.Context, url, topic string, ev *event.Event) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fallbackTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(ev.Data))
	if err != nil {
		return "failed: " + err.Error()
	}
	// Signed with the topic's inbox key, not the secret itself: the peer's
	// inbox verifies with the key of the topic in its path, so this POST is
	// good for that inbox only.
	var key []byte
	if a.cfg.Secret != nil {
		key = InboxKey(a.cfg.Secret, topic)
	}
	SetHeaders(req.Header, topic, 1, ev, key, a.now())
	if a.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.cfg.Token)
	}
	resp, err := a.cfg.FallbackClient.Do(req)
	if ue := (*neturl.Error)(nil); errors.As(err, &ue) {
		// Told to the publisher and logged: not the URL's query tokens.
		ue.URL = config.RedactURL(ue.URL)
	}
	if err != nil {
		a.log.Warn().Err(err).Str("topic", topic).Str("event_id", ev.ID).Msg("fallback failed")
		return "failed: " + err.Error()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if err := followedRedirect(req, resp); err != nil {
		a.log.Warn().Err(err).Str("topic", topic).Str("event_id", ev.ID).Msg("fallback redirected")
		return "failed: redirected to " + resp.Request.URL.String() + " (the client followed it)"
	}
	if resp.StatusCode/100 == 3 {
		loc := resp.Header.Get("Location")
		a.log.Warn().Int("status", resp.StatusCode).Str("location", loc).Str("topic", topic).Str("event_id", ev.ID).Msg("fallback redirected")
		if loc == "" {
			return "failed: answered " + strconv.Itoa(resp.StatusCode) + ", a redirect without Location (not followed)"
		}
		return "failed: redirected to " + loc + " (not followed)"
	}
	if resp.StatusCode/100 != 2 {
		a.log.Warn().Int("status", resp.StatusCode).Str("topic", topic).Str("event_id", ev.ID).Msg("fallback refused")
		return "failed: answered " + strconv.Itoa(resp.StatusCode)
	}
	return "delivered"
}

// inbox accepts an event a peer sidecar delivers directly while Redis is
// down, in the webhook format (CloudEvents binary mode headers). Only an
// authenticated sender is heard: a Standard Webhooks signature made with
// the inbox key of this topic (webhook_secret), or the API token. A forged
// delivery would reach the service, and, remembered by the ledger, could
// have the genuine event of that id dropped as a duplicate.
func (a *api) inbox(w http.ResponseWriter, r *http.Request) {
	topic := chi.URLParam(r, "topic")
	if err := event.ValidateTopic(topic); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_topic", err.Error())
		return
	}
	if a.cfg.Secret == nil && a.cfg.Token == "" {
		writeError(w, http.StatusForbidden, "inbox_disabled",
			"the inbox takes only authenticated deliveries and this sidecar has no way to authenticate them: "+
				"set webhook_secret (SIDECAR_WEBHOOK_SECRET) to the same secret as the publishing sidecar, "+
				"or api_token (SIDECAR_API_TOKEN) to the token it sends")
		return
	}
	byToken := a.tokenMatches(r)
	if !byToken && a.cfg.Secret == nil {
		// Token only: refused on its headers, before the body is read.
		w.Header().Set("WWW-Authenticate", `Bearer realm="sidecar"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
		return
	}
	// A full queue is refused before its body is read, so a flood of
	// fallbacks while the webhook hangs costs no memory (Accept still
	// decides). The sender may not be authenticated yet: it learns "full"
	// and nothing else.
	if a.inboxer != nil {
		if err := a.inboxer.Room(topic, max(r.ContentLength, 0)); err != nil {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "inbox_full", "inbox queue is full; retry later")
			return
		}
	}
	body, err := readBody(w, r, a.cfg.MaxBody)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "body exceeds "+humanBytes(a.cfg.MaxBody))
		return
	}
	if !byToken {
		if code, err := a.verifyInbox(r.Header, topic, body); err != nil {
			if code == "unauthorized" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="sidecar"`)
			}
			writeError(w, http.StatusUnauthorized, code, err.Error())
			return
		}
	}
	if a.inboxer == nil {
		writeError(w, http.StatusNotFound, "no_subscription", "this sidecar has no subscriptions")
		return
	}
	ev, err := eventFromWebhook(r.Header, body, a.now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_header", err.Error())
		return
	}
	// The signature covers webhook-id, not ce-id: an event id whose
	// webhook-id is not the signed one would let a captured delivery be
	// replayed as any id.
	if signed := r.Header.Get("webhook-id"); !byToken && WebhookID(ev.ID) != signed {
		writeError(w, http.StatusUnauthorized, "bad_signature", fmt.Sprintf("ce-id %q does not match the signed webhook-id %q", ev.ID, signed))
		return
	}
	n, err := a.inboxer.Accept(topic, ev)
	if err != nil {
		status, code := http.StatusServiceUnavailable, errorCode(err, "unavailable")
		switch code {
		case "no_subscription":
			status = http.StatusNotFound
		case "inbox_full":
			// Backpressure, not failure: the sender keeps the event in its
			// spool and the stream copy is delivered when Redis returns.
			w.Header().Set("Retry-After", "1")
		}
		writeError(w, status, code, err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": ev.ID, "topic": topic, "deliveries": n})
}

// verifyInbox checks the signature of a delivery to topic's inbox that the
// token did not authenticate (a.cfg.Secret is set), and returns the error
// code and why when it fails: bad_signature, or unauthorized for a sender
// that tried only a token.
func (a *api) verifyInbox(h http.Header, topic string, body []byte) (string, error) {
	hint := ""
	if a.cfg.Token != "" {
		hint = "; or send Authorization: Bearer <api_token>"
	}
	if h.Get("webhook-signature") == "" && h.Get("Authorization") != "" {
		if a.cfg.Token == "" {
			return "unauthorized", errors.New("this sidecar has no api_token, so a bearer token authenticates nothing; sign the delivery (webhook_secret)")
		}
		return "unauthorized", errors.New("wrong bearer token, and no webhook-signature")
	}
	if err := Verify(InboxKey(a.cfg.Secret, topic), h, body, a.now()); err != nil {
		return "bad_signature", fmt.Errorf("%w%s", err, hint)
	}
	return "", nil
}

// eventFromWebhook rebuilds an event from delivery headers and body: the
// inverse of SetHeaders (ce-* values percent-decoded, every attribute and
// extension, the hop's traceparent and tracestate), so an event that takes
// the fallback path arrives as it was published.
func eventFromWebhook(h http.Header, body []byte, now time.Time) (*event.Event, error) {
	attrs, err := ceHeaders(h)
	if err != nil {
		return nil, err
	}
	if v, ok := attrs["specversion"]; ok && v != event.SpecVersion {
		return nil, fmt.Errorf("ce-specversion %q is not supported (want %s)", v, event.SpecVersion)
	}
	ev := &event.Event{
		ID: attrs["id"], Source: attrs["source"], Type: attrs["type"], Subject: attrs["subject"], DataSchema: attrs["dataschema"],
		TraceParent: h.Get("traceparent"), TraceState: traceState(h), ContentType: h.Get("Content-Type"), Data: body, Time: now,
		Extensions: extensionAttributes(attrs),
	}
	if ev.ID == "" {
		ev.ID = h.Get("webhook-id")
	}
	if err := event.ValidateAttr("ce-id", ev.ID); err != nil {
		return nil, err
	}
	if t := attrs["time"]; t != "" {
		ts, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return nil, fmt.Errorf("ce-time %q is not RFC 3339", t)
		}
		ev.Time = ts
	}
	if ev.ContentType == "" {
		ev.ContentType = event.DefaultContentType
	}
	if ev.Type == "" {
		return nil, errors.New("ce-type is required")
	}
	if ev.DataSchema != "" {
		if err := event.ValidateDataSchema(ev.DataSchema); err != nil {
			return nil, fmt.Errorf("ce-dataschema: %w", err)
		}
	}
	if err := event.ValidateTraceHeader("tracestate", ev.TraceState); err != nil {
		return nil, err
	}
	if err := event.ValidateExtensions(ev.Extensions); err != nil {
		return nil, fmt.Errorf("ce-* headers: %w", err)
	}
	return ev, nil
}
