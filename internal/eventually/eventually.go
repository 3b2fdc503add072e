// Package eventually provides the tests' one way to wait: poll a condition
// until it holds or a deadline passes, never a fixed sleep.
package eventually

import (
	"testing"
	"time"
)

// True polls cond every 10 ms until it holds; after d it fails the test,
// naming what it waited for.
func True(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
