package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ory/dockertest/v3"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// python returns an interpreter with Flask and requests, or skips (fails under CI=true).
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(p, "-c", "import flask, requests").Run() == nil {
			return p
		}
	}
	redistest.SkipOrFail(t, "the Python examples need python3 with flask and requests (apt-get install python3-flask python3-requests)")
	return ""
}

// startPython runs a Python script as a process until the test ends.
func startPython(t *testing.T, py, script string, env ...string) *bytes.Buffer {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(py, script)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("---- %s ----\n%s", filepath.Base(script), tail(out.Bytes(), 30))
		}
	})
	return &out
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	eventually.True(t, 20*time.Second, url, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func TestPythonExamplesVerifySignaturesAndDeduplicate(t *testing.T) {
	py := python(t)
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "python")
	port := redistest.FreePort(t)
	recvURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	startPython(t, py, "../examples/python/receiver.py", "SIDECAR_WEBHOOK_SECRET="+secret, fmt.Sprint("PORT=", port))
	waitHTTP(t, recvURL+"/health")
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_WEBHOOK_SECRET="+secret,
		"SIDECAR_CONFIG="+subscriberConfig(t, topic, recvURL+"/manual-sync", ""))

	out, err := exec.Command(py, "../examples/python/publisher.py", pub.url(""), topic, "5").CombinedOutput()
	if err != nil {
		t.Fatalf("publisher.py: %v\n%s", err, out)
	}
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r receipt
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.StreamID == "" {
			t.Fatalf("publisher.py printed %q", line)
		}
		ids = append(ids, r.ID)
	}
	var got struct {
		Events     []string `json:"events"`
		Duplicates int      `json:"duplicates"`
	}
	eventually.True(t, 15*time.Second, "5 verified deliveries", func() bool {
		resp, err := http.Get(recvURL + "/received")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&got) == nil && len(got.Events) == 5
	})
	if fmt.Sprint(got.Events) != fmt.Sprint(ids) {
		t.Fatalf("receiver got %v, want %v", got.Events, ids)
	}
	// A redelivery (same webhook-id) is acknowledged but not processed twice;
	// a forged signature is refused.
	body := []byte(`{"replay":true}`)
	ts := fmt.Sprint(time.Now().Unix())
	post := func(sig string) int {
		req, _ := http.NewRequest(http.MethodPost, recvURL+"/manual-sync", bytes.NewReader(body))
		req.Header.Set("webhook-id", ids[0])
		req.Header.Set("webhook-timestamp", ts)
		req.Header.Set("webhook-signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("v1,forged"); code != http.StatusUnauthorized {
		t.Fatalf("forged signature: got %d, want 401", code)
	}
	if code := post(signFor(t, ids[0], ts, body)); code != http.StatusOK {
		t.Fatalf("replayed delivery: got %d, want 200", code)
	}
	resp, _ := http.Get(recvURL + "/received")
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if len(got.Events) != 5 || got.Duplicates != 1 {
		t.Fatalf("after a replay: got %d events, %d duplicates; want 5 and 1", len(got.Events), got.Duplicates)
	}
}

func TestFogisStandInsEndToEnd(t *testing.T) {
	py := python(t)
	redis := redistest.StartProcess(t)
	calPort := redistest.FreePort(t)
	startPython(t, py, "../examples/fogis/calendar_sync.py", "HOST=127.0.0.1", fmt.Sprint("PORT=", calPort))
	calURL := fmt.Sprintf("http://127.0.0.1:%d", calPort)
	waitHTTP(t, calURL+"/health")
	// The example sidecar configs with this machine's addresses.
	cal := startSidecar(t, "calendar-sidecar", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+writeConfig(t, strings.NewReplacer(
		"http://calendar:5003", calURL).Replace(readFile(t, "../examples/fogis/calendar-sidecar.yaml"))))
	proc := startSidecar(t, "processor-sidecar", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+writeConfig(t, strings.NewReplacer(
		"http://calendar-sidecar:7700", cal.url("")).Replace(readFile(t, "../examples/fogis/processor-sidecar.yaml"))))
	out, err := runPython(py, "../examples/fogis/match_processor.py", "PROCESSOR_SIDECAR="+proc.url(""), "PUBLISH_COUNT=3", "PUBLISH_INTERVAL=0")
	if err != nil {
		t.Fatalf("match_processor.py: %v\n%s", err, out)
	}
	var got []struct {
		ID   string         `json:"id"`
		Body map[string]any `json:"body"`
	}
	eventually.True(t, 15*time.Second, "3 match updates at the calendar", func() bool {
		resp, err := http.Get(calURL + "/received")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&got) == nil && len(got) == 3
	})
	for i, g := range got {
		p, _ := g.Body["payload"].(map[string]any)
		if g.Body["type"] != "match_updates" || p["match_id"] != float64(1001+i) {
			t.Fatalf("update %d: got %v", i, g.Body)
		}
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func runPython(py, script string, env ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, script)
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

// TestDockerImage builds the Dockerfile and runs the image in dev mode. It
// needs a Docker engine; this development machine and its CI have only the
// docker client, so here it skips (the one skip CI allows, by the operations issue).
func TestDockerImage(t *testing.T) {
	pool, err := dockertest.NewPool("")
	if err == nil {
		err = pool.Client.Ping()
	}
	if err != nil {
		t.Skipf("no Docker engine (%v): the image test runs where one is available", err)
	}
	res, err := pool.BuildAndRunWithOptions("../Dockerfile", &dockertest.RunOptions{
		Name: "sidecar-image-test", Cmd: []string{"--dev"}, ExposedPorts: []string{"7700/tcp"},
	})
	if err != nil {
		t.Fatalf("build and run: %v", err)
	}
	t.Cleanup(func() { _ = pool.Purge(res) })
	url := "http://" + res.GetHostPort("7700/tcp")
	if err := pool.Retry(func() error {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	}); err != nil {
		t.Fatalf("container never ready: %v", err)
	}
	resp, err := http.Post(url+"/v1/publish/match.updated", "application/json", strings.NewReader(`{"m":1}`))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish into the container: %v %v", resp, err)
	}
}
