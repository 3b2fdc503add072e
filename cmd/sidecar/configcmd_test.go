package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/config"
)

func TestVersionFlagAndConfigCommands(t *testing.T) {
	ctx := context.Background()
	noEnv := func(string) string { return "" }
	for _, arg := range []string{"version", "--version", "-version"} {
		var out, errOut bytes.Buffer
		if err := run(ctx, []string{arg}, noEnv, &out, &errOut); err != nil || out.String() != "sidecar "+version+"\n" {
			t.Fatalf("%s: %q %v", arg, out.String(), err)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	const yaml = `service: calendar
api_token: tok-abcdefghijklmnopqrstuvwxyz
redis: {url: "redis://:s3cretpassw0rd@redis:6379/0"}
topics: {orders: {partitions: 8}}
subscriptions:
  - topic: orders
    url: http://127.0.0.1:5003/hook?token=abc123secret
    ordering: key
    batch: {max_events: 50}
`
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"config", "validate", "--config", file}, noEnv, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "config OK") {
		t.Fatalf("validate: %q %v", out.String(), err)
	}
	out.Reset()
	if err := run(ctx, []string{"config", "print", "--config", file}, noEnv, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	printed := out.String()
	for _, secret := range []string{"s3cretpassw0rd", "tok-abcdefghijklmnopqrstuvwxyz", "abc123secret"} {
		if strings.Contains(printed, secret) {
			t.Fatalf("config print shows the secret %q:\n%s", secret, printed)
		}
	}
	for _, want := range []string{"partitions: 8", "ordering: key", "max_events: 50", "api_token: <redacted>", "min_replicas: auto"} {
		if !strings.Contains(printed, want) {
			t.Fatalf("config print lacks %q:\n%s", want, printed)
		}
	}
	// What print shows is itself a valid configuration file.
	again := filepath.Join(dir, "printed.yaml")
	if err := os.WriteFile(again, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(ctx, []string{"config", "validate", "--config", again}, noEnv, &out, &errOut); err != nil {
		t.Fatalf("printed config does not validate: %v", err)
	}
	// Offline: a bad setting is named, nothing contacted; no subcommand is a usage error.
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("subscriptions: [{topic: a, url: http://x/, ordering: random}]\n"), 0o600)
	if err := run(ctx, []string{"config", "validate", "--config", bad}, noEnv, &out, &errOut); err == nil || !strings.Contains(err.Error(), "ordering") {
		t.Fatalf("bad config: %v", err)
	}
	var exit exitError
	if err := run(ctx, []string{"config"}, noEnv, &out, &errOut); !errors.As(err, &exit) || exit.code != 2 {
		t.Fatalf("bare config: %v", err)
	}
}

// Console logs to a file or pipe carry no ANSI escape codes.
func TestConsoleLogsWithoutColourWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	cfg := &config.Config{LogLevel: "info", LogFormat: "console", Service: "s"}
	logger, err := newLogger(cfg, &buf)
	if err != nil {
		t.Fatal(err)
	}
	logger.Warn().Str("topic", "t").Msg("hello")
	if strings.Contains(buf.String(), "\x1b[") || !strings.Contains(buf.String(), "hello") {
		t.Fatalf("console log to a buffer: %q", buf.String())
	}
}

// Durations in the logs carry their unit.
func TestLogDurationsCarryTheirUnit(t *testing.T) {
	var buf bytes.Buffer
	logger, err := newLogger(&config.Config{LogLevel: "info", LogFormat: "json", Service: "s"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	logger.Info().Dur("wait", 1500*time.Millisecond).Msg("retrying")
	if !strings.Contains(buf.String(), `"wait":"1.5s"`) {
		t.Fatalf("log line %s", buf.String())
	}
}
