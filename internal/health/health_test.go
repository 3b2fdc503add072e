package health

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

type fakeBuffer struct {
	writable atomic.Bool
	stalled  atomic.Value // []string
}

func (f *fakeBuffer) Writable() bool { return f.writable.Load() }
func (f *fakeBuffer) Stalled() []string {
	s, _ := f.stalled.Load().([]string)
	return s
}

type fakeRunner struct{ running atomic.Bool }

func (f *fakeRunner) Running() bool { return f.running.Load() }

func readyz(t *testing.T, r *Readiness) (int, Report) {
	t.Helper()
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var rep Report
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatalf("readyz body: %v: %s", err, rec.Body)
	}
	return rec.Code, rep
}

func TestReadiness(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	m := NewMonitor(rdb, time.Second, nil, zerolog.Nop())
	sub := &fakeRunner{}
	r := NewReadiness(m, nil, map[string]Runner{"match.updated/calendar": sub})

	if code, rep := readyz(t, r); code != 503 || rep.Status != "not_ready" {
		t.Fatalf("before the first ping: got %d %+v, want 503 not_ready", code, rep)
	}
	m.Check(context.Background())
	if code, rep := readyz(t, r); code != 503 || rep.Subscriptions["match.updated/calendar"] != "waiting" {
		t.Fatalf("subscription waiting: got %d %+v, want 503", code, rep)
	}
	sub.running.Store(true)
	if code, rep := readyz(t, r); code != 200 || rep.Status != "ready" || !rep.Redis.Up {
		t.Fatalf("all up: got %d %+v, want 200 ready", code, rep)
	}
	// Redis up, but a topic's spooled events do not drain: reported, degraded.
	buf := &fakeBuffer{}
	buf.writable.Store(true)
	r = NewReadiness(m, buf, map[string]Runner{"match.updated/calendar": sub})
	if code, rep := readyz(t, r); code != 200 || rep.Status != "ready" {
		t.Fatalf("spool idle: got %d %+v, want 200 ready", code, rep)
	}
	stall := "spool drain of topic bad makes no progress for 12s: WRONGTYPE"
	buf.stalled.Store([]string{stall})
	if code, rep := readyz(t, r); code != 200 || rep.Status != "degraded" || len(rep.Reasons) != 1 || rep.Reasons[0] != stall {
		t.Fatalf("stalled drain with redis up: got %d %+v, want 200 degraded naming the topic", code, rep)
	}
	r.SetDraining()
	if code, rep := readyz(t, r); code != 503 || rep.Status != "draining" {
		t.Fatalf("draining: got %d %+v, want 503 draining", code, rep)
	}
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != 200 {
		t.Fatalf("healthz while draining: got %d, want 200", rec.Code)
	}
}

func TestMonitorSeesRedisDown(t *testing.T) {
	port := redistest.FreePort(t)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), DialTimeout: 100 * time.Millisecond})
	defer rdb.Close()
	m := NewMonitor(rdb, 100*time.Millisecond, nil, zerolog.Nop())
	st := m.Check(context.Background())
	if st.Up || st.LastError == "" {
		t.Fatalf("nothing listening: got %+v, want down with an error", st)
	}
	r := NewReadiness(m, nil, nil)
	if code, rep := readyz(t, r); code != 503 || rep.Reasons[0] != "redis unreachable" {
		t.Fatalf("got %d %+v", code, rep)
	}
	buf := &fakeBuffer{}
	buf.writable.Store(true)
	r = NewReadiness(m, buf, nil)
	if code, rep := readyz(t, r); code != 200 || rep.Status != "degraded" || rep.Spool != "writable" {
		t.Fatalf("redis down, spool writable: got %d %+v, want 200 degraded", code, rep)
	}
	buf.writable.Store(false)
	if code, rep := readyz(t, r); code != 503 || rep.Status != "not_ready" || rep.Spool != "unavailable" {
		t.Fatalf("redis down, spool full: got %d %+v, want 503 not_ready", code, rep)
	}
}

func TestMonitorLogsRiskyConditionsOncePerChange(t *testing.T) {
	var logs strings.Builder
	m := NewMonitor(nil, time.Second, nil, zerolog.New(&logs))
	evicting := RedisInfo{MaxMemoryPolicy: "allkeys-lru", UsedMemory: 90, MaxMemory: 100}
	for range 3 {
		m.warnOnChange(evicting)
	}
	if n := strings.Count(logs.String(), "may evict streams"); n != 1 {
		t.Fatalf("policy warning logged %d times over 3 ticks, want 1:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "of maxmemory"); n != 1 {
		t.Fatalf("memory warning logged %d times, want 1", n)
	}
	m.warnOnChange(RedisInfo{MaxMemoryPolicy: "noeviction", UsedMemory: 10, MaxMemory: 100})
	if n := strings.Count(logs.String(), "redis condition cleared"); n != 2 {
		t.Fatalf("cleared conditions logged %d times, want 2:\n%s", n, logs.String())
	}
}
