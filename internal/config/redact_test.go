package config

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// pw is the password the redaction tests hide; no other text in them contains it.
const pw = "Pa55-w0rd.redact"

func TestRedactURL(t *testing.T) {
	const unparseable = "<unparseable>"
	for _, tc := range []struct{ name, in, want string }{
		{"userinfo password", "redis://:" + pw + "@h:6379/0", "redis://:xxxxx@h:6379/0"},
		{"user and password", "redis://alice:" + pw + "@h:6379/0", "redis://alice:xxxxx@h:6379/0"},
		{"tls", "rediss://alice:" + pw + "@h:6380/2", "rediss://alice:xxxxx@h:6380/2"},
		{"password parameter", "redis://h:26379?master_name=m&password=" + pw + "&addr=h2:26379",
			"redis://h:26379?master_name=m&password=xxxxx&addr=h2:26379"},
		{"sentinel password parameter", "redis://:" + pw + "@h:26379?master_name=m&sentinel_password=" + pw + "&sentinel_username=sen",
			"redis://:xxxxx@h:26379?master_name=m&sentinel_password=xxxxx&sentinel_username=sen"},
		{"cluster", "redis+cluster://:" + pw + "@n1:7000?addr=n2:7000", "redis+cluster://:xxxxx@n1:7000?addr=n2:7000"},
		{"webhook userinfo", "http://hook:" + pw + "@127.0.0.1:5003/hook", "http://hook:xxxxx@127.0.0.1:5003/hook"},
		{"webhook token parameters", "https://example.com/hook?api_token=" + pw + "&x=1&Client_Secret=" + pw + "&apikey=" + pw,
			"https://example.com/hook?api_token=xxxxx&x=1&Client_Secret=xxxxx&apikey=xxxxx"},
		{"lone username is a token", "https://" + pw + "@hooks.example.com/in", "https://xxxxx@hooks.example.com/in"},
		{"a Redis user name is not", "redis://alice@h:6379/0", "redis://alice@h:6379/0"},
		{"fragment", "https://example.com/cb#access_token=" + pw, "https://example.com/cb#xxxxx"},
		{"semicolon separator", "https://example.com/hook?a=1;token=" + pw + "&b=2", "https://example.com/hook?a=1;token=xxxxx&b=2"},
		{"percent-encoded password", "redis://:" + strings.ReplaceAll(pw, "-", "%2D") + "@h:1/0", "redis://:xxxxx@h:1/0"},
		{"nothing to hide", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"unparseable: bad port", "redis://:" + pw + "@h:port/0", unparseable},
		{"unparseable: bad escape", "redis://:" + pw + "%zz@h:1/0", unparseable},
		{"unparseable: control character", "http://u:" + pw + "@h/\x7f", unparseable},
		{"unparseable: no scheme", "localhost:" + pw, unparseable},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == unparseable {
				tc.want = fmt.Sprintf("<unparseable URL, %d bytes>", len(tc.in))
			}
			got := RedactURL(tc.in)
			if got != tc.want {
				t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if strings.Contains(got, pw) || strings.Contains(got, "Pa55") {
				t.Errorf("RedactURL(%q) = %q: the password is still there", tc.in, got)
			}
		})
	}
}

// TestRedisURLErrorsHideThePassword: every refusal of a Redis URL names
// the setting and says why, without the password (go-redis and net/url
// both quote the input in their errors).
func TestRedisURLErrorsHideThePassword(t *testing.T) {
	for _, tc := range []struct{ name, url, want string }{
		{"bad port", "redis://:" + pw + "@h:port/0", "not a URL"},
		{"password as the port", "redis://" + pw + "@h:" + pw + "/0", "not a URL"},
		{"bad escape", "redis://:" + pw + "%zz@h:1/0", "not a URL"},
		{"unknown scheme", "http://:" + pw + "@h:1/0", "scheme"},
		{"unknown option", "redis://h:1/0?bogus=1&password=" + pw, "unexpected option"},
		{"bad db", "redis://:" + pw + "@h:1/zero", "database"},
		{"bad sentinel db", "redis://h:26379/zero?master_name=m&password=" + pw + "&sentinel_password=" + pw, "database"},
		{"bad sentinel addr", "redis://:" + pw + "@h:26379?master_name=m&addr=nohost", "addr"},
		{"bad cluster option", "redis+cluster://:" + pw + "@h:7000?dial_timeout=soon", "dial_timeout"},
		{"password twice", "redis://:" + pw + "@h:1/0?password=" + pw, "password"},
		{"sentinel password off Sentinel", "redis://h:1/0?sentinel_password=" + pw, "sentinel_password"},
		{"userinfo unused", "redis://:" + pw + "@h:26379?master_name=m&password=" + pw + "&sentinel_password=" + pw, "unused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRedisURL(tc.url)
			if err == nil {
				t.Fatalf("ParseRedisURL(%q): got nil error, want one", tc.url)
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "Pa55") {
				t.Errorf("error %q contains the password", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			var out strings.Builder
			_, lerr := Load(nil, envOf(map[string]string{"REDIS_URL": tc.url}), "h", &out)
			if lerr == nil || !strings.Contains(lerr.Error(), "redis.url") || strings.Contains(lerr.Error(), pw) {
				t.Errorf("Load: got %v, want an error naming redis.url without the password", lerr)
			}
		})
	}
}

// TestRedisCredentials: which password goes to the data nodes (master and
// replicas) and which to the sentinels, for every documented form.
func TestRedisCredentials(t *testing.T) {
	type creds struct{ user, pass, sentUser, sentPass string }
	for _, tc := range []struct {
		name string
		url  string
		want creds
	}{
		{"standalone userinfo", "redis://alice:pw1@h:6379/0", creds{user: "alice", pass: "pw1"}},
		{"standalone password parameter", "redis://h:6379/0?password=pw1&username=alice", creds{user: "alice", pass: "pw1"}},
		{"cluster userinfo", "redis+cluster://:pw1@n1:7000?addr=n2:7000", creds{pass: "pw1"}},
		{"cluster password parameter", "redis+cluster://n1:7000?addr=n2:7000&password=pw1", creds{pass: "pw1"}},
		{"sentinel userinfo only: every node", "redis://:pw1@s1:26379?master_name=m",
			creds{pass: "pw1", sentPass: "pw1"}},
		{"sentinel userinfo with user: every node", "redis://alice:pw1@s1:26379?master_name=m",
			creds{user: "alice", pass: "pw1", sentUser: "alice", sentPass: "pw1"}},
		{"sentinel userinfo and sentinel_password", "redis://:pw1@s1:26379?master_name=m&sentinel_password=spw",
			creds{pass: "pw1", sentPass: "spw"}},
		{"sentinel userinfo and sentinel user", "redis://alice:pw1@s1:26379?master_name=m&sentinel_username=sen&sentinel_password=spw",
			creds{user: "alice", pass: "pw1", sentUser: "sen", sentPass: "spw"}},
		{"sentinel password parameter only: data nodes", "redis://s1:26379?master_name=m&password=pw1",
			creds{pass: "pw1"}},
		{"sentinel_password only: sentinels", "redis://s1:26379?master_name=m&sentinel_password=spw",
			creds{sentPass: "spw"}},
		{"go-redis form: userinfo for sentinels, password= for data", "redis://:spw@s1:26379?master_name=m&password=pw1",
			creds{pass: "pw1", sentPass: "spw"}},
		{"password= and sentinel_password=", "redis://s1:26379?master_name=m&password=pw1&sentinel_password=spw&addr=s2:26379",
			creds{pass: "pw1", sentPass: "spw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseRedisURL(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			got := creds{o.Username, o.Password, o.SentinelUsername, o.SentinelPassword}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	o, err := ParseRedisURL("redis://s1:26379?master_name=m&password=pw1&sentinel_password=spw&addr=s2:26379&addr=s3:26379&db=2")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.Addrs, ",") != "s1:26379,s2:26379,s3:26379" || o.MasterName != "m" || o.DB != 2 {
		t.Fatalf("the other options: got addrs %v, master %q, db %d", o.Addrs, o.MasterName, o.DB)
	}
}

// TestWebhookSecretMinimumLength: DESIGN "Webhook secrets shorter than 24
// bytes are refused at start".
func TestWebhookSecretMinimumLength(t *testing.T) {
	secretOf := func(n int) string {
		return "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", n)))
	}
	for _, tc := range []struct {
		n  int
		ok bool
	}{{16, false}, {23, false}, {24, true}, {32, true}, {64, true}} {
		var out strings.Builder
		_, err := Load(nil, envOf(map[string]string{"SIDECAR_WEBHOOK_SECRET": secretOf(tc.n)}), "h", &out)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%d-byte secret: got %v, want it accepted", tc.n, err)
		case !tc.ok && err == nil:
			t.Errorf("%d-byte secret: accepted, want it refused", tc.n)
		case !tc.ok:
			for _, want := range []string{"webhook_secret", "24 bytes", "SIDECAR_WEBHOOK_SECRET"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%d-byte secret: error %q does not say %q", tc.n, err, want)
				}
			}
			if strings.Contains(err.Error(), secretOf(tc.n)[6:]) {
				t.Errorf("%d-byte secret: error %q contains the secret", tc.n, err)
			}
		}
	}
}

// TestConfigErrorsHideURLPasswords: a refused webhook, fallback or upstream
// URL is named without its credentials.
func TestConfigErrorsHideURLPasswords(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		file string
		want string
	}{
		{name: "subscription url", env: map[string]string{"SIDECAR_SUBSCRIBE": "t=ftp://u:" + pw + "@h/x"}, want: "subscriptions[0].url"},
		{name: "subscription without =", env: map[string]string{"SIDECAR_SUBSCRIBE": "t:http://u:" + pw + "@h/x"}, want: "SIDECAR_SUBSCRIBE"},
		{name: "subscription unparseable", env: map[string]string{"SIDECAR_SUBSCRIBE": "t=http://u:" + pw + "@h:x/"}, want: "unparseable URL"},
		{name: "upstream", env: map[string]string{"SIDECAR_UPSTREAM": "calendar:" + pw}, want: "upstream"},
		{name: "route fallback", file: "routes: [{path: /sync, topic: t, fallback: 'ftp://u:" + pw + "@h/'}]\n", want: "routes[0].fallback"},
		{name: "fallbacks", file: "fallbacks: {t: 'ftp://h/?token=" + pw + "'}\n", want: "fallbacks.t"},
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
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "Pa55") {
				t.Fatalf("error %q contains the password", err)
			}
		})
	}
}

// TestRedactorScrubsEverySecret: text the sidecar did not compose (an
// error from a library, a log line) loses every credential the
// configuration holds, however it was escaped.
func TestRedactorScrubsEverySecret(t *testing.T) {
	webhookKey := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef01234567"))
	c := &Config{
		RedisURL:      `redis://:r3dis%22pa%5Css@h:26379?master_name=m&sentinel_password=s3ntinel-pass`,
		APIToken:      "api-t0ken-value",
		WebhookSecret: "whsec_" + webhookKey,
		Upstream:      "http://up:upstream-pass@calendar:5003",
		Fallbacks:     map[string]string{"t": "http://peer:7700/v1/inbox/t?token=fallback-tok"},
		Routes:        []Route{{Path: "/sync", Topic: "t", Fallback: "http://route-user:route-pass@peer/"}},
		Subscriptions: []Subscription{{Topic: "t", URL: "http://hook-user:hook-pass@127.0.0.1:1/hook"}},
	}
	secrets := []string{`r3dis"pa\ss`, "s3ntinel-pass", "api-t0ken-value", webhookKey, "upstream-pass", "fallback-tok", "route-pass", "hook-pass"}
	r := c.Redactor()
	for _, s := range secrets {
		for _, form := range []string{s, jsonEscape(s), url.QueryEscape(s)} {
			text := "before " + form + " after"
			got := r.String(text)
			if strings.Contains(got, form) || !strings.HasPrefix(got, "before ") || !strings.HasSuffix(got, " after") {
				t.Errorf("Redactor(%q) = %q, want the secret replaced and the rest kept", text, got)
			}
		}
	}
	if got := r.String("nothing secret here: redis://h:26379"); got != "nothing secret here: redis://h:26379" {
		t.Errorf("Redactor changed text without a secret: %q", got)
	}
	var b strings.Builder
	w := r.Writer(&b)
	line := `{"level":"error","error":"dial http://hook-user:hook-pass@127.0.0.1:1/hook: refused"}` + "\n"
	if n, err := w.Write([]byte(line)); err != nil || n != len(line) {
		t.Fatalf("Write: got %d, %v, want %d, nil", n, err, len(line))
	}
	if strings.Contains(b.String(), "hook-pass") || !strings.HasSuffix(b.String(), "refused\"}\n") {
		t.Fatalf("log writer: got %q", b.String())
	}
}

// jsonEscape is s as it appears inside a JSON string.
func jsonEscape(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

// Webhook services that put the credential in the path or in ?code=.
func TestRedactWebhookPathAndCodeSecrets(t *testing.T) {
	for raw, want := range map[string]string{
		"https://hooks.slack.com/services/T000/B000/SlackPathSECRETxyz":  "https://hooks.slack.com/services/T000/B000/xxxxx",
		"https://discord.com/api/webhooks/123/DiscordPathSECRETxyz":      "https://discord.com/api/webhooks/123/xxxxx",
		"https://fn.azurewebsites.net/api/hook?code=AzFnKeyAbc123SECRET": "https://fn.azurewebsites.net/api/hook?code=xxxxx",
		"https://example.com/hooks/SECRETLOOKING":                        "https://example.com/hooks/SECRETLOOKING",
	} {
		if got := RedactURL(raw); got != want {
			t.Errorf("RedactURL(%s) = %s, want %s", raw, got, want)
		}
	}
	r := NewRedactor(urlSecrets("https://hooks.slack.com/services/T000/B000/SlackPathSECRETxyz")...)
	if got := r.String(`Post "https://hooks.slack.com/services/T000/B000/SlackPathSECRETxyz": EOF`); strings.Contains(got, "SlackPathSECRETxyz") {
		t.Errorf("redactor left the path secret: %s", got)
	}
}
