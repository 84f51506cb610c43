package cache

import (
	"encoding/binary"
	"errors"
	"net/http"
	"strings"
	"time"
)

// ErrCorrupt is returned by [Entry.UnmarshalBinary] for data that is not a
// valid encoded entry.
var ErrCorrupt = errors.New("cache: corrupt entry")

// Entry kinds: a stored response, a Vary marker that names the request
// headers selecting the stored variants, or a pass marker remembering that
// a URL's response could not be stored.
const (
	kindResponse byte = iota + 1
	kindVary
	kindPass
)

const (
	flagNoCache byte = 1 << iota
	flagMustRevalidate
	flagTargeted // the stored header has a field of Options.TargetedFields
)

// entryOverhead approximates the bookkeeping bytes of an entry held in
// memory (structs, map and list nodes), counted against MaxBytes.
const entryOverhead = 256

// Entry is one thing a [Store] holds: a stored response with the metadata
// the cache needs to compute its age and freshness, or a small marker. An
// Entry is immutable once stored; stores may share it between requests.
// Stores that keep entries outside the process encode them with
// [Entry.MarshalBinary] and decode them with [Entry.UnmarshalBinary].
type Entry struct {
	kind   byte
	flags  byte
	status int
	header http.Header
	body   []byte
	vary   []string // kindVary: the canonical Vary names, sorted
	gen    uint64   // kindVary: generation, part of the variants' keys

	responseTime time.Time     // when the response arrived (cache clock)
	initialAge   time.Duration // corrected_initial_age, RFC 9111 §4.2.3
	lifetime     time.Duration // freshness lifetime
	swr, sie     time.Duration // stale-while-revalidate / -if-error windows; 0 none
}

// Size returns the number of bytes the entry is counted as in a store:
// body, header fields and a fixed overhead.
func (e *Entry) Size() int64 {
	n := int64(entryOverhead + len(e.body))
	for k, vv := range e.header {
		n += int64(len(k))
		for _, v := range vv {
			n += int64(len(v)) + 16
		}
	}
	for _, v := range e.vary {
		n += int64(len(v)) + 16
	}
	return n
}

// age returns the entry's current age at now (RFC 9111 §4.2.3).
func (e *Entry) age(now time.Time) time.Duration {
	a := e.initialAge + now.Sub(e.responseTime)
	if a < 0 {
		return 0
	}
	return a
}

func (e *Entry) noCache() bool { return e.flags&flagNoCache != 0 }

// mayServeStale reports whether the entry may be served stale at all.
func (e *Entry) mayServeStale() bool { return e.flags&(flagNoCache|flagMustRevalidate) == 0 }

// staleIfError reports whether the entry may be served stale at now
// because the backend failed (stale-if-error, RFC 5861 §4).
func (e *Entry) staleIfError(now time.Time) bool {
	return e.mayServeStale() && e.sie > 0 && e.age(now)-e.lifetime <= e.sie
}

func (e *Entry) etag() string {
	if v := e.header["Etag"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (e *Entry) lastModified() string {
	if v := e.header["Last-Modified"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (e *Entry) hasValidator() bool { return e.etag() != "" || e.lastModified() != "" }

// keep returns how long a store should keep the entry from now: while it is
// fresh, then while it may still be served stale or revalidated.
func (e *Entry) keep(now time.Time, keepStale time.Duration) time.Duration {
	fresh := e.lifetime - e.age(now)
	if fresh < 0 {
		fresh = 0
	}
	extra := max(e.swr, e.sie)
	if e.hasValidator() {
		extra = max(extra, keepStale)
	}
	return fresh + extra
}

const encVersion = 1

// MarshalBinary encodes the entry for stores that keep it outside the
// process.
func (e *Entry) MarshalBinary() ([]byte, error) {
	n := 64 + len(e.body)
	for k, vv := range e.header {
		n += len(k) + 4
		for _, v := range vv {
			n += len(v) + 4
		}
	}
	b := make([]byte, 0, n)
	b = append(b, encVersion, e.kind, e.flags)
	b = binary.AppendUvarint(b, uint64(e.status))
	b = binary.AppendUvarint(b, e.gen)
	b = binary.AppendVarint(b, e.responseTime.UnixNano())
	b = binary.AppendVarint(b, int64(e.initialAge))
	b = binary.AppendVarint(b, int64(e.lifetime))
	b = binary.AppendVarint(b, int64(e.swr))
	b = binary.AppendVarint(b, int64(e.sie))
	b = binary.AppendUvarint(b, uint64(len(e.vary)))
	for _, v := range e.vary {
		b = appendString(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(e.header)))
	for k, vv := range e.header {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vv)))
		for _, v := range vv {
			b = appendString(b, v)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(e.body)))
	b = append(b, e.body...)
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoder reads an encoded entry; the first error sticks.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items each taking at least one byte, so a corrupt
// count cannot make the decoder allocate more than the input's size.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.bad = true
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	n := d.count()
	if d.bad {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

// UnmarshalBinary decodes data written by [Entry.MarshalBinary]. It fails
// with [ErrCorrupt] on any malformed input. The entry's body aliases data.
func (e *Entry) UnmarshalBinary(data []byte) error {
	if len(data) < 3 || data[0] != encVersion || data[1] < kindResponse || data[1] > kindPass {
		return ErrCorrupt
	}
	d := decoder{b: data[3:]}
	x := Entry{kind: data[1], flags: data[2]}
	status := d.uvarint()
	if status > 999 {
		return ErrCorrupt
	}
	x.status = int(status)
	x.gen = d.uvarint()
	x.responseTime = time.Unix(0, d.varint())
	x.initialAge = time.Duration(d.varint())
	x.lifetime = time.Duration(d.varint())
	x.swr = time.Duration(d.varint())
	x.sie = time.Duration(d.varint())
	if nv := d.count(); nv > 0 {
		x.vary = make([]string, nv)
		for i := range x.vary {
			x.vary[i] = d.string()
		}
	}
	nh := d.count()
	x.header = make(http.Header, nh)
	for range nh {
		k := d.string()
		nv := d.count()
		if d.bad {
			return ErrCorrupt
		}
		vv := make([]string, nv)
		for j := range vv {
			vv[j] = d.string()
		}
		x.header[k] = vv
	}
	x.body = d.bytes()
	if d.bad || len(d.b) != 0 || x.initialAge < 0 || x.swr < 0 || x.sie < 0 {
		return ErrCorrupt
	}
	*e = x
	return nil
}

// storedHeader copies h for storage: without the fields that belong to one
// response only (Age is recomputed, Set-Cookie is never stored), with
// Content-Length set to the stored body's length. Value slices are clipped
// so that appending to a served copy never writes into the entry.
func storedHeader(h http.Header, bodyLen int) http.Header {
	out := make(http.Header, len(h)+1)
	for k, vv := range h {
		switch k {
		case "Age", "Set-Cookie", "Content-Length", "Trailer", "Connection", "Keep-Alive",
			"Proxy-Connection", "Transfer-Encoding", "Upgrade":
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		vv = append([]string(nil), vv...)
		out[k] = vv[:len(vv):len(vv)]
	}
	out["Content-Length"] = []string{itoa(int64(bodyLen))}
	return out
}
