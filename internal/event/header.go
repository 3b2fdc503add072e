package event

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// CloudEvents attribute values travel in ce-* HTTP headers (binary mode),
// where only printable ASCII is safe. The HTTP binding (§3.1.3.2) says how:
// a sender percent-encodes space, '"', '%' and every byte outside
// 0x21–0x7E of the value's UTF-8; a receiver undoes a quoted-string, then
// one round of percent-decoding, and refuses a result that is not UTF-8.

// EncodeHeaderValue percent-encodes an attribute value for a ce-* header.
func EncodeHeaderValue(v string) string {
	n := 0
	for i := 0; i < len(v); i++ {
		if mustEscape(v[i]) {
			n++
		}
	}
	if n == 0 {
		return v
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(v)+2*n)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if mustEscape(c) {
			b = append(b, '%', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

func mustEscape(c byte) bool { return c <= ' ' || c == '"' || c == '%' || c > '~' }

// DecodeHeaderValue reverses EncodeHeaderValue for a received ce-* header.
// Escapes of bytes that need none are accepted. A '%' that starts no
// escape (two hex digits) is kept as it is, and so are raw UTF-8 bytes:
// senders that do not encode (the CloudEvents SDKs for Go and Java, as of
// 2026) still get their values through. The result must be valid UTF-8.
func DecodeHeaderValue(v string) (string, error) {
	if u, ok := unquote(v); ok {
		v = u
	}
	if strings.IndexByte(v, '%') >= 0 {
		b := make([]byte, 0, len(v))
		for i := 0; i < len(v); i++ {
			if c := v[i]; c == '%' && i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
				b = append(b, unhex(v[i+1])<<4|unhex(v[i+2]))
				i += 2
				continue
			}
			b = append(b, v[i])
		}
		v = string(b)
	}
	if !utf8.ValidString(v) {
		return "", errInvalidUTF8
	}
	return v, nil
}

var errInvalidUTF8 = errors.New("not valid UTF-8 once percent-decoded (HTTP binding §3.1.3.2)")

// unquote undoes an RFC 7230 quoted-string, which older senders may use.
func unquote(v string) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return v, false
	}
	in := v[1 : len(v)-1]
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		switch c := in[i]; c {
		case '\\':
			if i+1 == len(in) {
				return v, false // the closing quote is escaped: not one quoted-string
			}
			i++
			b.WriteByte(in[i])
		case '"':
			return v, false // an unescaped quote inside: not one quoted-string
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
