package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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

// sink is the webhook receiver. It runs in a process of its own (the bench
// binary started as "bench sink ADDR"), like the sidecar, so that the
// plain-HTTP baseline crosses the same process boundary as the sidecar
// path does. It counts events by seq and measures publish→webhook latency
// from the sent_ns in the body; /stats reports, /reset clears.
type sink struct {
	url  string
	proc *proc
}

// sinkState is the sink process's memory.
type sinkState struct {
	mu   sync.Mutex
	seen map[int64]int
	lat  []int64
}

// serveSink runs the sink process until killed.
func serveSink(addr string) error {
	st := &sinkState{seen: map[int64]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		now := time.Now()
		seq, sent := field(b, `"seq":`), field(b, `"sent_ns":`)
		st.mu.Lock()
		st.seen[seq]++
		st.lat = append(st.lat, now.UnixNano()-sent)
		st.mu.Unlock()
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) })
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) {
		st.mu.Lock()
		st.seen, st.lat = map[int64]int{}, nil
		st.mu.Unlock()
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		st.mu.Lock()
		defer st.mu.Unlock()
		unique, dups := 0, 0
		for _, n := range st.seen {
			unique++
			dups += n - 1
		}
		lat := st.lat
		if r.URL.Query().Get("lat") != "1" {
			lat = nil
		}
		_ = json.NewEncoder(w).Encode(sinkStats{Unique: unique, Dups: dups, Lat: lat})
	})
	return http.ListenAndServe(addr, mux)
}

type sinkStats struct {
	Unique int     `json:"unique"`
	Dups   int     `json:"dups"`
	Lat    []int64 `json:"lat_ns,omitempty"`
}

func newSink(dir string) (*sink, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort())
	p, err := start(dir, "sink", nil, self, "sink", addr)
	if err != nil {
		return nil, err
	}
	s := &sink{url: "http://" + addr, proc: p}
	err = waitFor("sink", 10*time.Second, func() bool {
		resp, err := http.Get(s.url + "/stats")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return s, err
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
	if resp, err := http.Post(s.url+"/reset", "text/plain", nil); err == nil {
		resp.Body.Close()
	}
}

// counts returns unique events, duplicates, and (withLat) the sorted latencies.
func (s *sink) stats(withLat bool) (unique, dups int, lat []time.Duration) {
	u := s.url + "/stats"
	if withLat {
		u += "?lat=1"
	}
	resp, err := http.Get(u)
	if err != nil {
		return 0, 0, nil
	}
	defer resp.Body.Close()
	var st sinkStats
	_ = json.NewDecoder(resp.Body).Decode(&st)
	for _, ns := range st.Lat {
		lat = append(lat, time.Duration(ns))
	}
	slices.Sort(lat)
	return st.Unique, st.Dups, lat
}

func (s *sink) counts() (unique, dups int, lat []time.Duration) { return s.stats(false) }
