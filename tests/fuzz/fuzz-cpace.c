/*
 * Fuzzes the CPace peer-message parser and point checks: the first byte
 * picks our role, the rest is the peer's message handed to cpace_derive().
 * Whatever the input, derive must return an error code or an ISK, and a
 * successful derive must leave a sid output to read.
 */
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "proto/cpace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t code[] = "12345678";
	static const uint8_t scalar[CPACE_SCALAR_BYTES] = {42, 1, 2, 3};
	struct cpace_config cfg = {
	    .role = CPACE_ROLE_RESPONDER,
	    .prs = code,
	    .prs_len = sizeof(code) - 1,
	    .ci = (const uint8_t *)"fuzz",
	    .ci_len = 4,
	    .sid = (const uint8_t *)"fuzz-session",
	    .sid_len = 12,
	    .scalar = scalar,
	};
	struct cpace *c = NULL;
	uint8_t isk[CPACE_ISK_BYTES], sid_out[CPACE_SID_OUTPUT_BYTES];

	if (size == 0)
		return 0;
	switch (data[0] % 3) {
	case 0:
		cfg.role = CPACE_ROLE_INITIATOR;
		break;
	case 1:
		cfg.role = CPACE_ROLE_RESPONDER;
		break;
	default:
		cfg.role = CPACE_ROLE_SYMMETRIC;
		break;
	}
	if (cpace_new(&c, &cfg) != PKS_OK)
		return 0;
	if (cpace_derive(c, data + 1, size - 1, isk) == PKS_OK) {
		if (cpace_sid_output(c, sid_out) != PKS_OK)
			__builtin_trap();
	} else if (cpace_sid_output(c, sid_out) != PKS_ERR_STATE) {
		__builtin_trap();
	}
	cpace_free(c);
	return 0;
}
