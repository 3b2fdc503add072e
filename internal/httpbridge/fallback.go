package httpbridge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

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
	SetHeaders(req.Header, topic, 1, ev, a.cfg.Secret, a.now())
	if a.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.cfg.Token)
	}
	resp, err := a.cfg.FallbackClient.Do(req)
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
// down, in the webhook format (CloudEvents binary mode headers).
func (a *api) inbox(w http.ResponseWriter, r *http.Request) {
	topic := chi.URLParam(r, "topic")
	if err := event.ValidateTopic(topic); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_topic", err.Error())
		return
	}
	if a.inboxer == nil {
		writeError(w, http.StatusNotFound, "no_subscription", "this sidecar has no subscriptions")
		return
	}
	// A full queue is refused before its body is read, so a flood of
	// fallbacks while the webhook hangs costs no memory (Accept still
	// decides). It says no more than "full" to a sender not yet authenticated.
	if err := a.inboxer.Room(topic, max(r.ContentLength, 0)); err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, errorCode(err, "inbox_full"), err.Error())
		return
	}
	body, err := readBody(w, r, a.cfg.MaxBody)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "body exceeds "+humanBytes(a.cfg.MaxBody))
		return
	}
	ev, err := eventFromWebhook(r.Header, body, a.now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_header", err.Error())
		return
	}
	if a.cfg.Secret != nil {
		ts, _ := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
		want := Sign(a.cfg.Secret, ev.ID, ts, body)
		if !hmac.Equal([]byte(want), []byte(r.Header.Get("webhook-signature"))) {
			writeError(w, http.StatusUnauthorized, "bad_signature", "webhook-signature does not match this sidecar's webhook secret")
			return
		}
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

// eventFromWebhook rebuilds an event from delivery headers and body.
func eventFromWebhook(h http.Header, body []byte, now time.Time) (*event.Event, error) {
	ev := &event.Event{
		ID: h.Get("ce-id"), Source: h.Get("ce-source"), Type: h.Get("ce-type"), Subject: h.Get("ce-subject"),
		TraceParent: h.Get("traceparent"), ContentType: h.Get("Content-Type"), Data: body, Time: now,
	}
	if ev.ID == "" {
		ev.ID = h.Get("webhook-id")
	}
	if err := event.ValidateAttr("ce-id", ev.ID); err != nil {
		return nil, err
	}
	if t := h.Get("ce-time"); t != "" {
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
	return ev, nil
}
