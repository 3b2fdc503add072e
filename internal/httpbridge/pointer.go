package httpbridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Pointer is an RFC 6901 JSON Pointer naming the member of a JSON event
// that a webhook receives (a subscription's `body`, e.g. "/payload").
// The empty pointer means the whole event, byte for byte, JSON or not.
type Pointer string

// BodyError says why an event has no member at a subscription's body
// pointer. Retrying cannot change the event, so it is permanent: the
// event goes to the DLQ at once with this as its error.
type BodyError struct {
	Pointer Pointer
	Reason  string
}

func (e *BodyError) Error() string { return fmt.Sprintf("body %s: %s", e.Pointer, e.Reason) }

// Permanent is always true: the same event fails the same way every time.
func (e *BodyError) Permanent() bool { return true }

// validatePointer checks RFC 6901 syntax: "" or "/"-separated reference
// tokens in which "~" is only ever followed by "0" or "1". (Config checks
// the same at load; this guards a Webhook built elsewhere.)
func validatePointer(p string) error {
	if p == "" {
		return nil
	}
	if p[0] != '/' {
		return fmt.Errorf("%q is not a JSON Pointer: it must be empty or start with / (e.g. /payload)", p)
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '~' && (i+1 == len(p) || (p[i+1] != '0' && p[i+1] != '1')) {
			return fmt.Errorf("%q is not a JSON Pointer: ~ must be followed by 0 (for ~) or 1 (for /)", p)
		}
	}
	return nil
}

// Extract returns the bytes of the member of doc that p names, exactly as
// they appear in doc (no re-encoding: key order, spacing and number
// formatting survive). The empty pointer returns doc unchanged.
func (p Pointer) Extract(doc []byte) ([]byte, error) {
	if p == "" {
		return doc, nil
	}
	if err := validatePointer(string(p)); err != nil {
		return nil, &BodyError{Pointer: p, Reason: err.Error()}
	}
	if !json.Valid(doc) {
		reason := "event is not JSON"
		if len(bytes.TrimSpace(doc)) == 0 {
			reason = "event is not JSON (it is empty)"
		}
		return nil, &BodyError{Pointer: p, Reason: reason}
	}
	cur := bytes.TrimSpace(doc)
	at := "" // the pointer walked so far, for messages
	for _, raw := range strings.Split(string(p)[1:], "/") {
		tok := strings.ReplaceAll(strings.ReplaceAll(raw, "~1", "/"), "~0", "~")
		where := ""
		if at != "" {
			where = " in " + at
		}
		// cur is valid JSON (checked above), so these decodes cannot fail
		// on syntax; json.RawMessage keeps each member's original bytes.
		switch cur[0] {
		case '{':
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(cur, &obj); err != nil {
				return nil, &BodyError{Pointer: p, Reason: err.Error()}
			}
			m, ok := obj[tok]
			if !ok {
				return nil, &BodyError{Pointer: p, Reason: fmt.Sprintf("no member %q%s", tok, where)}
			}
			cur = bytes.TrimSpace(m)
		case '[':
			var arr []json.RawMessage
			if err := json.Unmarshal(cur, &arr); err != nil {
				return nil, &BodyError{Pointer: p, Reason: err.Error()}
			}
			i, err := arrayIndex(tok)
			if err != nil {
				return nil, &BodyError{Pointer: p, Reason: err.Error() + where}
			}
			if i >= len(arr) {
				return nil, &BodyError{Pointer: p, Reason: fmt.Sprintf("no element %d%s (array of %d)", i, where, len(arr))}
			}
			cur = bytes.TrimSpace(arr[i])
		default:
			name := at
			if name == "" {
				name = "the event"
			}
			return nil, &BodyError{Pointer: p, Reason: fmt.Sprintf("no member %q: %s is %s, not an object or array", tok, name, jsonKind(cur[0]))}
		}
		at += "/" + raw
	}
	return cur, nil
}

// arrayIndex parses an RFC 6901 array index: "0" or digits without a
// leading zero. "-" (the element after the last) never exists in a read.
func arrayIndex(tok string) (int, error) {
	if tok == "-" {
		return 0, fmt.Errorf(`no element "-" (it names the end of an array)`)
	}
	if tok == "" || (len(tok) > 1 && tok[0] == '0') || strings.TrimLeft(tok, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not an array index", tok)
	}
	i, err := strconv.Atoi(tok)
	if err != nil {
		return 0, fmt.Errorf("%q is not an array index", tok)
	}
	return i, nil
}

func jsonKind(first byte) string {
	switch first {
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
