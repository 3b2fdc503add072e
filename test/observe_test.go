package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
)

func getBody(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestStatusAndMetricsReflectTraffic(t *testing.T) {
	_, topic, rc, pub, sub := startPair(t, "observe", "SIDECAR_API_TOKEN=tok")
	rc.set(0, func(r received, n int) int {
		if strings.Contains(string(r.Body), `"i":3}`) {
			return http.StatusBadRequest // poison: straight to the DLQ
		}
		return http.StatusOK
	})
	for i := range 5 {
		pub.mustPublish(topic, body(i))
	}
	eventually.True(t, 10*time.Second, "5 requests", func() bool { return rc.count() == 5 })

	if code, _ := getBody(t, sub.url("/v1/status"), ""); code != http.StatusUnauthorized {
		t.Fatalf("/v1/status without the token: got %d, want 401", code)
	}
	var st struct {
		Redis struct {
			Up              bool   `json:"up"`
			Version         string `json:"version"`
			MaxMemoryPolicy string `json:"maxmemory_policy"`
		} `json:"redis"`
		Subscriptions []struct {
			Topic        string `json:"topic"`
			Group        string `json:"group"`
			Delivered    uint64 `json:"delivered"`
			DeadLettered uint64 `json:"dead_lettered"`
			Lag          int64  `json:"lag"`
			Pending      int64  `json:"pending"`
			DLQLength    int64  `json:"dlq_length"`
			LastError    string `json:"last_error"`
		} `json:"subscriptions"`
	}
	eventually.True(t, 15*time.Second, "status with the DLQ length read", func() bool {
		code, b := getBody(t, sub.url("/v1/status"), "tok")
		if code != 200 || json.Unmarshal([]byte(b), &st) != nil || len(st.Subscriptions) != 1 {
			return false
		}
		return st.Subscriptions[0].DLQLength == 1
	})
	s := st.Subscriptions[0]
	if !st.Redis.Up || st.Redis.Version == "" || st.Redis.MaxMemoryPolicy != "noeviction" || s.Topic != topic || s.Group != "calendar" ||
		s.Delivered != 4 || s.DeadLettered != 1 || s.Lag != 0 || s.Pending != 0 || !strings.Contains(s.LastError, "400") {
		t.Fatalf("status: got %+v", st)
	}
	code, pubStatus := getBody(t, pub.url("/v1/status"), "")
	if code != 200 || !strings.Contains(pubStatus, fmt.Sprintf(`"%s": {`, topic)) || !strings.Contains(pubStatus, `"stream": 5`) {
		t.Fatalf("publisher status: got %d %s", code, pubStatus)
	}

	code, metrics := getBody(t, sub.url("/metrics"), "tok")
	if code != 200 {
		t.Fatalf("/metrics: got %d", code)
	}
	for _, want := range []string{
		fmt.Sprintf(`sidecar_delivery_total{group="calendar",outcome="delivered",topic="%s"} 4`, topic),
		fmt.Sprintf(`sidecar_delivery_total{group="calendar",outcome="dead_lettered",topic="%s"} 1`, topic),
		fmt.Sprintf(`sidecar_dlq_length{topic="%s"} 1`, topic),
		fmt.Sprintf(`sidecar_end_to_end_seconds_count{group="calendar",topic="%s"} 4`, topic),
		"sidecar_redis_up 1",
		"go_goroutines ",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	_, pubMetrics := getBody(t, pub.url("/metrics"), "")
	if want := fmt.Sprintf(`sidecar_publish_total{outcome="stream",topic="%s"} 5`, topic); !strings.Contains(pubMetrics, want) {
		t.Errorf("publisher /metrics lacks %q", want)
	}
}
