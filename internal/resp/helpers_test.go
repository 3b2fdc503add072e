package resp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/tidwall/redcon"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
	"github.com/fogis-sidecar/sidecar/internal/relay"
	"github.com/fogis-sidecar/sidecar/internal/spool"
	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// fixture is an ingress wired as the sidecar wires it: a real Redis, the
// relay with a real spool, and feeds through the consumer group "calendar".
type fixture struct {
	addr  string
	redis *redistest.Server
	rdb   *redis.Client
	spool *spool.Set
	srv   *Server
}

type fixtureOpts struct {
	token    string
	max      int       // MaxMessage
	reserved []string  // Reserved
	process  bool      // a redis-server process, for fault tests
	pub      Publisher // instead of the relay
	streams  Streams   // instead of Redis
}

func start(t *testing.T, o fixtureOpts) *fixture {
	t.Helper()
	var r *redistest.Server
	if o.process {
		r = redistest.StartProcess(t)
	} else {
		r = redistest.Start(t)
	}
	rdb := r.Client(t)
	sp, err := spool.OpenSet(t.TempDir(), spool.Options{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	publisher := stream.NewPublisher(rdb, stream.PublisherOptions{DrainID: sp.ID()}, zerolog.Nop())
	rel := relay.New(publisher, sp, 300*time.Millisecond, relay.Options{
		Rejected: stream.IsRejected, Uncertain: stream.IsUncertain,
	}, zerolog.Nop())
	pub, streams := o.pub, o.streams
	if pub == nil {
		pub = rel
	}
	if streams == nil {
		streams = NewRedis(rdb, RedisConfig{Group: "calendar", Consumer: "c1", ClaimTimeout: 30 * time.Second, Grace: time.Second}, testLogger(t))
	}
	srv, err := New("127.0.0.1:0", Config{Service: "processor", Token: o.token, MaxMessage: o.max, Reserved: o.reserved, Grace: 2 * time.Second, Rescan: 200 * time.Millisecond, Version: "test"},
		pub, streams, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = publisher.Run(ctx) })
	wg.Go(func() { _ = rel.Run(ctx) })
	wg.Go(func() {
		if err := srv.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		sp.Close()
	})
	return &fixture{addr: srv.Addr().String(), redis: r, rdb: rdb, spool: sp, srv: srv}
}

// newTopic returns a fresh, valid topic name.
func newTopic(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "test.resp." + prefix + "." + hex.EncodeToString(b)
}

// testLogger writes warnings and errors to the test log; RESP_TEST_LOG=trace
// (or debug) shows every command and connection.
func testLogger(t *testing.T) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(os.Getenv("RESP_TEST_LOG"))
	if err != nil || lvl == zerolog.NoLevel {
		lvl = zerolog.WarnLevel
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: tlog{t}, NoColor: true}).Level(lvl)
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

// client returns a go-redis client of the ingress speaking proto (2 or 3).
func (f *fixture) client(t *testing.T, proto int, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: f.addr, Protocol: proto, Password: password, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// entries reads a topic's stream.
func (f *fixture) entries(t *testing.T, topic string) []*event.Event {
	t.Helper()
	msgs, err := f.rdb.XRange(context.Background(), stream.Key(topic), "-", "+").Result()
	if err != nil {
		t.Fatalf("xrange: %v", err)
	}
	var out []*event.Event
	for _, m := range msgs {
		ev, err := event.FromValues(m.Values)
		if err != nil {
			t.Fatalf("entry %s: %v", m.ID, err)
		}
		out = append(out, ev)
	}
	return out
}

// raw is a plain TCP connection for checking replies byte for byte.
type raw struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
	id int64
}

func (f *fixture) raw(t *testing.T) *raw {
	t.Helper()
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	r := &raw{t: t, nc: nc, br: bufio.NewReader(nc)}
	// The server's id of this connection, for HELLO's and CLIENT ID's replies.
	eventually.True(t, 5*time.Second, "the server to accept the connection", func() bool {
		f.srv.mu.Lock()
		defer f.srv.mu.Unlock()
		for c := range f.srv.conns {
			if c.nc.RemoteAddr().String() == nc.LocalAddr().String() {
				r.id = c.id
				return true
			}
		}
		return false
	})
	return r
}

// send writes one command as a RESP array.
func (r *raw) send(args ...string) {
	r.t.Helper()
	b := redcon.AppendArray(nil, len(args))
	for _, a := range args {
		b = redcon.AppendBulkString(b, a)
	}
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("send %q: %v", args, err)
	}
}

// expect reads exactly len(want) bytes and compares them.
func (r *raw) expect(what, want string) {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(want))
	n, err := io.ReadFull(r.br, got)
	if err != nil || string(got) != want {
		r.t.Fatalf("%s: got %q (%v), want %q", what, got[:n], err, want)
	}
}

// expectClosed checks the server closed the connection.
func (r *raw) expectClosed(what string) {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	// EOF, or a reset when the server closed with unread input.
	if b, err := r.br.ReadByte(); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		r.t.Fatalf("%s: got byte %q / %v, want the connection closed", what, b, err)
	}
}

// bulk and friends build expected RESP.
func bulk(s string) string   { return "$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n" }
func integer(n int64) string { return ":" + strconv.FormatInt(n, 10) + "\r\n" }
func array(n int) string     { return "*" + strconv.Itoa(n) + "\r\n" }
func push(n int) string      { return ">" + strconv.Itoa(n) + "\r\n" }

// helloReply is the HELLO answer for a connection id in a protocol version.
func helloReply(proto int, id int64) string {
	head := array(14)
	if proto == 3 {
		head = "%7\r\n"
	}
	return head + bulk("server") + bulk("redis") + bulk("version") + bulk(redisVersion) +
		bulk("proto") + integer(int64(proto)) + bulk("id") + integer(id) +
		bulk("mode") + bulk("standalone") + bulk("role") + bulk("master") + bulk("modules") + array(0)
}

// fakePublisher takes publishes in memory, or refuses them with err.
type fakePublisher struct {
	mu     sync.Mutex
	got    []*event.Event
	err    error
	spool  bool
	topics []string
}

func (p *fakePublisher) Publish(_ context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return event.Receipt{}, p.err
	}
	p.got = append(p.got, ev)
	p.topics = append(p.topics, topic)
	return event.Receipt{ID: ev.ID, Topic: topic, Spooled: p.spool, StreamID: "1-0"}, nil
}

// fakeStreams answers a fixed group count and feeds nothing.
type fakeStreams struct {
	groups int
	err    error
}

func (s fakeStreams) Groups(context.Context, string) (int, error) { return s.groups, s.err }
func (s fakeStreams) Consume(ctx context.Context, _ string, _ Deliver) error {
	<-ctx.Done()
	return nil
}
func (s fakeStreams) Topics(context.Context) ([]string, error) { return nil, nil }

// redisCLI runs redis-cli against the ingress and returns its output.
func (f *fixture) redisCLI(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		redistest.SkipOrFail(t, "redis-cli is not on PATH (apt-get install redis-tools)")
	}
	host, port, _ := net.SplitHostPort(f.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %q: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// python is an interpreter with redis-py importable.
type python struct {
	name    string // for the subtest: redis-py version
	bin     string
	env     []string
	version string
}

// pythons finds redis-py: python3 on PATH, Debian's /usr/bin/python3
// (python3-redis), and each directory of RESP_TEST_REDISPY_PATHS
// (colon-separated PYTHONPATH entries, e.g. checkouts of several redis-py
// tags) — so one run can cover redis-py 4 to 8.
func pythons(t *testing.T) []python {
	t.Helper()
	var cands []python
	for _, bin := range []string{"python3", "/usr/bin/python3"} {
		cands = append(cands, python{bin: bin})
	}
	for _, dir := range strings.Split(os.Getenv("RESP_TEST_REDISPY_PATHS"), ":") {
		if dir != "" {
			cands = append(cands, python{bin: "python3", env: []string{"PYTHONPATH=" + dir}})
		}
	}
	seen := map[string]bool{}
	var out []python
	for _, p := range cands {
		cmd := exec.Command(p.bin, "-c", "import redis; print(redis.__version__)")
		cmd.Env = append(os.Environ(), p.env...)
		b, err := cmd.Output()
		if err != nil {
			continue
		}
		p.version = strings.TrimSpace(string(b))
		p.name = "redis-py-" + p.version
		if seen[p.version] {
			continue
		}
		seen[p.version] = true
		out = append(out, p)
	}
	if len(out) == 0 {
		redistest.SkipOrFail(t, "no python3 with redis-py (apt-get install python3-redis)")
	}
	return out
}

// start runs a Python script with args; its stdout lines arrive on the channel.
func (p python) start(t *testing.T, script string, args ...string) (lines <-chan string, wait func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, p.bin, append([]string{"-c", script}, args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			ch <- sc.Text()
		}
		close(ch)
	}()
	var once sync.Once
	var werr error
	wait = func() error {
		once.Do(func() {
			werr = cmd.Wait()
			cancel()
			if werr != nil {
				werr = fmt.Errorf("%w; stderr:\n%s", werr, stderr.String())
			}
		})
		return werr
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = wait() })
	return ch, wait
}

// next returns the next stdout line of a script, failing after d.
func next(t *testing.T, lines <-chan string, d time.Duration, what string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("%s: the script ended", what)
		}
		return l
	case <-time.After(d):
		t.Fatalf("%s: nothing within %v", what, d)
	}
	return ""
}
