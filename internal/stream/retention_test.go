package stream

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// trimRedis starts a redis-server whose stream nodes hold one entry each,
// so approximate trimming (~, whole nodes only) is exact and the tests can
// name the first entry that must survive.
func trimRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	srv := redistest.StartProcessWith(t, 0, "--stream-node-max-entries", "1")
	return srv.Client(t), redistest.UniqueTopic(t, "trim")
}

func addN(t *testing.T, rdb *redis.Client, key string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: key, Values: []any{"i", i}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

// addAt appends n entries with ids in millisecond ms.
func addAt(t *testing.T, rdb *redis.Client, key string, ms int64, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		id := fmt.Sprintf("%d-%d", ms, i)
		if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: key, ID: id, Values: []any{"i", i}}).Err(); err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

// groupAt creates group g at start ("0", "$" or an id).
func groupAt(t *testing.T, rdb *redis.Client, key, g, start string) {
	t.Helper()
	if err := rdb.XGroupCreateMkStream(context.Background(), key, g, start).Err(); err != nil {
		t.Fatal(err)
	}
}

// consume reads group g's next n entries and acknowledges all of them
// except the ones at the indexes in keep (left pending).
func consume(t *testing.T, rdb *redis.Client, key, g string, n int, ids []string, keep ...int) {
	t.Helper()
	ctx := context.Background()
	if err := rdb.XGroupCreateMkStream(ctx, key, g, "0").Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		t.Fatal(err)
	}
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: g, Consumer: "c", Streams: []string{key, ">"}, Count: int64(n), Block: -1}).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res[0].Messages {
		if slices.ContainsFunc(keep, func(i int) bool { return ids[i] == m.ID }) {
			continue
		}
		if err := rdb.XAck(ctx, key, g, m.ID).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// trimObs records what the Trimmer reports.
type trimObs struct {
	mu      sync.Mutex
	trimmed map[string]int64
	held    []string // "topic group entries", in order
}

func (o *trimObs) Trimmed(topic string, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.trimmed == nil {
		o.trimmed = map[string]int64{}
	}
	o.trimmed[topic] += n
}

func (o *trimObs) RetentionHeld(topic, group string, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.held = append(o.held, fmt.Sprintf("%s %s %d", topic, group, n))
}

func (o *trimObs) heldCalls() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.held...)
}

func (o *trimObs) trimmedOf(topic string) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.trimmed[topic]
}

func newTestTrimmer(rdb redis.UniversalClient, r Retention, obs TrimObserver) *Trimmer {
	tr := NewTrimmer(rdb, r, time.Hour, obs, zerolog.Nop())
	tr.mode.Store(int32(modeComputed)) // the installed Redis is 7.x; say so without asking
	return tr
}

func firstID(t *testing.T, rdb *redis.Client, key string) string {
	t.Helper()
	msgs, err := rdb.XRangeN(context.Background(), key, "-", "+", 1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) == 0 {
		return ""
	}
	return msgs[0].ID
}

func TestTrimmerSafePoint(t *testing.T) {
	now := time.Now()
	old, recent := now.Add(-2*time.Hour).UnixMilli(), now.Add(-time.Minute).UnixMilli()
	ageEntries := func(t *testing.T, rdb *redis.Client, key string) []string {
		return append(addAt(t, rdb, key, old, 10), addAt(t, rdb, key, recent, 10)...)
	}
	byLen := Retention{MaxLen: 10}
	byAge := Retention{MaxAge: time.Hour}
	cases := []struct {
		name      string
		retention Retention
		n         int                                                        // entries added with XADD *
		add       func(t *testing.T, rdb *redis.Client, key string) []string // instead of n
		groups    func(t *testing.T, rdb *redis.Client, key string, ids []string)
		wantLen   int64
		wantFirst int // index of the first entry left; -1: none left
		wantSafe  int // index of the safe point; -1: no group holds anything
		wantBy    string
		wantHeld  int64
		wantCmd   func(key string, ids []string, cutoff string) string // cutoff: the max_age MINID
	}{
		{
			name: "no groups: trimmed to max_len", retention: byLen, n: 50,
			wantLen: 10, wantFirst: 40, wantSafe: -1,
			wantCmd: func(key string, _ []string, _ string) string { return "XTRIM " + key + " MAXLEN ~ 10" },
		},
		{
			name: "lagging group keeps everything from its first unread", retention: byLen, n: 50,
			groups:  func(t *testing.T, rdb *redis.Client, key string, ids []string) { consume(t, rdb, key, "g", 20, ids) },
			wantLen: 30, wantFirst: 20, wantSafe: 20, wantBy: "g", wantHeld: 20,
			wantCmd: func(key string, ids []string, _ string) string { return "XTRIM " + key + " MINID ~ " + ids[20] },
		},
		{
			name: "pending entry holds back", retention: byLen, n: 50,
			groups:  func(t *testing.T, rdb *redis.Client, key string, ids []string) { consume(t, rdb, key, "g", 30, ids, 5) },
			wantLen: 45, wantFirst: 5, wantSafe: 5, wantBy: "g", wantHeld: 35,
		},
		{
			name: "two groups: the slowest wins and is named", retention: byLen, n: 50,
			groups: func(t *testing.T, rdb *redis.Client, key string, ids []string) {
				consume(t, rdb, key, "fast", 40, ids)
				consume(t, rdb, key, "slow", 15, ids)
			},
			wantLen: 35, wantFirst: 15, wantSafe: 15, wantBy: "slow", wantHeld: 25,
		},
		{
			name: "a pending entry behind a group that read further", retention: byLen, n: 50,
			groups: func(t *testing.T, rdb *redis.Client, key string, ids []string) {
				consume(t, rdb, key, "a-ahead", 45, ids, 12)
				consume(t, rdb, key, "b-behind", 30, ids)
			},
			wantLen: 38, wantFirst: 12, wantSafe: 12, wantBy: "a-ahead", wantHeld: 28,
		},
		{
			name: "pending entries gone from the stream hold nothing back", retention: byLen, n: 50,
			groups: func(t *testing.T, rdb *redis.Client, key string, ids []string) {
				consume(t, rdb, key, "g", 10, ids, 0, 1)
				rdb.XTrimMinID(context.Background(), key, ids[2]) // as an old lossy trim did
			},
			wantLen: 40, wantFirst: 10, wantSafe: 10, wantBy: "g", wantHeld: 30,
		},
		{
			// Lag 5 + pending span 3 (#42..#44) <= max_len: a plain trim to
			// max_len cannot reach #42, so no cut is searched for.
			name: "a group close behind: plain trim to max_len, its pending entry kept", retention: byLen, n: 50,
			groups: func(t *testing.T, rdb *redis.Client, key string, ids []string) {
				consume(t, rdb, key, "g", 45, ids, 42)
			},
			wantLen: 10, wantFirst: 40, wantSafe: 42,
			wantCmd: func(key string, _ []string, _ string) string { return "XTRIM " + key + " MAXLEN ~ 10" },
		},
		{
			// Lag 5 + span 6 (#39..#44) > max_len: the cut is searched for
			// and stops at the pending entry.
			name: "a pending entry just past max_len: the cut stops at it", retention: byLen, n: 50,
			groups: func(t *testing.T, rdb *redis.Client, key string, ids []string) {
				consume(t, rdb, key, "g", 45, ids, 39)
			},
			wantLen: 11, wantFirst: 39, wantSafe: 39, wantBy: "g", wantHeld: 1,
		},
		{
			name: "caught-up group holds nothing", retention: byLen, n: 50,
			groups:  func(t *testing.T, rdb *redis.Client, key string, ids []string) { consume(t, rdb, key, "g", 50, ids) },
			wantLen: 10, wantFirst: 40, wantSafe: -1,
		},
		{
			name: "group created at $ on an existing stream holds nothing", retention: byLen, n: 50,
			groups:  func(t *testing.T, rdb *redis.Client, key string, _ []string) { groupAt(t, rdb, key, "g", "$") },
			wantLen: 10, wantFirst: 40, wantSafe: -1,
		},
		{
			name: "group whose last-delivered-id is beyond the last entry holds nothing", retention: byLen, n: 50,
			groups: func(t *testing.T, rdb *redis.Client, key string, _ []string) {
				groupAt(t, rdb, key, "g", fmt.Sprintf("%d-0", time.Now().Add(time.Hour).UnixMilli()))
			},
			wantLen: 10, wantFirst: 40, wantSafe: -1,
		},
		{
			name: "group at 0 that read nothing holds everything", retention: byLen, n: 50,
			groups:  func(t *testing.T, rdb *redis.Client, key string, _ []string) { groupAt(t, rdb, key, "g", "0") },
			wantLen: 50, wantFirst: 0, wantSafe: 0, wantBy: "g", wantHeld: 40,
		},
		{
			name: "shorter than max_len: nothing to do", retention: byLen, n: 5,
			groups:  func(t *testing.T, rdb *redis.Client, key string, _ []string) { groupAt(t, rdb, key, "g", "0") },
			wantLen: 5, wantFirst: 0, wantSafe: 0,
		},
		{
			name: "empty stream", retention: byLen,
			groups:  func(t *testing.T, rdb *redis.Client, key string, _ []string) { groupAt(t, rdb, key, "g", "$") },
			wantLen: 0, wantFirst: -1, wantSafe: -1,
		},
		{
			name: "max_age without groups", retention: byAge, add: ageEntries,
			wantLen: 10, wantFirst: 10, wantSafe: -1,
			wantCmd: func(key string, _ []string, cutoff string) string { return "XTRIM " + key + " MINID ~ " + cutoff },
		},
		{
			name: "max_age held back by a lagging group", retention: byAge, add: ageEntries,
			groups:  func(t *testing.T, rdb *redis.Client, key string, ids []string) { consume(t, rdb, key, "g", 3, ids) },
			wantLen: 17, wantFirst: 3, wantSafe: 3, wantBy: "g", wantHeld: 7,
		},
		{
			name: "max_age with a group past the age limit", retention: byAge, add: ageEntries,
			groups:  func(t *testing.T, rdb *redis.Client, key string, ids []string) { consume(t, rdb, key, "g", 15, ids) },
			wantLen: 10, wantFirst: 10, wantSafe: 15,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rdb, topic := trimRedis(t)
			key := Key(topic)
			var ids []string
			if tc.add != nil {
				ids = tc.add(t, rdb, key)
			} else {
				ids = addN(t, rdb, key, tc.n)
			}
			if tc.groups != nil {
				tc.groups(t, rdb, key, ids)
			}
			before := rdb.XLen(context.Background(), key).Val()
			obs := &trimObs{}
			tr := newTestTrimmer(rdb, tc.retention, obs)
			fixed := time.Now()
			tr.now = func() time.Time { return fixed }
			tr.Touch(topic)
			res, err := tr.trimOnce(context.Background(), topic)
			if err != nil {
				t.Fatal(err)
			}
			tr.record(tr.topics[topic], res.Trimmed, res, nil)

			if n, _ := rdb.XLen(context.Background(), key).Result(); n != tc.wantLen {
				t.Errorf("length: got %d, want %d", n, tc.wantLen)
			}
			wantFirst := ""
			if tc.wantFirst >= 0 {
				wantFirst = ids[tc.wantFirst]
			}
			if got := firstID(t, rdb, key); got != wantFirst {
				t.Errorf("first entry left: got %q, want %q", got, wantFirst)
			}
			st := tr.Stats()
			if len(st) != 1 {
				t.Fatalf("stats: got %d topics, want 1", len(st))
			}
			s := st[0]
			wantSafe := ""
			if tc.wantSafe >= 0 {
				wantSafe = ids[tc.wantSafe]
			}
			if s.SafePoint != wantSafe || s.HeldBy != tc.wantBy || s.HeldBack != (tc.wantBy != "") || s.HeldEntries != tc.wantHeld {
				t.Errorf("stats: got safe %q held_back %v by %q entries %d, want safe %q by %q entries %d",
					s.SafePoint, s.HeldBack, s.HeldBy, s.HeldEntries, wantSafe, tc.wantBy, tc.wantHeld)
			}
			if s.Length != tc.wantLen || s.Trimmed != before-tc.wantLen {
				t.Errorf("stats: got length %d trimmed %d, want %d and %d", s.Length, s.Trimmed, tc.wantLen, before-tc.wantLen)
			}
			if tc.wantCmd != nil {
				want := tc.wantCmd(key, ids, fmt.Sprintf("%d-0", fixed.Add(-tc.retention.MaxAge).UnixMilli()))
				if res.Command != want {
					t.Errorf("command: got %q, want %q", res.Command, want)
				}
			}
			if tc.wantBy != "" {
				if want := []string{fmt.Sprintf("%s %s %d", topic, tc.wantBy, tc.wantHeld)}; !slices.Equal(obs.heldCalls(), want) {
					t.Errorf("observer held: got %v, want %v", obs.heldCalls(), want)
				}
			}
			if got, want := obs.trimmedOf(topic), before-tc.wantLen; got != want {
				t.Errorf("observer trimmed: got %d, want %d", got, want)
			}
		})
	}
}

// A backlog larger than the scan budget is worked off in bounded calls
// within one round, never past the safe point.
func TestTrimmerBudgetedPasses(t *testing.T) {
	rdb, topic := trimRedis(t)
	key := Key(topic)
	ids := addN(t, rdb, key, 50)
	consume(t, rdb, key, "g", 40, ids)
	tr := newTestTrimmer(rdb, Retention{MaxLen: 5}, nil)
	tr.budget = 5
	tr.Touch(topic)

	res, err := tr.trimOnce(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if res.Trimmed != 5 || !res.More || res.Command != "XTRIM "+key+" MINID ~ "+ids[5] {
		t.Fatalf("first call: got trimmed %d more %v %q, want 5, true, MINID ~ %s", res.Trimmed, res.More, res.Command, ids[5])
	}
	tr.trimAll(context.Background())
	if got := firstID(t, rdb, key); got != ids[40] {
		t.Fatalf("after one round: first entry %s, want %s (the safe point)", got, ids[40])
	}
	if s := tr.Stats()[0]; !s.HeldBack || s.HeldBy != "g" || s.HeldEntries != 5 || s.Length != 10 {
		t.Fatalf("stats: got %+v, want held back by g, 5 entries, length 10", s)
	}
	t.Logf("measured: 45 entries over max_len trimmed to the safe point in %d-entry calls", tr.budget)
}

func TestTrimmerRunReportsHoldAndRelease(t *testing.T) {
	rdb, topic := trimRedis(t)
	key := Key(topic)
	ids := addN(t, rdb, key, 50)
	consume(t, rdb, key, "calendar", 20, ids)
	obs := &trimObs{}
	tr := NewTrimmer(rdb, Retention{MaxLen: 10}, 10*time.Millisecond, obs, zerolog.Nop())
	tr.Touch(topic)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	}()

	eventually.True(t, 5*time.Second, "retention held back by calendar", func() bool {
		st := tr.Stats()
		return len(st) == 1 && st[0].HeldBack && st[0].HeldBy == "calendar"
	})
	s := tr.Stats()[0]
	if s.SafePoint != ids[20] || s.HeldEntries != 20 || s.Length != 30 || s.Trimmed != 20 || s.LastError != "" {
		t.Fatalf("held stats: got %+v, want safe %s, 20 held, length 30, 20 trimmed", s, ids[20])
	}
	if got := firstID(t, rdb, key); got != ids[20] {
		t.Fatalf("first entry: got %s, want %s", got, ids[20])
	}

	consume(t, rdb, key, "calendar", 30, ids) // the group catches up
	eventually.True(t, 5*time.Second, "retention released", func() bool {
		st := tr.Stats()
		return !st[0].HeldBack && st[0].Length == 10
	})
	if got := firstID(t, rdb, key); got != ids[40] {
		t.Fatalf("first entry after release: got %s, want %s", got, ids[40])
	}
	calls := obs.heldCalls()
	if len(calls) < 2 || calls[0] != topic+" calendar 20" || calls[len(calls)-1] != topic+" calendar 0" {
		t.Fatalf("observer held: got %v, want first %q and last %q", calls, topic+" calendar 20", topic+" calendar 0")
	}
	if got := obs.trimmedOf(topic); got != 40 {
		t.Fatalf("observer trimmed: got %d, want 40", got)
	}
	if m := trimMode(tr.mode.Load()); m != modeComputed {
		t.Fatalf("mode on Redis 7: got %v, want computed", m)
	}
}

func TestTrimmerZeroRetentionNeverTrims(t *testing.T) {
	rdb, topic := trimRedis(t)
	addN(t, rdb, Key(topic), 20)
	tr := NewTrimmer(rdb, Retention{}, time.Millisecond, nil, zerolog.Nop())
	tr.Touch(topic)
	tr.trimAll(context.Background()) // even a round forced by hand has nothing to do
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := tr.Run(ctx); err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	if n := rdb.XLen(context.Background(), Key(topic)).Val(); n != 20 {
		t.Fatalf("length: got %d, want 20", n)
	}
	if st := tr.Stats(); len(st) != 0 {
		t.Fatalf("stats: got %v, want none", st)
	}
}

// On 7.x a server claiming 8.2 is answered "syntax error" for ACKED: the
// Trimmer falls back to the computed cut in the same call.
func TestTrimmerNativeModeFallsBack(t *testing.T) {
	rdb, topic := trimRedis(t)
	key := Key(topic)
	ids := addN(t, rdb, key, 50)
	consume(t, rdb, key, "g", 20, ids)
	tr := newTestTrimmer(rdb, Retention{MaxLen: 10}, nil)
	tr.mode.Store(int32(modeNative))
	tr.Touch(topic)
	tr.trimAll(context.Background())
	if m := trimMode(tr.mode.Load()); m != modeComputed {
		t.Fatalf("mode: got %v, want computed", m)
	}
	if s := tr.Stats()[0]; s.LastError != "" || s.Length != 30 || s.HeldBy != "g" {
		t.Fatalf("stats: got %+v, want no error, length 30, held by g", s)
	}
}

func TestTrimCommandConstruction(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	cases := []struct {
		name   string
		r      Retention
		native bool
		want   string
	}{
		{"max_len, computed (7.x)", Retention{MaxLen: 100}, false, "MAXLEN ~ 100"},
		{"max_len, native ACKED (8.2+)", Retention{MaxLen: 100}, true, "MAXLEN ~ 100 ACKED"},
		{"max_age, computed (7.x)", Retention{MaxAge: time.Hour}, false, "MINID ~ 1699996400000-0"},
		{"max_age, native ACKED (8.2+)", Retention{MaxAge: time.Hour}, true, "MINID ~ 1699996400000-0 ACKED"},
		{"max_age wins over max_len", Retention{MaxLen: 5, MaxAge: time.Hour}, true, "MINID ~ 1699996400000-0 ACKED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kind, threshold := retentionPolicy(tc.r, at)
			if got := strings.Join(trimArgs(kind, threshold, tc.native), " "); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTrimModeForVersion(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    trimMode
	}{
		{"6.2.14", modeComputed}, {"7.0.15", modeComputed}, {"7.2.4", modeComputed}, {"8.0.3", modeComputed},
		{"8.2.0", modeNative}, {"8.2.1", modeNative}, {"8.4.0", modeNative}, {"9.0.0", modeNative},
		{"", modeComputed}, {"unstable", modeComputed}, {"255.255.255", modeNative},
	} {
		if got := modeForVersion(tc.version); got != tc.want {
			t.Errorf("modeForVersion(%q): got %v, want %v", tc.version, got, tc.want)
		}
	}
	info := "# Server\r\nredis_version:8.2.1\r\nredis_git_sha1:00000000\r\n"
	if got := infoField(info, "redis_version"); got != "8.2.1" {
		t.Errorf("infoField: got %q, want 8.2.1", got)
	}
}

// A key Redis refuses fails only its own topic; an unreachable Redis is
// recorded and retried, and never ends Run.
func TestTrimmerErrorsStayWithTheirTopic(t *testing.T) {
	srv := redistest.StartProcessWith(t, 0, "--stream-node-max-entries", "1")
	rdb := srv.Client(t)
	ctx := context.Background()
	bad, good := redistest.UniqueTopic(t, "bad"), redistest.UniqueTopic(t, "good")
	rdb.Set(ctx, Key(bad), "not a stream", 0)
	addN(t, rdb, Key(good), 30)
	tr := newTestTrimmer(rdb, Retention{MaxLen: 10}, nil)
	tr.Touch(bad)
	tr.Touch(good)
	tr.trimAll(ctx)
	for _, s := range tr.Stats() {
		switch s.Topic {
		case bad:
			if !strings.Contains(s.LastError, "WRONGTYPE") {
				t.Errorf("%s: got last_error %q, want WRONGTYPE", bad, s.LastError)
			}
		case good:
			if s.LastError != "" || s.Length != 10 {
				t.Errorf("%s: got %+v, want trimmed to 10 without error", good, s)
			}
		}
	}

	// Redis down: the round records the connection error on the first
	// topic it tries and stops there instead of timing out on every one.
	srv.Kill()
	tr.Touch(good)
	tr.trimAll(ctx)
	refused := 0
	for _, s := range tr.Stats() {
		if strings.Contains(s.LastError, "refused") {
			refused++
		}
		if s.Topic == good && s.Length != 10 {
			t.Errorf("%s with Redis down: got length %d, want the last known 10", good, s.Length)
		}
	}
	if refused != 1 {
		t.Fatalf("with Redis down: got %d topics with a connection error, want 1 (%+v)", refused, tr.Stats())
	}
}

// Touch keeps a bounded set, forgetting the least recently published topic.
func TestTrimmerTouchIsBounded(t *testing.T) {
	rdb, _ := trimRedis(t)
	tr := newTestTrimmer(rdb, Retention{MaxLen: 10}, nil)
	tr.maxTopics = 3
	ctx := context.Background()
	for _, topic := range []string{"a", "b", "c"} {
		tr.Touch(topic)
	}
	tr.trimAll(ctx)
	tr.Touch("b")
	tr.Touch("c")
	tr.trimAll(ctx)
	tr.Touch("d")
	var got []string
	for _, s := range tr.Stats() {
		got = append(got, s.Topic)
	}
	if want := []string{"b", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("topics: got %v, want %v", got, want)
	}
}
