#include "common/bytes.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

#define PKS_BUF_DEFAULT_LIMIT ((size_t)64 * 1024 * 1024)

int pks_cursor_take(struct pks_cursor *c, size_t n, const uint8_t **out)
{
	if (n > pks_cursor_left(c))
		return PKS_ERR_TRUNCATED;
	*out = c->data + c->off;
	c->off += n;
	return PKS_OK;
}

int pks_cursor_read(struct pks_cursor *c, void *out, size_t n)
{
	const uint8_t *p;
	int r = pks_cursor_take(c, n, &p);

	if (r == PKS_OK && n > 0)
		memcpy(out, p, n);
	return r;
}

int pks_cursor_u8(struct pks_cursor *c, uint8_t *out)
{
	return pks_cursor_read(c, out, 1);
}

static int cursor_be(struct pks_cursor *c, size_t n, uint64_t *out)
{
	const uint8_t *p;
	uint64_t v = 0;
	int r = pks_cursor_take(c, n, &p);

	if (r != PKS_OK)
		return r;
	for (size_t i = 0; i < n; i++)
		v = (v << 8) | p[i];
	*out = v;
	return PKS_OK;
}

int pks_cursor_be16(struct pks_cursor *c, uint16_t *out)
{
	uint64_t v;
	int r = cursor_be(c, 2, &v);

	if (r == PKS_OK)
		*out = (uint16_t)v;
	return r;
}

int pks_cursor_be32(struct pks_cursor *c, uint32_t *out)
{
	uint64_t v;
	int r = cursor_be(c, 4, &v);

	if (r == PKS_OK)
		*out = (uint32_t)v;
	return r;
}

int pks_cursor_be64(struct pks_cursor *c, uint64_t *out)
{
	return cursor_be(c, 8, out);
}

void pks_buf_init(struct pks_buf *b, size_t limit)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->limit = limit ? limit : PKS_BUF_DEFAULT_LIMIT;
}

void pks_buf_free(struct pks_buf *b)
{
	if (b->data != NULL) {
		sodium_memzero(b->data, b->cap);
		free(b->data);
	}
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

int pks_buf_reserve(struct pks_buf *b, size_t extra)
{
	size_t want, cap;
	uint8_t *p;

	if (extra > b->limit || b->len > b->limit - extra)
		return PKS_ERR_TOO_LARGE;
	want = b->len + extra;
	if (want <= b->cap)
		return PKS_OK;
	cap = b->cap ? b->cap : 64;
	while (cap < want)
		cap = cap > b->limit / 2 ? b->limit : cap * 2;
	/* Grow by copy rather than realloc so the old copy can be wiped. */
	p = malloc(cap);
	if (p == NULL)
		return PKS_ERR_NOMEM;
	if (b->data != NULL) {
		memcpy(p, b->data, b->len);
		sodium_memzero(b->data, b->cap);
		free(b->data);
	}
	b->data = p;
	b->cap = cap;
	return PKS_OK;
}

int pks_buf_append(struct pks_buf *b, const void *data, size_t n)
{
	int r = pks_buf_reserve(b, n);

	if (r != PKS_OK)
		return r;
	if (n > 0)
		memcpy(b->data + b->len, data, n);
	b->len += n;
	return PKS_OK;
}

int pks_buf_u8(struct pks_buf *b, uint8_t v)
{
	return pks_buf_append(b, &v, 1);
}

static int buf_be(struct pks_buf *b, uint64_t v, size_t n)
{
	uint8_t tmp[8];

	for (size_t i = 0; i < n; i++)
		tmp[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	return pks_buf_append(b, tmp, n);
}

int pks_buf_be16(struct pks_buf *b, uint16_t v)
{
	return buf_be(b, v, 2);
}

int pks_buf_be32(struct pks_buf *b, uint32_t v)
{
	return buf_be(b, v, 4);
}

int pks_buf_be64(struct pks_buf *b, uint64_t v)
{
	return buf_be(b, v, 8);
}

void pks_buf_take(struct pks_buf *b, uint8_t **out, size_t *out_len)
{
	*out = b->data;
	*out_len = b->len;
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}
