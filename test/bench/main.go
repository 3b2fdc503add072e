// Command bench measures sidecar against its baselines in one run: raw XADD
// and plain HTTP at the same concurrency, publish throughput and latency,
// sidecar CPU per event and memory, bulk publish, end-to-end delivery
// (single and batched), per-key ordering, a partitioned topic on a Redis
// Cluster losing a master, idle cost, and the spool with Redis down. It
// starts its own redis-server(s), sidecars and webhook sink on 127.0.0.1
// and prints a Markdown report ending in a table of the targets met.
//
//	go run ./test/bench                          # full run (about 5 minutes)
//	go run ./test/bench --short                  # quick run (under 2 minutes)
//	go run ./test/bench --short --phases bulk,key # only some phases
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

type options struct {
	duration time.Duration
	idle     time.Duration
	size     int
	clients  []int
	rate     int
	phases   map[string]bool
}

// allPhases in the order they run: idle stops every other process and
// spool stops Redis, so they come last.
var allPhases = []string{"publish", "bulk", "e2e", "backlog", "batch", "key", "cluster", "idle", "spool"}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "sink" {
		if err := serveSink(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "sink:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	short := fs.Bool("short", false, "quick run: 2 s phases, 5 s idle")
	dur := fs.Duration("duration", 10*time.Second, "length of each load phase")
	idle := fs.Duration("idle", 30*time.Second, "length of the idle measurement")
	size := fs.Int("size", 1024, "event body size in bytes")
	clients := fs.String("clients", "1,16,64", "publisher concurrencies")
	rate := fs.Int("rate", 1000, "offered rate of the fixed-rate end-to-end phase (events/s)")
	phases := fs.String("phases", strings.Join(allPhases, ","), "phases to run, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o := options{duration: *dur, idle: *idle, size: *size, rate: *rate, phases: map[string]bool{}}
	for _, p := range strings.Split(*phases, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(allPhases, p) {
			return fmt.Errorf("--phases: unknown phase %q (known: %s)", p, strings.Join(allPhases, ","))
		}
		o.phases[p] = true
	}
	if *short {
		o.duration, o.idle = 2*time.Second, 5*time.Second
	}
	for _, c := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			return fmt.Errorf("--clients: %q", c)
		}
		o.clients = append(o.clients, n)
	}

	dir, err := os.MkdirTemp("", "sidecar-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "sidecar")
	build := exec.Command("go", "build", "-o", bin, "./cmd/sidecar")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build sidecar (run from the repository root): %w", err)
	}
	b := &bench{o: o, dir: dir, bin: bin, out: out, plain: map[int]float64{}, m: newMeasured()}
	defer b.cleanup()
	return b.all()
}

type bench struct {
	o     options
	dir   string
	bin   string
	out   io.Writer
	procs []*proc

	redisAddr string
	redis     *proc
	sink      *sink
	plain     map[int]float64 // plain HTTP requests/s by concurrency, the baselines
	m         *measured       // what the targets table compares
}

func (b *bench) cleanup() {
	for i := len(b.procs) - 1; i >= 0; i-- {
		b.procs[i].stop()
	}
}

func (b *bench) sidecar(name string, env ...string) (*proc, string, error) {
	return b.sidecarOn("redis://"+b.redisAddr+"/0", name, env...)
}

// sidecarOn starts a sidecar on the Redis at redisURL.
func (b *bench) sidecarOn(redisURL, name string, env ...string) (*proc, string, error) {
	// Unbounded retention: a trimmed, never-read event would count as lost.
	p, url, err := startSidecar(b.dir, name, b.bin, append([]string{"REDIS_URL=" + redisURL, "SIDECAR_RETENTION_MAX_LEN=0"}, env...)...)
	if p != nil {
		b.procs = append(b.procs, p)
	}
	return p, url, err
}

// plainRate is plain HTTP requests/s to the sink at c clients: the publish
// phase's figure when it measured c, else measured now.
func (b *bench) plainRate(c int) float64 {
	if r, ok := b.plain[c]; ok {
		return r
	}
	hc := newClient(c)
	r := closedLoop(c, b.o.duration, func(seq int64) error {
		return post(hc, b.sink.url+"/plain", body(b.o.size, seq), 200)
	})
	b.plain[c] = r.rate()
	return b.plain[c]
}

func (b *bench) printf(format string, a ...any) { fmt.Fprintf(b.out, format, a...) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

func (b *bench) all() error {
	var err error
	if b.redis, b.redisAddr, err = startRedis(b.dir); err != nil {
		return err
	}
	b.procs = append(b.procs, b.redis)
	if b.sink, err = newSink(b.dir); err != nil {
		return err
	}
	b.procs = append(b.procs, b.sink.proc)
	cpuModel := "unknown"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpuModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	b.printf("# sidecar benchmark\n\n%s, %d CPUs (%s), %s; %d-byte JSON events; phases of %v; the webhook sink (also the plain-HTTP baseline's server) runs in its own process\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), cpuModel, runtime.Version(), b.o.size, b.o.duration)
	run := map[string]func() error{"publish": b.publish, "bulk": b.bulk, "e2e": b.endToEnd, "backlog": b.backlog,
		"batch": b.batchE2E, "key": b.keyOrder, "cluster": b.cluster, "idle": b.idleCost, "spool": b.spool}
	var failed []string
	for _, name := range allPhases {
		if !b.o.phases[name] {
			continue
		}
		if err := run[name](); err != nil {
			// One broken phase must not hide the others' figures.
			b.printf("\n**Phase %s failed: %v**\n\n", name, err)
			failed = append(failed, name)
			b.m.failed[name] = true
		}
	}
	b.targets()
	if len(failed) > 0 {
		return fmt.Errorf("phases failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// publish: baselines and the sidecar's publish path at each concurrency.
func (b *bench) publish() error {
	pub, url, err := b.sidecar("publisher")
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: b.redisAddr, PoolSize: 128})
	defer rdb.Close()
	b.printf("## Publish\n\n| clients | raw XADD/s | plain HTTP/s | sidecar publish/s | vs HTTP | p50 ms | p90 ms | p99 ms | max ms | sidecar CPU µs/event | peak RSS MB | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range b.o.clients {
		ctx := context.Background()
		xadd := closedLoop(c, b.o.duration, func(seq int64) error {
			return rdb.XAdd(ctx, &redis.XAddArgs{Stream: "bench:raw", MaxLen: 100000, Approx: true,
				Values: []any{"id", seq, "data", body(b.o.size, seq)}}).Err()
		})
		hc := newClient(c)
		plain := closedLoop(c, b.o.duration, func(seq int64) error {
			return post(hc, b.sink.url+"/plain", body(b.o.size, seq), 200)
		})
		resetPeak(pub.pid())
		cpu0 := cpuTime(pub.pid())
		sc := newClient(c)
		side := closedLoop(c, b.o.duration, func(seq int64) error {
			return post(sc, url+"/v1/publish/bench.publish", body(b.o.size, seq), 202)
		})
		cpu := cpuTime(pub.pid()) - cpu0
		b.plain[c] = plain.rate()
		b.m.publish[c] = side.rate() / plain.rate()
		b.printf("| %d | %.0f | %.0f | %.0f | %.0f%% | %s | %s | %s | %s | %.0f | %.1f | %d |\n", c, xadd.rate(), plain.rate(), side.rate(),
			100*side.rate()/plain.rate(), ms(side.pct(50)), ms(side.pct(90)), ms(side.pct(99)), ms(side.pct(100)),
			float64(cpu.Microseconds())/float64(max(side.n, 1)), float64(memKB(pub.pid(), "VmHWM"))/1024, side.errors+xadd.errors+plain.errors)
	}
	b.printf("\nPublisher sidecar after the phases: RSS %.1f MB (private %.1f MB; the rest is the binary's shared file pages).\n\n",
		float64(memKB(pub.pid(), "VmRSS"))/1024, float64(memKB(pub.pid(), "RssAnon"))/1024)
	return nil
}

// endToEnd: publish through one sidecar, deliver through another to the sink.
func (b *bench) endToEnd() error {
	b.printf("## End to end (publish → Redis → subscriber sidecar → webhook)\n\n| subscription concurrency | load | published | delivered/s | p50 ms | p99 ms | max ms | lost | duplicated |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, conc := range []int{1, 64} {
		topic := fmt.Sprintf("bench.e2e.c%d", conc)
		cfg := filepath.Join(b.dir, topic+".yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("subscriptions:\n  - topic: %s\n    url: %s/hook\n    concurrency: %d\n", topic, b.sink.url, conc)), 0o600)
		_, _, err := b.sidecar(fmt.Sprintf("subscriber-c%d", conc), "SIDECAR_CONFIG="+cfg)
		if err != nil {
			return err
		}
		_, pubURL, err := b.sidecar(fmt.Sprintf("e2e-publisher-c%d", conc))
		if err != nil {
			return err
		}
		for _, load := range []string{"fixed", "max"} {
			if conc == 64 && load == "fixed" {
				continue
			}
			b.sink.reset()
			var r result
			hc := newClient(64)
			do := func(seq int64) error {
				return post(hc, pubURL+"/v1/publish/"+topic, body(b.o.size, seq), 202)
			}
			label := fmt.Sprintf("%d/s offered", b.o.rate)
			start := time.Now()
			if load == "fixed" {
				r = openLoop(b.o.rate, b.o.duration, do)
			} else {
				label = "max (64 publishers)"
				r = closedLoop(64, b.o.duration, do)
			}
			last := b.waitDelivered(r.n)
			time.Sleep(300 * time.Millisecond) // room for a late duplicate
			u, dups, lat := b.sink.stats(true)
			total := last.Sub(start)
			lr := result{lat: lat}
			b.printf("| %d | %s | %d | %.0f | %s | %s | %s | %d | %d |\n", conc, label, r.n, float64(u)/total.Seconds(),
				ms(lr.pct(50)), ms(lr.pct(99)), ms(lr.pct(100)), r.n-int64(u), dups)
			b.m.check(fmt.Sprintf("e2e c%d %s", conc, load), max(r.n-int64(u), 0), int64(dups), -1)
		}
	}
	b.printf("\n")
	return nil
}

// waitDelivered waits until the sink has n events, or until 10 s pass
// without progress; it returns when the last new event arrived.
func (b *bench) waitDelivered(n int64) time.Time {
	last, seen := time.Now(), 0
	for {
		u, _, _ := b.sink.counts()
		if u != seen {
			last, seen = time.Now(), u
		}
		if int64(u) >= n || time.Since(last) > 10*time.Second {
			return last
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// backlog: delivery alone — a subscriber drains events published beforehand.
func (b *bench) backlog() error {
	rdb := redis.NewClient(&redis.Options{Addr: b.redisAddr})
	defer rdb.Close()
	n := int(20000 * b.o.duration / (10 * time.Second))
	plain64 := b.plainRate(64)
	b.printf("### Backlog (delivery alone: a subscriber drains events published beforehand)\n\n| subscription concurrency | backlog | delivered/s (first to last webhook) | vs plain HTTP at 64 | lost | duplicated |\n|---|---|---|---|---|---|\n")
	for _, conc := range []int{1, 64} {
		topic := fmt.Sprintf("bench.backlog.c%d", conc)
		ctx := context.Background()
		for i := 0; i < n; i += 500 {
			pipe := rdb.Pipeline()
			for j := i; j < min(i+500, n); j++ {
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: "sidecar:{" + topic + "}", Values: []any{
					"id", fmt.Sprintf("b%d", j), "source", "bench", "type", topic, "time", time.Now().UTC().Format(time.RFC3339Nano),
					"content_type", "application/json", "data", body(b.o.size, int64(j))}})
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
		b.sink.reset()
		cfg := filepath.Join(b.dir, topic+".yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("subscriptions:\n  - topic: %s\n    url: %s/hook\n    concurrency: %d\n", topic, b.sink.url, conc)), 0o600)
		if _, _, err := b.sidecar(fmt.Sprintf("backlog-c%d", conc), "SIDECAR_CONFIG="+cfg); err != nil {
			return err
		}
		_ = waitFor("first delivery", 30*time.Second, func() bool { u, _, _ := b.sink.counts(); return u > 0 })
		first := time.Now()
		took := b.waitDelivered(int64(n)).Sub(first)
		time.Sleep(300 * time.Millisecond)
		u, dups, _ := b.sink.counts()
		rate := float64(u) / took.Seconds()
		b.printf("| %d | %d | %.0f | %.0f%% | %d | %d |\n", conc, n, rate, 100*rate/plain64, n-u, dups)
		b.m.check(fmt.Sprintf("backlog c%d", conc), int64(max(n-u, 0)), int64(dups), -1)
	}
	b.printf("\n")
	return nil
}

// idleCost: CPU and Redis commands per second with subscriptions and no traffic.
func (b *bench) idleCost() error {
	cfg := filepath.Join(b.dir, "idle.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("subscriptions:\n  - {topic: idle.a, url: %s/hook}\n  - {topic: idle.b, url: %s/hook}\n", b.sink.url, b.sink.url)), 0o600)
	p, _, err := b.sidecar("idle", "SIDECAR_CONFIG="+cfg)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: b.redisAddr})
	defer rdb.Close()
	// Stop the other sidecars' traffic from counting: measure this one alone.
	for _, q := range b.procs {
		if q != p && q != b.redis {
			q.stop()
		}
	}
	time.Sleep(time.Second)
	commands := func() int64 {
		info := rdb.Info(context.Background(), "stats").Val()
		for _, l := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(l, "total_commands_processed:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		return 0
	}
	c0, cpu0, t0 := commands(), cpuTime(p.pid()), time.Now()
	time.Sleep(b.o.idle)
	c1, cpu1, el := commands(), cpuTime(p.pid()), time.Since(t0)
	cmds := float64(c1-c0-1) / el.Seconds() // minus our own INFO
	b.printf("## Idle (2 subscriptions, no traffic, %v)\n\n| CPU | Redis commands/s (whole sidecar) | per subscription | RSS MB | private (anon) MB |\n|---|---|---|---|---|\n| %.2f%% | %.1f | %.1f | %.1f | %.1f |\n\n",
		b.o.idle, 100*(cpu1-cpu0).Seconds()/el.Seconds(), cmds, cmds/2, float64(memKB(p.pid(), "VmRSS"))/1024, float64(memKB(p.pid(), "RssAnon"))/1024)
	return nil
}

// spool: publishes per second with Redis down.
func (b *bench) spool() error {
	p, url, err := b.sidecar("spooler")
	if err != nil {
		return err
	}
	_ = p
	b.redis.stop()
	time.Sleep(500 * time.Millisecond)
	hc := newClient(64)
	// The first publish notices the outage; the rest go straight to the spool.
	_ = post(hc, url+"/v1/publish/bench.spool", body(b.o.size, 0), 202)
	r := closedLoop(64, b.o.duration, func(seq int64) error {
		return post(hc, url+"/v1/publish/bench.spool", body(b.o.size, seq), 202)
	})
	b.printf("## Spool (Redis down, 64 publishers)\n\n| spooled publishes/s | p50 ms | p99 ms | max ms | errors |\n|---|---|---|---|---|\n| %.0f | %s | %s | %s | %d |\n\n",
		r.rate(), ms(r.pct(50)), ms(r.pct(99)), ms(r.pct(100)), r.errors)
	return nil
}
