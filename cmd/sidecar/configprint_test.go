package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// What print shows loads again — secrets aside: they are printed as
// <redacted>, to be filled in — and print hides every secret.
func TestConfigPrintRoundTrip(t *testing.T) {
	ctx := context.Background()
	noEnv := func(string) string { return "" }
	for name, yaml := range map[string]string{
		"retention.max_age": "service: calendar\nretention: {max_age: 168h}\n",
		"retention.max_len": "service: calendar\nretention: {max_len: 5000}\n",
	} {
		dir := t.TempDir()
		file := filepath.Join(dir, "c.yaml")
		_ = os.WriteFile(file, []byte(yaml), 0o600)
		var out, errOut bytes.Buffer
		if err := run(ctx, []string{"config", "validate", "--config", file}, noEnv, &out, &errOut); err != nil {
			t.Fatalf("%s: the input does not validate: %v", name, err)
		}
		out.Reset()
		if err := run(ctx, []string{"config", "print", "--config", file}, noEnv, &out, &errOut); err != nil {
			t.Fatal(err)
		}
		again := filepath.Join(dir, "printed.yaml")
		_ = os.WriteFile(again, out.Bytes(), 0o600)
		var out2 bytes.Buffer
		if err := run(ctx, []string{"config", "validate", "--config", again}, noEnv, &out2, &errOut); err != nil {
			t.Errorf("%s: printed config does not validate again: %v", name, err)
		}
	}
}

func TestConfigPrintHidesWebhookURLSecrets(t *testing.T) {
	ctx := context.Background()
	for _, u := range []string{
		"https://fn.azurewebsites.net/api/hook?code=AzFnKeyAbc123SECRET", // Azure Functions key
		"https://hooks.slack.com/services/T000/B000/SlackPathSECRETxyz",  // Slack incoming webhook
		"https://discord.com/api/webhooks/123/DiscordPathSECRETxyz",      // Discord
	} {
		env := map[string]string{"SIDECAR_SUBSCRIBE": "t=" + u}
		var out, errOut bytes.Buffer
		if err := run(ctx, []string{"config", "print"}, func(k string) string { return env[k] }, &out, &errOut); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "SECRET") {
			t.Errorf("config print shows a credential of %s", u)
		}
	}
}

func TestConfigPrintShowsASecretAsRedacted(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(file, []byte("service: calendar\nwebhook_secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"), 0o600)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"config", "print", "--config", file}, func(string) string { return "" }, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "webhook_secret: <redacted>") || strings.Contains(out.String(), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") {
		t.Fatalf("print: %s", out.String())
	}
}
