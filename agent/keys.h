/*
 * The at-rest key hierarchy: one local key-encryption key (KEK) wraps every
 * device secret and data key the agent stores.
 *
 * The KEK comes either from a passphrase (Argon2id, crypto_pwhash) or from a
 * random 32-byte key file readable by the user only (--no-passphrase). In
 * passphrase mode the caller stores a small public "params blob" (version,
 * KDF parameters, salt and a check value) beside the wrapped keys; the check
 * value tells a wrong passphrase apart cleanly.
 *
 * Params blob v1 (70 bytes, big endian):
 *   u8 version = 1 | u8 alg = 2 (Argon2id 1.3) | u32 opslimit | u64 memlimit |
 *   salt[16] | check nonce[24] | check tag[16]
 * The check is XChaCha20-Poly1305 of the empty string under the KEK, with
 * "pksync kek check v1" || the first 30 bytes of the blob as associated data.
 *
 * Wrapped blob v1: u8 version = 1 | nonce[24] | ciphertext | tag[16], by
 * XChaCha20-Poly1305 under the KEK with version || label as associated data,
 * so a blob wrapped for one purpose never unwraps as another.
 */
#ifndef PKS_KEYS_H
#define PKS_KEYS_H

#include <stddef.h>
#include <stdint.h>

#define KEYS_KEK_BYTES 32
#define KEYS_SALT_BYTES 16
#define KEYS_PARAMS_VERSION 1
#define KEYS_PARAMS_BYTES 70
#define KEYS_WRAP_VERSION 1
/* version + nonce + tag: a wrapped blob is this much longer than its plaintext. */
#define KEYS_WRAP_OVERHEAD (1 + 24 + 16)
/* Hard limits: plaintext of one wrapped blob, label, passphrase. */
#define KEYS_WRAP_PLAINTEXT_MAX 65536
#define KEYS_LABEL_MAX 128
#define KEYS_PASSPHRASE_MAX 1024

/* Argon2id limits a params blob may carry (also checked on creation). */
#define KEYS_KDF_OPSLIMIT_MIN 1u
#define KEYS_KDF_OPSLIMIT_MAX 16u
#define KEYS_KDF_MEMLIMIT_MIN 8192u
#define KEYS_KDF_MEMLIMIT_MAX ((uint64_t)1 << 30)

/* Argon2id cost. A plain value; pass one of the macros below or your own. */
struct keys_kdf_params {
	uint32_t opslimit;
	uint64_t memlimit;
};

/* The agent's default: 3 passes over 64 MiB. */
extern const struct keys_kdf_params keys_kdf_default;
/* libsodium's minimum (1 pass, 8 KiB): for tests only (PKSYNC_TEST_FAST_KDF=1). */
extern const struct keys_kdf_params keys_kdf_fast;
#define KEYS_KDF_DEFAULT (&keys_kdf_default)
#define KEYS_KDF_FAST (&keys_kdf_fast)

/* An unlocked KEK: opaque, its key in guarded read-only sodium_malloc memory. */
struct keys_kek;

/*
 * Passphrase mode, first time: picks a random salt, derives the KEK with
 * Argon2id at the given cost (NULL means KEYS_KDF_DEFAULT) and builds the
 * params blob. On success *params (free() it; it is public) and *out (free
 * with keys_kek_free()) belong to the caller; nothing is written on failure.
 * PKS_ERR_INVALID: passphrase NULL or not 1..KEYS_PASSPHRASE_MAX bytes, or
 * cost outside the KEYS_KDF_* limits. PKS_ERR_NOMEM: allocation or Argon2id
 * ran out of memory.
 */
int keys_kek_create(const char *passphrase, size_t passphrase_len,
		    const struct keys_kdf_params *kdf, uint8_t **params, size_t *params_len,
		    struct keys_kek **out);

/*
 * Passphrase mode, later: re-derives the KEK from a stored params blob.
 * PKS_ERR_PASSPHRASE: the check value does not verify (a wrong passphrase,
 * or a params blob altered after it was written), or the passphrase length
 * is outside 1..KEYS_PASSPHRASE_MAX so it cannot be right.
 * PKS_ERR_MALFORMED / PKS_ERR_TRUNCATED / PKS_ERR_TOO_LARGE: the blob does
 * not parse; PKS_ERR_UNSUPPORTED: unknown version or algorithm;
 * PKS_ERR_INVALID: costs outside the KEYS_KDF_* limits; PKS_ERR_NOMEM.
 */
int keys_kek_unlock(const uint8_t *params, size_t params_len, const char *passphrase,
		    size_t passphrase_len, struct keys_kek **out);

/* Parses and checks a params blob without deriving anything; same errors as unlock's parse. */
int keys_params_info(const uint8_t *params, size_t params_len, struct keys_kdf_params *out);

/*
 * Key-file mode, first time: writes a fresh random KEK to path, created with
 * O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, fsynced together with its folder.
 * PKS_ERR_EXISTS if path exists (never overwritten); other errno-based
 * codes from pks_err_from_errno(). A failed write leaves no file behind.
 */
int keys_kek_create_file(const char *path, struct keys_kek **out);

/*
 * Key-file mode, later: reads the KEK back. Refused with PKS_ERR_PERM when
 * path is a symlink, is not owned by the effective user, or grants any
 * access to group or others; PKS_ERR_MALFORMED when it is not a regular
 * file of exactly KEYS_KEK_BYTES bytes; PKS_ERR_NOT_FOUND when missing.
 */
int keys_kek_load_file(const char *path, struct keys_kek **out);

/* Wipes and frees a KEK. NULL is fine. */
void keys_kek_free(struct keys_kek *kek);

/*
 * Wraps pt (0..KEYS_WRAP_PLAINTEXT_MAX bytes) for the purpose named by label
 * (a C string of 1..KEYS_LABEL_MAX bytes) with a fresh random nonce. *out is
 * public, malloc'd, of pt_len + KEYS_WRAP_OVERHEAD bytes: free() it.
 * PKS_ERR_INVALID on a bad label, PKS_ERR_TOO_LARGE on a long plaintext.
 */
int keys_wrap(const struct keys_kek *kek, const char *label, const uint8_t *pt, size_t pt_len,
	      uint8_t **out, size_t *out_len);

/*
 * Unwraps a blob made by keys_wrap() with the same KEK and label. *pt is
 * secret, in sodium_malloc memory: release it with keys_secret_free(*pt,
 * *pt_len). PKS_ERR_AUTH: wrong KEK, wrong label, or the blob was altered or
 * cut; PKS_ERR_MALFORMED: shorter than KEYS_WRAP_OVERHEAD;
 * PKS_ERR_TOO_LARGE: longer than the plaintext limit allows;
 * PKS_ERR_UNSUPPORTED: unknown version byte; PKS_ERR_INVALID: bad label.
 */
int keys_unwrap(const struct keys_kek *kek, const char *label, const uint8_t *blob, size_t blob_len,
		uint8_t **pt, size_t *pt_len);

/* Wipes and frees a plaintext from keys_unwrap(). NULL is fine. */
void keys_secret_free(void *p, size_t len);

#endif
