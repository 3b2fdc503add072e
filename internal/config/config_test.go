package config

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	var out strings.Builder
	c, err := Load(nil, envOf(nil), "host-1", &out)
	if err != nil {
		t.Fatal(err)
	}
	if c.Service != "host-1" || c.Consumer != "host-1" || c.Listen != "127.0.0.1:7700" ||
		c.RedisURL != "redis://127.0.0.1:6379/0" || c.SpoolDir != "./data/spool" ||
		c.MaxBody != 1<<20 || c.Retention.MaxLen != 100000 || c.LogFormat != "json" || c.LogLevel != "info" {
		t.Fatalf("defaults: got %+v", c)
	}
}

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	file := writeFile(t, `
service: from-file
listen: 127.0.0.1:1111
consumer: file-consumer
log: {level: debug}
redis: {url: "redis://file:6379/0"}
`)
	env := map[string]string{
		"SIDECAR_CONFIG":  file,
		"SIDECAR_LISTEN":  "127.0.0.1:2222",
		"SIDECAR_SERVICE": "from-env",
	}
	var out strings.Builder
	c, err := Load([]string{"--service", "from-flag"}, envOf(env), "h", &out)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, got, want string }{
		{"service (flag > env > file)", c.Service, "from-flag"},
		{"listen (env > file)", c.Listen, "127.0.0.1:2222"},
		{"consumer (file > default)", c.Consumer, "file-consumer"},
		{"log level (file)", c.LogLevel, "debug"},
		{"redis url (file)", c.RedisURL, "redis://file:6379/0"},
		{"log format (default)", c.LogFormat, "json"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

func TestFileSubscriptions(t *testing.T) {
	file := writeFile(t, `
service: calendar
retention: {max_age: 168h}
routes:
  - path: /sync
    topic: match.updated
    fallback: http://calendar-sidecar:7700/v1/inbox/match.updated
fallbacks:
  match.updated: http://calendar-sidecar:7700/v1/inbox/match.updated
spool: {dir: /tmp/x, max_bytes: 10MiB}
subscriptions:
  - topic: match.updated
    url: http://127.0.0.1:5003/manual-sync
    start: latest
    concurrency: 4
    timeout: 2s
    retry_for: 90m
    max_attempts: 3
    backoff: {initial: 10ms, max: 1s}
  - topic: other
    url: http://127.0.0.1:5003/other
    group: audit
`)
	var out strings.Builder
	c, err := Load([]string{"--config", file}, envOf(nil), "h", &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Subscriptions) != 2 {
		t.Fatalf("got %d subscriptions, want 2", len(c.Subscriptions))
	}
	s := c.Subscriptions[0]
	want := Subscription{Topic: "match.updated", URL: "http://127.0.0.1:5003/manual-sync", Group: "calendar",
		Start: "latest", Concurrency: 4, Timeout: 2 * time.Second, RetryFor: 90 * time.Minute, MaxAttempts: 3,
		Backoff: Backoff{Initial: 10 * time.Millisecond, Max: time.Second}, Ordering: OrderingStream}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}
	if g := c.Subscriptions[1]; g.Group != "audit" || g.Concurrency != 1 || g.MaxAttempts != 0 || g.RetryFor != 24*time.Hour || g.Start != "earliest" {
		// The default horizon is time, not a count: a webhook down for
		// minutes or hours must not dead-letter anything.
		t.Fatalf("second subscription defaults: got %+v", g)
	}
	if len(c.Routes) != 1 || c.Routes[0] != (Route{Path: "/sync", Topic: "match.updated", Fallback: "http://calendar-sidecar:7700/v1/inbox/match.updated"}) {
		t.Fatalf("routes: got %+v", c.Routes)
	}
	if c.Fallbacks["match.updated"] != "http://calendar-sidecar:7700/v1/inbox/match.updated" || c.SpoolDir != "/tmp/x" || c.SpoolMaxBytes != 10<<20 {
		t.Fatalf("fallbacks / spool: got %v %q %d", c.Fallbacks, c.SpoolDir, c.SpoolMaxBytes)
	}
	if c.Retention.MaxAge != 168*time.Hour || c.Retention.MaxLen != 0 {
		t.Fatalf("retention: got %+v, want max_age 168h and no max_len", c.Retention)
	}
}

func TestSubscribeShortForm(t *testing.T) {
	var out strings.Builder
	env := map[string]string{"SIDECAR_SERVICE": "calendar",
		"SIDECAR_SUBSCRIBE": "match.updated=http://127.0.0.1:5003/manual-sync, system.alert=http://127.0.0.1:5003/alert"}
	c, err := Load(nil, envOf(env), "h", &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Subscriptions) != 2 || c.Subscriptions[1].Topic != "system.alert" ||
		c.Subscriptions[1].URL != "http://127.0.0.1:5003/alert" || c.Subscriptions[0].Group != "calendar" {
		t.Fatalf("got %+v", c.Subscriptions)
	}
}

func TestInvalidConfigNamesTheSetting(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		file string
		want string
	}{
		{name: "bad topic", env: map[string]string{"SIDECAR_SUBSCRIBE": "bad topic=http://x/"}, want: "subscriptions[0].topic"},
		{name: "bad url", env: map[string]string{"SIDECAR_SUBSCRIBE": "t=ftp://x/"}, want: "subscriptions[0].url"},
		{name: "no equals", env: map[string]string{"SIDECAR_SUBSCRIBE": "t"}, want: "SIDECAR_SUBSCRIBE"},
		{name: "bad listen", args: []string{"--listen", "nope"}, want: "listen"},
		{name: "bad duration env", env: map[string]string{"SIDECAR_PUBLISH_TIMEOUT": "soon"}, want: "SIDECAR_PUBLISH_TIMEOUT"},
		{name: "bad secret", env: map[string]string{"SIDECAR_WEBHOOK_SECRET": "hunter2"}, want: "webhook_secret"},
		{name: "bad level", args: []string{"--log-level", "loud"}, want: "log.level"},
		{name: "bad redis", env: map[string]string{"REDIS_URL": "http://x"}, want: "redis.url"},
		{name: "unknown yaml key", file: "servce: x\n", want: "servce"},
		{name: "bad yaml sub", file: "subscriptions: [{topic: t, url: 'http://x/', concurrency: 0}]\n", want: "subscriptions[0].concurrency"},
		{name: "bad yaml backoff", file: "subscriptions: [{topic: t, url: 'http://x/', backoff: {initial: 2s, max: 1s}}]\n", want: "subscriptions[0].backoff"},
		{name: "both retention", file: "retention: {max_len: 5, max_age: 1h}\n", want: "retention"},
		{name: "route without slash", file: "routes: [{path: sync, topic: t}]\n", want: "routes[0].path"},
		{name: "route on own endpoint", file: "routes: [{path: /v1/publish/t, topic: t}]\n", want: "routes[0].path"},
		{name: "route bad fallback", file: "routes: [{path: /sync, topic: t, fallback: nope}]\n", want: "routes[0].fallback"},
		{name: "bad spool size", env: map[string]string{"SIDECAR_SPOOL_MAX_BYTES": "huge"}, want: "SIDECAR_SPOOL_MAX_BYTES"},
		{name: "duplicate subscription", env: map[string]string{"SIDECAR_SUBSCRIBE": "t=http://x/,t=http://y/"}, want: "subscribed twice"},
		{name: "stray argument", args: []string{"run"}, want: "unexpected argument"},
		{name: "missing file", env: map[string]string{"SIDECAR_CONFIG": "/nonexistent/sidecar.yaml"}, want: "config file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range tc.env {
				env[k] = v
			}
			if tc.file != "" {
				env["SIDECAR_CONFIG"] = writeFile(t, tc.file)
			}
			var out strings.Builder
			_, err := Load(tc.args, envOf(env), "h", &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out strings.Builder
	_, err := Load([]string{"--help"}, envOf(nil), "h", &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("got %v, want flag.ErrHelp", err)
	}
	for _, s := range settings {
		for _, name := range []string{"--" + s.key, s.env, s.yaml} {
			if !strings.Contains(out.String(), name) {
				t.Errorf("--help does not mention %q", name)
			}
		}
	}
}

func TestDevFlag(t *testing.T) {
	var out strings.Builder
	c, err := Load([]string{"--dev"}, envOf(nil), "h", &out)
	if err != nil || !c.Dev {
		t.Fatalf("--dev: got dev=%v err=%v, want true", c != nil && c.Dev, err)
	}
	c, err = Load(nil, envOf(map[string]string{"SIDECAR_DEV": "1"}), "h", &out)
	if err != nil || !c.Dev {
		t.Fatalf("SIDECAR_DEV=1: got err=%v", err)
	}
}

func TestParseRedisURL(t *testing.T) {
	for _, tc := range []struct {
		url     string
		addrs   int
		cluster bool
		master  string
		tls     bool
		wantErr bool
	}{
		{url: "redis://127.0.0.1:6379/0", addrs: 1},
		{url: "rediss://u:p@example:6380/2", addrs: 1, tls: true},
		{url: "redis://s1:26379?master_name=mymaster&addr=s2:26379", addrs: 2, master: "mymaster"},
		{url: "redis+cluster://n1:7000?addr=n2:7000&addr=n3:7000", addrs: 3, cluster: true},
		{url: "http://x", wantErr: true},
		{url: "::", wantErr: true},
	} {
		t.Run(tc.url, func(t *testing.T) {
			o, err := ParseRedisURL(tc.url)
			if tc.wantErr {
				if err == nil {
					t.Fatal("got nil error, want one")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(o.Addrs) != tc.addrs || o.IsClusterMode != tc.cluster || o.MasterName != tc.master || (o.TLSConfig != nil) != tc.tls || !o.ContextTimeoutEnabled {
				t.Fatalf("got %+v", o)
			}
		})
	}
	if got := RedactURL("redis://user:secret@h:1/0"); strings.Contains(got, "secret") {
		t.Fatalf("RedactURL kept the password: %s", got)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1048576": 1 << 20, "1MiB": 1 << 20, "512 KiB": 512 << 10, "2GiB": 2 << 30} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseBytes("lots"); err == nil {
		t.Error("ParseBytes(lots): got nil error")
	}
}

func TestPartitionsOrderingAndBatch(t *testing.T) {
	file := writeFile(t, `
topics:
  orders: {partitions: 8}
subscriptions:
  - topic: orders
    url: http://127.0.0.1:9000/hook
    ordering: key
    concurrency: 16
    batch: {max_events: 50, max_wait: 20ms}
  - topic: orders
    url: http://127.0.0.1:9000/other
    group: other
    batch: {}
`)
	c, err := Load([]string{"--config", file}, envOf(nil), "h", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Partitions["orders"] != 8 {
		t.Fatalf("partitions: %v", c.Partitions)
	}
	s := c.Subscriptions[0]
	if s.Ordering != OrderingKey || s.Concurrency != 16 || s.Batch != (Batch{MaxEvents: 50, MaxWait: 20 * time.Millisecond}) {
		t.Fatalf("got %+v", s)
	}
	if b := c.Subscriptions[1].Batch; b != (Batch{MaxEvents: 100}) {
		t.Fatalf("batch: {} should default to 100 events, no wait; got %+v", b)
	}
	c, err = Load([]string{"--config", file}, envOf(map[string]string{"SIDECAR_PARTITIONS": "orders=4, billing=2"}), "h", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Partitions) != 2 || c.Partitions["orders"] != 4 || c.Partitions["billing"] != 2 {
		t.Fatalf("env partitions: %v", c.Partitions)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"topics: {orders: {partitions: 0}}", "topics.orders.partitions"},
		{"topics: {orders: {partitions: 2000}}", "topics.orders.partitions"},
		{"subscriptions: [{topic: a, url: http://x/, ordering: random}]", "ordering"},
		{"subscriptions: [{topic: a, url: http://x/, batch: {max_events: 0}}]", "max_events"},
		{"subscriptions: [{topic: a, url: http://x/, batch: {max_events: 5000}}]", "max_events"},
		{"subscriptions: [{topic: a, url: http://x/, batch: {max_wait: 1m}}]", "max_wait"},
		{"subscriptions: [{topic: a, url: http://x/, batch: {}, body: /payload}]", "body"},
	} {
		_, err := Load([]string{"--config", writeFile(t, tc.yaml)}, envOf(nil), "h", io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %s", tc.yaml, err, tc.want)
		}
	}
}

// Every error names the setting one way — its YAML key — and says where
// the value came from.
func TestErrorsNameTheYAMLKeyAndTheSource(t *testing.T) {
	file := writeFile(t, "max_body: abc\n")
	subs := writeFile(t, "subscriptions: [{topic: a, url: ftp://x/}]\n")
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{env: map[string]string{"SIDECAR_MAX_BODY": "abc"}, want: "max_body (env SIDECAR_MAX_BODY): "},
		{args: []string{"--max-body", "abc"}, want: "max_body (flag --max-body): "},
		{args: []string{"--config", file}, want: "max_body (config file " + file + "): "},
		{env: map[string]string{"SIDECAR_LOG_LEVEL": "loud"}, want: "log.level (env SIDECAR_LOG_LEVEL): "},
		{env: map[string]string{"SIDECAR_SUBSCRIBE": "bad topic=http://x/"}, want: "subscriptions[0].topic (env SIDECAR_SUBSCRIBE): "},
		{env: map[string]string{"SIDECAR_PARTITIONS": "orders=0"}, want: "topics.orders.partitions (env SIDECAR_PARTITIONS): "},
		{args: []string{"--config", subs}, want: "subscriptions[0].url (config file " + subs + "): "},
	} {
		_, err := Load(tc.args, envOf(tc.env), "h", io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: got %v, want an error naming %q", tc.args, tc.env, err, tc.want)
		}
	}
}
