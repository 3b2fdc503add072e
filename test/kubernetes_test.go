package test

// The Kubernetes manifests, decoded strictly with the API types and held to
// the mistakes that kept them from starting (issue 13): each policy is a
// function that lists what it finds, run on the manifests (want nothing)
// and on the manifests with one such mistake put back (want it found).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	k8sjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const (
	k8sDir = "../deployments/kubernetes"
	// sidecarImageRepo is what the repository's Dockerfile builds.
	sidecarImageRepo = "ghcr.io/fogis-sidecar/sidecar"
	// ownImagePrefix: images built from this repository, explained in
	// deployments/kubernetes/README.md.
	ownImagePrefix = "ghcr.io/fogis-sidecar/"
	// imageUID is the numeric user the Dockerfile's runtime stage runs as.
	imageUID = 65532
	// redisHeadroomPercent: an AOF rewrite forks Redis, and copy-on-write
	// pages count against the same memory limit.
	redisHeadroomPercent = 60
)

// k8sKinds are the objects the manifests may hold, by apiVersion/kind.
// Anything else fails the decode: a kind the test does not know is a kind
// it cannot check.
var k8sKinds = map[string]func() any{
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                     func() any { return &corev1.Secret{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"v1/PersistentVolumeClaim":      func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/ServiceAccount":             func() any { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":           func() any { return &appsv1.StatefulSet{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
}

// k8sManifests is one set of files applied together, decoded.
type k8sManifests struct {
	raw        map[string]string // file -> text, for the comment checks
	readme     string            // deployments/kubernetes/README.md
	envNames   map[string]bool   // every environment variable the sidecar reads
	tmp        string
	services   []*corev1.Service
	configMaps []*corev1.ConfigMap
	sets       []*appsv1.StatefulSet
	pods       []k8sPod
}

// k8sPod is the pod template of a Deployment or StatefulSet.
type k8sPod struct {
	where  string // "file: Kind/name"
	labels map[string]string
	spec   *corev1.PodSpec
}

// decodeK8s decodes every document of a multi-document YAML file into its
// typed object; unknown fields, duplicate keys and unknown kinds are errors.
func decodeK8s(file string, raw []byte) ([]any, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var objs []any
	for i := 0; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s doc %d: %w", file, i, err)
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("%s doc %d: %w", file, i, err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue // only comments
		}
		var tm struct{ APIVersion, Kind string }
		if err := json.Unmarshal(js, &tm); err != nil {
			return nil, fmt.Errorf("%s doc %d: %w", file, i, err)
		}
		newObj, ok := k8sKinds[tm.APIVersion+"/"+tm.Kind]
		if !ok {
			return nil, fmt.Errorf("%s doc %d: unknown kind %s/%s", file, i, tm.APIVersion, tm.Kind)
		}
		// The API server's own decoder: case-sensitive (encoding/json would
		// take "targetport" for targetPort), unknown and duplicate fields
		// are errors, as with kubectl apply --validate=strict.
		obj := newObj()
		strict, err := k8sjson.UnmarshalStrict(js, obj)
		if err == nil {
			err = errors.Join(strict...)
		}
		if err != nil {
			return nil, fmt.Errorf("%s doc %d (%s): %w", file, i, tm.Kind, err)
		}
		objs = append(objs, obj)
	}
}

// loadK8s decodes the files of one set.
func loadK8s(t *testing.T, files []string) *k8sManifests {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(k8sDir, "README.md"))
	if err != nil && !errors.Is(err, os.ErrNotExist) { // none: checkImages finds no build commands
		t.Fatal(err)
	}
	m := &k8sManifests{raw: map[string]string{}, readme: string(readme), envNames: sidecarEnvNames(t), tmp: t.TempDir()}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(k8sDir, f)
		m.raw[name] = string(raw)
		objs, err := decodeK8s(name, raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			switch o := o.(type) {
			case *corev1.Service:
				m.services = append(m.services, o)
			case *corev1.ConfigMap:
				m.configMaps = append(m.configMaps, o)
			case *appsv1.Deployment:
				m.pods = append(m.pods, k8sPod{name + ": Deployment/" + o.Name, o.Spec.Template.Labels, &o.Spec.Template.Spec})
			case *appsv1.StatefulSet:
				m.sets = append(m.sets, o)
				m.pods = append(m.pods, k8sPod{name + ": StatefulSet/" + o.Name, o.Spec.Template.Labels, &o.Spec.Template.Spec})
			}
		}
	}
	return m
}

// sidecarEnvNames: every "env NAME" the binary's --help lists.
func sidecarEnvNames(t *testing.T) map[string]bool {
	t.Helper()
	cmd := exec.Command(sidecarBin, "--help")
	cmd.Env = []string{}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sidecar --help: %v", err)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`\benv ([A-Z][A-Z0-9_]+)`).FindAllStringSubmatch(string(out), -1) {
		names[m[1]] = true
	}
	if !names["SIDECAR_LISTEN"] || !names["REDIS_URL"] {
		t.Fatalf("sidecar --help lists no SIDECAR_LISTEN or REDIS_URL: %v", names)
	}
	return names
}

// k8sSets: Redis mode is deployments/kubernetes; HTTP mode replaces its
// files by those of the same name in http-mode/.
func k8sSets(t *testing.T) map[string][]string {
	t.Helper()
	top, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	httpMode, _ := filepath.Glob(filepath.Join(k8sDir, "http-mode", "*.yaml"))
	if len(top) == 0 || len(httpMode) == 0 {
		t.Fatalf("no manifests: %v %v", top, httpMode)
	}
	http := slices.Clone(httpMode)
	for _, f := range top {
		if !slices.ContainsFunc(httpMode, func(h string) bool { return filepath.Base(h) == filepath.Base(f) }) {
			http = append(http, f)
		}
	}
	return map[string][]string{"redis-mode": top, "http-mode": http}
}

func TestKubernetesManifestPolicies(t *testing.T) {
	for mode, files := range k8sSets(t) {
		t.Run(mode, func(t *testing.T) {
			m := loadK8s(t, files)
			if len(m.pods) == 0 {
				t.Fatal("no pods")
			}
			for _, p := range k8sPolicies {
				t.Run(p.name, func(t *testing.T) {
					for _, v := range p.check(m) {
						t.Error(v)
					}
				})
			}
		})
	}
}

// TestKubernetesPoliciesFindIssue13: each policy finds its mistake when it
// is put back into the (otherwise passing) Redis-mode manifests.
func TestKubernetesPoliciesFindIssue13(t *testing.T) {
	sidecar := func(m *k8sManifests, pod string) *corev1.Container { return k8sContainer(t, m, pod, "sidecar") }
	setEnv := func(c *corev1.Container, name, value string) {
		c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
		c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
	}
	httpProbe := func(path string, port int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(port)}}}
	}
	for _, tc := range []struct {
		policy, mistake string
		break_          func(m *k8sManifests)
		want            string
	}{
		{"probe_host", "httpGet.host 127.0.0.1", func(m *k8sManifests) {
			k8sContainer(t, m, "calendar", "calendar").ReadinessProbe = httpProbe("/health", 5003)
			k8sContainer(t, m, "calendar", "calendar").ReadinessProbe.HTTPGet.Host = "127.0.0.1"
		}, `sets httpGet.host "127.0.0.1"`},
		{"sidecar_listen_token", "httpGet probe on a loopback sidecar", func(m *k8sManifests) {
			sidecar(m, "calendar").ReadinessProbe = httpProbe("/readyz", 7700)
		}, "listens on 127.0.0.1:7700"},
		{"sidecar_listen_token", "0.0.0.0 without a token", func(m *k8sManifests) {
			setEnv(sidecar(m, "calendar"), "SIDECAR_LISTEN", "0.0.0.0:7700")
		}, "without SIDECAR_API_TOKEN"},
		{"sidecar_listen_token", "token as a literal", func(m *k8sManifests) {
			setEnv(sidecar(m, "calendar"), "SIDECAR_LISTEN", "0.0.0.0:7700")
			setEnv(sidecar(m, "calendar"), "SIDECAR_API_TOKEN", "s3cret")
		}, "not from a Secret"},
		{"service_target_port", "named native-sidecar targetPort", func(m *k8sManifests) {
			sidecar(m, "calendar").Ports = []corev1.ContainerPort{{Name: "sidecar", ContainerPort: 7700}}
			m.services = append(m.services, &corev1.Service{Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "calendar"},
				Ports:    []corev1.ServicePort{{Port: 7700, TargetPort: intstr.FromString("sidecar")}},
			}})
		}, "names a port of the native sidecar"},
		{"prestop_sleep", "preStop sleep action", func(m *k8sManifests) {
			k8sContainer(t, m, "calendar", "calendar").Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}}
		}, "needs kubelet 1.30"},
		{"run_as_user", "no runAsUser", func(m *k8sManifests) { sidecar(m, "processor").SecurityContext.RunAsUser = nil }, "runAsUser"},
		{"statefulset_headless", "Redis Service not headless", func(m *k8sManifests) { k8sService(t, m, "redis").Spec.ClusterIP = "" }, "not headless"},
		{"redis_maxmemory", "maxmemory 400mb of 512Mi", func(m *k8sManifests) {
			c := k8sContainer(t, m, "redis", "redis")
			c.Args[slices.Index(c.Args, "--maxmemory")+1] = "400mb"
		}, "more than 60 %"},
		{"images", "latest tag", func(m *k8sManifests) { sidecar(m, "processor").Image = sidecarImageRepo + ":latest" }, "not a version"},
		{"images", "image without comment", func(m *k8sManifests) {
			for f, raw := range m.raw {
				m.raw[f] = regexp.MustCompile(`(image: \S+) *#.*`).ReplaceAllString(raw, "$1")
			}
		}, "no comment"},
		{"sidecar_env", "misspelt setting", func(m *k8sManifests) { setEnv(sidecar(m, "processor"), "SIDECAR_LISTEN_ADDR", "127.0.0.1:7700") }, "not a sidecar setting"},
		{"config_urls", "subscription to an undeclared port", func(m *k8sManifests) {
			setEnv(sidecar(m, "calendar"), "SIDECAR_SUBSCRIBE", "fogis:calendar:sync=http://127.0.0.1:5003/sync")
		}, "no container in the pod declares port 5003"},
		{"config_urls", "Redis URL to no Service", func(m *k8sManifests) { setEnv(sidecar(m, "processor"), "REDIS_URL", "redis://fogis-redis:6379") }, "no Service fogis-redis"},
	} {
		t.Run(tc.policy+"/"+tc.mistake, func(t *testing.T) {
			m := loadK8s(t, k8sSets(t)["redis-mode"])
			tc.break_(m)
			for _, p := range k8sPolicies {
				if p.name != tc.policy {
					continue
				}
				got := p.check(m)
				if !slices.ContainsFunc(got, func(v string) bool { return strings.Contains(v, tc.want) }) {
					t.Errorf("got %q, want a finding containing %q", got, tc.want)
				}
				return
			}
			t.Fatalf("no policy %s", tc.policy)
		})
	}
}

// TestKubernetesDecodeIsStrict: what kubectl would refuse, the decode refuses.
func TestKubernetesDecodeIsStrict(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80, targetport: 80}]}\n", `unknown field "spec.ports[0].targetport"`},
		{"duplicate key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndata: {c: d}\n", `key "data" already set`},
		{"unknown kind", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n", "unknown kind"},
		{"wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: one}\n", "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeK8s("fixture.yaml", []byte("# a comment-only document\n---\n"+tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func k8sContainer(t *testing.T, m *k8sManifests, workload, name string) *corev1.Container {
	t.Helper()
	for _, p := range m.pods {
		if !strings.HasSuffix(p.where, "/"+workload) {
			continue
		}
		for _, c := range k8sContainers(p.spec) {
			if c.Name == name {
				return c
			}
		}
	}
	t.Fatalf("no container %s in %s", name, workload)
	return nil
}

func k8sService(t *testing.T, m *k8sManifests, name string) *corev1.Service {
	t.Helper()
	for _, s := range m.services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no Service %s", name)
	return nil
}
