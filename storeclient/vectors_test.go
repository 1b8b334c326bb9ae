package storeclient_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/storetest"
)

func TestBlobDigests(t *testing.T) {
	cases := []struct {
		name    string
		data    []byte
		hex     string
		display string
	}{
		{"EMPTY", storetest.Empty, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262", "blake3-rxNJufX5oaagQE3qNtzJSZvLJcmtwRK3zJqTyuQfMmI="},
		{"HELLOWORLD", storetest.HelloWorld, "5ca7815adcb484e9a136c11efe69c1d530176d549b5d18d038eb5280b4b3470c", "blake3-XKeBWty0hOmhNsEe/mnB1TAXbVSbXRjQOOtSgLSzRww="},
		{"BLOB_A", storetest.BlobA, "7b7015bb92cf0b318037702a6cdd81dee41224f734684c2c122cd6359cb1ee63", "blake3-e3AVu5LPCzGAN3AqbN2B3uQSJPc0aEwsEizWNZyx7mM="},
		{"BLOB_B", storetest.BlobB, "a82c5154a7a0c262c6fdb929a317585646f8fbcf80326d0a7b8747edaf2d99d2", "blake3-qCxRVKegwmLG/bkpoxdYVkb4+8+AMm0Ke4dH7a8tmdI="},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := storeclient.HashBytes(c.data)
			if d.Hex() != c.hex || d.String() != c.display {
				t.Fatalf("digest = %s (%s), want %s (%s)", d.Hex(), d, c.hex, c.display)
			}
			h := storeclient.NewHasher()
			for i := 0; i < len(c.data); i += 1000 {
				h.Write(c.data[i:min(i+1000, len(c.data))])
			}
			if got := storeclient.Digest(h.Sum(nil)); got != d {
				t.Fatalf("streaming digest = %s, want %s", got, d)
			}
		})
	}
	if storeclient.HashBytes(nil) != storeclient.EmptyDigest {
		t.Fatal("EmptyDigest is not the digest of the empty blob")
	}
	if len(storetest.BlobB) != 1044480 {
		t.Fatalf("BLOB_B has %d bytes", len(storetest.BlobB))
	}
}

func TestDirectoryVectors(t *testing.T) {
	f := storetest.NewFixtures()
	cases := []struct {
		name    string
		dir     *storeclient.Directory
		hex     string
		display string
		size    uint64
	}{
		{"A", f.DirectoryA, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262", "blake3-rxNJufX5oaagQE3qNtzJSZvLJcmtwRK3zJqTyuQfMmI=", 0},
		{"WITH_KEEP", f.DirectoryWithKeep, "8b5b5d642b646bb8ed504b0862c39413e87e57491497de7bd075953f7b83810e", "blake3-i1tdZCtka7jtUEsIYsOUE+h+V0kUl9570HWVP3uDgQ4=", 2},
		{"B", f.DirectoryB, "8701f4722d8dae7f2c40fa003331b8437a3825f9e1bfd3a77998c64cc226b9cc", "blake3-hwH0ci2Nrn8sQPoAMzG4Q3o4Jfnhv9OneZjGTMImucw=", 2},
		{"C", f.DirectoryC, "78eb200ae0cc95d4ea954655fbcf91e285013a261310e161927f2401d2bca803", "blake3-eOsgCuDMldTqlUZV+8+R4oUBOiYTEOFhkn8kAdK8qAM=", 4},
		{"COMPLICATED", f.DirectoryComplicated, "424a7f6ce08d805d15b428062faae96299a1675d708c3a39261afe38cdd04feb", "blake3-Qkp/bOCNgF0VtCgGL6rpYpmhZ11wjDo5Jhr+OM3QT+s=", 8},
		{"D", f.DirectoryD, "76cd8b55b37333961c1778ba997e57df92e219926ae5a66c414b810331a77603", "blake3-ds2LVbNzM5YcF3i6mX5X35LiGZJq5aZsQUuBAzGndgM=", 6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := c.dir.Digest()
			if d.Hex() != c.hex || d.String() != c.display {
				t.Errorf("digest = %s (%s), want %s (%s)", d.Hex(), d, c.hex, c.display)
			}
			if c.dir.Size() != c.size {
				t.Errorf("size = %d, want %d", c.dir.Size(), c.size)
			}
			back, err := storeclient.UnmarshalDirectory(c.dir.Marshal())
			if err != nil {
				t.Fatalf("unmarshal own encoding: %v", err)
			}
			if back.Digest() != d {
				t.Errorf("round trip digest = %s, want %s", back.Digest(), d)
			}
			for _, s := range []string{c.hex, c.display, "b3:" + strings.TrimPrefix(c.display, "blake3-")} {
				p, err := storeclient.ParseDigest(s)
				if err != nil || p != d {
					t.Errorf("ParseDigest(%q) = %s, %v", s, p, err)
				}
			}
		})
	}
}

func TestCanonicalEncodings(t *testing.T) {
	f := storetest.NewFixtures()
	empty := "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
	withKeep := "1229" + "0a05" + "2e6b656570" + "1220" + empty
	if got := hex.EncodeToString(f.DirectoryWithKeep.Marshal()); got != withKeep {
		t.Errorf("WITH_KEEP encoding = %s, want %s", got, withKeep)
	}
	complicated := "0a2a" + "0a04" + "6b656570" + "1220" + "8b5b5d642b646bb8ed504b0862c39413e87e57491497de7bd075953f7b83810e" + "1802" +
		withKeep +
		"1a1e" + "0a02" + "6161" + "1218" + "2f6e69782f73746f72652f736f6d657768657265656c7365"
	if got := hex.EncodeToString(f.DirectoryComplicated.Marshal()); got != complicated {
		t.Errorf("COMPLICATED encoding = %s, want %s", got, complicated)
	}
	if len(f.DirectoryA.Marshal()) != 0 {
		t.Error("empty directory must encode to zero bytes")
	}
}

func TestLegacySizeVectors(t *testing.T) {
	// Under the old rule, DIRECTORY_WITH_KEEP has size 1, so the parents
	// record other sizes and get other digests.
	f := storetest.NewFixtures()
	keepLegacy, err := f.DirectoryWithKeep.LegacySize()
	if err != nil || keepLegacy != 1 {
		t.Fatalf("WITH_KEEP legacy size = %d, %v; want 1", keepLegacy, err)
	}
	var entries []storeclient.Entry
	for _, e := range f.DirectoryComplicated.Entries() {
		if e.Node.Kind() == storeclient.KindDirectory {
			e.Node = storeclient.DirectoryNode(e.Node.Digest(), keepLegacy)
		}
		entries = append(entries, e)
	}
	old, err := storeclient.NewDirectory(entries...)
	if err != nil {
		t.Fatal(err)
	}
	if got := old.Digest().Hex(); got != "3f951a15afd586fb3121ef4d13d582e811ce0e5a7f21c0497fd87490e9e2355a" {
		t.Errorf("legacy COMPLICATED digest = %s", got)
	}
	bLegacy, _ := f.DirectoryB.LegacySize()
	d, err := storeclient.NewDirectory(
		storeclient.Entry{Name: "a", Node: storeclient.DirectoryNode(f.DirectoryA.Digest(), 0)},
		storeclient.Entry{Name: "b", Node: storeclient.DirectoryNode(f.DirectoryB.Digest(), bLegacy)},
	)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Digest().Hex(); got != "99922a5c1801805287a647af73bca0ed7352a5f7f373e54992795bcc4a235213" {
		t.Errorf("legacy D digest = %s", got)
	}
}

func TestNixbase32Vector(t *testing.T) {
	p, err := storeclient.ParseStorePathBasename("00bgd045z0d4icpbc2yyz4gx48ak44la-x")
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(p.Digest[:]); got != "8a12321522fd91efbd60ebb2481af88580f61600" {
		t.Fatalf("digest = %s", got)
	}
	if p.Basename() != "00bgd045z0d4icpbc2yyz4gx48ak44la-x" {
		t.Fatalf("basename round trip = %s", p.Basename())
	}
}

func TestFixedOutputSourcePath(t *testing.T) {
	// nix-store --add of a flat file "Hello World!" (NAR sha256 from
	// vectors.md) named hello.txt gives this path in real Nix 2.8.
	nar, _ := hex.DecodeString("03e7f63be30b065d78bcf615f5473545fdb4eb69aa416f43495b4e05cdfb8040")
	p, err := storeclient.FixedOutputSourcePath([sha256.Size]byte(nar), "hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	if want := "/nix/store/925f1jb1ajrypjbyq7rylwryqwizvhp0-hello.txt"; p.Absolute() != want {
		t.Fatalf("path = %s, want %s", p, want)
	}
}
