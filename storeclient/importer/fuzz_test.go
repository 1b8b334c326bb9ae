package importer_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/importer"
	"github.com/storefs/storefs/storeclient/memory"
	"github.com/storefs/storefs/storeclient/nar"
	"github.com/storefs/storefs/storeclient/storetest"
)

func compressXZ(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compressZstd(t testing.TB, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// FuzzImportNAR checks that no input makes ImportNAR panic or hang, and
// that a plain NAR it accepts is exactly the NAR of what it stored.
func FuzzImportNAR(f *testing.F) {
	s := memory.New()
	fx := storetest.NewFixtures()
	if err := fx.Fill(context.Background(), s, storetest.FillOptions{}); err != nil {
		f.Fatal(err)
	}
	for _, n := range []storeclient.Node{
		storeclient.FileNode(storeclient.HashBytes(storetest.HelloWorld), 12, true),
		storeclient.SymlinkNode(storetest.SymlinkOutTarget),
		storeclient.DirectoryNode(fx.DirectoryComplicated.Digest(), fx.DirectoryComplicated.Size()),
	} {
		var buf bytes.Buffer
		if err := nar.WriteNAR(context.Background(), &buf, s, n); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
		f.Add(compressXZ(f, buf.Bytes()))
		f.Add(compressZstd(f, buf.Bytes()))
	}
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st := memory.New()
		info, err := importer.ImportNAR(context.Background(), st, bytes.NewReader(data), "fuzz")
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := nar.WriteNAR(context.Background(), &out, st, info.Node); err != nil {
			t.Fatalf("WriteNAR of an accepted NAR: %v", err)
		}
		if bytes.HasPrefix(data, []byte{13, 0, 0, 0, 0, 0, 0, 0}) && !bytes.Equal(out.Bytes(), data) {
			t.Fatal("accepted plain NAR differs from the NAR of what was stored")
		}
	})
}
