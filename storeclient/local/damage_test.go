package local_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/local"
	"github.com/storefs/storefs/storeclient/storetest"
)

// manyRecords is how many extra Directories and PathInfos fillDamageStore
// puts, so that their buckets span several pages under a branch page.
const manyRecords = 400

// fillDamageStore makes a store with the fixtures and manyRecords more
// Directories and PathInfos, closes it and returns its directory, the
// smallest Directory digest and the smallest store path digest (the first
// keys of their buckets).
func fillDamageStore(t *testing.T) (dir string, firstDir storeclient.Digest, firstPath storeclient.StorePathDigest) {
	t.Helper()
	ctx := t.Context()
	dir = filepath.Join(t.TempDir(), "store")
	s, err := local.Open(ctx, dir, local.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := storetest.NewFixtures().Fill(ctx, s, storetest.FillOptions{}); err != nil {
		t.Fatal(err)
	}
	var dirs []*storeclient.Directory
	for i := range manyRecords {
		target, err := storeclient.NewSymlinkTarget(fmt.Sprintf("/nix/store/target-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		name, err := storeclient.NewName(fmt.Sprintf("link-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		d, err := storeclient.NewDirectory(storeclient.Entry{Name: name, Node: storeclient.SymlinkNode(target)})
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	if err := s.PutDirectories(ctx, dirs); err != nil {
		t.Fatal(err)
	}
	firstDir = dirs[0].Digest()
	for i, d := range dirs {
		sp := storeclient.StorePath{Digest: storeclient.StorePathDigest{byte(i), byte(i >> 8), 0x55}, Name: "damage"}
		p, err := storetest.PathInfoFor(sp.Basename(), storeclient.DirectoryNode(d.Digest(), d.Size()))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PutPathInfo(ctx, p); err != nil {
			t.Fatal(err)
		}
		if dd := d.Digest(); bytes.Compare(dd[:], firstDir[:]) < 0 {
			firstDir = dd
		}
	}
	// The smallest store path digest of all: 0, 0, 0x55, 0, ….
	return dir, firstDir, storeclient.StorePathDigest{0, 0, 0x55}
}

// pageLayout says where the pages of meta.db that a damage case needs
// are.
type pageLayout struct {
	pageSize int64
	// rootBucket is the root page of the root bucket (which holds the
	// buckets); dirs and paths are the root pages of the directories and
	// pathinfos buckets (branch pages, given manyRecords).
	rootBucket, dirs, paths int64
	pages                   int64 // pages in the file
}

func readLayout(t *testing.T, path string) pageLayout {
	t.Helper()
	db, err := bolt.Open(path, 0o644, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var l pageLayout
	l.pageSize = int64(db.Info().PageSize)
	err = db.View(func(tx *bolt.Tx) error {
		l.rootBucket = int64(tx.Cursor().Bucket().Root())
		l.dirs = int64(tx.Bucket([]byte("directories")).Root())
		l.paths = int64(tx.Bucket([]byte("pathinfos")).Root())
		l.pages = tx.Size() / l.pageSize
		for _, id := range []int64{l.dirs, l.paths} {
			p, err := tx.Page(int(id))
			if err != nil {
				return err
			}
			if id == 0 || p.Type != "branch" {
				return fmt.Errorf("bucket root page %d is %+v, want a branch page", id, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// patchFile overwrites b at off in the file at path.
func patchFile(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// wantDamaged fails the test unless err reports a damaged meta.db.
func wantDamaged(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s on a damaged meta.db succeeded", what)
	case !errors.Is(err, local.ErrDamaged) || !errors.Is(err, storeclient.ErrCorrupt):
		t.Errorf("%s = %v, want an error wrapping local.ErrDamaged and storeclient.ErrCorrupt", what, err)
	case errors.Is(err, storeclient.ErrNotFound):
		t.Errorf("%s = %v: a damaged database must not look like a missing object", what, err)
	case !strings.Contains(err.Error(), "meta.db"):
		t.Errorf("%s = %v, which does not name meta.db", what, err)
	}
}

// TestDamagedDatabase damages meta.db in several ways: every read that
// needs the damaged part must fail with an error wrapping ErrDamaged (not
// panic), and Verify must report the damage and still check the blobs.
func TestDamagedDatabase(t *testing.T) {
	healthy, firstDir, firstPath := fillDamageStore(t)
	type broken struct{ dirs, paths bool }
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string, l pageLayout)
		broken broken
	}{
		{"both meta pages zeroed", func(t *testing.T, path string, l pageLayout) {
			patchFile(t, path, 0, make([]byte, 2*l.pageSize))
		}, broken{true, true}},
		{"root bucket page zeroed", func(t *testing.T, path string, l pageLayout) {
			patchFile(t, path, l.rootBucket*l.pageSize, make([]byte, l.pageSize))
		}, broken{true, true}},
		{"wrong page id on the directories root", func(t *testing.T, path string, l pageLayout) {
			// bbolt's "Page expected to be: N, but self identifies as M".
			patchFile(t, path, l.dirs*l.pageSize, binary.LittleEndian.AppendUint64(nil, uint64(l.dirs+1)))
		}, broken{dirs: true}},
		{"pathinfos child page far past the end", func(t *testing.T, path string, l pageLayout) {
			// The first element of the branch page (16-byte header,
			// then pos, ksize, pgid) points past the file and its
			// mapping: reading it faults.
			patchFile(t, path, l.paths*l.pageSize+16+8, binary.LittleEndian.AppendUint64(nil, uint64(l.pages+1<<20)))
		}, broken{paths: true}},
		{"pathinfos child page just past the end", func(t *testing.T, path string, l pageLayout) {
			// Inside bbolt's mapping (rounded up), past the file: SIGBUS.
			patchFile(t, path, l.paths*l.pageSize+16+8, binary.LittleEndian.AppendUint64(nil, uint64(l.pages+1)))
		}, broken{paths: true}},
		{"directories root page random", func(t *testing.T, path string, l pageLayout) {
			b := make([]byte, l.pageSize)
			r := rand.New(rand.NewPCG(1, 2))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			patchFile(t, path, l.dirs*l.pageSize, b)
		}, broken{dirs: true}},
		{"every page after the meta pages random", func(t *testing.T, path string, l pageLayout) {
			b := make([]byte, (l.pages-2)*l.pageSize)
			r := rand.New(rand.NewPCG(3, 4))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			patchFile(t, path, 2*l.pageSize, b)
		}, broken{true, true}},
		{"truncated to two pages", func(t *testing.T, path string, l pageLayout) {
			if err := os.Truncate(path, 2*l.pageSize); err != nil {
				t.Fatal(err)
			}
		}, broken{true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			dir := filepath.Join(t.TempDir(), "store")
			if err := os.CopyFS(dir, os.DirFS(healthy)); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "meta.db")
			tc.damage(t, path, readLayout(t, path))

			// A writer refuses the store or fails where it meets the
			// damage; a reader opens it, to serve what is left.
			if w, err := local.Open(ctx, dir, local.Options{NoSync: true, Logger: (&logBuffer{}).logger()}); err == nil {
				if _, err := w.PutDirectory(ctx, storetest.NewFixtures().DirectoryB); tc.broken.dirs {
					wantDamaged(t, "PutDirectory", err)
				}
				w.Close()
			} else {
				wantDamaged(t, "read-write Open", err)
			}
			logs := &logBuffer{}
			s, err := local.Open(ctx, dir, local.Options{ReadOnly: true, Logger: logs.logger()})
			if err != nil {
				t.Fatalf("read-only Open of a store with a damaged meta.db: %v", err)
			}
			defer s.Close()

			_, err = s.GetDirectory(ctx, firstDir)
			if tc.broken.dirs {
				wantDamaged(t, "GetDirectory", err)
			} else if err != nil {
				t.Errorf("GetDirectory beside the damage: %v", err)
			}
			_, err = s.GetPathInfo(ctx, firstPath)
			if tc.broken.paths {
				wantDamaged(t, "GetPathInfo", err)
			} else if err != nil {
				t.Errorf("GetPathInfo beside the damage: %v", err)
			}
			err = nil
			for _, lerr := range s.ListPathInfos(ctx) {
				if lerr != nil {
					err = lerr
				}
			}
			if tc.broken.paths {
				wantDamaged(t, "ListPathInfos", err)
			} else if err != nil {
				t.Errorf("ListPathInfos beside the damage: %v", err)
			}
			// Blobs do not need meta.db (they are blob files here).
			if got := readBlob(t, s, storeclient.HashBytes(storetest.BlobA)); string(got) != string(storetest.BlobA) {
				t.Error("BLOB_A reads wrong beside a damaged meta.db")
			}

			var problems []local.Problem
			st, err := s.Verify(context.Background(), func(p local.Problem) { problems = append(problems, p) })
			if err != nil {
				t.Fatalf("Verify of a damaged meta.db = %v, want it to report the damage and finish", err)
			}
			var damage []string
			for _, p := range problems {
				if p.Object == "database" {
					damage = append(damage, p.String())
					if !strings.HasPrefix(p.String(), "corrupt database meta.db: ") {
						t.Errorf("damage reported as %q, want it to start with %q", p, "corrupt database meta.db: ")
					}
				}
			}
			if len(damage) == 0 {
				t.Errorf("Verify reported no damage of meta.db; it reported %v", problems)
			}
			if st.Blobs != 4 {
				t.Errorf("Verify checked %d blobs beside a damaged meta.db, want all 4", st.Blobs)
			}
			t.Logf("damage reported: %q", damage)
			if lines := logs.lines("level=ERROR"); len(lines) != 1 || !strings.Contains(lines[0], "meta.db is damaged") {
				t.Errorf("the damage was logged at level ERROR as %q, want one line saying meta.db is damaged", lines)
			}
		})
	}
}
