package httpbridge

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/tracing"
)

// Publisher is what the API needs of the event log.
type Publisher interface {
	Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error)
}

// APIConfig configures the HTTP API.
type APIConfig struct {
	Service   string            // event source
	Token     string            // bearer token; "" = open
	MaxBody   int64             // bytes
	Routes    []Route           // proxy routes
	Fallbacks map[string]string // topic → fallback URL for /v1/publish
	Secret    []byte            // Standard Webhooks key: signs fallbacks, verifies the inbox
	// FallbackClient sends fallback POSTs; required when any fallback is set.
	FallbackClient Doer
	// Observer counts fallback outcomes (metrics); nil = none.
	Observer FallbackObserver
	// Extra serves further read-only endpoints (status, metrics) behind the token.
	Extra map[string]http.Handler
	// Upstream, when set, receives every request that matches no route and
	// no endpoint of the sidecar's (reverse proxy): the old service's other
	// URLs keep working at the sidecar's address.
	Upstream *url.URL
	// Admin serves the event log's admin API (/v1/topics…,
	// /v1/subscriptions…): behind the token, or loopback clients only
	// when none is set. nil = not served.
	Admin http.Handler
	// Console serves the web console at GET / and /console/*: its page
	// and assets load without the token (the page asks for it), or for
	// loopback clients only when none is set. With Upstream set, GET /
	// stays the upstream's. nil = not served.
	Console http.Handler
}

// FallbackObserver records a fallback POST's outcome: delivered or failed.
type FallbackObserver interface {
	Fallback(outcome string)
}

type nopObserver struct{}

func (nopObserver) Fallback(string) {}

// NewAPI returns the sidecar's HTTP handler. health serves /healthz and
// /readyz, which stay open when a token is set. inbox may be nil (no
// subscriptions).
func NewAPI(cfg APIConfig, pub Publisher, inbox Inbox, health http.Handler, log zerolog.Logger) http.Handler {
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	a := &api{cfg: cfg, pub: pub, inboxer: inbox, log: log, now: time.Now}
	if cfg.Token != "" {
		a.token = []byte(cfg.Token)
	}
	r := chi.NewRouter()
	notFound := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	}))
	notAllowed := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this endpoint")
	}))
	if cfg.Upstream != nil {
		proxy := a.authenticate(newUpstreamProxy(cfg.Upstream, cfg.Token, log))
		routed := map[string]bool{}
		for _, rt := range cfg.Routes {
			routed[rt.Path] = true
		}
		notFound, notAllowed = ownPathsOr(notFound, proxy), routePathsOr(routed, notAllowed, proxy)
	}
	r.NotFound(notFound.ServeHTTP)
	r.MethodNotAllowed(notAllowed.ServeHTTP)
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		r.Method(m, "/healthz", health)
		r.Method(m, "/readyz", health)
	}
	// The inbox authenticates each delivery itself: the API token, or a
	// signature alone (a peer sidecar may not know this sidecar's token).
	r.Post("/v1/inbox/{topic}", a.inbox)
	if cfg.Admin != nil {
		admin := a.adminGuard(cfg.Admin)
		for _, p := range adminPaths {
			r.Handle(p, admin)
		}
	}
	if cfg.Console != nil {
		console := a.consoleGuard(cfg.Console)
		if cfg.Upstream == nil {
			r.Method(http.MethodGet, "/", console)
			r.Method(http.MethodHead, "/", console)
		}
		r.Handle("/console", console)
		r.Handle("/console/*", console)
	}
	r.Group(func(r chi.Router) {
		r.Use(a.authenticate)
		r.Post("/v1/publish/{topic}", func(w http.ResponseWriter, r *http.Request) {
			topic := chi.URLParam(r, "topic")
			if isBulk(r) {
				a.publishBulk(w, r, topic)
				return
			}
			a.publish(w, r, topic, a.cfg.Fallbacks[topic], nil)
		})
		for path, h := range cfg.Extra {
			r.Method(http.MethodGet, path, h)
		}
		for _, rt := range cfg.Routes {
			r.Post(rt.Path, func(w http.ResponseWriter, r *http.Request) { a.publish(w, r, rt.Topic, rt.Fallback, rt.Response) })
		}
	})
	return r
}

type api struct {
	cfg     APIConfig
	pub     Publisher
	inboxer Inbox
	log     zerolog.Logger
	now     func() time.Time
	token   []byte // the API token, nil when none is set
}

// publishResponse is the 202 body: the receipt, and with a fallback
// configured and Redis down, whether the fallback took the event.
type publishResponse struct {
	event.Receipt
	Fallback string `json:"fallback,omitempty"`
}

func (a *api) authenticate(next http.Handler) http.Handler {
	if a.cfg.Token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.tokenMatches(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sidecar"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// tokenMatches reports whether the request carries the API token (compared
// in constant time); false when no token is set.
func (a *api) tokenMatches(r *http.Request) bool {
	if a.token == nil {
		return false
	}
	// RFC 9110 §11.1: the scheme is case-insensitive ("bearer" too).
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	return strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare([]byte(strings.TrimLeft(tok, " ")), a.token) == 1
}

// publish accepts one event for topic and answers with the receipt, or
// with reply (a route's configured answer) when one is given.
func (a *api) publish(w http.ResponseWriter, r *http.Request, topic, fallback string, reply *RouteResponse) {
	if err := event.ValidateTopic(topic); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_topic", err.Error())
		return
	}
	ev, status, code, err := a.readEvent(w, r, topic)
	if err != nil {
		writeError(w, status, code, err.Error())
		return
	}
	// With tracing on, the event carries the publish span's context, so
	// every delivery attempt is its child in the publisher's trace; off,
	// the publisher's traceparent and tracestate travel unchanged.
	ctx, span := tracing.StartPublish(r.Context(), topic, r.Header)
	tracing.SetEventID(span, ev.ID)
	if tp, ts := tracing.HopContext(ctx); tp != "" {
		ev.TraceParent, ev.TraceState = tp, ts
	}
	status, err = a.accept(ctx, w, topic, fallback, reply, ev)
	tracing.End(span, err, status)
}

// accept publishes ev and answers: the receipt (or the route's reply), or
// the JSON error; it returns the status written and the publish's error.
func (a *api) accept(ctx context.Context, w http.ResponseWriter, topic, fallback string, reply *RouteResponse, ev *event.Event) (int, error) {
	rc, err := a.pub.Publish(ctx, topic, ev)
	if err != nil {
		code := errorCode(err, "unavailable")
		if code == "redis_rejected" {
			// Redis refuses this key (WRONGTYPE, NOPERM…): waiting will not
			// help, an operator must. Other topics are unaffected.
			writeError(w, http.StatusBadGateway, code, err.Error()+"; the event was not accepted")
			return http.StatusBadGateway, err
		}
		if code == "outcome_unknown" {
			// Like a gateway timeout: the write may have landed.
			a.log.Warn().Err(err).Str("topic", topic).Str("event_id", ev.ID).Msg("publish outcome unknown")
			writeError(w, http.StatusGatewayTimeout, code, err.Error())
			return http.StatusGatewayTimeout, err
		}
		a.log.Warn().Err(err).Str("topic", topic).Str("event_id", ev.ID).Msg("publish refused")
		writeError(w, http.StatusServiceUnavailable, code, err.Error()+"; the event was not accepted, retry later")
		return http.StatusServiceUnavailable, err
	}
	if rc.Duplicate {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	resp := publishResponse{Receipt: rc}
	if rc.Spooled && fallback != "" {
		resp.Fallback = a.sendFallback(ctx, fallback, topic, ev)
	}
	if reply != nil {
		writeRouteResponse(w, reply, resp)
		return reply.Status, nil
	}
	writeReceipt(w, resp)
	return http.StatusAccepted, nil
}

// writeRouteResponse writes a route's configured answer; the receipt goes
// into headers, where an unmodified caller does not look but an operator can.
func writeRouteResponse(w http.ResponseWriter, reply *RouteResponse, rc publishResponse) {
	h := w.Header()
	h.Set("Sidecar-Event-Id", rc.ID)
	if rc.StreamID != "" {
		h.Set("Sidecar-Stream-Id", rc.StreamID)
	}
	if rc.Spooled {
		h.Set("Sidecar-Spooled", "true")
	}
	if rc.Fallback != "" {
		h.Set("Sidecar-Fallback", rc.Fallback)
	}
	if reply.ContentType != "" {
		h.Set("Content-Type", reply.ContentType)
	}
	w.WriteHeader(reply.Status)
	_, _ = w.Write(reply.Body)
}

// readEvent builds the event from the request: a structured CloudEvent, or
// the body as data with attributes from ce-* headers (binary mode).
func (a *api) readEvent(w http.ResponseWriter, r *http.Request, topic string) (*event.Event, int, string, error) {
	ct := r.Header.Get("Content-Type")
	kind := contentKindOf(ct)
	if kind.batch {
		// Only /v1/publish takes batches; a route answers for one event.
		return nil, http.StatusUnsupportedMediaType, "batch_not_supported", errors.New("a route publishes one event per request; POST a batch (" + event.CloudEventsBatchContentType +
			" or " + NDJSONContentType + ") to /v1/publish/{topic}")
	}
	body, err := readBody(w, r, a.cfg.MaxBody)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, http.StatusRequestEntityTooLarge, "too_large", errors.New("body exceeds " + humanBytes(a.cfg.MaxBody))
		}
		return nil, http.StatusBadRequest, "bad_body", errors.New("reading body: " + err.Error())
	}
	// code is what a refused attribute is answered with: a CloudEvent
	// (structured, or binary with ce-specversion) is malformed_cloudevent;
	// a plain publish's optional ce-* headers are invalid_header.
	code := "invalid_header"
	var ev *event.Event
	if kind.structured {
		code = "malformed_cloudevent"
		ev, err = event.ParseStructuredCloudEvent(body, a.cfg.Service, a.now())
		if err != nil {
			return nil, http.StatusBadRequest, code, err
		}
	} else {
		ev = &event.Event{
			ID: event.NewID(), Source: a.cfg.Service, Type: topic,
			Time: a.now(), ContentType: ct, Data: body,
		}
		if ev.ContentType == "" {
			ev.ContentType = event.DefaultContentType
		} else if err := kind.invalid; err != nil {
			return nil, http.StatusBadRequest, "invalid_header", err
		}
		if code, err = readBinaryAttributes(r.Header, ev); err != nil {
			return nil, http.StatusBadRequest, code, err
		}
	}
	tp, ts, idem, err := hopHeaders(r)
	if err != nil {
		return nil, http.StatusBadRequest, "invalid_header", err
	}
	if tp != "" {
		ev.TraceParent = tp
	}
	if idem != "" {
		ev.IdempotencyKey = idem
	}
	ev.TraceState = ts
	if err := readPartitionKey(r, ev); err != nil {
		return nil, http.StatusBadRequest, "invalid_header", err
	}
	// Last guard: every attribute that becomes a delivery header must be
	// sendable, or the event would fail every attempt and hold its topic.
	if err := ev.Validate(); err != nil {
		return nil, http.StatusBadRequest, code, err
	}
	return ev, 0, "", nil
}

// readBody reads at most limit bytes of the body, into a buffer sized from
// Content-Length when the client sent one (io.ReadAll would grow and copy).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	if n := r.ContentLength; n >= 0 && n <= limit {
		buf := make([]byte, n)
		if _, err := io.ReadFull(body, buf); err != nil {
			return nil, err
		}
		// Nothing may follow the announced length.
		if m, _ := body.Read(make([]byte, 1)); m > 0 {
			return nil, errors.New("body longer than its Content-Length")
		}
		return buf, nil
	}
	return io.ReadAll(body)
}

// hopHeaders reads and checks the request's traceparent, tracestate and
// Idempotency-Key; "" for one not sent (an empty one is refused).
func hopHeaders(r *http.Request) (traceparent, tracestate, idem string, err error) {
	for _, h := range []struct {
		name string
		dst  *string
	}{{"traceparent", &traceparent}, {"Idempotency-Key", &idem}} {
		if v, ok := header(r, h.name); ok {
			if err := event.ValidateAttr(h.name, v); err != nil {
				return "", "", "", err
			}
			*h.dst = v
		}
	}
	if tracestate = traceState(r.Header); tracestate != "" {
		if err := event.ValidateTraceHeader("tracestate", tracestate); err != nil {
			return "", "", "", err
		}
	}
	return traceparent, tracestate, idem, nil
}

func header(r *http.Request, name string) (string, bool) {
	vs, ok := r.Header[http.CanonicalHeaderKey(name)]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return strings.TrimSpace(vs[0]), true
}

func humanBytes(n int64) string {
	switch {
	case n%(1<<20) == 0:
		return itoa(n>>20) + " MiB"
	case n%(1<<10) == 0:
		return itoa(n>>10) + " KiB"
	}
	return itoa(n) + " bytes"
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// errorCode is the API error code an error carries (a Code method), or def.
func errorCode(err error, def string) string {
	var coded interface{ Code() string }
	if errors.As(err, &coded) {
		return coded.Code()
	}
	return def
}

// writeError writes the contract's error shape {"error","code"}.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": msg, "code": code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// receiptBufs hold receipts being encoded: one buffer per concurrent
// publish instead of one allocation per publish.
var receiptBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// writeReceipt writes the 202 receipt: byte for byte what writeJSON
// writes for rc, appended by hand (the hot path: no reflection, no
// encoder allocation).
func writeReceipt(w http.ResponseWriter, rc publishResponse) {
	bp := receiptBufs.Get().(*[]byte)
	b := appendReceipt((*bp)[:0], rc.ID, rc.Topic, rc.StreamID, rc.Spooled, rc.Fallback)
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(b) // copied into the connection's buffer: b can be reused
	*bp = b
	receiptBufs.Put(bp)
}

// appendReceipt appends one receipt object as encoding/json encodes a
// publishResponse (or a bulk answer's item): empty members left out.
func appendReceipt(b []byte, id, topic, streamID string, spooled bool, fallback string) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"topic":`...)
	b = appendJSONString(b, topic)
	if streamID != "" {
		b = append(b, `,"stream_id":`...)
		b = appendJSONString(b, streamID)
	}
	if spooled {
		b = append(b, `,"spooled":true`...)
	}
	if fallback != "" {
		b = append(b, `,"fallback":`...)
		b = appendJSONString(b, fallback)
	}
	return append(b, '}')
}

// appendJSONString appends s as encoding/json encodes it. Ids, topics and
// stream ids are plain ASCII; anything encoding/json would escape (quotes,
// controls, <, >, &, non-ASCII) goes through encoding/json itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// contentKind is what a publish needs to know of its Content-Type value.
type contentKind struct {
	batch      bool  // a CloudEvents batch
	ndjson     bool  // NDJSON (bulk)
	structured bool  // a structured CloudEvent
	invalid    error // why it is not a valid media type; nil for ""
}

// contentKinds remembers the kinds of the Content-Type values seen, so a
// publish does not parse its header three times (publishers send the same
// few values). Bounded: past maxContentKinds values, and for values over
// maxContentKindLen bytes, a publish parses its own.
var (
	contentKinds  sync.Map // string → contentKind
	contentKindsN atomic.Int32
)

const (
	maxContentKinds   = 256
	maxContentKindLen = 128
)

func contentKindOf(ct string) contentKind {
	if k, ok := contentKinds.Load(ct); ok {
		return k.(contentKind)
	}
	var k contentKind
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		k.batch, k.ndjson, k.structured = mt == event.CloudEventsBatchContentType, mt == NDJSONContentType, mt == event.CloudEventsContentType
	}
	if ct != "" {
		k.invalid = event.ValidateContentType("Content-Type", ct)
	}
	if len(ct) <= maxContentKindLen && contentKindsN.Load() < maxContentKinds {
		if _, loaded := contentKinds.LoadOrStore(ct, k); !loaded {
			contentKindsN.Add(1)
		}
	}
	return k
}

// NewServer returns an http.Server with timeouts, so a slow or half-sent
// request cannot hold a connection (or the server) for long.
func NewServer(h http.Handler, log zerolog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          newStdLogger(log),
	}
}
