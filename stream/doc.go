// Package stream is CRIU's image streamer protocol (criu --stream, CRIU 4.2's
// criu/img-streamer.c), both directions, and imgtool's stream format that carries
// a whole image set through one byte stream (a pipe, ssh).
//
// The protocol: CRIU connects to a UNIX stream socket in its images folder,
// CaptureSocket on dump and ServeSocket on restore. Each message is a 32-bit
// little-endian length and a protobuf message (img_streamer_request_entry from
// CRIU, img_streamer_reply_entry to it). For every image file CRIU sends the
// file's name, then one end of a pipe it made, over SCM_RIGHTS with one dummy
// byte. On dump CRIU writes the image into the pipe (Capture reads it); on
// restore the streamer first replies whether the file exists and, if it does,
// writes the file into the pipe CRIU then sends (Serve). CRIU closes the socket
// when it needs no more files.
//
// CRIU never says whether its dump succeeded. It writes inventory.img last,
// once every process is dumped, and only then: Capture treats a connection that
// ends without a complete inventory.img as a failed dump (ErrIncomplete).
//
// Nothing here parses a command line or prints: imgtool/stream.go does.
package stream
