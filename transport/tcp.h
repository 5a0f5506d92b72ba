/*
 * Frames over TCP on a libuv loop: a listener that accepts connections, a
 * dialer that keeps one outbound connection up with exponential backoff, and
 * the connection itself (bounded send queue, frame callbacks, idle timeout).
 * The module moves opaque frames only; it never logs a payload.
 *
 * Handles are freed asynchronously, libuv style: after tcp_conn_close(),
 * tcp_listener_close() or tcp_dialer_free() the loop must run until the
 * close callbacks have fired before uv_loop_close().
 */
#ifndef PKS_TRANSPORT_TCP_H
#define PKS_TRANSPORT_TCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "common/log.h"

#define TCP_DEFAULT_PORT 7393
/* tcp_conn_send() refuses a frame that would queue more than this. */
#define TCP_SEND_QUEUE_MAX (1024u * 1024u)
/* After PKS_ERR_BUSY, on_drain fires once the queue is at or below this. */
#define TCP_SEND_QUEUE_LOW (TCP_SEND_QUEUE_MAX / 4u)
/* Longest "ADDR:PORT" text tcp_parse_addr() accepts. */
#define TCP_ADDR_MAX 128
/* Backoff bounds for the dialer, in milliseconds: the base delay doubles from
   MIN up to BASE_MAX, and jitter adds up to half the base, so every delay
   lies in MIN .. MAX and even capped retries are spread out. */
#define TCP_BACKOFF_MIN_MS 500u
#define TCP_BACKOFF_BASE_MAX_MS 40000u
#define TCP_BACKOFF_MAX_MS 60000u
/* A connection that lasted longer than this resets the backoff. */
#define TCP_BACKOFF_RESET_MS 10000u
/* A connect attempt that has not completed after this counts as failed. */
#define TCP_CONNECT_TIMEOUT_MS 10000u
/* A listener accepts at most this many live connections; more are closed. */
#define TCP_LISTENER_MAX_CONNS 64u
/* A connection whose peer stopped answering (link cut, out of range, powered
   off: no FIN, no RST) fails with PKS_ERR_TIMEOUT after about this long:
   kernel keepalives after TCP_KEEPALIVE_IDLE_S of silence, then every
   TCP_KEEPALIVE_INTERVAL_S, TCP_KEEPALIVE_PROBES unanswered; the same bound
   (TCP_USER_TIMEOUT) for data sent and never acknowledged. */
#define TCP_KEEPALIVE_IDLE_S 5
#define TCP_KEEPALIVE_INTERVAL_S 2
#define TCP_KEEPALIVE_PROBES 3
#define TCP_DEAD_PEER_MS                                                                           \
	((TCP_KEEPALIVE_IDLE_S + TCP_KEEPALIVE_INTERVAL_S * TCP_KEEPALIVE_PROBES) * 1000u)

struct tcp_conn; /* opaque, heap, freed by the module after on_close ran */

struct tcp_conn_cb {
	/* A whole frame; the body is only valid during the call. */
	void (*on_frame)(void *user, struct tcp_conn *c, const uint8_t *body, size_t len);
	/* Send queue fell below the low-water mark after PKS_ERR_BUSY. */
	void (*on_drain)(void *user, struct tcp_conn *c);
	/* Called exactly once; c is freed right after it returns. err is PKS_OK
	   for a local tcp_conn_close(), else why (EOF, reset, bad frame, timeout). */
	void (*on_close)(void *user, struct tcp_conn *c, int err);
};

/* Sets the callbacks (copied) and their user pointer; any member may be NULL. */
void tcp_conn_set_cb(struct tcp_conn *c, const struct tcp_conn_cb *cb, void *user);

/*
 * Queues one frame (the body is copied). PKS_ERR_BUSY when more than
 * TCP_SEND_QUEUE_MAX bytes (headers included) would be queued: nothing is
 * queued then and on_drain follows once the queue is low again.
 * PKS_ERR_TOO_LARGE over FRAME_MAX, PKS_ERR_INVALID for an empty body,
 * PKS_ERR_CLOSED once the connection is closing, PKS_ERR_NOMEM.
 */
int tcp_conn_send(struct tcp_conn *c, const uint8_t *body, size_t len);

/* Bytes (headers included) accepted by tcp_conn_send() and not yet written. */
size_t tcp_conn_queued(const struct tcp_conn *c);

/*
 * Closes the connection and logs the reason (a fixed text, never payload).
 * Frames already queued are flushed for a short while first. Idempotent;
 * on_close follows from the loop with err PKS_OK.
 */
void tcp_conn_close(struct tcp_conn *c, const char *reason);

/* The peer as "1.2.3.4:7393" or "[::1]:7393"; valid until on_close returns. */
const char *tcp_conn_peer(const struct tcp_conn *c);

/* Bytes on the socket, frame headers included. */
uint64_t tcp_conn_bytes_in(const struct tcp_conn *c);
uint64_t tcp_conn_bytes_out(const struct tcp_conn *c);

/* Closes with PKS_ERR_TIMEOUT after ms without any received byte; 0 = none. */
void tcp_conn_set_idle_timeout(struct tcp_conn *c, uint64_t ms);

/* True when a tcp_dialer made this connection. */
bool tcp_conn_outbound(const struct tcp_conn *c);

struct tcp_listener;

/* A new inbound connection; set its callbacks before returning. */
typedef void (*tcp_accept_fn)(void *user, struct tcp_conn *c);

/*
 * Binds addr_port ("0.0.0.0:7393", "[::]:0", ...; port 0 picks an ephemeral
 * port) and listens. log is copied and may be NULL. On error nothing is
 * written to out: PKS_ERR_INVALID / PKS_ERR_TOO_LARGE for a bad address,
 * PKS_ERR_EXISTS when the address is in use, PKS_ERR_PERM, PKS_ERR_IO.
 */
int tcp_listen(uv_loop_t *loop, const char *addr_port, const struct pks_logger *log,
	       tcp_accept_fn fn, void *user, struct tcp_listener **out);

/* The bound port (the ephemeral one when 0 was asked for). */
uint16_t tcp_listener_port(const struct tcp_listener *l);

/* Stops accepting; accepted connections stay up. Frees asynchronously; NULL ok. */
void tcp_listener_close(struct tcp_listener *l);

struct tcp_dialer; /* one remote address, keeps one connection up */

/* A connection is up; set its callbacks before returning. */
typedef void (*tcp_connect_fn)(void *user, struct tcp_dialer *d, struct tcp_conn *c);

/*
 * Makes a dialer for addr_port (numeric, port 1..65535); it does nothing until
 * tcp_dialer_start(). log is copied and may be NULL. PKS_ERR_INVALID /
 * PKS_ERR_TOO_LARGE for a bad address, PKS_ERR_NOMEM.
 */
int tcp_dialer_new(uv_loop_t *loop, const char *addr_port, const struct pks_logger *log,
		   tcp_connect_fn fn, void *user, struct tcp_dialer **out);

/* Connects now, then retries with backoff. A no-op while a connect is in
   progress or the connection it handed out is still open (closing counts as
   open until its on_close has run); once that connection is gone, start
   connects again even if tcp_dialer_connection_lost() was never called. */
void tcp_dialer_start(struct tcp_dialer *d);

/*
 * The caller tells the dialer its connection ended: retry after the backoff
 * (grows 0.5 s .. 60 s with jitter while attempts fail; reset to 0.5 s after
 * a connection that lasted > 10 s or after tcp_dialer_reset()).
 */
void tcp_dialer_connection_lost(struct tcp_dialer *d);

/* Sets the backoff back to its minimum. */
void tcp_dialer_reset(struct tcp_dialer *d);

/* No more attempts; a connect in progress is cancelled, a connection handed
   out stays up (it belongs to the caller). */
void tcp_dialer_stop(struct tcp_dialer *d);

/* Stops; frees asynchronously. NULL is fine. d must not be used afterwards,
   not even from the on_close of a connection it handed out. */
void tcp_dialer_free(struct tcp_dialer *d);

/* The address as given to tcp_dialer_new(). */
const char *tcp_dialer_addr(const struct tcp_dialer *d);

/* The base delay (before jitter) of the next retry to be scheduled; it grows
   each time one is scheduled. For tests and status output. */
uint64_t tcp_dialer_next_delay_ms(const struct tcp_dialer *d);

/* Injection points for tests: a uniform random 32-bit value, and a clock in
   milliseconds. NULL restores the defaults (libsodium, uv_now()). */
typedef uint32_t (*tcp_rand_fn)(void *user);
typedef uint64_t (*tcp_clock_fn)(void *user);
void tcp_dialer_set_rand(struct tcp_dialer *d, tcp_rand_fn fn, void *user);
void tcp_dialer_set_clock(struct tcp_dialer *d, tcp_clock_fn fn, void *user);

/*
 * The delay actually waited for a base delay: base plus up to half of base
 * of jitter (rnd picks how much), clamped to TCP_BACKOFF_MIN_MS ..
 * TCP_BACKOFF_MAX_MS.
 */
uint64_t tcp_backoff_jitter(uint64_t base_ms, uint32_t rnd);

/* The base after one more failure: doubled, at most TCP_BACKOFF_BASE_MAX_MS. */
uint64_t tcp_backoff_grow(uint64_t base_ms);

/*
 * "1.2.3.4:7393", "[fe80::1%eth0]:7393", "[::1]:7393", "host:port" is NOT
 * resolved (numeric only: getaddrinfo with AI_NUMERICHOST); strict: port
 * 1..65535 (0 allowed only when allow_zero), length <= 128. IPv4 must be a
 * dotted quad; IPv6 must be bracketed. PKS_ERR_TOO_LARGE over the length,
 * PKS_ERR_INVALID for anything else; out and len are written only on success.
 */
int tcp_parse_addr(const char *s, bool allow_zero, struct sockaddr_storage *out, socklen_t *len);

#endif
