package event

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"unicode"
	"unicode/utf8"
)

// Limits on extension attributes: each becomes a ce-<name> delivery header
// and a field of the stream entry, so they are bounded like the rest.
const (
	MaxExtensions     = 32
	MaxExtensionBytes = 4 << 10 // names and values together
)

// maxTraceHeaderLen bounds traceparent and tracestate. W3C asks vendors to
// propagate at least 512 characters of tracestate; this leaves room.
const maxTraceHeaderLen = 4 << 10

var extensionNameRE = regexp.MustCompile(`^[a-z0-9]{1,20}$`)

// knownAttributes are the CloudEvents 1.0 attributes (and the JSON
// format's data members): never an extension's name.
var knownAttributes = []string{
	"specversion", "id", "source", "type", "subject", "time",
	"datacontenttype", "dataschema", "data", "data_base64",
}

// ValidateExtensionName checks a CloudEvents extension attribute name:
// lower-case ASCII letters and digits, at most 20, and not the name of a
// known attribute.
func ValidateExtensionName(name string) error {
	if !extensionNameRE.MatchString(name) {
		return fmt.Errorf("extension name %q must match ^[a-z0-9]{1,20}$ (CloudEvents attribute naming)", name)
	}
	if slices.Contains(knownAttributes, name) {
		return fmt.Errorf("%q is a CloudEvents attribute, not an extension", name)
	}
	return nil
}

// ValidateExtensions checks extension attributes: valid names, at most
// MaxExtensions of them and MaxExtensionBytes in all, and each value valid
// UTF-8 without control characters. Values are canonical strings: a JSON
// string's text, a number's or boolean's JSON text, a header's decoded value.
func ValidateExtensions(ext map[string]string) error {
	if len(ext) == 0 {
		return nil
	}
	if len(ext) > MaxExtensions {
		return fmt.Errorf("%d extension attributes; at most %d", len(ext), MaxExtensions)
	}
	total := 0
	for _, name := range slices.Sorted(maps.Keys(ext)) {
		if err := ValidateExtensionName(name); err != nil {
			return err
		}
		v := ext[name]
		total += len(name) + len(v)
		if err := validateAttrText("extension "+name, v); err != nil {
			return err
		}
	}
	if total > MaxExtensionBytes {
		return fmt.Errorf("extension attributes are %d bytes in all; at most %d", total, MaxExtensionBytes)
	}
	return nil
}

// validateAttrText refuses invalid UTF-8 and any control character (C0,
// DEL, C1, tab included): an attribute value is text on one line.
func validateAttrText(name, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s is not valid UTF-8", name)
	}
	for i, r := range v {
		if unicode.IsControl(r) {
			if r < utf8.RuneSelf {
				return fmt.Errorf("%s contains control character %#02x at byte %d", name, r, i)
			}
			return fmt.Errorf("%s contains control character %U at byte %d", name, r, i)
		}
	}
	return nil
}

// ValidateDataSchema checks a CloudEvents dataschema: an absolute URI.
func ValidateDataSchema(v string) error {
	if err := validateAttrText("dataschema", v); err != nil {
		return err
	}
	u, err := url.Parse(v)
	if err != nil {
		return fmt.Errorf("dataschema %q is not a URI: %v", v, err)
	}
	if !u.IsAbs() {
		return fmt.Errorf("dataschema %q is not an absolute URI (want a scheme, e.g. https://…)", v)
	}
	return nil
}

// ValidateTraceHeader checks a W3C trace context value (traceparent,
// tracestate), forwarded as is: printable ASCII, bounded. "" = absent.
func ValidateTraceHeader(name, v string) error {
	if err := ValidateHeaderValue(name, v); err != nil {
		return err
	}
	if len(v) > maxTraceHeaderLen {
		return fmt.Errorf("%s is %d bytes; at most %d", name, len(v), maxTraceHeaderLen)
	}
	for i := 0; i < len(v); i++ {
		if v[i] >= utf8.RuneSelf {
			return errors.New(name + " must be ASCII (W3C Trace Context)")
		}
	}
	return nil
}
