package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
)

// faultRecord is what became of one planned fault.
type faultRecord struct {
	spec
	applied    time.Time // apply returned (for a failover: the new master is in place)
	began      time.Time // apply was called
	healBegan  time.Time
	healed     time.Time // zero while active
	detail     string
	healDetail string
	err        string // apply or heal failed (first line)
	errFull    string // the whole message: a harness failure carries the nodes' logs
	harness    bool   // the failure came from the Redis harness
	healer     healFunc
}

// nemesis runs the planned faults of each lane and keeps the timeline.
type nemesis struct {
	start  time.Time
	window time.Duration // no fault starts after start+window; holds are cut there
	kinds  map[string]faultKind
	logf   func(format string, args ...any)

	mu      sync.Mutex
	records []*faultRecord
}

func newNemesis(start time.Time, window time.Duration, lanes []lane, logf func(string, ...any)) *nemesis {
	n := &nemesis{start: start, window: window, kinds: map[string]faultKind{}, logf: logf}
	for _, l := range lanes {
		for _, k := range l.kinds {
			n.kinds[l.name+"/"+k.name] = k
		}
	}
	return n
}

// runLane applies a lane's faults in order until the window closes or ctx
// ends, healing each before the next. A fault the Redis harness could not
// carry out ends the lane: the topology's state is then unknown, and more
// faults on top would say nothing about the sidecar.
func (n *nemesis) runLane(ctx context.Context, specs []spec) {
	end := n.start.Add(n.window)
	for _, s := range specs {
		if !backoff.Sleep(ctx, time.Until(n.start.Add(s.at))) || !time.Now().Before(end) {
			return
		}
		rec := n.apply(ctx, s)
		if rec.healed.IsZero() {
			if rec.err == "" { // a fault that failed half-way is undone at once
				backoff.Sleep(ctx, min(s.hold, time.Until(end)))
			}
			n.heal(ctx, rec)
		}
		if rec.harness {
			n.logf("nemesis: lane %s stops after a harness failure: %s", s.lane, rec.err)
			return
		}
	}
}

func (n *nemesis) apply(ctx context.Context, s spec) *faultRecord {
	k := n.kinds[s.lane+"/"+s.kind]
	rec := &faultRecord{spec: s, began: time.Now()}
	n.mu.Lock()
	n.records = append(n.records, rec)
	n.mu.Unlock()
	var (
		detail string
		heal   healFunc
		err    error
	)
	if herr := guard(func() { detail, heal, err = k.apply(ctx, s) }); herr != nil {
		err = herr
		rec.harness = true
	}
	n.mu.Lock()
	rec.applied, rec.detail = time.Now(), detail
	if err != nil {
		rec.setErr("apply", err)
	}
	n.mu.Unlock()
	n.logf("fault %s %s(%s) %s%s", fmtDur(rec.began.Sub(n.start)), s.kind, s.target, detail, errSuffix(err))
	if heal == nil {
		n.mu.Lock()
		rec.healBegan, rec.healed = rec.applied, rec.applied
		n.mu.Unlock()
		return rec
	}
	rec.healer = heal
	return rec
}

// heal undoes rec's fault. It runs even when ctx has ended (Ctrl-C): a
// stopped Redis or a full disk must not outlive the run.
func (n *nemesis) heal(ctx context.Context, rec *faultRecord) {
	hctx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
	}
	n.mu.Lock()
	rec.healBegan = time.Now()
	n.mu.Unlock()
	var (
		detail string
		err    error
	)
	if herr := guard(func() { detail, err = rec.healer(hctx) }); herr != nil {
		err = herr
		rec.harness = true
	}
	n.mu.Lock()
	rec.healed, rec.healDetail = time.Now(), detail
	if err != nil {
		rec.setErr("heal", err)
	}
	n.mu.Unlock()
	n.logf("heal  %s %s(%s) %s%s", fmtDur(rec.healed.Sub(n.start)), rec.kind, rec.target, detail, errSuffix(err))
}

// setErr records a failure of stage (apply, heal); the caller holds n.mu.
func (r *faultRecord) setErr(stage string, err error) {
	msg := err.Error()
	first, _, _ := strings.Cut(msg, "\n")
	r.err = strings.TrimPrefix(r.err+"; "+stage+": "+first, "; ")
	if first != msg {
		r.errFull = strings.TrimPrefix(r.errFull+"\n"+stage+": "+msg, "\n")
	}
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	first, _, _ := strings.Cut(err.Error(), "\n")
	return " — ERROR: " + first
}

// timeline is a copy of the records, in order of application.
func (n *nemesis) timeline() []faultRecord {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]faultRecord, len(n.records))
	for i, r := range n.records {
		out[i] = *r
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].began.Before(out[j].began) })
	return out
}

// active names the faults not yet healed.
func (n *nemesis) active() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, r := range n.records {
		if r.healed.IsZero() {
			out = append(out, fmt.Sprintf("%s(%s)", r.kind, r.target))
		}
	}
	return out
}

// formatTimeline prints the fault timeline, one fault per line.
func formatTimeline(start time.Time, recs []faultRecord) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %-6s %-4s %-11s %-11s %-11s %-22s %-10s %s\n", "lane", "#", "planned", "applied", "healed", "fault", "target", "what happened")
	for _, r := range recs {
		healed := "never"
		if !r.healed.IsZero() {
			healed = fmtDur(r.healed.Sub(start))
		}
		what := r.detail
		if r.healDetail != "" {
			what += " → " + r.healDetail
		}
		if r.err != "" {
			what += " — ERROR: " + r.err
		}
		fmt.Fprintf(&b, "  %-6s %-4d %-11s %-11s %-11s %-22s %-10s %s\n", r.lane, r.n, fmtDur(r.at), fmtDur(r.began.Sub(start)), healed, r.kind, r.target, what)
	}
	return b.String()
}

// overlapping returns the faults active at some moment of [from, to].
func overlapping(recs []faultRecord, from, to time.Time) []faultRecord {
	var out []faultRecord
	for _, r := range recs {
		end := r.healed
		if end.IsZero() {
			end = to
		}
		if !r.began.After(to) && !end.Before(from) {
			out = append(out, r)
		}
	}
	return out
}
