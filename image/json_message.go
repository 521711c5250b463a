package image

import (
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/opts"
)

// This file turns messages into crit's JSON values and back, following pb2dict.py of
// CRIU 4.2: set fields only, in field-number order, enums by name, bytes as base64
// (unix socket names as quoted-printable), and in pretty mode the (criu) field options
// of opts.proto: hex, dev/odev, flags, dict and ipadd.

// critOptions are the (criu) options of one field.
type critOptions struct {
	hex, ipadd, dev, odev bool
	flags, dict, conv     string
}

var fieldOptionsCache sync.Map // protoreflect.FieldDescriptor -> critOptions

// fieldOptions reads the (criu) extension from a field's descriptor options.
func fieldOptions(fd protoreflect.FieldDescriptor) critOptions {
	if v, ok := fieldOptionsCache.Load(fd); ok {
		return v.(critOptions)
	}
	var co critOptions
	if fo, ok := fd.Options().(*descriptorpb.FieldOptions); ok && fo != nil && proto.HasExtension(fo, opts.E_Criu) {
		o := proto.GetExtension(fo, opts.E_Criu).(*opts.CRIU_Opts)
		co = critOptions{
			hex: o.GetHex(), ipadd: o.GetIpadd(), dev: o.GetDev(), odev: o.GetOdev(),
			flags: o.GetFlags(), dict: o.GetDict(), conv: o.GetConv(),
		}
	}
	fieldOptionsCache.Store(fd, co)
	return co
}

var fieldOrderCache sync.Map // protoreflect.MessageDescriptor -> []protoreflect.FieldDescriptor

// fieldsByNumber returns a message's fields in field-number order, the order of
// Python's ListFields and so of crit's keys.
func fieldsByNumber(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	if v, ok := fieldOrderCache.Load(md); ok {
		return v.([]protoreflect.FieldDescriptor)
	}
	fields := md.Fields()
	out := make([]protoreflect.FieldDescriptor, fields.Len())
	for i := range out {
		out[i] = fields.Get(i)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number() < out[j].Number() })
	fieldOrderCache.Store(md, out)
	return out
}

// Flag names of the (criu).flags maps, in pb2dict.py's order (the order names print in).
type flagName struct {
	name string
	bit  uint64
}

var flagMaps = map[string][]flagName{
	"mmap.prot": {{"PROT_READ", 0x1}, {"PROT_WRITE", 0x2}, {"PROT_EXEC", 0x4}},
	"mmap.flags": {{"MAP_SHARED", 0x1}, {"MAP_PRIVATE", 0x2}, {"MAP_DROPPABLE", 0x08},
		{"MAP_ANON", 0x20}, {"MAP_GROWSDOWN", 0x0100}},
	"mmap.status": {{"VMA_AREA_NONE", 0}, {"VMA_AREA_REGULAR", 1 << 0}, {"VMA_AREA_STACK", 1 << 1},
		{"VMA_AREA_VSYSCALL", 1 << 2}, {"VMA_AREA_VDSO", 1 << 3}, {"VMA_AREA_HEAP", 1 << 5},
		{"VMA_FILE_PRIVATE", 1 << 6}, {"VMA_FILE_SHARED", 1 << 7}, {"VMA_ANON_SHARED", 1 << 8},
		{"VMA_ANON_PRIVATE", 1 << 9}, {"VMA_AREA_SYSVIPC", 1 << 10}, {"VMA_AREA_SOCKET", 1 << 11},
		{"VMA_AREA_VVAR", 1 << 12}, {"VMA_AREA_AIORING", 1 << 13}, {"VMA_AREA_MEMFD", 1 << 14},
		{"VMA_AREA_SHSTK", 1 << 15}, {"VMA_AREA_UPROBES", 1 << 17}, {"VMA_UNSUPP", 1 << 31}},
	"rfile.flags": {{"O_WRONLY", 0o1}, {"O_RDWR", 0o2}, {"O_CREAT", 0o100}, {"O_EXCL", 0o200},
		{"O_NOCTTY", 0o400}, {"O_TRUNC", 0o1000}, {"O_APPEND", 0o2000}, {"O_NONBLOCK", 0o4000},
		{"O_DSYNC", 0o10000}, {"FASYNC", 0o20000}, {"O_DIRECT", 0o40000}, {"O_LARGEFILE", 0o100000},
		{"O_DIRECTORY", 0o200000}, {"O_NOFOLLOW", 0o400000}, {"O_NOATIME", 0o1000000},
		{"O_CLOEXEC", 0o2000000}},
	"pmap.flags": {{"PE_PARENT", 1 << 0}, {"PE_LAZY", 1 << 1}, {"PE_PRESENT", 1 << 2}},
	"seals.flags": {{"F_SEAL_SEAL", 0x1}, {"F_SEAL_SHRINK", 0x2}, {"F_SEAL_GROW", 0x4},
		{"F_SEAL_WRITE", 0x8}, {"F_SEAL_FUTURE_WRITE", 0x10}},
}

// Value names of the (criu).dict maps, by dict and then by field name.
var dictMaps = map[string]map[string]map[uint64]string{
	"gen": {"task_state": {1: "Alive", 3: "Zombie", 6: "Stopped"}},
	"sk": {
		"family": {1: "UNIX", 2: "INET", 10: "INET6", 16: "NETLINK", 17: "PACKET"},
		"type":   {1: "STREAM", 2: "DGRAM", 3: "RAW", 5: "SEQPACKET", 10: "PACKET"},
		"state": {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
			6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN"},
		"proto": {0: "IP", 6: "TCP", 17: "UDP", 136: "UDPLITE"},
	},
}

// kernMinorBits is how the kernel packs dev_t in the "new" format CRIU stores.
const kernMinorBits = 20

// messageValue returns crit's JSON object for m. hex is set inside a field marked
// (criu).hex: pb2dict prints every integer below such a field in hex.
func messageValue(m protoreflect.Message, pretty, hex bool) (jsonObject, error) {
	obj := jsonObject{}
	for _, fd := range fieldsByNumber(m.Descriptor()) {
		if !m.Has(fd) {
			continue
		}
		v, err := fieldValue(fd, m.Get(fd), pretty, hex)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", fd.Name(), err)
		}
		obj = append(obj, jsonMember{Key: string(fd.Name()), Value: v})
	}
	return obj, nil
}

func fieldValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, pretty, hex bool) (jsonValue, error) {
	if fd.IsMap() {
		return nil, fmt.Errorf("map fields are not supported")
	}
	if !fd.IsList() {
		return scalarValue(fd, v, pretty, hex)
	}
	list := v.List()
	if pretty && fieldOptions(fd).ipadd {
		if s, ok := ipString(list); ok {
			return jsonArray{jsonString(s)}, nil
		}
	}
	arr := make(jsonArray, list.Len())
	for i := range arr {
		e, err := scalarValue(fd, list.Get(i), pretty, hex)
		if err != nil {
			return nil, err
		}
		arr[i] = e
	}
	return arr, nil
}

// scalarValue converts one value (a list element, or a singular field's value).
func scalarValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, pretty, hex bool) (jsonValue, error) {
	co := fieldOptions(fd)
	hex = hex || co.hex
	switch fd.Kind() {
	case protoreflect.MessageKind:
		return messageValue(v.Message(), pretty, hex)
	case protoreflect.GroupKind, protoreflect.FloatKind, protoreflect.DoubleKind:
		return nil, fmt.Errorf("unsupported field type %s", fd.Kind())
	case protoreflect.BytesKind:
		if co.conv == "unix_name" {
			return jsonString(quopriEncode(v.Bytes())), nil
		}
		return jsonString(encodeBytes(v.Bytes())), nil
	case protoreflect.StringKind:
		return jsonString(v.String()), nil
	case protoreflect.BoolKind:
		return jsonBool(v.Bool()), nil
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return jsonString(ev.Name()), nil
		}
		// crit fails on a value its enum lacks; the number keeps the entry readable.
		return jsonNumber(strconv.FormatInt(int64(v.Enum()), 10)), nil
	}
	neg, mag := intOf(fd, v)
	if pretty {
		switch {
		case hex:
			return jsonString(pyHex(neg, mag)), nil
		case co.dev:
			return jsonString(devString(mag, co.odev)), nil
		case co.flags != "":
			if names, ok := flagMaps[co.flags]; ok {
				return jsonString(flagsString(mag, names)), nil
			}
			return jsonString(pyHex(neg, mag)), nil
		case co.dict != "":
			if name, ok := dictMaps[co.dict][string(fd.Name())][mag]; ok && !neg {
				return jsonString(name), nil
			}
		}
	}
	return jsonNumber(intText(neg, mag)), nil
}

// intOf returns an integer field's value as sign and magnitude.
func intOf(fd protoreflect.FieldDescriptor, v protoreflect.Value) (neg bool, mag uint64) {
	switch fd.Kind() {
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return false, v.Uint()
	}
	i := v.Int()
	if i < 0 {
		return true, uint64(-i) // -MinInt64 wraps to its own magnitude as a uint64
	}
	return false, uint64(i)
}

func intText(neg bool, mag uint64) string {
	s := strconv.FormatUint(mag, 10)
	if neg {
		return "-" + s
	}
	return s
}

// pyHex formats like Python's "0x%x" (a negative value as -0x...).
func pyHex(neg bool, mag uint64) string {
	s := "0x" + strconv.FormatUint(mag, 16)
	if neg {
		return "-" + s
	}
	return s
}

// devString formats a device number as "MAJ:MIN": the kernel's 12:20 packing, or for
// (criu).odev fields the old glibc one that Python's os.major/os.minor decode.
func devString(v uint64, odev bool) string {
	if odev {
		major := (v>>8)&0xfff | (v>>32)&^uint64(0xfff)
		minor := v&0xff | (v>>12)&^uint64(0xff)
		return fmt.Sprintf("%d:%d", major, minor)
	}
	return fmt.Sprintf("%d:%d", v>>kernMinorBits, v&(1<<kernMinorBits-1))
}

// flagsString names the set bits, in the map's order, with any bits left over in hex:
// "PROT_READ | PROT_WRITE", "MAP_PRIVATE | 0x4000", or "" for 0.
func flagsString(v uint64, names []flagName) string {
	var parts []string
	left := v
	for _, f := range names {
		if v&f.bit != 0 {
			parts = append(parts, f.name)
		}
		left &^= f.bit
	}
	if left != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", left))
	}
	return strings.Join(parts, " | ")
}

// ipString formats a (criu).ipadd list as crit does: one u32 is an IPv4 address, four
// an IPv6 one, each u32 holding four address bytes in memory (network) order. Other
// lengths are no address (crit fails on them); they print as plain numbers.
func ipString(list protoreflect.List) (string, bool) {
	var b []byte
	for i := 0; i < list.Len(); i++ {
		u := uint32(list.Get(i).Uint())
		b = append(b, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
	}
	switch len(b) {
	case 4:
		return netip.AddrFrom4([4]byte(b)).String(), true
	case 16:
		return ipv6String([16]byte(b)), true
	}
	return "", false
}

// ipv6String formats an IPv6 address as Python 3.11's IPv6Address.compressed does:
// hextets in lower-case hex without leading zeros, the first longest run of two or
// more zero hextets as "::", and no dotted form for IPv4-mapped addresses.
func ipv6String(a [16]byte) string {
	var h [8]uint16
	for i := range h {
		h[i] = uint16(a[2*i])<<8 | uint16(a[2*i+1])
	}
	bestStart, bestLen := -1, 0
	for i := 0; i < 8; {
		if h[i] != 0 {
			i++
			continue
		}
		j := i
		for j < 8 && h[j] == 0 {
			j++
		}
		if j-i > bestLen {
			bestStart, bestLen = i, j-i
		}
		i = j
	}
	hexes := func(from, to int) string {
		parts := make([]string, 0, to-from)
		for _, x := range h[from:to] {
			parts = append(parts, strconv.FormatUint(uint64(x), 16))
		}
		return strings.Join(parts, ":")
	}
	if bestLen < 2 {
		return hexes(0, 8)
	}
	return hexes(0, bestStart) + "::" + hexes(bestStart+bestLen, 8)
}

// setMessage sets m's fields from obj, crit's JSON for a message of m's type, plain or
// pretty (dict2pb): any field may be absent, integers may be numbers or strings in the
// forms pretty mode prints.
func setMessage(m protoreflect.Message, obj jsonObject) error {
	fields := m.Descriptor().Fields()
	seen := make(map[string]bool, len(obj))
	for _, mem := range obj {
		if seen[mem.Key] {
			continue
		}
		seen[mem.Key] = true
		fd := fields.ByName(protoreflect.Name(mem.Key))
		if fd == nil {
			return fmt.Errorf("%s has no field %q", m.Descriptor().Name(), mem.Key)
		}
		v, _ := obj.get(mem.Key)
		if err := setField(m, fd, v); err != nil {
			return fmt.Errorf("field %s: %w", fd.Name(), err)
		}
	}
	return nil
}

func setField(m protoreflect.Message, fd protoreflect.FieldDescriptor, v jsonValue) error {
	if fd.IsMap() {
		return fmt.Errorf("map fields are not supported")
	}
	if !fd.IsList() {
		if fd.Kind() == protoreflect.MessageKind {
			obj, ok := v.(jsonObject)
			if !ok {
				return fmt.Errorf("want an object, got %s", jsonKind(v))
			}
			// Mutable marks the field present even when obj is empty, as crit's
			// SetInParent does.
			return setMessage(m.Mutable(fd).Message(), obj)
		}
		pv, err := scalarFromJSON(fd, v)
		if err != nil {
			return err
		}
		m.Set(fd, pv)
		return nil
	}
	arr, ok := v.(jsonArray)
	if !ok {
		return fmt.Errorf("want a list, got %s", jsonKind(v))
	}
	list := m.Mutable(fd).List()
	if len(arr) > 0 && fieldOptions(fd).ipadd {
		if s, ok := arr[0].(jsonString); ok {
			if len(arr) != 1 {
				return fmt.Errorf("want one address, got a list of %d", len(arr))
			}
			return appendIP(list, string(s))
		}
	}
	for i, e := range arr {
		if fd.Kind() == protoreflect.MessageKind {
			obj, ok := e.(jsonObject)
			if !ok {
				return fmt.Errorf("element %d: want an object, got %s", i, jsonKind(e))
			}
			ev := list.NewElement()
			if err := setMessage(ev.Message(), obj); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
			list.Append(ev)
			continue
		}
		pv, err := scalarFromJSON(fd, e)
		if err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
		list.Append(pv)
	}
	return nil
}

// appendIP appends an address in crit's (criu).ipadd layout.
func appendIP(list protoreflect.List, s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return fmt.Errorf("bad IP address %q", s)
	}
	for b := a.AsSlice(); len(b) > 0; b = b[4:] {
		u := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		list.Append(protoreflect.ValueOfUint32(u))
	}
	return nil
}

// scalarFromJSON converts one JSON value to a field's (or list element's) value.
func scalarFromJSON(fd protoreflect.FieldDescriptor, v jsonValue) (protoreflect.Value, error) {
	co := fieldOptions(fd)
	switch fd.Kind() {
	case protoreflect.BoolKind:
		b, ok := v.(jsonBool)
		if !ok {
			return protoreflect.Value{}, fmt.Errorf("want true or false, got %s", jsonKind(v))
		}
		return protoreflect.ValueOfBool(bool(b)), nil
	case protoreflect.StringKind:
		s, ok := v.(jsonString)
		if !ok {
			return protoreflect.Value{}, fmt.Errorf("want a string, got %s", jsonKind(v))
		}
		return protoreflect.ValueOfString(string(s)), nil
	case protoreflect.BytesKind:
		s, ok := v.(jsonString)
		if !ok {
			return protoreflect.Value{}, fmt.Errorf("want a string, got %s", jsonKind(v))
		}
		if co.conv == "unix_name" {
			return protoreflect.ValueOfBytes(quopriDecode(string(s))), nil
		}
		b, err := decodeBytes(string(s))
		if err != nil {
			return protoreflect.Value{}, err
		}
		return protoreflect.ValueOfBytes(b), nil
	case protoreflect.EnumKind:
		return enumFromJSON(fd, v)
	case protoreflect.MessageKind, protoreflect.GroupKind, protoreflect.FloatKind, protoreflect.DoubleKind:
		return protoreflect.Value{}, fmt.Errorf("unsupported field type %s", fd.Kind())
	}
	n, err := intFromJSON(fd, co, v)
	if err != nil {
		return protoreflect.Value{}, err
	}
	return intValue(fd, n)
}

func enumFromJSON(fd protoreflect.FieldDescriptor, v jsonValue) (protoreflect.Value, error) {
	values := fd.Enum().Values()
	switch v := v.(type) {
	case jsonString:
		if ev := values.ByName(protoreflect.Name(v)); ev != nil {
			return protoreflect.ValueOfEnum(ev.Number()), nil
		}
		return protoreflect.Value{}, fmt.Errorf("%q is not a value of %s", string(v), fd.Enum().Name())
	case jsonNumber:
		n, ok := new(big.Int).SetString(string(v), 10)
		if !ok || !n.IsInt64() || n.Int64() < math.MinInt32 || n.Int64() > math.MaxInt32 {
			return protoreflect.Value{}, fmt.Errorf("bad enum number %s", string(v))
		}
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n.Int64())), nil
	}
	return protoreflect.Value{}, fmt.Errorf("want an enum name, got %s", jsonKind(v))
}

// intFromJSON reads an integer: a JSON number, or a string as pretty mode prints it
// ("MAJ:MIN", flag names, dict names, "0x..."), else any Python int(s, 0) literal.
func intFromJSON(fd protoreflect.FieldDescriptor, co critOptions, v jsonValue) (*big.Int, error) {
	switch v := v.(type) {
	case jsonNumber:
		n, ok := new(big.Int).SetString(string(v), 10)
		if !ok {
			return nil, fmt.Errorf("%s is not an integer", string(v))
		}
		return n, nil
	case jsonString:
		s := string(v)
		switch {
		case co.dev && strings.Contains(s, ":"):
			return devFromString(s, co.odev)
		case co.flags != "":
			if names, ok := flagMaps[co.flags]; ok {
				return flagsFromString(s, names)
			}
		case co.dict != "":
			for num, name := range dictMaps[co.dict][string(fd.Name())] {
				if name == s {
					return new(big.Int).SetUint64(num), nil
				}
			}
		}
		return pyInt(s)
	}
	return nil, fmt.Errorf("want an integer, got %s", jsonKind(v))
}

// intValue range-checks n for fd's integer type.
func intValue(fd protoreflect.FieldDescriptor, n *big.Int) (protoreflect.Value, error) {
	var lo, hi *big.Int
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		lo, hi = big.NewInt(math.MinInt32), big.NewInt(math.MaxInt32)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		lo, hi = big.NewInt(math.MinInt64), big.NewInt(math.MaxInt64)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		lo, hi = big.NewInt(0), big.NewInt(math.MaxUint32)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		lo, hi = big.NewInt(0), new(big.Int).SetUint64(math.MaxUint64)
	default:
		return protoreflect.Value{}, fmt.Errorf("unsupported field type %s", fd.Kind())
	}
	if n.Cmp(lo) < 0 || n.Cmp(hi) > 0 {
		return protoreflect.Value{}, fmt.Errorf("%s out of range for %s", n, fd.Kind())
	}
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(n.Int64())), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(n.Int64()), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(n.Uint64())), nil
	}
	return protoreflect.ValueOfUint64(n.Uint64()), nil
}

// devFromString parses "MAJ:MIN" back into the packing devString reads.
func devFromString(s string, odev bool) (*big.Int, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 2 {
		return nil, fmt.Errorf("bad device %q, want MAJOR:MINOR", s)
	}
	var mm [2]uint64
	for i, p := range parts {
		n, err := pyIntBase(strings.TrimSpace(p), 10)
		if err != nil || n.Sign() < 0 || !n.IsUint64() || n.Uint64() > math.MaxUint32 {
			return nil, fmt.Errorf("bad device %q", s)
		}
		mm[i] = n.Uint64()
	}
	major, minor := mm[0], mm[1]
	var v *big.Int
	if odev {
		v = new(big.Int).SetUint64((major&0xfff)<<8 | (minor & 0xff) | (minor&^uint64(0xff))<<12)
		v.Or(v, new(big.Int).Lsh(new(big.Int).SetUint64(major&^uint64(0xfff)), 32))
	} else {
		v = new(big.Int).Lsh(new(big.Int).SetUint64(major), kernMinorBits)
		v.Or(v, new(big.Int).SetUint64(minor))
	}
	return v, nil
}

// flagsFromString adds up "NAME | NAME | 0x..." as crit's unmap_flags does.
func flagsFromString(s string, names []flagName) (*big.Int, error) {
	sum := new(big.Int)
	if s == "" {
		return sum, nil
	}
	for _, part := range strings.Split(s, "|") {
		part = strings.TrimSpace(part)
		var n *big.Int
		for _, f := range names {
			if f.name == part {
				n = new(big.Int).SetUint64(f.bit)
				break
			}
		}
		if n == nil {
			var err error
			if n, err = pyInt(part); err != nil {
				return nil, fmt.Errorf("unknown flag %q", part)
			}
		}
		sum.Add(sum, n)
	}
	return sum, nil
}

// pyInt parses s as Python's int(s, 0): optional sign, then 0x/0o/0b and digits, or
// decimal digits without leading zeros; underscores may separate digits.
func pyInt(s string) (*big.Int, error) {
	t := strings.TrimSpace(s)
	neg := false
	if t != "" && (t[0] == '-' || t[0] == '+') {
		neg = t[0] == '-'
		t = t[1:]
	}
	base := 10
	if len(t) >= 2 && t[0] == '0' {
		switch t[1] {
		case 'x', 'X':
			base = 16
		case 'o', 'O':
			base = 8
		case 'b', 'B':
			base = 2
		}
		if base != 10 {
			t = strings.TrimPrefix(t[2:], "_")
		}
	}
	if base == 10 && len(strings.TrimLeft(t, "0_")) > 0 && strings.HasPrefix(t, "0") {
		return nil, fmt.Errorf("invalid integer %q", s)
	}
	n, err := pyIntBase(t, base)
	if err != nil {
		return nil, fmt.Errorf("invalid integer %q", s)
	}
	if neg {
		n.Neg(n)
	}
	return n, nil
}

// pyIntBase parses unsigned digits in base, with single underscores between digits.
func pyIntBase(t string, base int) (*big.Int, error) {
	if t == "" || t[0] == '_' || t[len(t)-1] == '_' || strings.Contains(t, "__") {
		return nil, fmt.Errorf("invalid digits %q", t)
	}
	n, ok := new(big.Int).SetString(strings.ReplaceAll(t, "_", ""), base)
	if !ok || n.Sign() < 0 || strings.ContainsAny(t, "+-") {
		return nil, fmt.Errorf("invalid digits %q", t)
	}
	return n, nil
}

func jsonKind(v jsonValue) string {
	switch v.(type) {
	case jsonObject:
		return "an object"
	case jsonArray:
		return "a list"
	case jsonString:
		return "a string"
	case jsonNumber:
		return "a number"
	case jsonBool:
		return "a boolean"
	case jsonNull:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
