/*
 * CPace (draft-irtf-cfrg-cpace-21), CPACE-RISTR255-SHA512, composed from
 * libsodium's ristretto255 group operations and SHA-512.
 *
 * The draft's strings are hashed as streams so the PRS never lands in a
 * buffer of ours; the SHA-512 state that saw it is wiped.
 */
#include "proto/cpace.h"

#include <sodium.h>
#include <string.h>

#include "common/bytes.h"
#include "common/err.h"

/* G_Ristretto255.DSI and the ISK label derived from it. */
static const char CPACE_DSI[] = "CPaceRistretto255";
static const char CPACE_DSI_ISK[] = "CPaceRistretto255_ISK";
static const char CPACE_SID_OUTPUT_LABEL[] = "CPaceSidOutput";
/* o_cat's prefix: the transcript was ordered, not sent in a fixed order. */
static const char CPACE_OC_PREFIX[] = "oc";
/* SHA-512's input block size, H.s_in_bytes. */
#define CPACE_HASH_BLOCK_BYTES 128
/* A LEB128 length up to CPACE_FIELD_MAX takes at most two bytes; allow three on input. */
#define CPACE_LEB128_MAX_BYTES 3

enum cpace_state {
	CPACE_STATE_READY,
	CPACE_STATE_DONE,
	CPACE_STATE_FAILED,
};

struct cpace {
	enum cpace_role role;
	enum cpace_state state;
	uint8_t scalar[CPACE_SCALAR_BYTES];
	uint8_t y[CPACE_POINT_BYTES];
	/* Our message, lv_cat(Y, AD): the transcript uses it as sent. */
	uint8_t msg[CPACE_MESSAGE_MAX];
	size_t msg_len;
	uint8_t sid[CPACE_FIELD_MAX];
	size_t sid_len;
	uint8_t sid_output[CPACE_SID_OUTPUT_BYTES];
};

/* LEB128 of n into out (room for 10 bytes); returns the number of bytes. */
static size_t cpace_leb128_encode(uint8_t *out, size_t n)
{
	size_t i = 0;

	do {
		uint8_t b = (uint8_t)(n & 0x7f);
		n >>= 7;
		if (n != 0)
			b |= 0x80;
		out[i++] = b;
	} while (n != 0);
	return i;
}

static size_t cpace_leb128_size(size_t n)
{
	uint8_t tmp[10];

	return cpace_leb128_encode(tmp, n);
}

/*
 * Reads a minimal LEB128 length of at most CPACE_LEB128_MAX_BYTES bytes.
 * A longer or non-minimal encoding is refused: the transcript must be the
 * one canonical encoding of the message's parts.
 */
static int cpace_leb128_read(struct pks_cursor *cur, size_t *out)
{
	size_t value = 0;
	uint8_t b = 0;
	int r;

	for (size_t i = 0; i < CPACE_LEB128_MAX_BYTES; i++) {
		r = pks_cursor_u8(cur, &b);
		if (r != PKS_OK)
			return PKS_ERR_MALFORMED;
		value |= (size_t)(b & 0x7f) << (7 * i);
		if ((b & 0x80) == 0) {
			if (b == 0 && i > 0)
				return PKS_ERR_MALFORMED;
			*out = value;
			return PKS_OK;
		}
	}
	return PKS_ERR_TOO_LARGE;
}

/* Feeds prepend_len(data) to the hash. */
static void cpace_hash_lv(crypto_hash_sha512_state *st, const void *data, size_t len)
{
	uint8_t prefix[10];
	size_t n = cpace_leb128_encode(prefix, len);

	crypto_hash_sha512_update(st, prefix, n);
	if (len > 0)
		crypto_hash_sha512_update(st, data, len);
}

static int cpace_fields_ok(size_t prs_len, size_t ci_len, size_t sid_len)
{
	return prs_len <= CPACE_FIELD_MAX && ci_len <= CPACE_FIELD_MAX &&
	       sid_len <= CPACE_FIELD_MAX;
}

int cpace_calculate_generator(uint8_t g[CPACE_POINT_BYTES], const uint8_t *prs, size_t prs_len,
			      const uint8_t *ci, size_t ci_len, const uint8_t *sid, size_t sid_len)
{
	static const uint8_t zeros[CPACE_HASH_BLOCK_BYTES];
	crypto_hash_sha512_state st;
	uint8_t hash[crypto_hash_sha512_BYTES];
	size_t dsi_len = sizeof(CPACE_DSI) - 1;
	size_t used, zpad_len = 0;
	int r = PKS_ERR_INVALID;

	if (!cpace_fields_ok(prs_len, ci_len, sid_len) || (prs == NULL && prs_len > 0) ||
	    (ci == NULL && ci_len > 0) || (sid == NULL && sid_len > 0))
		goto out;
	if (sodium_init() < 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	/*
	 * The zero padding makes lv(DSI) || lv(PRS) || lv(zpad) fill the first
	 * hash block whatever the PRS length, as the draft's generator_string.
	 */
	used = 1 + cpace_leb128_size(prs_len) + prs_len + cpace_leb128_size(dsi_len) + dsi_len;
	if (used < CPACE_HASH_BLOCK_BYTES)
		zpad_len = CPACE_HASH_BLOCK_BYTES - used;

	crypto_hash_sha512_init(&st);
	cpace_hash_lv(&st, CPACE_DSI, dsi_len);
	cpace_hash_lv(&st, prs, prs_len);
	cpace_hash_lv(&st, zeros, zpad_len);
	cpace_hash_lv(&st, ci, ci_len);
	cpace_hash_lv(&st, sid, sid_len);
	crypto_hash_sha512_final(&st, hash);
	if (crypto_core_ristretto255_from_hash(g, hash) != 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	r = PKS_OK;
out:
	sodium_memzero(&st, sizeof(st));
	sodium_memzero(hash, sizeof(hash));
	return r;
}

int cpace_scalar_mult_vfy(uint8_t out[CPACE_POINT_BYTES], const uint8_t scalar[CPACE_SCALAR_BYTES],
			  const uint8_t point[CPACE_POINT_BYTES])
{
	uint8_t k[CPACE_POINT_BYTES];
	int r = PKS_ERR_MALFORMED;

	if (sodium_init() < 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	if (crypto_core_ristretto255_is_valid_point(point) != 1)
		goto out;
	/* libsodium refuses an identity result, which is the draft's K = G.I abort. */
	if (crypto_scalarmult_ristretto255(k, scalar, point) != 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	memcpy(out, k, sizeof(k));
	r = PKS_OK;
out:
	sodium_memzero(k, sizeof(k));
	return r;
}

/* The secret scalar from the caller's value or from 64 bytes of its randomness. */
static int cpace_pick_scalar(struct cpace *c, const struct cpace_config *cfg)
{
	uint8_t wide[crypto_core_ristretto255_NONREDUCEDSCALARBYTES] = {0};
	int r = PKS_ERR_INVALID;

	if (cfg->scalar != NULL)
		memcpy(wide, cfg->scalar, CPACE_SCALAR_BYTES);
	else
		cfg->rng(cfg->rng_user_data, wide, sizeof(wide));
	crypto_core_ristretto255_scalar_reduce(c->scalar, wide);
	if (sodium_is_zero(c->scalar, sizeof(c->scalar))) {
		/* A zero scalar would send the identity; from rng it means rng is broken. */
		r = cfg->scalar != NULL ? PKS_ERR_INVALID : PKS_ERR_CRYPTO;
		goto out;
	}
	r = PKS_OK;
out:
	sodium_memzero(wide, sizeof(wide));
	return r;
}

int cpace_new(struct cpace **out, const struct cpace_config *cfg)
{
	struct cpace *c = NULL;
	uint8_t g[CPACE_POINT_BYTES];
	size_t n;
	int r = PKS_ERR_INVALID;

	if (out == NULL || cfg == NULL)
		goto out;
	switch (cfg->role) {
	case CPACE_ROLE_INITIATOR:
	case CPACE_ROLE_RESPONDER:
	case CPACE_ROLE_SYMMETRIC:
		break;
	default:
		goto out;
	}
	if (cfg->prs == NULL || cfg->prs_len == 0 || cfg->ad_len > CPACE_FIELD_MAX ||
	    (cfg->ad == NULL && cfg->ad_len > 0) ||
	    !cpace_fields_ok(cfg->prs_len, cfg->ci_len, cfg->sid_len))
		goto out;
	if ((cfg->scalar == NULL) == (cfg->rng == NULL))
		goto out;
	if (sodium_init() < 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	c = sodium_malloc(sizeof(*c));
	if (c == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	sodium_memzero(c, sizeof(*c));
	c->role = cfg->role;
	c->state = CPACE_STATE_READY;
	r = cpace_pick_scalar(c, cfg);
	if (r != PKS_OK)
		goto out;
	r = cpace_calculate_generator(g, cfg->prs, cfg->prs_len, cfg->ci, cfg->ci_len, cfg->sid,
				      cfg->sid_len);
	if (r != PKS_OK)
		goto out;
	if (crypto_scalarmult_ristretto255(c->y, c->scalar, g) != 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	if (cfg->sid_len > 0)
		memcpy(c->sid, cfg->sid, cfg->sid_len);
	c->sid_len = cfg->sid_len;

	n = cpace_leb128_encode(c->msg, sizeof(c->y));
	memcpy(c->msg + n, c->y, sizeof(c->y));
	n += sizeof(c->y);
	n += cpace_leb128_encode(c->msg + n, cfg->ad_len);
	if (cfg->ad_len > 0)
		memcpy(c->msg + n, cfg->ad, cfg->ad_len);
	c->msg_len = n + cfg->ad_len;

	*out = c;
	c = NULL;
	r = PKS_OK;
out:
	sodium_memzero(g, sizeof(g));
	cpace_free(c);
	return r;
}

void cpace_free(struct cpace *c)
{
	/* sodium_free wipes the whole allocation before releasing it. */
	if (c != NULL)
		sodium_free(c);
}

void cpace_public_share(const struct cpace *c, uint8_t y[CPACE_POINT_BYTES])
{
	memcpy(y, c->y, CPACE_POINT_BYTES);
}

int cpace_message(const struct cpace *c, uint8_t *out, size_t out_cap, size_t *out_len)
{
	if (c == NULL || out == NULL || out_len == NULL)
		return PKS_ERR_INVALID;
	if (out_cap < c->msg_len)
		return PKS_ERR_TOO_LARGE;
	memcpy(out, c->msg, c->msg_len);
	*out_len = c->msg_len;
	return PKS_OK;
}

/* Splits a peer message into Y; the rest must be exactly lv(AD). */
static int cpace_parse_message(const uint8_t *msg, size_t msg_len, const uint8_t **y)
{
	struct pks_cursor cur = pks_cursor_init(msg, msg_len);
	const uint8_t *ad;
	size_t y_len = 0, ad_len = 0;
	int r;

	if (msg == NULL || msg_len > CPACE_MESSAGE_MAX)
		return msg == NULL ? PKS_ERR_MALFORMED : PKS_ERR_TOO_LARGE;
	r = cpace_leb128_read(&cur, &y_len);
	if (r != PKS_OK)
		return r;
	if (y_len != CPACE_POINT_BYTES)
		return PKS_ERR_MALFORMED;
	if (pks_cursor_take(&cur, y_len, y) != PKS_OK)
		return PKS_ERR_MALFORMED;
	r = cpace_leb128_read(&cur, &ad_len);
	if (r != PKS_OK)
		return r;
	if (ad_len > CPACE_FIELD_MAX)
		return PKS_ERR_TOO_LARGE;
	if (pks_cursor_take(&cur, ad_len, &ad) != PKS_OK || pks_cursor_left(&cur) != 0)
		return PKS_ERR_MALFORMED;
	return PKS_OK;
}

/* lexiographically_larger(a, b) of the draft: byte order, then the longer one. */
static int cpace_larger(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
	size_t n = a_len < b_len ? a_len : b_len;

	for (size_t i = 0; i < n; i++) {
		if (a[i] != b[i])
			return a[i] > b[i];
	}
	return a_len > b_len;
}

/*
 * Feeds the transcript: MSGa || MSGb for initiator-responder, o_cat(MSGa,
 * MSGb) for symmetric. Both messages are public.
 */
static void cpace_hash_transcript(crypto_hash_sha512_state *st, const struct cpace *c,
				  const uint8_t *peer, size_t peer_len)
{
	const uint8_t *first = c->msg, *second = peer;
	size_t first_len = c->msg_len, second_len = peer_len;

	if (c->role == CPACE_ROLE_SYMMETRIC) {
		crypto_hash_sha512_update(st, (const uint8_t *)CPACE_OC_PREFIX,
					  sizeof(CPACE_OC_PREFIX) - 1);
		if (!cpace_larger(c->msg, c->msg_len, peer, peer_len)) {
			first = peer;
			first_len = peer_len;
			second = c->msg;
			second_len = c->msg_len;
		}
	} else if (c->role == CPACE_ROLE_RESPONDER) {
		first = peer;
		first_len = peer_len;
		second = c->msg;
		second_len = c->msg_len;
	}
	crypto_hash_sha512_update(st, first, first_len);
	crypto_hash_sha512_update(st, second, second_len);
}

int cpace_derive(struct cpace *c, const uint8_t *peer_msg, size_t peer_msg_len,
		 uint8_t isk[CPACE_ISK_BYTES])
{
	crypto_hash_sha512_state st;
	uint8_t k[CPACE_POINT_BYTES];
	uint8_t key[CPACE_ISK_BYTES];
	const uint8_t *peer_y = NULL;
	int r = PKS_ERR_INVALID;

	if (c == NULL || isk == NULL)
		return r;
	r = PKS_ERR_STATE;
	if (c->state != CPACE_STATE_READY)
		goto out;
	c->state = CPACE_STATE_FAILED;
	r = cpace_parse_message(peer_msg, peer_msg_len, &peer_y);
	if (r != PKS_OK)
		goto out;
	r = cpace_scalar_mult_vfy(k, c->scalar, peer_y);
	if (r != PKS_OK)
		goto out;

	/* ISK = H(lv_cat(DSI || "_ISK", sid, K) || transcript) */
	crypto_hash_sha512_init(&st);
	cpace_hash_lv(&st, CPACE_DSI_ISK, sizeof(CPACE_DSI_ISK) - 1);
	cpace_hash_lv(&st, c->sid, c->sid_len);
	cpace_hash_lv(&st, k, sizeof(k));
	cpace_hash_transcript(&st, c, peer_msg, peer_msg_len);
	crypto_hash_sha512_final(&st, key);

	/* sid_output = H("CPaceSidOutput" || transcript) */
	crypto_hash_sha512_init(&st);
	crypto_hash_sha512_update(&st, (const uint8_t *)CPACE_SID_OUTPUT_LABEL,
				  sizeof(CPACE_SID_OUTPUT_LABEL) - 1);
	cpace_hash_transcript(&st, c, peer_msg, peer_msg_len);
	crypto_hash_sha512_final(&st, c->sid_output);

	memcpy(isk, key, sizeof(key));
	c->state = CPACE_STATE_DONE;
	r = PKS_OK;
out:
	/* One run per scalar: whatever happened, it is gone now. */
	sodium_memzero(c->scalar, sizeof(c->scalar));
	sodium_memzero(&st, sizeof(st));
	sodium_memzero(k, sizeof(k));
	sodium_memzero(key, sizeof(key));
	return r;
}

int cpace_sid_output(const struct cpace *c, uint8_t out[CPACE_SID_OUTPUT_BYTES])
{
	if (c == NULL || out == NULL)
		return PKS_ERR_INVALID;
	if (c->state != CPACE_STATE_DONE)
		return PKS_ERR_STATE;
	memcpy(out, c->sid_output, CPACE_SID_OUTPUT_BYTES);
	return PKS_OK;
}
