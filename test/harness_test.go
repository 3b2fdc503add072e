// Package test holds end-to-end tests: they build the real sidecar binary,
// run it as processes beside a real redis-server and a real webhook
// receiver, and check exact delivery.
package test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

var sidecarBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sidecar-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sidecarBin = filepath.Join(dir, "sidecar")
	args := []string{"build", "-o", sidecarBin}
	if raceEnabled {
		args = append(args, "-race") // the process under test is race-checked too
	}
	build := exec.Command("go", append(args, "../cmd/sidecar")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building sidecar:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sidecar is one running sidecar process.
type sidecar struct {
	t    *testing.T
	name string
	env  []string
	addr string
	log  *os.File
	// spoolDir is this sidecar's own spool, kept across restarts.
	spoolDir string

	child
}

// child is a process a test runs (a sidecar, a FOGIS stand-in): its
// command, a channel closed when it has exited, and how it exited.
type child struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	started time.Time
}

// launch starts cmd with its output to log and returns the channel that
// closes when it exits.
func (p *child) launch(t *testing.T, cmd *exec.Cmd, log *os.File) chan struct{} {
	t.Helper()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.started = cmd, done, time.Now()
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return done
}

// kill sends SIGKILL and waits for the process to go (a crash: its ports
// and connections go at once).
func (p *child) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// startSidecar runs the binary with env (KEY=VALUE) on a free port and
// waits until /healthz answers.
func startSidecar(t *testing.T, name string, env ...string) *sidecar {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	spoolDir := filepath.Join(t.TempDir(), "spool") // kept across restart()
	s := &sidecar{t: t, name: name, addr: addr, log: logf, spoolDir: spoolDir,
		env: append([]string{"SIDECAR_LISTEN=" + addr, "SIDECAR_LOG_LEVEL=debug", "SIDECAR_SPOOL_DIR=" + spoolDir,
			"PATH=" + os.Getenv("PATH")}, env...)}
	s.start()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("---- %s log ----\n%s", name, tail(b, 60))
		}
		logf.Close()
	})
	return s
}

func tail(b []byte, lines int) string {
	ls := strings.Split(string(b), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

func (s *sidecar) start() {
	s.t.Helper()
	cmd := exec.Command(sidecarBin)
	cmd.Env = s.env
	done := s.launch(s.t, cmd, s.log)
	eventually.True(s.t, 30*time.Second, s.name+" /healthz", func() bool {
		select {
		case <-done:
			b, _ := os.ReadFile(s.log.Name())
			s.t.Fatalf("%s exited during start: %s", s.name, tail(b, 20))
		default:
		}
		resp, err := http.Get("http://" + s.addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// term sends SIGTERM and returns the exit error (nil = exit 0) once the
// process has gone, failing the test if that takes longer than d.
func (s *sidecar) term(d time.Duration) error {
	s.t.Helper()
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(d):
		s.t.Fatalf("%s did not exit within %v of SIGTERM", s.name, d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// restart starts the process again with the same environment and port.
func (s *sidecar) restart() { s.t.Helper(); s.start() }

func (s *sidecar) url(path string) string { return "http://" + s.addr + path }

// receipt is the publish API's 202 body.
type receipt struct {
	ID       string `json:"id"`
	Topic    string `json:"topic"`
	StreamID string `json:"stream_id"`
	Spooled  bool   `json:"spooled"`
	Fallback string `json:"fallback"`
	Error    string `json:"error"`
	Code     string `json:"code"`
}

// publish POSTs body to the sidecar's publish endpoint.
func (s *sidecar) publish(topic string, body []byte, headers ...string) (int, receipt) {
	s.t.Helper()
	return s.post("/v1/publish/"+topic, body, headers...)
}

// post POSTs a JSON body to path (a publish endpoint or a route) and decodes the answer.
func (s *sidecar) post(path string, body []byte, headers ...string) (int, receipt) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url(path), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("publish: %v", err)
	}
	defer resp.Body.Close()
	var r receipt
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &r); err != nil {
		s.t.Fatalf("publish answered %d with non-JSON %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, r
}

// readyz returns /readyz's status code and JSON body.
func (s *sidecar) readyz() (int, map[string]any) {
	s.t.Helper()
	resp, err := http.Get(s.url("/readyz"))
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// mustPublish publishes and requires a 202.
func (s *sidecar) mustPublish(topic string, body []byte, headers ...string) receipt {
	s.t.Helper()
	code, r := s.publish(topic, body, headers...)
	if code != http.StatusAccepted || r.ID == "" || r.StreamID == "" {
		s.t.Fatalf("publish: got %d %+v, want 202 with id and stream_id", code, r)
	}
	return r
}

// mustPublishSpooled publishes and requires a 202 that says spooled.
func (s *sidecar) mustPublishSpooled(topic string, body []byte) receipt {
	s.t.Helper()
	code, r := s.publish(topic, body)
	if code != http.StatusAccepted || !r.Spooled || r.ID == "" {
		s.t.Fatalf("publish: got %d %+v, want 202 spooled", code, r)
	}
	return r
}

// received is one request the webhook receiver got.
type received struct {
	Header http.Header
	Body   []byte
	At     time.Time
}

// receiver is a real HTTP webhook endpoint that records every request and
// answers with the status its respond func picks (200 by default).
type receiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	got     []received
	respond func(r received, n int) int // n = requests so far with this webhook-id
	delay   time.Duration
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec := received{Header: r.Header.Clone(), Body: body, At: time.Now()}
		rc.mu.Lock()
		n := 1
		for _, g := range rc.got {
			if g.Header.Get("webhook-id") == rec.Header.Get("webhook-id") {
				n++
			}
		}
		rc.got = append(rc.got, rec)
		respond, delay := rc.respond, rc.delay
		rc.mu.Unlock()
		if delay > 0 {
			time.Sleep(delay)
		}
		status := http.StatusOK
		if respond != nil {
			status = respond(rec, n)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// set changes how the receiver answers, safely while requests arrive.
func (rc *receiver) set(delay time.Duration, respond func(r received, n int) int) {
	rc.mu.Lock()
	rc.delay, rc.respond = delay, respond
	rc.mu.Unlock()
}

func (rc *receiver) url() string { return rc.srv.URL + "/manual-sync" }

func (rc *receiver) all() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// distinct is how many different events (webhook-ids) arrived.
func (rc *receiver) distinct() int {
	seen := map[string]bool{}
	for _, id := range ids(rc.all()) {
		seen[id] = true
	}
	return len(seen)
}

func (rc *receiver) count() int { rc.mu.Lock(); defer rc.mu.Unlock(); return len(rc.got) }

// ids returns the webhook-id of each request, in arrival order.
func ids(rs []received) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Header.Get("webhook-id")
	}
	return out
}

// signFor computes a Standard Webhooks signature with the tests' secret.
func signFor(t *testing.T, id, ts string, body []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%s.%s", id, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// writeConfig writes a YAML config file and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// subscriberConfig is a calendar sidecar's YAML with one subscription.
func subscriberConfig(t *testing.T, topic, url string, extra string) string {
	return writeConfig(t, fmt.Sprintf(`service: calendar
subscriptions:
  - topic: %s
    url: %s
    max_attempts: 3
    backoff: {initial: 20ms, max: 100ms}
%s`, topic, url, extra))
}

// startPair starts the FOGIS shape: a redis-server, a webhook receiver, a
// publishing sidecar ("processor") and a subscribing one ("calendar")
// delivering a fresh topic to the receiver. calendarEnv is added to the
// calendar sidecar's environment.
func startPair(t *testing.T, prefix string, calendarEnv ...string) (*redistest.Server, string, *receiver, *sidecar, *sidecar) {
	t.Helper()
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, prefix)
	rc := newReceiver(t)
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	env := append([]string{"REDIS_URL=" + redis.URL, "SIDECAR_CONFIG=" + subscriberConfig(t, topic, rc.url(), "")}, calendarEnv...)
	sub := startSidecar(t, "calendar", env...)
	return redis, topic, rc, pub, sub
}

// startFallbackPair is startPair with a fallback: the processor has a
// route /sync for the topic whose fallback is the calendar sidecar's inbox,
// and both share the webhook secret that authenticates it.
func startFallbackPair(t *testing.T, prefix string) (*redistest.Server, string, *receiver, *sidecar, *sidecar) {
	t.Helper()
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, prefix)
	rc := newReceiver(t)
	cal := startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_WEBHOOK_SECRET="+secret,
		"SIDECAR_CONFIG="+subscriberConfig(t, topic, rc.url(), ""))
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_WEBHOOK_SECRET="+secret, "SIDECAR_CONFIG="+writeConfig(t, fmt.Sprintf(`service: processor
routes:
  - path: /sync
    topic: %s
    fallback: %s
`, topic, cal.url("/v1/inbox/"+topic))))
	return redis, topic, rc, pub, cal
}
