/*
 * Fuzzes every parser of agent/pairing with the same input: the JOIN, KEYS,
 * OPS, END and FAIL decoders, the code parser, the QR parser (both on a
 * NUL-terminated copy) and the device-name check. Oracles: a decoded KEYS
 * encodes back to the same bytes; OPS cover the message exactly; a parsed
 * QR formats and parses back to the same secret and address; a parsed code
 * is 8 digits; a valid name has none of the bytes UTF-8 never uses.
 *
 * JOIN is checked against the fixed hash 0, 1, ..., 63; the seeds in
 * corpus/pairing were signed over it (tests/unit/test-pairing.c writes them
 * when PKSYNC_PAIRING_CORPUS_OUT is set).
 */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/pairing.h"
#include "common/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_join(const uint8_t *data, size_t size)
{
	uint8_t hash[PAIRING_HASH_LEN];
	struct pairing_join j;

	for (size_t i = 0; i < sizeof(hash); i++)
		hash[i] = (uint8_t)i;
	if (pairing_join_decode(data, size, hash, &j) != PKS_OK)
		return;
	/* 'J' 1 | sign_pk | dh_pk | name_len | name | sig */
	if (size < 67 || strlen(j.name) != data[66] || size != 67 + (size_t)data[66] + 64 ||
	    memcmp(j.sign_pk, data + 2, 32) != 0 || memcmp(j.dh_pk, data + 34, 32) != 0 ||
	    !pairing_name_valid(j.name, strlen(j.name)))
		abort();
}

static void fuzz_keys(const uint8_t *data, size_t size)
{
	static struct vault_join_bundle b;
	uint8_t *again = NULL;
	size_t again_len = 0;

	if (pairing_keys_decode(data, size, &b) != PKS_OK)
		return;
	if (b.n_epochs == 0 || b.n_epochs > VAULT_EPOCHS_MAX)
		abort();
	if (pairing_keys_encode(&b, &again, &again_len) != PKS_OK || again_len != size ||
	    memcmp(again, data, size) != 0)
		abort();
	pairing_secret_free(again);
	sodium_memzero(&b, sizeof(b));
}

static void fuzz_ops(const uint8_t *data, size_t size)
{
	struct vault_blob ops[PAIRING_OPS_PER_MSG];
	size_t n = 0, covered = 3;

	if (pairing_ops_decode(data, size, ops, PAIRING_OPS_PER_MSG, &n) != PKS_OK)
		return;
	if (n == 0 || n > PAIRING_OPS_PER_MSG)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (ops[i].len == 0 || ops[i].data != data + covered + 2)
			abort();
		covered += 2 + ops[i].len;
	}
	if (covered != size)
		abort();
}

static void fuzz_end_fail(const uint8_t *data, size_t size)
{
	char reason[PAIRING_REASON_MAX + 1];
	uint32_t total;

	if (pairing_end_decode(data, size, &total) == PKS_OK && size != 5)
		abort();
	if (pairing_fail_decode(data, size, reason, sizeof(reason)) == PKS_OK &&
	    (strlen(reason) != size - 1 || memcmp(reason, data + 1, size - 1) != 0))
		abort();
}

static void fuzz_text(const char *text)
{
	char code[PAIRING_CODE_DIGITS + 1], secret[2 * PAIRING_QR_SECRET_LEN + 1];
	char secret2[2 * PAIRING_QR_SECRET_LEN + 1], addr[PAIRING_QR_MAX + 1];
	char addr2[PAIRING_QR_MAX + 1], qr[PAIRING_QR_MAX + 1];
	const char *addrs[1];

	if (pairing_parse_code(text, code) == PKS_OK) {
		if (strlen(code) != PAIRING_CODE_DIGITS ||
		    strspn(code, "0123456789") != PAIRING_CODE_DIGITS)
			abort();
	}
	if (pairing_qr_parse(text, secret, addr, sizeof(addr)) != PKS_OK)
		return;
	if (strlen(secret) != 2 * PAIRING_QR_SECRET_LEN ||
	    strspn(secret, "0123456789abcdef") != 2 * PAIRING_QR_SECRET_LEN)
		abort();
	addrs[0] = addr;
	if (pairing_qr_format(secret, addrs, addr[0] != '\0' ? 1 : 0, qr, sizeof(qr)) != PKS_OK ||
	    pairing_qr_parse(qr, secret2, addr2, sizeof(addr2)) != PKS_OK ||
	    strcmp(secret, secret2) != 0 || strcmp(addr, addr2) != 0)
		abort();
}

static void fuzz_name(const uint8_t *data, size_t size)
{
	if (!pairing_name_valid((const char *)data, size))
		return;
	if (size == 0 || size > VAULT_NAME_MAX)
		abort();
	for (size_t i = 0; i < size; i++)
		if (data[i] < 0x20 || data[i] == 0x7f || data[i] == 0xc0 || data[i] == 0xc1 ||
		    data[i] >= 0xf5)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	char *text;

	if (!ready) {
		if (sodium_init() < 0)
			abort();
		ready = 1;
	}
	fuzz_join(data, size);
	fuzz_keys(data, size);
	fuzz_ops(data, size);
	fuzz_end_fail(data, size);
	fuzz_name(data, size);
	text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	fuzz_text(text);
	free(text);
	return 0;
}
