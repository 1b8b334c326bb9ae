// Package castorepb holds the protobuf messages of the castore model
// (package tvix.castore.v1), generated from castore.proto.
//
// The gRPC services (BlobService, DirectoryService) are generated from
// rpc_blobstore.proto and rpc_directory.proto; storefs serves them under
// both package names, tvix.castore.v1 and snix.castore.v1 (see
// storeclient/grpcserver).
//
// Regenerate (needs protoc from Debian's protobuf-compiler,
// `go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12` and
// `go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2`):
//
//	go generate ./storeclient/...
package castorepb

//go:generate sh -c "cd ../.. && protoc --go_out=. --go_opt=module=github.com/storefs/storefs storeclient/castorepb/castore.proto"
//go:generate sh -c "cd ../.. && protoc --go_out=. --go_opt=module=github.com/storefs/storefs --go-grpc_out=. --go-grpc_opt=module=github.com/storefs/storefs storeclient/castorepb/rpc_blobstore.proto storeclient/castorepb/rpc_directory.proto"
