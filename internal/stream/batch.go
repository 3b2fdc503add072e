package stream

import (
	"context"
	"fmt"
	"sync"
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

// execBatch sends one pipeline per node (one in all but Cluster), each
// ending in WAIT when replicas are required. It is bounded by the earliest
// deadline in the batch, so a stalled Redis fails every publish in it within
// its timeout. On Cluster the nodes are written in parallel, so a dead
// shard delays only its own topics.
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
	if _, cluster := p.rdb.(*redis.ClusterClient); !cluster {
		p.execOn(ctx, p.rdb, live)
		return
	}
	groups := map[redis.Cmdable][]*xaddReq{}
	var order []redis.Cmdable
	for _, r := range live {
		c, err := p.node(ctx, r.args.Stream)
		if err != nil {
			r.done <- xaddRes{err: err}
			continue
		}
		if _, seen := groups[c]; !seen {
			order = append(order, c)
		}
		groups[c] = append(groups[c], r)
	}
	var wg sync.WaitGroup
	for _, c := range order {
		wg.Go(func() { p.execOn(ctx, c, groups[c]) })
	}
	wg.Wait()
}

// execOn sends reqs to c in one pipeline, in order, then WAITs for the
// required replicas; every publish in it fails with ErrNotReplicated when
// they did not all reach them in time.
func (p *Publisher) execOn(ctx context.Context, c redis.Cmdable, reqs []*xaddReq) {
	need := p.replicas.needed(ctx, c, p.opts.MinReplicas)
	cmds := make([]*redis.StringCmd, len(reqs))
	var acked *redis.Cmd
	_, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, r := range reqs {
			cmds[i] = pipe.XAdd(ctx, r.args)
		}
		if need > 0 {
			acked = wait(ctx, pipe, need)
		}
		return nil
	})
	p.observeError(err)
	replErr := waitErr(acked, need)
	for i, r := range reqs {
		id, cerr := cmds[i].Result()
		switch {
		case cerr == nil && err != nil && id == "":
			cerr = err
		case cerr == nil && replErr != nil:
			cerr = replErr
		}
		if cerr != nil {
			cerr = fmt.Errorf("xadd %s: %w", r.args.Stream, cerr)
		}
		r.done <- xaddRes{id: id, err: cerr}
	}
}

// waitErr is what a pipeline's closing WAIT (nil: none was sent) says of
// its writes: nil when the need replicas have them, else ErrNotReplicated
// — also when WAIT got no answer: they may or may not be replicated.
func waitErr(acked *redis.Cmd, need int) error {
	switch {
	case acked == nil:
		return nil
	case acked.Err() != nil:
		return fmt.Errorf("wait: %v: %w", acked.Err(), ErrNotReplicated)
	case replicated(acked) < int64(need):
		return fmt.Errorf("%d of %d replicas: %w", replicated(acked), need, ErrNotReplicated)
	}
	return nil
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
		c, err := p.node(ctx, args.Stream)
		if err != nil {
			return "", err
		}
		r := &xaddReq{ctx: ctx, args: args, done: make(chan xaddRes, 1)}
		p.execOn(ctx, c, []*xaddReq{r})
		res := <-r.done
		return res.id, res.err
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
