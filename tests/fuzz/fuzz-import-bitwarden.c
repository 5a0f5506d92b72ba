/* libFuzzer harness: Bitwarden JSON import. */
#include <stddef.h>
#include <stdint.h>

#include "tests/fuzz/fuzz-import-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_import_run(data, size, IMPORT_FORMAT_BITWARDEN);
	return 0;
}
