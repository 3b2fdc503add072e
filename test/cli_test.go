package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// runCLI runs the sidecar binary's event-log CLI against the sidecar at
// addr (given as SIDECAR_ADDR, bare host:port) and returns its stdout,
// stderr and exit code.
func runCLI(t *testing.T, addr string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sidecarBin, args...)
	cmd.Env = []string{"SIDECAR_ADDR=" + addr, "PATH=" + os.Getenv("PATH")}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errOut.String(), 0
	case errors.As(err, &exit):
		return out.String(), errOut.String(), exit.ExitCode()
	}
	t.Fatalf("sidecar %v: %v", args, err)
	return "", "", -1
}

// cliDeadLetter is the part of a `dlq ls --json` entry this test reads.
type cliDeadLetter struct {
	DLQID      string `json:"dlq_id"`
	ID         string `json:"id"`
	Group      string `json:"group"`
	Error      string `json:"error"`
	OriginalID string `json:"original_id"`
	Data       string `json:"data"`
}

// dlqList runs `dlq ls --json` and decodes it.
func dlqList(t *testing.T, addr, topic, group string) []cliDeadLetter {
	t.Helper()
	out, errOut, code := runCLI(t, addr, "dlq", "ls", topic, "--group", group, "--json")
	if code != 0 {
		t.Fatalf("dlq ls: exit %d\n%s%s", code, out, errOut)
	}
	var page struct {
		Topic   string          `json:"topic"`
		Entries []cliDeadLetter `json:"entries"`
	}
	if err := json.Unmarshal([]byte(out), &page); err != nil || page.Topic != topic {
		t.Fatalf("dlq ls --json: got %v / topic %q:\n%s", err, page.Topic, out)
	}
	return page.Entries
}

// TestCLIDeadLetterRedrive drives the real binary's CLI against a real
// sidecar and Redis: three events dead-letter (the webhook answers 400),
// `dlq ls` lists them, `dlq redrive` by id (one DLQ id, one event id)
// delivers those two again with their own webhook-id, and the third stays
// dead: nothing else is delivered.
func TestCLIDeadLetterRedrive(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "cli")
	rc := newReceiver(t)
	rc.set(0, func(received, int) int { return http.StatusBadRequest }) // a 4xx dead-letters at once
	sc := startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+subscriberConfig(t, topic, rc.url(), ""))

	var pub []receipt
	for i := range 3 {
		pub = append(pub, sc.mustPublish(topic, fmt.Appendf(nil, `{"n":%d}`, i)))
	}
	// Delivered (and refused) means the group exists: dlq ls --group finds it.
	eventually.True(t, 15*time.Second, "3 deliveries refused", func() bool { return rc.distinct() == 3 })
	var dead []cliDeadLetter
	eventually.True(t, 15*time.Second, "3 dead letters in `dlq ls`", func() bool {
		dead = dlqList(t, sc.addr, topic, "calendar")
		return len(dead) == 3
	})
	for i, d := range dead {
		if d.ID != pub[i].ID || d.OriginalID != pub[i].StreamID || d.Group != "calendar" || d.Error == "" || d.Data != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("dead letter %d: got %+v, want event %s (stream id %s) of group calendar with an error and its data", i, d, pub[i].ID, pub[i].StreamID)
		}
	}
	// The table names each dead letter and its group.
	out, errOut, code := runCLI(t, sc.addr, "dlq", "ls", topic)
	if code != 0 || !strings.Contains(out, "DLQ ID") {
		t.Fatalf("dlq ls: exit %d\n%s%s", code, out, errOut)
	}
	for _, d := range dead {
		if !strings.Contains(out, d.DLQID) || !strings.Contains(out, d.ID) {
			t.Fatalf("dlq ls table lacks %s / %s:\n%s", d.DLQID, d.ID, out)
		}
	}

	// A usage error sends nothing and exits 2; an unknown group is the API's 404.
	if _, errOut, code := runCLI(t, sc.addr, "dlq", "redrive", topic, dead[0].DLQID); code != 2 || !strings.Contains(errOut, "--group is required") {
		t.Fatalf("redrive without --group: exit %d, stderr %q; want 2 and the reason", code, errOut)
	}
	if _, errOut, code := runCLI(t, sc.addr, "dlq", "redrive", topic, "--group", "nosuch"); code != 1 || !strings.Contains(errOut, "no_such_group") {
		t.Fatalf("redrive to an unknown group: exit %d, stderr %q; want 1 and no_such_group", code, errOut)
	}

	rc.set(0, nil) // the webhook is fixed: 200
	before := rc.count()
	out, errOut, code = runCLI(t, sc.addr, "dlq", "redrive", topic, "--group", "calendar", dead[0].DLQID, dead[1].ID)
	if code != 0 || out != fmt.Sprintf("redriven 2 dead letters of %s to group calendar\n", topic) {
		t.Fatalf("dlq redrive: exit %d, got %q (stderr %q)", code, out, errOut)
	}
	eventually.True(t, 15*time.Second, "the 2 redriven events delivered", func() bool { return rc.count() >= before+2 })
	for _, r := range rc.all()[before:] {
		id := r.Header.Get("webhook-id")
		if id != pub[0].ID && id != pub[1].ID {
			t.Fatalf("after the redrive, got event %s; want only %s and %s", id, pub[0].ID, pub[1].ID)
		}
		if r.Header.Get("Sidecar-Attempt") != "1" || r.Header.Get("Sidecar-Redrive") != "true" {
			t.Errorf("redriven %s: got Sidecar-Attempt %q, Sidecar-Redrive %q; want 1 and true", id, r.Header.Get("Sidecar-Attempt"), r.Header.Get("Sidecar-Redrive"))
		}
	}
	left := dlqList(t, sc.addr, topic, "calendar")
	if len(left) != 1 || left[0].ID != pub[2].ID {
		t.Fatalf("after redriving 2 of 3: got %+v, want only %s in the DLQ", left, pub[2].ID)
	}

	// topics --json agrees: one dead letter left, the group caught up.
	var topics struct {
		Topics []struct {
			Topic     string `json:"topic"`
			DLQLength int64  `json:"dlq_length"`
			Groups    []struct {
				Group   string `json:"group"`
				Pending int64  `json:"pending"`
			} `json:"groups"`
		} `json:"topics"`
	}
	eventually.True(t, 10*time.Second, "topics: dlq 1, nothing pending", func() bool {
		out, errOut, code := runCLI(t, sc.addr, "topics", "--json")
		if code != 0 {
			t.Fatalf("topics: exit %d\n%s%s", code, out, errOut)
		}
		if err := json.Unmarshal([]byte(out), &topics); err != nil {
			t.Fatalf("topics --json: %v\n%s", err, out)
		}
		for _, tp := range topics.Topics {
			if tp.Topic == topic {
				return tp.DLQLength == 1 && len(tp.Groups) == 1 && tp.Groups[0].Group == "calendar" && tp.Groups[0].Pending == 0
			}
		}
		return false
	})
	// Nothing more arrives: the third dead letter was not redriven, and no
	// event reached the webhook a third time.
	if n := rc.count(); n != before+2 {
		t.Fatalf("got %d deliveries after the redrive, want 2", n-before)
	}
	t.Logf("3 dead letters, 2 redriven by id through the CLI, 1 left; %d webhook requests in all", rc.count())
}
