package test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/fogis-sidecar/sidecar/internal/config"
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
		// Each service's REDIS_URL is its sidecar's Redis-protocol port.
		for _, c := range []struct {
			svc  types.ServiceConfig
			sc   *config.Config
			host string
		}{{proc, procSC, "processor-sidecar"}, {cal, calSC, "calendar-sidecar"}} {
			_, port, _ := net.SplitHostPort(c.sc.RespListen)
			if want := "redis://" + c.host + ":" + port; port == "" || env(c.svc, "REDIS_URL") != want {
				t.Errorf("%s: REDIS_URL %q, resp.listen %q: want %s", c.svc.Name, env(c.svc, "REDIS_URL"), c.sc.RespListen, want)
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
