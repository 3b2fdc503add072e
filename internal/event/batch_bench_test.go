package event

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

func benchBatchBody() []byte {
	var body bytes.Buffer
	body.WriteString("[")
	for i := range 100 {
		if i > 0 {
			body.WriteString(",")
		}
		fmt.Fprintf(&body, `{"specversion":"1.0","id":"e-%d","type":"t","source":"s","datacontenttype":"application/json","partitionkey":"k%d","data":{"seq":%d,"pad":"%s"}}`, i, i%7, i, bytes.Repeat([]byte("x"), 1000))
	}
	body.WriteString("]")
	return body.Bytes()
}

func BenchmarkParseCloudEventsBatch100(b *testing.B) {
	body := benchBatchBody()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ParseCloudEventsBatch(body, "s", time.Now(), 1000, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseNDJSON100(b *testing.B) {
	var body bytes.Buffer
	for i := range 100 {
		fmt.Fprintf(&body, `{"seq":%d,"pad":"%s"}`+"\n", i, bytes.Repeat([]byte("x"), 1000))
	}
	b.SetBytes(int64(body.Len()))
	for b.Loop() {
		if _, err := ParseNDJSON(body.Bytes(), Event{Source: "s", Type: "t", Time: time.Now()}, 1000, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}
