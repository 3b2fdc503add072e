package test

import (
	"bytes"
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

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// walkthrough is the README's "Try it: two services on one machine": its
// commands, by terminal, in order.
func walkthrough(t *testing.T) [][]string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "## Try it: two services on one machine\n")
	if !ok {
		t.Fatal("README has no section \"Try it: two services on one machine\"")
	}
	var terms [][]string
	for _, line := range strings.Split(rest, "\n") {
		if strings.HasPrefix(line, "## ") {
			break
		}
		cmd, ok := strings.CutPrefix(line, "    ")
		switch {
		case !ok || strings.TrimSpace(cmd) == "":
		case strings.HasPrefix(cmd, "# terminal "):
			terms = append(terms, nil)
		case len(terms) > 0:
			terms[len(terms)-1] = append(terms[len(terms)-1], cmd)
		}
	}
	if len(terms) != 4 {
		t.Fatalf("walkthrough has %d terminals, want 4: %q", len(terms), terms)
	}
	return terms
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestReadmeWalkthrough pastes the README's walkthrough into bash, line by
// line: three long-running commands in the background, then the curls.
// The only changes: `go run ./cmd/sidecar` is the binary built from the
// same source, examples/ is the repository's, the commands run in a fresh
// directory, and REDIS_URL names a free port, so --dev's embedded Redis is
// this test's own (not the machine's 6379).
func TestReadmeWalkthrough(t *testing.T) {
	terms := walkthrough(t)
	for _, port := range []string{"7700", "7701", "5003"} {
		ln, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatalf("the walkthrough uses port %s, which is taken here: %v", port, err)
		}
		ln.Close()
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	env := append(os.Environ(), fmt.Sprintf("REDIS_URL=redis://127.0.0.1:%d/0", redistest.FreePort(t)), "SIDECAR_LOG_FORMAT=console")
	literal := func(line string) string {
		line = strings.ReplaceAll(line, "go run ./cmd/sidecar", sidecarBin)
		return strings.ReplaceAll(line, "examples/", filepath.Join(repo, "examples")+"/")
	}
	var outs []*syncBuffer
	for i, term := range terms[:3] {
		if len(term) != 1 {
			t.Fatalf("terminal %d has %d commands, want one long-running command", i+1, len(term))
		}
		out := &syncBuffer{}
		cmd := exec.Command("bash", "-c", literal(term[0]))
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			_ = cmd.Wait()
			if t.Failed() {
				t.Logf("terminal %d (%s) printed:\n%s", i+1, term[0], out.String())
			}
		})
		outs = append(outs, out)
		// Each waits for the one before it to listen, as a person would.
		port := map[int]string{0: "7700", 1: "5003", 2: "7701"}[i]
		eventually.True(t, 20*time.Second, "terminal "+fmt.Sprint(i+1)+" listens on "+port, func() bool {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 100*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	run := func(line string) string {
		cmd := exec.Command("bash", "-c", literal(line))
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		return string(out)
	}
	publish, status := terms[3][0], terms[3][1]
	if got := run(publish); !strings.Contains(got, `"stream_id"`) || !strings.Contains(got, `"topic":"match.updated"`) {
		t.Fatalf("publish answered %s", got)
	}
	eventually.True(t, 20*time.Second, "the stand-in calendar service printed the delivery", func() bool {
		got := outs[1].String()
		return strings.Contains(got, "POST /manual-sync") && strings.Contains(got, `{"type":"match_updates","payload":{"match_id":42}}`) &&
			strings.Contains(got, "Ce-Source: processor") && strings.Contains(got, "Sidecar-Topic: match.updated")
	})
	eventually.True(t, 10*time.Second, `the calendar's /v1/status says "delivered": 1`, func() bool {
		return strings.Contains(run(status), `"delivered": 1`)
	})
	if n := strings.Count(outs[1].String(), "POST /manual-sync"); n != 1 {
		t.Fatalf("the receiver got %d deliveries, want 1", n)
	}
}
