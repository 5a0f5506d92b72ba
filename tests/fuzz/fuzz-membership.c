/*
 * Fuzzes the membership DAG. The first byte picks a mode:
 *   0: a list of (be16 length, op) items applied to a membership that holds
 *      a valid genesis by device 0 (seed corpus ops are signed with the
 *      fixed device keys below, so mutations get past the signature).
 *   1: a program run on three replicas of that genesis: each pair of bytes
 *      is one step (add, revoke, rename, rotate or sync; which replica;
 *      author and target among eight fixed devices), so the fuzzer explores
 *      concurrent DAGs and strong remove, not only the decoder.
 * Oracles (both modes): a fresh membership fed every applied op in
 * foreach_op order, and one fed them in reverse (through the pending set),
 * end in the same digest, members and epoch; in mode 1 the replicas agree
 * after a full exchange. Oracle failures abort.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "proto/membership.h"
#include "proto/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_DEVS 8
#define FUZZ_REPLICAS 3
#define FUZZ_T0 UINT64_C(1700000000000)

static uint8_t fuzz_sign_pk[FUZZ_DEVS][32], fuzz_sign_sk[FUZZ_DEVS][64];
static uint8_t fuzz_dh_pk[FUZZ_DEVS][32], fuzz_dh_sk[FUZZ_DEVS][32];
static uint8_t fuzz_id[FUZZ_DEVS][32];
static uint8_t *fuzz_genesis;
static size_t fuzz_genesis_len;
static const uint8_t fuzz_vault[16] = {0x66, 0x75, 0x7a, 0x7a};

static void fuzz_init(void)
{
	static int done;
	struct membership *m = NULL;

	if (done)
		return;
	if (sodium_init() < 0)
		abort();
	for (int i = 0; i < FUZZ_DEVS; i++) {
		uint8_t seed[32];

		memset(seed, 0x30 + i, sizeof(seed));
		crypto_sign_seed_keypair(fuzz_sign_pk[i], fuzz_sign_sk[i], seed);
		seed[0] ^= 0xff;
		crypto_box_seed_keypair(fuzz_dh_pk[i], fuzz_dh_sk[i], seed);
		record_device_id(fuzz_sign_pk[i], fuzz_id[i]);
	}
	if (membership_new(&m) != PKS_OK ||
	    membership_genesis(m, fuzz_vault, fuzz_sign_sk[0], fuzz_dh_pk[0], "zero", FUZZ_T0,
			       &fuzz_genesis, &fuzz_genesis_len) != PKS_OK)
		abort();
	membership_free(m);
	done = 1;
}

static struct membership *fuzz_fresh(bool genesis)
{
	struct membership *m = NULL;

	if (membership_new(&m) != PKS_OK)
		abort();
	if (genesis && membership_apply(m, fuzz_genesis, fuzz_genesis_len) != PKS_OK)
		abort();
	return m;
}

struct fuzz_ops {
	uint8_t **op;
	size_t *len;
	size_t n;
};

static int fuzz_collect(void *user, const uint8_t id[32], const uint8_t *op, size_t len)
{
	struct fuzz_ops *o = user;

	(void)id;
	o->op[o->n] = malloc(len);
	if (o->op[o->n] == NULL)
		abort();
	memcpy(o->op[o->n], op, len);
	o->len[o->n] = len;
	o->n++;
	return 0;
}

static void fuzz_same(const struct membership *a, const struct membership *b, const char *what)
{
	uint8_t da[32], db[32];

	membership_digest(a, da);
	membership_digest(b, db);
	if (memcmp(da, db, 32) != 0 || membership_member_count(a) != membership_member_count(b) ||
	    membership_epoch(a) != membership_epoch(b) ||
	    membership_op_count(a) != membership_op_count(b)) {
		fprintf(stderr, "membership oracle failed: %s\n", what);
		abort();
	}
	for (int i = 0; i < FUZZ_DEVS; i++) {
		if (membership_is_member(a, fuzz_id[i]) != membership_is_member(b, fuzz_id[i]) ||
		    membership_version_admissible(a, fuzz_id[i], 7) !=
			membership_version_admissible(b, fuzz_id[i], 7)) {
			fprintf(stderr, "membership oracle failed: %s (device %d)\n", what, i);
			abort();
		}
	}
}

/* Rebuilds m from its ops, in order and in reverse. */
static void fuzz_rebuild_oracle(const struct membership *m)
{
	struct fuzz_ops o;
	struct membership *x = fuzz_fresh(false), *y = fuzz_fresh(false);
	size_t n = membership_op_count(m);

	o.op = calloc(n + 1, sizeof(*o.op));
	o.len = calloc(n + 1, sizeof(*o.len));
	o.n = 0;
	if (o.op == NULL || o.len == NULL)
		abort();
	if (membership_foreach_op(m, fuzz_collect, &o) != PKS_OK || o.n != n)
		abort();
	for (size_t i = 0; i < n; i++)
		if (membership_apply(x, o.op[i], o.len[i]) != PKS_OK)
			abort();
	fuzz_same(m, x, "reload in order");
	if (n <= MEMBERSHIP_PENDING_MAX) {
		for (size_t i = n; i > 0; i--) {
			int r = membership_apply(y, o.op[i - 1], o.len[i - 1]);

			if (r != PKS_OK && r != PKS_ERR_PENDING)
				abort();
		}
		fuzz_same(m, y, "reload reversed");
	}
	for (size_t i = 0; i < n; i++)
		free(o.op[i]);
	free(o.op);
	free(o.len);
	membership_free(x);
	membership_free(y);
}

static void fuzz_ops_mode(const uint8_t *data, size_t size)
{
	struct membership *m = fuzz_fresh(true);
	size_t off = 0;

	while (size - off >= 2) {
		size_t len = ((size_t)data[off] << 8) | data[off + 1];

		off += 2;
		if (len > size - off)
			len = size - off;
		(void)membership_apply(m, data + off, len);
		off += len;
	}
	fuzz_rebuild_oracle(m);
	membership_free(m);
}

static int fuzz_apply_cb(void *user, const uint8_t id[32], const uint8_t *op, size_t len)
{
	int r = membership_apply(user, op, len);

	(void)id;
	if (r != PKS_OK) {
		fprintf(stderr, "membership oracle failed: sync apply %d\n", r);
		abort();
	}
	return 0;
}

static void fuzz_sync(const struct membership *src, struct membership *dst)
{
	uint8_t heads[MEMBERSHIP_HEADS_MAX][32];
	size_t n = membership_heads(dst, heads, MEMBERSHIP_HEADS_MAX);

	if (n > MEMBERSHIP_HEADS_MAX)
		n = MEMBERSHIP_HEADS_MAX;
	membership_foreach_missing(src, (const uint8_t(*)[32])heads, n, fuzz_apply_cb, dst);
}

static void fuzz_program_mode(const uint8_t *data, size_t size)
{
	struct membership *rep[FUZZ_REPLICAS];
	uint8_t key[32];

	for (int i = 0; i < FUZZ_REPLICAS; i++)
		rep[i] = fuzz_fresh(true);
	for (size_t off = 0; off + 2 <= size && off < 512; off += 2) {
		struct membership *m = rep[(data[off] >> 3) % FUZZ_REPLICAS];
		unsigned author = data[off + 1] % FUZZ_DEVS,
			 target = (data[off + 1] >> 3) % FUZZ_DEVS;
		uint8_t *op = NULL;
		size_t len = 0;

		switch (data[off] & 7) {
		case 0:
		case 1:
			membership_add_device(m, fuzz_sign_sk[author], fuzz_sign_pk[target],
					      fuzz_dh_pk[target], "dev", FUZZ_T0 + off, &op, &len);
			break;
		case 2:
			membership_revoke(m, fuzz_sign_sk[author], fuzz_id[target], off, FUZZ_T0,
					  &op, &len);
			break;
		case 3:
			membership_rename(m, fuzz_sign_sk[author], fuzz_id[target],
					  (data[off + 1] & 0x40) ? "a" : "b", FUZZ_T0 + off, &op,
					  &len);
			break;
		case 4:
			memset(key, (int)off, sizeof(key));
			membership_rotate(m, fuzz_sign_sk[author], key, FUZZ_T0, &op, &len);
			break;
		default:
			fuzz_sync(m, rep[target % FUZZ_REPLICAS]);
			break;
		}
		free(op);
	}
	for (int i = 0; i < FUZZ_REPLICAS; i++)
		for (int j = 0; j < FUZZ_REPLICAS; j++)
			fuzz_sync(rep[i], rep[j]);
	for (int i = 1; i < FUZZ_REPLICAS; i++)
		fuzz_same(rep[0], rep[i], "replicas after full exchange");
	for (int d = 0; d < FUZZ_DEVS; d++) {
		uint8_t k0[32], k1[32];
		uint32_t e = membership_epoch(rep[0]);
		int r0 = membership_epoch_key(rep[0], e, fuzz_dh_pk[d], fuzz_dh_sk[d], k0);
		int r1 = membership_epoch_key(rep[1], e, fuzz_dh_pk[d], fuzz_dh_sk[d], k1);

		if (r0 != r1 || (r0 == PKS_OK && memcmp(k0, k1, 32) != 0)) {
			fprintf(stderr, "membership oracle failed: epoch key\n");
			abort();
		}
	}
	fuzz_rebuild_oracle(rep[0]);
	for (int i = 0; i < FUZZ_REPLICAS; i++)
		membership_free(rep[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_init();
	if (size < 1)
		return 0;
	if (data[0] == 1)
		fuzz_program_mode(data + 1, size - 1);
	else if (data[0] == 0)
		fuzz_ops_mode(data + 1, size - 1);
	return 0;
}
