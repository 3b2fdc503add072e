package httpbridge

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// The CloudEvents HTTP binding's binary mode, read side: attributes in
// ce-* headers. Publish (readEvent) and the inbox (eventFromWebhook) read
// events this way; SetHeaders writes them.

// readBinaryAttributes sets ev's attributes from a binary-mode publish's
// ce-* headers: specversion (1.0 only), id, source, type, time, subject,
// dataschema, and any other ce-<name> as an extension. It returns the
// error code for a refusal: malformed_cloudevent when the request is a
// CloudEvent (it has ce-specversion), else invalid_header.
func readBinaryAttributes(h http.Header, ev *event.Event) (string, error) {
	code := "invalid_header"
	if _, ok := h[http.CanonicalHeaderKey("ce-specversion")]; ok {
		code = "malformed_cloudevent"
	}
	attrs, err := ceHeaders(h)
	if err != nil || len(attrs) == 0 {
		return code, err
	}
	// First: what the other attributes mean depends on the version.
	if v, ok := attrs["specversion"]; ok && v != event.SpecVersion {
		return code, fmt.Errorf("ce-specversion %q is not supported (want %s)", v, event.SpecVersion)
	}
	var ext map[string]string
	for _, name := range slices.Sorted(maps.Keys(attrs)) {
		v, hname := attrs[name], "ce-"+name
		switch name {
		case "specversion":
		case "id", "type", "subject":
			if err := event.ValidateAttr(hname, v); err != nil {
				return code, err
			}
			switch name {
			case "id":
				ev.ID = v
			case "type":
				ev.Type = v
			default:
				ev.Subject = v
			}
		case "source":
			if err := event.ValidateSource(v); err != nil {
				return code, fmt.Errorf("ce-source: %w", err)
			}
			ev.Source = v
		case "time":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return code, fmt.Errorf("ce-time %q is not RFC 3339", v)
			}
			ev.Time = t
		case "dataschema":
			if err := event.ValidateDataSchema(v); err != nil {
				return code, fmt.Errorf("ce-dataschema: %w", err)
			}
			ev.DataSchema = v
		case "datacontenttype":
			return code, errors.New("ce-datacontenttype is not a binary-mode header: send the media type as Content-Type")
		default:
			if ext == nil {
				ext = map[string]string{}
			}
			ext[name] = v
		}
	}
	if err := event.ValidateExtensions(ext); err != nil {
		return code, fmt.Errorf("ce-* headers: %w", err)
	}
	ev.Extensions = ext
	return code, nil
}

// ceHeaders returns a request's ce-* headers by attribute name (lower
// case), each value percent-decoded per the HTTP binding §3.1.3.2. A
// header sent twice is refused: which of its values is meant?
func ceHeaders(h http.Header) (map[string]string, error) {
	var keys []string
	for k := range h {
		if len(k) >= 3 && strings.EqualFold(k[:3], "ce-") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys) // the first bad header named is always the same one
	var attrs map[string]string
	for _, k := range keys {
		vs := h[k]
		if len(vs) != 1 {
			return nil, fmt.Errorf("header %s is sent %d times; send it once", k, len(vs))
		}
		v, err := event.DecodeHeaderValue(strings.TrimSpace(vs[0]))
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", k, err)
		}
		if attrs == nil {
			attrs = map[string]string{}
		}
		attrs[strings.ToLower(k[3:])] = v
	}
	return attrs, nil
}

// extensionAttributes returns the attributes (as ceHeaders gives them)
// that are not CloudEvents core attributes: the extensions; nil if none.
func extensionAttributes(attrs map[string]string) map[string]string {
	var ext map[string]string
	for name, v := range attrs {
		switch name {
		case "specversion", "id", "source", "type", "subject", "time", "dataschema":
			continue
		}
		if ext == nil {
			ext = map[string]string{}
		}
		ext[name] = v
	}
	return ext
}

// traceState is a request's W3C tracestate: several tracestate headers
// are one list, in order.
func traceState(h http.Header) string {
	var states []string
	for _, v := range h.Values("tracestate") {
		if v = strings.TrimSpace(v); v != "" {
			states = append(states, v)
		}
	}
	return strings.Join(states, ",")
}
