package httpbridge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SignatureTolerance is how far webhook-timestamp may be from now, either
// way, for a signature to verify (the Standard Webhooks recommendation):
// a captured delivery cannot be replayed later than this.
const SignatureTolerance = 5 * time.Minute

// Verify checks a Standard Webhooks signature: the headers webhook-id,
// webhook-timestamp and webhook-signature, the signed content
// "<webhook-id>.<webhook-timestamp>.<body>", a timestamp within
// SignatureTolerance of now, and a webhook-signature that is a
// space-separated list of "<version>,<base64>" entries of which any one
// "v1" entry matching HMAC-SHA256(key, content) suffices (other versions are
// ignored, so a sender can rotate keys or add schemes). The error says why
// a delivery does not verify; it never contains the expected signature.
func Verify(key []byte, h http.Header, body []byte, now time.Time) error {
	id, tsHeader := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sigs := strings.Join(h.Values("webhook-signature"), " ")
	var missing []string
	for _, m := range []struct{ name, v string }{{"webhook-id", id}, {"webhook-timestamp", tsHeader}, {"webhook-signature", sigs}} {
		if strings.TrimSpace(m.v) == "" {
			missing = append(missing, m.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s header (Standard Webhooks)", strings.Join(missing, ", "))
	}
	ts, err := strconv.ParseInt(tsHeader, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not Unix seconds", tsHeader)
	}
	// Compared in seconds, so a timestamp far from now cannot overflow a
	// time.Duration.
	switch age := now.Unix() - ts; {
	case age > int64(SignatureTolerance/time.Second):
		return fmt.Errorf("webhook-timestamp too old: signed %s ago, more than %s", humanAge(age), SignatureTolerance)
	case -age > int64(SignatureTolerance/time.Second):
		return fmt.Errorf("webhook-timestamp too new: signed %s in the future, more than %s", humanAge(-age), SignatureTolerance)
	}
	want := signature(key, id, ts, body)
	for _, entry := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no v1 entry of webhook-signature matches this sidecar's key for this inbox (webhook_secret, topic)")
}

// InboxKey is the key fallback POSTs to topic's inbox are signed with:
// HMAC-SHA256(secret, "sidecar-inbox:"+topic). A signature made for one
// topic's inbox does not verify at another's, and a webhook delivery to a
// service (signed with the secret itself) cannot be replayed into an inbox.
func InboxKey(secret []byte, topic string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("sidecar-inbox:"))
	m.Write([]byte(topic))
	return m.Sum(nil)
}

// signature is the raw HMAC-SHA256 of "<id>.<timestamp>.<body>" (Sign
// returns it as a header entry).
func signature(key []byte, id string, timestamp int64, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(timestamp, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// humanAge prints a number of seconds as a duration, saturating at years.
func humanAge(secs int64) string {
	const maxSecs = int64(100 * 365 * 24 * time.Hour / time.Second)
	if secs > maxSecs {
		return "more than 100 years"
	}
	return (time.Duration(secs) * time.Second).String()
}
