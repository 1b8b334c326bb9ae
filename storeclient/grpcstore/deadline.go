package grpcstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Deadlines. Every store call, every BlobReader.ReadAt, every BlobWriter
// Write and Commit and every step of a listing gets one deadline, Timeout
// from its start, that covers all its attempts: a retry is made only while
// time is left. Streams that outlive the call that opened them (a reader's
// Read stream, an upload, a listing) are tied to the deadline of whichever
// call is waiting on them (liveStream), so a server that stalls, before the
// first byte or in the middle of a blob, fails that call on time.

// timeoutError is the cause of a call cut at its deadline. It matches
// context.DeadlineExceeded with errors.Is.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string {
	return fmt.Sprintf("no answer within the timeout of %s", e.d)
}

func (e *timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// GRPCStatus makes status.Code report DEADLINE_EXCEEDED.
func (e *timeoutError) GRPCStatus() *status.Status {
	return status.New(codes.DeadlineExceeded, e.Error())
}

// within returns a context that ends Timeout from now, with a timeoutError
// as its cause.
func (s *Store) within(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, s.opts.Timeout, &timeoutError{s.opts.Timeout})
}

// explain replaces the error of a call or stream that ctx cut at our
// deadline by the timeoutError that says so: gRPC reports only "context
// canceled" or "context deadline exceeded". Other errors stay.
func explain(ctx context.Context, err error) error {
	var te *timeoutError
	if err == nil || !errors.As(context.Cause(ctx), &te) {
		return err
	}
	switch {
	case status.Code(err) == codes.Canceled, status.Code(err) == codes.DeadlineExceeded,
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return te
	}
	return err
}

// liveStream is the context of a stream that outlives the call that opened
// it. While a call waits on the stream, watch ties the stream to the call's
// context: when that ends (its deadline), the stream is cut, with the
// call's cause.
type liveStream struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   func() bool
}

func newLiveStream(parent context.Context) *liveStream {
	ctx, cancel := context.WithCancelCause(parent)
	return &liveStream{ctx: ctx, cancel: cancel}
}

// watch cuts the stream when ctx ends, until unwatch.
func (l *liveStream) watch(ctx context.Context) {
	l.unwatch()
	l.stop = context.AfterFunc(ctx, func() { l.cancel(context.Cause(ctx)) })
}

// unwatch stops watching and reports whether the stream is still intact.
// It must be called before the watched context is cancelled, or the
// stream is cut.
func (l *liveStream) unwatch() bool {
	if l.stop != nil {
		l.stop()
		l.stop = nil
	}
	return l.ctx.Err() == nil
}

// close ends the stream.
func (l *liveStream) close() {
	l.unwatch()
	l.cancel(context.Canceled)
}

// explain is explain for an error of this stream.
func (l *liveStream) explain(err error) error { return explain(l.ctx, err) }
