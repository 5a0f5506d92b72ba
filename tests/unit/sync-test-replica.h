/*
 * An in-memory replica for the sync engine's tests and fuzz harness.
 * Membership ops are opaque blobs without a DAG: every op id (BLAKE2b-256 of
 * the blob) is a head. A version blob is author(32) | seq(8, big endian) |
 * payload; each author's versions are stored contiguously from seq 1, and a
 * version that is not the next seq of its author is skipped, as a real
 * replica would. The digest hashes every stored blob in (author, seq) order.
 * Test knobs: lie_seq adds to one author's announced seq (a lying vector),
 * allowed answers peer_allowed.
 */
#ifndef PKS_TEST_SYNC_REPLICA_H
#define PKS_TEST_SYNC_REPLICA_H

#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "proto/sync.h"

#define TREP_OPS_MAX 64
#define TREP_HDR (SYNC_ID_LEN + 8)

struct trep_author {
	uint8_t id[SYNC_ID_LEN];
	size_t n, cap;
	uint8_t **blobs;
	size_t *lens;
};

struct trep {
	size_t n_authors;
	struct trep_author *authors; /* sorted by id, SYNC_AUTHORS_MAX of them */
	size_t n_ops;
	uint8_t *ops[TREP_OPS_MAX];
	size_t op_lens[TREP_OPS_MAX];
	uint8_t op_ids[TREP_OPS_MAX][SYNC_ID_LEN];
	bool allowed;
	/* A lying vector: lie_seq is added to author lie_author's seq. */
	uint8_t lie_author[SYNC_ID_LEN];
	uint64_t lie_seq;
	uint64_t skipped, applied, apply_calls;
	/* Epoch keys: each SYNC_KEY_BLOB_LEN bytes, kept only for new epochs. */
	size_t n_keys;
	uint8_t keys[16][SYNC_KEY_BLOB_LEN];
	uint64_t keys_calls;
};

static inline struct trep *trep_new(void)
{
	struct trep *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->authors = calloc(SYNC_AUTHORS_MAX, sizeof(*t->authors));
	if (t->authors == NULL) {
		free(t);
		return NULL;
	}
	t->allowed = true;
	return t;
}

static inline void trep_free(struct trep *t)
{
	if (t == NULL)
		return;
	for (size_t a = 0; a < t->n_authors; a++) {
		for (size_t i = 0; i < t->authors[a].n; i++)
			free(t->authors[a].blobs[i]);
		free(t->authors[a].blobs);
		free(t->authors[a].lens);
	}
	for (size_t i = 0; i < t->n_ops; i++)
		free(t->ops[i]);
	free(t->authors);
	free(t);
}

/* The author's slot, created (if create) in sorted position; NULL when full or absent. */
static inline struct trep_author *trep_author(struct trep *t, const uint8_t id[SYNC_ID_LEN],
					      bool create)
{
	size_t lo = 0, hi = t->n_authors;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = memcmp(t->authors[mid].id, id, SYNC_ID_LEN);
		if (c == 0)
			return &t->authors[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!create || t->n_authors == SYNC_AUTHORS_MAX)
		return NULL;
	memmove(&t->authors[lo + 1], &t->authors[lo], (t->n_authors - lo) * sizeof(t->authors[0]));
	memset(&t->authors[lo], 0, sizeof(t->authors[0]));
	memcpy(t->authors[lo].id, id, SYNC_ID_LEN);
	t->n_authors++;
	return &t->authors[lo];
}

static inline uint64_t trep_blob_seq(const uint8_t *blob)
{
	uint64_t seq = 0;

	for (int i = 0; i < 8; i++)
		seq = seq << 8 | blob[SYNC_ID_LEN + i];
	return seq;
}

/* Stores one version blob if it is the next seq of its author; returns whether it did. */
static inline bool trep_put(struct trep *t, const uint8_t *blob, size_t len)
{
	struct trep_author *a;
	uint8_t *copy;

	if (len < TREP_HDR || len > SYNC_BLOB_MAX)
		return false;
	a = trep_author(t, blob, true);
	if (a == NULL || trep_blob_seq(blob) != a->n + 1)
		return false;
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		uint8_t **blobs = realloc(a->blobs, cap * sizeof(*blobs));
		size_t *lens;
		if (blobs == NULL)
			return false;
		a->blobs = blobs;
		lens = realloc(a->lens, cap * sizeof(*lens));
		if (lens == NULL)
			return false;
		a->lens = lens;
		a->cap = cap;
	}
	copy = malloc(len);
	if (copy == NULL)
		return false;
	memcpy(copy, blob, len);
	a->blobs[a->n] = copy;
	a->lens[a->n] = len;
	a->n++;
	return true;
}

/* Makes and stores the author's next version with payload_len bytes derived from tag. */
static inline bool trep_add_version(struct trep *t, const uint8_t author[SYNC_ID_LEN],
				    size_t payload_len, uint32_t tag)
{
	struct trep_author *a = trep_author(t, author, true);
	uint8_t *blob;
	uint64_t seq;
	bool ok;

	if (a == NULL || TREP_HDR + payload_len > SYNC_BLOB_MAX)
		return false;
	blob = malloc(TREP_HDR + payload_len);
	if (blob == NULL)
		return false;
	seq = a->n + 1;
	memcpy(blob, author, SYNC_ID_LEN);
	for (int i = 0; i < 8; i++)
		blob[SYNC_ID_LEN + i] = (uint8_t)(seq >> (56 - 8 * i));
	for (size_t i = 0; i < payload_len; i++)
		blob[TREP_HDR + i] = (uint8_t)(tag * 31 + i * 7 + seq);
	ok = trep_put(t, blob, TREP_HDR + payload_len);
	free(blob);
	return ok;
}

static inline bool trep_add_op(struct trep *t, const uint8_t *op, size_t len)
{
	uint8_t id[SYNC_ID_LEN];

	crypto_generichash(id, sizeof(id), op, len, NULL, 0);
	for (size_t i = 0; i < t->n_ops; i++)
		if (memcmp(t->op_ids[i], id, SYNC_ID_LEN) == 0)
			return false;
	if (t->n_ops == TREP_OPS_MAX || len == 0)
		return false;
	t->ops[t->n_ops] = malloc(len);
	if (t->ops[t->n_ops] == NULL)
		return false;
	memcpy(t->ops[t->n_ops], op, len);
	t->op_lens[t->n_ops] = len;
	memcpy(t->op_ids[t->n_ops], id, SYNC_ID_LEN);
	t->n_ops++;
	return true;
}

static inline size_t trep_memb_heads(void *replica, uint8_t heads[][SYNC_ID_LEN], size_t max)
{
	struct trep *t = replica;
	size_t n = t->n_ops < max ? t->n_ops : max;

	for (size_t i = 0; i < n; i++)
		memcpy(heads[i], t->op_ids[i], SYNC_ID_LEN);
	return n;
}

/* Order-independent: the hash of the sorted op ids. */
static inline int trep_id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, SYNC_ID_LEN);
}

static inline void trep_memb_digest(void *replica, uint8_t out[SYNC_DIGEST_LEN])
{
	struct trep *t = replica;
	uint8_t ids[TREP_OPS_MAX][SYNC_ID_LEN];

	memcpy(ids, t->op_ids, t->n_ops * SYNC_ID_LEN);
	qsort(ids, t->n_ops, SYNC_ID_LEN, trep_id_cmp);
	crypto_generichash(out, SYNC_DIGEST_LEN, &ids[0][0], t->n_ops * SYNC_ID_LEN, NULL, 0);
}

static inline int trep_memb_missing(void *replica, const uint8_t (*peer_heads)[SYNC_ID_LEN],
				    size_t n, sync_emit_fn emit, void *ctx)
{
	struct trep *t = replica;

	for (size_t i = 0; i < t->n_ops; i++) {
		bool known = false;
		int r;
		for (size_t k = 0; k < n && !known; k++)
			known = memcmp(peer_heads[k], t->op_ids[i], SYNC_ID_LEN) == 0;
		if (known)
			continue;
		r = emit(ctx, t->ops[i], t->op_lens[i]);
		if (r < 0)
			return r;
		if (r == 1)
			break;
	}
	return PKS_OK;
}

static inline int trep_memb_apply(void *replica, const struct sync_blob *ops, size_t n)
{
	struct trep *t = replica;

	for (size_t i = 0; i < n; i++)
		(void)trep_add_op(t, ops[i].data, ops[i].len);
	return PKS_OK;
}

static inline bool trep_peer_allowed(void *replica, const uint8_t peer[SYNC_ID_LEN])
{
	(void)peer;
	return ((struct trep *)replica)->allowed;
}

static inline int trep_vector(void *replica, struct sync_vector *out)
{
	struct trep *t = replica;

	out->n = 0;
	for (size_t a = 0; a < t->n_authors; a++) {
		uint64_t seq = t->authors[a].n;
		if (t->lie_seq > 0 && memcmp(t->authors[a].id, t->lie_author, SYNC_ID_LEN) == 0)
			seq += t->lie_seq;
		if (seq == 0)
			continue;
		memcpy(out->e[out->n].author, t->authors[a].id, SYNC_ID_LEN);
		out->e[out->n].seq = seq;
		out->n++;
	}
	return PKS_OK;
}

static inline int trep_versions_after(void *replica, const uint8_t author[SYNC_ID_LEN],
				      uint64_t after_seq, sync_emit_fn emit, void *ctx)
{
	struct trep_author *a = trep_author(replica, author, false);

	if (a == NULL)
		return PKS_OK;
	for (uint64_t i = after_seq; i < a->n; i++) {
		int r = emit(ctx, a->blobs[i], a->lens[i]);
		if (r < 0)
			return r;
		if (r == 1)
			break;
	}
	return PKS_OK;
}

static inline int trep_versions_apply(void *replica, const struct sync_blob *versions, size_t n)
{
	struct trep *t = replica;

	t->apply_calls++;
	for (size_t i = 0; i < n; i++) {
		if (trep_put(t, versions[i].data, versions[i].len))
			t->applied++;
		else
			t->skipped++;
	}
	return PKS_OK;
}

static inline void trep_digest(void *replica, uint8_t out[SYNC_DIGEST_LEN])
{
	struct trep *t = replica;
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, SYNC_DIGEST_LEN);
	for (size_t a = 0; a < t->n_authors; a++)
		for (size_t i = 0; i < t->authors[a].n; i++) {
			uint8_t h[SYNC_DIGEST_LEN];
			crypto_generichash(h, sizeof(h), t->authors[a].blobs[i],
					   t->authors[a].lens[i], NULL, 0);
			crypto_generichash_update(&st, h, sizeof(h));
		}
	crypto_generichash_final(&st, out, SYNC_DIGEST_LEN);
}

static inline int trep_author_summary(void *replica, const uint8_t author[SYNC_ID_LEN],
				      uint64_t *seq, uint8_t hash[SYNC_DIGEST_LEN])
{
	struct trep_author *a = trep_author(replica, author, false);
	uint8_t h[2 * SYNC_DIGEST_LEN] = {0}, next[SYNC_DIGEST_LEN];

	*seq = a != NULL ? a->n : 0;
	for (size_t i = 0; a != NULL && i < a->n; i++) {
		crypto_generichash(h + SYNC_DIGEST_LEN, SYNC_DIGEST_LEN, a->blobs[i], a->lens[i],
				   NULL, 0);
		crypto_generichash(next, sizeof(next), h, sizeof(h), NULL, 0);
		memcpy(h, next, sizeof(next));
	}
	memcpy(hash, h, SYNC_DIGEST_LEN);
	return PKS_OK;
}

/* The fixed content of the fuzz harness's replica, which the seed transcripts assume. */
static inline bool trep_fill_fuzz(struct trep *t)
{
	static const uint8_t genesis[] = "genesis";
	uint8_t id[SYNC_ID_LEN] = {0};

	if (!trep_add_op(t, genesis, sizeof(genesis)))
		return false;
	for (uint8_t a = 1; a <= 3; a++) {
		id[0] = a;
		for (uint32_t i = 0; i < 5; i++)
			if (!trep_add_version(t, id, 40u * a, a))
				return false;
	}
	return true;
}

static inline bool trep_add_key(struct trep *t, const uint8_t blob[SYNC_KEY_BLOB_LEN])
{
	for (size_t i = 0; i < t->n_keys; i++)
		if (memcmp(t->keys[i], blob, 4) == 0)
			return true; /* an epoch already held keeps its key */
	if (t->n_keys == 16)
		return false;
	memcpy(t->keys[t->n_keys++], blob, SYNC_KEY_BLOB_LEN);
	return true;
}

static inline int trep_keys_export(void *replica, sync_emit_fn emit, void *ctx)
{
	struct trep *t = replica;
	int r = PKS_OK;

	for (size_t i = 0; i < t->n_keys && r == PKS_OK; i++)
		r = emit(ctx, t->keys[i], SYNC_KEY_BLOB_LEN);
	return r == 1 ? PKS_OK : r;
}

static inline int trep_keys_apply(void *replica, const struct sync_blob *keys, size_t n)
{
	struct trep *t = replica;

	t->keys_calls++;
	for (size_t i = 0; i < n; i++)
		if (keys[i].len != SYNC_KEY_BLOB_LEN || !trep_add_key(t, keys[i].data))
			return PKS_ERR_TOO_LARGE;
	return PKS_OK;
}

static const struct sync_replica_ops trep_ops = {
    .memb_heads = trep_memb_heads,
    .memb_digest = trep_memb_digest,
    .memb_missing = trep_memb_missing,
    .memb_apply = trep_memb_apply,
    .peer_allowed = trep_peer_allowed,
    .vector = trep_vector,
    .versions_after = trep_versions_after,
    .versions_apply = trep_versions_apply,
    .digest = trep_digest,
    .author_summary = trep_author_summary,
    .keys_export = trep_keys_export,
    .keys_apply = trep_keys_apply,
};

#endif
