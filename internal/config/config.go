// Package config loads sidecar's settings from flags, environment variables
// and an optional YAML file (precedence: flag > env > file > default) and
// validates them, naming the setting at fault.
package config

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// Config is the validated configuration of one sidecar process.
type Config struct {
	Service  string
	Listen   string
	RedisURL string
	// RedisMinReplicas is how many replicas must have a publish before it is
	// acknowledged (WAIT); -1 = auto (1 when the master has an online replica).
	RedisMinReplicas  int
	Consumer          string
	SpoolDir          string
	SpoolMaxBytes     int64
	APIToken          string
	WebhookSecret     string
	LogLevel          string
	LogFormat         string
	MaxBody           int64
	Retention         Retention
	PublishTimeout    time.Duration
	ShutdownGrace     time.Duration
	ClaimTimeout      time.Duration
	IdempotencyWindow time.Duration
	Dev               bool
	DebugAddr         string // pprof listener; "" = off
	// RespListen is the Redis-protocol ingress address (PUBLISH, SUBSCRIBE
	// for unmodified Redis clients); "" = off.
	RespListen    string
	Subscriptions []Subscription
	Routes        []Route
	// Upstream receives, reverse-proxied, every request that matches no
	// route and no endpoint of the sidecar's; "" = none (404).
	Upstream string
	// Fallbacks maps a topic to a URL that /v1/publish events of that topic
	// are also POSTed to while Redis is unavailable.
	Fallbacks map[string]string
	// Partitions maps a topic to its partition count (streams sidecar:{t},
	// sidecar:{t#1}…); a topic not listed has one. Every sidecar of a
	// topic must agree on it.
	Partitions map[string]int

	// from names where each setting given came from (YAML key → "env
	// SIDECAR_…", "flag --…" or "config file …"), so an error names the
	// setting one way — its YAML key — and where to change it.
	from map[string]string
}

// Route makes the sidecar answer at an unmodified publisher's old URL:
// a POST to Path publishes its body to Topic.
type Route struct {
	Path     string
	Topic    string
	Fallback string // POSTed to while Redis is unavailable; "" = none
	// Response replaces the 202 receipt on acceptance; nil = the receipt.
	Response *RouteResponse
}

// RouteResponse is what a route's caller gets once its event is accepted
// (also when spooled): e.g. the 200 {"status":"success"} a legacy caller
// insists on. Refusals keep their status and the JSON error shape.
type RouteResponse struct {
	Status      int    // 200..299; default 200
	Body        string // sent as is
	ContentType string // default application/json when Body is JSON, else text/plain
}

// Retention bounds each topic's stream: approximate MAXLEN, or MINID by age.
type Retention struct {
	MaxLen   int64
	MaxAge   time.Duration
	Interval time.Duration // how often retention is applied
}

// Subscription delivers one topic to one webhook URL.
type Subscription struct {
	Topic       string
	URL         string
	Group       string
	Start       string // earliest | latest
	Concurrency int
	Timeout     time.Duration
	// RetryFor is how long retriable failures are retried, from the first
	// attempt; then the event is dead-lettered. The default horizon.
	RetryFor time.Duration
	// MaxAttempts caps attempts as well; 0 = no count limit (RetryFor decides).
	MaxAttempts int
	Backoff     Backoff
	// Body is an RFC 6901 JSON Pointer (e.g. /payload): the webhook gets
	// only that member of the JSON event; "" = the whole event data.
	Body string
	// Ordering is OrderingStream (default: with concurrency 1, strict
	// stream order) or OrderingKey (events of one partition key never in
	// flight together, in stream order; keys in parallel).
	Ordering string
	// Batch, when MaxEvents > 0, delivers events as CloudEvents batches.
	Batch Batch
}

// Batch is a subscription's batched delivery: up to MaxEvents per POST,
// waiting at most MaxWait after the first for more.
type Batch struct {
	MaxEvents int
	MaxWait   time.Duration
}

// Ordering values, and partition and batch bounds.
const (
	OrderingStream = "stream"
	OrderingKey    = "key"
	MaxPartitions  = 1024
	MaxBatchEvents = 1000
	MaxBatchWait   = 10 * time.Second
)

// Backoff is a subscription's retry backoff.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// Subscription defaults (DESIGN.md's YAML shape).
const (
	DefaultConcurrency    = 1
	DefaultTimeout        = 30 * time.Second
	DefaultRetryFor       = 24 * time.Hour
	DefaultMaxAttempts    = 0 // no count limit: a webhook down for hours dead-letters nothing
	DefaultBackoffInitial = 500 * time.Millisecond
	DefaultBackoffMax     = time.Minute
	StartEarliest         = "earliest"
	StartLatest           = "latest"
)

// Load builds the configuration from command-line args, the environment
// (getenv) and the YAML file named by --config / SIDECAR_CONFIG.
// It returns flag.ErrHelp when --help was asked for; usage has been written to out then.
func Load(args []string, getenv func(string) string, hostname string, out io.Writer) (*Config, error) {
	fs, vals := newFlagSet(out)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	setFlags := map[string]bool{}
	fs.Visit(func(f *flagT) { setFlags[f.Name] = true })

	c := defaults(hostname)
	explicit := map[string]bool{} // settings given anywhere but defaults

	// Layer 1: the YAML file.
	path := getenv("SIDECAR_CONFIG")
	if setFlags["config"] {
		path = *vals["config"]
	}
	c.from = map[string]string{}
	if path != "" {
		if err := applyFile(c, path, explicit); err != nil {
			return nil, err
		}
		for k := range explicit {
			c.from[k] = "config file " + path
		}
		for k, set := range map[string]bool{"subscriptions": len(c.Subscriptions) > 0, "routes": len(c.Routes) > 0,
			"fallbacks": len(c.Fallbacks) > 0, "topics": len(c.Partitions) > 0} {
			if set {
				c.from[k] = "config file " + path
			}
		}
	}
	// Layers 2 and 3: environment, then flags, setting by setting.
	for _, s := range settings {
		if s.key == "config" {
			continue
		}
		v, from, ok := "", "", false
		if s.env != "" {
			if ev, present := lookup(getenv, s.env); present {
				v, from, ok = ev, "env "+s.env, true
			}
		}
		if setFlags[s.key] {
			v, from, ok = *vals[s.key], "flag --"+s.key, true
		}
		if !ok {
			continue
		}
		if err := s.apply(c, v); err != nil {
			return nil, fmt.Errorf("%s (%s): %w", cmp.Or(s.yaml, s.key), from, err)
		}
		explicit[s.yaml] = true
		if s.yaml != "" {
			c.from[s.yaml] = from
		}
	}
	if c.Retention.MaxAge > 0 {
		// Both given: the higher layer (flag > env > file) wins, as for any
		// setting; in one layer they contradict each other.
		lenFrom, ageFrom := c.from["retention.max_len"], c.from["retention.max_age"]
		switch {
		case !explicit["retention.max_len"] || layer(ageFrom) > layer(lenFrom):
			c.Retention.MaxLen = 0
		case layer(lenFrom) > layer(ageFrom):
			c.Retention.MaxAge = 0
		default:
			return nil, fmt.Errorf("retention (%s): set either retention.max_len or retention.max_age, not both", ageFrom)
		}
	}
	for i := range c.Subscriptions {
		if c.Subscriptions[i].Group == "" {
			c.Subscriptions[i].Group = c.Service
			src := "defaults to service"
			if from := c.from["service"]; from != "" {
				src += ", " + from
			}
			c.from[fmt.Sprintf("subscriptions[%d].group", i)] = src
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func lookup(getenv func(string) string, key string) (string, bool) {
	v := getenv(key)
	return v, v != ""
}

func defaults(hostname string) *Config {
	return &Config{
		Service:           hostname,
		Listen:            "127.0.0.1:7700",
		RedisURL:          "redis://127.0.0.1:6379/0",
		RedisMinReplicas:  -1,
		Consumer:          hostname,
		SpoolDir:          "./data/spool",
		SpoolMaxBytes:     1 << 30,
		LogLevel:          "info",
		LogFormat:         "json",
		MaxBody:           1 << 20,
		Retention:         Retention{MaxLen: 100000, Interval: time.Second},
		PublishTimeout:    500 * time.Millisecond,
		ShutdownGrace:     10 * time.Second,
		ClaimTimeout:      30 * time.Second,
		IdempotencyWindow: 24 * time.Hour,
	}
}

// DefaultSubscription returns a subscription with every optional field at its default.
func DefaultSubscription(topic, url string) Subscription {
	return Subscription{
		Topic: topic, URL: url, Start: StartEarliest,
		Concurrency: DefaultConcurrency, Timeout: DefaultTimeout, RetryFor: DefaultRetryFor, MaxAttempts: DefaultMaxAttempts,
		Backoff: Backoff{Initial: DefaultBackoffInitial, Max: DefaultBackoffMax}, Ordering: OrderingStream,
	}
}

// ParsePartitions parses the env short form "topic=N[,topic=N…]".
func ParsePartitions(s string) (map[string]int, error) {
	out := map[string]int{}
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		topic, n, ok := strings.Cut(part, "=")
		v, err := strconv.Atoi(strings.TrimSpace(n))
		if !ok || err != nil {
			return nil, fmt.Errorf("entry %d, %q, is not topic=partitions", i+1, part)
		}
		out[strings.TrimSpace(topic)] = v
	}
	return out, nil
}

// ParseSubscribe parses the env short form "topic=url[,topic=url…]".
// Groups left empty default to the service name once all layers are applied.
func ParseSubscribe(s string) ([]Subscription, error) {
	var subs []Subscription
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		topic, u, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("entry %d, %s, is not topic=url", i+1, RedactURL(part))
		}
		subs = append(subs, DefaultSubscription(strings.TrimSpace(topic), strings.TrimSpace(u)))
	}
	return subs, nil
}

// Validate checks every setting and names the first one at fault.
func (c *Config) Validate() error {
	var errs []error
	bad := func(name, format string, a ...any) {
		if src := c.source(name); src != "" {
			name += " (" + src + ")"
		}
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, a...)))
	}
	if c.Service == "" {
		bad("service", "must not be empty")
	} else if err := event.ValidateTopic(c.Service); err != nil {
		bad("service", "%q must match the topic pattern (it names the consumer group)", c.Service)
	}
	if c.Consumer == "" {
		bad("consumer", "must not be empty")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port: %v", c.Listen, err)
	}
	if c.RespListen != "" {
		if _, _, err := net.SplitHostPort(c.RespListen); err != nil {
			bad("resp.listen", "%q is not host:port: %v", c.RespListen, err)
		}
	}
	if c.DebugAddr != "" {
		if _, _, err := net.SplitHostPort(c.DebugAddr); err != nil {
			bad("debug_addr", "%q is not host:port: %v", c.DebugAddr, err)
		}
	}
	if _, err := ParseRedisURL(c.RedisURL); err != nil {
		bad("redis.url", "%v", err)
	}
	if c.APIToken != "" && strings.IndexFunc(c.APIToken, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		// A client cannot send such a token (a Secret read from a file
		// often ends in a newline): no request would ever authenticate.
		bad("api_token", "contains whitespace or control characters (a trailing newline?); no client could send it")
	}
	if c.WebhookSecret != "" {
		if _, err := DecodeWebhookSecret(c.WebhookSecret); err != nil {
			bad("webhook_secret", "%v", err)
		}
	}
	if !oneOf(c.LogLevel, "trace", "debug", "info", "warn", "error") {
		bad("log.level", "%q is not one of trace, debug, info, warn, error", c.LogLevel)
	}
	if !oneOf(c.LogFormat, "json", "console") {
		bad("log.format", "%q is not json or console", c.LogFormat)
	}
	if c.RedisMinReplicas < -1 {
		bad("redis.min_replicas", "must be auto or a number of replicas (0 or more)")
	}
	if c.MaxBody <= 0 {
		bad("max_body", "must be positive")
	}
	if c.Retention.MaxLen < 0 || c.Retention.MaxAge < 0 {
		bad("retention", "must not be negative")
	}
	for name, d := range map[string]time.Duration{
		"publish_timeout": c.PublishTimeout, "shutdown_grace": c.ShutdownGrace,
		"claim_timeout": c.ClaimTimeout, "idempotency_window": c.IdempotencyWindow,
		"retention.interval": c.Retention.Interval,
	} {
		if d <= 0 {
			bad(name, "must be a positive duration")
		}
	}
	if c.ClaimTimeout > 0 && c.ClaimTimeout < time.Second {
		bad("claim_timeout", "%v is below 1s; in-flight entries would be stolen between keep-alives", c.ClaimTimeout)
	}
	if c.SpoolMaxBytes <= 0 {
		bad("spool.max_bytes", "must be positive")
	}
	paths := map[string]bool{}
	for i, r := range c.Routes {
		name := fmt.Sprintf("routes[%d]", i)
		switch {
		case !strings.HasPrefix(r.Path, "/"):
			bad(name+".path", "%q must start with /", r.Path)
		case r.Path == "/healthz" || r.Path == "/readyz" || r.Path == "/metrics" || strings.HasPrefix(r.Path, "/v1/"):
			bad(name+".path", "%q is one of the sidecar's own endpoints", r.Path)
		case paths[r.Path]:
			bad(name+".path", "%q is routed twice", r.Path)
		}
		paths[r.Path] = true
		if err := event.ValidateTopic(r.Topic); err != nil {
			bad(name+".topic", "%v", err)
		}
		if r.Fallback != "" && !isHTTPURL(r.Fallback) {
			bad(name+".fallback", "%s is not an absolute http(s) URL", RedactURL(r.Fallback))
		}
		if r.Response != nil {
			if err := r.Response.validate(); err != nil {
				bad(name+".response", "%v", err)
			}
		}
	}
	if c.Upstream != "" && !isHTTPURL(c.Upstream) {
		bad("upstream", "%s is not an absolute http(s) URL (e.g. http://calendar:5003)", RedactURL(c.Upstream))
	}
	for topic, u := range c.Fallbacks {
		if err := event.ValidateTopic(topic); err != nil {
			bad("fallbacks", "%v", err)
		}
		if !isHTTPURL(u) {
			bad("fallbacks."+topic, "%s is not an absolute http(s) URL", RedactURL(u))
		}
	}
	seen := map[string]bool{}
	for i, s := range c.Subscriptions {
		name := fmt.Sprintf("subscriptions[%d]", i)
		if err := event.ValidateTopic(s.Topic); err != nil {
			bad(name+".topic", "%v", err)
		}
		if !isHTTPURL(s.URL) {
			bad(name+".url", "%s is not an absolute http(s) URL", RedactURL(s.URL))
		}
		if err := event.ValidateTopic(s.Group); err != nil {
			bad(name+".group", "%q must match the topic pattern", s.Group)
		}
		if key := s.Topic + "\x00" + s.Group; seen[key] {
			bad(name, "topic %q with group %q is subscribed twice; give one a different group", s.Topic, s.Group)
		} else {
			seen[key] = true
		}
		if !oneOf(s.Start, StartEarliest, StartLatest) {
			bad(name+".start", "%q is not earliest or latest", s.Start)
		}
		if s.Concurrency < 1 || s.Concurrency > 1024 {
			bad(name+".concurrency", "%d is not in 1..1024", s.Concurrency)
		}
		if s.Timeout <= 0 {
			bad(name+".timeout", "must be a positive duration")
		}
		if s.MaxAttempts < 0 {
			bad(name+".max_attempts", "must be 0 (no count limit) or more")
		}
		if s.RetryFor <= 0 {
			bad(name+".retry_for", "must be a positive duration (default 24h)")
		}
		if s.Backoff.Initial <= 0 || s.Backoff.Max < s.Backoff.Initial {
			bad(name+".backoff", "need 0 < initial (%v) <= max (%v)", s.Backoff.Initial, s.Backoff.Max)
		}
		if err := validatePointer(s.Body); err != nil {
			bad(name+".body", "%v", err)
		}
		if !oneOf(s.Ordering, OrderingStream, OrderingKey) {
			bad(name+".ordering", "%q is not stream or key", s.Ordering)
		}
		if s.Batch.MaxEvents < 0 || s.Batch.MaxEvents > MaxBatchEvents {
			bad(name+".batch.max_events", "%d is not in 1..%d", s.Batch.MaxEvents, MaxBatchEvents)
		}
		if s.Batch.MaxWait < 0 || s.Batch.MaxWait > MaxBatchWait {
			bad(name+".batch.max_wait", "%v is not in 0..%v", s.Batch.MaxWait, MaxBatchWait)
		}
		if s.Batch.MaxEvents > 0 && s.Body != "" {
			bad(name+".batch", "cannot be combined with body (a batch carries whole CloudEvents)")
		}
	}
	for topic, n := range c.Partitions {
		if err := event.ValidateTopic(topic); err != nil {
			bad("topics", "%v", err)
		}
		if n < 1 || n > MaxPartitions {
			bad("topics."+topic+".partitions", "%d is not in 1..%d", n, MaxPartitions)
		}
	}
	return errors.Join(errs...)
}

// layer ranks where a setting came from: flag > env > file > default.
func layer(from string) int {
	switch {
	case strings.HasPrefix(from, "flag "):
		return 3
	case strings.HasPrefix(from, "env "):
		return 2
	case strings.HasPrefix(from, "config file "):
		return 1
	}
	return 0
}

// source is where the setting name (a YAML path such as
// subscriptions[0].url) or the nearest setting containing it came from;
// "" for a default or when unknown.
func (c *Config) source(name string) string {
	for name != "" {
		if src, ok := c.from[name]; ok {
			return src
		}
		i := strings.LastIndexAny(name, ".[")
		if i < 0 {
			return ""
		}
		name = name[:i]
	}
	return ""
}

// UpstreamURL is Upstream parsed (Validate has checked it), or nil when unset.
func (c *Config) UpstreamURL() *url.URL {
	if c.Upstream == "" {
		return nil
	}
	u, err := url.Parse(c.Upstream)
	if err != nil {
		return nil
	}
	return u
}

// validatePointer checks RFC 6901 syntax: "" or "/"-separated tokens in
// which "~" is only followed by "0" (for ~) or "1" (for /).
func validatePointer(p string) error {
	if p == "" {
		return nil
	}
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%q is not a JSON Pointer: it must start with / (e.g. /payload), or be empty for the whole event", p)
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '~' && (i+1 == len(p) || (p[i+1] != '0' && p[i+1] != '1')) {
			return fmt.Errorf("%q is not a JSON Pointer: ~ must be followed by 0 (for ~) or 1 (for /)", p)
		}
	}
	return nil
}

func (r *RouteResponse) validate() error {
	if r.Status < 200 || r.Status > 299 {
		return fmt.Errorf("status %d is not in 200..299 (it answers an accepted event; refusals keep their own status)", r.Status)
	}
	if (r.Status == 204 || r.Status == 205) && r.Body != "" {
		return fmt.Errorf("status %d has no body, but body is set", r.Status)
	}
	if isJSONType(r.ContentType) && r.Body != "" && !json.Valid([]byte(r.Body)) {
		return fmt.Errorf("body %q is not valid JSON, but content_type is %s", r.Body, r.ContentType)
	}
	return nil
}

func isJSONType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

func isHTTPURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func oneOf(v string, options ...string) bool {
	for _, o := range options {
		if v == o {
			return true
		}
	}
	return false
}

// MinWebhookSecretBytes is the shortest webhook secret key accepted
// (DESIGN: shorter secrets are refused at start). The key signs every
// delivery and authenticates peers' fallbacks into the inbox.
const MinWebhookSecretBytes = 24

// DecodeWebhookSecret returns the HMAC key of a Standard Webhooks secret "whsec_<base64>".
func DecodeWebhookSecret(s string) ([]byte, error) {
	raw, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, errors.New("must start with whsec_ (Standard Webhooks format)")
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("the part after whsec_ is not base64: %v", err)
	}
	if len(key) < MinWebhookSecretBytes {
		return nil, fmt.Errorf("the key after whsec_ is %d bytes; secrets shorter than %d bytes are refused: use 24–64 random bytes, e.g. whsec_$(head -c 32 /dev/urandom | base64)",
			len(key), MinWebhookSecretBytes)
	}
	return key, nil
}

// Hostname is os.Hostname with a fallback, for the service and consumer defaults.
func Hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "sidecar"
	}
	return h
}
