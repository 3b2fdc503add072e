package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The sidecars of a run:
//
//	clients ──▶ pubA  /v1/publish/{t1,t2}                       (spool on a small tmpfs)
//	clients ──▶ pubB  /sync → t1 (fallback: cal1 /v1/inbox/t1), /v1/publish/t2
//	t1, t2 ──group calendar──▶ cal1, cal2 (one consumer each, claim_timeout 3s) ──▶ cal1-rx, cal2-rx
//	t1, t2 ──group audit─────▶ audit (one replica, concurrency 1: order promised) ──▶ audit-rx
const (
	claimTimeout  = 3 * time.Second
	shutdownGrace = 3 * time.Second
	groupCalendar = "calendar"
	groupAudit    = "audit"
)

// webhookKey is the raw key of the run's webhook secret: pubB signs its
// fallback POSTs with it, the subscribers verify the inbox and sign their
// deliveries with it, and the receivers check those signatures.
var webhookKey = []byte("chaos-soak-webhook-key-32-bytes!")

func webhookSecret() string { return "whsec_" + base64.StdEncoding.EncodeToString(webhookKey) }

// fleet is the run's sidecars and their receivers.
type fleet struct {
	procs     []*proc // pubA, pubB, cal1, cal2, audit
	byName    map[string]*proc
	receivers []*receiver // cal1-rx, cal2-rx, audit-rx
	rxByName  map[string]*receiver
	routed    map[string]string // "pubB/<topic>" → the route path with a fallback
	spool     *spoolDisk        // pubA's
}

type fleetConfig struct {
	bin, dir, redisURL, logLevel string
	topics                       [2]string
	clock                        func(time.Time) time.Duration
	trapURL                      string
	issue                        func(string)
}

// newFleet lays out ports, configurations, spools and receivers; start
// launches them.
func newFleet(cfg fleetConfig) (*fleet, error) {
	f := &fleet{byName: map[string]*proc{}, rxByName: map[string]*receiver{}, routed: map[string]string{}}
	for _, rx := range []struct{ name, group string }{{"cal1-rx", groupCalendar}, {"cal2-rx", groupCalendar}, {"audit-rx", groupAudit}} {
		r := newReceiver(rx.name, rx.group, webhookKey, cfg.trapURL)
		f.receivers = append(f.receivers, r)
		f.rxByName[rx.name] = r
	}
	for _, rc := range f.receivers {
		if err := rc.up(context.Background()); err != nil {
			return nil, err
		}
	}
	addrs := map[string]string{}
	for _, n := range []string{"pubA", "pubB", "cal1", "cal2", "audit"} {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[n] = a
	}
	t1 := cfg.topics[0]
	var err error
	if f.spool, err = newSpoolDisk(filepath.Join(cfg.dir, "spool-pubA"), 4<<20); err != nil {
		return nil, err
	}
	f.routed["pubB/"+t1] = "/sync"
	subscriber := func(group, rx string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "subscriptions:\n")
		for _, t := range cfg.topics {
			// retry_for far beyond any fault: a dead letter here can only come
			// from an answer that says so (a 3xx/4xx), never from a horizon.
			fmt.Fprintf(&b, "  - {topic: %s, url: %s, group: %s, start: earliest, concurrency: 1, timeout: 5s, retry_for: 30m, backoff: {initial: 50ms, max: 1s}}\n",
				t, f.rxByName[rx].url(), group)
		}
		return b.String()
	}
	type def struct {
		name, service, consumer, yaml string
		secret                        bool
	}
	defs := []def{
		{name: "pubA", service: "pubA"},
		{name: "pubB", service: "pubB", secret: true, yaml: fmt.Sprintf("routes:\n  - {path: /sync, topic: %s, fallback: http://%s/v1/inbox/%s}\n", t1, addrs["cal1"], t1)},
		{name: "cal1", service: groupCalendar, consumer: "cal-1", secret: true, yaml: subscriber(groupCalendar, "cal1-rx")},
		{name: "cal2", service: groupCalendar, consumer: "cal-2", secret: true, yaml: subscriber(groupCalendar, "cal2-rx")},
		{name: "audit", service: groupAudit, consumer: "audit-1", secret: true, yaml: subscriber(groupAudit, "audit-rx")},
	}
	for _, d := range defs {
		spoolDir := filepath.Join(cfg.dir, "spool-"+d.name)
		if d.name == "pubA" {
			spoolDir = f.spool.dir
		}
		env := []string{
			"PATH=" + os.Getenv("PATH"),
			"SIDECAR_SERVICE=" + d.service,
			"SIDECAR_LISTEN=" + addrs[d.name],
			"REDIS_URL=" + cfg.redisURL,
			"SIDECAR_SPOOL_DIR=" + spoolDir,
			"SIDECAR_LOG_LEVEL=" + cfg.logLevel,
			"SIDECAR_SHUTDOWN_GRACE=" + shutdownGrace.String(),
			"SIDECAR_CLAIM_TIMEOUT=" + claimTimeout.String(),
		}
		if d.consumer != "" {
			env = append(env, "SIDECAR_CONSUMER="+d.consumer)
		}
		if d.secret {
			env = append(env, "SIDECAR_WEBHOOK_SECRET="+webhookSecret())
		}
		if d.yaml != "" {
			path := filepath.Join(cfg.dir, d.name+".yaml")
			if err := os.WriteFile(path, []byte(d.yaml), 0o600); err != nil {
				return nil, err
			}
			env = append(env, "SIDECAR_CONFIG="+path)
		}
		p := &proc{name: d.name, bin: cfg.bin, env: env, addr: addrs[d.name],
			logPath: filepath.Join(cfg.dir, "logs", d.name+".log"), clock: cfg.clock, issue: cfg.issue}
		f.procs = append(f.procs, p)
		f.byName[d.name] = p
	}
	return f, os.MkdirAll(filepath.Join(cfg.dir, "logs"), 0o700)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// start launches every sidecar and waits until each says ready.
func (f *fleet) start(ctx context.Context) error {
	for _, p := range f.procs {
		if err := p.start(ctx); err != nil {
			return fmt.Errorf("%w; log tail:\n%s", err, logTail(p.logPath, 20))
		}
	}
	for _, p := range f.procs {
		if err := waitFor(ctx, 60*time.Second, p.name+" /readyz ready", func() bool { return readyz(p.addr) == "ready" }); err != nil {
			return fmt.Errorf("%w (last: %s)", err, readyz(p.addr))
		}
	}
	return nil
}

// readyz returns /readyz's status word ("" when it does not answer).
func readyz(addr string) string {
	resp, err := healthClient.Get("http://" + addr + "/readyz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return r.Status
}

// spoolState is what a publisher's /v1/status says of its spool.
type spoolState struct {
	Spooling bool `json:"spooling"`
	Spool    struct {
		Events int   `json:"events"`
		Bytes  int64 `json:"bytes"`
	} `json:"spool"`
}

func readSpool(addr string) (spoolState, error) {
	var st struct {
		Spool spoolState `json:"spool"`
	}
	resp, err := healthClient.Get("http://" + addr + "/v1/status")
	if err != nil {
		return spoolState{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return spoolState{}, fmt.Errorf("/v1/status: %s", resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st.Spool, err
}

// stop kills every sidecar and closes the receivers.
func (f *fleet) stop() {
	for _, p := range f.procs {
		p.kill()
	}
	for _, rc := range f.receivers {
		rc.close()
	}
}
