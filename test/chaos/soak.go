package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/redis/go-redis/v9"
)

// soak is one run: setup, load and nemesis, settle, check, cleanup.
type soak struct {
	opts      options
	out, errw io.Writer

	t0   atomic.Int64 // unix nanos when the load started: every printed offset is from here
	work string
	h    *harnessT
	topo topology
	trap *trap
	fl   *fleet

	issueMu sync.Mutex
	issues  []issue
}

func (s *soak) since(t time.Time) time.Duration { return t.Sub(time.Unix(0, s.t0.Load())) }

func (s *soak) logf(format string, args ...any) {
	if s.opts.verbose {
		fmt.Fprintf(s.errw, "chaos %s "+format+"\n", append([]any{fmtDur(s.since(time.Now()))}, args...)...)
	}
}

func (s *soak) issue(what string) {
	s.issueMu.Lock()
	s.issues = append(s.issues, issue{at: time.Now(), what: what})
	s.issueMu.Unlock()
	s.logf("PROCESS ISSUE: %s", what)
}

// quietPeriod is the end of the load with no fault, before settling.
func quietPeriod(d time.Duration) time.Duration { return min(max(d/6, 10*time.Second), 30*time.Second) }

func (s *soak) replay() string {
	return fmt.Sprintf("go run ./test/chaos --topology %s --seed %d --duration %v --rate %d --clients %d --idempotent %g",
		s.opts.topology, s.opts.seed, s.opts.duration, s.opts.rate, s.opts.clients, s.opts.idemShare)
}

// lanes are the nemesis's two lanes: Redis faults, and the rest.
func lanes(topo topology, fl *fleet) []lane {
	return []lane{
		{name: "redis", minGap: 2 * time.Second, maxGap: 8 * time.Second, kinds: topo.faults()},
		{name: "procs", minGap: time.Second, maxGap: 5 * time.Second, kinds: fl.faults()},
	}
}

// printPlan prints the schedule without running anything: the fault kinds
// of an unstarted topology and fleet are the same as of a started one.
func (s *soak) printPlan() error {
	var topo topology
	switch s.opts.topology {
	case "standalone":
		topo = &standalone{}
	case "sentinel":
		topo = &sentinelSet{}
	case "cluster":
		topo = &clusterSet{}
	default:
		return fmt.Errorf("--topology %q: want standalone, sentinel or cluster", s.opts.topology)
	}
	fl := &fleet{spool: &spoolDisk{mounted: os.Geteuid() == 0}}
	window := s.opts.duration - quietPeriod(s.opts.duration)
	fmt.Fprintf(s.out, "seed %d, topology %s, fault window %v (spool-fill scheduled: %v):\n%s",
		s.opts.seed, s.opts.topology, window, fl.spool.mounted, describePlan(makePlan(s.opts.seed, lanes(topo, fl), window)))
	return nil
}

func (s *soak) run(ctx context.Context) (err error) {
	o := s.opts
	if o.planOnly {
		return s.printPlan()
	}
	s.t0.Store(time.Now().UnixNano())
	if s.work, err = os.MkdirTemp("", "sidecar-chaos-"); err != nil {
		return err
	}
	keep := o.keep
	defer func() {
		s.teardown()
		if keep {
			return
		}
		if rerr := os.RemoveAll(s.work); rerr != nil {
			fmt.Fprintf(s.errw, "chaos: removing %s: %v\n", s.work, rerr)
		}
	}()
	fmt.Fprintf(s.errw, "chaos: seed %d, topology %s, duration %v, rate %d/s; work dir %s\n", o.seed, o.topology, o.duration, o.rate, s.work)
	spoolNote, err := s.setup(ctx)
	if err != nil {
		return err
	}
	load, nem := s.drive(ctx)

	interrupted := ctx.Err() != nil
	settle, settled := "skipped (interrupted)", true
	if !interrupted {
		settle, settled = s.settle(ctx, load)
	}
	obs := s.observe(ctx, load, nem)
	obs.unsettled, obs.settleState = !settled, settle
	rep := check(obs, groups())
	if len(rep.violations) > 0 {
		keep = true // the logs and Redis data are what a diagnosis starts from
	}
	rep.write(s.out, obs, summary{opts: o, replay: s.replay(), redis: s.topo.describe(), spoolNote: spoolNote,
		settle: settle, workDir: s.work, kept: keep})
	switch {
	case interrupted:
		return errInterrupted
	case len(rep.violations) > 0:
		return errViolations
	}
	if h := harnessErrors(obs.timeline); h != "" {
		return fmt.Errorf("no violation, but the Redis harness failed, so the run is inconclusive: %s", h)
	}
	return nil
}

// setup builds the sidecar and starts Redis, the receivers and the
// sidecars; it returns whether the spool-fill fault can run, for the report.
func (s *soak) setup(ctx context.Context) (spoolNote string, err error) {
	o := s.opts
	s.h = newHarnessT(s.work, s.logf)
	// go-redis logs to stderr itself (the harness's failover client reports
	// every master switch): fold it into -v.
	redis.SetLogger(goRedisLogger{s.logf})
	bin := o.sidecarBin
	if bin == "" {
		if bin, err = buildSidecar(ctx, s.work, o.race); err != nil {
			return "", err
		}
	}
	if s.topo, err = startTopology(ctx, o.topology, s.h); err != nil {
		return "", fmt.Errorf("starting %s Redis: %w", o.topology, err)
	}
	s.logf("redis: %s", s.topo.describe())
	if s.trap, err = startTrap(); err != nil {
		return "", err
	}
	s.fl, err = newFleet(fleetConfig{bin: bin, dir: s.work, redisURL: s.topo.url(), logLevel: o.logLevel,
		topics: s.topo.topics(), clock: s.since, trapURL: s.trap.url(), issue: s.issue})
	if err != nil {
		return "", err
	}
	spoolNote = "on: pubA's spool is a 4 MiB tmpfs"
	if !s.fl.spool.mounted {
		spoolNote = "off (" + s.fl.spool.why + ")"
		fmt.Fprintf(s.errw, "chaos: the spool-fill fault is not scheduled: %s\n", s.fl.spool.why)
	}
	if err := s.fl.start(ctx); err != nil {
		return "", fmt.Errorf("starting the sidecars: %w", err)
	}
	return spoolNote, nil
}

// drive runs the load for the duration and the nemesis's lanes beside
// it, and returns once the load has stopped and every fault is healed.
func (s *soak) drive(ctx context.Context) (*loadGen, *nemesis) {
	o := s.opts
	lanes := lanes(s.topo, s.fl)
	window := o.duration - quietPeriod(o.duration)
	plan := makePlan(o.seed, lanes, window)
	s.logf("plan (fault window %v):\n%s", window, describePlan(plan))

	start := time.Now()
	s.t0.Store(start.UnixNano())
	load := newLoadGen(o.seed, o.rate, o.clients, o.idemShare, fmt.Sprintf("%d-%d", o.seed, start.UnixNano()),
		[]*proc{s.fl.byName["pubA"], s.fl.byName["pubB"]}, s.topo.topics(), s.fl.routed)
	nem := newNemesis(start, window, lanes, s.logf)
	lctx, stopLoad := context.WithCancel(ctx)
	var loadDone, lanesDone sync.WaitGroup
	loadDone.Go(func() { load.run(lctx) })
	for _, specs := range plan {
		lanesDone.Go(func() { nem.runLane(ctx, specs) })
	}
	stopProgress := s.progress(ctx, load, nem)
	backoff.Sleep(ctx, o.duration) // the schedule is time-based; this is its end, not a wait for a condition
	stopLoad()
	loadDone.Wait()
	s.logf("load stopped; waiting for the nemesis to heal its last faults")
	lanesDone.Wait()
	stopProgress()
	return load, nem
}

type goRedisLogger struct{ logf func(string, ...any) }

func (l goRedisLogger) Printf(_ context.Context, format string, args ...any) {
	l.logf("go-redis: "+format, args...)
}

// groups are the consumer groups the checker judges.
func groups() []groupDef {
	return []groupDef{
		{name: groupCalendar, receivers: []string{"cal1-rx", "cal2-rx"}},
		{name: groupAudit, receivers: []string{"audit-rx"}, ordered: true},
	}
}

func harnessErrors(recs []faultRecord) string {
	var out []string
	for _, r := range recs {
		if r.harness {
			out = append(out, fmt.Sprintf("%s(%s): %s", r.kind, r.target, r.err))
		}
	}
	return strings.Join(out, "; ")
}

// progress logs a line every 10 s (with -v); the returned func stops it.
func (s *soak) progress(ctx context.Context, load *loadGen, nem *nemesis) func() {
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for backoff.Sleep(pctx, 10*time.Second) {
			evs := load.snapshot()
			acked := 0
			for i := range evs {
				if evs[i].acked() {
					acked++
				}
			}
			var got []string
			for _, rc := range s.fl.receivers {
				got = append(got, fmt.Sprintf("%s %d", rc.name, len(rc.requests())))
			}
			s.logf("progress: published %d, acked %d; requests %s; active faults %v", len(evs), acked, strings.Join(got, ", "), nem.active())
		}
	})
	return func() { cancel(); wg.Wait() }
}

// settle heals what is left and waits until every acknowledged event is
// delivered or explained in every group, the groups have nothing pending
// or unread, and the publishers' spools are empty.
func (s *soak) settle(ctx context.Context, load *loadGen) (string, bool) {
	for _, rc := range s.fl.receivers {
		rc.set(normal, 0, 0)
		if err := rc.up(ctx); err != nil {
			return err.Error(), false
		}
	}
	if err := s.fl.spool.empty(); err != nil {
		return "removing the ballast: " + err.Error(), false
	}
	start := time.Now()
	deadline := start.Add(s.opts.settle)
	rdb := s.topo.client()
	events := load.snapshot()
	var state string
	for {
		for _, p := range s.fl.procs {
			if err := p.ensureUp(ctx, 30*time.Second); err != nil {
				s.issue(fmt.Sprintf("%s could not be brought back to settle: %v", p.name, err))
			}
		}
		var waiting []string
		for _, name := range []string{"pubA", "pubB"} {
			st, err := readSpool(s.fl.byName[name].addr)
			if err != nil || st.Spooling || st.Spool.Events > 0 {
				waiting = append(waiting, fmt.Sprintf("%s spool: %d events (spooling %v) %v", name, st.Spool.Events, st.Spooling, errOrNil(err)))
			}
		}
		gs := readGroups(ctx, rdb, s.topo.topics(), []string{groupCalendar, groupAudit})
		for _, g := range gs {
			if !g.caughtUp() {
				waiting = append(waiting, g.String())
			}
		}
		dlq := map[string]map[evKey]bool{}
		if d, err := readDLQ(ctx, rdb, s.topo.topics()); err == nil {
			for _, e := range d {
				if k, ok := parseBody(e.data); ok {
					if dlq[e.group] == nil {
						dlq[e.group] = map[evKey]bool{}
					}
					dlq[e.group][k] = true
				}
			}
		}
		for _, g := range groups() {
			got := map[evKey]bool{}
			for _, rx := range g.receivers {
				for _, q := range s.fl.rxByName[rx].requests() {
					if q.status/100 == 2 && q.evOK {
						got[q.ev] = true
					}
				}
			}
			missing := 0
			for i := range events {
				k := evKey{events[i].key, events[i].seq}
				if events[i].acked() && !got[k] && !dlq[g.name][k] {
					missing++
				}
			}
			if missing > 0 {
				waiting = append(waiting, fmt.Sprintf("group %s: %d acknowledged events not delivered", g.name, missing))
			}
		}
		state = strings.Join(waiting, "; ")
		if len(waiting) == 0 {
			return fmt.Sprintf("settled %v after the load", time.Since(start).Round(time.Millisecond)), true
		}
		if time.Now().After(deadline) || !backoff.Sleep(ctx, 500*time.Millisecond) {
			return fmt.Sprintf("NOT settled within %v: %s", s.opts.settle, state), false
		}
		s.logf("settling: %s", state)
	}
}

func errOrNil(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// observe gathers what the checker judges.
func (s *soak) observe(ctx context.Context, load *loadGen, nem *nemesis) *observation {
	obs := &observation{start: time.Unix(0, s.t0.Load()), topics: s.topo.topics(), events: load.snapshot(),
		requests: map[string][]request{}, timeline: nem.timeline(), logDir: filepath.Join(s.work, "logs")}
	for _, rc := range s.fl.receivers {
		obs.requests[rc.name] = rc.requests()
	}
	rctx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
	}
	var err error
	if obs.streams, obs.dlq, err = readRedis(rctx, s.topo.client(), s.topo.topics()); err != nil {
		obs.readErr = err.Error()
	}
	obs.trapHits = s.trap.hits.Load()
	s.trap.mu.Lock()
	obs.trapLast = s.trap.last
	s.trap.mu.Unlock()
	s.issueMu.Lock()
	obs.issues = append([]issue(nil), s.issues...)
	s.issueMu.Unlock()
	return obs
}

// teardown stops everything the run started, in dependency order: the
// sidecars before the disk they spool to and the Redis they use.
func (s *soak) teardown() {
	if s.fl != nil {
		s.fl.stop()
		if err := s.fl.spool.unmount(); err != nil {
			fmt.Fprintf(s.errw, "chaos: unmounting %s: %v\n", s.fl.spool.dir, err)
		}
	}
	if s.trap != nil {
		_ = s.trap.srv.Close()
	}
	if s.topo != nil {
		s.topo.close()
	}
	if s.h != nil {
		s.h.cleanup()
	}
}

// buildSidecar builds ./cmd/sidecar of the module the program runs in.
func buildSidecar(ctx context.Context, dir string, race bool) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("finding the module to build the sidecar from (run inside the repository, or pass --sidecar-bin): %v", err)
	}
	bin := filepath.Join(dir, "sidecar")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/sidecar")...)
	cmd.Dir = filepath.Dir(gomod)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sidecar: %v\n%s", err, b)
	}
	return bin, nil
}
