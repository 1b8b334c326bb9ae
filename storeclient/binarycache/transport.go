package binarycache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/storefs/storefs/storeclient"
)

// transport reads files of a binary cache by their path relative to it.
type transport interface {
	// get opens the file at rel. A file the cache does not have is an
	// error wrapping storeclient.ErrNotFound.
	get(ctx context.Context, rel string) (io.ReadCloser, error)
	// close releases idle connections.
	close()
}

// fileTransport reads a cache in a local directory.
type fileTransport struct{ dir string }

func (t *fileTransport) get(ctx context.Context, rel string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(t.dir, filepath.FromSlash(rel)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", rel, storeclient.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (t *fileTransport) close() {}

// httpTransport reads a cache over HTTP(S) with one client (so connections
// are reused), retrying transient failures.
type httpTransport struct {
	base    *url.URL
	client  *http.Client
	retries int
	timeout time.Duration
	creds   *credentials // from the URL or netrc; nil: none
	log     *slog.Logger
	// backoff is the wait before retry n (0-based); tests shorten it.
	backoff func(n int) time.Duration
}

// newHTTPClient returns a client tuned for many small requests (narinfos)
// and a few long ones (NARs) to one host: kept-alive connections, bounded
// connect and header waits, and no overall deadline (a NAR may take
// minutes; stalls are caught per read).
func newHTTPClient(timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		// NARs are already compressed; narinfos are tiny.
		DisableCompression: true,
	}
	return &http.Client{Transport: tr}
}

func defaultBackoff(n int) time.Duration {
	d := 250 * time.Millisecond << min(n, 6)
	return d/2 + rand.N(d/2+1)
}

func (t *httpTransport) close() { t.client.CloseIdleConnections() }

// errStalled is the cause when a response body sends nothing for the
// timeout.
var errStalled = errors.New("no data received within the timeout")

// retryableError marks a failure worth another attempt.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

func (t *httpTransport) get(ctx context.Context, rel string) (io.ReadCloser, error) {
	u := *t.base
	u.Path = t.base.Path + "/" + rel
	u.RawPath = ""
	u.User = nil
	for attempt := 0; ; attempt++ {
		body, err := t.once(ctx, &u)
		if err == nil {
			return body, nil
		}
		var re *retryableError
		if !errors.As(err, &re) || attempt >= t.retries || ctx.Err() != nil {
			return nil, err
		}
		wait := t.backoff(attempt)
		t.log.Warn("binary cache: retrying", "url", u.Redacted(), "attempt", attempt+1, "wait", wait, "err", err)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, context.Cause(ctx)
		case <-timer.C:
		}
	}
}

func (t *httpTransport) once(ctx context.Context, u *url.URL) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel(nil)
		return nil, fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	req.Header.Set("User-Agent", "storefs")
	if t.creds != nil {
		req.SetBasicAuth(t.creds.login, t.creds.password)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		cancel(nil)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("GET %s: %w", u.Redacted(), err)
		}
		return nil, &retryableError{fmt.Errorf("GET %s: %w", u.Redacted(), err)}
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return newStallReader(ctx, resp.Body, cancel, t.timeout), nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone || resp.StatusCode == http.StatusForbidden:
		// Nix treats 403 like 404: S3 answers 403 for a missing key
		// unless the bucket may be listed.
		drain(resp.Body)
		cancel(nil)
		return nil, fmt.Errorf("GET %s: %s: %w", u.Redacted(), resp.Status, storeclient.ErrNotFound)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	drain(resp.Body)
	cancel(nil)
	err = fmt.Errorf("GET %s: %s: %s", u.Redacted(), resp.Status, strings.TrimSpace(strings.ToValidUTF8(string(msg), "?")))
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout {
		return nil, &retryableError{err}
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, fmt.Errorf("%w (set credentials in $NETRC or ~/.netrc)", err)
	}
	return nil, err
}

// drain reads a little of an unwanted body so its connection can be
// reused, and closes it.
func drain(body io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	body.Close()
}

// stallReader fails a response body that sends nothing for the timeout, by
// cancelling its request.
type stallReader struct {
	body    io.ReadCloser
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	timeout time.Duration
}

func newStallReader(ctx context.Context, body io.ReadCloser, cancel context.CancelCauseFunc, timeout time.Duration) *stallReader {
	s := &stallReader{body: body, ctx: ctx, cancel: cancel, timeout: timeout}
	s.timer = time.AfterFunc(timeout, func() { cancel(errStalled) })
	return s
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if n > 0 {
		s.timer.Reset(s.timeout)
	}
	if err != nil && err != io.EOF {
		// A cancelled request reports "context canceled"; say why.
		if cause := context.Cause(s.ctx); errors.Is(cause, errStalled) {
			err = cause
		}
		return n, fmt.Errorf("read response: %w", err)
	}
	return n, err
}

func (s *stallReader) Close() error {
	s.timer.Stop()
	err := s.body.Close()
	s.cancel(nil)
	return err
}
