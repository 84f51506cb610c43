package admin

import (
	"fmt"
	"html/template"
	"strings"
)

// Sparkline sizes, in CSS pixels.
const (
	sparkW = 180
	sparkH = 28
)

// sparkline draws a series as an inline SVG: requests as a line over a
// filled area, errors as red bars, scaled to the highest point.
func sparkline(s Series) template.HTML {
	n := len(s.Requests)
	if n == 0 {
		return ""
	}
	top := 1
	for i := range n {
		top = max(top, s.Requests[i], s.Errors[i])
	}
	dx := float64(sparkW) / float64(max(n-1, 1))
	y := func(v int) float64 { return float64(sparkH-2) - float64(v)*float64(sparkH-4)/float64(top) }
	var line, bars strings.Builder
	for i, v := range s.Requests {
		sep := " L"
		if i == 0 {
			sep = "M"
		}
		fmt.Fprintf(&line, "%s%.1f %.1f", sep, float64(i)*dx, y(v))
	}
	bw := max(dx-0.5, 1)
	for i, v := range s.Errors {
		if v > 0 {
			fmt.Fprintf(&bars, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`,
				float64(i)*dx-bw/2, y(v), bw, float64(sparkH-2)-y(v))
		}
	}
	area := line.String() + fmt.Sprintf(" L%d %d L0 %d Z", sparkW, sparkH-2, sparkH-2)
	total, errs := 0, 0
	for i := range n {
		total += s.Requests[i]
		errs += s.Errors[i]
	}
	return template.HTML(fmt.Sprintf(`<svg class="spark" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%d requests, %d errors over the last %d seconds"><path class="area" d="%s"/><path class="line" d="%s"/><g class="err">%s</g></svg>`,
		sparkW, sparkH, sparkW, sparkH, total, errs, n*s.StepSeconds, area, line.String(), bars.String()))
}

func pct(f float64) string {
	if f == 0 {
		return "0 %"
	}
	if f < 0.001 {
		return "<0.1 %"
	}
	return fmt.Sprintf("%.1f %%", f*100)
}

func humanBytes(n int64) string {
	switch {
	case n < 0:
		return "—"
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}
