package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// crit's JSON. An image is
//
//	{"magic": "NAME", "entries": [ENTRY, ...]}
//
// and an entry is its message's set fields in field-number order (see
// json_message.go), then "extra" when a payload follows it (see json_payload.go).
// DecodeJSON prints exactly what crit 4.2 prints, EncodeJSON reads plain or pretty JSON
// back into the exact original bytes. docs/crit-compat.md lists where imgtool departs
// from crit on purpose.

// JSONOptions selects the form of DecodeJSON's output.
type JSONOptions struct {
	// Pretty is crit's --pretty: 4-space indents, and integers printed as their
	// (criu) field options say (hex, "MAJ:MIN", flag and dict names, IP addresses).
	Pretty bool
	// NoPayload is crit's show --nopl: each "extra" becomes "... <SIZE>".
	NoPayload bool
}

// DecodeJSON reads one image from r and writes it to w as crit's JSON, entry by entry
// as it reads them. The output ends without a newline, as Python's json.dump leaves it.
func DecodeJSON(r io.Reader, w io.Writer, opts JSONOptions) error {
	rd, err := NewReader(r)
	if err != nil {
		return err
	}
	k := rd.Kind()
	if k.New == nil {
		return fmt.Errorf("image: %s images hold no protobuf entries", k.Name)
	}
	extra, err := extraCodecOf(k)
	if err != nil {
		return err
	}
	entries := jsonLazyArray(func(emit func(jsonValue) error) error {
		for i := 0; ; i++ {
			m, err := rd.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			obj, err := entryValue(m, rd, extra, opts)
			if err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			if err := emit(obj); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
		}
	})
	jw := newJSONWriter(w, opts.Pretty)
	top := jsonObject{{Key: "magic", Value: jsonString(k.Name)}, {Key: "entries", Value: entries}}
	if err := jw.value(top, 0); err != nil {
		return err
	}
	return jw.flush()
}

// entryValue builds one entry: its fields, and "extra" read from rd.
func entryValue(m proto.Message, rd *Reader, extra extraCodec, opts JSONOptions) (jsonObject, error) {
	obj, err := messageValue(m.ProtoReflect(), opts.Pretty, false)
	if err != nil {
		return nil, err
	}
	if extra == nil {
		return obj, nil
	}
	v, err := extra.extraJSON(m, rd, opts.NoPayload)
	if err != nil {
		return nil, err
	}
	if v != nil {
		obj = append(obj, jsonMember{Key: "extra", Value: v})
	}
	return obj, nil
}

// EncodeJSON reads crit's JSON for one image (plain or pretty) from r and writes the
// image to w. Entries are converted and written one at a time. An image has exactly
// the keys "magic" and "entries", in either order: crit ignores any other key and
// takes the last of a duplicated one, but a key crit would drop, or an entry list
// given twice, is a mistake in the JSON that would silently change the image.
func EncodeJSON(r io.Reader, w io.Writer) error {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	enc := &jsonImageEncoder{out: w}
	var early []json.RawMessage // entries seen before "magic"
	sawEntries := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonSyntaxError(err)
		}
		key, _ := tok.(string)
		if key == "entries" && sawEntries {
			return errors.New("JSON: \"entries\" given twice")
		}
		switch key {
		case "magic":
			var name string
			if err := dec.Decode(&name); err != nil {
				return fmt.Errorf("\"magic\": %w", jsonSyntaxError(err))
			}
			if err := enc.start(name); err != nil {
				return err
			}
			for _, raw := range early {
				if err := enc.entry(raw); err != nil {
					return err
				}
			}
			early = nil
		case "entries":
			sawEntries = true
			if enc.w == nil {
				if err := dec.Decode(&early); err != nil {
					return fmt.Errorf("\"entries\": %w", jsonSyntaxError(err))
				}
				continue
			}
			if err := enc.entries(dec); err != nil {
				return err
			}
		default:
			return fmt.Errorf("JSON: unknown key %q (an image has \"magic\" and \"entries\")", key)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("JSON: unexpected data after the image")
	}
	if enc.w == nil {
		return errors.New("JSON: no \"magic\"")
	}
	if !sawEntries {
		return errors.New("JSON: no \"entries\"")
	}
	return enc.w.Close()
}

// jsonImageEncoder writes an image from its JSON entries.
type jsonImageEncoder struct {
	out   io.Writer
	kind  *Kind
	extra extraCodec
	w     *Writer
	index int
}

// start begins the image named by crit's "magic".
func (e *jsonImageEncoder) start(name string) error {
	if e.w != nil {
		return errors.New("JSON: \"magic\" given twice")
	}
	k := KindByName(name)
	if k == nil || k.New == nil {
		return fmt.Errorf("JSON: unknown magic %q", name)
	}
	extra, err := extraCodecOf(k)
	if err != nil {
		return err
	}
	w, err := NewWriter(e.out, k)
	if err != nil {
		return err
	}
	e.kind, e.extra, e.w = k, extra, w
	return nil
}

// entries streams the "entries" array.
func (e *jsonImageEncoder) entries(dec *json.Decoder) error {
	if err := expectDelim(dec, '['); err != nil {
		return fmt.Errorf("\"entries\": %w", err)
	}
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("entry %d: %w", e.index, jsonSyntaxError(err))
		}
		if err := e.entry(raw); err != nil {
			return err
		}
	}
	return expectDelim(dec, ']')
}

// entry writes one entry and its payload.
func (e *jsonImageEncoder) entry(raw []byte) error {
	if err := e.writeEntry(raw); err != nil {
		return fmt.Errorf("entry %d: %w", e.index, err)
	}
	e.index++
	return nil
}

func (e *jsonImageEncoder) writeEntry(raw []byte) error {
	v, err := parseJSON(raw)
	if err != nil {
		return err
	}
	obj, ok := v.(jsonObject)
	if !ok {
		return fmt.Errorf("want an object, got %s", jsonKind(v))
	}
	extra, hasExtra := obj.get("extra")
	obj = obj.without("extra")
	m := e.kind.newEntry(e.index)
	if err := setMessage(m.ProtoReflect(), obj); err != nil {
		return err
	}
	if err := e.w.WriteEntry(m); err != nil {
		return err
	}
	if e.extra == nil {
		if hasExtra {
			return fmt.Errorf("\"extra\" given, but %s entries have no payload", e.kind.Name)
		}
		return nil
	}
	if !hasExtra {
		extra = nil
	}
	return e.extra.writeExtra(m, extra, e.w)
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return jsonSyntaxError(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("JSON offset %d: want %q, got %v", dec.InputOffset(), want, tok)
	}
	return nil
}

// jsonSyntaxError names a JSON input problem as such.
func jsonSyntaxError(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("JSON: %w", err)
}

// InfoResult is what crit's info tells about an image.
type InfoResult struct {
	Magic string // crit's name of the image type
	// Count is the number of entries, payloads and records within entries not
	// counted; for PAGEMAP images, without the pagemap_head (as crit counts).
	Count int64
}

// Info reads an image and counts its entries.
func Info(r io.Reader) (InfoResult, error) {
	rd, err := NewReader(r)
	if err != nil {
		return InfoResult{}, err
	}
	k := rd.Kind()
	if k.New == nil {
		return InfoResult{}, fmt.Errorf("image: %s images hold no protobuf entries", k.Name)
	}
	res := InfoResult{Magic: k.Name}
	for {
		m, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return InfoResult{}, err
		}
		res.Count++
		if k.sub == nil {
			continue
		}
		n, err := k.sub.count(m)
		if err != nil {
			return InfoResult{}, err
		}
		for ; n > 0; n-- {
			if _, err := rd.Next(); err != nil {
				return InfoResult{}, noEOF(err)
			}
		}
	}
	if k.Name == "PAGEMAP" && res.Count > 0 {
		res.Count--
	}
	return res, nil
}

// WriteJSON writes the result as crit's info prints it (indented, no final newline).
func (ir InfoResult) WriteJSON(w io.Writer) error {
	jw := newJSONWriter(w, true)
	v := jsonObject{
		{Key: "magic", Value: jsonString(ir.Magic)},
		{Key: "count", Value: jsonNumber(fmt.Sprint(ir.Count))},
	}
	if err := jw.value(v, 0); err != nil {
		return err
	}
	return jw.flush()
}

// MarshalMessageJSON returns crit's JSON for one message: its set fields in
// field-number order, on one line, or indented and with (criu) field options applied
// when opts.Pretty is set. Payloads are not part of a message.
func MarshalMessageJSON(m proto.Message, opts JSONOptions) ([]byte, error) {
	obj, err := messageValue(m.ProtoReflect(), opts.Pretty, false)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	jw := newJSONWriter(&buf, opts.Pretty)
	if err := jw.value(obj, 0); err != nil {
		return nil, err
	}
	if err := jw.flush(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// UnmarshalMessageJSON resets m and sets it from crit's JSON for a message of its type,
// plain or pretty. It fails if a required field is missing.
func UnmarshalMessageJSON(data []byte, m proto.Message) error {
	v, err := parseJSON(data)
	if err != nil {
		return err
	}
	obj, ok := v.(jsonObject)
	if !ok {
		return fmt.Errorf("want an object, got %s", jsonKind(v))
	}
	proto.Reset(m)
	if err := setMessage(m.ProtoReflect(), obj); err != nil {
		return err
	}
	return proto.CheckInitialized(m)
}
