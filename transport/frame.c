#include "transport/frame.h"

#include <string.h>

#include "common/err.h"

/*
 * The reader is failed when its header is complete and announced zero bytes;
 * a valid state never looks like that, so no extra field is needed.
 */
static int frame_reader_failed(const struct frame_reader *r)
{
	return r->hdr_got == FRAME_HEADER_BYTES && r->want == 0;
}

void frame_reader_init(struct frame_reader *r)
{
	r->hdr[0] = 0;
	r->hdr[1] = 0;
	r->hdr_got = 0;
	r->want = 0;
	r->got = 0;
}

int frame_reader_feed(struct frame_reader *r, const uint8_t *data, size_t len, frame_fn fn,
		      void *user)
{
	size_t pos = 0;
	int ret = PKS_ERR_INVALID;

	if (r == NULL || fn == NULL || (data == NULL && len > 0))
		goto out;
	ret = PKS_ERR_MALFORMED;
	if (frame_reader_failed(r))
		goto out;
	while (pos < len) {
		if (r->hdr_got < FRAME_HEADER_BYTES) {
			r->hdr[r->hdr_got++] = data[pos++];
			if (r->hdr_got < FRAME_HEADER_BYTES)
				continue;
			r->want = ((size_t)r->hdr[0] << 8) | r->hdr[1];
			r->got = 0;
			ret = PKS_ERR_MALFORMED;
			if (r->want == 0)
				goto out;
			/* The whole body is in data: hand it over without a copy. */
			if (len - pos >= r->want) {
				const uint8_t *body = data + pos;
				size_t body_len = r->want;

				pos += body_len;
				frame_reader_init(r);
				ret = fn(user, body, body_len);
				if (ret != PKS_OK)
					goto out;
			}
			continue;
		}
		size_t take = r->want - r->got;
		if (take > len - pos)
			take = len - pos;
		memcpy(r->body + r->got, data + pos, take);
		r->got += take;
		pos += take;
		if (r->got == r->want) {
			size_t body_len = r->want;

			frame_reader_init(r);
			ret = fn(user, r->body, body_len);
			if (ret != PKS_OK)
				goto out;
		}
	}
	ret = PKS_OK;
out:
	return ret;
}

int frame_header(size_t len, uint8_t out[2])
{
	if (len == 0)
		return PKS_ERR_INVALID;
	if (len > FRAME_MAX)
		return PKS_ERR_TOO_LARGE;
	out[0] = (uint8_t)(len >> 8);
	out[1] = (uint8_t)(len & 0xff);
	return PKS_OK;
}
