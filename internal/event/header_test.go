package event

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEncodeHeaderValue(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"match/7", "match/7"},
		{"01JABCDEF", "01JABCDEF"},
		{"Malmö", "Malm%C3%B6"},
		{"ordre-ö.1", "ordre-%C3%B6.1"},
		{"a b", "a%20b"},
		{`say "hi"`, "say%20%22hi%22"},
		{"100%", "100%25"},
		{"tab\there", "tab%09here"},
		{"del\x7f", "del%7F"},
		{"~!#$&'()*+,/:;<=>?@[\\]^_`{|}", "~!#$&'()*+,/:;<=>?@[\\]^_`{|}"}, // printable ASCII but space, " and % stay
		{"日本", "%E6%97%A5%E6%9C%AC"},
		{"", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := EncodeHeaderValue(tc.in)
			if got != tc.want {
				t.Fatalf("EncodeHeaderValue(%q): got %q, want %q", tc.in, got, tc.want)
			}
			// An independent decoder (net/url) reads it back.
			if back, err := url.PathUnescape(got); err != nil || back != tc.in {
				t.Fatalf("url.PathUnescape(%q): got %q, %v; want %q", got, back, err, tc.in)
			}
			if back, err := DecodeHeaderValue(got); err != nil || back != tc.in {
				t.Fatalf("DecodeHeaderValue(%q): got %q, %v; want %q", got, back, err, tc.in)
			}
		})
	}
}

// TestEncodeHeaderValueEveryByte: every byte outside 0x21–0x7E, and space,
// '"' and '%', is escaped; nothing else is.
func TestEncodeHeaderValueEveryByte(t *testing.T) {
	escaped := 0
	for b := 0; b < 256; b++ {
		got := EncodeHeaderValue(string([]byte{byte(b)}))
		want := b <= 0x20 || b == '"' || b == '%' || b >= 0x7f
		if (got != string([]byte{byte(b)})) != want {
			t.Errorf("byte %#02x: got %q, escaped want %v", b, got, want)
		}
		if want {
			escaped++
		}
	}
	if escaped != 256-94+2 { // 94 printable ASCII 0x21–0x7E, less '"' and '%'
		t.Errorf("escaped %d byte values, want %d", escaped, 256-94+2)
	}
}

func TestDecodeHeaderValue(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "plain", in: "match/7", want: "match/7"},
		{name: "encoded UTF-8", in: "Malm%C3%B6", want: "Malmö"},
		{name: "lower-case hex", in: "Malm%c3%b6", want: "Malmö"},
		{name: "unnecessarily encoded", in: "%61%62c", want: "abc"},
		{name: "one round only", in: "100%2525", want: "100%25"},
		{name: "raw UTF-8 from a sender that does not encode", in: "Malmö", want: "Malmö"},
		{name: "bare percent kept", in: "50% off", want: "50% off"},
		{name: "percent at the end", in: "100%", want: "100%"},
		{name: "percent and one hex digit", in: "x%4", want: "x%4"},
		{name: "quoted string", in: `"a b \"c\""`, want: `a b "c"`},
		{name: "quoted then percent-decoded", in: `"Malm%C3%B6"`, want: "Malmö"},
		{name: "quote inside is not a quoted string", in: `"a"b"`, want: `"a"b"`},
		{name: "encoded invalid UTF-8", in: "ordre-%FF", wantErr: true},
		{name: "raw invalid UTF-8", in: "ordre-\xff", wantErr: true},
		{name: "truncated UTF-8 sequence", in: "Malm%C3", wantErr: true},
		{name: "empty", in: "", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeHeaderValue(tc.in)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "UTF-8") {
					t.Fatalf("DecodeHeaderValue(%q): got %q, %v; want a UTF-8 error", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("DecodeHeaderValue(%q): got %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

// FuzzHeaderValueRoundTrip: any valid UTF-8 value survives encode→decode,
// and its encoding is printable ASCII without space, '"' or a bare '%'.
func FuzzHeaderValueRoundTrip(f *testing.F) {
	for _, s := range []string{"Malmö", "100%", `"q"`, "a b", "\x00\x7f", "日本"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		enc := EncodeHeaderValue(s)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c <= ' ' || c > '~' || c == '"' {
				t.Fatalf("EncodeHeaderValue(%q) = %q has byte %#02x", s, enc, c)
			}
		}
		if got, err := DecodeHeaderValue(enc); err != nil || got != s {
			t.Fatalf("round trip of %q: got %q, %v", s, got, err)
		}
	})
}
