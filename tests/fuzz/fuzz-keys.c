/*
 * Fuzzes the two parsers of agent/keys. The first byte picks one: even, the
 * rest is a KEK params blob (parsed, and unlocked when its costs are tiny);
 * odd, the rest is a wrapped blob, unwrapped with the fixed KEK below under
 * the label "fuzz". The corpus seeds were made with this KEK, so valid blobs
 * reach the decryption path.
 */
#include <stdint.h>
#include <stdlib.h>

#include "agent/keys.h"
#include "common/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Made by keys_kek_create("fuzz", 4, KEYS_KDF_FAST, ...). */
static const uint8_t fuzz_params[KEYS_PARAMS_BYTES] = {
    0x01, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,
    0x72, 0xd3, 0xf6, 0x77, 0xcd, 0x95, 0xba, 0xb2, 0xdd, 0x65, 0xc2, 0xd5, 0xce, 0xad,
    0x37, 0x14, 0x91, 0xb0, 0xd5, 0x72, 0xcf, 0x81, 0x1c, 0x2a, 0x5b, 0x91, 0xdb, 0x94,
    0x28, 0xa7, 0x49, 0x82, 0x49, 0xaa, 0xe3, 0xc2, 0x0d, 0x15, 0xff, 0xa4, 0x9d, 0xf5,
    0xc0, 0xd8, 0x36, 0xe7, 0xe9, 0x0f, 0x25, 0xd9, 0x20, 0x61, 0xd0, 0x40, 0x65, 0xef};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct keys_kek *kek;
	struct keys_kdf_params info;
	struct keys_kek *unlocked = NULL;
	uint8_t *pt = NULL;
	size_t pt_len = 0;

	if (kek == NULL &&
	    keys_kek_unlock(fuzz_params, sizeof(fuzz_params), "fuzz", 4, &kek) != PKS_OK)
		abort();
	if (size == 0)
		return 0;
	if ((data[0] & 1) == 0) {
		if (keys_params_info(data + 1, size - 1, &info) == PKS_OK && info.opslimit <= 2 &&
		    info.memlimit <= 65536 &&
		    keys_kek_unlock(data + 1, size - 1, "fuzz", 4, &unlocked) == PKS_OK)
			keys_kek_free(unlocked);
		return 0;
	}
	if (keys_unwrap(kek, "fuzz", data + 1, size - 1, &pt, &pt_len) == PKS_OK) {
		if (pt_len + KEYS_WRAP_OVERHEAD != size - 1)
			abort();
		keys_secret_free(pt, pt_len);
	}
	return 0;
}
