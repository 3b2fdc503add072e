package admin

import (
	"container/heap"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// A partitioned topic is several streams (stream.PartitionTopic); the
// admin API shows it as one topic and acts on all its partitions.

// maxPartitions bounds the partition numbers a SCAN may find (the config's
// own bound): a stray key sidecar:{t#999999} makes no topic of a million.
const maxPartitions = 1024

// parts is a user topic and how many partitions it has (1: unpartitioned).
type parts struct {
	topic string
	n     int
}

// of is partition k's internal topic ("t" for 0, "t#k" after).
func (p parts) of(k int) string { return stream.PartitionTopic(p.topic, k) }

func (p parts) partitioned() bool { return p.n > 1 }

// label is a partition's number as the answers show it: none when the
// topic is not partitioned, so their JSON is as it always was.
func (p parts) label(k int) *int {
	if !p.partitioned() {
		return nil
	}
	return &k
}

// partitionOf splits a stream key's topic into user topic and partition:
// "orders" → orders, 0; "orders#3" → orders, 3. ok is false when the
// suffix is no canonical partition number below maxPartitions.
func partitionOf(t string) (topic string, k int, ok bool) {
	topic, num, cut := strings.Cut(t, stream.PartitionSep)
	if !cut {
		return t, 0, true
	}
	k, err := strconv.Atoi(num)
	if err != nil || k < 1 || k >= maxPartitions || strconv.Itoa(k) != num {
		return "", 0, false
	}
	return topic, k, true
}

// parts returns topic's partitions: as many as the config says, or more
// when streams past them exist (another sidecar partitions the topic, or
// this one's config lost it). One EXISTS of the first partition past the
// count finds out, a SCAN (of the whole keyspace) only then: a full SCAN
// per request would cost too much. GET /v1/topics scans anyway and so
// also finds partitions beyond a gap.
func (h *Handler) parts(ctx context.Context, topic string) (parts, error) {
	p := parts{topic: topic, n: max(h.cfg.Partitions[topic], 1)}
	probe := stream.Key(p.of(p.n))
	n, err := h.rdb.Exists(ctx, probe).Result()
	if err != nil {
		return p, fmt.Errorf("exists %s: %w", probe, err)
	}
	if n == 0 {
		return p, nil
	}
	// "{t#*}": topic names hold no glob character, so the pattern is exact.
	err = h.scanStreams(ctx, stream.Key(topic+stream.PartitionSep+"*"), func(key string) {
		if t, k, ok := topicOf(key); ok && t == topic {
			p.n = max(p.n, k+1)
		}
	})
	return p, err
}

// scanStreams calls fn with every stream key matching pattern (on Cluster,
// on every master; fn may be called from several goroutines at once).
func (h *Handler) scanStreams(ctx context.Context, pattern string, fn func(key string)) error {
	var mu sync.Mutex
	scan := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := c.ScanType(ctx, cursor, pattern, 1000, "stream").Result()
			if err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			mu.Lock()
			for _, k := range keys {
				fn(k)
			}
			mu.Unlock()
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := h.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	}
	return scan(ctx, h.rdb)
}

// A cursor is a place in a partitioned log: the entry id and the
// partition. Two partitions' streams can hold the same id (each has its
// own id sequence), so the merged log orders by id, then partition, and a
// page that ends between two entries of one id says in which partition:
// "<id>@<k>". A plain id or time is a place in every partition.
const cursorSep = "@"

// cursor is a place in the merged log: at (or, for a newest-first read,
// before) entry id of partition part; part -1 when from names no partition.
type cursor struct {
	pos  Position
	part int
}

// parseCursor parses from= of a paged read: a position, or "<id>@<k>".
func parseCursor(s string, p parts) (cursor, error) {
	at, num, cut := strings.Cut(s, cursorSep)
	pos, err := ParsePosition(at)
	if err != nil || !cut {
		return cursor{pos: pos, part: -1}, err
	}
	k, err := strconv.Atoi(num)
	if err != nil || k < 0 || pos.Kind != AtID || !pos.HasSeq {
		return cursor{}, fmt.Errorf("position %q: want <stream id>@<partition>: %w", s, ErrBadPosition)
	}
	if k >= p.n {
		return cursor{}, fmt.Errorf("position %q: topic %s has %d partitions (0 to %d)", s, p.topic, p.n, p.n-1)
	}
	return cursor{pos: pos, part: k}, nil
}

// bound is where partition k's range read starts: XRANGE's inclusive
// start, or XREVRANGE's inclusive end when desc.
func (c cursor) bound(k int, desc bool) string {
	if !desc {
		if c.part > k {
			return after(c.pos.Start()) // this id was partition k's turn already
		}
		return c.pos.Start()
	}
	if c.part >= 0 && c.part < k {
		return before(c.pos.End())
	}
	return c.pos.End()
}

// formatCursor is the from= of the page that begins at entry id of
// partition k: the plain id where it means the same.
func formatCursor(id string, k int, p parts, desc bool) string {
	if !p.partitioned() || (!desc && k == 0) || (desc && k == p.n-1) {
		return id
	}
	return id + cursorSep + strconv.Itoa(k)
}

// cursorAfter is the from= of the page after entry id of partition k
// (oldest first).
func cursorAfter(id string, k int, p parts) string {
	if k+1 < p.n {
		return formatCursor(id, k+1, p, false)
	}
	return after(id)
}

// entry is one stream entry of a merged read and its partition.
type entry struct {
	redis.XMessage
	part    int
	ms, seq uint64
}

// partReader is one partition's share of a merged read.
type partReader struct {
	part  int
	key   string
	bound string // where the next read starts; "" once the stream is read to its end
	count int64  // entries the next read asks for; grows up to scanChunk
	buf   []entry
}

// merger reads several partitions' streams (or DLQs) as one log: in id
// order, partition breaking ties; newest first when desc. It reads each
// stream in growing chunks, and the first chunk of all in one pipeline.
type merger struct {
	rdb     redis.Cmdable
	desc    bool
	started bool
	heads   mergeHeap
	refill  *partReader // emptied by the last next; read before the next one
}

// newMerger reads the given keys (key k is partition k's) from c. want is
// how many entries the caller expects to take: the first chunks share it.
func newMerger(rdb redis.Cmdable, keys []string, c cursor, desc bool, want int) *merger {
	first := int64(min(max(2*want/len(keys)+1, 4), want))
	m := &merger{rdb: rdb, desc: desc}
	m.heads.desc = desc
	for k, key := range keys {
		m.heads.rs = append(m.heads.rs, &partReader{part: k, key: key, bound: c.bound(k, desc), count: first})
	}
	return m
}

func (m *merger) rangeCmd(ctx context.Context, rdb redis.Cmdable, r *partReader) *redis.XMessageSliceCmd {
	if m.desc {
		return rdb.XRevRangeN(ctx, r.key, r.bound, "-", r.count)
	}
	return rdb.XRangeN(ctx, r.key, r.bound, "+", r.count)
}

// took files the answer of one range read into r.
func (m *merger) took(r *partReader, msgs []redis.XMessage) {
	for _, msg := range msgs {
		ms, seq, _, _ := parseID(msg.ID)
		r.buf = append(r.buf, entry{XMessage: msg, part: r.part, ms: ms, seq: seq})
	}
	switch {
	case int64(len(msgs)) < r.count:
		r.bound = ""
	case m.desc:
		r.bound = before(msgs[len(msgs)-1].ID)
	default:
		r.bound = after(msgs[len(msgs)-1].ID)
	}
	r.count = max(min(2*r.count, scanChunk), r.count)
}

// next returns the next entry of the merged log; ok is false at its end.
func (m *merger) next(ctx context.Context) (entry, bool, error) {
	if !m.started {
		if err := m.start(ctx); err != nil {
			return entry{}, false, err
		}
	}
	if r := m.refill; r != nil {
		m.refill = nil
		msgs, err := m.rangeCmd(ctx, m.rdb, r).Result()
		if err != nil {
			return entry{}, false, fmt.Errorf("reading %s: %w", r.key, err)
		}
		if m.took(r, msgs); len(r.buf) > 0 {
			heap.Push(&m.heads, r)
		}
	}
	if m.heads.Len() == 0 {
		return entry{}, false, nil
	}
	r := m.heads.rs[0]
	e := r.buf[0]
	r.buf = r.buf[1:]
	switch {
	case len(r.buf) > 0:
		heap.Fix(&m.heads, 0)
	default:
		heap.Pop(&m.heads)
		if r.bound != "" {
			m.refill = r
		}
	}
	return e, true, nil
}

// start reads every partition's first chunk, in one pipeline.
func (m *merger) start(ctx context.Context) error {
	m.started = true
	rs := m.heads.rs
	m.heads.rs = nil
	cmds := make([]*redis.XMessageSliceCmd, len(rs))
	_, err := m.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, r := range rs {
			cmds[i] = m.rangeCmd(ctx, pipe, r)
		}
		return nil
	})
	for i, c := range cmds {
		if c.Err() != nil {
			return fmt.Errorf("reading %s: %w", rs[i].key, c.Err())
		}
	}
	if err != nil {
		return err
	}
	for i, c := range cmds {
		if m.took(rs[i], c.Val()); len(rs[i].buf) > 0 {
			m.heads.rs = append(m.heads.rs, rs[i])
		}
	}
	heap.Init(&m.heads)
	return nil
}

// mergeHeap orders partition readers by their first buffered entry.
type mergeHeap struct {
	rs   []*partReader
	desc bool
}

func (h mergeHeap) Len() int { return len(h.rs) }
func (h mergeHeap) Less(i, j int) bool {
	a, b := h.rs[i].buf[0], h.rs[j].buf[0]
	less := a.ms < b.ms || a.ms == b.ms && (a.seq < b.seq || a.seq == b.seq && a.part < b.part)
	if h.desc {
		return !less
	}
	return less
}
func (h mergeHeap) Swap(i, j int) { h.rs[i], h.rs[j] = h.rs[j], h.rs[i] }
func (h *mergeHeap) Push(x any)   { h.rs = append(h.rs, x.(*partReader)) }
func (h *mergeHeap) Pop() any {
	r := h.rs[len(h.rs)-1]
	h.rs = h.rs[:len(h.rs)-1]
	return r
}

// idLess orders two stream ids ("" first).
func idLess(a, b string) bool {
	am, as, _, aok := parseID(a)
	bm, bs, _, bok := parseID(b)
	if !aok || !bok {
		return !aok && bok
	}
	return am < bm || am == bm && as < bs
}

// maxID is the later of two stream ids.
func maxID(a, b string) string {
	if idLess(a, b) {
		return b
	}
	return a
}
