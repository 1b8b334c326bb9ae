package storeclient_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/storefs/storefs/storeclient"
	"github.com/storefs/storefs/storeclient/castorepb"
)

var (
	digest32 = bytes.Repeat([]byte{0x11}, 32)
	digest31 = bytes.Repeat([]byte{0x11}, 31)
	digest33 = bytes.Repeat([]byte{0x11}, 33)
)

func dirN(name string, digest []byte, size uint64) *castorepb.DirectoryNode {
	return &castorepb.DirectoryNode{Name: []byte(name), Digest: digest, Size: size}
}

func fileN(name string, digest []byte) *castorepb.FileNode {
	return &castorepb.FileNode{Name: []byte(name), Digest: digest, Size: 1}
}

func linkN(name, target string) *castorepb.SymlinkNode {
	return &castorepb.SymlinkNode{Name: []byte(name), Target: []byte(target)}
}

// TestDirectoryValidation checks that each rule of castore.md "Validation
// of a Directory" rejects its bad case, naming the rule, and accepts the
// boundary cases next to it. Each case goes through DirectoryFromProto and,
// encoded, through UnmarshalDirectory.
func TestDirectoryValidation(t *testing.T) {
	long := strings.Repeat("n", 255)
	for _, tc := range []struct {
		name string
		dir  *castorepb.Directory
		rule storeclient.Rule // "" means valid
	}{
		{"empty directory", &castorepb.Directory{}, ""},
		{"one of each", &castorepb.Directory{Directories: []*castorepb.DirectoryNode{dirN("a", digest32, 0)}, Files: []*castorepb.FileNode{fileN("b", digest32)}, Symlinks: []*castorepb.SymlinkNode{linkN("c", "../x")}}, ""},
		{"lists interleave by name", &castorepb.Directory{Directories: []*castorepb.DirectoryNode{dirN("b", digest32, 0)}, Files: []*castorepb.FileNode{fileN("a", digest32), fileN("c", digest32)}}, ""},

		// 1. each list strictly ascending by raw bytes
		{"directories unsorted", &castorepb.Directory{Directories: []*castorepb.DirectoryNode{dirN("b", digest32, 0), dirN("a", digest32, 0)}}, storeclient.RuleSorted},
		{"files unsorted", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("b", digest32), fileN("a", digest32)}}, storeclient.RuleSorted},
		{"symlinks unsorted", &castorepb.Directory{Symlinks: []*castorepb.SymlinkNode{linkN("b", "t"), linkN("a", "t")}}, storeclient.RuleSorted},
		{"duplicate within a list", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("a", digest32), fileN("a", digest32)}}, storeclient.RuleSorted},
		{"sorted by bytes not by UTF-8 collation", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("Z", digest32), fileN("a", digest32), fileN("\xc3\xa9", digest32)}}, ""},
		{"bytes order: 0xff after a", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("\xff", digest32), fileN("a", digest32)}}, storeclient.RuleSorted},

		// 2. unique across lists
		{"directory and file share a name", &castorepb.Directory{Directories: []*castorepb.DirectoryNode{dirN("a", digest32, 0)}, Files: []*castorepb.FileNode{fileN("a", digest32)}}, storeclient.RuleUnique},
		{"file and symlink share a name", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("a", digest32)}, Symlinks: []*castorepb.SymlinkNode{linkN("a", "t")}}, storeclient.RuleUnique},
		{"directory and symlink share a name", &castorepb.Directory{Directories: []*castorepb.DirectoryNode{dirN("x", digest32, 0)}, Symlinks: []*castorepb.SymlinkNode{linkN("x", "t")}}, storeclient.RuleUnique},

		// 3. names
		{"empty name", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("", digest32)}}, storeclient.RuleName},
		{"name .", &castorepb.Directory{Directories: []*castorepb.DirectoryNode{dirN(".", digest32, 0)}}, storeclient.RuleName},
		{"name ..", &castorepb.Directory{Symlinks: []*castorepb.SymlinkNode{linkN("..", "t")}}, storeclient.RuleName},
		{"name of 256 bytes", &castorepb.Directory{Files: []*castorepb.FileNode{fileN(long+"n", digest32)}}, storeclient.RuleName},
		{"name with /", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("a/b", digest32)}}, storeclient.RuleName},
		{"name with NUL", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("a\x00b", digest32)}}, storeclient.RuleName},
		{"name of 255 bytes", &castorepb.Directory{Files: []*castorepb.FileNode{fileN(long, digest32)}}, ""},
		{"name ... and .a", &castorepb.Directory{Files: []*castorepb.FileNode{fileN(".a", digest32), fileN("...", digest32)}}, storeclient.RuleSorted},
		{"names ... and .a sorted", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("...", digest32), fileN(".a", digest32)}}, ""},
		{"name not UTF-8", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("\xff\xfe", digest32)}}, ""},

		// 4. digests are 32 bytes
		{"directory digest 31 bytes", &castorepb.Directory{Directories: []*castorepb.DirectoryNode{dirN("a", digest31, 0)}}, storeclient.RuleDigestLength},
		{"directory digest 33 bytes", &castorepb.Directory{Directories: []*castorepb.DirectoryNode{dirN("a", digest33, 0)}}, storeclient.RuleDigestLength},
		{"file digest empty", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("a", nil)}}, storeclient.RuleDigestLength},
		{"file digest 31 bytes", &castorepb.Directory{Files: []*castorepb.FileNode{fileN("a", digest31)}}, storeclient.RuleDigestLength},

		// 5. symlink targets
		{"symlink target empty", &castorepb.Directory{Symlinks: []*castorepb.SymlinkNode{linkN("a", "")}}, storeclient.RuleSymlinkTarget},
		{"symlink target 4096 bytes", &castorepb.Directory{Symlinks: []*castorepb.SymlinkNode{linkN("a", strings.Repeat("t", 4096))}}, storeclient.RuleSymlinkTarget},
		{"symlink target with NUL", &castorepb.Directory{Symlinks: []*castorepb.SymlinkNode{linkN("a", "t\x00")}}, storeclient.RuleSymlinkTarget},
		{"symlink target 4095 bytes", &castorepb.Directory{Symlinks: []*castorepb.SymlinkNode{linkN("a", strings.Repeat("t", 4095))}}, ""},
		{"symlink target absolute with ..", &castorepb.Directory{Symlinks: []*castorepb.SymlinkNode{linkN("a", "/nix/store/../x")}}, ""},

		// size overflow
		{"size overflows with one child", &castorepb.Directory{Directories: []*castorepb.DirectoryNode{dirN("a", digest32, math.MaxUint64-1)}}, storeclient.RuleSize},
		{"size overflows over two children", &castorepb.Directory{Directories: []*castorepb.DirectoryNode{dirN("a", digest32, math.MaxUint64/2), dirN("b", digest32, math.MaxUint64/2)}}, storeclient.RuleSize},
		{"largest size", &castorepb.Directory{Directories: []*castorepb.DirectoryNode{dirN("a", digest32, math.MaxUint64-2)}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := storeclient.DirectoryFromProto(tc.dir)
			checkRule(t, "DirectoryFromProto", err, tc.rule)
			b, merr := proto.MarshalOptions{Deterministic: true}.Marshal(tc.dir)
			if merr != nil {
				t.Fatal(merr)
			}
			d2, err := storeclient.UnmarshalDirectory(b)
			checkRule(t, "UnmarshalDirectory", err, tc.rule)
			if tc.rule == "" && d != nil && d2 != nil && d.Digest() != d2.Digest() {
				t.Errorf("DirectoryFromProto and UnmarshalDirectory disagree on the digest")
			}
		})
	}
}

// TestNodeValidation covers rule 6 and the per-node rules for a root node.
func TestNodeValidation(t *testing.T) {
	for _, tc := range []struct {
		name      string
		node      *castorepb.Node
		anonymous bool
		rule      storeclient.Rule
	}{
		{"unset", &castorepb.Node{}, false, storeclient.RuleNodeUnset},
		{"unset anonymous", &castorepb.Node{}, true, storeclient.RuleNodeUnset},
		{"anonymous file with a name", &castorepb.Node{Node: &castorepb.Node_File{File: fileN("a", digest32)}}, true, storeclient.RuleAnonymousName},
		{"anonymous directory with a name", &castorepb.Node{Node: &castorepb.Node_Directory{Directory: dirN("a", digest32, 0)}}, true, storeclient.RuleAnonymousName},
		{"anonymous symlink with a name", &castorepb.Node{Node: &castorepb.Node_Symlink{Symlink: linkN("a", "t")}}, true, storeclient.RuleAnonymousName},
		{"anonymous file", &castorepb.Node{Node: &castorepb.Node_File{File: fileN("", digest32)}}, true, ""},
		{"named file", &castorepb.Node{Node: &castorepb.Node_File{File: fileN("a", digest32)}}, false, ""},
		{"named node without a name", &castorepb.Node{Node: &castorepb.Node_File{File: fileN("", digest32)}}, false, storeclient.RuleName},
		{"named node called ..", &castorepb.Node{Node: &castorepb.Node_Symlink{Symlink: linkN("..", "t")}}, false, storeclient.RuleName},
		{"short digest", &castorepb.Node{Node: &castorepb.Node_Directory{Directory: dirN("a", digest31, 0)}}, false, storeclient.RuleDigestLength},
		{"bad symlink target", &castorepb.Node{Node: &castorepb.Node_Symlink{Symlink: linkN("a", "")}}, false, storeclient.RuleSymlinkTarget},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := storeclient.NodeFromProto(tc.node, tc.anonymous)
			checkRule(t, "NodeFromProto", err, tc.rule)
		})
	}
}

func TestUndecodableDirectory(t *testing.T) {
	for _, b := range [][]byte{{0xff}, {0x0a, 0x05, 0x01}, {0x0a}} {
		_, err := storeclient.UnmarshalDirectory(b)
		checkRule(t, "UnmarshalDirectory", err, storeclient.RuleDecode)
	}
}

// checkRule fails the test unless err is a *ValidationError for rule, or
// nil when rule is "".
func checkRule(t *testing.T, op string, err error, rule storeclient.Rule) {
	t.Helper()
	if rule == "" {
		if err != nil {
			t.Errorf("%s rejected a valid input: %v", op, err)
		}
		return
	}
	var ve *storeclient.ValidationError
	if !errors.As(err, &ve) {
		t.Errorf("%s = %v, want a *ValidationError for rule %s", op, err, rule)
		return
	}
	if ve.Rule != rule {
		t.Errorf("%s rejected it by rule %s (%v), want rule %s", op, ve.Rule, err, rule)
	}
	if !errors.Is(err, storeclient.ErrCorrupt) {
		t.Errorf("%s error %v does not wrap ErrCorrupt", op, err)
	}
}
