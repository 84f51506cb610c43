package middleware

import (
	"bufio"
	"io"
	"net"
	"net/http"
)

// The sixteen combinations of optional interfaces a wrapped writer may have
// (the httpsnoop idea, one allocation per wrap; TestWrapWriterInterfaces
// checks every one):
// F http.Flusher, H http.Hijacker, R io.ReaderFrom, P http.Pusher.

type rw0 struct{ rw }

type rwF struct{ rw }

func (w *rwF) Flush() { w.flush() }

type rwH struct{ rw }

func (w *rwH) Hijack() (net.Conn, *bufio.ReadWriter, error) { return w.hijack() }

type rwFH struct{ rw }

func (w *rwFH) Flush() { w.flush() }

func (w *rwFH) Hijack() (net.Conn, *bufio.ReadWriter, error) { return w.hijack() }

type rwR struct{ rw }

func (w *rwR) ReadFrom(src io.Reader) (int64, error) { return w.readFrom(src) }

type rwFR struct{ rw }

func (w *rwFR) Flush() { w.flush() }

func (w *rwFR) ReadFrom(src io.Reader) (int64, error) { return w.readFrom(src) }

type rwHR struct{ rw }

func (w *rwHR) Hijack() (net.Conn, *bufio.ReadWriter, error) { return w.hijack() }

func (w *rwHR) ReadFrom(src io.Reader) (int64, error) { return w.readFrom(src) }

type rwFHR struct{ rw }

func (w *rwFHR) Flush() { w.flush() }

func (w *rwFHR) Hijack() (net.Conn, *bufio.ReadWriter, error) { return w.hijack() }

func (w *rwFHR) ReadFrom(src io.Reader) (int64, error) { return w.readFrom(src) }

type rwP struct{ rw }

func (w *rwP) Push(target string, opts *http.PushOptions) error { return w.push(target, opts) }

type rwFP struct{ rw }

func (w *rwFP) Flush() { w.flush() }

func (w *rwFP) Push(target string, opts *http.PushOptions) error { return w.push(target, opts) }

type rwHP struct{ rw }

func (w *rwHP) Hijack() (net.Conn, *bufio.ReadWriter, error) { return w.hijack() }

func (w *rwHP) Push(target string, opts *http.PushOptions) error { return w.push(target, opts) }

type rwFHP struct{ rw }

func (w *rwFHP) Flush() { w.flush() }

func (w *rwFHP) Hijack() (net.Conn, *bufio.ReadWriter, error) { return w.hijack() }

func (w *rwFHP) Push(target string, opts *http.PushOptions) error { return w.push(target, opts) }

type rwRP struct{ rw }

func (w *rwRP) ReadFrom(src io.Reader) (int64, error) { return w.readFrom(src) }

func (w *rwRP) Push(target string, opts *http.PushOptions) error { return w.push(target, opts) }

type rwFRP struct{ rw }

func (w *rwFRP) Flush() { w.flush() }

func (w *rwFRP) ReadFrom(src io.Reader) (int64, error) { return w.readFrom(src) }

func (w *rwFRP) Push(target string, opts *http.PushOptions) error { return w.push(target, opts) }

type rwHRP struct{ rw }

func (w *rwHRP) Hijack() (net.Conn, *bufio.ReadWriter, error) { return w.hijack() }

func (w *rwHRP) ReadFrom(src io.Reader) (int64, error) { return w.readFrom(src) }

func (w *rwHRP) Push(target string, opts *http.PushOptions) error { return w.push(target, opts) }

type rwFHRP struct{ rw }

func (w *rwFHRP) Flush() { w.flush() }

func (w *rwFHRP) Hijack() (net.Conn, *bufio.ReadWriter, error) { return w.hijack() }

func (w *rwFHRP) ReadFrom(src io.Reader) (int64, error) { return w.readFrom(src) }

func (w *rwFHRP) Push(target string, opts *http.PushOptions) error { return w.push(target, opts) }

// wrap returns base, wrapping w, as the combination type that matches w's
// optional interfaces.
func wrap(w http.ResponseWriter, base rw) recorder {
	base.w = w
	m := 0
	if _, ok := w.(http.Flusher); ok {
		m |= 1
	}
	if _, ok := w.(http.Hijacker); ok {
		m |= 2
	}
	if _, ok := w.(io.ReaderFrom); ok {
		m |= 4
	}
	if _, ok := w.(http.Pusher); ok {
		m |= 8
	}
	switch m {
	case 0:
		return &rw0{base}
	case 1:
		return &rwF{base}
	case 2:
		return &rwH{base}
	case 3:
		return &rwFH{base}
	case 4:
		return &rwR{base}
	case 5:
		return &rwFR{base}
	case 6:
		return &rwHR{base}
	case 7:
		return &rwFHR{base}
	case 8:
		return &rwP{base}
	case 9:
		return &rwFP{base}
	case 10:
		return &rwHP{base}
	case 11:
		return &rwFHP{base}
	case 12:
		return &rwRP{base}
	case 13:
		return &rwFRP{base}
	case 14:
		return &rwHRP{base}
	default:
		return &rwFHRP{base}
	}
}
