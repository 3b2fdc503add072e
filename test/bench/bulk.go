package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// perRequest is the number of events in one bulk publish.
const perRequest = 100

const (
	ndjson  = "application/x-ndjson"
	ceBatch = "application/cloudevents-batch+json"
)

// bulkBody is one bulk publish of n events with seqs first, first+1, …:
// NDJSON lines of body(), or a CloudEvents batch whose members carry those
// bodies as data. keyOf (may be nil) gives each batch member a partitionkey
// and puts the key in its body for the sink's per-key order check.
func bulkBody(format string, size int, first int64, n int, keyOf func(seq int64) string) []byte {
	buf := make([]byte, 0, n*(size+160))
	if format == ndjson {
		for i := range int64(n) {
			buf = append(appendBody(buf, size, first+i, ""), '\n')
		}
		return buf
	}
	buf = append(buf, '[')
	for i := range int64(n) {
		seq, key := first+i, ""
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"specversion":"1.0","id":"bench-`...)
		buf = strconv.AppendInt(buf, seq, 10)
		buf = append(buf, `","source":"bench","type":"bench","datacontenttype":"application/json",`...)
		if keyOf != nil {
			key = keyOf(seq)
			buf = append(append(append(buf, `"partitionkey":"`...), key...), `",`...)
		}
		buf = append(buf, `"data":`...)
		buf = appendBody(buf, size, seq, key)
		buf = append(buf, '}')
	}
	return append(buf, ']')
}

// postBulk publishes one bulk body and requires 202 with n receipts; it
// returns how many of them say spooled.
func postBulk(c *http.Client, url, format string, b []byte, n int) (spooled int, err error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", format)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return 0, fmt.Errorf("status %d: %.200s", resp.StatusCode, raw)
	}
	// Counted, not decoded: the load generator shares the CPUs with the
	// sidecar, and each receipt has exactly one "id" member.
	if got := bytes.Count(raw, []byte(`"id":`)); got != n || !bytes.HasPrefix(raw, []byte(`{"events":[`)) {
		return 0, fmt.Errorf("%d receipts for %d events: %.200s", got, n, raw)
	}
	return bytes.Count(raw, []byte(`"spooled":true`)), nil
}

// bulk: closed-loop bulk publishes of 100 events, both formats, at 16 and
// 64 clients, against plain HTTP single requests at the same concurrency.
func (b *bench) bulk() error {
	pub, url, err := b.sidecar("bulk-publisher")
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: b.redisAddr})
	defer rdb.Close()
	ctx := context.Background()
	b.printf("## Bulk publish (%d events per request)\n\n| clients | format | requests/s | events/s | plain HTTP/s | events/s vs plain HTTP | p50 ms | p99 ms | max ms | sidecar CPU µs/event | load generator CPU µs/event | errors | spooled | lost |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n", perRequest)
	var notes []string // each run's first error
	for _, c := range []int{16, 64} {
		plain := b.plainRate(c)
		for _, format := range []string{ndjson, ceBatch} {
			topic := fmt.Sprintf("bench.bulk.%s.c%d", map[string]string{ndjson: "ndjson", ceBatch: "cebatch"}[format], c)
			hc := newClient(c)
			var once sync.Once
			var firstErr error
			var spooled atomic.Int64
			cpu0, gen0 := cpuTime(pub.pid()), cpuTime(os.Getpid())
			r := closedLoop(c, b.o.duration, func(seq int64) error {
				sp, err := postBulk(hc, url+"/v1/publish/"+topic, format, bulkBody(format, b.o.size, (seq-1)*perRequest+1, perRequest, nil), perRequest)
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("%s c=%d: %w", format, c, err) })
				}
				spooled.Add(int64(sp))
				return err
			})
			cpu, gen := cpuTime(pub.pid())-cpu0, cpuTime(os.Getpid())-gen0
			if r.n == 0 {
				return firstErr
			}
			if firstErr != nil {
				notes = append(notes, firstErr.Error())
			}
			// Every acknowledged event must reach the stream, the spooled
			// ones once the spool drains (a failed request may have written
			// some too: never count those as lost).
			acked := r.n * perRequest
			n, seen, last := int64(-1), int64(-1), time.Now()
			for n < acked && time.Since(last) < 10*time.Second {
				if n, err = rdb.XLen(ctx, "sidecar:{"+topic+"}").Result(); err != nil {
					return err
				}
				if n != seen {
					seen, last = n, time.Now()
				}
				if n < acked {
					time.Sleep(50 * time.Millisecond)
				}
			}
			lost := max(acked-n, 0)
			events := float64(r.n*perRequest) / r.dur.Seconds()
			perEvent := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(max(r.n*perRequest, 1)) }
			b.printf("| %d | %s | %.0f | %.0f | %.0f | %.1f× | %s | %s | %s | %.1f | %.1f | %d | %d | %d |\n", c, format, r.rate(), events, plain, events/plain,
				ms(r.pct(50)), ms(r.pct(99)), ms(r.pct(100)), perEvent(cpu), perEvent(gen), r.errors, spooled.Load(), lost)
			b.m.bulk = append(b.m.bulk, bulkFigure{format: format, clients: c, events: events, plain: plain})
			b.m.check(fmt.Sprintf("bulk %s c%d", format, c), lost, 0, -1)
			// Keep Redis small for the phases after this one.
			_ = rdb.Del(ctx, "sidecar:{"+topic+"}").Err()
		}
	}
	for _, n := range notes {
		b.printf("\nFirst error: %.300s\n", n)
	}
	b.printf("\n")
	return nil
}

// ackSet collects the seqs of acknowledged events.
type ackSet struct {
	mu   sync.Mutex
	seqs []int64
}

func (a *ackSet) add(first int64, n int) {
	a.mu.Lock()
	for i := range int64(n) {
		a.seqs = append(a.seqs, first+i)
	}
	a.mu.Unlock()
}

func (a *ackSet) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seqs)
}

// missing counts the acknowledged seqs the sink has not seen.
func (a *ackSet) missing(seen []int64) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	set := make(map[int64]struct{}, len(seen))
	for _, s := range seen {
		set[s] = struct{}{}
	}
	var n int64
	for _, s := range a.seqs {
		if _, ok := set[s]; !ok {
			n++
		}
	}
	return n
}

// batchE2E: 64 bulk publishers through one sidecar; another delivers in
// CloudEvents batches to the sink.
// batchMaxLag is how many published events may await delivery before the
// batched end-to-end phase's publishers hold back.
const batchMaxLag = 20000

func (b *bench) batchE2E() error {
	const topic = "bench.batch"
	cfg := filepath.Join(b.dir, topic+".yaml")
	_ = os.WriteFile(cfg, []byte(fmt.Sprintf("subscriptions:\n  - topic: %s\n    url: %s/hook\n    concurrency: 4\n    batch: {max_events: 100, max_wait: 5ms}\n", topic, b.sink.url)), 0o600)
	sub, _, err := b.sidecar("batch-subscriber", "SIDECAR_CONFIG="+cfg)
	if err != nil {
		return err
	}
	defer sub.stop()
	pub, pubURL, err := b.sidecar("batch-publisher")
	if err != nil {
		return err
	}
	defer pub.stop()
	plain := b.plainRate(64)
	b.sink.reset()
	var acked ackSet
	var firstErr error
	var once sync.Once
	hc := newClient(64)
	// Publishers hold back while more than maxLag events wait for delivery
	// (backpressure): otherwise 64 closed-loop publishers take the CPU the
	// delivery needs and the phase measures a growing backlog, not the
	// rate the pipeline sustains.
	var delivered, inFlight atomic.Int64
	stopPoll := make(chan struct{})
	var poll sync.WaitGroup
	poll.Go(func() {
		for {
			select {
			case <-stopPoll:
				return
			case <-time.After(10 * time.Millisecond):
			}
			u, _, _ := b.sink.counts()
			delivered.Store(int64(u))
		}
	})
	start := time.Now()
	deadline := start.Add(b.o.duration)
	r := closedLoop(64, b.o.duration, func(seq int64) error {
		for inFlight.Load()+int64(acked.len())-delivered.Load() > batchMaxLag && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		inFlight.Add(perRequest)
		defer inFlight.Add(-perRequest)
		first := (seq-1)*perRequest + 1
		if _, err := postBulk(hc, pubURL+"/v1/publish/"+topic, ndjson, bulkBody(ndjson, b.o.size, first, perRequest, nil), perRequest); err != nil {
			once.Do(func() { firstErr = err })
			return err
		}
		acked.add(first, perRequest)
		return nil
	})
	close(stopPoll)
	poll.Wait()
	published := int64(acked.len())
	if published == 0 {
		return fmt.Errorf("no bulk publish accepted: %w", firstErr)
	}
	last := b.waitDelivered(published)
	time.Sleep(300 * time.Millisecond) // room for a late duplicate
	st := b.sink.full("lat=1&seqs=1")
	lat := make([]time.Duration, len(st.Lat))
	for i, ns := range st.Lat {
		lat[i] = time.Duration(ns)
	}
	slices.Sort(lat)
	lr := result{lat: lat}
	lost := acked.missing(st.Seqs)
	rate := float64(st.Unique) / last.Sub(start).Seconds()
	meanBatch := 0.0
	if st.Requests > 0 {
		meanBatch = float64(st.Unique+st.Dups) / float64(st.Requests)
	}
	b.printf("## End to end with batched delivery (64 bulk publishers × %d events, holding back while more than %d events await delivery → subscriber `batch: {max_events: 100, max_wait: 5ms}`, concurrency 4)\n\n", perRequest, batchMaxLag)
	b.printf("| published | publish errors | delivered/s | plain HTTP/s at 64 | vs plain HTTP | webhook requests | events per request | p50 ms | p99 ms | max ms | lost | duplicated | malformed |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	b.printf("| %d | %d | %.0f | %.0f | %.1f× | %d | %.1f | %s | %s | %s | %d | %d | %d |\n\n", published, r.errors, rate, plain, rate/plain,
		st.Requests, meanBatch, ms(lr.pct(50)), ms(lr.pct(99)), ms(lr.pct(100)), lost, st.Dups, st.Bad)
	b.m.batchRate, b.m.batchPlain = rate, plain
	b.m.check("batch e2e", lost, int64(st.Dups), -1)
	// Keep Redis small for the phases after this one (its readers gone first).
	sub.stop()
	pub.stop()
	rdb := redis.NewClient(&redis.Options{Addr: b.redisAddr})
	defer rdb.Close()
	return rdb.Del(context.Background(), "sidecar:{"+topic+"}").Err()
}
