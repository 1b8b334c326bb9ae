package castorepb

// ReadOffsetMetadata is a storefs extension of BlobService.Read, carried in
// gRPC metadata so that the messages stay those of tvix/snix: a client puts
// a decimal byte offset under this key in the request metadata, and a
// server that honours it starts the stream at that offset and echoes the
// same value under the same key in its response header. A server that does
// not know the key ignores it and streams from the start, and its header
// lacks the echo, so the client can tell the two apart.
const ReadOffsetMetadata = "storefs-read-offset"

// ReadLengthMetadata is a second storefs extension of BlobService.Read,
// used with ReadOffsetMetadata: a decimal byte count under this key asks
// the server to send only that many bytes from the offset (fewer at the
// end of the blob), so that a random read does not make the server stream
// on until the client's flow-control window is full. A server that honours
// it echoes the value under the same key in its response header, with the
// offset; one that does not streams to the end of the blob.
const ReadLengthMetadata = "storefs-read-length"
