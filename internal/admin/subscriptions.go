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
	// From and To are the group's last-delivered-id before and after; of
	// a partitioned topic the latest over its partitions.
	From string `json:"from"`
	To   string `json:"to"`
}

// partitionedSeekResponse is a seek's answer for a partitioned topic:
// also each partition's move.
type partitionedSeekResponse struct {
	seekResponse
	Partitions []partitionSeek `json:"partitions"`
}

// partitionSeek is how a seek moved one partition's group.
type partitionSeek struct {
	Partition int    `json:"partition"`
	From      string `json:"from"`
	To        string `json:"to"`
}

// seek moves the group's read position, on every partition: the group
// next reads the first entry at or after "to" (a stream id or an RFC 3339
// time: that entry is delivered again), everything ("earliest") or only
// what comes ("latest"). Entries pending in the group stay pending.
func (h *Handler) seek(w http.ResponseWriter, r *http.Request, p parts, gs []partGroup) {
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
	group := gs[0].Name
	resp := partitionedSeekResponse{seekResponse: seekResponse{Topic: p.topic, Group: group}}
	asked := make([]string, len(gs))
	for i, g := range gs {
		if asked[i], err = h.seekPartition(r, p.of(g.part), group, to); err != nil {
			if i > 0 {
				h.changed(r, "seek", p, group, 0, func(e *zerolog.Event) { e.Str("to", req.To).Int("partitions_moved", i).Err(err) })
			}
			if p.partitioned() {
				err = fmt.Errorf("%w (%d of %d partitions moved before the error)", err, i, len(gs))
			}
			writeRedisError(w, err)
			return
		}
	}
	now, err := h.partGroups(r.Context(), p, group)
	if err != nil {
		now = nil // moved all the same; the answer shows what was asked for
	}
	for i, g := range gs {
		ps := partitionSeek{Partition: g.part, From: g.LastDeliveredID, To: asked[i]}
		for _, a := range now {
			if a.part == g.part {
				ps.To = a.LastDeliveredID // "$" resolved
			}
		}
		resp.From, resp.To = maxID(resp.From, ps.From), maxID(resp.To, ps.To)
		resp.Partitions = append(resp.Partitions, ps)
	}
	h.changed(r, "seek", p, group, 0, func(e *zerolog.Event) {
		e.Str("to", req.To).Str("from_id", resp.From).Str("to_id", resp.To)
	})
	if !p.partitioned() {
		writeJSON(w, http.StatusOK, resp.seekResponse)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// seekPartition moves group's read position on one partition's stream;
// it returns the last-delivered-id it set ("$": the stream's last).
func (h *Handler) seekPartition(r *http.Request, topic, group string, to Position) (string, error) {
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
			return "", fmt.Errorf("xrange %s: %w", key, err)
		}
		id = "$"
		if len(first) == 1 {
			id = before(first[0].ID)
		}
	}
	if err := h.rdb.XGroupSetID(r.Context(), key, group, id).Err(); err != nil {
		return "", fmt.Errorf("xgroup setid %s %s %s: %w", key, group, id, err)
	}
	return id, nil
}

type pauseResponse struct {
	Topic  string `json:"topic"`
	Group  string `json:"group"`
	Paused bool   `json:"paused"`
	// Partitions is how many partitions' groups this covered (a
	// partitioned topic's: all).
	Partitions int `json:"partitions,omitempty"`
}

// pause stops every replica of the group from reading and claiming, on
// every partition; it answers once that has taken hold (Settle).
// Deliveries under way finish.
func (h *Handler) pause(w http.ResponseWriter, r *http.Request, p parts, gs []partGroup) {
	group := gs[0].Name
	info := stream.PauseInfo{By: h.who(r), At: h.now().UTC()}
	// Every partition's key, also of one whose group is not made yet: its
	// subscriber starts paused.
	_, err := h.rdb.Pipelined(r.Context(), func(pipe redis.Pipeliner) error {
		for k := range p.n {
			if err := stream.Pause(r.Context(), pipe, p.of(k), group, info); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		writeRedisError(w, fmt.Errorf("pausing %s: %w", group, err))
		return
	}
	h.changed(r, "pause", p, group, 0, nil)
	t := time.NewTimer(h.cfg.Settle)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return // paused all the same; the client left
	}
	writeJSON(w, http.StatusOK, pauseResponse{Topic: p.topic, Group: group, Paused: true, Partitions: partitionsOf(p)})
}

// resume lets the group's subscribers read again (within a second), on
// every partition.
func (h *Handler) resume(w http.ResponseWriter, r *http.Request, p parts, gs []partGroup) {
	group := gs[0].Name
	dels := make([]*redis.IntCmd, p.n)
	_, err := h.rdb.Pipelined(r.Context(), func(pipe redis.Pipeliner) error {
		for k := range dels {
			dels[k] = pipe.Del(r.Context(), stream.PauseKey(p.of(k), group))
		}
		return nil
	})
	if err != nil {
		writeRedisError(w, fmt.Errorf("resuming %s: %w", group, err))
		return
	}
	was := 0
	for _, d := range dels {
		was += int(d.Val())
	}
	h.changed(r, "resume", p, group, 0, func(e *zerolog.Event) { e.Bool("was_paused", was > 0) })
	writeJSON(w, http.StatusOK, pauseResponse{Topic: p.topic, Group: group, Paused: false, Partitions: partitionsOf(p)})
}

// partitionsOf is a partitioned topic's partition count; 0 (left out of
// answers) for any other.
func partitionsOf(p parts) int {
	if p.partitioned() {
		return p.n
	}
	return 0
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

// consumers lists the group's consumers; of a partitioned topic, each
// consumer once, its figures over the partitions: pending summed, idle
// and inactive the least (its latest activity on any partition).
func (h *Handler) consumers(w http.ResponseWriter, r *http.Request, p parts, gs []partGroup) {
	out := []Consumer{}
	at := map[string]int{}
	for _, g := range gs {
		cs, err := h.readConsumers(r, p.of(g.part), g.Name)
		if err != nil {
			writeRedisError(w, err)
			return
		}
		for _, c := range cs {
			i, ok := at[c.Name]
			if !ok {
				at[c.Name] = len(out)
				out = append(out, c)
				continue
			}
			sum := &out[i]
			sum.Pending += c.Pending
			sum.IdleMS = min(sum.IdleMS, c.IdleMS)
			if c.InactiveMS >= 0 && (sum.InactiveMS < 0 || c.InactiveMS < sum.InactiveMS) {
				sum.InactiveMS = c.InactiveMS
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string][]Consumer{"consumers": out})
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
// and so is this sidecar's own. Of a partitioned topic it cleans every
// partition's group; a consumer kept on any partition is named as kept.
func (h *Handler) cleanup(w http.ResponseWriter, r *http.Request, p parts, gs []partGroup) {
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
	var (
		order   []string // consumer names, first seen first
		kept    = map[string]*keptConsumer{}
		removed = map[string]int{} // name → partitions it was removed from
		deleted int
		failed  error
	)
	for _, g := range gs {
		cs, err := h.readConsumers(r, p.of(g.part), g.Name)
		if err != nil {
			failed = errors.Join(failed, err)
			break
		}
		keep := func(c Consumer, why string) {
			if p.partitioned() {
				why = fmt.Sprintf("partition %d: %s", g.part, why)
			}
			if k, ok := kept[c.Name]; ok {
				k.Pending += c.Pending
				k.IdleMS = min(k.IdleMS, c.IdleMS)
				return // the first partition's reason stands for all
			}
			kept[c.Name] = &keptConsumer{Name: c.Name, Pending: c.Pending, IdleMS: c.IdleMS, Why: why}
		}
		for _, c := range cs {
			if _, seen := kept[c.Name]; !seen && removed[c.Name] == 0 {
				order = append(order, c.Name)
			}
			switch {
			case c.Name == h.cfg.Consumer:
				keep(c, "this sidecar's own consumer")
			case c.Pending > 0:
				keep(c, fmt.Sprintf("%d pending entries: a live replica claims them once idle past claim_timeout; remove it after that", c.Pending))
			case time.Duration(c.IdleMS)*time.Millisecond < idle:
				keep(c, fmt.Sprintf("active: idle %v, less than %v", (time.Duration(c.IdleMS)*time.Millisecond).Round(time.Millisecond), idle))
			default:
				n, err := delConsumerScript.Run(r.Context(), h.rdb, []string{stream.Key(p.of(g.part))}, g.Name, c.Name).Int()
				switch {
				case err != nil:
					failed = errors.Join(failed, fmt.Errorf("removing consumer %s: %w", c.Name, err))
					keep(c, "removing it failed: "+err.Error())
				case n == 1:
					removed[c.Name]++
					deleted++
				default:
					keep(c, "it took pending entries meanwhile")
				}
			}
		}
	}
	resp := cleanupResponse{Removed: []string{}, Kept: []keptConsumer{}}
	for _, name := range order {
		if k, ok := kept[name]; ok {
			if n := removed[name]; n > 0 {
				k.Why += fmt.Sprintf(" (removed from %d other partitions)", n)
			}
			resp.Kept = append(resp.Kept, *k)
			continue
		}
		resp.Removed = append(resp.Removed, name)
	}
	if deleted > 0 || failed == nil {
		h.changed(r, "cleanup", p, gs[0].Name, deleted, func(e *zerolog.Event) {
			e.Strs("removed", resp.Removed).Int("kept", len(resp.Kept)).Dur("idle", idle)
		})
	}
	if failed != nil {
		writeRedisError(w, failed)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}
