/*
 * Records: ids, the canonical CBOR codec and its limits, sealing, and the
 * merge rules, including seeded property tests of convergence.
 */
#include "proto/record.h"

#include <cbor.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/err.h"
#include "tests/check.h"

#define T0 UINT64_C(1700000000000)

/* ---- fixtures ---- */

struct device {
	uint8_t pk[32];
	uint8_t sk[64];
	uint8_t id[DEVICE_ID_LEN];
};

static struct device devices[3];
static const uint8_t data_key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
static const uint8_t record_id[RECORD_ID_LEN] = {0xaa, 0xbb, 0xcc, 0xdd};

static void setup(void)
{
	static bool done;

	if (done)
		return;
	done = true;
	if (sodium_init() < 0)
		abort();
	for (size_t i = 0; i < 3; i++) {
		uint8_t seed[32];

		memset(seed, 0x10 + (int)i, sizeof(seed));
		crypto_sign_seed_keypair(devices[i].pk, devices[i].sk, seed);
		record_device_id(devices[i].pk, devices[i].id);
	}
}

static struct record_version *base(enum record_op op, size_t dev, uint64_t seq)
{
	struct record_version *v;

	setup();
	v = record_version_new();
	if (v == NULL)
		abort();
	memcpy(v->record_id, record_id, RECORD_ID_LEN);
	memcpy(v->author, devices[dev].id, DEVICE_ID_LEN);
	v->seq = seq;
	v->epoch = 3;
	v->op = op;
	return v;
}

/* A CREATE; variant changes the private key (a conflicting create). */
static struct record_version *make_create(size_t dev, uint64_t seq, hlc_t hlc, int variant)
{
	struct record_version *v = base(RECORD_OP_CREATE, dev, seq);
	uint8_t cred[20], handle[16], sk[40], pk[91];

	memset(cred, 0xc1, sizeof(cred));
	memset(handle, 0x48, sizeof(handle));
	memset(sk, 0x5e + variant, sizeof(sk));
	memset(pk, 0x9b, sizeof(pk));
	v->hlc = hlc;
	if (record_version_set_credential(v, cred, sizeof(cred), "example.com", handle,
					  sizeof(handle)) != PKS_OK ||
	    record_version_set_keys(v, RECORD_ALG_ES256, sk, sizeof(sk), pk, sizeof(pk)) !=
		PKS_OK ||
	    record_version_set_source(v, "test") != PKS_OK ||
	    record_version_set_field(v, RECORD_FIELD_USER_NAME, "alice", hlc) != PKS_OK)
		abort();
	v->backup_eligible = true;
	v->backup_state = true;
	v->created_at = T0;
	return v;
}

static struct record_version *make_update(size_t dev, uint64_t seq, enum record_field f,
					  const char *value, hlc_t stamp)
{
	struct record_version *v = base(RECORD_OP_UPDATE, dev, seq);

	if (record_version_set_field(v, f, value, stamp) != PKS_OK)
		abort();
	return v;
}

static struct record_version *make_simple(enum record_op op, size_t dev, uint64_t seq, hlc_t hlc)
{
	struct record_version *v = base(op, dev, seq);

	v->hlc = hlc;
	return v;
}

static struct record_version *make_restore(size_t dev, uint64_t seq, hlc_t hlc,
					   const struct record_delete_tag *tags, size_t n)
{
	struct record_version *v = make_simple(RECORD_OP_RESTORE, dev, seq, hlc);

	for (size_t i = 0; i < n; i++)
		if (record_version_add_restore_tag(v, &tags[i]) != PKS_OK)
			abort();
	return v;
}

static struct record_delete_tag tag_of(const struct record_version *del)
{
	struct record_delete_tag t;

	t.hlc = del->hlc;
	memcpy(t.author, del->author, DEVICE_ID_LEN);
	return t;
}

static void wipe_free(uint8_t *p, size_t len)
{
	if (p != NULL)
		sodium_memzero(p, len);
	free(p);
}

/* Encodes, decodes, re-encodes; returns the decoded copy (or NULL). */
static struct record_version *roundtrip(const struct record_version *v)
{
	struct record_version *d = NULL;
	uint8_t *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0;

	CHECK_OK(record_version_encode(v, &a, &alen));
	if (a == NULL)
		return NULL;
	CHECK_OK(record_version_decode(a, alen, &d));
	if (d != NULL) {
		CHECK_OK(record_version_encode(d, &b, &blen));
		CHECK_EQ(alen, blen);
		if (b != NULL && alen == blen)
			CHECK_MEM_EQ(a, b, alen);
	}
	wipe_free(a, alen);
	wipe_free(b, blen);
	return d;
}

/* ---- record ids ---- */

static void test_id_derive(void)
{
	uint8_t key[32], key2[32], a[16], b[16], c[16], d[16], e[16];
	uint8_t cred[1024];

	setup();
	memset(key, 7, sizeof(key));
	memset(key2, 8, sizeof(key2));
	memset(cred, 0x33, sizeof(cred));
	CHECK_OK(record_id_derive(key, "ab", (const uint8_t *)"c", 1, a));
	CHECK_OK(record_id_derive(key, "ab", (const uint8_t *)"c", 1, b));
	CHECK_MEM_EQ(a, b, 16);
	/* The encoding is unambiguous: moving a byte across the boundary differs. */
	CHECK_OK(record_id_derive(key, "a", (const uint8_t *)"bc", 2, c));
	CHECK(memcmp(a, c, 16) != 0);
	CHECK_OK(record_id_derive(key2, "ab", (const uint8_t *)"c", 1, d));
	CHECK(memcmp(a, d, 16) != 0);
	CHECK_OK(record_id_derive(key, "ab", (const uint8_t *)"d", 1, e));
	CHECK(memcmp(a, e, 16) != 0);
	/* Limits. */
	CHECK_OK(record_id_derive(key, "x", cred, RECORD_CREDENTIAL_ID_MAX, a));
	CHECK_EQ(record_id_derive(key, "x", cred, RECORD_CREDENTIAL_ID_MAX + 1, a),
		 PKS_ERR_INVALID);
	CHECK_EQ(record_id_derive(key, "x", cred, 0, a), PKS_ERR_INVALID);
	CHECK_EQ(record_id_derive(key, "", cred, 1, a), PKS_ERR_INVALID);
	char rp[300];
	memset(rp, 'r', sizeof(rp));
	rp[RECORD_RP_ID_MAX] = '\0';
	CHECK_OK(record_id_derive(key, rp, cred, 1, a));
	rp[RECORD_RP_ID_MAX] = 'r';
	rp[RECORD_RP_ID_MAX + 1] = '\0';
	CHECK_EQ(record_id_derive(key, rp, cred, 1, a), PKS_ERR_INVALID);

	/* check_id binds a CREATE to its credential. */
	struct record_version *v = make_create(0, 1, 5, 0);
	CHECK_EQ(record_version_check_id(v, key), PKS_ERR_REJECTED);
	CHECK_OK(
	    record_id_derive(key, v->rp_id, v->credential_id, v->credential_id_len, v->record_id));
	CHECK_OK(record_version_check_id(v, key));
	CHECK_EQ(record_version_check_id(v, key2), PKS_ERR_REJECTED);
	record_version_free(v);
}

static void test_device_id(void)
{
	uint8_t h[32];

	setup();
	crypto_generichash(h, 32, devices[0].pk, 32, NULL, 0);
	CHECK_MEM_EQ(h, devices[0].id, 32);
	CHECK(memcmp(devices[0].id, devices[1].id, 32) != 0);
}

/* ---- codec ---- */

static void test_codec_roundtrip(void)
{
	struct record_version *v, *d;

	setup();
	/* CREATE with every field. */
	v = make_create(0, 1, hlc_make(T0, 1), 0);
	CHECK_OK(record_version_set_field(v, RECORD_FIELD_DISPLAY_NAME, "Alice Ü", 77));
	CHECK_OK(record_version_set_field(v, RECORD_FIELD_NOTES, "", 78));
	v->alg = RECORD_ALG_EDDSA;
	v->backup_state = false;
	d = roundtrip(v);
	CHECK(d != NULL);
	if (d != NULL) {
		CHECK_MEM_EQ(d->record_id, v->record_id, RECORD_ID_LEN);
		CHECK_MEM_EQ(d->author, v->author, DEVICE_ID_LEN);
		CHECK_EQ(d->seq, 1);
		CHECK_EQ(d->epoch, 3);
		CHECK_EQ(d->op, RECORD_OP_CREATE);
		CHECK_EQ(d->hlc, hlc_make(T0, 1));
		CHECK_EQ(d->credential_id_len, 20);
		CHECK_MEM_EQ(d->credential_id, v->credential_id, 20);
		CHECK_STR_EQ(d->rp_id, "example.com");
		CHECK_EQ(d->user_handle_len, 16);
		CHECK_EQ(d->alg, RECORD_ALG_EDDSA);
		CHECK_EQ(d->private_key_len, 40);
		CHECK_MEM_EQ(d->private_key, v->private_key, 40);
		CHECK_EQ(d->public_key_len, 91);
		CHECK(d->backup_eligible);
		CHECK(!d->backup_state);
		CHECK_EQ(d->created_at, T0);
		CHECK_STR_EQ(d->source, "test");
		CHECK_EQ(d->fields, RECORD_FIELDS_ALL);
		CHECK_STR_EQ(d->field[RECORD_FIELD_USER_NAME].value, "alice");
		CHECK_EQ(d->field[RECORD_FIELD_USER_NAME].stamp, hlc_make(T0, 1));
		CHECK_STR_EQ(d->field[RECORD_FIELD_DISPLAY_NAME].value, "Alice Ü");
		CHECK_EQ(d->field[RECORD_FIELD_DISPLAY_NAME].stamp, 77);
		CHECK_STR_EQ(d->field[RECORD_FIELD_NOTES].value, "");
	}
	record_version_free(d);
	/* A create without mutable fields and a NULL source ("" on the wire). */
	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++) {
		free(v->field[f].value);
		v->field[f].value = NULL;
		v->field[f].stamp = 0;
	}
	v->fields = 0;
	free(v->source);
	v->source = NULL;
	d = roundtrip(v);
	CHECK(d != NULL && d->fields == 0 && d->source != NULL && d->source[0] == '\0');
	record_version_free(d);
	record_version_free(v);

	/* UPDATE. */
	v = make_update(1, 2, RECORD_FIELD_NOTES, "note", 99);
	d = roundtrip(v);
	CHECK(d != NULL && d->op == RECORD_OP_UPDATE && d->fields == RECORD_FIELD_BIT(2) &&
	      d->hlc == 0);
	if (d != NULL)
		CHECK_STR_EQ(d->field[RECORD_FIELD_NOTES].value, "note");
	record_version_free(d);
	record_version_free(v);

	/* DELETE and PURGE, with the largest numbers. */
	for (int op = RECORD_OP_DELETE; op <= RECORD_OP_PURGE; op += 2) {
		v = make_simple((enum record_op)op, 2, UINT64_MAX, UINT64_MAX);
		v->epoch = UINT32_MAX;
		d = roundtrip(v);
		CHECK(d != NULL && (int)d->op == op && d->hlc == UINT64_MAX &&
		      d->seq == UINT64_MAX && d->epoch == UINT32_MAX);
		record_version_free(d);
		record_version_free(v);
	}

	/* RESTORE: tags in any order encode the same way (sorted). */
	struct record_delete_tag tags[3] = {{50, {0}}, {10, {0}}, {50, {0}}};
	memcpy(tags[0].author, devices[1].id, 32);
	memcpy(tags[1].author, devices[2].id, 32);
	memcpy(tags[2].author, devices[0].id, 32);
	struct record_delete_tag rev[3] = {tags[2], tags[1], tags[0]};
	struct record_version *r1 = make_restore(0, 4, 60, tags, 3);
	struct record_version *r2 = make_restore(0, 4, 60, rev, 3);
	uint8_t *e1 = NULL, *e2 = NULL;
	size_t l1 = 0, l2 = 0;
	CHECK_OK(record_version_encode(r1, &e1, &l1));
	CHECK_OK(record_version_encode(r2, &e2, &l2));
	CHECK_EQ(l1, l2);
	if (e1 && e2 && l1 == l2)
		CHECK_MEM_EQ(e1, e2, l1);
	d = roundtrip(r1);
	CHECK(d != NULL && d->restore_tag_count == 3);
	if (d != NULL && d->restore_tag_count == 3) {
		CHECK_EQ(d->restore_tags[0].hlc, 10);
		CHECK(record_delete_tag_cmp(&d->restore_tags[1], &d->restore_tags[2]) < 0);
	}
	record_version_free(d);
	free(e1);
	free(e2);
	record_version_free(r1);
	record_version_free(r2);
}

static void test_validate(void)
{
	struct record_version *v;
	struct record_delete_tag t = {5, {0}};

	setup();
	/* Fields not allowed for the op, and missing required ones. */
	v = make_simple(RECORD_OP_DELETE, 0, 1, 5);
	CHECK_OK(record_version_validate(v));
	CHECK_OK(record_version_set_field(v, RECORD_FIELD_NOTES, "x", 5));
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	record_version_free(v);

	v = make_simple(RECORD_OP_PURGE, 0, 1, 5);
	CHECK_OK(record_version_set_source(v, "x"));
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	record_version_free(v);

	v = make_simple(RECORD_OP_DELETE, 0, 1, 5);
	CHECK_OK(record_version_add_restore_tag(v, &t));
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	record_version_free(v);

	v = make_update(0, 1, RECORD_FIELD_NOTES, "x", 5);
	v->hlc = 9;
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	v->hlc = 0;
	v->created_at = 1;
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	v->created_at = 0;
	CHECK_OK(record_version_validate(v));
	v->fields = 0;
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	record_version_free(v);

	v = make_simple(RECORD_OP_UPDATE, 0, 1, 0);
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	record_version_free(v);

	v = make_simple(RECORD_OP_RESTORE, 0, 1, 5);
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	CHECK_OK(record_version_add_restore_tag(v, &t));
	CHECK_OK(record_version_validate(v));
	CHECK_OK(record_version_add_restore_tag(v, &t));
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID); /* duplicate tag */
	record_version_free(v);

	v = make_create(0, 1, 5, 0);
	CHECK_OK(record_version_validate(v));
	v->seq = 0;
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	v->seq = 1;
	v->alg = (enum record_alg) - 9;
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	v->alg = RECORD_ALG_ES256;
	v->op = (enum record_op)6;
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	v->op = RECORD_OP_CREATE;
	v->fields |= RECORD_FIELD_BIT(RECORD_FIELD_NOTES); /* bit without a value */
	CHECK_EQ(record_version_validate(v), PKS_ERR_INVALID);
	record_version_free(v);

	/* Strings must be UTF-8 without NUL. */
	v = make_update(0, 1, RECORD_FIELD_NOTES, "ok", 1);
	CHECK_EQ(record_version_set_field(v, RECORD_FIELD_NOTES, "\xc3\x28", 1), PKS_ERR_INVALID);
	CHECK_EQ(record_version_set_field(v, RECORD_FIELD_NOTES, "\xc0\xaf", 1), PKS_ERR_INVALID);
	CHECK_EQ(record_version_set_field(v, RECORD_FIELD_NOTES, "\xed\xa0\x80", 1),
		 PKS_ERR_INVALID);
	CHECK_EQ(record_version_set_field(v, RECORD_FIELD_NOTES, "\xf4\x90\x80\x80", 1),
		 PKS_ERR_INVALID);
	CHECK_OK(record_version_set_field(v, RECORD_FIELD_NOTES, "\xf0\x9f\x94\x91 key", 1));
	CHECK_STR_EQ(v->field[RECORD_FIELD_NOTES].value, "\xf0\x9f\x94\x91 key");
	record_version_free(v);
	record_version_free(NULL);
}

/* One limit: a string or byte member filled to max must pass, max+1 fail. */
struct limit_case {
	const char *name;
	size_t max;
	bool text;
	/* Sets the member to len bytes of fill; returns the setter's result. */
	int (*set)(struct record_version *v, const uint8_t *fill, size_t len);
};

static int set_cred(struct record_version *v, const uint8_t *fill, size_t len)
{
	return record_version_set_credential(v, fill, len, "example.com", (const uint8_t *)"h", 1);
}

static int set_rp(struct record_version *v, const uint8_t *fill, size_t len)
{
	char s[RECORD_RP_ID_MAX + 2];

	memcpy(s, fill, len);
	s[len] = '\0';
	return record_version_set_credential(v, (const uint8_t *)"c", 1, s, (const uint8_t *)"h",
					     1);
}

static int set_handle(struct record_version *v, const uint8_t *fill, size_t len)
{
	return record_version_set_credential(v, (const uint8_t *)"c", 1, "example.com", fill, len);
}

static int set_sk(struct record_version *v, const uint8_t *fill, size_t len)
{
	return record_version_set_keys(v, RECORD_ALG_ES256, fill, len, (const uint8_t *)"p", 1);
}

static int set_pk(struct record_version *v, const uint8_t *fill, size_t len)
{
	return record_version_set_keys(v, RECORD_ALG_ES256, (const uint8_t *)"s", 1, fill, len);
}

static int set_text_field(struct record_version *v, enum record_field f, const uint8_t *fill,
			  size_t len)
{
	char *s = malloc(len + 1);
	int r;

	memcpy(s, fill, len);
	s[len] = '\0';
	r = record_version_set_field(v, f, s, 42);
	free(s);
	return r;
}

static int set_user(struct record_version *v, const uint8_t *fill, size_t len)
{
	return set_text_field(v, RECORD_FIELD_USER_NAME, fill, len);
}

static int set_display(struct record_version *v, const uint8_t *fill, size_t len)
{
	return set_text_field(v, RECORD_FIELD_DISPLAY_NAME, fill, len);
}

static int set_notes(struct record_version *v, const uint8_t *fill, size_t len)
{
	return set_text_field(v, RECORD_FIELD_NOTES, fill, len);
}

static int set_source(struct record_version *v, const uint8_t *fill, size_t len)
{
	char s[RECORD_SOURCE_MAX + 2];

	memcpy(s, fill, len);
	s[len] = '\0';
	return record_version_set_source(v, s);
}

/*
 * Grows the string whose payload starts with `marker` in enc by one byte:
 * bumps the length in its head (1- or 2-byte length form) and inserts one
 * more copy of the marker byte.
 */
static uint8_t *splice_grow(const uint8_t *enc, size_t len, uint8_t marker, size_t payload_len,
			    size_t *out_len)
{
	uint8_t *out;
	size_t at = 0, head;

	for (size_t i = 0; i + payload_len <= len; i++) {
		bool all = true;
		for (size_t k = 0; k < payload_len && all; k++)
			all = enc[i + k] == marker;
		if (all) {
			at = i;
			break;
		}
	}
	if (at < 3)
		return NULL;
	out = malloc(len + 1);
	memcpy(out, enc, at);
	out[at] = marker;
	memcpy(out + at + 1, enc + at, len - at);
	/* The head: major type byte, then 1 or 2 length bytes. */
	if ((out[at - 3] & 0x1f) == 25) {
		head = ((size_t)out[at - 2] << 8 | out[at - 1]) + 1;
		out[at - 2] = (uint8_t)(head >> 8);
		out[at - 1] = (uint8_t)head;
	} else if ((out[at - 2] & 0x1f) == 24) {
		out[at - 1]++;
	} else {
		free(out);
		return NULL;
	}
	*out_len = len + 1;
	return out;
}

static void test_limits(void)
{
	static const struct limit_case cases[] = {
	    {"credential id", RECORD_CREDENTIAL_ID_MAX, false, set_cred},
	    {"rp id", RECORD_RP_ID_MAX, true, set_rp},
	    {"user handle", RECORD_USER_HANDLE_MAX, false, set_handle},
	    {"private key", RECORD_PRIVATE_KEY_MAX, false, set_sk},
	    {"public key", RECORD_PUBLIC_KEY_MAX, false, set_pk},
	    {"user name", RECORD_USER_NAME_MAX, true, set_user},
	    {"display name", RECORD_DISPLAY_NAME_MAX, true, set_display},
	    {"notes", RECORD_NOTES_MAX, true, set_notes},
	    {"source", RECORD_SOURCE_MAX, true, set_source},
	};
	uint8_t fill[RECORD_NOTES_MAX + 1];

	setup();
	/* 'q' = 0x71 appears nowhere else in make_create()'s encoding. */
	memset(fill, 'q', sizeof(fill));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct limit_case *lc = &cases[i];
		struct record_version *v = make_create(0, 1, 5, 0), *d = NULL;
		uint8_t *enc = NULL, *big = NULL;
		size_t len = 0, big_len = 0;

		printf("# limit: %s\n", lc->name);
		CHECK_OK(lc->set(v, fill, lc->max));
		CHECK_OK(record_version_encode(v, &enc, &len));
		CHECK_OK(record_version_decode(enc, len, &d));
		record_version_free(d);
		d = NULL;
		/* The setter refuses one more byte and leaves the old value. */
		CHECK_EQ(lc->set(v, fill, lc->max + 1), PKS_ERR_TOO_LARGE);
		CHECK_OK(record_version_validate(v));
		/* The decoder refuses an encoding one byte over. */
		big = splice_grow(enc, len, 'q', lc->max, &big_len);
		CHECK(big != NULL);
		if (big != NULL)
			CHECK_EQ(record_version_decode(big, big_len, &d), PKS_ERR_TOO_LARGE);
		CHECK(d == NULL);
		free(big);
		wipe_free(enc, len);
		record_version_free(v);
	}
	/* Minimums: empty ids and keys are refused. */
	struct record_version *v = make_create(0, 1, 5, 0);
	CHECK_EQ(set_cred(v, fill, 0), PKS_ERR_INVALID);
	CHECK_EQ(set_rp(v, fill, 0), PKS_ERR_INVALID);
	CHECK_EQ(set_handle(v, fill, 0), PKS_ERR_INVALID);
	CHECK_EQ(set_sk(v, fill, 0), PKS_ERR_INVALID);
	CHECK_EQ(set_pk(v, fill, 0), PKS_ERR_INVALID);
	/* A limit broken behind the setters' back is caught by encode. */
	v->user_handle_len = RECORD_USER_HANDLE_MAX + 1;
	uint8_t *enc = NULL;
	size_t len = 0;
	uint8_t *handle = realloc(v->user_handle, RECORD_USER_HANDLE_MAX + 1);
	v->user_handle = handle;
	CHECK_EQ(record_version_encode(v, &enc, &len), PKS_ERR_TOO_LARGE);
	CHECK(enc == NULL);
	record_version_free(v);

	/* Restore tags: 64 pass, 65 do not. */
	struct record_delete_tag t = {0, {0}};
	v = make_simple(RECORD_OP_RESTORE, 0, 1, 5);
	for (int i = 0; i < RECORD_RESTORE_TAGS_MAX; i++) {
		t.hlc = (hlc_t)i + 1;
		CHECK_OK(record_version_add_restore_tag(v, &t));
	}
	CHECK_OK(record_version_encode(v, &enc, &len));
	struct record_version *d = NULL;
	CHECK_OK(record_version_decode(enc, len, &d));
	record_version_free(d);
	d = NULL;
	t.hlc = 1000;
	CHECK_EQ(record_version_add_restore_tag(v, &t), PKS_ERR_TOO_LARGE);
	/* Bump the array count 64 -> 65 (0x98 0x40) and append one more tag. */
	uint8_t *big = malloc(len + 40);
	size_t at = len;
	for (size_t i = 0; i + 1 < len; i++)
		if (enc[i] == 0x98 && enc[i + 1] == 0x40) {
			at = i;
			break;
		}
	CHECK(at < len);
	memcpy(big, enc, len);
	if (at < len)
		big[at + 1] = 0x41;
	size_t n = len;
	big[n++] = 0x82;
	big[n++] = 0x19; /* hlc 1000 */
	big[n++] = 0x03;
	big[n++] = 0xe8;
	big[n++] = 0x58;
	big[n++] = 0x20;
	memset(big + n, 0, 32);
	n += 32;
	CHECK_EQ(record_version_decode(big, n, &d), PKS_ERR_TOO_LARGE);
	free(big);
	free(enc);
	record_version_free(v);

	/* Total size. */
	uint8_t *huge = calloc(1, RECORD_ENCODED_MAX + 1);
	CHECK_EQ(record_version_decode(huge, RECORD_ENCODED_MAX + 1, &d), PKS_ERR_TOO_LARGE);
	free(huge);
}

/* ---- hand-built CBOR for the rejection tests ---- */

static void raw(struct pks_buf *b, const void *p, size_t n)
{
	if (pks_buf_append(b, p, n) != PKS_OK)
		abort();
}

static void raw_head(struct pks_buf *b, size_t (*enc)(uint64_t, unsigned char *, size_t),
		     uint64_t value)
{
	unsigned char h[9];

	raw(b, h, enc(value, h, sizeof(h)));
}

static size_t enc_uint(uint64_t v, unsigned char *h, size_t n)
{
	return cbor_encode_uint(v, h, n);
}

static size_t enc_bstr(uint64_t v, unsigned char *h, size_t n)
{
	return cbor_encode_bytestring_start(v, h, n);
}

static size_t enc_map(uint64_t v, unsigned char *h, size_t n)
{
	return cbor_encode_map_start(v, h, n);
}

static void raw_uint(struct pks_buf *b, uint64_t v)
{
	raw_head(b, enc_uint, v);
}

static void raw_bstr(struct pks_buf *b, const uint8_t *p, size_t n)
{
	raw_head(b, enc_bstr, n);
	raw(b, p, n);
}

enum raw_mode {
	RAW_CANONICAL,
	RAW_UNSORTED,
	RAW_LONG_INT,
	RAW_LONG_LENGTH,
	RAW_INDEF_MAP,
	RAW_INDEF_BYTES,
	RAW_DUP_KEY,
	RAW_TRAILING,
	RAW_UNKNOWN_KEY,
	RAW_MISSING_HLC,
	RAW_BAD_OP,
	RAW_TAGGED,
	RAW_FLOAT_HLC,
	RAW_SHORT_AUTHOR,
	RAW_BIG_EPOCH,
	RAW_NOTES_ON_DELETE,
};

/* A DELETE by device 0 (seq 7, epoch 3, hlc 300) written by hand. */
static void raw_delete(struct pks_buf *b, enum raw_mode mode)
{
	size_t pairs = 6;
	unsigned char h[9];

	if (mode == RAW_DUP_KEY || mode == RAW_UNKNOWN_KEY || mode == RAW_NOTES_ON_DELETE)
		pairs = 7;
	if (mode == RAW_MISSING_HLC)
		pairs = 5;
	if (mode == RAW_TAGGED)
		raw(b, "\xd8\x18", 2); /* tag 24 around the map */
	if (mode == RAW_INDEF_MAP)
		raw(b, "\xbf", 1);
	else
		raw_head(b, enc_map, pairs);
	raw_uint(b, 1);
	raw_bstr(b, record_id, RECORD_ID_LEN);
	raw_uint(b, 2);
	if (mode == RAW_INDEF_BYTES) {
		raw(b, "\x5f", 1);
		raw_bstr(b, devices[0].id, 16);
		raw_bstr(b, devices[0].id + 16, 16);
		raw(b, "\xff", 1);
	} else if (mode == RAW_LONG_LENGTH) {
		raw(b, "\x59\x00\x20", 3);
		raw(b, devices[0].id, 32);
	} else {
		raw_bstr(b, devices[0].id, mode == RAW_SHORT_AUTHOR ? 31 : 32);
	}
	if (mode == RAW_UNSORTED) {
		raw_uint(b, 4);
		raw_uint(b, 3);
		raw_uint(b, 3);
		raw_uint(b, 7);
	} else {
		raw_uint(b, 3);
		if (mode == RAW_LONG_INT)
			raw(b, h, cbor_encode_uint32(7, h, sizeof(h)));
		else
			raw_uint(b, 7);
		raw_uint(b, 4);
		raw_uint(b, mode == RAW_BIG_EPOCH ? UINT64_C(0x100000000) : 3);
	}
	if (mode == RAW_DUP_KEY) {
		raw_uint(b, 4);
		raw_uint(b, 3);
	}
	raw_uint(b, 5);
	raw_uint(b, mode == RAW_BAD_OP ? 6 : RECORD_OP_DELETE);
	if (mode != RAW_MISSING_HLC) {
		raw_uint(b, 6);
		if (mode == RAW_FLOAT_HLC)
			raw(b, h, cbor_encode_double(300.0, h, sizeof(h)));
		else
			raw_uint(b, 300);
	}
	if (mode == RAW_NOTES_ON_DELETE) {
		raw_uint(b, 19);
		raw(b, "\x82\x61x\x01", 4);
	}
	if (mode == RAW_UNKNOWN_KEY) {
		raw_uint(b, 21);
		raw_uint(b, 0);
	}
	if (mode == RAW_INDEF_MAP)
		raw(b, "\xff", 1);
	if (mode == RAW_TRAILING)
		raw(b, "\x00", 1);
}

static int raw_decode(enum raw_mode mode, struct record_version **out)
{
	struct pks_buf b;
	int r;

	pks_buf_init(&b, 0);
	raw_delete(&b, mode);
	r = record_version_decode(b.data, b.len, out);
	pks_buf_free(&b);
	return r;
}

static void test_noncanonical(void)
{
	static const struct {
		enum raw_mode mode;
		int want;
		const char *name;
	} cases[] = {
	    {RAW_UNSORTED, PKS_ERR_NONCANONICAL, "unsorted keys"},
	    {RAW_LONG_INT, PKS_ERR_NONCANONICAL, "long-form integer"},
	    {RAW_LONG_LENGTH, PKS_ERR_NONCANONICAL, "long-form length"},
	    {RAW_INDEF_MAP, PKS_ERR_NONCANONICAL, "indefinite map"},
	    {RAW_INDEF_BYTES, PKS_ERR_NONCANONICAL, "indefinite byte string"},
	    {RAW_DUP_KEY, PKS_ERR_NONCANONICAL, "duplicate key"},
	    {RAW_TRAILING, PKS_ERR_MALFORMED, "trailing bytes"},
	    {RAW_UNKNOWN_KEY, PKS_ERR_MALFORMED, "unknown key"},
	    {RAW_MISSING_HLC, PKS_ERR_MALFORMED, "missing hlc"},
	    {RAW_BAD_OP, PKS_ERR_MALFORMED, "unknown op"},
	    {RAW_TAGGED, PKS_ERR_MALFORMED, "tag"},
	    {RAW_FLOAT_HLC, PKS_ERR_MALFORMED, "float"},
	    {RAW_SHORT_AUTHOR, PKS_ERR_MALFORMED, "short author"},
	    {RAW_BIG_EPOCH, PKS_ERR_MALFORMED, "epoch over 32 bits"},
	    {RAW_NOTES_ON_DELETE, PKS_ERR_MALFORMED, "field not allowed for op"},
	};
	struct record_version *v = NULL, *ref;
	uint8_t *enc = NULL;
	size_t len = 0;
	struct pks_buf b;

	setup();
	/* The hand-built canonical form must equal the encoder's bytes. */
	ref = make_simple(RECORD_OP_DELETE, 0, 7, 300);
	CHECK_OK(record_version_encode(ref, &enc, &len));
	pks_buf_init(&b, 0);
	raw_delete(&b, RAW_CANONICAL);
	CHECK_EQ(b.len, len);
	if (b.len == len)
		CHECK_MEM_EQ(b.data, enc, len);
	pks_buf_free(&b);
	CHECK_OK(raw_decode(RAW_CANONICAL, &v));
	record_version_free(v);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r;
		v = NULL;
		r = raw_decode(cases[i].mode, &v);
		if (r != cases[i].want)
			CHECK_FAIL_AT("%s: got %d, want %d", cases[i].name, r, cases[i].want);
		CHECK(v == NULL);
	}
	/* Every proper prefix is truncated, never accepted. */
	for (size_t n = 0; n < len; n++) {
		int r = record_version_decode(enc, n, &v);
		if (r != PKS_ERR_TRUNCATED)
			CHECK_FAIL_AT("prefix %zu: got %d", n, r);
	}
	free(enc);
	record_version_free(ref);

	/* Not a map at all, deep nesting, junk. */
	uint8_t *very_deep = malloc(100000);
	memset(very_deep, 0x81, 100000);
	CHECK_EQ(record_version_decode(very_deep, 100000, &v), PKS_ERR_TOO_LARGE);
	free(very_deep);
	uint8_t *deep = malloc(RECORD_ENCODED_MAX);
	memset(deep, 0x81, RECORD_ENCODED_MAX);
	CHECK_EQ(record_version_decode(deep, RECORD_ENCODED_MAX, &v), PKS_ERR_MALFORMED);
	memset(deep, 0xa1, RECORD_ENCODED_MAX); /* maps as keys */
	CHECK_EQ(record_version_decode(deep, RECORD_ENCODED_MAX, &v), PKS_ERR_MALFORMED);
	free(deep);
	CHECK_EQ(record_version_decode((const uint8_t *)"\xa1\x11\x81\x81\x81", 5, &v),
		 PKS_ERR_MALFORMED);
	CHECK_EQ(record_version_decode((const uint8_t *)"\xa0", 1, &v), PKS_ERR_MALFORMED);
	CHECK_EQ(record_version_decode((const uint8_t *)"\xf6", 1, &v), PKS_ERR_MALFORMED);
	CHECK_EQ(record_version_decode((const uint8_t *)"\xff", 1, &v), PKS_ERR_NONCANONICAL);
	CHECK_EQ(record_version_decode((const uint8_t *)"\x1c", 1, &v), PKS_ERR_MALFORMED);
	/* A map claiming 2^64-1 pairs. */
	CHECK_EQ(
	    record_version_decode((const uint8_t *)"\xbb\xff\xff\xff\xff\xff\xff\xff\xff", 9, &v),
	    PKS_ERR_MALFORMED);
	/* A byte string claiming far more bytes than present. */
	CHECK_EQ(record_version_decode((const uint8_t *)"\xa1\x01\x5b\xff\xff\xff\xff\xff\xff\xff"
							"\xff",
				       11, &v),
		 PKS_ERR_TRUNCATED);
	CHECK(v == NULL);
}

/* Bad strings and values inside otherwise valid encodings. */
static void test_decode_values(void)
{
	struct record_version *v, *d = NULL;
	uint8_t *enc = NULL;
	size_t len = 0;

	setup();
	v = make_update(0, 1, RECORD_FIELD_NOTES, "abcd", 5);
	CHECK_OK(record_version_encode(v, &enc, &len));
	uint8_t *p = memmem(enc, len, "abcd", 4);
	CHECK(p != NULL);
	if (p != NULL) {
		p[1] = 0; /* embedded NUL */
		CHECK_EQ(record_version_decode(enc, len, &d), PKS_ERR_MALFORMED);
		p[1] = 0xff; /* invalid UTF-8 */
		CHECK_EQ(record_version_decode(enc, len, &d), PKS_ERR_MALFORMED);
		p[1] = 'b';
		CHECK_OK(record_version_decode(enc, len, &d));
	}
	record_version_free(d);
	d = NULL;
	free(enc);
	record_version_free(v);

	/* seq 0 and alg -9 in a create. */
	v = make_create(0, 1, 5, 0);
	CHECK_OK(record_version_encode(v, &enc, &len));
	/* "\x0a\x26" is key 10 (alg) = -7; -9 is 0x28. */
	p = memmem(enc, len, "\x0a\x26", 2);
	CHECK(p != NULL);
	if (p != NULL) {
		p[1] = 0x28;
		CHECK_EQ(record_version_decode(enc, len, &d), PKS_ERR_MALFORMED);
		p[1] = 0x07; /* +7: not a negative integer */
		CHECK_EQ(record_version_decode(enc, len, &d), PKS_ERR_MALFORMED);
		p[1] = 0x27;
		CHECK_OK(record_version_decode(enc, len, &d));
		CHECK(d != NULL && d->alg == RECORD_ALG_EDDSA);
		record_version_free(d);
		d = NULL;
	}
	p = memmem(enc, len, "\x03\x01\x04", 3); /* seq 1, then key 4 */
	CHECK(p != NULL);
	if (p != NULL) {
		p[1] = 0;
		CHECK_EQ(record_version_decode(enc, len, &d), PKS_ERR_MALFORMED);
	}
	CHECK(d == NULL);
	wipe_free(enc, len);
	record_version_free(v);

	/* Restore tags unsorted (non-canonical), duplicated, or empty. */
	struct record_delete_tag t1 = {1, {0}}, t2 = {2, {0}};
	v = make_restore(0, 1, 9, &t1, 1);
	CHECK_OK(record_version_add_restore_tag(v, &t2));
	CHECK_OK(record_version_encode(v, &enc, &len));
	/* Tags are [1, 0^32], [2, 0^32]: swap their hlc bytes. */
	p = memmem(enc, len, "\x82\x82\x01\x58\x20", 5);
	CHECK(p != NULL);
	if (p != NULL) {
		uint8_t *q = p + 5 + 32;
		CHECK_EQ(q[0], 0x82);
		CHECK_EQ(q[1], 0x02);
		p[2] = 0x02; /* [2], [2]: duplicates */
		CHECK_EQ(record_version_decode(enc, len, &d), PKS_ERR_MALFORMED);
		q[1] = 0x01; /* [2], [1]: unsorted */
		CHECK_EQ(record_version_decode(enc, len, &d), PKS_ERR_NONCANONICAL);
		p[2] = 0x01; /* [1], [1]: duplicates */
		CHECK_EQ(record_version_decode(enc, len, &d), PKS_ERR_MALFORMED);
		q[1] = 0x02;
		CHECK_OK(record_version_decode(enc, len, &d));
		record_version_free(d);
		d = NULL;
		p[1] = 0x80; /* empty list; the rest becomes trailing junk */
		CHECK(record_version_decode(enc, len, &d) != PKS_OK);
	}
	CHECK(d == NULL);
	free(enc);
	record_version_free(v);
}

/* ---- sealing ---- */

static void test_seal_open(void)
{
	struct record_version *v, *d = NULL;
	struct record_sealed_header h;
	uint8_t nonce[24], *blob = NULL, wrong_key[32];
	size_t len = 0;

	setup();
	memset(nonce, 0x4e, sizeof(nonce));
	memset(wrong_key, 9, sizeof(wrong_key));
	v = make_create(1, 42, hlc_make(T0, 0), 0);
	v->epoch = 0x01020304;
	CHECK_OK(record_version_seal(v, data_key, devices[1].sk, nonce, &blob, &len));
	CHECK(blob != NULL);
	if (blob == NULL)
		goto out;
	CHECK(len >= RECORD_SEALED_MIN && len <= RECORD_SEALED_MAX);
	CHECK_OK(record_sealed_peek(blob, len, &h));
	CHECK_EQ(h.format, RECORD_SEALED_FORMAT);
	CHECK_MEM_EQ(h.record_id, record_id, RECORD_ID_LEN);
	CHECK_MEM_EQ(h.author, devices[1].id, DEVICE_ID_LEN);
	CHECK_EQ(h.seq, 42);
	CHECK_EQ(h.epoch, 0x01020304);
	CHECK_MEM_EQ(h.nonce, nonce, 24);
	/* No plaintext leaks into the blob. */
	CHECK(memmem(blob, len, "example.com", 11) == NULL);
	CHECK(memmem(blob, len, "alice", 5) == NULL);

	CHECK_OK(record_version_open(blob, len, devices[1].pk, data_key, &d));
	CHECK(d != NULL && d->seq == 42 && d->private_key_len == 40);
	if (d != NULL)
		CHECK_STR_EQ(d->rp_id, "example.com");
	record_version_free(d);
	d = NULL;

	/* Every single-bit flip anywhere is caught. */
	size_t bad = 0;
	for (size_t i = 0; i < len; i++) {
		int r;
		blob[i] ^= 0x01;
		r = record_version_open(blob, len, devices[1].pk, data_key, &d);
		blob[i] ^= 0x01;
		if (i == 0) {
			if (r != PKS_ERR_MALFORMED) /* format byte */
				bad++;
		} else if (r != PKS_ERR_AUTH) {
			bad++;
			printf("# flip at %zu: %d\n", i, r);
		}
	}
	CHECK_EQ(bad, 0);
	CHECK(d == NULL);
	/* Named cases: header field, ciphertext, signature. */
	blob[1 + 16 + 32 + 7] ^= 0x02; /* seq */
	CHECK_EQ(record_version_open(blob, len, devices[1].pk, data_key, &d), PKS_ERR_AUTH);
	blob[1 + 16 + 32 + 7] ^= 0x02;
	blob[RECORD_SEALED_HEADER_LEN + 3] ^= 0x80;
	CHECK_EQ(record_version_open(blob, len, devices[1].pk, data_key, &d), PKS_ERR_AUTH);
	blob[RECORD_SEALED_HEADER_LEN + 3] ^= 0x80;
	blob[len - 1] ^= 0x40;
	CHECK_EQ(record_version_open(blob, len, devices[1].pk, data_key, &d), PKS_ERR_AUTH);
	blob[len - 1] ^= 0x40;
	/* Wrong data key: the signature is fine, the MAC is not. */
	CHECK_EQ(record_version_open(blob, len, devices[1].pk, wrong_key, &d), PKS_ERR_AUTH);
	/* Wrong author key (a foreign or revoked device): refused before decrypting. */
	CHECK_EQ(record_version_open(blob, len, devices[0].pk, data_key, &d), PKS_ERR_AUTH);
	/* Shape. */
	CHECK_EQ(record_version_open(blob, RECORD_SEALED_MIN - 1, devices[1].pk, data_key, &d),
		 PKS_ERR_TRUNCATED);
	CHECK_EQ(record_sealed_peek(blob, 10, &h), PKS_ERR_TRUNCATED);
	CHECK_EQ(record_version_open(blob, len - 1, devices[1].pk, data_key, &d), PKS_ERR_AUTH);
	uint8_t *huge = calloc(1, RECORD_SEALED_MAX + 1);
	memcpy(huge, blob, len);
	CHECK_EQ(record_sealed_peek(huge, RECORD_SEALED_MAX + 1, &h), PKS_ERR_TOO_LARGE);
	free(huge);
	blob[0] = 2;
	CHECK_EQ(record_sealed_peek(blob, len, &h), PKS_ERR_MALFORMED);
	blob[0] = RECORD_SEALED_FORMAT;
	CHECK(d == NULL);

	/* Sealing as someone else is refused. */
	uint8_t *other = NULL;
	size_t other_len = 0;
	CHECK_EQ(record_version_seal(v, data_key, devices[0].sk, nonce, &other, &other_len),
		 PKS_ERR_INVALID);
	CHECK(other == NULL);
	/* An invalid version is not sealed. */
	v->seq = 0;
	CHECK_EQ(record_version_seal(v, data_key, devices[1].sk, nonce, &other, &other_len),
		 PKS_ERR_INVALID);
	v->seq = 42;
out:
	free(blob);
	record_version_free(v);
}

/*
 * A properly signed and encrypted blob whose header disagrees with its body
 * (what a buggy or hostile author could produce) is refused.
 */
static void test_seal_mismatch(void)
{
	struct record_version *v = make_simple(RECORD_OP_DELETE, 0, 5, 77), *d = NULL;
	uint8_t nonce[24] = {7}, *body = NULL;
	size_t body_len = 0;
	static const char domain[] = "pksync record version v1";

	setup();
	CHECK_OK(record_version_encode(v, &body, &body_len));
	for (int which = 0; which < 3 && body != NULL; which++) {
		uint8_t blob[RECORD_SEALED_MAX], msg[RECORD_SEALED_MAX + 64];
		size_t off = 0, ct_len = body_len + 16;
		unsigned long long clen;

		blob[off++] = RECORD_SEALED_FORMAT;
		memcpy(blob + off, record_id, 16);
		if (which == 0)
			blob[off] ^= 1;
		off += 16;
		memcpy(blob + off, devices[0].id, 32);
		off += 32;
		for (int i = 7; i >= 0; i--)
			blob[off++] = (uint8_t)((uint64_t)(which == 1 ? 6 : 5) >> (8 * i));
		for (int i = 3; i >= 0; i--)
			blob[off++] = (uint8_t)((which == 2 ? 4u : 3u) >> (8 * i));
		memcpy(blob + off, nonce, 24);
		off += 24;
		CHECK_EQ(off, RECORD_SEALED_HEADER_LEN);
		crypto_aead_xchacha20poly1305_ietf_encrypt(blob + off, &clen, body, body_len, blob,
							   off, NULL, nonce, data_key);
		memcpy(msg, domain, sizeof(domain) - 1);
		memcpy(msg + sizeof(domain) - 1, blob, off + ct_len);
		crypto_sign_detached(blob + off + ct_len, NULL, msg,
				     sizeof(domain) - 1 + off + ct_len, devices[0].sk);
		CHECK_EQ(record_version_open(blob, off + ct_len + 64, devices[0].pk, data_key, &d),
			 PKS_ERR_MALFORMED);
		CHECK(d == NULL);
	}
	free(body);
	record_version_free(v);
}

/* ---- merge ---- */

static void digest_of(const struct record_state *st, uint8_t out[32])
{
	record_state_digest(st, out);
}

static void test_merge_basic(void)
{
	struct record_state *st = record_state_new(record_id);
	struct record_version *c, *u;
	const uint8_t *key = NULL;
	size_t len = 0;
	uint8_t d0[32], d1[32], author[32];
	hlc_t stamp = 0;

	setup();
	CHECK(!record_state_has_create(st));
	CHECK(!record_state_visible(st));
	CHECK_EQ(record_state_private_key(st, &key, &len), PKS_ERR_STATE);
	CHECK(record_state_rp_id(st) == NULL);
	CHECK_STR_EQ(record_state_user_name(st), "");
	digest_of(st, d0);
	c = make_create(0, 1, hlc_make(T0, 0), 0);
	CHECK_OK(record_state_apply(st, c));
	CHECK(record_state_has_create(st));
	CHECK(record_state_visible(st));
	CHECK(!record_state_trashed(st));
	CHECK(!record_state_purged(st));
	CHECK_STR_EQ(record_state_rp_id(st), "example.com");
	CHECK_STR_EQ(record_state_user_name(st), "alice");
	CHECK_STR_EQ(record_state_display_name(st), "");
	CHECK(record_state_field(st, RECORD_FIELD_NOTES, NULL, NULL) == NULL);
	CHECK_STR_EQ(record_state_field(st, RECORD_FIELD_USER_NAME, &stamp, author), "alice");
	CHECK_EQ(stamp, hlc_make(T0, 0));
	CHECK_MEM_EQ(author, devices[0].id, 32);
	CHECK_STR_EQ(record_state_source(st), "test");
	CHECK_EQ(record_state_alg(st), RECORD_ALG_ES256);
	CHECK(record_state_backup_eligible(st));
	CHECK(record_state_backup_state(st));
	CHECK_EQ(record_state_created_at(st), T0);
	CHECK_OK(record_state_private_key(st, &key, &len));
	CHECK_EQ(len, 40);
	CHECK(key != NULL && key[0] == 0x5e);
	record_state_credential_id(st, &len);
	CHECK_EQ(len, 20);
	record_state_user_handle(st, &len);
	CHECK_EQ(len, 16);
	record_state_public_key(st, &len);
	CHECK_EQ(len, 91);
	CHECK_MEM_EQ(record_state_id(st), record_id, 16);
	CHECK_EQ(record_state_updated_at(st), hlc_make(T0, 0));
	digest_of(st, d1);
	CHECK(memcmp(d0, d1, 32) != 0);
	/* Idempotent. */
	CHECK_OK(record_state_apply(st, c));
	digest_of(st, d0);
	CHECK_MEM_EQ(d0, d1, 32);
	/* Another record's version is refused and changes nothing. */
	u = make_update(0, 2, RECORD_FIELD_NOTES, "x", hlc_make(T0, 5));
	u->record_id[0] ^= 1;
	CHECK_EQ(record_state_apply(st, u), PKS_ERR_INVALID);
	CHECK(!record_state_dominated(st, u));
	digest_of(st, d0);
	CHECK_MEM_EQ(d0, d1, 32);
	record_version_free(u);
	u = make_update(0, 2, RECORD_FIELD_NOTES, "x", hlc_make(T0, 5));
	CHECK_OK(record_state_apply(st, u));
	CHECK_STR_EQ(record_state_notes(st), "x");
	CHECK_EQ(record_state_updated_at(st), hlc_make(T0, 5));
	record_version_free(u);
	record_version_free(c);
	record_state_free(st);
	record_state_free(NULL);
}

static void test_merge_fields(void)
{
	struct record_state *a = record_state_new(record_id), *b = record_state_new(record_id);
	struct record_version *c = make_create(0, 1, hlc_make(T0, 0), 0);
	/* Concurrent edits of different fields on two devices. */
	struct record_version *ua =
	    make_update(0, 2, RECORD_FIELD_USER_NAME, "alice2", hlc_make(T0 + 10, 0));
	struct record_version *ub =
	    make_update(1, 1, RECORD_FIELD_DISPLAY_NAME, "Alice B", hlc_make(T0 + 5, 0));
	/* Same field, same stamp: the author id breaks the tie. */
	struct record_version *t0 =
	    make_update(0, 3, RECORD_FIELD_NOTES, "from 0", hlc_make(T0 + 20, 0));
	struct record_version *t1 =
	    make_update(1, 2, RECORD_FIELD_NOTES, "from 1", hlc_make(T0 + 20, 0));
	uint8_t da[32], db[32];
	const char *tie_winner = memcmp(devices[0].id, devices[1].id, 32) > 0 ? "from 0" : "from 1";

	setup();
	CHECK_OK(record_state_apply(a, c));
	CHECK_OK(record_state_apply(a, ua));
	CHECK_OK(record_state_apply(a, t0));
	CHECK_OK(record_state_apply(a, ub));
	CHECK_OK(record_state_apply(a, t1));
	CHECK_OK(record_state_apply(b, t1));
	CHECK_OK(record_state_apply(b, ub));
	CHECK_OK(record_state_apply(b, t0));
	CHECK_OK(record_state_apply(b, ua));
	CHECK_OK(record_state_apply(b, c));
	CHECK_STR_EQ(record_state_user_name(a), "alice2");
	CHECK_STR_EQ(record_state_display_name(a), "Alice B");
	CHECK_STR_EQ(record_state_notes(a), tie_winner);
	CHECK_STR_EQ(record_state_notes(b), tie_winner);
	digest_of(a, da);
	digest_of(b, db);
	CHECK_MEM_EQ(da, db, 32);
	CHECK_EQ(record_state_updated_at(a), hlc_make(T0 + 20, 0));
	/* The create's own user name lost to ua, but the create still counts. */
	CHECK(!record_state_dominated(a, c));
	CHECK(!record_state_dominated(a, ua));
	/* An older edit is dominated and does not change anything. */
	struct record_version *old =
	    make_update(2, 1, RECORD_FIELD_USER_NAME, "old", hlc_make(T0 + 1, 0));
	CHECK(record_state_dominated(a, old));
	CHECK_OK(record_state_apply(a, old));
	digest_of(a, db);
	CHECK_MEM_EQ(da, db, 32);
	CHECK(record_state_dominated(a, t0) != record_state_dominated(a, t1));
	record_version_free(old);
	record_version_free(c);
	record_version_free(ua);
	record_version_free(ub);
	record_version_free(t0);
	record_version_free(t1);
	record_state_free(a);
	record_state_free(b);
}

static void test_merge_trash(void)
{
	struct record_state *st = record_state_new(record_id);
	struct record_version *c = make_create(0, 1, hlc_make(T0, 0), 0);
	struct record_version *d1 = make_simple(RECORD_OP_DELETE, 0, 2, hlc_make(T0 + 100, 0));
	struct record_version *edit =
	    make_update(1, 1, RECORD_FIELD_NOTES, "edited", hlc_make(T0 + 150, 0));
	struct record_version *d2 = make_simple(RECORD_OP_DELETE, 1, 2, hlc_make(T0 + 120, 0));
	struct record_delete_tag t1 = tag_of(d1), t2 = tag_of(d2), out[4];
	struct record_version *r1 = make_restore(2, 1, hlc_make(T0 + 200, 0), &t1, 1);
	struct record_version *r2 = make_restore(2, 2, hlc_make(T0 + 300, 0), &t2, 1);

	setup();
	CHECK_OK(record_state_apply(st, c));
	CHECK_OK(record_state_apply(st, d1));
	CHECK(record_state_trashed(st));
	CHECK_EQ(record_state_trashed_at(st), T0 + 100);
	CHECK(record_state_visible(st));
	/* Delete beats a concurrent edit: the edit applies, the record stays in the trash. */
	CHECK_OK(record_state_apply(st, edit));
	CHECK(record_state_trashed(st));
	CHECK_STR_EQ(record_state_notes(st), "edited");
	CHECK_OK(record_state_apply(st, d2));
	CHECK_EQ(record_state_trashed_at(st), T0 + 120);
	CHECK_EQ(record_state_delete_tags(st, out, 4), 2);
	CHECK_EQ(out[0].hlc, t1.hlc);
	CHECK_EQ(out[1].hlc, t2.hlc);
	CHECK_EQ(record_state_delete_tags(st, NULL, 0), 2);
	/* A restore that saw only d1 leaves d2 outstanding. */
	CHECK(!record_state_dominated(st, d1));
	CHECK_OK(record_state_apply(st, r1));
	CHECK(record_state_trashed(st));
	CHECK_EQ(record_state_trashed_at(st), T0 + 120);
	CHECK_EQ(record_state_delete_tags(st, out, 4), 1);
	CHECK(record_state_dominated(st, d1));
	CHECK(!record_state_dominated(st, d2));
	CHECK(!record_state_dominated(st, r1));
	CHECK_OK(record_state_apply(st, r2));
	CHECK(!record_state_trashed(st));
	CHECK_EQ(record_state_trashed_at(st), 0);
	CHECK_EQ(record_state_updated_at(st), hlc_make(T0 + 300, 0));
	/* A new delete after the restores trashes it again. */
	struct record_version *d3 = make_simple(RECORD_OP_DELETE, 0, 3, hlc_make(T0 + 400, 0));
	CHECK_OK(record_state_apply(st, d3));
	CHECK(record_state_trashed(st));
	CHECK_EQ(record_state_trashed_at(st), T0 + 400);

	/* A restore arriving before its delete still undoes it. */
	struct record_state *st2 = record_state_new(record_id);
	CHECK_OK(record_state_apply(st2, r1));
	CHECK_OK(record_state_apply(st2, d1));
	CHECK(!record_state_trashed(st2));
	CHECK_OK(record_state_apply(st2, d2));
	CHECK(record_state_trashed(st2));
	record_state_free(st2);

	record_version_free(c);
	record_version_free(d1);
	record_version_free(d2);
	record_version_free(d3);
	record_version_free(edit);
	record_version_free(r1);
	record_version_free(r2);
	record_state_free(st);
}

static void test_merge_purge(void)
{
	struct record_state *st = record_state_new(record_id), *other = record_state_new(record_id);
	struct record_version *c = make_create(0, 1, hlc_make(T0, 0), 0);
	struct record_version *u = make_update(1, 1, RECORD_FIELD_NOTES, "n", hlc_make(T0 + 1, 0));
	struct record_version *p1 = make_simple(RECORD_OP_PURGE, 1, 2, hlc_make(T0 + 50, 0));
	struct record_version *p2 = make_simple(RECORD_OP_PURGE, 0, 2, hlc_make(T0 + 40, 0));
	struct record_version *late =
	    make_update(2, 1, RECORD_FIELD_NOTES, "late", hlc_make(T0 + 90, 0));
	const uint8_t *key;
	size_t len;
	uint8_t da[32], db[32];

	setup();
	CHECK_OK(record_state_apply(st, c));
	CHECK_OK(record_state_apply(st, u));
	CHECK_OK(record_state_apply(st, p1));
	CHECK(record_state_purged(st));
	CHECK(!record_state_visible(st));
	CHECK(!record_state_has_create(st));
	CHECK_EQ(record_state_private_key(st, &key, &len), PKS_ERR_STATE);
	CHECK(record_state_rp_id(st) == NULL);
	CHECK(record_state_field(st, RECORD_FIELD_NOTES, NULL, NULL) == NULL);
	CHECK(!record_state_trashed(st));
	CHECK_EQ(record_state_purged_hlc(st), hlc_make(T0 + 50, 0));
	/* Everything is dominated but the purge. */
	CHECK(record_state_dominated(st, c));
	CHECK(record_state_dominated(st, u));
	CHECK(!record_state_dominated(st, p1));
	/* Later versions are accepted and ignored; the earliest purge is kept. */
	CHECK_OK(record_state_apply(st, late));
	CHECK_OK(record_state_apply(st, c));
	CHECK(!record_state_has_create(st));
	CHECK_OK(record_state_apply(st, p2));
	CHECK_EQ(record_state_purged_hlc(st), hlc_make(T0 + 40, 0));
	CHECK(record_state_dominated(st, p1));
	CHECK(!record_state_dominated(st, p2));
	CHECK_EQ(record_state_updated_at(st), hlc_make(T0 + 40, 0));
	/* Another device that only saw the purges agrees. */
	CHECK_OK(record_state_apply(other, p2));
	CHECK_OK(record_state_apply(other, p1));
	digest_of(st, da);
	digest_of(other, db);
	CHECK_MEM_EQ(da, db, 32);
	record_version_free(c);
	record_version_free(u);
	record_version_free(p1);
	record_version_free(p2);
	record_version_free(late);
	record_state_free(st);
	record_state_free(other);
}

static void test_merge_create_conflict(void)
{
	struct record_state *a = record_state_new(record_id), *b = record_state_new(record_id);
	struct record_version *c1 = make_create(0, 1, hlc_make(T0, 0), 0);
	struct record_version *c2 = make_create(1, 1, hlc_make(T0 + 5, 0), 1);
	/* The same credential imported on another device: identical immutables. */
	struct record_version *dup = make_create(2, 1, hlc_make(T0 + 7, 0), 0);
	uint8_t before[32], after[32];
	const uint8_t *key;
	size_t len;

	setup();
	CHECK_OK(record_version_set_field(c2, RECORD_FIELD_NOTES, "c2 notes", hlc_make(T0 + 5, 0)));
	CHECK_OK(
	    record_version_set_field(dup, RECORD_FIELD_DISPLAY_NAME, "Dup", hlc_make(T0 + 7, 0)));
	free(dup->source);
	dup->source = strdup("other importer");
	dup->created_at = T0 - 1000;
	CHECK_OK(record_state_apply(a, c1));
	digest_of(a, before);
	CHECK_EQ(record_state_apply(a, c2), PKS_ERR_REJECTED);
	digest_of(a, after);
	CHECK_MEM_EQ(before, after, 32);
	CHECK(record_state_notes(a)[0] == '\0');
	CHECK_OK(record_state_private_key(a, &key, &len));
	CHECK_EQ(key[0], 0x5e);
	/* A duplicate create merges: its mutable fields count, the first one's
	 * created_at and source stay. */
	CHECK_OK(record_state_apply(a, dup));
	CHECK_STR_EQ(record_state_display_name(a), "Dup");
	CHECK_STR_EQ(record_state_source(a), "test");
	CHECK_EQ(record_state_created_at(a), T0);
	/* Other order: c2 first, then the earlier c1 takes over. */
	CHECK_OK(record_state_apply(b, c2));
	CHECK_STR_EQ(record_state_notes(b), "c2 notes");
	/* dup conflicts with c2, which is earlier: refused for now. */
	CHECK_EQ(record_state_apply(b, dup), PKS_ERR_REJECTED);
	CHECK_STR_EQ(record_state_display_name(b), "");
	CHECK_OK(record_state_apply(b, c1));
	CHECK_EQ(record_state_apply(b, c2), PKS_ERR_REJECTED);
	CHECK_OK(record_state_private_key(b, &key, &len));
	CHECK_EQ(key[0], 0x5e);
	CHECK(record_state_notes(b)[0] == '\0');
	digest_of(a, before);
	digest_of(b, after);
	CHECK_MEM_EQ(before, after, 32);
	record_version_free(c1);
	record_version_free(c2);
	record_version_free(dup);
	record_state_free(a);
	record_state_free(b);

	/* Conflicting creates tied on (hlc, author): still one winner in any order. */
	struct record_version *x = make_create(0, 1, hlc_make(T0, 0), 0);
	struct record_version *y = make_create(0, 2, hlc_make(T0, 0), 1);
	const uint8_t *kx, *ky;
	a = record_state_new(record_id);
	b = record_state_new(record_id);
	int rx = record_state_apply(a, x), ry = record_state_apply(a, y);
	CHECK_OK(rx);
	CHECK_OK(record_state_apply(b, y));
	CHECK_EQ(record_state_apply(b, x) == PKS_OK, ry == PKS_ERR_REJECTED);
	digest_of(a, before);
	digest_of(b, after);
	CHECK_MEM_EQ(before, after, 32);
	CHECK_OK(record_state_private_key(a, &kx, &len));
	CHECK_OK(record_state_private_key(b, &ky, &len));
	CHECK_EQ(kx[0], ky[0]);
	record_version_free(x);
	record_version_free(y);
	record_state_free(a);
	record_state_free(b);
}

static void test_merge_out_of_order(void)
{
	struct record_state *st = record_state_new(record_id);
	struct record_version *u =
	    make_update(1, 1, RECORD_FIELD_USER_NAME, "renamed", hlc_make(T0 + 10, 0));
	struct record_version *d = make_simple(RECORD_OP_DELETE, 1, 2, hlc_make(T0 + 20, 0));
	struct record_version *c = make_create(0, 1, hlc_make(T0, 0), 0);

	setup();
	CHECK_OK(record_state_apply(st, u));
	CHECK_OK(record_state_apply(st, d));
	CHECK(!record_state_visible(st));
	CHECK(!record_state_has_create(st));
	CHECK_OK(record_state_apply(st, c));
	CHECK(record_state_visible(st));
	CHECK(record_state_trashed(st));
	CHECK_STR_EQ(record_state_user_name(st), "renamed");
	record_version_free(u);
	record_version_free(d);
	record_version_free(c);
	record_state_free(st);
}

/* ---- property tests ---- */

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

#define UNIVERSE_MAX 40

/* A small stamp space, so equal stamps (ties) happen often. */
static hlc_t random_stamp(void)
{
	return hlc_make(T0 + pick(12), (uint16_t)pick(3));
}

static struct record_version *random_version(uint64_t seq, struct record_delete_tag *dels,
					     size_t ndels)
{
	static const char *values[] = {"", "alice", "bob", "Zoë", "\xe6\x97\xa5\xe6\x9c\xac"};
	size_t dev = pick(3), roll = pick(100);
	struct record_version *v;

	if (roll < 12) {
		/* One conflicting create in about eight. */
		v = make_create(dev, seq, random_stamp(), pick(8) == 0 ? 1 : 0);
		v->field[RECORD_FIELD_USER_NAME].stamp = random_stamp();
		if (pick(2))
			record_version_set_field(v, RECORD_FIELD_NOTES, values[pick(5)],
						 random_stamp());
		v->created_at = T0 + pick(3);
		v->backup_state = pick(2);
		return v;
	}
	if (roll < 55) {
		v = base(RECORD_OP_UPDATE, dev, seq);
		do {
			for (size_t f = 0; f < RECORD_FIELD_COUNT; f++)
				if (pick(2))
					record_version_set_field(v, (enum record_field)f,
								 values[pick(5)], random_stamp());
		} while (v->fields == 0);
		return v;
	}
	if (roll < 75)
		return make_simple(RECORD_OP_DELETE, dev, seq, random_stamp());
	if (roll < 97) {
		struct record_delete_tag tags[RECORD_RESTORE_TAGS_MAX];
		size_t n = 0;

		for (size_t i = 0; i < ndels + 1 && n < 8; i++) {
			bool dup = false;

			if (i < ndels) {
				if (pick(2))
					continue;
				tags[n] = dels[i];
			} else if (n == 0 || pick(4) == 0) {
				/* A tag for a delete that is not in the set (yet). */
				tags[n].hlc = random_stamp();
				memcpy(tags[n].author, devices[pick(3)].id, DEVICE_ID_LEN);
			} else {
				break;
			}
			for (size_t k = 0; k < n; k++)
				dup |= record_delete_tag_cmp(&tags[k], &tags[n]) == 0;
			if (!dup)
				n++;
		}
		if (n == 0)
			return make_simple(RECORD_OP_DELETE, dev, seq, random_stamp());
		return make_restore(dev, seq, random_stamp(), tags, n);
	}
	return make_simple(RECORD_OP_PURGE, dev, seq, random_stamp());
}

/* Everything a user or the agent can observe, folded into one comparison. */
static bool same_view(const struct record_state *a, const struct record_state *b)
{
	uint8_t da[32], db[32];

	digest_of(a, da);
	digest_of(b, db);
	if (memcmp(da, db, 32) != 0)
		return false;
	if (record_state_visible(a) != record_state_visible(b) ||
	    record_state_trashed(a) != record_state_trashed(b) ||
	    record_state_trashed_at(a) != record_state_trashed_at(b) ||
	    record_state_updated_at(a) != record_state_updated_at(b) ||
	    record_state_purged(a) != record_state_purged(b) ||
	    record_state_delete_tags(a, NULL, 0) != record_state_delete_tags(b, NULL, 0))
		return false;
	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++) {
		const char *x = record_state_field(a, (enum record_field)f, NULL, NULL);
		const char *y = record_state_field(b, (enum record_field)f, NULL, NULL);
		if ((x == NULL) != (y == NULL) || (x != NULL && strcmp(x, y) != 0))
			return false;
	}
	const uint8_t *ka = NULL, *kb = NULL;
	size_t la = 0, lb = 0;
	int ra = record_state_private_key(a, &ka, &la), rb = record_state_private_key(b, &kb, &lb);
	if (ra != rb || la != lb || (ra == PKS_OK && memcmp(ka, kb, la) != 0))
		return false;
	return true;
}

static void shuffle(struct record_version **vs, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = pick(i);
		struct record_version *t = vs[i - 1];
		vs[i - 1] = vs[j];
		vs[j] = t;
	}
}

static struct record_state *fold(struct record_version **vs, size_t n)
{
	struct record_state *st = record_state_new(record_id);

	for (size_t i = 0; i < n; i++) {
		int r = record_state_apply(st, vs[i]);
		if (r != PKS_OK && r != PKS_ERR_REJECTED)
			CHECK_FAIL_AT("apply returned %d", r);
	}
	return st;
}

/* One random set; returns false (after printing why) on a failure. */
static bool property_round(uint64_t seed)
{
	struct record_version *set[UNIVERSE_MAX], *order[UNIVERSE_MAX * 2], *decoded[UNIVERSE_MAX];
	struct record_version *kept[UNIVERSE_MAX];
	struct record_delete_tag dels[UNIVERSE_MAX];
	struct record_state *ref, *st;
	size_t n, ndels = 0, norder = 0, nkept = 0;
	bool ok = true;

	prng_state = seed;
	n = 1 + pick(UNIVERSE_MAX);
	for (size_t i = 0; i < n; i++) {
		set[i] = random_version(i + 1, dels, ndels);
		if (set[i]->op == RECORD_OP_DELETE)
			dels[ndels++] = tag_of(set[i]);
		decoded[i] = roundtrip(set[i]);
		if (decoded[i] == NULL)
			return false;
	}
	ref = fold(set, n);

	/* Another order, with duplicates. */
	for (size_t i = 0; i < n; i++) {
		order[norder++] = set[i];
		if (pick(3) == 0)
			order[norder++] = set[pick(n)];
	}
	shuffle(order, norder);
	st = fold(order, norder);
	if (!same_view(ref, st)) {
		printf("# shuffled order diverged\n");
		ok = false;
	}
	record_state_free(st);

	/* The decoded copies, in yet another order. */
	shuffle(decoded, n);
	st = fold(decoded, n);
	if (!same_view(ref, st)) {
		printf("# decoded copies diverged\n");
		ok = false;
	}
	record_state_free(st);

	/* A store that drops dominated versions as it goes rebuilds the same state. */
	shuffle(order, norder);
	st = record_state_new(record_id);
	for (size_t i = 0; i < norder; i++) {
		bool dup = false;
		record_state_apply(st, order[i]);
		for (size_t k = 0; k < nkept; k++)
			dup |= kept[k] == order[i];
		if (!dup && !record_state_dominated(st, order[i]))
			kept[nkept++] = order[i];
		for (size_t k = 0; k < nkept;)
			if (record_state_dominated(st, kept[k]))
				kept[k] = kept[--nkept];
			else
				k++;
	}
	record_state_free(st);
	shuffle(kept, nkept);
	st = fold(kept, nkept);
	if (!same_view(ref, st)) {
		printf("# rebuilt from %zu of %zu undominated versions diverged\n", nkept, n);
		ok = false;
	}
	record_state_free(st);

	/* Applying a prefix and the rest equals applying all (no hidden order). */
	size_t cut = pick(n + 1);
	st = fold(set, cut);
	for (size_t i = n; i > cut; i--)
		record_state_apply(st, set[i - 1]);
	if (!same_view(ref, st)) {
		printf("# reversed tail diverged\n");
		ok = false;
	}
	record_state_free(st);

	record_state_free(ref);
	for (size_t i = 0; i < n; i++) {
		record_version_free(set[i]);
		record_version_free(decoded[i]);
	}
	return ok;
}

static void test_merge_properties(void)
{
	uint64_t base_seed = 0x5eed0001;
	const char *env = getenv("PKS_TEST_SEED");
	size_t rounds = 3000, failures = 0;

	setup();
	if (env != NULL)
		base_seed = strtoull(env, NULL, 0);
	for (size_t i = 0; i < rounds && failures < 5; i++) {
		uint64_t seed = base_seed + i;
		if (!property_round(seed)) {
			CHECK_FAIL_AT("merge property failed: seed 0x%" PRIx64
				      " (rerun: PKS_TEST_SEED=0x%" PRIx64 ")",
				      seed, seed);
			failures++;
		}
	}
}

/* Distinct states must have distinct digests (the digest is not constant). */
static void test_digest_sensitivity(void)
{
	struct record_version *c = make_create(0, 1, hlc_make(T0, 0), 0);
	struct record_version *vs[] = {
	    make_update(0, 2, RECORD_FIELD_NOTES, "a", 5),
	    make_update(0, 2, RECORD_FIELD_NOTES, "b", 5),
	    make_update(1, 2, RECORD_FIELD_NOTES, "a", 5),
	    make_update(0, 2, RECORD_FIELD_NOTES, "a", 6),
	    make_update(0, 2, RECORD_FIELD_DISPLAY_NAME, "a", 5),
	    make_simple(RECORD_OP_DELETE, 0, 2, 5),
	    make_simple(RECORD_OP_DELETE, 1, 2, 5),
	    make_simple(RECORD_OP_PURGE, 0, 2, 5),
	};
	uint8_t d[8][32];
	size_t n = sizeof(vs) / sizeof(vs[0]);

	setup();
	for (size_t i = 0; i < n; i++) {
		struct record_state *st = record_state_new(record_id);
		CHECK_OK(record_state_apply(st, c));
		CHECK_OK(record_state_apply(st, vs[i]));
		digest_of(st, d[i]);
		record_state_free(st);
	}
	for (size_t i = 0; i < n; i++)
		for (size_t k = i + 1; k < n; k++)
			if (memcmp(d[i], d[k], 32) == 0)
				CHECK_FAIL_AT("digests %zu and %zu collide", i, k);
	for (size_t i = 0; i < n; i++)
		record_version_free(vs[i]);
	record_version_free(c);
}

CHECK_MAIN({"/record/id-derive", test_id_derive}, {"/record/device-id", test_device_id},
	   {"/record/codec-roundtrip", test_codec_roundtrip}, {"/record/validate", test_validate},
	   {"/record/limits", test_limits}, {"/record/noncanonical", test_noncanonical},
	   {"/record/decode-values", test_decode_values}, {"/record/seal-open", test_seal_open},
	   {"/record/seal-mismatch", test_seal_mismatch}, {"/record/merge-basic", test_merge_basic},
	   {"/record/merge-fields", test_merge_fields}, {"/record/merge-trash", test_merge_trash},
	   {"/record/merge-purge", test_merge_purge},
	   {"/record/merge-create-conflict", test_merge_create_conflict},
	   {"/record/merge-out-of-order", test_merge_out_of_order},
	   {"/record/merge-properties", test_merge_properties},
	   {"/record/digest-sensitivity", test_digest_sensitivity})
