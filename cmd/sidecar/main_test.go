package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func noEnv(string) string { return "" }

func TestRunVersionHelpAndBadConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"version"}, noEnv, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "sidecar ") {
		t.Fatalf("version: got %q, %v", out.String(), err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"--help"}, noEnv, &out, &errOut); err != nil || !strings.Contains(out.String(), "SIDECAR_SUBSCRIBE") {
		t.Fatalf("--help: got err %v and output %q", err, out.String())
	}
	err := run(context.Background(), []string{"--subscribe", "bad topic=http://x/"}, noEnv, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "subscriptions[0].topic") {
		t.Fatalf("bad config: got %v, want an error naming subscriptions[0].topic", err)
	}
	if err := run(context.Background(), []string{"--listen", freeAddr(t), "--redis-url", "redis://" + freeAddr(t) + "/0", "--log-format", "nope"}, noEnv, &out, &errOut); err == nil {
		t.Fatal("bad log format: got nil error")
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
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

// TestDevModeRoundTrip runs the whole program in-process with --dev and no
// Redis at the address: publish over HTTP, receive the webhook, stop cleanly.
func TestDevModeRoundTrip(t *testing.T) {
	got := make(chan *http.Request, 1)
	bodies := make(chan string, 1)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- string(b)
	}))
	defer recv.Close()

	listen, redisAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--dev", "--service", "processor", "--listen", listen, "--spool-dir", t.TempDir(),
			"--redis-url", "redis://" + redisAddr + "/0", "--subscribe", "match.updated=" + recv.URL + "/manual-sync"}, noEnv, io.Discard, &logs)
	}()

	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev-mode sidecar not ready within 10s; logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var probeOut bytes.Buffer
	if err := run(context.Background(), []string{"health", "--listen", listen}, noEnv, &probeOut, io.Discard); err != nil || probeOut.String() != "ok\n" {
		t.Fatalf("sidecar health against a running sidecar: got %v %q", err, probeOut.String())
	}
	if !strings.Contains(logs.String(), "DEV MODE") {
		t.Fatalf("dev mode did not announce itself; logs:\n%s", logs.String())
	}
	resp, err := http.Post("http://"+listen+"/v1/publish/match.updated", "application/json", strings.NewReader(`{"match_id":42}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: got %d, want 202", resp.StatusCode)
	}
	select {
	case r := <-got:
		if b := <-bodies; b != `{"match_id":42}` || r.Header.Get("ce-source") != "processor" || r.URL.Path != "/manual-sync" {
			t.Fatalf("webhook: got %s %q source %q", r.URL.Path, b, r.Header.Get("ce-source"))
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no webhook within 10s; logs:\n%s", logs.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: got %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return within 15s of cancel")
	}
}

func TestCheckCommandExitCodes(t *testing.T) {
	var out, errOut bytes.Buffer
	dead := "redis://" + freeAddr(t) + "/0"
	err := run(context.Background(), []string{"check", "--redis-url", dead, "--spool-dir", t.TempDir()}, noEnv, &out, &errOut)
	var exit exitError
	if !errors.As(err, &exit) || exit.code != 1 || !strings.Contains(out.String(), "Overall Status: FAILED") {
		t.Fatalf("check against a dead Redis: got %v and\n%s", err, out.String())
	}
	out.Reset()
	err = run(context.Background(), []string{"check", "--json", "--redis-url", dead, "--spool-dir", t.TempDir()}, noEnv, &out, &errOut)
	var rep struct {
		Overall string `json:"overall"`
		Checks  []struct {
			Name   string `json:"name"`
			Passed bool   `json:"passed"`
		} `json:"checks"`
	}
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil || rep.Overall != "FAILED" || len(rep.Checks) == 0 || rep.Checks[0].Passed {
		t.Fatalf("check --json: got %v / %v:\n%s", err, jerr, out.String())
	}
	if err := run(context.Background(), []string{"health", "--listen", freeAddr(t)}, noEnv, &out, &errOut); err == nil {
		t.Fatal("health against nothing listening: got nil error")
	}
}
