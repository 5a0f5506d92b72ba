/*
 * The pairing channel's messages (inside a Noise session keyed by CPace on
 * the code) and the codes themselves.
 *
 * After the handshake the joiner sends JOIN; the sponsor answers KEYS (the
 * vault's keys), then OPS messages (the membership, parents first), then END
 * with the number of ops sent; or FAIL with a reason at any point.
 *
 *   JOIN  'J' 1 | sign_pk 32 | dh_pk 32 | name_len 1 | name | sig 64
 *         sig: Ed25519 by sign_pk over "pksync join v1" | handshake hash 64 |
 *         sign_pk | dh_pk | name, so the key is bound to this channel
 *   KEYS  'K' 1 | vault_id 16 | network_key 32 | id_key 32 | n 2 | (epoch 4 | key 32)*n
 *   OPS   'O' | n 2 | (len 2 | op)*n
 *   END   'E' | total 4
 *   FAIL  'F' | reason (1..200 bytes of printable ASCII)
 */
#ifndef PKS_AGENT_PAIRING_H
#define PKS_AGENT_PAIRING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/vault.h"

#define PAIRING_MSG_MAX 65519
#define PAIRING_HASH_LEN 64
#define PAIRING_CODE_DIGITS 8
#define PAIRING_QR_SECRET_LEN 16
#define PAIRING_QR_MAX 512
#define PAIRING_REASON_MAX 200
#define PAIRING_OPS_PER_MSG 64

enum pairing_type {
	PAIRING_JOIN = 'J',
	PAIRING_KEYS = 'K',
	PAIRING_OPS = 'O',
	PAIRING_END = 'E',
	PAIRING_FAIL = 'F',
};

struct pairing_join {
	uint8_t sign_pk[32];
	uint8_t dh_pk[32];
	char name[VAULT_NAME_MAX + 1];
};

/* A device name: 1..64 bytes of UTF-8 with no control characters. */
bool pairing_name_valid(const char *name, size_t len);

int pairing_join_encode(const struct vault_identity *id, const char *name,
			const uint8_t hash[PAIRING_HASH_LEN], uint8_t **out, size_t *out_len);
/* Decodes and checks the signature against hash. PKS_ERR_AUTH, PKS_ERR_MALFORMED. */
int pairing_join_decode(const uint8_t *msg, size_t len, const uint8_t hash[PAIRING_HASH_LEN],
			struct pairing_join *out);

/* *out is sodium_malloc'd (holds keys): free with pairing_secret_free. */
int pairing_keys_encode(const struct vault_join_bundle *b, uint8_t **out, size_t *out_len);
void pairing_secret_free(uint8_t *p);
/* Fills the keys of b (not its ops). */
int pairing_keys_decode(const uint8_t *msg, size_t len, struct vault_join_bundle *b);

/*
 * OPS: op i of the message is ops[i] (pointing into msg). At most
 * PAIRING_OPS_PER_MSG per message, each 1..32768 bytes.
 */
int pairing_ops_decode(const uint8_t *msg, size_t len, struct vault_blob *ops, size_t cap,
		       size_t *n);
int pairing_end_decode(const uint8_t *msg, size_t len, uint32_t *total);
/* A reason sentence from FAIL, NUL-terminated into out (cap >= PAIRING_REASON_MAX + 1). */
int pairing_fail_decode(const uint8_t *msg, size_t len, char *out, size_t cap);

/* An 8-digit code, uniformly random. */
void pairing_new_code(char out[PAIRING_CODE_DIGITS + 1]);
/* Accepts the code with or without one space or dash in the middle ("1234-5678"). */
int pairing_parse_code(const char *text, char out[PAIRING_CODE_DIGITS + 1]);

/*
 * QR payload: "pksync1:" 32 hex digits of secret, then "@" and up to 4
 * addresses ADDR:PORT separated by ",". Parsing fills secret (hex text,
 * used as the CPace password) and the first address (addr_cap bytes).
 */
int pairing_qr_format(const char *secret_hex, const char *const *addrs, size_t n_addrs, char *out,
		      size_t cap);
int pairing_qr_parse(const char *text, char secret_hex[2 * PAIRING_QR_SECRET_LEN + 1], char *addr,
		     size_t addr_cap);

#endif
