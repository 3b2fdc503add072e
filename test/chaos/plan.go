package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// The schedule is drawn from the seed before anything runs, so the same
// seed, topology and duration give the same faults in the same order with
// the same targets, holds and parameters. Only when they happen can drift:
// a heal that waits for Redis (a Sentinel resync) takes as long as it takes,
// and the lane's later faults start that much later.

// spec is one planned fault: everything the seed decides.
type spec struct {
	lane   string
	n      int           // position within its lane, from 1
	at     time.Duration // planned start, from the start of the load
	kind   string
	target string
	hold   time.Duration // how long the fault stays before it is healed
	param  uint64        // a kind's own choice (latency, status, bytes left free)
}

func (s spec) String() string {
	return fmt.Sprintf("%s#%d %s(%s) hold %v", s.lane, s.n, s.kind, s.target, s.hold.Round(10*time.Millisecond))
}

// healFunc undoes a fault and says what it did.
type healFunc func(ctx context.Context) (string, error)

// faultKind is one kind of fault a lane can apply.
type faultKind struct {
	name    string
	weight  int
	minHold time.Duration
	maxHold time.Duration
	targets []string // one is drawn per fault
	// apply starts the fault and returns how to heal it; on error the
	// returned heal (if any) still runs, to undo a partial fault.
	apply func(ctx context.Context, s spec) (detail string, heal healFunc, err error)
}

// lane is a sequence of faults, one at a time: the nemesis runs two lanes,
// Redis and the rest, so at most two faults are active at once and never
// two Redis faults (a harness operation must finish before the next).
type lane struct {
	name   string
	minGap time.Duration
	maxGap time.Duration
	kinds  []faultKind
}

// makePlan draws each lane's faults for a fault window of length window.
func makePlan(seed uint64, lanes []lane, window time.Duration) [][]spec {
	plan := make([][]spec, len(lanes))
	for i, l := range lanes {
		if len(l.kinds) == 0 {
			continue
		}
		rng := rand.New(rand.NewPCG(seed, uint64(i)+1))
		total := 0
		for _, k := range l.kinds {
			total += k.weight
		}
		at := between(rng, l.minGap, l.maxGap)
		for n := 1; at < window; n++ {
			k := pickKind(rng, l.kinds, total)
			s := spec{lane: l.name, n: n, at: at, kind: k.name, hold: between(rng, k.minHold, k.maxHold), param: rng.Uint64()}
			if len(k.targets) > 0 {
				s.target = k.targets[rng.IntN(len(k.targets))]
			}
			plan[i] = append(plan[i], s)
			at += s.hold + between(rng, l.minGap, l.maxGap)
		}
	}
	return plan
}

func pickKind(rng *rand.Rand, kinds []faultKind, total int) faultKind {
	x := rng.IntN(total)
	for _, k := range kinds {
		if x < k.weight {
			return k
		}
		x -= k.weight
	}
	return kinds[len(kinds)-1]
}

// between draws a duration uniformly from [lo, hi], in whole milliseconds.
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64((hi-lo)/time.Millisecond)+1))*time.Millisecond
}

// describePlan lists the planned faults, one line each.
func describePlan(plan [][]spec) string {
	var b strings.Builder
	for _, ls := range plan {
		for _, s := range ls {
			fmt.Fprintf(&b, "  %-6s #%-3d at %8s  %-22s %-10s hold %v\n", s.lane, s.n, fmtDur(s.at), s.kind, s.target, s.hold.Round(10*time.Millisecond))
		}
	}
	return b.String()
}

// fmtDur prints an offset from the start of the run as +12.345s.
func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%+.3fs", d.Seconds())
}
