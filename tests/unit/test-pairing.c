/*
 * Unit tests for agent/pairing: the JOIN, KEYS, OPS, END and FAIL messages of
 * the pairing channel, device names, the 8-digit code and the QR payload.
 *
 * With PKSYNC_PAIRING_CORPUS_OUT=<dir> set, /pairing/seeds also writes its
 * seed messages there (the fuzz corpus under tests/fuzz/corpus/pairing/ was
 * made that way); without it the seeds are still built and checked.
 */
#include <errno.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/pairing.h"
#include "agent/vault.h"
#include "common/err.h"
#include "tests/check.h"

#define T_OP_MAX 32768
#define T_KEYS_FIXED (2 + VAULT_ID_LEN + 32 + 32 + 2)

static void setup(void)
{
	static bool done;

	if (done)
		return;
	if (sodium_init() < 0)
		abort();
	done = true;
}

/* The hash the fuzz harness uses for JOIN: bytes 0, 1, ..., 63. */
static void fixed_hash(uint8_t hash[PAIRING_HASH_LEN])
{
	for (size_t i = 0; i < PAIRING_HASH_LEN; i++)
		hash[i] = (uint8_t)i;
}

/*
 * A JOIN built by hand from the format in pairing.h, signed by id over
 * hash, with any name bytes (valid or not). Returns the length.
 */
static size_t build_join(const struct vault_identity *id, const uint8_t *name, size_t name_len,
			 const uint8_t hash[PAIRING_HASH_LEN], uint8_t *out)
{
	static const char ctx[] = "pksync join v1";
	crypto_sign_state st;
	size_t off = 0;

	crypto_sign_init(&st);
	crypto_sign_update(&st, (const uint8_t *)ctx, sizeof(ctx) - 1);
	crypto_sign_update(&st, hash, PAIRING_HASH_LEN);
	crypto_sign_update(&st, id->sign_pk, 32);
	crypto_sign_update(&st, id->dh_pk, 32);
	crypto_sign_update(&st, name, name_len);
	out[off++] = 'J';
	out[off++] = 1;
	memcpy(out + off, id->sign_pk, 32);
	off += 32;
	memcpy(out + off, id->dh_pk, 32);
	off += 32;
	out[off++] = (uint8_t)name_len;
	memcpy(out + off, name, name_len);
	off += name_len;
	crypto_sign_final_create(&st, out + off, NULL, id->sign_sk);
	return off + 64;
}

static struct vault_identity *new_identity(void)
{
	struct vault_identity *id = NULL;

	setup();
	if (vault_identity_new(&id) != PKS_OK)
		abort();
	return id;
}

static void test_join_roundtrip(void)
{
	struct vault_identity *id = new_identity();
	uint8_t hash[PAIRING_HASH_LEN], other[PAIRING_HASH_LEN], by_hand[512];
	uint8_t *msg = NULL;
	size_t len = 0, hand_len;
	struct pairing_join j;
	const char *name = "Alice's phone";

	randombytes_buf(hash, sizeof(hash));
	CHECK_OK(pairing_join_encode(id, name, hash, &msg, &len));
	CHECK_EQ(len, 2 + 32 + 32 + 1 + strlen(name) + 64);
	/* The wire format is the one pairing.h documents (Ed25519 is deterministic). */
	hand_len = build_join(id, (const uint8_t *)name, strlen(name), hash, by_hand);
	CHECK_EQ(len, hand_len);
	if (len == hand_len)
		CHECK_MEM_EQ(msg, by_hand, len);

	memset(&j, 0xa5, sizeof(j));
	CHECK_OK(pairing_join_decode(msg, len, hash, &j));
	CHECK_MEM_EQ(j.sign_pk, id->sign_pk, 32);
	CHECK_MEM_EQ(j.dh_pk, id->dh_pk, 32);
	CHECK_STR_EQ(j.name, name);

	/* Another channel's hash: the signature does not hold. */
	memcpy(other, hash, sizeof(other));
	other[PAIRING_HASH_LEN - 1] ^= 1;
	memset(&j, 0xa5, sizeof(j));
	CHECK_EQ(pairing_join_decode(msg, len, other, &j), PKS_ERR_AUTH);
	CHECK_EQ(j.name[0], (char)0xa5); /* out untouched on failure */
	randombytes_buf(other, sizeof(other));
	CHECK_EQ(pairing_join_decode(msg, len, other, &j), PKS_ERR_AUTH);

	/* Another device's key over the same bytes: AUTH. */
	{
		struct vault_identity *id2 = new_identity();
		uint8_t forged[512];
		memcpy(forged, msg, len);
		memcpy(forged + 2, id2->sign_pk, 32);
		CHECK_EQ(pairing_join_decode(forged, len, hash, &j), PKS_ERR_AUTH);
		vault_identity_free(id2);
	}
	free(msg);
	vault_identity_free(id);
}

static void test_join_flips(void)
{
	struct vault_identity *id = new_identity();
	uint8_t hash[PAIRING_HASH_LEN], *msg = NULL, buf[512];
	size_t len = 0, accepted = 0, auth = 0, malformed = 0;
	struct pairing_join j;

	randombytes_buf(hash, sizeof(hash));
	CHECK_OK(pairing_join_encode(id, "Bob's laptop \xc3\xa9", hash, &msg, &len));
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit <= 8; bit++) {
			int r;
			memcpy(buf, msg, len);
			buf[i] ^= bit == 8 ? 0xff : (uint8_t)(1u << bit);
			r = pairing_join_decode(buf, len, hash, &j);
			if (r == PKS_ERR_AUTH)
				auth++;
			else if (r == PKS_ERR_MALFORMED)
				malformed++;
			else {
				accepted++;
				CHECK_FAIL_AT("flip at %zu (bit %d) gave %d", i, bit, r);
			}
		}
	}
	CHECK_EQ(accepted, 0);
	/* Both refusals are reached: the header and the signature. */
	CHECK(auth > 0);
	CHECK(malformed > 0);
	free(msg);
	vault_identity_free(id);
}

static void test_join_truncated(void)
{
	struct vault_identity *id = new_identity();
	uint8_t hash[PAIRING_HASH_LEN], *msg = NULL, *buf;
	size_t len = 0;
	struct pairing_join j;

	randombytes_buf(hash, sizeof(hash));
	CHECK_OK(pairing_join_encode(id, "desk", hash, &msg, &len));
	for (size_t n = 0; n < len; n++) {
		/* An exact-size copy so the sanitizers see any overread. */
		buf = malloc(n ? n : 1);
		memcpy(buf, msg, n);
		int r = pairing_join_decode(buf, n, hash, &j);
		if (r != PKS_ERR_MALFORMED)
			CHECK_FAIL_AT("truncated to %zu: %d", n, r);
		free(buf);
	}
	buf = malloc(len + 1);
	memcpy(buf, msg, len);
	buf[len] = 0;
	CHECK_EQ(pairing_join_decode(buf, len + 1, hash, &j), PKS_ERR_MALFORMED);
	buf[len] = 'x';
	CHECK_EQ(pairing_join_decode(buf, len + 1, hash, &j), PKS_ERR_MALFORMED);
	free(buf);
	/* Wrong type and version bytes. */
	msg[0] = 'K';
	CHECK_EQ(pairing_join_decode(msg, len, hash, &j), PKS_ERR_MALFORMED);
	msg[0] = 'J';
	msg[1] = 2;
	CHECK_EQ(pairing_join_decode(msg, len, hash, &j), PKS_ERR_MALFORMED);
	msg[1] = 1;
	CHECK_OK(pairing_join_decode(msg, len, hash, &j));
	free(msg);
	vault_identity_free(id);
}

/* Names every way a device name can be wrong, and some right ones. */
static const struct {
	const char *s;
	size_t len;
	bool ok;
} names[] = {
    {"a", 1, true},
    {"Alice's phone", 13, true},
    {"\xc3\xa9t\xc3\xa9", 5, true},       /* été */
    {"\xe2\x82\xac", 3, true},            /* € */
    {"\xef\xbf\xbd", 3, true},            /* U+FFFD */
    {"\xf0\x9f\x93\xb1 phone", 10, true}, /* U+1F4F1 */
    {"\xf4\x8f\xbf\xbf", 4, true},        /* U+10FFFF */
    {"\xc2\xa0", 2, true},                /* U+00A0, first after C1 */
    {"\xed\x9f\xbf", 3, true},            /* U+D7FF */
    {"\xee\x80\x80", 3, true},            /* U+E000 */
    {"", 0, false},                       /* empty */
    {"tab\there", 8, false},              /* C0 control */
    {"new\nline", 8, false},              /* C0 control */
    {"esc\x1b[2J", 7, false},             /* C0 control */
    {"del\x7f", 4, false},                /* DEL */
    {"nul\0x", 5, false},                 /* NUL inside */
    {"\xc2\x80", 2, false},               /* U+0080, C1 control */
    {"\xc2\x85", 2, false},               /* U+0085 NEL, C1 control */
    {"csi\xc2\x9b"
     "2J",
     7, false},                         /* U+009B CSI, C1 control */
    {"\xc2\x9f", 2, false},             /* U+009F, C1 control */
    {"\xc0\xaf", 2, false},             /* overlong '/' */
    {"\xc1\xbf", 2, false},             /* overlong */
    {"\xe0\x80\xaf", 3, false},         /* overlong 3 */
    {"\xe0\x9f\xbf", 3, false},         /* overlong 3, highest */
    {"\xf0\x80\x80\xaf", 4, false},     /* overlong 4 */
    {"\xf0\x8f\xbf\xbf", 4, false},     /* overlong 4, highest */
    {"\xed\xa0\x80", 3, false},         /* U+D800 surrogate */
    {"\xed\xbf\xbf", 3, false},         /* U+DFFF surrogate */
    {"\xf4\x90\x80\x80", 4, false},     /* U+110000 */
    {"\xf5\x80\x80\x80", 4, false},     /* lead 0xF5 */
    {"\xf8\x88\x80\x80\x80", 5, false}, /* 5-byte form */
    {"\xfe", 1, false},                 /* 0xFE */
    {"\xff", 1, false},                 /* 0xFF */
    {"\x80", 1, false},                 /* lone continuation */
    {"ab\xbf", 3, false},               /* lone continuation */
    {"\xc3", 1, false},                 /* truncated 2 */
    {"x\xe2\x82", 3, false},            /* truncated 3 */
    {"\xf0\x9f\x93", 3, false},         /* truncated 4 */
    {"\xe2\x82x", 3, false},            /* bad continuation */
    {"\xc3\xc3\xa9", 3, false},         /* lead then lead */
};

static void test_name_valid(void)
{
	char big[VAULT_NAME_MAX + 2];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (pairing_name_valid(names[i].s, names[i].len) != names[i].ok)
			CHECK_FAIL_AT("name %zu (len %zu): expected %s", i, names[i].len,
				      names[i].ok ? "valid" : "refused");
	}
	memset(big, 'x', sizeof(big));
	CHECK(pairing_name_valid(big, VAULT_NAME_MAX));
	CHECK(!pairing_name_valid(big, VAULT_NAME_MAX + 1));
	/* 64 bytes of 2-byte characters; and one that would end past 64. */
	for (size_t i = 0; i + 1 < VAULT_NAME_MAX; i += 2)
		big[i] = (char)0xc3, big[i + 1] = (char)0xa9;
	CHECK(pairing_name_valid(big, VAULT_NAME_MAX));
	CHECK(!pairing_name_valid(big, VAULT_NAME_MAX - 1)); /* cut inside the last one */
}

/* Reference UTF-8 encoder, for the exhaustive check below. */
static size_t ref_encode(uint32_t cp, uint8_t out[4])
{
	if (cp < 0x80) {
		out[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (uint8_t)(0xc0 | (cp >> 6));
		out[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (uint8_t)(0xe0 | (cp >> 12));
		out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (uint8_t)(0xf0 | (cp >> 18));
	out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

static bool ref_char_ok(uint32_t cp)
{
	return cp >= 0x20 && !(cp >= 0x7f && cp <= 0x9f) && !(cp >= 0xd800 && cp <= 0xdfff) &&
	       cp <= 0x10ffff;
}

/*
 * Reference validator: split by the lead byte's length, decode loosely,
 * and accept only if the reference encoder gives back the same bytes (so
 * overlong forms fail by construction, not by a range check).
 */
static bool ref_name_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	if (len == 0 || len > VAULT_NAME_MAX)
		return false;
	while (i < len) {
		uint8_t c = s[i], enc[4];
		size_t n;
		uint32_t cp;
		if (c < 0x80)
			n = 1, cp = c;
		else if ((c & 0xe0) == 0xc0)
			n = 2, cp = c & 0x1f;
		else if ((c & 0xf0) == 0xe0)
			n = 3, cp = c & 0x0f;
		else if ((c & 0xf8) == 0xf0)
			n = 4, cp = c & 0x07;
		else
			return false;
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3fu);
		}
		if (!ref_char_ok(cp) || ref_encode(cp, enc) != n || memcmp(enc, s + i, n) != 0)
			return false;
		i += n;
	}
	return true;
}

/*
 * Every code point alone; every string of 1, 2 and 3 bytes; every 4-byte
 * string with a lead 0xF0..0xF7 and three continuation bytes.
 */
static void test_name_exhaustive(void)
{
	uint8_t s[4];
	size_t bad = 0;

	for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
		size_t n = ref_encode(cp, s);
		bool want = ref_char_ok(cp);
		if (pairing_name_valid((const char *)s, n) != want && bad++ < 5)
			CHECK_FAIL_AT("U+%04X: expected %s", cp, want ? "valid" : "refused");
	}
	for (uint32_t v = 0; v < (1u << 24); v++) {
		s[0] = (uint8_t)(v >> 16), s[1] = (uint8_t)(v >> 8), s[2] = (uint8_t)v;
		for (size_t n = 1; n <= 3; n++) {
			/* Strings of length n are covered once: when the unused bytes are 0. */
			if ((n == 1 && (v & 0xffff) != 0) || (n == 2 && (v & 0xff) != 0))
				continue;
			bool want = ref_name_valid(s, n);
			if (pairing_name_valid((const char *)s, n) != want && bad++ < 5)
				CHECK_FAIL_AT("%zu bytes %02x %02x %02x: expected %s", n, s[0],
					      s[1], s[2], want ? "valid" : "refused");
		}
	}
	for (uint32_t v = 0; v < 8u * 64 * 64 * 64; v++) {
		s[0] = (uint8_t)(0xf0 | (v >> 18));
		s[1] = (uint8_t)(0x80 | ((v >> 12) & 0x3f));
		s[2] = (uint8_t)(0x80 | ((v >> 6) & 0x3f));
		s[3] = (uint8_t)(0x80 | (v & 0x3f));
		bool want = ref_name_valid(s, 4);
		if (pairing_name_valid((const char *)s, 4) != want && bad++ < 5)
			CHECK_FAIL_AT("4 bytes %02x %02x %02x %02x: expected %s", s[0], s[1], s[2],
				      s[3], want ? "valid" : "refused");
	}
	CHECK_EQ(bad, 0);
}

static void test_join_names(void)
{
	struct vault_identity *id = new_identity();
	uint8_t hash[PAIRING_HASH_LEN], buf[600], *msg = NULL;
	char name[VAULT_NAME_MAX + 2], lenient[300];
	size_t len = 0, n;
	struct pairing_join j;

	randombytes_buf(hash, sizeof(hash));
	/* 1 and 64 bytes: accepted both ways. */
	memset(name, 'n', sizeof(name));
	for (size_t l = 1; l <= VAULT_NAME_MAX; l += VAULT_NAME_MAX - 1) {
		name[l] = '\0';
		CHECK_OK(pairing_join_encode(id, name, hash, &msg, &len));
		CHECK_OK(pairing_join_decode(msg, len, hash, &j));
		CHECK_STR_EQ(j.name, name);
		CHECK_EQ(strlen(j.name), l);
		free(msg);
		msg = NULL;
		name[l] = 'n';
	}
	/* 0 and 65 bytes: the encoder refuses, and so does the decoder when signed. */
	CHECK_EQ(pairing_join_encode(id, "", hash, &msg, &len), PKS_ERR_INVALID);
	name[VAULT_NAME_MAX + 1] = '\0';
	CHECK_EQ(pairing_join_encode(id, name, hash, &msg, &len), PKS_ERR_INVALID);
	n = build_join(id, (const uint8_t *)"", 0, hash, buf);
	CHECK_EQ(pairing_join_decode(buf, n, hash, &j), PKS_ERR_MALFORMED);
	n = build_join(id, (const uint8_t *)name, VAULT_NAME_MAX + 1, hash, buf);
	CHECK_EQ(pairing_join_decode(buf, n, hash, &j), PKS_ERR_MALFORMED);
	memset(lenient, 'z', sizeof(lenient));
	n = build_join(id, (const uint8_t *)lenient, 255, hash, buf);
	CHECK_EQ(pairing_join_decode(buf, n, hash, &j), PKS_ERR_MALFORMED);

	/* Every name of the table, through the encoder and a hand-signed message. */
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int want_enc = names[i].ok ? PKS_OK : PKS_ERR_INVALID;
		int want_dec = names[i].ok ? PKS_OK : PKS_ERR_MALFORMED;
		int r;
		n = build_join(id, (const uint8_t *)names[i].s, names[i].len, hash, buf);
		memset(&j, 0, sizeof(j));
		r = pairing_join_decode(buf, n, hash, &j);
		if (r != want_dec)
			CHECK_FAIL_AT("decode name %zu: %d, expected %d", i, r, want_dec);
		if (r == PKS_OK) {
			CHECK_EQ(strlen(j.name), names[i].len);
			CHECK_MEM_EQ(j.name, names[i].s, names[i].len);
		}
		/* The encoder takes a C string: skip names with a NUL inside. */
		if (memchr(names[i].s, '\0', names[i].len) != NULL)
			continue;
		r = pairing_join_encode(id, names[i].s, hash, &msg, &len);
		if (r != want_enc)
			CHECK_FAIL_AT("encode name %zu: %d, expected %d", i, r, want_enc);
		if (r == PKS_OK) {
			CHECK_EQ(len, n);
			if (len == n)
				CHECK_MEM_EQ(msg, buf, n);
			free(msg);
			msg = NULL;
		}
	}
	vault_identity_free(id);
}

static struct vault_join_bundle *new_bundle(size_t n_epochs)
{
	struct vault_join_bundle *b = calloc(1, sizeof(*b));

	if (b == NULL)
		abort();
	randombytes_buf(b->vault_id, sizeof(b->vault_id));
	randombytes_buf(b->network_key, sizeof(b->network_key));
	randombytes_buf(b->id_key, sizeof(b->id_key));
	b->n_epochs = n_epochs;
	for (size_t i = 0; i < n_epochs; i++) {
		/* Distinct, non-zero, not in order, some over 2^24. */
		b->epochs[i].epoch = (uint32_t)(n_epochs - i) * 0x01000193u;
		randombytes_buf(b->epochs[i].key, 32);
	}
	return b;
}

static void check_bundle_keys_eq(const struct vault_join_bundle *a,
				 const struct vault_join_bundle *b)
{
	CHECK_MEM_EQ(a->vault_id, b->vault_id, VAULT_ID_LEN);
	CHECK_MEM_EQ(a->network_key, b->network_key, 32);
	CHECK_MEM_EQ(a->id_key, b->id_key, 32);
	CHECK_EQ(a->n_epochs, b->n_epochs);
	for (size_t i = 0; i < a->n_epochs && i < b->n_epochs; i++) {
		CHECK_EQ(a->epochs[i].epoch, b->epochs[i].epoch);
		CHECK_MEM_EQ(a->epochs[i].key, b->epochs[i].key, 32);
	}
}

static void test_keys_roundtrip(void)
{
	static const size_t counts[] = {1, 2, VAULT_EPOCHS_MAX};

	setup();
	for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
		struct vault_join_bundle *b = new_bundle(counts[c]);
		struct vault_join_bundle *d = calloc(1, sizeof(*d));
		uint8_t *msg = NULL, *again = NULL;
		size_t len = 0, again_len = 0, n = counts[c];

		memset(d, 0x5a, sizeof(*d));
		CHECK_OK(pairing_keys_encode(b, &msg, &len));
		CHECK_EQ(len, T_KEYS_FIXED + 36 * n);
		if (msg == NULL)
			continue;
		/* Layout: type, version, ids and keys, big-endian count, entries. */
		CHECK_EQ(msg[0], 'K');
		CHECK_EQ(msg[1], 1);
		CHECK_MEM_EQ(msg + 2, b->vault_id, VAULT_ID_LEN);
		CHECK_EQ((msg[82] << 8) | msg[83], n);
		CHECK_EQ(((uint32_t)msg[84] << 24) | ((uint32_t)msg[85] << 16) |
			     ((uint32_t)msg[86] << 8) | msg[87],
			 b->epochs[0].epoch);
		CHECK_OK(pairing_keys_decode(msg, len, d));
		check_bundle_keys_eq(b, d);
		/* Decoded keys encode to the same bytes. */
		CHECK_OK(pairing_keys_encode(d, &again, &again_len));
		CHECK_EQ(again_len, len);
		if (again != NULL && again_len == len)
			CHECK_MEM_EQ(again, msg, len);
		pairing_secret_free(again);
		pairing_secret_free(msg);
		free(b);
		free(d);
	}
	pairing_secret_free(NULL);
}

/* A KEYS message with count field n and the given entries (epoch numbers). */
static size_t build_keys(uint16_t n, const uint32_t *epochs, size_t entries, uint8_t *out)
{
	size_t off = 0;

	out[off++] = 'K';
	out[off++] = 1;
	memset(out + off, 0x11, VAULT_ID_LEN + 64);
	off += VAULT_ID_LEN + 64;
	out[off++] = (uint8_t)(n >> 8);
	out[off++] = (uint8_t)n;
	for (size_t i = 0; i < entries; i++) {
		out[off++] = (uint8_t)(epochs[i] >> 24);
		out[off++] = (uint8_t)(epochs[i] >> 16);
		out[off++] = (uint8_t)(epochs[i] >> 8);
		out[off++] = (uint8_t)epochs[i];
		memset(out + off, (int)(0x20 + i), 32);
		off += 32;
	}
	return off;
}

static void test_keys_invalid(void)
{
	static uint32_t epochs[VAULT_EPOCHS_MAX + 2];
	static uint8_t buf[T_KEYS_FIXED + 36 * (VAULT_EPOCHS_MAX + 2)];
	struct vault_join_bundle *d = calloc(1, sizeof(*d));
	struct vault_join_bundle *b;
	uint8_t *msg = NULL;
	size_t len = 0, n;

	setup();
	for (size_t i = 0; i < sizeof(epochs) / sizeof(epochs[0]); i++)
		epochs[i] = (uint32_t)i + 1;
	/* The hand-built form is accepted, so the refusals below are for the one change. */
	n = build_keys(3, epochs, 3, buf);
	CHECK_OK(pairing_keys_decode(buf, n, d));
	CHECK_EQ(d->n_epochs, 3);
	CHECK_EQ(d->epochs[2].epoch, 3);
	n = build_keys(VAULT_EPOCHS_MAX, epochs, VAULT_EPOCHS_MAX, buf);
	CHECK_OK(pairing_keys_decode(buf, n, d));
	/* n = 0, n = 257 (with 257 entries). */
	n = build_keys(0, epochs, 0, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	n = build_keys(VAULT_EPOCHS_MAX + 1, epochs, VAULT_EPOCHS_MAX + 1, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	n = build_keys(0xffff, epochs, VAULT_EPOCHS_MAX + 1, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	/* Duplicate epochs, adjacent and apart. */
	epochs[1] = 1;
	n = build_keys(3, epochs, 3, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	epochs[1] = 2;
	epochs[2] = 1;
	n = build_keys(3, epochs, 3, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	epochs[2] = 3;
	epochs[VAULT_EPOCHS_MAX - 1] = 7;
	n = build_keys(VAULT_EPOCHS_MAX, epochs, VAULT_EPOCHS_MAX, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	epochs[VAULT_EPOCHS_MAX - 1] = VAULT_EPOCHS_MAX;
	/* Epoch 0, first and last. */
	epochs[0] = 0;
	n = build_keys(3, epochs, 3, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	epochs[0] = 1;
	epochs[2] = 0;
	n = build_keys(3, epochs, 3, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	epochs[2] = 3;
	/* Count and length disagree: fewer entries, more, a stray byte. */
	n = build_keys(3, epochs, 2, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	n = build_keys(3, epochs, 4, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	n = build_keys(3, epochs, 3, buf);
	buf[n] = 0;
	CHECK_EQ(pairing_keys_decode(buf, n + 1, d), PKS_ERR_MALFORMED);
	CHECK_EQ(pairing_keys_decode(buf, n - 1, d), PKS_ERR_MALFORMED);
	/* Every truncation; wrong type and version. */
	for (size_t l = 0; l < n; l++) {
		uint8_t *cut = malloc(l ? l : 1);
		memcpy(cut, buf, l);
		if (pairing_keys_decode(cut, l, d) != PKS_ERR_MALFORMED)
			CHECK_FAIL_AT("KEYS truncated to %zu accepted", l);
		free(cut);
	}
	buf[0] = 'J';
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	buf[0] = 'K';
	buf[1] = 0;
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	buf[1] = 1;
	CHECK_OK(pairing_keys_decode(buf, n, d));

	/* The encoder refuses what the decoder would. */
	b = new_bundle(0);
	CHECK_EQ(pairing_keys_encode(b, &msg, &len), PKS_ERR_INVALID);
	b->n_epochs = VAULT_EPOCHS_MAX + 1;
	CHECK_EQ(pairing_keys_encode(b, &msg, &len), PKS_ERR_INVALID);
	free(b);
	free(d);
}

/* An OPS message with count field n and ops of the given lengths (bytes 'a' + i). */
static size_t build_ops(uint16_t n, const size_t *lens, size_t k, uint8_t *out)
{
	size_t off = 0;

	out[off++] = 'O';
	out[off++] = (uint8_t)(n >> 8);
	out[off++] = (uint8_t)n;
	for (size_t i = 0; i < k; i++) {
		out[off++] = (uint8_t)(lens[i] >> 8);
		out[off++] = (uint8_t)lens[i];
		memset(out + off, (int)('a' + i % 26), lens[i]);
		off += lens[i];
	}
	return off;
}

static void test_ops(void)
{
	static uint8_t buf[PAIRING_MSG_MAX + 64];
	size_t lens[PAIRING_OPS_PER_MSG + 1];
	struct vault_blob ops[PAIRING_OPS_PER_MSG + 1];
	size_t n, got;

	for (size_t i = 0; i < PAIRING_OPS_PER_MSG + 1; i++)
		lens[i] = 1 + i * 7;
	/* Valid: one op of 1 byte, three ops, the per-message maximum. */
	n = build_ops(1, lens, 1, buf);
	got = 99;
	CHECK_OK(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got));
	CHECK_EQ(got, 1);
	CHECK(ops[0].data == buf + 5);
	CHECK_EQ(ops[0].len, 1);
	n = build_ops(3, lens, 3, buf);
	CHECK_OK(pairing_ops_decode(buf, n, ops, 3, &got));
	CHECK_EQ(got, 3);
	CHECK(ops[2].data == buf + 3 + 2 + 1 + 2 + 8 + 2);
	CHECK_EQ(ops[2].len, 15);
	CHECK_EQ(ops[2].data[0], 'c');
	CHECK_EQ(ops[2].data[14], 'c');
	n = build_ops(PAIRING_OPS_PER_MSG, lens, PAIRING_OPS_PER_MSG, buf);
	CHECK_OK(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got));
	CHECK_EQ(got, PAIRING_OPS_PER_MSG);
	CHECK_EQ(ops[PAIRING_OPS_PER_MSG - 1].len, lens[PAIRING_OPS_PER_MSG - 1]);
	CHECK(ops[PAIRING_OPS_PER_MSG - 1].data + ops[PAIRING_OPS_PER_MSG - 1].len == buf + n);
	/* The largest op, and one byte more. */
	lens[0] = T_OP_MAX;
	n = build_ops(1, lens, 1, buf);
	CHECK_OK(pairing_ops_decode(buf, n, ops, 1, &got));
	CHECK_EQ(ops[0].len, T_OP_MAX);
	lens[0] = T_OP_MAX + 1;
	n = build_ops(1, lens, 1, buf);
	CHECK_EQ(pairing_ops_decode(buf, n, ops, 1, &got), PKS_ERR_MALFORMED);
	lens[0] = 1;

	got = 99;
	/* Count 0; count over the limit; count over the caller's room. */
	n = build_ops(0, lens, 0, buf);
	CHECK_EQ(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	n = build_ops(PAIRING_OPS_PER_MSG + 1, lens, PAIRING_OPS_PER_MSG + 1, buf);
	CHECK_EQ(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG + 1, &got), PKS_ERR_MALFORMED);
	n = build_ops(3, lens, 3, buf);
	CHECK_EQ(pairing_ops_decode(buf, n, ops, 2, &got), PKS_ERR_MALFORMED);
	/* Op length 0, first and last. */
	lens[0] = 0;
	n = build_ops(2, lens, 2, buf);
	CHECK_EQ(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	lens[0] = 1;
	lens[1] = 0;
	n = build_ops(2, lens, 2, buf);
	CHECK_EQ(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	lens[1] = 8;
	/* Op length beyond the message; fewer ops than counted; more. */
	n = build_ops(2, lens, 2, buf);
	buf[3 + 2 + 1 + 1] = 9; /* second op claims 9 bytes, 8 follow */
	CHECK_EQ(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	buf[3 + 2 + 1] = 0xff; /* and 0xff09 */
	CHECK_EQ(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	n = build_ops(3, lens, 2, buf);
	CHECK_EQ(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	n = build_ops(2, lens, 3, buf);
	CHECK_EQ(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	/* Trailing bytes. */
	n = build_ops(2, lens, 2, buf);
	buf[n] = 0;
	CHECK_EQ(pairing_ops_decode(buf, n + 1, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	buf[n + 1] = 0;
	CHECK_EQ(pairing_ops_decode(buf, n + 2, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	/* Every truncation; wrong type. */
	for (size_t l = 0; l < n; l++) {
		uint8_t *cut = malloc(l ? l : 1);
		memcpy(cut, buf, l);
		if (pairing_ops_decode(cut, l, ops, PAIRING_OPS_PER_MSG, &got) != PKS_ERR_MALFORMED)
			CHECK_FAIL_AT("OPS truncated to %zu accepted", l);
		free(cut);
	}
	buf[0] = 'E';
	CHECK_EQ(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	CHECK_EQ(got, 99); /* never written on failure */
	buf[0] = 'O';
	CHECK_OK(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got));
	CHECK_EQ(got, 2);
}

static void test_end(void)
{
	uint8_t m[7] = {'E', 0xde, 0xad, 0xbe, 0xef, 0, 0};
	uint32_t total = 7;

	CHECK_OK(pairing_end_decode(m, 5, &total));
	CHECK_EQ(total, 0xdeadbeefu);
	m[1] = 0, m[2] = 0, m[3] = 1, m[4] = 2;
	CHECK_OK(pairing_end_decode(m, 5, &total));
	CHECK_EQ(total, 258);
	m[4] = 0, m[3] = 0;
	CHECK_OK(pairing_end_decode(m, 5, &total));
	CHECK_EQ(total, 0);
	for (size_t l = 0; l < 5; l++)
		CHECK_EQ(pairing_end_decode(m, l, &total), PKS_ERR_MALFORMED);
	CHECK_EQ(pairing_end_decode(m, 6, &total), PKS_ERR_MALFORMED);
	CHECK_EQ(pairing_end_decode(m, 7, &total), PKS_ERR_MALFORMED);
	m[0] = 'F';
	CHECK_EQ(pairing_end_decode(m, 5, &total), PKS_ERR_MALFORMED);
}

static int fail_decode_str(const char *reason, size_t reason_len, char *out, size_t cap)
{
	uint8_t m[PAIRING_REASON_MAX + 16];

	m[0] = 'F';
	memcpy(m + 1, reason, reason_len);
	return pairing_fail_decode(m, reason_len + 1, out, cap);
}

static void test_fail(void)
{
	char out[PAIRING_REASON_MAX + 1], long_reason[PAIRING_REASON_MAX + 2];
	char roomy[PAIRING_REASON_MAX + 16];
	const char *r = "The code was wrong.";
	static const char bad[] = {'\0', '\t',       '\n',       '\r',      0x1b,
				   0x7f, (char)0x80, (char)0xc3, (char)0xff};

	CHECK_OK(fail_decode_str(r, strlen(r), out, sizeof(out)));
	CHECK_STR_EQ(out, r);
	CHECK_OK(fail_decode_str("x", 1, out, sizeof(out)));
	CHECK_STR_EQ(out, "x");
	CHECK_OK(fail_decode_str(" ~", 2, out, sizeof(out)));
	/* Exactly 200 bytes, and 201. */
	memset(long_reason, 'w', sizeof(long_reason));
	CHECK_OK(fail_decode_str(long_reason, PAIRING_REASON_MAX, out, sizeof(out)));
	CHECK_EQ(strlen(out), PAIRING_REASON_MAX);
	CHECK_EQ(fail_decode_str(long_reason, PAIRING_REASON_MAX + 1, out, sizeof(out)),
		 PKS_ERR_MALFORMED);
	/* 201 bytes are refused for their length, not only for the caller's room. */
	CHECK_EQ(fail_decode_str(long_reason, PAIRING_REASON_MAX + 1, roomy, sizeof(roomy)),
		 PKS_ERR_MALFORMED);
	/* Empty reason; a bare or empty message; wrong type. */
	CHECK_EQ(fail_decode_str("", 0, out, sizeof(out)), PKS_ERR_MALFORMED);
	CHECK_EQ(pairing_fail_decode((const uint8_t *)"", 0, out, sizeof(out)), PKS_ERR_MALFORMED);
	CHECK_EQ(pairing_fail_decode((const uint8_t *)"Ewrong", 6, out, sizeof(out)),
		 PKS_ERR_MALFORMED);
	/* Control characters and non-ASCII bytes, anywhere. */
	for (size_t i = 0; i < sizeof(bad); i++) {
		char s[8] = "abc";
		s[1] = bad[i];
		if (fail_decode_str(s, 3, out, sizeof(out)) != PKS_ERR_MALFORMED)
			CHECK_FAIL_AT("FAIL with byte %02x accepted", (unsigned char)bad[i]);
		s[0] = bad[i];
		s[1] = 'b';
		if (fail_decode_str(s, 3, out, sizeof(out)) != PKS_ERR_MALFORMED)
			CHECK_FAIL_AT("FAIL starting with byte %02x accepted",
				      (unsigned char)bad[i]);
	}
	/* The caller's room: reason + NUL fits exactly, one less does not. */
	memset(out, '#', sizeof(out));
	CHECK_OK(fail_decode_str("abcd", 4, out, 5));
	CHECK_STR_EQ(out, "abcd");
	memset(out, '#', sizeof(out));
	CHECK_EQ(fail_decode_str("abcd", 4, out, 4), PKS_ERR_MALFORMED);
	CHECK_EQ(out[0], '#');
}

static void test_code_parse(void)
{
	static const struct {
		const char *in, *out;
	} ok[] = {
	    {"12345678", "12345678"}, {"1234 5678", "12345678"}, {"1234-5678", "12345678"},
	    {"00000000", "00000000"}, {"9876-0001", "98760001"},
	};
	static const char *const bad[] = {
	    "",
	    "1234567",
	    "123456789",
	    "1234-567",
	    "1234-56789",
	    "1234a678",
	    "abcdefgh",
	    "1234--5678",
	    "1234 -5678",
	    "12-34-5678",
	    "123-45678",
	    "12345-678",
	    "-12345678",
	    "12345678-",
	    " 12345678",
	    "12345678 ",
	    "1234_5678",
	    "1234\t5678",
	    "1234.5678",
	    "1234\n5678",
	    "1234567\xd9",
	    "+1234567",
	    "1 2 3 4 5 6 7 8",
	    "\xef\xbc\x91\xef\xbc\x92\xef\xbc\x93\xef\xbc\x94", /* fullwidth digits */
	    "123456789012345678901234567890",
	};
	char out[PAIRING_CODE_DIGITS + 1];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		memset(out, 'x', sizeof(out));
		CHECK_OK(pairing_parse_code(ok[i].in, out));
		CHECK_STR_EQ(out, ok[i].out);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (pairing_parse_code(bad[i], out) != PKS_ERR_INVALID)
			CHECK_FAIL_AT("code \"%s\" accepted", bad[i]);
}

static void test_code_new(void)
{
	size_t seen[PAIRING_CODE_DIGITS][10], total[10];
	char code[PAIRING_CODE_DIGITS + 1], parsed[PAIRING_CODE_DIGITS + 1];
	size_t bad = 0, same = 0;
	char prev[PAIRING_CODE_DIGITS + 1] = "";

	setup();
	memset(seen, 0, sizeof(seen));
	memset(total, 0, sizeof(total));
	for (int k = 0; k < 1000; k++) {
		memset(code, 'x', sizeof(code));
		pairing_new_code(code);
		if (strlen(code) != PAIRING_CODE_DIGITS ||
		    pairing_parse_code(code, parsed) != PKS_OK || strcmp(code, parsed) != 0) {
			bad++;
			continue;
		}
		for (int i = 0; i < PAIRING_CODE_DIGITS; i++) {
			seen[i][code[i] - '0']++;
			total[code[i] - '0']++;
		}
		if (strcmp(code, prev) == 0)
			same++;
		memcpy(prev, code, sizeof(prev));
	}
	CHECK_EQ(bad, 0);
	CHECK(same < 2);
	/*
	 * Every digit at every position (a miss has probability about 1e-44),
	 * and no digit far from its expected 800 of 8000 (about 7 sigma).
	 */
	for (int i = 0; i < PAIRING_CODE_DIGITS; i++)
		for (int d = 0; d < 10; d++)
			if (seen[i][d] == 0)
				CHECK_FAIL_AT("digit %d never at position %d", d, i);
	for (int d = 0; d < 10; d++)
		if (total[d] < 600 || total[d] > 1000)
			CHECK_FAIL_AT("digit %d drawn %zu times of 8000", d, total[d]);
}

#define T_SECRET "0123456789abcdef0123456789ABCDEF"
#define T_SECRET_LC "0123456789abcdef0123456789abcdef"

static void test_qr_roundtrip(void)
{
	const char *addrs[] = {"192.0.2.10:7000", "[2001:db8::1]:7000", "host.local:1",
			       "10.0.0.1:2", "198.51.100.1:9"};
	char qr[PAIRING_QR_MAX + 1], secret[2 * PAIRING_QR_SECRET_LEN + 1], addr[64];

	/* No address. */
	CHECK_OK(pairing_qr_format(T_SECRET_LC, NULL, 0, qr, sizeof(qr)));
	CHECK_STR_EQ(qr, "pksync1:" T_SECRET_LC);
	memset(addr, 'x', sizeof(addr));
	CHECK_OK(pairing_qr_parse(qr, secret, addr, sizeof(addr)));
	CHECK_STR_EQ(secret, T_SECRET_LC);
	CHECK_STR_EQ(addr, "");
	/* One address. */
	CHECK_OK(pairing_qr_format(T_SECRET_LC, addrs, 1, qr, sizeof(qr)));
	CHECK_STR_EQ(qr, "pksync1:" T_SECRET_LC "@192.0.2.10:7000");
	CHECK_OK(pairing_qr_parse(qr, secret, addr, sizeof(addr)));
	CHECK_STR_EQ(secret, T_SECRET_LC);
	CHECK_STR_EQ(addr, "192.0.2.10:7000");
	/* Four: the first is returned; a fifth is not written. */
	CHECK_OK(pairing_qr_format(T_SECRET_LC, addrs + 1, 4, qr, sizeof(qr)));
	CHECK_OK(pairing_qr_parse(qr, secret, addr, sizeof(addr)));
	CHECK_STR_EQ(addr, "[2001:db8::1]:7000");
	CHECK_OK(pairing_qr_format(T_SECRET_LC, addrs, 5, qr, sizeof(qr)));
	CHECK(strstr(qr, "198.51.100.1") == NULL);
	CHECK_OK(pairing_qr_parse(qr, secret, addr, sizeof(addr)));
	/* Upper case (QR alphanumeric mode) reads back as lower-case hex. */
	CHECK_OK(
	    pairing_qr_parse("PKSYNC1:" T_SECRET "@192.0.2.10:7000", secret, addr, sizeof(addr)));
	CHECK_STR_EQ(secret, T_SECRET_LC);
	/* An address that just fits the caller's room. */
	CHECK_OK(pairing_qr_parse("pksync1:" T_SECRET "@1.2.3.4:5", secret, addr, 10));
	CHECK_STR_EQ(addr, "1.2.3.4:5");
	/* Too small an output buffer for format. */
	CHECK_EQ(pairing_qr_format(T_SECRET_LC, NULL, 0, qr, 40), PKS_ERR_TOO_LARGE);
	CHECK_OK(pairing_qr_format(T_SECRET_LC, NULL, 0, qr, 41));
	CHECK_EQ(pairing_qr_format(T_SECRET_LC, addrs, 1, qr, 41 + 15), PKS_ERR_TOO_LARGE);
	CHECK_OK(pairing_qr_format(T_SECRET_LC, addrs, 1, qr, 41 + 16));
}

static void test_qr_invalid(void)
{
	static const char *const bad[] = {
	    "",
	    "pksync1:",
	    "pksync1",
	    "pksync2:" T_SECRET,
	    "pksync:" T_SECRET,
	    "xpksync1:" T_SECRET,
	    " pksync1:" T_SECRET,
	    "pksync1:0123456789abcdef0123456789abcde",       /* 31 hex */
	    "pksync1:0123456789abcdef0123456789abcdef0",     /* 33 hex */
	    "pksync1:0123456789abcdef0123456789abcdef0@a:1", /* 33 hex, address */
	    "pksync1:0123456789abcdef0123456789abcdeg",      /* non-hex */
	    "pksync1:0123456789abcdef 0123456789abcdef",     /* space inside */
	    "pksync1:0x23456789abcdef0123456789abcdef",      /* 0x */
	    "pksync1:" T_SECRET "@",                         /* empty address */
	    "pksync1:" T_SECRET "@,1.2.3.4:5",               /* empty first address */
	    "pksync1:" T_SECRET "@1.2.3.4:5,",               /* empty second address */
	    "pksync1:" T_SECRET "@1.2.3.4:5,,6.7.8.9:1",     /* empty address inside */
	    "pksync1:" T_SECRET "#1.2.3.4:5",                /* wrong separator */
	    "pksync1:" T_SECRET " @1.2.3.4:5",               /* space */
	    "pksync1:" T_SECRET "@1.2.3.4 :5",               /* space in address */
	    "pksync1:" T_SECRET "@1.2.3.4:5\n",              /* newline */
	    "pksync1:" T_SECRET "@1.2.3.4\t:5",              /* tab */
	    "pksync1:" T_SECRET "@\x1b[2J:5",                /* escape */
	    "pksync1:" T_SECRET "@a\x7f:5",                  /* DEL */
	    "pksync1:" T_SECRET "@h\xc3\xa9:5",              /* non-ASCII */
	    "pksync1:" T_SECRET "@1.2.3.4:5,\x1b[2J:6",      /* escape, second address */
	    "pksync1:" T_SECRET "@1.2.3.4:5,h\xc3\xa9:6",    /* non-ASCII, second address */
	    "pksync1:" T_SECRET "@1.2.3.4:5,a b:6",          /* space, second address */
	    "pksync1:" T_SECRET "@a:1,b:2,c:3,d:4,e:5",      /* five addresses */
	};
	char secret[2 * PAIRING_QR_SECRET_LEN + 1], addr[64], big[PAIRING_QR_MAX + 64];
	size_t off;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (pairing_qr_parse(bad[i], secret, addr, sizeof(addr)) != PKS_ERR_INVALID)
			CHECK_FAIL_AT("QR %zu \"%s\" accepted", i, bad[i]);
	/* Four addresses are fine. */
	CHECK_OK(
	    pairing_qr_parse("pksync1:" T_SECRET "@a:1,b:2,c:3,d:4", secret, addr, sizeof(addr)));
	CHECK_STR_EQ(addr, "a:1");
	/* An address over the caller's room (needs len + 1). */
	CHECK_EQ(pairing_qr_parse("pksync1:" T_SECRET "@1.2.3.4:56", secret, addr, 10),
		 PKS_ERR_INVALID);
	CHECK_EQ(pairing_qr_parse("pksync1:" T_SECRET "@1", secret, addr, 1), PKS_ERR_INVALID);
	CHECK_EQ(pairing_qr_parse("pksync1:" T_SECRET "@1", secret, addr, 0), PKS_ERR_INVALID);
	/* The whole payload over PAIRING_QR_MAX, and exactly at it. */
	off = (size_t)snprintf(big, sizeof(big), "pksync1:" T_SECRET "@");
	memset(big + off, 'h', PAIRING_QR_MAX - off);
	big[PAIRING_QR_MAX] = '\0';
	{
		char *huge_addr = malloc(PAIRING_QR_MAX);
		CHECK_OK(pairing_qr_parse(big, secret, huge_addr, PAIRING_QR_MAX));
		CHECK_EQ(strlen(huge_addr), PAIRING_QR_MAX - off);
		big[PAIRING_QR_MAX] = 'h';
		big[PAIRING_QR_MAX + 1] = '\0';
		CHECK_EQ(pairing_qr_parse(big, secret, huge_addr, PAIRING_QR_MAX), PKS_ERR_INVALID);
		free(huge_addr);
	}
}

/*
 * Seeds for tests/fuzz/corpus/pairing: each is checked against the decoder
 * it targets here, and written out when PKSYNC_PAIRING_CORPUS_OUT is set.
 */
static void seed(const char *dir, const char *name, const void *data, size_t len)
{
	char path[1024];
	FILE *f;

	if (dir == NULL)
		return;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (f == NULL) {
		CHECK_FAIL_AT("cannot write %s: %s", path, strerror(errno));
		return;
	}
	if (len > 0 && fwrite(data, 1, len, f) != len)
		CHECK_FAIL_AT("short write to %s", path);
	if (fclose(f) != 0)
		CHECK_FAIL_AT("cannot close %s", path);
}

static void seed_str(const char *dir, const char *name, const char *s, int want)
{
	char secret[2 * PAIRING_QR_SECRET_LEN + 1], addr[256], code[PAIRING_CODE_DIGITS + 1];
	int r;

	if (strncmp(name, "qr-", 3) == 0)
		r = pairing_qr_parse(s, secret, addr, sizeof(addr));
	else if (strncmp(name, "code-", 5) == 0)
		r = pairing_parse_code(s, code);
	else
		r = pairing_name_valid(s, strlen(s)) ? PKS_OK : PKS_ERR_INVALID;
	if (r != want)
		CHECK_FAIL_AT("seed %s: %d, expected %d", name, r, want);
	seed(dir, name, s, strlen(s));
}

static void test_seeds(void)
{
	const char *dir = getenv("PKSYNC_PAIRING_CORPUS_OUT");
	struct vault_identity *id = new_identity();
	struct vault_join_bundle *b = new_bundle(3), *d = calloc(1, sizeof(*d));
	uint8_t hash[PAIRING_HASH_LEN], other[PAIRING_HASH_LEN], buf[2048], *msg = NULL;
	uint32_t epochs[] = {1, 2, 3, 2};
	size_t lens[] = {5, 1, 12}, n, got;
	struct pairing_join j;
	struct vault_blob ops[PAIRING_OPS_PER_MSG];
	uint32_t total;
	char reason[PAIRING_REASON_MAX + 1];

	fixed_hash(hash);
	memset(other, 0xee, sizeof(other));
	/* JOIN */
	n = build_join(id, (const uint8_t *)"Alice's phone", 13, hash, buf);
	CHECK_OK(pairing_join_decode(buf, n, hash, &j));
	seed(dir, "join-valid", buf, n);
	CHECK_EQ(pairing_join_decode(buf, n - 1, hash, &j), PKS_ERR_MALFORMED);
	seed(dir, "join-truncated", buf, n - 1);
	buf[n] = 0;
	CHECK_EQ(pairing_join_decode(buf, n + 1, hash, &j), PKS_ERR_MALFORMED);
	seed(dir, "join-trailing", buf, n + 1);
	n = build_join(id, (const uint8_t *)"\xf0\x9f\x93\xb1 \xc3\xa9t\xc3\xa9", 10, hash, buf);
	CHECK_OK(pairing_join_decode(buf, n, hash, &j));
	seed(dir, "join-multibyte", buf, n);
	n = build_join(id, (const uint8_t *)"x", 1, other, buf);
	CHECK_EQ(pairing_join_decode(buf, n, hash, &j), PKS_ERR_AUTH);
	seed(dir, "join-other-hash", buf, n);
	n = build_join(id, (const uint8_t *)"bad\x1b[2J", 7, hash, buf);
	CHECK_EQ(pairing_join_decode(buf, n, hash, &j), PKS_ERR_MALFORMED);
	seed(dir, "join-control-name", buf, n);
	n = build_join(id, (const uint8_t *)"\xed\xa0\x80", 3, hash, buf);
	CHECK_EQ(pairing_join_decode(buf, n, hash, &j), PKS_ERR_MALFORMED);
	seed(dir, "join-surrogate-name", buf, n);
	/* KEYS */
	CHECK_OK(pairing_keys_encode(b, &msg, &n));
	if (msg != NULL) {
		CHECK_OK(pairing_keys_decode(msg, n, d));
		seed(dir, "keys-valid-3", msg, n);
		pairing_secret_free(msg);
	}
	b->n_epochs = 1;
	CHECK_OK(pairing_keys_encode(b, &msg, &n));
	if (msg != NULL) {
		seed(dir, "keys-valid-1", msg, n);
		pairing_secret_free(msg);
	}
	n = build_keys(4, epochs, 4, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	seed(dir, "keys-duplicate", buf, n);
	epochs[0] = 0;
	n = build_keys(1, epochs, 1, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	seed(dir, "keys-epoch0", buf, n);
	epochs[0] = 1;
	n = build_keys(0, epochs, 0, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	seed(dir, "keys-n0", buf, n);
	n = build_keys(3, epochs, 2, buf);
	CHECK_EQ(pairing_keys_decode(buf, n, d), PKS_ERR_MALFORMED);
	seed(dir, "keys-short", buf, n);
	/* OPS */
	n = build_ops(3, lens, 3, buf);
	CHECK_OK(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got));
	seed(dir, "ops-valid-3", buf, n);
	n = build_ops(1, lens + 1, 1, buf);
	CHECK_OK(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got));
	seed(dir, "ops-valid-1", buf, n);
	n = build_ops(0, lens, 0, buf);
	CHECK_EQ(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	seed(dir, "ops-count0", buf, n);
	n = build_ops(2, lens, 2, buf);
	buf[3 + 2 + 5 + 1] = 40;
	CHECK_EQ(pairing_ops_decode(buf, n, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	seed(dir, "ops-beyond", buf, n);
	n = build_ops(2, lens, 2, buf);
	buf[n] = 'O';
	CHECK_EQ(pairing_ops_decode(buf, n + 1, ops, PAIRING_OPS_PER_MSG, &got), PKS_ERR_MALFORMED);
	seed(dir, "ops-trailing", buf, n + 1);
	/* END, FAIL */
	CHECK_OK(pairing_end_decode((const uint8_t *)"E\0\0\0\x2a", 5, &total));
	seed(dir, "end-valid", "E\0\0\0\x2a", 5);
	CHECK_EQ(pairing_end_decode((const uint8_t *)"E\0\0\x2a", 4, &total), PKS_ERR_MALFORMED);
	seed(dir, "end-short", "E\0\0\x2a", 4);
	CHECK_OK(pairing_fail_decode((const uint8_t *)"FThe code was wrong.", 20, reason,
				     sizeof(reason)));
	seed(dir, "fail-valid", "FThe code was wrong.", 20);
	CHECK_EQ(pairing_fail_decode((const uint8_t *)"Fbad\nline", 9, reason, sizeof(reason)),
		 PKS_ERR_MALFORMED);
	seed(dir, "fail-control", "Fbad\nline", 9);
	memset(buf, 'r', PAIRING_REASON_MAX + 2);
	buf[0] = 'F';
	CHECK_EQ(pairing_fail_decode(buf, PAIRING_REASON_MAX + 2, reason, sizeof(reason)),
		 PKS_ERR_MALFORMED);
	seed(dir, "fail-long", buf, PAIRING_REASON_MAX + 2);
	/* Codes, QR payloads, names (read as text by the harness). */
	seed_str(dir, "code-valid", "1234-5678", PKS_OK);
	seed_str(dir, "code-bad", "12345-678", PKS_ERR_INVALID);
	seed_str(dir, "qr-valid-0", "pksync1:" T_SECRET_LC, PKS_OK);
	seed_str(dir, "qr-valid-1", "pksync1:" T_SECRET_LC "@192.0.2.10:7000", PKS_OK);
	seed_str(dir, "qr-valid-4", "PKSYNC1:" T_SECRET "@a:1,[2001:db8::1]:2,c:3,d:4", PKS_OK);
	seed_str(dir, "qr-bad-hex", "pksync1:0123456789abcdef0123456789abcdeg@a:1",
		 PKS_ERR_INVALID);
	seed_str(dir, "qr-control", "pksync1:" T_SECRET_LC "@a:1,\x1b[2J:5", PKS_ERR_INVALID);
	seed_str(dir, "name-valid", "Alice's phone \xe2\x9c\x93", PKS_OK);
	seed_str(dir, "name-overlong", "\xc0\xaf", PKS_ERR_INVALID);
	seed_str(dir, "name-c1", "csi\xc2\x9b", PKS_ERR_INVALID);
	seed(dir, "empty", "", 0);

	free(b);
	free(d);
	vault_identity_free(id);
}

CHECK_MAIN(
    {"/pairing/join-roundtrip", test_join_roundtrip}, {"/pairing/join-flips", test_join_flips},
    {"/pairing/join-truncated", test_join_truncated}, {"/pairing/name-valid", test_name_valid},
    {"/pairing/name-exhaustive", test_name_exhaustive}, {"/pairing/join-names", test_join_names},
    {"/pairing/keys-roundtrip", test_keys_roundtrip}, {"/pairing/keys-invalid", test_keys_invalid},
    {"/pairing/ops", test_ops}, {"/pairing/end", test_end}, {"/pairing/fail", test_fail},
    {"/pairing/code-parse", test_code_parse}, {"/pairing/code-new", test_code_new},
    {"/pairing/qr-roundtrip", test_qr_roundtrip}, {"/pairing/qr-invalid", test_qr_invalid},
    {"/pairing/seeds", test_seeds})
