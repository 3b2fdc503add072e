package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	deploycheck "github.com/fogis-sidecar/sidecar/internal/check" // named apart from the check command below
	"github.com/fogis-sidecar/sidecar/internal/config"
)

// exitError asks main for a specific exit code, with nothing more to print.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// check runs `sidecar check [--json] [settings…]`: the deployment
// validation report. Exit 0 only when READY (1 FAILED, 2 DEGRADED).
func check(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	asJSON := false
	var rest []string
	for _, a := range args {
		if a == "--json" || a == "-json" {
			asJSON = true
			continue
		}
		rest = append(rest, a)
	}
	cfg, err := config.Load(rest, getenv, config.Hostname(), stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	redis.SetLogger(redisLogger{zerolog.Nop()}) // the report says what failed
	uo, err := config.ParseRedisURL(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("redis.url: %w", err)
	}
	rdb := redis.NewUniversalClient(uo)
	defer rdb.Close()
	in := deploycheck.Input{
		RedisURL: config.RedactURL(cfg.RedisURL), Redis: rdb, MinReplicas: cfg.RedisMinReplicas,
		SpoolDir: cfg.SpoolDir, SpoolMaxBytes: cfg.SpoolMaxBytes,
		HTTP:   &http.Client{Timeout: 3 * time.Second},
		Redact: cfg.Redactor().String,
	}
	if uo.MasterName != "" {
		in.Sentinels = &deploycheck.Sentinels{
			MasterName: uo.MasterName, Addrs: uo.Addrs, TLSConfig: uo.TLSConfig,
			Username: uo.SentinelUsername, Password: uo.SentinelPassword,
		}
	}
	for _, s := range cfg.Subscriptions {
		in.Webhooks = append(in.Webhooks, deploycheck.Webhook{Topic: s.Topic, Group: s.Group, URL: s.URL})
	}
	rep := deploycheck.Run(ctx, in)
	if asJSON {
		if err := rep.WriteJSON(stdout); err != nil {
			return err
		}
	} else {
		rep.WriteText(stdout)
	}
	switch rep.Overall {
	case "READY":
		return nil
	case "DEGRADED":
		return exitError{2}
	}
	return exitError{1}
}

// probe runs `sidecar health [settings…]`: GET /healthz on the configured
// listen address, for a container HEALTHCHECK (distroless images have no curl).
func probe(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Load(args, getenv, config.Hostname(), stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	host, port, _ := net.SplitHostPort(cfg.Listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: /healthz answered %d", resp.StatusCode)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
