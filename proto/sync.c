/*
 * The sync engine (DESIGN §6): the message codec and the session state
 * machine described in sync.h.
 *
 * The codec writes canonical CBOR (shortest heads, definite lengths) and
 * reads with libcbor's streaming decoder following the schema, so no tree is
 * built and nesting is fixed by the code; it then re-encodes what it read and
 * compares bytes, which rejects every non-canonical form without a rule per
 * form.
 */
#include "proto/sync.h"

#include <cbor.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/err.h"

/* ---- encoding ---- */

static int sync_enc_head(struct pks_buf *b, size_t n, const unsigned char *head)
{
	return n == 0 ? PKS_ERR_INTERNAL : pks_buf_append(b, head, n);
}

static int sync_enc_uint(struct pks_buf *b, uint64_t value)
{
	unsigned char head[9];

	return sync_enc_head(b, cbor_encode_uint(value, head, sizeof(head)), head);
}

static int sync_enc_bytes(struct pks_buf *b, const uint8_t *p, size_t len)
{
	unsigned char head[9];
	int r = sync_enc_head(b, cbor_encode_bytestring_start(len, head, sizeof(head)), head);

	if (r == PKS_OK && len > 0)
		r = pks_buf_append(b, p, len);
	return r;
}

static int sync_enc_array(struct pks_buf *b, size_t n)
{
	unsigned char head[9];

	return sync_enc_head(b, cbor_encode_array_start(n, head, sizeof(head)), head);
}

static int sync_enc_bool(struct pks_buf *b, bool value)
{
	unsigned char head[1];

	return sync_enc_head(b, cbor_encode_bool(value, head, sizeof(head)), head);
}

static bool sync_author_less(const uint8_t *a, const uint8_t *b)
{
	return memcmp(a, b, SYNC_ID_LEN) < 0;
}

/* The checks the decoder makes on values, so the encoder never writes what it would refuse. */
static int sync_msg_check(const struct sync_msg *m)
{
	switch (m->type) {
	case SYNC_MSG_HELLO:
		if (m->n_heads > SYNC_HEADS_MAX)
			return PKS_ERR_TOO_LARGE;
		return PKS_OK;
	case SYNC_MSG_MEMB_OPS:
	case SYNC_MSG_VERSIONS:
		if (m->n_blobs > SYNC_BLOBS_MAX)
			return PKS_ERR_TOO_LARGE;
		if (m->type == SYNC_MSG_VERSIONS && m->batch == 0)
			return PKS_ERR_MALFORMED;
		for (size_t i = 0; i < m->n_blobs; i++) {
			if (m->blobs[i].len > SYNC_BLOB_MAX)
				return PKS_ERR_TOO_LARGE;
			if (m->blobs[i].len == 0 || m->blobs[i].data == NULL)
				return PKS_ERR_MALFORMED;
		}
		return PKS_OK;
	case SYNC_MSG_STATE:
		if (m->vector.n > SYNC_AUTHORS_MAX)
			return PKS_ERR_TOO_LARGE;
		for (size_t i = 0; i < m->vector.n; i++) {
			if (m->vector.e[i].seq == 0)
				return PKS_ERR_MALFORMED;
			if (i > 0 &&
			    !sync_author_less(m->vector.e[i - 1].author, m->vector.e[i].author))
				return PKS_ERR_MALFORMED;
		}
		return PKS_OK;
	case SYNC_MSG_ACK:
		return m->batch == 0 ? PKS_ERR_MALFORMED : PKS_OK;
	case SYNC_MSG_DONE:
		return PKS_OK;
	case SYNC_MSG_SUMMARY:
		if (m->n_summary > SYNC_AUTHORS_MAX)
			return PKS_ERR_TOO_LARGE;
		for (size_t i = 0; i < m->n_summary; i++) {
			if (m->summary[i].seq == 0)
				return PKS_ERR_MALFORMED;
			if (i > 0 &&
			    !sync_author_less(m->summary[i - 1].author, m->summary[i].author))
				return PKS_ERR_MALFORMED;
		}
		return PKS_OK;
	}
	return PKS_ERR_MALFORMED;
}

static int sync_enc_body(struct pks_buf *b, const struct sync_msg *m)
{
	int r;

	switch (m->type) {
	case SYNC_MSG_HELLO:
		if ((r = sync_enc_array(b, 4)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->version)) != PKS_OK ||
		    (r = sync_enc_array(b, m->n_heads)) != PKS_OK)
			return r;
		for (size_t i = 0; i < m->n_heads; i++)
			if ((r = sync_enc_bytes(b, m->heads[i], SYNC_ID_LEN)) != PKS_OK)
				return r;
		return sync_enc_bytes(b, m->digest, SYNC_DIGEST_LEN);
	case SYNC_MSG_MEMB_OPS:
	case SYNC_MSG_VERSIONS:
		if ((r = sync_enc_array(b, m->type == SYNC_MSG_VERSIONS ? 4 : 3)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK)
			return r;
		if (m->type == SYNC_MSG_VERSIONS && (r = sync_enc_uint(b, m->batch)) != PKS_OK)
			return r;
		if ((r = sync_enc_array(b, m->n_blobs)) != PKS_OK)
			return r;
		for (size_t i = 0; i < m->n_blobs; i++)
			if ((r = sync_enc_bytes(b, m->blobs[i].data, m->blobs[i].len)) != PKS_OK)
				return r;
		return sync_enc_bool(b, m->end);
	case SYNC_MSG_STATE:
		if ((r = sync_enc_array(b, 4)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK ||
		    (r = sync_enc_array(b, m->vector.n)) != PKS_OK)
			return r;
		for (size_t i = 0; i < m->vector.n; i++)
			if ((r = sync_enc_array(b, 2)) != PKS_OK ||
			    (r = sync_enc_bytes(b, m->vector.e[i].author, SYNC_ID_LEN)) != PKS_OK ||
			    (r = sync_enc_uint(b, m->vector.e[i].seq)) != PKS_OK)
				return r;
		if ((r = sync_enc_bytes(b, m->digest, SYNC_DIGEST_LEN)) != PKS_OK)
			return r;
		return sync_enc_uint(b, m->records);
	case SYNC_MSG_ACK:
		if ((r = sync_enc_array(b, 2)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK)
			return r;
		return sync_enc_uint(b, m->batch);
	case SYNC_MSG_DONE:
		if ((r = sync_enc_array(b, 2)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK)
			return r;
		return sync_enc_bytes(b, m->digest, SYNC_DIGEST_LEN);
	case SYNC_MSG_SUMMARY:
		if ((r = sync_enc_array(b, 3)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK ||
		    (r = sync_enc_array(b, m->n_summary)) != PKS_OK)
			return r;
		for (size_t i = 0; i < m->n_summary; i++)
			if ((r = sync_enc_array(b, 3)) != PKS_OK ||
			    (r = sync_enc_bytes(b, m->summary[i].author, SYNC_ID_LEN)) != PKS_OK ||
			    (r = sync_enc_uint(b, m->summary[i].seq)) != PKS_OK ||
			    (r = sync_enc_bytes(b, m->summary[i].hash, SYNC_DIGEST_LEN)) != PKS_OK)
				return r;
		return sync_enc_bool(b, m->end);
	}
	return PKS_ERR_INVALID;
}

int sync_msg_encode(const struct sync_msg *msg, uint8_t **out, size_t *out_len)
{
	struct pks_buf b;
	int r = PKS_ERR_INVALID;

	pks_buf_init(&b, SYNC_MSG_MAX);
	if (msg == NULL || out == NULL || out_len == NULL)
		goto out;
	r = sync_msg_check(msg);
	if (r != PKS_OK)
		goto out;
	r = sync_enc_body(&b, msg);
	if (r != PKS_OK)
		goto out;
	pks_buf_take(&b, out, out_len);
out:
	pks_buf_free(&b);
	return r;
}

/* ---- decoding ---- */

enum sync_ev_kind {
	SYNC_EV_NONE = 0,
	SYNC_EV_UINT,
	SYNC_EV_BYTES,
	SYNC_EV_ARRAY,
	SYNC_EV_BOOL,
	/* An indefinite-length item or break: valid CBOR, never canonical. */
	SYNC_EV_INDEFINITE,
	/* Negative integers, text, maps, tags, floats, null: never in this schema. */
	SYNC_EV_FOREIGN,
};

struct sync_ev {
	enum sync_ev_kind kind;
	uint64_t u; /* integer value, array size, bool */
	const uint8_t *p;
	size_t len;
};

struct sync_reader {
	const uint8_t *buf;
	size_t len;
	size_t off;
};

static void sync_cb_set(void *ctx, enum sync_ev_kind kind, uint64_t u, const uint8_t *p, size_t len)
{
	*(struct sync_ev *)ctx = (struct sync_ev){kind, u, p, len};
}

static void sync_cb_u8(void *ctx, uint8_t value)
{
	sync_cb_set(ctx, SYNC_EV_UINT, value, NULL, 0);
}

static void sync_cb_u16(void *ctx, uint16_t value)
{
	sync_cb_set(ctx, SYNC_EV_UINT, value, NULL, 0);
}

static void sync_cb_u32(void *ctx, uint32_t value)
{
	sync_cb_set(ctx, SYNC_EV_UINT, value, NULL, 0);
}

static void sync_cb_u64(void *ctx, uint64_t value)
{
	sync_cb_set(ctx, SYNC_EV_UINT, value, NULL, 0);
}

static void sync_cb_foreign(void *ctx)
{
	sync_cb_set(ctx, SYNC_EV_FOREIGN, 0, NULL, 0);
}

static void sync_cb_n8(void *ctx, uint8_t value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_n16(void *ctx, uint16_t value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_n32(void *ctx, uint32_t value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_n64(void *ctx, uint64_t value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_bytes(void *ctx, cbor_data p, size_t len)
{
	sync_cb_set(ctx, SYNC_EV_BYTES, 0, p, len);
}

static void sync_cb_text(void *ctx, cbor_data p, size_t len)
{
	(void)p;
	(void)len;
	sync_cb_foreign(ctx);
}

static void sync_cb_array(void *ctx, size_t n)
{
	sync_cb_set(ctx, SYNC_EV_ARRAY, n, NULL, 0);
}

static void sync_cb_map(void *ctx, size_t n)
{
	(void)n;
	sync_cb_foreign(ctx);
}

static void sync_cb_bool(void *ctx, bool value)
{
	sync_cb_set(ctx, SYNC_EV_BOOL, value, NULL, 0);
}

static void sync_cb_indefinite(void *ctx)
{
	sync_cb_set(ctx, SYNC_EV_INDEFINITE, 0, NULL, 0);
}

static void sync_cb_tag(void *ctx, uint64_t value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_float(void *ctx, float value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_double(void *ctx, double value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static const struct cbor_callbacks sync_callbacks = {
    .uint8 = sync_cb_u8,
    .uint16 = sync_cb_u16,
    .uint32 = sync_cb_u32,
    .uint64 = sync_cb_u64,
    .negint8 = sync_cb_n8,
    .negint16 = sync_cb_n16,
    .negint32 = sync_cb_n32,
    .negint64 = sync_cb_n64,
    .byte_string_start = sync_cb_indefinite,
    .byte_string = sync_cb_bytes,
    .string = sync_cb_text,
    .string_start = sync_cb_indefinite,
    .indef_array_start = sync_cb_indefinite,
    .array_start = sync_cb_array,
    .indef_map_start = sync_cb_indefinite,
    .map_start = sync_cb_map,
    .tag = sync_cb_tag,
    .float2 = sync_cb_float,
    .float4 = sync_cb_float,
    .float8 = sync_cb_double,
    .undefined = sync_cb_foreign,
    .null = sync_cb_foreign,
    .boolean = sync_cb_bool,
    .indef_break = sync_cb_indefinite,
};

/*
 * Reads the next item head (with a byte string's payload) and checks its
 * kind: PKS_ERR_NONCANONICAL for indefinite items, PKS_ERR_MALFORMED for
 * another kind or broken CBOR, PKS_ERR_TRUNCATED when the input ends.
 */
static int sync_next(struct sync_reader *rd, enum sync_ev_kind want, struct sync_ev *ev)
{
	struct cbor_decoder_result res;
	struct sync_ev tmp = {SYNC_EV_NONE, 0, NULL, 0};

	if (rd->off >= rd->len)
		return PKS_ERR_TRUNCATED;
	res = cbor_stream_decode(rd->buf + rd->off, rd->len - rd->off, &sync_callbacks, &tmp);
	if (res.status == CBOR_DECODER_NEDATA)
		return PKS_ERR_TRUNCATED;
	if (res.status != CBOR_DECODER_FINISHED || res.read == 0 || res.read > rd->len - rd->off ||
	    tmp.kind == SYNC_EV_NONE)
		return PKS_ERR_MALFORMED;
	rd->off += res.read;
	if (tmp.kind == SYNC_EV_INDEFINITE)
		return PKS_ERR_NONCANONICAL;
	if (tmp.kind != want)
		return PKS_ERR_MALFORMED;
	*ev = tmp;
	return PKS_OK;
}

static int sync_read_uint(struct sync_reader *rd, uint64_t *out)
{
	struct sync_ev ev;
	int r = sync_next(rd, SYNC_EV_UINT, &ev);

	if (r == PKS_OK)
		*out = ev.u;
	return r;
}

static int sync_read_bool(struct sync_reader *rd, bool *out)
{
	struct sync_ev ev;
	int r = sync_next(rd, SYNC_EV_BOOL, &ev);

	if (r == PKS_OK)
		*out = ev.u != 0;
	return r;
}

static int sync_read_fixed(struct sync_reader *rd, uint8_t *out, size_t len)
{
	struct sync_ev ev;
	int r = sync_next(rd, SYNC_EV_BYTES, &ev);

	if (r != PKS_OK)
		return r;
	if (ev.len != len)
		return PKS_ERR_MALFORMED;
	memcpy(out, ev.p, len);
	return PKS_OK;
}

/* An array head with n items, exactly (want_max == 0) or at most want_max. */
static int sync_read_array(struct sync_reader *rd, size_t exact, size_t max, size_t *n)
{
	struct sync_ev ev;
	int r = sync_next(rd, SYNC_EV_ARRAY, &ev);

	if (r != PKS_OK)
		return r;
	if (max == 0 && ev.u != exact)
		return PKS_ERR_MALFORMED;
	if (max > 0 && ev.u > max)
		return PKS_ERR_TOO_LARGE;
	if (n != NULL)
		*n = (size_t)ev.u;
	return PKS_OK;
}

static int sync_read_blobs(struct sync_reader *rd, struct sync_msg *m)
{
	struct sync_ev ev;
	size_t n;
	int r = sync_read_array(rd, 0, SYNC_BLOBS_MAX, &n);

	for (size_t i = 0; r == PKS_OK && i < n; i++) {
		r = sync_next(rd, SYNC_EV_BYTES, &ev);
		if (r != PKS_OK)
			break;
		if (ev.len > SYNC_BLOB_MAX)
			r = PKS_ERR_TOO_LARGE;
		else if (ev.len == 0)
			r = PKS_ERR_MALFORMED;
		else
			m->blobs[i] = (struct sync_blob){ev.p, ev.len};
	}
	if (r == PKS_OK)
		m->n_blobs = n;
	return r;
}

/* The body after the type; values are range-checked afterwards by sync_msg_check. */
static int sync_read_body(struct sync_reader *rd, size_t items, struct sync_msg *m)
{
	size_t n;
	int r = PKS_ERR_MALFORMED;

	switch (m->type) {
	case SYNC_MSG_HELLO:
		if (items != 4)
			return PKS_ERR_MALFORMED;
		if ((r = sync_read_uint(rd, &m->version)) != PKS_OK ||
		    (r = sync_read_array(rd, 0, SYNC_HEADS_MAX, &n)) != PKS_OK)
			return r;
		for (size_t i = 0; i < n; i++)
			if ((r = sync_read_fixed(rd, m->heads[i], SYNC_ID_LEN)) != PKS_OK)
				return r;
		m->n_heads = n;
		return sync_read_fixed(rd, m->digest, SYNC_DIGEST_LEN);
	case SYNC_MSG_MEMB_OPS:
		if (items != 3)
			return PKS_ERR_MALFORMED;
		if ((r = sync_read_blobs(rd, m)) != PKS_OK)
			return r;
		return sync_read_bool(rd, &m->end);
	case SYNC_MSG_VERSIONS:
		if (items != 4)
			return PKS_ERR_MALFORMED;
		if ((r = sync_read_uint(rd, &m->batch)) != PKS_OK ||
		    (r = sync_read_blobs(rd, m)) != PKS_OK)
			return r;
		return sync_read_bool(rd, &m->end);
	case SYNC_MSG_STATE:
		if (items != 4)
			return PKS_ERR_MALFORMED;
		if ((r = sync_read_array(rd, 0, SYNC_AUTHORS_MAX, &n)) != PKS_OK)
			return r;
		for (size_t i = 0; i < n; i++)
			if ((r = sync_read_array(rd, 2, 0, NULL)) != PKS_OK ||
			    (r = sync_read_fixed(rd, m->vector.e[i].author, SYNC_ID_LEN)) !=
				PKS_OK ||
			    (r = sync_read_uint(rd, &m->vector.e[i].seq)) != PKS_OK)
				return r;
		m->vector.n = n;
		if ((r = sync_read_fixed(rd, m->digest, SYNC_DIGEST_LEN)) != PKS_OK)
			return r;
		return sync_read_uint(rd, &m->records);
	case SYNC_MSG_ACK:
		if (items != 2)
			return PKS_ERR_MALFORMED;
		return sync_read_uint(rd, &m->batch);
	case SYNC_MSG_DONE:
		if (items != 2)
			return PKS_ERR_MALFORMED;
		return sync_read_fixed(rd, m->digest, SYNC_DIGEST_LEN);
	case SYNC_MSG_SUMMARY:
		if (items != 3)
			return PKS_ERR_MALFORMED;
		if ((r = sync_read_array(rd, 0, SYNC_AUTHORS_MAX, &n)) != PKS_OK)
			return r;
		for (size_t i = 0; i < n; i++)
			if ((r = sync_read_array(rd, 3, 0, NULL)) != PKS_OK ||
			    (r = sync_read_fixed(rd, m->summary[i].author, SYNC_ID_LEN)) !=
				PKS_OK ||
			    (r = sync_read_uint(rd, &m->summary[i].seq)) != PKS_OK ||
			    (r = sync_read_fixed(rd, m->summary[i].hash, SYNC_DIGEST_LEN)) !=
				PKS_OK)
				return r;
		m->n_summary = n;
		return sync_read_bool(rd, &m->end);
	}
	return r;
}

int sync_msg_decode(const uint8_t *buf, size_t len, struct sync_msg *msg)
{
	struct sync_reader rd = {buf, len, 0};
	struct sync_msg *m = NULL;
	uint8_t *again = NULL;
	size_t again_len = 0, items;
	uint64_t type;
	int r = PKS_ERR_INVALID;

	if ((buf == NULL && len > 0) || msg == NULL)
		goto out;
	if (len > SYNC_MSG_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	/* Decoded aside so *msg is written only on success. */
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	r = sync_read_array(&rd, 0, 4, &items);
	if (r == PKS_ERR_TOO_LARGE)
		r = PKS_ERR_MALFORMED;
	if (r != PKS_OK)
		goto out;
	if (items < 2) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	r = sync_read_uint(&rd, &type);
	if (r != PKS_OK)
		goto out;
	if (type < SYNC_MSG_HELLO || type > SYNC_MSG_SUMMARY) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	m->type = (enum sync_msg_type)type;
	r = sync_read_body(&rd, items, m);
	if (r != PKS_OK)
		goto out;
	if (rd.off != rd.len) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	r = sync_msg_check(m);
	if (r != PKS_OK)
		goto out;
	r = sync_msg_encode(m, &again, &again_len);
	if (r != PKS_OK)
		goto out;
	if (again_len != len || memcmp(again, buf, len) != 0) {
		r = PKS_ERR_NONCANONICAL;
		goto out;
	}
	memcpy(msg, m, sizeof(*msg));
	r = PKS_OK;
out:
	free(again);
	free(m);
	return r;
}
