package cache

import (
	"bytes"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/pylon-gateway/pylon"
)

// maxRanges bounds the ranges of one Range request answered from the
// cache; a request with more is answered with the whole response (RFC
// 9110 §14.2 lets a server ignore egregious range requests).
const maxRanges = 16

// byteRange is a satisfiable range: [start, end), within the body.
type byteRange struct{ start, end int64 }

// parseRange parses a Range field value for a representation of size n
// (RFC 9110 §14.1.2, §14.2). ok is false when the field is to be ignored:
// not one line, a unit other than bytes, invalid syntax, too many ranges,
// or ranges adding up to more than the representation. The result is empty
// (and ok) when no range is satisfiable.
func parseRange(vv []string, n int64) (ranges []byteRange, ok bool) {
	if len(vv) != 1 {
		return nil, false
	}
	unit, set, found := strings.Cut(vv[0], "=")
	if !found || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return nil, false
	}
	specs, total := 0, int64(0)
	for spec := range strings.SplitSeq(set, ",") {
		spec = strings.Trim(spec, " \t")
		if spec == "" {
			continue // empty list elements are allowed (RFC 9110 §5.6.1)
		}
		if specs++; specs > maxRanges {
			return nil, false
		}
		first, last, found := strings.Cut(spec, "-")
		if !found {
			return nil, false
		}
		var r byteRange
		if first == "" {
			// suffix-range: the last suffix-length bytes.
			sl, ok := rangeInt(last)
			if !ok {
				return nil, false
			}
			if sl == 0 || n == 0 {
				continue // unsatisfiable
			}
			r = byteRange{max(0, n-sl), n}
		} else {
			fp, ok := rangeInt(first)
			if !ok {
				return nil, false
			}
			end := int64(-1)
			if last != "" {
				lp, ok := rangeInt(last)
				if !ok || lp < fp {
					return nil, false // invalid int-range
				}
				end = lp
			}
			if fp >= n {
				continue // unsatisfiable
			}
			if end < 0 || end >= n {
				end = n - 1
			}
			r = byteRange{fp, end + 1}
		}
		total += r.end - r.start
		ranges = append(ranges, r)
	}
	if specs == 0 || total > n {
		return nil, false
	}
	return ranges, true
}

// rangeInt parses 1*DIGIT, refusing values that overflow.
func rangeInt(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

// ifRangeHolds evaluates If-Range against the stored response (RFC 9110
// §13.1.5): an entity-tag matches by strong comparison; an HTTP-date
// matches when it equals Last-Modified and that Last-Modified is strong,
// at least one second before the stored Date (§8.8.2.2). A missing
// If-Range holds; anything else does not, and the whole response is sent.
func ifRangeHolds(r *http.Request, e *Entry, now time.Time) bool {
	vv := r.Header["If-Range"]
	if len(vv) == 0 {
		return true
	}
	if len(vv) != 1 {
		return false
	}
	v := strings.Trim(vv[0], " \t")
	if strings.HasPrefix(v, `"`) || strings.HasPrefix(v, "W/") {
		et := e.etag()
		return !strings.HasPrefix(v, "W/") && !strings.HasPrefix(et, "W/") && len(v) >= 2 && v[len(v)-1] == '"' && v == et
	}
	since, ok := parseHTTPDate(v, now)
	if !ok {
		return false
	}
	lm, ok1 := parseHTTPDate(e.lastModified(), now)
	date, ok2 := headerDate(e.header["Date"], now)
	return ok1 && ok2 && lm.Equal(since) && date.Sub(lm) >= time.Second
}

// serveRange answers a GET with Range from a stored complete 200 (RFC 9110
// §14): 206 with one part, 206 multipart/byteranges with several, 416 when
// no range is satisfiable. h is the response header, already holding the
// stored fields. It returns false when the Range field is to be ignored and
// the whole response sent.
func serveRange(w http.ResponseWriter, r *http.Request, e *Entry, h http.Header, now time.Time) bool {
	n := int64(len(e.body))
	if n == 0 || !ifRangeHolds(r, e, now) {
		return false
	}
	ranges, ok := parseRange(r.Header["Range"], n)
	if !ok {
		return false
	}
	size := strconv.FormatInt(n, 10)
	switch len(ranges) {
	case 0:
		// RFC 9110 §15.5.17: 416, with the representation's length.
		h["Content-Range"] = []string{"bytes */" + size}
		delete(h, "Content-Type")
		pylon.Error(w, r, http.StatusRequestedRangeNotSatisfiable, "No requested range is satisfiable.")
		return true
	case 1:
		// RFC 9110 §14.4, §15.3.7.1: a single part.
		rg := ranges[0]
		h["Content-Range"] = []string{contentRange(rg, size)}
		h["Content-Length"] = []string{strconv.FormatInt(rg.end-rg.start, 10)}
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(e.body[rg.start:rg.end])
		return true
	}
	// RFC 9110 §15.3.7.2: multipart/byteranges, each part with the
	// representation's Content-Type and its Content-Range.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.SetBoundary("pylon-" + strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36))
	ct := first(e.header["Content-Type"])
	for _, rg := range ranges {
		ph := textproto.MIMEHeader{}
		if ct != "" {
			ph["Content-Type"] = []string{ct}
		}
		ph["Content-Range"] = []string{contentRange(rg, size)}
		pw, _ := mw.CreatePart(ph)
		_, _ = pw.Write(e.body[rg.start:rg.end])
	}
	_ = mw.Close()
	h["Content-Type"] = []string{"multipart/byteranges; boundary=" + mw.Boundary()}
	h["Content-Length"] = []string{strconv.Itoa(buf.Len())}
	delete(h, "Content-Range")
	w.WriteHeader(http.StatusPartialContent)
	_, _ = w.Write(buf.Bytes())
	return true
}

func contentRange(rg byteRange, size string) string {
	return "bytes " + strconv.FormatInt(rg.start, 10) + "-" + strconv.FormatInt(rg.end-1, 10) + "/" + size
}
