package resp

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// groupsTimeout bounds the group count that PUBLISH's reply waits for; the
// event is durable before it is asked.
const groupsTimeout = time.Second

// publish is PUBLISH <channel> <message>: a durable publish to topic
// <channel>. The reply counts the topic's consumer groups (at least 1: the
// event is kept for whoever subscribes), not connected clients — a
// publisher that reads 0 as "nobody heard it" would be wrong here.
func (c *client) publish(ctx context.Context, channel string, msg []byte) {
	if err := event.ValidateTopic(channel); err != nil {
		c.write(func(o out) { o.err("ERR " + err.Error()) })
		return
	}
	if len(msg) > c.s.cfg.MaxMessage {
		c.write(func(o out) {
			o.err("ERR message is " + strconv.Itoa(len(msg)) + " bytes; at most " + strconv.Itoa(c.s.cfg.MaxMessage))
		})
		return
	}
	ev := newEvent(c.s.cfg.Service, channel, msg)
	if err := ev.Validate(); err != nil {
		c.write(func(o out) { o.err("ERR " + err.Error()) })
		return
	}
	rc, err := c.s.pub.Publish(ctx, channel, ev)
	if err != nil {
		c.s.log.Warn().Err(err).Str("topic", channel).Msg("resp publish refused")
		c.write(func(o out) { o.err("ERR " + err.Error()) })
		return
	}
	c.s.hub.known(channel)
	groups := 1
	if !rc.Spooled {
		gctx, cancel := context.WithTimeout(ctx, groupsTimeout)
		if n, err := c.s.streams.Groups(gctx, channel); err == nil {
			groups = max(n, 1)
		}
		cancel()
	}
	c.s.log.Debug().Str("topic", channel).Str("event_id", ev.ID).Bool("spooled", rc.Spooled).Msg("resp publish")
	c.write(func(o out) { o.integer(int64(groups)) })
}

// newEvent makes the event of a PUBLISH. A JSON message is
// application/json, anything else application/octet-stream. A JSON object
// may say more, as the FOGIS envelope does: a string "type" is the event
// type (else the channel) and a string "message_id" the event id (else a
// new one), so a receiver can deduplicate by the publisher's own id.
func newEvent(service, channel string, msg []byte) *event.Event {
	ev := &event.Event{
		ID: event.NewID(), Source: service, Type: channel, Time: time.Now().UTC(),
		ContentType: event.DefaultContentType,
		Data:        bytes.Clone(msg), // the reader reuses its buffer
	}
	if !json.Valid(msg) {
		return ev
	}
	ev.ContentType = "application/json"
	if trimmed := bytes.TrimLeft(msg, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return ev
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(msg, &fields) != nil {
		return ev
	}
	if s, ok := jsonString(fields["type"]); ok && event.ValidateAttr("type", s) == nil {
		ev.Type = s
	}
	if s, ok := jsonString(fields["message_id"]); ok && event.ValidateAttr("id", s) == nil {
		ev.ID = s
	}
	return ev
}

func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}
