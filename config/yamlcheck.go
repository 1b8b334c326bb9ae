package config

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// positions maps a key path ("nfs.listen", "fuse[0].mountpoint",
// "nfs.allowed_networks[1]") to the line of the file that sets it.
type positions map[string]int

// checkYAML parses a configuration file and checks it against the schema
// before viper sees it (viper would lower-case keys, ignore unknown ones
// and lose line numbers): every key must exist, appear once, and hold a
// value of its type. It returns where each key is set.
func checkYAML(file string, data []byte) (positions, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{Where: file, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	pos := positions{}
	if doc.Kind == 0 || len(doc.Content) == 0 { // empty or only comments
		return pos, nil
	}
	c := &checker{file: file, pos: pos}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return pos, nil
	}
	if err := c.section(root, reflect.TypeFor[Config](), ""); err != nil {
		return nil, err
	}
	return pos, nil
}

type checker struct {
	file string
	pos  positions
}

func (c *checker) errorf(n *yaml.Node, key, format string, args ...any) error {
	return &Error{Where: fmt.Sprintf("%s:%d", c.file, n.Line), Key: key, Msg: fmt.Sprintf(format, args...)}
}

// removedKeys are keys earlier versions accepted, with what to do instead.
var removedKeys = map[string]string{
	"cache.verified_blobs": "blobs of remote stores are verified per chunk group as they stream; delete the key (cache.remote_memory bounds that memory)",
}

// section checks a mapping against the section type t; path is its key
// ("" for the top level).
func (c *checker) section(n *yaml.Node, t reflect.Type, path string) error {
	if n.Kind != yaml.MappingNode {
		return c.errorf(n, strings.TrimSuffix(path, "."), "want a mapping of keys (%s), got %s",
			strings.Join(sectionKeys(t), ", "), describe(n))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if kn.Kind != yaml.ScalarNode {
			return c.errorf(kn, path, "a key must be a plain name, got %s", describe(kn))
		}
		key := join(path, kn.Value)
		if line, dup := seen[kn.Value]; dup {
			return c.errorf(kn, key, "set twice (first on line %d)", line)
		}
		seen[kn.Value] = kn.Line
		sf, ok := fieldByKey(t, kn.Value)
		if !ok {
			if why, gone := removedKeys[key]; gone {
				return c.errorf(kn, key, "was removed: %s", why)
			}
			msg := "unknown key"
			if path == "" {
				msg += " (valid: " + strings.Join(sectionKeys(t), ", ") + ")"
			} else {
				msg += " in " + path + " (valid: " + strings.Join(sectionKeys(t), ", ") + ")"
			}
			return c.errorf(kn, key, "%s", msg)
		}
		c.pos[key] = kn.Line
		if err := c.value(vn, sf.Type, key); err != nil {
			return err
		}
	}
	return nil
}

// value checks one value against type t.
func (c *checker) value(n *yaml.Node, t reflect.Type, key string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // no value: the default
	}
	switch {
	case isSection(t):
		return c.section(n, t, key)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return c.errorf(n, key, "want a list, got %s", describe(n))
		}
		for i, e := range n.Content {
			ek := fmt.Sprintf("%s[%d]", key, i)
			c.pos[ek] = e.Line
			if err := c.value(e, t.Elem(), ek); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return c.errorf(n, key, "want %s, got %s", want(t), describe(n))
	}
	if t.Kind() == reflect.String && n.Tag != "!!str" {
		// yaml.v3 would turn 2049 or true into a string silently.
		return c.errorf(n, key, "want %s, got %s (quote it if it is meant as text)", want(t), describe(n))
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		return c.errorf(n, key, "want %s, got %s", want(t), describe(n))
	}
	return nil
}

// describe names a node's kind and value for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "an alias"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
