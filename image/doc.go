// Package image reads and writes CRIU image files.
//
// A CRIU image file (CRIU 4.2, "images v1.1") is
//
//	FILE  := [HEAD] MAGIC { ENTRY }
//	HEAD  := u32 IMG_COMMON (0x54564319) | u32 IMG_SERVICE (0x55105940)
//	ENTRY := u32 SIZE, SIZE bytes of protobuf message, [PAYLOAD]
//
// with every integer native (little-endian) and PAYLOAD, when the image type has one,
// sized by the entry before it. inventory.img carries its magic alone, without a head
// magic, and so do images of the older v1 layout. Raw images (pages-*.img and the
// other headerless files CRIU writes) have no magic at all and are known by their names
// (KindByFileName). A few kinds have an opaque body instead of entries (Kind.Opaque),
// read and written whole with Reader.Read and Writer.Write.
//
// Pagemaps are indexed by PageMap (NewPageMap, ReadPageMap), which finds a page's
// offset in pages-N.img and reads it through an io.ReaderAt: pages files of any size
// are served in constant memory.
//
// Everything the package knows about an image type lives in one table (see Kinds):
// its magic, name, message type, file name and payload codec. Reader and Writer stream
// entries and payloads like archive/tar; ReadImage and Image.WriteTo handle small
// images whole. Nothing here loads a pages file into memory.
//
// Every length read from a file is checked against a named limit (limits.go) and, when
// the input's size is known, against the bytes left, before anything is allocated;
// otherwise buffers grow only as fast as bytes actually arrive. A hostile file can make
// a Reader fail, with a *FormatError naming the file and offset, but never allocate
// more than it holds. docs/format.md describes the format in full.
package image
