package admin

import (
	"encoding/base64"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// Event is one stream entry as the admin API shows it.
type Event struct {
	StreamID    string            `json:"stream_id"`
	ID          string            `json:"id"`
	Source      string            `json:"source"`
	Type        string            `json:"type"`
	Time        string            `json:"time"`
	Subject     string            `json:"subject"`
	ContentType string            `json:"content_type"`
	DataSchema  string            `json:"dataschema"`
	TraceParent string            `json:"traceparent"`
	TraceState  string            `json:"tracestate"`
	Extensions  map[string]string `json:"extensions"`
	// Data is the body when it is valid UTF-8, else DataBase64 is.
	Data       *string `json:"data,omitempty"`
	DataBase64 string  `json:"data_base64,omitempty"`
	Size       int     `json:"size"`
	// RedriveGroup and RedrivenFrom mark an entry sent back from the DLQ.
	RedriveGroup string `json:"redrive_group,omitempty"`
	RedrivenFrom string `json:"redriven_from,omitempty"`
	// Partition is the entry's partition of a partitioned topic.
	Partition *int `json:"partition,omitempty"`
	// Invalid says why the entry is not a well-formed sidecar event
	// (written by another client, say); what could be read is shown.
	Invalid string `json:"invalid,omitempty"`
}

// newEvent shows one stream entry.
func newEvent(m redis.XMessage) Event {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	out := Event{StreamID: m.ID, Extensions: map[string]string{},
		RedriveGroup: str(stream.FieldRedriveGroup), RedrivenFrom: str(stream.FieldRedrivenFrom)}
	ev, err := event.FromValues(m.Values)
	if err != nil {
		// Show the raw fields there are; the data, if any, as is.
		out.Invalid = err.Error()
		out.ID, out.Source, out.Type, out.Time = str(event.FieldID), str(event.FieldSource), str(event.FieldType), str(event.FieldTime)
		out.Subject, out.ContentType = str(event.FieldSubject), str(event.FieldContentType)
		if d, ok := m.Values[event.FieldData].(string); ok {
			out.setData([]byte(d))
		}
		return out
	}
	out.ID, out.Source, out.Type, out.Subject = ev.ID, ev.Source, ev.Type, ev.Subject
	out.ContentType, out.DataSchema, out.TraceParent, out.TraceState = ev.ContentType, ev.DataSchema, ev.TraceParent, ev.TraceState
	if !ev.Time.IsZero() {
		out.Time = ev.Time.UTC().Format(time.RFC3339Nano)
	}
	for k, v := range ev.Extensions {
		out.Extensions[k] = v
	}
	out.setData(ev.Data)
	return out
}

func (e *Event) setData(b []byte) {
	e.Size = len(b)
	if utf8.Valid(b) {
		s := string(b)
		e.Data = &s
		return
	}
	e.DataBase64 = base64.StdEncoding.EncodeToString(b)
}

// eventsPage is the answer of GET /v1/topics/{topic}/events.
type eventsPage struct {
	Topic  string  `json:"topic"`
	Events []Event `json:"events"`
	// Next is the from= of the next page; "" at the end.
	Next string `json:"next"`
}

// events reads the topic's log — a partitioned topic's partitions merged
// in id order — ?from= (a stream id or RFC 3339 time, inclusive; default
// the oldest; or a page's next), ?limit= (default 50, at most 1000),
// ?order=desc (newest first; from is then the upper bound).
func (h *Handler) events(w http.ResponseWriter, r *http.Request, p parts) {
	q := r.URL.Query()
	n, err := limit(r, defaultLimit, maxLimit)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_limit", err.Error())
		return
	}
	desc := false
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		desc = true
	default:
		writeError(w, http.StatusBadRequest, "bad_order", `order: want "asc" or "desc"`)
		return
	}
	from := cursor{pos: Position{Kind: AtEarliest}, part: -1}
	if desc {
		from.pos = Position{Kind: AtLatest}
	}
	if s := q.Get("from"); s != "" {
		if from, err = parseCursor(s, p); err != nil {
			writeError(w, http.StatusBadRequest, "bad_position", "from: "+err.Error())
			return
		}
	}
	keys := make([]string, p.n)
	for k := range keys {
		keys[k] = stream.Key(p.of(k))
	}
	m := newMerger(h.rdb, keys, from, desc, n+1)
	page := eventsPage{Topic: p.topic, Events: []Event{}}
	for {
		e, ok, err := m.next(r.Context())
		if err != nil {
			writeRedisError(w, err)
			return
		}
		if !ok {
			break
		}
		if len(page.Events) == n {
			page.Next = formatCursor(e.ID, e.part, p, desc)
			break
		}
		ev := newEvent(e.XMessage)
		ev.Partition = p.label(e.part)
		page.Events = append(page.Events, ev)
	}
	writeJSON(w, http.StatusOK, page)
}
