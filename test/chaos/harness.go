package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// harnessT lets a program use internal/redistest, whose helpers take a
// testing.TB. It implements the methods redistest calls (Helper, Cleanup,
// Fatal/Fatalf, Errorf, Logf, TempDir, Skip/Skipf/SkipNow, Name, Failed);
// the embedded nil TB is never reached. Fatal and Skip cannot end a
// goroutine as they do in a test: they panic with a harnessFailure, which
// guard turns back into an error where the harness was called.
type harnessT struct {
	testing.TB // nil: only the methods below are called

	dir  string // TempDir creates directories under it
	logf func(format string, args ...any)

	mu       sync.Mutex
	n        int
	cleanups []func()
	failed   atomic.Bool
}

// harnessFailure is what Fatal and Skip panic with.
type harnessFailure struct{ msg string }

func (h harnessFailure) Error() string { return "redis harness: " + h.msg }

func newHarnessT(dir string, logf func(string, ...any)) *harnessT {
	return &harnessT{dir: dir, logf: logf}
}

func (h *harnessT) Helper()      {}
func (h *harnessT) Name() string { return "chaos" }
func (h *harnessT) Failed() bool { return h.failed.Load() }

func (h *harnessT) Cleanup(f func()) {
	h.mu.Lock()
	h.cleanups = append(h.cleanups, f)
	h.mu.Unlock()
}

func (h *harnessT) Logf(format string, args ...any) { h.logf("redistest: "+format, args...) }
func (h *harnessT) Log(args ...any)                 { h.logf("redistest: %s", fmt.Sprint(args...)) }

func (h *harnessT) Errorf(format string, args ...any) {
	h.failed.Store(true)
	h.logf("redistest error: "+format, args...)
}

func (h *harnessT) Error(args ...any) { h.Errorf("%s", fmt.Sprint(args...)) }

func (h *harnessT) Fatalf(format string, args ...any) {
	h.failed.Store(true)
	panic(harnessFailure{fmt.Sprintf(format, args...)})
}

func (h *harnessT) Fatal(args ...any) { h.Fatalf("%s", fmt.Sprint(args...)) }

func (h *harnessT) Skipf(format string, args ...any) {
	panic(harnessFailure{"cannot run: " + fmt.Sprintf(format, args...)})
}

func (h *harnessT) Skip(args ...any) { h.Skipf("%s", fmt.Sprint(args...)) }
func (h *harnessT) SkipNow()         { h.Skipf("skipped") }

// TempDir returns a new directory under the run's work directory; it goes
// when the work directory does (kept with --keep).
func (h *harnessT) TempDir() string {
	h.mu.Lock()
	h.n++
	n := h.n
	h.mu.Unlock()
	d := filepath.Join(h.dir, fmt.Sprintf("redis-%02d", n))
	if err := os.MkdirAll(d, 0o700); err != nil {
		h.Fatalf("tempdir: %v", err)
	}
	return d
}

// cleanup runs the registered cleanups, last first, as testing does.
func (h *harnessT) cleanup() {
	h.mu.Lock()
	fs := h.cleanups
	h.cleanups = nil
	h.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		func() {
			defer func() { _ = recover() }() // a failing cleanup must not stop the others
			fs[i]()
		}()
	}
}

// guard calls f and returns a harness Fatal or Skip inside it as an error.
func guard(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			hf, ok := r.(harnessFailure)
			if !ok {
				panic(r)
			}
			err = hf
		}
	}()
	f()
	return nil
}
