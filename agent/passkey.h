/*
 * Passkey key operations (ES256 on P-256 through OpenSSL 3 EVP, EdDSA on
 * Ed25519) and the plain passkey item that imports produce and exports take.
 *
 * A struct passkey_key is opaque and holds a private key; free it with
 * passkey_key_free(). Private key bytes handed out by this module live in
 * sodium_malloc'd memory and are released with passkey_secret_free().
 */
#ifndef PKS_AGENT_PASSKEY_H
#define PKS_AGENT_PASSKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* COSE algorithm numbers (the same values as enum record_alg). */
#define PASSKEY_ALG_ES256 (-7)
#define PASSKEY_ALG_EDDSA (-8)

/* Authenticator data flags (WebAuthn). BE=0 with BS=1 is invalid. */
#define PASSKEY_FLAG_UP 0x01
#define PASSKEY_FLAG_UV 0x04
#define PASSKEY_FLAG_BE 0x08
#define PASSKEY_FLAG_BS 0x10

/* rpIdHash (32) || flags (1) || signCount (4, big endian). */
#define PASSKEY_AUTHDATA_LEN 37
#define PASSKEY_CLIENT_DATA_HASH_LEN 32
/* Largest PKCS#8 DER accepted by passkey_key_from_pkcs8(). */
#define PASSKEY_PKCS8_MAX 512

struct passkey_key;

/*
 * Generates a fresh key for alg (PASSKEY_ALG_ES256 or PASSKEY_ALG_EDDSA).
 * PKS_ERR_UNSUPPORTED for any other alg, PKS_ERR_CRYPTO when OpenSSL fails.
 */
int passkey_key_generate(int alg, struct passkey_key **out);

/*
 * Loads an unencrypted PKCS#8 PrivateKeyInfo DER. Only P-256 EC keys and
 * Ed25519 keys are accepted. Errors: PKS_ERR_TOO_LARGE (more than
 * PASSKEY_PKCS8_MAX bytes), PKS_ERR_MALFORMED (not DER PKCS#8, trailing bytes,
 * encrypted, or a public key that does not match the private key),
 * PKS_ERR_UNSUPPORTED (another algorithm or curve). der is only borrowed.
 */
int passkey_key_from_pkcs8(const uint8_t *der, size_t len, struct passkey_key **out);

/* Frees and wipes; NULL is fine. */
void passkey_key_free(struct passkey_key *key);

/* PASSKEY_ALG_ES256 or PASSKEY_ALG_EDDSA. */
int passkey_key_alg(const struct passkey_key *key);

/*
 * The private key as PKCS#8 DER, normalised as OpenSSL encodes it. *der is
 * sodium_malloc'd: release it with passkey_secret_free(*der, *len).
 */
int passkey_key_pkcs8(const struct passkey_key *key, uint8_t **der, size_t *len);

/*
 * The same PKCS#8 DER written into out (cap bytes, which the caller keeps in
 * secret memory); PKS_ERR_TOO_LARGE when it does not fit.
 */
int passkey_key_pkcs8_to(const struct passkey_key *key, uint8_t *out, size_t cap, size_t *len);

/* The public key as SubjectPublicKeyInfo DER; *der is malloc'd (free()). */
int passkey_key_spki(const struct passkey_key *key, uint8_t **der, size_t *len);

/*
 * The public key as a COSE_Key in canonical CBOR (EC2 {1:2, 3:-7, -1:1,
 * -2:x, -3:y} or OKP {1:1, 3:-8, -1:6, -2:x}); *cbor is malloc'd (free()).
 */
int passkey_key_cose(const struct passkey_key *key, uint8_t **cbor, size_t *len);

/*
 * Signs msg: ES256 gives a DER ECDSA-Sig-Value over SHA-256(msg), EdDSA the
 * raw 64-byte Ed25519 signature. *sig is malloc'd (free()).
 */
int passkey_key_sign(const struct passkey_key *key, const uint8_t *msg, size_t msg_len,
		     uint8_t **sig, size_t *sig_len);

/* Wipes and frees memory returned by passkey_key_pkcs8(); NULL is fine. */
void passkey_secret_free(uint8_t *p, size_t len);

/*
 * SHA-256(rp_id) || flags || sign_count (big endian) into out. rp_id must be
 * 1..253 bytes. PKS_ERR_INVALID for BS without BE or a bad rp_id.
 */
int passkey_authenticator_data(const char *rp_id, uint8_t flags, uint32_t sign_count,
			       uint8_t out[PASSKEY_AUTHDATA_LEN]);

/*
 * A WebAuthn assertion: authenticator data for rp_id and flags with sign
 * count 0, and the signature over authData || clientDataHash. *authdata and
 * *sig are malloc'd (free()); both are written only on success.
 */
int passkey_assert(const struct passkey_key *key, const char *rp_id, uint8_t flags,
		   const uint8_t client_data_hash[PASSKEY_CLIENT_DATA_HASH_LEN], uint8_t **authdata,
		   size_t *authdata_len, uint8_t **sig, size_t *sig_len);

/*
 * One passkey as imports produce it and exports take it. Every pointer is
 * owned by the item: strings and byte arrays are malloc'd, private_key is
 * PKCS#8 DER in sodium_malloc'd memory (or inside the owning list's key
 * block, see below). display_name, notes and source may be NULL.
 */
struct passkey_item {
	char *rp_id;
	uint8_t *credential_id;
	size_t credential_id_len;
	uint8_t *user_handle;
	size_t user_handle_len;
	char *user_name;
	char *display_name;
	int alg;
	uint8_t *private_key;
	size_t private_key_len;
	uint8_t *public_key; /* SPKI DER */
	size_t public_key_len;
	bool backup_eligible, backup_state;
	uint64_t created_at_ms; /* 0 = unknown */
	char *notes;
	char *source;
};

/*
 * A list of items. key_block is private to this module and import: a list
 * from import_parse() keeps every private key in one sodium_malloc'd block
 * (one guarded mapping per key would exhaust vm.max_map_count long before
 * 100,000 passkeys). Lists built elsewhere leave it NULL and give each item
 * its own sodium_malloc'd key.
 */
struct passkey_list {
	struct passkey_item *items;
	size_t count;
	uint8_t *key_block;
	size_t key_block_len;
};

/* Frees one item's contents (wiping the private key) and zeroes the item. */
void passkey_item_clear(struct passkey_item *it);

/* Deep copy of src into *dst (private key into fresh sodium_malloc'd memory). */
int passkey_item_copy(struct passkey_item *dst, const struct passkey_item *src);

/*
 * Frees every item's contents and the key block, wiping keys, but neither
 * l->items nor l itself; l->count becomes 0. NULL is fine.
 */
void passkey_list_free_items(struct passkey_list *l);

/* Frees the items, the items array and the list (all malloc'd). NULL is fine. */
void passkey_list_free(struct passkey_list *l);

#endif
