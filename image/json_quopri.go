package image

import "bytes"

// crit prints unix socket names ((criu).conv = "unix_name") with Python's
// quopri.encodestring, which is binascii.b2a_qp(data, quotetabs=False, istext=True,
// header=False), and reads them back with binascii.a2b_qp. These are re-implementations
// of those two functions (CPython 3.11), byte for byte.

// qpLineMax is binascii's MAXLINESIZE: output lines are broken before reaching it.
const qpLineMax = 76

// quopriEncode returns crit's text for a unix socket name. b2a_qp in text mode turns
// line ends into the style of the first one, so a name mixing "\n" and "\r\n" would not
// read back the same; such rare names are encoded with every CR and LF quoted instead
// (binary mode), which a2b_qp reads back exactly.
func quopriEncode(b []byte) string {
	enc := qpEncode(b, true)
	if !bytes.Equal(quopriDecode(string(enc)), b) {
		enc = qpEncode(b, false)
	}
	return string(enc)
}

// qpEncode is b2a_qp with quotetabs and header off.
func qpEncode(data []byte, istext bool) []byte {
	crlf := false
	if i := bytes.IndexByte(data, '\n'); i > 0 && data[i-1] == '\r' {
		crlf = true
	}
	var out []byte
	softBreak := func() {
		out = append(out, '=')
		if crlf {
			out = append(out, '\r')
		}
		out = append(out, '\n')
	}
	linelen := 0
	n := len(data)
	for in := 0; in < n; {
		c := data[in]
		last := in+1 == n
		if qpMustQuote(data, in, linelen, istext) {
			if linelen+3 >= qpLineMax {
				softBreak()
				linelen = 0
			}
			out = appendQPHex(append(out, '='), c)
			in++
			linelen += 3
			continue
		}
		if istext && (c == '\n' || (!last && c == '\r' && data[in+1] == '\n')) {
			linelen = 0
			// Whitespace at the end of a line is quoted, or mail transports may eat it.
			if k := len(out); k > 0 && (out[k-1] == ' ' || out[k-1] == '\t') {
				ws := out[k-1]
				out = appendQPHex(append(out[:k-1], '='), ws)
			}
			if crlf {
				out = append(out, '\r')
			}
			out = append(out, '\n')
			if c == '\r' {
				in += 2
			} else {
				in++
			}
			continue
		}
		if !last && data[in+1] != '\n' && linelen+1 >= qpLineMax {
			softBreak()
			linelen = 0
		}
		linelen++
		out = append(out, c)
		in++
	}
	return out
}

// qpMustQuote tells whether b2a_qp writes data[in] as =XX.
func qpMustQuote(data []byte, in, linelen int, istext bool) bool {
	c := data[in]
	last := in+1 == len(data)
	switch {
	case c > 126 || c == '=':
		return true
	case c == '.' && linelen == 0 && (last || data[in+1] == '\n' || data[in+1] == '\r' || data[in+1] == 0):
		return true
	case !istext && (c == '\r' || c == '\n'):
		return true
	case (c == '\t' || c == ' ') && last:
		return true
	case c < 33 && c != '\r' && c != '\n' && c != '\t' && c != ' ':
		return true
	}
	return false
}

func appendQPHex(out []byte, c byte) []byte {
	const hex = "0123456789ABCDEF"
	return append(out, hex[c>>4], hex[c&15])
}

// quopriDecode is a2b_qp with header off: =XX is a byte, "=" at a line end a soft line
// break, "==" one "=", and any other "=" itself.
func quopriDecode(s string) []byte {
	out := make([]byte, 0, len(s))
	n := len(s)
	for in := 0; in < n; {
		if s[in] != '=' {
			out = append(out, s[in])
			in++
			continue
		}
		in++
		if in >= n {
			break
		}
		switch {
		case s[in] == '\n' || s[in] == '\r':
			for in < n && s[in] != '\n' {
				in++
			}
			if in < n {
				in++
			}
		case s[in] == '=':
			out = append(out, '=')
			in++
		case in+1 < n && isHexDigit(s[in]) && isHexDigit(s[in+1]):
			out = append(out, hexDigit(s[in])<<4|hexDigit(s[in+1]))
			in += 2
		default:
			out = append(out, '=')
		}
	}
	return out
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexDigit(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
