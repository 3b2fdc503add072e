package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
)

// sink is the webhook receiver. It runs in a process of its own (the bench
// binary started as "bench sink ADDR"), like the sidecar, so that the
// plain-HTTP baseline crosses the same process boundary as the sidecar
// path does. It counts events by seq and measures publish→webhook latency
// from the sent_ns in the body; /stats reports, /reset clears.
//
// /hook takes one event per request (the body is the event's data) or a
// CloudEvents batch (application/cloudevents-batch+json: each element's
// data is one event's body). /slow is /hook after a 10 ms pause, a webhook
// whose latency, not its CPU, bounds a subscriber's rate. Events whose body
// names a "key" are checked for per-key order: a first delivery whose seq
// is below the highest seq already delivered for its key is out of order.
type sink struct {
	url  string
	proc *proc
}

// sinkState is the sink process's memory.
type sinkState struct {
	mu        sync.Mutex
	seen      map[int64]int
	lat       []int64
	keyMax    map[string]int64 // per key: the highest seq delivered
	ooo       int
	requests  int
	bad       int   // events without a seq; batches not a JSON array or with wrong batch headers
	partTopic int   // requests whose Sidecar-Topic names a partition (orders#3)
	first     int64 // arrival of the first and the last event, Unix ns
	last      int64
	unique    int // distinct seqs seen, and deliveries beyond the first (kept as they come: /stats is polled)
	dups      int
}

func (st *sinkState) clear() {
	st.seen, st.lat, st.keyMax = map[int64]int{}, nil, map[string]int64{}
	st.ooo, st.requests, st.bad, st.partTopic, st.first, st.last, st.unique, st.dups = 0, 0, 0, 0, 0, 0, 0, 0
}

// record counts one request's events (in body order, which is stream order).
func (st *sinkState) record(r *http.Request, b []byte) {
	now := time.Now().UnixNano()
	var events [][]byte
	bad := 0
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/cloudevents-batch+json" {
		// gjson, not encoding/json: the sink must not be what limits a
		// batched phase (it shares the two cores with what it measures).
		arr := gjson.ParseBytes(b)
		if !arr.IsArray() || !gjson.ValidBytes(b) {
			bad++
		}
		n := 0
		arr.ForEach(func(_, m gjson.Result) bool {
			n++
			if d := m.Get("data_base64"); d.Exists() {
				raw, err := base64.StdEncoding.DecodeString(d.Str)
				if err != nil {
					bad++
					return true
				}
				events = append(events, raw)
				return true
			}
			events = append(events, []byte(m.Get("data").Raw))
			return true
		})
		// The batch's own headers (spec: Batched delivery) must describe it.
		if r.Header.Get("Sidecar-Batch-Size") != strconv.Itoa(n) || !strings.HasPrefix(r.Header.Get("webhook-id"), "batch_") {
			bad++
		}
	} else {
		events = [][]byte{b}
	}
	partTopic := strings.Contains(r.Header.Get("Sidecar-Topic"), "#")
	st.mu.Lock()
	defer st.mu.Unlock()
	st.requests++
	st.bad += bad
	if st.first == 0 {
		st.first = now
	}
	st.last = now
	if partTopic {
		st.partTopic++
	}
	for _, ev := range events {
		seq, sent := field(ev, `"seq":`), field(ev, `"sent_ns":`)
		if seq < 0 {
			st.bad++
			continue
		}
		if key := strField(ev, `"key":"`); key != "" {
			if top, ok := st.keyMax[key]; ok && st.seen[seq] == 0 && seq < top {
				st.ooo++
			}
			if seq > st.keyMax[key] {
				st.keyMax[key] = seq
			}
		}
		if st.seen[seq]++; st.seen[seq] == 1 {
			st.unique++
		} else {
			st.dups++
		}
		st.lat = append(st.lat, now-sent)
	}
}

// serveSink runs the sink process until killed.
func serveSink(addr string) error {
	st := &sinkState{}
	st.clear()
	mux := http.NewServeMux()
	mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		st.record(r, b)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		time.Sleep(10 * time.Millisecond)
		st.record(r, b)
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) })
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) {
		st.mu.Lock()
		st.clear()
		st.mu.Unlock()
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		st.mu.Lock()
		defer st.mu.Unlock()
		s := sinkStats{OutOfOrder: st.ooo, Requests: st.requests, Bad: st.bad, PartitionTopic: st.partTopic, First: st.first, Last: st.last,
			Unique: st.unique, Dups: st.dups}
		if r.URL.Query().Get("seqs") == "1" {
			for seq, n := range st.seen {
				s.Seqs = append(s.Seqs, seq)
				if n > 1 {
					s.DupSeqs = append(s.DupSeqs, seq)
				}
			}
		}
		if r.URL.Query().Get("lat") == "1" {
			s.Lat = st.lat
		}
		_ = json.NewEncoder(w).Encode(s)
	})
	return http.ListenAndServe(addr, mux)
}

type sinkStats struct {
	Unique         int     `json:"unique"`
	Dups           int     `json:"dups"`
	OutOfOrder     int     `json:"out_of_order"`
	Requests       int     `json:"requests"`
	Bad            int     `json:"bad"`
	PartitionTopic int     `json:"partition_topic"`
	First          int64   `json:"first_ns"`
	Last           int64   `json:"last_ns"`
	Lat            []int64 `json:"lat_ns,omitempty"`
	Seqs           []int64 `json:"seqs,omitempty"`
	DupSeqs        []int64 `json:"dup_seqs,omitempty"`
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

// strField reads a string member up to its closing quote (the bench's
// keys need no escaping).
func strField(b []byte, key string) string {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return ""
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// span is the time from the first event's arrival to the last's.
func (st sinkStats) span() time.Duration { return time.Duration(st.Last - st.First) }

func (s *sink) reset() {
	if resp, err := http.Post(s.url+"/reset", "text/plain", nil); err == nil {
		resp.Body.Close()
	}
}

// full returns the sink's figures; query adds lat=1 (latencies) or seqs=1
// (every seq seen).
func (s *sink) full(query string) sinkStats {
	var st sinkStats
	resp, err := http.Get(s.url + "/stats?" + query)
	if err != nil {
		return st
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&st)
	return st
}

// stats returns unique events, duplicates, and (withLat) the sorted latencies.
func (s *sink) stats(withLat bool) (unique, dups int, lat []time.Duration) {
	q := ""
	if withLat {
		q = "lat=1"
	}
	st := s.full(q)
	for _, ns := range st.Lat {
		lat = append(lat, time.Duration(ns))
	}
	slices.Sort(lat)
	return st.Unique, st.Dups, lat
}

func (s *sink) counts() (unique, dups int, lat []time.Duration) { return s.stats(false) }
