package httpbridge

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// The Authorization scheme is case-insensitive (RFC 9110 §11.1); the token is not.
func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	h := newTestAPI(&fakePublisher{}, "s3cret-token")
	for auth, want := range map[string]int{
		"Bearer s3cret-token":  http.StatusAccepted,
		"bearer s3cret-token":  http.StatusAccepted,
		"BEARER s3cret-token":  http.StatusAccepted,
		"Bearer  s3cret-token": http.StatusAccepted,
		"Bearer S3CRET-TOKEN":  http.StatusUnauthorized,
		"Basic s3cret-token":   http.StatusUnauthorized,
		"Bearer":               http.StatusUnauthorized,
		"s3cret-token":         http.StatusUnauthorized,
		"":                     http.StatusUnauthorized,
	} {
		rec := do(h, http.MethodPost, "/v1/publish/t", "x", map[string]string{"Authorization": auth})
		if rec.Code != want {
			t.Errorf("Authorization %q: got %d, want %d", auth, rec.Code, want)
		}
	}
}

// Probes that send HEAD (some load balancers) get the health status too.
func TestHealthAnswersHead(t *testing.T) {
	h := newTestAPI(&fakePublisher{}, "s3cret-token")
	for _, path := range []string{"/healthz", "/readyz"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("HEAD %s: %d", path, rec.Code)
		}
	}
}
