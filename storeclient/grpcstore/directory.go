package grpcstore

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
)

// ErrPrematureEnd is wrapped (with storeclient.ErrCorrupt) by the error of
// a recursive Directory Get whose stream ended before every Directory of
// the tree had arrived.
var ErrPrematureEnd = errors.New("premature end of stream")

// GetDirectory implements storeclient.DirectoryService: a non-recursive
// Get whose one Directory is checked against d.
func (s *Store) GetDirectory(ctx context.Context, d storeclient.Digest) (*storeclient.Directory, error) {
	var dir *storeclient.Directory
	err := s.call(ctx, "get directory "+d.String(), true, func(ctx context.Context, pkg grpc.CallOption) error {
		stream, err := s.dirs.Get(ctx, &castorepb.GetDirectoryRequest{ByWhat: &castorepb.GetDirectoryRequest_Digest{Digest: d[:]}}, pkg)
		if err != nil {
			return err
		}
		pb, err := stream.Recv()
		if err == io.EOF {
			return fmt.Errorf("directory %s: %w (empty stream)", d, storeclient.ErrNotFound)
		}
		if err != nil {
			return err
		}
		dir, err = verifyDirectory(pb, d)
		if err != nil {
			return err
		}
		if _, err := stream.Recv(); err != io.EOF {
			if err == nil {
				err = fmt.Errorf("directory %s: server sent more than the one Directory asked for: %w", d, storeclient.ErrCorrupt)
			}
			return err
		}
		return nil
	})
	return dir, err
}

// verifyDirectory validates a received Directory and checks its digest.
func verifyDirectory(pb *castorepb.Directory, want storeclient.Digest) (*storeclient.Directory, error) {
	dir, err := storeclient.DirectoryFromProto(pb)
	if err != nil {
		return nil, fmt.Errorf("directory %s: server sent an invalid Directory: %w", want, err)
	}
	if got := dir.Digest(); got != want {
		return nil, fmt.Errorf("directory %s: server sent Directory %s: %w", want, got, storeclient.ErrCorrupt)
	}
	return dir, nil
}

// GetDirectoryTree returns the Directory d and every Directory below it,
// with one recursive Get: d first, each Directory once, each after one that
// refers to it (the server's breadth-first order). Every Directory is
// re-hashed and must be one that an earlier Directory names, with the size
// recorded there; a stream that ends before the tree is complete is an
// error wrapping ErrPrematureEnd and storeclient.ErrCorrupt.
func (s *Store) GetDirectoryTree(ctx context.Context, d storeclient.Digest) ([]*storeclient.Directory, error) {
	var tree []*storeclient.Directory
	err := s.call(ctx, "get directory tree "+d.String(), true, func(ctx context.Context, pkg grpc.CallOption) error {
		stream, err := s.dirs.Get(ctx, &castorepb.GetDirectoryRequest{ByWhat: &castorepb.GetDirectoryRequest_Digest{Digest: d[:]}, Recursive: true}, pkg)
		if err != nil {
			return err
		}
		tree = tree[:0]
		// expected holds the digests named so far and not yet received,
		// with the size their parent recorded; seen those received.
		expected := map[storeclient.Digest]uint64{}
		seen := map[storeclient.Digest]bool{}
		for {
			pb, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			var dir *storeclient.Directory
			if len(tree) == 0 {
				if dir, err = verifyDirectory(pb, d); err != nil {
					return err
				}
			} else {
				dir, err = storeclient.DirectoryFromProto(pb)
				if err != nil {
					return fmt.Errorf("directory tree %s: server sent an invalid Directory: %w", d, err)
				}
				got := dir.Digest()
				size, ok := expected[got]
				if !ok {
					return fmt.Errorf("directory tree %s: server sent Directory %s, which no earlier Directory names or which came twice: %w", d, got, storeclient.ErrCorrupt)
				}
				if size != dir.Size() {
					return fmt.Errorf("directory tree %s: Directory %s has size %d, its parent records %d: %w", d, got, dir.Size(), size, storeclient.ErrCorrupt)
				}
				delete(expected, got)
			}
			seen[dir.Digest()] = true
			for _, e := range dir.Entries() {
				if e.Node.Kind() != storeclient.KindDirectory {
					continue
				}
				cd := e.Node.Digest()
				if seen[cd] {
					continue
				}
				if size, ok := expected[cd]; ok && size != e.Node.Size() {
					return fmt.Errorf("directory tree %s: Directory %s is named with sizes %d and %d: %w", d, cd, size, e.Node.Size(), storeclient.ErrCorrupt)
				}
				expected[cd] = e.Node.Size()
			}
			tree = append(tree, dir)
		}
		if len(tree) == 0 {
			return fmt.Errorf("directory %s: %w (empty stream)", d, storeclient.ErrNotFound)
		}
		if len(expected) > 0 {
			return fmt.Errorf("directory tree %s: %w: %d Directories missing after %d received: %w", d, ErrPrematureEnd, len(expected), len(tree), storeclient.ErrCorrupt)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return tree, nil
}

// PutDirectory implements storeclient.DirectoryService with a Put stream
// of one Directory.
func (s *Store) PutDirectory(ctx context.Context, dir *storeclient.Directory) (storeclient.Digest, error) {
	return s.PutDirectories(ctx, dir)
}

// PutDirectories uploads a tree in one Put stream, leaves first: every
// child a Directory names must come earlier in dirs or be stored already,
// and every Directory must be reachable from the last one, the root. It
// returns the root's digest as the server reports it (checked).
func (s *Store) PutDirectories(ctx context.Context, dirs ...*storeclient.Directory) (storeclient.Digest, error) {
	if len(dirs) == 0 {
		return storeclient.Digest{}, errors.New("grpc store: put directories: nothing to put")
	}
	want := dirs[len(dirs)-1].Digest()
	var got storeclient.Digest
	err := s.call(ctx, "put directory "+want.String(), true, func(ctx context.Context, pkg grpc.CallOption) error {
		stream, err := s.dirs.Put(ctx, pkg)
		if err != nil {
			return err
		}
		for _, dir := range dirs {
			if err := stream.Send(dir.Proto()); err != nil {
				if err == io.EOF {
					break // the status comes with CloseAndRecv
				}
				return err
			}
		}
		resp, err := stream.CloseAndRecv()
		if err != nil {
			return err
		}
		got, err = storeclient.DigestFromBytes(resp.GetRootDigest())
		if err != nil || got != want {
			return fmt.Errorf("server returned root digest %x, want %s: %w", resp.GetRootDigest(), want, storeclient.ErrCorrupt)
		}
		return nil
	})
	return got, err
}
