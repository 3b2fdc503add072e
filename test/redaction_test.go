package test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// Issue 9: no credential the sidecar was configured with appears in what
// it shows of itself — its log, /v1/status (open without a token),
// /readyz, /metrics, `sidecar check` and `sidecar check --json`, or the
// error that refuses a configuration. Every secret below is a string
// nothing else in a run contains.
const (
	redisPassword = "rEdis-Pw-71c3"   // requirepass, data nodes
	aclPassword   = "aCl-Pw-5e9d"     // an ACL user's
	hookPassword  = "hOok-Pw-2b8a"    // webhook userinfo
	hookToken     = "hOok-Tok-8f41"   // webhook ?token=
	deadPassword  = "dEad-Pw-93aa"    // userinfo of a webhook that never answers
	deadToken     = "dEad-Tok-0c6e"   // its ?access_token=
	sentinelPass  = "sEntinel-Pw-4d2" // the sentinels' own
)

// TestRedactionStandalone runs the sidecar against a redis-server with
// requirepass (and an ACL user) in each URL form, with a webhook URL that
// carries credentials and one that never answers (so its error, which
// quotes the URL, reaches the log and /v1/status), and greps everything
// the sidecar shows for the passwords.
func TestRedactionStandalone(t *testing.T) {
	srv := redistest.StartProcess(t)
	requirePassword(t, srv.Addr, redisPassword, "alice", aclPassword)
	for _, tc := range []struct {
		name, url, shown string
	}{
		{"userinfo password", "redis://:" + redisPassword + "@" + srv.Addr + "/0", "redis://:xxxxx@" + srv.Addr + "/0"},
		{"user and password", "redis://alice:" + aclPassword + "@" + srv.Addr + "/0", "redis://alice:xxxxx@" + srv.Addr + "/0"},
		{"password parameter", "redis://" + srv.Addr + "/0?password=" + redisPassword, "redis://" + srv.Addr + "/0?password=xxxxx"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deliverOneAndRequireHidden(t, tc.url, tc.shown, "", redisPassword, aclPassword)
		})
	}
}

// TestRedactionOfRefusedConfigurations: a configuration the sidecar
// refuses is named in the error without its credentials, also when the
// URL does not parse.
func TestRedactionOfRefusedConfigurations(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"unparseable redis URL", []string{"REDIS_URL=redis://:" + redisPassword + "@127.0.0.1:port/0"}, "<unparseable URL, "},
		{"unknown redis option", []string{"REDIS_URL=redis://127.0.0.1:1/0?password=" + redisPassword + "&bogus=1"}, "unexpected option: bogus"},
		{"sentinel password on a plain URL", []string{"REDIS_URL=redis://127.0.0.1:1/0?sentinel_password=" + sentinelPass}, "sentinel_password"},
		{"webhook URL", []string{"SIDECAR_SUBSCRIBE=t=ftp://hook:" + hookPassword + "@127.0.0.1:1/hook?token=" + hookToken}, "subscriptions[0].url"},
		{"unparseable webhook URL", []string{"SIDECAR_SUBSCRIBE=t=http://hook:" + hookPassword + "@127.0.0.1:x/hook"}, "<unparseable URL, "},
		{"short webhook secret", []string{"SIDECAR_WEBHOOK_SECRET=whsec_" + base64.StdEncoding.EncodeToString([]byte("sixteen-byte-key"))}, "24 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{"SIDECAR_LISTEN=127.0.0.1:" + fmt.Sprint(redistest.FreePort(t)), "SIDECAR_SPOOL_DIR=" + t.TempDir(),
				"PATH=" + os.Getenv("PATH")}, tc.env...)
			texts := map[string]string{}
			for _, args := range [][]string{nil, {"check"}, {"check", "--json"}} {
				out, code := runBinary(t, env, args...)
				what := strings.TrimSpace("sidecar " + strings.Join(args, " "))
				if code == 0 {
					t.Fatalf("%s: exit 0, want a refusal:\n%s", what, out)
				}
				if !strings.Contains(out, tc.want) {
					t.Errorf("%s: output does not say %q:\n%s", what, tc.want, out)
				}
				texts[what] = out
			}
			requireHidden(t, texts, redisPassword, sentinelPass, hookPassword, hookToken, "c2l4dGVlbi1ieXRlLWtleQ")
		})
	}
}

// deliverOneAndRequireHidden starts a sidecar on redisURL that subscribes
// a receiver through a webhook URL with credentials (and a dead webhook
// with more), requires it READY and one event delivered, with the
// credentials reaching the receiver, then requires every text the sidecar
// shows free of secrets and showing the Redis URL as shown.
func deliverOneAndRequireHidden(t *testing.T, redisURL, shown, extraEnv string, secrets ...string) {
	t.Helper()
	topic := redistest.UniqueTopic(t, "redact")
	rc := newReceiver(t)
	hook := "http://hook:" + hookPassword + "@" + strings.TrimPrefix(rc.url(), "http://") + "?token=" + hookToken
	dead := fmt.Sprintf("http://dead:%s@127.0.0.1:%d/hook?access_token=%s", deadPassword, redistest.FreePort(t), deadToken)
	cfg := writeConfig(t, fmt.Sprintf(`service: calendar
subscriptions:
  - topic: %[1]s
    url: %[2]s
    backoff: {initial: 20ms, max: 100ms}
  - topic: %[1]s
    url: %[3]s
    group: audit
    backoff: {initial: 20ms, max: 100ms}
`, topic, hook, dead))
	env := []string{"REDIS_URL=" + redisURL, "SIDECAR_CONFIG=" + cfg}
	if extraEnv != "" {
		env = append(env, extraEnv)
	}
	sc := startSidecar(t, "calendar", env...)
	// "degraded" answers 200 too (the spool takes publishes): READY is
	// Redis reachable, authenticated, and every subscription running.
	eventually.True(t, 30*time.Second, `/readyz 200 {"status":"ready"}`, func() bool {
		code, rep := sc.readyz()
		return code == http.StatusOK && rep["status"] == "ready"
	})
	sc.mustPublish(topic, body(1))
	eventually.True(t, 30*time.Second, "the event delivered", func() bool { return rc.count() >= 1 })
	got := rc.all()[0]
	if !bytes.Equal(got.Body, body(1)) {
		t.Fatalf("delivered body %q, want %q", got.Body, body(1))
	}
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("hook:"+hookPassword))
	if a := got.Header.Get("Authorization"); a != wantAuth {
		t.Errorf("webhook Authorization: got %q, want the URL's credentials %q", a, wantAuth)
	}
	// The dead webhook's error (which quotes its URL) must have reached
	// /v1/status before the texts are read, or they prove nothing.
	var status statusView
	eventually.True(t, 30*time.Second, "the dead webhook's last_error in /v1/status", func() bool {
		status = getStatus(t, sc)
		for _, s := range status.Subscriptions {
			if s.Group == "audit" && s.LastError != "" {
				return true
			}
		}
		return false
	})
	texts := exposedTexts(t, sc)
	requireHidden(t, texts, append(secrets, hookPassword, hookToken, deadPassword, deadToken)...)

	if status.Redis.URL != shown {
		t.Errorf("/v1/status redis.url: got %q, want %q", status.Redis.URL, shown)
	}
	for _, s := range status.Subscriptions {
		if !strings.Contains(s.URL, "xxxxx") {
			t.Errorf("/v1/status subscription %s url %q: want its credentials shown as xxxxx", s.Group, s.URL)
		}
	}
	if !strings.Contains(texts["log"], `"redis":"`+shown+`"`) || !strings.Contains(texts["log"], "hook:xxxxx@") {
		t.Errorf("the log does not show the Redis URL as %s and the webhook URL redacted:\n%s", shown, tail([]byte(texts["log"]), 30))
	}
	var rep checkReport
	if err := json.Unmarshal([]byte(texts["sidecar check --json"]), &rep); err != nil {
		t.Fatalf("check --json: %v\n%s", err, texts["sidecar check --json"])
	}
	if c := rep.find("Redis reachable"); !c.Passed || !strings.Contains(c.Detail, shown) {
		t.Errorf("check: Redis reachable: got %+v, want passed, showing %s", c, shown)
	}
	if t.Failed() {
		return
	}
	t.Logf("measured: %d texts (%d bytes) free of %d secrets; Redis shown as %s", len(texts), totalLen(texts), len(secrets)+4, shown)
}

// requirePassword adds an ACL user to a running redis-server, then turns
// on requirepass.
func requirePassword(t *testing.T, addr, password, user, userPassword string) {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Do(ctx, "ACL", "SETUSER", user, "on", ">"+userPassword, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "requirepass", password).Err(); err != nil {
		t.Fatal(err)
	}
}

// exposedTexts is everything the running sidecar shows of itself: its log,
// its HTTP status endpoints, and `sidecar check` (text and JSON) run with
// its settings.
func exposedTexts(t *testing.T, sc *sidecar) map[string]string {
	t.Helper()
	texts := map[string]string{}
	for _, path := range []string{"/v1/status", "/readyz", "/metrics"} {
		resp, err := http.Get(sc.url(path))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		texts[path] = string(b)
	}
	for _, args := range [][]string{{"check"}, {"check", "--json"}} {
		out, _ := runBinary(t, sc.env, args...) // DEGRADED (no persistence) is fine here
		texts["sidecar "+strings.Join(args, " ")] = out
	}
	log, err := os.ReadFile(sc.log.Name())
	if err != nil {
		t.Fatal(err)
	}
	texts["log"] = string(log)
	return texts
}

// requireHidden fails the test for every secret found in a text.
func requireHidden(t *testing.T, texts map[string]string, secrets ...string) {
	t.Helper()
	for what, text := range texts {
		if text == "" {
			t.Errorf("%s: empty, want something to search", what)
		}
		for _, s := range secrets {
			if i := strings.Index(text, s); i >= 0 {
				t.Errorf("%s shows the secret %q: …%s…", what, s, text[max(i-80, 0):min(i+len(s)+40, len(text))])
			}
		}
	}
}

func totalLen(texts map[string]string) int {
	n := 0
	for _, s := range texts {
		n += len(s)
	}
	return n
}

// runBinary runs the sidecar binary to completion with env and args and
// returns what it wrote (stdout and stderr) and its exit code.
func runBinary(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sidecarBin, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	}
	t.Fatalf("sidecar %v: %v", args, err)
	return "", -1
}

// statusView is the part of /v1/status these tests read.
type statusView struct {
	Redis struct {
		URL string `json:"url"`
	} `json:"redis"`
	Subscriptions []struct {
		Group     string `json:"group"`
		URL       string `json:"url"`
		LastError string `json:"last_error"`
	} `json:"subscriptions"`
}

func getStatus(t *testing.T, sc *sidecar) statusView {
	t.Helper()
	resp, err := http.Get(sc.url("/v1/status"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v statusView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("/v1/status: %v", err)
	}
	return v
}

// checkReport is `sidecar check --json`.
type checkReport struct {
	Overall string        `json:"overall"`
	Checks  []checkResult `json:"checks"`
}

type checkResult struct {
	Name   string `json:"name"`
	Passed bool   `json:"passed"`
	Detail string `json:"detail"`
}

func (r checkReport) find(name string) checkResult {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return checkResult{Name: "missing " + name}
}
