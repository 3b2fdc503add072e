// Package httpbridge is sidecar's HTTP side: the publish API (with routes
// and the upstream proxy for unmodified callers), and webhook delivery of
// events to the service beside it.
package httpbridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/tracing"
)

// Doer models http.Client.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Webhook POSTs events to one URL with the contract's headers.
type Webhook struct {
	URL     string
	Timeout time.Duration // per attempt
	Secret  []byte        // Standard Webhooks key; nil = unsigned
	// Body, when set, sends only that member of a JSON event (its bytes as
	// they are in the event) as application/json, instead of the data.
	Body   Pointer
	Client Doer
	Now    func() time.Time
	// Group names the consumer group in delivery spans (tracing).
	Group string
}

// maxRetryAfter caps a receiver's Retry-After, so one odd header cannot
// park a subscription for days.
const maxRetryAfter = 10 * time.Minute

// DeliveryError is a failed delivery attempt. The stream layer reads its
// Permanent and RetryAfter methods to decide what happens next.
type DeliveryError struct {
	Status     int // 0 when no HTTP answer came
	Err        error
	permanent  bool
	retryAfter time.Duration
}

func (e *DeliveryError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("webhook answered %d: %v", e.Status, e.Err)
	}
	return fmt.Sprintf("webhook: %v", e.Err)
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// Permanent reports whether retrying cannot help: a 4xx other than 408 and
// 429, or a redirect.
func (e *DeliveryError) Permanent() bool { return e.permanent }

// RetryAfter is the receiver's Retry-After, if it sent one.
func (e *DeliveryError) RetryAfter() time.Duration { return e.retryAfter }

// Deliver makes one delivery attempt of ev. An event without the member
// that Body names fails permanently (a *BodyError), with no request sent.
func (w *Webhook) Deliver(ctx context.Context, topic string, attempt int, ev *event.Event) (err error) {
	// One span per attempt, in the publisher's trace (tracing off: no-op).
	ctx, span := tracing.StartDelivery(ctx, topic, w.Group, attempt, ev.TraceParent, ev.TraceState)
	tracing.SetEventID(span, ev.ID)
	status := 0
	defer func() { tracing.End(span, err, status) }()
	if w.Body != "" {
		member, err := w.Body.Extract(ev.Data)
		if err != nil {
			return err
		}
		// A copy: the headers (and the signature) describe what is sent;
		// the event itself is shared with the stream layer.
		sent := *ev
		sent.Data, sent.ContentType = member, "application/json"
		ev = &sent
	}
	status, err = w.post(ctx, ev.Data, func(h http.Header, now time.Time) { SetHeaders(h, topic, attempt, ev, w.Secret, now) })
	return err
}

// post makes one attempt: body POSTed within Timeout, with the headers
// set writes (given the attempt's time) and the attempt span's trace
// context, the answer classified by sendAndClassify.
func (w *Webhook) post(ctx context.Context, body []byte, set func(h http.Header, now time.Time)) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return 0, &DeliveryError{Err: err, permanent: true}
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	set(req.Header, now())
	tracing.Inject(ctx, req.Header) // on: this attempt's span is the receiver's parent
	return w.sendAndClassify(req, now)
}

// sendAndClassify POSTs req and classifies the answer: no answer or
// 408/429/5xx is retriable (with the receiver's Retry-After), a 3xx or a
// followed redirect is permanent with where it pointed, any other non-2xx
// is permanent. status is the answer's, 0 when none came.
func (w *Webhook) sendAndClassify(req *http.Request, now func() time.Time) (status int, err error) {
	resp, err := w.Client.Do(req)
	if err != nil {
		return 0, &DeliveryError{Err: err}
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	// Read a little of the answer for the error message; drain the rest
	// (bounded) so the keep-alive connection can be reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if err := followedRedirect(req, resp); err != nil {
		return status, &DeliveryError{Err: err, permanent: true}
	}
	if status >= 200 && status < 300 {
		return status, nil
	}
	if status >= 300 && status < 400 {
		return status, &DeliveryError{Status: status, Err: redirectError(resp), permanent: true}
	}
	de := &DeliveryError{Status: status, Err: fmt.Errorf("%q", strings.TrimSpace(string(snippet)))}
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		de.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now())
	default:
		de.permanent = true // other 4xx (and 1xx): the receiver will not change its mind
	}
	return status, de
}

// redirectError says where a 3xx pointed: the event goes to the DLQ at
// once, and the operator needs the Location to fix the subscription URL.
func redirectError(resp *http.Response) error {
	if loc := resp.Header.Get("Location"); loc != "" {
		return fmt.Errorf("redirect to %s is not followed", loc)
	}
	return errors.New("redirect (no Location) is not followed")
}

// followedRedirect reports a response that answers a different URL than
// the one sent: the Doer followed a redirect (NewClient never does; a
// Doer plugged in elsewhere might).
func followedRedirect(sent *http.Request, resp *http.Response) error {
	if resp.Request == nil || resp.Request.URL == nil {
		return nil
	}
	if got, want := resp.Request.URL.String(), sent.URL.String(); got != want {
		return fmt.Errorf("the HTTP client followed a redirect to %s (answered %d); redirects are not followed", got, resp.StatusCode)
	}
	return nil
}

// SetHeaders writes the contract's delivery headers: CloudEvents binary
// mode (every attribute, extensions as ce-<name>, each value
// percent-encoded per the HTTP binding §3.1.3.2), the hop's W3C trace
// context, Standard Webhooks (webhook-id, signed, is WebhookID(ev.ID)),
// and the sidecar's own.
func SetHeaders(h http.Header, topic string, attempt int, ev *event.Event, secret []byte, now time.Time) {
	h.Set("Content-Type", ev.ContentType)
	// Keys in canonical form: set without canonicalizing each time.
	ce := func(key, v string) { h[key] = []string{event.EncodeHeaderValue(v)} }
	ce("Ce-Specversion", event.SpecVersion)
	ce("Ce-Id", ev.ID)
	ce("Ce-Source", ev.Source)
	ce("Ce-Type", ev.Type)
	ce("Ce-Time", ev.Time.UTC().Format(time.RFC3339Nano))
	if ev.Subject != "" {
		ce("Ce-Subject", ev.Subject)
	}
	if ev.DataSchema != "" {
		ce("Ce-Dataschema", ev.DataSchema)
	}
	for _, name := range ev.ExtensionNames() {
		ce(http.CanonicalHeaderKey("ce-"+name), ev.Extensions[name])
	}
	setDeliveryHeaders(h, topic, attempt, WebhookID(ev.ID), ev.TraceParent, ev.TraceState, ev.Data, secret, now)
}

// setDeliveryHeaders writes what every delivery carries, single or batch:
// the W3C trace context, Standard Webhooks (webhook-id; signed over body
// when secret is set), Sidecar-Topic, Sidecar-Attempt and User-Agent.
func setDeliveryHeaders(h http.Header, topic string, attempt int, webhookID, traceparent, tracestate string, body, secret []byte, now time.Time) {
	if traceparent != "" {
		h.Set("traceparent", traceparent)
	}
	if tracestate != "" {
		h.Set("tracestate", tracestate)
	}
	ts := now.Unix()
	h.Set("webhook-id", webhookID)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	if secret != nil {
		h.Set("webhook-signature", Sign(secret, webhookID, ts, body))
	}
	h.Set("Sidecar-Topic", topic)
	h.Set("Sidecar-Attempt", strconv.Itoa(attempt))
	h.Set("User-Agent", "sidecar")
}

// webhookIDSafe is what Standard Webhooks libraries take as a message id
// without trouble: ASCII letters, digits, '_' and '-' (no '.', which
// separates the signed content's parts).
func webhookIDSafe(id string) bool {
	if id == "" || len(id) > 256 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

var webhookIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// WebhookID is the webhook-id of an event: its id when that is a safe
// token (^[A-Za-z0-9_-]{1,256}$: sidecar ULIDs and most publishers' ids),
// else "evt_" + base32 (lower case, no padding) of the first 20 bytes of
// SHA-256(id). It depends on the id alone, so retries, restarts and the
// fallback path send the same webhook-id and a receiver can deduplicate.
func WebhookID(id string) string {
	if webhookIDSafe(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "evt_" + webhookIDEncoding.EncodeToString(sum[:20])
}

// Sign returns the Standard Webhooks signature header value:
// "v1," + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")).
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(signature(key, id, timestamp, body))
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}
