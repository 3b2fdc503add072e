package main

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisCluster is six cluster-enabled redis-servers: three masters with a
// replica each.
type redisCluster struct {
	addrs []string
	nodes map[string]*proc
	url   string // the sidecar's REDIS_URL
}

// nodeClient talks to one node and fails fast when it is dead.
func nodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 300 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second})
}

// startCluster starts the nodes, joins them with redis-cli --cluster
// create and waits until every node says cluster_state:ok with six nodes
// and every replica is in sync. cluster-require-full-coverage is off, so a
// dead master stops only its own slots: the figure is the sidecar's
// isolation and failover, not Redis refusing every key meanwhile.
func (b *bench) startCluster() (*redisCluster, error) {
	c := &redisCluster{nodes: map[string]*proc{}}
	for i := range 6 {
		port := freePort()
		dir := filepath.Join(b.dir, fmt.Sprintf("cluster-%d", i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		p, err := start(b.dir, fmt.Sprintf("cluster-%d", i), nil, "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
			// Not port+10000, which may be out of range for an ephemeral port.
			"--cluster-port", strconv.Itoa(freePort()),
			"--cluster-require-full-coverage", "no", "--cluster-replica-validity-factor", "0", "--repl-diskless-sync-delay", "0")
		if err != nil {
			return nil, err
		}
		b.procs = append(b.procs, p)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		c.addrs = append(c.addrs, addr)
		c.nodes[addr] = p
	}
	for _, a := range c.addrs {
		if err := waitFor("cluster node "+a, 10*time.Second, func() bool {
			n := nodeClient(a)
			defer n.Close()
			return n.Ping(context.Background()).Err() == nil
		}); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append(append([]string{"--cluster", "create"}, c.addrs...), "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	c.url = "redis+cluster://" + c.addrs[0] + "?addr=" + strings.Join(c.addrs[1:], "&addr=")
	err := waitFor("cluster_state:ok on six nodes, replicas in sync", 60*time.Second, func() bool {
		for _, a := range c.addrs {
			n := nodeClient(a)
			info, err := n.ClusterInfo(context.Background()).Result()
			repl, err2 := n.Info(context.Background(), "replication").Result()
			n.Close()
			if err != nil || err2 != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:6") {
				return false
			}
			if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				return false
			}
		}
		return true
	})
	return c, err
}

// masterOf is the master serving key's slot, as the live node at via says.
func masterOf(via, key string) (string, error) {
	n := nodeClient(via)
	defer n.Close()
	ctx := context.Background()
	slot, err := n.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return "", err
	}
	slots, err := n.ClusterSlots(ctx).Result()
	if err != nil {
		return "", err
	}
	for _, s := range slots {
		if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
			return s.Nodes[0].Addr, nil
		}
	}
	return "", fmt.Errorf("no master serves slot %d", slot)
}

// cluster: a topic of 8 partitions on a 6-node Redis Cluster, published at
// a steady rate over 100 keys (each key's publishes one after another, so
// its seqs reach the stream in order), delivered with `ordering: key` at
// concurrency 16, while the master owning the most partitions is killed.
func (b *bench) cluster() error {
	const (
		topic      = "orders"
		partitions = 8
		keys       = 100
		rate       = 2000 // events/s offered
	)
	// Long enough for the failover (node timeout 2 s, then an election)
	// to happen while publishing goes on.
	pubDur := max(b.o.duration, 8*time.Second)
	rc, err := b.startCluster()
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range rc.nodes {
			p.stop()
		}
	}()
	part := fmt.Sprintf("topics:\n  %s: {partitions: %d}\n", topic, partitions)
	pubCfg, subCfg := filepath.Join(b.dir, "cluster-pub.yaml"), filepath.Join(b.dir, "cluster-sub.yaml")
	_ = os.WriteFile(pubCfg, []byte(part), 0o600)
	_ = os.WriteFile(subCfg, []byte(part+fmt.Sprintf("subscriptions:\n  - topic: %s\n    url: %s/hook\n    ordering: key\n    concurrency: 16\n", topic, b.sink.url)), 0o600)
	sub, _, err := b.sidecarOn(rc.url, "cluster-subscriber", "SIDECAR_CONFIG="+subCfg)
	if err != nil {
		return err
	}
	defer sub.stop()
	pub, pubURL, err := b.sidecarOn(rc.url, "cluster-publisher", "SIDECAR_CONFIG="+pubCfg)
	if err != nil {
		return err
	}
	defer pub.stop()

	// The victim: the master serving the most partition streams.
	owners, keyOn, owner := map[string]int{}, map[string]string{}, map[int]string{}
	for k := range partitions {
		key := streamKey(topic, k)
		m, err := masterOf(rc.addrs[0], key)
		if err != nil {
			return err
		}
		owners[m]++
		keyOn[m], owner[k] = key, m
	}
	var victim string
	var spread []string
	for _, a := range slices.Sorted(maps.Keys(owners)) {
		spread = append(spread, strconv.Itoa(owners[a]))
		if victim == "" || owners[a] > owners[victim] {
			victim = a
		}
	}
	victimKey := keyOn[victim] // a partition whose promotion we time
	survivor := rc.addrs[0]
	if survivor == victim {
		survivor = rc.addrs[1]
	}

	b.sink.reset()
	var acked ackSet
	var keyMu sync.Mutex
	keyOfSeq := map[int64]string{}
	var seq, refused, spooled atomic.Int64
	var refusal sync.Once
	var firstRefusal string
	hc := newClient(keys)
	start := time.Now()
	deadline := start.Add(pubDur)
	var wg sync.WaitGroup
	for k := range keys {
		key := fmt.Sprintf("c%d", k)
		wg.Go(func() {
			// Each key publishes rate/keys events a second, one after another.
			t := time.NewTicker(time.Second * keys / rate)
			defer t.Stop()
			for now := range t.C {
				if now.After(deadline) {
					return
				}
				s := seq.Add(1)
				keyMu.Lock()
				keyOfSeq[s] = key
				keyMu.Unlock()
				req, _ := http.NewRequest(http.MethodPost, pubURL+"/v1/publish/"+topic, bytes.NewReader(keyedBody(b.o.size, s, key)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Partition-Key", key)
				resp, err := hc.Do(req)
				if err != nil {
					refused.Add(1)
					refusal.Do(func() { firstRefusal = err.Error() })
					continue
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					refused.Add(1)
					refusal.Do(func() { firstRefusal = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(raw)) })
					continue
				}
				if bytes.Contains(raw, []byte(`"spooled":true`)) {
					spooled.Add(1)
				}
				acked.add(s, 1)
			}
		})
	}
	// Midway, SIGKILL the victim and time its replica's promotion.
	time.Sleep(pubDur / 2)
	killedAt := time.Since(start)
	_ = rc.nodes[victim].cmd.Process.Kill()
	promoted := "not within 30 s"
	t0 := time.Now()
	if waitFor("promotion", 30*time.Second, func() bool {
		m, err := masterOf(survivor, victimKey)
		if err != nil || m == victim {
			return false
		}
		n := nodeClient(m)
		defer n.Close()
		info, err := n.ClusterInfo(context.Background()).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	}) == nil {
		promoted = fmt.Sprintf("%.1f s", time.Since(t0).Seconds())
	}
	wg.Wait()
	pubEnd := time.Now()

	// Drain: until every acknowledged event arrived, or 15 s without
	// progress, or 60 s.
	missing, lastProgress := int64(-1), time.Now()
	for time.Since(pubEnd) < 60*time.Second && time.Since(lastProgress) < 15*time.Second {
		m := acked.missing(b.sink.full("seqs=1").Seqs)
		if m != missing {
			missing, lastProgress = m, time.Now()
		}
		if m == 0 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // room for a late duplicate
	st := b.sink.full("lat=1&seqs=1")
	lost := acked.missing(st.Seqs)
	lat := make([]time.Duration, len(st.Lat))
	for i, ns := range st.Lat {
		lat[i] = time.Duration(ns)
	}
	slices.Sort(lat)
	lr := result{lat: lat}
	delivRate := float64(st.Unique) / time.Duration(st.Last-start.UnixNano()).Seconds()

	b.printf("## Partitioned topic on a 6-node Redis Cluster (`%s`: %d partitions over masters %s; `ordering: key`, concurrency 16)\n\n", topic, partitions, strings.Join(spread, "/"))
	b.printf("%d publishers (one per key) at %d events/s for %v; at %.1f s the master owning %d of %d partitions was SIGKILLed; its replica was promoted after %s. Non-2xx publishes count as refused, not lost; lost = acknowledged but not delivered %.0f s after publishing ended.\n\n",
		keys, rate, pubDur, killedAt.Seconds(), owners[victim], partitions, promoted, time.Since(pubEnd).Seconds())
	// Where the events went: one stream per partition, each event in the
	// partition its key picks (FNV-1a 32-bit mod N, computed here apart
	// from the sidecar's code).
	var live []string
	for _, a := range rc.addrs {
		if a != victim {
			live = append(live, a)
		}
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: live, MaxRetries: 2})
	var lens []string
	var total, misplaced int64
	for k := range partitions {
		n, wrong, err := scanPartition(cc, streamKey(topic, k), k, partitions)
		if err != nil {
			lens = append(lens, "?")
			continue
		}
		total, misplaced = total+n, misplaced+wrong
		lens = append(lens, strconv.FormatInt(n, 10))
	}
	_ = cc.Close()
	b.printf("Stream entries per partition: %s (%d in all; %d in a partition their key does not pick).\n\n", strings.Join(lens, " / "), total, misplaced)
	// Duplicates on the killed master's partitions are redeliveries whose
	// XACK the failover lost.
	onVictim := 0
	for _, s := range st.DupSeqs {
		if owner[partitionOf(keyOfSeq[s], partitions)] == victim {
			onVictim++
		}
	}
	if st.Dups > 0 {
		b.printf("Duplicated events on the killed master's partitions: %d of %d.\n\n", onVictim, len(st.DupSeqs))
	}
	b.printf("| published (acked) | of which spooled | refused | delivered | delivered/s | p50 ms | p99 ms | max ms | lost | duplicated | out of order (per key) | webhooks naming a partition |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	b.printf("| %d | %d | %d | %d | %.0f | %s | %s | %s | %d | %d | %d | %d |\n\n", acked.len(), spooled.Load(), refused.Load(), st.Unique, delivRate,
		ms(lr.pct(50)), ms(lr.pct(99)), ms(lr.pct(100)), lost, st.Dups, st.OutOfOrder, st.PartitionTopic)
	if firstRefusal != "" {
		b.printf("First refusal: %.300s\n\n", firstRefusal)
	}
	if acked.len() == 0 {
		return fmt.Errorf("no publish acknowledged (first refusal: %s)", firstRefusal)
	}
	b.m.cluster = &clusterFigure{lost: lost, ooo: int64(st.OutOfOrder)}
	b.m.check("cluster", lost, int64(st.Dups), int64(st.OutOfOrder))
	return nil
}

// streamKey is partition k's stream.
func streamKey(topic string, k int) string {
	if k == 0 {
		return "sidecar:{" + topic + "}"
	}
	return fmt.Sprintf("sidecar:{%s#%d}", topic, k)
}

// partitionOf is the spec's partition of key: FNV-1a 32-bit mod n.
func partitionOf(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// scanPartition counts partition k's entries and those whose key (in the
// body) picks another partition.
func scanPartition(cc *redis.ClusterClient, stream string, k, n int) (entries, misplaced int64, err error) {
	from := "-"
	for {
		msgs, err := cc.XRangeN(context.Background(), stream, from, "+", 1000).Result()
		if err != nil {
			return entries, misplaced, err
		}
		for _, m := range msgs {
			entries++
			data, _ := m.Values["data"].(string)
			if partitionOf(strField([]byte(data), `"key":"`), n) != k {
				misplaced++
			}
		}
		if len(msgs) < 1000 {
			return entries, misplaced, nil
		}
		from = "(" + msgs[len(msgs)-1].ID
	}
}
