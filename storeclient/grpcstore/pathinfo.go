package grpcstore

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"iter"

	"google.golang.org/grpc"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storepb"
)

// GetPathInfo implements storeclient.PathInfoService. The PathInfo is
// validated and must be for the store path asked for.
func (s *Store) GetPathInfo(ctx context.Context, d storeclient.StorePathDigest) (*storeclient.PathInfo, error) {
	var p *storeclient.PathInfo
	err := s.call(ctx, "get pathinfo "+d.String(), true, func(ctx context.Context, pkg grpc.CallOption) error {
		pb, err := s.paths.Get(ctx, &storepb.GetPathInfoRequest{ByWhat: &storepb.GetPathInfoRequest_ByOutputHash{ByOutputHash: d[:]}}, pkg)
		if err != nil {
			return err
		}
		p, err = storeclient.PathInfoFromProto(pb)
		if err != nil {
			return fmt.Errorf("pathinfo %s: server sent an invalid PathInfo: %w", d, err)
		}
		if p.StorePath.Digest != d {
			return fmt.Errorf("pathinfo %s: server sent the PathInfo of %s: %w", d, p.StorePath.Basename(), storeclient.ErrCorrupt)
		}
		return nil
	})
	return p, err
}

// PutPathInfo implements storeclient.PathInfoService.
func (s *Store) PutPathInfo(ctx context.Context, p *storeclient.PathInfo) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("grpc store %s: put pathinfo: %w", s.target, err)
	}
	return s.call(ctx, "put pathinfo "+p.StorePath.Basename(), true, func(ctx context.Context, pkg grpc.CallOption) error {
		_, err := s.paths.Put(ctx, p.Proto(), pkg)
		return err
	})
}

// ListPathInfos implements storeclient.PathInfoService. Opening the list
// is retried; an error after the first PathInfo ends the sequence. The
// first PathInfo, and each next one, must arrive within the timeout; the
// time the caller spends between them does not count.
func (s *Store) ListPathInfos(ctx context.Context) iter.Seq2[*storeclient.PathInfo, error] {
	return func(yield func(*storeclient.PathInfo, error) bool) {
		var stream grpc.ServerStreamingClient[storepb.PathInfo]
		var live *liveStream
		defer func() {
			if live != nil {
				live.close()
			}
		}()
		var first *storepb.PathInfo
		err := s.call(ctx, "list pathinfos", true, func(cctx context.Context, pkg grpc.CallOption) error {
			if live != nil {
				live.close()
			}
			// The stream outlives this call: it hangs off ctx and
			// is cut only while cctx runs out.
			live = newLiveStream(ctx)
			live.watch(cctx)
			defer live.unwatch()
			var err error
			stream, err = s.paths.List(live.ctx, &storepb.ListPathInfoRequest{}, pkg)
			if err != nil {
				return live.explain(err)
			}
			first, err = stream.Recv()
			if err == io.EOF {
				first = nil
				return nil
			}
			return live.explain(err)
		})
		if err != nil {
			yield(nil, err)
			return
		}
		for pb := first; pb != nil; {
			p, err := storeclient.PathInfoFromProto(pb)
			if err != nil {
				yield(nil, fmt.Errorf("grpc store %s: list pathinfos: server sent an invalid PathInfo: %w", s.target, err))
				return
			}
			if !yield(p, nil) {
				return
			}
			pb, err = s.nextPathInfo(ctx, live, stream)
			if err == io.EOF {
				return
			}
			if err != nil {
				yield(nil, s.wrap("list pathinfos", err))
				return
			}
		}
	}
}

// nextPathInfo receives the next PathInfo of a listing within the timeout.
func (s *Store) nextPathInfo(ctx context.Context, live *liveStream, stream grpc.ServerStreamingClient[storepb.PathInfo]) (*storepb.PathInfo, error) {
	wctx, cancel := s.within(ctx)
	defer cancel()
	live.watch(wctx)
	defer live.unwatch()
	pb, err := stream.Recv()
	if err == io.EOF {
		return nil, io.EOF
	}
	return pb, live.explain(err)
}

// CalculateNAR asks the server for the size and sha256 of the NAR
// serialisation of the tree below node.
func (s *Store) CalculateNAR(ctx context.Context, node storeclient.Node) (uint64, [sha256.Size]byte, error) {
	var size uint64
	var sum [sha256.Size]byte
	err := s.call(ctx, "calculate NAR of "+node.String(), true, func(ctx context.Context, pkg grpc.CallOption) error {
		resp, err := s.paths.CalculateNAR(ctx, storeclient.NodeProto("", node), pkg)
		if err != nil {
			return err
		}
		if len(resp.GetNarSha256()) != sha256.Size {
			return fmt.Errorf("server sent a nar_sha256 of %d bytes: %w", len(resp.GetNarSha256()), storeclient.ErrCorrupt)
		}
		size = resp.GetNarSize()
		copy(sum[:], resp.GetNarSha256())
		return nil
	})
	return size, sum, err
}
