package stream

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Retention is applied here, off the publish path, because a trim clause on
// XADD (MAXLEN ~ / MINID ~) cannot see consumer groups: it deletes entries a
// stopped or lagging group has not read yet, and those events are silently
// lost. The Trimmer trims a topic only below its safe point:
//
//	safe point = min over the stream's consumer groups of the group's first
//	             unacknowledged entry: its lowest pending id (still in the
//	             stream) when it has pending entries, else the first entry
//	             after its last-delivered-id (none: it holds nothing back)
//
// Every entry strictly below the safe point has been acknowledged (delivered
// or dead-lettered) by every group. The retention target (the entry MaxLen
// from the newest, or now-MaxAge) is cut at the safe point; when the target
// lies above it, retention is "held back" by the slowest group, which Stats
// and the observer name.
//
// A stream with no consumer group is trimmed to the target: nobody can lose
// an event there, and waiting for a group that may never come would let the
// stream grow without bound. A subscriber that creates its group later
// starts from what retention kept, as it would with any retention.

// TrimObserver records what retention does (metrics).
type TrimObserver interface {
	// Trimmed reports entries removed from a topic's stream.
	Trimmed(topic string, entries int64)
	// RetentionHeld is a gauge of entries retention would have removed but
	// group has not acknowledged. When the holding group changes or lets
	// go, the previous group is reported once more with 0, so a gauge per
	// (topic, group) needs no deletes.
	RetentionHeld(topic, group string, entries int64)
}

type nopTrimObserver struct{}

func (nopTrimObserver) Trimmed(string, int64)               {}
func (nopTrimObserver) RetentionHeld(string, string, int64) {}

// TopicRetention is one topic's retention state, as of the Trimmer's last
// round on it.
type TopicRetention struct {
	Topic  string `json:"topic"`
	Length int64  `json:"length"` // stream entries after the last trim
	Groups int    `json:"groups"`
	// SafePoint is the lowest entry some group has not acknowledged; empty
	// when no group holds anything back.
	SafePoint string `json:"safe_point,omitempty"`
	HeldBack  bool   `json:"held_back"`
	HeldBy    string `json:"held_by,omitempty"` // the slowest group, while held back
	// HeldEntries is how many entries retention would have removed but
	// HeldBy has not acknowledged. With max_age it is counted up to the
	// scan budget (1000): a lower bound beyond that.
	HeldEntries int64     `json:"held_entries,omitempty"`
	Trimmed     int64     `json:"trimmed"` // entries removed since start
	LastRun     time.Time `json:"last_run,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
}

// maxTrimTopics bounds the set Touch fills: topic names come from clients.
// Beyond it the least recently published topic is forgotten until its next
// publish (an idle stream does not grow meanwhile).
const maxTrimTopics = 4096

// trimScanBudget bounds the entries one script call reads to find the
// retention cut, so a call never blocks Redis long or loads much into Lua;
// a larger backlog is worked off in further calls (at most maxTrimPasses a
// round).
const (
	trimScanBudget = 1000
	maxTrimPasses  = 32
)

const (
	trimCallTimeout     = 5 * time.Second
	defaultTrimInterval = time.Second
)

// trimMode is how a trim protects unacknowledged entries.
type trimMode int32

const (
	modeUnknown  trimMode = iota
	modeComputed          // Redis < 8.2: XTRIM MINID ~ <safe cut>, computed by the script
	modeNative            // Redis >= 8.2: XTRIM … ACKED, Redis keeps unacknowledged entries itself
)

func (m trimMode) String() string {
	switch m {
	case modeComputed:
		return "computed"
	case modeNative:
		return "native"
	}
	return "unknown"
}

// Trimmer applies retention to the topics this process publishes to (Touch),
// never below an entry some consumer group has not acknowledged. Run is its
// actor: one script call per topic per interval, none for a topic with
// nothing new and nothing held back (unless retention is by age).
type Trimmer struct {
	rdb       redis.UniversalClient
	retention Retention
	interval  time.Duration
	obs       TrimObserver
	log       zerolog.Logger
	now       func() time.Time
	budget    int64
	maxTopics int

	mode  atomic.Int32 // trimMode; written by Run only
	round atomic.Int64 // rounds started

	mu     sync.RWMutex
	topics map[string]*trimTopic
}

// trimTopic is one touched topic.
type trimTopic struct {
	name      string
	touched   atomic.Bool  // published to since the last round
	lastRound atomic.Int64 // the last round that saw it touched (eviction order)

	// Owned by Run.
	clean  bool   // the last round left it at its target, held by no one, without error
	heldBy string // the group last reported to the observer as holding it

	stats TopicRetention // guarded by Trimmer.mu
}

// NewTrimmer returns a Trimmer that trims every interval (default 1s); obs
// may be nil. With a zero Retention it never trims anything.
func NewTrimmer(rdb redis.UniversalClient, r Retention, interval time.Duration, obs TrimObserver, log zerolog.Logger) *Trimmer {
	if interval <= 0 {
		interval = defaultTrimInterval
	}
	if obs == nil {
		obs = nopTrimObserver{}
	}
	return &Trimmer{
		rdb: rdb, retention: r, interval: interval, obs: obs, log: log, now: time.Now,
		budget: trimScanBudget, maxTopics: maxTrimTopics, topics: map[string]*trimTopic{},
	}
}

func (t *Trimmer) enabled() bool { return t.retention.MaxLen > 0 || t.retention.MaxAge > 0 }

// Touch registers topic to be kept trimmed. It is called on every publish,
// so the common case is a read-locked lookup and an atomic load.
func (t *Trimmer) Touch(topic string) {
	if !t.enabled() {
		return
	}
	t.mu.RLock()
	e := t.topics[topic]
	t.mu.RUnlock()
	if e == nil {
		e = t.add(topic)
	}
	if !e.touched.Load() { // a load first: no cache-line write per publish
		e.touched.Store(true)
	}
}

func (t *Trimmer) add(topic string) *trimTopic {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.topics[topic]; e != nil {
		return e
	}
	if len(t.topics) >= t.maxTopics {
		var oldest *trimTopic
		for _, e := range t.topics {
			if oldest == nil || e.lastRound.Load() < oldest.lastRound.Load() {
				oldest = e
			}
		}
		delete(t.topics, oldest.name)
	}
	e := &trimTopic{name: topic, stats: TopicRetention{Topic: topic}}
	e.lastRound.Store(t.round.Load())
	t.topics[topic] = e
	return e
}

// Stats returns each touched topic's retention state, by topic name.
func (t *Trimmer) Stats() []TopicRetention {
	t.mu.RLock()
	out := make([]TopicRetention, 0, len(t.topics))
	for _, e := range t.topics {
		out = append(out, e.stats)
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out
}

// Run trims every touched topic each interval until ctx is done. Redis
// errors are recorded per topic and retried next round; they never end Run.
func (t *Trimmer) Run(ctx context.Context) error {
	if !t.enabled() {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			t.trimAll(ctx)
		}
	}
}

// trimAll is one round over the touched topics.
func (t *Trimmer) trimAll(ctx context.Context) {
	round := t.round.Add(1)
	if trimMode(t.mode.Load()) == modeUnknown {
		t.detectMode(ctx)
	}
	t.mu.RLock()
	topics := make([]*trimTopic, 0, len(t.topics))
	for _, e := range t.topics {
		topics = append(topics, e)
	}
	t.mu.RUnlock()
	for _, e := range topics {
		if ctx.Err() != nil {
			return
		}
		touched := e.touched.Swap(false)
		if touched {
			e.lastRound.Store(round)
		}
		// Nothing appended here and nothing held last time: the stream is
		// still at its target. Age-based retention expires entries with
		// time alone, so it always looks.
		if !touched && e.clean && t.retention.MaxAge == 0 {
			continue
		}
		if err := t.trimTopic(ctx, e); err != nil && !isReply(err) {
			// Redis is unreachable or stalled, not refusing this one key:
			// every other topic would wait out the same timeout. The failed
			// topic is not clean, so the next round looks at it again.
			return
		}
	}
}

// isReply reports whether err is Redis answering with an error (WRONGTYPE,
// NOPERM, …), which concerns one key, rather than a connection failure.
func isReply(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr)
}

// detectMode reads the server version once; until it is known (Redis down)
// rounds use the computed cut, which is correct on every version.
func (t *Trimmer) detectMode(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, trimCallTimeout)
	defer cancel()
	info, err := t.rdb.Info(cctx, "server").Result()
	if err != nil {
		return
	}
	v := infoField(info, "redis_version")
	m := modeForVersion(v)
	t.mode.Store(int32(m))
	t.log.Info().Str("redis_version", v).Str("mode", m.String()).Msg("retention trimming mode")
}

func infoField(info, name string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// modeForVersion picks native ACKED trimming from Redis 8.2 on. Servers
// that speak the protocol but report an older or no version (Valkey reports
// 7.2.4) get the computed cut.
func modeForVersion(v string) trimMode {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return modeComputed
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return modeComputed
	}
	if major > 8 || (major == 8 && minor >= 2) {
		return modeNative
	}
	return modeComputed
}

// trimTopic trims one topic: one script call, more only while a backlog
// larger than the scan budget is being worked off.
func (t *Trimmer) trimTopic(ctx context.Context, e *trimTopic) error {
	var (
		total int64
		res   trimResult
		err   error
	)
	for pass := 0; pass < maxTrimPasses; pass++ {
		res, err = t.trimOnce(ctx, e.name)
		if err != nil {
			break
		}
		total += res.Trimmed
		if !res.More || res.Trimmed == 0 {
			break
		}
	}
	t.record(e, total, res, err)
	return err
}

// record publishes a topic's round to Stats, the observer and the log.
func (t *Trimmer) record(e *trimTopic, trimmed int64, res trimResult, err error) {
	now := t.now()
	t.mu.Lock()
	prevErr, prevHeld := e.stats.LastError, e.stats.HeldBy
	e.stats.LastRun = now
	e.stats.Trimmed += trimmed
	if err != nil {
		e.stats.LastError = err.Error()
	} else {
		e.stats.LastError = ""
		e.stats.Length, e.stats.Groups, e.stats.SafePoint = res.LenAfter, res.Groups, res.SafePoint
		e.stats.HeldBack, e.stats.HeldBy, e.stats.HeldEntries = res.HeldBy != "", res.HeldBy, res.Held
	}
	t.mu.Unlock()

	log := t.log.With().Str("topic", e.name).Logger()
	if trimmed > 0 { // also when a later pass of the round failed
		t.obs.Trimmed(e.name, trimmed)
		log.Debug().Int64("entries", trimmed).Int64("length", res.LenAfter).Str("cmd", res.Command).Msg("trimmed")
	}
	if err != nil {
		e.clean = false
		if prevErr == "" {
			log.Warn().Err(err).Msg("retention trim failed; retrying every round")
		}
		return // the held gauge keeps its last known value
	}
	if prevErr != "" {
		log.Info().Msg("retention trim recovered")
	}
	// Skippable only after a round with nothing to do: a trim may have
	// stopped short (approximation, XTRIM's own LIMIT), so look once more.
	e.clean = res.HeldBy == "" && !res.More && trimmed == 0
	if e.heldBy != "" && e.heldBy != res.HeldBy {
		t.obs.RetentionHeld(e.name, e.heldBy, 0)
	}
	if res.HeldBy != "" {
		t.obs.RetentionHeld(e.name, res.HeldBy, res.Held)
	}
	switch {
	case res.HeldBy != "" && prevHeld != res.HeldBy:
		log.Info().Str("group", res.HeldBy).Int64("entries", res.Held).Str("safe_point", res.SafePoint).
			Msg("retention held back: the group has not acknowledged entries retention would remove")
	case res.HeldBy == "" && prevHeld != "":
		log.Info().Str("group", prevHeld).Msg("retention no longer held back")
	}
	e.heldBy = res.HeldBy
}

// trimResult is one script call's reply.
type trimResult struct {
	LenBefore, LenAfter int64
	Trimmed             int64
	Groups              int
	SafePoint           string // "" when no group holds anything back
	HeldBy              string // the slowest group, when it holds retention back
	Held                int64  // entries retention would have removed but HeldBy holds
	More                bool   // a backlog beyond the scan budget remains: call again
	Command             string // the XTRIM the script ran, "" if none
}

// trimOnce runs the script once for topic, falling back from native to
// computed trimming if the server turns out not to know ACKED.
func (t *Trimmer) trimOnce(ctx context.Context, topic string) (trimResult, error) {
	mode := trimMode(t.mode.Load())
	res, err := t.runScript(ctx, topic, mode)
	if err != nil && mode == modeNative && isSyntaxError(err) {
		// The server reported >= 8.2 but rejects ACKED (a look-alike, or a
		// failover to an older replica): the computed cut works everywhere.
		t.mode.Store(int32(modeComputed))
		t.log.Warn().Err(err).Msg("redis rejected XTRIM … ACKED; trimming below the computed safe point instead")
		res, err = t.runScript(ctx, topic, modeComputed)
	}
	return res, err
}

func isSyntaxError(err error) bool {
	return isReply(err) && strings.Contains(strings.ToLower(err.Error()), "syntax error")
}

func (t *Trimmer) runScript(ctx context.Context, topic string, mode trimMode) (trimResult, error) {
	kind, threshold := retentionPolicy(t.retention, t.now())
	argv := []any{mode.String(), kind, threshold, t.budget}
	for _, a := range trimArgs(kind, threshold, mode == modeNative) {
		argv = append(argv, a)
	}
	cctx, cancel := context.WithTimeout(ctx, trimCallTimeout)
	defer cancel()
	key := Key(topic)
	reply, err := trimScript.Run(cctx, t.rdb, []string{key}, argv...).Slice()
	if err != nil {
		return trimResult{}, fmt.Errorf("trim %s: %w", key, err)
	}
	return parseTrimReply(reply)
}

func parseTrimReply(r []any) (trimResult, error) {
	if len(r) != 9 {
		return trimResult{}, fmt.Errorf("trim: unexpected reply %v", r)
	}
	i := func(n int) int64 { v, _ := r[n].(int64); return v }
	s := func(n int) string { v, _ := r[n].(string); return v }
	return trimResult{
		LenBefore: i(0), LenAfter: i(1), Trimmed: i(2), Groups: int(i(3)),
		SafePoint: s(4), HeldBy: s(5), Held: i(6), More: i(7) == 1, Command: s(8),
	}, nil
}

// retentionPolicy is retention's target at now, as an XTRIM strategy and
// threshold. MaxAge wins over MaxLen, as on the publish path; the age is
// measured on this host's clock against ids stamped by Redis's.
func retentionPolicy(r Retention, now time.Time) (kind, threshold string) {
	if r.MaxAge > 0 {
		return "MINID", strconv.FormatInt(max(now.Add(-r.MaxAge).UnixMilli(), 0), 10) + "-0"
	}
	return "MAXLEN", strconv.FormatInt(r.MaxLen, 10)
}

// trimArgs is the XTRIM strategy that applies the target as is, after the
// key. The script runs it in native mode (ACKED: Redis >= 8.2 keeps every
// entry some group has not acknowledged), and in computed mode only when no
// group holds anything back. Otherwise computed mode runs
// "XTRIM <key> MINID ~ <cut>" with the cut it computed, at or below the
// safe point. Approximate (~) trimming removes only whole stream nodes, so
// it is cheap and never removes more than asked.
func trimArgs(kind, threshold string, native bool) []string {
	args := []string{kind, "~", threshold}
	if native {
		args = append(args, "ACKED")
	}
	return args
}

// trimScript reads the groups, computes the safe point and trims, in one
// atomic call: no entry can be appended, read or acknowledged, and no group
// created, between the read and the trim. A group created afterwards, even
// at "0", starts from what is left; what was removed had been acknowledged
// by every group that existed, and a group that did not exist had no claim
// on it — the same as with any retention. The safe point comes from the
// pending list and last-delivered-id, which are exact; a group's lag is used
// only when Redis reports one (it reports none when it cannot tell, e.g.
// after deletions), to see cheaply that a plain MAXLEN trim stays clear of
// every group's first unacknowledged entry.
//
// KEYS[1] stream. ARGV[1] mode ("computed" | "native"), ARGV[2] kind
// ("MAXLEN" | "MINID"), ARGV[3] threshold (count, or "<ms>-0"), ARGV[4] scan
// budget, ARGV[5..] the XTRIM strategy of trimArgs.
// Reply: {len before, len after, trimmed, groups, safe point | "",
// held-by | "", held entries, more (0|1), command run | ""}.
var trimScript = redis.NewScript(`
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {0, 0, 0, 0, '', '', 0, 0, ''} end
local native = ARGV[1] == 'native'
local kind, threshold, budget = ARGV[2], ARGV[3], tonumber(ARGV[4])

-- Stream ids compare as two decimal numbers; as strings, so no 64-bit
-- value is rounded through a Lua double.
local function numless(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function idless(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then return numless(am, bm) end
  return numless(as, bs)
end

local len = redis.call('XLEN', key)
local head = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
local groups = redis.call('XINFO', 'GROUPS', key)
local safe, slowest = nil, ''
-- tail: the most entries any group still needs (its first unacknowledged
-- one and all after it), when every group's is known: its lag (exact when
-- Redis reports one) plus its pending span. When tail <= the MAXLEN
-- target, a plain trim to the target cannot reach any of them, and the
-- cut need not be found by stepping over the entries below it.
local tail, known = 0, true
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local first = nil
  if tonumber(f['pending']) > 0 then
    -- Lowest pending id: read but not yet acknowledged.
    first = redis.call('XPENDING', key, f['name'])[2]
    if head[1] and idless(first, head[1][1]) then
      -- Pending entries already gone from the head of the stream (trimmed
      -- by an older version, or deleted) protect nothing; the lowest
      -- pending entry that still exists does.
      local p = redis.call('XPENDING', key, f['name'], head[1][1], '+', 1)
      first = p[1] and p[1][1]
    end
  end
  local lag = tonumber(f['lag'])
  if known and kind == 'MAXLEN' and lag and lag <= tonumber(threshold) then
    local need = lag
    if first then
      -- Only whether the span fits what the target leaves matters.
      local room = math.min(budget, tonumber(threshold) - lag)
      local span = redis.call('XRANGE', key, first, f['last-delivered-id'], 'COUNT', room + 1)
      if #span > room then known = false else need = need + #span end
    end
    if need > tail then tail = need end
  else
    known = false
  end
  if not first then
    -- Nothing pending: everything up to last-delivered-id is acknowledged;
    -- the first unread entry is the next one. None (caught up, created at
    -- "$", or set beyond the last entry): this group holds nothing back.
    local nxt = redis.pcall('XRANGE', key, '(' .. f['last-delivered-id'], '+', 'COUNT', 1)
    if type(nxt) == 'table' and not nxt.err and nxt[1] then first = nxt[1][1] end
  end
  if first and (safe == nil or idless(first, safe)) then safe, slowest = first, f['name'] end
end

local plain, cut, held, more = false, nil, 0, 0
if kind == 'MAXLEN' then
  local target = tonumber(threshold)
  local excess = len - target
  if excess > 0 then
    if safe == nil or (known and tail <= target) then
      plain = true
    else
      -- The oldest k+1 entries at or below the safe point. If there are
      -- k+1, the (k+1)th is the cut: the k before it are all below the
      -- safe point, and k <= excess keeps MAXLEN entries. Fewer: only
      -- those below the safe point may go, and the group holds the rest.
      local k = math.min(excess, budget)
      local r = redis.call('XRANGE', key, '-', safe, 'COUNT', k + 1)
      if #r == k + 1 then
        cut = r[k + 1][1]
        if k < excess then more = 1 end
      else
        local below = #r
        if below > 0 and r[below][1] == safe then below = below - 1 end
        held = excess - below
        if below > 0 then cut = safe end
      end
    end
  end
else
  if safe == nil or not idless(safe, threshold) then
    plain = true
  else
    -- Entries older than the age limit that the group has not acknowledged.
    cut = safe
    local r = redis.call('XRANGE', key, safe, threshold, 'COUNT', budget)
    held = #r
    if held > 0 and r[held][1] == threshold then held = held - 1 end
  end
end

local cmd = nil
if native then
  -- Redis applies the target itself and keeps what a group still needs;
  -- the computation above only decides whether to call and what to report.
  if plain or cut then cmd = {'XTRIM', key} end
  more = 0
elseif plain then
  cmd = {'XTRIM', key}
elseif cut then
  cmd = {'XTRIM', key, 'MINID', '~', cut}
end
if cmd and #cmd == 2 then
  for i = 5, #ARGV do cmd[#cmd + 1] = ARGV[i] end
end
local trimmed = 0
if cmd then trimmed = redis.call(unpack(cmd)) end
local after = redis.call('XLEN', key)
if plain and not native and kind == 'MAXLEN' and trimmed > 0 and after - tonumber(threshold) > budget then
  more = 1 -- XTRIM ~ stopped at its default LIMIT (100 stream nodes)
end
local heldby = ''
if held > 0 then heldby = slowest end
local cmdline = ''
if cmd then cmdline = table.concat(cmd, ' ') end
return {len, after, trimmed, #groups, safe or '', heldby, held, more, cmdline}
`)
