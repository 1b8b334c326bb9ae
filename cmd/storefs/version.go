package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// the module version from the build info is shown.
var version = ""

// frontends lists the protocols this binary serves (storefs serve): every
// frontend is built in; FUSE also needs a usable /dev/fuse at run time.
func frontends() []string {
	fuse := "fuse"
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		fuse += " (no usable /dev/fuse here)"
	} else {
		f.Close()
	}
	return []string{fuse, "nfs3", "9p2000.L", "virtiofs", "grpc (tvix.castore.v1, snix.castore.v1)"}
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the Go version and the enabled frontends",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := version
			if v == "" {
				v = "(devel)"
				if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
					v = bi.Main.Version
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "storefs %s\ngo: %s %s/%s\nfrontends: %s\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH, strings.Join(frontends(), ", "))
			return nil
		},
	}
}
