// Package storepb holds the protobuf messages of PathInfo
// (package tvix.store.v1), generated from pathinfo.proto.
//
// Regenerate (see storeclient/castorepb for the tools):
//
//	go generate ./storeclient/...
package storepb

//go:generate sh -c "cd ../.. && protoc --go_out=. --go_opt=module=github.com/storefs/storefs storeclient/storepb/pathinfo.proto"
