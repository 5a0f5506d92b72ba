/*
 * Fuzzes the CTAPHID framing. The input is a sequence of records: one step
 * byte, then one 64-byte report (a short last report is padded with zeros).
 * The step byte's low 7 bits advance the clock by that many times 8 ms (and
 * the harness ticks); its high bit answers the outstanding request, if any,
 * with (low bits * 60) bytes, which also reaches the too-large refusal.
 * Oracles: no call makes more than CTAPHID_MAX_REPORTS_PER_CALL reports,
 * every report the device makes is a known command with a length within
 * CTAPHID_MAX_MSG, requests are within bounds, and no crash or leak.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/ctaphid.h"
#include "common/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_state {
	struct ctaphid *h;
	size_t reports; /* made by the current call */
	int pending;
	uint32_t pending_cid;
	uint8_t pending_cmd;
};

static void fuzz_send(void *user, const uint8_t report[CTAPHID_REPORT_LEN])
{
	struct fuzz_state *s = user;

	s->reports++;
	if (report[4] & 0x80) {
		size_t len = (size_t)report[5] << 8 | report[6];
		switch (report[4]) {
		case CTAPHID_PING:
		case CTAPHID_MSG:
		case CTAPHID_LOCK:
		case CTAPHID_INIT:
		case CTAPHID_WINK:
		case CTAPHID_CBOR:
		case CTAPHID_KEEPALIVE:
		case CTAPHID_ERROR:
			break;
		default:
			abort();
		}
		if (len > CTAPHID_MAX_MSG)
			abort();
	} else if (report[4] > CTAPHID_MAX_SEQ) {
		abort();
	}
}

static void fuzz_request(void *user, uint32_t cid, uint8_t cmd, const uint8_t *data, size_t len)
{
	struct fuzz_state *s = user;
	volatile uint8_t sink = 0;

	if (s->pending || len == 0 || len > CTAPHID_MAX_MSG)
		abort();
	/* Touch every byte so ASan sees an overread. */
	for (size_t i = 0; i < len; i++)
		sink ^= data[i];
	(void)sink;
	s->pending = 1;
	s->pending_cid = cid;
	s->pending_cmd = cmd;
}

static void fuzz_cancel(void *user, uint32_t cid)
{
	struct fuzz_state *s = user;

	if (!s->pending || cid != s->pending_cid)
		abort();
}

static void fuzz_check_calls(struct fuzz_state *s)
{
	if (s->reports > CTAPHID_MAX_REPORTS_PER_CALL)
		abort();
	s->reports = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct ctaphid_cb cb = {
	    .send = fuzz_send,
	    .request = fuzz_request,
	    .cancel = fuzz_cancel,
	    .wink = NULL,
	};
	static uint8_t answer[CTAPHID_MAX_MSG + 60 * 128];
	struct fuzz_state s = {0};
	uint64_t now = 1000;
	size_t off = 0;

	if (ctaphid_new(&cb, &s, &s.h) != PKS_OK)
		return 0;
	while (off < size) {
		uint8_t step = data[off++];
		uint8_t report[CTAPHID_REPORT_LEN] = {0};
		size_t n = size - off < CTAPHID_REPORT_LEN ? size - off : CTAPHID_REPORT_LEN;

		now += (uint64_t)(step & 0x7f) * 8;
		ctaphid_tick(s.h, now);
		fuzz_check_calls(&s);
		if ((step & 0x80) && s.pending) {
			size_t len = (size_t)(step & 0x7f) * 60;
			int r = ctaphid_respond(s.h, s.pending_cid, s.pending_cmd, answer, len);
			if (r == PKS_OK)
				s.pending = 0;
			else if (r != PKS_ERR_TOO_LARGE)
				abort();
			fuzz_check_calls(&s);
		}
		memcpy(report, data + off, n);
		off += n;
		if (ctaphid_input(s.h, report, now) != PKS_OK)
			abort();
		fuzz_check_calls(&s);
	}
	ctaphid_free(s.h);
	return 0;
}
