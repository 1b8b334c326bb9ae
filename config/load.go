package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Error is a configuration error: one line naming the key and where its
// value came from.
type Error struct {
	// Where is "FILE:LINE", "env NAME", "flag --NAME" or "" (a default).
	Where string
	// Key is the dotted key ("nfs.listen", "fuse[0].mountpoint"), or "".
	Key string
	// Msg says what is wrong.
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.Where != "" {
		b.WriteString(e.Where + ": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// EnvPrefix starts the name of every environment variable that sets a key:
// STOREFS_ and the key upper-cased with "." as "_" (STOREFS_NFS_LISTEN).
const EnvPrefix = "STOREFS"

// EnvConfig names the configuration file when --config is not given.
const EnvConfig = "STOREFS_CONFIG"

// envAliases are further variables for some keys (cli.md: STOREFS_STORE).
var envAliases = map[string][]string{
	"store.url": {"STOREFS_STORE"},
}

// EnvNames returns the environment variables that set key, most specific
// first.
func EnvNames(key string) []string {
	name := EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
	return append([]string{name}, envAliases[key]...)
}

// Sources says where Load reads.
type Sources struct {
	// File is the configuration file (--config). "" means $STOREFS_CONFIG,
	// else the first that exists of DefaultFiles (none is fine).
	File string
	// Flags maps a key to the command-line flag that overrides it when the
	// flag is given. Keys are bound one by one, so flag names need not
	// match keys (--9p sets ninep.listen).
	Flags map[string]*pflag.Flag
}

// DefaultFiles returns where Load looks for a configuration file when none
// is named: $XDG_CONFIG_HOME/storefs/config.yaml (else
// ~/.config/storefs/config.yaml), then, when running as root,
// /etc/storefs/config.yaml.
func DefaultFiles() []string {
	var files []string
	if dir, err := os.UserConfigDir(); err == nil {
		files = append(files, filepath.Join(dir, "storefs", "config.yaml"))
	}
	if os.Geteuid() == 0 {
		files = append(files, "/etc/storefs/config.yaml")
	}
	return files
}

// FindFile returns the file Load reads for src, "" for none.
func (src Sources) FindFile() string {
	if src.File != "" {
		return src.File
	}
	if f := os.Getenv(EnvConfig); f != "" {
		return f
	}
	for _, f := range DefaultFiles() {
		if _, err := os.Stat(f); err == nil {
			return f
		}
	}
	return ""
}

// Load reads the configuration: defaults, then the file, then STOREFS_*
// environment variables, then the flags of src that were given. It returns
// a checked configuration or one *Error.
func Load(src Sources) (*Config, error) {
	v := viper.NewWithOptions(viper.EnvKeyReplacer(strings.NewReplacer(".", "_")))
	v.SetConfigType("yaml")
	def := reflect.ValueOf(Default()).Elem()
	fields := leaves()
	for _, f := range fields {
		// Every key gets a default, so that viper consults the
		// environment for all of them.
		v.SetDefault(f.key, def.FieldByIndex(f.index).Interface())
	}

	var pos positions
	file := src.FindFile()
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, &Error{Where: file, Msg: "no such configuration file"}
			}
			return nil, &Error{Where: file, Msg: err.Error()}
		}
		if pos, err = checkYAML(file, data); err != nil {
			return nil, err
		}
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return nil, &Error{Where: file, Msg: "not valid YAML: " + err.Error()}
		}
	}

	// Each key is bound to its own variable: viper's AutomaticEnv would
	// take a set STOREFS_STORE as the whole store section and hide
	// store.spool_size and the other store keys from the file.
	for _, f := range fields {
		if err := v.BindEnv(f.key, EnvNames(f.key)[0]); err != nil {
			return nil, fmt.Errorf("config: bind %s: %w", f.key, err)
		}
	}
	for key, fl := range src.Flags {
		if err := v.BindPFlag(key, fl); err != nil {
			return nil, fmt.Errorf("config: bind flag --%s to %s: %w", fl.Name, key, err)
		}
	}

	l := &loader{src: src, file: file, pos: pos}
	cfg := &Config{}
	out := reflect.ValueOf(cfg).Elem()
	for _, f := range fields {
		dst := out.FieldByIndex(f.index)
		raw := l.get(v, f.key)
		if err := decode(raw, dst.Addr().Interface()); err != nil {
			return nil, &Error{Where: l.where(f.key), Key: f.key, Msg: decodeMessage(f.typ, raw, err)}
		}
	}
	if err := l.validate(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// loader knows where each value came from, for messages.
type loader struct {
	src  Sources
	file string
	pos  positions
}

// get returns the value of key. The aliases (STOREFS_STORE for store.url)
// are read here, not bound in viper: viper takes a set STOREFS_STORE as a
// value of the whole store section, which hides store.url from every
// source but STOREFS_STORE_URL.
func (l *loader) get(v *viper.Viper, key string) any {
	if fl := l.src.Flags[key]; len(envAliases[key]) == 0 || fl != nil && fl.Changed {
		return v.Get(key)
	}
	for _, name := range EnvNames(key) {
		if val := os.Getenv(name); val != "" {
			return val
		}
	}
	return v.Get(key)
}

// where says where the value of key (or of the key of a list element,
// "fuse[1].mountpoint") was set: the flag, the environment variable or the
// file line, in the order that wins.
func (l *loader) where(key string) string {
	base := key
	if i := strings.IndexByte(base, '['); i >= 0 {
		base = base[:i]
	}
	if fl := l.src.Flags[base]; fl != nil && fl.Changed {
		return "flag --" + fl.Name
	}
	for _, name := range EnvNames(base) {
		if os.Getenv(name) != "" {
			return "env " + name
		}
	}
	for k := key; k != ""; {
		if line, ok := l.pos[k]; ok {
			return fmt.Sprintf("%s:%d", l.file, line)
		}
		i := max(strings.LastIndexByte(k, '.'), strings.LastIndexByte(k, '['))
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return ""
}

// decode converts a value from viper (a YAML value, an environment
// string, a flag's value or a default) into dst.
func decode(raw, dst any) error {
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           dst,
		TagName:          "yaml",
		WeaklyTypedInput: true, // environment values are strings
		ErrorUnused:      true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.TextUnmarshallerHookFunc(),
			mapstructure.StringToWeakSliceHookFunc(","),
			stringToFUSEMount,
		),
	})
	if err != nil {
		return err
	}
	return dec.Decode(raw)
}

// stringToFUSEMount turns a bare directory (from --fuse or STOREFS_FUSE)
// into a mount.
func stringToFUSEMount(from, to reflect.Type, data any) (any, error) {
	if from.Kind() == reflect.String && to == reflect.TypeFor[FUSEMount]() {
		return FUSEMount{Mountpoint: data.(string)}, nil
	}
	return data, nil
}

// decodeMessage words a decoding failure of a value of type t.
func decodeMessage(t reflect.Type, raw any, err error) string {
	if s, ok := raw.(string); ok {
		return fmt.Sprintf("want %s, got %q", want(t), s)
	}
	msg := err.Error()
	if lines := strings.Split(strings.TrimSpace(msg), "\n"); len(lines) > 1 {
		msg = strings.TrimPrefix(strings.TrimSpace(lines[len(lines)-1]), "* ")
	}
	return fmt.Sprintf("want %s: %s", want(t), msg)
}

// Keys returns every leaf key of the schema, in order (for docs and tests).
func Keys() []string {
	var keys []string
	for _, f := range leaves() {
		keys = append(keys, f.key)
	}
	return slices.Clip(keys)
}
