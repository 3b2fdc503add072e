package main

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// The second lane's faults: sidecar processes, webhooks and the spool disk.

func (f *fleet) faults() []faultKind {
	all := []string{"pubA", "pubB", "cal1", "cal2", "audit"}
	rxs := []string{"cal1-rx", "cal2-rx", "audit-rx"}
	kinds := []faultKind{
		{name: "sidecar-kill", weight: 4, minHold: 500 * time.Millisecond, maxHold: 5 * time.Second, targets: all,
			apply: func(_ context.Context, s spec) (string, healFunc, error) {
				p := f.byName[s.target]
				if !p.kill() {
					return "not running", nil, nil
				}
				return "SIGKILL", f.restart(p), nil
			}},
		{name: "sidecar-term", weight: 2, minHold: 0, maxHold: 3 * time.Second, targets: all,
			apply: func(_ context.Context, s spec) (string, healFunc, error) {
				p := f.byName[s.target]
				start := time.Now()
				ran, err := p.term(shutdownGrace + 10*time.Second)
				if !ran {
					return "not running", nil, nil
				}
				if err != nil {
					p.issue(fmt.Sprintf("%s at %s: %v", p.name, p.now(), err))
				}
				return fmt.Sprintf("SIGTERM, exited in %v", time.Since(start).Round(time.Millisecond)), f.restart(p), err
			}},
		{name: "sidecar-pause", weight: 2, minHold: 500 * time.Millisecond, maxHold: 7 * time.Second, targets: all,
			apply: func(_ context.Context, s spec) (string, healFunc, error) { return f.pause(f.byName[s.target]) }},
		// Past the claim timeout, so the other replica claims what the
		// stopped one holds — and the stopped one, continued, still holds it.
		{name: "replica-pause", weight: 2, minHold: claimTimeout + time.Second, maxHold: claimTimeout + 5*time.Second, targets: []string{"cal1", "cal2"},
			apply: func(_ context.Context, s spec) (string, healFunc, error) { return f.pause(f.byName[s.target]) }},
		{name: "webhook-down", weight: 2, minHold: time.Second, maxHold: 8 * time.Second, targets: rxs,
			apply: func(_ context.Context, s spec) (string, healFunc, error) {
				rc := f.rxByName[s.target]
				rc.goDown()
				return "listener closed", func(ctx context.Context) (string, error) { return "listening again", rc.up(ctx) }, nil
			}},
		{name: "webhook-slow", weight: 2, minHold: 2 * time.Second, maxHold: 10 * time.Second, targets: rxs,
			apply: func(_ context.Context, s spec) (string, healFunc, error) {
				rc := f.rxByName[s.target]
				latency := 20*time.Millisecond + time.Duration(s.param%280)*time.Millisecond
				rc.set(slow, latency, 0)
				return fmt.Sprintf("answers after %v", latency), f.normal(rc), nil
			}},
		{name: "webhook-fail", weight: 2, minHold: time.Second, maxHold: 8 * time.Second, targets: rxs,
			apply: func(_ context.Context, s spec) (string, healFunc, error) {
				rc := f.rxByName[s.target]
				status := []int{http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusTooManyRequests, http.StatusRequestTimeout}[s.param%4]
				rc.set(failing, 0, status)
				return fmt.Sprintf("answers %d", status), f.normal(rc), nil
			}},
		// Short: every event the receiver is offered meanwhile is a
		// legitimate dead letter.
		{name: "webhook-redirect", weight: 1, minHold: 300 * time.Millisecond, maxHold: 1500 * time.Millisecond, targets: rxs,
			apply: func(_ context.Context, s spec) (string, healFunc, error) {
				rc := f.rxByName[s.target]
				status := []int{http.StatusFound, http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect}[s.param%4]
				rc.set(redirect, 0, status)
				return fmt.Sprintf("answers %d to the trap", status), f.normal(rc), nil
			}},
	}
	if f.spool.mounted {
		kinds = append(kinds, faultKind{name: "spool-fill", weight: 2, minHold: 3 * time.Second, maxHold: 15 * time.Second, targets: []string{"pubA"},
			apply: func(_ context.Context, s spec) (string, healFunc, error) {
				leave := int64(s.param % (64 << 10)) // a few hundred events' room at most
				wrote, err := f.spool.fill(leave)
				heal := func(context.Context) (string, error) { return "ballast removed", f.spool.empty() }
				free, _ := f.spool.free()
				return fmt.Sprintf("ballast of %d KiB, %d KiB free", wrote>>10, free>>10), heal, err
			}})
	}
	return kinds
}

// restart heals a stopped sidecar by starting it again (same spool, port,
// configuration), retrying for a minute: a sidecar that will not come back
// is itself a finding.
func (f *fleet) restart(p *proc) healFunc {
	return func(ctx context.Context) (string, error) {
		start := time.Now()
		if err := p.ensureUp(ctx, time.Minute); err != nil {
			p.issue(fmt.Sprintf("%s did not come back at %s: %v; log tail:\n%s", p.name, p.now(), err, logTail(p.logPath, 15)))
			return "", err
		}
		return fmt.Sprintf("restarted in %v", time.Since(start).Round(time.Millisecond)), nil
	}
}

func (f *fleet) pause(p *proc) (string, healFunc, error) {
	if !p.stop() {
		return "not running", nil, nil
	}
	return "SIGSTOP", func(context.Context) (string, error) {
		if !p.cont() {
			return "gone meanwhile", nil
		}
		return "SIGCONT", nil
	}, nil
}

func (f *fleet) normal(rc *receiver) healFunc {
	return func(context.Context) (string, error) { rc.set(normal, 0, 0); return "normal", nil }
}
