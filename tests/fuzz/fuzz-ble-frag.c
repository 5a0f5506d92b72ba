/*
 * Fuzzes the BLE link's receive side. The input is a list of datagrams, each
 * a 1-byte length then that many bytes, fed in turn to a peripheral link that
 * has taken an OPEN (tag 3) and to a central link still opening (tag 3), with
 * the output drained after each. Oracles: no crash or leak, delivered frames
 * are 1..FRAME_MAX bytes, an error is one of the documented ones and sticks,
 * and the queued byte count never passes the send queue limit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "transport/ble-frag.h"
#include "transport/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_frame(void *user, const uint8_t *frame, size_t len)
{
	size_t *n = user;

	if (frame == NULL || len == 0 || len > FRAME_MAX)
		abort();
	(*n)++;
	return PKS_OK;
}

static void fuzz_link(struct ble_frag *f, const uint8_t *data, size_t size)
{
	static const uint8_t reply[5] = {0, 0, 0, 7, 8};
	uint8_t out[BLE_FRAG_DGRAM_MAX];
	size_t frames = 0, pos = 0, n;
	uint64_t now = 0;
	int failed = PKS_OK;

	(void)reply;
	(void)ble_frag_send(f, (const uint8_t *)"hello", 5);
	while (pos < size) {
		size_t len = data[pos++];
		int r;

		if (len > size - pos)
			len = size - pos;
		now += 7;
		r = ble_frag_input(f, data + pos, len, now, fuzz_frame, &frames);
		pos += len;
		if (failed != PKS_OK && r != failed && failed != PKS_ERR_CLOSED)
			abort();
		if (r != PKS_OK) {
			if (r != PKS_ERR_MALFORMED && r != PKS_ERR_CLOSED &&
			    r != PKS_ERR_TOO_LARGE && r != PKS_ERR_TRUNCATED &&
			    r != PKS_ERR_UNSUPPORTED && r != PKS_ERR_NOMEM)
				abort();
			failed = r;
		}
		while (ble_frag_output(f, now, out, sizeof(out), &n) == PKS_OK && n > 0) {
			struct ble_frag_header h;
			if (ble_frag_parse_header(out, n, &h) != PKS_OK)
				abort();
		}
		if (ble_frag_queued(f) > BLE_FRAG_SEND_QUEUE_DEFAULT)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ble_frag_params per = {.mtu = 23, .tag = 3, .nonce = 7, .window = 8};
	struct ble_frag_params cen = {.mtu = 185, .tag = 3, .nonce = 7, .initiator = true};
	static const uint8_t open[9] = {3, 0x28, 0, 0, 0, 0, 0, 7, 8};
	struct ble_frag *f = NULL;
	uint8_t tag;
	uint32_t nonce;

	(void)ble_frag_parse_open(data, size, &tag, &nonce);
	if (ble_frag_new(&per, 0, &f) != PKS_OK)
		abort();
	if (ble_frag_input(f, open, sizeof(open), 0, NULL, NULL) != PKS_OK || !ble_frag_is_open(f))
		abort();
	fuzz_link(f, data, size);
	ble_frag_free(f);
	f = NULL;
	if (ble_frag_new(&cen, 0, &f) != PKS_OK)
		abort();
	fuzz_link(f, data, size);
	ble_frag_free(f);
	return 0;
}
