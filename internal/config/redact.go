package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// redacted replaces every credential the sidecar prints.
const redacted = "xxxxx"

// RedactURL is the one way the sidecar prints a URL it was configured with
// (Redis of every kind, webhooks, fallbacks, upstream): the userinfo
// password (or, in an HTTP URL, a lone user name: often a token), the values of query
// parameters that name a credential (password, sentinel_password, *secret*,
// *token*, *key*, …) and any fragment become xxxxx. A URL that does not
// parse is never echoed, not even in part: only its length is.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.Scheme == "" {
		return unparseable(raw)
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), redacted)
		} else if loneUserIsSecret(u) {
			u.User = url.User(redacted)
		}
	}
	if seg := pathSecret(u); seg != "" {
		u.Path = strings.TrimSuffix(u.Path, seg) + redacted
		u.RawPath = ""
	}
	u.RawQuery = redactQuery(u.RawQuery)
	if u.Fragment != "" || u.RawFragment != "" {
		u.Fragment, u.RawFragment = redacted, ""
	}
	return u.String()
}

// loneUserIsSecret: a user name without a password is a token in an
// HTTP URL (https://<token>@host/…), but an ACL user name in a Redis one.
func loneUserIsSecret(u *url.URL) bool {
	return u.User.Username() != "" && !strings.HasPrefix(u.Scheme, "redis")
}

func unparseable(raw string) string { return fmt.Sprintf("<unparseable URL, %d bytes>", len(raw)) }

// redactQuery hides credential values in a raw query, keeping the order
// and spelling of everything else.
func redactQuery(raw string) string {
	var b strings.Builder
	for p, sep := range queryParts(raw) {
		k, _, hasValue := strings.Cut(p, "=")
		if hasValue && secretParam(unescapeName(k)) {
			p = k + "=" + redacted
		}
		b.WriteString(p)
		b.WriteString(sep)
	}
	return b.String()
}

// queryParts yields each key=value of a raw query with the separator that
// follows it: & or ; (net/url refuses ;, but a printed URL must not
// show what hides behind one).
func queryParts(raw string) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for raw != "" {
			i := strings.IndexAny(raw, "&;")
			if i < 0 {
				yield(raw, "")
				return
			}
			if !yield(raw[:i], raw[i:i+1]) {
				return
			}
			raw = raw[i+1:]
		}
	}
}

func unescapeName(k string) string {
	if name, err := url.QueryUnescape(k); err == nil {
		return name
	}
	return k
}

// secretWords mark a query parameter whose value is a credential ("code":
// Azure Functions' function key).
var secretWords = []string{"pass", "pwd", "secret", "token", "key", "auth", "sig", "credential", "code"}

// pathSecret is the last path segment of a webhook URL whose path carries
// its credential — Slack (hooks.slack.com/services/T/B/<secret>), Discord
// (/api/webhooks/<id>/<token>), Microsoft Teams (…webhook.office.com/…) —
// or "" for any other URL.
func pathSecret(u *url.URL) string {
	host := strings.ToLower(u.Hostname())
	switch {
	case host == "hooks.slack.com" && strings.HasPrefix(u.Path, "/services/"),
		(host == "discord.com" || host == "discordapp.com") && strings.HasPrefix(u.Path, "/api/webhooks/"),
		strings.HasSuffix(host, ".webhook.office.com") || host == "outlook.office.com":
	default:
		return ""
	}
	i := strings.LastIndexByte(u.Path, '/')
	if i < 0 || i == len(u.Path)-1 {
		return ""
	}
	return u.Path[i+1:]
}

func secretParam(name string) bool {
	name = strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// urlSecrets returns the credentials written in raw: the userinfo password
// (or lone user name) and the values of credential parameters. For a URL
// that does not parse, raw itself is the secret: its parts cannot be told apart.
func urlSecrets(raw string) []string {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		return []string{raw}
	}
	var out []string
	if u.User != nil {
		if p, has := u.User.Password(); has {
			out = append(out, p)
		} else if loneUserIsSecret(u) {
			out = append(out, u.User.Username())
		}
	}
	if seg := pathSecret(u); seg != "" {
		out = append(out, seg)
	}
	for p := range queryParts(u.RawQuery) {
		k, v, _ := strings.Cut(p, "=")
		if !secretParam(unescapeName(k)) {
			continue
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			out = append(out, dv)
		}
		out = append(out, v)
	}
	if u.Fragment != "" {
		out = append(out, u.Fragment)
	}
	return out
}

// Redactor removes known secrets from text the sidecar did not compose
// itself — library errors that quote a URL, a webhook's last error, a log
// line — as a second line of defence behind RedactURL.
type Redactor struct {
	r *strings.Replacer
}

// minSecret is the shortest secret a Redactor replaces: replacing every
// "ab" in a log would hide more than it protects.
const minSecret = 4

// NewRedactor returns a Redactor for secrets, each also in the forms it
// takes once escaped in JSON, a Go-quoted string or a URL.
func NewRedactor(secrets ...string) *Redactor {
	seen := map[string]bool{}
	var forms []string
	for _, s := range secrets {
		if len(s) < minSecret {
			continue
		}
		js, _ := json.Marshal(s)
		goq := strconv.Quote(s)
		userinfo := url.UserPassword("", s).String() // ":" + the password as userinfo escapes it
		for _, f := range []string{s, string(js[1 : len(js)-1]), goq[1 : len(goq)-1],
			url.QueryEscape(s), url.PathEscape(s), userinfo[1:]} {
			if len(f) >= minSecret && !seen[f] {
				seen[f] = true
				forms = append(forms, f)
			}
		}
	}
	if len(forms) == 0 {
		return &Redactor{}
	}
	// Longest first: a secret that contains another is replaced whole.
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, redacted)
	}
	return &Redactor{r: strings.NewReplacer(pairs...)}
}

// String returns s without the secrets.
func (r *Redactor) String(s string) string {
	if r == nil || r.r == nil {
		return s
	}
	return r.r.Replace(s)
}

// Bytes returns b without the secrets (b itself when it holds none).
func (r *Redactor) Bytes(b []byte) []byte {
	if r == nil || r.r == nil {
		return b
	}
	s := r.r.Replace(string(b))
	if len(s) == len(b) && s == string(b) {
		return b
	}
	return []byte(s)
}

// Writer wraps w so that nothing written through it carries a secret. A
// zerolog logger writes one whole line per Write, so a secret is never
// split between two writes.
func (r *Redactor) Writer(w io.Writer) io.Writer {
	if r == nil || r.r == nil {
		return w
	}
	return redactingWriter{w: w, r: r}
}

type redactingWriter struct {
	w io.Writer
	r *Redactor
}

func (rw redactingWriter) Write(p []byte) (int, error) {
	if _, err := rw.w.Write(rw.r.Bytes(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Secrets lists every credential the configuration holds: the API token,
// the webhook secret, and those in the Redis, webhook, fallback and
// upstream URLs.
func (c *Config) Secrets() []string {
	out := []string{c.APIToken, c.WebhookSecret}
	if key, ok := strings.CutPrefix(c.WebhookSecret, "whsec_"); ok {
		out = append(out, key)
	}
	out = append(out, urlSecrets(c.RedisURL)...)
	out = append(out, urlSecrets(c.Upstream)...)
	for _, s := range c.Subscriptions {
		out = append(out, urlSecrets(s.URL)...)
	}
	for _, r := range c.Routes {
		out = append(out, urlSecrets(r.Fallback)...)
	}
	for _, u := range c.Fallbacks {
		out = append(out, urlSecrets(u)...)
	}
	return out
}

// Redactor returns a Redactor for the configuration's Secrets.
func (c *Config) Redactor() *Redactor { return NewRedactor(c.Secrets()...) }

// quoted matches the parts of a net/url error that quote its input.
var quoted = regexp.MustCompile(`"[^"]*"`)

// urlParseReason is why url.Parse refused a URL, without the URL or any
// quoted piece of it.
func urlParseReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return quoted.ReplaceAllString(err.Error(), "…")
}

// redactedError returns err's message with secrets removed.
func redactedError(r *Redactor, err error) error {
	return errors.New(r.String(err.Error()))
}
