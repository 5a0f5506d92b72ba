/*
 * libFuzzer harness: KeePassXC .passkey import; each accepted passkey is
 * also written back as a .passkey and must read back with the same key.
 */
#include <stddef.h>
#include <stdint.h>

#include "tests/fuzz/fuzz-import-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_keepassxc_round_trip(const uint8_t *data, size_t size)
{
	struct passkey_list *l = NULL;
	char err[512];

	if (import_parse(data, size, IMPORT_FORMAT_KEEPASSXC, &l, NULL, err, sizeof(err)) != PKS_OK)
		return;
	for (size_t i = 0; i < l->count; i++) {
		struct passkey_list *back = NULL;
		char *text = NULL;

		if (export_keepassxc(&l->items[i], &text) != PKS_OK)
			abort();
		if (import_parse((const uint8_t *)text, strlen(text), IMPORT_FORMAT_AUTO, &back,
				 NULL, err, sizeof(err)) != PKS_OK ||
		    back->count != 1 ||
		    back->items[0].private_key_len != l->items[i].private_key_len ||
		    memcmp(back->items[0].private_key, l->items[i].private_key,
			   l->items[i].private_key_len) != 0)
			abort();
		passkey_list_free(back);
		sodium_memzero(text, strlen(text));
		free(text);
	}
	passkey_list_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_import_run(data, size, IMPORT_FORMAT_KEEPASSXC);
	fuzz_keepassxc_round_trip(data, size);
	return 0;
}
