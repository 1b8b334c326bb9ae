package config

import "reflect"

// Changed returns the keys whose values differ between a and b, in schema
// order (a list, such as fuse, is one key).
func Changed(a, b *Config) []string {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	var keys []string
	for _, f := range leaves() {
		if !reflect.DeepEqual(va.FieldByIndex(f.index).Interface(), vb.FieldByIndex(f.index).Interface()) {
			keys = append(keys, f.key)
		}
	}
	return keys
}
