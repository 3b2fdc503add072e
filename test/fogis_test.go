package test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// The FOGIS stand-ins (examples/fogis) run here as real processes beside
// real sidecars and a real redis-server, and speak to the sidecars as the
// real services do: redis-py PUBLISH and SUBSCRIBE (Redis mode), requests'
// POST /sync and GET /health (HTTP mode). See docs/fogis.md.

// fogisPy is a Python with Flask, requests and redis-py: what the stand-ins
// import, like the real services.
type fogisPy struct {
	bin     string
	env     []string
	redisPy string // redis-py's version
}

// fogisPythons lists the interpreters that can run the stand-ins, one per
// redis-py version: python3 and /usr/bin/python3, plus python3 with each
// redis-py source tree in RESP_TEST_REDISPY_PATHS (colon-separated, e.g.
// redis-py 8, which speaks RESP3 and is what the real images install today).
func fogisPythons(t *testing.T) []fogisPy {
	t.Helper()
	cands := []fogisPy{{bin: "python3"}, {bin: "/usr/bin/python3"}}
	for _, dir := range strings.Split(os.Getenv("RESP_TEST_REDISPY_PATHS"), ":") {
		if dir != "" {
			cands = append(cands, fogisPy{bin: "python3", env: []string{"PYTHONPATH=" + dir}})
		}
	}
	seen := map[string]bool{}
	var out []fogisPy
	for _, p := range cands {
		cmd := exec.Command(p.bin, "-c", "import flask, requests, redis; print(redis.__version__)")
		cmd.Env = append(os.Environ(), p.env...)
		b, err := cmd.Output()
		if err != nil {
			continue
		}
		p.redisPy = strings.TrimSpace(string(b))
		if seen[p.redisPy] {
			continue
		}
		seen[p.redisPy] = true
		out = append(out, p)
	}
	if len(out) == 0 {
		redistest.SkipOrFail(t, "the FOGIS stand-ins need python3 with flask, requests and redis-py (apt-get install python3-flask python3-requests python3-redis)")
	}
	return out
}

// standIn is one stand-in process (a Flask or stdlib HTTP service).
type standIn struct {
	t      *testing.T
	name   string
	py     fogisPy
	script string
	env    []string
	base   string // http://127.0.0.1:port
	dir    string // working directory, with data/ (the calendar's /health wants ./data)
	log    *os.File

	child
}

// startStandIn runs examples/fogis/<script> with env (KEY=VALUE), serving
// HTTP on port, and waits until readyPath answers 200.
func startStandIn(t *testing.T, py fogisPy, name, script string, port int, readyPath string, env ...string) *standIn {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("../examples/fogis", script))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	s := &standIn{t: t, name: name, py: py, script: abs, env: env, dir: dir, log: logf,
		base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("---- %s ----\n%s", name, tail(b, 40))
		}
		logf.Close()
	})
	s.start(readyPath)
	return s
}

// standInEnv is this process's environment without CI and
// PYTEST_CURRENT_TEST: with either set, the real processor runs in test
// mode (no fetch, one cycle), and so does its stand-in. A test that wants
// test mode passes CI itself.
func standInEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k == "CI" || k == "PYTEST_CURRENT_TEST" {
			continue
		}
		env = append(env, kv)
	}
	return append(append(env, "PYTHONUNBUFFERED=1"), extra...)
}

func (s *standIn) start(readyPath string) {
	s.t.Helper()
	cmd := exec.Command(s.py.bin, s.script)
	cmd.Dir = s.dir
	cmd.Env = standInEnv(append(append([]string(nil), s.py.env...), s.env...)...)
	done := s.launch(s.t, cmd, s.log)
	if readyPath == "" {
		return
	}
	poll(s.t, 30*time.Second, s.name+" "+readyPath, func() bool {
		select {
		case <-done:
			s.t.Fatalf("%s exited during start:\n%s", s.name, s.logTail(20))
		default:
		}
		code, _ := httpGet(s.base + readyPath)
		return code == http.StatusOK
	})
}

// restart starts the process again; env is added to (and overrides) its
// environment from now on.
func (s *standIn) restart(readyPath string, env ...string) {
	s.t.Helper()
	s.kill()
	s.env = append(s.env, env...)
	s.start(readyPath)
}

// wait returns when the process has exited, failing the test after d.
func (s *standIn) wait(d time.Duration) {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(d):
		s.t.Fatalf("%s still running after %v", s.name, d)
	}
}

func (s *standIn) logTail(n int) string {
	b, _ := os.ReadFile(s.log.Name())
	return tail(b, n)
}

func (s *standIn) logText() string {
	b, _ := os.ReadFile(s.log.Name())
	return string(b)
}

// poll is eventually.True at a pace the Python processes it asks can bear.
func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	first := true
	eventually.True(t, d, what, func() bool {
		if !first {
			time.Sleep(90 * time.Millisecond)
		}
		first = false
		return cond()
	})
}

var fogisHTTP = &http.Client{Timeout: 10 * time.Second}

func httpGet(url string) (int, []byte) {
	resp, err := fogisHTTP.Get(url)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// getJSON decodes a 200 answer into v; false on any failure.
func getJSON(url string, v any) bool {
	code, b := httpGet(url)
	return code == http.StatusOK && json.Unmarshal(b, v) == nil
}

func httpDo(t *testing.T, method, url, contentType string, body []byte) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := fogisHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// --- the FOGIS API stub ---------------------------------------------------------

type fogisAPI struct{ *standIn }

func startFogisAPI(t *testing.T, py fogisPy) fogisAPI {
	port := redistest.FreePort(t)
	return fogisAPI{startStandIn(t, py, "fogis-api", "fogis_api.py", port, "/health", "HOST=127.0.0.1", fmt.Sprint("PORT=", port))}
}

// fogisMatch is a raw FOGIS match as the API client service returns it.
func fogisMatch(kickoff string) map[string]any {
	return map[string]any{
		"matchid": 6169105, "matchnr": "000024032", "speldatum": "2026-05-01", "avsparkstid": kickoff,
		"lag1lagid": 11111, "lag1namn": "IK Sirius", "lag1foreningid": 9001,
		"lag2lagid": 22222, "lag2namn": "Örgryte IS", "lag2foreningid": 9002,
		"anlaggningnamn": "Studenternas IP", "tavlingnamn": "Allsvenskan",
		"installd": false, "avbruten": false, "uppskjuten": false,
		"domaruppdraglista": []map[string]any{
			{"domarid": 1, "personnamn": "Anna Andersson", "domarrollnamn": "Huvuddomare"},
			{"domarid": 2, "personnamn": "Björn Berg", "domarrollnamn": "Assisterande domare"},
		},
	}
}

// setKickoff moves the match's kick-off: the processor's next cycle finds
// a time change and publishes a match update.
func (a fogisAPI) setKickoff(kickoff string) {
	a.t.Helper()
	body, _ := json.Marshal([]any{fogisMatch(kickoff)})
	if code, _, b := httpDo(a.t, http.MethodPut, a.base+"/matches", "application/json", body); code != http.StatusOK {
		a.t.Fatalf("PUT /matches: %d %s", code, b)
	}
}

// --- the processor stand-in ------------------------------------------------------

type processor struct{ *standIn }

// startProcessor runs match_processor.py as a service with a cycle a
// second (FOGIS runs 3600 s), fetching from api, with its state in a
// fresh DATA_FOLDER. With ready it waits for the health server; a
// processor that will exit at once (one cycle, or test mode) is not waited for.
func startProcessor(t *testing.T, py fogisPy, name string, api fogisAPI, ready bool, env ...string) processor {
	t.Helper()
	port := redistest.FreePort(t)
	base := append([]string{"RUN_MODE=service", "SERVICE_INTERVAL=1", "FOGIS_API_CLIENT_URL=" + api.base,
		"WHATSAPP_AVATAR_SERVICE_URL=" + api.base, "GOOGLE_DRIVE_SERVICE_URL=" + api.base,
		"DATA_FOLDER=" + t.TempDir(), fmt.Sprint("STANDIN_HEALTH_PORT=", port)}, env...)
	readyPath := "/health/simple"
	if !ready {
		readyPath = ""
	}
	return processor{startStandIn(t, py, name, "match_processor.py", port, readyPath, base...)}
}

// published is one PUBLISH the processor made (or tried).
type published struct {
	Channel     string  `json:"channel"`
	Message     string  `json:"message"`
	At          float64 `json:"at"`
	Answered    float64 `json:"answered"`
	Success     bool    `json:"success"`
	Subscribers *int    `json:"subscribers"`
	Error       string  `json:"error"`
}

func (p published) envelope() map[string]any {
	var m map[string]any
	_ = json.Unmarshal([]byte(p.Message), &m)
	return m
}

func (p published) kickoff() string {
	payload, _ := p.envelope()["payload"].(map[string]any)
	matches, _ := payload["matches"].([]any)
	if len(matches) == 0 {
		return ""
	}
	m, _ := matches[0].(map[string]any)
	k, _ := m["avsparkstid"].(string)
	return k
}

// waitPublished waits for the processor's match update with this kick-off.
func (p processor) waitPublished(kickoff string) published {
	p.t.Helper()
	var got published
	poll(p.t, 30*time.Second, "the processor's PUBLISH of the "+kickoff+" update", func() bool {
		var all []published
		if !getJSON(p.base+"/standin/published", &all) {
			return false
		}
		for _, r := range all {
			if r.Channel == "fogis:matches:updates" && r.kickoff() == kickoff {
				got = r
				return true
			}
		}
		return false
	})
	return got
}

// httpSync is one HTTP call the legacy processor made to its calendar URL.
type httpSync struct {
	Call     string  `json:"call"`
	URL      string  `json:"url"`
	Status   int     `json:"status"`
	Success  bool    `json:"success"`
	Error    string  `json:"error"`
	Body     string  `json:"body"`
	At       float64 `json:"at"`       // the POST began
	Answered float64 `json:"answered"` // its answer came
}

func (p processor) synced() []httpSync {
	var all []httpSync
	getJSON(p.base+"/standin/synced", &all)
	return all
}

// --- the calendar stand-in ------------------------------------------------------

type calendar struct{ *standIn }

func startCalendar(t *testing.T, py fogisPy, env ...string) calendar {
	t.Helper()
	port := redistest.FreePort(t)
	env = append([]string{"FLASK_HOST=127.0.0.1", fmt.Sprint("FLASK_PORT=", port)}, env...)
	return calendar{startStandIn(t, py, "calendar", "calendar_sync.py", port, "/health", env...)}
}

// stubToken writes a Google OAuth token file for the calendar stand-in.
func stubToken(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token.json")
	if err := os.WriteFile(p, []byte(`{"token":"stub","refresh_token":"stub"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// calSync is one sync the calendar ran: via "redis" (its own subscriber),
// "manual-sync" or "sync" (HTTP).
type calSync struct {
	Via         string            `json:"via"`
	Success     bool              `json:"success"`
	Error       string            `json:"error"`
	At          float64           `json:"at"`
	Kickoffs    map[string]string `json:"kickoffs"`
	MessageID   string            `json:"message_id"`
	WebhookID   string            `json:"webhook_id"`
	Attempt     string            `json:"attempt"`
	ContentType string            `json:"content_type"`
	RequestBody *string           `json:"request_body"`
}

type calMessage struct {
	Channel   string  `json:"channel"`
	MessageID string  `json:"message_id"`
	Type      string  `json:"type"`
	SHA256    string  `json:"data_sha256"`
	At        float64 `json:"at"`
}

type subscriberState struct {
	Running    bool `json:"running"`
	Stuck      bool `json:"stuck"`
	Subscribed bool `json:"subscribed"`
	Reconnects int  `json:"reconnects"`
}

func (c calendar) syncs() []calSync {
	var got struct {
		Syncs []calSync `json:"syncs"`
	}
	getJSON(c.base+"/standin/syncs", &got)
	return got.Syncs
}

func (c calendar) messages() []calMessage {
	var got []calMessage
	getJSON(c.base+"/standin/messages", &got)
	return got
}

func (c calendar) subscriber() subscriberState {
	var s subscriberState
	getJSON(c.base+"/standin/subscriber", &s)
	return s
}

// find returns the first sync via that path with this kick-off and outcome.
func (c calendar) find(via, kickoff string, success bool) (calSync, bool) {
	for _, s := range c.syncs() {
		if s.Via == via && s.Success == success && s.Kickoffs["6169105"] == kickoff {
			return s, true
		}
	}
	return calSync{}, false
}

func (c calendar) waitSync(via, kickoff string, success bool) calSync {
	c.t.Helper()
	var got calSync
	poll(c.t, 30*time.Second, fmt.Sprintf("a %s sync of the %s update (success %v) at the calendar", via, kickoff, success), func() bool {
		var ok bool
		got, ok = c.find(via, kickoff, success)
		return ok
	})
	return got
}

// --- sidecars with the example configurations ------------------------------------

// fogisRedis is Redis as it should run under the sidecars: AOF (every
// write fsync'd here, so a SIGKILL loses nothing) and noeviction.
func fogisRedis(t *testing.T) *redistest.Server {
	return redistest.StartProcessWith(t, 0, "--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction")
}

// fogisSidecar runs a sidecar with examples/fogis/<file>, its addresses
// replaced by this machine's (each old string must be in the file). When
// the file turns the Redis-protocol port on, it listens on a free port,
// returned.
func fogisSidecar(t *testing.T, name, file string, redis *redistest.Server, replace map[string]string, env ...string) (*sidecar, string) {
	t.Helper()
	yaml := readFile(t, "../examples/fogis/"+file)
	for old, repl := range replace {
		if !strings.Contains(yaml, old) {
			t.Fatalf("%s has no %q", file, old)
		}
		yaml = strings.ReplaceAll(yaml, old, repl)
	}
	env = append([]string{"REDIS_URL=" + redis.URL, "SIDECAR_CONFIG=" + writeConfig(t, yaml)}, env...)
	if !strings.Contains(yaml, "\nresp:") {
		return startSidecar(t, name, env...), ""
	}
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	s := startSidecar(t, name, append(env, "SIDECAR_RESP_LISTEN="+addr)...)
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("%s: nothing listens on SIDECAR_RESP_LISTEN=%s (%v): is the Redis-protocol ingress wired in cmd/sidecar?", name, addr, err)
	}
	c.Close()
	return s, addr
}

// outage shortens a subscription's retry settings for a test: retry for a
// minute, backoff 100 ms doubling to 1 s.
func outage(file string, extra map[string]string) map[string]string {
	m := map[string]string{"retry_for: 24h": "retry_for: 1m"}
	switch file {
	case "calendar-sidecar.manual-sync.yaml":
		m["backoff: {initial: 1s, max: 1m}"] = "backoff: {initial: 100ms, max: 1s}"
	case "calendar-sidecar.http-mode.yaml":
		m["backoff: {initial: 1s, max: 5m}"] = "backoff: {initial: 100ms, max: 1s}"
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

type sidecarStatus struct {
	Spool struct {
		Spooled uint64 `json:"spooled"`
		Drained uint64 `json:"drained"`
	} `json:"spool"`
	Subscriptions []struct {
		Topic     string `json:"topic"`
		Group     string `json:"group"`
		Delivered uint64 `json:"delivered"`
		Retried   uint64 `json:"retried"`
		DLQLength int64  `json:"dlq_length"`
	} `json:"subscriptions"`
}

func (s *sidecar) status() sidecarStatus {
	var st sidecarStatus
	getJSON(s.url("/v1/status"), &st)
	return st
}

func (s *sidecar) retried() uint64 {
	var n uint64
	for _, sub := range s.status().Subscriptions {
		n += sub.Retried
	}
	return n
}

func secs(f float64) time.Duration {
	return time.Duration(f * float64(time.Second)).Round(time.Millisecond)
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestFogisRedisMode: the current services, each with only REDIS_URL
// pointed at its sidecar's Redis-protocol port. The processor stand-in
// PUBLISHes with redis-py exactly as the real one; the calendar stand-in's
// own redis-py subscriber SUBSCRIBEs on its sidecar. Beside it, a second
// calendar sidecar (calendar-sidecar.manual-sync.yaml, another group)
// delivers the same updates to POST /manual-sync, so each update reaches
// the calendar both ways and every fault is seen on both.
func TestFogisRedisMode(t *testing.T) {
	for _, py := range fogisPythons(t) {
		t.Run("redis-py-"+py.redisPy, func(t *testing.T) { fogisRedisMode(t, py) })
	}
}

func fogisRedisMode(t *testing.T, py fogisPy) {
	redis := fogisRedis(t)
	api := startFogisAPI(t, py)
	procSC, procRESP := fogisSidecar(t, "processor-sidecar", "processor-sidecar.redis-mode.yaml", redis, nil)
	calSC, calRESP := fogisSidecar(t, "calendar-sidecar", "calendar-sidecar.redis-mode.yaml", redis, nil)
	calPort := redistest.FreePort(t)
	calURL := fmt.Sprintf("http://127.0.0.1:%d", calPort)
	webSC, _ := fogisSidecar(t, "calendar-webhook-sidecar", "calendar-sidecar.manual-sync.yaml", redis,
		outage("calendar-sidecar.manual-sync.yaml", map[string]string{"http://calendar:5003": calURL}),
		"SIDECAR_SERVICE=calendar-webhook")
	token := stubToken(t)
	// The calendar starts after its sidecar, as it must: it subscribes at import.
	cal := calendar{startStandIn(t, py, "calendar", "calendar_sync.py", calPort, "/health",
		"FLASK_HOST=127.0.0.1", fmt.Sprint("FLASK_PORT=", calPort), "REDIS_URL=redis://"+calRESP, "GOOGLE_CALENDAR_TOKEN_FILE="+token)}
	poll(t, 10*time.Second, "the calendar subscribed", func() bool { return cal.subscriber().Subscribed })
	proc := startProcessor(t, py, "processor", api, true, "REDIS_ENABLED=true", "REDIS_URL=redis://"+procRESP)

	// 1. Normal flow: the first cycle finds the match new and publishes it.
	u := proc.waitPublished("15:00")
	if !u.Success || u.Subscribers == nil || *u.Subscribers < 1 {
		t.Fatalf("PUBLISH: got %+v, want success with a reply of at least 1", u)
	}
	checkEnvelope(t, u.Message)
	viaRedis := cal.waitSync("redis", "15:00", true)
	viaHTTP := cal.waitSync("manual-sync", "15:00", true)
	env := u.envelope()
	if viaRedis.MessageID != env["message_id"] {
		t.Fatalf("the calendar's subscriber synced message %s, want %s", viaRedis.MessageID, env["message_id"])
	}
	if i := slices.IndexFunc(cal.messages(), func(m calMessage) bool { return m.MessageID == env["message_id"] }); i < 0 ||
		cal.messages()[i].SHA256 != sha(u.Message) {
		t.Fatalf("the calendar's subscriber did not get the bytes the processor published")
	}
	if viaHTTP.ContentType != "application/json" || viaHTTP.WebhookID == "" || viaHTTP.Attempt != "1" {
		t.Fatalf("/manual-sync delivery: %+v", viaHTTP)
	}
	t.Logf("measured: normal flow: PUBLISH answered in %v (reply %d); reached the calendar's subscriber %v and /manual-sync %v after the PUBLISH",
		secs(u.Answered-u.At), *u.Subscribers, secs(viaRedis.At-u.At), secs(viaHTTP.At-u.At))

	// 2. Redis down while the processor publishes: the PUBLISH is answered
	// (spooled), the processor logs success, the update arrives once Redis
	// is back -- and the calendar's connection to its sidecar never broke.
	redis.Kill()
	api.setKickoff("17:30")
	u = proc.waitPublished("17:30")
	if !u.Success || u.Subscribers == nil || *u.Subscribers < 1 {
		t.Fatalf("PUBLISH with Redis dead: got %+v, want success with a reply of at least 1", u)
	}
	spooled := procSC.status().Spool.Spooled
	if spooled == 0 {
		t.Fatalf("processor sidecar: nothing spooled while Redis was dead")
	}
	restarted := time.Now()
	redis.Restart()
	viaRedis = cal.waitSync("redis", "17:30", true)
	viaHTTP = cal.waitSync("manual-sync", "17:30", true)
	if s := cal.subscriber(); s.Reconnects != 0 || s.Stuck {
		t.Fatalf("the calendar's subscriber lost its connection during the Redis outage: %+v", s)
	}
	t.Logf("measured: Redis killed: PUBLISH answered in %v (spooled; %d events spooled during the outage, status messages included); delivered %v (subscriber) and %v (/manual-sync) after the Redis restart began",
		secs(u.Answered-u.At), spooled, time.Unix(0, int64(viaRedis.At*1e9)).Sub(restarted).Round(time.Millisecond),
		time.Unix(0, int64(viaHTTP.At*1e9)).Sub(restarted).Round(time.Millisecond))

	// 3. The calendar down (its subscriber disconnected, its HTTP port
	// closed) while an update is published: both paths deliver it when it
	// is back, the subscriber on its first SUBSCRIBE.
	cal.kill()
	down := time.Now()
	api.setKickoff("18:45")
	proc.waitPublished("18:45")
	poll(t, 30*time.Second, "/manual-sync retried while the calendar is down for 5 s", func() bool {
		return time.Since(down) > 5*time.Second && webSC.retried() >= 3
	})
	back := time.Now()
	cal.restart("/health")
	viaRedis = cal.waitSync("redis", "18:45", true)
	viaHTTP = cal.waitSync("manual-sync", "18:45", true)
	if viaHTTP.Attempt == "1" {
		t.Fatalf("/manual-sync got the update at attempt 1, want a retry")
	}
	t.Logf("measured: calendar down %v: delivered %v (subscriber, at its start) and %v (/manual-sync, attempt %s) after its restart began",
		back.Sub(down).Round(time.Millisecond), time.Unix(0, int64(viaRedis.At*1e9)).Sub(back).Round(time.Millisecond),
		time.Unix(0, int64(viaHTTP.At*1e9)).Sub(back).Round(time.Millisecond), viaHTTP.Attempt)

	// 4. A calendar without its Google token: every sync fails. Pub/Sub
	// delivery hands the update over all the same and it is gone; the
	// webhook gets 500, retries, and delivers once the calendar has a token.
	cal.restart("/health", "GOOGLE_CALENDAR_TOKEN_FILE="+filepath.Join(t.TempDir(), "missing.json"))
	poll(t, 10*time.Second, "the calendar subscribed", func() bool { return cal.subscriber().Subscribed })
	api.setKickoff("19:00")
	cal.waitSync("redis", "19:00", false)
	cal.waitSync("manual-sync", "19:00", false)
	cal.restart("/health", "GOOGLE_CALENDAR_TOKEN_FILE="+token)
	poll(t, 10*time.Second, "the calendar subscribed", func() bool { return cal.subscriber().Subscribed })
	api.setKickoff("19:15")
	viaHTTP = cal.waitSync("manual-sync", "19:00", true)
	cal.waitSync("redis", "19:15", true) // in stream order: 19:00 would have come first
	if _, again := cal.find("redis", "19:00", true); again {
		t.Fatalf("the subscriber got the 19:00 update again")
	}
	t.Logf("measured: sync failing (no token): the subscriber's update was lost; /manual-sync answered 500 and delivered at attempt %s once the token was there",
		viaHTTP.Attempt)

	// 5. The calendar's sidecar gone for more than a second: the real
	// calendar retries once after 1 s, then never resubscribes, and
	// /redis-status still says connected. POST /redis-restart recovers it,
	// and it gets what was published meanwhile.
	calSC.kill()
	poll(t, 15*time.Second, "the calendar's subscriber to give up", func() bool { return cal.subscriber().Stuck })
	api.setKickoff("20:00")
	proc.waitPublished("20:00")
	cal.waitSync("manual-sync", "20:00", true)
	calSC.restart()
	var rs struct {
		RedisStatus struct{ Connected, Subscribed bool } `json:"redis_status"`
	}
	if !getJSON(cal.base+"/redis-status", &rs) || !rs.RedisStatus.Connected || !rs.RedisStatus.Subscribed {
		t.Fatalf("/redis-status: got %+v, want the real service's connected and subscribed", rs)
	}
	if s := cal.subscriber(); !s.Stuck || s.Subscribed {
		t.Fatalf("the calendar resubscribed by itself (%+v): the real one does not", s)
	}
	if _, ok := cal.find("redis", "20:00", true); ok {
		t.Fatal("the 20:00 update reached an unsubscribed calendar")
	}
	restart := time.Now()
	if code, _, body := httpDo(t, http.MethodPost, cal.base+"/redis-restart", "", nil); code != http.StatusOK {
		t.Fatalf("POST /redis-restart: %d %s", code, body)
	}
	viaRedis = cal.waitSync("redis", "20:00", true)
	t.Logf("measured: calendar sidecar down: the subscriber gave up after its one retry; after POST /redis-restart the update published meanwhile arrived in %v",
		time.Unix(0, int64(viaRedis.At*1e9)).Sub(restart).Round(time.Millisecond))

	for _, sub := range webSC.status().Subscriptions {
		if sub.DLQLength != 0 {
			t.Errorf("%s: %d dead letters", webSC.name, sub.DLQLength)
		}
	}
	// Through every fault above the processor never saw a failed PUBLISH.
	var all []published
	if !getJSON(proc.base+"/standin/published", &all) {
		t.Fatal("processor /standin/published")
	}
	failed := 0
	for _, p := range all {
		if !p.Success {
			failed++
			t.Errorf("processor: PUBLISH %s failed: %s", p.Channel, p.Error)
		}
	}
	t.Logf("measured: the processor made %d PUBLISHes (status messages included) through all of the above; %d failed", len(all), failed)
}

var (
	uuid4  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	utcISO = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$`)
)

// checkEnvelope checks a match update as the real processor builds it
// (message_formatter.py): json.dumps(..., ensure_ascii=False) with its
// default separators and key order, a uuid4, utcnow().isoformat()+"Z", and
// schema_version inside payload.
func checkEnvelope(t *testing.T, msg string) {
	t.Helper()
	prefix := regexp.MustCompile(`^\{"message_id": "([^"]+)", "timestamp": "([^"]+)", "source": "match-list-processor", "version": "1.0", "type": "match_updates", "payload": \{"matches": \[\{`)
	m := prefix.FindStringSubmatch(msg)
	if m == nil || !uuid4.MatchString(m[1]) || !utcISO.MatchString(m[2]) {
		t.Fatalf("envelope %.200q does not start as the real processor's", msg)
	}
	for _, want := range []string{`"lag2namn": "Örgryte IS"`, `], "schema_version": "2.0", "detailed_changes": [`,
		`"high_priority": true, "metadata": {"total_matches": 1, "has_changes": true, "change_summary": {}, "processing_timestamp": "`,
		`"processor_type": "UnifiedMatchProcessor"}}}`} {
		if !strings.Contains(msg, want) {
			t.Fatalf("envelope lacks %q: %s", want, msg)
		}
	}
}

// TestFogisHTTPMode: the legacy services, with only the processor's
// PHONEBOOK_SYNC_SERVICE_URL (and, for its legacy persistent mode,
// CALENDAR_SYNC_URL) pointed at its sidecar. Its POST /sync with no body
// gets exactly the 200 it requires -- also with Redis down -- and reaches
// the legacy calendar's /sync; its health check of the calendar reaches
// the calendar through the sidecar's upstream.
func TestFogisHTTPMode(t *testing.T) {
	py := fogisPythons(t)[0]
	redis := fogisRedis(t)
	api := startFogisAPI(t, py)
	calPort := redistest.FreePort(t)
	calURL := fmt.Sprintf("http://127.0.0.1:%d", calPort)
	// The legacy calendar keeps its own Redis subscriber on the old Redis
	// (here the sidecars'); nothing is published there.
	cal := calendar{startStandIn(t, py, "calendar", "calendar_sync.py", calPort, "/health", "STANDIN_VERSION=legacy",
		"FLASK_HOST=127.0.0.1", fmt.Sprint("FLASK_PORT=", calPort), "REDIS_URL="+redis.URL, "GOOGLE_CALENDAR_TOKEN_FILE="+stubToken(t))}
	calSC, _ := fogisSidecar(t, "calendar-sidecar", "calendar-sidecar.http-mode.yaml", redis,
		outage("calendar-sidecar.http-mode.yaml", map[string]string{"http://calendar:5003": calURL}))
	procSC, _ := fogisSidecar(t, "processor-sidecar", "processor-sidecar.http-mode.yaml", redis,
		map[string]string{"http://calendar:5003": calURL})
	proc := startProcessor(t, py, "processor", api, true, "STANDIN_VERSION=legacy", "PHONEBOOK_SYNC_SERVICE_URL="+procSC.url(""))

	// waitCall waits for the processor's n-th POST /sync and requires the
	// exact 200 the real one needs.
	waitCall := func(n int) httpSync {
		t.Helper()
		var calls []httpSync
		poll(t, 30*time.Second, fmt.Sprintf("the processor's POST /sync #%d", n), func() bool {
			calls = proc.synced()
			return len(calls) >= n
		})
		c := calls[n-1]
		if c.Call != "sync_contacts" || c.Status != http.StatusOK || !c.Success || c.Body != `{"status":"success"}` {
			t.Fatalf("POST /sync #%d: got %+v, want exactly 200 {\"status\":\"success\"}", n, c)
		}
		return c
	}
	waitRun := func(what string, after float64) calSync {
		t.Helper()
		var got calSync
		poll(t, 30*time.Second, what, func() bool {
			for _, s := range cal.syncs() {
				if s.Via == "sync" && s.At > after {
					got = s
					return true
				}
			}
			return false
		})
		return got
	}
	health := func() map[string]any {
		t.Helper()
		var d struct {
			Dependencies map[string]map[string]any `json:"dependencies"`
		}
		if !getJSON(proc.base+"/health/dependencies", &d) {
			t.Fatal("processor /health/dependencies")
		}
		return d.Dependencies["phonebook-sync-service"]
	}

	// 1. The first cycle: POST /sync answered 200, the sync runs at the calendar.
	c := waitCall(1)
	run := waitRun("the calendar's /sync run", 0)
	if run.RequestBody == nil || *run.RequestBody != "" || run.WebhookID == "" {
		t.Fatalf("calendar /sync got %+v, want the processor's empty body", run)
	}
	if strings.Contains(proc.logText(), "Contact sync process failed") {
		t.Fatalf("the processor logged a failed hand-off:\n%s", proc.logTail(20))
	}
	t.Logf("measured: POST /sync answered 200 in %v; the calendar's sync ran %v after the POST began", secs(c.Answered-c.At), secs(run.At-c.At))

	// 2. The processor's health check of the calendar, through the sidecar.
	if dep := health(); dep["status"] != "healthy" || dep["url"] != procSC.url("/health") {
		t.Fatalf("processor's view of the calendar: %v", dep)
	}

	// 3. Redis down: the POST is still answered 200 (spooled) and the sync
	// runs once Redis is back.
	redis.Kill()
	api.setKickoff("17:30")
	c = waitCall(2)
	spooled := procSC.status().Spool.Spooled
	if spooled == 0 {
		t.Fatal("processor sidecar: nothing spooled while Redis was dead")
	}
	if dep := health(); dep["status"] != "healthy" {
		t.Fatalf("health check with Redis dead: %v", dep)
	}
	restarted := time.Now()
	redis.Restart()
	run = waitRun("the /sync spooled while Redis was dead", c.At)
	t.Logf("measured: Redis killed: POST /sync still 200, in %v (%d event spooled); the sync ran %v after the Redis restart began",
		secs(c.Answered-c.At), spooled, time.Unix(0, int64(run.At*1e9)).Sub(restarted).Round(time.Millisecond))

	// 4. The calendar down: the POST is answered 200, the processor's health
	// check says the calendar is down (it is), the sync runs when it is back.
	cal.kill()
	down := time.Now()
	api.setKickoff("18:45")
	waitCall(3)
	if dep := health(); dep["status"] != "unhealthy" || !strings.HasPrefix(fmt.Sprint(dep["error"]), "HTTP 502") {
		t.Fatalf("health check with the calendar down: %v, want unhealthy, HTTP 502", dep)
	}
	poll(t, 30*time.Second, "/sync retried while the calendar is down for 5 s", func() bool {
		return time.Since(down) > 5*time.Second && calSC.retried() >= 3
	})
	back := time.Now()
	cal.restart("/health")
	run = waitRun("the /sync made while the calendar was down", 0)
	if run.Attempt == "1" {
		t.Fatalf("the calendar got it at attempt 1, want a retry")
	}
	t.Logf("measured: calendar down %v: the sync ran %v after its restart began (attempt %s)",
		back.Sub(down).Round(time.Millisecond), time.Unix(0, int64(run.At*1e9)).Sub(back).Round(time.Millisecond), run.Attempt)

	// 5. The legacy persistent processor (PROCESSOR_MODE=legacy): POST /sync
	// at the start of its cycle, then, for new matches, POST
	// $CALENDAR_SYNC_URL with {} and read .json()["status"].
	proc.kill()
	before := float64(time.Now().UnixNano()) / 1e9
	persistent := startProcessor(t, py, "processor-persistent", api, false, "STANDIN_VERSION=legacy", "PROCESSOR_MODE=legacy",
		"MAX_SERVICE_CYCLES=1", "PHONEBOOK_SYNC_SERVICE_URL="+procSC.url(""), "CALENDAR_SYNC_URL="+procSC.url("/sync"))
	persistent.wait(30 * time.Second)
	for _, want := range []string{"Contact sync process completed successfully.", "✅ Calendar sync triggered successfully: success"} {
		if !strings.Contains(persistent.logText(), want) {
			t.Fatalf("persistent processor did not log %q:\n%s", want, persistent.logTail(20))
		}
	}
	poll(t, 30*time.Second, "the CALENDAR_SYNC_URL call at the calendar", func() bool {
		for _, s := range cal.syncs() {
			if s.At > before && s.RequestBody != nil && *s.RequestBody == "{}" && s.ContentType == "application/json" {
				return true
			}
		}
		return false
	})
	for _, sub := range calSC.status().Subscriptions {
		if sub.DLQLength != 0 {
			t.Errorf("calendar sidecar: %d dead letters", sub.DLQLength)
		}
	}
}

// TestFogisStandInsAnswerLikeTheRealServices: the stand-ins' answers, as
// the spec of the real services has them (status codes, exact bodies, key
// order), and their quirks: the calendar that finds Redis down at start
// never subscribes; the processor publishes nothing without
// REDIS_ENABLED=true and fetches nothing with CI set.
func TestFogisStandInsAnswerLikeTheRealServices(t *testing.T) {
	py := fogisPythons(t)[0]
	nowhere := fmt.Sprintf("redis://127.0.0.1:%d", redistest.FreePort(t)) // nothing listens
	cal := startCalendar(t, py, "REDIS_URL="+nowhere, "GOOGLE_CALENDAR_TOKEN_FILE=/nonexistent/token.json")

	var rs struct {
		RedisStatus map[string]bool `json:"redis_status"`
	}
	if !getJSON(cal.base+"/redis-status", &rs) || !rs.RedisStatus["connected"] || rs.RedisStatus["subscribed"] {
		t.Errorf("Redis down at start: /redis-status %v, want connected (sic) and not subscribed", rs.RedisStatus)
	}
	missingJSON := `{"error":"Missing JSON data in request","success":false}` + "\n"
	missingMatches := `{"error":"Missing 'matches' in request data","success":false}` + "\n"
	noToken := regexp.MustCompile(`^\{"matches_processed":(\d+),"success":false,"timestamp":"[0-9T:.-]+"\}\n$`)
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
		want                    string
		re                      *regexp.Regexp
	}{
		{"no body", "", "", 400, missingJSON, nil},
		{"not JSON", "text/plain", "matches", 400, missingJSON, nil},
		{"empty object", "application/json", "{}", 400, missingJSON, nil},
		{"empty list", "application/json", "[]", 400, missingJSON, nil},
		{"no matches", "application/json", `{"type":"system_alert"}`, 400, missingMatches, nil},
		{"whole envelope", "application/json", `{"type":"match_updates","payload":{"matches":[]}}`, 400, missingMatches, nil},
		{"no token, empty list", "application/json", `{"matches":[]}`, 500, "", noToken},
		{"no token, any Content-Type", "text/plain", `{"matches":[{"matchid":1}]}`, 500, "", noToken},
	} {
		t.Run("manual-sync "+tc.name, func(t *testing.T) {
			code, h, body := httpDo(t, http.MethodPost, cal.base+"/manual-sync", tc.contentType, []byte(tc.body))
			if code != tc.status || (tc.re == nil && body != tc.want) || (tc.re != nil && !tc.re.MatchString(body)) ||
				h.Get("Content-Type") != "application/json" {
				t.Errorf("got %d %q (%s), want %d %q", code, body, h.Get("Content-Type"), tc.status, tc.want)
			}
		})
	}
	if code, _, body := httpDo(t, http.MethodPost, cal.base+"/sync", "", nil); code != 404 || !strings.Contains(body, "<title>404 Not Found</title>") {
		t.Errorf("current calendar POST /sync: got %d %q, want Flask's 404 page", code, body)
	}
	code, _, body := httpDo(t, http.MethodGet, cal.base+"/health", "", nil)
	if want := `{"auth_status":"initializing","auth_url":"http://localhost:9083/authorize","checked_locations":["/nonexistent/token.json","/app/data/token.json","/app/token.json"],"message":"OAuth token not found - service may be starting up","note":"If this persists after 60 seconds, authentication may be required","status":"initializing"}` + "\n"; code != 200 || body != want {
		t.Errorf("GET /health without a token: got %d %q, want 200 %q", code, body, want)
	}
	if err := os.RemoveAll(filepath.Join(cal.dir, "data")); err != nil {
		t.Fatal(err)
	}
	if code, _, body := httpDo(t, http.MethodGet, cal.base+"/health", "", nil); code != 500 ||
		body != `{"message":"Data directory not accessible","status":"error"}`+"\n" {
		t.Errorf("GET /health without ./data: got %d %q", code, body)
	}

	// With a token, the legacy calendar: /manual-sync syncs, /sync runs.
	token := stubToken(t)
	cal.restart("", "GOOGLE_CALENDAR_TOKEN_FILE="+token, "STANDIN_VERSION=legacy")
	_ = os.Mkdir(filepath.Join(cal.dir, "data"), 0o755)
	poll(t, 20*time.Second, "calendar /health", func() bool { c, _ := httpGet(cal.base + "/health"); return c == 200 })
	code, _, body = httpDo(t, http.MethodPost, cal.base+"/manual-sync", "", []byte(`{"matches":[{"matchid":6169105,"avsparkstid":"15:00"}]}`))
	if !regexp.MustCompile(`^\{"matches_processed":1,"success":true,"timestamp":"[0-9T:.-]+"\}\n$`).MatchString(body) || code != 200 {
		t.Errorf("POST /manual-sync with a token: got %d %q", code, body)
	}
	code, _, body = httpDo(t, http.MethodPost, cal.base+"/sync", "", nil)
	if want := `{"message":"FOGIS sync completed successfully","output":"stub sync (delete=False)\n","status":"success"}` + "\n"; code != 200 || body != want {
		t.Errorf("legacy POST /sync: got %d %q, want 200 %q", code, body, want)
	}
	code, _, body = httpDo(t, http.MethodGet, cal.base+"/health", "", nil)
	if want := `{"auth_status":"authenticated","environment":"development","oauth_info":{"has_refresh_token":true,"location":"` + token + `","status":"authenticated"},"status":"healthy","token_location":"` + token + `","version":"dev"}` + "\n"; code != 200 || body != want {
		t.Errorf("GET /health with a token: got %d %q, want 200 %q", code, body, want)
	}

	// The processor: REDIS_ENABLED unset -> nothing published (it does
	// process the change); CI set -> test mode, nothing fetched, exit 1.
	api := startFogisAPI(t, py)
	r := redistest.StartProcess(t)
	proc := startProcessor(t, py, "processor", api, false, "REDIS_URL="+r.URL, "MAX_SERVICE_CYCLES=1")
	proc.wait(30 * time.Second)
	if l := proc.logText(); !strings.Contains(l, "Redis pub/sub integration disabled (REDIS_ENABLED=false)") ||
		!strings.Contains(l, "Saved 1 matches") || strings.Contains(l, "PUBLISHING") {
		t.Errorf("processor without REDIS_ENABLED:\n%s", proc.logTail(20))
	}
	ci := startProcessor(t, py, "processor-ci", api, false, "CI=true", "RUN_MODE=oneshot", "REDIS_ENABLED=true", "REDIS_URL="+r.URL)
	ci.wait(30 * time.Second)
	if code := ci.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(ci.logText(), "Test mode detected - returning empty matches list") {
		t.Errorf("processor with CI=true: exit %d\n%s", code, ci.logTail(20))
	}
}

// TestFogisSlowSyncAndTheWebhookTimeout: the legacy calendar's /sync runs a
// whole sync before it answers. With an attempt timeout below the sync's
// duration, the sidecar abandons the attempt and retries while the first
// sync still runs: syncs overlap. With the example's timeout (15m) there is
// one attempt and one sync.
func TestFogisSlowSyncAndTheWebhookTimeout(t *testing.T) {
	py := fogisPythons(t)[0]
	for _, tc := range []struct {
		name    string
		timeout string // replaces the example's "timeout: 15m"
		overlap bool
	}{
		{"timeout below the sync", "timeout: 1s", true},
		{"the example's timeout", "timeout: 15m", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			redis := fogisRedis(t)
			calPort := redistest.FreePort(t)
			calURL := fmt.Sprintf("http://127.0.0.1:%d", calPort)
			cal := calendar{startStandIn(t, py, "calendar", "calendar_sync.py", calPort, "/health", "STANDIN_VERSION=legacy",
				"STANDIN_SYNC_SECONDS=3", "REDIS_ENABLED=false", "FLASK_HOST=127.0.0.1", fmt.Sprint("FLASK_PORT=", calPort),
				"GOOGLE_CALENDAR_TOKEN_FILE="+stubToken(t))}
			fogisSidecar(t, "calendar-sidecar", "calendar-sidecar.http-mode.yaml", redis,
				outage("calendar-sidecar.http-mode.yaml", map[string]string{"http://calendar:5003": calURL, "timeout: 15m": tc.timeout}))
			proc, _ := fogisSidecar(t, "processor-sidecar", "processor-sidecar.http-mode.yaml", redis,
				map[string]string{"http://calendar:5003": calURL})
			if code, _, body := httpDo(t, http.MethodPost, proc.url("/sync"), "", nil); code != http.StatusOK {
				t.Fatalf("POST /sync: %d %s", code, body)
			}
			var got struct {
				Syncs          []calSync `json:"syncs"`
				MostConcurrent int       `json:"most_concurrent"`
			}
			poll(t, 30*time.Second, "the first sync to finish", func() bool {
				return getJSON(cal.base+"/standin/syncs", &got) && len(got.Syncs) > 0
			})
			if overlapped := got.MostConcurrent > 1; overlapped != tc.overlap {
				t.Fatalf("most syncs at once: %d; want overlap %v", got.MostConcurrent, tc.overlap)
			}
			t.Logf("measured: a 3 s sync with %s: %d syncs ran at once; the first finished at attempt %s",
				tc.timeout, got.MostConcurrent, got.Syncs[0].Attempt)
		})
	}
}
