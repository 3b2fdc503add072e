package httpbridge

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// BenchmarkSign is the Standard Webhooks signature of a 1 KiB delivery.
func BenchmarkSign(b *testing.B) {
	key, body := []byte("0123456789abcdef0123456789abcdef"), make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		_ = Sign(key, "01JEXAMPLE0000000000000000", 1700000000, body)
	}
}

// BenchmarkSetHeaders is all delivery headers of one webhook attempt, signed.
func BenchmarkSetHeaders(b *testing.B) {
	ev := &event.Event{ID: "01JEXAMPLE0000000000000000", Source: "processor", Type: "match_updates", Time: time.Now(),
		ContentType: "application/json", Data: make([]byte, 1024)}
	key := []byte("0123456789abcdef0123456789abcdef")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		h := make(http.Header, 16)
		SetHeaders(h, "match.updated", 1, ev, key, now)
	}
}

// BenchmarkPublishHandler is the API's work per publish, without the
// network and with a publisher that does nothing.
func BenchmarkPublishHandler(b *testing.B) {
	h := NewAPI(APIConfig{Service: "processor", MaxBody: 1 << 20}, &fakePublisher{discard: true}, nil, http.NotFoundHandler(), zerolog.Nop())
	body := bytes.Repeat([]byte("x"), 1024)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/publish/match.updated", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
}
