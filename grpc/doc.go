// Package grpc puts gRPC-Web in front of gRPC services: [WebHandler]
// translates browser calls in the gRPC-Web protocol (binary and base64
// text, unary and server streaming) to gRPC towards a Pylon Backend and the
// answers back, with the trailers in the body.
//
// The rest of Pylon's gRPC support is in the root package and needs no
// import of this one: NewServer serves h2c, h2c:// targets, trailers-only
// gRPC errors, grpc-timeout deadlines, classification by grpc-status and
// grpc.health.v1 health checks. This module's tests prove all of it against
// real grpc-go clients and servers.
package grpc
