// Package image owns the on-disk image directory: CRIU's file framing, the
// order in which a dump makes a directory complete, and cryo's checksum
// sidecar. It knows nothing about what the messages mean; dump and restore
// fill and read the go-criu protobuf types themselves.
//
// # Files
//
// Every protobuf image file is
//
//	+----------------+----------------+-----------+---------+-----------+-----
//	| IMG_COMMON u32 | type magic u32 | len u32   | entry   | len u32   | ...
//	+----------------+----------------+-----------+---------+-----------+-----
//	  0x54564319       e.g. CORE        len bytes of protobuf follow
//
// with all integers little-endian. inventory.img has its own magic only;
// stats-*.img start with IMG_SERVICE instead of IMG_COMMON. pages-<id>.img
// is raw page data with no header. ghost-file-<id>.img is one
// ghost_file_entry followed either by the raw contents (files under 12 KiB,
// as in CRIU) or by (ghost_chunk_entry, data) pairs for the data extents.
//
// # Completeness
//
// A dump writes inventory.img under a temporary name. Commit writes the
// sidecar, fsyncs every file, then renames inventory.img into place and
// fsyncs the directory; Open refuses a directory lacking either file
// (ErrIncomplete). Abort removes every file the dump created.
//
// # Checksum sidecar
//
// cryo-checksums lists every file of the image (its name ends without .img
// so that crit, which decodes every *.img, leaves it alone). All integers
// are little-endian; CRC32C is the Castagnoli polynomial.
//
//	+0                  +8          +12         +16         +20
//	+-------------------+-----------+-----------+-----------+-------------
//	| "CRYOSUMS"        | version=1 | chunk     | count     | records...
//	+-------------------+-----------+-----------+-----------+-------------
//	  8 bytes             u32         u32 (power  u32
//	                                  of 2, 4K..64M)
//
//	record (count of them, sorted by name):
//	+----------+-----------+------+----------+----------+--------------------+
//	| name len | name      | kind | size     | crc32c   | chunk crc32c ...   |
//	| u16      | 1..255 B  | u8   | u64      | u32      | u32 x ceil(size/   |
//	|          |           |      |          | of file  | chunk), kind 1 only|
//	+----------+-----------+------+----------+----------+--------------------+
//	kind 0: whole-file checksum, verified by Open;
//	kind 1: pages file, each chunk verified by PagesReader as it is read;
//	        its whole-file crc32c is 0 (never computed: the chunks cover it).
//
//	trailer:
//	+----------------------------------------+
//	| crc32c of every byte before it (u32)   |
//	+----------------------------------------+
//
// Names are base names: no '/', no NUL, no leading dot.
//
// # Security
//
// Image files are untrusted input: they may come from another machine or
// have been edited. Every length and count is checked against the bytes
// that remain before anything is allocated from it (entries are also capped
// at MaxEntrySize, the sidecar at 64 MiB), names cannot leave the
// directory, and every malformation is a *FormatError naming the file and
// byte offset. Checksums detect damage, not tampering: anyone who can write
// the directory can rewrite the sidecar too.
package image
