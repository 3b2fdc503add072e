package otlptest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// idFields are the members OTLP/JSON writes as hex, where protojson (the
// canonical proto3 mapping) expects base64.
var idFields = map[string]bool{
	"traceId": true, "spanId": true, "parentSpanId": true,
	"trace_id": true, "span_id": true, "parent_span_id": true,
}

// unmarshalJSON decodes an OTLP/JSON body: protojson, after rewriting the
// hex ids to base64. Unknown fields are ignored, as the OTLP spec asks of
// receivers.
func unmarshalJSON(raw []byte, msg *collectorpb.ExportTraceServiceRequest) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // int64 values (timestamps) stay exact
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return err
	}
	if err := hexToBase64(doc); err != nil {
		return err
	}
	canonical, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(canonical, msg)
}

func hexToBase64(v any) error {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && idFields[k] {
				b, err := hex.DecodeString(s)
				if err != nil {
					return fmt.Errorf("%s %q is not hex", k, s)
				}
				x[k] = base64.StdEncoding.EncodeToString(b)
				continue
			}
			if err := hexToBase64(e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := hexToBase64(e); err != nil {
				return err
			}
		}
	}
	return nil
}
