/*
 * The sync protocol: the message codec (round trips, limits, canonical form,
 * truncation) and two sessions wired back to back over an in-memory replica.
 */
#include "proto/sync.h"

#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "tests/check.h"
#include "tests/unit/sync-test-replica.h"

/* ---- a raw CBOR writer, to build inputs the encoder would refuse ---- */

struct raw {
	uint8_t *p;
	size_t len, cap;
};

static void raw_put(struct raw *w, const void *data, size_t n)
{
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap < w->len + n)
			cap *= 2;
		w->p = realloc(w->p, cap);
		if (w->p == NULL)
			abort();
		w->cap = cap;
	}
	if (n > 0)
		memcpy(w->p + w->len, data, n);
	w->len += n;
}

/* A shortest-form head of major type mt. */
static void raw_head(struct raw *w, unsigned mt, uint64_t v)
{
	uint8_t h[9];
	size_t n;

	if (v < 24) {
		h[0] = (uint8_t)(mt << 5 | v);
		n = 1;
	} else if (v <= 0xff) {
		h[0] = (uint8_t)(mt << 5 | 24);
		h[1] = (uint8_t)v;
		n = 2;
	} else if (v <= 0xffff) {
		h[0] = (uint8_t)(mt << 5 | 25);
		h[1] = (uint8_t)(v >> 8);
		h[2] = (uint8_t)v;
		n = 3;
	} else if (v <= 0xffffffff) {
		h[0] = (uint8_t)(mt << 5 | 26);
		for (int i = 0; i < 4; i++)
			h[1 + i] = (uint8_t)(v >> (24 - 8 * i));
		n = 5;
	} else {
		h[0] = (uint8_t)(mt << 5 | 27);
		for (int i = 0; i < 8; i++)
			h[1 + i] = (uint8_t)(v >> (56 - 8 * i));
		n = 9;
	}
	raw_put(w, h, n);
}

static void raw_uint(struct raw *w, uint64_t v)
{
	raw_head(w, 0, v);
}

static void raw_bytes(struct raw *w, const uint8_t *p, size_t n)
{
	raw_head(w, 2, n);
	raw_put(w, p, n);
}

static void raw_fill(struct raw *w, uint8_t byte, size_t n)
{
	raw_head(w, 2, n);
	for (size_t i = 0; i < n; i++)
		raw_put(w, &byte, 1);
}

static void raw_array(struct raw *w, size_t n)
{
	raw_head(w, 4, n);
}

static void raw_bool(struct raw *w, bool v)
{
	uint8_t b = v ? 0xf5 : 0xf4;

	raw_put(w, &b, 1);
}

static void raw_free(struct raw *w)
{
	free(w->p);
	*w = (struct raw){0};
}

static struct sync_msg *msg_new(enum sync_msg_type type)
{
	struct sync_msg *m = calloc(1, sizeof(*m));

	if (m == NULL)
		abort();
	m->type = type;
	return m;
}

static void fill_id(uint8_t id[SYNC_ID_LEN], uint32_t n)
{
	memset(id, 0, SYNC_ID_LEN);
	id[0] = (uint8_t)(n >> 24);
	id[1] = (uint8_t)(n >> 16);
	id[2] = (uint8_t)(n >> 8);
	id[3] = (uint8_t)n;
	id[31] = 0x5a;
}

static int decode_raw(const struct raw *w)
{
	struct sync_msg *m = msg_new(SYNC_MSG_ACK);
	int r = sync_msg_decode(w->p, w->len, m);

	free(m);
	return r;
}

/* Encodes m, decodes it, re-encodes the result and checks the bytes agree; returns the decoded
 * copy. */
static struct sync_msg *round_trip(const struct sync_msg *m)
{
	struct sync_msg *d = msg_new(SYNC_MSG_ACK);
	uint8_t *enc = NULL, *again = NULL;
	size_t enc_len = 0, again_len = 0;

	CHECK_OK(sync_msg_encode(m, &enc, &enc_len));
	CHECK(enc_len <= SYNC_MSG_MAX);
	CHECK_OK(sync_msg_decode(enc, enc_len, d));
	CHECK_EQ(d->type, m->type);
	CHECK_OK(sync_msg_encode(d, &again, &again_len));
	CHECK_EQ(again_len, enc_len);
	if (again_len == enc_len)
		CHECK_MEM_EQ(again, enc, enc_len);
	/* Blob pointers point into enc: compare them before it goes. */
	CHECK_EQ(d->n_blobs, m->n_blobs);
	for (size_t i = 0; i < d->n_blobs && i < m->n_blobs; i++) {
		CHECK_EQ(d->blobs[i].len, m->blobs[i].len);
		if (d->blobs[i].len == m->blobs[i].len)
			CHECK_MEM_EQ(d->blobs[i].data, m->blobs[i].data, m->blobs[i].len);
		CHECK(d->blobs[i].data >= enc && d->blobs[i].data < enc + enc_len);
		d->blobs[i] = (struct sync_blob){NULL, 0};
	}
	/* Every prefix is refused, as truncated. */
	for (size_t n = 0; n < enc_len; n++) {
		int r = sync_msg_decode(enc, n, d);
		if (r != PKS_ERR_TRUNCATED) {
			CHECK_FAIL_AT("prefix %zu of %zu (type %d): %d", n, enc_len, m->type, r);
			break;
		}
	}
	free(enc);
	free(again);
	return d;
}

static void test_codec_round_trip(void)
{
	static const uint8_t op1[] = {1, 2, 3}, op2[] = {0xff};
	struct sync_msg *m, *d;

	m = msg_new(SYNC_MSG_HELLO);
	m->version = SYNC_PROTOCOL_VERSION;
	m->n_heads = 3;
	for (uint32_t i = 0; i < 3; i++)
		fill_id(m->heads[i], 7 * i + 1);
	memset(m->digest, 0xab, SYNC_DIGEST_LEN);
	d = round_trip(m);
	CHECK_EQ(d->version, SYNC_PROTOCOL_VERSION);
	CHECK_EQ(d->n_heads, 3);
	CHECK_MEM_EQ(d->heads, m->heads, 3 * SYNC_ID_LEN);
	CHECK_MEM_EQ(d->digest, m->digest, SYNC_DIGEST_LEN);
	free(d);
	m->n_heads = 0;
	m->version = UINT64_MAX;
	d = round_trip(m);
	CHECK_EQ(d->n_heads, 0);
	CHECK(d->version == UINT64_MAX);
	free(d);
	free(m);

	m = msg_new(SYNC_MSG_MEMB_OPS);
	m->n_blobs = 2;
	m->blobs[0] = (struct sync_blob){op1, sizeof(op1)};
	m->blobs[1] = (struct sync_blob){op2, sizeof(op2)};
	m->end = true;
	d = round_trip(m);
	CHECK(d->end);
	free(d);
	m->n_blobs = 0;
	m->end = false;
	d = round_trip(m);
	CHECK(!d->end);
	CHECK_EQ(d->n_blobs, 0);
	free(d);
	free(m);

	m = msg_new(SYNC_MSG_STATE);
	m->vector.n = 3;
	for (uint32_t i = 0; i < 3; i++) {
		fill_id(m->vector.e[i].author, i * 1000 + 1);
		m->vector.e[i].seq = i == 2 ? UINT64_MAX : 23 + i * 1000;
	}
	memset(m->digest, 0x11, SYNC_DIGEST_LEN);
	m->records = 100000;
	d = round_trip(m);
	CHECK_EQ(d->vector.n, 3);
	CHECK_MEM_EQ(&d->vector.e, &m->vector.e, 3 * sizeof(m->vector.e[0]));
	CHECK_EQ(d->records, 100000);
	CHECK_MEM_EQ(d->digest, m->digest, SYNC_DIGEST_LEN);
	free(d);
	free(m);

	m = msg_new(SYNC_MSG_VERSIONS);
	m->batch = 300;
	m->n_blobs = 2;
	m->blobs[0] = (struct sync_blob){op2, sizeof(op2)};
	m->blobs[1] = (struct sync_blob){op1, sizeof(op1)};
	m->end = true;
	d = round_trip(m);
	CHECK_EQ(d->batch, 300);
	CHECK(d->end);
	free(d);
	m->n_blobs = 0;
	m->end = false;
	m->batch = 1;
	d = round_trip(m);
	CHECK_EQ(d->batch, 1);
	CHECK_EQ(d->n_blobs, 0);
	free(d);
	free(m);

	m = msg_new(SYNC_MSG_ACK);
	m->batch = 70000;
	d = round_trip(m);
	CHECK_EQ(d->batch, 70000);
	free(d);
	free(m);

	m = msg_new(SYNC_MSG_DONE);
	memset(m->digest, 0x5c, SYNC_DIGEST_LEN);
	d = round_trip(m);
	CHECK_MEM_EQ(d->digest, m->digest, SYNC_DIGEST_LEN);
	free(d);
	free(m);

	m = msg_new(SYNC_MSG_SUMMARY);
	m->n_summary = 2;
	for (uint32_t i = 0; i < 2; i++) {
		fill_id(m->summary[i].author, i + 9);
		m->summary[i].seq = 24 + i;
		memset(m->summary[i].hash, (int)i + 1, SYNC_DIGEST_LEN);
	}
	m->end = true;
	d = round_trip(m);
	CHECK_EQ(d->n_summary, 2);
	CHECK_MEM_EQ(d->summary, m->summary, 2 * sizeof(m->summary[0]));
	CHECK(d->end);
	free(d);
	free(m);
}

/* HELLO with n heads, written raw. */
static void raw_hello(struct raw *w, size_t n)
{
	uint8_t id[SYNC_ID_LEN], digest[SYNC_DIGEST_LEN] = {0};

	raw_array(w, 4);
	raw_uint(w, SYNC_MSG_HELLO);
	raw_uint(w, 1);
	raw_array(w, n);
	for (size_t i = 0; i < n; i++) {
		fill_id(id, (uint32_t)i);
		raw_bytes(w, id, sizeof(id));
	}
	raw_bytes(w, digest, sizeof(digest));
}

/* STATE (or SUMMARY) with n ascending authors, written raw. */
static void raw_authors(struct raw *w, enum sync_msg_type type, size_t n)
{
	uint8_t id[SYNC_ID_LEN], digest[SYNC_DIGEST_LEN] = {0};

	raw_array(w, type == SYNC_MSG_STATE ? 4 : 3);
	raw_uint(w, type);
	raw_array(w, n);
	for (size_t i = 0; i < n; i++) {
		fill_id(id, (uint32_t)i);
		raw_array(w, type == SYNC_MSG_STATE ? 2 : 3);
		raw_bytes(w, id, sizeof(id));
		raw_uint(w, i + 1);
		if (type == SYNC_MSG_SUMMARY)
			raw_bytes(w, digest, sizeof(digest));
	}
	if (type == SYNC_MSG_STATE) {
		raw_bytes(w, digest, sizeof(digest));
		raw_uint(w, 0);
	} else {
		raw_bool(w, true);
	}
}

/* VERSIONS (or MEMB_OPS) with n one-byte blobs, written raw. */
static void raw_blobs(struct raw *w, enum sync_msg_type type, size_t n)
{
	raw_array(w, type == SYNC_MSG_VERSIONS ? 4 : 3);
	raw_uint(w, type);
	if (type == SYNC_MSG_VERSIONS)
		raw_uint(w, 1);
	raw_array(w, n);
	for (size_t i = 0; i < n; i++)
		raw_fill(w, (uint8_t)i, 1);
	raw_bool(w, false);
}

static void test_codec_limits(void)
{
	static const enum sync_msg_type author_types[] = {SYNC_MSG_STATE, SYNC_MSG_SUMMARY};
	static const enum sync_msg_type blob_types[] = {SYNC_MSG_VERSIONS, SYNC_MSG_MEMB_OPS};
	struct raw w = {0};
	struct sync_msg *m = msg_new(SYNC_MSG_HELLO);
	uint8_t *big = calloc(1, SYNC_MSG_MAX), *enc = NULL;
	size_t enc_len;

	if (big == NULL)
		abort();
	raw_hello(&w, SYNC_HEADS_MAX);
	CHECK_OK(decode_raw(&w));
	raw_free(&w);
	raw_hello(&w, SYNC_HEADS_MAX + 1);
	CHECK_EQ(decode_raw(&w), PKS_ERR_TOO_LARGE);
	raw_free(&w);
	m->n_heads = SYNC_HEADS_MAX + 1;
	CHECK_EQ(sync_msg_encode(m, &enc, &enc_len), PKS_ERR_TOO_LARGE);

	for (size_t t = 0; t < 2; t++) {
		raw_authors(&w, author_types[t], SYNC_AUTHORS_MAX);
		CHECK_OK(decode_raw(&w));
		raw_free(&w);
		raw_authors(&w, author_types[t], SYNC_AUTHORS_MAX + 1);
		CHECK_EQ(decode_raw(&w), PKS_ERR_TOO_LARGE);
		raw_free(&w);

		raw_blobs(&w, blob_types[t], SYNC_BLOBS_MAX);
		CHECK_OK(decode_raw(&w));
		raw_free(&w);
		raw_blobs(&w, blob_types[t], SYNC_BLOBS_MAX + 1);
		CHECK_EQ(decode_raw(&w), PKS_ERR_TOO_LARGE);
		raw_free(&w);
	}
	m->type = SYNC_MSG_STATE;
	m->vector.n = SYNC_AUTHORS_MAX + 1;
	CHECK_EQ(sync_msg_encode(m, &enc, &enc_len), PKS_ERR_TOO_LARGE);
	m->type = SYNC_MSG_VERSIONS;
	m->batch = 1;
	m->n_blobs = SYNC_BLOBS_MAX + 1;
	CHECK_EQ(sync_msg_encode(m, &enc, &enc_len), PKS_ERR_TOO_LARGE);

	/* One blob of SYNC_BLOB_MAX bytes, then one byte more. */
	for (size_t extra = 0; extra < 2; extra++) {
		raw_array(&w, 3);
		raw_uint(&w, SYNC_MSG_MEMB_OPS);
		raw_array(&w, 1);
		raw_fill(&w, 7, SYNC_BLOB_MAX + extra);
		raw_bool(&w, true);
		CHECK_EQ(decode_raw(&w), extra ? PKS_ERR_TOO_LARGE : PKS_OK);
		raw_free(&w);
		m->type = SYNC_MSG_MEMB_OPS;
		m->n_blobs = 1;
		m->blobs[0] = (struct sync_blob){big, SYNC_BLOB_MAX + extra};
		if (extra) {
			CHECK_EQ(sync_msg_encode(m, &enc, &enc_len), PKS_ERR_TOO_LARGE);
		} else {
			CHECK_OK(sync_msg_encode(m, &enc, &enc_len));
			free(enc);
		}
	}

	/*
	 * A VERSIONS message of exactly SYNC_MSG_MAX bytes, then one more:
	 * 4 head bytes (with the array of 2) + 32771 (first blob) + 3 + n (second) + 1 (bool).
	 */
	for (size_t extra = 0; extra < 2; extra++) {
		size_t second = SYNC_MSG_MAX - 4 - (SYNC_BLOB_MAX + 3) - 3 - 1 + extra;

		raw_array(&w, 4);
		raw_uint(&w, SYNC_MSG_VERSIONS);
		raw_uint(&w, 1);
		raw_array(&w, 2);
		raw_fill(&w, 1, SYNC_BLOB_MAX);
		raw_fill(&w, 2, second);
		raw_bool(&w, false);
		CHECK_EQ(w.len, SYNC_MSG_MAX + extra);
		CHECK_EQ(decode_raw(&w), extra ? PKS_ERR_TOO_LARGE : PKS_OK);
		raw_free(&w);
		m->type = SYNC_MSG_VERSIONS;
		m->n_blobs = 2;
		m->blobs[0] = (struct sync_blob){big, SYNC_BLOB_MAX};
		m->blobs[1] = (struct sync_blob){big, second};
		if (extra) {
			CHECK_EQ(sync_msg_encode(m, &enc, &enc_len), PKS_ERR_TOO_LARGE);
		} else {
			CHECK_OK(sync_msg_encode(m, &enc, &enc_len));
			CHECK_EQ(enc_len, SYNC_MSG_MAX);
			free(enc);
		}
	}
	free(big);
	free(m);
}

static void test_codec_noncanonical(void)
{
	static const uint8_t ack[] = {0x82, 0x05, 0x01};
	static const uint8_t ack_long_type[] = {0x82, 0x18, 0x05, 0x01};
	static const uint8_t ack_long_batch[] = {0x82, 0x05, 0x19, 0x00, 0x01};
	static const uint8_t ack_long_array[] = {0x98, 0x02, 0x05, 0x01};
	static const uint8_t ack_indefinite[] = {0x9f, 0x05, 0x01, 0xff};
	static const uint8_t ack_trailing[] = {0x82, 0x05, 0x01, 0x00};
	static const uint8_t ack_zero[] = {0x82, 0x05, 0x00};
	static const uint8_t ack_negative[] = {0x82, 0x05, 0x20};
	static const uint8_t ack_extra_item[] = {0x83, 0x05, 0x01, 0x01};
	static const uint8_t unknown_type[] = {0x82, 0x08, 0x01};
	static const uint8_t zero_type[] = {0x82, 0x00, 0x01};
	static const uint8_t not_array[] = {0xa1, 0x05, 0x01};
	static const uint8_t tagged[] = {0xc0, 0x82, 0x05, 0x01};
	static const uint8_t memb_indef_ops[] = {0x83, 0x02, 0x9f, 0x41, 0x01, 0xff, 0xf5};
	static const uint8_t memb_indef_blob[] = {0x83, 0x02, 0x81, 0x5f, 0x41, 0x01, 0xff, 0xf5};
	static const uint8_t memb_empty_blob[] = {0x83, 0x02, 0x81, 0x40, 0xf5};
	static const uint8_t memb_text_blob[] = {0x83, 0x02, 0x81, 0x61, 0x41, 0xf5};
	static const uint8_t memb_int_end[] = {0x83, 0x02, 0x80, 0x01};
	static const uint8_t memb_long_blob[] = {0x83, 0x02, 0x81, 0x58, 0x01, 0x01, 0xf5};
	struct raw w = {0};
	uint8_t id[SYNC_ID_LEN], digest[SYNC_DIGEST_LEN] = {0};
	struct sync_msg *m = msg_new(SYNC_MSG_ACK);

	CHECK_OK(sync_msg_decode(ack, sizeof(ack), m));
	CHECK_EQ(m->batch, 1);
	CHECK_EQ(sync_msg_decode(ack_long_type, sizeof(ack_long_type), m), PKS_ERR_NONCANONICAL);
	CHECK_EQ(sync_msg_decode(ack_long_batch, sizeof(ack_long_batch), m), PKS_ERR_NONCANONICAL);
	CHECK_EQ(sync_msg_decode(ack_long_array, sizeof(ack_long_array), m), PKS_ERR_NONCANONICAL);
	CHECK_EQ(sync_msg_decode(ack_indefinite, sizeof(ack_indefinite), m), PKS_ERR_NONCANONICAL);
	CHECK_EQ(sync_msg_decode(ack_trailing, sizeof(ack_trailing), m), PKS_ERR_MALFORMED);
	CHECK_EQ(sync_msg_decode(ack_zero, sizeof(ack_zero), m), PKS_ERR_MALFORMED);
	CHECK_EQ(sync_msg_decode(ack_negative, sizeof(ack_negative), m), PKS_ERR_MALFORMED);
	CHECK_EQ(sync_msg_decode(ack_extra_item, sizeof(ack_extra_item), m), PKS_ERR_MALFORMED);
	CHECK_EQ(sync_msg_decode(unknown_type, sizeof(unknown_type), m), PKS_ERR_MALFORMED);
	CHECK_EQ(sync_msg_decode(zero_type, sizeof(zero_type), m), PKS_ERR_MALFORMED);
	CHECK_EQ(sync_msg_decode(not_array, sizeof(not_array), m), PKS_ERR_MALFORMED);
	CHECK_EQ(sync_msg_decode(tagged, sizeof(tagged), m), PKS_ERR_MALFORMED);
	CHECK_EQ(sync_msg_decode(memb_indef_ops, sizeof(memb_indef_ops), m), PKS_ERR_NONCANONICAL);
	CHECK_EQ(sync_msg_decode(memb_indef_blob, sizeof(memb_indef_blob), m),
		 PKS_ERR_NONCANONICAL);
	CHECK_EQ(sync_msg_decode(memb_empty_blob, sizeof(memb_empty_blob), m), PKS_ERR_MALFORMED);
	CHECK_EQ(sync_msg_decode(memb_text_blob, sizeof(memb_text_blob), m), PKS_ERR_MALFORMED);
	CHECK_EQ(sync_msg_decode(memb_int_end, sizeof(memb_int_end), m), PKS_ERR_MALFORMED);
	CHECK_EQ(sync_msg_decode(memb_long_blob, sizeof(memb_long_blob), m), PKS_ERR_NONCANONICAL);
	CHECK_EQ(sync_msg_decode(NULL, 0, m), PKS_ERR_TRUNCATED);
	/* A failed decode leaves *m as it was. */
	CHECK_EQ(m->type, SYNC_MSG_ACK);
	CHECK_EQ(m->batch, 1);

	/* Vectors: unsorted, duplicate, zero seq; a short author id. */
	for (int c = 0; c < 4; c++) {
		raw_array(&w, 4);
		raw_uint(&w, SYNC_MSG_STATE);
		raw_array(&w, 2);
		raw_array(&w, 2);
		fill_id(id, 5);
		raw_bytes(&w, id, sizeof(id));
		raw_uint(&w, c == 2 ? 0 : 1);
		raw_array(&w, 2);
		fill_id(id, c == 0 ? 4 : c == 1 ? 5 : 6);
		raw_bytes(&w, id, c == 3 ? sizeof(id) - 1 : sizeof(id));
		raw_uint(&w, 1);
		raw_bytes(&w, digest, sizeof(digest));
		raw_uint(&w, 2);
		CHECK_EQ(decode_raw(&w), PKS_ERR_MALFORMED);
		raw_free(&w);
	}
	/* The same with ascending authors is fine. */
	raw_array(&w, 4);
	raw_uint(&w, SYNC_MSG_STATE);
	raw_array(&w, 2);
	for (uint32_t i = 0; i < 2; i++) {
		raw_array(&w, 2);
		fill_id(id, 5 + i);
		raw_bytes(&w, id, sizeof(id));
		raw_uint(&w, 1);
	}
	raw_bytes(&w, digest, sizeof(digest));
	raw_uint(&w, 2);
	CHECK_OK(decode_raw(&w));
	raw_free(&w);
	/* Summary: unsorted authors. */
	raw_array(&w, 3);
	raw_uint(&w, SYNC_MSG_SUMMARY);
	raw_array(&w, 2);
	for (uint32_t i = 0; i < 2; i++) {
		raw_array(&w, 3);
		fill_id(id, 9 - i);
		raw_bytes(&w, id, sizeof(id));
		raw_uint(&w, 1);
		raw_bytes(&w, digest, sizeof(digest));
	}
	raw_bool(&w, true);
	CHECK_EQ(decode_raw(&w), PKS_ERR_MALFORMED);
	raw_free(&w);
	/* The encoder refuses what the decoder would. */
	m->type = SYNC_MSG_STATE;
	m->vector.n = 2;
	fill_id(m->vector.e[0].author, 2);
	fill_id(m->vector.e[1].author, 1);
	m->vector.e[0].seq = m->vector.e[1].seq = 1;
	{
		uint8_t *enc = NULL;
		size_t enc_len;
		CHECK_EQ(sync_msg_encode(m, &enc, &enc_len), PKS_ERR_MALFORMED);
		CHECK(enc == NULL);
	}
	free(m);
}

CHECK_MAIN({"/sync/codec-round-trip", test_codec_round_trip},
	   {"/sync/codec-limits", test_codec_limits},
	   {"/sync/codec-noncanonical", test_codec_noncanonical})
