package grpcserver

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
)

type directoryService struct {
	castorepb.UnimplementedDirectoryServiceServer
	store storeclient.Store
	opts  Options
}

// Get streams the Directory asked for and, if recursive, the tree below
// it breadth-first, each distinct Directory once.
func (s *directoryService) Get(req *castorepb.GetDirectoryRequest, stream grpc.ServerStreamingServer[castorepb.Directory]) error {
	ctx := stream.Context()
	root, err := digestArg(req.GetDigest(), "get directory")
	if err != nil {
		return err
	}
	queue := []storeclient.Digest{root}
	seen := map[storeclient.Digest]bool{root: true}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		dir, err := s.store.GetDirectory(ctx, d)
		if err != nil {
			if d != root {
				peerLog(ctx, s.opts.Logger).Warn("grpc: directory tree incomplete", "root", root.String(), "missing", d.String(), "err", err)
			}
			return statusFor(err, false)
		}
		if err := stream.Send(dir.Proto()); err != nil {
			return err
		}
		if !req.GetRecursive() {
			return nil
		}
		for _, e := range dir.Entries() {
			if e.Node.Kind() == storeclient.KindDirectory && !seen[e.Node.Digest()] {
				seen[e.Node.Digest()] = true
				queue = append(queue, e.Node.Digest())
			}
		}
	}
	return nil
}

// Put receives a tree leaves first, validates all of it, then stores it
// leaves first and answers with the root's digest.
func (s *directoryService) Put(stream grpc.ClientStreamingServer[castorepb.Directory, castorepb.PutDirectoryResponse]) error {
	ctx := stream.Context()
	log := peerLog(ctx, s.opts.Logger)
	var (
		dirs  []*storeclient.Directory
		index = map[storeclient.Digest]int{} // position of each distinct Directory
		total int64
	)
	for {
		pb, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		total += int64(proto.Size(pb))
		if total > s.opts.MaxPutDirectoryBytes {
			return status.Errorf(codes.ResourceExhausted, "put directory: stream larger than %d bytes", s.opts.MaxPutDirectoryBytes)
		}
		dir, err := storeclient.DirectoryFromProto(pb)
		if err != nil {
			log.Warn("grpc: put directory rejected", "position", len(dirs), "err", err)
			return status.Errorf(codes.InvalidArgument, "put directory: message %d: %v", len(dirs), err)
		}
		d := dir.Digest()
		if _, dup := index[d]; dup {
			continue // sending a Directory twice is allowed, and pointless
		}
		index[d] = len(dirs)
		dirs = append(dirs, dir)
	}
	if len(dirs) == 0 {
		return status.Error(codes.InvalidArgument, "put directory: empty stream")
	}
	if err := s.validateTree(ctx, dirs, index); err != nil {
		log.Warn("grpc: put directory rejected", "root", dirs[len(dirs)-1].Digest().String(), "err", err)
		return err
	}
	for _, dir := range dirs {
		if _, err := s.store.PutDirectory(ctx, dir); err != nil {
			log.Warn("grpc: put directory failed", "digest", dir.Digest().String(), "err", err)
			return statusFor(err, true)
		}
	}
	root := dirs[len(dirs)-1].Digest()
	return stream.SendAndClose(&castorepb.PutDirectoryResponse{RootDigest: root[:]})
}

// validateTree checks the order, child sizes and connectivity of an
// uploaded tree (dirs in stream order, distinct; index maps a digest to
// its position).
func (s *directoryService) validateTree(ctx context.Context, dirs []*storeclient.Directory, index map[storeclient.Digest]int) error {
	reached := make([]bool, len(dirs))
	reached[len(dirs)-1] = true
	// Walk from the root (the last) down: a parent always comes after its
	// children, so one pass in reverse marks everything reachable.
	for i := len(dirs) - 1; i >= 0; i-- {
		dir := dirs[i]
		for _, e := range dir.Entries() {
			if e.Node.Kind() != storeclient.KindDirectory {
				continue
			}
			cd := e.Node.Digest()
			j, sent := index[cd]
			var child *storeclient.Directory
			switch {
			case sent && j < i:
				child = dirs[j]
				if reached[i] {
					reached[j] = true
				}
			case sent:
				return status.Errorf(codes.InvalidArgument, "put directory: %s names child %q (%s), which is sent after it: send leaves first", dir.Digest(), string(e.Name), cd)
			default:
				var err error
				child, err = s.store.GetDirectory(ctx, cd)
				if errors.Is(err, storeclient.ErrNotFound) {
					return status.Errorf(codes.NotFound, "put directory: %s names child %q (%s), which is neither sent before it nor stored", dir.Digest(), string(e.Name), cd)
				}
				if err != nil {
					return statusFor(err, false)
				}
			}
			if child.Size() != e.Node.Size() {
				return status.Errorf(codes.InvalidArgument, "put directory: %s records size %d for child %q (%s), whose size is %d", dir.Digest(), e.Node.Size(), string(e.Name), cd, child.Size())
			}
		}
	}
	for i, ok := range reached {
		if !ok {
			return status.Errorf(codes.InvalidArgument, "put directory: %s (message %d) is not below the root %s", dirs[i].Digest(), i, dirs[len(dirs)-1].Digest())
		}
	}
	return nil
}
