package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/storefs/storefs/internal/clientstr"
	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
)

type blobService struct {
	castorepb.UnimplementedBlobServiceServer
	store storeclient.Store
	opts  Options
}

// Stat answers with the blob as its one chunk when chunks are asked for,
// which tells the client the blob's length, and with its bao outboard
// (storeclient's format, see storeclient/bao.go) when that is asked for,
// unless the outboard would be larger than storeclient.MaxOutboardSize.
func (b *blobService) Stat(ctx context.Context, req *castorepb.StatBlobRequest) (*castorepb.StatBlobResponse, error) {
	d, err := digestArg(req.GetDigest(), "stat blob")
	if err != nil {
		return nil, err
	}
	size, err := b.store.StatBlob(ctx, d)
	if err != nil {
		return nil, statusFor(err, false)
	}
	resp := &castorepb.StatBlobResponse{}
	if req.GetSendChunks() {
		resp.Chunks = []*castorepb.StatBlobResponse_ChunkMeta{{Digest: d[:], Size: uint64(size)}}
	}
	if req.GetSendBao() && storeclient.OutboardSize(size) <= storeclient.MaxOutboardSize {
		if resp.Bao, err = b.outboard(ctx, d, size); err != nil {
			peerLog(ctx, b.opts.Logger).Warn("grpc: outboard of a blob failed", "digest", d.String(), "err", err)
			return nil, statusFor(err, false)
		}
	}
	return resp, nil
}

// outboard returns the outboard of blob d, which has size bytes: the
// store's (storeclient.BlobOutboard) if it has one that
// storeclient.ParseOutboard accepts, else one computed from the blob's
// bytes. A computed outboard's root must be d: a store that returns other
// bytes for d is an error wrapping storeclient.ErrCorrupt (DATA_LOSS), not
// an outboard that looks right.
func (b *blobService) outboard(ctx context.Context, d storeclient.Digest, size int64) ([]byte, error) {
	enc, err := storeclient.BlobOutboard(ctx, b.store, d)
	if err == nil {
		_, err = storeclient.ParseOutboard(d, size, enc)
		if err == nil {
			return enc, nil
		}
		peerLog(ctx, b.opts.Logger).Warn("grpc: the store's outboard of a blob is refused; computing it from the blob", "digest", d.String(), "err", err)
	} else if !errors.Is(err, storeclient.ErrNoOutboard) {
		return nil, err
	}
	r, err := b.store.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if r.Size() != size {
		return nil, fmt.Errorf("blob %s has %d bytes, the store said %d: %w", d, r.Size(), size, storeclient.ErrCorrupt)
	}
	enc, root, err := storeclient.EncodeOutboard(&ctxReader{ctx: ctx, r: io.NewSectionReader(r, 0, size)}, size)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("blob %s: %w: %w", d, err, storeclient.ErrCorrupt)
	case err != nil:
		return nil, fmt.Errorf("blob %s: %w", d, err)
	case root != d:
		return nil, fmt.Errorf("blob %s: the store's bytes hash to %s: %w", d, root, storeclient.ErrCorrupt)
	}
	return enc, nil
}

// ctxReader stops reading r once ctx is done: computing the outboard of a
// large blob is not worth finishing for a client that has gone.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Read streams a blob, from the offset of castorepb.ReadOffsetMetadata and
// up to the length of castorepb.ReadLengthMetadata if the client sent
// them (echoed in the response header).
func (b *blobService) Read(req *castorepb.ReadBlobRequest, stream grpc.ServerStreamingServer[castorepb.BlobChunk]) error {
	ctx := stream.Context()
	d, err := digestArg(req.GetDigest(), "read blob")
	if err != nil {
		return err
	}
	var off, length int64
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, e := range []struct {
			key string
			dst *int64
		}{{castorepb.ReadOffsetMetadata, &off}, {castorepb.ReadLengthMetadata, &length}} {
			v := md.Get(e.key)
			if len(v) == 0 {
				continue
			}
			*e.dst, err = strconv.ParseInt(v[0], 10, 64)
			if err != nil || *e.dst < 0 || len(v) > 1 {
				return status.Errorf(codes.InvalidArgument, "read blob %s: bad %s %s", d, e.key, clientstr.Quote(strings.Join(v, ",")))
			}
		}
	}
	r, err := b.store.OpenBlob(ctx, d)
	if err != nil {
		return statusFor(err, false)
	}
	defer r.Close()
	end := r.Size()
	if off > 0 || length > 0 {
		if off > r.Size() {
			return status.Errorf(codes.OutOfRange, "read blob %s: offset %d past its %d bytes", d, off, r.Size())
		}
		hdr := metadata.Pairs(castorepb.ReadOffsetMetadata, strconv.FormatInt(off, 10))
		if length > 0 {
			end = min(end, off+min(length, r.Size()))
			hdr.Append(castorepb.ReadLengthMetadata, strconv.FormatInt(length, 10))
		}
		if err := stream.SendHeader(hdr); err != nil {
			return err
		}
	}
	buf := make([]byte, min(int64(b.opts.ReadChunkSize), max(end-off, 1)))
	for off < end {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
		if n > 0 {
			if err := stream.Send(&castorepb.BlobChunk{Data: buf[:n]}); err != nil {
				return err
			}
			b.opts.stats.blobBytesSent.Add(int64(n))
			off += int64(n)
		}
		if err == io.EOF && off < end {
			return status.Errorf(codes.DataLoss, "read blob %s: ends at %d of %d bytes", d, off, r.Size())
		}
		if err != nil && err != io.EOF {
			peerLog(ctx, b.opts.Logger).Warn("grpc: read blob failed", "digest", d.String(), "offset", off, "err", err)
			return statusFor(err, false)
		}
	}
	return nil
}

// Put stores the streamed bytes as one blob.
func (b *blobService) Put(stream grpc.ClientStreamingServer[castorepb.BlobChunk, castorepb.PutBlobResponse]) error {
	ctx := stream.Context()
	w, err := b.store.NewBlobWriter(ctx)
	if err != nil {
		return statusFor(err, true)
	}
	defer w.Close()
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(c.GetData()); err != nil {
			return statusFor(err, true)
		}
	}
	d, err := w.Commit()
	if err != nil {
		peerLog(ctx, b.opts.Logger).Warn("grpc: put blob failed", "err", err)
		return statusFor(err, true)
	}
	return stream.SendAndClose(&castorepb.PutBlobResponse{Digest: d[:]})
}
