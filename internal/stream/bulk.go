package stream

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// PublishBatch appends evs[i] to topics[i]'s stream, for every i, in one
// pipeline per node (one in all but Cluster), each ending in WAIT when
// replicas are required; an event with an IdempotencyKey goes through the
// idempotency script in the same pipeline. Events of one stream are
// appended in slice order. It returns each event's receipt or error.
func (p *Publisher) PublishBatch(ctx context.Context, topics []string, evs []*event.Event) ([]event.Receipt, []error) {
	rcs, errs := make([]event.Receipt, len(evs)), make([]error, len(evs))
	groups := map[redis.Cmdable][]int{}
	var order []redis.Cmdable
	for i := range evs {
		p.opts.Touched(topics[i])
		c, err := p.node(ctx, Key(topics[i]))
		if err != nil {
			errs[i] = err
			continue
		}
		if _, seen := groups[c]; !seen {
			order = append(order, c)
		}
		groups[c] = append(groups[c], i)
	}
	if len(order) == 1 {
		p.bulkOn(ctx, order[0], topics, evs, groups[order[0]], rcs, errs)
	} else {
		// Nodes in parallel: a dead shard delays only its own events.
		var wg sync.WaitGroup
		for _, c := range order {
			wg.Go(func() { p.bulkOn(ctx, c, topics, evs, groups[c], rcs, errs) })
		}
		wg.Wait()
	}
	for i, err := range errs {
		if err != nil {
			// Such an event may be spooled as uncertain: a look-up of the
			// stream read before its write must not answer for it.
			p.forgetRecent(topics[i])
		}
	}
	return rcs, errs
}

// bulkOn sends the events at idx to c in one pipeline and fills in their
// receipts or errors.
func (p *Publisher) bulkOn(ctx context.Context, c redis.Cmdable, topics []string, evs []*event.Event, idx []int, rcs []event.Receipt, errs []error) {
	need := p.replicas.needed(ctx, c, p.opts.MinReplicas)
	cmds := make([]redis.Cmder, len(idx))
	var acked *redis.Cmd
	_, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for n, i := range idx {
			ev, key := evs[i], Key(topics[i])
			if ev.IdempotencyKey == "" {
				cmds[n] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: ev.Values()})
				continue
			}
			// EVAL, not EVALSHA: a NOSCRIPT in the middle of a pipeline
			// could not be retried without resending the writes around it.
			cmds[n] = publishOnceScript.Eval(ctx, pipe, []string{key, idemKey(topics[i], ev.IdempotencyKey)}, onceArgs(p, ev)...)
		}
		if need > 0 {
			acked = wait(ctx, pipe, need)
		}
		return nil
	})
	p.observeError(err)
	replErr := waitErr(acked, need)
	for n, i := range idx {
		topic := topics[i]
		var (
			rc   event.Receipt
			cerr = cmds[n].Err()
		)
		if cerr == nil {
			switch cmd := cmds[n].(type) {
			case *redis.StringCmd:
				rc = event.Receipt{ID: evs[i].ID, Topic: topic, StreamID: cmd.Val()}
				if rc.StreamID == "" && err != nil {
					cerr = err
				}
			case *redis.Cmd:
				res, _ := cmd.Slice()
				rc, cerr = onceReceipt(topic, res)
			}
		}
		if cerr == nil {
			cerr = replErr
		}
		if cerr != nil {
			errs[i] = fmt.Errorf("xadd %s: %w", Key(topic), cerr)
			continue
		}
		rcs[i] = rc
	}
}

// onceArgs is the idempotency script's ARGV for ev.
func onceArgs(p *Publisher, ev *event.Event) []any {
	vals := ev.Values()
	argv := make([]any, 0, 2+len(vals))
	argv = append(argv, p.opts.IdempotencyTTL.Milliseconds(), ev.ID)
	return append(argv, vals...)
}

// onceReceipt reads the idempotency script's reply: {fresh, "<event id> <stream id>"}.
func onceReceipt(topic string, res []any) (event.Receipt, error) {
	if len(res) != 2 {
		return event.Receipt{}, fmt.Errorf("idempotent xadd %s: unexpected reply %v", Key(topic), res)
	}
	fresh, _ := res[0].(int64)
	val, _ := res[1].(string)
	id, sid, ok := strings.Cut(val, " ")
	if !ok {
		return event.Receipt{}, fmt.Errorf("idempotent xadd %s: unexpected stored result %q", Key(topic), val)
	}
	return event.Receipt{ID: id, Topic: topic, StreamID: sid, Duplicate: fresh == 0}, nil
}
