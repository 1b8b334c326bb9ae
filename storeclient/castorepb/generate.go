// Package castorepb holds the protobuf messages of the castore model
// (package tvix.castore.v1), generated from castore.proto.
//
// Regenerate (needs protoc from Debian's protobuf-compiler and
// `go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12`):
//
//	go generate ./storeclient/...
package castorepb

//go:generate sh -c "cd ../.. && protoc --go_out=. --go_opt=module=github.com/storefs/storefs storeclient/castorepb/castore.proto"
