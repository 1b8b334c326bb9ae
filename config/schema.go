package config

import (
	"encoding"
	"reflect"
	"strings"
)

// field is one leaf key of the schema: a value that is not a section.
type field struct {
	key   string // dotted path: "nfs.listen"
	index []int  // reflect field index path from Config
	typ   reflect.Type
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// isSection reports whether t is a struct of keys (not a scalar such as
// Duration).
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(textUnmarshalerType)
}

// yamlKey returns the YAML key of a struct field.
func yamlKey(sf reflect.StructField) string {
	name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
	return name
}

// leaves returns every leaf key of Config in declaration order. Lists of
// sections (fuse) are one leaf.
func leaves() []field {
	var out []field
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			sf := t.Field(i)
			key := prefix + yamlKey(sf)
			idx := append(append([]int(nil), index...), i)
			if isSection(sf.Type) {
				walk(sf.Type, key+".", idx)
				continue
			}
			out = append(out, field{key: key, index: idx, typ: sf.Type})
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return out
}

// sectionKeys returns the keys a section of type t accepts, for messages.
func sectionKeys(t reflect.Type) []string {
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		keys = append(keys, yamlKey(t.Field(i)))
	}
	return keys
}

// fieldByKey returns the field of section t whose YAML key is key.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if sf := t.Field(i); yamlKey(sf) == key {
			return sf, true
		}
	}
	return reflect.StructField{}, false
}

// want describes the values a type accepts, for messages.
func want(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[Duration]():
		return "a duration such as 30s or 5m"
	case isSection(t):
		return "a mapping of keys"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Uint, reflect.Uint64, reflect.Uint32, reflect.Uint16:
		return "a non-negative integer"
	case reflect.Slice:
		return "a list"
	}
	return t.String()
}
