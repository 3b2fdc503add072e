package config

import (
	"io"
	"strings"
	"testing"
)

// An error names the setting and the one place its value came
// from; it must not point at a place the value did not come from.
func TestErrorsNameOnlyTheRealSource(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		env     map[string]string
		notWant string // a source the value did not come from
	}{
		{name: "empty service in the file", file: "service: \"\"\n", notWant: "SIDECAR_SERVICE"},
		{name: "empty consumer in the file", file: "consumer: \"\"\n", notWant: "SIDECAR_CONSUMER"},
		{name: "bad webhook_secret in the file", file: "webhook_secret: nope\n", notWant: "SIDECAR_WEBHOOK_SECRET"},
		// The group was never set: it defaults to the service (env), yet
		// the error blames the file's subscriptions.
		{name: "group defaulted from a bad service", file: "subscriptions: [{topic: t, url: 'http://x/'}]\n",
			env: map[string]string{"SIDECAR_SERVICE": "my service"}, notWant: "subscriptions[0].group (config file"},
	} {
		env := map[string]string{"SIDECAR_CONFIG": writeFile(t, tc.file)}
		for k, v := range tc.env {
			env[k] = v
		}
		_, err := Load(nil, envOf(env), "h", io.Discard)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if strings.Contains(err.Error(), tc.notWant) {
			t.Errorf("%s: error names %q, where the value did not come from: %v", tc.name, tc.notWant, err)
		}
	}
}

// max_len and max_age: the higher layer wins, as for any setting; in one
// layer both are a contradiction.
func TestRetentionLimitsHigherLayerWins(t *testing.T) {
	file := writeFile(t, "retention: {max_len: 100000}\n")
	c, err := Load(nil, envOf(map[string]string{"SIDECAR_CONFIG": file, "SIDECAR_RETENTION_MAX_AGE": "168h"}), "h", io.Discard)
	if err != nil || c.Retention.MaxLen != 0 || c.Retention.MaxAge.Hours() != 168 {
		t.Fatalf("env max_age over file max_len: %+v %v", c, err)
	}
	c, err = Load([]string{"--retention-max-len", "50"}, envOf(map[string]string{"SIDECAR_RETENTION_MAX_AGE": "1h"}), "h", io.Discard)
	if err != nil || c.Retention.MaxLen != 50 || c.Retention.MaxAge != 0 {
		t.Fatalf("flag max_len over env max_age: %+v %v", c.Retention, err)
	}
	_, err = Load(nil, envOf(map[string]string{"SIDECAR_RETENTION_MAX_AGE": "1h", "SIDECAR_RETENTION_MAX_LEN": "5"}), "h", io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("both in the environment: %v", err)
	}
}

// A token no client can send is refused at start, not discovered as 401s.
func TestAPITokenWithWhitespaceIsRefused(t *testing.T) {
	_, err := Load(nil, envOf(map[string]string{"SIDECAR_API_TOKEN": "abcdefghijklmnopqrstuvwxyz0123\n"}), "h", io.Discard)
	if err == nil || !strings.Contains(err.Error(), "api_token") {
		t.Fatalf("token with a newline: %v", err)
	}
}
