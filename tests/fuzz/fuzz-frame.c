/*
 * Fuzzes the frame reassembler. The first 8 bytes seed the chunking, the rest
 * is the stream. Oracles: feeding in random chunks gives the same frames and
 * the same result as feeding in one call, and the delivered frames re-encode
 * to exactly the prefix of the stream that was consumed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "transport/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_out {
	uint8_t *buf;
	size_t len;
	size_t cap;
	size_t frames;
};

static int fuzz_collect(void *user, const uint8_t *body, size_t len)
{
	struct fuzz_out *o = user;

	if (len == 0 || len > FRAME_MAX)
		abort();
	if (o->len + 2 + len > o->cap)
		abort();
	if (frame_header(len, o->buf + o->len) != PKS_OK)
		abort();
	memcpy(o->buf + o->len + 2, body, len);
	o->len += 2 + len;
	o->frames++;
	return PKS_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct frame_reader r;
	struct fuzz_out whole = {0}, chunked = {0};
	uint64_t seed = 0;
	int r_whole, r_chunked = PKS_OK;

	if (size < 8)
		return 0;
	for (int i = 0; i < 8; i++)
		seed = (seed << 8) | data[i];
	data += 8;
	size -= 8;
	whole.cap = size;
	chunked.cap = size;
	whole.buf = malloc(size ? size : 1);
	chunked.buf = malloc(size ? size : 1);
	if (whole.buf == NULL || chunked.buf == NULL)
		abort();

	frame_reader_init(&r);
	r_whole = frame_reader_feed(&r, data, size, fuzz_collect, &whole);

	frame_reader_init(&r);
	for (size_t pos = 0; pos < size && r_chunked == PKS_OK;) {
		size_t n;
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		n = (size_t)(seed >> 33) % 9;
		if (n == 8)
			n = (size_t)(seed >> 40) % 70000;
		if (n > size - pos)
			n = size - pos;
		r_chunked = frame_reader_feed(&r, data + pos, n, fuzz_collect, &chunked);
		pos += n;
	}
	if (r_whole != r_chunked || whole.frames != chunked.frames || whole.len != chunked.len)
		abort();
	if (memcmp(whole.buf, chunked.buf, whole.len) != 0)
		abort();
	if (memcmp(whole.buf, data, whole.len) != 0)
		abort();
	if (r_whole != PKS_OK && r_whole != PKS_ERR_MALFORMED)
		abort();
	/* A malformed stream stays malformed. */
	if (r_whole == PKS_ERR_MALFORMED &&
	    frame_reader_feed(&r, data, size, fuzz_collect, &chunked) != PKS_ERR_MALFORMED)
		abort();
	free(whole.buf);
	free(chunked.buf);
	return 0;
}
