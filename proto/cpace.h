/*
 * CPace, the balanced PAKE of draft-irtf-cfrg-cpace-21, in the suite
 * CPACE-RISTR255-SHA512 (ristretto255 with SHA-512), on libsodium.
 *
 * Two parties holding the same password-related string (PRS, here the pairing
 * code), channel identifier (CI) and session id (sid) each send one message;
 * each then derives the same 64-byte intermediate session key (ISK) if and
 * only if PRS, CI and sid match and both saw the same two messages. A wrong
 * code does not fail the exchange: it yields unrelated ISKs, which the caller
 * detects by key confirmation (here: the Noise handshake keyed by the ISK).
 *
 * A message is the draft's lv_cat(Y, AD): LEB128 length || Y (32 bytes) ||
 * LEB128 length || AD. The module does no I/O and no randomness of its own:
 * the caller injects the secret scalar or a randomness callback.
 */
#ifndef PKS_CPACE_H
#define PKS_CPACE_H

#include <stddef.h>
#include <stdint.h>

/* Encoded ristretto255 element (Y, K, the generator). */
#define CPACE_POINT_BYTES 32
/* Little-endian ristretto255 scalar. */
#define CPACE_SCALAR_BYTES 32
/* SHA-512 output: the ISK and the optional sid output. */
#define CPACE_ISK_BYTES 64
#define CPACE_SID_OUTPUT_BYTES 64
/* Hard limit on each of PRS, CI, sid and AD (ours and the peer's). */
#define CPACE_FIELD_MAX 1024
/* The longest message: lv(Y) || lv(AD) with AD at CPACE_FIELD_MAX. */
#define CPACE_MESSAGE_MAX (1 + CPACE_POINT_BYTES + 2 + CPACE_FIELD_MAX)

/*
 * The role fixes how the transcript is ordered. INITIATOR and RESPONDER use
 * the initiator-responder transcript (ISK_IR: the initiator's message first);
 * SYMMETRIC, for when neither side is first, uses the ordered concatenation
 * o_cat (ISK_SY). Both parties must agree on IR versus SY.
 */
enum cpace_role {
	CPACE_ROLE_INITIATOR,
	CPACE_ROLE_RESPONDER,
	CPACE_ROLE_SYMMETRIC,
};

/* Fills buf with n uniformly random bytes; must not fail. */
typedef void (*cpace_rng_fn)(void *user_data, uint8_t *buf, size_t n);

/*
 * Everything cpace_new() needs. All pointers are borrowed for the call only;
 * nothing is kept but copies of sid and ad (public) and the derived secret
 * scalar. Empty fields may be NULL with length 0.
 *
 * prs:    the password-related string, 1..CPACE_FIELD_MAX bytes (secret).
 * ci:     channel identifier, 0..CPACE_FIELD_MAX bytes (public, e.g. both
 *         parties' names, each length-prefixed).
 * sid:    session id, 0..CPACE_FIELD_MAX bytes (public, should be fresh and
 *         agreed by both sides, at least 8 bytes).
 * ad:     our associated data, 0..CPACE_FIELD_MAX bytes, sent in our message.
 * scalar: if not NULL, the secret scalar to use (tests and vectors); it is
 *         reduced mod the group order and must not be zero. Otherwise rng is
 *         called for 64 bytes that are reduced to a uniform scalar.
 */
struct cpace_config {
	enum cpace_role role;
	const uint8_t *prs;
	size_t prs_len;
	const uint8_t *ci;
	size_t ci_len;
	const uint8_t *sid;
	size_t sid_len;
	const uint8_t *ad;
	size_t ad_len;
	const uint8_t *scalar;
	cpace_rng_fn rng;
	void *rng_user_data;
};

/* One party's side of one CPace run. Opaque; the scalar is kept in guarded memory. */
struct cpace;

/*
 * Computes the generator and our public share. *out is owned by the caller
 * and freed with cpace_free(); it is written only on success.
 * PKS_ERR_INVALID: bad role, a field too long, empty PRS, neither or both of
 * scalar and rng, or a zero scalar. PKS_ERR_NOMEM, PKS_ERR_CRYPTO (libsodium
 * refused; practically never).
 */
int cpace_new(struct cpace **out, const struct cpace_config *cfg);

/* Wipes the scalar and key material and frees the object. NULL is fine. */
void cpace_free(struct cpace *c);

/* Our public share Y (not secret). */
void cpace_public_share(const struct cpace *c, uint8_t y[CPACE_POINT_BYTES]);

/*
 * Writes our message lv_cat(Y, AD) to out (capacity out_cap; CPACE_MESSAGE_MAX
 * always suffices) and its length to *out_len. PKS_ERR_TOO_LARGE if out_cap
 * is too small.
 */
int cpace_message(const struct cpace *c, uint8_t *out, size_t out_cap, size_t *out_len);

/*
 * Takes the peer's message and writes the ISK. Single use: after the first
 * call, successful or not, the scalar is wiped and later calls give
 * PKS_ERR_STATE. The ISK is secret; the caller owns and wipes it.
 * PKS_ERR_MALFORMED: the message does not parse exactly as lv_cat(Y, AD)
 * with minimal LEB128 lengths, or Y is not a valid ristretto255 encoding.
 * PKS_ERR_TOO_LARGE: the peer's AD exceeds CPACE_FIELD_MAX.
 * PKS_ERR_CRYPTO: Y decodes but the shared point K is the identity (the
 * peer sent the identity); the draft's abort.
 */
int cpace_derive(struct cpace *c, const uint8_t *peer_msg, size_t peer_msg_len,
		 uint8_t isk[CPACE_ISK_BYTES]);

/*
 * The draft's optional session id output, SHA-512("CPaceSidOutput" ||
 * transcript), with the IR or OC transcript as the role says. Public; both
 * parties get the same value. PKS_ERR_STATE before a successful derive.
 */
int cpace_sid_output(const struct cpace *c, uint8_t out[CPACE_SID_OUTPUT_BYTES]);

/*
 * Building blocks, exported for the interop vectors; cpace_new() and
 * cpace_derive() use exactly these.
 *
 * cpace_calculate_generator: g = from_hash(SHA-512(lv_cat("CPaceRistretto255",
 * PRS, zero_bytes(len_zpad), CI, sid))), with the same length limits as
 * struct cpace_config (PRS may be empty here). PKS_ERR_INVALID on limits.
 */
int cpace_calculate_generator(uint8_t g[CPACE_POINT_BYTES], const uint8_t *prs, size_t prs_len,
			      const uint8_t *ci, size_t ci_len, const uint8_t *sid, size_t sid_len);

/*
 * scalar_mult_vfy: out = scalar * decode(point). PKS_ERR_MALFORMED if point
 * is not a valid encoding, PKS_ERR_CRYPTO if the result is the identity.
 * out is written only on success.
 */
int cpace_scalar_mult_vfy(uint8_t out[CPACE_POINT_BYTES], const uint8_t scalar[CPACE_SCALAR_BYTES],
			  const uint8_t point[CPACE_POINT_BYTES]);

#endif
