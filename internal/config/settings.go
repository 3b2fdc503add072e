package config

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

type flagT = flag.Flag

// setting is one scalar configuration knob, known by its flag, env and YAML names.
type setting struct {
	key   string // flag name
	env   string
	yaml  string
	def   string
	help  string
	apply func(c *Config, v string) error
}

func str(dst func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *dst(c) = v; return nil }
}

func dur(dst func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 500ms, 10s, 168h)", v)
		}
		*dst(c) = d
		return nil
	}
}

// settings lists every scalar setting; --help prints it.
var settings = []setting{
	{key: "config", env: "SIDECAR_CONFIG", help: "YAML configuration file"},
	{key: "service", env: "SIDECAR_SERVICE", yaml: "service", def: "hostname", help: "name of the service beside it: event source and default consumer group",
		apply: str(func(c *Config) *string { return &c.Service })},
	{key: "listen", env: "SIDECAR_LISTEN", yaml: "listen", def: "127.0.0.1:7700", help: "HTTP API address",
		apply: str(func(c *Config) *string { return &c.Listen })},
	{key: "redis-url", env: "REDIS_URL", yaml: "redis.url", def: "redis://127.0.0.1:6379/0", help: "redis:// or rediss:// URL; ?master_name=NAME&addr=… for Sentinel; redis+cluster:// for Cluster. user:password@ (or ?password=) authenticates to the data nodes; a Sentinel URL's sentinels take ?sentinel_password= (default: the same as the data nodes). Printed with passwords as xxxxx",
		apply: str(func(c *Config) *string { return &c.RedisURL })},
	{key: "redis-min-replicas", env: "SIDECAR_REDIS_MIN_REPLICAS", yaml: "redis.min_replicas", def: "auto",
		help: "replicas that must have a publish before it is acknowledged (WAIT); auto = 1 when the master has an online replica, else 0",
		apply: func(c *Config, v string) error {
			if v == "auto" {
				c.RedisMinReplicas = -1
				return nil
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("%q is not auto or a number of replicas", v)
			}
			c.RedisMinReplicas = n
			return nil
		}},
	{key: "resp-listen", env: "SIDECAR_RESP_LISTEN", yaml: "resp.listen", help: "answer Redis clients (PUBLISH is a durable publish, SUBSCRIBE reads through the service's consumer group) on this address, e.g. 127.0.0.1:6380 (off by default)",
		apply: str(func(c *Config) *string { return &c.RespListen })},
	{key: "subscribe", env: "SIDECAR_SUBSCRIBE", yaml: "subscriptions", help: "short form topic=url[,topic=url…]; replaces the file's subscriptions",
		apply: func(c *Config, v string) error {
			subs, err := ParseSubscribe(v)
			if err != nil {
				return err
			}
			c.Subscriptions = subs
			return nil
		}},
	{key: "partitions", env: "SIDECAR_PARTITIONS", yaml: "topics", help: "partitioned topics, short form topic=N[,topic=N…]; replaces the file's topics.<t>.partitions",
		apply: func(c *Config, v string) error {
			p, err := ParsePartitions(v)
			if err != nil {
				return err
			}
			c.Partitions = p
			return nil
		}},
	{key: "consumer", env: "SIDECAR_CONSUMER", yaml: "consumer", def: "hostname", help: "this replica's consumer name; must differ between replicas of one service",
		apply: str(func(c *Config) *string { return &c.Consumer })},
	{key: "spool-dir", env: "SIDECAR_SPOOL_DIR", yaml: "spool.dir", def: "./data/spool", help: "durable local buffer for outages",
		apply: str(func(c *Config) *string { return &c.SpoolDir })},
	{key: "spool-max-bytes", env: "SIDECAR_SPOOL_MAX_BYTES", yaml: "spool.max_bytes", def: "1GiB", help: "spool size bound; when full, publishes during an outage get 503 spool_full",
		apply: func(c *Config, v string) error {
			n, err := ParseBytes(v)
			c.SpoolMaxBytes = n
			return err
		}},
	{key: "api-token", env: "SIDECAR_API_TOKEN", yaml: "api_token", help: "require Authorization: Bearer <token> on the API (health endpoints excepted)",
		apply: str(func(c *Config) *string { return &c.APIToken })},
	{key: "webhook-secret", env: "SIDECAR_WEBHOOK_SECRET", yaml: "webhook_secret", help: "Standard Webhooks secret (whsec_<base64 of at least 24 random bytes>): sign deliveries and authenticate peers' fallbacks into /v1/inbox",
		apply: str(func(c *Config) *string { return &c.WebhookSecret })},
	{key: "log-level", env: "SIDECAR_LOG_LEVEL", yaml: "log.level", def: "info", help: "trace, debug, info, warn or error",
		apply: str(func(c *Config) *string { return &c.LogLevel })},
	{key: "log-format", env: "SIDECAR_LOG_FORMAT", yaml: "log.format", def: "json", help: "json or console",
		apply: str(func(c *Config) *string { return &c.LogFormat })},
	{key: "max-body", env: "SIDECAR_MAX_BODY", yaml: "max_body", def: "1048576", help: "largest publish body in bytes (suffixes KiB, MiB)",
		apply: func(c *Config, v string) error {
			n, err := ParseBytes(v)
			c.MaxBody = n
			return err
		}},
	{key: "retention-max-len", env: "SIDECAR_RETENTION_MAX_LEN", yaml: "retention.max_len", def: "100000", help: "per-topic approximate MAXLEN (0 = unbounded); never trims an entry a consumer group has not acknowledged",
		apply: func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("%q is not a whole number", v)
			}
			c.Retention.MaxLen = n
			return nil
		}},
	{key: "retention-max-age", env: "SIDECAR_RETENTION_MAX_AGE", yaml: "retention.max_age", help: "per-topic age limit (MINID), e.g. 168h; replaces max_len",
		apply: dur(func(c *Config) *time.Duration { return &c.Retention.MaxAge })},
	{key: "retention-interval", env: "SIDECAR_RETENTION_INTERVAL", yaml: "retention.interval", def: "1s", help: "how often retention trims the topics this sidecar publishes to (never past an unacknowledged entry)",
		apply: dur(func(c *Config) *time.Duration { return &c.Retention.Interval })},
	{key: "publish-timeout", env: "SIDECAR_PUBLISH_TIMEOUT", yaml: "publish_timeout", def: "500ms", help: "longest a publish waits on Redis before it goes to the spool",
		apply: dur(func(c *Config) *time.Duration { return &c.PublishTimeout })},
	{key: "shutdown-grace", env: "SIDECAR_SHUTDOWN_GRACE", yaml: "shutdown_grace", def: "10s", help: "on SIGTERM, how long in-flight requests and deliveries may finish",
		apply: dur(func(c *Config) *time.Duration { return &c.ShutdownGrace })},
	{key: "claim-timeout", env: "SIDECAR_CLAIM_TIMEOUT", yaml: "claim_timeout", def: "30s", help: "idle time after which another replica's pending entry is claimed",
		apply: dur(func(c *Config) *time.Duration { return &c.ClaimTimeout })},
	{key: "idempotency-window", env: "SIDECAR_IDEMPOTENCY_WINDOW", yaml: "idempotency_window", def: "24h", help: "how long an Idempotency-Key is remembered",
		apply: dur(func(c *Config) *time.Duration { return &c.IdempotencyWindow })},
	{key: "upstream", env: "SIDECAR_UPSTREAM", yaml: "upstream", help: "reverse-proxy every request that matches no route and no sidecar endpoint to this URL (the service the sidecar answers for, e.g. http://calendar:5003)",
		apply: str(func(c *Config) *string { return &c.Upstream })},
	{key: "debug-addr", env: "SIDECAR_DEBUG_ADDR", yaml: "debug_addr", help: "serve Go's /debug/pprof profiles on this address (off by default; keep it on localhost)",
		apply: str(func(c *Config) *string { return &c.DebugAddr })},
	{key: "dev", env: "SIDECAR_DEV", yaml: "dev", def: "false", help: "dev mode: start an in-memory Redis at redis.url if none answers (NOT durable)",
		apply: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not true or false", v)
			}
			c.Dev = b
			return nil
		}},
}

// ParseBytes parses "1048576", "512KiB" or "1MiB".
func ParseBytes(v string) (int64, error) {
	mult := int64(1)
	s := strings.TrimSpace(v)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size in bytes (e.g. 1048576 or 1MiB)", v)
	}
	return n * mult, nil
}

// newFlagSet declares one string flag per setting, so a flag can be told
// apart from its default (fs.Visit) and parsed by the same code as env values.
func newFlagSet(out io.Writer) (*flag.FlagSet, map[string]*string) {
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	fs.SetOutput(out)
	vals := map[string]*string{}
	for _, s := range settings {
		if s.key == "dev" {
			// --dev alone means --dev=true.
			vals[s.key] = new(string)
			fs.BoolFunc(s.key, s.help, func(v string) error { *vals["dev"] = v; return nil })
			continue
		}
		vals[s.key] = fs.String(s.key, "", s.help)
	}
	fs.Usage = func() { fmt.Fprint(out, Usage()) }
	return fs, vals
}

// Usage is the text of `sidecar --help`: every setting with its flag, env, YAML key and default.
func Usage() string {
	var b strings.Builder
	b.WriteString(`sidecar — an event-sourced pub/sub sidecar on Redis Streams

Usage:
  sidecar [flags]          run the sidecar
  sidecar check [--json] [flags]
                           deployment validation report (exit 0 only when READY)
  sidecar health [flags]   probe this sidecar's /healthz (for container health checks)
  sidecar config validate|print [flags]
                           check the configuration offline / show it, secrets redacted
  sidecar version          print the version (also --version)
  sidecar help             the event-log commands (topics, events, dlq, seek, pause, …)

Every setting can be given as a flag, an environment variable or a key of the
YAML file (--config); precedence: flag > env > file > default.

`)
	for _, s := range settings {
		fmt.Fprintf(&b, "  --%s", s.key)
		if s.key != "dev" {
			b.WriteString(" VALUE")
		}
		fmt.Fprintf(&b, "\n      %s\n      env %s", s.help, s.env)
		if s.yaml != "" {
			fmt.Fprintf(&b, " · yaml %s", s.yaml)
		}
		if s.def != "" {
			fmt.Fprintf(&b, " · default %s", s.def)
		}
		b.WriteString("\n")
	}
	b.WriteString(`
Routes and fallbacks (YAML only):
  routes:                  # answer an unmodified publisher at its old URL
    - path: /sync
      topic: match.updated
      fallback: http://calendar-sidecar:7700/v1/inbox/match.updated  # while Redis is down
      response:            # what the caller gets on acceptance (default: 202 receipt)
        status: 200        # 200..299
        body: '{"status":"success"}'
        content_type: application/json  # default: application/json if body is JSON, else text/plain
  fallbacks:               # the same for POST /v1/publish/{topic}
    match.updated: http://calendar-sidecar:7700/v1/inbox/match.updated

Subscriptions in YAML (all keys but topic and url optional):
  subscriptions:
    - topic: match.updated
      url: http://127.0.0.1:5003/manual-sync
      group: calendar          # default: service
      start: earliest          # earliest | latest (where a new group starts)
      concurrency: 1           # in-flight deliveries; 1 = strict stream order
      timeout: 30s             # per delivery attempt; a timed-out attempt may still run on at the webhook while the retry starts
      retry_for: 24h           # retriable failures retried this long, then dead-letter
      max_attempts: 0          # 0 = no count limit (retry_for decides)
      backoff: {initial: 500ms, max: 1m}
      body: /payload           # JSON Pointer: deliver only this member of a JSON event (default: the whole event)
      ordering: stream         # stream | key: with key, events of one partition key are never in flight together
      batch: {max_events: 100, max_wait: 50ms}  # deliver as CloudEvents batches (application/cloudevents-batch+json)

Partitioned topics (YAML; env SIDECAR_PARTITIONS=orders=8):
  topics:
    orders: {partitions: 8}    # streams sidecar:{orders}, sidecar:{orders#1}..#7; Partition-Key header picks one
`)
	return b.String()
}
