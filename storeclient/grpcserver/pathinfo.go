package grpcserver

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
	"github.com/storefs/storefs/storeclient/nar"
	"github.com/storefs/storefs/storeclient/storepb"
)

type pathInfoService struct {
	storepb.UnimplementedPathInfoServiceServer
	store storeclient.Store
	opts  Options
}

func (s *pathInfoService) Get(ctx context.Context, req *storepb.GetPathInfoRequest) (*storepb.PathInfo, error) {
	h := req.GetByOutputHash()
	if len(h) != storeclient.StorePathDigestSize {
		return nil, status.Errorf(codes.InvalidArgument, "get pathinfo: by_output_hash has %d bytes, want %d", len(h), storeclient.StorePathDigestSize)
	}
	p, err := s.store.GetPathInfo(ctx, storeclient.StorePathDigest(h))
	if err != nil {
		return nil, statusFor(err, false)
	}
	return p.Proto(), nil
}

// Put stores a PathInfo whose content is already stored.
func (s *pathInfoService) Put(ctx context.Context, pb *storepb.PathInfo) (*storepb.PathInfo, error) {
	p, err := storeclient.PathInfoFromProto(pb)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "put pathinfo: %v", err)
	}
	if err := s.checkContent(ctx, p.Node); err != nil {
		peerLog(ctx, s.opts.Logger).Warn("grpc: put pathinfo rejected", "path", p.StorePath.Basename(), "err", err)
		return nil, status.Errorf(status.Code(statusFor(err, false)), "put pathinfo %s: %v", p.StorePath.Basename(), err)
	}
	if err := s.store.PutPathInfo(ctx, p); err != nil {
		return nil, statusFor(err, true)
	}
	return p.Proto(), nil
}

// checkContent reports whether the root of a PathInfo is stored, with the
// size the node records.
func (s *pathInfoService) checkContent(ctx context.Context, n storeclient.Node) error {
	switch n.Kind() {
	case storeclient.KindFile:
		size, err := s.store.StatBlob(ctx, n.Digest())
		if err != nil {
			return err
		}
		if uint64(size) != n.Size() {
			return status.Errorf(codes.InvalidArgument, "root blob %s has %d bytes, the node records %d", n.Digest(), size, n.Size())
		}
	case storeclient.KindDirectory:
		dir, err := s.store.GetDirectory(ctx, n.Digest())
		if err != nil {
			return err
		}
		if dir.Size() != n.Size() {
			return status.Errorf(codes.InvalidArgument, "root directory %s has size %d, the node records %d", n.Digest(), dir.Size(), n.Size())
		}
	}
	return nil
}

func (s *pathInfoService) List(_ *storepb.ListPathInfoRequest, stream grpc.ServerStreamingServer[storepb.PathInfo]) error {
	for p, err := range s.store.ListPathInfos(stream.Context()) {
		if err != nil {
			return statusFor(err, false)
		}
		if err := stream.Send(p.Proto()); err != nil {
			return err
		}
	}
	return nil
}

// CalculateNAR streams the tree below the node through a NAR encoder into
// sha256. The node may be anonymous or named (the name is not part of the
// NAR).
func (s *pathInfoService) CalculateNAR(ctx context.Context, pb *castorepb.Node) (*storepb.CalculateNARResponse, error) {
	anonymous := nodeName(pb) == 0
	_, node, err := storeclient.NodeFromProto(pb, anonymous)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "calculate NAR: %v", err)
	}
	size, sum, err := nar.Hash(ctx, s.store, node)
	if err != nil {
		peerLog(ctx, s.opts.Logger).Warn("grpc: calculate NAR failed", "node", node.String(), "err", err)
		return nil, statusFor(err, false)
	}
	return &storepb.CalculateNARResponse{NarSize: size, NarSha256: sum[:]}, nil
}

// nodeName returns the length of a node's name.
func nodeName(pb *castorepb.Node) int {
	switch {
	case pb.GetDirectory() != nil:
		return len(pb.GetDirectory().GetName())
	case pb.GetFile() != nil:
		return len(pb.GetFile().GetName())
	case pb.GetSymlink() != nil:
		return len(pb.GetSymlink().GetName())
	}
	return 0
}
