package admin

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/stream"
)

type seekRequest struct {
	To string `json:"to"`
}

type seekResponse struct {
	Topic string `json:"topic"`
	Group string `json:"group"`
	From  string `json:"from"` // the group's last-delivered-id before
	To    string `json:"to"`   // and after
}

// seek moves the group's read position: the group next reads the first
// entry at or after "to" (a stream id or an RFC 3339 time: that entry is
// delivered again), everything ("earliest") or only what comes
// ("latest"). Entries pending in the group stay pending.
func (h *Handler) seek(w http.ResponseWriter, r *http.Request, topic string, g redis.XInfoGroup) {
	var req seekRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if req.To == "" {
		writeError(w, http.StatusBadRequest, "bad_position", `"to" is required: `+ErrBadPosition.Error())
		return
	}
	to, err := ParsePosition(req.To)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_position", "to: "+err.Error())
		return
	}
	key := stream.Key(topic)
	var id string
	switch to.Kind {
	case AtEarliest:
		id = "0"
	case AtLatest:
		id = "$"
	case AtID:
		id = before(to.Start())
	case AtTime:
		// The first entry at or after the time; none: only what comes.
		first, err := h.rdb.XRangeN(r.Context(), key, to.Start(), "+", 1).Result()
		if err != nil {
			writeRedisError(w, err)
			return
		}
		id = "$"
		if len(first) == 1 {
			id = before(first[0].ID)
		}
	}
	if err := h.rdb.XGroupSetID(r.Context(), key, g.Name, id).Err(); err != nil {
		writeRedisError(w, fmt.Errorf("xgroup setid %s %s %s: %w", key, g.Name, id, err))
		return
	}
	now := id
	if after, ok, err := h.group(r, topic, g.Name); err == nil && ok {
		now = after.LastDeliveredID // "$" resolved
	}
	h.changed(r, "seek", topic, g.Name, 0, func(e *zerolog.Event) {
		e.Str("to", req.To).Str("from_id", g.LastDeliveredID).Str("to_id", now)
	})
	writeJSON(w, http.StatusOK, seekResponse{Topic: topic, Group: g.Name, From: g.LastDeliveredID, To: now})
}

type pauseResponse struct {
	Topic  string `json:"topic"`
	Group  string `json:"group"`
	Paused bool   `json:"paused"`
}

// pause stops every replica of the group from reading and claiming; it
// answers once that has taken hold (Settle). Deliveries under way finish.
func (h *Handler) pause(w http.ResponseWriter, r *http.Request, topic string, g redis.XInfoGroup) {
	info := stream.PauseInfo{By: h.who(r), At: h.now().UTC()}
	if err := stream.Pause(r.Context(), h.rdb, topic, g.Name, info); err != nil {
		writeRedisError(w, err)
		return
	}
	h.changed(r, "pause", topic, g.Name, 0, nil)
	t := time.NewTimer(h.cfg.Settle)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return // paused all the same; the client left
	}
	writeJSON(w, http.StatusOK, pauseResponse{Topic: topic, Group: g.Name, Paused: true})
}

// resume lets the group's subscribers read again (within a second).
func (h *Handler) resume(w http.ResponseWriter, r *http.Request, topic string, g redis.XInfoGroup) {
	was, err := stream.Resume(r.Context(), h.rdb, topic, g.Name)
	if err != nil {
		writeRedisError(w, err)
		return
	}
	h.changed(r, "resume", topic, g.Name, 0, func(e *zerolog.Event) { e.Bool("was_paused", was) })
	writeJSON(w, http.StatusOK, pauseResponse{Topic: topic, Group: g.Name, Paused: false})
}

// Consumer is one consumer of a group.
type Consumer struct {
	Name    string `json:"name"`
	Pending int64  `json:"pending"`
	IdleMS  int64  `json:"idle_ms"` // since its last read or claim attempt
	// InactiveMS is since its last successful read or claim; -1 when Redis
	// does not say (before 7.2).
	InactiveMS int64 `json:"inactive_ms"`
}

func (h *Handler) consumers(w http.ResponseWriter, r *http.Request, topic string, g redis.XInfoGroup) {
	cs, err := h.readConsumers(r, topic, g.Name)
	if err != nil {
		writeRedisError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]Consumer{"consumers": cs})
}

// readConsumers runs XINFO CONSUMERS and reads its answer itself (RESP2
// or RESP3), to tell a missing inactive field from a zero one.
func (h *Handler) readConsumers(r *http.Request, topic, group string) ([]Consumer, error) {
	key := stream.Key(topic)
	raw, err := h.rdb.Do(r.Context(), "XINFO", "CONSUMERS", key, group).Slice()
	if err != nil {
		return nil, fmt.Errorf("xinfo consumers %s %s: %w", key, group, err)
	}
	out := make([]Consumer, 0, len(raw))
	for _, item := range raw {
		fields := map[string]any{}
		switch v := item.(type) {
		case []any: // RESP2: name, value, …
			for i := 0; i+1 < len(v); i += 2 {
				if k, ok := v[i].(string); ok {
					fields[k] = v[i+1]
				}
			}
		case map[any]any: // RESP3
			for k, val := range v {
				if ks, ok := k.(string); ok {
					fields[ks] = val
				}
			}
		default:
			return nil, fmt.Errorf("xinfo consumers %s %s: unexpected reply %T", key, group, item)
		}
		c := Consumer{InactiveMS: -1}
		c.Name, _ = fields["name"].(string)
		c.Pending, _ = fields["pending"].(int64)
		c.IdleMS, _ = fields["idle"].(int64)
		if v, ok := fields["inactive"].(int64); ok {
			c.InactiveMS = v
		}
		out = append(out, c)
	}
	return out, nil
}

type cleanupRequest struct {
	Idle string `json:"idle"`
}

type keptConsumer struct {
	Name    string `json:"name"`
	Pending int64  `json:"pending"`
	IdleMS  int64  `json:"idle_ms"`
	Why     string `json:"why"`
}

type cleanupResponse struct {
	Removed []string       `json:"removed"`
	Kept    []keptConsumer `json:"kept"`
}

// delConsumerScript removes a consumer only if it holds no pending entry:
// XGROUP DELCONSUMER drops a consumer's pending entries with it, and those
// events would never be delivered. KEYS[1] stream; ARGV[1] group,
// ARGV[2] consumer. Returns 1 when removed, 0 when it had pending entries.
var delConsumerScript = redis.NewScript(`
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
`)

// cleanup removes the group's consumers idle longer than "idle" (default
// 1h) that hold no pending entries: those left by replicas that are gone.
// One with pending entries is kept and named (a live replica claims them),
// and so is this sidecar's own.
func (h *Handler) cleanup(w http.ResponseWriter, r *http.Request, topic string, g redis.XInfoGroup) {
	var req cleanupRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	idle := defaultCleanupIdle
	if req.Idle != "" {
		d, err := time.ParseDuration(req.Idle)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "bad_duration", fmt.Sprintf("idle %q: want a duration such as 30m or 1h", req.Idle))
			return
		}
		idle = d
	}
	cs, err := h.readConsumers(r, topic, g.Name)
	if err != nil {
		writeRedisError(w, err)
		return
	}
	resp := cleanupResponse{Removed: []string{}, Kept: []keptConsumer{}}
	keep := func(c Consumer, why string) {
		resp.Kept = append(resp.Kept, keptConsumer{Name: c.Name, Pending: c.Pending, IdleMS: c.IdleMS, Why: why})
	}
	var failed error
	for _, c := range cs {
		switch {
		case c.Name == h.cfg.Consumer:
			keep(c, "this sidecar's own consumer")
		case c.Pending > 0:
			keep(c, fmt.Sprintf("%d pending entries: a live replica claims them once idle past claim_timeout; remove it after that", c.Pending))
		case time.Duration(c.IdleMS)*time.Millisecond < idle:
			keep(c, fmt.Sprintf("active: idle %v, less than %v", (time.Duration(c.IdleMS)*time.Millisecond).Round(time.Millisecond), idle))
		default:
			removed, err := delConsumerScript.Run(r.Context(), h.rdb, []string{stream.Key(topic)}, g.Name, c.Name).Int()
			switch {
			case err != nil:
				failed = errors.Join(failed, fmt.Errorf("removing consumer %s: %w", c.Name, err))
				keep(c, "removing it failed: "+err.Error())
			case removed == 1:
				resp.Removed = append(resp.Removed, c.Name)
			default:
				keep(c, "it took pending entries meanwhile")
			}
		}
	}
	if len(resp.Removed) > 0 || failed == nil {
		h.changed(r, "cleanup", topic, g.Name, len(resp.Removed), func(e *zerolog.Event) {
			e.Strs("removed", resp.Removed).Int("kept", len(resp.Kept)).Dur("idle", idle)
		})
	}
	if failed != nil {
		writeRedisError(w, failed)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}
