package admin

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// DeadLetter is one DLQ entry: the event, and why and for whom it died.
type DeadLetter struct {
	Event
	DLQID      string `json:"dlq_id"`
	Group      string `json:"group"`
	Attempts   int    `json:"attempts"`
	Error      string `json:"error"`
	OriginalID string `json:"original_id"`
}

func newDeadLetter(m redis.XMessage) DeadLetter {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	d := DeadLetter{Event: newEvent(m), DLQID: m.ID, Group: str(stream.DLQFieldGroup),
		Error: str(stream.DLQFieldError), OriginalID: str(stream.DLQFieldOriginalID)}
	d.Attempts, _ = strconv.Atoi(str(stream.DLQFieldAttempts))
	// The event's place is its stream id; the DLQ's own id is dlq_id.
	d.StreamID = d.OriginalID
	return d
}

// scanDLQ calls fn with each dead letter of topic from start (inclusive),
// in order, reading chunks, until fn returns false or budget entries
// (0 = no bound) were read. It returns where a next scan would start: the
// entry fn stopped at, the entry after the last one read when the budget
// ran out, or "" at the end of the DLQ.
func (h *Handler) scanDLQ(ctx context.Context, topic, start string, budget int, fn func(m redis.XMessage) bool) (string, error) {
	key, read := stream.DLQKey(topic), 0
	for {
		chunk := scanChunk
		if budget > 0 {
			chunk = min(chunk, budget-read)
			if chunk == 0 {
				return start, nil
			}
		}
		msgs, err := h.rdb.XRangeN(ctx, key, start, "+", int64(chunk)).Result()
		if err != nil {
			return "", fmt.Errorf("xrange %s: %w", key, err)
		}
		for _, m := range msgs {
			if !fn(m) {
				return m.ID, nil
			}
		}
		read += len(msgs)
		if len(msgs) < chunk {
			return "", nil
		}
		start = after(msgs[len(msgs)-1].ID)
	}
}

// dlqPage is the answer of GET /v1/topics/{topic}/dlq.
type dlqPage struct {
	Topic   string       `json:"topic"`
	Entries []DeadLetter `json:"entries"`
	Next    string       `json:"next"`
}

// dlq lists dead letters: ?group= (all groups when absent), ?from= (a DLQ
// id or the time it was dead-lettered, inclusive), ?limit=.
func (h *Handler) dlq(w http.ResponseWriter, r *http.Request, topic string) {
	q := r.URL.Query()
	n, err := limit(r, defaultLimit, maxLimit)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_limit", err.Error())
		return
	}
	group := q.Get("group")
	if group != "" {
		if err := validateGroup(group); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_group", err.Error())
			return
		}
	}
	from := Position{Kind: AtEarliest}
	if s := q.Get("from"); s != "" {
		if from, err = ParsePosition(s); err != nil {
			writeError(w, http.StatusBadRequest, "bad_position", "from: "+err.Error())
			return
		}
	}
	page := dlqPage{Topic: topic, Entries: []DeadLetter{}}
	// With a group, a page may read past other groups' dead letters; a
	// bound keeps one call short (next then says where to go on).
	budget := 0
	if group != "" {
		budget = dlqScanBudget
	}
	page.Next, err = h.scanDLQ(r.Context(), topic, from.Start(), budget, func(m redis.XMessage) bool {
		if group != "" && m.Values[stream.DLQFieldGroup] != group {
			return true
		}
		if len(page.Entries) == n {
			return false
		}
		page.Entries = append(page.Entries, newDeadLetter(m))
		return true
	})
	if err != nil {
		writeRedisError(w, err)
		return
	}
	if group != "" && len(page.Entries) == 0 && page.Next == "" && from.Kind == AtEarliest {
		if ok := h.groupKnown(w, r, topic, group); !ok {
			return
		}
	}
	writeJSON(w, http.StatusOK, page)
}

// groupKnown answers 404 no_such_group (and false) when topic has no such
// consumer group; a group that has dead letters but is gone (deleted) is
// known too, so that they can be listed and purged.
func (h *Handler) groupKnown(w http.ResponseWriter, r *http.Request, topic, group string) bool {
	_, ok, err := h.group(r, topic, group)
	if err != nil {
		writeRedisError(w, err)
		return false
	}
	if !ok {
		writeNoSuchGroup(w, topic, group)
	}
	return ok
}

// selection is the dead letters a redrive or purge is about: one group's,
// all of them or those named (by DLQ id or event id).
type selection struct {
	group string
	ids   map[string]bool // nil = all; true once one matched
}

func newSelection(group string, ids []string) selection {
	s := selection{group: group}
	if len(ids) > 0 {
		s.ids = map[string]bool{}
		for _, id := range ids {
			s.ids[strings.TrimSpace(id)] = false
		}
	}
	return s
}

func (s selection) matches(m redis.XMessage) bool {
	if m.Values[stream.DLQFieldGroup] != s.group {
		return false
	}
	if s.ids == nil {
		return true
	}
	id, _ := m.Values["id"].(string)
	for _, k := range []string{m.ID, id} {
		if _, ok := s.ids[k]; ok {
			s.ids[k] = true
			return true
		}
	}
	return false
}

// unmatched returns the ids asked for that matched no dead letter, sorted.
func (s selection) unmatched() []string {
	var out []string
	for id, hit := range s.ids {
		if !hit {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// selected returns the DLQ ids of the first most dead letters sel
// matches, in DLQ order, and how many it matches in all.
func (h *Handler) selected(ctx context.Context, topic string, sel selection, most int) ([]string, int, error) {
	var ids []string
	total := 0
	_, err := h.scanDLQ(ctx, topic, "-", 0, func(m redis.XMessage) bool {
		if sel.matches(m) {
			total++
			if len(ids) < most {
				ids = append(ids, m.ID)
			}
		}
		return true
	})
	return ids, total, err
}

// redriveRequest is the body of POST /v1/topics/{topic}/dlq/redrive.
type redriveRequest struct {
	Group string   `json:"group"`
	IDs   []string `json:"ids"`
	Limit int      `json:"limit"`
}

type redriveResponse struct {
	Topic     string `json:"topic"`
	Group     string `json:"group"`
	Redriven  int    `json:"redriven"`
	Remaining int    `json:"remaining"`
	// NotFound are ids asked for that are no dead letter of the group.
	NotFound []string `json:"not_found,omitempty"`
}

// redriveBatch bounds the dead letters one script call moves, so Redis is
// never busy with one call for long.
const redriveBatch = 100

// redrive sends dead letters back to their group: all of the group's, or
// those named, at most limit per call, oldest first.
func (h *Handler) redrive(w http.ResponseWriter, r *http.Request, topic string) {
	var req redriveRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if req.Group == "" {
		writeError(w, http.StatusBadRequest, "missing_group", `"group" is required: dead letters are redriven to one consumer group`)
		return
	}
	if err := validateGroup(req.Group); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_group", err.Error())
		return
	}
	if req.Limit == 0 {
		req.Limit = defaultRedrive
	}
	if req.Limit < 1 || req.Limit > maxRedrive {
		writeError(w, http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit %d: want 1 to %d", req.Limit, maxRedrive))
		return
	}
	// Only to a group that reads the stream: for any other, every
	// subscriber would acknowledge the entry unseen.
	if !h.groupKnown(w, r, topic, req.Group) {
		return
	}
	sel := newSelection(req.Group, req.IDs)
	ids, total, err := h.selected(r.Context(), topic, sel, req.Limit)
	if err != nil {
		writeRedisError(w, err)
		return
	}
	moved := 0
	for i := 0; i < len(ids); i += redriveBatch {
		n, err := stream.Redrive(r.Context(), h.rdb, topic, req.Group, ids[i:min(i+redriveBatch, len(ids))])
		moved += n
		if err != nil {
			h.changed(r, "redrive", topic, req.Group, moved, func(e *zerolog.Event) { e.Err(err) })
			writeRedisError(w, fmt.Errorf("%w (%d redriven before the error)", err, moved))
			return
		}
	}
	h.changed(r, "redrive", topic, req.Group, moved, func(e *zerolog.Event) { e.Int("asked_ids", len(req.IDs)) })
	writeJSON(w, http.StatusOK, redriveResponse{Topic: topic, Group: req.Group, Redriven: moved,
		Remaining: max(total-len(ids), 0), NotFound: sel.unmatched()})
}

type purgeResponse struct {
	Topic  string `json:"topic"`
	Group  string `json:"group"`
	Purged int    `json:"purged"`
}

// purge deletes dead letters: ?group= (required), ?ids=a,b (DLQ ids or
// event ids; all of the group's when absent).
func (h *Handler) purge(w http.ResponseWriter, r *http.Request, topic string) {
	q := r.URL.Query()
	group := q.Get("group")
	if group == "" {
		writeError(w, http.StatusBadRequest, "missing_group", "?group= is required: dead letters are purged per consumer group")
		return
	}
	if err := validateGroup(group); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_group", err.Error())
		return
	}
	var ids []string
	for _, v := range q["ids"] {
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" {
				ids = append(ids, id)
			}
		}
	}
	sel, total := newSelection(group, ids), 0
	var batch []string
	purged := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := h.rdb.XDel(r.Context(), stream.DLQKey(topic), batch...).Result()
		if err != nil {
			return fmt.Errorf("xdel %s: %w", stream.DLQKey(topic), err)
		}
		purged += int(n)
		batch = batch[:0]
		return nil
	}
	var ferr error
	_, err := h.scanDLQ(r.Context(), topic, "-", 0, func(m redis.XMessage) bool {
		if !sel.matches(m) {
			return true
		}
		total++
		if batch = append(batch, m.ID); len(batch) == 500 {
			ferr = flush()
		}
		return ferr == nil
	})
	if err == nil {
		err = ferr
	}
	if err == nil {
		err = flush()
	}
	if err != nil {
		if purged > 0 {
			h.changed(r, "purge", topic, group, purged, func(e *zerolog.Event) { e.Err(err) })
		}
		writeRedisError(w, fmt.Errorf("%w (%d purged before the error)", err, purged))
		return
	}
	if total == 0 && !h.groupKnown(w, r, topic, group) {
		return
	}
	h.changed(r, "purge", topic, group, purged, func(e *zerolog.Event) { e.Int("asked_ids", len(ids)) })
	writeJSON(w, http.StatusOK, purgeResponse{Topic: topic, Group: group, Purged: purged})
}
