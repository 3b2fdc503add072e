package check

import (
	"bufio"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// node is what was read of one master: the one the client talks to, or
// each master of a Cluster (addr set), since each acknowledges, replicates
// and persists its own slots' writes.
type node[T any] struct {
	addr string
	val  T
}

// onMasters reads every master with read.
func onMasters[T any](ctx context.Context, rdb redis.UniversalClient, read func(context.Context, redis.Cmdable) (T, error)) ([]node[T], error) {
	return onNodes(ctx, rdb, false, read)
}

// onNodes reads every master, and with replicas every replica too (a
// replica's settings become the master's when a failover promotes it).
func onNodes[T any](ctx context.Context, rdb redis.UniversalClient, replicas bool, read func(context.Context, redis.Cmdable) (T, error)) ([]node[T], error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		v, err := read(ctx, rdb)
		if err != nil {
			return nil, err
		}
		return []node[T]{{val: v}}, nil
	}
	var mu sync.Mutex
	var nodes []node[T]
	each := cc.ForEachMaster
	if replicas {
		each = cc.ForEachShard
	}
	err := each(ctx, func(ctx context.Context, c *redis.Client) error {
		v, err := read(ctx, c)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Options().Addr, err)
		}
		mu.Lock()
		nodes = append(nodes, node[T]{addr: c.Options().Addr, val: v})
		mu.Unlock()
		return nil
	})
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].addr < nodes[j].addr })
	return nodes, err
}

// verdict is one master's outcome of a check.
type verdict struct {
	passed, critical bool
	detail           string
	strength         int // among equal outcomes, the lowest is the weakest
}

func (v verdict) severity() int {
	switch {
	case v.passed:
		return 0
	case !v.critical:
		return 1
	}
	return 2
}

// weakest reports the master that least keeps the promise: on a Cluster
// a publish is only as safe as the master its topic's slot lives on.
func weakest(name string, nodes []node[verdict], add addFunc) {
	w, alike := nodes[0], true
	for _, n := range nodes[1:] {
		s, ws := n.val.severity(), w.val.severity()
		if s != ws || n.val.strength != w.val.strength {
			alike = false
		}
		if s > ws || (s == ws && n.val.strength < w.val.strength) {
			w = n
		}
	}
	switch {
	case len(nodes) == 1:
		add(name, w.val.passed, w.val.critical, "%s", w.val.detail)
	case alike:
		add(name, w.val.passed, w.val.critical, "cluster of %d masters, each: %s", len(nodes), w.val.detail)
	default:
		add(name, w.val.passed, w.val.critical, "cluster of %d masters, the weakest %s: %s", len(nodes), w.addr, w.val.detail)
	}
}

// infoFields parses INFO's "key:value" lines.
func infoFields(raw string) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(raw))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			kv[k] = v
		}
	}
	return kv
}

// configValue reads one setting with CONFIG GET. Managed Redis often
// refuses CONFIG (renamed, ACL): known is then false, which the report
// calls unknown rather than failing on it.
func configValue(ctx context.Context, c redis.Cmdable, name string) (value string, known bool) {
	m, err := c.ConfigGet(ctx, name).Result()
	if err != nil {
		return "", false
	}
	value, known = m[name]
	return value, known
}
