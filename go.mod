module github.com/storefs/storefs

go 1.26.0

require (
	github.com/nix-community/go-nix v0.0.0-20250101154619-4bdde671e0a1
	github.com/zeebo/blake3 v0.2.4
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/klauspost/cpuid/v2 v2.0.12 // indirect
	github.com/spf13/cobra v1.10.2 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	github.com/stretchr/testify v1.11.1 // indirect
	go.etcd.io/bbolt v1.4.3 // indirect
	golang.org/x/sys v0.29.0 // indirect
	lukechampine.com/blake3 v1.4.1 // indirect
)
