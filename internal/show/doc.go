// Package show turns an image directory into a description a person can
// read (or a program can parse, as JSON): which processes it holds, their
// threads, memory mappings, file descriptors, signal handlers, and what the
// dump recorded about itself. It owns presentation only: it reads images
// through package image and never writes anything.
//
// # Security
//
// Image files are untrusted input. Everything is read through image.Open,
// which verifies the checksum sidecar and bounds every entry; show
// additionally never sizes anything by a count from an image (page counts
// and address ranges saturate rather than overflow) and prints names from
// the image quoted where they could contain control characters.
package show
