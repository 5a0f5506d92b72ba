/*
 * Unit tests for proto/cpace: full exchanges in both modes with seeded
 * randomness, what must change the keys, refusal of bad peer messages and
 * points, limits and the single-use rule. The interop suite checks the
 * draft's vectors; these tests check behaviour around them.
 */
#include <sodium.h>
#include <string.h>

#include "common/err.h"
#include "proto/cpace.h"
#include "tests/check.h"

/* Deterministic randomness: each call draws from H(seed, call number). */
struct seeded_rng {
	uint32_t seed;
	uint32_t calls;
};

static void seeded_rng_fill(void *user_data, uint8_t *buf, size_t n)
{
	struct seeded_rng *s = user_data;
	uint8_t in[8], key[randombytes_SEEDBYTES];

	memcpy(in, &s->seed, 4);
	memcpy(in + 4, &s->calls, 4);
	s->calls++;
	crypto_generichash(key, sizeof(key), in, sizeof(in), NULL, 0);
	randombytes_buf_deterministic(buf, n, key);
}

static void report_seed(uint32_t seed)
{
	if (check_failed_current)
		printf("# seed %u\n", seed);
}

struct party_spec {
	enum cpace_role role;
	const char *code;
	const char *ci;
	const char *sid;
	const char *ad;
};

static int party_new(struct cpace **out, const struct party_spec *p, struct seeded_rng *rng)
{
	struct cpace_config cfg = {
	    .role = p->role,
	    .prs = (const uint8_t *)p->code,
	    .prs_len = strlen(p->code),
	    .ci = (const uint8_t *)p->ci,
	    .ci_len = p->ci ? strlen(p->ci) : 0,
	    .sid = (const uint8_t *)p->sid,
	    .sid_len = p->sid ? strlen(p->sid) : 0,
	    .ad = (const uint8_t *)p->ad,
	    .ad_len = p->ad ? strlen(p->ad) : 0,
	    .rng = seeded_rng_fill,
	    .rng_user_data = rng,
	};

	return cpace_new(out, &cfg);
}

/*
 * Runs a whole exchange between a and b with seeds seed and seed + 1.
 * Returns PKS_OK when both derives succeeded and writes both ISKs.
 */
static int exchange(const struct party_spec *a, const struct party_spec *b, uint32_t seed,
		    uint8_t isk_a[CPACE_ISK_BYTES], uint8_t isk_b[CPACE_ISK_BYTES])
{
	struct seeded_rng rng_a = {seed, 0}, rng_b = {seed + 1, 0};
	struct cpace *ca = NULL, *cb = NULL;
	uint8_t msg_a[CPACE_MESSAGE_MAX], msg_b[CPACE_MESSAGE_MAX];
	size_t len_a = 0, len_b = 0;
	int r;

	if ((r = party_new(&ca, a, &rng_a)) != PKS_OK || (r = party_new(&cb, b, &rng_b)) != PKS_OK)
		goto out;
	if ((r = cpace_message(ca, msg_a, sizeof(msg_a), &len_a)) != PKS_OK ||
	    (r = cpace_message(cb, msg_b, sizeof(msg_b), &len_b)) != PKS_OK)
		goto out;
	if ((r = cpace_derive(ca, msg_b, len_b, isk_a)) != PKS_OK ||
	    (r = cpace_derive(cb, msg_a, len_a, isk_b)) != PKS_OK)
		goto out;
out:
	cpace_free(ca);
	cpace_free(cb);
	return r;
}

static const struct party_spec sponsor = {CPACE_ROLE_INITIATOR, "12345678", "sponsor|joiner",
					  "session-0123456789", "sponsor-ad"};
static const struct party_spec joiner = {CPACE_ROLE_RESPONDER, "12345678", "sponsor|joiner",
					 "session-0123456789", "joiner-ad"};

static void test_same_code_ir(void)
{
	uint8_t isk_a[CPACE_ISK_BYTES], isk_b[CPACE_ISK_BYTES];
	uint32_t seed = 1;

	for (; seed < 20; seed += 2) {
		CHECK_OK(exchange(&sponsor, &joiner, seed, isk_a, isk_b));
		CHECK_MEM_EQ(isk_a, isk_b, sizeof(isk_a));
		CHECK(!sodium_is_zero(isk_a, sizeof(isk_a)));
		report_seed(seed);
	}
}

static void test_same_code_sy(void)
{
	struct party_spec a = sponsor, b = joiner;
	uint8_t isk_a[CPACE_ISK_BYTES], isk_b[CPACE_ISK_BYTES];
	uint8_t isk_ir_a[CPACE_ISK_BYTES], isk_ir_b[CPACE_ISK_BYTES];
	uint32_t seed = 100;

	a.role = CPACE_ROLE_SYMMETRIC;
	b.role = CPACE_ROLE_SYMMETRIC;
	CHECK_OK(exchange(&a, &b, seed, isk_a, isk_b));
	CHECK_MEM_EQ(isk_a, isk_b, sizeof(isk_a));
	/* Same scalars in IR mode: a different transcript, so a different key. */
	CHECK_OK(exchange(&sponsor, &joiner, seed, isk_ir_a, isk_ir_b));
	CHECK(memcmp(isk_a, isk_ir_a, sizeof(isk_a)) != 0);
	report_seed(seed);
}

static void test_wrong_code(void)
{
	struct party_spec b = joiner;
	uint8_t isk_a[CPACE_ISK_BYTES], isk_b[CPACE_ISK_BYTES];
	uint32_t seed = 200;

	b.code = "12345679";
	CHECK_OK(exchange(&sponsor, &b, seed, isk_a, isk_b));
	CHECK(memcmp(isk_a, isk_b, sizeof(isk_a)) != 0);
	b.role = CPACE_ROLE_SYMMETRIC;
	b.code = "87654321";
	{
		struct party_spec a = sponsor;
		a.role = CPACE_ROLE_SYMMETRIC;
		CHECK_OK(exchange(&a, &b, seed, isk_a, isk_b));
		CHECK(memcmp(isk_a, isk_b, sizeof(isk_a)) != 0);
	}
	report_seed(seed);
}

/* Each of sid, CI, AD and the role pairing changes the key for the same seeds and code. */
static void test_binding(void)
{
	uint8_t base_a[CPACE_ISK_BYTES], base_b[CPACE_ISK_BYTES];
	uint8_t isk_a[CPACE_ISK_BYTES], isk_b[CPACE_ISK_BYTES];
	struct party_spec a, b;
	uint32_t seed = 300;

	CHECK_OK(exchange(&sponsor, &joiner, seed, base_a, base_b));
	CHECK_MEM_EQ(base_a, base_b, sizeof(base_a));

	/* Both sides on another sid agree with each other but not with the base. */
	a = sponsor;
	b = joiner;
	a.sid = b.sid = "session-other-sid";
	CHECK_OK(exchange(&a, &b, seed, isk_a, isk_b));
	CHECK_MEM_EQ(isk_a, isk_b, sizeof(isk_a));
	CHECK(memcmp(isk_a, base_a, sizeof(isk_a)) != 0);

	/* Sides that disagree on the sid disagree on the key. */
	a = sponsor;
	a.sid = "session-other-sid";
	CHECK_OK(exchange(&a, &joiner, seed, isk_a, isk_b));
	CHECK(memcmp(isk_a, isk_b, sizeof(isk_a)) != 0);

	/* Empty sid still works and differs. */
	a = sponsor;
	b = joiner;
	a.sid = b.sid = NULL;
	CHECK_OK(exchange(&a, &b, seed, isk_a, isk_b));
	CHECK_MEM_EQ(isk_a, isk_b, sizeof(isk_a));
	CHECK(memcmp(isk_a, base_a, sizeof(isk_a)) != 0);

	/* CI mismatch. */
	b = joiner;
	b.ci = "joiner|sponsor";
	CHECK_OK(exchange(&sponsor, &b, seed, isk_a, isk_b));
	CHECK(memcmp(isk_a, isk_b, sizeof(isk_a)) != 0);

	/* Another AD is in the transcript: both agree, on a new key. */
	a = sponsor;
	a.ad = "sponsor-ad-2";
	CHECK_OK(exchange(&a, &joiner, seed, isk_a, isk_b));
	CHECK_MEM_EQ(isk_a, isk_b, sizeof(isk_a));
	CHECK(memcmp(isk_a, base_a, sizeof(isk_a)) != 0);

	/* Two initiators order the transcript differently. */
	b = joiner;
	b.role = CPACE_ROLE_INITIATOR;
	CHECK_OK(exchange(&sponsor, &b, seed, isk_a, isk_b));
	CHECK(memcmp(isk_a, isk_b, sizeof(isk_a)) != 0);
	report_seed(seed);
}

/* A man in the middle who swaps the peer's AD changes the receiver's key. */
static void test_tampered_ad(void)
{
	struct seeded_rng rng_a = {400, 0}, rng_b = {401, 0};
	struct cpace *ca = NULL, *cb = NULL;
	uint8_t msg_a[CPACE_MESSAGE_MAX], msg_b[CPACE_MESSAGE_MAX];
	uint8_t isk_a[CPACE_ISK_BYTES], isk_b[CPACE_ISK_BYTES];
	size_t len_a = 0, len_b = 0;

	CHECK_OK(party_new(&ca, &sponsor, &rng_a));
	CHECK_OK(party_new(&cb, &joiner, &rng_b));
	if (ca == NULL || cb == NULL)
		goto out;
	CHECK_OK(cpace_message(ca, msg_a, sizeof(msg_a), &len_a));
	CHECK_OK(cpace_message(cb, msg_b, sizeof(msg_b), &len_b));
	msg_a[len_a - 1] ^= 1;
	CHECK_OK(cpace_derive(ca, msg_b, len_b, isk_a));
	CHECK_OK(cpace_derive(cb, msg_a, len_a, isk_b));
	CHECK(memcmp(isk_a, isk_b, sizeof(isk_a)) != 0);
out:
	cpace_free(ca);
	cpace_free(cb);
	report_seed(400);
}

static void test_sid_output(void)
{
	struct seeded_rng rng_a = {500, 0}, rng_b = {501, 0};
	struct cpace *ca = NULL, *cb = NULL;
	uint8_t msg_a[CPACE_MESSAGE_MAX], msg_b[CPACE_MESSAGE_MAX];
	uint8_t isk_a[CPACE_ISK_BYTES], isk_b[CPACE_ISK_BYTES];
	uint8_t sid_a[CPACE_SID_OUTPUT_BYTES], sid_b[CPACE_SID_OUTPUT_BYTES];
	size_t len_a = 0, len_b = 0;

	CHECK_OK(party_new(&ca, &sponsor, &rng_a));
	CHECK_OK(party_new(&cb, &joiner, &rng_b));
	if (ca == NULL || cb == NULL)
		goto out;
	CHECK_EQ(cpace_sid_output(ca, sid_a), PKS_ERR_STATE);
	CHECK_OK(cpace_message(ca, msg_a, sizeof(msg_a), &len_a));
	CHECK_OK(cpace_message(cb, msg_b, sizeof(msg_b), &len_b));
	CHECK_OK(cpace_derive(ca, msg_b, len_b, isk_a));
	CHECK_OK(cpace_derive(cb, msg_a, len_a, isk_b));
	CHECK_OK(cpace_sid_output(ca, sid_a));
	CHECK_OK(cpace_sid_output(cb, sid_b));
	CHECK_MEM_EQ(sid_a, sid_b, sizeof(sid_a));
	CHECK(memcmp(sid_a, isk_a, sizeof(sid_a)) != 0);
out:
	cpace_free(ca);
	cpace_free(cb);
	report_seed(500);
}

static void test_deterministic(void)
{
	struct seeded_rng r1 = {600, 0}, r2 = {600, 0}, r3 = {601, 0};
	struct cpace *c1 = NULL, *c2 = NULL, *c3 = NULL;
	uint8_t y1[CPACE_POINT_BYTES], y2[CPACE_POINT_BYTES], y3[CPACE_POINT_BYTES];
	uint8_t msg[CPACE_MESSAGE_MAX];
	size_t len = 0;

	CHECK_OK(party_new(&c1, &sponsor, &r1));
	CHECK_OK(party_new(&c2, &sponsor, &r2));
	CHECK_OK(party_new(&c3, &sponsor, &r3));
	if (c1 == NULL || c2 == NULL || c3 == NULL)
		goto out;
	cpace_public_share(c1, y1);
	cpace_public_share(c2, y2);
	cpace_public_share(c3, y3);
	CHECK_MEM_EQ(y1, y2, sizeof(y1));
	CHECK(memcmp(y1, y3, sizeof(y1)) != 0);
	CHECK_EQ(crypto_core_ristretto255_is_valid_point(y1), 1);
	/* The message is lv(Y) || lv(AD). */
	CHECK_OK(cpace_message(c1, msg, sizeof(msg), &len));
	CHECK_EQ(len, 1 + CPACE_POINT_BYTES + 1 + strlen(sponsor.ad));
	CHECK_EQ(msg[0], CPACE_POINT_BYTES);
	CHECK_MEM_EQ(msg + 1, y1, sizeof(y1));
	CHECK_EQ(msg[1 + CPACE_POINT_BYTES], strlen(sponsor.ad));
	CHECK_MEM_EQ(msg + 2 + CPACE_POINT_BYTES, sponsor.ad, strlen(sponsor.ad));
	CHECK_EQ(cpace_message(c1, msg, len - 1, &len), PKS_ERR_TOO_LARGE);
out:
	cpace_free(c1);
	cpace_free(c2);
	cpace_free(c3);
	report_seed(600);
}

/* Derives against one crafted peer message with a fresh responder and returns the result. */
static int derive_against(const uint8_t *msg, size_t len)
{
	struct seeded_rng rng = {700, 0};
	struct cpace *c = NULL;
	uint8_t isk[CPACE_ISK_BYTES];
	int r = party_new(&c, &joiner, &rng);

	if (r == PKS_OK)
		r = cpace_derive(c, msg, len, isk);
	cpace_free(c);
	return r;
}

/* A fixed valid point, so the tests need no randomness of libsodium's. */
static void fixed_point(uint8_t p[CPACE_POINT_BYTES], uint8_t tag)
{
	uint8_t h[crypto_core_ristretto255_HASHBYTES];

	memset(h, tag, sizeof(h));
	crypto_core_ristretto255_from_hash(p, h);
}

static void test_bad_points(void)
{
	uint8_t msg[2 + CPACE_POINT_BYTES] = {0};
	uint8_t scalar[CPACE_SCALAR_BYTES] = {7};
	uint8_t out[CPACE_POINT_BYTES];
	uint8_t base[CPACE_POINT_BYTES];

	msg[0] = CPACE_POINT_BYTES;
	/* All zeros: the identity's encoding; it decodes, but K would be the identity. */
	CHECK_EQ(derive_against(msg, sizeof(msg)), PKS_ERR_CRYPTO);
	CHECK_EQ(cpace_scalar_mult_vfy(out, scalar, msg + 1), PKS_ERR_CRYPTO);
	/* Not a canonical ristretto255 encoding (odd "negative" field element). */
	msg[1] = 1;
	CHECK_EQ(derive_against(msg, sizeof(msg)), PKS_ERR_MALFORMED);
	CHECK_EQ(cpace_scalar_mult_vfy(out, scalar, msg + 1), PKS_ERR_MALFORMED);
	/* All ones: out of range. */
	memset(msg + 1, 0xff, CPACE_POINT_BYTES);
	CHECK_EQ(derive_against(msg, sizeof(msg)), PKS_ERR_MALFORMED);
	/* A valid point works through the same path. */
	fixed_point(base, 1);
	memcpy(msg + 1, base, sizeof(base));
	CHECK_OK(derive_against(msg, sizeof(msg)));
	CHECK_OK(cpace_scalar_mult_vfy(out, scalar, base));
}

static void test_bad_messages(void)
{
	uint8_t good[CPACE_MESSAGE_MAX + 8];
	uint8_t msg[CPACE_MESSAGE_MAX + 8];
	uint8_t y[CPACE_POINT_BYTES];
	size_t n;

	fixed_point(y, 2);
	good[0] = CPACE_POINT_BYTES;
	memcpy(good + 1, y, sizeof(y));
	good[33] = 2;
	good[34] = 'h';
	good[35] = 'i';
	n = 36;
	CHECK_OK(derive_against(good, n));

	CHECK_EQ(derive_against(NULL, 0), PKS_ERR_MALFORMED);
	CHECK_EQ(derive_against(good, 0), PKS_ERR_MALFORMED);
	/* Every truncation is refused. */
	for (size_t i = 1; i < n; i++) {
		int r = derive_against(good, i);
		if (r == PKS_OK)
			CHECK_FAIL_AT("truncated to %zu accepted", i);
	}
	/* A trailing byte. */
	memcpy(msg, good, n);
	msg[n] = 0;
	CHECK_EQ(derive_against(msg, n + 1), PKS_ERR_MALFORMED);
	/* Y of 31 and 33 bytes. */
	memcpy(msg, good, n);
	msg[0] = 31;
	CHECK_EQ(derive_against(msg, n), PKS_ERR_MALFORMED);
	msg[0] = 33;
	CHECK_EQ(derive_against(msg, n), PKS_ERR_MALFORMED);
	/* Non-minimal LEB128 for 32: 0xa0 0x00. */
	msg[0] = 0xa0;
	msg[1] = 0x00;
	memcpy(msg + 2, good + 1, n - 1);
	CHECK_EQ(derive_against(msg, n + 1), PKS_ERR_MALFORMED);
	/* Non-minimal AD length: 0x82 0x00. */
	memcpy(msg, good, 33);
	msg[33] = 0x82;
	msg[34] = 0x00;
	msg[35] = 'h';
	msg[36] = 'i';
	CHECK_EQ(derive_against(msg, 37), PKS_ERR_MALFORMED);
	/* An AD length over the limit (1025 = 0x81 0x08). */
	memcpy(msg, good, 33);
	msg[33] = 0x81;
	msg[34] = 0x08;
	memset(msg + 35, 'a', CPACE_FIELD_MAX + 1);
	CHECK_EQ(derive_against(msg, 35 + CPACE_FIELD_MAX + 1), PKS_ERR_TOO_LARGE);
	/* The same claim in a short message is refused on the length alone. */
	CHECK_EQ(derive_against(msg, 40), PKS_ERR_TOO_LARGE);
	/* A length that never ends. */
	memcpy(msg, good, 33);
	memset(msg + 33, 0xff, 8);
	CHECK_EQ(derive_against(msg, 41), PKS_ERR_TOO_LARGE);
	/* AD at exactly the limit is fine (0x80 0x08 = 1024). */
	memcpy(msg, good, 33);
	msg[33] = 0x80;
	msg[34] = 0x08;
	memset(msg + 35, 'a', CPACE_FIELD_MAX);
	CHECK_EQ(35 + CPACE_FIELD_MAX, CPACE_MESSAGE_MAX);
	CHECK_OK(derive_against(msg, CPACE_MESSAGE_MAX));
	CHECK_EQ(derive_against(msg, CPACE_MESSAGE_MAX + 1), PKS_ERR_TOO_LARGE);
}

static void test_limits(void)
{
	static uint8_t big[CPACE_FIELD_MAX + 1];
	static const uint8_t zero_scalar[CPACE_SCALAR_BYTES];
	/* The group order L reduces to zero. */
	static const uint8_t order[CPACE_SCALAR_BYTES] = {
	    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
	    0xa2, 0xde, 0xf9, 0xde, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};
	static const uint8_t one[CPACE_SCALAR_BYTES] = {1};
	struct seeded_rng rng = {800, 0};
	struct cpace_config base = {
	    .role = CPACE_ROLE_INITIATOR,
	    .prs = big,
	    .prs_len = CPACE_FIELD_MAX,
	    .ci = big,
	    .ci_len = CPACE_FIELD_MAX,
	    .sid = big,
	    .sid_len = CPACE_FIELD_MAX,
	    .ad = big,
	    .ad_len = CPACE_FIELD_MAX,
	    .rng = seeded_rng_fill,
	    .rng_user_data = &rng,
	};
	static char sentinel_storage;
	/* *out must stay untouched on failure. */
	struct cpace *sentinel = (struct cpace *)&sentinel_storage;
	struct cpace *c = sentinel;
	struct cpace_config cfg;
	uint8_t msg[CPACE_MESSAGE_MAX];
	size_t len = 0;

	memset(big, 'x', sizeof(big));
	/* Every field at its limit works. */
	CHECK_OK(cpace_new(&c, &base));
	if (c != sentinel) {
		CHECK_OK(cpace_message(c, msg, sizeof(msg), &len));
		CHECK_EQ(len, CPACE_MESSAGE_MAX);
		cpace_free(c);
	}
	c = sentinel;

	cfg = base;
	cfg.prs_len = 0;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	cfg = base;
	cfg.prs = NULL;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	cfg = base;
	cfg.prs_len = CPACE_FIELD_MAX + 1;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	cfg = base;
	cfg.ci_len = CPACE_FIELD_MAX + 1;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	cfg = base;
	cfg.sid_len = CPACE_FIELD_MAX + 1;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	cfg = base;
	cfg.ad_len = CPACE_FIELD_MAX + 1;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	cfg = base;
	cfg.ad = NULL;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	cfg = base;
	cfg.role = (enum cpace_role)7;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	/* Exactly one source of the scalar. */
	cfg = base;
	cfg.rng = NULL;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	cfg = base;
	cfg.scalar = one;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	cfg.rng = NULL;
	cfg.scalar = zero_scalar;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	cfg.scalar = order;
	CHECK_EQ(cpace_new(&c, &cfg), PKS_ERR_INVALID);
	CHECK(c == sentinel);
	cfg.scalar = one;
	CHECK_OK(cpace_new(&c, &cfg));
	if (c != sentinel)
		cpace_free(c);
	cpace_free(NULL);

	/* The building block has the same limits, but allows an empty PRS. */
	CHECK_EQ(cpace_calculate_generator(msg, big, CPACE_FIELD_MAX + 1, NULL, 0, NULL, 0),
		 PKS_ERR_INVALID);
	CHECK_EQ(cpace_calculate_generator(msg, NULL, 5, NULL, 0, NULL, 0), PKS_ERR_INVALID);
	CHECK_OK(cpace_calculate_generator(msg, NULL, 0, NULL, 0, NULL, 0));
}

/* A PRS length around the zero-padding boundary changes the generator but never fails. */
static void test_generator_padding(void)
{
	static uint8_t prs[200];
	uint8_t g_prev[CPACE_POINT_BYTES] = {0}, g[CPACE_POINT_BYTES];

	memset(prs, 'p', sizeof(prs));
	for (size_t n = 100; n < sizeof(prs); n++) {
		CHECK_OK(cpace_calculate_generator(g, prs, n, NULL, 0, NULL, 0));
		CHECK(memcmp(g, g_prev, sizeof(g)) != 0);
		CHECK_EQ(crypto_core_ristretto255_is_valid_point(g), 1);
		memcpy(g_prev, g, sizeof(g));
	}
	/* CI and sid are separate fields: moving a byte between them changes g. */
	CHECK_OK(cpace_calculate_generator(g_prev, prs, 8, (const uint8_t *)"ab", 2,
					   (const uint8_t *)"c", 1));
	CHECK_OK(cpace_calculate_generator(g, prs, 8, (const uint8_t *)"a", 1,
					   (const uint8_t *)"bc", 2));
	CHECK(memcmp(g, g_prev, sizeof(g)) != 0);
}

static void test_single_use(void)
{
	struct seeded_rng rng_a = {900, 0}, rng_b = {901, 0};
	struct cpace *ca = NULL, *cb = NULL;
	uint8_t msg_a[CPACE_MESSAGE_MAX], msg_b[CPACE_MESSAGE_MAX];
	uint8_t isk[CPACE_ISK_BYTES], sid[CPACE_SID_OUTPUT_BYTES];
	size_t len_a = 0, len_b = 0;

	CHECK_OK(party_new(&ca, &sponsor, &rng_a));
	CHECK_OK(party_new(&cb, &joiner, &rng_b));
	if (ca == NULL || cb == NULL)
		goto out;
	CHECK_OK(cpace_message(ca, msg_a, sizeof(msg_a), &len_a));
	CHECK_OK(cpace_message(cb, msg_b, sizeof(msg_b), &len_b));
	CHECK_OK(cpace_derive(ca, msg_b, len_b, isk));
	CHECK_EQ(cpace_derive(ca, msg_b, len_b, isk), PKS_ERR_STATE);
	/* A failed derive also ends the run: no second guess with the same scalar. */
	CHECK_EQ(cpace_derive(cb, msg_a, 3, isk), PKS_ERR_MALFORMED);
	CHECK_EQ(cpace_derive(cb, msg_a, len_a, isk), PKS_ERR_STATE);
	CHECK_EQ(cpace_sid_output(cb, sid), PKS_ERR_STATE);
out:
	cpace_free(ca);
	cpace_free(cb);
	report_seed(900);
}

CHECK_MAIN({"/cpace/same-code-ir", test_same_code_ir}, {"/cpace/same-code-sy", test_same_code_sy},
	   {"/cpace/wrong-code", test_wrong_code}, {"/cpace/binding", test_binding},
	   {"/cpace/tampered-ad", test_tampered_ad}, {"/cpace/sid-output", test_sid_output},
	   {"/cpace/deterministic", test_deterministic}, {"/cpace/bad-points", test_bad_points},
	   {"/cpace/bad-messages", test_bad_messages}, {"/cpace/limits", test_limits},
	   {"/cpace/generator-padding", test_generator_padding},
	   {"/cpace/single-use", test_single_use})
