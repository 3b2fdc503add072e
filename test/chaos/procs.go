package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
)

// proc is one sidecar process, restartable with the same environment,
// port, spool and log file.
type proc struct {
	name    string
	bin     string
	env     []string
	addr    string // SIDECAR_LISTEN, the same across restarts
	logPath string
	clock   func(time.Time) time.Duration // offset from the start of the load, for markers
	// issue records something a sidecar must not do (exit unasked, fail to
	// start, ignore SIGTERM): a violation of its own kind.
	issue func(what string)

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd has exited
	exitErr  error
	expected bool // the exit was asked for (kill/term)
	stopped  bool // SIGSTOPped
	starts   int
}

// now is the current offset from the start of the load, printed.
func (p *proc) now() string { return fmtDur(p.clock(time.Now())) }

var healthClient = &http.Client{Timeout: time.Second}

// start launches the process and waits until /healthz answers. A process
// that exits meanwhile, or does not answer within 30 s, is an error.
func (p *proc) start(ctx context.Context) error {
	p.mu.Lock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			p.mu.Unlock()
			return fmt.Errorf("%s: already running", p.name)
		}
	}
	p.starts++
	n := p.starts
	p.mu.Unlock()

	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "==== chaos: start #%d of %s at %s ====\n", n, p.name, p.now())
	cmd := exec.Command(p.bin)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the chaos program dies without cleaning up, its sidecars die too.
	// Its own process group keeps a terminal's Ctrl-C away from it: the
	// chaos program decides how its sidecars end.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.exitErr, p.expected, p.stopped = cmd, done, nil, false, false
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		expected := p.expected
		p.mu.Unlock()
		close(done)
		if !expected {
			p.issue(fmt.Sprintf("%s exited without being asked to (%v) at %s; log tail:\n%s",
				p.name, err, p.now(), logTail(p.logPath, 15)))
		}
	}()
	err = waitFor(ctx, 30*time.Second, p.name+" /healthz", func() bool {
		select {
		case <-done:
			return true
		default:
		}
		resp, err := healthClient.Get("http://" + p.addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	select {
	case <-done:
		return fmt.Errorf("%s exited during start: %v", p.name, p.exitError())
	default:
	}
	return err
}

func (p *proc) exitError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// running reports whether the process is alive (stopped counts as alive).
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the live process; it reports false when none runs.
func (p *proc) signal(sig syscall.Signal, expectExit bool) (chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil, false
	}
	select {
	case <-p.done:
		return nil, false
	default:
	}
	if expectExit {
		p.expected = true
		if p.stopped {
			_ = p.cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot act on SIGTERM
			p.stopped = false
		}
	}
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
	_ = p.cmd.Process.Signal(sig)
	return p.done, true
}

// kill sends SIGKILL and waits until the process is gone.
func (p *proc) kill() bool {
	done, ok := p.signal(syscall.SIGKILL, true)
	if ok {
		<-done
	}
	return ok
}

// term sends SIGTERM and waits up to d for a clean exit (status 0). A
// process that takes longer is killed, and that is an error.
func (p *proc) term(d time.Duration) (bool, error) {
	done, ok := p.signal(syscall.SIGTERM, true)
	if !ok {
		return false, nil
	}
	select {
	case <-done:
	case <-time.After(d):
		p.kill()
		return true, fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.name, d)
	}
	if err := p.exitError(); err != nil {
		return true, fmt.Errorf("%s exited with %v after SIGTERM, want status 0", p.name, err)
	}
	return true, nil
}

func (p *proc) stop() bool { _, ok := p.signal(syscall.SIGSTOP, false); return ok }
func (p *proc) cont() bool { _, ok := p.signal(syscall.SIGCONT, false); return ok }

func (p *proc) isStopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

// ensureUp continues a stopped process and starts a dead one, retrying for
// up to d: the end of a run needs every sidecar back.
func (p *proc) ensureUp(ctx context.Context, d time.Duration) error {
	if p.isStopped() {
		p.cont()
	}
	deadline := time.Now().Add(d)
	for !p.running() {
		err := p.start(ctx)
		if err == nil {
			return nil
		}
		if p.running() || ctx.Err() != nil || time.Now().After(deadline) {
			return err // alive but not answering, or out of time
		}
		if !backoff.Sleep(ctx, time.Second) {
			return errors.Join(err, ctx.Err())
		}
	}
	return nil
}

// logTail is the last lines of a log file.
func logTail(path string, lines int) string {
	b, _ := os.ReadFile(path)
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return "    " + strings.Join(ls, "\n    ")
}
