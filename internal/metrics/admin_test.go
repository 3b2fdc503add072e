package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAdminOperationsCounted(t *testing.T) {
	m := New()
	m.AdminOperation("redrive", 3)
	m.AdminOperation("redrive", 2)
	m.AdminOperation("pause", 0)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`sidecar_admin_operations_total{operation="redrive"} 2`,
		`sidecar_admin_entries_total{operation="redrive"} 5`,
		`sidecar_admin_operations_total{operation="pause"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics: missing %q", want)
		}
	}
}
