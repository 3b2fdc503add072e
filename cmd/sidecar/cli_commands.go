package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// topics runs `sidecar topics`.
func (c *cliCmd) topics(ctx context.Context, args []string) error {
	fs := c.flags("topics")
	if _, err := c.parse(fs, args, "sidecar topics [--json]", 0, 0); err != nil {
		return done(err)
	}
	var ans topicsAnswer
	if printed, err := c.call(ctx, http.MethodGet, "/v1/topics", nil, nil, &ans); printed || err != nil {
		return err
	}
	c.printTopics(ans)
	return nil
}

// events runs `sidecar events <topic> [--from] [--limit] [--follow]`.
func (c *cliCmd) events(ctx context.Context, args []string) error {
	const synopsis = "sidecar events <topic> [--from <id|RFC 3339>] [--limit N] [--follow] [--json]"
	fs := c.flags("events")
	from := fs.String("from", "", "start at this stream id or RFC 3339 time, inclusive (default: the oldest event; with --follow, the newest --limit events)")
	limit := fs.Int("limit", 0, "events per page (the API's default 50, max 1000); with --follow and no --from, how many recent events to show first (default 10)")
	var follow bool
	fs.BoolVar(&follow, "follow", false, "keep polling and print new events as they arrive, until interrupted (--json: one event per line)")
	fs.BoolVar(&follow, "f", false, "short for --follow")
	every := fs.Duration("interval", time.Second, "with --follow: how often to poll once caught up")
	pos, err := c.parse(fs, args, synopsis, 1, 1)
	if err != nil {
		return done(err)
	}
	if *limit < 0 || *every <= 0 {
		return c.usageError(fs.Name(), synopsis, errors.New("--limit and --interval must be positive"))
	}
	topic := pos[0]
	if follow {
		return c.follow(ctx, topic, *from, *limit, *every)
	}
	q := pageQuery(*from, *limit)
	var page eventPage
	if printed, err := c.call(ctx, http.MethodGet, topicPath(topic, "events"), q, nil, &page); printed || err != nil {
		return err
	}
	if len(page.Events) == 0 {
		fmt.Fprintf(c.stdout, "no events in %s\n", topic)
	} else {
		w := &eventWriter{out: c.stdout}
		w.write(page.Events, nil)
	}
	if page.Next != "" {
		fmt.Fprintf(c.stderr, "more: sidecar events %s --from %s\n", topic, page.Next)
	}
	return nil
}

// follow prints the log's new events as they arrive, like tail -f: without
// a --from it starts with the newest few. It polls from the last event
// seen; an interrupt (ctx) ends it cleanly.
func (c *cliCmd) follow(ctx context.Context, topic, from string, limit int, every time.Duration) error {
	w := &eventWriter{out: c.stdout, asJSON: c.asJSON}
	if from == "" {
		n := limit
		if n == 0 {
			n = 10
		}
		evs, raws, _, err := c.eventPage(ctx, topic, url.Values{"order": {"desc"}, "limit": {strconv.Itoa(n)}})
		if err != nil {
			return quietOnCancel(ctx, err)
		}
		for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 { // newest first → oldest first
			evs[i], evs[j] = evs[j], evs[i]
			raws[i], raws[j] = raws[j], raws[i]
		}
		w.write(evs, raws)
		if len(evs) > 0 {
			from = afterID(evs[len(evs)-1].StreamID)
		}
	}
	failing := false // report a streak of failures once, not every poll
	for {
		q := url.Values{}
		if from != "" {
			q.Set("from", from)
		}
		if limit > 0 {
			q.Set("limit", strconv.Itoa(limit))
		}
		evs, raws, next, err := c.eventPage(ctx, topic, q)
		var ae *apiError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &ae) && ae.Status < 500:
			return err // a bad topic or position does not heal by waiting
		case err != nil:
			if !failing {
				fmt.Fprintf(c.stderr, "sidecar events: %v; still trying\n", err)
			}
			failing = true
		default:
			if failing {
				fmt.Fprintln(c.stderr, "sidecar events: reconnected")
			}
			failing = false
			w.write(evs, raws)
			if next != "" {
				from = next
				if len(evs) > 0 {
					continue // more to read now
				}
			} else if len(evs) > 0 {
				from = afterID(evs[len(evs)-1].StreamID)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// eventPage reads one page of the log, decoded and raw (for --json).
func (c *cliCmd) eventPage(ctx context.Context, topic string, q url.Values) ([]cliEvent, []json.RawMessage, string, error) {
	var page struct {
		Events []json.RawMessage `json:"events"`
		Next   string            `json:"next"`
	}
	if _, err := c.api.do(ctx, http.MethodGet, topicPath(topic, "events"), q, nil, &page); err != nil {
		return nil, nil, "", err
	}
	evs := make([]cliEvent, len(page.Events))
	for i, r := range page.Events {
		if err := json.Unmarshal(r, &evs[i]); err != nil {
			return nil, nil, "", fmt.Errorf("event %d of the page: %w", i, err)
		}
	}
	return evs, page.Events, page.Next, nil
}

// afterID is the smallest stream id after id: the inclusive from that
// skips id itself.
func afterID(id string) string {
	ms, seq, ok := strings.Cut(id, "-")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil {
		return id
	}
	return ms + "-" + strconv.FormatUint(n+1, 10)
}

// quietOnCancel makes an interrupt a clean end.
func quietOnCancel(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// dlqList runs `sidecar dlq ls <topic> [--group G]`.
func (c *cliCmd) dlqList(ctx context.Context, args []string) error {
	const synopsis = "sidecar dlq ls <topic> [--group G] [--from <dlq id>] [--limit N] [--json]"
	fs := c.flags("dlq ls")
	group := fs.String("group", "", "only this group's dead letters (default: every group's)")
	from := fs.String("from", "", "start at this DLQ id or RFC 3339 time (default: the oldest)")
	limit := fs.Int("limit", 0, "dead letters per page (the API's default 50, max 1000)")
	pos, err := c.parse(fs, args, synopsis, 1, 1)
	if err != nil {
		return done(err)
	}
	topic := pos[0]
	q := pageQuery(*from, *limit)
	if *group != "" {
		q.Set("group", *group)
	}
	var page dlqPage
	if printed, err := c.call(ctx, http.MethodGet, topicPath(topic, "dlq"), q, nil, &page); printed || err != nil {
		return err
	}
	if len(page.Entries) == 0 {
		fmt.Fprintf(c.stdout, "no dead letters in %s%s\n", topic, groupNote(*group))
	} else {
		c.printDLQ(page.Entries, time.Now())
	}
	if page.Next != "" {
		fmt.Fprintf(c.stderr, "more: sidecar dlq ls %s%s --from %s\n", topic, groupFlag(*group), page.Next)
	}
	return nil
}

// dlqRedrive runs `sidecar dlq redrive <topic> --group G [ids…]`: it calls
// the API redriveBatch at a time until none of the requested dead letters
// is left, showing progress on stderr when that takes more than one call.
// It redrives at most as many as the first answer said there were: a
// webhook that still fails sends them straight back, and looping on those
// would never end.
func (c *cliCmd) dlqRedrive(ctx context.Context, args []string) error {
	const synopsis = "sidecar dlq redrive <topic> --group G [dlq or event ids…] [--json]"
	fs := c.flags("dlq redrive")
	group := fs.String("group", "", "deliver again to this group only (required)")
	pos, err := c.parse(fs, args, synopsis, 1, -1)
	if err != nil {
		return done(err)
	}
	if err := c.needGroup(fs, synopsis, *group); err != nil {
		return err
	}
	topic, ids := pos[0], pos[1:]
	req := redriveRequest{Group: *group, IDs: ids, Limit: redriveBatch}
	var (
		total redriveAnswer
		raw   []byte
		calls int
		goal  flexInt // the dead letters there were at the first call
	)
	for {
		var ans redriveAnswer
		raw, err = c.api.do(ctx, http.MethodPost, topicPath(topic, "dlq", "redrive"), nil, req, &ans)
		if err != nil {
			if total.Redriven > 0 {
				return fmt.Errorf("%w (after redriving %s of %s; run it again to continue)", err, humanInt(int64(total.Redriven)), humanInt(int64(goal)))
			}
			return err
		}
		calls++
		if calls == 1 {
			goal = ans.Redriven + ans.Remaining
			total.NotFound = ans.NotFound // later calls would name the ids earlier ones moved
		}
		total.Topic, total.Group = ans.Topic, ans.Group
		total.Redriven += ans.Redriven
		total.Remaining = ans.Remaining
		if ans.Remaining > 0 || calls > 1 {
			fmt.Fprintf(c.stderr, "redriven %s of %s\n", humanInt(int64(total.Redriven)), humanInt(int64(goal)))
		}
		if ans.Remaining <= 0 || total.Redriven >= goal {
			break
		}
		if ans.Redriven <= 0 {
			return fmt.Errorf("redrive made no progress: %s dead letters remain in %s for group %s", humanInt(int64(ans.Remaining)), topic, *group)
		}
		req.Limit = int(min(redriveBatch, goal-total.Redriven))
	}
	if total.Remaining > 0 {
		fmt.Fprintf(c.stderr, "%s dead letters of group %s are in the DLQ again or arrived meanwhile (does the webhook still fail?); not redriven\n",
			humanInt(int64(total.Remaining)), *group)
	}
	if c.asJSON {
		if calls == 1 {
			return c.printJSON(raw)
		}
		b, _ := json.Marshal(total)
		return c.printJSON(b)
	}
	if len(total.NotFound) > 0 {
		fmt.Fprintf(c.stderr, "not dead letters of group %s (left alone): %s\n", *group, strings.Join(total.NotFound, ", "))
	}
	if total.Redriven == 0 {
		fmt.Fprintf(c.stdout, "nothing to redrive in %s for group %s\n", topic, *group)
		return nil
	}
	fmt.Fprintf(c.stdout, "redriven %s %s of %s to group %s\n", humanInt(int64(total.Redriven)), plural(int64(total.Redriven), "dead letter"), topic, *group)
	return nil
}

// dlqPurge runs `sidecar dlq purge <topic> --group G [ids…] [--yes]`.
func (c *cliCmd) dlqPurge(ctx context.Context, args []string) error {
	const synopsis = "sidecar dlq purge <topic> --group G [dlq or event ids…] [--yes] [--json]"
	fs := c.flags("dlq purge")
	group := fs.String("group", "", "the group whose dead letters to delete (required)")
	yes := fs.Bool("yes", false, "confirm deleting ALL of the group's dead letters (needed when no ids are given)")
	pos, err := c.parse(fs, args, synopsis, 1, -1)
	if err != nil {
		return done(err)
	}
	if err := c.needGroup(fs, synopsis, *group); err != nil {
		return err
	}
	topic, ids := pos[0], pos[1:]
	if len(ids) == 0 && !*yes {
		return c.usageError(fs.Name(), synopsis, fmt.Errorf("no ids: this deletes every dead letter of group %s in %s for good; add --yes to confirm", *group, topic))
	}
	q := url.Values{"group": {*group}}
	if len(ids) > 0 {
		q.Set("ids", strings.Join(ids, ","))
	}
	var ans struct {
		Purged flexInt `json:"purged"`
	}
	if printed, err := c.call(ctx, http.MethodDelete, topicPath(topic, "dlq"), q, nil, &ans); printed || err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "purged %s %s of %s (group %s)\n", humanInt(int64(ans.Purged)), plural(int64(ans.Purged), "dead letter"), topic, *group)
	return nil
}

// seek runs `sidecar seek <topic> --group G --to <position>`.
func (c *cliCmd) seek(ctx context.Context, args []string) error {
	const synopsis = "sidecar seek <topic> --group G --to <stream id|RFC 3339|earliest|latest> [--json]"
	fs := c.flags("seek")
	group := fs.String("group", "", "the consumer group to move (required)")
	to := fs.String("to", "", "the new position: a stream id, an RFC 3339 time (its events are delivered again), earliest or latest (required)")
	pos, err := c.parse(fs, args, synopsis, 1, 1)
	if err != nil {
		return done(err)
	}
	if err := c.needGroup(fs, synopsis, *group); err != nil {
		return err
	}
	if *to == "" {
		return c.usageError(fs.Name(), synopsis, errors.New("--to is required"))
	}
	topic := pos[0]
	var ans struct {
		From string `json:"from"`
		To   string `json:"to"`
	}
	if printed, err := c.call(ctx, http.MethodPost, subPath(topic, *group, "seek"), nil, map[string]string{"to": *to}, &ans); printed || err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s/%s: last delivered id moved from %s to %s (entries already pending stay pending)\n", topic, *group, orDash(ans.From), orDash(ans.To))
	return nil
}

// pause runs `sidecar pause|resume <topic> --group G`.
func (c *cliCmd) pause(ctx context.Context, op string, args []string) error {
	synopsis := "sidecar " + op + " <topic> --group G [--json]"
	fs := c.flags(op)
	group := fs.String("group", "", "the consumer group (required)")
	pos, err := c.parse(fs, args, synopsis, 1, 1)
	if err != nil {
		return done(err)
	}
	if err := c.needGroup(fs, synopsis, *group); err != nil {
		return err
	}
	topic := pos[0]
	var ans struct {
		Paused bool `json:"paused"`
	}
	if printed, err := c.call(ctx, http.MethodPost, subPath(topic, *group, op), nil, nil, &ans); printed || err != nil {
		return err
	}
	if ans.Paused {
		fmt.Fprintf(c.stdout, "%s/%s: paused (every replica stops reading; deliveries in flight finish)\n", topic, *group)
	} else {
		fmt.Fprintf(c.stdout, "%s/%s: delivering\n", topic, *group)
	}
	return nil
}

// consumers runs `sidecar consumers <topic> --group G [--cleanup --idle D]`.
func (c *cliCmd) consumers(ctx context.Context, args []string) error {
	const synopsis = "sidecar consumers <topic> --group G [--cleanup [--idle 1h]] [--json]"
	fs := c.flags("consumers")
	group := fs.String("group", "", "the consumer group (required)")
	cleanup := fs.Bool("cleanup", false, "remove consumers idle longer than --idle that hold no pending entries")
	idle := fs.String("idle", "", "with --cleanup: how long a consumer must have been idle (default 1h)")
	pos, err := c.parse(fs, args, synopsis, 1, 1)
	if err != nil {
		return done(err)
	}
	if err := c.needGroup(fs, synopsis, *group); err != nil {
		return err
	}
	if *idle != "" && !*cleanup {
		return c.usageError(fs.Name(), synopsis, errors.New("--idle goes with --cleanup"))
	}
	topic := pos[0]
	if !*cleanup {
		var ans consumersAnswer
		if printed, err := c.call(ctx, http.MethodGet, subPath(topic, *group, "consumers"), nil, nil, &ans); printed || err != nil {
			return err
		}
		c.printConsumers(topic, *group, ans)
		return nil
	}
	if *idle == "" {
		*idle = "1h"
	}
	var ans cleanupAnswer
	if printed, err := c.call(ctx, http.MethodPost, subPath(topic, *group, "consumers/cleanup"), nil, map[string]string{"idle": *idle}, &ans); printed || err != nil {
		return err
	}
	c.printCleanup(ans, *idle)
	return nil
}

// pageQuery is the from/limit query of a paged read (empty values left out).
func pageQuery(from string, limit int) url.Values {
	q := url.Values{}
	if from != "" {
		q.Set("from", from)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return q
}

// call makes one API call, decoding the answer into out; with --json it
// prints the answer as the API gave it and reports printed, so the caller
// prints no table.
func (c *cliCmd) call(ctx context.Context, method, path string, q url.Values, body, out any) (printed bool, err error) {
	raw, err := c.api.do(ctx, method, path, q, body, out)
	if err != nil || !c.asJSON {
		return false, err
	}
	return true, c.printJSON(raw)
}
