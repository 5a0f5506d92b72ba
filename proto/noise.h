/*
 * The Noise Protocol Framework (revision 34) on libsodium.
 *
 * A handshake is built from a protocol name such as
 * "Noise_XXpsk0+psk3_25519_ChaChaPoly_BLAKE2b": the pattern may be any
 * fundamental one-way (N K X) or interactive (NN ... IX) pattern or any
 * deferred pattern (NK1 ... I1X1), with any number of pskN modifiers. The
 * suite is DH 25519, cipher ChaChaPoly, hash BLAKE2b, SHA256 or SHA512;
 * other names (448, AESGCM, BLAKE2s, the fallback modifier) give
 * PKS_ERR_UNSUPPORTED.
 *
 * The module does no I/O and has no randomness of its own: the caller
 * injects a randomness callback (or a fixed ephemeral key for test vectors).
 *
 * Life of a handshake:
 *   noise_handshake_new()           name and role
 *   noise_handshake_set_*()         prologue, keys, psks, randomness
 *   noise_handshake_start()
 *   loop on noise_handshake_action():
 *     NOISE_ACTION_WRITE_MESSAGE -> noise_handshake_write_message()
 *     NOISE_ACTION_READ_MESSAGE  -> noise_handshake_read_message()
 *     NOISE_ACTION_SPLIT         -> noise_handshake_split(), done
 *     NOISE_ACTION_FAILED        -> give up; the object is dead
 *   noise_handshake_free()
 *
 * Errors common to every function below:
 *   PKS_ERR_STATE    the call is not valid now (wrong order, before start,
 *                    after split or failure); nothing changed.
 *   PKS_ERR_INVALID  a NULL argument or an argument outside its range.
 *   PKS_ERR_NOMEM    out of (secure) memory.
 * All keys, the chaining key and the psks live in sodium_malloc'd memory and
 * are wiped when the object is freed.
 */
#ifndef PKS_NOISE_H
#define PKS_NOISE_H

#include <stddef.h>
#include <stdint.h>

/* The largest Noise message, handshake or transport, in bytes. */
#define NOISE_MAX_MESSAGE 65535
/* X25519 public and private key length (DHLEN). */
#define NOISE_KEY_LEN 32
/* Pre-shared key length. */
#define NOISE_PSK_LEN 32
/* ChaChaPoly authentication tag length. */
#define NOISE_TAG_LEN 16
/* The longest handshake hash (HASHLEN of BLAKE2b and SHA512). */
#define NOISE_MAX_HASH_LEN 64
/* The longest protocol name accepted. */
#define NOISE_MAX_PROTOCOL_NAME 255
/* The largest transport payload: one message minus its tag. */
#define NOISE_MAX_PAYLOAD (NOISE_MAX_MESSAGE - NOISE_TAG_LEN)

enum noise_role {
	NOISE_ROLE_INITIATOR,
	NOISE_ROLE_RESPONDER,
};

/* What the handshake expects next. */
enum noise_action {
	/* Not started yet (configuring). */
	NOISE_ACTION_NONE,
	NOISE_ACTION_WRITE_MESSAGE,
	NOISE_ACTION_READ_MESSAGE,
	/* Every message is done: call noise_handshake_split(). */
	NOISE_ACTION_SPLIT,
	/* Split done; the hash and the remote static key are still readable. */
	NOISE_ACTION_COMPLETE,
	/* A message failed; the object can only be freed. */
	NOISE_ACTION_FAILED,
};

/* Fills buf with n uniformly random bytes; must not fail. */
typedef void (*noise_rng_fn)(void *user_data, uint8_t *buf, size_t n);

struct noise_handshake;
struct noise_cipher;

/*
 * Creates a handshake for protocol_name (NUL-terminated, at most
 * NOISE_MAX_PROTOCOL_NAME bytes) in the given role; free it with
 * noise_handshake_free(). PKS_ERR_INVALID when the name is not of the form
 * Noise_PATTERN_DH_CIPHER_HASH or a modifier is malformed (psk index beyond
 * the last message, a psk twice); PKS_ERR_UNSUPPORTED for a well-formed name
 * naming an unknown pattern or another DH, cipher or hash.
 */
int noise_handshake_new(const char *protocol_name, enum noise_role role,
			struct noise_handshake **out);

/* Wipes and frees; NULL is fine. */
void noise_handshake_free(struct noise_handshake *hs);

/*
 * The prologue both sides must agree on; at most once, before start (none
 * means an empty prologue). The bytes are hashed at once, not kept.
 */
int noise_handshake_set_prologue(struct noise_handshake *hs, const uint8_t *prologue, size_t len);

/*
 * Our static private key (copied; the public key is derived). Accepted for
 * every pattern, ignored by those that never use it. Before start only.
 */
int noise_handshake_set_local_static(struct noise_handshake *hs,
				     const uint8_t private_key[NOISE_KEY_LEN]);

/*
 * The peer's static public key, for patterns where it is known beforehand
 * (a pre-message: NK, IK, KK, ...). PKS_ERR_INVALID for a pattern where the
 * peer sends it in a message instead. Before start only.
 */
int noise_handshake_set_remote_static(struct noise_handshake *hs,
				      const uint8_t public_key[NOISE_KEY_LEN]);

/*
 * The psk for the index-th psk token in handshake order (index 0 is the
 * earliest psk modifier, as in "psk0+psk2": 0 is psk0 and 1 is psk2).
 * PKS_ERR_INVALID when index >= noise_handshake_psk_count(). Before start.
 */
int noise_handshake_set_psk(struct noise_handshake *hs, size_t index,
			    const uint8_t psk[NOISE_PSK_LEN]);

/* How many psks the pattern uses (the number of psk modifiers). */
size_t noise_handshake_psk_count(const struct noise_handshake *hs);

/*
 * A fixed ephemeral private key instead of a random one: for test vectors
 * only, never in real sessions. Before start only.
 */
int noise_handshake_set_local_ephemeral(struct noise_handshake *hs,
					const uint8_t private_key[NOISE_KEY_LEN]);

/*
 * The randomness for the ephemeral key: rng(user_data, buf, n) is called
 * during write_message. The agent passes a wrapper of randombytes_buf.
 * Before start only.
 */
int noise_handshake_set_rng(struct noise_handshake *hs, noise_rng_fn rng, void *user_data);

/*
 * Ends configuration. PKS_ERR_STATE when a key the pattern needs is missing:
 * our static key, the peer's pre-message static key, a psk, or a source of
 * ephemeral keys (rng or fixed ephemeral).
 */
int noise_handshake_start(struct noise_handshake *hs);

/* What to do next; see enum noise_action. */
enum noise_action noise_handshake_action(const struct noise_handshake *hs);

/*
 * Writes the next handshake message carrying payload (may be NULL when
 * payload_len is 0) into out, which must not overlap payload; *out_len gets
 * its length. PKS_ERR_TOO_LARGE, with nothing changed, when out_cap is too
 * small or the message would exceed NOISE_MAX_MESSAGE. Any other failure
 * (a DH result of zero: PKS_ERR_CRYPTO) fails the handshake.
 */
int noise_handshake_write_message(struct noise_handshake *hs, const uint8_t *payload,
				  size_t payload_len, uint8_t *out, size_t out_cap,
				  size_t *out_len);

/*
 * Reads the next handshake message and writes its payload into payload_out
 * (must not overlap msg; may be NULL when cap is 0), *payload_len its length.
 * PKS_ERR_TOO_LARGE, with nothing changed, when cap is too small for the
 * payload. Failures that fail the handshake for good:
 *   PKS_ERR_TOO_LARGE   msg longer than NOISE_MAX_MESSAGE,
 *   PKS_ERR_TRUNCATED   msg shorter than its keys and tags,
 *   PKS_ERR_AUTH        a static key or the payload does not decrypt (wrong
 *                       psk, wrong keys, tampering),
 *   PKS_ERR_CRYPTO      a peer key gives a DH result of zero.
 */
int noise_handshake_read_message(struct noise_handshake *hs, const uint8_t *msg, size_t len,
				 uint8_t *payload_out, size_t cap, size_t *payload_len);

/*
 * Once the action is NOISE_ACTION_SPLIT: the transport ciphers, ours to free
 * with noise_cipher_free(). *send encrypts to the peer, *recv decrypts from
 * it. In a one-way pattern (N, K, X) only the initiator's send and the
 * responder's recv exist; the other is set to NULL. The handshake keys are
 * wiped; the handshake hash and remote static stay readable.
 */
int noise_handshake_split(struct noise_handshake *hs, struct noise_cipher **send,
			  struct noise_cipher **recv);

/*
 * The handshake hash (HASHLEN bytes: 32 for SHA256, 64 otherwise), for
 * channel binding, once the action is SPLIT or COMPLETE. PKS_ERR_TOO_LARGE
 * when cap is below HASHLEN.
 */
int noise_handshake_hash(const struct noise_handshake *hs, uint8_t *out, size_t cap,
			 size_t *out_len);

/*
 * The peer's static public key, as soon as it is known (a pre-message, or
 * the message carrying it decrypted); the caller must check it against
 * membership before trusting anything. PKS_ERR_STATE before that or after a
 * failure.
 */
int noise_handshake_remote_static(const struct noise_handshake *hs,
				  uint8_t public_key[NOISE_KEY_LEN]);

/*
 * Encrypts plaintext (at most NOISE_MAX_PAYLOAD bytes) with associated data
 * ad into out (plaintext_len + NOISE_TAG_LEN bytes; out may equal plaintext
 * for in-place, otherwise no overlap). PKS_ERR_TOO_LARGE when the plaintext
 * or out_cap is out of bounds; PKS_ERR_STATE when the 2^64-1 nonces are
 * used up (the session must end).
 */
int noise_cipher_encrypt(struct noise_cipher *c, const uint8_t *ad, size_t ad_len,
			 const uint8_t *plaintext, size_t plaintext_len, uint8_t *out,
			 size_t out_cap, size_t *out_len);

/*
 * Decrypts a message (at most NOISE_MAX_MESSAGE bytes) into out (len -
 * NOISE_TAG_LEN bytes; out may equal ciphertext). PKS_ERR_TRUNCATED below a
 * tag, PKS_ERR_AUTH when it does not authenticate (the nonce does not
 * advance; on a reliable stream the caller should end the session).
 */
int noise_cipher_decrypt(struct noise_cipher *c, const uint8_t *ad, size_t ad_len,
			 const uint8_t *ciphertext, size_t len, uint8_t *out, size_t out_cap,
			 size_t *out_len);

/* Replaces the key by REKEY(k) of the spec; the nonce is kept. */
int noise_cipher_rekey(struct noise_cipher *c);

/* Sets the next nonce (SetNonce of the spec), for out-of-order transports. */
int noise_cipher_set_nonce(struct noise_cipher *c, uint64_t nonce);

/* Wipes and frees; NULL is fine. */
void noise_cipher_free(struct noise_cipher *c);

#endif
