/*
 * Membership DAG: authoring and applying ops, acceptance, strong remove,
 * concurrent revokes, ROTATE key sealing, pending ops, limits, the
 * canonical codec, and seeded convergence over delivery orders.
 */
#include "proto/membership.h"

#include <cbor.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/err.h"
#include "proto/record.h"
#include "tests/check.h"

#define T0 UINT64_C(1700000000000)
#define DEVS_MAX 300

/* ---- fixtures ---- */

struct dev {
	uint8_t sign_pk[32], sign_sk[64];
	uint8_t dh_pk[32], dh_sk[32];
	uint8_t id[32];
};

static struct dev devs[DEVS_MAX];
static const uint8_t vault[16] = {0x76, 0x61, 0x75, 0x6c, 0x74};

static void setup(void)
{
	static bool done;

	if (done)
		return;
	if (sodium_init() < 0)
		abort();
	for (size_t i = 0; i < DEVS_MAX; i++) {
		uint8_t seed[32];

		memset(seed, 0, sizeof(seed));
		seed[0] = (uint8_t)i;
		seed[1] = (uint8_t)(i >> 8);
		seed[2] = 's';
		crypto_sign_seed_keypair(devs[i].sign_pk, devs[i].sign_sk, seed);
		seed[2] = 'd';
		crypto_box_seed_keypair(devs[i].dh_pk, devs[i].dh_sk, seed);
		record_device_id(devs[i].sign_pk, devs[i].id);
	}
	done = true;
}

/* A growing list of op encodings. */
struct oplist {
	uint8_t *op[8192];
	size_t len[8192];
	size_t n;
};

static void oplist_push(struct oplist *l, uint8_t *op, size_t len)
{
	l->op[l->n] = op;
	l->len[l->n] = len;
	l->n++;
}

static void oplist_free(struct oplist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->op[i]);
	l->n = 0;
}

static struct membership *fresh(void)
{
	struct membership *m = NULL;

	if (membership_new(&m) != PKS_OK)
		abort();
	return m;
}

/* A membership with devs[0] as genesis; the op goes to l when non-NULL. */
static struct membership *with_genesis(struct oplist *l)
{
	struct membership *m = fresh();
	uint8_t *op = NULL;
	size_t len = 0;

	CHECK_OK(
	    membership_genesis(m, vault, devs[0].sign_sk, devs[0].dh_pk, "dev0", T0, &op, &len));
	if (l != NULL)
		oplist_push(l, op, len);
	else
		free(op);
	return m;
}

static int add(struct membership *m, struct oplist *l, size_t author, size_t dev)
{
	uint8_t *op = NULL;
	size_t len = 0;
	char name[32];
	int r;

	snprintf(name, sizeof(name), "dev%zu", dev);
	r = membership_add_device(m, devs[author].sign_sk, devs[dev].sign_pk, devs[dev].dh_pk, name,
				  T0 + dev, &op, &len);
	if (r == PKS_OK && l != NULL)
		oplist_push(l, op, len);
	else
		free(op);
	return r;
}

static int revoke(struct membership *m, struct oplist *l, size_t author, size_t dev, uint64_t cut,
		  uint64_t now)
{
	uint8_t *op = NULL;
	size_t len = 0;
	int r = membership_revoke(m, devs[author].sign_sk, devs[dev].id, cut, now, &op, &len);

	if (r == PKS_OK && l != NULL)
		oplist_push(l, op, len);
	else
		free(op);
	return r;
}

static int rename_dev(struct membership *m, struct oplist *l, size_t author, size_t dev,
		      const char *name)
{
	uint8_t *op = NULL;
	size_t len = 0;
	int r = membership_rename(m, devs[author].sign_sk, devs[dev].id, name, T0, &op, &len);

	if (r == PKS_OK && l != NULL)
		oplist_push(l, op, len);
	else
		free(op);
	return r;
}

static int rotate(struct membership *m, struct oplist *l, size_t author, const uint8_t key[32])
{
	uint8_t *op = NULL;
	size_t len = 0;
	int r = membership_rotate(m, devs[author].sign_sk, key, T0, &op, &len);

	if (r == PKS_OK && l != NULL)
		oplist_push(l, op, len);
	else
		free(op);
	return r;
}

static int copy_cb(void *user, const uint8_t id[32], const uint8_t *op, size_t len)
{
	(void)id;
	return membership_apply(user, op, len);
}

/* Sends to dst every op of src that dst lacks (by dst's heads). */
static int sync_to(const struct membership *src, struct membership *dst)
{
	uint8_t heads[MEMBERSHIP_HEADS_MAX][32];
	size_t n = membership_heads(dst, heads, MEMBERSHIP_HEADS_MAX);

	return membership_foreach_missing(src, (const uint8_t(*)[32])heads, n, copy_cb, dst);
}

static struct membership *clone(const struct membership *m)
{
	struct membership *c = fresh();

	CHECK_OK(membership_foreach_op(m, copy_cb, c));
	return c;
}

static int view_cb(void *user, const struct membership_device *d)
{
	crypto_generichash_state *st = user;

	crypto_generichash_update(st, (const uint8_t *)d, sizeof(*d));
	return 0;
}

/*
 * A hash of everything observable: devices (with revocation, names, keys),
 * members, epoch, digest, heads.
 */
static void view(const struct membership *m, uint8_t out[32])
{
	crypto_generichash_state st;
	uint8_t heads[MEMBERSHIP_HEADS_MAX][32], digest[32];
	size_t n = membership_heads(m, heads, MEMBERSHIP_HEADS_MAX);
	uint32_t epoch = membership_epoch(m);
	size_t members = membership_member_count(m);

	crypto_generichash_init(&st, NULL, 0, 32);
	membership_foreach_device(m, view_cb, &st);
	membership_digest(m, digest);
	crypto_generichash_update(&st, digest, 32);
	crypto_generichash_update(&st, (const uint8_t *)&epoch, sizeof(epoch));
	crypto_generichash_update(&st, (const uint8_t *)&members, sizeof(members));
	crypto_generichash_update(&st, (const uint8_t *)heads, n * 32);
	crypto_generichash_final(&st, out, 32);
}

/* ---- a test-side op writer, to craft ops the API refuses to author ---- */

struct craft {
	uint64_t kind;
	uint8_t vault[16];
	const uint8_t *author_pk;
	size_t n_parents;
	uint8_t parents[20][32];
	uint64_t depth, time;
	const uint8_t *sign_pk, *dh_pk; /* ADD, GENESIS (dh) */
	const char *name;
	size_t name_len; /* 0: strlen(name) */
	const uint8_t *target;
	uint64_t cutoff;
	uint64_t epoch;
	size_t n_seals;
	const uint8_t (*seal_ids)[32];
	/* Knobs for broken encodings. */
	bool long_depth;    /* depth with a one-byte-longer head */
	bool swap_kind;     /* key 2 before key 1 */
	bool dup_time;      /* key 6 twice */
	uint64_t extra_key; /* a further key with uint 0 (0: none) */
	bool drop_time;     /* omit key 6 */
	bool indefinite;    /* outer array of indefinite length */
	bool long_body_len; /* body bstr with a longer head */
	bool trailing;      /* one byte after the op */
};

static void w_head(struct pks_buf *b, size_t n, const unsigned char *h)
{
	pks_buf_append(b, h, n);
}

static void w_uint(struct pks_buf *b, uint64_t v)
{
	unsigned char h[9];

	w_head(b, cbor_encode_uint(v, h, sizeof(h)), h);
}

static void w_bytes(struct pks_buf *b, const uint8_t *p, size_t n)
{
	unsigned char h[9];

	w_head(b, cbor_encode_bytestring_start(n, h, sizeof(h)), h);
	pks_buf_append(b, p, n);
}

/* Signs body with sk and wraps it. *out malloc'd. */
static void craft_wrap(const struct craft *c, struct pks_buf *body, const uint8_t sk[64],
		       uint8_t **out, size_t *out_len)
{
	static const char domain[] = "pksync membership op v1";
	struct pks_buf b, msg;
	uint8_t sig[64];

	pks_buf_init(&msg, 0);
	pks_buf_append(&msg, domain, sizeof(domain));
	pks_buf_append(&msg, body->data, body->len);
	crypto_sign_detached(sig, NULL, msg.data, msg.len, sk);
	pks_buf_init(&b, 0);
	if (c->indefinite)
		pks_buf_u8(&b, 0x9f);
	else
		pks_buf_u8(&b, 0x82);
	if (c->long_body_len) {
		pks_buf_u8(&b, 0x5a);
		pks_buf_be32(&b, (uint32_t)body->len);
		pks_buf_append(&b, body->data, body->len);
	} else {
		w_bytes(&b, body->data, body->len);
	}
	w_bytes(&b, sig, 64);
	if (c->indefinite)
		pks_buf_u8(&b, 0xff);
	if (c->trailing)
		pks_buf_u8(&b, 0x00);
	pks_buf_take(&b, out, out_len);
	pks_buf_free(&b);
	pks_buf_free(&msg);
}

static void craft_op(const struct craft *c, const uint8_t sk[64], uint8_t **out, size_t *out_len)
{
	struct pks_buf b;
	size_t keys = 6;
	unsigned char h[9];

	switch (c->kind) {
	case MEMBERSHIP_ADD:
		keys += 3;
		break;
	default:
		keys += 2;
		break;
	}
	keys += c->dup_time + (c->extra_key != 0) - c->drop_time;
	pks_buf_init(&b, 0);
	w_head(&b, cbor_encode_map_start(keys, h, sizeof(h)), h);
	if (c->swap_kind) {
		w_uint(&b, 2);
		w_bytes(&b, c->vault, 16);
		w_uint(&b, 1);
		w_uint(&b, c->kind);
	} else {
		w_uint(&b, 1);
		w_uint(&b, c->kind);
		w_uint(&b, 2);
		w_bytes(&b, c->vault, 16);
	}
	w_uint(&b, 3);
	w_bytes(&b, c->author_pk, 32);
	w_uint(&b, 4);
	w_head(&b, cbor_encode_array_start(c->n_parents, h, sizeof(h)), h);
	for (size_t i = 0; i < c->n_parents; i++)
		w_bytes(&b, c->parents[i], 32);
	w_uint(&b, 5);
	if (c->long_depth) {
		pks_buf_u8(&b, 0x1b);
		pks_buf_be64(&b, c->depth);
	} else {
		w_uint(&b, c->depth);
	}
	if (!c->drop_time) {
		w_uint(&b, 6);
		w_uint(&b, c->time);
	}
	if (c->dup_time) {
		w_uint(&b, 6);
		w_uint(&b, c->time);
	}
	switch (c->kind) {
	case MEMBERSHIP_GENESIS:
	case MEMBERSHIP_ADD:
		if (c->kind == MEMBERSHIP_ADD) {
			w_uint(&b, 7);
			w_bytes(&b, c->sign_pk, 32);
		}
		w_uint(&b, 8);
		w_bytes(&b, c->dh_pk, 32);
		w_uint(&b, 9);
		w_head(&b,
		       cbor_encode_string_start(c->name_len ? c->name_len : strlen(c->name), h,
						sizeof(h)),
		       h);
		pks_buf_append(&b, c->name, c->name_len ? c->name_len : strlen(c->name));
		break;
	case MEMBERSHIP_REVOKE:
		w_uint(&b, 10);
		w_bytes(&b, c->target, 32);
		w_uint(&b, 11);
		w_uint(&b, c->cutoff);
		break;
	case MEMBERSHIP_ROTATE:
		w_uint(&b, 12);
		w_uint(&b, c->epoch);
		w_uint(&b, 13);
		w_head(&b, cbor_encode_array_start(c->n_seals, h, sizeof(h)), h);
		for (size_t i = 0; i < c->n_seals; i++) {
			uint8_t box[MEMBERSHIP_SEALED_KEY_LEN] = {0};

			w_head(&b, cbor_encode_array_start(2, h, sizeof(h)), h);
			w_bytes(&b, c->seal_ids[i], 32);
			w_bytes(&b, box, sizeof(box));
		}
		break;
	default:
		break;
	}
	if (c->extra_key != 0) {
		w_uint(&b, c->extra_key);
		w_uint(&b, 0);
	}
	craft_wrap(c, &b, sk, out, out_len);
	pks_buf_free(&b);
}

/* An ADD of devs[dev] by devs[author] on top of m's single head. */
static struct craft craft_add(const struct membership *m, size_t author, size_t dev, uint64_t depth)
{
	struct craft c;

	memset(&c, 0, sizeof(c));
	c.kind = MEMBERSHIP_ADD;
	memcpy(c.vault, vault, 16);
	c.author_pk = devs[author].sign_pk;
	c.n_parents = membership_heads(m, c.parents, 20);
	c.depth = depth;
	c.time = T0;
	c.sign_pk = devs[dev].sign_pk;
	c.dh_pk = devs[dev].dh_pk;
	c.name = "crafted";
	return c;
}

static int apply_craft(struct membership *m, const struct craft *c, size_t signer)
{
	uint8_t *op = NULL;
	size_t len = 0;
	int r;

	craft_op(c, devs[signer].sign_sk, &op, &len);
	r = membership_apply(m, op, len);
	free(op);
	return r;
}

/* ---- cases ---- */

static void test_genesis_add_chain(void)
{
	struct oplist l = {.n = 0};
	struct membership *m, *c;
	struct membership_device d;
	uint8_t v[16], a[32], b[32];

	setup();
	m = fresh();
	CHECK(!membership_has_genesis(m));
	CHECK_EQ(membership_epoch(m), 1);
	CHECK_EQ(add(m, NULL, 0, 1), PKS_ERR_STATE);
	membership_free(m);

	m = with_genesis(&l);
	CHECK(membership_has_genesis(m));
	membership_vault_id(m, v);
	CHECK_MEM_EQ(v, vault, 16);
	CHECK(membership_is_member(m, devs[0].id));
	CHECK(!membership_is_member(m, devs[1].id));
	/* A chain: 0 adds 1, 1 adds 2, 2 adds 3. */
	CHECK_OK(add(m, &l, 0, 1));
	CHECK_OK(add(m, &l, 1, 2));
	CHECK_OK(add(m, &l, 2, 3));
	CHECK_EQ(membership_member_count(m), 4);
	CHECK_OK(membership_get(m, devs[3].id, &d));
	CHECK_MEM_EQ(d.added_by, devs[2].id, 32);
	CHECK_MEM_EQ(d.sign_pk, devs[3].sign_pk, 32);
	CHECK_MEM_EQ(d.dh_pk, devs[3].dh_pk, 32);
	CHECK_STR_EQ(d.name, "dev3");
	CHECK_EQ(d.added_at_ms, T0 + 3);
	CHECK(!d.revoked);
	CHECK_OK(membership_get(m, devs[0].id, &d));
	CHECK_MEM_EQ(d.added_by, devs[0].id, 32);
	CHECK_OK(membership_find_by_dh(m, devs[2].dh_pk, &d));
	CHECK_MEM_EQ(d.device_id, devs[2].id, 32);
	CHECK_EQ(membership_find_by_dh(m, devs[9].dh_pk, &d), PKS_ERR_NOT_FOUND);
	CHECK_EQ(membership_get(m, devs[9].id, &d), PKS_ERR_NOT_FOUND);
	/* Adding again, or by a non-member, is refused at authoring. */
	CHECK_EQ(add(m, NULL, 0, 2), PKS_ERR_EXISTS);
	CHECK_EQ(add(m, NULL, 7, 8), PKS_ERR_REJECTED);
	CHECK_EQ(rename_dev(m, NULL, 0, 1,
			    "0123456789012345678901234567890123456789012345678901234567890123+"),
		 PKS_ERR_INVALID);
	/* Renames: self and another (household model). */
	CHECK_OK(rename_dev(m, &l, 3, 3, "phone"));
	CHECK_OK(rename_dev(m, &l, 0, 3, "Alice's phone"));
	CHECK_OK(membership_get(m, devs[3].id, &d));
	CHECK_STR_EQ(d.name, "Alice's phone");
	CHECK_EQ(membership_heads(m, NULL, 0), 1);
	CHECK_EQ(membership_op_count(m), l.n);
	for (size_t i = 0; i < l.n; i++) {
		uint8_t id[32];

		membership_op_id(l.op[i], l.len[i], id);
		CHECK(membership_has_op(m, id));
		/* Applying a known op again is fine and changes nothing. */
		CHECK_OK(membership_apply(m, l.op[i], l.len[i]));
	}
	CHECK_EQ(membership_op_count(m), l.n);
	/* A replica rebuilt from the ops sees the same. */
	c = clone(m);
	view(m, a);
	view(c, b);
	CHECK_MEM_EQ(a, b, 32);
	/* Genesis twice: refused. */
	{
		uint8_t *op = NULL;
		size_t len = 0;
		CHECK_EQ(membership_genesis(m, vault, devs[5].sign_sk, devs[5].dh_pk, "x", T0, &op,
					    &len),
			 PKS_ERR_STATE);
		struct membership *other = fresh();
		CHECK_OK(membership_genesis(other, vault, devs[5].sign_sk, devs[5].dh_pk, "x", T0,
					    &op, &len));
		CHECK_EQ(membership_apply(m, op, len), PKS_ERR_REJECTED);
		free(op);
		membership_free(other);
	}
	membership_free(c);
	membership_free(m);
	oplist_free(&l);
}

/* Every permutation of delivery of a concurrent scenario gives one view. */
static size_t perm_count, perm_failures;

static void permute(struct oplist *l, size_t *idx, size_t k, const uint8_t want[32])
{
	if (k == l->n) {
		struct membership *m = fresh();
		uint8_t got[32];

		for (size_t i = 0; i < l->n; i++) {
			int r = membership_apply(m, l->op[idx[i]], l->len[idx[i]]);
			if (r != PKS_OK && r != PKS_ERR_PENDING)
				perm_failures++;
		}
		view(m, got);
		if (memcmp(got, want, 32) != 0 || membership_op_count(m) != l->n)
			perm_failures++;
		perm_count++;
		membership_free(m);
		return;
	}
	for (size_t i = k; i < l->n; i++) {
		size_t t = idx[k];
		idx[k] = idx[i];
		idx[i] = t;
		permute(l, idx, k + 1, want);
		idx[i] = idx[k];
		idx[k] = t;
	}
}

static void test_permutations(void)
{
	struct oplist l = {.n = 0};
	struct membership *a, *b, *c;
	uint8_t want[32], key[32];
	size_t idx[16];

	setup();
	a = with_genesis(&l);
	CHECK_OK(add(a, &l, 0, 1));
	CHECK_OK(add(a, &l, 0, 2));
	b = clone(a);
	c = clone(a);
	/* Concurrently: 0 revokes 1; 1 adds 3; 2 rotates and renames 0. */
	CHECK_OK(revoke(a, &l, 0, 1, 0, T0));
	CHECK_OK(add(b, &l, 1, 3));
	memset(key, 0x4b, sizeof(key));
	CHECK_OK(rotate(c, &l, 2, key));
	CHECK_OK(rename_dev(c, &l, 2, 0, "renamed"));
	CHECK_OK(sync_to(b, a));
	CHECK_OK(sync_to(c, a));
	view(a, want);
	CHECK(membership_is_member(a, devs[0].id));
	CHECK(!membership_is_member(a, devs[1].id));
	CHECK(membership_is_member(a, devs[2].id));
	CHECK(!membership_is_member(a, devs[3].id)); /* added by 1 concurrently: ignored */
	CHECK_EQ(membership_epoch(a), 2);
	CHECK_EQ(l.n, 7);
	for (size_t i = 0; i < l.n; i++)
		idx[i] = i;
	perm_count = perm_failures = 0;
	permute(&l, idx, 0, want);
	CHECK_EQ(perm_count, 5040);
	CHECK_EQ(perm_failures, 0);
	membership_free(a);
	membership_free(b);
	membership_free(c);
	oplist_free(&l);
}

static void test_forged_signature(void)
{
	struct oplist l = {.n = 0};
	struct membership *m, *r;
	uint8_t *bad;

	setup();
	m = with_genesis(&l);
	CHECK_OK(add(m, &l, 0, 1));
	r = fresh();
	CHECK_OK(membership_apply(r, l.op[0], l.len[0]));
	/* Flip one bit of the signature, then of the name in the body. */
	bad = malloc(l.len[1]);
	memcpy(bad, l.op[1], l.len[1]);
	bad[l.len[1] - 1] ^= 1;
	CHECK_EQ(membership_apply(r, bad, l.len[1]), PKS_ERR_AUTH);
	memcpy(bad, l.op[1], l.len[1]);
	bad[l.len[1] - 64 - 3] ^= 1; /* inside "dev1" */
	CHECK_EQ(membership_apply(r, bad, l.len[1]), PKS_ERR_AUTH);
	/* Signed by another key than the author named. */
	{
		struct craft c = craft_add(r, 0, 4, 1);
		CHECK_EQ(apply_craft(r, &c, 5), PKS_ERR_AUTH);
		CHECK_OK(apply_craft(r, &c, 0));
	}
	CHECK_EQ(membership_op_count(r), 2);
	CHECK(!membership_is_member(r, devs[1].id));
	free(bad);
	membership_free(r);
	membership_free(m);
	oplist_free(&l);
}

static void test_non_member_refused(void)
{
	struct membership *m;
	struct craft c;

	setup();
	m = with_genesis(NULL);
	/* 7 was never added: its ADD of 8 and its REVOKE of 0 are refused. */
	c = craft_add(m, 7, 8, 1);
	CHECK_EQ(apply_craft(m, &c, 7), PKS_ERR_REJECTED);
	c.kind = MEMBERSHIP_REVOKE;
	c.target = devs[0].id;
	CHECK_EQ(apply_craft(m, &c, 7), PKS_ERR_REJECTED);
	/* Wrong vault, even by a member. */
	c = craft_add(m, 0, 8, 1);
	c.vault[0] ^= 1;
	CHECK_EQ(apply_craft(m, &c, 0), PKS_ERR_REJECTED);
	/* A depth that does not match the parents. */
	c = craft_add(m, 0, 8, 2);
	CHECK_EQ(apply_craft(m, &c, 0), PKS_ERR_MALFORMED);
	/* REVOKE of a device that is not a member. */
	c = craft_add(m, 0, 8, 1);
	c.kind = MEMBERSHIP_REVOKE;
	c.target = devs[9].id;
	CHECK_EQ(apply_craft(m, &c, 0), PKS_ERR_REJECTED);
	/* ROTATE skipping an epoch, or sealed to a non-member. */
	{
		uint8_t ids[1][32];
		memcpy(ids[0], devs[0].id, 32);
		c = craft_add(m, 0, 8, 1);
		c.kind = MEMBERSHIP_ROTATE;
		c.n_seals = 1;
		c.seal_ids = (const uint8_t(*)[32])ids;
		c.epoch = 3;
		CHECK_EQ(apply_craft(m, &c, 0), PKS_ERR_REJECTED);
		c.epoch = 2;
		memcpy(ids[0], devs[9].id, 32);
		CHECK_EQ(apply_craft(m, &c, 0), PKS_ERR_REJECTED);
		memcpy(ids[0], devs[0].id, 32);
		CHECK_OK(apply_craft(m, &c, 0));
		CHECK_EQ(membership_epoch(m), 2);
	}
	CHECK_EQ(membership_op_count(m), 2);
	CHECK_EQ(membership_member_count(m), 1);
	membership_free(m);
}

/* Does any 80-byte window of op open as a sealed box to (pk, sk)? */
static bool op_opens_for(const uint8_t *op, size_t len, const struct dev *d, uint8_t key[32])
{
	for (size_t i = 0; i + MEMBERSHIP_SEALED_KEY_LEN <= len; i++)
		if (crypto_box_seal_open(key, op + i, MEMBERSHIP_SEALED_KEY_LEN, d->dh_pk,
					 d->dh_sk) == 0)
			return true;
	return false;
}

static void test_revoke_rotate(void)
{
	struct oplist l = {.n = 0};
	struct membership *m, *r;
	struct membership_device d;
	uint8_t key[32], got[32];

	setup();
	m = with_genesis(&l);
	CHECK_OK(add(m, &l, 0, 1));
	CHECK_OK(add(m, &l, 0, 2));
	CHECK(!membership_rotate_needed(m));
	CHECK(membership_version_admissible(m, devs[2].id, 1000));
	CHECK(!membership_version_admissible(m, devs[9].id, 1));
	CHECK_OK(revoke(m, &l, 0, 2, 5, T0 + 99));
	CHECK(!membership_is_member(m, devs[2].id));
	CHECK_OK(membership_get(m, devs[2].id, &d));
	CHECK(d.revoked);
	CHECK_EQ(d.revoked_at_ms, T0 + 99);
	CHECK(membership_version_admissible(m, devs[2].id, 5));
	CHECK(!membership_version_admissible(m, devs[2].id, 6));
	CHECK(membership_version_admissible(m, devs[1].id, 6));
	CHECK_EQ(membership_find_by_dh(m, devs[2].dh_pk, &d), PKS_ERR_NOT_FOUND);
	CHECK(membership_rotate_needed(m));
	/* A revoked device can no longer author, nor be revoked again. */
	CHECK_EQ(add(m, NULL, 2, 5), PKS_ERR_REJECTED);
	CHECK_EQ(revoke(m, NULL, 0, 2, 0, T0), PKS_ERR_NOT_FOUND);
	/* Nor be re-added under the same key. */
	CHECK_EQ(add(m, NULL, 0, 2), PKS_ERR_EXISTS);
	{
		struct craft c = craft_add(m, 0, 2, 4);
		CHECK_EQ(apply_craft(m, &c, 0), PKS_ERR_REJECTED);
	}

	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(0xa5 ^ i);
	CHECK_OK(rotate(m, &l, 1, key));
	CHECK_EQ(membership_epoch(m), 2);
	CHECK(!membership_rotate_needed(m));
	CHECK_OK(membership_epoch_key(m, 2, devs[0].dh_pk, devs[0].dh_sk, got));
	CHECK_MEM_EQ(got, key, 32);
	memset(got, 0, 32);
	CHECK_OK(membership_epoch_key(m, 2, devs[1].dh_pk, devs[1].dh_sk, got));
	CHECK_MEM_EQ(got, key, 32);
	CHECK_EQ(membership_epoch_key(m, 2, devs[2].dh_pk, devs[2].dh_sk, got), PKS_ERR_NOT_FOUND);
	CHECK_EQ(membership_epoch_key(m, 1, devs[0].dh_pk, devs[0].dh_sk, got), PKS_ERR_NOT_FOUND);
	CHECK_EQ(membership_epoch_key(m, 3, devs[0].dh_pk, devs[0].dh_sk, got), PKS_ERR_NOT_FOUND);
	/* The revoked device's key opens nothing in the op; a member's does. */
	CHECK(!op_opens_for(l.op[l.n - 1], l.len[l.n - 1], &devs[2], got));
	CHECK(op_opens_for(l.op[l.n - 1], l.len[l.n - 1], &devs[1], got));
	CHECK_MEM_EQ(got, key, 32);
	/* A wrong secret key for a sealed-to device: the box does not open. */
	CHECK_EQ(membership_epoch_key(m, 2, devs[1].dh_pk, devs[0].dh_sk, got), PKS_ERR_AUTH);

	/* A replica gets the same epoch and key. */
	r = clone(m);
	CHECK_EQ(membership_epoch(r), 2);
	CHECK_OK(membership_epoch_key(r, 2, devs[1].dh_pk, devs[1].dh_sk, got));
	CHECK_MEM_EQ(got, key, 32);
	/* Revoking 1 afterwards: the epoch-2 key is now known to a non-member. */
	CHECK_OK(revoke(m, &l, 0, 1, 0, T0));
	CHECK(membership_rotate_needed(m));
	membership_free(r);
	membership_free(m);
	oplist_free(&l);
}

/* Concurrent ROTATEs to one epoch: the smaller op id wins everywhere. */
static void test_concurrent_rotate(void)
{
	struct oplist l = {.n = 0};
	struct membership *a, *b;
	uint8_t k1[32], k2[32], got[32], id1[32], id2[32];
	const uint8_t *win, *lose;

	setup();
	a = with_genesis(&l);
	CHECK_OK(add(a, &l, 0, 1));
	b = clone(a);
	memset(k1, 0x11, 32);
	memset(k2, 0x22, 32);
	CHECK_OK(rotate(a, &l, 0, k1));
	CHECK_OK(rotate(b, &l, 1, k2));
	CHECK_OK(add(b, &l, 1, 2)); /* after b's rotate: 2 holds no epoch-2 key */
	membership_op_id(l.op[2], l.len[2], id1);
	membership_op_id(l.op[3], l.len[3], id2);
	win = memcmp(id1, id2, 32) < 0 ? k1 : k2;
	lose = win == k1 ? k2 : k1;
	CHECK_OK(sync_to(a, b));
	CHECK_OK(sync_to(b, a));
	CHECK_EQ(membership_epoch(a), 2);
	CHECK_EQ(membership_epoch(b), 2);
	CHECK_OK(membership_epoch_key(a, 2, devs[1].dh_pk, devs[1].dh_sk, got));
	CHECK_MEM_EQ(got, win, 32);
	CHECK_OK(membership_epoch_key(b, 2, devs[0].dh_pk, devs[0].dh_sk, got));
	CHECK_MEM_EQ(got, win, 32);
	CHECK_OK(membership_epoch_key_nth(b, 2, 0, devs[0].dh_pk, devs[0].dh_sk, got));
	CHECK_MEM_EQ(got, win, 32);
	CHECK_OK(membership_epoch_key_nth(b, 2, 1, devs[0].dh_pk, devs[0].dh_sk, got));
	CHECK_MEM_EQ(got, lose, 32);
	CHECK_EQ(membership_epoch_key_nth(b, 2, 2, devs[0].dh_pk, devs[0].dh_sk, got),
		 PKS_ERR_NOT_FOUND);
	CHECK_EQ(membership_epoch_key(b, 2, devs[2].dh_pk, devs[2].dh_sk, got), PKS_ERR_NOT_FOUND);
	CHECK_EQ(membership_epoch_key_nth(b, 2, 1, devs[2].dh_pk, devs[2].dh_sk, got),
		 PKS_ERR_PERM);
	/* The next rotate is epoch 3 and reaches 2. */
	CHECK_OK(rotate(a, &l, 1, k1));
	CHECK_EQ(membership_epoch(a), 3);
	CHECK_OK(membership_epoch_key(a, 3, devs[2].dh_pk, devs[2].dh_sk, got));
	CHECK_MEM_EQ(got, k1, 32);
	membership_free(a);
	membership_free(b);
	oplist_free(&l);
}

/* Concurrent revokes of one device: the smallest cutoff applies. */
static void test_cutoff(void)
{
	struct oplist l = {.n = 0};
	struct membership *a, *b;
	struct membership_device d;

	setup();
	a = with_genesis(&l);
	CHECK_OK(add(a, &l, 0, 1));
	CHECK_OK(add(a, &l, 0, 2));
	b = clone(a);
	CHECK_OK(revoke(a, &l, 0, 2, 9, T0 + 50));
	CHECK_OK(revoke(b, &l, 1, 2, 4, T0 + 40));
	CHECK(membership_version_admissible(a, devs[2].id, 9));
	CHECK(!membership_version_admissible(a, devs[2].id, 10));
	CHECK_OK(sync_to(b, a));
	CHECK_OK(sync_to(a, b));
	for (int i = 0; i < 2; i++) {
		struct membership *m = i ? b : a;
		CHECK(membership_version_admissible(m, devs[2].id, 4));
		CHECK(!membership_version_admissible(m, devs[2].id, 5));
		CHECK(membership_version_admissible(m, devs[1].id, UINT64_MAX));
		CHECK_OK(membership_get(m, devs[2].id, &d));
		CHECK(d.revoked);
	}
	membership_free(a);
	membership_free(b);
	oplist_free(&l);
}

static void test_mutual_revoke(void)
{
	struct oplist l = {.n = 0};
	struct membership *a, *b;
	uint8_t va[32], vb[32];

	setup();
	a = with_genesis(&l);
	CHECK_OK(add(a, &l, 0, 1));
	CHECK_OK(add(a, &l, 0, 2));
	b = clone(a);
	CHECK_OK(revoke(a, &l, 0, 1, 0, T0 + 10));
	CHECK_OK(revoke(b, &l, 1, 0, 0, T0 + 20));
	CHECK(!membership_is_member(a, devs[1].id));
	CHECK(!membership_is_member(b, devs[0].id));
	CHECK_OK(sync_to(a, b));
	CHECK_OK(sync_to(b, a));
	view(a, va);
	view(b, vb);
	CHECK_MEM_EQ(va, vb, 32);
	CHECK(!membership_is_member(a, devs[0].id));
	CHECK(!membership_is_member(a, devs[1].id));
	CHECK(membership_is_member(a, devs[2].id));
	CHECK_EQ(membership_member_count(a), 1);
	CHECK_EQ(membership_heads(a, NULL, 0), 2);
	/* The survivor carries on and merges the heads. */
	CHECK_OK(add(a, &l, 2, 3));
	CHECK_EQ(membership_heads(a, NULL, 0), 1);
	CHECK(membership_is_member(a, devs[3].id));
	membership_free(a);
	membership_free(b);
	oplist_free(&l);
}

/* Ops by a revoked device not in the revoke's causal past are ignored. */
static void test_strong_remove(void)
{
	struct oplist l = {.n = 0};
	struct membership *a, *b, *c;
	struct membership_device d;
	uint8_t va[32], vb[32];

	setup();
	a = with_genesis(&l);
	CHECK_OK(add(a, &l, 0, 1));
	CHECK_OK(add(a, &l, 0, 2));
	b = clone(a);
	c = clone(a);
	CHECK_OK(revoke(a, &l, 0, 1, 3, T0));
	/* 1 has not seen it: adds 4 with a far later timestamp, renames itself. */
	{
		uint8_t *op = NULL;
		size_t len = 0;
		CHECK_OK(membership_add_device(b, devs[1].sign_sk, devs[4].sign_pk, devs[4].dh_pk,
					       "late", T0 + 1000000000, &op, &len));
		oplist_push(&l, op, len);
	}
	CHECK_OK(rename_dev(b, &l, 1, 1, "still here"));
	/* And revokes 2: ignored as well, so 2 stays and may still author. */
	CHECK_OK(revoke(b, &l, 1, 2, 0, T0 + 1000000000));
	CHECK(membership_is_member(b, devs[4].id));
	CHECK(!membership_is_member(b, devs[2].id));
	CHECK_OK(sync_to(b, a));
	CHECK_OK(sync_to(a, b));
	view(a, va);
	view(b, vb);
	CHECK_MEM_EQ(va, vb, 32);
	CHECK(!membership_is_member(a, devs[1].id));
	CHECK(!membership_is_member(a, devs[4].id));
	CHECK_EQ(membership_get(a, devs[4].id, &d), PKS_ERR_NOT_FOUND);
	CHECK(!membership_version_admissible(a, devs[4].id, 1));
	CHECK_OK(membership_get(a, devs[1].id, &d));
	CHECK_STR_EQ(d.name, "dev1");
	CHECK(membership_is_member(a, devs[0].id));
	CHECK(membership_is_member(a, devs[2].id));
	/* 4 itself cannot author on top of it now; 2 can. */
	CHECK_EQ(add(a, NULL, 4, 5), PKS_ERR_REJECTED);
	CHECK_OK(add(a, &l, 2, 7));
	CHECK(membership_is_member(a, devs[7].id));
	CHECK_OK(sync_to(a, b));
	CHECK(membership_is_member(b, devs[7].id));
	CHECK(membership_is_member(b, devs[2].id));

	/*
	 * A revoked key re-added concurrently (by 2, who has not seen the
	 * revoke, under another ADD) stays revoked.
	 */
	{
		struct membership *x = fresh(), *y;
		struct oplist k = {.n = 0};
		CHECK_OK(membership_apply(x, l.op[0], l.len[0]));
		CHECK_OK(membership_apply(x, l.op[1], l.len[1]));
		CHECK_OK(membership_apply(x, l.op[2], l.len[2]));
		y = clone(x);
		CHECK_OK(add(x, &k, 0, 6));
		CHECK_OK(revoke(x, &k, 0, 6, 0, T0));
		CHECK_OK(add(y, &k, 2, 6));
		CHECK(membership_is_member(y, devs[6].id));
		CHECK_OK(sync_to(y, x));
		CHECK_OK(sync_to(x, y));
		CHECK(!membership_is_member(x, devs[6].id));
		CHECK(!membership_is_member(y, devs[6].id));
		membership_free(x);
		membership_free(y);
		oplist_free(&k);
	}

	/*
	 * A sock puppet: 1, revoked, adds 5 behind the revoke's back and 5
	 * revokes 0. Both revokes are in doubt; removal wins: 0 and 1 go, 5
	 * never arrives, 2 stays.
	 */
	CHECK_OK(add(c, &l, 1, 5));
	CHECK_OK(revoke(c, &l, 5, 0, 0, T0));
	CHECK_OK(sync_to(c, a));
	CHECK_OK(sync_to(a, c));
	view(a, va);
	view(c, vb);
	CHECK_MEM_EQ(va, vb, 32);
	CHECK(!membership_is_member(a, devs[0].id));
	CHECK(!membership_is_member(a, devs[1].id));
	CHECK(!membership_is_member(a, devs[5].id));
	CHECK(membership_is_member(a, devs[2].id));
	CHECK(membership_is_member(a, devs[7].id));
	membership_free(a);
	membership_free(b);
	membership_free(c);
	oplist_free(&l);
}

static void test_pending(void)
{
	struct oplist l = {.n = 0};
	struct membership *m, *r;
	uint8_t va[32], vb[32];
	size_t base;

	setup();
	m = with_genesis(&l);
	CHECK_OK(add(m, &l, 0, 1));
	CHECK_OK(add(m, &l, 1, 2));
	CHECK_OK(rename_dev(m, &l, 2, 0, "x"));
	r = fresh();
	for (size_t i = l.n; i > 1; i--) {
		CHECK_EQ(membership_apply(r, l.op[i - 1], l.len[i - 1]), PKS_ERR_PENDING);
		/* Again: still pending, not duplicated. */
		CHECK_EQ(membership_apply(r, l.op[i - 1], l.len[i - 1]), PKS_ERR_PENDING);
		CHECK_EQ(membership_op_count(r), 0);
	}
	CHECK(!membership_is_member(r, devs[2].id));
	CHECK_OK(membership_apply(r, l.op[0], l.len[0]));
	CHECK_EQ(membership_op_count(r), l.n);
	view(m, va);
	view(r, vb);
	CHECK_MEM_EQ(va, vb, 32);
	membership_free(r);

	/* The pending set is bounded: the 257th waiting op is refused. */
	base = l.n;
	for (size_t i = 0; i < MEMBERSHIP_PENDING_MAX + 1; i++) {
		char name[16];
		snprintf(name, sizeof(name), "n%zu", i);
		CHECK_OK(rename_dev(m, &l, 0, 0, name));
	}
	r = fresh();
	for (size_t i = 0; i < MEMBERSHIP_PENDING_MAX; i++)
		CHECK_EQ(membership_apply(r, l.op[base + i], l.len[base + i]), PKS_ERR_PENDING);
	CHECK_EQ(membership_apply(r, l.op[base + MEMBERSHIP_PENDING_MAX],
				  l.len[base + MEMBERSHIP_PENDING_MAX]),
		 PKS_ERR_BUSY);
	CHECK_EQ(membership_op_count(r), 0);
	CHECK_EQ(membership_pending_count(r), MEMBERSHIP_PENDING_MAX);
	membership_clear_pending(r);
	CHECK_EQ(membership_pending_count(r), 0);
	CHECK_EQ(membership_apply(r, l.op[base + MEMBERSHIP_PENDING_MAX],
				  l.len[base + MEMBERSHIP_PENDING_MAX]),
		 PKS_ERR_PENDING);
	/* Once the rest arrives the waiting ops apply, and the refused one too. */
	CHECK_OK(sync_to(m, r));
	CHECK_EQ(membership_op_count(r), membership_op_count(m));
	view(m, va);
	view(r, vb);
	CHECK_MEM_EQ(va, vb, 32);
	membership_free(r);
	membership_free(m);
	oplist_free(&l);
}

static int count_cb(void *user, const uint8_t id[32], const uint8_t *op, size_t len)
{
	(void)id;
	(void)op;
	(void)len;
	(*(size_t *)user)++;
	return 0;
}

static void test_missing(void)
{
	struct oplist l = {.n = 0};
	struct membership *a, *b;
	uint8_t heads[MEMBERSHIP_HEADS_MAX][32], unknown[1][32];
	size_t n, count = 0;

	setup();
	a = with_genesis(&l);
	CHECK_OK(add(a, &l, 0, 1));
	b = clone(a);
	CHECK_OK(add(a, &l, 0, 2));
	CHECK_OK(add(a, &l, 0, 3));
	/* b is behind: it lacks exactly the two ADDs. */
	n = membership_heads(b, heads, MEMBERSHIP_HEADS_MAX);
	CHECK_EQ(n, 1);
	CHECK_OK(membership_foreach_missing(a, (const uint8_t(*)[32])heads, n, count_cb, &count));
	CHECK_EQ(count, 2);
	count = 0;
	/* b's own head is unknown to a and ignored: a sends everything. */
	CHECK_OK(rename_dev(b, &l, 1, 1, "b"));
	n = membership_heads(b, heads, MEMBERSHIP_HEADS_MAX);
	CHECK_OK(membership_foreach_missing(a, (const uint8_t(*)[32])heads, n, count_cb, &count));
	CHECK_EQ(count, 4);
	count = 0;
	CHECK_OK(membership_foreach_missing(a, NULL, 0, count_cb, &count));
	CHECK_EQ(count, 4);
	count = 0;
	memset(unknown[0], 0xee, 32);
	CHECK_OK(membership_foreach_missing(a, (const uint8_t(*)[32])unknown, 1, count_cb, &count));
	CHECK_EQ(count, 4);
	CHECK_OK(sync_to(a, b));
	CHECK_OK(sync_to(b, a));
	CHECK_EQ(membership_op_count(a), 5);
	CHECK_EQ(membership_heads(a, heads, MEMBERSHIP_HEADS_MAX), 2);
	count = 0;
	CHECK_OK(membership_foreach_missing(a, (const uint8_t(*)[32])heads, 2, count_cb, &count));
	CHECK_EQ(count, 0);
	membership_free(a);
	membership_free(b);
	oplist_free(&l);
}

static void test_limits(void)
{
	struct oplist l = {.n = 0};
	struct membership *m, *base;
	struct craft c;
	char name[MEMBERSHIP_NAME_MAX + 2];

	setup();
	m = with_genesis(&l);
	/* Name: 64 bytes fine, 65 refused (API and wire). */
	memset(name, 'n', sizeof(name));
	name[MEMBERSHIP_NAME_MAX] = '\0';
	CHECK_OK(rename_dev(m, &l, 0, 0, name));
	name[MEMBERSHIP_NAME_MAX] = 'n';
	name[MEMBERSHIP_NAME_MAX + 1] = '\0';
	CHECK_EQ(rename_dev(m, NULL, 0, 0, name), PKS_ERR_INVALID);
	c = craft_add(m, 0, 1, 2);
	c.name = name;
	CHECK_EQ(apply_craft(m, &c, 0), PKS_ERR_TOO_LARGE);
	name[MEMBERSHIP_NAME_MAX] = '\0';
	CHECK_OK(apply_craft(m, &c, 0));
	/* Parents: 16 pass decoding (and wait), 17 are refused. */
	c = craft_add(m, 0, 2, 2);
	c.n_parents = MEMBERSHIP_PARENTS_MAX;
	for (size_t i = 0; i < c.n_parents; i++)
		memset(c.parents[i], (int)i + 1, 32);
	CHECK_EQ(apply_craft(m, &c, 0), PKS_ERR_PENDING);
	c.n_parents = MEMBERSHIP_PARENTS_MAX + 1;
	memset(c.parents[MEMBERSHIP_PARENTS_MAX], 0x77, 32);
	CHECK_EQ(apply_craft(m, &c, 0), PKS_ERR_TOO_LARGE);
	/* Size: one byte over is refused before anything else. */
	{
		uint8_t *big = calloc(1, MEMBERSHIP_OP_MAX + 1);
		CHECK_EQ(membership_apply(m, big, MEMBERSHIP_OP_MAX + 1), PKS_ERR_TOO_LARGE);
		free(big);
	}
	/* Seals: 257 refused. */
	{
		static uint8_t ids[MEMBERSHIP_MEMBERS_MAX + 1][32];
		for (size_t i = 0; i < MEMBERSHIP_MEMBERS_MAX + 1; i++) {
			ids[i][0] = (uint8_t)(i >> 8);
			ids[i][1] = (uint8_t)i;
		}
		c = craft_add(m, 0, 2, 3);
		c.kind = MEMBERSHIP_ROTATE;
		c.epoch = 2;
		c.seal_ids = (const uint8_t(*)[32])ids;
		c.n_seals = MEMBERSHIP_MEMBERS_MAX + 1;
		CHECK_EQ(apply_craft(m, &c, 0), PKS_ERR_TOO_LARGE);
	}
	membership_free(m);
	oplist_free(&l);

	/* Members: 256 fine, the 257th ADD refused. */
	m = with_genesis(NULL);
	for (size_t i = 1; i < MEMBERSHIP_MEMBERS_MAX; i++)
		CHECK_OK(add(m, NULL, 0, i));
	CHECK_EQ(membership_member_count(m), MEMBERSHIP_MEMBERS_MAX);
	CHECK_EQ(add(m, NULL, 0, MEMBERSHIP_MEMBERS_MAX), PKS_ERR_TOO_LARGE);
	{
		/* A ROTATE to all 256 fits in one op. */
		uint8_t key[32] = {1}, got[32];
		CHECK_OK(rotate(m, NULL, 3, key));
		CHECK_OK(membership_epoch_key(m, 2, devs[255].dh_pk, devs[255].dh_sk, got));
		CHECK_MEM_EQ(got, key, 32);
	}
	membership_free(m);

	/* Heads: 64 concurrent ops fine, the 65th refused. */
	base = with_genesis(&l);
	m = clone(base);
	for (size_t i = 0; i < MEMBERSHIP_HEADS_MAX + 1; i++) {
		struct membership *x = clone(base);
		char n[16];
		snprintf(n, sizeof(n), "h%zu", i);
		CHECK_OK(rename_dev(x, &l, 0, 0, n));
		CHECK_EQ(membership_apply(m, l.op[l.n - 1], l.len[l.n - 1]),
			 i < MEMBERSHIP_HEADS_MAX ? PKS_OK : PKS_ERR_TOO_LARGE);
		membership_free(x);
	}
	CHECK_EQ(membership_heads(m, NULL, 0), MEMBERSHIP_HEADS_MAX);
	/* Authoring on 64 heads merges 16 of them. */
	CHECK_OK(rename_dev(m, NULL, 0, 0, "merge"));
	CHECK_EQ(membership_heads(m, NULL, 0), MEMBERSHIP_HEADS_MAX - 15);
	membership_free(m);
	membership_free(base);
	oplist_free(&l);

	/* Ops: 4096 fine, the next refused. */
	m = with_genesis(NULL);
	for (size_t i = 1; i < MEMBERSHIP_OPS_MAX; i++)
		if (rename_dev(m, NULL, 0, 0, (i & 1) ? "a" : "b") != PKS_OK) {
			CHECK_FAIL_AT("rename %zu failed", i);
			break;
		}
	CHECK_EQ(membership_op_count(m), MEMBERSHIP_OPS_MAX);
	CHECK_EQ(rename_dev(m, NULL, 0, 0, "c"), PKS_ERR_TOO_LARGE);
	membership_free(m);
}

static void test_noncanonical(void)
{
	struct membership *m;
	struct craft c;
	uint8_t *op = NULL;
	size_t len = 0;

	setup();
	m = with_genesis(NULL);
	c = craft_add(m, 0, 1, 1);
	/* The plain crafted op is fine on a copy: the knobs are what breaks. */
	{
		struct membership *x = clone(m);
		CHECK_OK(apply_craft(x, &c, 0));
		membership_free(x);
	}
#define BROKEN(field, value, err)                                                                  \
	do {                                                                                       \
		struct craft b_ = c;                                                               \
		b_.field = value;                                                                  \
		CHECK_EQ(apply_craft(m, &b_, 0), err);                                             \
	} while (0)
	BROKEN(long_depth, true, PKS_ERR_NONCANONICAL);
	BROKEN(swap_kind, true, PKS_ERR_NONCANONICAL);
	BROKEN(dup_time, true, PKS_ERR_NONCANONICAL);
	BROKEN(indefinite, true, PKS_ERR_NONCANONICAL);
	BROKEN(long_body_len, true, PKS_ERR_NONCANONICAL);
	BROKEN(trailing, true, PKS_ERR_MALFORMED);
	BROKEN(extra_key, 14, PKS_ERR_MALFORMED);
	BROKEN(extra_key, 11, PKS_ERR_MALFORMED); /* cutoff in an ADD */
	BROKEN(drop_time, true, PKS_ERR_MALFORMED);
	BROKEN(kind, 6, PKS_ERR_MALFORMED);
	BROKEN(name, "bad \xc0\xaf utf-8", PKS_ERR_MALFORMED);
	BROKEN(n_parents, 0, PKS_ERR_MALFORMED); /* an ADD needs parents */
#undef BROKEN
	/* Unsorted or repeated parents. */
	{
		struct craft b = c;
		b.n_parents = 2;
		memset(b.parents[1], 0, 32);
		CHECK_EQ(apply_craft(m, &b, 0), PKS_ERR_NONCANONICAL);
		memcpy(b.parents[1], b.parents[0], 32);
		CHECK_EQ(apply_craft(m, &b, 0), PKS_ERR_NONCANONICAL);
	}
	/* Truncated anywhere. */
	craft_op(&c, devs[0].sign_sk, &op, &len);
	for (size_t cut = 0; cut < len; cut++) {
		int r = membership_apply(m, op, cut);
		if (r != PKS_ERR_TRUNCATED && r != PKS_ERR_MALFORMED)
			CHECK_FAIL_AT("cut at %zu: %d", cut, r);
	}
	CHECK_EQ(membership_apply(m, op, 1), PKS_ERR_TRUNCATED);
	free(op);
	CHECK_EQ(membership_op_count(m), 1);
	membership_free(m);
}

/* ---- seeded convergence ---- */

static uint64_t prng_state;

static uint64_t prng(void)
{
	uint64_t z = (prng_state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static size_t pick(size_t n)
{
	return (size_t)(prng() % n);
}

#define REPLICAS 4
#define RAND_DEVS 24

static size_t stat_ops, stat_members, stat_epochs, stat_revoked;

static int revoked_cb(void *user, const struct membership_device *d)
{
	*(size_t *)user += d->revoked;
	return 0;
}

static bool convergence_round(uint64_t seed)
{
	struct membership *rep[REPLICAS], *all, *again;
	struct oplist *l = calloc(1, sizeof(*l));
	size_t next_dev = 1, steps;
	uint8_t want[32], got[32];
	bool ok = true;

	prng_state = seed;
	rep[0] = with_genesis(l);
	for (size_t i = 1; i < REPLICAS; i++)
		rep[i] = clone(rep[0]);
	steps = 20 + pick(40);
	for (size_t s = 0; s < steps; s++) {
		struct membership *m = rep[pick(REPLICAS)];
		size_t members[RAND_DEVS], n_members = 0, author, target;
		uint8_t key[32];
		int r = PKS_OK;

		for (size_t d = 0; d < next_dev; d++)
			if (membership_is_member(m, devs[d].id))
				members[n_members++] = d;
		if (n_members == 0)
			continue;
		author = members[pick(n_members)];
		target = members[pick(n_members)];
		switch (pick(16)) {
		case 0:
		case 1:
		case 2:
		case 3:
			if (next_dev < RAND_DEVS && (r = add(m, l, author, next_dev)) == PKS_OK)
				next_dev++;
			break;
		case 4:
			r = revoke(m, l, author, target, pick(10), T0 + s);
			break;
		case 5:
		case 6:
		case 7:
			r = rename_dev(m, l, author, target, pick(2) ? "x" : "y");
			break;
		case 8:
		case 9:
			memset(key, (int)s, sizeof(key));
			r = rotate(m, l, author, key);
			break;
		default:
			r = sync_to(m, rep[pick(REPLICAS)]);
			break;
		}
		if (r != PKS_OK) {
			printf("# step %zu failed: %d\n", s, r);
			ok = false;
		}
	}
	/* Full exchange: every replica converges to the same view. */
	for (size_t i = 0; i < REPLICAS; i++)
		for (size_t j = 0; j < REPLICAS; j++)
			if (sync_to(rep[i], rep[j]) != PKS_OK)
				ok = false;
	view(rep[0], want);
	for (size_t i = 1; i < REPLICAS; i++) {
		view(rep[i], got);
		if (memcmp(got, want, 32) != 0) {
			printf("# replica %zu diverged\n", i);
			ok = false;
		}
	}
	/* Every op, shuffled, into a fresh membership (pending resolves). */
	for (size_t i = l->n; i > 1; i--) {
		size_t j = pick(i), ln = l->len[i - 1];
		uint8_t *t = l->op[i - 1];
		l->op[i - 1] = l->op[j];
		l->len[i - 1] = l->len[j];
		l->op[j] = t;
		l->len[j] = ln;
	}
	all = fresh();
	for (size_t i = 0; i < l->n; i++) {
		int r = membership_apply(all, l->op[i], l->len[i]);
		if (r != PKS_OK && r != PKS_ERR_PENDING) {
			printf("# shuffled apply: %d\n", r);
			ok = false;
		}
	}
	view(all, got);
	if (memcmp(got, want, 32) != 0 || membership_op_count(all) != membership_op_count(rep[0])) {
		printf("# shuffled delivery diverged\n");
		ok = false;
	}
	/* Persistence: re-applying foreach_op's order gives the same. */
	again = clone(all);
	view(again, got);
	if (memcmp(got, want, 32) != 0) {
		printf("# reload diverged\n");
		ok = false;
	}
	/* Every member that a winning rotate was sealed to can open it. */
	for (size_t d = 0; d < next_dev; d++) {
		uint8_t k1[32], k2[32];
		uint32_t e = membership_epoch(all);
		int r1 = membership_epoch_key(all, e, devs[d].dh_pk, devs[d].dh_sk, k1);
		int r2 = membership_epoch_key(rep[0], e, devs[d].dh_pk, devs[d].dh_sk, k2);
		if (r1 != r2 || (r1 == PKS_OK && memcmp(k1, k2, 32) != 0)) {
			printf("# epoch key differs for device %zu\n", d);
			ok = false;
		}
	}
	stat_ops += membership_op_count(all);
	stat_members += membership_member_count(all);
	stat_epochs += membership_epoch(all) - 1;
	membership_foreach_device(all, revoked_cb, &stat_revoked);
	membership_free(again);
	membership_free(all);
	for (size_t i = 0; i < REPLICAS; i++)
		membership_free(rep[i]);
	oplist_free(l);
	free(l);
	return ok;
}

static void test_convergence(void)
{
	uint64_t base_seed = 0x6d656d62;
	const char *env = getenv("PKS_TEST_SEED");
	size_t rounds = 300, failures = 0;

	setup();
	if (env != NULL)
		base_seed = strtoull(env, NULL, 0);
	for (size_t i = 0; i < rounds && failures < 5; i++) {
		uint64_t seed = base_seed + i;
		if (!convergence_round(seed)) {
			CHECK_FAIL_AT("convergence failed: seed 0x%" PRIx64
				      " (rerun: PKS_TEST_SEED=0x%" PRIx64 ")",
				      seed, seed);
			failures++;
		}
	}
	printf("# %zu rounds: %zu ops, %zu members, %zu revoked, %zu rotations in the end states\n",
	       rounds, stat_ops, stat_members, stat_revoked, stat_epochs);
}

/* The digest tells different op sets apart and ignores order. */
static void test_digest(void)
{
	struct oplist l = {.n = 0};
	struct membership *a, *b;
	uint8_t da[32], db[32], empty[32];

	setup();
	a = fresh();
	membership_digest(a, empty);
	membership_free(a);
	a = with_genesis(&l);
	membership_digest(a, da);
	CHECK(memcmp(da, empty, 32) != 0);
	b = clone(a);
	CHECK_OK(add(a, &l, 0, 1));
	membership_digest(a, da);
	membership_digest(b, db);
	CHECK(memcmp(da, db, 32) != 0);
	CHECK_OK(sync_to(a, b));
	membership_digest(b, db);
	CHECK_MEM_EQ(da, db, 32);
	membership_free(a);
	membership_free(b);
	oplist_free(&l);
}

/* Names reach terminals: control characters are refused when made and when received. */
static void test_names_without_controls(void)
{
	static const char *const bad[] = {"evil\x1b[2J", "tab\there", "del\x7f",
					  ("csi\xc2\x9b" /* C1 CSI */ "31m"), "nl\n"};
	struct oplist l = {.n = 0};
	struct membership *m;

	setup();
	m = with_genesis(&l);
	CHECK_OK(add(m, &l, 0, 1));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_EQ(rename_dev(m, &l, 0, 1, bad[i]), PKS_ERR_INVALID);
	CHECK_OK(rename_dev(m, &l, 0, 1, "T\xc3\xa9l\xc3\xa9phone d'Alice"));
	oplist_free(&l);
	membership_free(m);
}

CHECK_MAIN({"/membership/genesis_add_chain", test_genesis_add_chain},
	   {"/membership/names_without_controls", test_names_without_controls},
	   {"/membership/permutations", test_permutations},
	   {"/membership/forged_signature", test_forged_signature},
	   {"/membership/non_member_refused", test_non_member_refused},
	   {"/membership/revoke_rotate", test_revoke_rotate},
	   {"/membership/concurrent_rotate", test_concurrent_rotate},
	   {"/membership/cutoff", test_cutoff}, {"/membership/mutual_revoke", test_mutual_revoke},
	   {"/membership/strong_remove", test_strong_remove}, {"/membership/pending", test_pending},
	   {"/membership/missing", test_missing}, {"/membership/limits", test_limits},
	   {"/membership/noncanonical", test_noncanonical},
	   {"/membership/convergence", test_convergence}, {"/membership/digest", test_digest})
