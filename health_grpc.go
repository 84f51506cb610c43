package pylon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// grpcHealthPath is the method active gRPC health checks call.
const grpcHealthPath = "/grpc.health.v1.Health/Check"

// grpcHealthRequest encodes a grpc.health.v1.HealthCheckRequest{service}
// as one length-prefixed gRPC message: a 5-byte header (uncompressed flag,
// big-endian length) and the protobuf message, whose only field is
// "string service = 1".
func grpcHealthRequest(service string) []byte {
	var msg []byte
	if service != "" {
		msg = append(msg, 0x0a) // field 1, wire type 2 (length-delimited)
		msg = binary.AppendUvarint(msg, uint64(len(service)))
		msg = append(msg, service...)
	}
	out := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg)))
	return append(out, msg...)
}

// grpcServing is HealthCheckResponse.ServingStatus SERVING.
const grpcServing = 1

// parseGRPCHealthResponse decodes the serving status of a
// grpc.health.v1.HealthCheckResponse, the single length-prefixed message of
// body ("ServingStatus status = 1", an enum). A message without the field
// has status UNKNOWN (0).
func parseGRPCHealthResponse(body []byte) (status uint64, err error) {
	if len(body) < 5 {
		return 0, errors.New("short gRPC message")
	}
	if body[0] != 0 {
		return 0, errors.New("compressed gRPC message")
	}
	n := binary.BigEndian.Uint32(body[1:5])
	msg := body[5:]
	if uint64(n) != uint64(len(msg)) {
		return 0, fmt.Errorf("gRPC message of %d bytes, want %d", len(msg), n)
	}
	for len(msg) > 0 {
		tag, k := binary.Uvarint(msg)
		if k <= 0 {
			return 0, errors.New("bad protobuf tag")
		}
		msg = msg[k:]
		switch tag & 7 {
		case 0: // varint
			v, k := binary.Uvarint(msg)
			if k <= 0 {
				return 0, errors.New("bad protobuf varint")
			}
			msg = msg[k:]
			if tag>>3 == 1 {
				status = v
			}
		case 1: // 64-bit
			if len(msg) < 8 {
				return 0, errors.New("short protobuf field")
			}
			msg = msg[8:]
		case 2: // length-delimited
			l, k := binary.Uvarint(msg)
			if k <= 0 || uint64(len(msg)-k) < l {
				return 0, errors.New("bad protobuf length")
			}
			msg = msg[k+int(l):]
		case 5: // 32-bit
			if len(msg) < 4 {
				return 0, errors.New("short protobuf field")
			}
			msg = msg[4:]
		default:
			return 0, errors.New("bad protobuf wire type")
		}
	}
	return status, nil
}

// grpcCheck sends one grpc.health.v1.Health/Check to t and returns why it
// failed, or "" when t is SERVING.
func (p *pool) grpcCheck(req *http.Request) (reason string, err error) {
	req.Method = http.MethodPost
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	body := grpcHealthRequest(p.hc.GRPCService)
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	setGRPCTimeout(req.Header, req.Context())
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(io.LimitReader(resp.Body, maxCheckBody))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.Status, nil
	}
	code, ok := grpcStatusOf(resp)
	switch {
	case !ok:
		return "no grpc-status", nil
	case code != GRPCOK:
		return fmt.Sprintf("grpc-status %d", code), nil
	}
	st, err := parseGRPCHealthResponse(msg)
	if err != nil {
		return err.Error(), nil
	}
	if st != grpcServing {
		return fmt.Sprintf("serving status %d", st), nil
	}
	return "", nil
}
