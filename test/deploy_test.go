package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/fogis-sidecar/sidecar/internal/config"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// loadCompose loads a compose file as docker compose would, relative to
// its own directory.
func loadCompose(t *testing.T, file, name string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{file}, cli.WithWorkingDirectory(filepath.Dir(file)), cli.WithName(name))
	if err != nil {
		t.Fatal(err)
	}
	p, err := cli.ProjectFromOptions(context.Background(), opts)
	if err != nil {
		t.Fatalf("%s does not load: %v", file, err)
	}
	return p
}

func env(s types.ServiceConfig, k string) string {
	if v := s.Environment[k]; v != nil {
		return *v
	}
	return ""
}

// loadSidecarConfig loads a sidecar YAML the way the binary does.
func loadSidecarConfig(t *testing.T, path string, extraEnv map[string]string) *config.Config {
	t.Helper()
	e := map[string]string{"SIDECAR_CONFIG": path}
	for k, v := range extraEnv {
		e[k] = v
	}
	var out bytes.Buffer
	c, err := config.Load(nil, func(k string) string { return e[k] }, "host", &out)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// The compose files: Redis mode (the current services) is the default,
// HTTP mode (the legacy services) the alternative.
var composeFiles = []struct{ file, name, mode string }{
	{"../docker-compose.yml", "sidecar-fogis", "redis"},
	{"../examples/fogis/docker-compose.http-mode.yml", "sidecar-fogis-http", "http"},
}

func TestComposeFileIsSafeToRun(t *testing.T) {
	for _, cf := range composeFiles {
		t.Run(filepath.Base(cf.file), func(t *testing.T) { checkCompose(t, cf.file, cf.name, cf.mode) })
	}
}

func checkCompose(t *testing.T, file, name, mode string) {
	p := loadCompose(t, file, name)
	redis, err := p.GetService("redis")
	if err != nil {
		t.Fatal(err)
	}
	cmd := strings.Join(redis.Command, " ")
	for _, want := range []string{"--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction", "--maxmemory "} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis command %q lacks %q", cmd, want)
		}
	}
	if !strings.HasPrefix(redis.Image, "redis:7") {
		t.Errorf("redis image %q, want redis:7", redis.Image)
	}
	if redis.HealthCheck == nil || len(redis.HealthCheck.Test) == 0 {
		t.Error("redis has no healthcheck")
	}
	if !slices.ContainsFunc(redis.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Type == "volume" && v.Target == "/data" }) {
		t.Errorf("redis data is not on a named volume: %+v", redis.Volumes)
	}

	consumers := map[string]bool{}
	cfgs := map[string]*config.Config{}
	for _, name := range []string{"calendar-sidecar", "processor-sidecar"} {
		s, err := p.GetService(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"SIDECAR_SERVICE", "SIDECAR_CONSUMER", "SIDECAR_CONFIG", "REDIS_URL", "SIDECAR_SPOOL_DIR", "SIDECAR_LISTEN"} {
			if env(s, k) == "" {
				t.Errorf("%s: %s not set", name, k)
			}
		}
		if mode == "redis" && strings.HasPrefix(env(s, "SIDECAR_LISTEN"), "0.0.0.0:") && env(s, "SIDECAR_API_TOKEN") == "" {
			t.Errorf("%s: listens on %s without SIDECAR_API_TOKEN", name, env(s, "SIDECAR_LISTEN"))
		}
		if consumers[env(s, "SIDECAR_CONSUMER")] {
			t.Errorf("%s: consumer name %q used twice", name, env(s, "SIDECAR_CONSUMER"))
		}
		consumers[env(s, "SIDECAR_CONSUMER")] = true
		if env(s, "REDIS_URL") != "redis://redis:6379/0" {
			t.Errorf("%s: REDIS_URL %q", name, env(s, "REDIS_URL"))
		}
		if s.HealthCheck == nil || strings.Join(s.HealthCheck.Test, " ") != "CMD /sidecar health" {
			t.Errorf("%s: healthcheck %+v, want the binary's own probe", name, s.HealthCheck)
		}
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == "volume" && strings.HasPrefix(env(s, "SIDECAR_SPOOL_DIR"), v.Target)
		}) {
			t.Errorf("%s: spool %s is not on a named volume", name, env(s, "SIDECAR_SPOOL_DIR"))
		}
		if dep, ok := s.DependsOn["redis"]; !ok || dep.Condition != "service_healthy" {
			t.Errorf("%s: does not wait for a healthy redis", name)
		}
		// The mounted sidecar YAML loads and agrees with the environment.
		var cfgFile string
		for _, v := range s.Volumes {
			if v.Target == env(s, "SIDECAR_CONFIG") {
				cfgFile = v.Source
			}
		}
		if cfgFile == "" {
			t.Fatalf("%s: SIDECAR_CONFIG %s is not mounted", name, env(s, "SIDECAR_CONFIG"))
		}
		c := loadSidecarConfig(t, cfgFile, nil)
		if c.Service != env(s, "SIDECAR_SERVICE") {
			t.Errorf("%s: YAML service %q, env %q", name, c.Service, env(s, "SIDECAR_SERVICE"))
		}
		cfgs[name] = c
	}
	services := map[string]types.ServiceConfig{}
	for _, name := range []string{"calendar", "processor", "fogis-api"} {
		s, err := p.GetService(name)
		if err != nil {
			t.Fatalf("example service %s missing", name)
		}
		services[name] = s
		if _, ok := s.Environment["CI"]; ok {
			t.Errorf("%s: CI is set; the processor would run in test mode", name)
		}
	}
	if services["calendar"].HealthCheck == nil {
		t.Error("calendar has no healthcheck")
	}
	proc, cal := services["processor"], services["calendar"]
	procSC, calSC := cfgs["processor-sidecar"], cfgs["calendar-sidecar"]
	switch mode {
	case "redis":
		// Each service's REDIS_URL is its sidecar's Redis-protocol port,
		// with the sidecar's API token as the password (the sidecar listens
		// on 0.0.0.0, so it has one, and its RESP port then wants AUTH).
		for _, c := range []struct {
			svc  types.ServiceConfig
			sc   *config.Config
			host string
		}{{proc, procSC, "processor-sidecar"}, {cal, calSC, "calendar-sidecar"}} {
			_, port, _ := net.SplitHostPort(c.sc.RespListen)
			token := env(p.Services[c.host], "SIDECAR_API_TOKEN")
			if want := "redis://:" + token + "@" + c.host + ":" + port; port == "" || token == "" || env(c.svc, "REDIS_URL") != want {
				t.Errorf("%s: REDIS_URL %q, resp.listen %q, token %q: want %s", c.svc.Name, env(c.svc, "REDIS_URL"), c.sc.RespListen, token, want)
			}
		}
		// /v1/status is reachable from the host, and only from it.
		for _, name := range []string{"processor-sidecar", "calendar-sidecar"} {
			s := p.Services[name]
			_, port, _ := net.SplitHostPort(env(s, "SIDECAR_LISTEN"))
			if !slices.ContainsFunc(s.Ports, func(pc types.ServicePortConfig) bool {
				return pc.HostIP == "127.0.0.1" && pc.Published != "" && fmt.Sprint(pc.Target) == port
			}) {
				t.Errorf("%s: no port published on 127.0.0.1 for its API (%s): %+v", name, env(s, "SIDECAR_LISTEN"), s.Ports)
			}
		}
		if env(proc, "REDIS_ENABLED") != "true" {
			t.Errorf("processor: REDIS_ENABLED %q, want true (its default is false)", env(proc, "REDIS_ENABLED"))
		}
		// The calendar subscribes once, at start: its sidecar first.
		if dep, ok := cal.DependsOn["calendar-sidecar"]; !ok || dep.Condition != "service_healthy" || !dep.Restart {
			t.Errorf("calendar: does not start after a healthy calendar-sidecar (and restart with it): %+v", cal.DependsOn)
		}
		// A webhook subscription in the calendar's group would make the
		// sidecar refuse the calendar's SUBSCRIBE of that topic.
		for _, sub := range calSC.Subscriptions {
			if sub.Group == calSC.Service {
				t.Errorf("calendar sidecar: subscription %s in group %s takes the topic from SUBSCRIBE", sub.Topic, sub.Group)
			}
		}
	case "http":
		if env(proc, "PHONEBOOK_SYNC_SERVICE_URL") != "http://processor-sidecar:7700" {
			t.Errorf("processor: PHONEBOOK_SYNC_SERVICE_URL %q", env(proc, "PHONEBOOK_SYNC_SERVICE_URL"))
		}
		if _, set := proc.Environment["REDIS_ENABLED"]; set {
			t.Error("processor: REDIS_ENABLED set in HTTP mode")
		}
		if len(procSC.Routes) != 1 || procSC.Routes[0].Path != "/sync" || procSC.Routes[0].Response == nil ||
			procSC.Routes[0].Response.Status != 200 || procSC.Upstream != "http://calendar:5003" {
			t.Fatalf("processor sidecar: routes %+v upstream %q", procSC.Routes, procSC.Upstream)
		}
		if len(calSC.Subscriptions) != 1 || calSC.Subscriptions[0].Topic != procSC.Routes[0].Topic ||
			calSC.Subscriptions[0].URL != "http://calendar:5003/sync" {
			t.Errorf("calendar sidecar subscriptions: %+v", calSC.Subscriptions)
		}
	}
}

// TestFogisSidecarConfigs: the example sidecar YAMLs say what docs/fogis.md says.
func TestFogisSidecarConfigs(t *testing.T) {
	for _, file := range []string{"processor-sidecar.redis-mode.yaml", "calendar-sidecar.redis-mode.yaml"} {
		if c := loadSidecarConfig(t, "../examples/fogis/"+file, nil); c.RespListen != "0.0.0.0:6379" || len(c.Subscriptions) != 0 || len(c.Routes) != 0 {
			t.Errorf("%s: resp.listen %q, %d subscriptions, %d routes", file, c.RespListen, len(c.Subscriptions), len(c.Routes))
		}
	}
	ms := loadSidecarConfig(t, "../examples/fogis/calendar-sidecar.manual-sync.yaml", nil)
	if len(ms.Subscriptions) != 1 {
		t.Fatalf("manual-sync: %d subscriptions", len(ms.Subscriptions))
	}
	if s := ms.Subscriptions[0]; s.Topic != "fogis:matches:updates" || s.URL != "http://calendar:5003/manual-sync" ||
		s.Body != "/payload" || s.Concurrency != 1 || s.Timeout < 5*time.Minute || s.RetryFor != 24*time.Hour {
		t.Errorf("manual-sync subscription: %+v", s)
	}
	proc := loadSidecarConfig(t, "../examples/fogis/processor-sidecar.http-mode.yaml", nil)
	if r := proc.Routes[0].Response; r.Body != `{"status":"success"}` || r.ContentType != "application/json" {
		t.Errorf("http-mode route response: %+v", r)
	}
	cal := loadSidecarConfig(t, "../examples/fogis/calendar-sidecar.http-mode.yaml", nil)
	if s := cal.Subscriptions[0]; s.Timeout < 10*time.Minute || s.Concurrency != 1 {
		t.Errorf("http-mode subscription: timeout %v concurrency %d, want room for a whole legacy sync, one at a time", s.Timeout, s.Concurrency)
	}
}

// TestKubernetesManifestsParse: deployments/kubernetes is Redis mode (plus
// redis.yaml and a stub of the FOGIS API); deployments/kubernetes/http-mode
// replaces processor.yaml and calendar.yaml for HTTP mode.
func TestKubernetesManifestsParse(t *testing.T) {
	for _, tc := range []struct {
		dir   string
		mode  string
		kinds map[string]int
	}{
		{"../deployments/kubernetes", "redis", map[string]int{"Deployment": 3, "StatefulSet": 1, "ConfigMap": 2, "Service": 2}},
		{"../deployments/kubernetes/http-mode", "http", map[string]int{"Deployment": 2, "ConfigMap": 2, "Service": 1}},
	} {
		t.Run(tc.mode, func(t *testing.T) { checkManifests(t, tc.dir, tc.mode, tc.kinds) })
	}
}

func checkManifests(t *testing.T, dir, mode string, wantKinds map[string]int) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	kinds := map[string]int{}
	sidecars := map[string]*config.Config{} // ConfigMap name -> its sidecar.yaml
	var deployments []*appsv1.Deployment
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(raw), "\n---\n") {
			var meta struct{ Kind string }
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s doc %d: %v", f, i, err)
			}
			kinds[meta.Kind]++
			var obj any
			switch meta.Kind {
			case "Deployment":
				obj = &appsv1.Deployment{}
			case "StatefulSet":
				obj = &appsv1.StatefulSet{}
			case "Service":
				obj = &corev1.Service{}
			case "ConfigMap":
				obj = &corev1.ConfigMap{}
			default:
				t.Fatalf("%s doc %d: unexpected kind %q", f, i, meta.Kind)
			}
			// Strict: an unknown or misspelt field fails, as kubectl would.
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s doc %d (%s): %v", f, i, meta.Kind, err)
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				deployments = append(deployments, o)
			case *corev1.ConfigMap:
				p := filepath.Join(t.TempDir(), "sidecar.yaml")
				os.WriteFile(p, []byte(o.Data["sidecar.yaml"]), 0o600)
				sidecars[o.Name] = loadSidecarConfig(t, p, nil)
			case *appsv1.StatefulSet:
				args := strings.Join(o.Spec.Template.Spec.Containers[0].Args, " ")
				if !strings.Contains(args, "--maxmemory-policy noeviction") || !strings.Contains(args, "--appendonly yes") {
					t.Errorf("%s: redis args %q", f, args)
				}
				if len(o.Spec.VolumeClaimTemplates) == 0 {
					t.Errorf("%s: redis has no persistent volume", f)
				}
			}
		}
	}
	if fmt.Sprint(kinds) != fmt.Sprint(wantKinds) {
		t.Fatalf("kinds: got %v, want %v", kinds, wantKinds)
	}
	for _, d := range deployments {
		name := d.Name
		if name != "processor" && name != "calendar" {
			continue // the FOGIS API stub has no sidecar
		}
		pod := d.Spec.Template.Spec
		sc := checkSidecarPod(t, name, pod)
		cfg := sidecars[name+"-sidecar"]
		if cfg == nil {
			t.Fatalf("%s: no ConfigMap %s-sidecar", name, name)
		}
		svc := containerEnv(pod.Containers[0])
		if _, ok := svc["CI"]; ok {
			t.Errorf("%s: CI is set; the processor would run in test mode", name)
		}
		switch {
		case mode == "redis":
			// The service's REDIS_URL is its sidecar's Redis-protocol port, in
			// the pod; the service starts after the sidecar's startup probe.
			_, port, _ := net.SplitHostPort(cfg.RespListen)
			if want := "redis://127.0.0.1:" + port; !strings.HasPrefix(cfg.RespListen, "127.0.0.1:") || svc["REDIS_URL"] != want {
				t.Errorf("%s: REDIS_URL %q, resp.listen %q", name, svc["REDIS_URL"], cfg.RespListen)
			}
			if sc.StartupProbe == nil {
				t.Errorf("%s: the sidecar has no startup probe: the service may start before port %s is open", name, port)
			}
			if name == "processor" && svc["REDIS_ENABLED"] != "true" {
				t.Errorf("processor: REDIS_ENABLED %q, want true", svc["REDIS_ENABLED"])
			}
		case mode == "http" && name == "processor":
			if want := "http://" + containerEnv(*sc)["SIDECAR_LISTEN"]; svc["PHONEBOOK_SYNC_SERVICE_URL"] != want {
				t.Errorf("processor: PHONEBOOK_SYNC_SERVICE_URL %q, want its sidecar %s", svc["PHONEBOOK_SYNC_SERVICE_URL"], want)
			}
			if len(cfg.Routes) != 1 || cfg.Routes[0].Response == nil || cfg.Routes[0].Response.Status != 200 || cfg.Upstream == "" {
				t.Errorf("processor sidecar: routes %+v, upstream %q", cfg.Routes, cfg.Upstream)
			}
		}
	}
}

func containerEnv(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

// checkSidecarPod asserts the native-sidecar shape of a pod.
func checkSidecarPod(t *testing.T, file string, pod corev1.PodSpec) *corev1.Container {
	t.Helper()
	var sc *corev1.Container
	for i := range pod.InitContainers {
		if pod.InitContainers[i].Name == "sidecar" {
			sc = &pod.InitContainers[i]
		}
	}
	if sc == nil || sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("%s: no native sidecar (initContainer with restartPolicy Always)", file)
	}
	if sc.ReadinessProbe == nil || sc.LivenessProbe == nil {
		t.Errorf("%s: sidecar probes missing", file)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds < 15 {
		t.Errorf("%s: termination grace too short for the sidecar to drain", file)
	}
	consumerFromPod := false
	for _, e := range sc.Env {
		if e.Name == "SIDECAR_CONSUMER" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
			consumerFromPod = true
		}
	}
	if !consumerFromPod {
		t.Errorf("%s: SIDECAR_CONSUMER is not the pod name (replicas would share a consumer)", file)
	}
	return sc
}

// The image's user and the passwd/group lines the Dockerfile's build stage
// writes; the offline build context carries the same lines.
const (
	containerUID    = "65532"
	containerPasswd = "nonroot:x:65532:65532:nonroot:/data:/sbin/nologin"
	containerGroup  = "nonroot:x:65532:"
)

// TestContainerImage builds the Dockerfile's runtime stage — the stage that
// ships — with no registry (SIDECAR_BINARY=prebuilt: a static binary built
// here, CA certificates from this host) and runs it as shipped: its own
// numeric user, the spool on a named volume, its HEALTHCHECK. On the host
// network it publishes through a redis-server and delivers to a webhook
// receiver, spools while Redis is down and drains when Redis returns, and
// exits 0 on docker stop. It starts its own dockerd (vfs, no bridge, no
// iptables) when no engine answers; it skips (fails under CI=true) only
// when there is no engine and dockerd cannot start.
func TestContainerImage(t *testing.T) {
	if !strings.Contains(readFile(t, "../Dockerfile"), containerPasswd) || !strings.Contains(readFile(t, "../Dockerfile"), containerGroup) {
		t.Fatalf("the Dockerfile no longer writes %q / %q: keep the offline context in step", containerPasswd, containerGroup)
	}
	start := time.Now()
	d := startDockerEngine(t)
	engineAt := time.Since(start)

	// The build context is the tree the Dockerfile's build stage lays out in /out.
	ctxDir := t.TempDir()
	bin := filepath.Join(ctxDir, "sidecar")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=image-test", "-o", bin, "../cmd/sidecar")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	certs, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		redistest.SkipOrFail(t, "the image needs this host's CA bundle (apt-get install ca-certificates): "+err.Error())
	}
	for p, b := range map[string]string{"etc/passwd": containerPasswd + "\n", "etc/group": containerGroup + "\n", "etc/ssl/certs/ca-certificates.crt": string(certs)} {
		mustWrite(t, filepath.Join(ctxDir, p), b, 0o644)
	}
	if err := os.MkdirAll(filepath.Join(ctxDir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	suffix := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	tag, name, vol := "sidecar-image-test:"+suffix, "sidecar-image-test-"+suffix, "sidecar-image-test-"+suffix
	buildStart := time.Now()
	builder := d.buildOffline(t, ctxDir, tag)
	buildTook := time.Since(buildStart)
	t.Cleanup(func() { _, _ = d.cmd("rmi", "-f", tag) })

	var cfg struct {
		User        string
		Env         []string
		Volumes     map[string]struct{}
		Healthcheck struct{ Test []string }
		Entrypoint  []string
	}
	d.inspect(t, "image", tag, "{{json .Config}}", &cfg)
	if cfg.User != containerUID+":"+containerUID || !slices.Contains(cfg.Env, "SIDECAR_SPOOL_DIR=/data/spool") ||
		!slices.Contains(cfg.Env, "SIDECAR_LISTEN=0.0.0.0:7700") || cfg.Volumes == nil ||
		strings.Join(cfg.Healthcheck.Test, " ") != "CMD /sidecar health" || strings.Join(cfg.Entrypoint, " ") != "/sidecar" {
		t.Fatalf("image config: %+v", cfg)
	}
	if _, ok := cfg.Volumes["/data"]; !ok {
		t.Fatalf("image volumes %v, want /data", cfg.Volumes)
	}

	redis := redistest.StartProcess(t)
	rc := newReceiver(t)
	topic := redistest.UniqueTopic(t, "image")
	const token = "image-test-token"
	// 0644: the container's user 65532 reads it through the bind mount.
	conf := filepath.Join(t.TempDir(), "sidecar.yaml")
	mustWrite(t, conf, fmt.Sprintf("service: calendar\nsubscriptions:\n  - topic: %s\n    url: %s\n    backoff: {initial: 20ms, max: 200ms}\n", topic, rc.url()), 0o644)
	port := redistest.FreePort(t)
	if _, err := d.cmd("volume", "create", vol); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = d.cmd("volume", "rm", "-f", vol) })
	// The image's own user and spool directory: neither --user nor
	// SIDECAR_SPOOL_DIR is given. The listen address keeps the image's
	// 0.0.0.0 on a free port (the host network is shared with other tests).
	if out, err := d.cmd("run", "-d", "--name", name, "--network", "host", "-v", vol+":/data",
		"-v", conf+":/etc/sidecar/sidecar.yaml:ro", "-e", "SIDECAR_CONFIG=/etc/sidecar/sidecar.yaml",
		"-e", "REDIS_URL="+redis.URL, "-e", "SIDECAR_API_TOKEN="+token, "-e", "SIDECAR_WEBHOOK_SECRET="+secret,
		"-e", fmt.Sprintf("SIDECAR_LISTEN=0.0.0.0:%d", port), "-e", "SIDECAR_LOG_LEVEL=debug", tag); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := d.cmd("logs", "--tail", "60", name)
			t.Logf("---- container log ----\n%s", logs)
		}
		_, _ = d.cmd("rm", "-f", "-v", name)
	})
	sc := &sidecar{t: t, name: "container", addr: fmt.Sprintf("127.0.0.1:%d", port)}
	runStart := time.Now()
	eventually.True(t, 30*time.Second, "the container's /healthz", func() bool {
		if st := d.state(t, name); st.Status == "exited" || st.Status == "dead" {
			t.Fatalf("container %s (exit %d)", st.Status, st.ExitCode)
		}
		resp, err := http.Get(sc.url("/healthz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// The process runs as 65532, not root: the kernel's view of it.
	st := d.state(t, name)
	status := readFile(t, fmt.Sprintf("/proc/%d/status", st.Pid))
	for _, key := range []string{"Uid:", "Gid:"} {
		want := key + strings.Repeat("\t"+containerUID, 4)
		if !strings.Contains(status, want+"\n") {
			t.Fatalf("container process %d: want %q in /proc status:\n%s", st.Pid, want, status)
		}
	}
	// The volume holds the spool, created by the sidecar as 65532.
	mp := strings.TrimSpace(d.mustCmd(t, "volume", "inspect", "-f", "{{.Mountpoint}}", vol))
	eventually.True(t, 10*time.Second, "the spool directory on the volume", func() bool {
		_, err := os.Stat(filepath.Join(mp, "spool", "ID"))
		return err == nil
	})
	for _, p := range []string{mp, filepath.Join(mp, "spool")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if s := fi.Sys().(*syscall.Stat_t); fmt.Sprint(s.Uid) != containerUID || fmt.Sprint(s.Gid) != containerUID {
			t.Fatalf("%s owned by %d:%d, want %s:%s", p, s.Uid, s.Gid, containerUID, containerUID)
		}
	}
	var health string
	eventually.True(t, 60*time.Second, "HEALTHCHECK healthy", func() bool {
		health = d.state(t, name).Health.Status
		return health == "healthy"
	})
	healthyAt := time.Since(runStart)

	// The API wants the token (it listens on 0.0.0.0).
	if code, r := sc.publish(topic, body(0)); code != http.StatusUnauthorized || r.Code == "" {
		t.Fatalf("publish without the token: got %d %+v, want 401 with a code", code, r)
	}
	auth := []string{"Authorization", "Bearer " + token}
	first := sc.mustPublish(topic, body(1), auth...)
	eventually.True(t, 20*time.Second, "delivery from the container", func() bool { return rc.count() >= 1 })
	got := rc.all()[0]
	if got.Header.Get("webhook-id") != first.ID || string(got.Body) != string(body(1)) {
		t.Fatalf("delivery: id %q body %q, want %s %q", got.Header.Get("webhook-id"), got.Body, first.ID, body(1))
	}
	if sig := signFor(t, first.ID, got.Header.Get("webhook-timestamp"), got.Body); got.Header.Get("webhook-signature") != sig {
		t.Fatalf("webhook-signature %q, want %q", got.Header.Get("webhook-signature"), sig)
	}

	// Redis down: the publish is spooled — on the volume — and drained when
	// Redis is back (a new, empty Redis on the same port).
	redis.Kill()
	code, spooled := sc.publish(topic, body(2), auth...)
	if code != http.StatusAccepted || !spooled.Spooled || spooled.ID == "" {
		t.Fatalf("publish with Redis down: got %d %+v, want 202 spooled", code, spooled)
	}
	if !spoolHolds(t, filepath.Join(mp, "spool"), spooled.ID) {
		t.Fatalf("event %s is not in a spool segment on the volume %s", spooled.ID, mp)
	}
	redis.Restart()
	eventually.True(t, 60*time.Second, "the spooled event delivered after Redis returned", func() bool { return rc.count() >= 2 })
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show
	if gotIDs := ids(rc.all()); fmt.Sprint(gotIDs) != fmt.Sprint([]string{first.ID, spooled.ID}) {
		t.Fatalf("deliveries %v, want [%s %s] exactly", gotIDs, first.ID, spooled.ID)
	}
	if b := rc.all()[1].Body; string(b) != string(body(2)) {
		t.Fatalf("drained body %q, want %q", b, body(2))
	}

	// docker stop sends SIGTERM to PID 1, the sidecar: it drains and exits 0.
	if out, err := d.cmd("stop", "-t", "30", name); err != nil {
		t.Fatalf("docker stop: %v\n%s", err, out)
	}
	if st := d.state(t, name); st.Status != "exited" || st.ExitCode != 0 {
		t.Fatalf("after docker stop: %s, exit %d; want exited 0", st.Status, st.ExitCode)
	}
	t.Logf("measured: engine %s (%s) ready in %v; offline build (%s) %v; container healthy %v after docker run; whole test %v",
		d.version, d.how, engineAt.Round(time.Millisecond), builder, buildTook.Round(time.Millisecond),
		healthyAt.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

func mustWrite(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// spoolHolds reports whether a spool segment under dir contains s.
func spoolHolds(t *testing.T, dir, s string) bool {
	t.Helper()
	found := false
	_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasSuffix(p, ".seg") {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(s)) {
				found = true
			}
		}
		return nil
	})
	return found
}

// dockerEngine is a Docker engine the test talks to through the docker CLI.
type dockerEngine struct {
	clients []string // docker CLIs on this machine, PATH order
	cli     string   // the one in use (the one that built the image)
	env     []string
	how     string // "own dockerd …" or "running engine"
	version string
}

// startDockerEngine returns the engine at DOCKER_HOST or the default socket
// if one answers, else a dockerd of the test's own (stopped at the end).
func startDockerEngine(t *testing.T) *dockerEngine {
	t.Helper()
	d := &dockerEngine{}
	for _, p := range append(filepath.SplitList(os.Getenv("PATH")), "/usr/bin", "/usr/local/bin") {
		c := filepath.Join(p, "docker")
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() && !slices.Contains(d.clients, c) {
			d.clients = append(d.clients, c)
		}
	}
	if len(d.clients) == 0 {
		redistest.SkipOrFail(t, "no docker CLI: apt-get install docker.io (the test then starts dockerd itself, as root)")
	}
	d.cli = d.clients[0]
	// A private client config: no credential helpers, contexts or plugins
	// settings of the user's leak in.
	d.env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir())
	if v, err := d.cmd("version", "--format", "{{.Server.Version}}"); err == nil {
		d.how, d.version = "running engine", strings.TrimSpace(v)
		return d
	}
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		dockerd = "/usr/sbin/dockerd"
		if _, err := os.Stat(dockerd); err != nil {
			redistest.SkipOrFail(t, "no Docker engine answers and no dockerd to start: apt-get install docker.io (the test starts dockerd --storage-driver=vfs itself, as root)")
		}
	}
	if os.Geteuid() != 0 {
		redistest.SkipOrFail(t, "no Docker engine answers and dockerd needs root: run as root, or start an engine and set DOCKER_HOST")
	}
	// A short path: the unix sockets below must fit in 108 bytes. Not
	// t.TempDir: removing it is best effort (a lingering mount must not fail the test).
	dir, err := os.MkdirTemp("", "sc-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	ns := filepath.Base(dir) // own containerd namespace, should a system containerd be shared
	mustWrite(t, filepath.Join(dir, "daemon.json"), "{}\n", 0o644)
	sock := filepath.Join(dir, "docker.sock")
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dockerd, "--storage-driver=vfs", "--iptables=false", "--bridge=none",
		"--config-file", filepath.Join(dir, "daemon.json"), "--data-root", filepath.Join(dir, "root"),
		"--exec-root", filepath.Join(dir, "exec"), "--pidfile", filepath.Join(dir, "dockerd.pid"),
		"--containerd-namespace", ns, "--containerd-plugins-namespace", ns+"-plugins", "-H", "unix://"+sock)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its containerd goes with it
	if err := cmd.Start(); err != nil {
		redistest.SkipOrFail(t, "dockerd does not start: "+err.Error())
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("---- dockerd log ----\n%s", tail(b, 40))
		}
		logf.Close()
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("leaving %s: %v", dir, err)
		}
	})
	d.env = append(d.env, "DOCKER_HOST=unix://"+sock)
	d.how = "own dockerd, vfs, " + dir
	deadline := time.Now().Add(60 * time.Second)
	for {
		v, err := d.cmd("version", "--format", "{{.Server.Version}}")
		if err == nil {
			d.version = strings.TrimSpace(v)
			return d
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			redistest.SkipOrFail(t, "dockerd exited at start (it needs root and a kernel that lets it create containers):\n"+tail(b, 20))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			redistest.SkipOrFail(t, fmt.Sprintf("dockerd did not answer within 60s: %v\n%s", err, tail(b, 20)))
		}
	}
}

// unmountUnder detaches what dockerd left mounted under dir (it keeps the
// host network namespace bind-mounted in its exec-root after it exits).
func unmountUnder(t *testing.T, dir string) {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(raw), "\n") {
		// Field 5 is the mount point (octal escapes aside: these paths have none).
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for _, p := range slices.Backward(points) { // innermost first
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", p, err)
		}
	}
}

// cmd runs the docker CLI in use against the engine and returns its combined output.
func (d *dockerEngine) cmd(args ...string) (string, error) {
	return d.cmdWith(d.cli, nil, args...)
}

func (d *dockerEngine) cmdWith(cli string, extraEnv []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, cli, args...)
	c.Env = append(append([]string(nil), d.env...), extraEnv...)
	out, err := c.CombinedOutput()
	return string(out), err
}

func (d *dockerEngine) mustCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.cmd(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// buildOffline builds the runtime stage from ctxDir with BuildKit, which
// builds only the stages the target needs (the classic builder would run
// FROM golang:1.26 first and fail without a registry). The first docker CLI
// that can drive BuildKit does: Debian's docker.io client has it built in, a
// newer client needs the buildx plugin. Returns which builder ran.
func (d *dockerEngine) buildOffline(t *testing.T, ctxDir, tag string) string {
	t.Helper()
	var tried []string
	for _, cli := range d.clients {
		out, err := d.cmdWith(cli, []string{"DOCKER_BUILDKIT=1"}, "build", "-f", "../Dockerfile", "--target", "runtime",
			"--build-arg", "SIDECAR_BINARY=prebuilt", "-t", tag, ctxDir)
		if err == nil {
			d.cli = cli
			v, _ := d.cmd("version", "--format", "{{.Client.Version}}")
			return fmt.Sprintf("BuildKit, docker CLI %s %s", cli, strings.TrimSpace(v))
		}
		tried = append(tried, fmt.Sprintf("%s: %v\n%s", cli, err, tail([]byte(out), 15)))
	}
	t.Fatalf("no docker CLI here builds the runtime stage offline with BuildKit:\n%s", strings.Join(tried, "\n"))
	return ""
}

func (d *dockerEngine) inspect(t *testing.T, kind, name, format string, v any) {
	t.Helper()
	out := d.mustCmd(t, kind, "inspect", "--format", format, name)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%s inspect %s: %v: %s", kind, name, err, out)
	}
}

// containerState is the part of docker inspect's .State the test reads.
type containerState struct {
	Status   string
	Pid      int
	ExitCode int
	Health   struct{ Status string }
}

func (d *dockerEngine) state(t *testing.T, name string) containerState {
	t.Helper()
	var st containerState
	d.inspect(t, "container", name, "{{json .State}}", &st)
	return st
}
