package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// history tells everything the run knows about one logical event: what its
// client was told, every request any receiver got for it, what Redis holds,
// the faults around it, and the sidecars' log lines naming its ids — enough
// to start a diagnosis without re-running.
func history(obs *observation, r *report, k evKey) string {
	var b strings.Builder
	at := func(t time.Time) string { return fmtDur(t.Sub(obs.start)) }
	e := r.index[k]
	ids := map[string]bool{}
	var from, to time.Time
	if e == nil {
		fmt.Fprintf(&b, "  %s was never published by a client\n", k)
	} else {
		fmt.Fprintf(&b, "  publish: client %s → %s %s (topic %s)", e.client, e.sidecar, e.path, e.topic)
		if e.idemKey != "" {
			fmt.Fprintf(&b, ", Idempotency-Key %s", e.idemKey)
		}
		fmt.Fprintf(&b, "\n    body %s\n", clip(e.body))
		for i, a := range e.attempts {
			fmt.Fprintf(&b, "    attempt %d: sent %s answered %s: %s", i+1, at(a.sent), at(a.done), a.short())
			if a.note != "" && a.outcome == acked {
				fmt.Fprintf(&b, " (%s)", a.note)
			}
			b.WriteString("\n")
			if a.id != "" {
				ids[a.id] = true
			}
		}
		from = firstSent(e)
		to = from
	}
	var reqs []request
	for _, rs := range obs.requests {
		for _, q := range rs {
			if qk, ok := parseBody(q.body); ok && qk == k {
				reqs = append(reqs, q)
			}
		}
	}
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].at.Before(reqs[j].at) })
	if len(reqs) == 0 {
		b.WriteString("  deliveries: none\n")
	} else {
		b.WriteString("  deliveries:\n")
	}
	for _, q := range reqs {
		fmt.Fprintf(&b, "    %s %-8s webhook-id %s attempt %s → %d%s\n", at(q.at), q.rx, q.id, q.attempt, q.status, map[bool]string{true: " signature: " + q.sigErr}[q.sigErr != ""])
		ids[q.id] = true
		if from.IsZero() || q.at.Before(from) {
			from = q.at
		}
		if q.at.After(to) {
			to = q.at
		}
	}
	for _, set := range []struct {
		name    string
		entries []entry
	}{{"stream", obs.streams}, {"DLQ", obs.dlq}} {
		var lines []string
		for _, s := range set.entries {
			if sk, ok := parseBody(s.data); ok && sk == k {
				line := fmt.Sprintf("    %s %s event %s", s.topic, s.streamID, s.id)
				if s.group != "" {
					line += fmt.Sprintf(" group %s attempts %s original %s error %q", s.group, s.attempts, s.originalID, s.errText)
				}
				lines = append(lines, line)
				ids[s.id] = true
			}
		}
		if len(lines) == 0 {
			fmt.Fprintf(&b, "  %s at the end: not there\n", set.name)
		} else {
			fmt.Fprintf(&b, "  %s at the end:\n%s\n", set.name, strings.Join(lines, "\n"))
		}
	}
	if !from.IsZero() {
		near := overlapping(obs.timeline, from.Add(-10*time.Second), to.Add(10*time.Second))
		if len(near) > 0 {
			b.WriteString("  faults from 10 s before to 10 s after:\n")
			b.WriteString(indent(formatTimeline(obs.start, near), "  "))
		}
	}
	if lines := grepLogs(obs.logDir, sortedKeys(ids), 40); len(lines) > 0 {
		fmt.Fprintf(&b, "  sidecar log lines naming its ids (%s):\n", strings.Join(sortedKeys(ids), ", "))
		for _, l := range lines {
			fmt.Fprintf(&b, "    %s\n", l)
		}
	}
	return b.String()
}

// grepLogs returns up to limit lines of the sidecars' logs that contain
// one of ids, prefixed with the log's name.
func grepLogs(dir string, ids []string, limit int) []string {
	if dir == "" || len(ids) == 0 {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	var out []string
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() && len(out) < limit {
			line := sc.Text()
			for _, id := range ids {
				if id != "" && strings.Contains(line, id) {
					out = append(out, strings.TrimSuffix(filepath.Base(path), ".log")+": "+line)
					break
				}
			}
		}
		f.Close()
	}
	return out
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}
