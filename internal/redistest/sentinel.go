package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the test Sentinels monitor.
const MasterName = "mymaster"

// Sentinel is a Sentinel-managed Redis for failover tests: one master, one
// replica and three sentinels (quorum 2), all redis-server processes on
// free 127.0.0.1 ports, with default replication settings (asynchronous,
// no min-replicas-to-write).
//
// Its methods fail the test through the testing.TB it was started with, so
// call them from the test's goroutine.
type Sentinel struct {
	// URL is the sidecar's REDIS_URL: the first sentinel, the other two as addr.
	URL string
	// SentinelAddrs are the sentinels' host:port.
	SentinelAddrs []string

	t         testing.TB
	mu        sync.Mutex
	nodes     map[string]*Server // data nodes by address
	sentinels []*Server
	old       *Server // the master KillMaster killed, for RestartOld

	// Passwords SetAuth set: the data nodes' and the sentinels'.
	dataPass, sentinelPass string
}

// Sentinel timings: fast enough that a failover fits in a test, slow
// enough that a busy 2-core machine does not trigger one by accident.
const (
	sentinelDownAfter       = 1000 * time.Millisecond
	sentinelFailoverTimeout = 5000 * time.Millisecond
)

// sentinelNodeArgs start a full resync at once rather than after the default
// 5 s wait for more replicas; replication is otherwise the default.
var sentinelNodeArgs = []string{"--repl-diskless-sync-delay", "0"}

// StartSentinel starts a master, its replica and three sentinels, and
// returns once the replica is in sync and every sentinel knows the replica
// and the other two sentinels. All are killed by t.Cleanup.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		SkipOrFail(t, "this test needs the redis-server binary on PATH (apt-get install redis-server)")
	}
	s := &Sentinel{t: t, nodes: map[string]*Server{}}
	master := startProcessOn(t, bin, FreePort(t), sentinelNodeArgs...)
	host, port, _ := net.SplitHostPort(master.Addr)
	replica := startProcessOn(t, bin, FreePort(t), slices.Concat(sentinelNodeArgs, []string{"--replicaof", host, port})...)
	s.nodes[master.Addr], s.nodes[replica.Addr] = master, replica
	s.waitReplicating(replica.Addr, master.Addr, 20*time.Second)

	for range 3 {
		s.sentinels = append(s.sentinels, startSentinelProcess(t, bin, master.Addr))
	}
	for _, sn := range s.sentinels {
		s.SentinelAddrs = append(s.SentinelAddrs, sn.Addr)
	}
	s.URL = fmt.Sprintf("redis://%s?master_name=%s&addr=%s&addr=%s", s.SentinelAddrs[0], MasterName, s.SentinelAddrs[1], s.SentinelAddrs[2])
	s.waitSentinelsReady(master.Addr, 30*time.Second)
	return s
}

// startSentinelProcess runs redis-server in sentinel mode monitoring master.
// Sentinel rewrites its configuration file, so it lives in the node's own dir.
func startSentinelProcess(t testing.TB, bin, master string) *Server {
	t.Helper()
	dir := t.TempDir()
	port := FreePort(t)
	host, mport, _ := net.SplitHostPort(master)
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf(`port %d
bind 127.0.0.1
daemonize no
dir %s
logfile %s
sentinel monitor %s %s %s 2
sentinel down-after-milliseconds %[4]s %[7]d
sentinel failover-timeout %[4]s %[8]d
sentinel parallel-syncs %[4]s 1
`, port, dir, filepath.Join(dir, "redis.log"), MasterName, host, mport,
		sentinelDownAfter.Milliseconds(), sentinelFailoverTimeout.Milliseconds())
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	sn := &Server{Kind: Process, Addr: addr, URL: "redis://" + addr, t: t, bin: bin, dir: dir,
		args: []string{conf, "--sentinel"}}
	sn.launch()
	t.Cleanup(sn.Kill)
	return sn
}

// MasterAddr is the master's address as the first answering sentinel reports it.
func (s *Sentinel) MasterAddr() string {
	s.t.Helper()
	for _, a := range s.SentinelAddrs {
		if m, err := askMaster(a); err == nil {
			return m
		}
	}
	s.t.Fatalf("no sentinel of %v answers get-master-addr-by-name %s", s.SentinelAddrs, MasterName)
	return ""
}

// Failover runs SENTINEL FAILOVER and returns once all sentinels report the
// new master and it answers ROLE master. Sentinel does not pause writes on
// the old master: it stays a master, accepting writes, until the sentinels
// convert it to a replica 10–20 s later and it discards them (WaitSettled).
func (s *Sentinel) Failover() (from, to string) {
	s.t.Helper()
	from = s.MasterAddr()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.SentinelAddrs[0], MaxRetries: -1})
	defer sc.Close()
	var last error
	ok := waitUntil(20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		last = sc.Failover(ctx, MasterName).Err()
		// NOGOODSLAVE: the sentinel's view of the replica is not fresh yet.
		return last == nil || strings.HasPrefix(last.Error(), "INPROG")
	})
	if !ok {
		s.t.Fatalf("SENTINEL FAILOVER %s: %v\n%s", MasterName, last, s.logs())
	}
	to = s.waitNewMaster(from, 30*time.Second)
	return from, to
}

// KillMaster SIGKILLs the master process and returns once the sentinels
// have promoted the replica and it answers ROLE master.
func (s *Sentinel) KillMaster() (killed, promoted string) {
	s.t.Helper()
	killed = s.MasterAddr()
	s.mu.Lock()
	srv := s.nodes[killed]
	s.old = srv
	s.mu.Unlock()
	if srv == nil {
		s.t.Fatalf("the sentinels report master %s, which this harness did not start", killed)
	}
	srv.Kill()
	promoted = s.waitNewMaster(killed, 30*time.Second)
	return killed, promoted
}

// RestartOld starts the master KillMaster killed again, empty, as a replica
// of the current master, and returns once it is settled (WaitSettled).
func (s *Sentinel) RestartOld() {
	s.t.Helper()
	s.mu.Lock()
	old := s.old
	s.old = nil
	s.mu.Unlock()
	if old == nil {
		s.t.Fatal("RestartOld without a KillMaster before it")
	}
	host, port, _ := net.SplitHostPort(s.MasterAddr())
	old.args = append(old.args, "--replicaof", host, port) // later arguments override earlier ones
	old.launch()
	s.WaitSettled()
}

// WaitSettled waits until every data node but the master and one killed by
// KillMaster (not restarted) replicates from the master, in sync, and every
// sentinel sees it as a healthy replica: after a Failover the old master has
// then been converted and has discarded what it accepted since.
func (s *Sentinel) WaitSettled() {
	s.t.Helper()
	master := s.MasterAddr()
	s.mu.Lock()
	var replicas []string
	for a, n := range s.nodes {
		if a != master && n != s.old {
			replicas = append(replicas, a)
		}
	}
	s.mu.Unlock()
	for _, r := range replicas {
		s.waitReplicating(r, master, 30*time.Second)
		ok := waitUntil(30*time.Second, func() bool {
			for _, a := range s.SentinelAddrs {
				if !sentinelSeesReplica(a, r) {
					return false
				}
			}
			return true
		})
		if !ok {
			s.t.Fatalf("sentinels do not see %s as a healthy replica of %s\n%s", r, master, s.logs())
		}
	}
}

// Client returns a client that follows the master through the sentinels,
// closed by t.Cleanup.
func (s *Sentinel) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: MasterName, SentinelAddrs: s.SentinelAddrs})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitNewMaster waits until every sentinel reports a master other than old
// and that master answers ROLE master; it returns the new master.
func (s *Sentinel) waitNewMaster(old string, d time.Duration) string {
	s.t.Helper()
	var now string
	ok := waitUntil(d, func() bool {
		now = ""
		for _, a := range s.SentinelAddrs {
			m, err := askMaster(a)
			if err != nil || m == old || (now != "" && m != now) {
				return false
			}
			now = m
		}
		role, _, _ := Role(context.Background(), now)
		return role == "master"
	})
	if !ok {
		s.t.Fatalf("no new master replaced %s within %v\n%s", old, d, s.logs())
	}
	return now
}

// waitReplicating waits until replica answers ROLE slave of master, connected.
func (s *Sentinel) waitReplicating(replica, master string, d time.Duration) {
	s.t.Helper()
	ok := waitUntil(d, func() bool {
		role, of, state := Role(context.Background(), replica)
		return role == "slave" && of == master && state == "connected"
	})
	if !ok {
		role, of, state := Role(context.Background(), replica)
		s.t.Fatalf("%s does not replicate from %s within %v (ROLE: %s %s %s)\n%s", replica, master, d, role, of, state, s.logs())
	}
}

// waitSentinelsReady waits until every sentinel monitors master, knows the
// other two sentinels and sees a healthy replica: only then can it fail over.
func (s *Sentinel) waitSentinelsReady(master string, d time.Duration) {
	s.t.Helper()
	ok := waitUntil(d, func() bool {
		for _, a := range s.SentinelAddrs {
			sc := redis.NewSentinelClient(&redis.Options{Addr: a, MaxRetries: -1})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			m, err := sc.Master(ctx, MasterName).Result()
			cancel()
			sc.Close()
			if err != nil || m["flags"] != "master" || m["ip"]+":"+m["port"] != master ||
				m["num-other-sentinels"] != fmt.Sprint(len(s.SentinelAddrs)-1) {
				return false
			}
			healthy := false
			for r := range s.nodes {
				if r != master && sentinelSeesReplica(a, r) {
					healthy = true
				}
			}
			if !healthy {
				return false
			}
		}
		return true
	})
	if !ok {
		s.t.Fatalf("sentinels not ready within %v\n%s", d, s.logs())
	}
}

// logs is the tail of every process's log, for a failure message.
func (s *Sentinel) logs() string {
	var b strings.Builder
	s.mu.Lock()
	defer s.mu.Unlock()
	for a, n := range s.nodes {
		fmt.Fprintf(&b, "---- redis %s ----\n%s\n", a, nodeLogTail(n.dir, 15))
	}
	for _, n := range s.sentinels {
		fmt.Fprintf(&b, "---- sentinel %s ----\n%s\n", n.Addr, nodeLogTail(n.dir, 25))
	}
	return b.String()
}

// askMaster asks one sentinel for the master's address.
func askMaster(sentinel string) (string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	hp, err := sc.GetMasterAddrByName(ctx, MasterName).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("get-master-addr-by-name: unexpected reply %v", hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// sentinelSeesReplica reports whether the sentinel lists replica as a
// replica with no down or disconnected flag and its link to the master up.
func sentinelSeesReplica(sentinel, replica string) bool {
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	rs, err := sc.Replicas(ctx, MasterName).Result()
	if err != nil {
		return false
	}
	for _, r := range rs {
		if r["ip"]+":"+r["port"] == replica {
			return r["flags"] == "slave" && r["master-link-status"] == "ok"
		}
	}
	return false
}

// waitUntil checks cond every 10 ms until it holds (true) or d passes (false).
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// nodeLogTail is the last lines of a node's log file.
func nodeLogTail(dir string, lines int) string {
	b, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// SetAuth sets the passwords the set requires, "" for none: data on the
// master and replica (requirepass, and masterauth so replication and a
// later failover still authenticate), sentinel on the sentinels (their
// default user's password, and sentinel-pass so they still talk to each
// other). The sentinels are told the data password (auth-pass). It returns
// once every sentinel, asked with the new password, still reports the
// master and a healthy replica. Connections opened before keep their
// authentication; new ones need the passwords.
//
// The fault handles (Failover, KillMaster, RestartOld, WaitSettled,
// MasterAddr) and Client ask without a password: call SetAuth("", "")
// before using them.
func (s *Sentinel) SetAuth(data, sentinel string) {
	s.t.Helper()
	s.mu.Lock()
	oldData, oldSentinel := s.dataPass, s.sentinelPass
	var nodes []string
	for a, n := range s.nodes {
		if n != s.old {
			nodes = append(nodes, a)
		}
	}
	s.mu.Unlock()
	do := func(addr, password string, args ...any) {
		s.t.Helper()
		c := redis.NewClient(&redis.Options{Addr: addr, Password: password, MaxRetries: -1, DialTimeout: time.Second})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Do(ctx, args...).Err(); err != nil {
			s.t.Fatalf("%s %v: %v", addr, args[:2], err)
		}
	}
	// Every step keeps the set working: replicas and sentinels learn the
	// data password before the data nodes require it; sentinels learn
	// each other's password before they require it.
	for _, n := range nodes {
		do(n, oldData, "CONFIG", "SET", "masterauth", data)
	}
	for _, a := range s.SentinelAddrs {
		do(a, oldSentinel, "SENTINEL", "SET", MasterName, "auth-pass", data)
	}
	for _, n := range nodes {
		do(n, oldData, "CONFIG", "SET", "requirepass", data)
	}
	for _, a := range s.SentinelAddrs {
		do(a, oldSentinel, "SENTINEL", "CONFIG", "SET", "sentinel-pass", sentinel)
	}
	for _, a := range s.SentinelAddrs {
		if sentinel == "" {
			do(a, oldSentinel, "ACL", "SETUSER", "default", "nopass")
		} else {
			do(a, oldSentinel, "ACL", "SETUSER", "default", "resetpass", ">"+sentinel)
		}
	}
	s.mu.Lock()
	s.dataPass, s.sentinelPass = data, sentinel
	s.mu.Unlock()
	var last string
	ok := waitUntil(30*time.Second, func() bool {
		for _, a := range s.SentinelAddrs {
			if last = s.authedSentinelHealthy(a, sentinel); last != "" {
				return false
			}
		}
		return true
	})
	if !ok {
		s.t.Fatalf("after SetAuth: %s\n%s", last, s.logs())
	}
}

// authedSentinelHealthy asks one sentinel, with password, whether it
// monitors a master it does not suspect and sees a healthy replica; ""
// when it does, else what is wrong.
func (s *Sentinel) authedSentinelHealthy(addr, password string) string {
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr, Password: password, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	m, err := sc.Master(ctx, MasterName).Result()
	if err != nil {
		return fmt.Sprintf("sentinel %s: %v", addr, err)
	}
	if m["flags"] != "master" {
		return fmt.Sprintf("sentinel %s: master flags %q", addr, m["flags"])
	}
	rs, err := sc.Replicas(ctx, MasterName).Result()
	if err != nil {
		return fmt.Sprintf("sentinel %s: replicas: %v", addr, err)
	}
	for _, r := range rs {
		if r["flags"] == "slave" && r["master-link-status"] == "ok" {
			return ""
		}
	}
	return fmt.Sprintf("sentinel %s: no healthy replica in %v", addr, rs)
}
