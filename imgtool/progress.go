package imgtool

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/imgtool/imgtool/imgset"
)

// newProgress returns an imgset.Progress that draws a bar on w when w is a
// terminal and quiet is off, and nil otherwise (no progress reporting at all, so
// the operations keep their fast paths, and a redirected stderr gets nothing).
// done clears the bar; call it when the operation ends, whatever its outcome.
func newProgress(w io.Writer, quiet bool, what string) (progress imgset.Progress, done func()) {
	f, ok := w.(*os.File)
	if quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, func() {}
	}
	cols, _, err := term.GetSize(int(f.Fd()))
	width := barWidth(cols, err == nil)
	start := time.Now()
	b := &bar{w: w, width: width}
	var shown time.Time
	progress = func(n, total int64) {
		now := time.Now()
		if b.drawn && now.Sub(shown) < progressEvery && n < total {
			return
		}
		shown = now
		b.draw(n, total, progressText(what, n, total, now.Sub(start)))
	}
	return progress, b.clear
}

// bar is one line redrawn in place on a terminal: " 45% [=====>    ] TEXT".
// It draws no rate or time of its own: the first samples, over a few milliseconds,
// would read as TiB/s; progressText says the rate once it means something.
type bar struct {
	w     io.Writer
	width int // of the part between the brackets
	drawn bool
}

// eraseLine returns the cursor to the line's start and erases the line.
const eraseLine = "\r\x1b[K"

// draw redraws the line for n of total done.
func (b *bar) draw(n, total int64, text string) {
	frac := 1.0
	if total > 0 {
		frac = min(max(float64(n)/float64(total), 0), 1)
	}
	fill := int(frac * float64(b.width))
	line := strings.Repeat("=", fill)
	if fill < b.width {
		line += ">" + strings.Repeat(" ", b.width-fill-1)
	}
	fmt.Fprintf(b.w, "%s%3d%% [%s] %s", eraseLine, int(frac*100), line, text)
	b.drawn = true
}

// clear erases the line, if anything was drawn: the command's own last words are
// then alone on the terminal.
func (b *bar) clear() {
	if b.drawn {
		io.WriteString(b.w, eraseLine)
		b.drawn = false
	}
}

// progressEvery is how often a progress bar is redrawn.
const progressEvery = 100 * time.Millisecond

// Below both minimums a rate is noise (a first chunk read from the page cache in a
// millisecond) and is not shown.
const (
	minRateTime  = 500 * time.Millisecond
	minRateBytes = 1 << 20
)

// progressText describes progress for the bar: "encrypting 12.0 MiB of 256.0 MiB",
// and ", 1.1 GiB/s" once elapsed and n are large enough for a rate to mean
// something (rateOf).
func progressText(what string, n, total int64, elapsed time.Duration) string {
	s := fmt.Sprintf("%s %s of %s", what, humanBytes(n), humanBytes(total))
	if r, ok := rateOf(n, elapsed); ok {
		s += ", " + humanBytes(r) + "/s"
	}
	return s
}

// rateOf is n bytes over elapsed, per second, if both are past the minimums.
func rateOf(n int64, elapsed time.Duration) (int64, bool) {
	if elapsed < minRateTime || n < minRateBytes {
		return 0, false
	}
	return int64(float64(n) / elapsed.Seconds()), true
}

// barWidth is the width of the bar itself in a terminal of cols columns: what the
// percentage and the text (up to some 50 columns) leave, within 10..50; 30 when
// the width is unknown.
func barWidth(cols int, known bool) int {
	if !known || cols <= 0 {
		return 30
	}
	return min(max(cols-64, 10), 50)
}
