package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/fogis-sidecar/sidecar/internal/config"
)

const configSynopsis = "sidecar config validate|print [settings…]"

// configCmd checks or shows the configuration the given settings (flags,
// environment, --config file) make, offline: nothing is contacted.
func configCmd(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "validate" && args[0] != "print") {
		fmt.Fprintln(stderr, "usage:", configSynopsis)
		return exitError{code: 2}
	}
	cfg, err := config.Load(args[1:], getenv, config.Hostname(), stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if args[0] == "validate" {
		fmt.Fprintf(stdout, "config OK: service %s, listen %s, %d subscription(s), %d route(s), %d partitioned topic(s)\n",
			cfg.Service, cfg.Listen, len(cfg.Subscriptions), len(cfg.Routes), len(cfg.Partitions))
		return nil
	}
	out, err := yaml.Marshal(effective(cfg))
	if err != nil {
		return err
	}
	_, err = stdout.Write(cfg.Redactor().Bytes(out))
	return err
}

// effective is cfg in the YAML file's shape, every setting present (its
// default when not set) and every secret replaced.
func effective(c *config.Config) map[string]any {
	secret := func(s string) string {
		if s == "" {
			return ""
		}
		return "<redacted>"
	}
	minReplicas := "auto"
	if c.RedisMinReplicas >= 0 {
		minReplicas = strconv.Itoa(c.RedisMinReplicas)
	}
	m := map[string]any{
		"service": c.Service, "listen": c.Listen, "consumer": c.Consumer,
		"redis":              map[string]any{"url": config.RedactURL(c.RedisURL), "min_replicas": minReplicas},
		"spool":              map[string]any{"dir": c.SpoolDir, "max_bytes": c.SpoolMaxBytes},
		"api_token":          secret(c.APIToken),
		"webhook_secret":     secret(c.WebhookSecret),
		"log":                map[string]any{"level": c.LogLevel, "format": c.LogFormat},
		"max_body":           c.MaxBody,
		"retention":          retention(c.Retention),
		"publish_timeout":    c.PublishTimeout.String(),
		"shutdown_grace":     c.ShutdownGrace.String(),
		"claim_timeout":      c.ClaimTimeout.String(),
		"idempotency_window": c.IdempotencyWindow.String(),
		"dev":                c.Dev,
		"debug_addr":         c.DebugAddr,
		"resp":               map[string]any{"listen": c.RespListen},
		"upstream":           config.RedactURL(c.Upstream),
	}
	if c.Upstream == "" {
		m["upstream"] = ""
	}
	topics := map[string]any{}
	for t, n := range c.Partitions {
		topics[t] = map[string]any{"partitions": n}
	}
	m["topics"] = topics
	fallbacks := map[string]string{}
	for t, u := range c.Fallbacks {
		fallbacks[t] = config.RedactURL(u)
	}
	m["fallbacks"] = fallbacks
	var routes []any
	for _, r := range c.Routes {
		rt := map[string]any{"path": r.Path, "topic": r.Topic}
		if r.Fallback != "" {
			rt["fallback"] = config.RedactURL(r.Fallback)
		}
		if r.Response != nil {
			rt["response"] = map[string]any{"status": r.Response.Status, "body": r.Response.Body, "content_type": r.Response.ContentType}
		}
		routes = append(routes, rt)
	}
	m["routes"] = routes
	var subs []any
	for _, s := range c.Subscriptions {
		sub := map[string]any{
			"topic": s.Topic, "url": config.RedactURL(s.URL), "group": s.Group, "start": s.Start,
			"concurrency": s.Concurrency, "ordering": s.Ordering, "timeout": s.Timeout.String(),
			"retry_for": s.RetryFor.String(), "max_attempts": s.MaxAttempts,
			"backoff": map[string]any{"initial": s.Backoff.Initial.String(), "max": s.Backoff.Max.String()},
		}
		if s.Body != "" {
			sub["body"] = s.Body
		}
		if s.Batch.MaxEvents > 0 {
			sub["batch"] = map[string]any{"max_events": s.Batch.MaxEvents, "max_wait": s.Batch.MaxWait.String()}
		}
		subs = append(subs, sub)
	}
	m["subscriptions"] = subs
	return m
}

// retention is the one retention limit in force (max_age replaces
// max_len: printing both would not load again) and the interval.
func retention(r config.Retention) map[string]any {
	m := map[string]any{"interval": r.Interval.String()}
	if r.MaxAge > 0 {
		m["max_age"] = r.MaxAge.String()
	} else {
		m["max_len"] = r.MaxLen
	}
	return m
}
