#include "proto/hint.h"

#include <sodium.h>
#include <string.h>

static const char hint_key_label[] = "pksync hint key v1";
static const char hint_label[] = "pksync hint v1";

void hint_key_derive(const uint8_t network_key[32], uint8_t out[HINT_KEY_LEN])
{
	crypto_generichash(out, HINT_KEY_LEN, (const uint8_t *)hint_key_label,
			   sizeof(hint_key_label) - 1, network_key, 32);
}

static void hint_tag(const uint8_t key[HINT_KEY_LEN], const uint8_t device_id[HINT_DEVICE_ID_LEN],
		     const uint8_t nonce[HINT_NONCE_LEN], uint8_t tag[HINT_LEN - HINT_NONCE_LEN])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, key, HINT_KEY_LEN, HINT_LEN - HINT_NONCE_LEN);
	crypto_generichash_update(&st, (const uint8_t *)hint_label, sizeof(hint_label) - 1);
	crypto_generichash_update(&st, nonce, HINT_NONCE_LEN);
	crypto_generichash_update(&st, device_id, HINT_DEVICE_ID_LEN);
	crypto_generichash_final(&st, tag, HINT_LEN - HINT_NONCE_LEN);
	sodium_memzero(&st, sizeof(st));
}

void hint_make(const uint8_t key[HINT_KEY_LEN], const uint8_t device_id[HINT_DEVICE_ID_LEN],
	       const uint8_t nonce[HINT_NONCE_LEN], uint8_t out[HINT_LEN])
{
	memcpy(out, nonce, HINT_NONCE_LEN);
	hint_tag(key, device_id, nonce, out + HINT_NONCE_LEN);
}

bool hint_matches(const uint8_t key[HINT_KEY_LEN], const uint8_t device_id[HINT_DEVICE_ID_LEN],
		  const uint8_t hint[HINT_LEN])
{
	uint8_t tag[HINT_LEN - HINT_NONCE_LEN];

	hint_tag(key, device_id, hint, tag);
	return sodium_memcmp(tag, hint + HINT_NONCE_LEN, sizeof(tag)) == 0;
}

void hint_to_hex(const uint8_t hint[HINT_LEN], char out[2 * HINT_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < HINT_LEN; i++) {
		out[2 * i] = digits[hint[i] >> 4];
		out[2 * i + 1] = digits[hint[i] & 15];
	}
	out[2 * HINT_LEN] = '\0';
}

static int hint_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int hint_from_hex(const char *text, size_t len, uint8_t out[HINT_LEN])
{
	uint8_t tmp[HINT_LEN];

	if (len != 2 * HINT_LEN)
		return -1;
	for (size_t i = 0; i < HINT_LEN; i++) {
		int hi = hint_nibble(text[2 * i]), lo = hint_nibble(text[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		tmp[i] = (uint8_t)(hi << 4 | lo);
	}
	memcpy(out, tmp, HINT_LEN);
	return 0;
}
