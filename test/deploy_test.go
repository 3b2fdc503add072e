package test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/fogis-sidecar/sidecar/internal/config"
)

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"../docker-compose.yml"}, cli.WithWorkingDirectory(".."), cli.WithName("sidecar-fogis"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := cli.ProjectFromOptions(context.Background(), opts)
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
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

func TestComposeFileIsSafeToRun(t *testing.T) {
	p := loadCompose(t)
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
	}
	cal := loadSidecarConfig(t, "../examples/fogis/calendar-sidecar.yaml", nil)
	if len(cal.Subscriptions) != 1 || cal.Subscriptions[0].URL != "http://calendar:5003/manual-sync" {
		t.Errorf("calendar sidecar subscriptions: %+v", cal.Subscriptions)
	}
	proc := loadSidecarConfig(t, "../examples/fogis/processor-sidecar.yaml", nil)
	if len(proc.Routes) != 1 || proc.Routes[0].Fallback != "http://calendar-sidecar:7700/v1/inbox/match.updated" {
		t.Errorf("processor sidecar routes: %+v", proc.Routes)
	}
	for _, name := range []string{"calendar", "processor"} {
		if _, err := p.GetService(name); err != nil {
			t.Errorf("example service %s missing", name)
		}
	}
	if c, _ := p.GetService("calendar"); c.HealthCheck == nil {
		t.Error("calendar has no healthcheck")
	}
}

func TestKubernetesManifestsParse(t *testing.T) {
	files, _ := filepath.Glob("../deployments/kubernetes/*.yaml")
	if len(files) < 3 {
		t.Fatalf("found %d manifests, want redis, calendar and processor", len(files))
	}
	kinds := map[string]int{}
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
				checkSidecarPod(t, f, o.Spec.Template.Spec)
			case *corev1.ConfigMap:
				p := filepath.Join(t.TempDir(), "sidecar.yaml")
				os.WriteFile(p, []byte(o.Data["sidecar.yaml"]), 0o600)
				loadSidecarConfig(t, p, nil)
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
	if kinds["Deployment"] != 2 || kinds["StatefulSet"] != 1 || kinds["ConfigMap"] != 2 {
		t.Fatalf("kinds: got %v", kinds)
	}
}

// checkSidecarPod asserts the native-sidecar shape of a pod.
func checkSidecarPod(t *testing.T, file string, pod corev1.PodSpec) {
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
}
