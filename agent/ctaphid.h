/*
 * CTAPHID framing (FIDO CTAP 2.1, section 11.2): turns 64-byte HID reports
 * from the host into whole requests and whole responses back into reports.
 *
 * Pure: no I/O, no clock, no randomness. Reports come in through
 * ctaphid_input(), go out through the send callback, and time is passed in by
 * the caller. The same code serves /dev/uhid (production) and the
 * SOCK_SEQPACKET test socket; neither is known here.
 *
 * One request is outstanding at a time: a CBOR (or MSG) request is handed to
 * the request callback and the owner answers it, later, with
 * ctaphid_respond(). PING, INIT, LOCK, WINK and CANCEL are handled here.
 * Host mistakes are answered with CTAPHID_ERROR reports, never with error
 * returns. Every call makes at most CTAPHID_MAX_REPORTS_PER_CALL reports.
 */
#ifndef PKS_CTAPHID_H
#define PKS_CTAPHID_H

#include <stddef.h>
#include <stdint.h>

#define CTAPHID_REPORT_LEN 64
#define CTAPHID_INIT_DATA_LEN 57 /* payload bytes in an initialisation packet */
#define CTAPHID_CONT_DATA_LEN 59 /* payload bytes in a continuation packet */
#define CTAPHID_MAX_SEQ 127
#define CTAPHID_MAX_MSG 7609 /* 57 + 128 * 59 */
#define CTAPHID_BROADCAST_CID 0xffffffffu
/* A whole message of CTAPHID_MAX_MSG bytes takes 129 reports. */
#define CTAPHID_MAX_REPORTS_PER_MSG (1 + CTAPHID_MAX_SEQ + 1)
/* Bound on the reports one ctaphid_input()/ctaphid_tick()/ctaphid_respond()
   call can make: one error for a timed-out message, then one whole message. */
#define CTAPHID_MAX_REPORTS_PER_CALL (CTAPHID_MAX_REPORTS_PER_MSG + 2)
/* Channels kept at once; allocating one more drops the least recently used. */
#define CTAPHID_MAX_CHANNELS 64
#define CTAPHID_TRANSACTION_TIMEOUT_MS 500 /* gap between packets of a message */
#define CTAPHID_KEEPALIVE_INTERVAL_MS 100
#define CTAPHID_MAX_LOCK_SECONDS 10
#define CTAPHID_PROTOCOL_VERSION 2

enum {
	CTAPHID_PING = 0x81,
	CTAPHID_MSG = 0x83,
	CTAPHID_LOCK = 0x84,
	CTAPHID_INIT = 0x86,
	CTAPHID_WINK = 0x88,
	CTAPHID_CBOR = 0x90,
	CTAPHID_CANCEL = 0x91,
	CTAPHID_KEEPALIVE = 0xbb,
	CTAPHID_ERROR = 0xbf,
};

/* Payload byte of a CTAPHID_ERROR report. */
enum {
	CTAPHID_ERR_INVALID_CMD = 0x01,
	CTAPHID_ERR_INVALID_PAR = 0x02,
	CTAPHID_ERR_INVALID_LEN = 0x03,
	CTAPHID_ERR_INVALID_SEQ = 0x04,
	CTAPHID_ERR_MSG_TIMEOUT = 0x05,
	CTAPHID_ERR_CHANNEL_BUSY = 0x06,
	CTAPHID_ERR_LOCK_REQUIRED = 0x0a,
	CTAPHID_ERR_INVALID_CHANNEL = 0x0b,
	CTAPHID_ERR_OTHER = 0x7f,
};

/* Payload byte of a CTAPHID_KEEPALIVE report. */
enum {
	CTAPHID_STATUS_PROCESSING = 1,
	CTAPHID_STATUS_UPNEEDED = 2,
};

/* Capability flags of the INIT response. */
enum {
	CTAPHID_CAP_WINK = 0x01,
	CTAPHID_CAP_CBOR = 0x04,
	CTAPHID_CAP_NMSG = 0x08, /* set: CTAPHID_MSG is not implemented */
};
#define CTAPHID_DEFAULT_CAPS (CTAPHID_CAP_WINK | CTAPHID_CAP_CBOR | CTAPHID_CAP_NMSG)

struct ctaphid;

/*
 * Callbacks run synchronously from inside ctaphid_input(), ctaphid_tick() and
 * ctaphid_respond(). They must not free the ctaphid; request may call
 * ctaphid_respond() at once.
 */
struct ctaphid_cb {
	/* One 64-byte report to the host. */
	void (*send)(void *user, const uint8_t report[CTAPHID_REPORT_LEN]);
	/* A whole CBOR (or MSG) request on cid; answer later with
	   ctaphid_respond(). Only one request is outstanding at a time. data is
	   borrowed for the duration of the call only (it is wiped afterwards);
	   len is at least 1 and at most CTAPHID_MAX_MSG. */
	void (*request)(void *user, uint32_t cid, uint8_t cmd, const uint8_t *data, size_t len);
	/* The host cancelled the outstanding request on cid (CTAPHID_CANCEL, or
	   an INIT that resynchronised its channel). The request stays
	   outstanding until the owner answers it with ctaphid_respond(), for a
	   CBOR request with CTAP2_ERR_KEEPALIVE_CANCEL. */
	void (*cancel)(void *user, uint32_t cid);
	/* Optional (may be NULL): the host asked the device to identify itself
	   (CTAPHID_WINK). Announced only with CTAPHID_CAP_WINK. */
	void (*wink)(void *user, uint32_t cid);
};

/*
 * A new framing state with no channels, CTAPHID_DEFAULT_CAPS and device
 * version 0.0.0. cb is copied; send and request are required, cancel and
 * wink may be NULL. Returns PKS_ERR_INVALID for a missing callback,
 * PKS_ERR_NOMEM.
 */
int ctaphid_new(const struct ctaphid_cb *cb, void *user, struct ctaphid **out);
/* Frees h and wipes any partial message. NULL is fine. */
void ctaphid_free(struct ctaphid *h);

/*
 * One report from the host (exactly 64 bytes; the uhid glue strips the
 * report id). Errors never come back as return codes for host mistakes: they
 * are answered with CTAPHID_ERROR reports as the spec says; the return is
 * PKS_OK unless memory runs out. now_ms is a monotonic clock; the caller's
 * epoch does not matter, only that it never goes back.
 */
int ctaphid_input(struct ctaphid *h, const uint8_t report[CTAPHID_REPORT_LEN], uint64_t now_ms);

/*
 * Timers: a message whose continuation packets stop for 500 ms gets
 * ERR_MSG_TIMEOUT; LOCK expiry; while a request is outstanding send
 * KEEPALIVE every 100 ms with the status set by ctaphid_set_status().
 * Call every ~50 ms.
 */
void ctaphid_tick(struct ctaphid *h, uint64_t now_ms);

/* The status byte of the keepalives of the outstanding request
   (CTAPHID_STATUS_PROCESSING by default, reset for each new request). */
void ctaphid_set_status(struct ctaphid *h, uint8_t keepalive_status);

/*
 * Answers the outstanding request (fragmented into init + continuation
 * reports) and ends it, which stops keepalives. cmd is normally the
 * request's command. If the host abandoned the request (INIT on its channel)
 * nothing is sent and PKS_OK is returned. Returns PKS_ERR_STATE if no
 * request is outstanding on cid, PKS_ERR_TOO_LARGE if len exceeds
 * CTAPHID_MAX_MSG, PKS_ERR_INVALID for a bad argument.
 */
int ctaphid_respond(struct ctaphid *h, uint32_t cid, uint8_t cmd, const uint8_t *data, size_t len);

/* Capabilities announced in the INIT response (CBOR | WINK; NMSG unless MSG
   supported). A command whose capability is not announced gets
   ERR_INVALID_CMD. */
void ctaphid_set_capabilities(struct ctaphid *h, uint8_t caps);

/* Device version announced in the INIT response. */
void ctaphid_set_device_version(struct ctaphid *h, uint8_t major, uint8_t minor, uint8_t build);

#endif
