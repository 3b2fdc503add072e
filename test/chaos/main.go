// Command chaos is a soak test of sidecar under a randomized, seeded fault
// schedule, judged by a total-queue checker (the method Jepsen uses for
// queues): every acknowledged publish must reach every consumer group, no
// refused one may, and order holds where the configuration promises it.
//
//	clients ──publish──▶ pubA, pubB ──▶ Redis (standalone AOF | Sentinel | Cluster) ──▶ cal1, cal2, audit ──▶ receivers
//	   │ every answer                        ▲ nemesis: kill/stop/restart/failover,   │ every request
//	   │                                     │ sidecar kill/term/pause, webhook       │ DLQ and streams
//	   └────────────────────────────────▶ checker ◀── down/slow/5xx/3xx, spool disk full ◀──┘
//
// Usage:
//
//	go run ./test/chaos [--topology standalone|sentinel|cluster] [--duration 2m] [--seed N] [--rate 120] [--keep] [-v]
//
// The seed decides the fault schedule (kinds, targets, holds, order), so a
// run that fails is replayed with the --seed, --topology and --duration it
// prints. Exit status: 0 no violation, 1 violations, 2 the run could not be
// carried out (setup or Redis harness failure), 130 interrupted.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	finished := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			// The first Ctrl-C heals and cleans up; a Redis harness operation
			// under way (a Sentinel resync) can take up to 30 s to return.
			fmt.Fprintln(os.Stderr, "chaos: stopping: healing the faults under way and cleaning up (Ctrl-C again exits at once, leaving processes behind)")
			stop() // a second Ctrl-C gets Go's default: exit
		case <-finished:
		}
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	close(finished)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errViolations):
		os.Exit(1)
	case errors.Is(err, errInterrupted):
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(130)
	default:
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
}

var (
	// errViolations: the checker found broken promises (the report says which).
	errViolations = errors.New("violations found")
	// errInterrupted: the run was stopped (Ctrl-C) before it could be judged.
	errInterrupted = errors.New("interrupted")
)

// options are the command line.
type options struct {
	topology   string
	duration   time.Duration
	seed       uint64
	rate       int
	clients    int
	idemShare  float64
	settle     time.Duration
	keep       bool
	verbose    bool
	sidecarBin string
	race       bool
	logLevel   string
	planOnly   bool
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.topology, "topology", "standalone", "Redis topology: standalone (AOF, fsync always), sentinel or cluster")
	fs.DurationVar(&o.duration, "duration", 2*time.Minute, "how long the load runs; faults stop a quiet period before its end")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the fault schedule (default: random, printed)")
	fs.IntVar(&o.rate, "rate", 120, "publishes per second, all clients together")
	fs.IntVar(&o.clients, "clients", 8, "publishing clients (each owns 3 keys; even ones use pubA, odd ones pubB)")
	fs.Float64Var(&o.idemShare, "idempotent", 0.3, "share of events sent with an Idempotency-Key (retried once on a 5xx or no answer)")
	fs.DurationVar(&o.settle, "settle", 2*time.Minute, "after the load, how long everything may take to be delivered")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, Redis data, spools); it is also kept when violations are found")
	fs.BoolVar(&o.verbose, "v", false, "print faults and progress as they happen (stderr)")
	fs.StringVar(&o.sidecarBin, "sidecar-bin", "", "use this sidecar binary instead of building ./cmd/sidecar")
	fs.BoolVar(&o.race, "race", false, "build the sidecar with -race (slower; the machine needs the headroom)")
	fs.StringVar(&o.logLevel, "sidecar-log-level", "debug", "the sidecars' SIDECAR_LOG_LEVEL (debug names every event id)")
	fs.BoolVar(&o.planOnly, "plan", false, "print the fault schedule the seed gives and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	seeded := false
	fs.Visit(func(f *flag.Flag) { seeded = seeded || f.Name == "seed" })
	if !seeded {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.seed = binary.LittleEndian.Uint64(b[:]) % 1_000_000_000 // short enough to type
	}
	switch {
	case o.duration < 20*time.Second:
		return o, fmt.Errorf("--duration %v: at least 20s (faults need room, and a quiet period follows)", o.duration)
	case o.rate < 1 || o.rate > 2000:
		return o, fmt.Errorf("--rate %d: between 1 and 2000", o.rate)
	case o.clients < 2:
		return o, fmt.Errorf("--clients %d: at least 2 (one per publishing sidecar)", o.clients)
	}
	return o, nil
}

// lockedWriter serialises the progress lines of the nemesis's lanes, the
// load's progress and the harness.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// run is the whole program; main only maps its error to an exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	s := &soak{opts: o, out: stdout, errw: &lockedWriter{w: stderr}}
	return s.run(ctx)
}
