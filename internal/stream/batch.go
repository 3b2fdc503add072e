package stream

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxBatch bounds how many concurrent publishes share one pipeline.
const maxBatch = 256

// xaddReq is one publish waiting for the batcher.
type xaddReq struct {
	ctx  context.Context
	args *redis.XAddArgs
	done chan xaddRes
}

type xaddRes struct {
	id  string
	err error
}

// Run batches concurrent publishes until ctx is done: while one pipeline is
// in flight, new XADDs queue, and the next pipeline sends them all in one
// round trip, in arrival order. No publish waits for a batch to fill. Without
// Run, Publish sends each XADD on its own.
func (p *Publisher) Run(ctx context.Context) error {
	p.batching.Store(true)
	defer p.batching.Store(false)
	for {
		var first *xaddReq
		select {
		case <-ctx.Done():
			p.failQueued(ctx.Err())
			return nil
		case first = <-p.reqs:
		}
		batch := append(make([]*xaddReq, 0, 16), first)
	fill:
		for len(batch) < maxBatch {
			select {
			case r := <-p.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		p.execBatch(batch)
	}
}

// execBatch sends one pipeline. It is bounded by the earliest deadline in
// the batch, so a stalled Redis fails every publish in it within its timeout.
func (p *Publisher) execBatch(batch []*xaddReq) {
	live := batch[:0]
	deadline := time.Now().Add(time.Hour)
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- xaddRes{err: err} // expired while queued: never sent
			continue
		}
		if d, ok := r.ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cmds := make([]*redis.StringCmd, len(live))
	_, err := p.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, r := range live {
			cmds[i] = pipe.XAdd(ctx, r.args)
		}
		return nil
	})
	for i, r := range live {
		id, cerr := cmds[i].Result()
		if cerr == nil && err != nil && id == "" {
			cerr = err
		}
		if cerr != nil {
			cerr = fmt.Errorf("xadd %s: %w", r.args.Stream, cerr)
		}
		r.done <- xaddRes{id: id, err: cerr}
	}
}

func (p *Publisher) failQueued(err error) {
	for {
		select {
		case r := <-p.reqs:
			r.done <- xaddRes{err: err}
		default:
			return
		}
	}
}

// xadd appends through the batcher when it runs, else directly.
func (p *Publisher) xadd(ctx context.Context, args *redis.XAddArgs) (string, error) {
	if !p.batching.Load() {
		id, err := p.rdb.XAdd(ctx, args).Result()
		if err != nil {
			return "", fmt.Errorf("xadd %s: %w", args.Stream, err)
		}
		return id, nil
	}
	r := &xaddReq{ctx: ctx, args: args, done: make(chan xaddRes, 1)}
	select {
	case p.reqs <- r:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	select {
	case res := <-r.done:
		return res.id, res.err
	case <-ctx.Done():
		// Sent or not, the answer did not come in time: Redis may still apply it.
		return "", ctx.Err()
	}
}
