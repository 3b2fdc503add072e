package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// result is one load phase's outcome.
type result struct {
	n      int64
	errors int64
	dur    time.Duration
	lat    []time.Duration // sorted
}

func (r result) rate() float64 { return float64(r.n) / r.dur.Seconds() }

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(r.lat)-1))
	return r.lat[i]
}

// closedLoop runs c workers for d, each calling do back to back.
func closedLoop(c int, d time.Duration, do func(seq int64) error) result {
	var seq, errs atomic.Int64
	lats := make([][]time.Duration, c)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := range c {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := do(seq.Add(1)); err != nil {
					errs.Add(1)
					continue
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	r := result{dur: time.Since(start), errors: errs.Load()}
	for _, l := range lats {
		r.lat = append(r.lat, l...)
	}
	r.n = int64(len(r.lat))
	slices.Sort(r.lat)
	return r
}

// openLoop sends at a fixed rate for d (not waiting for answers before the
// next send), with up to 256 requests in flight.
func openLoop(rate int, d time.Duration, do func(seq int64) error) result {
	var errs atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	total := int64(d / interval)
	for i := int64(1); i <= total; i++ {
		next := start.Add(time.Duration(i-1) * interval)
		if w := time.Until(next); w > 0 {
			time.Sleep(w)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			t0 := time.Now()
			if err := do(i); err != nil {
				errs.Add(1)
				return
			}
			mu.Lock()
			lat = append(lat, time.Since(t0))
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(lat)
	return result{n: int64(len(lat)), errors: errs.Load(), dur: time.Since(start), lat: lat}
}

// body is a 1 KiB-ish JSON event carrying its sequence number and send time.
func body(size int, seq int64) []byte { return keyedBody(size, seq, "") }

// keyedBody is body with the event's partition key inside it too, so that
// the sink checks per-key order against what the publisher meant, not
// against whatever key the sidecar delivered.
func keyedBody(size int, seq int64, key string) []byte {
	return appendBody(make([]byte, 0, size), size, seq, key)
}

// appendBody appends keyedBody's bytes to b without fmt or a copy of its
// own: a 100-event bulk request is built in one buffer, and the load
// generator shares the CPUs with the sidecar it measures.
func appendBody(b []byte, size int, seq int64, key string) []byte {
	start := len(b)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"sent_ns":`...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, ',')
	if key != "" { // the bench's keys need no escaping
		b = append(b, `"key":"`...)
		b = append(b, key...)
		b = append(b, `",`...)
	}
	b = append(b, `"pad":"`...)
	if n := size - 2 - (len(b) - start); n > 0 {
		b = append(b, padding(n)...)
	}
	return append(b, '"', '}')
}

// pad is the filler of bodies, appended at once rather than byte by byte.
var pad = bytes.Repeat([]byte{'x'}, 1<<16)

func padding(n int) []byte {
	if n <= len(pad) {
		return pad[:n]
	}
	return bytes.Repeat([]byte{'x'}, n)
}

func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns * 2,
		DisableCompression:  true,
	}, Timeout: 10 * time.Second}
}

// post POSTs body and requires want.
func post(c *http.Client, url string, b []byte, want int) error {
	resp, err := c.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
