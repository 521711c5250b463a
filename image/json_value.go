package image

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// crit builds a Python dict per entry and prints it with json.dump. imgtool builds the
// same value as an ordered tree (keys in insertion order, as Python 3 dicts keep them)
// and prints it with jsonWriter, which reproduces json.dump's output byte for byte:
// separators ", " and ": " (plain) or "," and ": " with newlines and 4-space indents
// (pretty), "[]" and "{}" for empty containers, and ensure_ascii escaping.

// jsonValue is one node of the tree: jsonObject, jsonArray, jsonString, jsonNumber,
// jsonBool, jsonNull, jsonPayload (bytes streamed from a reader as base64), or
// jsonLazyArray (elements produced while the array is written).
type jsonValue any

// jsonObject is a JSON object with its keys in order. Lookups take the last of
// duplicate keys, as Python's json.loads does.
type jsonObject []jsonMember

type jsonMember struct {
	Key   string
	Value jsonValue
}

type (
	jsonArray  []jsonValue
	jsonString string // may hold bytes that are not UTF-8; see writeString
	jsonNumber string // the number's literal text
	jsonBool   bool
	jsonNull   struct{}
)

// jsonPayload is a payload printed as crit prints one: base64 with a newline after
// every 76 characters and after the last line (Python's base64.encodebytes). The bytes
// are streamed from R when the value is written, so a payload is never held whole.
type jsonPayload struct {
	R io.Reader
	N int64 // bytes to read; toEOF: read R to its end
}

// jsonLazyArray is an array whose elements are made one by one as it is written, so
// that a long image is printed entry by entry as it is read. It calls emit for each
// element in order.
type jsonLazyArray func(emit func(jsonValue) error) error

// get returns the value of key (the last one, when repeated) and whether it is there.
func (o jsonObject) get(key string) (jsonValue, bool) {
	for i := len(o) - 1; i >= 0; i-- {
		if o[i].Key == key {
			return o[i].Value, true
		}
	}
	return nil, false
}

// without returns the object without key.
func (o jsonObject) without(key string) jsonObject {
	out := make(jsonObject, 0, len(o))
	for _, m := range o {
		if m.Key != key {
			out = append(out, m)
		}
	}
	return out
}

// jsonWriter prints a tree exactly as Python's json.dump does, with indent=None
// (plain) or indent=4 (pretty).
type jsonWriter struct {
	w      *bufio.Writer
	pretty bool
}

func newJSONWriter(w io.Writer, pretty bool) *jsonWriter {
	if bw, ok := w.(*bufio.Writer); ok {
		return &jsonWriter{w: bw, pretty: pretty}
	}
	return &jsonWriter{w: bufio.NewWriterSize(w, 64<<10), pretty: pretty}
}

func (jw *jsonWriter) flush() error { return jw.w.Flush() }

// newline starts a new line indented for level, in pretty mode.
func (jw *jsonWriter) newline(level int) {
	if !jw.pretty {
		return
	}
	jw.w.WriteByte('\n')
	for i := 0; i < level; i++ {
		jw.w.WriteString("    ")
	}
}

// separator writes what goes between two items of a container.
func (jw *jsonWriter) separator(level int) {
	if jw.pretty {
		jw.w.WriteByte(',')
		jw.newline(level)
		return
	}
	jw.w.WriteString(", ")
}

// value writes v, a value nested level deep.
func (jw *jsonWriter) value(v jsonValue, level int) error {
	switch v := v.(type) {
	case jsonObject:
		if len(v) == 0 {
			jw.w.WriteString("{}")
			return nil
		}
		jw.w.WriteByte('{')
		jw.newline(level + 1)
		for i, m := range v {
			if i > 0 {
				jw.separator(level + 1)
			}
			writeString(jw.w, m.Key)
			jw.w.WriteString(": ")
			if err := jw.value(m.Value, level+1); err != nil {
				return err
			}
		}
		jw.newline(level)
		jw.w.WriteByte('}')
	case jsonArray:
		if len(v) == 0 {
			jw.w.WriteString("[]")
			return nil
		}
		jw.w.WriteByte('[')
		jw.newline(level + 1)
		for i, e := range v {
			if i > 0 {
				jw.separator(level + 1)
			}
			if err := jw.value(e, level+1); err != nil {
				return err
			}
		}
		jw.newline(level)
		jw.w.WriteByte(']')
	case jsonLazyArray:
		return jw.lazyArray(v, level)
	case jsonString:
		writeString(jw.w, string(v))
	case jsonNumber:
		jw.w.WriteString(string(v))
	case jsonBool:
		if v {
			jw.w.WriteString("true")
		} else {
			jw.w.WriteString("false")
		}
	case jsonNull:
		jw.w.WriteString("null")
	case jsonPayload:
		return writePayload(jw.w, v)
	default:
		return fmt.Errorf("image: cannot write %T as JSON", v)
	}
	return nil
}

func (jw *jsonWriter) lazyArray(v jsonLazyArray, level int) error {
	n := 0
	err := v(func(e jsonValue) error {
		if n == 0 {
			jw.w.WriteByte('[')
			jw.newline(level + 1)
		} else {
			jw.separator(level + 1)
		}
		n++
		return jw.value(e, level+1)
	})
	if err != nil {
		return err
	}
	if n == 0 {
		jw.w.WriteString("[]")
		return nil
	}
	jw.newline(level)
	jw.w.WriteByte(']')
	return nil
}

// writeString writes s as Python's json.dumps(ensure_ascii=True) does: \" \\ \b \f \n
// \r \t, \u00XX for other control characters and DEL, \uXXXX (surrogate pairs beyond
// the BMP) for everything outside ASCII. A byte that is not part of valid UTF-8 is
// written as the lone surrogate \udcXX, the way Python's surrogateescape carries it;
// parseString turns it back into the byte, so any byte string survives a round trip.
func writeString(w *bufio.Writer, s string) {
	w.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			if c == '"' || c == '\\' {
				w.WriteByte('\\')
			}
			w.WriteByte(c)
			i++
			continue
		}
		switch c {
		case '\b':
			w.WriteString(`\b`)
		case '\f':
			w.WriteString(`\f`)
		case '\n':
			w.WriteString(`\n`)
		case '\r':
			w.WriteString(`\r`)
		case '\t':
			w.WriteString(`\t`)
		}
		if c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t' {
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			writeU16(w, 0xdc00|uint16(c))
		case r >= 0x10000:
			hi, lo := utf16.EncodeRune(r)
			writeU16(w, uint16(hi))
			writeU16(w, uint16(lo))
		default:
			writeU16(w, uint16(r))
		}
		i += size
	}
	w.WriteByte('"')
}

func writeU16(w *bufio.Writer, u uint16) {
	const hex = "0123456789abcdef"
	w.Write([]byte{'\\', 'u', hex[u>>12], hex[u>>8&15], hex[u>>4&15], hex[u&15]})
}

// base64Line is how many bytes base64.encodebytes puts on one 76-character line.
const base64Line = 57

// writePayload streams p as a JSON string of base64 lines.
func writePayload(w *bufio.Writer, p jsonPayload) error {
	var in [base64Line]byte
	var out [76]byte
	w.WriteByte('"')
	left := p.N
	for left != 0 {
		want := len(in)
		if left > 0 && left < int64(want) {
			want = int(left)
		}
		n, err := io.ReadFull(p.R, in[:want])
		if n > 0 {
			base64.StdEncoding.Encode(out[:], in[:n])
			w.Write(out[:base64.StdEncoding.EncodedLen(n)])
			w.WriteString(`\n`)
			if left > 0 {
				left -= int64(n)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if left > 0 {
				return fmt.Errorf("payload truncated, %d bytes missing: %w", left, io.ErrUnexpectedEOF)
			}
			break
		}
		if err != nil {
			return err
		}
	}
	w.WriteByte('"')
	return nil
}

// encodeBytes returns b as base64.encodebytes does.
func encodeBytes(b []byte) string {
	out := make([]byte, 0, base64.StdEncoding.EncodedLen(len(b))+len(b)/base64Line+1)
	for len(b) > 0 {
		n := min(len(b), base64Line)
		out = base64.StdEncoding.AppendEncode(out, b[:n])
		out = append(out, '\n')
		b = b[n:]
	}
	return string(out)
}

// decodeBytes decodes base64 as Python's base64.decodebytes does: characters outside
// the alphabet (newlines, spaces) are skipped, and a complete padding ends the data.
func decodeBytes(s string) ([]byte, error) {
	out := make([]byte, 0, len(s)*3/4)
	var quad [4]byte
	n, pads := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '=' {
			if n >= 2 {
				pads++
				if n+pads >= 4 {
					return appendQuad(out, quad, n), nil
				}
			}
			continue
		}
		v := base64Value(c)
		if v < 0 {
			continue
		}
		pads = 0
		quad[n] = byte(v)
		n++
		if n == 4 {
			out = appendQuad(out, quad, n)
			n = 0
		}
	}
	switch n {
	case 0:
		return out, nil
	case 1:
		return nil, errors.New("invalid base64: one character more than a multiple of 4")
	}
	return nil, errors.New("invalid base64: incorrect padding")
}

// appendQuad appends the n-1 bytes that n base64 digits (n = 2, 3 or 4) stand for.
func appendQuad(out []byte, q [4]byte, n int) []byte {
	b := [3]byte{q[0]<<2 | q[1]>>4, q[1]<<4 | q[2]>>2, q[2]<<6 | q[3]}
	return append(out, b[:n-1]...)
}

func base64Value(c byte) int {
	switch {
	case c >= 'A' && c <= 'Z':
		return int(c - 'A')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 26
	case c >= '0' && c <= '9':
		return int(c-'0') + 52
	case c == '+':
		return 62
	case c == '/':
		return 63
	}
	return -1
}

// maxJSONDepth bounds the nesting parseJSON accepts. CRIU's messages nest a few levels.
const maxJSONDepth = 100

// parseJSON parses one JSON value into a tree: numbers keep their literal text, object
// keys their order, and strings their lone \udcXX escapes as raw bytes.
func parseJSON(data []byte) (jsonValue, error) {
	p := &jsonParser{s: data}
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.s) {
		return nil, p.errorf("unexpected data after the value")
	}
	return v, nil
}

type jsonParser struct {
	s []byte
	i int
}

func (p *jsonParser) errorf(format string, args ...any) error {
	return fmt.Errorf("JSON offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *jsonParser) space() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value(depth int) (jsonValue, error) {
	if depth > maxJSONDepth {
		return nil, p.errorf("nesting deeper than %d", maxJSONDepth)
	}
	p.space()
	if p.i >= len(p.s) {
		return nil, p.errorf("unexpected end of JSON")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.string()
		return jsonString(s), err
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		for _, lit := range []struct {
			text string
			v    jsonValue
		}{{"true", jsonBool(true)}, {"false", jsonBool(false)}, {"null", jsonNull{}}} {
			if len(p.s)-p.i >= len(lit.text) && string(p.s[p.i:p.i+len(lit.text)]) == lit.text {
				p.i += len(lit.text)
				return lit.v, nil
			}
		}
		return nil, p.errorf("unexpected character %q", c)
	}
}

func (p *jsonParser) object(depth int) (jsonValue, error) {
	p.i++ // {
	obj := jsonObject{}
	p.space()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return obj, nil
	}
	for {
		p.space()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return nil, p.errorf("expected an object key")
		}
		key, err := p.string()
		if err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return nil, p.errorf("expected ':'")
		}
		p.i++
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		obj = append(obj, jsonMember{Key: key, Value: v})
		p.space()
		if p.i >= len(p.s) {
			return nil, p.errorf("unexpected end of JSON in an object")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return obj, nil
		default:
			return nil, p.errorf("expected ',' or '}'")
		}
	}
}

func (p *jsonParser) array(depth int) (jsonValue, error) {
	p.i++ // [
	arr := jsonArray{}
	p.space()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return arr, nil
	}
	for {
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		p.space()
		if p.i >= len(p.s) {
			return nil, p.errorf("unexpected end of JSON in an array")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return arr, nil
		default:
			return nil, p.errorf("expected ',' or ']'")
		}
	}
}

func (p *jsonParser) number() (jsonValue, error) {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	intStart := p.i
	if digits() == 0 {
		return nil, p.errorf("bad number")
	}
	if p.s[intStart] == '0' && p.i-intStart > 1 {
		return nil, p.errorf("bad number: leading zero")
	}
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return nil, p.errorf("bad number")
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, p.errorf("bad number")
		}
	}
	return jsonNumber(p.s[start:p.i]), nil
}

// string parses a JSON string. \udc80-\udcff without a high surrogate before them are
// the bytes 0x80-0xff (see writeString); other lone surrogates are an error.
func (p *jsonParser) string() (string, error) {
	p.i++ // "
	var out []byte
	for {
		if p.i >= len(p.s) {
			return "", p.errorf("unterminated string")
		}
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return string(out), nil
		case c < 0x20:
			return "", p.errorf("control character in a string")
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		p.i++
		if p.i >= len(p.s) {
			return "", p.errorf("unterminated string")
		}
		esc := p.s[p.i]
		p.i++
		switch esc {
		case '"', '\\', '/':
			out = append(out, esc)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			var err error
			if out, err = p.unicodeEscape(out); err != nil {
				return "", err
			}
		default:
			return "", p.errorf("bad escape \\%c", esc)
		}
	}
}

// unicodeEscape decodes the XXXX of a \uXXXX escape (and its low surrogate, if any).
func (p *jsonParser) unicodeEscape(out []byte) ([]byte, error) {
	u, ok := p.hex4()
	if !ok {
		return nil, p.errorf("bad \\u escape")
	}
	switch {
	case u >= 0xd800 && u < 0xdc00:
		if p.i+1 < len(p.s) && p.s[p.i] == '\\' && p.s[p.i+1] == 'u' {
			save := p.i
			p.i += 2
			if lo, ok := p.hex4(); ok && lo >= 0xdc00 && lo < 0xe000 {
				return utf8.AppendRune(out, utf16.DecodeRune(rune(u), rune(lo))), nil
			}
			p.i = save
		}
		return nil, p.errorf("lone surrogate \\u%04x", u)
	case u >= 0xdc80 && u <= 0xdcff:
		return append(out, byte(u)), nil
	case u >= 0xdc00 && u < 0xe000:
		return nil, p.errorf("lone surrogate \\u%04x", u)
	}
	return utf8.AppendRune(out, rune(u)), nil
}

func (p *jsonParser) hex4() (uint16, bool) {
	if len(p.s)-p.i < 4 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(p.s[p.i:p.i+4]), 16, 16)
	if err != nil {
		return 0, false
	}
	p.i += 4
	return uint16(v), true
}
