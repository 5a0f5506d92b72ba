/*
 * Fuzzes the sync engine. The whole input is decoded as one message: a
 * successful decode must re-encode to the same bytes. The input is also cut
 * into messages by a 2-byte big-endian length prefix and fed to a session
 * over the in-memory test replica (tests/unit/sync-test-replica.h, with the
 * fixed content the seed transcripts assume); its transport refuses every
 * third send with BUSY. Oracles: no crash, a failed session stays failed,
 * and the number of messages sent stays proportional to those received.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "proto/sync.h"
#include "tests/unit/sync-test-replica.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Sends per received message are a handful; this catches loops, not costs. */
#define FUZZ_SENDS_PER_MSG 100

struct fuzz_transport {
	uint64_t calls, sent;
	bool blocked;
};

static int fuzz_send(void *user, const uint8_t *msg, size_t len)
{
	struct fuzz_transport *t = user;
	struct sync_msg *m;

	if (++t->calls % 3 == 0) {
		t->blocked = true;
		return PKS_ERR_BUSY;
	}
	/* What the engine sends must itself decode. */
	m = malloc(sizeof(*m));
	if (m == NULL)
		abort();
	if (sync_msg_decode(msg, len, m) != PKS_OK)
		abort();
	free(m);
	t->sent++;
	return PKS_OK;
}

static const struct sync_session_cb fuzz_cb = {fuzz_send, NULL, NULL};

static void fuzz_decode(const uint8_t *data, size_t size)
{
	struct sync_msg *m = malloc(sizeof(*m));
	uint8_t *again = NULL;
	size_t again_len = 0;

	if (m == NULL)
		abort();
	if (sync_msg_decode(data, size, m) == PKS_OK) {
		if (sync_msg_encode(m, &again, &again_len) != PKS_OK || again_len != size ||
		    memcmp(again, data, size) != 0)
			abort();
		free(again);
	}
	free(m);
}

static void fuzz_session(const uint8_t *data, size_t size)
{
	static const uint8_t peer[SYNC_ID_LEN] = {0xb};
	struct fuzz_transport t = {0};
	struct trep *rep = trep_new();
	struct sync_session *s = NULL;
	size_t off = 0;
	uint64_t received = 0;
	int r;

	if (rep == NULL || !trep_fill_fuzz(rep))
		abort();
	if (sync_session_new(&trep_ops, rep, peer, &fuzz_cb, &t, &s) != PKS_OK)
		abort();
	r = sync_session_start(s);
	while (r == PKS_OK && size - off >= 2) {
		size_t len = (size_t)data[off] << 8 | data[off + 1];
		off += 2;
		if (len > size - off)
			len = size - off;
		r = sync_session_receive(s, data + off, len);
		off += len;
		received++;
		/* Let the transport drain so later ACKs can refer to sent batches. */
		for (int i = 0; r == PKS_OK && t.blocked && i < 64; i++) {
			t.blocked = false;
			r = sync_session_drained(s);
		}
		if (t.sent > FUZZ_SENDS_PER_MSG * (received + 1))
			abort();
	}
	if (r != PKS_OK) {
		if (sync_session_phase(s) != SYNC_PHASE_FAILED)
			abort();
		if (sync_session_receive(s, data, size) != PKS_ERR_STATE ||
		    sync_session_local_change(s) != PKS_ERR_STATE)
			abort();
	} else if (sync_session_local_change(s) == PKS_OK &&
		   t.sent > FUZZ_SENDS_PER_MSG * (received + 2)) {
		abort();
	}
	sync_session_free(s);
	trep_free(rep);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_decode(data, size);
	fuzz_session(data, size);
	return 0;
}
