package vfs

import (
	"container/list"
	"sync"
)

// byteCache is an LRU cache bounded by the bytes of its values, not their
// count: the verified chunk groups and bao outboards of remote blobs vary
// from 8 bytes to megabytes. Safe for concurrent use.
type byteCache[V any] struct {
	mu    sync.Mutex
	limit int64
	used  int64
	ll    *list.List // front: most recently used
	items map[string]*list.Element
}

type byteCacheEntry[V any] struct {
	key  string
	val  V
	size int64
}

func newByteCache[V any](limit int64) *byteCache[V] {
	return &byteCache[V]{limit: limit, ll: list.New(), items: make(map[string]*list.Element)}
}

// get returns the value of key and marks it used.
func (c *byteCache[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*byteCacheEntry[V]).val, true
	}
	var zero V
	return zero, false
}

// contains reports whether key is cached, without marking it used.
func (c *byteCache[V]) contains(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[key]
	return ok
}

// add stores val, of size bytes, under key, and drops the least recently
// used values until the cache fits its limit. A value larger than the
// whole limit is not kept.
func (c *byteCache[V]) add(key string, val V, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if size > c.limit {
		return
	}
	if e, ok := c.items[key]; ok {
		old := e.Value.(*byteCacheEntry[V])
		c.used += size - old.size
		old.val, old.size = val, size
		c.ll.MoveToFront(e)
	} else {
		c.items[key] = c.ll.PushFront(&byteCacheEntry[V]{key: key, val: val, size: size})
		c.used += size
	}
	c.shrink()
}

// resize changes the limit, dropping values if it shrinks.
func (c *byteCache[V]) resize(limit int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limit = limit
	c.shrink()
}

// bytes returns the bytes held.
func (c *byteCache[V]) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

func (c *byteCache[V]) shrink() {
	for c.used > c.limit {
		e := c.ll.Back()
		ent := e.Value.(*byteCacheEntry[V])
		c.ll.Remove(e)
		delete(c.items, ent.key)
		c.used -= ent.size
	}
}
