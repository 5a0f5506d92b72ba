/*
 * The CLI's parser of agent answers: any bytes as one frame body must give a
 * checked frame or a clean PKS_ERR_MALFORMED, never a crash or a leak.
 */
#include <stddef.h>
#include <stdint.h>

#include "tools/cli-client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cli_frame frame;
	char err[256];

	if (cli_frame_parse(data, size, &frame, err, sizeof(err)) == 0)
		cli_frame_clear(&frame);
	return 0;
}
