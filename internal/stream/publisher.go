package stream

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// Retention bounds every topic stream on each append.
type Retention struct {
	MaxLen int64         // approximate MAXLEN; 0 = none
	MaxAge time.Duration // approximate MINID now-MaxAge; 0 = none
}

// Publisher appends events to topic streams.
type Publisher struct {
	rdb       redis.UniversalClient
	retention Retention
	idemTTL   time.Duration
	log       zerolog.Logger
	now       func() time.Time

	reqs     chan *xaddReq // to the batcher (Run)
	batching atomic.Bool
}

// NewPublisher returns a Publisher; idemTTL is how long an Idempotency-Key is remembered.
func NewPublisher(rdb redis.UniversalClient, retention Retention, idemTTL time.Duration, log zerolog.Logger) *Publisher {
	return &Publisher{rdb: rdb, retention: retention, idemTTL: idemTTL, log: log, now: time.Now, reqs: make(chan *xaddReq, 4*maxBatch)}
}

// trim returns the XADD trim clause: kind ("MAXLEN", "MINID" or "") and threshold.
func (p *Publisher) trim() (string, string) {
	switch {
	case p.retention.MaxAge > 0:
		return "MINID", strconv.FormatInt(p.now().Add(-p.retention.MaxAge).UnixMilli(), 10)
	case p.retention.MaxLen > 0:
		return "MAXLEN", strconv.FormatInt(p.retention.MaxLen, 10)
	}
	return "", ""
}

// Publish appends ev to the topic's stream. With ev.IdempotencyKey set, a
// key seen within the window returns the first publish's receipt and
// appends nothing (atomically, in one script).
func (p *Publisher) Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	if ev.IdempotencyKey != "" {
		return p.publishOnce(ctx, topic, ev, ev.IdempotencyKey)
	}
	args := &redis.XAddArgs{Stream: Key(topic), Values: ev.Values(), Approx: true}
	switch kind, threshold := p.trim(); kind {
	case "MINID":
		args.MinID = threshold
	case "MAXLEN":
		args.MaxLen = p.retention.MaxLen
	}
	id, err := p.xadd(ctx, args)
	if err != nil {
		return event.Receipt{}, err
	}
	return event.Receipt{ID: ev.ID, Topic: topic, StreamID: id}, nil
}

// publishOnceScript: KEYS[1] stream, KEYS[2] idempotency key;
// ARGV[1] trim kind or "", ARGV[2] threshold, ARGV[3] ttl ms, ARGV[4] event id, ARGV[5..] fields.
// Returns {1, "<event id> <stream id>"} for a new event, {0, same} for a replay.
var publishOnceScript = redis.NewScript(`
local prev = redis.call('GET', KEYS[2])
if prev then return {0, prev} end
local args = {'XADD', KEYS[1]}
if ARGV[1] ~= '' then
  args[#args+1] = ARGV[1]; args[#args+1] = '~'; args[#args+1] = ARGV[2]
end
args[#args+1] = '*'
for i = 5, #ARGV do args[#args+1] = ARGV[i] end
local sid = redis.call(unpack(args))
local val = ARGV[4] .. ' ' .. sid
redis.call('SET', KEYS[2], val, 'PX', ARGV[3])
return {1, val}
`)

// PublishDrained appends an event replayed from the spool. It may be
// replayed more than once (a crash between XADD and the spool's ack), so it
// is idempotent by event id (or by the publisher's Idempotency-Key). An
// uncertain event — spooled after a timed-out XADD that Redis may still
// have applied — is first looked for among the stream's newest entries.
func (p *Publisher) PublishDrained(ctx context.Context, topic string, ev *event.Event, uncertain bool) (event.Receipt, error) {
	if uncertain {
		sid, err := p.findRecent(ctx, topic, ev.ID)
		if err != nil {
			return event.Receipt{}, err
		}
		if sid != "" {
			return event.Receipt{ID: ev.ID, Topic: topic, StreamID: sid, Duplicate: true}, nil
		}
	}
	key := ev.IdempotencyKey
	if key == "" {
		key = "\x00event-id:" + ev.ID // cannot collide with a client's printable key
	}
	return p.publishOnce(ctx, topic, ev, key)
}

// recentWindow is how many of a stream's newest entries findRecent reads.
// An XADD that timed out lands, if at all, when Redis resumes — just before
// the drain, with only other stalled writes after it.
const recentWindow = 1000

func (p *Publisher) findRecent(ctx context.Context, topic, eventID string) (string, error) {
	msgs, err := p.rdb.XRevRangeN(ctx, Key(topic), "+", "-", recentWindow).Result()
	if err != nil {
		return "", fmt.Errorf("xrevrange %s: %w", Key(topic), err)
	}
	for _, m := range msgs {
		if m.Values[event.FieldID] == eventID {
			return m.ID, nil
		}
	}
	return "", nil
}

func (p *Publisher) publishOnce(ctx context.Context, topic string, ev *event.Event, key string) (event.Receipt, error) {
	kind, threshold := p.trim()
	vals := ev.Values()
	argv := make([]any, 0, 4+len(vals))
	argv = append(argv, kind, threshold, p.idemTTL.Milliseconds(), ev.ID)
	argv = append(argv, vals...)
	res, err := publishOnceScript.Run(ctx, p.rdb, []string{Key(topic), idemKey(topic, key)}, argv...).Slice()
	if err != nil {
		return event.Receipt{}, fmt.Errorf("idempotent xadd %s: %w", Key(topic), err)
	}
	if len(res) != 2 {
		return event.Receipt{}, fmt.Errorf("idempotent xadd %s: unexpected reply %v", Key(topic), res)
	}
	fresh, _ := res[0].(int64)
	val, _ := res[1].(string)
	id, sid, ok := strings.Cut(val, " ")
	if !ok {
		return event.Receipt{}, fmt.Errorf("idempotent xadd %s: unexpected stored result %q", Key(topic), val)
	}
	if fresh == 0 {
		p.log.Debug().Str("topic", topic).Str("event_id", id).Msg("idempotent replay")
	}
	return event.Receipt{ID: id, Topic: topic, StreamID: sid, Duplicate: fresh == 0}, nil
}
