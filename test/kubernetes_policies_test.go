package test

// The policies the Kubernetes manifests are held to (kubernetes_test.go
// runs them): each lists what it finds, one line per finding.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/fogis-sidecar/sidecar/internal/config"
)

// k8sPolicies, each named for the mistake it finds.
var k8sPolicies = []struct {
	name  string
	check func(m *k8sManifests) []string
}{
	{"probe_host", checkProbeHost},
	{"sidecar_listen_token", checkSidecarListenToken},
	{"service_target_port", checkServiceTargetPort},
	{"prestop_sleep", checkNoSleepAction},
	{"run_as_user", checkRunAsUser},
	{"statefulset_headless", checkHeadless},
	{"redis_maxmemory", checkRedisMaxmemory},
	{"images", checkImages},
	{"sidecar_env", checkSidecarEnv},
	{"config_urls", checkConfigURLs},
}

// k8sContainers: init containers (native sidecars among them), then the rest.
func k8sContainers(spec *corev1.PodSpec) []*corev1.Container {
	var cs []*corev1.Container
	for i := range spec.InitContainers {
		cs = append(cs, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		cs = append(cs, &spec.Containers[i])
	}
	return cs
}

func isNativeSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// isSidecar: a container running this repository's sidecar.
func isSidecar(c *corev1.Container) bool {
	return c.Name == "sidecar" || strings.HasPrefix(c.Image, sidecarImageRepo+":") || c.Image == sidecarImageRepo
}

func probes(c *corev1.Container) map[string]*corev1.Probe {
	return map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe}
}

func checkProbeHost(m *k8sManifests) []string {
	var found []string
	for _, p := range m.pods {
		for _, c := range k8sContainers(p.spec) {
			for kind, pr := range probes(c) {
				if pr != nil && pr.HTTPGet != nil && pr.HTTPGet.Host != "" {
					found = append(found, fmt.Sprintf("%s: %s %s probe sets httpGet.host %q: the kubelet probes that host (127.0.0.1 is the node), not the pod",
						p.where, c.Name, kind, pr.HTTPGet.Host))
				}
			}
		}
	}
	return found
}

// probePort is the pod port a network probe connects to (0 for exec).
func probePort(c *corev1.Container, pr *corev1.Probe) int {
	var port intstr.IntOrString
	switch {
	case pr.HTTPGet != nil:
		port = pr.HTTPGet.Port
	case pr.TCPSocket != nil:
		port = pr.TCPSocket.Port
	case pr.GRPC != nil:
		return int(pr.GRPC.Port)
	default:
		return 0
	}
	if port.Type == intstr.Int {
		return port.IntValue()
	}
	for _, cp := range c.Ports { // the kubelet resolves a named port in the probed container
		if cp.Name == port.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return -1
}

// checkSidecarListenToken: a probe reaches the sidecar on the pod IP only
// if it listens there, and a sidecar that listens beyond the pod requires
// a token kept in a Secret.
func checkSidecarListenToken(m *k8sManifests) []string {
	var found []string
	for _, p := range m.pods {
		for _, sc := range k8sContainers(p.spec) {
			if !isSidecar(sc) {
				continue
			}
			cfg, err := m.sidecarConfig(p, sc)
			if err != nil {
				found = append(found, fmt.Sprintf("%s: %s: %v", p.where, sc.Name, err))
				continue
			}
			host, portS, _ := net.SplitHostPort(cfg.Listen)
			port, _ := strconv.Atoi(portS)
			loopback := host == "localhost" || net.ParseIP(host).IsLoopback()
			for _, c := range k8sContainers(p.spec) {
				for kind, pr := range probes(c) {
					if pr != nil && probePort(c, pr) == port && loopback {
						found = append(found, fmt.Sprintf("%s: %s %s probe connects to the pod IP at port %d, but sidecar %s listens on %s: it can never pass",
							p.where, c.Name, kind, port, sc.Name, cfg.Listen))
					}
				}
			}
			if loopback {
				continue
			}
			i := slices.IndexFunc(sc.Env, func(e corev1.EnvVar) bool { return e.Name == "SIDECAR_API_TOKEN" })
			switch {
			case i >= 0 && sc.Env[i].ValueFrom != nil && sc.Env[i].ValueFrom.SecretKeyRef != nil:
			case i >= 0 || cfg.APIToken != "":
				found = append(found, fmt.Sprintf("%s: %s listens on %s with an API token not from a Secret (env value or ConfigMap)", p.where, sc.Name, cfg.Listen))
			default:
				found = append(found, fmt.Sprintf("%s: %s listens on %s without SIDECAR_API_TOKEN: anything in the cluster can publish, seek and purge", p.where, sc.Name, cfg.Listen))
			}
		}
	}
	return found
}

// selects: the Service's selector picks the pod.
func selects(s *corev1.Service, p k8sPod) bool {
	if len(s.Spec.Selector) == 0 {
		return false
	}
	for k, v := range s.Spec.Selector {
		if p.labels[k] != v {
			return false
		}
	}
	return true
}

// checkServiceTargetPort: before Kubernetes 1.32 the endpoints of a named
// targetPort leave out ports of native sidecars (init containers).
func checkServiceTargetPort(m *k8sManifests) []string {
	var found []string
	for _, s := range m.services {
		var pods []k8sPod
		for _, p := range m.pods {
			if selects(s, p) {
				pods = append(pods, p)
			}
		}
		if len(pods) == 0 {
			found = append(found, fmt.Sprintf("Service %s selects no pod of these manifests", s.Name))
			continue
		}
		for _, sp := range s.Spec.Ports {
			tp := sp.TargetPort
			if tp.Type == intstr.Int && tp.IntVal == 0 {
				tp = intstr.FromInt32(sp.Port)
			}
			declared := false
			for _, p := range pods {
				for _, c := range k8sContainers(p.spec) {
					for _, cp := range c.Ports {
						if tp.Type == intstr.String && cp.Name == tp.StrVal && isNativeSidecar(c) {
							found = append(found, fmt.Sprintf("Service %s: targetPort %q names a port of the native sidecar %s (%s): endpoints leave it out before Kubernetes 1.32; use %d",
								s.Name, tp.StrVal, c.Name, p.where, cp.ContainerPort))
						}
						if (tp.Type == intstr.String && cp.Name == tp.StrVal) || (tp.Type == intstr.Int && int(cp.ContainerPort) == tp.IntValue()) {
							declared = true
						}
					}
				}
			}
			if !declared {
				found = append(found, fmt.Sprintf("Service %s: targetPort %s is no declared port of the pods it selects", s.Name, tp.String()))
			}
		}
	}
	return found
}

// checkNoSleepAction: the sleep lifecycle action needs kubelet 1.30
// (PodLifecycleSleepAction, beta); the manifests need 1.29 (native sidecars).
func checkNoSleepAction(m *k8sManifests) []string {
	var found []string
	for _, p := range m.pods {
		for _, c := range k8sContainers(p.spec) {
			if l := c.Lifecycle; l != nil && ((l.PreStop != nil && l.PreStop.Sleep != nil) || (l.PostStart != nil && l.PostStart.Sleep != nil)) {
				found = append(found, fmt.Sprintf("%s: %s uses the sleep lifecycle action, which needs kubelet 1.30; these manifests need only 1.29 (native sidecars): exec sleep, or drop it", p.where, c.Name))
			}
		}
	}
	return found
}

// dockerfileUser is the USER of the Dockerfile's last stage.
func dockerfileUser() (string, error) {
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		return "", err
	}
	user := ""
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.EqualFold(f[0], "USER") {
			user = f[1]
		}
		if f := strings.Fields(line); len(f) > 0 && strings.EqualFold(f[0], "FROM") {
			user = "" // a new stage starts as root
		}
	}
	return user, nil
}

// checkRunAsUser: runAsNonRoot is verifiable only with a numeric user; the
// manifests name it and it is the image's.
func checkRunAsUser(m *k8sManifests) []string {
	var found []string
	if user, err := dockerfileUser(); err != nil {
		found = append(found, err.Error())
	} else if uid, _, _ := strings.Cut(user, ":"); uid != strconv.Itoa(imageUID) {
		found = append(found, fmt.Sprintf("Dockerfile: USER %q, want %d:%d (numeric, so the kubelet can verify runAsNonRoot)", user, imageUID, imageUID))
	}
	for _, p := range m.pods {
		for _, c := range k8sContainers(p.spec) {
			if !isSidecar(c) {
				continue
			}
			var nonRoot *bool
			var uid *int64
			if psc := p.spec.SecurityContext; psc != nil {
				nonRoot, uid = psc.RunAsNonRoot, psc.RunAsUser
			}
			if sc := c.SecurityContext; sc != nil {
				if sc.RunAsNonRoot != nil {
					nonRoot = sc.RunAsNonRoot
				}
				if sc.RunAsUser != nil {
					uid = sc.RunAsUser
				}
			}
			if nonRoot == nil || !*nonRoot {
				found = append(found, fmt.Sprintf("%s: %s does not set runAsNonRoot", p.where, c.Name))
			}
			if uid == nil || *uid != imageUID {
				found = append(found, fmt.Sprintf("%s: %s runAsUser %v, want %d (the image's user)", p.where, c.Name, ptrString(uid), imageUID))
			}
		}
	}
	return found
}

func ptrString(p *int64) string {
	if p == nil {
		return "unset"
	}
	return strconv.FormatInt(*p, 10)
}

// checkHeadless: a StatefulSet's governing Service gives its pods their
// DNS names; Kubernetes expects it headless.
func checkHeadless(m *k8sManifests) []string {
	var found []string
	for _, ss := range m.sets {
		i := slices.IndexFunc(m.services, func(s *corev1.Service) bool { return s.Name == ss.Spec.ServiceName })
		switch {
		case i < 0:
			found = append(found, fmt.Sprintf("StatefulSet %s: governing Service %q missing", ss.Name, ss.Spec.ServiceName))
		case m.services[i].Spec.ClusterIP != corev1.ClusterIPNone:
			found = append(found, fmt.Sprintf("StatefulSet %s: governing Service %s is not headless (clusterIP: None)", ss.Name, ss.Spec.ServiceName))
		}
	}
	return found
}

// redisBytes parses a Redis memory setting: 1k = 1000, 1kb = 1024, …
func redisBytes(s string) (int64, error) {
	s = strings.ToLower(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}, {"g", 1e9}, {"m", 1e6}, {"k", 1e3}, {"b", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

func checkRedisMaxmemory(m *k8sManifests) []string {
	var found []string
	for _, p := range m.pods {
		for _, c := range k8sContainers(p.spec) {
			if !strings.HasPrefix(c.Image, "redis:") {
				continue
			}
			args := append(slices.Clone(c.Command), c.Args...)
			i := slices.Index(args, "--maxmemory")
			if i < 0 || i+1 >= len(args) {
				found = append(found, fmt.Sprintf("%s: %s has no --maxmemory: with noeviction it grows until the OOM killer stops it", p.where, c.Name))
				continue
			}
			maxmem, err := redisBytes(args[i+1])
			if err != nil {
				found = append(found, fmt.Sprintf("%s: %s --maxmemory %q: %v", p.where, c.Name, args[i+1], err))
				continue
			}
			limit, ok := c.Resources.Limits[corev1.ResourceMemory]
			if !ok {
				found = append(found, fmt.Sprintf("%s: %s has no memory limit", p.where, c.Name))
				continue
			}
			if maxmem*100 > limit.Value()*redisHeadroomPercent {
				found = append(found, fmt.Sprintf("%s: %s --maxmemory %s is %d %% of its %s limit, more than %d %%: an AOF rewrite forks and copy-on-write pages count against the limit",
					p.where, c.Name, args[i+1], maxmem*100/limit.Value(), limit.String(), redisHeadroomPercent))
			}
		}
	}
	return found
}

var semverTag = regexp.MustCompile(`^v?\d+\.\d+\.\d+$`)

// checkImages: this repository's images carry one release version, say
// where they come from (a comment on the line), and README.md has the
// docker build command for each, with a Dockerfile in its context.
func checkImages(m *k8sManifests) []string {
	var found []string
	tags := map[string]bool{}
	seen := map[string]bool{}
	for _, p := range m.pods {
		for _, c := range k8sContainers(p.spec) {
			repo, tag, _ := strings.Cut(c.Image, ":")
			if isSidecar(c) && repo != sidecarImageRepo {
				found = append(found, fmt.Sprintf("%s: %s runs %s, want %s:<version> (built by the Dockerfile)", p.where, c.Name, c.Image, sidecarImageRepo))
			}
			if !strings.HasPrefix(repo, ownImagePrefix) {
				if tag == "" || tag == "latest" {
					found = append(found, fmt.Sprintf("%s: %s image %s has no version tag", p.where, c.Name, c.Image))
				}
				continue
			}
			if !semverTag.MatchString(tag) {
				found = append(found, fmt.Sprintf("%s: %s image %s: tag %q is not a version", p.where, c.Name, c.Image, tag))
			}
			tags[tag] = true
			seen[c.Image] = true
			file, _, _ := strings.Cut(p.where, ":")
			if !regexp.MustCompile(`image: ` + regexp.QuoteMeta(c.Image) + `\s+#\s*\S`).MatchString(m.raw[file]) {
				found = append(found, fmt.Sprintf("%s: %s image %s has no comment saying where it comes from", p.where, c.Name, c.Image))
			}
		}
	}
	if len(tags) > 1 {
		found = append(found, fmt.Sprintf("images of this repository carry different versions: %v", tags))
	}
	for img := range seen {
		if ctx := readmeBuildContext(m.readme, img); ctx == "" {
			found = append(found, fmt.Sprintf("README.md has no `docker build … -t %s <context>` line", img))
		} else if _, err := os.Stat(filepath.Join("..", ctx, "Dockerfile")); err != nil {
			found = append(found, fmt.Sprintf("README.md builds %s from %s: %v", img, ctx, err))
		}
	}
	return found
}

// readmeBuildContext is the context of the README's docker build command
// that tags img ("" when there is none).
func readmeBuildContext(readme, img string) string {
	for _, line := range strings.Split(readme, "\n") {
		f := strings.Fields(line)
		i := slices.Index(f, "build")
		if i < 1 || f[i-1] != "docker" {
			continue
		}
		if j := slices.Index(f, "-t"); j > 0 && j+1 < len(f) && f[j+1] == img {
			return strings.TrimSuffix(f[len(f)-1], "`")
		}
	}
	return ""
}

// checkSidecarEnv: a misspelt setting is silently ignored by the sidecar.
func checkSidecarEnv(m *k8sManifests) []string {
	var found []string
	for _, p := range m.pods {
		for _, c := range k8sContainers(p.spec) {
			if !isSidecar(c) {
				continue
			}
			for _, e := range c.Env {
				if !m.envNames[e.Name] {
					found = append(found, fmt.Sprintf("%s: %s sets %s, not a sidecar setting (sidecar --help)", p.where, c.Name, e.Name))
				}
			}
			if len(c.EnvFrom) > 0 {
				found = append(found, fmt.Sprintf("%s: %s takes envFrom, which cannot be checked here", p.where, c.Name))
			}
		}
	}
	return found
}

// checkConfigURLs: every URL a sidecar is configured with (subscriptions,
// SIDECAR_SUBSCRIBE, upstream, fallbacks, Redis) is a port a container of
// its pod declares, or a port of a Service of these manifests.
func checkConfigURLs(m *k8sManifests) []string {
	var found []string
	for _, p := range m.pods {
		for _, sc := range k8sContainers(p.spec) {
			if !isSidecar(sc) {
				continue
			}
			cfg, err := m.sidecarConfig(p, sc)
			if err != nil {
				found = append(found, fmt.Sprintf("%s: %s: %v", p.where, sc.Name, err))
				continue
			}
			urls := []string{cfg.RedisURL, cfg.Upstream}
			for _, s := range cfg.Subscriptions {
				urls = append(urls, s.URL)
			}
			for _, r := range cfg.Routes {
				urls = append(urls, r.Fallback)
			}
			for _, f := range cfg.Fallbacks {
				urls = append(urls, f)
			}
			for _, raw := range urls {
				if raw == "" {
					continue
				}
				if err := m.reachable(p, raw); err != nil {
					found = append(found, fmt.Sprintf("%s: %s: %s: %v", p.where, sc.Name, config.RedactURL(raw), err))
				}
			}
		}
	}
	return found
}

var defaultPorts = map[string]int{"http": 80, "https": 443, "redis": 6379, "rediss": 6379, "redis+cluster": 6379}

func (m *k8sManifests) reachable(p k8sPod, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(u.Port())
	if u.Port() == "" {
		port, err = defaultPorts[u.Scheme], nil
	}
	if err != nil || port == 0 {
		return fmt.Errorf("no port")
	}
	host := u.Hostname()
	if host == "localhost" || net.ParseIP(host).IsLoopback() {
		for _, c := range k8sContainers(p.spec) {
			for _, cp := range c.Ports {
				if int(cp.ContainerPort) == port {
					return nil
				}
			}
		}
		return fmt.Errorf("no container in the pod declares port %d", port)
	}
	name, _, _ := strings.Cut(host, ".") // svc, svc.ns, svc.ns.svc.cluster.local
	for _, s := range m.services {
		if s.Name != name {
			continue
		}
		for _, sp := range s.Spec.Ports {
			if int(sp.Port) == port {
				return nil
			}
		}
		return fmt.Errorf("Service %s has no port %d", name, port)
	}
	return fmt.Errorf("no Service %s in these manifests", name)
}

// sidecarConfig loads a sidecar container's configuration as the binary
// would: its environment over the file SIDECAR_CONFIG names, read from the
// ConfigMap mounted there.
func (m *k8sManifests) sidecarConfig(p k8sPod, c *corev1.Container) (*config.Config, error) {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = "pod-0"
		default:
			env[e.Name] = "from-a-secret"
		}
	}
	if path := env["SIDECAR_CONFIG"]; path != "" {
		data, err := m.mountedConfigMapFile(p, c, path)
		if err != nil {
			return nil, fmt.Errorf("SIDECAR_CONFIG %s: %w", path, err)
		}
		f, err := os.CreateTemp(m.tmp, "sidecar-*.yaml")
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if _, err := f.WriteString(data); err != nil {
			return nil, err
		}
		env["SIDECAR_CONFIG"] = f.Name()
	}
	return config.Load(nil, func(k string) string { return env[k] }, "pod-0", io.Discard)
}

// mountedConfigMapFile is the content of path in container c, which must
// be a key of a ConfigMap volume mounted at its directory.
func (m *k8sManifests) mountedConfigMapFile(p k8sPod, c *corev1.Container, path string) (string, error) {
	for _, vm := range c.VolumeMounts {
		if filepath.Dir(path) != filepath.Clean(vm.MountPath) || vm.SubPath != "" {
			continue
		}
		vi := slices.IndexFunc(p.spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if vi < 0 || p.spec.Volumes[vi].ConfigMap == nil {
			return "", fmt.Errorf("volume %s is no ConfigMap", vm.Name)
		}
		vol := p.spec.Volumes[vi].ConfigMap
		key := filepath.Base(path)
		for _, it := range vol.Items {
			if it.Path == key {
				key = it.Key
			}
		}
		for _, cm := range m.configMaps {
			if cm.Name == vol.Name {
				if d, ok := cm.Data[key]; ok {
					return d, nil
				}
				return "", fmt.Errorf("ConfigMap %s has no key %s", cm.Name, key)
			}
		}
		return "", fmt.Errorf("no ConfigMap %s", vol.Name)
	}
	return "", errors.New("not mounted")
}
