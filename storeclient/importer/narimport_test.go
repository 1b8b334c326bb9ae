package importer_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/importer"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/nar"
)

// bigNAR is a NAR of several directories, each with big files (streamed
// by writer goroutines) among small ones (stored by the workers), more big
// files than there are writers at once.
func bigNAR(t *testing.T) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	var b bytes.Buffer
	e := nar.NewEncoder(&b)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	file := func(name string, size int) {
		must(e.Entry(name))
		must(e.File(uint64(size), size%3 == 0))
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		if size > 0 {
			_, err := e.Write(data)
			must(err)
		}
	}
	must(e.Directory())
	for d := range 3 {
		must(e.Entry(fmt.Sprintf("d%d", d)))
		must(e.Directory())
		file("a-big", 3<<20+d)
		file("b-small", 4000+d)
		file("c-big", 1<<20+1)
		file("d-empty", 0)
		file("e-big", 2<<20)
		file("f-small", 1<<20)
		must(e.End())
	}
	file("z-top-big", 5<<20+7)
	must(e.End())
	must(e.Close())
	return b.Bytes()
}

func TestImportNARBigFiles(t *testing.T) {
	data := bigNAR(t)
	s := memory.New()
	info, err := importer.ImportNAR(context.Background(), s, bytes.NewReader(data), "big")
	if err != nil {
		t.Fatal(err)
	}
	if info.NarSize != uint64(len(data)) || info.NarSHA256 != sha256.Sum256(data) {
		t.Fatal("NAR size or hash differs from the input's")
	}
	var back bytes.Buffer
	if err := nar.WriteNAR(context.Background(), &back, s, info.Node); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Bytes(), data) {
		t.Fatal("the imported tree does not give back the NAR")
	}
}

// TestImportNARTruncatedInBigFile cuts the NAR inside a big file: the
// import fails, stores no PathInfo, and leaves no goroutine behind
// (TestMain).
func TestImportNARTruncatedInBigFile(t *testing.T) {
	data := bigNAR(t)
	for _, cut := range []int{2 << 20, 9 << 20, len(data) - 100} {
		s := memory.New()
		if _, err := importer.ImportNAR(context.Background(), s, bytes.NewReader(data[:cut]), "big"); !errors.Is(err, nar.ErrMalformed) {
			t.Fatalf("cut at %d: %v, want a malformed NAR", cut, err)
		}
		if n := countPathInfos(t, s); n != 0 {
			t.Fatalf("cut at %d: %d PathInfos stored", cut, n)
		}
	}
}

// failingWriterStore fails every big blob's write.
type failingWriterStore struct{ *memory.Store }

var errDiskFull = errors.New("no space left on device")

func (f failingWriterStore) NewBlobWriter(ctx context.Context) (storeclient.BlobWriter, error) {
	w, err := f.Store.NewBlobWriter(ctx)
	if err != nil {
		return nil, err
	}
	return failingWriter{w}, nil
}

type failingWriter struct{ storeclient.BlobWriter }

func (failingWriter) Write([]byte) (int, error) { return 0, errDiskFull }

func TestImportNARBigWriteFails(t *testing.T) {
	s := failingWriterStore{memory.New()}
	_, err := importer.ImportNAR(context.Background(), s, bytes.NewReader(bigNAR(t)), "big")
	if !errors.Is(err, errDiskFull) {
		t.Fatalf("ImportNAR = %v, want the blob writer's error", err)
	}
	if n := countPathInfos(t, s); n != 0 {
		t.Fatalf("%d PathInfos stored", n)
	}
}
