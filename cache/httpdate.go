package cache

import (
	"strings"
	"time"
)

// parseHTTPDate parses an HTTP-date exactly as RFC 9110 §5.6.7 defines it:
// the IMF-fixdate form ("Sun, 06 Nov 1994 08:49:37 GMT") and the two
// obsolete forms a recipient must accept, rfc850-date ("Sunday,
// 06-Nov-94 08:49:37 GMT") and asctime-date ("Sun Nov  6 08:49:37 1994").
// Names are case-sensitive; one SP separates the parts (asctime's day
// pads with one SP); hours, minutes and seconds have two digits and are in
// range; the day exists in its month. A two-digit rfc850 year that would
// be more than 50 years after now is in the previous century. Unlike
// http.ParseTime it accepts nothing else: no runs of spaces, no one-digit
// hours, no other zones.
func parseHTTPDate(s string, now time.Time) (time.Time, bool) {
	switch {
	case len(s) == 29 && s[3] == ',':
		return parseIMFFixdate(s)
	case len(s) == 24 && s[3] == ' ':
		return parseAsctime(s)
	case len(s) >= 30 && len(s) <= 33:
		return parseRFC850(s, now)
	}
	return time.Time{}, false
}

var (
	dayNames  = [7]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}
	longDays  = [7]string{"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
	monthAbbr = [12]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
)

func isDayName(s string) bool {
	for _, d := range dayNames {
		if s == d {
			return true
		}
	}
	return false
}

func month(s string) (time.Month, bool) {
	for i, m := range monthAbbr {
		if s == m {
			return time.Month(i + 1), true
		}
	}
	return 0, false
}

// digits parses s, all ASCII digits, or reports !ok.
func digits(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// timeOfDay parses "HH:MM:SS" (second 60 is a leap second).
func timeOfDay(s string) (h, m, sec int, ok bool) {
	if len(s) != 8 || s[2] != ':' || s[5] != ':' {
		return 0, 0, 0, false
	}
	h, ok1 := digits(s[0:2])
	m, ok2 := digits(s[3:5])
	sec, ok3 := digits(s[6:8])
	return h, m, sec, ok1 && ok2 && ok3 && h <= 23 && m <= 59 && sec <= 60
}

// date builds the time, refusing days the month does not have.
func date(year int, mon time.Month, day, h, m, sec int) (time.Time, bool) {
	if day < 1 || day > 31 {
		return time.Time{}, false
	}
	t := time.Date(year, mon, day, h, m, sec, 0, time.UTC)
	if sec == 60 {
		// A leap second: normalized into the next minute, but the day
		// must still be checked.
		if time.Date(year, mon, day, 0, 0, 0, 0, time.UTC).Day() != day {
			return time.Time{}, false
		}
		return t, true
	}
	if t.Day() != day {
		return time.Time{}, false
	}
	return t, true
}

// parseIMFFixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
func parseIMFFixdate(s string) (time.Time, bool) {
	if !isDayName(s[0:3]) || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
		s[25] != ' ' || s[26:] != "GMT" {
		return time.Time{}, false
	}
	day, ok1 := digits(s[5:7])
	mon, ok2 := month(s[8:11])
	year, ok3 := digits(s[12:16])
	h, m, sec, ok4 := timeOfDay(s[17:25])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return time.Time{}, false
	}
	return date(year, mon, day, h, m, sec)
}

// parseAsctime: "Sun Nov  6 08:49:37 1994" (day is 2DIGIT or SP DIGIT).
func parseAsctime(s string) (time.Time, bool) {
	if !isDayName(s[0:3]) || s[7] != ' ' || s[10] != ' ' || s[19] != ' ' {
		return time.Time{}, false
	}
	mon, ok1 := month(s[4:7])
	var day int
	ok2 := false
	if s[8] == ' ' {
		day, ok2 = digits(s[9:10])
	} else {
		day, ok2 = digits(s[8:10])
	}
	h, m, sec, ok3 := timeOfDay(s[11:19])
	year, ok4 := digits(s[20:24])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return time.Time{}, false
	}
	return date(year, mon, day, h, m, sec)
}

// parseRFC850: "Sunday, 06-Nov-94 08:49:37 GMT".
func parseRFC850(s string, now time.Time) (time.Time, bool) {
	name, rest, ok := strings.Cut(s, ", ")
	if !ok || len(rest) != 22 {
		return time.Time{}, false
	}
	known := false
	for _, d := range longDays {
		if name == d {
			known = true
		}
	}
	if !known || rest[2] != '-' || rest[6] != '-' || rest[9] != ' ' || rest[18] != ' ' || rest[19:] != "GMT" {
		return time.Time{}, false
	}
	day, ok1 := digits(rest[0:2])
	mon, ok2 := month(rest[3:6])
	yy, ok3 := digits(rest[7:9])
	h, m, sec, ok4 := timeOfDay(rest[10:18])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return time.Time{}, false
	}
	// RFC 9110 §5.6.7: a year more than 50 years in the future is the
	// most recent past year with the same last two digits.
	century := now.UTC().Year() / 100 * 100
	year := century + yy
	if year > now.UTC().Year()+50 {
		year -= 100
	}
	return date(year, mon, day, h, m, sec)
}

// headerDate returns the single HTTP-date of a singleton field's lines:
// none, several lines, or an invalid date are !ok.
func headerDate(vv []string, now time.Time) (time.Time, bool) {
	if len(vv) != 1 {
		return time.Time{}, false
	}
	return parseHTTPDate(vv[0], now)
}

// ageValue returns the Age field's value: the first member of the first
// line (RFC 9111 §5.1: a list-based Age uses the first member), or 0 when
// it is absent or invalid (an invalid Age is ignored).
func ageValue(vv []string) time.Duration {
	if len(vv) == 0 {
		return 0
	}
	v, _, _ := strings.Cut(vv[0], ",")
	d, ok := parseDelta(strings.Trim(v, " \t"))
	if !ok {
		return 0
	}
	return d
}
