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
// other headerless files CRIU writes) have no magic at all and are known by their names.
//
// Everything the package knows about an image type lives in one table (see Kinds):
// its magic, name, message type, file name and payload codec. Reader and Writer stream
// entries and payloads like archive/tar; ReadImage and Image.WriteTo handle small
// images whole. Nothing here loads a pages file into memory.
//
// Every length read from a file is checked against a named limit before anything is
// allocated, and buffers grow only as fast as bytes actually arrive, so a hostile file
// can make a Reader fail but never allocate more than it holds.
package image
