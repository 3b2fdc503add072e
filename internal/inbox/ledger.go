// Package inbox is the receiving end of the HTTP fallback: a peer sidecar
// POSTs events here while Redis is down; they are delivered to this
// sidecar's subscriptions at once (through a bounded queue per subscription
// that honours its concurrency), and remembered (on disk) so the copy that
// later arrives through the stream is acknowledged without a second delivery.
package inbox

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// Ledger remembers, per subscription, which events the inbox has delivered
// (durably) or is delivering now (in memory), each by its digest.
//
// An event is known by a digest of its topic, id, source and data, not by
// its id alone: a peer that posts "order-42" with another body (forged, or
// a bug) must not make the genuine order-42 that arrives through the
// stream look delivered — it has a different digest and is delivered.
//
// Files written before digests held "key\x00<event id>" lines. They are
// read as they are and simply match no digest: the stream copy of an event
// the old version delivered through the inbox is delivered a second time
// (at-least-once, with the same webhook-id), never lost.
type Ledger struct {
	path string
	ttl  time.Duration

	mu        sync.Mutex
	f         *os.File
	delivered map[string]time.Time     // key+"\x00"+digest → when
	inFlight  map[string]chan struct{} // closed when the delivery ends
}

// digest identifies ev as published to topic: hex of SHA-256 over topic,
// id, source and SHA-256 of the data, NUL-separated. Topics and ids hold no
// NUL and the data hash has a fixed length, so the fields cannot run into
// one another.
func digest(topic string, ev *event.Event) string {
	data := sha256.Sum256(ev.Data)
	h := sha256.New()
	for _, f := range []string{topic, ev.ID, ev.Source} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	h.Write(data[:])
	return hex.EncodeToString(h.Sum(nil))
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

func entry(key, digest string) string { return key + "\x00" + digest }

// begin marks a delivery of the event with digest to key as under way. It
// returns false when that event is already delivered or under way.
func (l *Ledger) begin(key, digest string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := entry(key, digest)
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
func (l *Ledger) end(key, digest string, ok bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := entry(key, digest)
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

// Delivered reports whether the inbox delivered the event with digest to
// the subscription key. While an inbox delivery of it is still under way it
// waits for the outcome (or ctx), so the stream copy neither races it nor
// is dropped if it fails.
func (l *Ledger) Delivered(ctx context.Context, key, digest string) bool {
	k := entry(key, digest)
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
