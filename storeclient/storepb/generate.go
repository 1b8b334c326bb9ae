// Package storepb holds the protobuf messages of PathInfo
// (package tvix.store.v1), generated from pathinfo.proto.
//
// The gRPC PathInfoService is generated from rpc_pathinfo.proto; storefs
// serves it under both package names, tvix.store.v1 and snix.store.v1.
//
// Regenerate (see storeclient/castorepb for the tools):
//
//	go generate ./storeclient/...
package storepb

//go:generate sh -c "cd ../.. && protoc --go_out=. --go_opt=module=github.com/storefs/storefs storeclient/storepb/pathinfo.proto"
//go:generate sh -c "cd ../.. && protoc --go_out=. --go_opt=module=github.com/storefs/storefs --go-grpc_out=. --go-grpc_opt=module=github.com/storefs/storefs storeclient/storepb/rpc_pathinfo.proto"
