/*
 * CTAPHID framing. One message is reassembled at a time (the spec lets a
 * device be busy with one channel and tell the others so), which keeps the
 * state to one CTAPHID_MAX_MSG buffer, a bounded channel table, one
 * outstanding request and one lock.
 */
#include "agent/ctaphid.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/err.h"

#define CTAPHID_INIT_NONCE_LEN 8
#define CTAPHID_INIT_RESPONSE_LEN 17

struct ctaphid_channel {
	uint32_t cid;
	uint64_t last_use; /* value of ctaphid.use_counter when last used */
};

struct ctaphid {
	struct ctaphid_cb cb;
	void *user;
	uint8_t caps;
	uint8_t version[3];
	uint64_t now_ms; /* latest time seen; a clock that goes back is clamped */

	uint32_t next_cid;
	uint64_t use_counter;
	struct ctaphid_channel channels[CTAPHID_MAX_CHANNELS];
	size_t n_channels;

	/* The message being reassembled from continuation packets. */
	bool asm_active;
	uint32_t asm_cid;
	uint8_t asm_cmd;
	uint8_t asm_next_seq;
	size_t asm_len;
	size_t asm_got;
	uint64_t asm_last_ms;
	uint8_t *asm_buf; /* CTAPHID_MAX_MSG bytes, may hold request secrets */

	/* The request handed to the owner and not yet answered. */
	bool req_active;
	bool req_aborted; /* the host resynchronised its channel: drop the answer */
	bool req_cancelled;
	uint32_t req_cid;
	uint8_t status;
	uint64_t next_keepalive_ms;

	bool lock_active;
	uint32_t lock_cid;
	uint64_t lock_until_ms;
};

static void ctaphid_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t ctaphid_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Fragments one message into an initialisation packet and as many
   continuation packets as it needs; len is at most CTAPHID_MAX_MSG. */
static void ctaphid_send_message(struct ctaphid *h, uint32_t cid, uint8_t cmd, const uint8_t *data,
				 size_t len)
{
	uint8_t report[CTAPHID_REPORT_LEN];
	size_t off = 0, n;
	uint8_t seq = 0;

	memset(report, 0, sizeof(report));
	ctaphid_put_be32(report, cid);
	report[4] = cmd;
	report[5] = (uint8_t)(len >> 8);
	report[6] = (uint8_t)len;
	n = len < CTAPHID_INIT_DATA_LEN ? len : CTAPHID_INIT_DATA_LEN;
	if (n > 0)
		memcpy(report + 7, data, n);
	off = n;
	h->cb.send(h->user, report);
	while (off < len) {
		memset(report, 0, sizeof(report));
		ctaphid_put_be32(report, cid);
		report[4] = seq++;
		n = len - off < CTAPHID_CONT_DATA_LEN ? len - off : CTAPHID_CONT_DATA_LEN;
		memcpy(report + 5, data + off, n);
		off += n;
		h->cb.send(h->user, report);
	}
	/* Answers can carry protocol secrets (encrypted PIN tokens and the like). */
	sodium_memzero(report, sizeof(report));
}

static void ctaphid_send_error(struct ctaphid *h, uint32_t cid, uint8_t code)
{
	ctaphid_send_message(h, cid, CTAPHID_ERROR, &code, 1);
}

static void ctaphid_asm_reset(struct ctaphid *h)
{
	if (h->asm_got > 0)
		sodium_memzero(h->asm_buf, h->asm_got);
	h->asm_active = false;
	h->asm_cid = 0;
	h->asm_cmd = 0;
	h->asm_next_seq = 0;
	h->asm_len = 0;
	h->asm_got = 0;
}

static struct ctaphid_channel *ctaphid_channel_find(struct ctaphid *h, uint32_t cid)
{
	for (size_t i = 0; i < h->n_channels; i++)
		if (h->channels[i].cid == cid)
			return &h->channels[i];
	return NULL;
}

static void ctaphid_channel_touch(struct ctaphid *h, uint32_t cid)
{
	struct ctaphid_channel *c = ctaphid_channel_find(h, cid);

	if (c != NULL)
		c->last_use = ++h->use_counter;
}

/* A channel that holds state (a partial message, the outstanding request or
   the lock) is never dropped to make room. */
static bool ctaphid_channel_pinned(const struct ctaphid *h, uint32_t cid)
{
	return (h->asm_active && h->asm_cid == cid) || (h->req_active && h->req_cid == cid) ||
	       (h->lock_active && h->lock_cid == cid);
}

/* Allocates a fresh channel id, dropping the least recently used channel
   when the table is full. Ids come from a counter that skips 0, the
   broadcast id and ids still in use. */
static uint32_t ctaphid_channel_alloc(struct ctaphid *h)
{
	struct ctaphid_channel *slot = NULL;
	uint32_t cid;

	do {
		cid = h->next_cid++;
		if (h->next_cid == 0 || h->next_cid == CTAPHID_BROADCAST_CID)
			h->next_cid = 1;
	} while (cid == 0 || cid == CTAPHID_BROADCAST_CID || ctaphid_channel_find(h, cid) != NULL);

	if (h->n_channels < CTAPHID_MAX_CHANNELS) {
		slot = &h->channels[h->n_channels++];
	} else {
		/* At most three channels are pinned, so one of 64 is free to go. */
		for (size_t i = 0; i < h->n_channels; i++) {
			if (ctaphid_channel_pinned(h, h->channels[i].cid))
				continue;
			if (slot == NULL || h->channels[i].last_use < slot->last_use)
				slot = &h->channels[i];
		}
	}
	slot->cid = cid;
	slot->last_use = ++h->use_counter;
	return cid;
}

/* The channel the device is busy with, or 0 if none. An abandoned request
   does not make its channel busy, but it still blocks new requests. */
static uint32_t ctaphid_busy_cid(const struct ctaphid *h)
{
	if (h->asm_active)
		return h->asm_cid;
	if (h->req_active && !h->req_aborted)
		return h->req_cid;
	return 0;
}

static void ctaphid_expire(struct ctaphid *h, uint64_t now_ms)
{
	if (h->asm_active && now_ms - h->asm_last_ms >= CTAPHID_TRANSACTION_TIMEOUT_MS) {
		uint32_t cid = h->asm_cid;

		ctaphid_asm_reset(h);
		ctaphid_send_error(h, cid, CTAPHID_ERR_MSG_TIMEOUT);
	}
	if (h->lock_active && now_ms >= h->lock_until_ms) {
		h->lock_active = false;
		h->lock_cid = 0;
	}
}

static uint64_t ctaphid_clock(struct ctaphid *h, uint64_t now_ms)
{
	if (now_ms > h->now_ms)
		h->now_ms = now_ms;
	return h->now_ms;
}

static void ctaphid_abort_request(struct ctaphid *h)
{
	h->req_aborted = true;
	if (!h->req_cancelled && h->cb.cancel != NULL) {
		h->req_cancelled = true;
		h->cb.cancel(h->user, h->req_cid);
	}
	h->req_cancelled = true;
}

static void ctaphid_handle_init(struct ctaphid *h, uint32_t cid, const uint8_t *nonce)
{
	uint8_t resp[CTAPHID_INIT_RESPONSE_LEN];
	uint32_t assigned = cid;

	if (cid == CTAPHID_BROADCAST_CID)
		assigned = ctaphid_channel_alloc(h);
	memcpy(resp, nonce, CTAPHID_INIT_NONCE_LEN);
	ctaphid_put_be32(resp + 8, assigned);
	resp[12] = CTAPHID_PROTOCOL_VERSION;
	resp[13] = h->version[0];
	resp[14] = h->version[1];
	resp[15] = h->version[2];
	resp[16] = h->caps;
	ctaphid_send_message(h, cid, CTAPHID_INIT, resp, sizeof(resp));
}

static void ctaphid_handle_lock(struct ctaphid *h, uint32_t cid, uint8_t seconds, uint64_t now_ms)
{
	if (seconds > CTAPHID_MAX_LOCK_SECONDS) {
		ctaphid_send_error(h, cid, CTAPHID_ERR_INVALID_PAR);
		return;
	}
	if (seconds == 0) {
		h->lock_active = false;
		h->lock_cid = 0;
	} else {
		h->lock_active = true;
		h->lock_cid = cid;
		h->lock_until_ms = now_ms + (uint64_t)seconds * 1000;
	}
	ctaphid_send_message(h, cid, CTAPHID_LOCK, NULL, 0);
}

/* A whole message arrived; data is wiped by the caller once this returns. */
static void ctaphid_dispatch(struct ctaphid *h, uint32_t cid, uint8_t cmd, const uint8_t *data,
			     size_t len, uint64_t now_ms)
{
	switch (cmd) {
	case CTAPHID_PING:
		ctaphid_send_message(h, cid, CTAPHID_PING, data, len);
		break;
	case CTAPHID_INIT:
		ctaphid_handle_init(h, cid, data);
		break;
	case CTAPHID_LOCK:
		ctaphid_handle_lock(h, cid, data[0], now_ms);
		break;
	case CTAPHID_WINK:
		ctaphid_send_message(h, cid, CTAPHID_WINK, NULL, 0);
		if (h->cb.wink != NULL)
			h->cb.wink(h->user, cid);
		break;
	case CTAPHID_CBOR:
	case CTAPHID_MSG:
		/* The owner still holds a request the host abandoned. */
		if (h->req_active) {
			ctaphid_send_error(h, cid, CTAPHID_ERR_CHANNEL_BUSY);
			break;
		}
		h->req_active = true;
		h->req_aborted = false;
		h->req_cancelled = false;
		h->req_cid = cid;
		h->status = CTAPHID_STATUS_PROCESSING;
		h->next_keepalive_ms = now_ms + CTAPHID_KEEPALIVE_INTERVAL_MS;
		h->cb.request(h->user, cid, cmd, data, len);
		break;
	default:
		ctaphid_send_error(h, cid, CTAPHID_ERR_INVALID_CMD);
		break;
	}
}

/* Whether cmd is a command this device answers, given its capabilities. */
static bool ctaphid_command_known(const struct ctaphid *h, uint8_t cmd)
{
	switch (cmd) {
	case CTAPHID_PING:
	case CTAPHID_INIT:
	case CTAPHID_LOCK:
		return true;
	case CTAPHID_WINK:
		return (h->caps & CTAPHID_CAP_WINK) != 0;
	case CTAPHID_CBOR:
		return (h->caps & CTAPHID_CAP_CBOR) != 0;
	case CTAPHID_MSG:
		return (h->caps & CTAPHID_CAP_NMSG) == 0;
	default:
		return false;
	}
}

/* Whether len is a valid payload length for cmd. */
static bool ctaphid_length_ok(uint8_t cmd, size_t len)
{
	switch (cmd) {
	case CTAPHID_INIT:
		return len == CTAPHID_INIT_NONCE_LEN;
	case CTAPHID_LOCK:
		return len == 1;
	case CTAPHID_CBOR:
	case CTAPHID_MSG:
		return len >= 1 && len <= CTAPHID_MAX_MSG;
	default:
		return len <= CTAPHID_MAX_MSG;
	}
}

static void ctaphid_input_init(struct ctaphid *h, const uint8_t *report, uint64_t now_ms)
{
	uint32_t cid = ctaphid_get_be32(report);
	uint8_t cmd = report[4];
	size_t len = (size_t)report[5] << 8 | report[6];
	uint32_t busy;

	if (cid == 0 || (cid == CTAPHID_BROADCAST_CID && cmd != CTAPHID_INIT) ||
	    (cid != CTAPHID_BROADCAST_CID && ctaphid_channel_find(h, cid) == NULL)) {
		ctaphid_send_error(h, cid, CTAPHID_ERR_INVALID_CHANNEL);
		return;
	}
	/* CANCEL has no answer of its own, not even an error: it is ignored
	   unless it names the outstanding request. */
	if (cmd == CTAPHID_CANCEL) {
		if (h->req_active && !h->req_aborted && h->req_cid == cid && !h->req_cancelled) {
			h->req_cancelled = true;
			if (h->cb.cancel != NULL)
				h->cb.cancel(h->user, cid);
		}
		return;
	}
	if (h->lock_active && h->lock_cid != cid) {
		ctaphid_send_error(h, cid, CTAPHID_ERR_CHANNEL_BUSY);
		return;
	}
	busy = ctaphid_busy_cid(h);
	if (busy != 0 && busy == cid) {
		if (cmd == CTAPHID_INIT) {
			/* Resynchronise: drop whatever the channel was doing. */
			if (h->asm_active)
				ctaphid_asm_reset(h);
			else
				ctaphid_abort_request(h);
		} else if (h->asm_active) {
			ctaphid_asm_reset(h);
			ctaphid_send_error(h, cid, CTAPHID_ERR_INVALID_SEQ);
			return;
		} else {
			ctaphid_send_error(h, cid, CTAPHID_ERR_CHANNEL_BUSY);
			return;
		}
	} else if (busy != 0 && cmd != CTAPHID_INIT) {
		/* INIT touches no other channel's state, so it is served while
		   another channel is busy (a second client may open the device). */
		ctaphid_send_error(h, cid, CTAPHID_ERR_CHANNEL_BUSY);
		return;
	}
	if (!ctaphid_command_known(h, cmd)) {
		ctaphid_send_error(h, cid, CTAPHID_ERR_INVALID_CMD);
		return;
	}
	if (!ctaphid_length_ok(cmd, len)) {
		ctaphid_send_error(h, cid, CTAPHID_ERR_INVALID_LEN);
		return;
	}
	ctaphid_channel_touch(h, cid);
	if (len <= CTAPHID_INIT_DATA_LEN) {
		/* Not h->asm_buf: an INIT may come in while another channel
		   is half way through a message. */
		uint8_t data[CTAPHID_INIT_DATA_LEN];

		memcpy(data, report + 7, len);
		ctaphid_dispatch(h, cid, cmd, data, len, now_ms);
		sodium_memzero(data, sizeof(data));
		return;
	}
	h->asm_active = true;
	h->asm_cid = cid;
	h->asm_cmd = cmd;
	h->asm_len = len;
	memcpy(h->asm_buf, report + 7, CTAPHID_INIT_DATA_LEN);
	h->asm_got = CTAPHID_INIT_DATA_LEN;
	h->asm_next_seq = 0;
	h->asm_last_ms = now_ms;
}

static void ctaphid_input_cont(struct ctaphid *h, const uint8_t *report, uint64_t now_ms)
{
	uint32_t cid = ctaphid_get_be32(report);
	uint8_t seq = report[4];
	size_t n;

	/* Spurious continuation packets (no message being assembled on their
	   channel) are ignored, as the spec says. */
	if (!h->asm_active || h->asm_cid != cid)
		return;
	if (seq != h->asm_next_seq) {
		ctaphid_asm_reset(h);
		ctaphid_send_error(h, cid, CTAPHID_ERR_INVALID_SEQ);
		return;
	}
	n = h->asm_len - h->asm_got;
	if (n > CTAPHID_CONT_DATA_LEN)
		n = CTAPHID_CONT_DATA_LEN;
	memcpy(h->asm_buf + h->asm_got, report + 5, n);
	h->asm_got += n;
	h->asm_next_seq++;
	h->asm_last_ms = now_ms;
	ctaphid_channel_touch(h, cid);
	if (h->asm_got == h->asm_len) {
		/* Not busy any more while the owner handles it: the request
		   (or nothing, for PING) takes over. */
		h->asm_active = false;
		ctaphid_dispatch(h, cid, h->asm_cmd, h->asm_buf, h->asm_len, now_ms);
		ctaphid_asm_reset(h);
	}
}

int ctaphid_new(const struct ctaphid_cb *cb, void *user, struct ctaphid **out)
{
	struct ctaphid *h = NULL;
	int r = PKS_ERR_INTERNAL;

	if (cb == NULL || cb->send == NULL || cb->request == NULL || out == NULL) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	h->asm_buf = calloc(1, CTAPHID_MAX_MSG);
	if (h->asm_buf == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	h->cb = *cb;
	h->user = user;
	h->caps = CTAPHID_DEFAULT_CAPS;
	h->next_cid = 1;
	h->status = CTAPHID_STATUS_PROCESSING;
	*out = h;
	h = NULL;
	r = PKS_OK;
out:
	ctaphid_free(h);
	return r;
}

void ctaphid_free(struct ctaphid *h)
{
	if (h == NULL)
		return;
	if (h->asm_buf != NULL) {
		sodium_memzero(h->asm_buf, CTAPHID_MAX_MSG);
		free(h->asm_buf);
	}
	sodium_memzero(h, sizeof(*h));
	free(h);
}

int ctaphid_input(struct ctaphid *h, const uint8_t report[CTAPHID_REPORT_LEN], uint64_t now_ms)
{
	if (h == NULL || report == NULL)
		return PKS_ERR_INVALID;
	now_ms = ctaphid_clock(h, now_ms);
	/* A late packet must not extend a message that already timed out,
	   even if the caller has not ticked since. */
	ctaphid_expire(h, now_ms);
	if (report[4] & 0x80)
		ctaphid_input_init(h, report, now_ms);
	else
		ctaphid_input_cont(h, report, now_ms);
	return PKS_OK;
}

void ctaphid_tick(struct ctaphid *h, uint64_t now_ms)
{
	if (h == NULL)
		return;
	now_ms = ctaphid_clock(h, now_ms);
	ctaphid_expire(h, now_ms);
	if (h->req_active && !h->req_aborted && now_ms >= h->next_keepalive_ms) {
		uint8_t status = h->status;

		ctaphid_send_message(h, h->req_cid, CTAPHID_KEEPALIVE, &status, 1);
		/* One keepalive per interval, never a burst after a long gap. */
		h->next_keepalive_ms += CTAPHID_KEEPALIVE_INTERVAL_MS;
		if (h->next_keepalive_ms <= now_ms)
			h->next_keepalive_ms = now_ms + CTAPHID_KEEPALIVE_INTERVAL_MS;
	}
}

void ctaphid_set_status(struct ctaphid *h, uint8_t keepalive_status)
{
	if (h != NULL)
		h->status = keepalive_status;
}

int ctaphid_respond(struct ctaphid *h, uint32_t cid, uint8_t cmd, const uint8_t *data, size_t len)
{
	int r = PKS_ERR_INTERNAL;

	if (h == NULL || (data == NULL && len > 0) || (cmd & 0x80) == 0) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	if (len > CTAPHID_MAX_MSG) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	if (!h->req_active || h->req_cid != cid) {
		r = PKS_ERR_STATE;
		goto out;
	}
	h->req_active = false;
	if (!h->req_aborted)
		ctaphid_send_message(h, cid, cmd, data, len);
	h->req_aborted = false;
	h->req_cancelled = false;
	r = PKS_OK;
out:
	return r;
}

void ctaphid_set_capabilities(struct ctaphid *h, uint8_t caps)
{
	if (h != NULL)
		h->caps = caps;
}

void ctaphid_set_device_version(struct ctaphid *h, uint8_t major, uint8_t minor, uint8_t build)
{
	if (h == NULL)
		return;
	h->version[0] = major;
	h->version[1] = minor;
	h->version[2] = build;
}
