/*
 * Unit tests for proto/noise: round trips over every pattern, psk handling,
 * tampering, limits and the state machine. Randomness is a seeded
 * deterministic stream so a failure reproduces; the seed is printed.
 */
#include <stdbool.h>

#include <sodium.h>

#include "common/err.h"
#include "proto/noise.h"
#include "tests/check.h"

#define TEST_SEED "pksync test-noise seed v1"

struct test_rng {
	uint8_t seed[randombytes_SEEDBYTES];
	uint64_t counter;
};

/* Each call draws from seed || counter, so streams never repeat. */
static void test_rng_fill(void *user_data, uint8_t *buf, size_t n)
{
	struct test_rng *rng = user_data;
	uint8_t block_seed[randombytes_SEEDBYTES];
	crypto_generichash_state st;
	uint8_t ctr[8];

	for (size_t i = 0; i < 8; i++)
		ctr[i] = (uint8_t)(rng->counter >> (8 * i));
	rng->counter++;
	crypto_generichash_init(&st, NULL, 0, sizeof(block_seed));
	crypto_generichash_update(&st, rng->seed, sizeof(rng->seed));
	crypto_generichash_update(&st, ctr, sizeof(ctr));
	crypto_generichash_final(&st, block_seed, sizeof(block_seed));
	randombytes_buf_deterministic(buf, n, block_seed);
}

static void test_rng_init(struct test_rng *rng, const char *label)
{
	crypto_generichash(rng->seed, sizeof(rng->seed), (const uint8_t *)label, strlen(label),
			   (const uint8_t *)TEST_SEED, strlen(TEST_SEED));
	rng->counter = 0;
}

/* Keys for both parties, drawn from the seeded stream. */
struct test_keys {
	uint8_t init_priv[NOISE_KEY_LEN], init_pub[NOISE_KEY_LEN];
	uint8_t resp_priv[NOISE_KEY_LEN], resp_pub[NOISE_KEY_LEN];
	uint8_t psks[4][NOISE_PSK_LEN];
};

static void test_keys_init(struct test_keys *k, struct test_rng *rng)
{
	test_rng_fill(rng, k->init_priv, sizeof(k->init_priv));
	test_rng_fill(rng, k->resp_priv, sizeof(k->resp_priv));
	crypto_scalarmult_base(k->init_pub, k->init_priv);
	crypto_scalarmult_base(k->resp_pub, k->resp_priv);
	for (size_t i = 0; i < 4; i++)
		test_rng_fill(rng, k->psks[i], sizeof(k->psks[i]));
}

/* The pattern's first two capitals (one for a one-way pattern). */
static void test_pattern_letters(const char *pattern, char letters[2])
{
	size_t n = 0;

	letters[0] = letters[1] = '\0';
	for (const char *p = pattern; *p != '\0' && !(*p >= 'a' && *p <= 'z'); p++)
		if (*p >= 'A' && *p <= 'Z' && n < 2)
			letters[n++] = *p;
}

/*
 * Which static keys are pre-messages, from the pattern's letters: in a
 * two-letter pattern K means "known to the peer"; in a one-way pattern the
 * responder's key is always known and the letter describes the initiator.
 */
static void test_pattern_known(const char *pattern, bool *init_known, bool *resp_known)
{
	char letters[2];

	test_pattern_letters(pattern, letters);
	*init_known = letters[0] == 'K';
	*resp_known = letters[1] == '\0' || letters[1] == 'K';
}

/*
 * A configured and started pair for protocol `name` (PATTERN part given
 * separately for the key rules). psk i of the responder is psks[i] xor
 * resp_psk_flip[i] so a test can give it a wrong one.
 */
static int test_pair_new(const char *name, const char *pattern, const struct test_keys *k,
			 struct test_rng *rng, uint8_t resp_psk_flip, struct noise_handshake **init,
			 struct noise_handshake **resp)
{
	struct noise_handshake *i = NULL, *r = NULL;
	bool init_known, resp_known;
	int rc;

	test_pattern_known(pattern, &init_known, &resp_known);
	rc = noise_handshake_new(name, NOISE_ROLE_INITIATOR, &i);
	if (rc == PKS_OK)
		rc = noise_handshake_new(name, NOISE_ROLE_RESPONDER, &r);
	if (rc != PKS_OK)
		goto out;
	static const uint8_t prologue[] = "pksync prologue";
	if ((rc = noise_handshake_set_prologue(i, prologue, sizeof(prologue))) != PKS_OK ||
	    (rc = noise_handshake_set_prologue(r, prologue, sizeof(prologue))) != PKS_OK ||
	    (rc = noise_handshake_set_local_static(i, k->init_priv)) != PKS_OK ||
	    (rc = noise_handshake_set_local_static(r, k->resp_priv)) != PKS_OK ||
	    (rc = noise_handshake_set_rng(i, test_rng_fill, rng)) != PKS_OK ||
	    (rc = noise_handshake_set_rng(r, test_rng_fill, rng)) != PKS_OK)
		goto out;
	if (resp_known && (rc = noise_handshake_set_remote_static(i, k->resp_pub)) != PKS_OK)
		goto out;
	if (init_known && (rc = noise_handshake_set_remote_static(r, k->init_pub)) != PKS_OK)
		goto out;
	for (size_t n = 0; n < noise_handshake_psk_count(i); n++) {
		uint8_t psk[NOISE_PSK_LEN];
		memcpy(psk, k->psks[n], sizeof(psk));
		psk[0] ^= resp_psk_flip;
		if ((rc = noise_handshake_set_psk(i, n, k->psks[n])) != PKS_OK ||
		    (rc = noise_handshake_set_psk(r, n, psk)) != PKS_OK)
			goto out;
	}
	if ((rc = noise_handshake_start(i)) != PKS_OK || (rc = noise_handshake_start(r)) != PKS_OK)
		goto out;
	*init = i;
	*resp = r;
	i = NULL;
	r = NULL;
out:
	noise_handshake_free(i);
	noise_handshake_free(r);
	return rc;
}

/*
 * Drives both sides to SPLIT, each message carrying a distinct payload that
 * the reader must get back. Returns the first error.
 */
static int test_run_handshake(struct noise_handshake *init, struct noise_handshake *resp)
{
	static uint8_t msg[NOISE_MAX_MESSAGE], got[NOISE_MAX_MESSAGE];
	size_t round = 0;

	while (noise_handshake_action(init) != NOISE_ACTION_SPLIT ||
	       noise_handshake_action(resp) != NOISE_ACTION_SPLIT) {
		struct noise_handshake *w, *rd;
		char payload[32];
		size_t len = 0, plen = 0;
		int rc;

		if (noise_handshake_action(init) == NOISE_ACTION_WRITE_MESSAGE) {
			w = init;
			rd = resp;
		} else if (noise_handshake_action(resp) == NOISE_ACTION_WRITE_MESSAGE) {
			w = resp;
			rd = init;
		} else {
			return PKS_ERR_STATE;
		}
		snprintf(payload, sizeof(payload), "payload %zu", round++);
		rc = noise_handshake_write_message(w, (const uint8_t *)payload, strlen(payload),
						   msg, sizeof(msg), &len);
		if (rc != PKS_OK)
			return rc;
		rc = noise_handshake_read_message(rd, msg, len, got, sizeof(got), &plen);
		if (rc != PKS_OK)
			return rc;
		if (plen != strlen(payload) || memcmp(got, payload, plen) != 0)
			return PKS_ERR_INTERNAL;
	}
	return PKS_OK;
}

/* Sends `count` transport messages from a to b and checks each arrives. */
static void test_transport(struct noise_cipher *a, struct noise_cipher *b, size_t count)
{
	uint8_t pt[200], ct[sizeof(pt) + NOISE_TAG_LEN], back[sizeof(pt)];
	static const uint8_t ad[] = "frame header";

	for (size_t i = 0; i < count; i++) {
		size_t len = 0, blen = 0, n = i * 37 % sizeof(pt);
		for (size_t j = 0; j < n; j++)
			pt[j] = (uint8_t)(i + j);
		CHECK_OK(noise_cipher_encrypt(a, ad, sizeof(ad), pt, n, ct, sizeof(ct), &len));
		CHECK_EQ(len, n + NOISE_TAG_LEN);
		CHECK_OK(
		    noise_cipher_decrypt(b, ad, sizeof(ad), ct, len, back, sizeof(back), &blen));
		CHECK_EQ(blen, n);
		CHECK_MEM_EQ(back, pt, n);
	}
}

/* Wraps a case so that a failure names the seed it ran with. */
#define TEST_SEEDED(fn)                                                                            \
	static void fn##_seeded(void)                                                              \
	{                                                                                          \
		fn();                                                                              \
		if (check_failed_current)                                                          \
			printf("# seed \"%s\"\n", TEST_SEED);                                      \
	}

/* A full XXpsk0 session: handshake, identities, hash, traffic both ways. */
static void test_xxpsk0_roundtrip(void)
{
	const char *name = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b";
	struct test_rng rng;
	struct test_keys k;
	struct noise_handshake *i = NULL, *r = NULL;
	struct noise_cipher *is = NULL, *ir = NULL, *rs = NULL, *rr = NULL;
	uint8_t hi[NOISE_MAX_HASH_LEN], hr[NOISE_MAX_HASH_LEN], pub[NOISE_KEY_LEN];
	size_t hi_len = 0, hr_len = 0;

	test_rng_init(&rng, "xxpsk0");
	test_keys_init(&k, &rng);
	CHECK_OK(test_pair_new(name, "XXpsk0", &k, &rng, 0, &i, &r));
	CHECK_EQ(noise_handshake_psk_count(i), 1);
	CHECK_EQ(noise_handshake_action(i), NOISE_ACTION_WRITE_MESSAGE);
	CHECK_EQ(noise_handshake_action(r), NOISE_ACTION_READ_MESSAGE);
	CHECK_OK(test_run_handshake(i, r));

	/* Each side learned the other's static key. */
	CHECK_OK(noise_handshake_remote_static(i, pub));
	CHECK_MEM_EQ(pub, k.resp_pub, sizeof(pub));
	CHECK_OK(noise_handshake_remote_static(r, pub));
	CHECK_MEM_EQ(pub, k.init_pub, sizeof(pub));

	CHECK_OK(noise_handshake_hash(i, hi, sizeof(hi), &hi_len));
	CHECK_OK(noise_handshake_hash(r, hr, sizeof(hr), &hr_len));
	CHECK_EQ(hi_len, 64);
	CHECK_EQ(hr_len, 64);
	CHECK_MEM_EQ(hi, hr, sizeof(hi));

	CHECK_OK(noise_handshake_split(i, &is, &ir));
	CHECK_OK(noise_handshake_split(r, &rs, &rr));
	CHECK(is != NULL && ir != NULL && rs != NULL && rr != NULL);
	CHECK_EQ(noise_handshake_action(i), NOISE_ACTION_COMPLETE);
	/* Still readable after split. */
	CHECK_OK(noise_handshake_remote_static(i, pub));
	CHECK_MEM_EQ(pub, k.resp_pub, sizeof(pub));
	CHECK_OK(noise_handshake_hash(r, hr, sizeof(hr), &hr_len));
	CHECK_MEM_EQ(hi, hr, sizeof(hi));
	if (is != NULL && rr != NULL && rs != NULL && ir != NULL) {
		test_transport(is, rr, 20);
		test_transport(rs, ir, 20);
		/* Interleaved, and the directions use different keys. */
		test_transport(is, rr, 3);
		test_transport(rs, ir, 3);
		uint8_t ct[64], pt[64];
		size_t len = 0, plen = 0;
		CHECK_OK(noise_cipher_encrypt(is, NULL, 0, (const uint8_t *)"x", 1, ct, sizeof(ct),
					      &len));
		CHECK_EQ(noise_cipher_decrypt(ir, NULL, 0, ct, len, pt, sizeof(pt), &plen),
			 PKS_ERR_AUTH);
		CHECK_OK(noise_cipher_decrypt(rr, NULL, 0, ct, len, pt, sizeof(pt), &plen));
		/* Replaying it fails: the nonce has moved on. */
		CHECK_EQ(noise_cipher_decrypt(rr, NULL, 0, ct, len, pt, sizeof(pt), &plen),
			 PKS_ERR_AUTH);
		/* Wrong associated data fails. */
		CHECK_OK(noise_cipher_encrypt(is, (const uint8_t *)"a", 1, (const uint8_t *)"x", 1,
					      ct, sizeof(ct), &len));
		CHECK_EQ(noise_cipher_decrypt(rr, (const uint8_t *)"b", 1, ct, len, pt, sizeof(pt),
					      &plen),
			 PKS_ERR_AUTH);
		/* A failed decrypt does not advance the nonce. */
		CHECK_OK(noise_cipher_decrypt(rr, (const uint8_t *)"a", 1, ct, len, pt, sizeof(pt),
					      &plen));
		CHECK_EQ(noise_cipher_decrypt(rr, NULL, 0, ct, 3, pt, sizeof(pt), &plen),
			 PKS_ERR_TRUNCATED);
	}
	noise_cipher_free(is);
	noise_cipher_free(ir);
	noise_cipher_free(rs);
	noise_cipher_free(rr);
	noise_handshake_free(i);
	noise_handshake_free(r);
}

/*
 * A responder holding another psk (a non-member) cannot read message 1,
 * learns no payload and no identity, and the object is dead afterwards.
 */
static void test_wrong_psk(void)
{
	const char *name = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b";
	struct test_rng rng;
	struct test_keys k;
	struct noise_handshake *i = NULL, *r = NULL;
	uint8_t msg[256], got[256], pub[NOISE_KEY_LEN];
	static const uint8_t secret[] = "hello member";
	size_t len = 0, plen = 12345;

	test_rng_init(&rng, "wrong-psk");
	test_keys_init(&k, &rng);
	CHECK_OK(test_pair_new(name, "XXpsk0", &k, &rng, 0x01, &i, &r));
	CHECK_OK(noise_handshake_write_message(i, secret, sizeof(secret), msg, sizeof(msg), &len));
	CHECK_EQ(len, NOISE_KEY_LEN + sizeof(secret) + NOISE_TAG_LEN);
	memset(got, 0xaa, sizeof(got));
	CHECK_EQ(noise_handshake_read_message(r, msg, len, got, sizeof(got), &plen), PKS_ERR_AUTH);
	CHECK_EQ(plen, 12345);
	/* No plaintext left in the output buffer. */
	for (size_t n = 0; n < sizeof(got); n++)
		CHECK_EQ(got[n], 0);
	CHECK_EQ(noise_handshake_action(r), NOISE_ACTION_FAILED);
	CHECK_EQ(noise_handshake_remote_static(r, pub), PKS_ERR_STATE);
	/* No retry on the same object, even with the same good message. */
	CHECK_EQ(noise_handshake_read_message(r, msg, len, got, sizeof(got), &plen), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_write_message(r, NULL, 0, msg, sizeof(msg), &len), PKS_ERR_STATE);
	noise_handshake_free(i);
	noise_handshake_free(r);

	/* A psk at the end of the second message fails there, for the initiator. */
	test_keys_init(&k, &rng);
	CHECK_OK(test_pair_new("Noise_NNpsk2_25519_ChaChaPoly_SHA256", "NNpsk2", &k, &rng, 0x80, &i,
			       &r));
	CHECK_OK(noise_handshake_write_message(i, NULL, 0, msg, sizeof(msg), &len));
	CHECK_OK(noise_handshake_read_message(r, msg, len, got, sizeof(got), &plen));
	CHECK_OK(noise_handshake_write_message(r, NULL, 0, msg, sizeof(msg), &len));
	CHECK_EQ(noise_handshake_read_message(i, msg, len, got, sizeof(got), &plen), PKS_ERR_AUTH);
	CHECK_EQ(noise_handshake_action(i), NOISE_ACTION_FAILED);
	noise_handshake_free(i);
	noise_handshake_free(r);
}

/*
 * Flips one bit in each byte of each XXpsk0 handshake message in turn: the
 * reader must refuse every one of them.
 */
static void test_bitflip(void)
{
	const char *name = "Noise_XXpsk0_25519_ChaChaPoly_SHA256";
	struct test_rng rng;
	struct test_keys k;
	size_t tried = 0;

	test_rng_init(&rng, "bitflip");
	test_keys_init(&k, &rng);
	for (size_t target = 0; target < 3; target++) {
		for (size_t byte = 0;; byte++) {
			struct noise_handshake *i = NULL, *r = NULL;
			uint8_t msg[512], got[512];
			size_t len = 0, plen = 0;
			bool done = false;
			int rc = PKS_OK;

			CHECK_OK(test_pair_new(name, "XXpsk0", &k, &rng, 0, &i, &r));
			if (i == NULL)
				return;
			for (size_t m = 0; m <= target; m++) {
				struct noise_handshake *w = m % 2 == 0 ? i : r;
				struct noise_handshake *rd = m % 2 == 0 ? r : i;
				CHECK_OK(noise_handshake_write_message(w, (const uint8_t *)"pay", 3,
								       msg, sizeof(msg), &len));
				if (m == target) {
					if (byte >= len) {
						done = true;
						break;
					}
					msg[byte] ^= (uint8_t)(1u << (byte % 8));
				}
				rc = noise_handshake_read_message(rd, msg, len, got, sizeof(got),
								  &plen);
				if (m == target) {
					CHECK(rc == PKS_ERR_AUTH || rc == PKS_ERR_CRYPTO);
					if (rc == PKS_OK)
						printf("# message %zu byte %zu accepted\n", m,
						       byte);
					CHECK_EQ(noise_handshake_action(rd), NOISE_ACTION_FAILED);
					tried++;
				} else {
					CHECK_OK(rc);
				}
			}
			noise_handshake_free(i);
			noise_handshake_free(r);
			if (done)
				break;
		}
	}
	/* 3 messages of 51, 99 and 67 bytes. */
	CHECK_EQ(tried, 51 + 99 + 67);
}

/* Truncated and overlong handshake messages are refused and kill the reader. */
static void test_truncated(void)
{
	const char *name = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b";
	struct test_rng rng;
	struct test_keys k;
	uint8_t msg[256], got[256];
	static uint8_t huge[NOISE_MAX_MESSAGE + 1];

	test_rng_init(&rng, "truncated");
	test_keys_init(&k, &rng);
	for (size_t cut = 0; cut < NOISE_KEY_LEN + NOISE_TAG_LEN; cut++) {
		struct noise_handshake *i = NULL, *r = NULL;
		size_t len = 0, plen = 0;
		CHECK_OK(test_pair_new(name, "XXpsk0", &k, &rng, 0, &i, &r));
		CHECK_OK(noise_handshake_write_message(i, NULL, 0, msg, sizeof(msg), &len));
		CHECK_EQ(len, NOISE_KEY_LEN + NOISE_TAG_LEN);
		CHECK_EQ(noise_handshake_read_message(r, msg, cut, got, sizeof(got), &plen),
			 PKS_ERR_TRUNCATED);
		CHECK_EQ(noise_handshake_action(r), NOISE_ACTION_FAILED);
		noise_handshake_free(i);
		noise_handshake_free(r);
	}
	{
		struct noise_handshake *i = NULL, *r = NULL;
		size_t plen = 0;
		CHECK_OK(test_pair_new(name, "XXpsk0", &k, &rng, 0, &i, &r));
		CHECK_EQ(
		    noise_handshake_read_message(r, huge, sizeof(huge), got, sizeof(got), &plen),
		    PKS_ERR_TOO_LARGE);
		CHECK_EQ(noise_handshake_action(r), NOISE_ACTION_FAILED);
		noise_handshake_free(i);
		noise_handshake_free(r);
	}
}

/* Payloads that would make a message exceed 65535 bytes are refused. */
static void test_oversize(void)
{
	const char *name = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b";
	struct test_rng rng;
	struct test_keys k;
	struct noise_handshake *i = NULL, *r = NULL;
	struct noise_cipher *is = NULL, *ir = NULL, *rs = NULL, *rr = NULL;
	static uint8_t payload[NOISE_MAX_MESSAGE + 1], msg[NOISE_MAX_MESSAGE + 64],
	    got[NOISE_MAX_MESSAGE + 64];
	size_t len = 0, plen = 0;
	/* Message 1 of XXpsk0 is e (32) + payload + tag (16). */
	const size_t max1 = NOISE_MAX_MESSAGE - NOISE_KEY_LEN - NOISE_TAG_LEN;

	test_rng_init(&rng, "oversize");
	test_keys_init(&k, &rng);
	CHECK_OK(test_pair_new(name, "XXpsk0", &k, &rng, 0, &i, &r));
	CHECK_EQ(noise_handshake_write_message(i, payload, max1 + 1, msg, sizeof(msg), &len),
		 PKS_ERR_TOO_LARGE);
	CHECK_EQ(noise_handshake_write_message(i, payload, sizeof(payload), msg, sizeof(msg), &len),
		 PKS_ERR_TOO_LARGE);
	/* Too small an output buffer: refused, and nothing changed. */
	CHECK_EQ(noise_handshake_write_message(i, payload, 10, msg, 57, &len), PKS_ERR_TOO_LARGE);
	CHECK_EQ(noise_handshake_action(i), NOISE_ACTION_WRITE_MESSAGE);
	/* The largest message goes through. */
	CHECK_OK(noise_handshake_write_message(i, payload, max1, msg, sizeof(msg), &len));
	CHECK_EQ(len, NOISE_MAX_MESSAGE);
	/* Too small a payload buffer: refused, nothing changed, retry works. */
	CHECK_EQ(noise_handshake_read_message(r, msg, len, got, max1 - 1, &plen),
		 PKS_ERR_TOO_LARGE);
	CHECK_EQ(noise_handshake_action(r), NOISE_ACTION_READ_MESSAGE);
	CHECK_OK(noise_handshake_read_message(r, msg, len, got, sizeof(got), &plen));
	CHECK_EQ(plen, max1);
	/* Finish and check the transport limits. */
	CHECK_OK(noise_handshake_write_message(r, NULL, 0, msg, sizeof(msg), &len));
	CHECK_OK(noise_handshake_read_message(i, msg, len, got, sizeof(got), &plen));
	CHECK_OK(noise_handshake_write_message(i, NULL, 0, msg, sizeof(msg), &len));
	CHECK_OK(noise_handshake_read_message(r, msg, len, got, sizeof(got), &plen));
	CHECK_OK(noise_handshake_split(i, &is, &ir));
	CHECK_OK(noise_handshake_split(r, &rs, &rr));
	if (is != NULL && rr != NULL) {
		CHECK_EQ(noise_cipher_encrypt(is, NULL, 0, payload, NOISE_MAX_PAYLOAD + 1, msg,
					      sizeof(msg), &len),
			 PKS_ERR_TOO_LARGE);
		CHECK_EQ(noise_cipher_encrypt(is, NULL, 0, payload, 100, msg, 115, &len),
			 PKS_ERR_TOO_LARGE);
		CHECK_OK(noise_cipher_encrypt(is, NULL, 0, payload, NOISE_MAX_PAYLOAD, msg,
					      sizeof(msg), &len));
		CHECK_EQ(len, NOISE_MAX_MESSAGE);
		CHECK_EQ(
		    noise_cipher_decrypt(rr, NULL, 0, msg, len, got, NOISE_MAX_PAYLOAD - 1, &plen),
		    PKS_ERR_TOO_LARGE);
		CHECK_OK(noise_cipher_decrypt(rr, NULL, 0, msg, len, got, sizeof(got), &plen));
		CHECK_EQ(plen, NOISE_MAX_PAYLOAD);
		CHECK_EQ(noise_cipher_decrypt(rr, NULL, 0, msg, NOISE_MAX_MESSAGE + 1, got,
					      sizeof(got), &plen),
			 PKS_ERR_TOO_LARGE);
	}
	noise_cipher_free(is);
	noise_cipher_free(ir);
	noise_cipher_free(rs);
	noise_cipher_free(rr);
	noise_handshake_free(i);
	noise_handshake_free(r);
}

/* Every call out of order gets PKS_ERR_STATE and changes nothing. */
static void test_wrong_order(void)
{
	const char *name = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b";
	struct test_rng rng;
	struct test_keys k;
	struct noise_handshake *i = NULL, *r = NULL;
	struct noise_cipher *s = NULL, *c = NULL;
	uint8_t msg[256], got[256], buf[NOISE_MAX_HASH_LEN];
	size_t len = 0, plen = 0;

	test_rng_init(&rng, "order");
	test_keys_init(&k, &rng);

	/* Before start. */
	CHECK_OK(noise_handshake_new(name, NOISE_ROLE_INITIATOR, &i));
	CHECK_EQ(noise_handshake_action(i), NOISE_ACTION_NONE);
	CHECK_EQ(noise_handshake_write_message(i, NULL, 0, msg, sizeof(msg), &len), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_read_message(i, msg, 48, got, sizeof(got), &plen), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_split(i, &s, &c), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_hash(i, buf, sizeof(buf), &len), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_remote_static(i, buf), PKS_ERR_STATE);
	/* Start with keys missing: static, then psk, then randomness. */
	CHECK_EQ(noise_handshake_start(i), PKS_ERR_STATE);
	CHECK_OK(noise_handshake_set_local_static(i, k.init_priv));
	CHECK_EQ(noise_handshake_start(i), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_set_psk(i, 1, k.psks[0]), PKS_ERR_INVALID);
	CHECK_OK(noise_handshake_set_psk(i, 0, k.psks[0]));
	CHECK_EQ(noise_handshake_start(i), PKS_ERR_STATE);
	CHECK_OK(noise_handshake_set_rng(i, test_rng_fill, &rng));
	/* XX has no pre-message: a remote static key is an error, not ignored. */
	CHECK_EQ(noise_handshake_set_remote_static(i, k.resp_pub), PKS_ERR_INVALID);
	CHECK_OK(noise_handshake_set_prologue(i, NULL, 0));
	CHECK_EQ(noise_handshake_set_prologue(i, NULL, 0), PKS_ERR_STATE);
	CHECK_OK(noise_handshake_start(i));
	CHECK_EQ(noise_handshake_start(i), PKS_ERR_STATE);
	/* Setters after start. */
	CHECK_EQ(noise_handshake_set_local_static(i, k.init_priv), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_set_psk(i, 0, k.psks[0]), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_set_rng(i, test_rng_fill, &rng), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_set_local_ephemeral(i, k.init_priv), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_set_prologue(i, NULL, 0), PKS_ERR_STATE);
	/* Reading when it is our turn to write, and splitting early. */
	CHECK_EQ(noise_handshake_read_message(i, msg, 48, got, sizeof(got), &plen), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_split(i, &s, &c), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_hash(i, buf, sizeof(buf), &len), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_action(i), NOISE_ACTION_WRITE_MESSAGE);
	noise_handshake_free(i);
	i = NULL;

	/* A started pair: the responder may not write first. */
	CHECK_OK(test_pair_new(name, "XXpsk0", &k, &rng, 0, &i, &r));
	CHECK_EQ(noise_handshake_write_message(r, NULL, 0, msg, sizeof(msg), &len), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_action(r), NOISE_ACTION_READ_MESSAGE);
	CHECK_OK(test_run_handshake(i, r));
	/* Done: no more handshake messages. */
	CHECK_EQ(noise_handshake_write_message(i, NULL, 0, msg, sizeof(msg), &len), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_read_message(r, msg, 48, got, sizeof(got), &plen), PKS_ERR_STATE);
	CHECK_EQ(noise_handshake_hash(i, buf, 63, &len), PKS_ERR_TOO_LARGE);
	CHECK_OK(noise_handshake_split(i, &s, &c));
	/* Split once only. */
	struct noise_cipher *s2 = NULL, *c2 = NULL;
	CHECK_EQ(noise_handshake_split(i, &s2, &c2), PKS_ERR_STATE);
	CHECK(s2 == NULL && c2 == NULL);
	noise_cipher_free(s);
	noise_cipher_free(c);
	noise_handshake_free(i);
	noise_handshake_free(r);
	/* NULL is fine for the frees. */
	noise_handshake_free(NULL);
	noise_cipher_free(NULL);
}

/* Runs a full session for `pattern` in the given suite; fails on any error. */
static void test_pattern_roundtrip(const char *pattern, const char *hash, struct test_rng *rng)
{
	char name[128];
	struct test_keys k;
	struct noise_handshake *i = NULL, *r = NULL;
	struct noise_cipher *is = NULL, *ir = NULL, *rs = NULL, *rr = NULL;
	uint8_t hi[NOISE_MAX_HASH_LEN], hr[NOISE_MAX_HASH_LEN], pub[NOISE_KEY_LEN];
	size_t hi_len = 0, hr_len = 0;
	char letters[2];
	bool one_way;
	int rc;

	test_pattern_letters(pattern, letters);
	one_way = letters[1] == '\0';

	snprintf(name, sizeof(name), "Noise_%s_25519_ChaChaPoly_%s", pattern, hash);
	test_keys_init(&k, rng);
	rc = test_pair_new(name, pattern, &k, rng, 0, &i, &r);
	if (rc == PKS_OK)
		rc = test_run_handshake(i, r);
	if (rc != PKS_OK) {
		CHECK_FAIL_AT("%s: %s", name, pks_strerror(rc));
		goto out;
	}
	CHECK_OK(noise_handshake_hash(i, hi, sizeof(hi), &hi_len));
	CHECK_OK(noise_handshake_hash(r, hr, sizeof(hr), &hr_len));
	CHECK_EQ(hi_len, hr_len);
	CHECK_MEM_EQ(hi, hr, hi_len);
	/* Whoever has a static key, the other side knows it at the end. */
	if (letters[0] != 'N') {
		CHECK_OK(noise_handshake_remote_static(r, pub));
		CHECK_MEM_EQ(pub, k.init_pub, sizeof(pub));
	}
	if (one_way || letters[1] != 'N') {
		CHECK_OK(noise_handshake_remote_static(i, pub));
		CHECK_MEM_EQ(pub, k.resp_pub, sizeof(pub));
	}
	CHECK_OK(noise_handshake_split(i, &is, &ir));
	CHECK_OK(noise_handshake_split(r, &rs, &rr));
	if (one_way) {
		CHECK(is != NULL && rr != NULL && ir == NULL && rs == NULL);
		if (is != NULL && rr != NULL)
			test_transport(is, rr, 3);
	} else {
		CHECK(is != NULL && rr != NULL && ir != NULL && rs != NULL);
		if (is != NULL && rr != NULL && ir != NULL && rs != NULL) {
			test_transport(is, rr, 3);
			test_transport(rs, ir, 3);
		}
	}
out:
	if (check_failed_current)
		printf("# in %s\n", name);
	noise_cipher_free(is);
	noise_cipher_free(ir);
	noise_cipher_free(rs);
	noise_cipher_free(rr);
	noise_handshake_free(i);
	noise_handshake_free(r);
}

static void test_ik(void)
{
	struct test_rng rng;

	test_rng_init(&rng, "ik");
	test_pattern_roundtrip("IK", "BLAKE2b", &rng);
	test_pattern_roundtrip("IKpsk2", "BLAKE2b", &rng);
}

static void test_deferred(void)
{
	struct test_rng rng;

	test_rng_init(&rng, "deferred");
	test_pattern_roundtrip("X1K1", "BLAKE2b", &rng);
	test_pattern_roundtrip("NK1", "SHA512", &rng);
	test_pattern_roundtrip("I1X1psk0+psk3", "SHA256", &rng);
}

/*
 * Every pattern of the spec, with no psk, psk0, a psk after the last
 * message, and every psk position at once.
 */
static void test_all_patterns(void)
{
	static const char *const patterns[] = {
	    "N",    "K",   "X",   "NN",   "NK",   "NX",  "KN",  "KK",   "KX",  "XN",
	    "XK",   "XX",  "IN",  "IK",   "IX",   "NK1", "NX1", "X1N",  "X1K", "XK1",
	    "X1K1", "X1X", "XX1", "X1X1", "K1N",  "K1K", "KK1", "K1K1", "K1X", "KX1",
	    "K1X1", "I1N", "I1K", "IK1",  "I1K1", "I1X", "IX1", "I1X1",
	};
	static const char *const hashes[] = {"BLAKE2b", "SHA256", "SHA512"};
	struct test_rng rng;
	size_t count = 0;

	test_rng_init(&rng, "all-patterns");
	for (size_t p = 0; p < sizeof(patterns) / sizeof(patterns[0]); p++) {
		struct noise_handshake *hs = NULL;
		char base[16], name[128], with[128];
		size_t nmsg;

		/* The message count, from how many psk positions the name accepts. */
		for (nmsg = 1; nmsg < 8; nmsg++) {
			snprintf(name, sizeof(name), "Noise_%spsk%zu_25519_ChaChaPoly_BLAKE2b",
				 patterns[p], nmsg + 1);
			if (noise_handshake_new(name, NOISE_ROLE_INITIATOR, &hs) != PKS_OK)
				break;
			noise_handshake_free(hs);
			hs = NULL;
		}
		snprintf(base, sizeof(base), "%s", patterns[p]);
		for (size_t h = 0; h < 3; h++) {
			test_pattern_roundtrip(base, hashes[h], &rng);
			snprintf(with, sizeof(with), "%spsk0", base);
			test_pattern_roundtrip(with, hashes[h], &rng);
			snprintf(with, sizeof(with), "%spsk%zu", base, nmsg);
			test_pattern_roundtrip(with, hashes[h], &rng);
			count += 3;
		}
		/* All positions at once: psk0+psk1+...+pskN (at most 4 used by tests). */
		snprintf(with, sizeof(with), "%spsk0", base);
		for (size_t n = 1; n <= nmsg && n < 4; n++) {
			size_t used = strlen(with);
			snprintf(with + used, sizeof(with) - used, "+psk%zu", n);
		}
		test_pattern_roundtrip(with, "BLAKE2b", &rng);
		count++;
	}
	CHECK_EQ(count, 38 * 10);
}

/* Names: what is malformed, what is unsupported. */
static void test_names(void)
{
	static const struct {
		const char *name;
		int want;
	} cases[] = {
	    {"Noise_XX_25519_ChaChaPoly_BLAKE2b", PKS_OK},
	    {"Noise_XXpsk0+psk3_25519_ChaChaPoly_SHA512", PKS_OK},
	    {"Noise_NNpsk0+psk1+psk2_25519_ChaChaPoly_SHA256", PKS_OK},
	    {"Noise_XX_448_ChaChaPoly_BLAKE2b", PKS_ERR_UNSUPPORTED},
	    {"Noise_XX_25519_AESGCM_BLAKE2b", PKS_ERR_UNSUPPORTED},
	    {"Noise_XX_25519_ChaChaPoly_BLAKE2s", PKS_ERR_UNSUPPORTED},
	    {"Noise_XXfallback_25519_ChaChaPoly_BLAKE2b", PKS_ERR_UNSUPPORTED},
	    {"Noise_ZZ_25519_ChaChaPoly_BLAKE2b", PKS_ERR_UNSUPPORTED},
	    {"Noise_XX2_25519_ChaChaPoly_BLAKE2b", PKS_ERR_UNSUPPORTED},
	    {"Noise_XXpsk4_25519_ChaChaPoly_BLAKE2b", PKS_ERR_INVALID},
	    {"Noise_XXpsk0+psk0_25519_ChaChaPoly_BLAKE2b", PKS_ERR_INVALID},
	    {"Noise_XXpsk_25519_ChaChaPoly_BLAKE2b", PKS_ERR_INVALID},
	    {"Noise_XXpsk01_25519_ChaChaPoly_BLAKE2b", PKS_ERR_INVALID},
	    {"Noise_XXpskx_25519_ChaChaPoly_BLAKE2b", PKS_ERR_INVALID},
	    {"Noise_XXpsk0+_25519_ChaChaPoly_BLAKE2b", PKS_ERR_INVALID},
	    {"Noise_Npsk2_25519_ChaChaPoly_BLAKE2b", PKS_ERR_INVALID},
	    {"Noise_XX_25519_ChaChaPoly", PKS_ERR_INVALID},
	    {"Noise_XX_25519_ChaChaPoly_BLAKE2b_x", PKS_ERR_INVALID},
	    {"Noise__25519_ChaChaPoly_BLAKE2b", PKS_ERR_INVALID},
	    {"Noise_xx_25519_ChaChaPoly_BLAKE2b", PKS_ERR_INVALID},
	    {"NoiseX_XX_25519_ChaChaPoly_BLAKE2b", PKS_ERR_INVALID},
	    {"", PKS_ERR_INVALID},
	};
	char longname[300];

	for (size_t n = 0; n < sizeof(cases) / sizeof(cases[0]); n++) {
		struct noise_handshake *hs = NULL;
		int rc = noise_handshake_new(cases[n].name, NOISE_ROLE_RESPONDER, &hs);
		if (rc != cases[n].want)
			printf("# %s\n", cases[n].name);
		CHECK_EQ(rc, cases[n].want);
		CHECK((rc == PKS_OK) == (hs != NULL));
		noise_handshake_free(hs);
	}
	memset(longname, 'A', sizeof(longname));
	longname[sizeof(longname) - 1] = '\0';
	struct noise_handshake *hs = NULL;
	CHECK_EQ(noise_handshake_new(longname, NOISE_ROLE_INITIATOR, &hs), PKS_ERR_INVALID);
	CHECK_EQ(noise_handshake_new(NULL, NOISE_ROLE_INITIATOR, &hs), PKS_ERR_INVALID);
	CHECK_EQ(noise_handshake_new("Noise_XX_25519_ChaChaPoly_BLAKE2b", (enum noise_role)7, &hs),
		 PKS_ERR_INVALID);
	CHECK(hs == NULL);
	CHECK_OK(noise_handshake_new("Noise_KKpsk0+psk2_25519_ChaChaPoly_BLAKE2b",
				     NOISE_ROLE_INITIATOR, &hs));
	CHECK_EQ(noise_handshake_psk_count(hs), 2);
	noise_handshake_free(hs);
}

/* The reserved nonce 2^64-1 is never used; the cipher then refuses. */
static void test_nonce_exhaustion(void)
{
	struct test_rng rng;
	struct test_keys k;
	struct noise_handshake *i = NULL, *r = NULL;
	struct noise_cipher *is = NULL, *ir = NULL, *rs = NULL, *rr = NULL;
	uint8_t ct[64], pt[64];
	size_t len = 0, plen = 0;

	test_rng_init(&rng, "nonce");
	test_keys_init(&k, &rng);
	CHECK_OK(test_pair_new("Noise_NN_25519_ChaChaPoly_BLAKE2b", "NN", &k, &rng, 0, &i, &r));
	CHECK_OK(test_run_handshake(i, r));
	CHECK_OK(noise_handshake_split(i, &is, &ir));
	CHECK_OK(noise_handshake_split(r, &rs, &rr));
	if (is != NULL && rr != NULL) {
		CHECK_OK(noise_cipher_set_nonce(is, UINT64_MAX - 1));
		CHECK_OK(noise_cipher_set_nonce(rr, UINT64_MAX - 1));
		CHECK_OK(noise_cipher_encrypt(is, NULL, 0, (const uint8_t *)"last", 4, ct,
					      sizeof(ct), &len));
		CHECK_OK(noise_cipher_decrypt(rr, NULL, 0, ct, len, pt, sizeof(pt), &plen));
		CHECK_EQ(noise_cipher_encrypt(is, NULL, 0, (const uint8_t *)"more", 4, ct,
					      sizeof(ct), &len),
			 PKS_ERR_STATE);
		CHECK_EQ(noise_cipher_decrypt(rr, NULL, 0, ct, len, pt, sizeof(pt), &plen),
			 PKS_ERR_STATE);
	}
	noise_cipher_free(is);
	noise_cipher_free(ir);
	noise_cipher_free(rs);
	noise_cipher_free(rr);
	noise_handshake_free(i);
	noise_handshake_free(r);
}

/* Rekey on both sides keeps the channel; on one side only breaks it. */
static void test_rekey(void)
{
	struct test_rng rng;
	struct test_keys k;
	struct noise_handshake *i = NULL, *r = NULL;
	struct noise_cipher *is = NULL, *ir = NULL, *rs = NULL, *rr = NULL;
	uint8_t ct[64], pt[64];
	size_t len = 0, plen = 0;

	test_rng_init(&rng, "rekey");
	test_keys_init(&k, &rng);
	CHECK_OK(test_pair_new("Noise_IK_25519_ChaChaPoly_SHA256", "IK", &k, &rng, 0, &i, &r));
	CHECK_OK(test_run_handshake(i, r));
	CHECK_OK(noise_handshake_split(i, &is, &ir));
	CHECK_OK(noise_handshake_split(r, &rs, &rr));
	if (is != NULL && rr != NULL && rs != NULL && ir != NULL) {
		test_transport(is, rr, 2);
		CHECK_OK(noise_cipher_rekey(is));
		CHECK_OK(noise_cipher_rekey(rr));
		test_transport(is, rr, 2);
		CHECK_OK(noise_cipher_rekey(rs));
		CHECK_OK(noise_cipher_encrypt(rs, NULL, 0, (const uint8_t *)"x", 1, ct, sizeof(ct),
					      &len));
		CHECK_EQ(noise_cipher_decrypt(ir, NULL, 0, ct, len, pt, sizeof(pt), &plen),
			 PKS_ERR_AUTH);
	}
	noise_cipher_free(is);
	noise_cipher_free(ir);
	noise_cipher_free(rs);
	noise_cipher_free(rr);
	noise_handshake_free(i);
	noise_handshake_free(r);
}

/* A peer ephemeral of small order gives an all-zero DH: refused. */
static void test_low_order_point(void)
{
	struct test_rng rng;
	struct test_keys k;
	struct noise_handshake *i = NULL, *r = NULL;
	uint8_t msg[128] = {0}, got[128];
	size_t plen = 0;

	test_rng_init(&rng, "low-order");
	test_keys_init(&k, &rng);
	CHECK_OK(test_pair_new("Noise_NK_25519_ChaChaPoly_BLAKE2b", "NK", &k, &rng, 0, &i, &r));
	/* e = 0 (a point of small order), then an empty encrypted payload. */
	CHECK_EQ(noise_handshake_read_message(r, msg, NOISE_KEY_LEN + NOISE_TAG_LEN, got,
					      sizeof(got), &plen),
		 PKS_ERR_CRYPTO);
	CHECK_EQ(noise_handshake_action(r), NOISE_ACTION_FAILED);
	noise_handshake_free(i);
	noise_handshake_free(r);
}

TEST_SEEDED(test_xxpsk0_roundtrip)
TEST_SEEDED(test_wrong_psk)
TEST_SEEDED(test_bitflip)
TEST_SEEDED(test_truncated)
TEST_SEEDED(test_oversize)
TEST_SEEDED(test_wrong_order)
TEST_SEEDED(test_ik)
TEST_SEEDED(test_deferred)
TEST_SEEDED(test_all_patterns)
TEST_SEEDED(test_names)
TEST_SEEDED(test_nonce_exhaustion)
TEST_SEEDED(test_rekey)
TEST_SEEDED(test_low_order_point)

CHECK_MAIN({"/noise/xxpsk0-roundtrip", test_xxpsk0_roundtrip_seeded},
	   {"/noise/wrong-psk", test_wrong_psk_seeded}, {"/noise/bitflip", test_bitflip_seeded},
	   {"/noise/truncated", test_truncated_seeded}, {"/noise/oversize", test_oversize_seeded},
	   {"/noise/wrong-order", test_wrong_order_seeded}, {"/noise/ik", test_ik_seeded},
	   {"/noise/deferred", test_deferred_seeded},
	   {"/noise/all-patterns", test_all_patterns_seeded}, {"/noise/names", test_names_seeded},
	   {"/noise/nonce-exhaustion", test_nonce_exhaustion_seeded},
	   {"/noise/rekey", test_rekey_seeded},
	   {"/noise/low-order-point", test_low_order_point_seeded})
