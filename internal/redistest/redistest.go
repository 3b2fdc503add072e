// Package redistest starts a Redis for tests: REDIS_URL if set, else a real
// redis-server on a free port (with kill / stop / restart handles for fault
// tests), else a container through dockertest, else an embedded server for
// tests that need only Redis semantics.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/fogis-sidecar/sidecar/internal/devredis"
	"github.com/ory/dockertest/v3"
	"github.com/redis/go-redis/v9"
)

// Kind says where a Server came from.
type Kind string

const (
	External Kind = "external (REDIS_URL)"
	Process  Kind = "redis-server process"
	Docker   Kind = "docker container"
	Embedded Kind = "embedded (miniredis)"
)

// Server is a Redis a test can use.
type Server struct {
	Kind Kind
	Addr string // host:port
	URL  string // redis://host:port/db

	t    testing.TB
	mu   sync.Mutex
	bin  string
	dir  string
	args []string
	cmd  *exec.Cmd
	mini *miniredis.Miniredis
}

// InCI reports whether tests run under CI=true, where nothing may skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips a test that cannot run here, or fails it under CI=true.
func SkipOrFail(t testing.TB, why string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true and this test cannot run: %s", why)
	}
	t.Skip(why)
}

// Start returns a Redis for this test, torn down by t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		o, err := redis.ParseURL(u)
		if err != nil {
			t.Fatalf("REDIS_URL: %v", err)
		}
		return &Server{Kind: External, Addr: o.Addr, URL: u, t: t}
	}
	if bin, err := exec.LookPath("redis-server"); err == nil {
		return startProcess(t, bin)
	}
	if s := startDocker(t); s != nil {
		return s
	}
	if InCI() {
		t.Fatal("CI=true but no redis-server on PATH and no Docker engine: install redis-server")
	}
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		t.Fatalf("embedded redis: %v", err)
	}
	t.Cleanup(m.Close)
	t.Logf("redistest: no redis-server on PATH and no Docker; using the embedded server (fault tests skip; install redis-server to run them)")
	return &Server{Kind: Embedded, Addr: m.Addr(), URL: "redis://" + m.Addr() + "/0", t: t, mini: m}
}

// StartProcess is Start for tests that need fault handles (kill, stop, restart):
// they skip (or fail under CI=true) when only an external or embedded server is at hand.
func StartProcess(t testing.TB) *Server {
	t.Helper()
	return StartProcessOnPort(t, FreePort(t))
}

// StartProcessOnPort is StartProcess on a given port, for tests that point
// a client at an address before any Redis listens there.
func StartProcessOnPort(t testing.TB, port int) *Server {
	t.Helper()
	return StartProcessWith(t, port)
}

// StartProcessWith starts a redis-server on port (0: a free one) with extra
// configuration arguments, e.g. "--maxmemory-policy", "allkeys-lru".
func StartProcessWith(t testing.TB, port int, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		SkipOrFail(t, "this test needs the redis-server binary on PATH (apt-get install redis-server)")
	}
	if port == 0 {
		port = FreePort(t)
	}
	return startProcessOn(t, bin, port, extra...)
}

func startProcess(t testing.TB, bin string) *Server {
	t.Helper()
	return startProcessOn(t, bin, FreePort(t))
}

func startProcessOn(t testing.TB, bin string, port int, extra ...string) *Server {
	t.Helper()
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s := &Server{
		Kind: Process, Addr: addr, URL: "redis://" + addr + "/0", t: t, bin: bin, dir: dir,
		args: []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log")},
	}
	s.args = append(s.args, extra...) // later arguments override earlier ones
	s.launch()
	t.Cleanup(s.Kill)
	return s
}

func (s *Server) launch() {
	s.t.Helper()
	cmd := exec.Command(s.bin, s.args...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	go func() { _ = cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s.ping() == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server on %s did not answer within 10s; log:\n%s", s.Addr, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *Server) ping() error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	return c.Ping(ctx).Err()
}

func (s *Server) requireProcess() *exec.Cmd {
	s.t.Helper()
	if s.Kind != Process {
		SkipOrFail(s.t, fmt.Sprintf("fault handles need a redis-server process; this Redis is %s", s.Kind))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd
}

func (s *Server) signal(sig syscall.Signal) {
	if cmd := s.requireProcess(); cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(sig)
	}
}

// Kill SIGKILLs the server and waits until its port refuses connections.
func (s *Server) Kill() {
	if s.Kind != Process {
		return
	}
	s.signal(syscall.SIGCONT) // a stopped process cannot die until continued on some kernels
	s.signal(syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop freezes the server (SIGSTOP): it accepts connections but answers nothing.
func (s *Server) Stop() { s.signal(syscall.SIGSTOP) }

// Cont resumes a stopped server (SIGCONT).
func (s *Server) Cont() { s.signal(syscall.SIGCONT) }

// Restart kills the server and starts a new, empty one on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.launch()
}

// Client returns a go-redis client for the server, closed by t.Cleanup.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// UniqueTopic returns a topic name no other test (or person) uses, so tests
// may share a Redis — even the machine's — without touching others' data.
func UniqueTopic(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	if len(name) > 60 {
		name = name[:60]
	}
	return fmt.Sprintf("test.%s.%s.%s", prefix, name, hex.EncodeToString(b))
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startDocker runs redis:7 through dockertest when a Docker engine answers.
func startDocker(t testing.TB) *Server {
	t.Helper()
	pool, err := dockertest.NewPool("")
	if err != nil || pool.Client.Ping() != nil {
		return nil
	}
	res, err := pool.Run("redis", "7-alpine", []string{})
	if err != nil {
		t.Logf("redistest: docker engine present but redis:7-alpine did not start: %v", err)
		return nil
	}
	t.Cleanup(func() { _ = pool.Purge(res) })
	addr := res.GetHostPort("6379/tcp")
	s := &Server{Kind: Docker, Addr: addr, URL: "redis://" + addr + "/0", t: t}
	if err := pool.Retry(s.ping); err != nil {
		t.Fatalf("redis container on %s: %v", addr, err)
	}
	return s
}

// StartDevServer starts dev mode's embedded server (what `sidecar --dev`
// runs when nothing answers) on a free port and returns a client of it;
// both stop when the test ends.
func StartDevServer(t testing.TB) *redis.Client {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	m, err := devredis.StartIfAbsent(addr)
	if err != nil || m == nil {
		t.Fatalf("embedded dev server on %s: %v", addr, err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close(); m.Close() })
	return rdb
}
