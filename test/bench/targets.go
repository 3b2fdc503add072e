package main

import (
	"fmt"
	"strings"
)

// measured is what the phases hand to the targets table.
type measured struct {
	failed  map[string]bool
	publish map[int]float64 // sidecar publish/s ÷ plain HTTP/s, by clients
	bulk    []bulkFigure
	// batched end to end: delivered events/s and the plain-HTTP rate at 64
	batchRate, batchPlain float64
	keyC1, keyC16         float64 // per-key delivered/s at concurrency 1 and 16
	cluster               *clusterFigure
	checks                []check
}

type bulkFigure struct {
	format  string
	clients int
	events  float64 // events/s
	plain   float64 // plain HTTP requests/s at the same clients
}

type clusterFigure struct{ lost, ooo int64 }

// check is one phase's correctness: ooo < 0 when the phase does not
// measure order.
type check struct {
	phase          string
	lost, dup, ooo int64
}

func newMeasured() *measured {
	return &measured{failed: map[string]bool{}, publish: map[int]float64{}}
}

func (m *measured) check(phase string, lost, dup, ooo int64) {
	m.checks = append(m.checks, check{phase, lost, dup, ooo})
}

// targets prints the closing table: each target, what was measured, met or
// missed ("not run" when its phase was not selected or failed).
func (b *bench) targets() {
	m := b.m
	b.printf("## Targets\n\n| target | measured | result |\n|---|---|---|\n")
	row := func(target, measured string, met bool) {
		verdict := "missed"
		if met {
			verdict = "met"
		}
		b.printf("| %s | %s | %s |\n", target, measured, verdict)
	}
	notRun := func(target, phase string) {
		why := "not run"
		if m.failed[phase] {
			why = "phase failed"
		}
		b.printf("| %s | %s | — |\n", target, why)
	}
	for _, c := range []int{16, 64} {
		t := fmt.Sprintf("single publish ≥ 60 %% of plain HTTP at c=%d", c)
		if r, ok := m.publish[c]; ok {
			row(t, fmt.Sprintf("%.0f %%", 100*r), r >= 0.6)
		} else {
			notRun(t, "publish")
		}
	}
	if len(m.bulk) == 0 {
		notRun("bulk publish events/s ≥ 5× plain HTTP requests/s", "bulk")
	}
	for _, f := range m.bulk {
		row(fmt.Sprintf("bulk publish (%s, c=%d) events/s ≥ 5× plain HTTP", f.format, f.clients),
			fmt.Sprintf("%.0f events/s = %.1f× %.0f/s", f.events, f.events/f.plain, f.plain), f.events >= 5*f.plain)
	}
	if m.batchPlain > 0 {
		row("batched end to end delivered/s ≥ plain HTTP (c=64)",
			fmt.Sprintf("%.0f/s = %.1f× %.0f/s", m.batchRate, m.batchRate/m.batchPlain, m.batchPlain), m.batchRate >= m.batchPlain)
	} else {
		notRun("batched end to end delivered/s ≥ plain HTTP (c=64)", "batch")
	}
	if m.keyC1 > 0 {
		row("per-key ordering: concurrency 16 ≥ 8× concurrency 1",
			fmt.Sprintf("%.0f/s vs %.0f/s = %.1f×", m.keyC16, m.keyC1, m.keyC16/m.keyC1), m.keyC16 >= 8*m.keyC1)
	} else {
		notRun("per-key ordering: concurrency 16 ≥ 8× concurrency 1", "key")
	}
	if c := m.cluster; c != nil {
		row("partitioned topic on Cluster, master killed: 0 lost, 0 out of order per key",
			fmt.Sprintf("%d lost, %d out of order", c.lost, c.ooo), c.lost == 0 && c.ooo == 0)
	} else {
		notRun("partitioned topic on Cluster, master killed: 0 lost, 0 out of order per key", "cluster")
	}
	if len(m.checks) == 0 {
		b.printf("| correctness: 0 lost, 0 duplicated, 0 out of order in every phase | no phase counted | — |\n\n")
		return
	}
	var lost, dup, ooo int64
	var bad []string
	for _, c := range m.checks {
		lost, dup = lost+c.lost, dup+c.dup
		o := max(c.ooo, 0)
		ooo += o
		if c.lost != 0 || c.dup != 0 || o != 0 {
			bad = append(bad, fmt.Sprintf("%s: %d/%d/%d", c.phase, c.lost, c.dup, o))
		}
	}
	measured := fmt.Sprintf("%d lost, %d duplicated, %d out of order over %d runs", lost, dup, ooo, len(m.checks))
	if len(bad) > 0 {
		measured += " (lost/dup/ooo: " + strings.Join(bad, "; ") + ")"
	}
	row("correctness: 0 lost, 0 duplicated, 0 out of order in every phase", measured, len(bad) == 0)
	b.printf("\n")
}
