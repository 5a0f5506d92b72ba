/*
 * Length-prefixed frames on a byte stream: a 2-byte big-endian length, then
 * that many body bytes (1..FRAME_MAX; a zero length is a protocol error).
 * The reader is pure (no I/O) and holds at most one frame, so a connection's
 * receive memory is bounded by sizeof(struct frame_reader).
 */
#ifndef PKS_TRANSPORT_FRAME_H
#define PKS_TRANSPORT_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_MAX 65535
#define FRAME_HEADER_BYTES 2

/* A plain value without secrets; the body buffer is inline. */
struct frame_reader {
	uint8_t hdr[2];
	size_t hdr_got;
	size_t want;
	size_t got;
	uint8_t body[FRAME_MAX];
};

/* Resets r to expect a frame header. */
void frame_reader_init(struct frame_reader *r);

/*
 * Receives one whole frame. body is only valid during the call (it may point
 * into the caller's data or into the reader). Return PKS_OK to continue;
 * anything else stops feeding and is returned by frame_reader_feed().
 */
typedef int (*frame_fn)(void *user, const uint8_t *body, size_t len);

/*
 * Feeds len bytes of the stream, in any chunking, and calls fn once per
 * completed frame, in order. Returns PKS_OK when all data was consumed,
 * PKS_ERR_MALFORMED on a zero length header (the reader then stays failed:
 * every later call returns PKS_ERR_MALFORMED until frame_reader_init()),
 * PKS_ERR_INVALID on NULL arguments, or whatever fn returned (the bytes after
 * that frame were not consumed).
 */
int frame_reader_feed(struct frame_reader *r, const uint8_t *data, size_t len, frame_fn fn,
		      void *user);

/*
 * Writes the header for a body of len bytes. PKS_ERR_INVALID for len 0,
 * PKS_ERR_TOO_LARGE above FRAME_MAX; out is untouched on error.
 */
int frame_header(size_t len, uint8_t out[2]);

#endif
