/*
 * Fuzzes record decoding, opening and merging. The first byte picks a mode:
 *   0: decode one version; a decoded version must re-encode to the input and
 *      survive a seal/open round trip; it is then applied to a state.
 *   1: open a sealed blob with a fixed author key and data key (seed corpus
 *      files are sealed with them, so the fuzzer gets past the signature).
 *   2: a list of (be16 length, encoding) items, all forced onto one record:
 *      applying them in order, in reverse, and only the undominated ones
 *      must give the same digest.
 * Oracle failures abort, which the fuzzer and the replay both report.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "proto/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_ITEMS 64

static uint8_t fuzz_pk[32], fuzz_sk[64], fuzz_device[DEVICE_ID_LEN];
static const uint8_t fuzz_record_id[RECORD_ID_LEN] = {0xf0, 0x0d};

static void fuzz_init(void)
{
	static int done;
	uint8_t seed[32];

	if (done)
		return;
	if (sodium_init() < 0)
		abort();
	memset(seed, 0x42, sizeof(seed));
	crypto_sign_seed_keypair(fuzz_pk, fuzz_sk, seed);
	record_device_id(fuzz_pk, fuzz_device);
	done = 1;
}

static void fuzz_data_key(uint8_t key[32])
{
	memset(key, 0x24, 32);
}

/* Reads every accessor, so a bad pointer in the state shows up under ASan. */
static void fuzz_touch_state(const struct record_state *st)
{
	struct record_delete_tag tags[4];
	uint8_t digest[RECORD_DIGEST_LEN], author[DEVICE_ID_LEN];
	const uint8_t *key = NULL;
	volatile size_t sink = 0;
	size_t len = 0;
	hlc_t stamp;

	record_state_digest(st, digest);
	sink += record_state_visible(st) + record_state_trashed(st) + record_state_purged(st);
	sink += record_state_trashed_at(st) + record_state_updated_at(st);
	sink += record_state_delete_tags(st, tags, 4);
	if (record_state_private_key(st, &key, &len) == PKS_OK && len > 0)
		sink += key[len - 1];
	if (record_state_rp_id(st) != NULL)
		sink += strlen(record_state_rp_id(st));
	if (record_state_source(st) != NULL)
		sink += strlen(record_state_source(st));
	if (record_state_credential_id(st, &len) != NULL && len > 0)
		sink += record_state_credential_id(st, &len)[len - 1];
	if (record_state_user_handle(st, &len) != NULL && len > 0)
		sink += record_state_user_handle(st, &len)[len - 1];
	if (record_state_public_key(st, &len) != NULL && len > 0)
		sink += record_state_public_key(st, &len)[len - 1];
	for (int f = 0; f < RECORD_FIELD_COUNT; f++) {
		const char *s = record_state_field(st, (enum record_field)f, &stamp, author);
		if (s != NULL)
			sink += strlen(s) + stamp;
	}
	(void)sink;
}

static void fuzz_decode_one(const uint8_t *data, size_t size)
{
	struct record_version *v = NULL, *opened = NULL;
	struct record_state *st = NULL;
	uint8_t *enc = NULL, *blob = NULL, *enc2 = NULL, key[32], nonce[24] = {0};
	size_t enc_len = 0, blob_len = 0, enc2_len = 0;

	if (record_version_decode(data, size, &v) != PKS_OK)
		return;
	if (record_version_encode(v, &enc, &enc_len) != PKS_OK || enc_len != size ||
	    memcmp(enc, data, size) != 0)
		abort();
	st = record_state_new(v->record_id);
	if (st == NULL)
		abort();
	(void)record_state_apply(st, v);
	(void)record_state_dominated(st, v);
	fuzz_touch_state(st);
	/* Seal as our device and open again: the body must come back exactly. */
	memcpy(v->author, fuzz_device, DEVICE_ID_LEN);
	fuzz_data_key(key);
	if (record_version_seal(v, key, fuzz_sk, nonce, &blob, &blob_len) != PKS_OK)
		abort();
	if (record_version_open(blob, blob_len, fuzz_pk, key, &opened) != PKS_OK)
		abort();
	free(enc);
	enc = NULL;
	if (record_version_encode(v, &enc, &enc_len) != PKS_OK ||
	    record_version_encode(opened, &enc2, &enc2_len) != PKS_OK || enc_len != enc2_len ||
	    memcmp(enc, enc2, enc_len) != 0)
		abort();
	free(enc);
	free(enc2);
	free(blob);
	record_version_free(opened);
	record_version_free(v);
	record_state_free(st);
}

static void fuzz_open_one(const uint8_t *data, size_t size)
{
	struct record_sealed_header h;
	struct record_version *v = NULL;
	struct record_state *st;
	uint8_t key[32];

	(void)record_sealed_peek(data, size, &h);
	fuzz_data_key(key);
	if (record_version_open(data, size, fuzz_pk, key, &v) != PKS_OK)
		return;
	st = record_state_new(v->record_id);
	if (st == NULL)
		abort();
	(void)record_state_apply(st, v);
	fuzz_touch_state(st);
	record_state_free(st);
	record_version_free(v);
}

static struct record_state *fuzz_fold(struct record_version **vs, size_t n, int reverse)
{
	struct record_state *st = record_state_new(fuzz_record_id);

	if (st == NULL)
		abort();
	for (size_t i = 0; i < n; i++)
		(void)record_state_apply(st, vs[reverse ? n - 1 - i : i]);
	return st;
}

static void fuzz_merge_list(const uint8_t *data, size_t size)
{
	struct record_version *vs[FUZZ_MAX_ITEMS], *kept[FUZZ_MAX_ITEMS];
	struct record_state *a, *b, *c;
	uint8_t da[32], db[32], dc[32];
	size_t n = 0, nkept = 0, off = 0, creates = 0;

	while (off + 2 <= size && n < FUZZ_MAX_ITEMS) {
		size_t len = (size_t)data[off] << 8 | data[off + 1];
		struct record_version *v = NULL;

		off += 2;
		if (len > size - off)
			break;
		if (record_version_decode(data + off, len, &v) == PKS_OK) {
			memcpy(v->record_id, fuzz_record_id, RECORD_ID_LEN);
			vs[n++] = v;
		}
		off += len;
	}
	/*
	 * Past RECORD_STATE_MAX_CLASSES conflicting creates a state keeps only
	 * the earliest classes, and exact convergence is no longer promised.
	 */
	for (size_t i = 0; i < n; i++)
		creates += vs[i]->op == RECORD_OP_CREATE;
	a = fuzz_fold(vs, n, 0);
	b = fuzz_fold(vs, n, 1);
	for (size_t i = 0; i < n; i++)
		if (!record_state_dominated(a, vs[i]))
			kept[nkept++] = vs[i];
	c = fuzz_fold(kept, nkept, 1);
	record_state_digest(a, da);
	record_state_digest(b, db);
	record_state_digest(c, dc);
	if (creates <= 8 && (memcmp(da, db, 32) != 0 || memcmp(da, dc, 32) != 0))
		abort();
	fuzz_touch_state(a);
	record_state_free(a);
	record_state_free(b);
	record_state_free(c);
	for (size_t i = 0; i < n; i++)
		record_version_free(vs[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_init();
	if (size == 0)
		return 0;
	switch (data[0] % 3) {
	case 0:
		fuzz_decode_one(data + 1, size - 1);
		break;
	case 1:
		fuzz_open_one(data + 1, size - 1);
		break;
	default:
		fuzz_merge_list(data + 1, size - 1);
		break;
	}
	return 0;
}
