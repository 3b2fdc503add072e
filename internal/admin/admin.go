// Package admin is the event log's admin API: topics, events and dead
// letters to inspect, and redrive, purge, seek, pause and resume to make
// things happen again — what an operator would otherwise do in redis-cli.
// Its caller guards it (the API token, or loopback clients only).
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// Observer counts state changes (metrics): one operation, and how many
// entries it moved, removed or changed.
type Observer interface {
	AdminOperation(operation string, entries int)
}

type nopObserver struct{}

func (nopObserver) AdminOperation(string, int) {}

// Config is what the admin API knows of the sidecar.
type Config struct {
	// Topics are the configured ones (subscriptions, routes, fallbacks);
	// GET /v1/topics lists them even before their stream exists.
	Topics []string
	// Consumer is this sidecar's consumer name: never removed by cleanup.
	Consumer string
	// Token says the caller is authenticated by the API token (else it is
	// a loopback client); it names who did what in the logs.
	Token bool
	// Settle is how long a pause waits before answering, so that when it
	// answers no subscriber reads any more; default stream.PauseSettle.
	Settle time.Duration
	// Partitions maps a topic to its partition count (absent: 1). Every
	// operation on a partitioned topic covers all its partitions; streams
	// past the count (another sidecar's) are found and covered too.
	Partitions map[string]int
	Observer   Observer
}

// Limits of one call.
const (
	defaultLimit       = 50
	maxLimit           = 1000
	defaultRedrive     = 1000
	maxRedrive         = 10000
	maxBody            = 1 << 20
	scanChunk          = 200
	dlqScanBudget      = 10000 // DLQ entries one listing page may read past
	defaultCleanupIdle = time.Hour
)

// Handler serves the admin API.
type Handler struct {
	rdb redis.UniversalClient
	cfg Config
	log zerolog.Logger
	r   chi.Router
	now func() time.Time
}

// New returns the admin API's handler; it routes on the full paths
// (/v1/topics…, /v1/subscriptions…).
func New(rdb redis.UniversalClient, cfg Config, log zerolog.Logger) *Handler {
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Settle == 0 {
		cfg.Settle = stream.PauseSettle
	}
	h := &Handler{rdb: rdb, cfg: cfg, log: log, now: time.Now}
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this endpoint")
	})
	r.Get("/v1/topics", h.topics)
	r.Route("/v1/topics/{topic}", func(r chi.Router) {
		r.Get("/events", h.withTopic(h.events))
		r.Get("/dlq", h.withTopic(h.dlq))
		r.Delete("/dlq", h.withTopic(h.purge))
		r.Post("/dlq/redrive", h.withTopic(h.redrive))
	})
	r.Route("/v1/subscriptions/{topic}/{group}", func(r chi.Router) {
		r.Post("/seek", h.withGroup(h.seek))
		r.Post("/pause", h.withGroup(h.pause))
		r.Post("/resume", h.withGroup(h.resume))
		r.Get("/consumers", h.withGroup(h.consumers))
		r.Post("/consumers/cleanup", h.withGroup(h.cleanup))
	})
	h.r = r
	return h
}

// ServeHTTP serves one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.r.ServeHTTP(w, r) }

// pathParam is a URL parameter, unescaped (chi matches the raw path).
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

func (h *Handler) withTopic(next func(w http.ResponseWriter, r *http.Request, p parts)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		topic := pathParam(r, "topic")
		if err := event.ValidateTopic(topic); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_topic", err.Error())
			return
		}
		p, err := h.parts(r.Context(), topic)
		if err != nil {
			writeRedisError(w, err)
			return
		}
		next(w, r, p)
	}
}

// partGroup is a consumer group of one partition's stream.
type partGroup struct {
	part int
	redis.XInfoGroup
}

// withGroup checks the topic and group names and that the group exists;
// next gets the group of every partition that has it.
func (h *Handler) withGroup(next func(w http.ResponseWriter, r *http.Request, p parts, gs []partGroup)) http.HandlerFunc {
	return h.withTopic(func(w http.ResponseWriter, r *http.Request, p parts) {
		group := pathParam(r, "group")
		if err := validateGroup(group); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_group", err.Error())
			return
		}
		gs, err := h.partGroups(r.Context(), p, group)
		if err != nil {
			writeRedisError(w, err)
			return
		}
		if len(gs) == 0 {
			writeNoSuchGroup(w, p.topic, group)
			return
		}
		next(w, r, p, gs)
	})
}

// validateGroup checks a consumer group name: sidecar groups follow the
// topic pattern (config refuses others).
func validateGroup(group string) error {
	if group == "" {
		return errors.New("group is required")
	}
	if err := event.ValidateTopic(group); err != nil {
		return fmt.Errorf("invalid group %q: must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$", group)
	}
	return nil
}

func writeNoSuchGroup(w http.ResponseWriter, topic, group string) {
	writeError(w, http.StatusNotFound, "no_such_group",
		fmt.Sprintf("topic %q has no consumer group %q (GET /v1/topics lists the groups)", topic, group))
}

// partGroups reads group on every partition of p (in one pipeline): those
// that have it, in partition order.
func (h *Handler) partGroups(ctx context.Context, p parts, group string) ([]partGroup, error) {
	cmds := make([]*redis.XInfoGroupsCmd, p.n)
	_, _ = h.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for k := range cmds {
			cmds[k] = pipe.XInfoGroups(ctx, stream.Key(p.of(k)))
		}
		return nil
	})
	var out []partGroup
	for k, c := range cmds {
		groups, err := c.Result()
		if isNoSuchKey(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("xinfo groups %s: %w", stream.Key(p.of(k)), err)
		}
		for _, g := range groups {
			if g.Name == group {
				out = append(out, partGroup{part: k, XInfoGroup: g})
			}
		}
	}
	return out, nil
}

func isNoSuchKey(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && rerr.Error() == "ERR no such key"
}

// who names the client of a state change in the logs.
func (h *Handler) who(r *http.Request) string {
	if h.cfg.Token {
		return r.RemoteAddr + " (token)"
	}
	return r.RemoteAddr + " (loopback)"
}

// changed logs a state change and counts it.
func (h *Handler) changed(r *http.Request, op string, p parts, group string, entries int, fields func(*zerolog.Event)) {
	h.cfg.Observer.AdminOperation(op, entries)
	ev := h.log.Info().Str("operation", op).Str("by", h.who(r)).Str("topic", p.topic).Int("entries", entries)
	if p.partitioned() {
		ev = ev.Int("partitions", p.n)
	}
	if group != "" {
		ev = ev.Str("group", group)
	}
	if fields != nil {
		fields(ev)
	}
	ev.Msg("admin: " + op)
}

// limit reads ?limit= (default def, 1..most).
func limit(r *http.Request, def, most int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > most {
		return 0, fmt.Errorf("limit %q: want a whole number from 1 to %d", s, most)
	}
	return n, nil
}

// decodeBody reads a JSON request body into v; an empty body leaves v as is.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return fmt.Errorf("reading body: %v", err)
	}
	if len(body) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body is not the expected JSON: %v", err)
	}
	if dec.More() {
		return errors.New("body has more than one JSON value")
	}
	return nil
}

// writeRedisError answers a failed Redis call: 502 when Redis refused it
// for a reason waiting will not fix (a key of another type…), else 503.
func writeRedisError(w http.ResponseWriter, err error) {
	if stream.IsRejected(err) {
		writeError(w, http.StatusBadGateway, "redis_rejected", err.Error())
		return
	}
	writeError(w, http.StatusServiceUnavailable, "unavailable", "redis: "+err.Error()+"; retry later")
}

// writeError writes the contract's error shape {"error","code"}.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": msg, "code": code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
