package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// Corpus describes a deterministic tree: many small files spread over
// directories, plus one big file. The same parameters and seed always give
// the same bytes, so figures from different runs and machines compare.
type Corpus struct {
	Seed       uint64
	SmallFiles int   // number of small files
	MinSize    int   // smallest small file, bytes
	MaxSize    int   // largest small file, bytes
	PerDir     int   // small files per directory
	BigSize    int64 // size of the one big file, bytes; 0 for none
}

// DefaultCorpus is the full-size corpus: 20,000 files of 1-64 KiB and one
// 1 GiB file (about 1.7 GB).
var DefaultCorpus = Corpus{Seed: 1, SmallFiles: 20000, MinSize: 1 << 10, MaxSize: 64 << 10, PerDir: 100, BigSize: 1 << 30}

// SmokeCorpus is a tiny corpus for CI: it checks that every driver works.
var SmokeCorpus = Corpus{Seed: 1, SmallFiles: 300, MinSize: 1 << 10, MaxSize: 64 << 10, PerDir: 50, BigSize: 8 << 20}

// CorpusStats is what Generate wrote.
type CorpusStats struct {
	Root    string // the tree
	BigFile string // the big file inside it, "" if none
	Files   int
	Bytes   int64
}

// BigName is the name of the big file in the corpus root.
const BigName = "big.bin"

// Generate writes the corpus into dir/tree.
func (c Corpus) Generate(dir string) (CorpusStats, error) {
	st := CorpusStats{Root: filepath.Join(dir, "tree")}
	sizes := rand.New(rand.NewPCG(c.Seed, 0x5eed))
	data := rand.NewChaCha8([32]byte{byte(c.Seed), 's', 't', 'o', 'r', 'e', 'f', 's'})
	buf := make([]byte, 1<<20)
	write := func(path string, size int64, mode os.FileMode) error {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
		if err != nil {
			return err
		}
		for left := size; left > 0; {
			b := buf[:min(int64(len(buf)), left)]
			data.Read(b)
			if _, err := f.Write(b); err != nil {
				f.Close()
				return err
			}
			left -= int64(len(b))
		}
		st.Files++
		st.Bytes += size
		return f.Close()
	}
	if err := os.MkdirAll(st.Root, 0o755); err != nil {
		return st, err
	}
	perDir := max(c.PerDir, 1)
	for i := 0; i < c.SmallFiles; i++ {
		d := filepath.Join(st.Root, fmt.Sprintf("d%03d", i/perDir/100), fmt.Sprintf("d%03d", i/perDir%100))
		if i%perDir == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return st, err
			}
		}
		size := int64(c.MinSize + sizes.IntN(c.MaxSize-c.MinSize+1))
		mode := os.FileMode(0o644)
		if i%10 == 0 {
			mode = 0o755
		}
		if err := write(filepath.Join(d, fmt.Sprintf("f%05d", i)), size, mode); err != nil {
			return st, fmt.Errorf("generate corpus: %w", err)
		}
	}
	if c.BigSize > 0 {
		st.BigFile = filepath.Join(st.Root, BigName)
		if err := write(st.BigFile, c.BigSize, 0o644); err != nil {
			return st, fmt.Errorf("generate corpus: %w", err)
		}
	}
	return st, nil
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
