package event

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// binaryVersion tags the record layout, so a spool written by an older
// sidecar can still be read after an upgrade.
const binaryVersion = 1

// AppendBinary appends a compact encoding of (topic, ev) to b: a version
// byte, the event time in Unix nanoseconds, then length-prefixed fields.
func AppendBinary(b []byte, topic string, ev *Event) []byte {
	b = append(b, binaryVersion)
	b = binary.AppendVarint(b, ev.Time.UnixNano())
	for _, s := range []string{topic, ev.ID, ev.Source, ev.Type, ev.ContentType, ev.Subject, ev.TraceParent, ev.IdempotencyKey} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(ev.Data)))
	return append(b, ev.Data...)
}

var errShort = errors.New("truncated event encoding")

// DecodeBinary reverses AppendBinary. Data aliases nothing of b.
func DecodeBinary(b []byte) (string, *Event, error) {
	if len(b) == 0 || b[0] != binaryVersion {
		return "", nil, fmt.Errorf("unknown event encoding version")
	}
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
	var fields [9][]byte
	for i := range fields {
		v, err := next()
		if err != nil {
			return "", nil, err
		}
		fields[i] = v
	}
	if len(b) != 0 {
		return "", nil, fmt.Errorf("%d trailing bytes after event encoding", len(b))
	}
	ev := &Event{
		Time: time.Unix(0, nanos).UTC(), ID: string(fields[1]), Source: string(fields[2]), Type: string(fields[3]),
		ContentType: string(fields[4]), Subject: string(fields[5]), TraceParent: string(fields[6]),
		IdempotencyKey: string(fields[7]), Data: append([]byte{}, fields[8]...),
	}
	return string(fields[0]), ev, nil
}
