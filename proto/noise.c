/*
 * The Noise Protocol Framework, revision 34, on libsodium.
 *
 * Handshake patterns are kept as the spec writes them ("<- s ... -> e, es")
 * and parsed when a handshake is created; psk modifiers are then applied by
 * the spec's rule (psk0 opens the first message, pskN closes message N), so
 * every combination comes from the same few lines of code instead of a
 * hand-written table of variants.
 *
 * The whole handshake object, and each transport cipher, lives in one
 * sodium_malloc'd block: keys, chaining key and psks are guarded while in use
 * and wiped by sodium_free. Temporaries on the stack are wiped before return.
 */
#include "proto/noise.h"

#include <stdbool.h>
#include <string.h>

#include <sodium.h>

#include "common/err.h"

#define NOISE_CIPHER_KEY_LEN 32
#define NOISE_NONCE_LEN 12
#define NOISE_MAX_BLOCK_LEN 128
/* The longest pattern has 4 messages; one more psk than messages at most. */
#define NOISE_MAX_MESSAGES 8
#define NOISE_MAX_TOKENS 12
#define NOISE_MAX_PSKS (NOISE_MAX_MESSAGES + 1)
/* The nonce 2^64-1 is reserved by the spec (it keys REKEY). */
#define NOISE_NONCE_MAX UINT64_MAX

enum noise_token {
	NOISE_TOKEN_E,
	NOISE_TOKEN_S,
	NOISE_TOKEN_EE,
	NOISE_TOKEN_ES,
	NOISE_TOKEN_SE,
	NOISE_TOKEN_SS,
	NOISE_TOKEN_PSK,
};

/* Bits of a pre-message. */
#define NOISE_PRE_S 0x01u

struct noise_message_pattern {
	bool from_initiator;
	uint8_t ntokens;
	uint8_t tokens[NOISE_MAX_TOKENS];
};

struct noise_pattern {
	uint8_t pre_initiator;
	uint8_t pre_responder;
	uint8_t nmessages;
	uint8_t npsks;
	struct noise_message_pattern messages[NOISE_MAX_MESSAGES];
};

/*
 * Noise rev 34 §7.4 (one-way), §7.5 (interactive) and §18.1 (deferred), in
 * the spec's own notation. Lines before "..." are pre-messages.
 */
static const struct {
	const char *name;
	const char *text;
} noise_pattern_table[] = {
    {"N", "<- s ... -> e, es"},
    {"K", "-> s <- s ... -> e, es, ss"},
    {"X", "<- s ... -> e, es, s, ss"},
    {"NN", "-> e <- e, ee"},
    {"NK", "<- s ... -> e, es <- e, ee"},
    {"NX", "-> e <- e, ee, s, es"},
    {"KN", "-> s ... -> e <- e, ee, se"},
    {"KK", "-> s <- s ... -> e, es, ss <- e, ee, se"},
    {"KX", "-> s ... -> e <- e, ee, se, s, es"},
    {"XN", "-> e <- e, ee -> s, se"},
    {"XK", "<- s ... -> e, es <- e, ee -> s, se"},
    {"XX", "-> e <- e, ee, s, es -> s, se"},
    {"IN", "-> e, s <- e, ee, se"},
    {"IK", "<- s ... -> e, es, s, ss <- e, ee, se"},
    {"IX", "-> e, s <- e, ee, se, s, es"},
    {"NK1", "<- s ... -> e <- e, ee, es"},
    {"NX1", "-> e <- e, ee, s -> es"},
    {"X1N", "-> e <- e, ee -> s <- se"},
    {"X1K", "<- s ... -> e, es <- e, ee -> s <- se"},
    {"XK1", "<- s ... -> e <- e, ee, es -> s, se"},
    {"X1K1", "<- s ... -> e <- e, ee, es -> s <- se"},
    {"X1X", "-> e <- e, ee, s, es -> s <- se"},
    {"XX1", "-> e <- e, ee, s -> es, s, se"},
    {"X1X1", "-> e <- e, ee, s -> es, s <- se"},
    {"K1N", "-> s ... -> e <- e, ee -> se"},
    {"K1K", "-> s <- s ... -> e, es <- e, ee -> se"},
    {"KK1", "-> s <- s ... -> e <- e, ee, se, es"},
    {"K1K1", "-> s <- s ... -> e <- e, ee, es -> se"},
    {"K1X", "-> s ... -> e <- e, ee, s, es -> se"},
    {"KX1", "-> s ... -> e <- e, ee, se, s -> es"},
    {"K1X1", "-> s ... -> e <- e, ee, s -> se, es"},
    {"I1N", "-> e, s <- e, ee -> se"},
    {"I1K", "<- s ... -> e, es, s <- e, ee -> se"},
    {"IK1", "<- s ... -> e, s <- e, ee, se, es"},
    {"I1K1", "<- s ... -> e, s <- e, ee, es -> se"},
    {"I1X", "-> e, s <- e, ee, s, es -> se"},
    {"IX1", "-> e, s <- e, ee, se, s -> es"},
    {"I1X1", "-> e, s <- e, ee, s -> se, es"},
};

static const struct {
	const char *word;
	enum noise_token token;
} noise_token_words[] = {
    {"e", NOISE_TOKEN_E},     {"s", NOISE_TOKEN_S},   {"ee", NOISE_TOKEN_EE},
    {"es", NOISE_TOKEN_ES},   {"se", NOISE_TOKEN_SE}, {"ss", NOISE_TOKEN_SS},
    {"psk", NOISE_TOKEN_PSK},
};

enum noise_hash_id {
	NOISE_HASH_BLAKE2B,
	NOISE_HASH_SHA256,
	NOISE_HASH_SHA512,
};

struct noise_hash_alg {
	const char *name;
	enum noise_hash_id id;
	size_t hashlen;
	size_t blocklen;
};

static const struct noise_hash_alg noise_hash_algs[] = {
    {"BLAKE2b", NOISE_HASH_BLAKE2B, 64, 128},
    {"SHA256", NOISE_HASH_SHA256, 32, 64},
    {"SHA512", NOISE_HASH_SHA512, 64, 128},
};

union noise_hash_state {
	crypto_generichash_state blake2b;
	crypto_hash_sha256_state sha256;
	crypto_hash_sha512_state sha512;
};

enum noise_state {
	NOISE_STATE_CONFIG,
	NOISE_STATE_RUNNING,
	NOISE_STATE_READY,
	NOISE_STATE_COMPLETE,
	NOISE_STATE_FAILED,
};

/* Allocated with sodium_malloc: everything secret sits in here. */
struct noise_handshake {
	const struct noise_hash_alg *hash;
	struct noise_pattern pattern;
	enum noise_role role;
	enum noise_state state;
	size_t msg_index;
	size_t psks_used;

	/* SymmetricState and its CipherState. */
	uint8_t h[NOISE_MAX_HASH_LEN];
	uint8_t ck[NOISE_MAX_HASH_LEN];
	uint8_t k[NOISE_CIPHER_KEY_LEN];
	bool has_key;
	uint64_t n;

	uint8_t s_priv[NOISE_KEY_LEN];
	uint8_t s_pub[NOISE_KEY_LEN];
	uint8_t e_priv[NOISE_KEY_LEN];
	uint8_t e_pub[NOISE_KEY_LEN];
	uint8_t rs[NOISE_KEY_LEN];
	uint8_t re[NOISE_KEY_LEN];
	uint8_t psks[NOISE_MAX_PSKS][NOISE_PSK_LEN];
	bool has_s;
	bool has_e;
	bool e_fixed;
	bool has_rs;
	bool has_re;
	bool prologue_set;
	uint32_t psks_set;

	noise_rng_fn rng;
	void *rng_user_data;
};

/* Allocated with sodium_malloc. */
struct noise_cipher {
	uint8_t k[NOISE_CIPHER_KEY_LEN];
	uint64_t n;
};

/* ---- hash, HMAC, HKDF ---- */

static void noise_hash_init(const struct noise_hash_alg *alg, union noise_hash_state *st)
{
	switch (alg->id) {
	case NOISE_HASH_BLAKE2B:
		crypto_generichash_init(&st->blake2b, NULL, 0, alg->hashlen);
		break;
	case NOISE_HASH_SHA256:
		crypto_hash_sha256_init(&st->sha256);
		break;
	case NOISE_HASH_SHA512:
		crypto_hash_sha512_init(&st->sha512);
		break;
	}
}

static void noise_hash_update(const struct noise_hash_alg *alg, union noise_hash_state *st,
			      const uint8_t *data, size_t len)
{
	if (len == 0)
		return;
	switch (alg->id) {
	case NOISE_HASH_BLAKE2B:
		crypto_generichash_update(&st->blake2b, data, len);
		break;
	case NOISE_HASH_SHA256:
		crypto_hash_sha256_update(&st->sha256, data, len);
		break;
	case NOISE_HASH_SHA512:
		crypto_hash_sha512_update(&st->sha512, data, len);
		break;
	}
}

static void noise_hash_final(const struct noise_hash_alg *alg, union noise_hash_state *st,
			     uint8_t *out)
{
	switch (alg->id) {
	case NOISE_HASH_BLAKE2B:
		crypto_generichash_final(&st->blake2b, out, alg->hashlen);
		break;
	case NOISE_HASH_SHA256:
		crypto_hash_sha256_final(&st->sha256, out);
		break;
	case NOISE_HASH_SHA512:
		crypto_hash_sha512_final(&st->sha512, out);
		break;
	}
	sodium_memzero(st, sizeof(*st));
}

/*
 * HMAC (RFC 2104) over the concatenation d1 || d2, built from the hash as
 * the spec requires; it is the same construction for all three hashes, and
 * the vectors check it against independent implementations.
 */
static void noise_hmac(const struct noise_hash_alg *alg, const uint8_t *key, size_t key_len,
		       const uint8_t *d1, size_t l1, const uint8_t *d2, size_t l2, uint8_t *out)
{
	uint8_t block[NOISE_MAX_BLOCK_LEN];
	uint8_t inner[NOISE_MAX_HASH_LEN];
	union noise_hash_state st;

	memset(block, 0, sizeof(block));
	if (key_len > alg->blocklen) {
		noise_hash_init(alg, &st);
		noise_hash_update(alg, &st, key, key_len);
		noise_hash_final(alg, &st, block);
	} else if (key_len > 0) {
		memcpy(block, key, key_len);
	}
	for (size_t i = 0; i < alg->blocklen; i++)
		block[i] ^= 0x36;
	noise_hash_init(alg, &st);
	noise_hash_update(alg, &st, block, alg->blocklen);
	noise_hash_update(alg, &st, d1, l1);
	noise_hash_update(alg, &st, d2, l2);
	noise_hash_final(alg, &st, inner);
	for (size_t i = 0; i < alg->blocklen; i++)
		block[i] ^= 0x36 ^ 0x5c;
	noise_hash_init(alg, &st);
	noise_hash_update(alg, &st, block, alg->blocklen);
	noise_hash_update(alg, &st, inner, alg->hashlen);
	noise_hash_final(alg, &st, out);
	sodium_memzero(block, sizeof(block));
	sodium_memzero(inner, sizeof(inner));
}

/* HKDF of the spec: two outputs, or three when out3 is not NULL. */
static void noise_hkdf(const struct noise_hash_alg *alg, const uint8_t *ck, const uint8_t *ikm,
		       size_t ikm_len, uint8_t *out1, uint8_t *out2, uint8_t *out3)
{
	uint8_t temp_key[NOISE_MAX_HASH_LEN];
	const uint8_t one = 0x01, two = 0x02, three = 0x03;

	noise_hmac(alg, ck, alg->hashlen, ikm, ikm_len, NULL, 0, temp_key);
	noise_hmac(alg, temp_key, alg->hashlen, &one, 1, NULL, 0, out1);
	noise_hmac(alg, temp_key, alg->hashlen, out1, alg->hashlen, &two, 1, out2);
	if (out3 != NULL)
		noise_hmac(alg, temp_key, alg->hashlen, out2, alg->hashlen, &three, 1, out3);
	sodium_memzero(temp_key, sizeof(temp_key));
}

/* ---- CipherState primitives ---- */

static void noise_nonce(uint64_t n, uint8_t nonce[NOISE_NONCE_LEN])
{
	memset(nonce, 0, 4);
	for (size_t i = 0; i < 8; i++)
		nonce[4 + i] = (uint8_t)(n >> (8 * i));
}

/* ENCRYPT(k, n, ad, plaintext): out gets len + NOISE_TAG_LEN bytes. */
static int noise_aead_encrypt(const uint8_t *k, uint64_t n, const uint8_t *ad, size_t ad_len,
			      const uint8_t *in, size_t len, uint8_t *out)
{
	uint8_t nonce[NOISE_NONCE_LEN];
	unsigned long long out_len = 0;

	noise_nonce(n, nonce);
	if (crypto_aead_chacha20poly1305_ietf_encrypt(out, &out_len, in, len, ad, ad_len, NULL,
						      nonce, k) != 0)
		return PKS_ERR_CRYPTO;
	return PKS_OK;
}

/* DECRYPT(k, n, ad, ciphertext): out gets len - NOISE_TAG_LEN bytes. */
static int noise_aead_decrypt(const uint8_t *k, uint64_t n, const uint8_t *ad, size_t ad_len,
			      const uint8_t *in, size_t len, uint8_t *out)
{
	uint8_t nonce[NOISE_NONCE_LEN];
	uint8_t dummy[1];
	unsigned long long out_len = 0;

	/* An empty plaintext may come without a buffer; give libsodium one. */
	if (out == NULL)
		out = dummy;
	noise_nonce(n, nonce);
	if (crypto_aead_chacha20poly1305_ietf_decrypt(out, &out_len, NULL, in, len, ad, ad_len,
						      nonce, k) != 0)
		return PKS_ERR_AUTH;
	return PKS_OK;
}

/* ---- pattern parsing ---- */

static bool noise_is_space(char c)
{
	return c == ' ' || c == ',' || c == '\n' || c == '\t';
}

static bool noise_word_is(const char *w, size_t len, const char *lit)
{
	return strlen(lit) == len && memcmp(w, lit, len) == 0;
}

static int noise_token_from_word(const char *w, size_t len, enum noise_token *out)
{
	for (size_t i = 0; i < sizeof(noise_token_words) / sizeof(noise_token_words[0]); i++) {
		if (noise_word_is(w, len, noise_token_words[i].word)) {
			*out = noise_token_words[i].token;
			return PKS_OK;
		}
	}
	return PKS_ERR_INTERNAL;
}

/*
 * Parses a table entry. Errors here mean the table is wrong (the text never
 * comes from outside), hence PKS_ERR_INTERNAL.
 */
static int noise_pattern_parse(const char *text, struct noise_pattern *p)
{
	struct noise_message_pattern lines[NOISE_MAX_MESSAGES];
	size_t nlines = 0;
	bool had_premessages = false;
	const char *q = text;

	memset(p, 0, sizeof(*p));
	memset(lines, 0, sizeof(lines));
	for (;;) {
		const char *w;
		size_t wlen;
		enum noise_token tok;

		while (*q != '\0' && noise_is_space(*q))
			q++;
		if (*q == '\0')
			break;
		w = q;
		while (*q != '\0' && !noise_is_space(*q))
			q++;
		wlen = (size_t)(q - w);
		if (noise_word_is(w, wlen, "->") || noise_word_is(w, wlen, "<-")) {
			if (nlines == NOISE_MAX_MESSAGES)
				return PKS_ERR_INTERNAL;
			lines[nlines].from_initiator = w[0] == '-';
			lines[nlines].ntokens = 0;
			nlines++;
		} else if (noise_word_is(w, wlen, "...")) {
			if (had_premessages || nlines > 2)
				return PKS_ERR_INTERNAL;
			had_premessages = true;
			for (size_t i = 0; i < nlines; i++) {
				uint8_t *pre =
				    lines[i].from_initiator ? &p->pre_initiator : &p->pre_responder;
				/* Only static keys are pre-messages here (no fallback). */
				if (lines[i].ntokens != 1 || lines[i].tokens[0] != NOISE_TOKEN_S)
					return PKS_ERR_INTERNAL;
				*pre |= NOISE_PRE_S;
			}
			nlines = 0;
		} else {
			struct noise_message_pattern *mp;
			if (nlines == 0 || noise_token_from_word(w, wlen, &tok) != PKS_OK)
				return PKS_ERR_INTERNAL;
			mp = &lines[nlines - 1];
			if (mp->ntokens == NOISE_MAX_TOKENS)
				return PKS_ERR_INTERNAL;
			mp->tokens[mp->ntokens++] = (uint8_t)tok;
		}
	}
	if (nlines == 0)
		return PKS_ERR_INTERNAL;
	for (size_t i = 0; i < nlines; i++) {
		/* Messages alternate, starting with the initiator. */
		if (lines[i].from_initiator != (i % 2 == 0))
			return PKS_ERR_INTERNAL;
		p->messages[i] = lines[i];
	}
	p->nmessages = (uint8_t)nlines;
	return PKS_OK;
}

/* Inserts a psk token at position pos of a message. */
static int noise_message_insert_psk(struct noise_message_pattern *mp, size_t pos)
{
	if (mp->ntokens == NOISE_MAX_TOKENS || pos > mp->ntokens)
		return PKS_ERR_INTERNAL;
	memmove(&mp->tokens[pos + 1], &mp->tokens[pos], mp->ntokens - pos);
	mp->tokens[pos] = NOISE_TOKEN_PSK;
	mp->ntokens++;
	return PKS_OK;
}

/*
 * Applies "psk0+psk2"-style modifiers (mods is the text after the base
 * pattern name, possibly empty).
 */
static int noise_pattern_apply_modifiers(struct noise_pattern *p, const char *mods)
{
	uint32_t mask = 0;
	const char *q = mods;
	int r;

	if (*q == '\0')
		return PKS_OK;
	for (;;) {
		const char *m = q;
		size_t mlen;
		unsigned long idx = 0;

		while (*q != '\0' && *q != '+')
			q++;
		mlen = (size_t)(q - m);
		if (mlen == 0)
			return PKS_ERR_INVALID;
		if (mlen >= 3 && memcmp(m, "psk", 3) == 0) {
			size_t ndigits = mlen - 3;
			if (ndigits == 0 || ndigits > 2 || (ndigits == 2 && m[3] == '0'))
				return PKS_ERR_INVALID;
			for (size_t i = 3; i < mlen; i++) {
				if (m[i] < '0' || m[i] > '9')
					return PKS_ERR_INVALID;
				idx = idx * 10 + (unsigned long)(m[i] - '0');
			}
			if (idx > p->nmessages || (mask & (1u << idx)) != 0)
				return PKS_ERR_INVALID;
			mask |= 1u << idx;
		} else {
			/* "fallback" and anything else we do not implement. */
			return PKS_ERR_UNSUPPORTED;
		}
		if (*q == '\0')
			break;
		q++;
	}
	for (size_t idx = 0; idx <= p->nmessages; idx++) {
		if ((mask & (1u << idx)) == 0)
			continue;
		if (idx == 0)
			r = noise_message_insert_psk(&p->messages[0], 0);
		else
			r = noise_message_insert_psk(&p->messages[idx - 1],
						     p->messages[idx - 1].ntokens);
		if (r != PKS_OK)
			return r;
		p->npsks++;
	}
	return PKS_OK;
}

/*
 * Splits "Noise_PAT_DH_CIPHER_HASH" and builds the pattern. buf is a
 * writable copy of the name.
 */
static int noise_parse_name(char *buf, struct noise_pattern *p, const struct noise_hash_alg **hash)
{
	char *fields[5];
	size_t nfields = 0, base_len = 0;
	char *q = buf;
	const char *text = NULL;
	char saved;
	int r;

	for (;;) {
		if (nfields == 5)
			return PKS_ERR_INVALID;
		fields[nfields++] = q;
		q = strchr(q, '_');
		if (q == NULL)
			break;
		*q++ = '\0';
	}
	if (nfields != 5)
		return PKS_ERR_INVALID;
	for (size_t i = 0; i < nfields; i++)
		if (fields[i][0] == '\0')
			return PKS_ERR_INVALID;
	if (strcmp(fields[0], "Noise") != 0)
		return PKS_ERR_INVALID;

	while ((fields[1][base_len] >= 'A' && fields[1][base_len] <= 'Z') ||
	       (fields[1][base_len] >= '0' && fields[1][base_len] <= '9'))
		base_len++;
	if (base_len == 0)
		return PKS_ERR_INVALID;
	saved = fields[1][base_len];
	fields[1][base_len] = '\0';
	for (size_t i = 0; i < sizeof(noise_pattern_table) / sizeof(noise_pattern_table[0]); i++)
		if (strcmp(noise_pattern_table[i].name, fields[1]) == 0)
			text = noise_pattern_table[i].text;
	fields[1][base_len] = saved;
	if (text == NULL)
		return PKS_ERR_UNSUPPORTED;
	r = noise_pattern_parse(text, p);
	if (r != PKS_OK)
		return r;
	r = noise_pattern_apply_modifiers(p, fields[1] + base_len);
	if (r != PKS_OK)
		return r;

	if (strcmp(fields[2], "25519") != 0 || strcmp(fields[3], "ChaChaPoly") != 0)
		return PKS_ERR_UNSUPPORTED;
	*hash = NULL;
	for (size_t i = 0; i < sizeof(noise_hash_algs) / sizeof(noise_hash_algs[0]); i++)
		if (strcmp(noise_hash_algs[i].name, fields[4]) == 0)
			*hash = &noise_hash_algs[i];
	if (*hash == NULL)
		return PKS_ERR_UNSUPPORTED;
	return PKS_OK;
}

/* ---- SymmetricState ---- */

static void noise_mix_hash(struct noise_handshake *hs, const uint8_t *data, size_t len)
{
	union noise_hash_state st;

	noise_hash_init(hs->hash, &st);
	noise_hash_update(hs->hash, &st, hs->h, hs->hash->hashlen);
	noise_hash_update(hs->hash, &st, data, len);
	noise_hash_final(hs->hash, &st, hs->h);
}

static void noise_mix_key(struct noise_handshake *hs, const uint8_t *ikm, size_t len)
{
	uint8_t ck[NOISE_MAX_HASH_LEN], temp_k[NOISE_MAX_HASH_LEN];

	noise_hkdf(hs->hash, hs->ck, ikm, len, ck, temp_k, NULL);
	memcpy(hs->ck, ck, hs->hash->hashlen);
	memcpy(hs->k, temp_k, NOISE_CIPHER_KEY_LEN);
	hs->has_key = true;
	hs->n = 0;
	sodium_memzero(ck, sizeof(ck));
	sodium_memzero(temp_k, sizeof(temp_k));
}

static void noise_mix_key_and_hash(struct noise_handshake *hs, const uint8_t *ikm, size_t len)
{
	uint8_t ck[NOISE_MAX_HASH_LEN], temp_h[NOISE_MAX_HASH_LEN], temp_k[NOISE_MAX_HASH_LEN];

	noise_hkdf(hs->hash, hs->ck, ikm, len, ck, temp_h, temp_k);
	memcpy(hs->ck, ck, hs->hash->hashlen);
	noise_mix_hash(hs, temp_h, hs->hash->hashlen);
	memcpy(hs->k, temp_k, NOISE_CIPHER_KEY_LEN);
	hs->has_key = true;
	hs->n = 0;
	sodium_memzero(ck, sizeof(ck));
	sodium_memzero(temp_h, sizeof(temp_h));
	sodium_memzero(temp_k, sizeof(temp_k));
}

/* EncryptAndHash: out gets len (+ NOISE_TAG_LEN once keyed) bytes. */
static int noise_encrypt_and_hash(struct noise_handshake *hs, const uint8_t *in, size_t len,
				  uint8_t *out, size_t *out_len)
{
	int r;

	if (!hs->has_key) {
		if (len > 0)
			memcpy(out, in, len);
		noise_mix_hash(hs, out, len);
		*out_len = len;
		return PKS_OK;
	}
	if (hs->n == NOISE_NONCE_MAX)
		return PKS_ERR_STATE;
	r = noise_aead_encrypt(hs->k, hs->n, hs->h, hs->hash->hashlen, in, len, out);
	if (r != PKS_OK)
		return r;
	hs->n++;
	noise_mix_hash(hs, out, len + NOISE_TAG_LEN);
	*out_len = len + NOISE_TAG_LEN;
	return PKS_OK;
}

/* DecryptAndHash: len includes the tag once keyed; out gets the plaintext. */
static int noise_decrypt_and_hash(struct noise_handshake *hs, const uint8_t *in, size_t len,
				  uint8_t *out)
{
	int r;

	if (!hs->has_key) {
		if (len > 0)
			memcpy(out, in, len);
		noise_mix_hash(hs, in, len);
		return PKS_OK;
	}
	if (len < NOISE_TAG_LEN)
		return PKS_ERR_TRUNCATED;
	if (hs->n == NOISE_NONCE_MAX)
		return PKS_ERR_STATE;
	r = noise_aead_decrypt(hs->k, hs->n, hs->h, hs->hash->hashlen, in, len, out);
	if (r != PKS_OK)
		return r;
	hs->n++;
	noise_mix_hash(hs, in, len);
	return PKS_OK;
}

/* MixKey(DH(priv, pub)); an all-zero result (small-order point) fails. */
static int noise_mix_dh(struct noise_handshake *hs, bool have_priv, const uint8_t *priv,
			bool have_pub, const uint8_t *pub)
{
	uint8_t shared[NOISE_KEY_LEN];
	int r = PKS_ERR_INTERNAL;

	if (!have_priv || !have_pub)
		goto out;
	if (crypto_scalarmult(shared, priv, pub) != 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	noise_mix_key(hs, shared, sizeof(shared));
	r = PKS_OK;
out:
	sodium_memzero(shared, sizeof(shared));
	return r;
}

/* The DH token tok as seen from our role. */
static int noise_process_dh(struct noise_handshake *hs, enum noise_token tok)
{
	bool initiator = hs->role == NOISE_ROLE_INITIATOR;

	switch (tok) {
	case NOISE_TOKEN_EE:
		return noise_mix_dh(hs, hs->has_e, hs->e_priv, hs->has_re, hs->re);
	case NOISE_TOKEN_ES:
		if (initiator)
			return noise_mix_dh(hs, hs->has_e, hs->e_priv, hs->has_rs, hs->rs);
		return noise_mix_dh(hs, hs->has_s, hs->s_priv, hs->has_re, hs->re);
	case NOISE_TOKEN_SE:
		if (initiator)
			return noise_mix_dh(hs, hs->has_s, hs->s_priv, hs->has_re, hs->re);
		return noise_mix_dh(hs, hs->has_e, hs->e_priv, hs->has_rs, hs->rs);
	case NOISE_TOKEN_SS:
		return noise_mix_dh(hs, hs->has_s, hs->s_priv, hs->has_rs, hs->rs);
	case NOISE_TOKEN_E:
	case NOISE_TOKEN_S:
	case NOISE_TOKEN_PSK:
		break;
	}
	return PKS_ERR_INTERNAL;
}

static int noise_process_psk(struct noise_handshake *hs)
{
	if (hs->psks_used >= hs->pattern.npsks)
		return PKS_ERR_INTERNAL;
	noise_mix_key_and_hash(hs, hs->psks[hs->psks_used], NOISE_PSK_LEN);
	sodium_memzero(hs->psks[hs->psks_used], NOISE_PSK_LEN);
	hs->psks_used++;
	return PKS_OK;
}

/* ---- handshake ---- */

static bool noise_our_turn(const struct noise_handshake *hs)
{
	return hs->pattern.messages[hs->msg_index].from_initiator ==
	       (hs->role == NOISE_ROLE_INITIATOR);
}

/* Wipes everything secret and leaves the object dead. */
static void noise_handshake_fail(struct noise_handshake *hs)
{
	hs->state = NOISE_STATE_FAILED;
	sodium_memzero(hs->ck, sizeof(hs->ck));
	sodium_memzero(hs->k, sizeof(hs->k));
	sodium_memzero(hs->s_priv, sizeof(hs->s_priv));
	sodium_memzero(hs->e_priv, sizeof(hs->e_priv));
	sodium_memzero(hs->psks, sizeof(hs->psks));
	hs->has_key = false;
}

/*
 * The size of message mp with a payload of payload_len bytes, found by
 * following the key state through its tokens: public keys, the tag on an
 * encrypted static key, the payload and its tag. Nothing is changed.
 */
static size_t noise_message_size(const struct noise_handshake *hs,
				 const struct noise_message_pattern *mp, size_t payload_len)
{
	bool has_key = hs->has_key;
	size_t size = 0;

	for (size_t i = 0; i < mp->ntokens; i++) {
		switch ((enum noise_token)mp->tokens[i]) {
		case NOISE_TOKEN_E:
			size += NOISE_KEY_LEN;
			if (hs->pattern.npsks > 0)
				has_key = true;
			break;
		case NOISE_TOKEN_S:
			size += NOISE_KEY_LEN + (has_key ? NOISE_TAG_LEN : 0);
			break;
		case NOISE_TOKEN_EE:
		case NOISE_TOKEN_ES:
		case NOISE_TOKEN_SE:
		case NOISE_TOKEN_SS:
		case NOISE_TOKEN_PSK:
			has_key = true;
			break;
		}
	}
	return size + payload_len + (has_key ? NOISE_TAG_LEN : 0);
}

int noise_handshake_new(const char *protocol_name, enum noise_role role,
			struct noise_handshake **out)
{
	char buf[NOISE_MAX_PROTOCOL_NAME + 1];
	struct noise_pattern pattern;
	const struct noise_hash_alg *hash = NULL;
	struct noise_handshake *hs = NULL;
	size_t name_len;
	int r = PKS_ERR_INTERNAL;

	if (protocol_name == NULL || out == NULL ||
	    (role != NOISE_ROLE_INITIATOR && role != NOISE_ROLE_RESPONDER)) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	name_len = strnlen(protocol_name, NOISE_MAX_PROTOCOL_NAME + 1);
	if (name_len == 0 || name_len > NOISE_MAX_PROTOCOL_NAME) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	memcpy(buf, protocol_name, name_len + 1);
	r = noise_parse_name(buf, &pattern, &hash);
	if (r != PKS_OK)
		goto out;
	if (sodium_init() < 0) {
		r = PKS_ERR_INTERNAL;
		goto out;
	}
	hs = sodium_malloc(sizeof(*hs));
	if (hs == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	memset(hs, 0, sizeof(*hs));
	hs->hash = hash;
	hs->pattern = pattern;
	hs->role = role;
	hs->state = NOISE_STATE_CONFIG;

	/* InitializeSymmetric(protocol_name). */
	if (name_len <= hash->hashlen) {
		memcpy(hs->h, protocol_name, name_len);
	} else {
		union noise_hash_state st;
		noise_hash_init(hash, &st);
		noise_hash_update(hash, &st, (const uint8_t *)protocol_name, name_len);
		noise_hash_final(hash, &st, hs->h);
	}
	memcpy(hs->ck, hs->h, hash->hashlen);

	*out = hs;
	hs = NULL;
	r = PKS_OK;
out:
	if (hs != NULL)
		sodium_free(hs);
	return r;
}

void noise_handshake_free(struct noise_handshake *hs)
{
	if (hs != NULL)
		sodium_free(hs);
}

int noise_handshake_set_prologue(struct noise_handshake *hs, const uint8_t *prologue, size_t len)
{
	if (hs == NULL || (prologue == NULL && len > 0))
		return PKS_ERR_INVALID;
	if (hs->state != NOISE_STATE_CONFIG || hs->prologue_set)
		return PKS_ERR_STATE;
	noise_mix_hash(hs, prologue, len);
	hs->prologue_set = true;
	return PKS_OK;
}

int noise_handshake_set_local_static(struct noise_handshake *hs,
				     const uint8_t private_key[NOISE_KEY_LEN])
{
	if (hs == NULL || private_key == NULL)
		return PKS_ERR_INVALID;
	if (hs->state != NOISE_STATE_CONFIG)
		return PKS_ERR_STATE;
	memcpy(hs->s_priv, private_key, NOISE_KEY_LEN);
	if (crypto_scalarmult_base(hs->s_pub, hs->s_priv) != 0) {
		sodium_memzero(hs->s_priv, NOISE_KEY_LEN);
		hs->has_s = false;
		return PKS_ERR_CRYPTO;
	}
	hs->has_s = true;
	return PKS_OK;
}

int noise_handshake_set_remote_static(struct noise_handshake *hs,
				      const uint8_t public_key[NOISE_KEY_LEN])
{
	uint8_t pre;

	if (hs == NULL || public_key == NULL)
		return PKS_ERR_INVALID;
	if (hs->state != NOISE_STATE_CONFIG)
		return PKS_ERR_STATE;
	pre = hs->role == NOISE_ROLE_INITIATOR ? hs->pattern.pre_responder
					       : hs->pattern.pre_initiator;
	if ((pre & NOISE_PRE_S) == 0)
		return PKS_ERR_INVALID;
	memcpy(hs->rs, public_key, NOISE_KEY_LEN);
	hs->has_rs = true;
	return PKS_OK;
}

int noise_handshake_set_psk(struct noise_handshake *hs, size_t index,
			    const uint8_t psk[NOISE_PSK_LEN])
{
	if (hs == NULL || psk == NULL || index >= hs->pattern.npsks)
		return PKS_ERR_INVALID;
	if (hs->state != NOISE_STATE_CONFIG)
		return PKS_ERR_STATE;
	memcpy(hs->psks[index], psk, NOISE_PSK_LEN);
	hs->psks_set |= 1u << index;
	return PKS_OK;
}

size_t noise_handshake_psk_count(const struct noise_handshake *hs)
{
	return hs == NULL ? 0 : hs->pattern.npsks;
}

int noise_handshake_set_local_ephemeral(struct noise_handshake *hs,
					const uint8_t private_key[NOISE_KEY_LEN])
{
	if (hs == NULL || private_key == NULL)
		return PKS_ERR_INVALID;
	if (hs->state != NOISE_STATE_CONFIG)
		return PKS_ERR_STATE;
	memcpy(hs->e_priv, private_key, NOISE_KEY_LEN);
	hs->e_fixed = true;
	return PKS_OK;
}

int noise_handshake_set_rng(struct noise_handshake *hs, noise_rng_fn rng, void *user_data)
{
	if (hs == NULL || rng == NULL)
		return PKS_ERR_INVALID;
	if (hs->state != NOISE_STATE_CONFIG)
		return PKS_ERR_STATE;
	hs->rng = rng;
	hs->rng_user_data = user_data;
	return PKS_OK;
}

int noise_handshake_start(struct noise_handshake *hs)
{
	bool initiator, need_s = false, need_e = false;
	uint8_t our_pre, their_pre;

	if (hs == NULL)
		return PKS_ERR_INVALID;
	if (hs->state != NOISE_STATE_CONFIG)
		return PKS_ERR_STATE;
	initiator = hs->role == NOISE_ROLE_INITIATOR;
	our_pre = initiator ? hs->pattern.pre_initiator : hs->pattern.pre_responder;
	their_pre = initiator ? hs->pattern.pre_responder : hs->pattern.pre_initiator;
	need_s = (our_pre & NOISE_PRE_S) != 0;
	for (size_t i = 0; i < hs->pattern.nmessages; i++) {
		const struct noise_message_pattern *mp = &hs->pattern.messages[i];
		if (mp->from_initiator != initiator)
			continue;
		for (size_t t = 0; t < mp->ntokens; t++) {
			if (mp->tokens[t] == NOISE_TOKEN_S)
				need_s = true;
			if (mp->tokens[t] == NOISE_TOKEN_E)
				need_e = true;
		}
	}
	if (need_s && !hs->has_s)
		return PKS_ERR_STATE;
	if ((their_pre & NOISE_PRE_S) != 0 && !hs->has_rs)
		return PKS_ERR_STATE;
	if (need_e && !hs->e_fixed && hs->rng == NULL)
		return PKS_ERR_STATE;
	if (hs->psks_set != (1u << hs->pattern.npsks) - 1)
		return PKS_ERR_STATE;

	if (!hs->prologue_set)
		noise_mix_hash(hs, NULL, 0);
	/* Pre-messages: the initiator's first, then the responder's. */
	if ((hs->pattern.pre_initiator & NOISE_PRE_S) != 0)
		noise_mix_hash(hs, initiator ? hs->s_pub : hs->rs, NOISE_KEY_LEN);
	if ((hs->pattern.pre_responder & NOISE_PRE_S) != 0)
		noise_mix_hash(hs, initiator ? hs->rs : hs->s_pub, NOISE_KEY_LEN);
	hs->state = NOISE_STATE_RUNNING;
	return PKS_OK;
}

enum noise_action noise_handshake_action(const struct noise_handshake *hs)
{
	if (hs == NULL)
		return NOISE_ACTION_FAILED;
	switch (hs->state) {
	case NOISE_STATE_CONFIG:
		return NOISE_ACTION_NONE;
	case NOISE_STATE_RUNNING:
		return noise_our_turn(hs) ? NOISE_ACTION_WRITE_MESSAGE : NOISE_ACTION_READ_MESSAGE;
	case NOISE_STATE_READY:
		return NOISE_ACTION_SPLIT;
	case NOISE_STATE_COMPLETE:
		return NOISE_ACTION_COMPLETE;
	case NOISE_STATE_FAILED:
		break;
	}
	return NOISE_ACTION_FAILED;
}

/* Generates (or takes the fixed) ephemeral key pair. */
static int noise_generate_ephemeral(struct noise_handshake *hs)
{
	if (!hs->e_fixed) {
		if (hs->rng == NULL)
			return PKS_ERR_STATE;
		hs->rng(hs->rng_user_data, hs->e_priv, NOISE_KEY_LEN);
	}
	if (crypto_scalarmult_base(hs->e_pub, hs->e_priv) != 0)
		return PKS_ERR_CRYPTO;
	hs->has_e = true;
	return PKS_OK;
}

static void noise_message_done(struct noise_handshake *hs)
{
	hs->msg_index++;
	if (hs->msg_index == hs->pattern.nmessages)
		hs->state = NOISE_STATE_READY;
}

int noise_handshake_write_message(struct noise_handshake *hs, const uint8_t *payload,
				  size_t payload_len, uint8_t *out, size_t out_cap, size_t *out_len)
{
	const struct noise_message_pattern *mp;
	size_t size, pos = 0, n = 0;
	int r = PKS_ERR_INTERNAL;

	if (hs == NULL || out == NULL || out_len == NULL || (payload == NULL && payload_len > 0))
		return PKS_ERR_INVALID;
	if (hs->state != NOISE_STATE_RUNNING || !noise_our_turn(hs))
		return PKS_ERR_STATE;
	mp = &hs->pattern.messages[hs->msg_index];
	if (payload_len > NOISE_MAX_MESSAGE)
		return PKS_ERR_TOO_LARGE;
	size = noise_message_size(hs, mp, payload_len);
	if (size > NOISE_MAX_MESSAGE || size > out_cap)
		return PKS_ERR_TOO_LARGE;

	for (size_t i = 0; i < mp->ntokens; i++) {
		enum noise_token tok = (enum noise_token)mp->tokens[i];
		switch (tok) {
		case NOISE_TOKEN_E:
			r = noise_generate_ephemeral(hs);
			if (r != PKS_OK)
				goto out;
			memcpy(out + pos, hs->e_pub, NOISE_KEY_LEN);
			pos += NOISE_KEY_LEN;
			noise_mix_hash(hs, hs->e_pub, NOISE_KEY_LEN);
			if (hs->pattern.npsks > 0)
				noise_mix_key(hs, hs->e_pub, NOISE_KEY_LEN);
			break;
		case NOISE_TOKEN_S:
			r = noise_encrypt_and_hash(hs, hs->s_pub, NOISE_KEY_LEN, out + pos, &n);
			if (r != PKS_OK)
				goto out;
			pos += n;
			break;
		case NOISE_TOKEN_EE:
		case NOISE_TOKEN_ES:
		case NOISE_TOKEN_SE:
		case NOISE_TOKEN_SS:
			r = noise_process_dh(hs, tok);
			if (r != PKS_OK)
				goto out;
			break;
		case NOISE_TOKEN_PSK:
			r = noise_process_psk(hs);
			if (r != PKS_OK)
				goto out;
			break;
		}
	}
	r = noise_encrypt_and_hash(hs, payload, payload_len, out + pos, &n);
	if (r != PKS_OK)
		goto out;
	pos += n;
	if (pos != size) {
		r = PKS_ERR_INTERNAL;
		goto out;
	}
	noise_message_done(hs);
	*out_len = pos;
	r = PKS_OK;
out:
	if (r != PKS_OK) {
		sodium_memzero(out, out_cap < size ? out_cap : size);
		noise_handshake_fail(hs);
	}
	return r;
}

int noise_handshake_read_message(struct noise_handshake *hs, const uint8_t *msg, size_t len,
				 uint8_t *payload_out, size_t cap, size_t *payload_len)
{
	const struct noise_message_pattern *mp;
	size_t overhead, plen, pos = 0;
	int r = PKS_ERR_INTERNAL;

	if (hs == NULL || payload_len == NULL || (msg == NULL && len > 0) ||
	    (payload_out == NULL && cap > 0))
		return PKS_ERR_INVALID;
	if (hs->state != NOISE_STATE_RUNNING || noise_our_turn(hs))
		return PKS_ERR_STATE;
	mp = &hs->pattern.messages[hs->msg_index];
	overhead = noise_message_size(hs, mp, 0);
	if (len > NOISE_MAX_MESSAGE) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	if (len < overhead) {
		r = PKS_ERR_TRUNCATED;
		goto out;
	}
	plen = len - overhead;
	/* The caller may retry with a larger buffer: nothing has changed yet. */
	if (plen > cap)
		return PKS_ERR_TOO_LARGE;

	for (size_t i = 0; i < mp->ntokens; i++) {
		enum noise_token tok = (enum noise_token)mp->tokens[i];
		size_t n;
		switch (tok) {
		case NOISE_TOKEN_E:
			memcpy(hs->re, msg + pos, NOISE_KEY_LEN);
			hs->has_re = true;
			pos += NOISE_KEY_LEN;
			noise_mix_hash(hs, hs->re, NOISE_KEY_LEN);
			if (hs->pattern.npsks > 0)
				noise_mix_key(hs, hs->re, NOISE_KEY_LEN);
			break;
		case NOISE_TOKEN_S:
			n = NOISE_KEY_LEN + (hs->has_key ? NOISE_TAG_LEN : 0);
			r = noise_decrypt_and_hash(hs, msg + pos, n, hs->rs);
			if (r != PKS_OK)
				goto out;
			hs->has_rs = true;
			pos += n;
			break;
		case NOISE_TOKEN_EE:
		case NOISE_TOKEN_ES:
		case NOISE_TOKEN_SE:
		case NOISE_TOKEN_SS:
			r = noise_process_dh(hs, tok);
			if (r != PKS_OK)
				goto out;
			break;
		case NOISE_TOKEN_PSK:
			r = noise_process_psk(hs);
			if (r != PKS_OK)
				goto out;
			break;
		}
	}
	if (len - pos != plen + (hs->has_key ? NOISE_TAG_LEN : 0)) {
		r = PKS_ERR_INTERNAL;
		goto out;
	}
	r = noise_decrypt_and_hash(hs, msg + pos, len - pos, payload_out);
	if (r != PKS_OK)
		goto out;
	noise_message_done(hs);
	*payload_len = plen;
	r = PKS_OK;
out:
	if (r != PKS_OK) {
		if (payload_out != NULL)
			sodium_memzero(payload_out, cap);
		noise_handshake_fail(hs);
	}
	return r;
}

static int noise_cipher_new(const uint8_t *key, struct noise_cipher **out)
{
	struct noise_cipher *c = sodium_malloc(sizeof(*c));

	if (c == NULL)
		return PKS_ERR_NOMEM;
	memcpy(c->k, key, NOISE_CIPHER_KEY_LEN);
	c->n = 0;
	*out = c;
	return PKS_OK;
}

int noise_handshake_split(struct noise_handshake *hs, struct noise_cipher **send,
			  struct noise_cipher **recv)
{
	uint8_t k1[NOISE_MAX_HASH_LEN], k2[NOISE_MAX_HASH_LEN];
	struct noise_cipher *c1 = NULL, *c2 = NULL;
	bool one_way;
	int r = PKS_ERR_INTERNAL;

	if (hs == NULL || send == NULL || recv == NULL)
		return PKS_ERR_INVALID;
	if (hs->state != NOISE_STATE_READY)
		return PKS_ERR_STATE;
	one_way = hs->pattern.nmessages == 1;
	noise_hkdf(hs->hash, hs->ck, NULL, 0, k1, k2, NULL);
	r = noise_cipher_new(k1, &c1);
	if (r != PKS_OK)
		goto out;
	if (!one_way) {
		r = noise_cipher_new(k2, &c2);
		if (r != PKS_OK)
			goto out;
	}
	if (hs->role == NOISE_ROLE_INITIATOR) {
		*send = c1;
		*recv = c2;
	} else {
		*send = c2;
		*recv = c1;
	}
	c1 = NULL;
	c2 = NULL;
	hs->state = NOISE_STATE_COMPLETE;
	sodium_memzero(hs->ck, sizeof(hs->ck));
	sodium_memzero(hs->k, sizeof(hs->k));
	sodium_memzero(hs->e_priv, sizeof(hs->e_priv));
	sodium_memzero(hs->s_priv, sizeof(hs->s_priv));
	hs->has_key = false;
	r = PKS_OK;
out:
	noise_cipher_free(c1);
	noise_cipher_free(c2);
	sodium_memzero(k1, sizeof(k1));
	sodium_memzero(k2, sizeof(k2));
	return r;
}

int noise_handshake_hash(const struct noise_handshake *hs, uint8_t *out, size_t cap,
			 size_t *out_len)
{
	if (hs == NULL || out == NULL || out_len == NULL)
		return PKS_ERR_INVALID;
	if (hs->state != NOISE_STATE_READY && hs->state != NOISE_STATE_COMPLETE)
		return PKS_ERR_STATE;
	if (cap < hs->hash->hashlen)
		return PKS_ERR_TOO_LARGE;
	memcpy(out, hs->h, hs->hash->hashlen);
	*out_len = hs->hash->hashlen;
	return PKS_OK;
}

int noise_handshake_remote_static(const struct noise_handshake *hs,
				  uint8_t public_key[NOISE_KEY_LEN])
{
	if (hs == NULL || public_key == NULL)
		return PKS_ERR_INVALID;
	if (hs->state == NOISE_STATE_FAILED || !hs->has_rs)
		return PKS_ERR_STATE;
	memcpy(public_key, hs->rs, NOISE_KEY_LEN);
	return PKS_OK;
}

/* ---- transport ---- */

int noise_cipher_encrypt(struct noise_cipher *c, const uint8_t *ad, size_t ad_len,
			 const uint8_t *plaintext, size_t plaintext_len, uint8_t *out,
			 size_t out_cap, size_t *out_len)
{
	int r;

	if (c == NULL || out == NULL || out_len == NULL || (ad == NULL && ad_len > 0) ||
	    (plaintext == NULL && plaintext_len > 0))
		return PKS_ERR_INVALID;
	if (plaintext_len > NOISE_MAX_PAYLOAD || out_cap < plaintext_len + NOISE_TAG_LEN)
		return PKS_ERR_TOO_LARGE;
	if (c->n == NOISE_NONCE_MAX)
		return PKS_ERR_STATE;
	r = noise_aead_encrypt(c->k, c->n, ad, ad_len, plaintext, plaintext_len, out);
	if (r != PKS_OK)
		return r;
	c->n++;
	*out_len = plaintext_len + NOISE_TAG_LEN;
	return PKS_OK;
}

int noise_cipher_decrypt(struct noise_cipher *c, const uint8_t *ad, size_t ad_len,
			 const uint8_t *ciphertext, size_t len, uint8_t *out, size_t out_cap,
			 size_t *out_len)
{
	int r;

	if (c == NULL || out_len == NULL || (ad == NULL && ad_len > 0) ||
	    (ciphertext == NULL && len > 0) || (out == NULL && out_cap > 0))
		return PKS_ERR_INVALID;
	if (len > NOISE_MAX_MESSAGE)
		return PKS_ERR_TOO_LARGE;
	if (len < NOISE_TAG_LEN)
		return PKS_ERR_TRUNCATED;
	if (out_cap < len - NOISE_TAG_LEN)
		return PKS_ERR_TOO_LARGE;
	if (c->n == NOISE_NONCE_MAX)
		return PKS_ERR_STATE;
	r = noise_aead_decrypt(c->k, c->n, ad, ad_len, ciphertext, len, out);
	if (r != PKS_OK)
		return r;
	c->n++;
	*out_len = len - NOISE_TAG_LEN;
	return PKS_OK;
}

int noise_cipher_rekey(struct noise_cipher *c)
{
	uint8_t zeros[NOISE_CIPHER_KEY_LEN] = {0};
	uint8_t tmp[NOISE_CIPHER_KEY_LEN + NOISE_TAG_LEN];
	int r;

	if (c == NULL)
		return PKS_ERR_INVALID;
	r = noise_aead_encrypt(c->k, NOISE_NONCE_MAX, NULL, 0, zeros, sizeof(zeros), tmp);
	if (r == PKS_OK)
		memcpy(c->k, tmp, NOISE_CIPHER_KEY_LEN);
	sodium_memzero(tmp, sizeof(tmp));
	return r;
}

int noise_cipher_set_nonce(struct noise_cipher *c, uint64_t nonce)
{
	if (c == NULL)
		return PKS_ERR_INVALID;
	c->n = nonce;
	return PKS_OK;
}

void noise_cipher_free(struct noise_cipher *c)
{
	if (c != NULL)
		sodium_free(c);
}
