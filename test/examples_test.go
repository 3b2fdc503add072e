package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

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

// TestFogisStandInsEndToEnd runs the FOGIS pair of each compose file
// (docker-compose.yml: Redis mode; examples/fogis/docker-compose.http-mode.yml:
// HTTP mode) as local processes: the stand-ins with the environment the
// compose file gives them and the sidecars with the YAML it mounts, host
// names replaced by this machine's addresses. The processor's first cycle
// finds a new match and the calendar syncs it.
func TestFogisStandInsEndToEnd(t *testing.T) {
	py := fogisPythons(t)[0]
	for _, cf := range composeFiles {
		t.Run(cf.mode+" mode", func(t *testing.T) { fogisCompose(t, py, cf.file, cf.name, cf.mode) })
	}
}

func fogisCompose(t *testing.T, py fogisPy, file, name, mode string) {
	p := loadCompose(t, file, name)
	service := func(name string) types.ServiceConfig {
		s, err := p.GetService(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	redis := fogisRedis(t)
	api := startFogisAPI(t, py)
	calPort := redistest.FreePort(t)
	hosts := []string{"redis://redis:6379/0", redis.URL, "http://fogis-api:8080", api.base,
		"http://calendar:5003", fmt.Sprintf("http://127.0.0.1:%d", calPort)}
	// The sidecars, the calendar's first: in Redis mode the calendar
	// subscribes once, at start.
	for _, name := range []string{"calendar-sidecar", "processor-sidecar"} {
		s := service(name)
		var yaml string
		for _, v := range s.Volumes {
			if v.Target == env(s, "SIDECAR_CONFIG") {
				yaml = readFile(t, v.Source)
			}
		}
		yaml = strings.NewReplacer(hosts...).Replace(yaml)
		e := []string{"REDIS_URL=" + redis.URL, "SIDECAR_CONFIG=" + writeConfig(t, yaml),
			"SIDECAR_SERVICE=" + env(s, "SIDECAR_SERVICE"), "SIDECAR_CONSUMER=" + env(s, "SIDECAR_CONSUMER"),
			"SIDECAR_API_TOKEN=" + env(s, "SIDECAR_API_TOKEN")}
		if strings.Contains(yaml, "\nresp:") {
			resp := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
			e = append(e, "SIDECAR_RESP_LISTEN="+resp)
			hosts = append(hosts, "redis://"+name+":6379", "redis://"+resp, "@"+name+":6379", "@"+resp)
		}
		sc := startSidecar(t, name, e...)
		hosts = append(hosts, "http://"+name+":7700", sc.url(""))
	}
	composeEnv := func(s types.ServiceConfig) []string {
		rep := strings.NewReplacer(hosts...)
		var out []string
		for k, v := range s.Environment {
			if v != nil {
				out = append(out, k+"="+rep.Replace(*v))
			}
		}
		return out
	}
	calEnv := composeEnv(service("calendar"))
	if mode == "http" {
		// The compose network's alias fogis-redis: the legacy calendar's own
		// subscriber on its default REDIS_URL.
		calEnv = append(calEnv, "REDIS_URL="+redis.URL)
	}
	cal := calendar{startStandIn(t, py, "calendar", "calendar_sync.py", calPort, "/health", append(calEnv,
		"FLASK_HOST=127.0.0.1", fmt.Sprint("FLASK_PORT=", calPort), "GOOGLE_CALENDAR_TOKEN_FILE="+stubToken(t))...)}
	proc := startProcessor(t, py, "processor", api, true, append(composeEnv(service("processor")),
		"SERVICE_INTERVAL=1", "DATA_FOLDER="+t.TempDir())...)
	if mode == "redis" {
		s := cal.waitSync("redis", "15:00", true)
		t.Logf("measured: compose Redis mode: the first update reached the calendar %v after the processor started",
			secs(s.At-float64(proc.started.UnixNano())/1e9))
		return
	}
	poll(t, 30*time.Second, "the calendar's /sync run", func() bool {
		for _, s := range cal.syncs() {
			if s.Via == "sync" && s.Success {
				return true
			}
		}
		return false
	})
	if l := proc.logText(); !strings.Contains(l, "Contact sync process completed successfully.") || strings.Contains(l, "Contact sync process failed") {
		t.Fatalf("processor:\n%s", proc.logTail(20))
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
