// Package compress is a response-compression middleware for Pylon and any
// net/http program: zstd, brotli and gzip, negotiated from Accept-Encoding
// with qvalues (RFC 9110 §12.5.3).
//
// A response is compressed when the client accepts one of the configured
// codings, its content type is listed, its body is at least MinSize bytes
// (or of unknown length and grows past it), and nothing says not to: no
// Content-Encoding already, no Cache-Control: no-transform (RFC 9110
// §7.7), not a 1xx, 204, 206 or 304 response, not a HEAD, Range or upgrade
// request. A compressed response loses Content-Length and Accept-Ranges, and
// a strong ETag becomes weak (the compressed bytes are another
// representation). Every response of a compressible type carries Vary:
// Accept-Encoding, so that shared caches keep encodings apart — also when
// it is sent uncompressed because the request had no Accept-Encoding, was
// a HEAD or asked for a Range.
//
// Streaming works: Flush (and http.ResponseController's) flushes the
// encoder, so server-sent events arrive as they are written. Informational
// responses (103 Early Hints) pass through untouched.
//
// Place it outside a response cache (before it in the chain) to store
// identity bodies and compress each answer, or inside it (after) to store one
// compressed variant per Accept-Encoding, as the cache's Vary handling
// keys them.
//
// It is a nested module (github.com/pylon-gateway/pylon/middleware/compress)
// so that programs which do not import it do not compile
// klauspost/compress and andybalholm/brotli.
package compress

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Codings Pylon compresses with, by their Content-Encoding names.
const (
	Zstd   = "zstd"
	Brotli = "br"
	Gzip   = "gzip"
)

// DefaultContentTypes are the media types compressed when
// Options.ContentTypes is nil: text, JSON, JavaScript, XML and their
// structured-syntax suffixes, SVG, WebAssembly and NDJSON.
var DefaultContentTypes = []string{
	"text/*", "application/json", "application/*+json", "application/javascript",
	"application/x-javascript", "application/xml", "application/*+xml", "image/svg+xml",
	"application/wasm", "application/x-ndjson", "application/graphql-response+json",
}

// Options configures [New]. Every field's zero value is a safe default.
type Options struct {
	// Encodings are the codings offered, in order of preference when the
	// client accepts several at the same qvalue. Nil means zstd, br, gzip.
	// Each must be one of Zstd, Brotli and Gzip.
	Encodings []string
	// MinSize is the smallest body, in bytes, worth compressing; a body of
	// unknown length is held back until it reaches MinSize (or is flushed
	// or ends). Zero means 1024; negative means every body.
	MinSize int
	// ContentTypes are the media types compressed: "type/subtype",
	// "type/*" or "type/*+suffix", compared case-insensitively, without
	// parameters. Nil means DefaultContentTypes.
	ContentTypes []string
	// ExcludeContentTypes are media types never compressed, in the same
	// forms; they win over ContentTypes. Nil means none.
	ExcludeContentTypes []string
	// GzipLevel, BrotliLevel and ZstdLevel set each coder's level. Zero
	// means gzip 5, brotli 4 and zstd's default (level 3), settings fast
	// enough for responses compressed as they are served.
	GzipLevel, BrotliLevel int
	// ZstdLevel is one of klauspost/compress/zstd's EncoderLevel values.
	// Zero means zstd.SpeedDefault.
	ZstdLevel zstd.EncoderLevel
}

// config is the prepared form of Options.
type config struct {
	encodings []string
	pools     map[string]*sync.Pool
	minSize   int
	include   []mediaPattern
	exclude   []mediaPattern
}

// MustNew is like New but panics on error, for settings written in the
// program: gw.Use(compress.MustNew(compress.Options{})).
func MustNew(o Options) func(http.Handler) http.Handler {
	mw, err := New(o)
	if err != nil {
		panic(err)
	}
	return mw
}

// New returns the compression middleware configured by o, or an error that
// names the first invalid setting.
func New(o Options) (func(http.Handler) http.Handler, error) {
	c := &config{minSize: o.MinSize, pools: make(map[string]*sync.Pool)}
	if c.minSize == 0 {
		c.minSize = 1024
	}
	c.encodings = o.Encodings
	if c.encodings == nil {
		c.encodings = []string{Zstd, Brotli, Gzip}
	}
	if len(c.encodings) == 0 || len(c.encodings) > 8 {
		return nil, errors.New("compress: Encodings must name between one and eight codings")
	}
	gzLevel, brLevel, zLevel := o.GzipLevel, o.BrotliLevel, o.ZstdLevel
	if gzLevel == 0 {
		gzLevel = 5
	}
	if brLevel == 0 {
		brLevel = 4
	}
	if zLevel == 0 {
		zLevel = zstd.SpeedDefault
	}
	for _, e := range c.encodings {
		var mk func() encoder
		switch e {
		case Gzip:
			if _, err := gzip.NewWriterLevel(io.Discard, gzLevel); err != nil {
				return nil, fmt.Errorf("compress: GzipLevel %d: %w", gzLevel, err)
			}
			mk = func() encoder { w, _ := gzip.NewWriterLevel(nil, gzLevel); return w }
		case Brotli:
			if brLevel < brotli.BestSpeed || brLevel > brotli.BestCompression {
				return nil, fmt.Errorf("compress: BrotliLevel %d is not in 0..11", brLevel)
			}
			mk = func() encoder { return brotli.NewWriterLevel(nil, brLevel) }
		case Zstd:
			if zLevel < zstd.SpeedFastest || zLevel > zstd.SpeedBestCompression {
				return nil, fmt.Errorf("compress: ZstdLevel %d is not a zstd.EncoderLevel", zLevel)
			}
			mk = func() encoder {
				w, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zLevel), zstd.WithEncoderConcurrency(1),
					zstd.WithLowerEncoderMem(true))
				return w
			}
		default:
			return nil, fmt.Errorf("compress: unknown coding %q (want zstd, br or gzip)", e)
		}
		if c.pools[e] != nil {
			return nil, fmt.Errorf("compress: coding %q listed twice", e)
		}
		c.pools[e] = &sync.Pool{New: func() any { return mk() }}
	}
	types := o.ContentTypes
	if types == nil {
		types = DefaultContentTypes
	}
	var err error
	if c.include, err = parsePatterns(types); err != nil {
		return nil, err
	}
	if c.exclude, err = parsePatterns(o.ExcludeContentTypes); err != nil {
		return nil, err
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.serve(next, w, r)
		})
	}, nil
}

// encoder is what the three coders have in common.
type encoder interface {
	io.Writer
	Flush() error
	Close() error
	Reset(io.Writer)
}

func (c *config) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	ae := r.Header["Accept-Encoding"]
	if r.Header["Upgrade"] != nil {
		next.ServeHTTP(w, r)
		return
	}
	if ae == nil || r.Method == http.MethodHead || r.Header["Range"] != nil {
		// Not compressed, but the answer varies all the same: a cache
		// after this middleware must keep it apart from the compressed
		// ones (RFC 9110 §12.5.5).
		next.ServeHTTP(&varyWriter{ResponseWriter: w, c: c}, r)
		return
	}
	cw := &writer{ResponseWriter: w, c: c, coding: Negotiate(ae, c.encodings)}
	defer cw.finish()
	next.ServeHTTP(cw, r)
}

// state of a writer's response.
const (
	statePending  = iota // header not sent; deciding
	statePlain           // header sent; body passes through
	stateEncoding        // header sent; body goes through enc
)

// writer compresses the response written through it when it qualifies.
type writer struct {
	http.ResponseWriter
	c      *config
	coding string // negotiated, "" when the client accepts none of ours

	state  int
	status int // the final status, once WriteHeader was called
	buf    []byte
	enc    encoder
	err    error
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *writer) WriteHeader(code int) {
	if w.status != 0 {
		return // superfluous, as net/http would say
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code) // 103 Early Hints and friends pass through
		return
	}
	w.status = code
	h := w.Header()
	if !compressibleStatus(code) || h.Get("Content-Encoding") != "" || noTransform(h) {
		w.sendPlain()
		return
	}
	if cl, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil && cl < int64(w.c.minSize) {
		w.sendPlain()
	}
	// Otherwise decide on the first bytes: the content type may still have
	// to be sniffed from them.
}

func (w *writer) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	switch w.state {
	case statePlain:
		return w.ResponseWriter.Write(p)
	case stateEncoding:
		if w.err != nil {
			return 0, w.err
		}
		n, err := w.enc.Write(p)
		if err != nil {
			w.err = err
		}
		return n, err
	}
	if len(w.buf) == 0 && (len(p) >= w.c.minSize || w.knownLarge()) {
		w.buf = p // decided on p itself, written at once: no copy
		if err := w.decide(false); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) >= w.c.minSize || w.knownLarge() {
		if err := w.decide(false); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// knownLarge reports whether the declared Content-Length reaches MinSize.
func (w *writer) knownLarge() bool {
	cl, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64)
	return err == nil && cl >= int64(w.c.minSize)
}

// Flush sends what was written so far, compressed when the response is,
// and flushes the connection.
func (w *writer) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.state == statePending {
		if w.decide(false) != nil {
			return
		}
	}
	if w.state == stateEncoding && w.err == nil {
		if err := w.enc.Flush(); err != nil {
			w.err = err
			return
		}
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// decide chooses between compressing and passing through, sends the header
// and what was held back. ended means the handler has returned.
func (w *writer) decide(ended bool) error {
	h := w.Header()
	ct := h.Get("Content-Type")
	if ct == "" && len(w.buf) > 0 && h["Content-Type"] == nil {
		ct = http.DetectContentType(w.buf) // as net/http would; the encoded bytes cannot be sniffed
		h.Set("Content-Type", ct)
	}
	eligible := w.c.compressible(ct)
	if eligible {
		addVary(h)
	}
	small := ended && len(w.buf) < w.c.minSize
	if !eligible || w.coding == "" || small {
		if ended && h["Content-Length"] == nil && bodyAllowed(w.status) {
			h.Set("Content-Length", strconv.Itoa(len(w.buf)))
		}
		w.sendPlain()
		if len(w.buf) > 0 {
			_, err := w.ResponseWriter.Write(w.buf)
			w.buf = nil
			return err
		}
		return nil
	}
	h.Del("Content-Length")
	h.Del("Accept-Ranges")
	h.Set("Content-Encoding", w.coding)
	if et := h.Get("Etag"); et != "" && !strings.HasPrefix(et, "W/") {
		h.Set("Etag", "W/"+et)
	}
	w.state = stateEncoding
	w.ResponseWriter.WriteHeader(w.status)
	w.enc = w.c.pools[w.coding].Get().(encoder)
	w.enc.Reset(w.ResponseWriter)
	if len(w.buf) > 0 {
		_, err := w.enc.Write(w.buf)
		w.buf = nil
		if err != nil {
			w.err = err
			return err
		}
	}
	return nil
}

func (w *writer) sendPlain() {
	w.state = statePlain
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.ResponseWriter.WriteHeader(w.status)
}

// finish ends the response once the handler returned: it decides if
// nothing did yet, and closes the encoder.
func (w *writer) finish() {
	if w.status == 0 && w.state == statePending && len(w.buf) == 0 {
		return // the handler wrote nothing; net/http answers 200 itself
	}
	if w.state == statePending {
		_ = w.decide(true)
	}
	if w.enc != nil {
		if w.err == nil {
			_ = w.enc.Close()
		}
		w.enc.Reset(nil)
		w.c.pools[w.coding].Put(w.enc)
		w.enc = nil
	}
}

func compressibleStatus(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusPartialContent &&
		code != http.StatusNotModified
}

func bodyAllowed(code int) bool {
	return code != http.StatusNoContent && code != http.StatusNotModified && code >= 200
}

// noTransform reports Cache-Control: no-transform (RFC 9111 §5.2.2.6).
func noTransform(h http.Header) bool {
	for _, v := range h["Cache-Control"] {
		for v != "" {
			var d string
			d, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(d), "no-transform") {
				return true
			}
		}
	}
	return false
}

// varyWriter passes a response through unchanged but for Vary: a response
// that would have been compressed for a client that asked gets
// Vary: Accept-Encoding when it is sent uncompressed too (no
// Accept-Encoding, HEAD, Range).
type varyWriter struct {
	http.ResponseWriter
	c    *config
	sent bool
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *varyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *varyWriter) WriteHeader(code int) {
	if !w.sent && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.vary(code, nil)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *varyWriter) Write(p []byte) (int, error) {
	if !w.sent {
		w.vary(http.StatusOK, p)
	}
	return w.ResponseWriter.Write(p)
}

// Flush flushes the wrapped writer.
func (w *varyWriter) Flush() {
	if !w.sent {
		w.vary(http.StatusOK, nil)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// vary adds Vary: Accept-Encoding, once, when a response with this status
// and header (and first bytes p, for a type still to be sniffed) is one
// the writer would have compressed. An unknown type counts as one:
// a needless Vary costs a cache a variant, a missing one serves a client
// an encoding it did not ask for.
func (w *varyWriter) vary(code int, p []byte) {
	w.sent = true
	h := w.Header()
	if !compressibleStatus(code) || h.Get("Content-Encoding") != "" || noTransform(h) {
		return
	}
	if cl, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil && cl < int64(w.c.minSize) {
		return
	}
	ct := h.Get("Content-Type")
	if ct == "" && h["Content-Type"] == nil && len(p) > 0 {
		ct = http.DetectContentType(p)
	}
	if ct == "" || w.c.compressible(ct) {
		addVary(h)
	}
}

// addVary adds Accept-Encoding to Vary unless it is there (or Vary is *).
func addVary(h http.Header) {
	for _, v := range h["Vary"] {
		for v != "" {
			var f string
			f, v, _ = strings.Cut(v, ",")
			f = strings.TrimSpace(f)
			if f == "*" || strings.EqualFold(f, "Accept-Encoding") {
				return
			}
		}
	}
	h.Add("Vary", "Accept-Encoding")
}

// mediaPattern is one "type/subtype", "type/*" or "type/*+suffix".
type mediaPattern struct{ typ, sub, suffix string }

func parsePatterns(ps []string) ([]mediaPattern, error) {
	out := make([]mediaPattern, 0, len(ps))
	for _, p := range ps {
		typ, sub, ok := strings.Cut(strings.ToLower(strings.TrimSpace(p)), "/")
		if !ok || typ == "" || sub == "" || strings.ContainsAny(typ+sub, " ;,") {
			return nil, fmt.Errorf("compress: content type pattern %q is not type/subtype, type/* or type/*+suffix", p)
		}
		m := mediaPattern{typ: typ, sub: sub}
		if strings.HasPrefix(sub, "*+") {
			m.sub, m.suffix = "", sub[1:]
		} else if sub != "*" && strings.Contains(sub, "*") {
			return nil, fmt.Errorf("compress: content type pattern %q: '*' only as the whole subtype or before +suffix", p)
		}
		out = append(out, m)
	}
	return out, nil
}

func (m mediaPattern) match(typ, sub string) bool {
	if m.typ != typ && m.typ != "*" {
		return false
	}
	switch {
	case m.suffix != "":
		return strings.HasSuffix(sub, m.suffix)
	case m.sub == "*":
		return true
	}
	return m.sub == sub
}

// compressible reports whether a response of content type ct is compressed.
func (c *config) compressible(ct string) bool {
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	typ, sub, _ := strings.Cut(mt, "/")
	for _, m := range c.exclude {
		if m.match(typ, sub) {
			return false
		}
	}
	for _, m := range c.include {
		if m.match(typ, sub) {
			return true
		}
	}
	return false
}
