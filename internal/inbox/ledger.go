// Package inbox is the receiving end of the HTTP fallback: a peer sidecar
// POSTs events here while Redis is down; they are delivered to this
// sidecar's subscriptions at once (through a bounded queue per subscription
// that honours its concurrency), and remembered (on disk) so the copy that
// later arrives through the stream is acknowledged without a second delivery.
package inbox

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Ledger remembers, per subscription, which event ids the inbox has
// delivered (durably) or is delivering now (in memory).
type Ledger struct {
	path string
	ttl  time.Duration

	mu        sync.Mutex
	f         *os.File
	delivered map[string]time.Time     // key+"\x00"+id → when
	inFlight  map[string]chan struct{} // closed when the delivery ends
}

// OpenLedger loads the ledger file (dropping entries older than ttl) and
// rewrites it compacted.
func OpenLedger(path string, ttl time.Duration) (*Ledger, error) {
	l := &Ledger{path: path, ttl: ttl, delivered: map[string]time.Time{}, inFlight: map[string]chan struct{}{}}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		cutoff := time.Now().Add(-ttl)
		for sc.Scan() {
			ms, rest, ok := strings.Cut(sc.Text(), " ")
			n, err := strconv.ParseInt(ms, 10, 64)
			if !ok || err != nil {
				continue // a torn last line
			}
			if at := time.UnixMilli(n); at.After(cutoff) {
				l.delivered[rest] = at
			}
		}
		f.Close()
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("inbox ledger: %w", err)
	}
	w := bufio.NewWriter(f)
	for k, at := range l.delivered {
		fmt.Fprintf(w, "%d %s\n", at.UnixMilli(), k)
	}
	if err := w.Flush(); err == nil {
		err = f.Sync()
	}
	f.Close()
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("inbox ledger: %w", err)
	}
	if l.f, err = os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o600); err != nil {
		return nil, fmt.Errorf("inbox ledger: %w", err)
	}
	return l, nil
}

func entry(key, id string) string { return key + "\x00" + id }

// begin marks a delivery of id to key as under way. It returns false when
// the id is already delivered or under way.
func (l *Ledger) begin(key, id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := entry(key, id)
	if _, ok := l.delivered[k]; ok {
		return false
	}
	if _, ok := l.inFlight[k]; ok {
		return false
	}
	l.inFlight[k] = make(chan struct{})
	return true
}

// end records the outcome of a delivery begun with begin.
func (l *Ledger) end(key, id string, ok bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := entry(key, id)
	var err error
	if ok {
		now := time.Now()
		if _, err = fmt.Fprintf(l.f, "%d %s\n", now.UnixMilli(), k); err == nil {
			err = l.f.Sync()
		}
		l.delivered[k] = now
	}
	if ch, found := l.inFlight[k]; found {
		close(ch)
		delete(l.inFlight, k)
	}
	return err
}

// Delivered reports whether the inbox delivered id to the subscription key.
// While an inbox delivery of it is still under way it waits for the outcome
// (or ctx), so the stream copy neither races it nor is dropped if it fails.
func (l *Ledger) Delivered(ctx context.Context, key, id string) bool {
	k := entry(key, id)
	for {
		l.mu.Lock()
		_, done := l.delivered[k]
		ch := l.inFlight[k]
		l.mu.Unlock()
		if done || ch == nil {
			return done
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// Close closes the ledger file.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
