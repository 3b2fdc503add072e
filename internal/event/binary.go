package event

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Record layout versions, so a spool written by an older sidecar can still
// be read after an upgrade. Version 1 (before dataschema, tracestate and
// extensions) is only read; AppendBinary writes version 2.
const (
	binaryV1 = 1
	binaryV2 = 2
)

// AppendBinary appends a compact encoding of (topic, ev) to b: a version
// byte, the event time in Unix nanoseconds, length-prefixed string fields,
// the count of extensions and their length-prefixed names and values (by
// name), then the length-prefixed data.
func AppendBinary(b []byte, topic string, ev *Event) []byte {
	b = append(b, binaryV2)
	b = binary.AppendVarint(b, ev.Time.UnixNano())
	for _, s := range []string{topic, ev.ID, ev.Source, ev.Type, ev.ContentType, ev.Subject, ev.TraceParent, ev.IdempotencyKey,
		ev.DataSchema, ev.TraceState} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(ev.Extensions)))
	for _, name := range ev.ExtensionNames() {
		b = appendString(b, name)
		b = appendString(b, ev.Extensions[name])
	}
	b = binary.AppendUvarint(b, uint64(len(ev.Data)))
	return append(b, ev.Data...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errShort = errors.New("truncated event encoding")

// DecodeBinary reverses AppendBinary, of either layout version. Data
// aliases nothing of b.
func DecodeBinary(b []byte) (string, *Event, error) {
	if len(b) == 0 || (b[0] != binaryV1 && b[0] != binaryV2) {
		return "", nil, fmt.Errorf("unknown event encoding version")
	}
	version := b[0]
	b = b[1:]
	nanos, n := binary.Varint(b)
	if n <= 0 {
		return "", nil, errShort
	}
	b = b[n:]
	next := func() ([]byte, error) {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return nil, errShort
		}
		v := b[n : n+int(l)]
		b = b[n+int(l):]
		return v, nil
	}
	// Version 1: topic, id, source, type, content type, subject,
	// traceparent, idempotency key, data. Version 2 adds dataschema and
	// tracestate, then the extensions, before the data.
	var fields [10][]byte
	nStrings := 8
	if version == binaryV2 {
		nStrings = 10
	}
	for i := range nStrings {
		v, err := next()
		if err != nil {
			return "", nil, err
		}
		fields[i] = v
	}
	var ext map[string]string
	if version == binaryV2 {
		count, n := binary.Uvarint(b)
		// Each extension takes at least two bytes: a corrupt count cannot
		// make us allocate more than the record holds.
		if n <= 0 || count > uint64(len(b)-n)/2 {
			return "", nil, errShort
		}
		b = b[n:]
		for range count {
			name, err := next()
			if err != nil {
				return "", nil, err
			}
			value, err := next()
			if err != nil {
				return "", nil, err
			}
			if ext == nil {
				ext = make(map[string]string, count)
			}
			ext[string(name)] = string(value)
		}
	}
	data, err := next()
	if err != nil {
		return "", nil, err
	}
	if len(b) != 0 {
		return "", nil, fmt.Errorf("%d trailing bytes after event encoding", len(b))
	}
	ev := &Event{
		Time: time.Unix(0, nanos).UTC(), ID: string(fields[1]), Source: string(fields[2]), Type: string(fields[3]),
		ContentType: string(fields[4]), Subject: string(fields[5]), TraceParent: string(fields[6]),
		IdempotencyKey: string(fields[7]), DataSchema: string(fields[8]), TraceState: string(fields[9]),
		Extensions: ext, Data: append([]byte{}, data...),
	}
	return string(fields[0]), ev, nil
}
