// Package imageset owns the set of files that makes one image: their names
// and magics (CRIU's, so that crit and CRIU find them), the CRIU constants
// that are part of the image format, and the one loader that reads a whole
// image and checks that its parts agree, for restore and show alike.
//
// Package image below it owns the bytes (framing, completeness, the
// checksum sidecar) and knows nothing of what the messages mean; this
// package knows which messages make an image and how they refer to each
// other, but nothing of how a process is rebuilt from them. What a kind of
// file descriptor stores beside files.img (pipe data, socket queues,
// memfd inodes) is that kind's business (package files); the names are
// here so that every file of an image is listed in one place.
//
// # Security
//
// Everything Load returns was read from untrusted files: it is bounded and
// cross-checked (every reference between images resolves), but its values
// mean nothing until the code that applies them checks them against what
// the restorer may do (docs/security.md).
package imageset
