#include "transport/tcp.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "transport/frame.h"

/* "[" + address + "%" + interface + "]:" + port, with room to spare. */
#define TCP_PEER_MAX (INET6_ADDRSTRLEN + IF_NAMESIZE + 16)
/* One read's buffer; a frame larger than this is reassembled by the reader. */
#define TCP_READ_BUF (32u * 1024u)
/* How long a local close waits for queued frames to leave. */
#define TCP_LINGER_MS 2000u
#define TCP_LISTEN_BACKLOG 64

/* One queued frame: the write request and header + body in one allocation. */
struct tcp_write {
	uv_write_t req;
	struct tcp_conn *conn;
	size_t len;
	uint8_t data[];
};

struct tcp_conn {
	uv_tcp_t tcp;
	/* Idle timeout while open, linger bound while closing. */
	uv_timer_t timer;
	uv_shutdown_t shutdown;
	uv_connect_t connect;
	struct pks_logger log;
	struct tcp_conn_cb cb;
	void *user;
	/* The listener that accepted it (counted there until freed). */
	struct tcp_listener *listener;
	/* The dialer while connecting, before the connection is handed out. */
	struct tcp_dialer *dialer;
	/* The dialer that handed it out, while both live: it learns of the end. */
	struct tcp_dialer *owner;
	int open_handles;
	int close_err;
	bool closing;
	bool handles_closing;
	/* Never handed to a caller: no on_close. */
	bool silent;
	bool busy;
	bool outbound;
	uint64_t idle_ms;
	size_t queued;
	uint64_t bytes_in;
	uint64_t bytes_out;
	char peer[TCP_PEER_MAX];
	uint8_t rbuf[TCP_READ_BUF];
	struct frame_reader reader;
};

struct tcp_listener {
	uv_tcp_t tcp;
	struct pks_logger log;
	tcp_accept_fn fn;
	void *user;
	unsigned live;
	uint16_t port;
	bool closing;
	bool handle_closed;
};

enum tcp_dialer_state {
	TCP_DIALER_IDLE,
	TCP_DIALER_CONNECTING,
	TCP_DIALER_CONNECTED,
	TCP_DIALER_WAITING,
};

struct tcp_dialer {
	uv_loop_t *loop;
	/* Connect timeout while connecting, retry delay while waiting. */
	uv_timer_t timer;
	struct pks_logger log;
	tcp_connect_fn fn;
	void *user;
	tcp_rand_fn rand_fn;
	void *rand_user;
	tcp_clock_fn clock_fn;
	void *clock_user;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	enum tcp_dialer_state state;
	struct tcp_conn *pending;
	/* The connection handed out, until it is freed. */
	struct tcp_conn *conn;
	uint64_t base_ms;
	uint64_t connected_at;
	/* The timer plus every connection still pointing here. */
	unsigned open_handles;
	bool freeing;
	char addr_text[TCP_ADDR_MAX + 1];
};

static void conn_handle_closed(uv_handle_t *h);
static void dialer_handle_gone(struct tcp_dialer *d);
static void listener_conn_gone(struct tcp_listener *l);

/* libuv errors are negated errno values on the platforms we run on. */
static int tcp_err_from_uv(int uverr)
{
	switch (uverr) {
	case UV_EOF:
		return PKS_ERR_CLOSED;
	case UV_EADDRINUSE:
		return PKS_ERR_EXISTS;
	case UV_ECONNREFUSED:
	case UV_ECONNABORTED:
		return PKS_ERR_CLOSED;
	case UV_ENOMEM:
		return PKS_ERR_NOMEM;
	default:
		return pks_err_from_errno(-uverr);
	}
}

static void tcp_format_addr(const struct sockaddr *sa, socklen_t sa_len, char *out, size_t n)
{
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	char serv[8];
	struct sockaddr_in v4;
	const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;

	/* A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; show a.b.c.d. */
	if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
		memset(&v4, 0, sizeof(v4));
		v4.sin_family = AF_INET;
		v4.sin_port = v6->sin6_port;
		memcpy(&v4.sin_addr, &v6->sin6_addr.s6_addr[12], 4);
		sa = (const struct sockaddr *)&v4;
		sa_len = sizeof(v4);
	}
	if (getnameinfo(sa, sa_len, host, sizeof(host), serv, sizeof(serv),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(out, n, "unknown");
		return;
	}
	if (sa->sa_family == AF_INET6)
		snprintf(out, n, "[%s]:%s", host, serv);
	else
		snprintf(out, n, "%s:%s", host, serv);
}

/* ---- Address parsing ---- */

static int tcp_parse_port(const char *s, bool allow_zero, uint16_t *out)
{
	size_t n = strlen(s);
	unsigned long v = 0;
	int r = PKS_ERR_INVALID;

	if (n == 0 || n > 5)
		goto out;
	/* No leading zeros: one spelling per port. */
	if (s[0] == '0' && n > 1)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			goto out;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535 || (v == 0 && !allow_zero))
		goto out;
	*out = (uint16_t)v;
	r = PKS_OK;
out:
	return r;
}

static bool tcp_v6_chars_ok(const char *host)
{
	const char *pct = strchr(host, '%');
	size_t addr_len = pct ? (size_t)(pct - host) : strlen(host);

	if (addr_len == 0)
		return false;
	for (size_t i = 0; i < addr_len; i++) {
		char ch = host[i];
		bool ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
			  (ch >= 'A' && ch <= 'F') || ch == ':' || ch == '.';
		if (!ok)
			return false;
	}
	if (pct == NULL)
		return true;
	size_t zone_len = strlen(pct + 1);
	if (zone_len == 0 || zone_len >= IF_NAMESIZE)
		return false;
	for (size_t i = 0; i < zone_len; i++) {
		char ch = pct[1 + i];
		bool ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
			  (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == '-' || ch == '.';
		if (!ok)
			return false;
	}
	return true;
}

int tcp_parse_addr(const char *s, bool allow_zero, struct sockaddr_storage *out, socklen_t *len)
{
	char host[TCP_ADDR_MAX + 1];
	const char *port_s = NULL;
	struct sockaddr_storage ss;
	socklen_t ss_len = 0;
	struct addrinfo hints;
	struct addrinfo *ai = NULL;
	size_t n, host_len;
	uint16_t port = 0;
	bool v6;
	int r = PKS_ERR_INVALID;

	if (s == NULL || out == NULL || len == NULL)
		goto out;
	n = strnlen(s, TCP_ADDR_MAX + 1);
	r = PKS_ERR_TOO_LARGE;
	if (n > TCP_ADDR_MAX)
		goto out;
	r = PKS_ERR_INVALID;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (end == NULL)
			goto out;
		host_len = (size_t)(end - (s + 1));
		if (host_len == 0 || end[1] != ':')
			goto out;
		memcpy(host, s + 1, host_len);
		host[host_len] = '\0';
		port_s = end + 2;
		v6 = true;
	} else {
		const char *colon = strrchr(s, ':');
		if (colon == NULL)
			goto out;
		host_len = (size_t)(colon - s);
		if (host_len == 0)
			goto out;
		memcpy(host, s, host_len);
		host[host_len] = '\0';
		port_s = colon + 1;
		v6 = false;
	}
	if (tcp_parse_port(port_s, allow_zero, &port) != PKS_OK)
		goto out;
	memset(&ss, 0, sizeof(ss));
	if (!v6) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		/* inet_pton takes only a dotted quad (no "127.1", no hex). */
		for (size_t i = 0; i < host_len; i++) {
			if ((host[i] < '0' || host[i] > '9') && host[i] != '.')
				goto out;
		}
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			goto out;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		ss_len = sizeof(*sin);
	} else {
		if (!tcp_v6_chars_ok(host))
			goto out;
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_INET6;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_NUMERICHOST;
		if (getaddrinfo(host, NULL, &hints, &ai) != 0 || ai == NULL)
			goto out;
		if (ai->ai_family != AF_INET6 || ai->ai_addrlen != sizeof(struct sockaddr_in6))
			goto out;
		memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
		ss_len = (socklen_t)ai->ai_addrlen;
	}
	*out = ss;
	*len = ss_len;
	r = PKS_OK;
out:
	if (ai != NULL)
		freeaddrinfo(ai);
	return r;
}

/* ---- Connections ---- */

static struct tcp_conn *conn_new(uv_loop_t *loop, const struct pks_logger *log, bool outbound)
{
	struct tcp_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	if (uv_tcp_init(loop, &c->tcp) != 0) {
		free(c);
		return NULL;
	}
	/* uv_timer_init cannot fail. */
	uv_timer_init(loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->open_handles = 2;
	c->outbound = outbound;
	if (log != NULL)
		c->log = *log;
	snprintf(c->peer, sizeof(c->peer), "unknown");
	frame_reader_init(&c->reader);
	return c;
}

static void conn_set_peer(struct tcp_conn *c)
{
	struct sockaddr_storage ss;
	int ss_len = sizeof(ss);

	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &ss_len) != 0)
		return;
	tcp_format_addr((struct sockaddr *)&ss, (socklen_t)ss_len, c->peer, sizeof(c->peer));
}

static void conn_close_handles(struct tcp_conn *c)
{
	if (c->handles_closing)
		return;
	c->handles_closing = true;
	c->closing = true;
	uv_read_stop((uv_stream_t *)&c->tcp);
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
	uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void conn_handle_closed(uv_handle_t *h)
{
	struct tcp_conn *c = h->data;

	if (--c->open_handles > 0)
		return;
	/* Before on_close, so that on_close may restart the dialer. */
	if (c->owner != NULL) {
		if (c->owner->conn == c)
			c->owner->conn = NULL;
		c->owner = NULL;
	}
	if (!c->silent && c->cb.on_close != NULL)
		c->cb.on_close(c->user, c, c->close_err);
	if (c->listener != NULL)
		listener_conn_gone(c->listener);
	if (c->dialer != NULL)
		dialer_handle_gone(c->dialer);
	free(c);
}

/* Closes at once because of err; the first reason wins. */
static void conn_fail(struct tcp_conn *c, int err, const char *reason)
{
	if (!c->closing) {
		c->close_err = err;
		if (!c->silent)
			pks_log(&c->log, PKS_LOG_INFO, "tcp: %s: connection closed: %s", c->peer,
				reason);
	}
	conn_close_handles(c);
}

static void conn_idle_cb(uv_timer_t *t)
{
	struct tcp_conn *c = t->data;

	conn_fail(c, PKS_ERR_TIMEOUT, "idle timeout");
}

static void conn_linger_cb(uv_timer_t *t)
{
	struct tcp_conn *c = t->data;

	conn_close_handles(c);
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
	struct tcp_conn *c = req->data;

	conn_close_handles(c);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct tcp_conn *c = h->data;

	buf->base = (char *)c->rbuf;
	buf->len = sizeof(c->rbuf);
}

static int conn_frame_cb(void *user, const uint8_t *body, size_t len)
{
	struct tcp_conn *c = user;

	if (c->cb.on_frame != NULL)
		c->cb.on_frame(c->user, c, body, len);
	/* The callback may have closed the connection: deliver nothing more. */
	return c->closing ? PKS_ERR_CLOSED : PKS_OK;
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct tcp_conn *c = s->data;
	int r;

	if (nread == 0 || c->closing)
		return;
	if (nread < 0) {
		if (nread == UV_EOF)
			conn_fail(c, PKS_ERR_CLOSED, "peer closed the connection");
		else
			conn_fail(c, tcp_err_from_uv((int)nread), uv_strerror((int)nread));
		return;
	}
	c->bytes_in += (uint64_t)nread;
	if (c->idle_ms > 0)
		uv_timer_start(&c->timer, conn_idle_cb, c->idle_ms, 0);
	r = frame_reader_feed(&c->reader, c->rbuf, (size_t)nread, conn_frame_cb, c);
	if (r == PKS_ERR_MALFORMED)
		conn_fail(c, PKS_ERR_MALFORMED, "zero-length frame");
}

/*
 * Without this a session over a LAN link that was cut stays open on both ends
 * for as long as nothing is sent (and for the kernel's ~15 minutes of
 * retransmissions once something is), so the agent never fails over to BLE
 * nor dials again. The kernel answers keepalives itself: a busy peer process
 * never looks dead. Best effort: a socket that refuses keeps the old
 * behaviour.
 */
static void conn_detect_dead_peer(struct tcp_conn *c)
{
	int on = 1, idle = TCP_KEEPALIVE_IDLE_S, interval = TCP_KEEPALIVE_INTERVAL_S;
	int probes = TCP_KEEPALIVE_PROBES;
	uv_os_fd_t fd;

	if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) != 0)
		return;
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval)) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes)) != 0)
		return;
#ifdef TCP_USER_TIMEOUT
	{
		unsigned int user_timeout = TCP_DEAD_PEER_MS;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout,
				 sizeof(user_timeout));
	}
#endif
}

static int conn_start(struct tcp_conn *c)
{
	int uvr;

	uv_tcp_nodelay(&c->tcp, 1);
	conn_detect_dead_peer(c);
	conn_set_peer(c);
	uvr = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
	return uvr == 0 ? PKS_OK : tcp_err_from_uv(uvr);
}

void tcp_conn_set_cb(struct tcp_conn *c, const struct tcp_conn_cb *cb, void *user)
{
	if (c == NULL)
		return;
	if (cb != NULL)
		c->cb = *cb;
	else
		memset(&c->cb, 0, sizeof(c->cb));
	c->user = user;
}

static void conn_write_cb(uv_write_t *req, int status)
{
	struct tcp_write *w = req->data;
	struct tcp_conn *c = w->conn;

	c->queued -= w->len;
	if (status == 0)
		c->bytes_out += w->len;
	free(w);
	if (status < 0) {
		if (status != UV_ECANCELED)
			conn_fail(c, tcp_err_from_uv(status), uv_strerror(status));
		return;
	}
	if (c->busy && !c->closing && c->queued <= TCP_SEND_QUEUE_LOW) {
		c->busy = false;
		if (c->cb.on_drain != NULL)
			c->cb.on_drain(c->user, c);
	}
}

int tcp_conn_send(struct tcp_conn *c, const uint8_t *body, size_t len)
{
	struct tcp_write *w = NULL;
	uv_buf_t buf;
	size_t total;
	int uvr;
	int r = PKS_ERR_INVALID;

	if (c == NULL || body == NULL || len == 0)
		goto out;
	r = PKS_ERR_TOO_LARGE;
	if (len > FRAME_MAX)
		goto out;
	r = PKS_ERR_CLOSED;
	if (c->closing)
		goto out;
	total = FRAME_HEADER_BYTES + len;
	r = PKS_ERR_BUSY;
	if (c->queued + total > TCP_SEND_QUEUE_MAX) {
		c->busy = true;
		goto out;
	}
	r = PKS_ERR_NOMEM;
	w = malloc(sizeof(*w) + total);
	if (w == NULL)
		goto out;
	r = frame_header(len, w->data);
	if (r != PKS_OK)
		goto out;
	memcpy(w->data + FRAME_HEADER_BYTES, body, len);
	w->conn = c;
	w->len = total;
	w->req.data = w;
	buf = uv_buf_init((char *)w->data, (unsigned int)total);
	uvr = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, conn_write_cb);
	if (uvr != 0) {
		r = tcp_err_from_uv(uvr);
		goto out;
	}
	c->queued += total;
	w = NULL;
	r = PKS_OK;
out:
	free(w);
	return r;
}

size_t tcp_conn_queued(const struct tcp_conn *c)
{
	return c != NULL ? c->queued : 0;
}

void tcp_conn_close(struct tcp_conn *c, const char *reason)
{
	if (c == NULL || c->closing)
		return;
	c->closing = true;
	c->close_err = PKS_OK;
	pks_log(&c->log, PKS_LOG_INFO, "tcp: %s: closing: %s", c->peer,
		reason != NULL ? reason : "local close");
	uv_read_stop((uv_stream_t *)&c->tcp);
	uv_timer_stop(&c->timer);
	/* Let queued frames (a goodbye, an error) leave, for a bounded time. */
	if (c->queued > 0) {
		c->shutdown.data = c;
		if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, conn_shutdown_cb) == 0) {
			uv_timer_start(&c->timer, conn_linger_cb, TCP_LINGER_MS, 0);
			return;
		}
	}
	conn_close_handles(c);
}

const char *tcp_conn_peer(const struct tcp_conn *c)
{
	return c != NULL ? c->peer : "unknown";
}

uint64_t tcp_conn_bytes_in(const struct tcp_conn *c)
{
	return c != NULL ? c->bytes_in : 0;
}

uint64_t tcp_conn_bytes_out(const struct tcp_conn *c)
{
	return c != NULL ? c->bytes_out : 0;
}

void tcp_conn_set_idle_timeout(struct tcp_conn *c, uint64_t ms)
{
	if (c == NULL || c->closing)
		return;
	c->idle_ms = ms;
	if (ms > 0)
		uv_timer_start(&c->timer, conn_idle_cb, ms, 0);
	else
		uv_timer_stop(&c->timer);
}

bool tcp_conn_outbound(const struct tcp_conn *c)
{
	return c != NULL && c->outbound;
}

/* ---- Listener ---- */

static void listener_maybe_free(struct tcp_listener *l)
{
	if (l->handle_closed && l->live == 0)
		free(l);
}

static void listener_closed_cb(uv_handle_t *h)
{
	struct tcp_listener *l = h->data;

	l->handle_closed = true;
	listener_maybe_free(l);
}

static void listener_conn_gone(struct tcp_listener *l)
{
	l->live--;
	listener_maybe_free(l);
}

static void listener_connection_cb(uv_stream_t *server, int status)
{
	struct tcp_listener *l = server->data;
	struct tcp_conn *c = NULL;

	if (status < 0) {
		pks_log(&l->log, PKS_LOG_WARN, "tcp: accept failed: %s", uv_strerror(status));
		return;
	}
	if (l->closing)
		return;
	c = conn_new(server->loop, &l->log, false);
	if (c == NULL) {
		pks_log(&l->log, PKS_LOG_WARN, "tcp: out of memory accepting a connection");
		return;
	}
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		c->silent = true;
		conn_close_handles(c);
		return;
	}
	conn_set_peer(c);
	if (l->live >= TCP_LISTENER_MAX_CONNS) {
		pks_log(&l->log, PKS_LOG_WARN, "tcp: %s: refused: too many connections", c->peer);
		c->silent = true;
		conn_close_handles(c);
		return;
	}
	if (conn_start(c) != PKS_OK) {
		c->silent = true;
		conn_close_handles(c);
		return;
	}
	c->listener = l;
	l->live++;
	pks_log(&l->log, PKS_LOG_DEBUG, "tcp: %s: accepted", c->peer);
	l->fn(l->user, c);
}

int tcp_listen(uv_loop_t *loop, const char *addr_port, const struct pks_logger *log,
	       tcp_accept_fn fn, void *user, struct tcp_listener **out)
{
	struct tcp_listener *l = NULL;
	struct sockaddr_storage ss;
	socklen_t ss_len;
	int name_len = sizeof(ss);
	bool inited = false;
	int uvr;
	int r = PKS_ERR_INVALID;

	if (loop == NULL || addr_port == NULL || fn == NULL || out == NULL)
		goto out;
	r = tcp_parse_addr(addr_port, true, &ss, &ss_len);
	if (r != PKS_OK)
		goto out;
	r = PKS_ERR_NOMEM;
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		goto out;
	if (log != NULL)
		l->log = *log;
	l->fn = fn;
	l->user = user;
	uvr = uv_tcp_init(loop, &l->tcp);
	if (uvr != 0) {
		r = tcp_err_from_uv(uvr);
		goto out;
	}
	inited = true;
	l->tcp.data = l;
	uvr = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&ss, 0);
	if (uvr == 0)
		uvr = uv_listen((uv_stream_t *)&l->tcp, TCP_LISTEN_BACKLOG, listener_connection_cb);
	if (uvr == 0)
		uvr = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &name_len);
	if (uvr != 0) {
		pks_log(log, PKS_LOG_ERROR, "tcp: cannot listen on %s: %s", addr_port,
			uv_strerror(uvr));
		r = tcp_err_from_uv(uvr);
		goto out;
	}
	if (ss.ss_family == AF_INET6)
		l->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else
		l->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	pks_log(log, PKS_LOG_INFO, "tcp: listening on %s (port %u)", addr_port, (unsigned)l->port);
	*out = l;
	l = NULL;
	r = PKS_OK;
out:
	if (l != NULL) {
		if (inited) {
			l->closing = true;
			uv_close((uv_handle_t *)&l->tcp, listener_closed_cb);
		} else {
			free(l);
		}
	}
	return r;
}

uint16_t tcp_listener_port(const struct tcp_listener *l)
{
	return l != NULL ? l->port : 0;
}

void tcp_listener_close(struct tcp_listener *l)
{
	if (l == NULL || l->closing)
		return;
	l->closing = true;
	uv_close((uv_handle_t *)&l->tcp, listener_closed_cb);
}

/* ---- Dialer ---- */

uint64_t tcp_backoff_jitter(uint64_t base_ms, uint32_t rnd)
{
	uint64_t d = base_ms + (uint64_t)rnd % (base_ms / 2 + 1);

	if (d < TCP_BACKOFF_MIN_MS)
		d = TCP_BACKOFF_MIN_MS;
	if (d > TCP_BACKOFF_MAX_MS)
		d = TCP_BACKOFF_MAX_MS;
	return d;
}

uint64_t tcp_backoff_grow(uint64_t base_ms)
{
	uint64_t b = base_ms < TCP_BACKOFF_MIN_MS ? TCP_BACKOFF_MIN_MS : base_ms;

	b = b > TCP_BACKOFF_BASE_MAX_MS / 2 ? TCP_BACKOFF_BASE_MAX_MS : b * 2;
	return b;
}

static uint32_t dialer_rand(struct tcp_dialer *d)
{
	uint32_t v = 0;

	if (d->rand_fn != NULL)
		return d->rand_fn(d->rand_user);
	/* Jitter needs no secrecy; fall back to the clock if the kernel says no. */
	if (uv_random(NULL, NULL, &v, sizeof(v), 0, NULL) != 0)
		v = (uint32_t)uv_hrtime();
	return v;
}

static uint64_t dialer_now(struct tcp_dialer *d)
{
	if (d->clock_fn != NULL)
		return d->clock_fn(d->clock_user);
	return uv_now(d->loop);
}

static void dialer_maybe_free(struct tcp_dialer *d)
{
	if (d->freeing && d->open_handles == 0)
		free(d);
}

static void dialer_handle_gone(struct tcp_dialer *d)
{
	d->open_handles--;
	dialer_maybe_free(d);
}

static void dialer_timer_closed(uv_handle_t *h)
{
	dialer_handle_gone(h->data);
}

static void dialer_timer_cb(uv_timer_t *t);

static void dialer_schedule(struct tcp_dialer *d)
{
	uint64_t delay = tcp_backoff_jitter(d->base_ms, dialer_rand(d));

	d->base_ms = tcp_backoff_grow(d->base_ms);
	d->state = TCP_DIALER_WAITING;
	pks_log(&d->log, PKS_LOG_DEBUG, "tcp: %s: next attempt in %llu ms", d->addr_text,
		(unsigned long long)delay);
	uv_timer_start(&d->timer, dialer_timer_cb, delay, 0);
}

/* Abandons a connect in progress; its callback then sees it is no longer pending. */
static void dialer_cancel(struct tcp_dialer *d)
{
	struct tcp_conn *c = d->pending;

	if (c == NULL)
		return;
	d->pending = NULL;
	conn_close_handles(c);
}

static void dialer_connect_cb(uv_connect_t *req, int status)
{
	struct tcp_conn *c = req->data;
	struct tcp_dialer *d = c->dialer;
	int r;

	if (d->pending != c) {
		conn_close_handles(c);
		return;
	}
	d->pending = NULL;
	uv_timer_stop(&d->timer);
	r = status == 0 ? conn_start(c) : tcp_err_from_uv(status);
	if (r != PKS_OK) {
		pks_log(&d->log, PKS_LOG_INFO, "tcp: %s: connect failed: %s", d->addr_text,
			status != 0 ? uv_strerror(status) : pks_strerror(r));
		conn_close_handles(c);
		dialer_schedule(d);
		return;
	}
	/* Hand the connection over: from now on it is the caller's. */
	c->silent = false;
	c->dialer = NULL;
	d->open_handles--;
	if (d->conn != NULL)
		d->conn->owner = NULL;
	d->conn = c;
	c->owner = d;
	d->state = TCP_DIALER_CONNECTED;
	d->connected_at = dialer_now(d);
	pks_log(&d->log, PKS_LOG_INFO, "tcp: %s: connected", c->peer);
	d->fn(d->user, d, c);
}

static void dialer_connect(struct tcp_dialer *d)
{
	struct tcp_conn *c = conn_new(d->loop, &d->log, true);
	int uvr;

	if (c == NULL) {
		pks_log(&d->log, PKS_LOG_WARN, "tcp: %s: out of memory", d->addr_text);
		dialer_schedule(d);
		return;
	}
	c->silent = true;
	c->dialer = d;
	d->open_handles++;
	c->connect.data = c;
	uvr = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&d->addr,
			     dialer_connect_cb);
	if (uvr != 0) {
		pks_log(&d->log, PKS_LOG_INFO, "tcp: %s: connect failed: %s", d->addr_text,
			uv_strerror(uvr));
		conn_close_handles(c);
		dialer_schedule(d);
		return;
	}
	d->pending = c;
	d->state = TCP_DIALER_CONNECTING;
	uv_timer_start(&d->timer, dialer_timer_cb, TCP_CONNECT_TIMEOUT_MS, 0);
}

static void dialer_timer_cb(uv_timer_t *t)
{
	struct tcp_dialer *d = t->data;

	switch (d->state) {
	case TCP_DIALER_CONNECTING:
		pks_log(&d->log, PKS_LOG_INFO, "tcp: %s: connect timed out", d->addr_text);
		dialer_cancel(d);
		dialer_schedule(d);
		break;
	case TCP_DIALER_WAITING:
		dialer_connect(d);
		break;
	case TCP_DIALER_IDLE:
	case TCP_DIALER_CONNECTED:
		break;
	}
}

int tcp_dialer_new(uv_loop_t *loop, const char *addr_port, const struct pks_logger *log,
		   tcp_connect_fn fn, void *user, struct tcp_dialer **out)
{
	struct tcp_dialer *d = NULL;
	int r = PKS_ERR_INVALID;

	if (loop == NULL || addr_port == NULL || fn == NULL || out == NULL)
		goto out;
	r = PKS_ERR_NOMEM;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		goto out;
	r = tcp_parse_addr(addr_port, false, &d->addr, &d->addr_len);
	if (r != PKS_OK)
		goto out;
	snprintf(d->addr_text, sizeof(d->addr_text), "%s", addr_port);
	d->loop = loop;
	if (log != NULL)
		d->log = *log;
	d->fn = fn;
	d->user = user;
	d->base_ms = TCP_BACKOFF_MIN_MS;
	d->state = TCP_DIALER_IDLE;
	uv_timer_init(loop, &d->timer);
	d->timer.data = d;
	d->open_handles = 1;
	*out = d;
	d = NULL;
	r = PKS_OK;
out:
	free(d);
	return r;
}

void tcp_dialer_start(struct tcp_dialer *d)
{
	if (d == NULL || d->freeing)
		return;
	if (d->state == TCP_DIALER_CONNECTING)
		return;
	/* A connection that ended without connection_lost() no longer counts. */
	if (d->state == TCP_DIALER_CONNECTED && d->conn != NULL)
		return;
	uv_timer_stop(&d->timer);
	dialer_connect(d);
}

void tcp_dialer_connection_lost(struct tcp_dialer *d)
{
	if (d == NULL || d->freeing || d->state != TCP_DIALER_CONNECTED)
		return;
	if (dialer_now(d) - d->connected_at > TCP_BACKOFF_RESET_MS)
		d->base_ms = TCP_BACKOFF_MIN_MS;
	dialer_schedule(d);
}

void tcp_dialer_reset(struct tcp_dialer *d)
{
	if (d != NULL)
		d->base_ms = TCP_BACKOFF_MIN_MS;
}

void tcp_dialer_stop(struct tcp_dialer *d)
{
	if (d == NULL || d->freeing)
		return;
	d->state = TCP_DIALER_IDLE;
	uv_timer_stop(&d->timer);
	dialer_cancel(d);
}

void tcp_dialer_free(struct tcp_dialer *d)
{
	if (d == NULL || d->freeing)
		return;
	tcp_dialer_stop(d);
	d->freeing = true;
	if (d->conn != NULL) {
		d->conn->owner = NULL;
		d->conn = NULL;
	}
	uv_close((uv_handle_t *)&d->timer, dialer_timer_closed);
}

const char *tcp_dialer_addr(const struct tcp_dialer *d)
{
	return d != NULL ? d->addr_text : "";
}

uint64_t tcp_dialer_next_delay_ms(const struct tcp_dialer *d)
{
	return d != NULL ? d->base_ms : 0;
}

void tcp_dialer_set_rand(struct tcp_dialer *d, tcp_rand_fn fn, void *user)
{
	if (d == NULL)
		return;
	d->rand_fn = fn;
	d->rand_user = user;
}

void tcp_dialer_set_clock(struct tcp_dialer *d, tcp_clock_fn fn, void *user)
{
	if (d == NULL)
		return;
	d->clock_fn = fn;
	d->clock_user = user;
}
