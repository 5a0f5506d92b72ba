/*
 * Rotating member hints for discovery (mDNS TXT records, BLE advertisements).
 *
 * A hint is 16 bytes: a fresh random nonce (8) and a tag (8) =
 * BLAKE2b-64(key = hint key, "pksync hint v1" || nonce || device id), the hint
 * key being BLAKE2b-256(key = network key, "pksync hint key v1"). A vault
 * member, holding the network key and the member list, recognises which
 * device announced itself by trying each member's id; anyone else sees 16
 * random bytes that change at every rotation, so nothing stable links two
 * announcements to one device or one vault. The network key only filters
 * (DESIGN §3): the Noise handshake still authenticates the device.
 */
#ifndef PKS_PROTO_HINT_H
#define PKS_PROTO_HINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HINT_LEN 16
#define HINT_NONCE_LEN 8
#define HINT_KEY_LEN 32
#define HINT_DEVICE_ID_LEN 32

/* The hint key of a vault, from its network key. */
void hint_key_derive(const uint8_t network_key[32], uint8_t out[HINT_KEY_LEN]);

/* A hint for device_id with the given nonce (the caller draws it at random). */
void hint_make(const uint8_t key[HINT_KEY_LEN], const uint8_t device_id[HINT_DEVICE_ID_LEN],
	       const uint8_t nonce[HINT_NONCE_LEN], uint8_t out[HINT_LEN]);

/* Whether hint was made by device_id with key (constant time in the tag). */
bool hint_matches(const uint8_t key[HINT_KEY_LEN], const uint8_t device_id[HINT_DEVICE_ID_LEN],
		  const uint8_t hint[HINT_LEN]);

/* Lower-case hex of a hint (33 bytes with the NUL), and back; -1 on bad text. */
void hint_to_hex(const uint8_t hint[HINT_LEN], char out[2 * HINT_LEN + 1]);
int hint_from_hex(const char *text, size_t len, uint8_t out[HINT_LEN]);

#endif
