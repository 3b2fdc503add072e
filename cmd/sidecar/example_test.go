package main

import (
	"bytes"
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The example config and the release config live at the repository root.
const (
	examplePath    = "../../sidecar.example.yaml"
	releasePath    = "../../.goreleaser.yaml"
	configPkgDir   = "../../internal/config"
	exampleSummary = "config OK: service calendar, listen 127.0.0.1:7700, 2 subscription(s), 1 route(s), 1 partitioned topic(s)\n"
)

// TestExampleConfigValidates runs `sidecar config validate` on the example,
// so every value shown there is one the sidecar accepts.
func TestExampleConfigValidates(t *testing.T) {
	var out, errOut bytes.Buffer
	noEnv := func(string) string { return "" }
	err := run(context.Background(), []string{"config", "validate", "--config", examplePath}, noEnv, &out, &errOut)
	if err != nil {
		t.Fatalf("sidecar config validate %s: %v\nstderr: %s", examplePath, err, errOut.String())
	}
	if got := out.String(); got != exampleSummary {
		t.Fatalf("got %q, want %q", got, exampleSummary)
	}
}

// TestExampleConfigHasEveryKey fails when a setting is added without a
// commented line in the example: it reads the settings list and the YAML
// file's struct tags from internal/config's source, so nothing has to be
// exported for it.
func TestExampleConfigHasEveryKey(t *testing.T) {
	keys := exampleKeys(t)
	has := func(want string) (exampleKey, bool) {
		for path, k := range keys {
			if pathMatches(want, path) {
				return k, true
			}
		}
		return exampleKey{}, false
	}

	// Scalars and short forms from the settings list: each key's comment names
	// its environment variable and its default, so the example cannot drift.
	settings := parseSettings(t)
	if len(settings) < 20 {
		t.Fatalf("got %d settings from settings.go, want the whole list (20 or more)", len(settings))
	}
	for _, s := range settings {
		if s.yaml == "" {
			continue // --config itself
		}
		k, ok := has(s.yaml)
		if !ok {
			t.Errorf("setting %s (env %s) has no line in sidecar.example.yaml", s.yaml, s.env)
			continue
		}
		if s.env != "" && !strings.Contains(k.comment, s.env) {
			t.Errorf("%s: comment %q does not name its env var %s", s.yaml, k.comment, s.env)
		}
		if s.def != "" && !strings.Contains(k.comment, s.def) {
			t.Errorf("%s: comment %q does not give its default %s", s.yaml, k.comment, s.def)
		}
	}

	// Every key of the YAML file's shape: routes, responses, fallbacks,
	// topics and every subscription key.
	shape := fileShape(t)
	if !slices.Contains(shape, "subscriptions.ordering") || !slices.Contains(shape, "routes.response.status") {
		t.Fatalf("file.go parsed to %v; want subscriptions.ordering and routes.response.status among them", shape)
	}
	for _, want := range shape {
		if _, ok := has(want); !ok {
			t.Errorf("YAML key %s (internal/config/file.go) has no line in sidecar.example.yaml", want)
		}
	}

	// Every key in the example carries a comment.
	for path, k := range keys {
		if strings.TrimSpace(k.comment) == "" {
			t.Errorf("sidecar.example.yaml line %d: %s has no comment", k.line, path)
		}
	}
}

// TestReleaseConfig checks .goreleaser.yaml for what the release promises
// (static binaries for linux and darwin on amd64 and arm64, the version
// stamped into main.version, README and LICENSE in every archive,
// checksums) without running GoReleaser; .ci/release-check runs it.
func TestReleaseConfig(t *testing.T) {
	raw, err := os.ReadFile(releasePath)
	if err != nil {
		t.Fatal(err)
	}
	var rc struct {
		Version int `yaml:"version"`
		Builds  []struct {
			Main    string   `yaml:"main"`
			Binary  string   `yaml:"binary"`
			Env     []string `yaml:"env"`
			Goos    []string `yaml:"goos"`
			Goarch  []string `yaml:"goarch"`
			Flags   []string `yaml:"flags"`
			Ldflags []string `yaml:"ldflags"`
		} `yaml:"builds"`
		Archives []struct {
			Files []string `yaml:"files"`
		} `yaml:"archives"`
		Checksum struct {
			Algorithm string `yaml:"algorithm"`
		} `yaml:"checksum"`
	}
	if err := yaml.Unmarshal(raw, &rc); err != nil {
		t.Fatal(err)
	}
	if rc.Version != 2 || len(rc.Builds) != 1 || len(rc.Archives) != 1 {
		t.Fatalf("got version %d, %d builds, %d archives; want version 2, one build, one archive", rc.Version, len(rc.Builds), len(rc.Archives))
	}
	b := rc.Builds[0]
	for _, c := range []struct {
		what string
		got  []string
		want []string
	}{
		{"main", []string{b.Main}, []string{"./cmd/sidecar"}},
		{"binary", []string{b.Binary}, []string{"sidecar"}},
		{"env", b.Env, []string{"CGO_ENABLED=0"}},
		{"goos", b.Goos, []string{"linux", "darwin"}},
		{"goarch", b.Goarch, []string{"amd64", "arm64"}},
		{"flags", b.Flags, []string{"-trimpath"}},
		{"ldflags", strings.Fields(strings.Join(b.Ldflags, " ")), []string{"-s", "-w", "-X", "main.version={{.Version}}"}},
		{"archive files", rc.Archives[0].Files, []string{"README.md", "LICENSE"}},
	} {
		for _, w := range c.want {
			if !slices.Contains(c.got, w) {
				t.Errorf("%s: got %v, want it to include %s", c.what, c.got, w)
			}
		}
	}
	for _, f := range rc.Archives[0].Files {
		if _, err := os.Stat(filepath.Join("../..", f)); err != nil {
			t.Errorf("archive file %s: %v", f, err)
		}
	}
	if rc.Checksum.Algorithm != "sha256" {
		t.Errorf("checksum algorithm: got %q, want sha256", rc.Checksum.Algorithm)
	}
	// -X main.version only takes effect on a string variable of package main.
	if reflect.TypeOf(&version).Elem().Kind() != reflect.String {
		t.Errorf("main.version is not a string variable")
	}
}

type exampleKey struct {
	comment string
	line    int
}

// exampleKeys maps each key path in the example (sequences transparent:
// "subscriptions.batch.max_events", "topics.orders.partitions") to the
// comments around it: above the key, after the key or after its value.
func exampleKeys(t *testing.T) map[string]exampleKey {
	t.Helper()
	raw, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	keys := map[string]exampleKey{}
	var walk func(n *yaml.Node, prefix, inherited string)
	walk = func(n *yaml.Node, prefix, inherited string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, prefix, "")
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				// A comment above "- topic:" belongs to the item's mapping node.
				walk(c, prefix, c.HeadComment)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				path := k.Value
				if prefix != "" {
					path = prefix + "." + k.Value
				}
				comment := strings.Join([]string{k.HeadComment, k.LineComment, v.LineComment}, " ")
				if i == 0 {
					comment += " " + inherited
				}
				// Sequences repeat keys: each occurrence must be commented,
				// so an uncommented one is kept.
				if old, dup := keys[path]; !dup || strings.TrimSpace(old.comment) != "" {
					keys[path] = exampleKey{comment: comment, line: k.Line}
				}
				walk(v, path, "")
			}
		}
	}
	walk(&doc, "", "")
	return keys
}

// pathMatches reports whether an example key path matches want, in which
// "*" stands for one segment (a topic name under topics or fallbacks).
// Topic names contain dots, so "*" may also stand for several segments.
func pathMatches(want, path string) bool {
	w, p := strings.Split(want, "."), strings.Split(path, ".")
	var match func(w, p []string) bool
	match = func(w, p []string) bool {
		if len(w) == 0 {
			return len(p) == 0
		}
		if w[0] == "*" {
			for n := 1; n <= len(p); n++ {
				if match(w[1:], p[n:]) {
					return true
				}
			}
			return false
		}
		return len(p) > 0 && w[0] == p[0] && match(w[1:], p[1:])
	}
	return match(w, p)
}

type settingNames struct{ yaml, env, def string }

// parseSettings reads the yaml, env and def fields of every element of
// internal/config's settings list.
func parseSettings(t *testing.T) []settingNames {
	t.Helper()
	f := parseConfigFile(t, "settings.go")
	var out []settingNames
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "settings" || len(vs.Values) != 1 {
			return true
		}
		list, ok := vs.Values[0].(*ast.CompositeLit)
		if !ok {
			t.Fatalf("settings is not a composite literal")
		}
		for _, el := range list.Elts {
			var s settingNames
			for _, f := range el.(*ast.CompositeLit).Elts {
				kv := f.(*ast.KeyValueExpr)
				lit, ok := kv.Value.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				switch kv.Key.(*ast.Ident).Name {
				case "yaml":
					s.yaml = v
				case "env":
					s.env = v
				case "def":
					s.def = v
				}
			}
			out = append(out, s)
		}
		return false
	})
	return out
}

// fileShape lists every leaf key path of internal/config's fileConfig (its
// yaml struct tags, fileSubscription's included): slices are transparent,
// a map's key is "*".
func fileShape(t *testing.T) []string {
	t.Helper()
	f := parseConfigFile(t, "file.go")
	types := map[string]ast.Expr{}
	for _, d := range f.Decls {
		if gd, ok := d.(*ast.GenDecl); ok {
			for _, s := range gd.Specs {
				if ts, ok := s.(*ast.TypeSpec); ok {
					types[ts.Name.Name] = ts.Type
				}
			}
		}
	}
	var out []string
	var walk func(e ast.Expr, prefix string)
	walk = func(e ast.Expr, prefix string) {
		switch e := e.(type) {
		case *ast.Ident:
			if def, ok := types[e.Name]; ok {
				walk(def, prefix)
				return
			}
			out = append(out, prefix) // string, int
		case *ast.StarExpr:
			walk(e.X, prefix)
		case *ast.ArrayType:
			walk(e.Elt, prefix)
		case *ast.MapType:
			walk(e.Value, prefix+".*")
		case *ast.StructType:
			for _, field := range e.Fields.List {
				if field.Tag == nil {
					t.Fatalf("field %v of %s has no yaml tag", field.Names, prefix)
				}
				tag, _ := strconv.Unquote(field.Tag.Value)
				name, _, _ := strings.Cut(reflect.StructTag(tag).Get("yaml"), ",")
				p := name
				if prefix != "" {
					p = prefix + "." + name
				}
				walk(field.Type, p)
			}
		default:
			t.Fatalf("unexpected type %T at %s in file.go", e, prefix)
		}
	}
	root, ok := types["fileConfig"]
	if !ok {
		t.Fatal("file.go has no fileConfig type")
	}
	walk(root, "")
	return out
}

func parseConfigFile(t *testing.T, name string) *ast.File {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(configPkgDir, name), nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
