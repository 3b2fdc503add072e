package check

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/config"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// startLoneSentinel runs one sentinel that monitors master under
// redistest.MasterName, unaware of any other sentinel: a sentinel that
// disagrees with the harness's about where the master is.
func startLoneSentinel(t *testing.T, master string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		redistest.SkipOrFail(t, "this test needs the redis-server binary on PATH")
	}
	dir := t.TempDir()
	port := redistest.FreePort(t)
	host, mport, _ := net.SplitHostPort(master)
	conf := filepath.Join(dir, "sentinel.conf") // sentinel rewrites it: its own file
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\nsentinel monitor %s %s %s 1\n",
		port, dir, filepath.Join(dir, "sentinel.log"), redistest.MasterName, host, mport)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sentinel: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = sc.Close() })
	eventually.True(t, 10*time.Second, "the lone sentinel to report "+master, func() bool {
		hp, err := sc.GetMasterAddrByName(context.Background(), redistest.MasterName).Result()
		return err == nil && len(hp) == 2 && net.JoinHostPort(hp[0], hp[1]) == master
	})
	return addr
}

func TestSentinelChecks(t *testing.T) {
	sn := redistest.StartSentinel(t)
	other := redistest.StartProcess(t)
	lone := startLoneSentinel(t, other.Addr)
	dead := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	sentinelURL := func(master string, addrs ...string) string {
		u := fmt.Sprintf("redis://%s?master_name=%s", addrs[0], master)
		for _, a := range addrs[1:] {
			u += "&addr=" + a
		}
		return u
	}
	for _, tc := range []struct {
		name   string
		url    string
		want   map[string]string // check name → PASS | WARN | FAIL
		detail map[string]string
	}{
		{name: "three agree", url: sn.URL,
			want: map[string]string{"Sentinel": "PASS", "Replication": "PASS", "Redis reachable": "PASS"},
			detail: map[string]string{
				"Sentinel":    fmt.Sprintf("3 of 3 sentinels answer and agree: master %q is %s", redistest.MasterName, sn.MasterAddr()),
				"Replication": "master with 1 online replica; publishes wait for 1 replica (WAIT)"}},
		{name: "one of two answers", url: sentinelURL(redistest.MasterName, sn.SentinelAddrs[0], dead),
			want:   map[string]string{"Sentinel": "WARN", "Redis reachable": "PASS"},
			detail: map[string]string{"Sentinel": "1 of 2 sentinels answers: master \"mymaster\" is " + sn.MasterAddr() + "; if it is down when the sidecar starts, the sidecar cannot find the master"}},
		{name: "two disagree", url: sentinelURL(redistest.MasterName, sn.SentinelAddrs[0], lone),
			want:   map[string]string{"Sentinel": "WARN"},
			detail: map[string]string{"Sentinel": "sentinels disagree on master \"mymaster\": "}},
		{name: "unknown master name", url: sentinelURL("nosuch", sn.SentinelAddrs...),
			want:   map[string]string{"Sentinel": "FAIL", "Redis reachable": "FAIL"},
			detail: map[string]string{"Sentinel": "none of 3 sentinels tells where master \"nosuch\" is (" + sn.SentinelAddrs[0] + ": does not monitor \"nosuch\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// As `sidecar check` builds them from REDIS_URL.
			uo, err := config.ParseRedisURL(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			rdb := redis.NewUniversalClient(uo)
			t.Cleanup(func() { _ = rdb.Close() })
			rep := Run(context.Background(), Input{
				RedisURL: tc.url, Redis: rdb, MinReplicas: -1,
				Sentinels: &Sentinels{MasterName: uo.MasterName, Addrs: uo.Addrs},
				SpoolDir:  t.TempDir(), SpoolMaxBytes: 1 << 20, HTTP: http.DefaultClient,
			})
			assertReport(t, rep, "", tc.want, tc.detail)
			if tc.name == "two disagree" {
				d := findCheck(rep, "Sentinel").Detail
				if !strings.Contains(d, sn.MasterAddr()) || !strings.Contains(d, other.Addr) {
					t.Errorf("Sentinel detail: got %q, want both masters, %s and %s", d, sn.MasterAddr(), other.Addr)
				}
			}
		})
	}

	// Sentinels that require a password the URL gives only to the data
	// nodes (?password=): the report says which parameter they take.
	t.Run("sentinels refuse the credentials", func(t *testing.T) {
		const spw = "sentinel-Pw-check"
		sn.SetAuth("", spw)
		defer sn.SetAuth("", "")
		for _, tc := range []struct{ name, url, want string }{
			{"none given", sn.URL, "none of 3 sentinels"},
			{"data password only", sn.URL + "&password=" + spw, "none of 3 sentinels"},
			{"sentinel_password", sn.URL + "&sentinel_password=" + spw, "3 of 3 sentinels answer and agree"},
		} {
			uo, err := config.ParseRedisURL(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			rdb := redis.NewUniversalClient(uo)
			t.Cleanup(func() { _ = rdb.Close() })
			rep := Run(context.Background(), Input{
				RedisURL: config.RedactURL(tc.url), Redis: rdb, MinReplicas: -1,
				Sentinels: &Sentinels{MasterName: uo.MasterName, Addrs: uo.Addrs, Username: uo.SentinelUsername, Password: uo.SentinelPassword},
				SpoolDir:  t.TempDir(), SpoolMaxBytes: 1 << 20, HTTP: http.DefaultClient,
			})
			d := findCheck(rep, "Sentinel").Detail
			t.Logf("%s: %s", tc.name, d)
			if !strings.Contains(d, tc.want) {
				t.Errorf("%s: Sentinel detail %q, want %q", tc.name, d, tc.want)
			}
			if hint := strings.Contains(d, "?sentinel_password="); hint == strings.HasPrefix(tc.want, "3 of 3") {
				t.Errorf("%s: Sentinel detail %q: got hint %v, want it only when the sentinels refuse", tc.name, d, hint)
			}
		}
	})
}
