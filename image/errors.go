package image

import "fmt"

// FormatError reports a malformed image: the file (when known), the byte offset at
// which the problem was found, and what was wrong.
type FormatError struct {
	File   string // file name, empty when the reader had none
	Offset int64  // byte offset from the start of the file
	Reason string // what was wrong
	Err    error  // underlying error, if any
}

func (e *FormatError) Error() string {
	msg := e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.File != "" {
		return fmt.Sprintf("%s: offset %d: %s", e.File, e.Offset, msg)
	}
	return fmt.Sprintf("offset %d: %s", e.Offset, msg)
}

func (e *FormatError) Unwrap() error { return e.Err }
