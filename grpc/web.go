package grpc

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/pylon-gateway/pylon"
)

// WebOptions configures WebWithOptions. Every field's zero value is a safe
// default.
type WebOptions struct {
	// MaxTextRequestBytes bounds the body of a grpc-web-text request, which
	// is read whole to decode it. Binary requests are streamed and not
	// bounded here (use middleware.BodyLimit). Zero means 4 MiB.
	MaxTextRequestBytes int64
}

// CORSHeaders are the request headers a browser's gRPC-Web client sends,
// for middleware.CORSOptions.AllowedHeaders.
var CORSHeaders = []string{"Content-Type", "X-Grpc-Web", "X-User-Agent", "Grpc-Timeout", "Authorization"}

// CORSExposedHeaders are the response headers a browser's gRPC-Web client
// reads, for middleware.CORSOptions.ExposedHeaders: the status of a
// trailers-only response travels in them.
var CORSExposedHeaders = []string{"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin", "Retry-After"}

// Web translates gRPC-Web calls to gRPC for next (typically a Backend with
// h2c:// or https:// targets) and the answers back: requests with Content-Type
// application/grpc-web[+proto] (binary) or application/grpc-web-text[+proto]
// (base64) are sent on as application/grpc, and the response's trailers are
// written at the end of the body as a gRPC-Web trailer frame (base64 in
// text mode). Unary and server-streaming calls work; client and
// bidirectional streaming need HTTP/2 end to end, which browsers do not
// offer. Other requests pass through untouched. It is WebWithOptions with
// default options.
//
// Place it after middleware.CORS (which answers preflights) with
// CORSHeaders and CORSExposedHeaders allowed; the gateway's own errors
// reach the browser as trailers-only responses it understands.
func Web(next http.Handler) http.Handler { return WebWithOptions(WebOptions{})(next) }

// WebWithOptions returns the Web middleware with options.
func WebWithOptions(o WebOptions) pylon.Middleware {
	maxText := o.MaxTextRequestBytes
	if maxText <= 0 {
		maxText = 4 << 20
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !pylon.IsGRPCWeb(r) {
				next.ServeHTTP(w, r)
				return
			}
			if r.Method != http.MethodPost {
				w.Header().Set("Allow", http.MethodPost)
				pylon.Error(w, r, http.StatusMethodNotAllowed, "gRPC-Web calls are POST requests.")
				return
			}
			ct := r.Header.Get("Content-Type")
			base, sub, _ := strings.Cut(ct, "+")
			sub, _, _ = strings.Cut(sub, ";")
			text := strings.EqualFold(strings.TrimSpace(strings.SplitN(base, ";", 2)[0]), "application/grpc-web-text")
			r2 := r.Clone(r.Context())
			if text {
				body, err := decodeText(http.MaxBytesReader(w, r.Body, maxText))
				if err != nil {
					status := http.StatusBadRequest
					var mbe *http.MaxBytesError
					if errors.As(err, &mbe) {
						status = http.StatusRequestEntityTooLarge
					}
					pylon.Error(w, r, status, "The gRPC-Web text body could not be decoded.")
					return
				}
				r2.Body = io.NopCloser(bytes.NewReader(body))
				r2.ContentLength = int64(len(body))
			}
			grpcCT := "application/grpc"
			if sub != "" {
				grpcCT += "+" + sub
			}
			r2.Header.Set("Content-Type", grpcCT)
			r2.Header.Set("Te", "trailers")
			r2.Header.Del("X-Grpc-Web")
			r2.Header.Del("Content-Length")
			ww := &webWriter{w: w, text: text, ct: ct}
			next.ServeHTTP(ww, r2)
			ww.finish()
		})
	}
}

// decodeText decodes a grpc-web-text body: base64 whose chunks may each be
// padded, so it is decoded four characters at a time.
func decodeText(r io.Reader) ([]byte, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	clean := raw[:0]
	for _, c := range raw {
		if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
			clean = append(clean, c)
		}
	}
	if len(clean)%4 != 0 {
		return nil, errors.New("grpc: gRPC-Web text body is not base64")
	}
	out := make([]byte, 0, len(clean)/4*3)
	var q [3]byte
	for i := 0; i < len(clean); i += 4 {
		n, err := base64.StdEncoding.Decode(q[:], clean[i:i+4])
		if err != nil {
			return nil, err
		}
		out = append(out, q[:n]...)
	}
	return out, nil
}

// webWriter turns a gRPC response into a gRPC-Web one: the content type
// of the request, the body base64 in text mode, the trailers as the last
// frame of the body. It keeps Flush and has Unwrap.
type webWriter struct {
	w            http.ResponseWriter
	text         bool
	ct           string
	wroteHeader  bool
	trailersOnly bool // grpc-status was in the headers: nothing to add
	declared     []string
}

func (ww *webWriter) Header() http.Header { return ww.w.Header() }

func (ww *webWriter) Unwrap() http.ResponseWriter { return ww.w }

func (ww *webWriter) WriteHeader(code int) {
	if ww.wroteHeader {
		return
	}
	ww.wroteHeader = true
	h := ww.w.Header()
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				ww.declared = append(ww.declared, http.CanonicalHeaderKey(k))
			}
		}
	}
	delete(h, "Trailer")
	delete(h, "Content-Length") // the trailer frame, and base64, change it
	if code == http.StatusOK && h.Get("Grpc-Status") != "" {
		ww.trailersOnly = true
	}
	if ct := h.Get("Content-Type"); code == http.StatusOK && (ct == "" || strings.HasPrefix(ct, "application/grpc")) {
		h.Set("Content-Type", ww.ct)
	}
	ww.w.WriteHeader(code)
}

func (ww *webWriter) Write(p []byte) (int, error) {
	if !ww.wroteHeader {
		ww.WriteHeader(http.StatusOK)
	}
	if !ww.text {
		return ww.w.Write(p)
	}
	if _, err := ww.w.Write([]byte(base64.StdEncoding.EncodeToString(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (ww *webWriter) Flush() {
	if f, ok := ww.w.(http.Flusher); ok {
		f.Flush()
	}
}

// finish writes the trailers the handler left as a gRPC-Web trailer frame.
func (ww *webWriter) finish() {
	if !ww.wroteHeader {
		ww.WriteHeader(http.StatusOK)
	}
	if ww.trailersOnly {
		return
	}
	h := ww.w.Header()
	trailers := map[string][]string{}
	for k, vv := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			trailers[strings.ToLower(name)] = vv
			delete(h, k)
		}
	}
	for _, k := range ww.declared {
		if vv, ok := h[k]; ok {
			trailers[strings.ToLower(k)] = vv
			delete(h, k)
		}
	}
	if len(trailers) == 0 {
		// The response ended without a status: the upstream is not a
		// gRPC server, or it failed. Say so in the client's protocol.
		trailers["grpc-status"] = []string{strconv.Itoa(int(pylon.GRPCUnknown))}
		trailers["grpc-message"] = []string{"The upstream sent no gRPC status."}
	}
	keys := make([]string, 0, len(trailers))
	for k := range trailers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var block []byte
	for _, k := range keys {
		for _, v := range trailers[k] {
			block = append(block, k...)
			block = append(block, ": "...)
			block = append(block, v...)
			block = append(block, "\r\n"...)
		}
	}
	frame := make([]byte, 5, 5+len(block))
	frame[0] = 0x80
	binary.BigEndian.PutUint32(frame[1:], uint32(len(block)))
	frame = append(frame, block...)
	_, _ = ww.Write(frame)
	ww.Flush()
}
