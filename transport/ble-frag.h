/*
 * A small reliable link over BLE datagrams, pure (no I/O, no clock: the
 * caller passes the time in milliseconds on a monotonic clock).
 *
 * GATT gives datagrams of at most MTU-3 bytes (one ATT write-without-response
 * or notification each) that may be dropped silently (a full receive socket
 * drops notifications) but are never corrupted. This module carries frames of
 * up to FRAME_MAX bytes over them: fragmentation, 8-bit sequence numbers, a
 * window of at most BLE_FRAG_WINDOW_MAX fragments, cumulative acks piggy-
 * backed on every datagram, selective acks in pure acks, retransmission on an
 * adaptive timer (RFC 6298 style, Karn's rule), keepalives and a dead-peer
 * timeout. Memory per link is bounded: the send queue by send_queue_max, the
 * send and receive windows by 2 * BLE_FRAG_WINDOW_MAX * BLE_FRAG_DGRAM_MAX
 * (about 33 KB, inline), and reassembly by the announced frame length
 * (<= FRAME_MAX).
 *
 * Sequence numbers are 8 bits and the window at most 32, so a datagram the
 * channel delays by more than about seven windows of progress could be
 * taken for a new one. GATT delivers in order (the sim too), so this only
 * matters for channels that reorder that much; the unit tests reorder
 * within tens of milliseconds.
 *
 * Datagram format, every field big-endian:
 *
 *   byte 0  tag: the link tag (1..255), chosen by the central at random, so
 *           the peripheral can tell apart centrals sharing one fd and a
 *           central can skip notifications meant for another central
 *   byte 1  bits 7..5 version (1), bits 4..2 type, bit 1 START, bit 0 END
 *   byte 2  seq: DATA: the fragment's sequence number; otherwise 0
 *   byte 3  ack: the next sequence number this side expects (cumulative)
 *   then by type:
 *   DATA    (0) [START: frame length, 2 bytes, 1..FRAME_MAX] fragment bytes
 *           (at least one); START marks a frame's first fragment, END its
 *           last (both on a one-fragment frame)
 *   ACK     (1) 4 bytes: bit i (LSB first over the 32-bit big-endian value)
 *           set when seq ack+1+i is buffered out of order (selective ack)
 *   OPEN    (2) nonce (4 bytes), receive window (1 byte, 1..32): sent by the
 *           central until answered
 *   OPEN_OK (3) the OPEN's nonce, the peripheral's receive window
 *   CLOSE   (4) nothing: the sender has closed the link
 *
 * So a DATA fragment carries mtu-7 bytes of frame (mtu-9 on a START), and
 * the smallest MTU (23) carries 16 bytes per datagram.
 *
 * Errors a link reports (from ble_frag_input/output/check) are final: the
 * link is failed and every later call returns the same error.
 */
#ifndef PKS_TRANSPORT_BLE_FRAG_H
#define PKS_TRANSPORT_BLE_FRAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLE_FRAG_VERSION 1u
#define BLE_FRAG_HEADER_BYTES 4u
#define BLE_FRAG_START_BYTES 2u
/* ATT MTU bounds: BLE minimum and BlueZ's maximum (512-byte values + 5). */
#define BLE_FRAG_MTU_MIN 23u
#define BLE_FRAG_MTU_MAX 517u
/* The largest datagram either side sends or accepts (MTU_MAX - 3). */
#define BLE_FRAG_DGRAM_MAX (BLE_FRAG_MTU_MAX - 3u)
#define BLE_FRAG_WINDOW_MAX 32u
#define BLE_FRAG_WINDOW_DEFAULT 16u
#define BLE_FRAG_SEND_QUEUE_DEFAULT (256u * 1024u)

enum ble_frag_type {
	BLE_FRAG_DATA = 0,
	BLE_FRAG_ACK = 1,
	BLE_FRAG_OPEN = 2,
	BLE_FRAG_OPEN_OK = 3,
	BLE_FRAG_CLOSE = 4,
};

#define BLE_FRAG_FLAG_START 0x02u
#define BLE_FRAG_FLAG_END 0x01u

/* A parsed datagram header (plain value). */
struct ble_frag_header {
	uint8_t tag;
	enum ble_frag_type type;
	bool start;
	bool end;
	uint8_t seq;
	uint8_t ack;
};

/*
 * Parses a datagram's header. PKS_ERR_TRUNCATED under 4 bytes,
 * PKS_ERR_TOO_LARGE over BLE_FRAG_DGRAM_MAX, PKS_ERR_UNSUPPORTED for another
 * version, PKS_ERR_MALFORMED for tag 0, an unknown type or a type whose body
 * has the wrong size or flags. *out is written only on success.
 */
int ble_frag_parse_header(const uint8_t *dgram, size_t len, struct ble_frag_header *out);

/*
 * For a demultiplexer: when dgram is a well-formed OPEN, gives its tag and
 * nonce and returns PKS_OK; otherwise as ble_frag_parse_header(), or
 * PKS_ERR_STATE for a well-formed datagram of another type.
 */
int ble_frag_parse_open(const uint8_t *dgram, size_t len, uint8_t *tag, uint32_t *nonce);

struct ble_frag_params {
	unsigned mtu;            /* ATT MTU for what this side sends, 23..517 */
	uint8_t tag;             /* 1..255 */
	uint32_t nonce;          /* the link's nonce (the OPEN's, for a peripheral) */
	bool initiator;          /* true on the central: sends OPEN first */
	unsigned window;         /* receive window in fragments, 1..32; 0 = 16 */
	size_t send_queue_max;   /* bytes; 0 = BLE_FRAG_SEND_QUEUE_DEFAULT */
	uint32_t rto_initial_ms; /* 0 = 1000 */
	uint32_t rto_min_ms;     /* 0 = 200 */
	uint32_t rto_max_ms;     /* 0 = 8000 */
	uint32_t ack_delay_ms;   /* 0 = 20: a pure ack waits this long for data to ride on */
	uint32_t keepalive_ms;   /* 0 = 4000: an ack is sent after this long without sending */
	uint32_t dead_ms;        /* 0 = 20000: nothing received this long fails the link */
	uint32_t linger_ms;      /* 0 = 3000: ble_frag_close() waits this long for acks */
};

struct ble_frag; /* opaque, one link */

/*
 * A link in its opening state as of now_ms. A central (initiator) sends OPEN
 * until OPEN_OK arrives; a peripheral is made when an OPEN arrives (take tag
 * and nonce from ble_frag_parse_open()) and must be fed that OPEN. p is
 * copied. PKS_ERR_INVALID for parameters out of range, PKS_ERR_NOMEM.
 */
int ble_frag_new(const struct ble_frag_params *p, uint64_t now_ms, struct ble_frag **out);

/* Frees everything; NULL is fine. */
void ble_frag_free(struct ble_frag *f);

/*
 * Queues one frame (copied) to send. PKS_ERR_BUSY when the queue would pass
 * send_queue_max (nothing is queued; ble_frag_queued() tells when it has
 * room again), PKS_ERR_INVALID for an empty frame, PKS_ERR_TOO_LARGE over
 * FRAME_MAX, PKS_ERR_CLOSED after ble_frag_close() or once failed,
 * PKS_ERR_NOMEM. Frames may be queued before the link is open.
 */
int ble_frag_send(struct ble_frag *f, const uint8_t *frame, size_t len);

/* A whole frame, valid during the call only. Anything but PKS_OK stops
   ble_frag_input() (the rest of the datagram's effect is kept) and is
   returned by it, without failing the link. */
typedef int (*ble_frag_frame_fn)(void *user, const uint8_t *frame, size_t len);

/*
 * Feeds one received datagram of this link (its tag is checked; a datagram
 * for another tag is ignored, as are stale duplicates and anything but
 * OPEN_OK while opening). Complete frames go to fn in order, exactly once.
 * PKS_OK, PKS_ERR_CLOSED when the peer sent CLOSE, PKS_ERR_MALFORMED /
 * PKS_ERR_TOO_LARGE / PKS_ERR_UNSUPPORTED for a protocol violation (the link
 * is failed: close it), or fn's error.
 */
int ble_frag_input(struct ble_frag *f, const uint8_t *dgram, size_t len, uint64_t now_ms,
		   ble_frag_frame_fn fn, void *user);

/*
 * The next datagram to send now, if any: written to out (cap must be at
 * least mtu-3), its length to *out_len (0 when nothing is due). Call it
 * until it gives 0, and again at ble_frag_deadline(), after input and after
 * send. A datagram handed out counts as sent: if the socket refuses it, keep
 * it and write it later. Runs the timers first, like ble_frag_check().
 */
int ble_frag_output(struct ble_frag *f, uint64_t now_ms, uint8_t *out, size_t cap, size_t *out_len);

/* Runs the timers: PKS_ERR_TIMEOUT when the peer has been silent for
   dead_ms (or never answered OPEN), else PKS_OK. */
int ble_frag_check(struct ble_frag *f, uint64_t now_ms);

/* When ble_frag_output() or ble_frag_check() should next run (absolute ms);
   UINT64_MAX for never. Work that is ready now (data in the window,
   resends) is not counted: keep calling output while the fd takes
   datagrams, and use this when it gives 0 bytes. */
uint64_t ble_frag_deadline(const struct ble_frag *f);

/*
 * Starts closing at now_ms: no new frames; queued and unacked data is still
 * sent for up to linger_ms, then ble_frag_output() emits CLOSE once and the
 * link is done. Idempotent.
 */
void ble_frag_close(struct ble_frag *f, uint64_t now_ms);

/* True once open (OPEN_OK sent or received). */
bool ble_frag_is_open(const struct ble_frag *f);
/* True once CLOSE was emitted, or the link failed, or the peer closed. */
bool ble_frag_is_done(const struct ble_frag *f);
/* Bytes of frames queued and not yet acknowledged by the peer. */
size_t ble_frag_queued(const struct ble_frag *f);
uint8_t ble_frag_tag(const struct ble_frag *f);
uint32_t ble_frag_nonce(const struct ble_frag *f);

/* Fragments cut from now on are for this ATT MTU (23..517; others are
   ignored). Those already sent keep their size, resends included: a smaller
   MTU than before can cut them, and the peer then fails the link. For a
   peripheral whose notification fd was acquired again, with the MTU of a
   new subscription epoch, after the link had started. */
void ble_frag_set_mtu(struct ble_frag *f, unsigned mtu);

/* Counters for tests and status. */
struct ble_frag_stats {
	uint64_t dgrams_out;
	uint64_t dgrams_in;
	uint64_t retransmits;
	uint64_t dup_in;
	uint64_t frames_out;
	uint64_t frames_in;
	uint32_t srtt_ms;
	uint32_t rto_ms;
};
void ble_frag_get_stats(const struct ble_frag *f, struct ble_frag_stats *out);

#endif
