package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// keyOrder: a backlog over 200 partition keys drained by an `ordering: key`
// subscription at concurrency 1 and 16 into a webhook that takes 10 ms, so
// that parallelism across keys, not CPU, sets the rate.
func (b *bench) keyOrder() error {
	const keys = 200
	n := max(int(3000*b.o.duration/(10*time.Second)), 400)
	pub, pubURL, err := b.sidecar("key-publisher")
	if err != nil {
		return err
	}
	defer pub.stop()
	keyOf := func(seq int64) string { return fmt.Sprintf("k%d", seq%keys) }
	// Written by one client, one request after another: each key's events
	// reach the stream in seq order, the order the sink checks.
	hc := newClient(1)
	concs := []int{1, 16}
	for _, conc := range concs {
		topic := fmt.Sprintf("bench.key.c%d", conc)
		for first := int64(1); first <= int64(n); first += 500 {
			m := min(500, n-int(first)+1)
			if _, err := postBulk(hc, pubURL+"/v1/publish/"+topic, ceBatch, bulkBody(ceBatch, b.o.size, first, m, keyOf), m); err != nil {
				return fmt.Errorf("write the backlog: %w", err)
			}
		}
	}
	b.printf("## Per-key ordering (backlog of %d events over %d keys, bulk-published with partitionkey; webhook takes 10 ms)\n\n| subscription | delivered/s (first to last webhook) | vs concurrency 1 | out of order (per key) | lost | duplicated |\n|---|---|---|---|---|---|\n", n, keys)
	rates := map[int]float64{}
	for _, conc := range concs {
		topic := fmt.Sprintf("bench.key.c%d", conc)
		b.sink.reset()
		cfg := filepath.Join(b.dir, topic+".yaml")
		_ = os.WriteFile(cfg, []byte(fmt.Sprintf("subscriptions:\n  - topic: %s\n    url: %s/slow\n    ordering: key\n    concurrency: %d\n", topic, b.sink.url, conc)), 0o600)
		sub, _, err := b.sidecar(fmt.Sprintf("key-c%d", conc), "SIDECAR_CONFIG="+cfg)
		if err != nil {
			return err
		}
		if err := waitFor("first delivery", 30*time.Second, func() bool { u, _, _ := b.sink.counts(); return u > 0 }); err != nil {
			sub.stop()
			return err
		}
		b.waitDelivered(int64(n))
		time.Sleep(300 * time.Millisecond) // room for a late duplicate
		st := b.sink.full("")
		sub.stop()
		rates[conc] = float64(st.Unique) / st.span().Seconds()
		lost := int64(max(n-st.Unique, 0))
		b.printf("| `ordering: key`, concurrency %d | %.0f | %.1f× | %d | %d | %d |\n", conc, rates[conc], rates[conc]/rates[1], st.OutOfOrder, lost, st.Dups)
		b.m.check(fmt.Sprintf("key c%d", conc), lost, int64(st.Dups), int64(st.OutOfOrder))
	}
	b.printf("\n")
	b.m.keyC1, b.m.keyC16 = rates[1], rates[16]
	return nil
}
