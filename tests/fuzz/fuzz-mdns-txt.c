/*
 * Fuzzes the strict TXT rdata parser of transport/mdns-txt. Oracles: an
 * accepted input respects every limit, and building the parsed pairs gives
 * back exactly the input (the parser accepts only what the builder makes;
 * empty input builds as the lone empty string).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "transport/mdns-txt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct mdns_txt t;
	static uint8_t out[MDNS_TXT_MAX];
	size_t len = 0;
	int r;

	r = mdns_txt_parse(data, size, &t);
	if (r != PKS_OK) {
		if (r != PKS_ERR_MALFORMED && r != PKS_ERR_TRUNCATED && r != PKS_ERR_TOO_LARGE)
			abort();
		return 0;
	}
	if (size > MDNS_TXT_MAX || t.n > MDNS_TXT_STRINGS_MAX)
		abort();
	for (size_t i = 0; i < t.n; i++) {
		if (!mdns_txt_key_valid(t.pairs[i].key, strlen(t.pairs[i].key)))
			abort();
		if (mdns_txt_get(&t, t.pairs[i].key) != &t.pairs[i])
			abort();
	}
	if (mdns_txt_build(&t, out, sizeof(out), &len) != PKS_OK)
		abort();
	if (size == 0) {
		if (len != 1 || out[0] != 0)
			abort();
	} else if (len != size || memcmp(out, data, size) != 0) {
		abort();
	}
	return 0;
}
