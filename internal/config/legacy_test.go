package config

import (
	"strings"
	"testing"
	"time"
)

// TestLegacySettings: the keys that let unmodified FOGIS services talk
// through the sidecar: a subscription's body pointer, a route's response
// and the upstream.
func TestLegacySettings(t *testing.T) {
	file := writeFile(t, `
service: calendar
upstream: http://calendar:5003
routes:
  - path: /sync
    topic: fogis.sync
    response: {status: 200, body: '{"status":"success"}', content_type: application/json}
  - path: /sync-json
    topic: fogis.sync
    response: {body: '{"status":"success"}'}
  - path: /sync-text
    topic: fogis.sync
    response: {status: 201, body: 'ok'}
  - path: /sync-empty
    topic: fogis.sync
    response: {status: 204}
  - path: /plain
    topic: fogis.sync
subscriptions:
  - topic: match.updated
    url: http://127.0.0.1:5003/manual-sync
    body: /payload
  - topic: match.updated
    url: http://127.0.0.1:5003/sync
    group: legacy
`)
	var out strings.Builder
	c, err := Load([]string{"--config", file}, envOf(nil), "h", &out)
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstream != "http://calendar:5003" || c.UpstreamURL() == nil || c.UpstreamURL().Host != "calendar:5003" {
		t.Fatalf("upstream: got %q %v", c.Upstream, c.UpstreamURL())
	}
	for i, want := range []*RouteResponse{
		{Status: 200, Body: `{"status":"success"}`, ContentType: "application/json"},
		{Status: 200, Body: `{"status":"success"}`, ContentType: "application/json"}, // defaults: 200, JSON body → JSON
		{Status: 201, Body: "ok", ContentType: "text/plain; charset=utf-8"},
		{Status: 204},
		nil,
	} {
		got := c.Routes[i].Response
		if (got == nil) != (want == nil) || (got != nil && *got != *want) {
			t.Errorf("routes[%d].response: got %+v, want %+v", i, got, want)
		}
	}
	if c.Subscriptions[0].Body != "/payload" || c.Subscriptions[1].Body != "" {
		t.Fatalf("body: got %q, %q", c.Subscriptions[0].Body, c.Subscriptions[1].Body)
	}
	for _, s := range c.Subscriptions {
		if s.Timeout != 30*time.Second {
			t.Fatalf("timeout: got %v, want the default 30s", s.Timeout)
		}
	}
}

func TestDefaultTimeoutIs30s(t *testing.T) {
	var out strings.Builder
	c, err := Load(nil, envOf(map[string]string{"SIDECAR_SUBSCRIBE": "t=http://x/"}), "h", &out)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Subscriptions[0].Timeout; got != 30*time.Second {
		t.Fatalf("timeout: got %v, want 30s (DESIGN.md)", got)
	}
	if !strings.Contains(Usage(), "timeout: 30s") {
		t.Fatal("--help does not show the 30s default timeout")
	}
}

func TestUpstreamFromEnvAndFlag(t *testing.T) {
	var out strings.Builder
	c, err := Load(nil, envOf(map[string]string{"SIDECAR_UPSTREAM": "http://calendar:5003"}), "h", &out)
	if err != nil || c.Upstream != "http://calendar:5003" {
		t.Fatalf("SIDECAR_UPSTREAM: got %q, %v", c.Upstream, err)
	}
	c, err = Load([]string{"--upstream", "https://cal.example:8443/base"}, envOf(map[string]string{"SIDECAR_UPSTREAM": "http://x"}), "h", &out)
	if err != nil || c.Upstream != "https://cal.example:8443/base" {
		t.Fatalf("--upstream: got %q, %v", c.Upstream, err)
	}
	c, _ = Load(nil, envOf(nil), "h", &out)
	if c.UpstreamURL() != nil {
		t.Fatalf("no upstream: got %v, want nil", c.UpstreamURL())
	}
}

func TestInvalidLegacySettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		file string
		want string
	}{
		{name: "body without slash", file: "subscriptions: [{topic: t, url: 'http://x/', body: payload}]\n", want: "subscriptions[0].body"},
		{name: "body bad escape", file: "subscriptions: [{topic: t, url: 'http://x/', body: '/a~2'}]\n", want: "subscriptions[0].body"},
		{name: "body trailing tilde", file: "subscriptions: [{topic: t, url: 'http://x/', body: '/a~'}]\n", want: "subscriptions[0].body"},
		{name: "response 302", file: "routes: [{path: /sync, topic: t, response: {status: 302}}]\n", want: "routes[0].response"},
		{name: "response 500", file: "routes: [{path: /sync, topic: t, response: {status: 500}}]\n", want: "routes[0].response (config file |): status 500 is not in 200..299"},
		{name: "response 199", file: "routes: [{path: /sync, topic: t, response: {status: 199}}]\n", want: "routes[0].response"},
		{name: "response 204 with body", file: "routes: [{path: /sync, topic: t, response: {status: 204, body: x}}]\n", want: "routes[0].response"},
		{name: "response JSON type, bad JSON", file: "routes: [{path: /sync, topic: t, response: {body: '{status: ok}', content_type: application/json}}]\n", want: "routes[0].response"},
		{name: "response unknown key", file: "routes: [{path: /sync, topic: t, response: {code: 200}}]\n", want: "code"},
		{name: "upstream not a URL", env: map[string]string{"SIDECAR_UPSTREAM": "calendar:5003"}, want: "upstream"},
		{name: "upstream yaml not http", file: "upstream: ftp://calendar/\n", want: "upstream"},
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
			_, err := Load(nil, envOf(env), "h", &out)
			// want: the parts (separated by |) the error must contain.
			for _, part := range strings.Split(tc.want, "|") {
				if err == nil || !strings.Contains(err.Error(), part) {
					t.Fatalf("got error %v, want one naming %q", err, tc.want)
				}
			}
		})
	}
}
