package main

// The event-log CLI: `sidecar topics|events|dlq|seek|pause|resume|consumers`
// are thin clients of the admin API (internal/admin) of a running sidecar,
// found at --addr / SIDECAR_ADDR and authorised by SIDECAR_API_TOKEN. Every
// command prints a human table, or with --json the API's own answer.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// defaultAdminAddr is where the CLI looks for a sidecar when neither --addr,
// SIDECAR_ADDR nor SIDECAR_LISTEN says otherwise: the default listen address.
const defaultAdminAddr = "http://127.0.0.1:7700"

// redriveBatch is how many dead letters one redrive call moves; the CLI
// loops until none is left, so one call never holds Redis for long.
const redriveBatch = 1000

const cliHelp = `sidecar — durable pub/sub beside a service, on Redis Streams

Run:
  sidecar [settings…]           run the sidecar (sidecar --help lists every setting)
  sidecar check [--json]        deployment validation report (exit 0 only when READY)
  sidecar health                GET /healthz of the configured listen address (for HEALTHCHECK)
  sidecar version               print the version (also --version)
  sidecar config validate [settings…]   check the configuration offline (flags, env, --config file)
  sidecar config print [settings…]      the effective configuration as YAML, secrets redacted

Event log (clients of a running sidecar's admin API):
  sidecar topics                                   topics: length, DLQ, per group lag / pending / paused
  sidecar events <topic> [--from <id|RFC 3339>] [--limit N] [--follow]
                                                   read the log; --follow keeps printing new events
  sidecar dlq ls <topic> [--group G] [--from ID] [--limit N]
                                                   dead letters with their error and attempts
  sidecar dlq redrive <topic> --group G [ids…]     deliver dead letters again, to group G only
  sidecar dlq purge <topic> --group G [ids…]       delete dead letters (all of G's: needs --yes)
  sidecar seek <topic> --group G --to <id|RFC 3339|earliest|latest>
                                                   move the group's position: replay or skip
  sidecar pause <topic> --group G                  stop delivering to the group (every replica)
  sidecar resume <topic> --group G                 start delivering again
  sidecar consumers <topic> --group G [--cleanup [--idle 1h]]
                                                   list the group's consumers; remove idle ones

Event-log flags and environment:
  --json          print the API's JSON instead of a table
  --addr URL      the sidecar's API (SIDECAR_ADDR; else SIDECAR_LISTEN; default http://127.0.0.1:7700)
  SIDECAR_API_TOKEN  sent as Authorization: Bearer <token> when set
  sidecar <command> -h   shows one command's flags
`

// cli runs one event-log command; args[0] is its name.
func cli(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	// Ctrl-C ends --follow (and any call under way) cleanly.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := &cliCmd{getenv: getenv, stdout: stdout, stderr: stderr}
	name, rest := args[0], args[1:]
	switch name {
	case "help":
		fmt.Fprint(stdout, cliHelp)
		return nil
	case "topics":
		return c.topics(ctx, rest)
	case "events":
		return c.events(ctx, rest)
	case "dlq":
		const synopsis = "sidecar dlq ls|redrive|purge <topic> [--group G] [ids…]"
		if len(rest) == 0 {
			return c.usageError("dlq", synopsis, errors.New("say ls, redrive or purge"))
		}
		switch rest[0] {
		case "ls", "list":
			return c.dlqList(ctx, rest[1:])
		case "redrive":
			return c.dlqRedrive(ctx, rest[1:])
		case "purge":
			return c.dlqPurge(ctx, rest[1:])
		case "-h", "--help", "help":
			fmt.Fprint(stdout, cliHelp)
			return nil
		}
		return c.usageError("dlq", synopsis, fmt.Errorf("unknown dlq command %q: say ls, redrive or purge", rest[0]))
	case "seek":
		return c.seek(ctx, rest)
	case "pause", "resume":
		return c.pause(ctx, name, rest)
	case "consumers":
		return c.consumers(ctx, rest)
	}
	return fmt.Errorf("unknown command %q (sidecar help lists them)", name)
}

// cliCmd is one invocation: its environment, outputs, and (once the flags
// are parsed) the admin client.
type cliCmd struct {
	getenv         func(string) string
	stdout, stderr io.Writer

	asJSON bool
	addr   string
	api    *adminClient
}

// flags starts a command's flag set with the flags every command has.
func (c *cliCmd) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("sidecar "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by usageError
	fs.BoolVar(&c.asJSON, "json", false, "print the API's JSON answer")
	fs.StringVar(&c.addr, "addr", "", "the sidecar's API address (default $SIDECAR_ADDR, else $SIDECAR_LISTEN, else "+defaultAdminAddr+")")
	return fs
}

// parse reads flags and positional arguments in any order (`dlq redrive t
// --group g id1 id2`); everything after "--" is positional. synopsis is
// shown on a usage error; minPos and maxPos bound the positionals (maxPos
// -1: any number). It then resolves the address and token.
func (c *cliCmd) parse(fs *flag.FlagSet, args []string, synopsis string, minPos, maxPos int) ([]string, error) {
	var pos, tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i+1:]
			break
		}
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(c.stdout, "usage: %s\n", synopsis)
				fs.SetOutput(c.stdout)
				fs.PrintDefaults()
				return nil, flag.ErrHelp
			}
			return nil, c.usageError(fs.Name(), synopsis, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	pos = append(pos, tail...)
	switch {
	case len(pos) < minPos:
		return nil, c.usageError(fs.Name(), synopsis, errors.New("missing the topic"))
	case maxPos >= 0 && len(pos) > maxPos:
		return nil, c.usageError(fs.Name(), synopsis, fmt.Errorf("unexpected argument %q", pos[maxPos]))
	}
	api, err := newAdminClient(c.addr, c.getenv)
	if err != nil {
		return nil, c.usageError(fs.Name(), synopsis, err)
	}
	c.api = api
	return pos, nil
}

// usageError reports a bad command line on stderr and exits 2.
func (c *cliCmd) usageError(name, synopsis string, err error) error {
	if !strings.HasPrefix(name, "sidecar") {
		name = "sidecar " + name
	}
	fmt.Fprintf(c.stderr, "%s: %v\n", name, err)
	if synopsis != "" {
		fmt.Fprintf(c.stderr, "usage: %s  (-h for its flags)\n", synopsis)
	}
	return exitError{2}
}

// done maps a -h to a clean exit.
func done(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// needGroup is the usage error for a command whose --group is required.
func (c *cliCmd) needGroup(fs *flag.FlagSet, synopsis, group string) error {
	if group == "" {
		return c.usageError(fs.Name(), synopsis, errors.New("--group is required"))
	}
	return nil
}

// printJSON writes the API's answer as it came, one document per line.
func (c *cliCmd) printJSON(body []byte) error {
	body = bytes.TrimSpace(body)
	_, err := c.stdout.Write(append(body, '\n'))
	return err
}
