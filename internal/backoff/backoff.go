// Package backoff provides capped exponential backoff with jitter, used for
// webhook retries and for reconnecting to Redis.
package backoff

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Policy is exponential backoff from Initial, doubling per attempt, capped at Max.
type Policy struct {
	Initial time.Duration
	Max     time.Duration
}

// Delay returns the wait before retry number n (n = 1 for the first retry).
// It uses "equal jitter": half the exponential step is fixed, half random, so
// waits grow reliably yet replicas that failed together do not retry together.
func (p Policy) Delay(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	d := p.Initial
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	if d > p.Max {
		d = p.Max
	}
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Sleep waits for d or until ctx is done; it reports whether the full wait elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Permanent reports whether a failed attempt says retrying cannot help: the
// error (or one it wraps) has a method Permanent() bool that returns true.
func Permanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// RetryAfter is the wait a failed attempt asks for (a receiver's
// Retry-After): the error's RetryAfter() time.Duration, or 0.
func RetryAfter(err error) time.Duration {
	var r interface{ RetryAfter() time.Duration }
	if errors.As(err, &r) {
		return r.RetryAfter()
	}
	return 0
}
