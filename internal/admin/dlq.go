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

// dlq lists dead letters — a partitioned topic's partitions merged in DLQ
// id order — ?group= (all groups when absent), ?from= (a DLQ id or the
// time it was dead-lettered, inclusive; or a page's next), ?limit=.
func (h *Handler) dlq(w http.ResponseWriter, r *http.Request, p parts) {
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
	from := cursor{pos: Position{Kind: AtEarliest}, part: -1}
	if s := q.Get("from"); s != "" {
		if from, err = parseCursor(s, p); err != nil {
			writeError(w, http.StatusBadRequest, "bad_position", "from: "+err.Error())
			return
		}
	}
	page := dlqPage{Topic: p.topic, Entries: []DeadLetter{}}
	// With a group, a page may read past other groups' dead letters; a
	// bound keeps one call short (next then says where to go on).
	budget := 0
	if group != "" {
		budget = dlqScanBudget
	}
	keys := make([]string, p.n)
	for k := range keys {
		keys[k] = stream.DLQKey(p.of(k))
	}
	m := newMerger(h.rdb, keys, from, false, n+1)
	for read := 0; ; read++ {
		e, ok, err := m.next(r.Context())
		if err != nil {
			writeRedisError(w, err)
			return
		}
		if !ok {
			break
		}
		if group != "" && e.Values[stream.DLQFieldGroup] != group {
			if read+1 == budget {
				page.Next = cursorAfter(e.ID, e.part, p)
				break
			}
			continue
		}
		if len(page.Entries) == n {
			page.Next = formatCursor(e.ID, e.part, p, false)
			break
		}
		d := newDeadLetter(e.XMessage)
		d.Partition = p.label(e.part)
		page.Entries = append(page.Entries, d)
		if read+1 == budget {
			page.Next = cursorAfter(e.ID, e.part, p)
			break
		}
	}
	if group != "" && len(page.Entries) == 0 && page.Next == "" && from.pos.Kind == AtEarliest {
		if ok := h.groupKnown(w, r, p, group); !ok {
			return
		}
	}
	writeJSON(w, http.StatusOK, page)
}

// groupKnown answers 404 no_such_group (and false) when no partition of
// the topic has such a consumer group; a group that has dead letters but
// is gone (deleted) is known too, so that they can be listed and purged.
func (h *Handler) groupKnown(w http.ResponseWriter, r *http.Request, p parts, group string) bool {
	gs, err := h.partGroups(r.Context(), p, group)
	if err != nil {
		writeRedisError(w, err)
		return false
	}
	if len(gs) == 0 {
		writeNoSuchGroup(w, p.topic, group)
	}
	return len(gs) > 0
}

// selection is the dead letters a redrive or purge is about: one group's,
// all of them or those named — by DLQ id or event id, or, as a DLQ id can
// occur in two partitions, "<id>@<partition>".
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

// matches reports whether dead letter m of partition part is selected.
func (s selection) matches(m redis.XMessage, part int) bool {
	if m.Values[stream.DLQFieldGroup] != s.group {
		return false
	}
	if s.ids == nil {
		return true
	}
	id, _ := m.Values["id"].(string)
	suffix := cursorSep + strconv.Itoa(part)
	hit := false
	for _, k := range []string{m.ID, id, m.ID + suffix, id + suffix} {
		if _, ok := s.ids[k]; ok {
			s.ids[k] = true
			hit = true
		}
	}
	return hit
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

// deadID is one dead letter: its partition and DLQ id.
type deadID struct {
	part int
	id   string
}

// selected returns the first most dead letters sel matches, oldest first
// (DLQ id, then partition), and how many it matches in all.
func (h *Handler) selected(ctx context.Context, p parts, sel selection, most int) ([]deadID, int, error) {
	var ids []deadID
	total := 0
	for k := range p.n {
		mine := 0 // each partition's oldest most are enough to pick from
		_, err := h.scanDLQ(ctx, p.of(k), "-", 0, func(m redis.XMessage) bool {
			if sel.matches(m, k) {
				total++
				if mine < most {
					ids = append(ids, deadID{part: k, id: m.ID})
					mine++
				}
			}
			return true
		})
		if err != nil {
			return nil, 0, err
		}
	}
	slices.SortStableFunc(ids, func(a, b deadID) int {
		switch {
		case idLess(a.id, b.id):
			return -1
		case idLess(b.id, a.id):
			return 1
		}
		return a.part - b.part
	})
	return ids[:min(len(ids), most)], total, nil
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
// those named, at most limit per call, oldest first. Each goes back to its
// own partition's stream.
func (h *Handler) redrive(w http.ResponseWriter, r *http.Request, p parts) {
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
	gs, err := h.partGroups(r.Context(), p, req.Group)
	if err != nil {
		writeRedisError(w, err)
		return
	}
	if len(gs) == 0 {
		writeNoSuchGroup(w, p.topic, req.Group)
		return
	}
	sel := newSelection(req.Group, req.IDs)
	ids, total, err := h.selected(r.Context(), p, sel, req.Limit)
	if err != nil {
		writeRedisError(w, err)
		return
	}
	byPart := map[int][]string{}
	for _, d := range ids {
		byPart[d.part] = append(byPart[d.part], d.id)
	}
	for k := range byPart {
		if !slices.ContainsFunc(gs, func(g partGroup) bool { return g.part == k }) {
			writeError(w, http.StatusNotFound, "no_such_group", fmt.Sprintf(
				"partition %d of topic %q has no consumer group %q to redrive its dead letters to; nothing was redriven", k, p.topic, req.Group))
			return
		}
	}
	moved := 0
	for k := range p.n {
		part := byPart[k]
		for i := 0; i < len(part); i += redriveBatch {
			n, err := stream.Redrive(r.Context(), h.rdb, p.of(k), req.Group, part[i:min(i+redriveBatch, len(part))])
			moved += n
			if err != nil {
				h.changed(r, "redrive", p, req.Group, moved, func(e *zerolog.Event) { e.Err(err) })
				writeRedisError(w, fmt.Errorf("%w (%d redriven before the error)", err, moved))
				return
			}
		}
	}
	h.changed(r, "redrive", p, req.Group, moved, func(e *zerolog.Event) { e.Int("asked_ids", len(req.IDs)) })
	writeJSON(w, http.StatusOK, redriveResponse{Topic: p.topic, Group: req.Group, Redriven: moved,
		Remaining: max(total-len(ids), 0), NotFound: sel.unmatched()})
}

type purgeResponse struct {
	Topic  string `json:"topic"`
	Group  string `json:"group"`
	Purged int    `json:"purged"`
}

// purge deletes dead letters of every partition: ?group= (required),
// ?ids=a,b (DLQ ids, event ids or "<DLQ id>@<partition>"; all of the
// group's when absent).
func (h *Handler) purge(w http.ResponseWriter, r *http.Request, p parts) {
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
	sel, total, purged := newSelection(group, ids), 0, 0
	var err error
	for k := 0; k < p.n && err == nil; k++ {
		var n, matched int
		n, matched, err = h.purgePartition(r.Context(), p.of(k), k, sel)
		purged, total = purged+n, total+matched
	}
	if err != nil {
		if purged > 0 {
			h.changed(r, "purge", p, group, purged, func(e *zerolog.Event) { e.Err(err) })
		}
		writeRedisError(w, fmt.Errorf("%w (%d purged before the error)", err, purged))
		return
	}
	if total == 0 && !h.groupKnown(w, r, p, group) {
		return
	}
	h.changed(r, "purge", p, group, purged, func(e *zerolog.Event) { e.Int("asked_ids", len(ids)) })
	writeJSON(w, http.StatusOK, purgeResponse{Topic: p.topic, Group: group, Purged: purged})
}

// purgePartition deletes the dead letters sel matches in one partition's
// DLQ (topic is the partition's); it returns how many it deleted and how
// many matched.
func (h *Handler) purgePartition(ctx context.Context, topic string, part int, sel selection) (purged, total int, err error) {
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := h.rdb.XDel(ctx, stream.DLQKey(topic), batch...).Result()
		if err != nil {
			return fmt.Errorf("xdel %s: %w", stream.DLQKey(topic), err)
		}
		purged += int(n)
		batch = batch[:0]
		return nil
	}
	var ferr error
	_, err = h.scanDLQ(ctx, topic, "-", 0, func(m redis.XMessage) bool {
		if !sel.matches(m, part) {
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
	return purged, total, err
}
