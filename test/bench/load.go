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
func body(size int, seq int64) []byte {
	b := fmt.Appendf(make([]byte, 0, size), `{"seq":%d,"sent_ns":%d,"pad":"`, seq, time.Now().UnixNano())
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, '"', '}')
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

// sink is the webhook receiver: it counts events by seq and measures
// publish→webhook latency from the sent_ns in the body.
type sink struct {
	srv *http.Server
	url string

	mu   sync.Mutex
	seen map[int64]int
	lat  []time.Duration
}

func newSink() (*sink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{seen: map[int64]int{}}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve)}
	s.url = "http://" + l.Addr().String()
	go s.srv.Serve(l)
	return s, nil
}

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	now := time.Now()
	if r.URL.Path == "/hook" {
		seq, sent := field(b, `"seq":`), field(b, `"sent_ns":`)
		s.mu.Lock()
		s.seen[seq]++
		s.lat = append(s.lat, now.Sub(time.Unix(0, sent)))
		s.mu.Unlock()
	}
	w.WriteHeader(http.StatusOK)
}

func field(b []byte, key string) int64 {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return -1
	}
	j := i + len(key)
	k := j
	for k < len(b) && b[k] >= '0' && b[k] <= '9' {
		k++
	}
	n, _ := strconv.ParseInt(string(b[j:k]), 10, 64)
	return n
}

func (s *sink) reset() {
	s.mu.Lock()
	s.seen = map[int64]int{}
	s.lat = nil
	s.mu.Unlock()
}

// counts returns unique events, duplicates, and the sorted latencies.
func (s *sink) counts() (unique, dups int, lat []time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.seen {
		unique++
		dups += n - 1
	}
	lat = slices.Clone(s.lat)
	slices.Sort(lat)
	return unique, dups, lat
}
