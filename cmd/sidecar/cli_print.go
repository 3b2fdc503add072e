package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"
)

// The admin API's answers, as far as the tables need them (--json prints
// the answer itself, whole).
type (
	topicsAnswer struct {
		Topics []struct {
			Topic     string  `json:"topic"`
			Length    flexInt `json:"length"`
			DLQLength flexInt `json:"dlq_length"`
			Error     string  `json:"error"` // the topic could not be read
			Groups    []struct {
				Group     string   `json:"group"`
				Lag       *flexInt `json:"lag"` // null or -1: too many to count
				Pending   flexInt  `json:"pending"`
				DLQLength *flexInt `json:"dlq_length"` // the group's own; -1: too many to count
				Consumers flexInt  `json:"consumers"`
				Paused    bool     `json:"paused"`
			} `json:"groups"`
		} `json:"topics"`
	}
	cliEvent struct {
		StreamID   string  `json:"stream_id"`
		ID         string  `json:"id"`
		Type       string  `json:"type"`
		Time       string  `json:"time"`
		Data       *string `json:"data"`
		DataBase64 *string `json:"data_base64"`
		Size       flexInt `json:"size"`
		// Set on an entry redriven from the DLQ to one group.
		RedriveGroup string `json:"redrive_group"`
		// Why the entry is no well-formed sidecar event (another client wrote it).
		Invalid string `json:"invalid"`
		// Dead letters only.
		DLQID    string  `json:"dlq_id"`
		Group    string  `json:"group"`
		Attempts flexInt `json:"attempts"`
		Error    string  `json:"error"`
	}
	eventPage struct {
		Events []cliEvent `json:"events"`
		Next   string     `json:"next"`
	}
	dlqPage struct {
		Entries []cliEvent `json:"entries"`
		Next    string     `json:"next"`
	}
	redriveRequest struct {
		Group string   `json:"group"`
		IDs   []string `json:"ids,omitempty"`
		Limit int      `json:"limit"`
	}
	redriveAnswer struct {
		Topic     string  `json:"topic"`
		Group     string  `json:"group"`
		Redriven  flexInt `json:"redriven"`
		Remaining flexInt `json:"remaining"`
		// Ids asked for that are no dead letter of the group.
		NotFound []string `json:"not_found,omitempty"`
	}
	consumersAnswer struct {
		Consumers []struct {
			Name       string  `json:"name"`
			Pending    flexInt `json:"pending"`
			IdleMS     flexInt `json:"idle_ms"`
			InactiveMS flexInt `json:"inactive_ms"`
		} `json:"consumers"`
	}
	cleanupAnswer struct {
		Removed []string `json:"removed"`
		Kept    []struct {
			Name    string  `json:"name"`
			Pending flexInt `json:"pending"`
			IdleMS  flexInt `json:"idle_ms"`
			Why     string  `json:"why"`
		} `json:"kept"`
	}
)

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// printTopics: one line per group, the topic's own columns on its first.
func (c *cliCmd) printTopics(ans topicsAnswer) {
	if len(ans.Topics) == 0 {
		fmt.Fprintln(c.stdout, "no topics")
		return
	}
	tw := table(c.stdout)
	fmt.Fprintln(tw, "TOPIC\tLENGTH\tDLQ\tGROUP\tLAG\tPENDING\tGROUP DLQ\tCONSUMERS\tPAUSED")
	for _, t := range ans.Topics {
		head := t.Topic + "\t" + humanInt(int64(t.Length)) + "\t" + humanInt(int64(t.DLQLength))
		switch {
		case t.Error != "":
			fmt.Fprintf(tw, "%s\t-\t\t\t\t\t\t\t(cannot read it: %s)\n", t.Topic, oneLine(t.Error, 80))
			continue
		case len(t.Groups) == 0:
			fmt.Fprintf(tw, "%s\t-\t\t\t\t\t\n", head)
		}
		for i, g := range t.Groups {
			if i > 0 {
				head = "\t\t"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", head, g.Group, count(g.Lag), humanInt(int64(g.Pending)),
				count(g.DLQLength), humanInt(int64(g.Consumers)), yesNo(g.Paused))
		}
	}
	tw.Flush()
}

// eventWriter prints events one line each, in fixed columns (a --follow
// stream cannot be laid out as one table), or with asJSON one API event
// object per line.
type eventWriter struct {
	out    io.Writer
	asJSON bool
	header bool // printed
}

const eventLine = "%-20s  %-24s  %-26s  %-20s  %8s  %s\n"

func (w *eventWriter) write(evs []cliEvent, raws []json.RawMessage) {
	if w.asJSON {
		for _, r := range raws {
			fmt.Fprintf(w.out, "%s\n", r)
		}
		return
	}
	if len(evs) > 0 && !w.header {
		fmt.Fprintf(w.out, eventLine, "STREAM ID", "TIME", "ID", "TYPE", "SIZE", "DATA")
		w.header = true
	}
	for _, e := range evs {
		fmt.Fprintf(w.out, eventLine, e.StreamID, shortTime(e.Time), e.ID, e.Type, humanInt(int64(e.Size)), e.preview(60))
	}
}

// preview is the start of the event's data on one line, marked when the
// entry is a redrive or no sidecar event.
func (e cliEvent) preview(max int) string {
	var mark string
	switch {
	case e.Invalid != "":
		mark = "(not a sidecar event: " + oneLine(e.Invalid, 60) + ") "
	case e.RedriveGroup != "":
		mark = "(redrive to " + e.RedriveGroup + ") "
	}
	switch {
	case e.Data != nil:
		return mark + oneLine(*e.Data, max)
	case e.DataBase64 != nil:
		return mark + "(binary)"
	}
	return strings.TrimSpace(mark)
}

// printDLQ lists dead letters with how long ago they died.
func (c *cliCmd) printDLQ(entries []cliEvent, now time.Time) {
	tw := table(c.stdout)
	fmt.Fprintln(tw, "DLQ ID\tDEAD\tGROUP\tATTEMPTS\tEVENT ID\tTYPE\tERROR")
	for _, e := range entries {
		dead := "?"
		if ms, _, ok := strings.Cut(e.DLQID, "-"); ok {
			if n, err := strconv.ParseInt(ms, 10, 64); err == nil {
				dead = ago(now.Sub(time.UnixMilli(n)))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.DLQID, dead, e.Group, humanInt(int64(e.Attempts)), e.ID, e.Type, oneLine(e.Error, 80))
	}
	tw.Flush()
}

// printConsumers lists a group's consumers with when each was last seen.
func (c *cliCmd) printConsumers(topic, group string, ans consumersAnswer) {
	if len(ans.Consumers) == 0 {
		fmt.Fprintf(c.stdout, "no consumers in %s/%s\n", topic, group)
		return
	}
	tw := table(c.stdout)
	fmt.Fprintln(tw, "CONSUMER\tPENDING\tLAST SEEN\tLAST ACTIVE")
	for _, cs := range ans.Consumers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cs.Name, humanInt(int64(cs.Pending)), agoMS(cs.IdleMS), agoMS(cs.InactiveMS))
	}
	tw.Flush()
}

// printCleanup says what a consumer cleanup removed and what it kept, and why.
func (c *cliCmd) printCleanup(ans cleanupAnswer, idle string) {
	if len(ans.Removed) == 0 {
		fmt.Fprintf(c.stdout, "removed no consumers (none idle over %s without pending entries)\n", idle)
	} else {
		fmt.Fprintf(c.stdout, "removed %d %s: %s\n", len(ans.Removed), plural(int64(len(ans.Removed)), "consumer"), strings.Join(ans.Removed, ", "))
	}
	if len(ans.Kept) == 0 {
		return
	}
	fmt.Fprintln(c.stdout, "kept:")
	tw := table(c.stdout)
	fmt.Fprintln(tw, "CONSUMER\tPENDING\tLAST SEEN\tWHY")
	for _, k := range ans.Kept {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Name, humanInt(int64(k.Pending)), agoMS(k.IdleMS), k.Why)
	}
	tw.Flush()
}

// humanInt writes n with thousands separators: 12,345.
func humanInt(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// ago says how long ago, in its largest whole unit: "3m ago".
func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

// agoMS is ago for Redis's idle milliseconds; negative: Redis does not say.
func agoMS(ms flexInt) string {
	if ms < 0 {
		return "-"
	}
	return ago(time.Duration(ms) * time.Millisecond)
}

// shortTime shows an event time in UTC to the millisecond, or as given.
func shortTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// oneLine cuts s to max runes and escapes line breaks and control
// characters, so a value never breaks the table.
func oneLine(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == max {
			b.WriteString("…")
			break
		}
		n++
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == utf8.RuneError, unicode.IsControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// count is a count the API may not know (null or -1): "?".
func count(n *flexInt) string {
	if n == nil || *n < 0 {
		return "?"
	}
	return humanInt(int64(*n))
}

func plural(n int64, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func groupNote(g string) string {
	if g == "" {
		return ""
	}
	return " for group " + g
}

func groupFlag(g string) string {
	if g == "" {
		return ""
	}
	return " --group " + g
}
