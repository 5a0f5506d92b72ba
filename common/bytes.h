/*
 * Bounds-checked reading (struct pks_cursor) and growable writing
 * (struct pks_buf). Both are plain values; a pks_buf owns its memory.
 */
#ifndef PKS_BYTES_H
#define PKS_BYTES_H

#include <stddef.h>
#include <stdint.h>

struct pks_cursor {
	const uint8_t *data;
	size_t len;
	size_t off;
};

static inline struct pks_cursor pks_cursor_init(const uint8_t *data, size_t len)
{
	struct pks_cursor c = {data, len, 0};
	return c;
}

static inline size_t pks_cursor_left(const struct pks_cursor *c)
{
	return c->len - c->off;
}

/* Borrows the next n bytes into *out; PKS_ERR_TRUNCATED when fewer remain. */
int pks_cursor_take(struct pks_cursor *c, size_t n, const uint8_t **out);
/* Copies the next n bytes into out. */
int pks_cursor_read(struct pks_cursor *c, void *out, size_t n);
int pks_cursor_u8(struct pks_cursor *c, uint8_t *out);
int pks_cursor_be16(struct pks_cursor *c, uint16_t *out);
int pks_cursor_be32(struct pks_cursor *c, uint32_t *out);
int pks_cursor_be64(struct pks_cursor *c, uint64_t *out);

/*
 * A growable byte buffer with a hard capacity limit (0 means 64 MiB). Memory
 * is wiped when freed or grown, so it may hold secrets transiently.
 */
struct pks_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	size_t limit;
};

void pks_buf_init(struct pks_buf *b, size_t limit);
/* Wipes and frees the contents; the struct may be reused after pks_buf_init. */
void pks_buf_free(struct pks_buf *b);
/* PKS_ERR_TOO_LARGE past the limit, PKS_ERR_NOMEM when allocation fails. */
int pks_buf_reserve(struct pks_buf *b, size_t extra);
int pks_buf_append(struct pks_buf *b, const void *data, size_t n);
int pks_buf_u8(struct pks_buf *b, uint8_t v);
int pks_buf_be16(struct pks_buf *b, uint16_t v);
int pks_buf_be32(struct pks_buf *b, uint32_t v);
int pks_buf_be64(struct pks_buf *b, uint64_t v);
/* Moves the contents out: *out must later be freed with free(). */
void pks_buf_take(struct pks_buf *b, uint8_t **out, size_t *out_len);

#endif
