/*
 * The sync protocol: the message codec (round trips, limits, canonical form,
 * truncation) and two sessions wired back to back over an in-memory replica.
 */
#include "proto/sync.h"

#include <inttypes.h>
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

/* ---- the engine: two sessions back to back ---- */

struct qmsg {
	struct qmsg *next;
	uint8_t *data;
	size_t len;
};

struct net;

struct ep {
	struct net *net;
	struct ep *peer;
	struct trep *rep;
	struct sync_session *s;
	struct qmsg *in_head, *in_tail;
	bool blocked;
	int synced_calls;
	bool equal;
	uint8_t peer_digest[SYNC_DIGEST_LEN];
	uint64_t applied_versions, applied_ops;
	int recv_error;
	bool change_on_apply; /* on_applied adds a version and reports it from inside */
	bool receive_on_send; /* send() calls receive from inside */
	int reentry_result;
	struct raw *record; /* when set, what this end receives, each with a 2-byte length */
};

struct net {
	struct ep a, b;
	uint64_t rng;
	unsigned busy_percent;
	uint64_t busy_count;
};

static uint32_t net_rand(struct net *n)
{
	/* xorshift64*: deterministic from the printed seed. */
	n->rng ^= n->rng >> 12;
	n->rng ^= n->rng << 25;
	n->rng ^= n->rng >> 27;
	return (uint32_t)((n->rng * UINT64_C(2685821657736338717)) >> 32);
}

static void ep_push(struct ep *to, const uint8_t *data, size_t len)
{
	struct qmsg *m = calloc(1, sizeof(*m));

	if (m == NULL || (m->data = malloc(len ? len : 1)) == NULL)
		abort();
	memcpy(m->data, data, len);
	m->len = len;
	if (to->record != NULL) {
		uint8_t prefix[2] = {(uint8_t)(len >> 8), (uint8_t)len};
		raw_put(to->record, prefix, sizeof(prefix));
		raw_put(to->record, data, len);
	}
	if (to->in_tail != NULL)
		to->in_tail->next = m;
	else
		to->in_head = m;
	to->in_tail = m;
}

static int ep_send(void *user, const uint8_t *msg, size_t len)
{
	struct ep *e = user;
	static const uint8_t ack[] = {0x82, 0x05, 0x01};

	if (e->receive_on_send) {
		e->receive_on_send = false;
		e->reentry_result = sync_session_receive(e->s, ack, sizeof(ack));
	}
	if (e->net->busy_percent > 0 && net_rand(e->net) % 100 < e->net->busy_percent) {
		e->blocked = true;
		e->net->busy_count++;
		return PKS_ERR_BUSY;
	}
	ep_push(e->peer, msg, len);
	return PKS_OK;
}

static void ep_synced(void *user, bool equal, const uint8_t peer_digest[SYNC_DIGEST_LEN])
{
	struct ep *e = user;

	e->synced_calls++;
	e->equal = equal;
	memcpy(e->peer_digest, peer_digest, SYNC_DIGEST_LEN);
}

static void ep_applied(void *user, size_t versions, size_t ops)
{
	struct ep *e = user;

	e->applied_versions += versions;
	e->applied_ops += ops;
	if (e->change_on_apply) {
		uint8_t id[SYNC_ID_LEN];
		e->change_on_apply = false;
		fill_id(id, 0xcafe);
		if (!trep_add_version(e->rep, id, 10, 1))
			abort();
		e->reentry_result = sync_session_local_change(e->s);
	}
}

static const struct sync_session_cb ep_cb = {ep_send, ep_synced, ep_applied};

static struct net *net_new(uint64_t seed)
{
	struct net *n = calloc(1, sizeof(*n));
	uint8_t id_a[SYNC_ID_LEN], id_b[SYNC_ID_LEN];

	if (n == NULL)
		abort();
	n->rng = seed ? seed : 1;
	n->a.net = n->b.net = n;
	n->a.peer = &n->b;
	n->b.peer = &n->a;
	n->a.rep = trep_new();
	n->b.rep = trep_new();
	if (n->a.rep == NULL || n->b.rep == NULL)
		abort();
	fill_id(id_a, 0xa);
	fill_id(id_b, 0xb);
	CHECK_OK(sync_session_new(&trep_ops, n->a.rep, id_b, &ep_cb, &n->a, &n->a.s));
	CHECK_OK(sync_session_new(&trep_ops, n->b.rep, id_a, &ep_cb, &n->b, &n->b.s));
	return n;
}

static void ep_clear(struct ep *e)
{
	while (e->in_head != NULL) {
		struct qmsg *m = e->in_head;
		e->in_head = m->next;
		free(m->data);
		free(m);
	}
	e->in_tail = NULL;
}

static void net_free(struct net *n)
{
	ep_clear(&n->a);
	ep_clear(&n->b);
	sync_session_free(n->a.s);
	sync_session_free(n->b.s);
	trep_free(n->a.rep);
	trep_free(n->b.rep);
	free(n);
}

/* Delivers one queued message to e; returns whether there was one. */
static bool ep_deliver_one(struct ep *e)
{
	struct qmsg *m = e->in_head;
	int r;

	if (m == NULL)
		return false;
	e->in_head = m->next;
	if (e->in_head == NULL)
		e->in_tail = NULL;
	r = sync_session_receive(e->s, m->data, m->len);
	if (r != PKS_OK && e->recv_error == PKS_OK)
		e->recv_error = r;
	free(m->data);
	free(m);
	return true;
}

/* Runs both ends until nothing moves; returns the number of steps taken. */
static uint64_t net_run(struct net *n)
{
	uint64_t steps = 0;
	bool moved = true;

	while (moved && steps < 10000000) {
		moved = false;
		for (int i = 0; i < 2; i++) {
			struct ep *e = i == 0 ? &n->a : &n->b;
			if (ep_deliver_one(e))
				moved = true;
			if (e->blocked) {
				e->blocked = false;
				(void)sync_session_drained(e->s);
				moved = true;
			}
		}
		steps++;
	}
	return steps;
}

static uint64_t net_start(struct net *n)
{
	CHECK_OK(sync_session_start(n->a.s));
	CHECK_OK(sync_session_start(n->b.s));
	return net_run(n);
}

static void check_converged(struct net *n)
{
	uint8_t da[SYNC_DIGEST_LEN], db[SYNC_DIGEST_LEN];

	trep_digest(n->a.rep, da);
	trep_digest(n->b.rep, db);
	CHECK_MEM_EQ(da, db, SYNC_DIGEST_LEN);
	CHECK_EQ(n->a.recv_error, PKS_OK);
	CHECK_EQ(n->b.recv_error, PKS_OK);
	CHECK_EQ(sync_session_phase(n->a.s), SYNC_PHASE_LIVE);
	CHECK_EQ(sync_session_phase(n->b.s), SYNC_PHASE_LIVE);
	CHECK_EQ(n->a.synced_calls, 1);
	CHECK_EQ(n->b.synced_calls, 1);
	CHECK(n->a.equal);
	CHECK(n->b.equal);
	/* Each side was told the other's digest, which is its own. */
	CHECK_MEM_EQ(n->a.peer_digest, db, SYNC_DIGEST_LEN);
}

static void add_versions(struct trep *t, uint32_t author, size_t count, size_t payload,
			 uint32_t tag)
{
	uint8_t id[SYNC_ID_LEN];

	fill_id(id, author);
	for (size_t i = 0; i < count; i++)
		if (!trep_add_version(t, id, payload, tag))
			abort();
}

static void test_engine_empty(void)
{
	struct net *n = net_new(1);
	struct sync_stats st;

	net_start(n);
	check_converged(n);
	sync_session_stats(n->a.s, &st);
	/* HELLO, MEMB_OPS, STATE, VERSIONS (empty end), ACK, DONE. */
	CHECK_EQ(st.msgs_out, 6);
	CHECK_EQ(st.msgs_in, 6);
	CHECK_EQ(st.versions_out, 0);
	CHECK_EQ(st.reconciliations, 0);
	CHECK(st.bytes_out < 200);
	printf("# empty: %" PRIu64 " messages, %" PRIu64 " bytes each way\n", st.msgs_out,
	       st.bytes_out);
	net_free(n);
}

static void test_engine_bulk(void)
{
	struct net *n = net_new(2);
	struct sync_stats sa, sb;
	uint64_t blob_bytes = 0, total;
	double overhead;

	/* 10,000 versions of 4 authors, about the size of a sealed passkey record. */
	for (uint32_t a = 0; a < 4; a++)
		add_versions(n->a.rep, 100 + a, 2500, 360, a);
	for (size_t a = 0; a < n->a.rep->n_authors; a++)
		for (size_t i = 0; i < n->a.rep->authors[a].n; i++)
			blob_bytes += n->a.rep->authors[a].lens[i];
	net_start(n);
	check_converged(n);
	CHECK_EQ(n->b.rep->applied, 10000);
	CHECK_EQ(n->b.rep->skipped, 0);
	CHECK_EQ(n->b.applied_versions, 10000);
	sync_session_stats(n->a.s, &sa);
	sync_session_stats(n->b.s, &sb);
	CHECK_EQ(sa.versions_out, 10000);
	CHECK_EQ(sb.versions_in, 10000);
	CHECK_EQ(sb.versions_out, 0);
	CHECK_EQ(sa.bytes_out, sb.bytes_in);
	CHECK_EQ(sa.msgs_out, sb.msgs_in);
	total = sa.bytes_out + sb.bytes_out;
	overhead = (double)(total - blob_bytes) / (double)blob_bytes;
	printf("# 10,000 versions: %" PRIu64 " blob bytes, %" PRIu64 " + %" PRIu64
	       " message bytes, %" PRIu64 " + %" PRIu64 " messages, overhead %.3f%%\n",
	       blob_bytes, sa.bytes_out, sb.bytes_out, sa.msgs_out, sb.msgs_out, overhead * 100);
	CHECK(overhead < 0.02);
	/* Batches near SYNC_BATCH_BYTES: about blob_bytes / 60000 of them. */
	CHECK(sa.msgs_out < 4 + blob_bytes / (SYNC_BATCH_BYTES - SYNC_BLOB_MAX) + 2);
	net_free(n);
}

static void test_engine_disjoint(void)
{
	struct net *n = net_new(3);
	uint8_t id[SYNC_ID_LEN];
	struct trep_author *ta, *tb;

	add_versions(n->a.rep, 1, 50, 100, 1);
	add_versions(n->a.rep, 2, 7, 2000, 2);
	add_versions(n->b.rep, 3, 40, 100, 3);
	add_versions(n->b.rep, 4, 1, 30000, 4);
	/* One author both hold, B further ahead: the same blobs, since they are derived. */
	add_versions(n->a.rep, 5, 10, 50, 5);
	add_versions(n->b.rep, 5, 15, 50, 5);
	net_start(n);
	check_converged(n);
	CHECK_EQ(n->a.rep->n_authors, 5);
	CHECK_EQ(n->b.rep->n_authors, 5);
	fill_id(id, 5);
	ta = trep_author(n->a.rep, id, false);
	tb = trep_author(n->b.rep, id, false);
	CHECK(ta != NULL && tb != NULL && ta->n == 15 && tb->n == 15);
	/* Only the missing five of author 5 crossed. */
	CHECK_EQ(n->a.rep->applied, 40 + 1 + 5);
	CHECK_EQ(n->b.rep->applied, 50 + 7);
	CHECK_EQ(n->a.rep->skipped + n->b.rep->skipped, 0);
	net_free(n);
}

static void test_engine_equal(void)
{
	struct net *n = net_new(4);
	struct sync_stats st;

	add_versions(n->a.rep, 1, 1000, 300, 1);
	add_versions(n->b.rep, 1, 1000, 300, 1);
	add_versions(n->a.rep, 2, 10, 300, 2);
	add_versions(n->b.rep, 2, 10, 300, 2);
	net_start(n);
	check_converged(n);
	for (int i = 0; i < 2; i++) {
		sync_session_stats(i ? n->b.s : n->a.s, &st);
		CHECK_EQ(st.msgs_out, 6);
		CHECK_EQ(st.versions_out, 0);
		CHECK(st.bytes_out < 400);
	}
	printf("# equal sets of 1010 versions: %" PRIu64 " messages, %" PRIu64 " bytes each way\n",
	       st.msgs_out, st.bytes_out);
	net_free(n);
}

static void test_engine_busy(void)
{
	uint64_t seed = 0x5eed0001;

	for (int round = 0; round < 3; round++, seed++) {
		struct net *n = net_new(seed);
		int failed_before = check_failed_current;

		n->busy_percent = 30 + 20 * round;
		add_versions(n->a.rep, 1, 1500, 500, 1);
		add_versions(n->b.rep, 2, 1500, 500, 2);
		add_versions(n->b.rep, 1, 200, 500, 1);
		net_start(n);
		check_converged(n);
		CHECK(n->busy_count > 10);
		printf("# busy %u%%: %" PRIu64 " refusals\n", n->busy_percent, n->busy_count);
		CHECK_EQ(n->a.rep->skipped + n->b.rep->skipped, 0);
		if (check_failed_current && !failed_before)
			printf("# seed %#" PRIx64 "\n", seed);
		net_free(n);
	}
}

static void test_engine_live(void)
{
	struct net *n = net_new(5);
	struct sync_stats sa, sb, sa2, sb2;
	uint8_t id[SYNC_ID_LEN];
	static const uint8_t op[] = "add device c";

	add_versions(n->a.rep, 1, 20, 100, 1);
	add_versions(n->b.rep, 2, 20, 100, 2);
	net_start(n);
	check_converged(n);
	sync_session_stats(n->a.s, &sa);
	sync_session_stats(n->b.s, &sb);

	/* A makes a version and a membership op: both reach B, nothing comes back but ACKs. */
	add_versions(n->a.rep, 1, 1, 100, 1);
	CHECK(trep_add_op(n->a.rep, op, sizeof(op)));
	CHECK_OK(sync_session_local_change(n->a.s));
	net_run(n);
	sync_session_stats(n->a.s, &sa2);
	sync_session_stats(n->b.s, &sb2);
	fill_id(id, 1);
	CHECK_EQ(trep_author(n->b.rep, id, false)->n, 21);
	CHECK_EQ(n->b.rep->n_ops, 1);
	CHECK_EQ(sa2.versions_out - sa.versions_out, 1);
	CHECK_EQ(sa2.ops_out - sa.ops_out, 1);
	CHECK_EQ(sb2.msgs_out - sb.msgs_out, 1); /* one ACK */
	CHECK_EQ(sb2.versions_out, sb.versions_out);
	CHECK_EQ(n->b.applied_versions, 20 + 1);
	CHECK_EQ(n->b.applied_ops, 1);

	/* B got versions of A's author from A: a change on B with nothing new sends nothing. */
	CHECK_OK(sync_session_local_change(n->b.s));
	net_run(n);
	sync_session_stats(n->b.s, &sb);
	CHECK_EQ(sb.msgs_out, sb2.msgs_out);

	/* And B's own new version goes to A. */
	add_versions(n->b.rep, 2, 3, 100, 2);
	CHECK_OK(sync_session_local_change(n->b.s));
	net_run(n);
	fill_id(id, 2);
	CHECK_EQ(trep_author(n->a.rep, id, false)->n, 23);
	CHECK_EQ(sync_session_phase(n->a.s), SYNC_PHASE_LIVE);
	CHECK_EQ(sync_session_phase(n->b.s), SYNC_PHASE_LIVE);
	CHECK_EQ(n->a.recv_error + n->b.recv_error, 0);
	CHECK_EQ(n->a.synced_calls, 1);
	net_free(n);
}

/* A local change while the initial transfer runs waits for it, then is pushed. */
static void test_engine_live_during_transfer(void)
{
	struct net *n = net_new(6);
	uint8_t id[SYNC_ID_LEN];

	add_versions(n->a.rep, 1, 3000, 200, 1);
	CHECK_OK(sync_session_start(n->a.s));
	CHECK_OK(sync_session_start(n->b.s));
	for (int i = 0; i < 8; i++) {
		ep_deliver_one(&n->a);
		ep_deliver_one(&n->b);
	}
	CHECK_EQ(sync_session_phase(n->a.s), SYNC_PHASE_STATE);
	add_versions(n->a.rep, 7, 2, 200, 7);
	CHECK_OK(sync_session_local_change(n->a.s));
	net_run(n);
	fill_id(id, 7);
	CHECK(trep_author(n->b.rep, id, false) != NULL);
	CHECK_EQ(n->b.rep->applied, 3002);
	CHECK_EQ(n->b.rep->skipped, 0);
	check_converged(n);
	net_free(n);
}

static void test_engine_membership(void)
{
	static const uint8_t genesis[] = "genesis", add_a[] = "add a", add_b[] = "add b";
	struct net *n = net_new(7);
	uint8_t da[SYNC_DIGEST_LEN], db[SYNC_DIGEST_LEN];

	CHECK(trep_add_op(n->a.rep, genesis, sizeof(genesis)));
	CHECK(trep_add_op(n->b.rep, genesis, sizeof(genesis)));
	CHECK(trep_add_op(n->a.rep, add_a, sizeof(add_a)));
	CHECK(trep_add_op(n->b.rep, add_b, sizeof(add_b)));
	net_start(n);
	check_converged(n);
	CHECK_EQ(n->a.rep->n_ops, 3);
	CHECK_EQ(n->b.rep->n_ops, 3);
	trep_memb_digest(n->a.rep, da);
	trep_memb_digest(n->b.rep, db);
	CHECK_MEM_EQ(da, db, SYNC_DIGEST_LEN);
	CHECK_EQ(n->a.applied_ops, 1);
	net_free(n);

	/* The peer is no longer a member once membership settles: rejected. */
	n = net_new(8);
	n->a.rep->allowed = false;
	net_start(n);
	CHECK_EQ(n->a.recv_error, PKS_ERR_REJECTED);
	CHECK_EQ(sync_session_phase(n->a.s), SYNC_PHASE_FAILED);
	CHECK(sync_session_phase(n->b.s) != SYNC_PHASE_LIVE);
	net_free(n);
}

/* Feeds e one message built from m; returns what receive said. */
static int inject(struct ep *e, const struct sync_msg *m)
{
	uint8_t *enc = NULL;
	size_t len = 0;
	int r;

	CHECK_OK(sync_msg_encode(m, &enc, &len));
	r = sync_session_receive(e->s, enc, len);
	free(enc);
	return r;
}

static void test_engine_unexpected(void)
{
	struct sync_msg *m = msg_new(SYNC_MSG_HELLO);
	struct net *n = net_new(9);
	uint8_t junk[] = {0x82, 0x05};

	/* A second HELLO after sync. */
	net_start(n);
	check_converged(n);
	m->version = SYNC_PROTOCOL_VERSION;
	CHECK_EQ(inject(&n->a, m), PKS_ERR_STATE);
	CHECK_EQ(sync_session_phase(n->a.s), SYNC_PHASE_FAILED);
	/* A failed session refuses everything. */
	CHECK_EQ(sync_session_local_change(n->a.s), PKS_ERR_STATE);
	CHECK_EQ(sync_session_drained(n->a.s), PKS_ERR_STATE);
	/* An ACK for a batch never sent. */
	m->type = SYNC_MSG_ACK;
	m->batch = 99;
	CHECK_EQ(inject(&n->b, m), PKS_ERR_STATE);
	CHECK_EQ(sync_session_phase(n->b.s), SYNC_PHASE_FAILED);
	net_free(n);

	/* VERSIONS before STATE: during membership. */
	n = net_new(10);
	CHECK_OK(sync_session_start(n->a.s));
	m->type = SYNC_MSG_VERSIONS;
	m->batch = 1;
	m->end = true;
	CHECK_EQ(inject(&n->a, m), PKS_ERR_STATE);
	CHECK_EQ(sync_session_phase(n->a.s), SYNC_PHASE_FAILED);
	/* Garbage fails the session with the decoder's error. */
	CHECK_OK(sync_session_start(n->b.s));
	CHECK_EQ(sync_session_receive(n->b.s, junk, sizeof(junk)), PKS_ERR_TRUNCATED);
	CHECK_EQ(sync_session_phase(n->b.s), SYNC_PHASE_FAILED);
	net_free(n);

	/* A message before start, a wrong version, DONE before STATE. */
	n = net_new(11);
	m->type = SYNC_MSG_HELLO;
	m->version = SYNC_PROTOCOL_VERSION;
	CHECK_EQ(inject(&n->a, m), PKS_ERR_STATE);
	CHECK_OK(sync_session_start(n->b.s));
	m->version = 2;
	CHECK_EQ(inject(&n->b, m), PKS_ERR_UNSUPPORTED);
	net_free(n);
	n = net_new(12);
	CHECK_OK(sync_session_start(n->a.s));
	m->type = SYNC_MSG_DONE;
	CHECK_EQ(inject(&n->a, m), PKS_ERR_STATE);
	net_free(n);

	/* An end batch in the live phase; a batch number skipped. */
	for (int c = 0; c < 2; c++) {
		n = net_new(13);
		net_start(n);
		check_converged(n);
		m->type = SYNC_MSG_VERSIONS;
		m->batch = c == 0 ? 2 : 3;
		m->end = c == 0;
		CHECK_EQ(inject(&n->a, m), PKS_ERR_STATE);
		net_free(n);
	}
	free(m);
}

static void key_blob(uint8_t b[SYNC_KEY_BLOB_LEN], uint32_t epoch, uint8_t fill)
{
	b[0] = (uint8_t)(epoch >> 24);
	b[1] = (uint8_t)(epoch >> 16);
	b[2] = (uint8_t)(epoch >> 8);
	b[3] = (uint8_t)epoch;
	memset(b + 4, fill, SYNC_KEY_BLOB_LEN - 4);
}

/* Each side hands the other its epoch keys once, after membership, before STATE. */
static void test_engine_keys(void)
{
	struct net *n = net_new(21);
	struct sync_msg *m = msg_new(SYNC_MSG_KEYS), *d;
	uint8_t k1[SYNC_KEY_BLOB_LEN], k2[SYNC_KEY_BLOB_LEN], k3[SYNC_KEY_BLOB_LEN];
	uint8_t k1_other[SYNC_KEY_BLOB_LEN];

	key_blob(k1, 1, 0x11);
	key_blob(k1_other, 1, 0x99);
	key_blob(k2, 2, 0x22);
	key_blob(k3, 3, 0x33);
	CHECK(trep_add_key(n->a.rep, k1));
	CHECK(trep_add_key(n->a.rep, k2));
	CHECK(trep_add_key(n->b.rep, k1_other));
	CHECK(trep_add_key(n->b.rep, k3));
	net_start(n);
	check_converged(n);
	CHECK_EQ(n->a.rep->keys_calls, 1);
	CHECK_EQ(n->b.rep->keys_calls, 1);
	CHECK_EQ(n->a.rep->n_keys, 3);
	CHECK_EQ(n->b.rep->n_keys, 3);
	/* An epoch already held keeps its own key. */
	CHECK_MEM_EQ(n->b.rep->keys[0], k1_other, SYNC_KEY_BLOB_LEN);
	CHECK_MEM_EQ(n->a.rep->keys[0], k1, SYNC_KEY_BLOB_LEN);
	CHECK_MEM_EQ(n->a.rep->keys[2], k3, SYNC_KEY_BLOB_LEN);
	CHECK_MEM_EQ(n->b.rep->keys[2], k2, SYNC_KEY_BLOB_LEN);
	/* A second KEYS, after STATE, is refused. */
	m->n_blobs = 1;
	m->blobs[0] = (struct sync_blob){k2, sizeof(k2)};
	m->end = true;
	CHECK_EQ(inject(&n->a, m), PKS_ERR_STATE);
	net_free(n);

	/* KEYS before the peer's membership end is refused. */
	n = net_new(22);
	CHECK_OK(sync_session_start(n->a.s));
	CHECK_EQ(inject(&n->a, m), PKS_ERR_STATE);
	net_free(n);

	/* Codec: round trip, a blob of the wrong size, too many blobs. */
	d = round_trip(m);
	CHECK_EQ(d->type, SYNC_MSG_KEYS);
	free(d);
	m->blobs[0].len = SYNC_KEY_BLOB_LEN - 1;
	{
		uint8_t *enc = NULL;
		size_t enc_len = 0;
		CHECK_EQ(sync_msg_encode(m, &enc, &enc_len), PKS_ERR_MALFORMED);
		m->blobs[0].len = SYNC_KEY_BLOB_LEN;
		m->n_blobs = SYNC_KEYS_MAX + 1;
		for (size_t i = 0; i < m->n_blobs; i++)
			m->blobs[i] = (struct sync_blob){k2, sizeof(k2)};
		CHECK_EQ(sync_msg_encode(m, &enc, &enc_len), PKS_ERR_TOO_LARGE);
		CHECK(enc == NULL);
	}
	free(m);
}

/* B announces one more version of author 1 than it holds: the digests expose it. */
static void test_engine_reconcile_lie(void)
{
	struct net *n = net_new(14);
	struct sync_stats sa, sb;
	uint8_t id[SYNC_ID_LEN];

	add_versions(n->a.rep, 1, 30, 100, 1);
	add_versions(n->b.rep, 1, 29, 100, 1);
	add_versions(n->a.rep, 2, 5, 100, 2);
	add_versions(n->b.rep, 2, 5, 100, 2);
	fill_id(n->b.rep->lie_author, 1);
	n->b.rep->lie_seq = 1;
	net_start(n);
	sync_session_stats(n->a.s, &sa);
	sync_session_stats(n->b.s, &sb);
	CHECK_EQ(sa.reconciliations, 1);
	CHECK_EQ(sb.reconciliations, 1);
	fill_id(id, 1);
	CHECK_EQ(trep_author(n->b.rep, id, false)->n, 30);
	/* Only author 1 was resent, in full, by both. */
	CHECK_EQ(sa.versions_out, 30);
	CHECK_EQ(sb.versions_out, 29);
	CHECK_EQ(n->b.rep->applied, 1);
	check_converged(n);
	net_free(n);
}

/* Two different versions under the same (author, seq): no reconciliation can fix it. */
static void test_engine_reconcile_diverged(void)
{
	struct net *n = net_new(15);
	struct sync_stats sa, sb;
	uint8_t da[SYNC_DIGEST_LEN], db[SYNC_DIGEST_LEN];
	uint64_t steps;

	add_versions(n->a.rep, 1, 10, 100, 1);
	add_versions(n->b.rep, 1, 9, 100, 1);
	add_versions(n->b.rep, 1, 1, 100, 99);
	/* Quiet after a bounded exchange: three rounds of a few messages. */
	steps = net_start(n);
	CHECK(steps < 100);
	sync_session_stats(n->a.s, &sa);
	sync_session_stats(n->b.s, &sb);
	CHECK_EQ(sa.reconciliations, SYNC_RECONCILE_MAX);
	CHECK_EQ(sb.reconciliations, SYNC_RECONCILE_MAX);
	CHECK_EQ(n->a.synced_calls, 1);
	CHECK_EQ(n->b.synced_calls, 1);
	CHECK(!n->a.equal);
	CHECK(!n->b.equal);
	CHECK_EQ(sync_session_phase(n->a.s), SYNC_PHASE_LIVE);
	CHECK_EQ(sync_session_phase(n->b.s), SYNC_PHASE_LIVE);
	CHECK_EQ(n->a.recv_error + n->b.recv_error, 0);
	trep_digest(n->a.rep, da);
	trep_digest(n->b.rep, db);
	CHECK(memcmp(da, db, SYNC_DIGEST_LEN) != 0);
	CHECK_MEM_EQ(n->a.peer_digest, db, SYNC_DIGEST_LEN);
	/* Each reconciliation resent author 1 in full both ways. */
	CHECK_EQ(sa.versions_out, 10 * SYNC_RECONCILE_MAX);
	CHECK_EQ(sb.versions_out, 10 * SYNC_RECONCILE_MAX);
	/* The session stays up: a live change still flows. */
	add_versions(n->a.rep, 3, 1, 10, 3);
	CHECK_OK(sync_session_local_change(n->a.s));
	net_run(n);
	CHECK_EQ(n->b.rep->n_authors, 2);
	net_free(n);
}

/* Calls from inside callbacks: a local change is deferred and done, a receive is refused. */
static void test_engine_reentry(void)
{
	struct net *n = net_new(16);
	uint8_t id[SYNC_ID_LEN];

	add_versions(n->a.rep, 1, 5, 10, 1);
	n->b.change_on_apply = true;
	net_start(n);
	CHECK_EQ(n->b.reentry_result, PKS_OK);
	fill_id(id, 0xcafe);
	CHECK(trep_author(n->a.rep, id, false) != NULL);
	check_converged(n);
	net_free(n);

	n = net_new(17);
	CHECK_OK(sync_session_start(n->a.s));
	n->a.receive_on_send = true;
	add_versions(n->a.rep, 1, 1, 10, 1);
	CHECK_EQ(sync_session_start(n->b.s), PKS_OK);
	ep_deliver_one(&n->a);
	CHECK_EQ(n->a.reentry_result, PKS_ERR_STATE);
	CHECK_EQ(n->a.recv_error, PKS_ERR_STATE);
	CHECK_EQ(sync_session_phase(n->a.s), SYNC_PHASE_FAILED);
	net_free(n);
}

/* A peer that runs past SYNC_WINDOW unacknowledged batches is refused. */
static void test_engine_window(void)
{
	struct sync_msg *m = msg_new(SYNC_MSG_HELLO);
	struct net *n = net_new(18);

	CHECK_OK(sync_session_start(n->a.s));
	m->version = SYNC_PROTOCOL_VERSION;
	CHECK_OK(inject(&n->a, m));
	m->type = SYNC_MSG_MEMB_OPS;
	m->end = true;
	CHECK_OK(inject(&n->a, m));
	m->type = SYNC_MSG_STATE;
	CHECK_OK(inject(&n->a, m));
	CHECK_EQ(sync_session_phase(n->a.s), SYNC_PHASE_STATE);
	/* A's ACKs cannot leave: the peer has no right to more than the window. */
	n->busy_percent = 100;
	m->type = SYNC_MSG_VERSIONS;
	m->end = false;
	for (uint64_t b = 1; b <= SYNC_WINDOW; b++) {
		m->batch = b;
		CHECK_OK(inject(&n->a, m));
	}
	m->batch = SYNC_WINDOW + 1;
	CHECK_EQ(inject(&n->a, m), PKS_ERR_STATE);
	CHECK_EQ(sync_session_phase(n->a.s), SYNC_PHASE_FAILED);
	net_free(n);
	free(m);
}

/* ---- the fuzz corpus ---- */

struct corpus_file {
	char name[64];
	struct raw bytes;
};

static void corpus_add(struct corpus_file *files, size_t *n, const char *name, const uint8_t *p,
		       size_t len)
{
	snprintf(files[*n].name, sizeof(files[*n].name), "%s", name);
	files[*n].bytes = (struct raw){0};
	raw_put(&files[*n].bytes, p, len);
	(*n)++;
}

static void corpus_add_msg(struct corpus_file *files, size_t *n, const char *name,
			   const struct sync_msg *m)
{
	uint8_t *enc = NULL;
	size_t len = 0;

	CHECK_OK(sync_msg_encode(m, &enc, &len));
	corpus_add(files, n, name, enc, len);
	free(enc);
}

/*
 * Records what a session over the fuzz replica receives from a peer built by
 * setup, through sync and (with live) one live change on the peer.
 */
static void corpus_transcript(struct corpus_file *files, size_t *n, const char *name, int variant)
{
	struct net *net = net_new(100 + (uint64_t)variant);
	struct raw rec = {0};
	uint8_t id[SYNC_ID_LEN] = {0};
	static const uint8_t add_b[] = "add b";

	CHECK(trep_fill_fuzz(net->a.rep));
	net->a.record = &rec;
	switch (variant) {
	case 0: /* B is ahead on one author, holds another and one op A lacks */
		CHECK(trep_fill_fuzz(net->b.rep));
		CHECK(trep_add_op(net->b.rep, add_b, sizeof(add_b)));
		id[0] = 1;
		CHECK(trep_add_version(net->b.rep, id, 40, 1));
		id[0] = 9;
		for (int i = 0; i < 3; i++)
			CHECK(trep_add_version(net->b.rep, id, 100, 9));
		break;
	case 1: /* B lies about author 2: one reconciliation */
		CHECK(trep_fill_fuzz(net->b.rep));
		net->b.rep->authors[1].n--;
		free(net->b.rep->authors[1].blobs[net->b.rep->authors[1].n]);
		id[0] = 2;
		memcpy(net->b.rep->lie_author, id, SYNC_ID_LEN);
		net->b.rep->lie_seq = 1;
		break;
	case 2: /* B holds other blobs under A's author 1: reconciliations to the limit */
		id[0] = 1;
		for (int i = 0; i < 5; i++)
			CHECK(trep_add_version(net->b.rep, id, 40, 77));
		break;
	default: /* empty B */
		break;
	}
	net_start(net);
	if (variant == 0) {
		id[0] = 9;
		CHECK(trep_add_version(net->b.rep, id, 100, 9));
		CHECK_OK(sync_session_local_change(net->b.s));
		net_run(net);
	}
	CHECK_EQ(sync_session_phase(net->a.s), SYNC_PHASE_LIVE);
	CHECK_EQ(net->a.recv_error, PKS_OK);
	corpus_add(files, n, name, rec.p, rec.len);
	raw_free(&rec);
	net_free(net);
}

/* Replays a transcript the way fuzz-sync.c does and returns the final phase. */
static enum sync_phase corpus_replay(const struct raw *w)
{
	static const uint8_t peer[SYNC_ID_LEN] = {0xb};
	struct net *net = net_new(1);
	struct sync_session *s = NULL;
	struct trep *rep = trep_new();
	enum sync_phase phase;
	size_t off = 0;

	CHECK(trep_fill_fuzz(rep));
	CHECK_OK(sync_session_new(&trep_ops, rep, peer, &ep_cb, &net->a, &s));
	CHECK_OK(sync_session_start(s));
	while (w->len - off >= 2) {
		size_t len = (size_t)w->p[off] << 8 | w->p[off + 1];
		off += 2;
		if (sync_session_receive(s, w->p + off, len) != PKS_OK)
			break;
		off += len;
	}
	phase = sync_session_phase(s);
	sync_session_free(s);
	trep_free(rep);
	net_free(net);
	return phase;
}

/*
 * Builds the seed corpus of tests/fuzz/corpus/sync: transcripts that drive
 * a session through every phase, valid messages of every type, broken ones.
 * With PKSYNC_SYNC_CORPUS=<dir> it also writes them there.
 */
static void test_fuzz_corpus(void)
{
	static const uint8_t blob[] = {1, 2, 3, 4};
	static const uint8_t indefinite[] = {0x9f, 0x05, 0x01, 0xff};
	static const uint8_t long_int[] = {0x82, 0x18, 0x05, 0x01};
	static const uint8_t trailing[] = {0x82, 0x05, 0x01, 0x00};
	static const uint8_t deep[] = {0x83, 0x02, 0x81, 0x81, 0x81, 0x81, 0x81, 0x40, 0xf5};
	struct corpus_file *files = calloc(32, sizeof(*files));
	struct sync_msg *m = msg_new(SYNC_MSG_HELLO);
	const char *dir = getenv("PKSYNC_SYNC_CORPUS");
	size_t n = 0;
	uint8_t *enc = NULL;
	size_t enc_len = 0;

	if (files == NULL)
		abort();
	corpus_transcript(files, &n, "session-sync-live", 0);
	corpus_transcript(files, &n, "session-reconcile", 1);
	corpus_transcript(files, &n, "session-diverged", 2);
	corpus_transcript(files, &n, "session-empty-peer", 3);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(corpus_replay(&files[i].bytes), SYNC_PHASE_LIVE);

	m->version = SYNC_PROTOCOL_VERSION;
	m->n_heads = 2;
	fill_id(m->heads[0], 1);
	fill_id(m->heads[1], 2);
	corpus_add_msg(files, &n, "msg-hello", m);
	m->type = SYNC_MSG_MEMB_OPS;
	m->n_blobs = 1;
	m->blobs[0] = (struct sync_blob){blob, sizeof(blob)};
	m->end = true;
	corpus_add_msg(files, &n, "msg-memb-ops", m);
	m->type = SYNC_MSG_VERSIONS;
	m->batch = 1;
	corpus_add_msg(files, &n, "msg-versions", m);
	m->type = SYNC_MSG_STATE;
	m->vector.n = 2;
	fill_id(m->vector.e[0].author, 1);
	fill_id(m->vector.e[1].author, 2);
	m->vector.e[0].seq = 5;
	m->vector.e[1].seq = 300;
	m->records = 305;
	corpus_add_msg(files, &n, "msg-state", m);
	m->type = SYNC_MSG_ACK;
	corpus_add_msg(files, &n, "msg-ack", m);
	m->type = SYNC_MSG_DONE;
	corpus_add_msg(files, &n, "msg-done", m);
	m->type = SYNC_MSG_SUMMARY;
	m->n_summary = 1;
	fill_id(m->summary[0].author, 3);
	m->summary[0].seq = 2;
	corpus_add_msg(files, &n, "msg-summary", m);
	/* Broken: truncated, indefinite, long-form, trailing, unsorted, nested. */
	CHECK_OK(sync_msg_encode(m, &enc, &enc_len));
	corpus_add(files, &n, "bad-summary-truncated", enc, enc_len - 1);
	free(enc);
	corpus_add(files, &n, "bad-indefinite", indefinite, sizeof(indefinite));
	corpus_add(files, &n, "bad-long-int", long_int, sizeof(long_int));
	corpus_add(files, &n, "bad-trailing", trailing, sizeof(trailing));
	corpus_add(files, &n, "bad-nested", deep, sizeof(deep));
	{
		struct raw w = {0};
		uint8_t id[SYNC_ID_LEN], digest[SYNC_DIGEST_LEN] = {0};
		raw_array(&w, 4);
		raw_uint(&w, SYNC_MSG_STATE);
		raw_array(&w, 2);
		for (uint32_t i = 0; i < 2; i++) {
			raw_array(&w, 2);
			fill_id(id, 2 - i);
			raw_bytes(&w, id, sizeof(id));
			raw_uint(&w, 1);
		}
		raw_bytes(&w, digest, sizeof(digest));
		raw_uint(&w, 2);
		corpus_add(files, &n, "bad-state-unsorted", w.p, w.len);
		raw_free(&w);
	}
	for (size_t i = 0; i < n; i++) {
		if (dir != NULL) {
			char path[512];
			FILE *f;
			snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
			f = fopen(path, "wb");
			CHECK(f != NULL);
			if (f != NULL) {
				CHECK_EQ(fwrite(files[i].bytes.p, 1, files[i].bytes.len, f),
					 files[i].bytes.len);
				fclose(f);
			}
		}
		raw_free(&files[i].bytes);
	}
	free(files);
	free(m);
}

CHECK_MAIN({"/sync/codec-round-trip", test_codec_round_trip},
	   {"/sync/codec-limits", test_codec_limits},
	   {"/sync/codec-noncanonical", test_codec_noncanonical},
	   {"/sync/engine-empty", test_engine_empty}, {"/sync/engine-bulk", test_engine_bulk},
	   {"/sync/engine-disjoint", test_engine_disjoint},
	   {"/sync/engine-equal", test_engine_equal}, {"/sync/engine-busy", test_engine_busy},
	   {"/sync/engine-live", test_engine_live},
	   {"/sync/engine-live-during-transfer", test_engine_live_during_transfer},
	   {"/sync/engine-membership", test_engine_membership},
	   {"/sync/engine-keys", test_engine_keys},
	   {"/sync/engine-unexpected", test_engine_unexpected},
	   {"/sync/engine-reconcile-lie", test_engine_reconcile_lie},
	   {"/sync/engine-reconcile-diverged", test_engine_reconcile_diverged},
	   {"/sync/engine-reentry", test_engine_reentry},
	   {"/sync/engine-window", test_engine_window}, {"/sync/fuzz-corpus", test_fuzz_corpus})
