package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// Retention bounds every topic stream (applied by the Trimmer, never past
// an entry some consumer group has not acknowledged).
type Retention struct {
	MaxLen int64         // approximate MAXLEN; 0 = none
	MaxAge time.Duration // approximate MINID now-MaxAge; 0 = none
}

// AutoReplicas asks for replicated acknowledgement whenever the master has a
// connected replica: 1 then, else 0.
const AutoReplicas = -1

// PublisherOptions configure a Publisher.
type PublisherOptions struct {
	// IdempotencyTTL is how long an Idempotency-Key is remembered.
	IdempotencyTTL time.Duration
	// MinReplicas is how many replicas must have a write (WAIT) before it is
	// acknowledged; AutoReplicas (the default when negative) means 1 when
	// the master reports an online replica, else 0.
	MinReplicas int
	// DrainID names this sidecar's spool in the drain dedup keys, so two
	// sidecars draining into one topic never share them.
	DrainID string
	// Touched, when set, is told every topic written to (the Trimmer).
	Touched func(topic string)
}

// Publisher appends events to topic streams.
type Publisher struct {
	rdb  redis.UniversalClient
	opts PublisherOptions
	log  zerolog.Logger

	reqs     chan *xaddReq // to the batcher (Run)
	batching atomic.Bool

	replicas replicaCache
	recentMu sync.Mutex
	recent   map[string]recentIDs // topic → newest entries, for uncertain drains
	// lastReload rate-limits cluster slot-map refreshes (unix nanos).
	lastReload atomic.Int64
}

// NewPublisher returns a Publisher.
func NewPublisher(rdb redis.UniversalClient, opts PublisherOptions, log zerolog.Logger) *Publisher {
	if opts.MinReplicas < 0 {
		opts.MinReplicas = AutoReplicas
	}
	if opts.DrainID == "" {
		opts.DrainID = "default"
	}
	if opts.Touched == nil {
		opts.Touched = func(string) {}
	}
	return &Publisher{rdb: rdb, opts: opts, log: log, reqs: make(chan *xaddReq, 4*maxBatch),
		replicas: replicaCache{nodes: map[string]replicaCount{}, log: log, seed: !isCluster(rdb)}, recent: map[string]recentIDs{}}
}

// Publish appends ev to the topic's stream. With ev.IdempotencyKey set, a
// key seen within the window returns the first publish's receipt and
// appends nothing (atomically, in one script).
func (p *Publisher) Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	p.opts.Touched(topic)
	if ev.IdempotencyKey != "" {
		rc, err := p.publishOnce(ctx, topic, ev, ev.IdempotencyKey)
		if err != nil {
			p.forgetRecent(topic)
		}
		return rc, err
	}
	id, err := p.xadd(ctx, &redis.XAddArgs{Stream: Key(topic), Values: ev.Values()})
	if err != nil {
		// This event may be spooled as uncertain: a look-up of the
		// stream read before its write was sent must not answer for it.
		p.forgetRecent(topic)
		return event.Receipt{}, err
	}
	return event.Receipt{ID: ev.ID, Topic: topic, StreamID: id}, nil
}

// publishOnceScript: KEYS[1] stream, KEYS[2] idempotency key;
// ARGV[1] ttl ms, ARGV[2] event id, ARGV[3..] fields.
// Returns {1, "<event id> <stream id>"} for a new event, {0, same} for a replay.
var publishOnceScript = redis.NewScript(`
local prev = redis.call('GET', KEYS[2])
if prev then
  -- A write, so the WAIT after this replay covers the original: newer Redis
  -- moves a client's WAIT offset only after a command that propagated.
  local ttl = redis.call('PTTL', KEYS[2])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
  return {0, prev}
end
local args = {'XADD', KEYS[1], '*'}
for i = 3, #ARGV do args[#args+1] = ARGV[i] end
local sid = redis.call(unpack(args))
local val = ARGV[2] .. ' ' .. sid
redis.call('SET', KEYS[2], val, 'PX', ARGV[1])
return {1, val}
`)

// drainScript appends one spooled event at most once per drain batch, and
// records it in the drain set either way, so Committed can check that the
// whole batch is on the node it commits on.
// KEYS[1] stream, KEYS[2] the drain set (event ids of the batch not yet
// acknowledged in the spool), KEYS[3] the Idempotency-Key's key or absent;
// ARGV[1] ttl ms of KEYS[3], ARGV[2] event id, ARGV[3] ttl ms of the drain
// set, ARGV[4] a stream id where the event may already be (an uncertain
// event found there a moment ago) or ”, ARGV[5..] fields.
// Returns {1, stream id} when appended, {0, "<event id> <stream id>"|""}
// when it was there already.
var drainScript = redis.NewScript(`
local function mark()
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return {0, ''} end
if ARGV[4] ~= '' then
  -- Checked here, on the node that writes: a look-up made elsewhere (the
  -- master before a failover) proves nothing about this one.
  local e = redis.call('XRANGE', KEYS[1], ARGV[4], ARGV[4])
  if #e == 1 then
    local f = e[1][2]
    for i = 1, #f, 2 do
      if f[i] == 'id' and f[i+1] == ARGV[2] then mark(); return {0, ARGV[2] .. ' ' .. ARGV[4]} end
    end
  end
end
if KEYS[3] then
  local prev = redis.call('GET', KEYS[3])
  if prev then mark(); return {0, prev} end
end
local args = {'XADD', KEYS[1], '*'}
for i = 5, #ARGV do args[#args+1] = ARGV[i] end
local sid = redis.call(unpack(args))
mark()
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[2] .. ' ' .. sid, 'PX', ARGV[1]) end
return {1, sid}
`)

// drainSetTTL keeps a drain set across a long stop: it holds only the ids
// of one unacknowledged drain batch per topic, so it stays small.
const drainSetTTL = 30 * 24 * time.Hour

// ErrBatchMoved is a drain batch Committed did not find whole on the node
// it commits on: the node changed under the drain (a failover, a slot
// moved), so some of the batch may be lost with the old master. The batch
// stays in the spool and is drained again.
var ErrBatchMoved = errors.New("drain batch not found whole on the current master")

// PublishDrained appends an event replayed from the spool. The relay drains
// a topic in batches and calls Committed after each before it acknowledges
// the batch in the spool; a crash in between replays the batch, and the
// drain set (ids of the batch) makes that add nothing twice.
// An uncertain event — spooled after a write that may still have landed
// (a timeout, or one not replicated in time) — is first looked for among the
// stream's newest entries; the script confirms it on the node it writes to.
// A publisher's Idempotency-Key is honoured too.
// What this leaves in Redis: nothing per event but the Idempotency-Key's own
// key (as for a direct publish); the drain set is emptied by Committed.
func (p *Publisher) PublishDrained(ctx context.Context, topic string, ev *event.Event, uncertain bool) (event.Receipt, error) {
	hint := ""
	if uncertain {
		sid, err := p.findRecent(ctx, topic, ev.ID)
		if err != nil {
			return event.Receipt{}, err
		}
		hint = sid
	}
	p.opts.Touched(topic)
	keys := []string{Key(topic), p.drainSetKey(topic)}
	if ev.IdempotencyKey != "" {
		keys = append(keys, idemKey(topic, ev.IdempotencyKey))
	}
	vals := ev.Values()
	argv := make([]any, 0, 4+len(vals))
	argv = append(argv, p.opts.IdempotencyTTL.Milliseconds(), ev.ID, drainSetTTL.Milliseconds(), hint)
	argv = append(argv, vals...)
	c, err := p.node(ctx, Key(topic))
	if err != nil {
		p.forgetRecent(topic)
		return event.Receipt{}, err
	}
	res, err := drainScript.Run(ctx, c, keys, argv...).Slice()
	if err != nil {
		p.observeError(err)
		p.forgetRecent(topic)
		return event.Receipt{}, fmt.Errorf("drain xadd %s: %w", Key(topic), err)
	}
	if len(res) != 2 {
		return event.Receipt{}, fmt.Errorf("drain xadd %s: unexpected reply %v", Key(topic), res)
	}
	fresh, _ := res[0].(int64)
	val, _ := res[1].(string)
	if fresh == 1 {
		return event.Receipt{ID: ev.ID, Topic: topic, StreamID: val}, nil
	}
	id, sid, _ := strings.Cut(val, " ")
	if id == "" {
		id = ev.ID
	}
	return event.Receipt{ID: id, Topic: topic, StreamID: sid, Duplicate: true}, nil
}

// Committed ends a drain batch of topic, whose event ids are ids: on the
// node that now serves the topic it checks that every one of them is in
// the drain set (ErrBatchMoved when not: the batch was written to a master
// that is gone), waits until the batch reached the required replicas
// (ErrNotReplicated when not), then empties the drain set. Only then may
// the spool acknowledge the batch; otherwise it is drained again, and the
// drain set makes that idempotent.
func (p *Publisher) Committed(ctx context.Context, topic string, ids []string) error {
	c, err := p.node(ctx, Key(topic))
	if err != nil {
		p.forgetRecent(topic)
		return err
	}
	set := p.drainSetKey(topic)
	need := p.replicas.needed(ctx, c, p.opts.MinReplicas)
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	var (
		present *redis.BoolSliceCmd
		acked   *redis.Cmd
	)
	// WAIT covers the writes made on its own connection: a write here,
	// after every write of the batch, makes it cover them all (replication
	// is one ordered stream).
	_, err = c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		if len(members) > 0 {
			present = pipe.SMIsMember(ctx, set, members...)
		}
		if need > 0 {
			pipe.Set(ctx, set+":mark", time.Now().UnixNano(), drainSetTTL)
			acked = wait(ctx, pipe, need)
		}
		return nil
	})
	if present != nil && present.Err() == nil {
		for i, ok := range present.Val() {
			if !ok {
				p.forgetRecent(topic)
				return fmt.Errorf("drain commit %s: event %s: %w", Key(topic), ids[i], ErrBatchMoved)
			}
		}
	}
	if err != nil {
		p.observeError(err)
		p.forgetRecent(topic)
		if acked != nil && acked.Err() != nil && (present == nil || present.Err() == nil) {
			// Only WAIT failed (a demoted master unblocks it): uncertain.
			return fmt.Errorf("drain commit %s: wait: %v: %w", Key(topic), acked.Err(), ErrNotReplicated)
		}
		return fmt.Errorf("drain commit %s: %w", Key(topic), err)
	}
	if acked != nil {
		if n := replicated(acked); n < int64(need) {
			p.forgetRecent(topic)
			return fmt.Errorf("drain commit %s: %d of %d replicas: %w", Key(topic), n, need, ErrNotReplicated)
		}
	}
	if err := c.Del(ctx, set, set+":mark").Err(); err != nil {
		p.observeError(err)
		return fmt.Errorf("drain commit %s: %w", Key(topic), err)
	}
	return nil
}

func (p *Publisher) drainSetKey(topic string) string {
	return Key(topic) + ":drain:" + p.opts.DrainID
}

// recentWindow is how many of a stream's newest entries findRecent reads.
// An XADD that timed out lands, if at all, when Redis resumes — just before
// the drain, with only other stalled writes after it; one that was not
// replicated in time is on the master already.
const recentWindow = 1000

// recentTTL is how long one read of a stream's newest entries answers
// findRecent: a drain of many uncertain events (a failover spools hundreds)
// reads the window once, not once per event. Entries the drain itself adds
// meanwhile are not uncertain duplicates: each event is spooled once.
const recentTTL = 2 * time.Second

// recentIDs is a stream's newest entries' event ids, as read at a moment.
type recentIDs struct {
	at  time.Time
	ids map[string]string // event id → stream id
}

// forgetRecent drops topic's cached newest entries: after any failure of a
// drain the node may have changed, and a stale "it is there" must not
// survive it (the drain script re-checks on its node anyway).
func (p *Publisher) forgetRecent(topic string) {
	p.recentMu.Lock()
	delete(p.recent, topic)
	p.recentMu.Unlock()
}

func (p *Publisher) findRecent(ctx context.Context, topic, eventID string) (string, error) {
	p.recentMu.Lock()
	r, ok := p.recent[topic]
	p.recentMu.Unlock()
	if !ok || time.Since(r.at) > recentTTL {
		c, err := p.node(ctx, Key(topic))
		if err != nil {
			return "", err
		}
		msgs, err := c.XRevRangeN(ctx, Key(topic), "+", "-", recentWindow).Result()
		if err != nil {
			p.observeError(err)
			return "", fmt.Errorf("xrevrange %s: %w", Key(topic), err)
		}
		r = recentIDs{at: time.Now(), ids: make(map[string]string, len(msgs))}
		for _, m := range msgs {
			if id, _ := m.Values[event.FieldID].(string); id != "" {
				r.ids[id] = m.ID
			}
		}
		p.recentMu.Lock()
		if len(p.recent) > 1024 {
			clear(p.recent) // a bound, not a policy: entries live 2 s anyway
		}
		p.recent[topic] = r
		p.recentMu.Unlock()
	}
	return r.ids[eventID], nil
}

func (p *Publisher) publishOnce(ctx context.Context, topic string, ev *event.Event, key string) (event.Receipt, error) {
	argv := onceArgs(p, ev)
	keys := []string{Key(topic), idemKey(topic, key)}
	c, err := p.node(ctx, Key(topic))
	if err != nil {
		return event.Receipt{}, err
	}
	res, err := p.runReplicated(ctx, c, publishOnceScript, keys, argv)
	if err != nil {
		return event.Receipt{}, fmt.Errorf("idempotent xadd %s: %w", Key(topic), err)
	}
	rc, err := onceReceipt(topic, res)
	if err == nil && rc.Duplicate {
		p.log.Debug().Str("topic", topic).Str("event_id", rc.ID).Msg("idempotent replay")
	}
	return rc, err
}

// runReplicated runs a script and, when replicas are required, WAITs for
// them on the same connection.
func (p *Publisher) runReplicated(ctx context.Context, c redis.Cmdable, s *redis.Script, keys []string, argv []any) ([]any, error) {
	need := p.replicas.needed(ctx, c, p.opts.MinReplicas)
	if need == 0 {
		res, err := s.Run(ctx, c, keys, argv...).Slice()
		p.observeError(err)
		return res, err
	}
	for try := 0; ; try++ {
		var (
			run   *redis.Cmd
			acked *redis.Cmd
		)
		_, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			run = s.EvalSha(ctx, pipe, keys, argv...)
			acked = wait(ctx, pipe, need)
			return nil
		})
		if rerr := run.Err(); rerr != nil && redis.HasErrorPrefix(rerr, "NOSCRIPT") && try == 0 {
			if err := s.Load(ctx, c).Err(); err != nil {
				p.observeError(err)
				return nil, err
			}
			continue
		}
		if err := run.Err(); err != nil {
			p.observeError(err)
			return nil, err
		}
		if err != nil {
			// The script ran; only WAIT failed (a demoted master unblocks
			// it with UNBLOCKED): the write may or may not survive.
			p.observeError(err)
			return nil, fmt.Errorf("wait: %v: %w", err, ErrNotReplicated)
		}
		if n := replicated(acked); n < int64(need) {
			return nil, fmt.Errorf("%d of %d replicas: %w", n, need, ErrNotReplicated)
		}
		return run.Slice()
	}
}

// node is the client to send a topic's writes through: the client itself,
// or on Cluster the master of the key's slot (so WAIT runs on the
// connection that made the write).
func (p *Publisher) node(ctx context.Context, key string) (redis.Cmdable, error) {
	cc, ok := p.rdb.(*redis.ClusterClient)
	if !ok {
		return p.rdb, nil
	}
	c, err := cc.MasterForKey(ctx, key)
	if err != nil {
		p.observeError(err)
		return nil, fmt.Errorf("cluster master for %s: %w", key, err)
	}
	return c, nil
}

// reloadEvery rate-limits cluster slot-map refreshes.
const reloadEvery = 250 * time.Millisecond

// observeError reacts to a failed write: on Cluster, a connection error,
// a timeout or a redirect means the slot map may be stale (a master died
// and its replica took over): refresh it now rather than on go-redis's own
// schedule, so publishing follows a failover within seconds.
func (p *Publisher) observeError(err error) {
	if err == nil || errors.Is(err, redis.Nil) || IsRejected(err) {
		return
	}
	RefreshClusterState(p.rdb, &p.lastReload)
}

// RefreshClusterState asks a Cluster client to reload its slot map, at most
// once per reloadEvery (last holds the time of the previous reload). It
// does nothing for other clients.
func RefreshClusterState(rdb redis.UniversalClient, last *atomic.Int64) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return
	}
	now := time.Now().UnixNano()
	prev := last.Load()
	if now-prev < int64(reloadEvery) || !last.CompareAndSwap(prev, now) {
		return
	}
	cc.ReloadState(context.Background())
}

// waitTimeout is WAIT's own timeout: most of what is left of ctx, so a
// missing replica is reported as ErrNotReplicated before the publish times
// out. WAIT 0 would block forever: never less than a millisecond.
func waitTimeout(ctx context.Context) time.Duration {
	d := 500 * time.Millisecond
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl) * 3 / 4
	}
	return max(d, time.Millisecond).Truncate(time.Millisecond) + time.Millisecond
}

// wait queues WAIT need <timeout> on pipe (go-redis's Pipeliner lacks Wait).
func wait(ctx context.Context, pipe redis.Pipeliner, need int) *redis.Cmd {
	return pipe.Do(ctx, "WAIT", need, waitTimeout(ctx).Milliseconds())
}

// replicated is how many replicas a WAIT reported (0 on error).
func replicated(c *redis.Cmd) int64 {
	n, _ := c.Int64()
	return n
}

// replicaCount is what a node reported, as last read.
type replicaCount struct {
	at       time.Time // last read
	lastSeen time.Time // last read that showed an online replica
}

// replicaCache remembers, per node, when it last reported an online
// replica, read from INFO replication at most once a second.
type replicaCache struct {
	mu     sync.Mutex
	nodes  map[string]replicaCount
	warned bool
	log    zerolog.Logger
	// seed: a node's first reading counts a replica that is away but was
	// attached (a replication backlog, a replica still syncing) as seen
	// just now. Off on Cluster, where a node read for the first time is
	// usually a replica just promoted, which the sidecar must follow at
	// once (the old master rejoins as its replica).
	seed bool
}

// replicaCheckEvery bounds how stale the replica reading may be.
const replicaCheckEvery = time.Second

// replicaGrace is how long "auto" keeps requiring a replica after the
// master last showed one. A master whose replica just vanished is the
// dangerous case, not the safe one: in a failover the replica is promoted
// away and, for the seconds until Sentinel demotes the old master, it is a
// writable master with no replica — whatever it acknowledges then is
// discarded when it resyncs. Requiring the replica through that window
// spools those publishes (and drains them to the new master) instead. A
// replica that is gone for good stops being required after this, with a
// warning.
const replicaGrace = time.Minute

// needed is how many replicas a write on c must reach: min (when fixed),
// or under AutoReplicas 1 if c's master shows an online replica or did
// within replicaGrace.
func (rc *replicaCache) needed(ctx context.Context, c redis.Cmdable, min int) int {
	if min >= 0 {
		return min
	}
	addr := nodeAddr(c)
	rc.mu.Lock()
	cur, ok := rc.nodes[addr]
	rc.mu.Unlock()
	if !ok || time.Since(cur.at) >= replicaCheckEvery {
		n, attached, err := countReplicas(ctx, c)
		rc.mu.Lock()
		cur = rc.nodes[addr]
		switch {
		case err == nil:
			first := cur.at.IsZero()
			cur.at = time.Now()
			if n > 0 || (first && rc.seed && attached) {
				// A process that starts during a failover (its master's
				// replica killed, or resyncing) must not take a replicated
				// master for a lone one: what it acknowledged without WAIT
				// would be lost when that master is demoted.
				cur.lastSeen = cur.at
			} else if !cur.lastSeen.IsZero() && time.Since(cur.lastSeen) >= replicaGrace {
				rc.log.Warn().Str("node", addr).Dur("gone_for", time.Since(cur.lastSeen).Round(time.Second)).
					Msg("the master has had no online replica for a while: publishes are acknowledged without replication until one returns")
				cur.lastSeen = time.Time{}
			}
			rc.nodes[addr] = cur
		case !rc.warned && cur.lastSeen.IsZero():
			rc.warned = true
			rc.log.Error().Err(err).Msg("cannot count replicas (INFO replication and WAIT both refused): publishes are acknowledged without waiting for replicas; grant INFO or WAIT, or set redis.min_replicas")
		}
		rc.mu.Unlock()
	}
	if !cur.lastSeen.IsZero() && time.Since(cur.lastSeen) < replicaGrace {
		return 1
	}
	return 0
}

// countReplicas is how many online replicas c's master has: from INFO
// replication, or — for an ACL user without INFO (it is in @dangerous) —
// from WAIT 0 0, which answers at once with the replicas that have this
// connection's writes.
//
// attached reports evidence that the node has (or recently had) a replica
// even when none is online now: one listed in any state (still syncing),
// or a replication backlog (Redis keeps it for repl-backlog-ttl after the
// last replica left, and a promoted replica has one).
func countReplicas(ctx context.Context, c redis.Cmdable) (online int, attached bool, err error) {
	info, err := c.Info(ctx, "replication").Result()
	if err == nil {
		online = onlineReplicas(info)
		return online, online > 0 || strings.Contains(info, "repl_backlog_active:1") || strings.Contains(info, "\nslave0:"), nil
	}
	var w *redis.Cmd
	_, werr := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		w = pipe.Do(ctx, "WAIT", 0, 0)
		return nil
	})
	n, _ := w.Int64()
	if werr != nil {
		return 0, false, fmt.Errorf("%w; wait: %v", err, werr)
	}
	return int(n), n > 0, nil
}

// isCluster reports a Cluster client.
func isCluster(rdb redis.UniversalClient) bool {
	_, ok := rdb.(*redis.ClusterClient)
	return ok
}

// nodeAddr names the node c talks to, for the cache.
func nodeAddr(c redis.Cmdable) string {
	if cl, ok := c.(*redis.Client); ok {
		return cl.Options().Addr
	}
	return ""
}

// onlineReplicas counts "slaveN:…,state=online,…" lines of INFO replication.
func onlineReplicas(info string) int {
	n := 0
	for _, line := range strings.Split(info, "\n") {
		if strings.HasPrefix(line, "slave") && strings.Contains(line, "state=online") {
			n++
		}
	}
	return n
}
