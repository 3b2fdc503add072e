package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"
)

// summary is the run's account for the report.
type summary struct {
	opts      options
	replay    string
	redis     string
	spoolNote string
	settle    string
	workDir   string
	kept      bool
}

// write prints the report: the seed and how to replay it, the faults,
// the counts, and any violations with the first one's full history.
func (r *report) write(w io.Writer, obs *observation, s summary) {
	p := r.pubs
	fmt.Fprintf(w, "==== chaos soak: seed %d, topology %s, duration %v, rate %d/s ====\n", s.opts.seed, s.opts.topology, s.opts.duration, s.opts.rate)
	fmt.Fprintf(w, "replay: %s\n", s.replay)
	fmt.Fprintf(w, "load started at %s: every +offset below counts from there (stream ids and sidecar logs use the wall clock)\n",
		obs.start.UTC().Format("2006-01-02T15:04:05.000Z"))
	fmt.Fprintf(w, "redis: %s\n", s.redis)
	fmt.Fprintf(w, "spool-fill fault: %s\n", s.spoolNote)
	fmt.Fprintf(w, "faults applied (%d): %s\n", len(obs.timeline), faultCounts(obs.timeline))
	fmt.Fprintf(w, "timeline:\n%s", formatTimeline(obs.start, obs.timeline))
	for _, f := range obs.timeline {
		if f.errFull != "" {
			fmt.Fprintf(w, "details of %s#%d %s(%s)'s failure:\n%s\n", f.lane, f.n, f.kind, f.target, indent(clipLines(f.errFull, 80), "    "))
		}
	}
	fmt.Fprintf(w, "publishes: %d events: acked %d, unknown outcome %d, refused %d; %d attempts (%d events retried with their Idempotency-Key)\n",
		p.events, p.acked, p.unknown, p.refused, p.attempts, p.retried)
	fmt.Fprintf(w, "  acknowledged attempts: direct %d, spooled %d (fallback delivered %d, failed %d), idempotent replays %d\n",
		p.direct, p.spooled, p.fallbackDelivered, p.fallbackFailed, p.replayed)
	fmt.Fprintf(w, "  refused attempts: %s; connection refused %d\n", codeCounts(p.refusedByCode), p.connRefused)
	fmt.Fprintf(w, "stream at the end: %d entries, %d repeating an event id; acknowledged events not in the stream %d; Idempotency-Keys with two events %d\n",
		p.streamEntries, p.streamDupIDs, p.ackedNotInStream, p.idempotencyBroken)
	for _, d := range p.streamDupExamples {
		fmt.Fprintf(w, "  written twice: %s\n", d)
	}
	for _, g := range r.groups {
		fmt.Fprintf(w, "group %s: %d acknowledged → delivered %d, dead-lettered (explained) only %d, LOST %d; %d requests (%d not 2xx); duplicates %d (same id %d, other id %d; most copies of one event %d); delivered with unknown publish outcome %d (allowed); DLQ %d (explained %d)",
			g.name, g.expected, g.delivered, g.onlyDLQ, g.lost, g.requests, g.non2xx, g.dupSameID+g.dupOtherID, g.dupSameID, g.dupOtherID, g.maxCopies, g.unackedDelivered, g.dlq, g.explained)
		if g.ordered {
			fmt.Fprintf(w, "; order: %d keys, %d inversions", g.keysChecked, g.inversions)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "settle: %s\n", s.settle)
	if obs.readErr != "" {
		fmt.Fprintf(w, "reading Redis at the end: %s\n", obs.readErr)
	}
	fmt.Fprintf(w, "violations: %d", len(r.violations))
	if len(r.violations) > 0 {
		fmt.Fprintf(w, " (%s)", violationCounts(r.violations))
	}
	fmt.Fprintln(w)
	if len(r.violations) > 0 {
		shown := map[string]int{}
		for _, v := range r.violations {
			if shown[v.kind] >= 5 {
				continue
			}
			shown[v.kind]++
			fmt.Fprintf(w, "  [%s%s] %s\n", v.kind, groupSuffix(v.group), v.msg)
		}
		first := r.violations[0]
		fmt.Fprintf(w, "first violation: [%s%s] %s\n", first.kind, groupSuffix(first.group), first.msg)
		if first.hasEv {
			fmt.Fprintf(w, "history of %s:\n%s", first.ev, history(obs, r, first.ev))
		}
		if first.other != nil {
			fmt.Fprintf(w, "history of %s, delivered before it:\n%s", *first.other, history(obs, r, *first.other))
		}
		fmt.Fprintf(w, "replay: %s\n", s.replay)
	}
	if s.kept {
		fmt.Fprintf(w, "logs and data kept in %s (sidecar logs in %s/logs)\n", s.workDir, s.workDir)
	}
}

func groupSuffix(g string) string {
	if g == "" {
		return ""
	}
	return " " + g
}

func faultCounts(recs []faultRecord) string {
	m := map[string]int{}
	failed := 0
	for _, r := range recs {
		m[r.kind]++
		if r.err != "" {
			failed++
		}
	}
	s := countList(m)
	if failed > 0 {
		s += fmt.Sprintf(" (%d with errors)", failed)
	}
	return s
}

func codeCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none by HTTP"
	}
	return countList(m)
}

func violationCounts(vs []violation) string {
	m := map[string]int{}
	for _, v := range vs {
		m[v.kind+groupSuffix(v.group)]++
	}
	return countList(m)
}

// countList prints "a 3, b 1", largest first.
func countList(m map[string]int) string {
	type kv struct {
		k string
		n int
	}
	var l []kv
	for k, n := range m {
		l = append(l, kv{k, n})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].n > l[j].n || (l[i].n == l[j].n && l[i].k < l[j].k) })
	parts := make([]string, len(l))
	for i, x := range l {
		parts[i] = fmt.Sprintf("%s %d", x.k, x.n)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// clipLines keeps the first n lines of s.
func clipLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("… (%d more lines)", len(lines)-n))
	}
	return strings.Join(lines, "\n")
}

func orOK(s string) string {
	if s == "" {
		return "ok"
	}
	return s
}

// clip shortens a body for a report line, at a rune boundary.
func clip(b []byte) string {
	s := string(b)
	if len(s) <= 120 {
		return s
	}
	cut := 120
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
