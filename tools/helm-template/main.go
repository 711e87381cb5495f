// Command helm-template renders a Helm 3 chart directory the way `helm template` does.
//
// Why it exists: the helm binary cannot be installed where this project is built and
// tested (only the Debian, PyPI, npm and crates.io registries are reachable, and the
// npm wrappers download helm from get.helm.sh). Rather than approximate Helm, this
// program drives the very libraries Helm 3 drives -- Go's text/template, Masterminds
// sprig v3, sigs.k8s.io/yaml and xeipuuv/gojsonschema, all packaged by Debian -- and
// reimplements the thin layer Helm puts around them: loading the chart, merging and
// coalescing values, schema validation, the built-in objects, the extra template
// functions, splitting/sorting the rendered manifests, and the output format.
//
// The reference is Helm v3.14 (the last line of releases that pairs sprig 3.2.3,
// gojsonschema 1.2.0 and sigs.k8s.io/yaml 1.3.0, which are exactly the Debian
// versions). Behaviour was written from reading Helm's source, not copied from it.
//
// Usage:
//
//	helm-template [NAME] CHART_DIR [flags]
//
// Flags (Helm's spelling; flags may appear before or after the positional arguments):
//
//	-f, --values FILE          values file, repeatable, comma-separated lists allowed
//	    --set k=v[,k=v]        typed values (int64, bool, null, string), repeatable
//	    --set-string k=v       like --set but every value is a string
//	    --set-file k=path      value is the content of the file
//	-n, --namespace NS         .Release.Namespace (default "default")
//	    --release NAME         .Release.Name (default "release-name"; NAME positional also works)
//	    --include-crds         print <chart>/crds/ files first
//	    --no-hooks             do not print hook manifests
//	    --skip-tests           do not print test hooks
//	    --is-upgrade           .Release.IsUpgrade=true, IsInstall=false
//	    --kube-version V       .Capabilities.KubeVersion (default v1.20.2)
//	-a, --api-versions G/V     extra .Capabilities.APIVersions, repeatable
//	-s, --show-only PATH       only print manifests from templates matching PATH (glob)
//	    --debug                on render errors, print what was rendered anyway
//
// Errors go to stderr as "Error: <message>" with exit status 1, like helm.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"unicode"

	"github.com/BurntSushi/toml"
	"github.com/Masterminds/semver/v3"
	"github.com/Masterminds/sprig/v3"
	"github.com/gobwas/glob"
	"github.com/xeipuuv/gojsonschema"
	yamlv3 "gopkg.in/yaml.v3"
	"sigs.k8s.io/yaml"
)

// emulatedHelmVersion is what .Capabilities.HelmVersion.Version reports.
const emulatedHelmVersion = "v3.14.4"

func main() {
	opts, err := parseArgs(os.Args[1:])
	if err == errHelp {
		fmt.Fprint(os.Stdout, usage)
		return
	}
	if err != nil {
		fail(err)
	}
	out, err := run(opts)
	// Like `helm template --debug`, print whatever was rendered even when it failed.
	if out != "" && (err == nil || opts.debug) {
		os.Stdout.WriteString(out)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "Error: %s\n", err)
	os.Exit(1)
}

func warnf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "WARNING: "+format+"\n", args...)
}

// logf is for the messages Helm sends through Go's log package (coalescing, hooks).
func logf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

// ---------------------------------------------------------------------------
// Command line. A hand-rolled parser because Go's flag package stops at the first
// positional argument, whereas helm (pflag) accepts flags anywhere.

const usage = `usage: helm-template [NAME] CHART_DIR [--values FILE]... [--set k=v]... [--set-string k=v]...
       [--set-file k=path]... [--namespace NS] [--release NAME] [--include-crds] [--no-hooks]
       [--skip-tests] [--is-upgrade] [--kube-version V] [--api-versions G/V]... [--show-only PATH]... [--debug]
`

var errHelp = errors.New("help requested")

type options struct {
	releaseName string
	chartPath   string
	namespace   string
	valueFiles  []string
	setValues   []string
	setStrings  []string
	setFiles    []string
	includeCRDs bool
	noHooks     bool
	skipTests   bool
	isUpgrade   bool
	debug       bool
	kubeVersion string
	apiVersions []string
	showOnly    []string
}

func parseArgs(args []string) (*options, error) {
	o := &options{namespace: "default"}
	releaseFlag := ""
	splitList := func(v string) []string { // pflag's StringSlice splits on commas
		var out []string
		for _, s := range strings.Split(v, ",") {
			if s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	valued := map[string]func(string){
		"values":       func(v string) { o.valueFiles = append(o.valueFiles, splitList(v)...) },
		"set":          func(v string) { o.setValues = append(o.setValues, v) },
		"set-string":   func(v string) { o.setStrings = append(o.setStrings, v) },
		"set-file":     func(v string) { o.setFiles = append(o.setFiles, v) },
		"namespace":    func(v string) { o.namespace = v },
		"release":      func(v string) { releaseFlag = v },
		"kube-version": func(v string) { o.kubeVersion = v },
		"api-versions": func(v string) { o.apiVersions = append(o.apiVersions, splitList(v)...) },
		"show-only":    func(v string) { o.showOnly = append(o.showOnly, v) },
	}
	boolean := map[string]*bool{
		"include-crds": &o.includeCRDs, "no-hooks": &o.noHooks, "skip-tests": &o.skipTests,
		"is-upgrade": &o.isUpgrade, "debug": &o.debug,
	}
	short := map[string]string{"f": "values", "n": "namespace", "a": "api-versions", "s": "show-only", "h": "help"}

	var positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			positional = append(positional, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !strings.HasPrefix(arg, "--") {
			long, ok := short[name]
			if !ok {
				return nil, fmt.Errorf("unknown shorthand flag: %q in %s", name, arg)
			}
			name = long
		}
		if name == "help" {
			return nil, errHelp
		}
		if set, ok := valued[name]; ok {
			if !hasValue {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("flag needs an argument: --%s", name)
				}
				i++
				value = args[i]
			}
			set(value)
			continue
		}
		if b, ok := boolean[name]; ok {
			*b = true
			if hasValue {
				v, err := strconv.ParseBool(value)
				if err != nil {
					return nil, fmt.Errorf("invalid argument %q for %q flag: %v", value, "--"+name, err)
				}
				*b = v
			}
			continue
		}
		return nil, fmt.Errorf("unknown flag: --%s", name)
	}

	switch len(positional) {
	case 1:
		o.chartPath = positional[0]
		o.releaseName = releaseFlag
	case 2:
		if releaseFlag != "" && releaseFlag != positional[0] {
			return nil, fmt.Errorf("release name given twice: %q and --release %q", positional[0], releaseFlag)
		}
		o.releaseName, o.chartPath = positional[0], positional[1]
	default:
		return nil, fmt.Errorf("expected [NAME] CHART_DIR, got %d arguments\n%s", len(positional), usage)
	}
	if o.releaseName == "" {
		o.releaseName = "release-name" // what `helm template` uses when no name is given
	}
	return o, nil
}

// ---------------------------------------------------------------------------
// The pipeline, in the order `helm template` runs it (cmd/helm/install.go runInstall,
// then action.Install.Run, then action.renderResources). The order matters because it
// decides which error wins when several things are wrong.

func run(o *options) (string, error) {
	if _, err := os.Stat(o.chartPath); err != nil {
		return "", fmt.Errorf("path %q not found", o.chartPath)
	}
	userVals, err := mergeUserValues(o)
	if err != nil {
		return "", err
	}
	ch, err := loadChart(o.chartPath)
	if err != nil {
		return "", err
	}
	switch ch.Metadata.Type {
	case "", "application":
	default:
		return "", fmt.Errorf("%s charts are not installable", ch.Metadata.Type)
	}
	if ch.Metadata.Deprecated {
		warnf("This chart is deprecated")
	}
	if len(ch.Metadata.Dependencies) > 0 || ch.hasSubcharts {
		return "", errors.New("chart dependencies / subcharts (Chart.yaml dependencies, charts/) are not supported by this renderer")
	}
	if err := validateReleaseName(o.releaseName); err != nil {
		return "", fmt.Errorf("release name %q: %w", o.releaseName, err)
	}

	caps, err := newCapabilities(o)
	if err != nil {
		return "", err
	}
	vals := coalesceValues(ch.Metadata.Name, ch.Values, userVals)
	if ch.Schema != nil {
		if err := validateAgainstSchema(vals, ch.Schema); err != nil {
			return "", fmt.Errorf("values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n%s", ch.Metadata.Name, err)
		}
	}

	// Errors from here on come after Helm created its dry-run release, which is when helm
	// suggests --debug.
	out, err := renderResources(o, ch, caps, vals)
	if err != nil {
		if !o.debug {
			return out, fmt.Errorf("%w\n\nUse --debug flag to render out invalid YAML", err)
		}
		return out, err
	}
	if len(o.showOnly) > 0 {
		return showOnly(out, o.showOnly)
	}
	return out, nil
}

var validReleaseName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func validateReleaseName(name string) error {
	if len(name) > 53 || !validReleaseName.MatchString(name) {
		return fmt.Errorf("invalid release name, must match regex %s and the length must not be longer than 53", validReleaseName)
	}
	return nil
}

// ---------------------------------------------------------------------------
// User-supplied values: -f files merged in order, then all --set, then all --set-string,
// then all --set-file (Helm's fixed order, whatever the order on the command line).
// A null here is kept; it deletes the chart default later, in coalesceValues.

func mergeUserValues(o *options) (map[string]interface{}, error) {
	base := map[string]interface{}{}
	for _, file := range o.valueFiles {
		var data []byte
		var err error
		if strings.TrimSpace(file) == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return nil, err
		}
		current := map[string]interface{}{}
		if err := yaml.Unmarshal(data, &current); err != nil {
			return nil, fmt.Errorf("failed to parse %s: %w", file, err)
		}
		base = mergeMaps(base, current)
	}
	for _, s := range o.setValues {
		if err := parseSet(s, base, typedSetValue); err != nil {
			return nil, fmt.Errorf("failed parsing --set data: %w", err)
		}
	}
	for _, s := range o.setStrings {
		if err := parseSet(s, base, func(v string) (interface{}, error) { return v, nil }); err != nil {
			return nil, fmt.Errorf("failed parsing --set-string data: %w", err)
		}
	}
	for _, s := range o.setFiles {
		readFile := func(p string) (interface{}, error) {
			data, err := os.ReadFile(p)
			return string(data), err
		}
		if err := parseSet(s, base, readFile); err != nil {
			return nil, fmt.Errorf("failed parsing --set-file data: %w", err)
		}
	}
	return base, nil
}

// mergeMaps overlays b on a: maps merge recursively, anything else (lists, scalars,
// null) replaces.
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]interface{}); ok {
			if am, ok := out[k].(map[string]interface{}); ok {
				out[k] = mergeMaps(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// typedSetValue is how --set types a scalar: true/false/null (any case), "0", or an
// int64 without a leading zero; everything else stays a string (so 1.5 is "1.5").
func typedSetValue(v string) (interface{}, error) {
	switch {
	case strings.EqualFold(v, "true"):
		return true, nil
	case strings.EqualFold(v, "false"):
		return false, nil
	case strings.EqualFold(v, "null"):
		return nil, nil
	case v == "0":
		return int64(0), nil
	}
	if v != "" && v[0] != '0' {
		if i, err := strconv.ParseInt(v, 10, 64); err == nil {
			return i, nil
		}
	}
	return v, nil
}

// setParser implements Helm's --set grammar: comma-separated assignments of dotted
// keys, `name[i]` list indexes, `{a,b}` list values, and backslash escapes.
type setParser struct {
	in      []rune
	pos     int
	convert func(string) (interface{}, error)
}

const (
	setMaxIndex  = 65536
	setMaxNested = 30
)

var errSetNotList = errors.New("not a list")

func parseSet(s string, dest map[string]interface{}, convert func(string) (interface{}, error)) error {
	p := &setParser{in: []rune(s), convert: convert}
	for {
		err := p.key(dest, 0)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// until reads up to (and consumes) the first rune of stop; eof reports running out.
func (p *setParser) until(stop string) (text string, last rune, eof bool) {
	var b strings.Builder
	for p.pos < len(p.in) {
		r := p.in[p.pos]
		p.pos++
		if strings.ContainsRune(stop, r) {
			return b.String(), r, false
		}
		if r == '\\' {
			if p.pos >= len(p.in) {
				return b.String(), 0, true
			}
			r = p.in[p.pos]
			p.pos++
		}
		b.WriteRune(r)
	}
	return b.String(), 0, true
}

func setKey(data map[string]interface{}, key string, val interface{}) {
	if key != "" {
		data[key] = val
	}
}

func (p *setParser) key(data map[string]interface{}, level int) error {
	k, last, eof := p.until("=[,.")
	switch {
	case eof:
		if k == "" {
			return io.EOF
		}
		return fmt.Errorf("key %q has no value", k)
	case last == '[':
		i, err := p.index()
		if err != nil {
			return fmt.Errorf("error parsing index: %w", err)
		}
		list := []interface{}{}
		if existing, ok := data[k]; ok {
			if list, ok = existing.([]interface{}); !ok {
				return fmt.Errorf("unable to parse key: interface conversion: interface {} is %T, not []interface {}", existing)
			}
		}
		list, err = p.listItem(list, i, level)
		setKey(data, k, list)
		return err
	case last == '=':
		list, err := p.valueList()
		switch err {
		case nil:
			setKey(data, k, list)
			return nil
		case io.EOF:
			setKey(data, k, "")
			return io.EOF
		case errSetNotList:
			raw, _, _ := p.until(",")
			v, err := p.convert(raw)
			setKey(data, k, v)
			return err
		default:
			return err
		}
	case last == ',':
		setKey(data, k, "")
		return fmt.Errorf("key %q has no value (cannot end with ,)", k)
	default: // '.'
		level++
		if level > setMaxNested {
			return fmt.Errorf("value name nested level is greater than maximum supported nested level of %d", setMaxNested)
		}
		inner := map[string]interface{}{}
		if existing, ok := data[k]; ok {
			if inner, ok = existing.(map[string]interface{}); !ok {
				return fmt.Errorf("unable to parse key: interface conversion: interface {} is %T, not map[string]interface {}", existing)
			}
		}
		err := p.key(inner, level)
		if err == nil && len(inner) == 0 {
			return fmt.Errorf("key map %q has no value", k)
		}
		if len(inner) != 0 {
			setKey(data, k, inner)
		}
		return err
	}
}

func (p *setParser) index() (int, error) {
	text, _, eof := p.until("]")
	if eof {
		return 0, io.EOF
	}
	return strconv.Atoi(text)
}

func setIndex(list []interface{}, i int, v interface{}) ([]interface{}, error) {
	if i < 0 {
		return list, fmt.Errorf("negative %d index not allowed", i)
	}
	if i > setMaxIndex {
		return list, fmt.Errorf("index of %d is greater than maximum supported index of %d", i, setMaxIndex)
	}
	if len(list) <= i {
		grown := make([]interface{}, i+1)
		copy(grown, list)
		list = grown
	}
	list[i] = v
	return list, nil
}

func (p *setParser) listItem(list []interface{}, i, level int) ([]interface{}, error) {
	if i < 0 {
		return list, fmt.Errorf("negative %d index not allowed", i)
	}
	k, last, eof := p.until("[.=")
	switch {
	case k != "":
		return list, fmt.Errorf("unexpected data at end of array index: %q", k)
	case eof:
		return list, io.EOF
	case last == '=':
		vl, err := p.valueList()
		switch err {
		case nil:
			return setIndex(list, i, vl)
		case io.EOF:
			return setIndex(list, i, "")
		case errSetNotList:
			raw, _, _ := p.until(",")
			v, err := p.convert(raw)
			if err != nil {
				return list, err
			}
			return setIndex(list, i, v)
		default:
			return list, err
		}
	case last == '[':
		next, err := p.index()
		if err != nil {
			return list, fmt.Errorf("error parsing index: %w", err)
		}
		var inner []interface{}
		if len(list) > i && list[i] != nil {
			var ok bool
			if inner, ok = list[i].([]interface{}); !ok {
				return list, fmt.Errorf("error processing index %d: interface conversion: interface {} is %T, not []interface {}", i, list[i])
			}
		}
		inner, err = p.listItem(inner, next, level)
		if err != nil {
			return list, err
		}
		return setIndex(list, i, inner)
	default: // '.'
		inner := map[string]interface{}{}
		if len(list) > i {
			m, ok := list[i].(map[string]interface{})
			if !ok {
				m = map[string]interface{}{}
				list[i] = m
			}
			inner = m
		}
		if err := p.key(inner, level); err != nil {
			return list, err
		}
		return setIndex(list, i, inner)
	}
}

// valueList parses `{a,b,c}` right after '='; errSetNotList if the value is a scalar.
func (p *setParser) valueList() ([]interface{}, error) {
	if p.pos >= len(p.in) {
		return []interface{}{}, io.EOF
	}
	if p.in[p.pos] != '{' {
		return []interface{}{}, errSetNotList
	}
	p.pos++
	list := []interface{}{}
	for {
		raw, last, eof := p.until(",}")
		if eof {
			return list, errors.New("list must terminate with '}'")
		}
		v, err := p.convert(raw)
		if last == '}' {
			if p.pos < len(p.in) && p.in[p.pos] == ',' {
				p.pos++
			}
			return append(list, v), err
		}
		if err != nil {
			return list, err
		}
		list = append(list, v)
	}
}

// ---------------------------------------------------------------------------
// Chart loading (Helm's loader.LoadDir): walk the directory honouring .helmignore, then
// sort files into Chart.yaml / values.yaml / values.schema.json / templates/ / Files.

// Metadata mirrors Helm's chart.Metadata so templates see the same field names
// (.Chart.Name, .Chart.AppVersion, .Chart.APIVersion, ...).
type Metadata struct {
	Name         string            `json:"name,omitempty"`
	Home         string            `json:"home,omitempty"`
	Sources      []string          `json:"sources,omitempty"`
	Version      string            `json:"version,omitempty"`
	Description  string            `json:"description,omitempty"`
	Keywords     []string          `json:"keywords,omitempty"`
	Maintainers  []*Maintainer     `json:"maintainers,omitempty"`
	Icon         string            `json:"icon,omitempty"`
	APIVersion   string            `json:"apiVersion,omitempty"`
	Condition    string            `json:"condition,omitempty"`
	Tags         string            `json:"tags,omitempty"`
	AppVersion   string            `json:"appVersion,omitempty"`
	Deprecated   bool              `json:"deprecated,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	KubeVersion  string            `json:"kubeVersion,omitempty"`
	Dependencies []*Dependency     `json:"dependencies,omitempty"`
	Type         string            `json:"type,omitempty"`
}

type Maintainer struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	URL   string `json:"url,omitempty"`
}

type Dependency struct {
	Name         string        `json:"name"`
	Version      string        `json:"version,omitempty"`
	Repository   string        `json:"repository"`
	Condition    string        `json:"condition,omitempty"`
	Tags         []string      `json:"tags,omitempty"`
	Enabled      bool          `json:"enabled,omitempty"`
	ImportValues []interface{} `json:"import-values,omitempty"`
	Alias        string        `json:"alias,omitempty"`
}

type chartFile struct {
	Name string // slash-separated, relative to the chart root
	Data []byte
}

type chart struct {
	Metadata     *Metadata
	Values       map[string]interface{}
	Schema       []byte
	Templates    []chartFile
	Files        []chartFile // everything else; what .Files sees (crds/ included)
	hasSubcharts bool
}

func loadChart(dir string) (*chart, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s: packaged charts are not supported, pass the chart directory", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "Chart.yaml")); err != nil {
		return nil, fmt.Errorf("no Chart.yaml exists in directory %q", dir)
	}
	rules := &ignoreRules{}
	if data, err := os.ReadFile(filepath.Join(dir, ".helmignore")); err == nil {
		data = bytes.TrimPrefix(data, utf8BOM)
		for _, line := range strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n") {
			if err := rules.add(line); err != nil {
				return nil, err
			}
		}
	}
	rules.add("templates/.?*") // Helm always skips hidden files in templates/

	files, err := walkChart(dir, rules)
	if err != nil {
		return nil, err
	}
	c := &chart{}
	for _, f := range files {
		if f.Name == "Chart.yaml" {
			c.Metadata = &Metadata{}
			if err := yaml.Unmarshal(f.Data, c.Metadata); err != nil {
				return nil, fmt.Errorf("cannot load Chart.yaml: %w", err)
			}
			if c.Metadata.APIVersion == "" {
				c.Metadata.APIVersion = "v1"
			}
		}
	}
	for _, f := range files {
		switch {
		case f.Name == "Chart.yaml", f.Name == "Chart.lock", f.Name == "requirements.lock":
		case f.Name == "values.yaml":
			c.Values = map[string]interface{}{}
			if err := yaml.Unmarshal(f.Data, &c.Values); err != nil {
				return nil, fmt.Errorf("cannot load values.yaml: %w", err)
			}
		case f.Name == "values.schema.json":
			c.Schema = f.Data
		case f.Name == "requirements.yaml":
			return nil, errors.New("requirements.yaml (apiVersion v1 dependencies) is not supported by this renderer")
		case strings.HasPrefix(f.Name, "templates/"):
			c.Templates = append(c.Templates, f)
		case strings.HasPrefix(f.Name, "charts/"):
			if filepath.Ext(f.Name) == ".prov" {
				c.Files = append(c.Files, f)
			} else if sub := strings.TrimPrefix(f.Name, "charts/"); strings.IndexAny(sub, "_.") != 0 {
				c.hasSubcharts = true // Helm ignores charts/_* and charts/.*
			}
		default:
			c.Files = append(c.Files, f)
		}
	}
	if c.Metadata == nil {
		return nil, errors.New("Chart.yaml file is missing")
	}
	if err := c.Metadata.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// walkChart lists regular files in lexical order, following symlinks like Helm's
// sympath.Walk, skipping what .helmignore excludes (a matched directory is pruned).
func walkChart(root string, rules *ignoreRules) ([]chartFile, error) {
	var files []chartFile
	var walk func(abs, rel string) error
	walk = func(abs, rel string) error {
		entries, err := os.ReadDir(abs)
		if err != nil {
			return err
		}
		for _, e := range entries {
			childAbs := filepath.Join(abs, e.Name())
			childRel := e.Name()
			if rel != "" {
				childRel = rel + "/" + e.Name()
			}
			fi, err := os.Stat(childAbs)
			if err != nil {
				return err
			}
			if rules.ignore(childRel, fi.IsDir()) {
				continue
			}
			if fi.IsDir() {
				if err := walk(childAbs, childRel); err != nil {
					return err
				}
				continue
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("cannot load irregular file %s as it has file mode type bits set", childAbs)
			}
			data, err := os.ReadFile(childAbs)
			if err != nil {
				return fmt.Errorf("error reading %s: %w", childRel, err)
			}
			files = append(files, chartFile{Name: childRel, Data: bytes.TrimPrefix(data, utf8BOM)})
		}
		return nil
	}
	return files, walk(root, "")
}

// ignoreRules is Helm's .helmignore dialect: filepath.Match globs, no `**`; a rule with
// a '/' matches the whole relative path, otherwise the base name; trailing '/' means
// directories only. Helm's '!' handling is quirky (a non-matching negated rule ignores
// the path) and is reproduced as is.
type ignoreRules struct{ rules []ignoreRule }

type ignoreRule struct {
	pattern         string
	negate, mustDir bool
	wholePath       bool
}

func (r *ignoreRules) add(line string) error {
	line = strings.TrimSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return nil
	}
	if strings.Contains(line, "**") {
		return errors.New("double-star (**) syntax is not supported")
	}
	if _, err := filepath.Match(line, "abc"); err != nil {
		return err
	}
	rule := ignoreRule{}
	if strings.HasPrefix(line, "!") {
		rule.negate, line = true, line[1:]
	}
	if strings.HasSuffix(line, "/") {
		rule.mustDir, line = true, strings.TrimSuffix(line, "/")
	}
	rule.wholePath = strings.Contains(line, "/")
	rule.pattern = strings.TrimPrefix(line, "/")
	r.rules = append(r.rules, rule)
	return nil
}

func (r *ignoreRules) ignore(p string, isDir bool) bool {
	if p == "" || p == "." || p == "./" {
		return false
	}
	for _, rule := range r.rules {
		name := p
		if !rule.wholePath {
			name = filepath.Base(p)
		}
		matched, _ := filepath.Match(rule.pattern, name)
		if rule.negate {
			if (rule.mustDir && !isDir) || !matched {
				return true
			}
			continue
		}
		if rule.mustDir && !isDir {
			continue
		}
		if matched {
			return true
		}
	}
	return false
}

func (md *Metadata) validate() error {
	clean := func(s string) string { // Helm normalises spaces and drops non-printables
		return strings.Map(func(r rune) rune {
			if unicode.IsSpace(r) {
				return ' '
			}
			if unicode.IsPrint(r) {
				return r
			}
			return -1
		}, s)
	}
	for _, s := range []*string{&md.Name, &md.Description, &md.Home, &md.Icon, &md.Condition, &md.Tags, &md.AppVersion, &md.KubeVersion} {
		*s = clean(*s)
	}
	for i := range md.Sources {
		md.Sources[i] = clean(md.Sources[i])
	}
	for i := range md.Keywords {
		md.Keywords[i] = clean(md.Keywords[i])
	}
	switch {
	case md.Name == "":
		return errors.New("validation: chart.metadata.name is required")
	case md.Name != filepath.Base(md.Name):
		return fmt.Errorf("validation: chart.metadata.name %q is invalid", md.Name)
	case md.Version == "":
		return errors.New("validation: chart.metadata.version is required")
	}
	if _, err := semver.NewVersion(md.Version); err != nil {
		return fmt.Errorf("validation: chart.metadata.version %q is invalid", md.Version)
	}
	if md.Type != "" && md.Type != "application" && md.Type != "library" {
		return errors.New("validation: chart.metadata.type must be application or library")
	}
	for _, m := range md.Maintainers {
		if m == nil {
			return errors.New("validation: maintainers must not contain empty or null nodes")
		}
		m.Name, m.Email, m.URL = clean(m.Name), clean(m.Email), clean(m.URL)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Values: coalescing the chart defaults under the user values (Helm's
// chartutil.CoalesceValues). The user wins everywhere; maps merge; a user null
// deletes the key when the chart has that key (a null for a key the chart does not
// have stays as null). Type clashes keep the user value and warn.

// Values is the type of .Values, with Helm's methods (they shadow keys of the same name
// on the top-level map, exactly as in Helm).
type Values map[string]interface{}

func (v Values) YAML() (string, error) {
	b, err := yaml.Marshal(v)
	return string(b), err
}

func (v Values) AsMap() map[string]interface{} {
	if len(v) == 0 {
		return map[string]interface{}{}
	}
	return v
}

func (v Values) Encode(w io.Writer) error {
	out, err := yaml.Marshal(v)
	if err == nil {
		_, err = w.Write(out)
	}
	return err
}

func (v Values) Table(name string) (Values, error) {
	table := v
	for _, part := range strings.Split(name, ".") {
		next, ok := table[part]
		if !ok {
			return table, fmt.Errorf("no table named %q", part)
		}
		switch m := next.(type) {
		case map[string]interface{}:
			table = m
		case Values:
			table = m
		default:
			return Values{}, fmt.Errorf("no table named %q", part)
		}
	}
	return table, nil
}

func (v Values) PathValue(p string) (interface{}, error) {
	if p == "" {
		return nil, errors.New("YAML path cannot be empty")
	}
	parts := strings.Split(p, ".")
	key := parts[len(parts)-1]
	table := v
	if len(parts) > 1 {
		t, err := v.Table(strings.Join(parts[:len(parts)-1], "."))
		if err != nil {
			return nil, fmt.Errorf("no value for key: %q", key)
		}
		table = t
	}
	if val, ok := table[key]; ok {
		if _, isTable := val.(map[string]interface{}); !isTable {
			return val, nil
		}
	}
	return nil, fmt.Errorf("no value for key: %q", key)
}

func coalesceValues(chartName string, chartVals, userVals map[string]interface{}) Values {
	dst := map[string]interface{}{}
	if userVals != nil {
		dst = deepCopy(userVals).(map[string]interface{})
	}
	for key, def := range chartVals {
		def = deepCopy(def)
		user, present := dst[key]
		switch {
		case !present:
			dst[key] = def
		case user == nil:
			delete(dst, key)
		default:
			if um, ok := user.(map[string]interface{}); ok {
				if dm, ok := def.(map[string]interface{}); ok {
					coalesceTables(um, dm, chartName+"."+key)
				} else if def != nil {
					logf("warning: skipped value for %s.%s: Not a table.", chartName, key)
				}
			}
		}
	}
	return Values(dst)
}

func coalesceTables(dst, src map[string]interface{}, prefix string) {
	for key, def := range src {
		full := prefix + "." + key
		user, present := dst[key]
		switch {
		case present && user == nil:
			delete(dst, key)
		case !present:
			dst[key] = def
		default:
			um, userIsTable := user.(map[string]interface{})
			dm, defIsTable := def.(map[string]interface{})
			if defIsTable && userIsTable {
				coalesceTables(um, dm, full)
			} else if defIsTable {
				logf("warning: cannot overwrite table with non table for %s (%v)", full, def)
			} else if userIsTable && def != nil {
				logf("warning: destination for %s is a table. Ignoring non-table value (%v)", full, def)
			}
		}
	}
}

func deepCopy(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		out := make(map[string]interface{}, len(t))
		for k, x := range t {
			out[k] = deepCopy(x)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, x := range t {
			out[i] = deepCopy(x)
		}
		return out
	default:
		return v
	}
}

// validateAgainstSchema is Helm 3's gojsonschema path: values go through YAML and
// back to JSON first, and each failure is reported as "- <field>: <description>".
func validateAgainstSchema(vals Values, schema []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unable to validate schema: %s", r)
		}
	}()
	valuesYAML, err := yaml.Marshal(vals)
	if err != nil {
		return err
	}
	valuesJSON, err := yaml.YAMLToJSON(valuesYAML)
	if err != nil {
		return err
	}
	if bytes.Equal(valuesJSON, []byte("null")) {
		valuesJSON = []byte("{}")
	}
	result, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schema), gojsonschema.NewBytesLoader(valuesJSON))
	if err != nil {
		return err
	}
	if result.Valid() {
		return nil
	}
	var sb strings.Builder
	for _, desc := range result.Errors() {
		fmt.Fprintf(&sb, "- %s\n", desc)
	}
	return errors.New(sb.String())
}

// ---------------------------------------------------------------------------
// Built-in objects.

// KubeVersion, VersionSet, BuildInfo and Capabilities mirror Helm's chartutil types so
// that .Capabilities.KubeVersion.GitVersion, .Capabilities.APIVersions.Has etc. work.
type KubeVersion struct {
	Version string
	Major   string
	Minor   string
}

func (kv *KubeVersion) String() string     { return kv.Version }
func (kv *KubeVersion) GitVersion() string { return kv.Version }

type VersionSet []string

func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

type BuildInfo struct {
	Version      string `json:"version,omitempty"`
	GitCommit    string `json:"git_commit,omitempty"`
	GitTreeState string `json:"git_tree_state,omitempty"`
	GoVersion    string `json:"go_version,omitempty"`
}

type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
	HelmVersion BuildInfo
}

// defaultAPIVersions: the group/versions `helm template` knows without a cluster (those
// registered in client-go v0.29's scheme plus apiextensions), plus
// networking.k8s.io/v1/Ingress, which helm only reports for a live cluster (or with
// --api-versions) but which we assume present.
var defaultAPIVersions = VersionSet{
	"v1",
	"admissionregistration.k8s.io/v1", "admissionregistration.k8s.io/v1beta1", "admissionregistration.k8s.io/v1alpha1",
	"internal.apiserver.k8s.io/v1alpha1",
	"apps/v1", "apps/v1beta1", "apps/v1beta2",
	"authentication.k8s.io/v1", "authentication.k8s.io/v1beta1", "authentication.k8s.io/v1alpha1",
	"authorization.k8s.io/v1", "authorization.k8s.io/v1beta1",
	"autoscaling/v1", "autoscaling/v2", "autoscaling/v2beta1", "autoscaling/v2beta2",
	"batch/v1", "batch/v1beta1",
	"certificates.k8s.io/v1", "certificates.k8s.io/v1beta1", "certificates.k8s.io/v1alpha1",
	"coordination.k8s.io/v1", "coordination.k8s.io/v1beta1",
	"discovery.k8s.io/v1", "discovery.k8s.io/v1beta1",
	"events.k8s.io/v1", "events.k8s.io/v1beta1",
	"extensions/v1beta1",
	"flowcontrol.apiserver.k8s.io/v1", "flowcontrol.apiserver.k8s.io/v1beta1", "flowcontrol.apiserver.k8s.io/v1beta2", "flowcontrol.apiserver.k8s.io/v1beta3",
	"networking.k8s.io/v1", "networking.k8s.io/v1beta1", "networking.k8s.io/v1alpha1",
	"node.k8s.io/v1", "node.k8s.io/v1beta1", "node.k8s.io/v1alpha1",
	"policy/v1", "policy/v1beta1",
	"rbac.authorization.k8s.io/v1", "rbac.authorization.k8s.io/v1beta1", "rbac.authorization.k8s.io/v1alpha1",
	"resource.k8s.io/v1alpha2",
	"scheduling.k8s.io/v1", "scheduling.k8s.io/v1beta1", "scheduling.k8s.io/v1alpha1",
	"storage.k8s.io/v1", "storage.k8s.io/v1beta1", "storage.k8s.io/v1alpha1",
	"apiextensions.k8s.io/v1", "apiextensions.k8s.io/v1beta1",
	"networking.k8s.io/v1/Ingress",
}

var kubeVersionRe = regexp.MustCompile(`^\s*v?([0-9]+(?:\.[0-9]+)*)(.*)*$`)

func newCapabilities(o *options) (*Capabilities, error) {
	caps := &Capabilities{
		KubeVersion: KubeVersion{Version: "v1.20.2", Major: "1", Minor: "20"},
		APIVersions: append(append(VersionSet{}, defaultAPIVersions...), o.apiVersions...),
		HelmVersion: BuildInfo{Version: emulatedHelmVersion, GoVersion: runtime.Version()},
	}
	if o.kubeVersion != "" {
		// Like k8s.io/apimachinery ParseGeneric: two or more numeric fields, the rest ignored.
		m := kubeVersionRe.FindStringSubmatch(o.kubeVersion)
		if m == nil || !strings.Contains(m[1], ".") {
			return nil, fmt.Errorf("invalid kube version '%s': could not parse %q as version", o.kubeVersion, o.kubeVersion)
		}
		parts := strings.Split(m[1], ".")
		var nums []string
		for _, p := range parts {
			n, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("invalid kube version '%s': illegal version component %q", o.kubeVersion, p)
			}
			nums = append(nums, strconv.FormatUint(n, 10))
		}
		caps.KubeVersion = KubeVersion{Version: "v" + strings.Join(nums, "."), Major: nums[0], Minor: nums[1]}
	}
	return caps, nil
}

// files is .Files: chart files outside templates/ (and other than Chart.yaml,
// values.yaml, values.schema.json), keyed by relative path.
type files map[string][]byte

func (f files) GetBytes(name string) []byte {
	if v, ok := f[name]; ok {
		return v
	}
	return []byte{}
}

func (f files) Get(name string) string { return string(f.GetBytes(name)) }

func (f files) Glob(pattern string) files {
	g, err := glob.Compile(pattern, '/')
	if err != nil {
		g, _ = glob.Compile("**")
	}
	out := files{}
	for name, data := range f {
		if g.Match(name) {
			out[name] = data
		}
	}
	return out
}

func (f files) AsConfig() string {
	if f == nil {
		return ""
	}
	m := map[string]string{}
	for k, v := range f {
		m[path.Base(k)] = string(v)
	}
	return toYAML(m)
}

func (f files) AsSecrets() string {
	if f == nil {
		return ""
	}
	m := map[string]string{}
	for k, v := range f {
		m[path.Base(k)] = base64.StdEncoding.EncodeToString(v)
	}
	return toYAML(m)
}

func (f files) Lines(p string) []string {
	if f == nil || len(f[p]) == 0 {
		return []string{}
	}
	s := strings.TrimSuffix(string(f[p]), "\n")
	return strings.Split(s, "\n")
}

// chartObject is .Chart: the metadata fields plus IsRoot, as Helm exposes it.
type chartObject struct {
	Metadata
	IsRoot bool
}

// ---------------------------------------------------------------------------
// Template functions Helm adds to sprig.

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return "" // Helm swallows errors inside templates
	}
	return strings.TrimSuffix(string(data), "\n")
}

func toYAMLPretty(v interface{}) string {
	var buf bytes.Buffer
	enc := yamlv3.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func fromYAML(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromYAMLArray(s string) []interface{} {
	a := []interface{}{}
	if err := yaml.Unmarshal([]byte(s), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func toTOML(v interface{}) string {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(v); err != nil {
		return err.Error()
	}
	return buf.String()
}

func fromTOML(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := toml.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(s string) []interface{} {
	a := []interface{}{}
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

// Messages from `required` and `fail` are fenced so that the error cleanup below can
// find them inside text/template's error chain and print just the message.
const (
	msgStart = "HELM_ERR_START"
	msgEnd   = "HELM_ERR_END"
)

var fencedMsg = regexp.MustCompile(msgStart + `((?s).*)` + msgEnd)

const maxIncludeDepth = 1000

// includeFunc renders a named template into a string (so it can be piped, unlike the
// `template` action). It guards against runaway recursion like Helm.
func includeFunc(t *template.Template, depth map[string]int) func(string, interface{}) (string, error) {
	return func(name string, data interface{}) (string, error) {
		if depth[name] > maxIncludeDepth {
			return "", fmt.Errorf("rendering template has a nested reference name: %s: unable to execute template", name)
		}
		depth[name]++
		defer func() { depth[name]-- }()
		var buf strings.Builder
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
}

// tplFunc renders a string as a template, in a clone of the chart's template set so
// that it can use (and define) named templates.
func tplFunc(parent *template.Template, depth map[string]int) func(string, interface{}) (string, error) {
	return func(text string, vals interface{}) (string, error) {
		t, err := parent.Clone()
		if err != nil {
			return "", fmt.Errorf("cannot clone template: %w", err)
		}
		t.Option("missingkey=zero") // Clone drops options (golang/go#43022)
		t.Funcs(template.FuncMap{"include": includeFunc(t, depth), "tpl": tplFunc(t, depth)})
		t, err = t.New(parent.Name()).Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", text, err)
		}
		var buf strings.Builder
		if err := t.Execute(&buf, vals); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", text, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
}

func funcMap(t *template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env") // Helm hides the environment from charts
	delete(f, "expandenv")
	depth := map[string]int{}
	extra := template.FuncMap{
		"toToml":        toTOML,
		"fromToml":      fromTOML,
		"toYaml":        toYAML,
		"toYamlPretty":  toYAMLPretty,
		"fromYaml":      fromYAML,
		"fromYamlArray": fromYAMLArray,
		"toJson":        toJSON,
		"fromJson":      fromJSON,
		"fromJsonArray": fromJSONArray,
		"include":       includeFunc(t, depth),
		"tpl":           tplFunc(t, depth),
		"required": func(msg string, val interface{}) (interface{}, error) {
			if s, isString := val.(string); val == nil || (isString && s == "") {
				return val, errors.New(msgStart + msg + msgEnd)
			}
			return val, nil
		},
		"fail": func(msg string) (string, error) {
			return "", errors.New(msgStart + msg + msgEnd)
		},
		// `helm template` has no cluster: lookup finds nothing, DNS resolves to "".
		"lookup": func(string, string, string, string) (map[string]interface{}, error) {
			return map[string]interface{}{}, nil
		},
		"getHostByName": func(string) string { return "" },
	}
	for k, v := range extra {
		f[k] = v
	}
	return f
}

// ---------------------------------------------------------------------------
// Rendering (Helm's engine.render).

// renderTemplates parses every file under templates/ into one template set (so any file
// can use any other file's defines), then executes each non-partial file.
func renderTemplates(ch *chart, top map[string]interface{}) (rendered map[string]string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rendering template failed: %v", r)
		}
	}()
	name := ch.Metadata.Name
	sources := map[string]string{}
	var keys []string
	for _, f := range ch.Templates {
		key := path.Join(name, f.Name)
		sources[key] = string(f.Data)
		keys = append(keys, key)
	}
	// Parse order decides which of two same-named defines wins (the last parsed):
	// deepest paths first, and within a depth reverse lexical order, as Helm does.
	sort.Slice(keys, func(i, j int) bool {
		di, dj := strings.Count(keys[i], "/"), strings.Count(keys[j], "/")
		if di != dj {
			return di > dj
		}
		return keys[i] > keys[j]
	})

	t := template.New("gotpl")
	t.Option("missingkey=zero")
	t.Funcs(funcMap(t))
	for _, key := range keys {
		if _, err := t.New(key).Parse(sources[key]); err != nil {
			return nil, cleanupParseError(key, err)
		}
	}

	rendered = map[string]string{}
	for _, key := range keys {
		if strings.HasPrefix(path.Base(key), "_") {
			continue // partials only provide defines
		}
		top["Template"] = Values{"Name": key, "BasePath": path.Join(name, "templates")}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, key, top); err != nil {
			return nil, cleanupExecError(key, err)
		}
		// missingkey=zero still prints "<no value>" for interface values; Helm blanks it.
		rendered[key] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	return rendered, nil
}

func cleanupParseError(name string, err error) error {
	tokens := strings.Split(err.Error(), ": ")
	if len(tokens) == 1 {
		return fmt.Errorf("parse error in (%s): %s", name, err)
	}
	return fmt.Errorf("parse error at (%s): %s", tokens[1], tokens[len(tokens)-1])
}

func cleanupExecError(name string, err error) error {
	if _, ok := err.(template.ExecError); !ok {
		return err
	}
	tokens := strings.SplitN(err.Error(), ": ", 3)
	if len(tokens) != 3 {
		return fmt.Errorf("execution error in (%s): %s", name, err)
	}
	if m := fencedMsg.FindStringSubmatch(tokens[2]); len(m) >= 2 {
		return fmt.Errorf("execution error at (%s): %s", tokens[1], m[1])
	}
	return err
}

// ---------------------------------------------------------------------------
// Manifests: split, classify (hook or not), sort by kind, print.

// Helm's document separator: a line starting with "---", eating surrounding whitespace.
var manifestSep = regexp.MustCompile("(?:^|\\s*\n)---\\s*")

func splitManifests(s string) []string {
	var docs []string
	for _, d := range manifestSep.Split(strings.TrimSpace(s), -1) {
		if d == "" {
			continue
		}
		docs = append(docs, strings.TrimSpace(d))
	}
	return docs
}

// SimpleHead is the part of a manifest Helm reads (named as in Helm so that decoding
// errors read the same).
type SimpleHead struct {
	Version  string `json:"apiVersion"`
	Kind     string `json:"kind,omitempty"`
	Metadata *struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata,omitempty"`
}

type manifest struct {
	path, content, kind string
	isTest              bool
}

var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
	"PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
	"PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
	"ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding",
	"RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
}

var hookEvents = map[string]bool{
	"pre-install": true, "post-install": true, "pre-delete": true, "post-delete": true,
	"pre-upgrade": true, "post-upgrade": true, "pre-rollback": true, "post-rollback": true,
	"test": true, "test-success": true,
}

// sortByKind orders manifests by install order of their kind, unknown kinds last (among
// themselves alphabetically), keeping the file/document order within a kind.
func sortByKind(ms []manifest) {
	rank := map[string]int{}
	for i, k := range installOrder {
		rank[k] = i
	}
	sort.SliceStable(ms, func(i, j int) bool {
		a, aok := rank[ms[i].kind]
		b, bok := rank[ms[j].kind]
		switch {
		case !aok && !bok:
			return ms[i].kind < ms[j].kind
		case !aok:
			return false
		case !bok:
			return true
		}
		return a < b
	})
}

func sortManifests(rendered map[string]string) (generic, hooks []manifest, err error) {
	var paths []string
	for p := range rendered {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		content := rendered[p]
		if strings.HasPrefix(path.Base(p), "_") || strings.TrimSpace(content) == "" {
			continue
		}
		for _, doc := range splitManifests(content) {
			var head SimpleHead
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return nil, nil, fmt.Errorf("YAML parse error on %s: %w", p, err)
			}
			m := manifest{path: p, content: doc, kind: head.Kind}
			hookList := ""
			isHook := false
			if head.Metadata != nil {
				hookList, isHook = head.Metadata.Annotations["helm.sh/hook"]
			}
			if !isHook {
				generic = append(generic, m)
				continue
			}
			known := true
			for _, ev := range strings.Split(hookList, ",") {
				ev = strings.ToLower(strings.TrimSpace(ev))
				if !hookEvents[ev] {
					known = false
					break
				}
				if ev == "test" || ev == "test-success" {
					m.isTest = true
				}
			}
			if !known {
				logf("info: skipping unknown hook: %q", hookList)
				continue
			}
			hooks = append(hooks, m)
		}
	}
	sortByKind(generic)
	sortByKind(hooks)
	return generic, hooks, nil
}

// renderResources renders the chart and assembles the stream exactly like `helm
// template`: CRDs (if asked), the sorted manifests, the whole trimmed and newline
// terminated, then hooks.
func renderResources(o *options, ch *chart, caps *Capabilities, vals Values) (string, error) {
	if ch.Metadata.KubeVersion != "" && !compatibleKube(ch.Metadata.KubeVersion, caps.KubeVersion.String()) {
		return "", fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", ch.Metadata.KubeVersion, caps.KubeVersion.String())
	}
	fileMap := files{}
	for _, f := range ch.Files {
		fileMap[f.Name] = f.Data
	}
	top := map[string]interface{}{
		"Chart":        chartObject{Metadata: *ch.Metadata, IsRoot: true},
		"Files":        fileMap,
		"Capabilities": caps,
		"Values":       vals,
		"Subcharts":    map[string]interface{}{},
		"Release": map[string]interface{}{
			"Name":      o.releaseName,
			"Namespace": o.namespace,
			"IsUpgrade": o.isUpgrade,
			"IsInstall": !o.isUpgrade,
			"Revision":  1,
			"Service":   "Helm",
		},
	}
	rendered, err := renderTemplates(ch, top)
	if err != nil {
		return "", err
	}
	for name := range rendered {
		if strings.HasSuffix(name, "NOTES.txt") {
			delete(rendered, name) // rendered (so its errors count) but never printed
		}
	}

	var b strings.Builder
	generic, hooks, err := sortManifests(rendered)
	if err != nil {
		// What `helm template --debug` shows for a YAML error: every rendered file.
		var names []string
		for name := range rendered {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if strings.TrimSpace(rendered[name]) != "" {
				fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", name, rendered[name])
			}
		}
		return strings.TrimSpace(b.String()) + "\n", err
	}

	if o.includeCRDs {
		for _, f := range ch.Files {
			ext := strings.ToLower(filepath.Ext(f.Name))
			if strings.HasPrefix(f.Name, "crds/") && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
				fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", filepath.Join(ch.Metadata.Name, f.Name), f.Data)
			}
		}
	}
	for _, m := range generic {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.path, m.content)
	}
	out := strings.TrimSpace(b.String()) + "\n"
	if !o.noHooks {
		for _, h := range hooks {
			if o.skipTests && h.isTest {
				continue
			}
			out += fmt.Sprintf("---\n# Source: %s\n%s\n", h.path, h.content)
		}
	}
	return out, nil
}

func compatibleKube(constraint, version string) bool {
	v, err := semver.NewVersion(version)
	if err != nil {
		return false
	}
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return false
	}
	return c.Check(v)
}

// showOnly keeps the documents whose "# Source: <chart>/<path>" matches one of the
// globs, in output order per glob, as `helm template --show-only` does.
func showOnly(out string, globs []string) (string, error) {
	sourceRe := regexp.MustCompile("# Source: [^/]+/(.+)")
	docs := splitManifests(out)
	var b strings.Builder
	for _, g := range globs {
		g = filepath.ToSlash(g)
		found := false
		for _, doc := range docs {
			m := sourceRe.FindStringSubmatch(doc)
			if m == nil {
				continue
			}
			if ok, _ := filepath.Match(g, m[1]); ok {
				fmt.Fprintf(&b, "---\n%s\n", doc)
				found = true
			}
		}
		if !found {
			return "", fmt.Errorf("could not find template %s in chart", g)
		}
	}
	return b.String(), nil
}
