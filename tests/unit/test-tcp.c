/*
 * transport/tcp on loopback (127.0.0.1 and ::1, ephemeral ports): frames both
 * ways, split and batched writes, zero-length and garbage peers, the send
 * queue limit, idle timeout, local close flushing, the dialer's reconnect and
 * backoff, and the address parser. Every loop run is bounded by a guard
 * timer, and every test ends with uv_loop_close() == 0, so a leaked handle
 * fails the test instead of hanging it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "common/err.h"
#include "common/log.h"
#include "tests/check.h"
#include "transport/frame.h"
#include "transport/tcp.h"

/* Appears in payloads; must never appear in a log line. */
#define MARKER "PAYLOAD-MARKER"
#define MAX_SIDES 8

struct fx;

/* One end of a connection as the test sees it. */
struct side {
	struct fx *fx;
	struct tcp_conn *c;
	size_t frames;
	uint8_t *rx; /* received frames, re-encoded */
	size_t rx_len;
	size_t rx_cap;
	int opened;
	int closed;
	int close_err;
	int drained;
	bool echo;
	bool close_on_frame;
	bool is_client;
	char peer[80];
};

struct fx {
	uv_loop_t loop;
	uv_timer_t guard;
	uv_timer_t tick;
	bool expired;
	void (*tick_fn)(struct fx *fx);
	struct pks_logger log;
	size_t log_lines;
	size_t log_marker;
	size_t log_connect_failed;
	struct tcp_listener *listener;
	struct tcp_dialer *dialer;
	struct side servers[MAX_SIDES];
	size_t n_servers;
	struct side client;
	bool server_echo;
	bool server_close_on_frame;
	uint64_t server_idle_ms;
	bool lost_on_close; /* tell the dialer when the client side closes */
	uint64_t fake_now;
	int raw_fd;
	uint8_t *raw_rx;
	size_t raw_rx_len;
	size_t raw_rx_cap;
};

static void test_log(void *user, enum pks_log_level level, const char *msg)
{
	struct fx *fx = user;

	fx->log_lines++;
	if (strstr(msg, MARKER) != NULL)
		fx->log_marker++;
	if (strstr(msg, "connect failed") != NULL)
		fx->log_connect_failed++;
	if (getenv("PKSYNC_TEST_VERBOSE") != NULL)
		printf("# log %s: %s\n", pks_log_level_name(level), msg);
}

static void guard_cb(uv_timer_t *t)
{
	struct fx *fx = t->data;

	fx->expired = true;
}

static void tick_cb(uv_timer_t *t)
{
	struct fx *fx = t->data;

	if (fx->tick_fn != NULL)
		fx->tick_fn(fx);
}

static void fx_init(struct fx *fx)
{
	memset(fx, 0, sizeof(*fx));
	CHECK_OK(uv_loop_init(&fx->loop));
	uv_timer_init(&fx->loop, &fx->guard);
	uv_timer_init(&fx->loop, &fx->tick);
	fx->guard.data = fx;
	fx->tick.data = fx;
	fx->log.fn = test_log;
	fx->log.user_data = fx;
	fx->raw_fd = -1;
}

/* Runs the loop until cond holds or ms pass; returns whether cond holds. */
static bool fx_run_until(struct fx *fx, bool (*cond)(struct fx *fx), uint64_t ms)
{
	fx->expired = false;
	uv_timer_start(&fx->guard, guard_cb, ms, 0);
	if (fx->tick_fn != NULL)
		uv_timer_start(&fx->tick, tick_cb, 1, 1);
	while (!cond(fx) && !fx->expired)
		uv_run(&fx->loop, UV_RUN_ONCE);
	uv_timer_stop(&fx->guard);
	uv_timer_stop(&fx->tick);
	return cond(fx);
}

static bool never(struct fx *fx)
{
	return false;
}

/* Closes what the test left open and checks that no handle leaked. */
static void fx_finish(struct fx *fx)
{
	/* The dialer is freed below: its connection's on_close must not reach it. */
	fx->lost_on_close = false;
	for (size_t i = 0; i < fx->n_servers; i++)
		tcp_conn_close(fx->servers[i].c, "test done");
	tcp_conn_close(fx->client.c, "test done");
	tcp_listener_close(fx->listener);
	tcp_dialer_free(fx->dialer);
	if (fx->raw_fd >= 0)
		close(fx->raw_fd);
	uv_close((uv_handle_t *)&fx->guard, NULL);
	uv_close((uv_handle_t *)&fx->tick, NULL);
	for (int i = 0; i < 5000 && uv_loop_alive(&fx->loop); i++) {
		uv_run(&fx->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	CHECK_EQ(uv_loop_close(&fx->loop), 0);
	for (size_t i = 0; i < fx->n_servers; i++)
		free(fx->servers[i].rx);
	free(fx->client.rx);
	free(fx->raw_rx);
	/* Payloads carried MARKER; no log line may show it. */
	CHECK_EQ(fx->log_marker, 0);
}

static void append(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *p, size_t n)
{
	if (*len + n > *cap) {
		size_t c = (*len + n) * 2;
		uint8_t *q = realloc(*buf, c);
		if (q == NULL) {
			CHECK(q != NULL);
			return;
		}
		*buf = q;
		*cap = c;
	}
	memcpy(*buf + *len, p, n);
	*len += n;
}

static void side_on_frame(void *user, struct tcp_conn *c, const uint8_t *body, size_t len)
{
	struct side *s = user;
	uint8_t hdr[2];

	CHECK(c == s->c);
	CHECK_OK(frame_header(len, hdr));
	append(&s->rx, &s->rx_len, &s->rx_cap, hdr, 2);
	append(&s->rx, &s->rx_len, &s->rx_cap, body, len);
	s->frames++;
	if (s->close_on_frame)
		tcp_conn_close(c, "test: closing from on_frame");
	if (s->echo && !s->close_on_frame)
		CHECK_OK(tcp_conn_send(c, body, len));
}

static void side_on_drain(void *user, struct tcp_conn *c)
{
	struct side *s = user;

	s->drained++;
}

static void side_on_close(void *user, struct tcp_conn *c, int err)
{
	struct side *s = user;

	CHECK(c == s->c);
	s->closed++;
	s->close_err = err;
	s->c = NULL;
	if (s->is_client && s->fx->lost_on_close && s->fx->dialer != NULL)
		tcp_dialer_connection_lost(s->fx->dialer);
}

static const struct tcp_conn_cb side_cb = {side_on_frame, side_on_drain, side_on_close};

static void side_attach(struct side *s, struct fx *fx, struct tcp_conn *c)
{
	s->fx = fx;
	s->c = c;
	s->opened++;
	snprintf(s->peer, sizeof(s->peer), "%s", tcp_conn_peer(c));
	tcp_conn_set_cb(c, &side_cb, s);
}

static void on_accept(void *user, struct tcp_conn *c)
{
	struct fx *fx = user;
	struct side *s;

	CHECK(fx->n_servers < MAX_SIDES);
	if (fx->n_servers >= MAX_SIDES) {
		tcp_conn_close(c, "test: too many");
		return;
	}
	s = &fx->servers[fx->n_servers++];
	memset(s, 0, sizeof(*s));
	side_attach(s, fx, c);
	s->echo = fx->server_echo;
	s->close_on_frame = fx->server_close_on_frame;
	CHECK(!tcp_conn_outbound(c));
	if (fx->server_idle_ms > 0)
		tcp_conn_set_idle_timeout(c, fx->server_idle_ms);
}

static void on_connect(void *user, struct tcp_dialer *d, struct tcp_conn *c)
{
	struct fx *fx = user;
	int opened = fx->client.opened;

	CHECK(d == fx->dialer);
	CHECK(fx->client.c == NULL);
	free(fx->client.rx);
	memset(&fx->client, 0, sizeof(fx->client));
	fx->client.is_client = true;
	fx->client.opened = opened;
	side_attach(&fx->client, fx, c);
	CHECK(tcp_conn_outbound(c));
}

/* "host:port", bracketing an IPv6 host. */
static void fmt_addr(char *buf, size_t n, const char *host, uint16_t port)
{
	if (strchr(host, ':') != NULL)
		snprintf(buf, n, "[%s]:%u", host, (unsigned)port);
	else
		snprintf(buf, n, "%s:%u", host, (unsigned)port);
}

static void listen_and_dial(struct fx *fx, const char *listen_addr, const char *host)
{
	char addr[TCP_ADDR_MAX + 1];

	CHECK_OK(tcp_listen(&fx->loop, listen_addr, &fx->log, on_accept, fx, &fx->listener));
	if (fx->listener == NULL)
		return;
	CHECK(tcp_listener_port(fx->listener) != 0);
	fmt_addr(addr, sizeof(addr), host, tcp_listener_port(fx->listener));
	CHECK_OK(tcp_dialer_new(&fx->loop, addr, &fx->log, on_connect, fx, &fx->dialer));
	if (fx->dialer == NULL)
		return;
	CHECK_STR_EQ(tcp_dialer_addr(fx->dialer), addr);
	tcp_dialer_start(fx->dialer);
}

static bool both_open(struct fx *fx)
{
	return fx->client.c != NULL && fx->n_servers == 1;
}

/* Fills buf with a recognisable body that carries MARKER when it fits. */
static void fill_body(uint8_t *buf, size_t len, uint8_t salt)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 7 + salt);
	if (len >= sizeof(MARKER))
		memcpy(buf, MARKER, sizeof(MARKER) - 1);
}

static void encode(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *body, size_t n)
{
	uint8_t hdr[2];

	CHECK_OK(frame_header(n, hdr));
	append(buf, len, cap, hdr, 2);
	append(buf, len, cap, body, n);
}

static size_t expect_len;

static bool client_got_all(struct fx *fx)
{
	return fx->client.rx_len >= expect_len;
}

static void frames_both_ways(const char *listen_addr, const char *host, const char *peer_pre)
{
	static const size_t sizes[] = {1, FRAME_MAX, 1000, 1, 65534, 3};
	static uint8_t body[FRAME_MAX];
	struct fx fx;
	uint8_t *sent = NULL;
	size_t sent_len = 0, sent_cap = 0;
	char want_peer[80];

	fx_init(&fx);
	fx.server_echo = true;
	listen_and_dial(&fx, listen_addr, host);
	CHECK(fx_run_until(&fx, both_open, 5000));
	if (!both_open(&fx))
		goto out;
	fmt_addr(want_peer, sizeof(want_peer), host, tcp_listener_port(fx.listener));
	CHECK_STR_EQ(fx.client.peer, want_peer);
	CHECK(strncmp(fx.servers[0].peer, peer_pre, strlen(peer_pre)) == 0);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		fill_body(body, sizes[i], (uint8_t)i);
		CHECK_OK(tcp_conn_send(fx.client.c, body, sizes[i]));
		encode(&sent, &sent_len, &sent_cap, body, sizes[i]);
	}
	CHECK_EQ(tcp_conn_queued(fx.client.c), sent_len);
	expect_len = sent_len;
	CHECK(fx_run_until(&fx, client_got_all, 10000));
	/* The server saw them in order, and echoed them back in order. */
	CHECK_EQ(fx.servers[0].frames, sizeof(sizes) / sizeof(sizes[0]));
	CHECK_EQ(fx.servers[0].rx_len, sent_len);
	CHECK_EQ(fx.client.frames, sizeof(sizes) / sizeof(sizes[0]));
	CHECK_EQ(fx.client.rx_len, sent_len);
	if (fx.client.rx_len == sent_len && fx.servers[0].rx_len == sent_len) {
		CHECK_MEM_EQ(fx.servers[0].rx, sent, sent_len);
		CHECK_MEM_EQ(fx.client.rx, sent, sent_len);
	}
	/* Let the server's last write callbacks run. */
	fx_run_until(&fx, never, 30);
	CHECK_EQ(tcp_conn_queued(fx.client.c), 0);
	CHECK_EQ(tcp_conn_bytes_out(fx.client.c), sent_len);
	CHECK_EQ(tcp_conn_bytes_in(fx.client.c), sent_len);
	if (fx.servers[0].c != NULL) {
		CHECK_EQ(tcp_conn_bytes_in(fx.servers[0].c), sent_len);
		CHECK_EQ(tcp_conn_bytes_out(fx.servers[0].c), sent_len);
	}
	/* Refused sends change nothing. */
	CHECK_EQ(tcp_conn_send(fx.client.c, body, 0), PKS_ERR_INVALID);
	CHECK_EQ(tcp_conn_send(fx.client.c, body, FRAME_MAX + 1), PKS_ERR_TOO_LARGE);
	CHECK_EQ(tcp_conn_queued(fx.client.c), 0);
out:
	fx_finish(&fx);
	free(sent);
}

static void test_frames_v4(void)
{
	frames_both_ways("127.0.0.1:0", "127.0.0.1", "127.0.0.1:");
}

static void test_frames_v6(void)
{
	frames_both_ways("[::1]:0", "::1", "[::1]:");
}

/* A plain blocking socket connected to the listener: the test's raw peer. */
static int raw_connect(uint16_t port, int rcvbuf)
{
	struct sockaddr_in sin;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	CHECK(fd >= 0);
	if (fd < 0)
		return -1;
	if (rcvbuf > 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		CHECK_FAIL_AT("connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void raw_send(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			CHECK_FAIL_AT("send: %s", strerror(errno));
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

static bool one_server(struct fx *fx)
{
	return fx->n_servers >= 1;
}

static size_t expect_server_bytes;

static bool server_read_all(struct fx *fx)
{
	return fx->n_servers >= 1 && fx->servers[0].c != NULL &&
	       tcp_conn_bytes_in(fx->servers[0].c) >= expect_server_bytes;
}

static bool server_got_all(struct fx *fx)
{
	return fx->n_servers >= 1 && fx->servers[0].rx_len >= expect_len;
}

/* A 65535-byte frame arriving in many reads, headers split, many frames in one write. */
static void test_split_and_batched(void)
{
	static uint8_t body[FRAME_MAX];
	struct fx fx;
	uint8_t *stream = NULL;
	size_t len = 0, cap = 0, pos = 0, writes = 0;

	fx_init(&fx);
	CHECK_OK(tcp_listen(&fx.loop, "127.0.0.1:0", &fx.log, on_accept, &fx, &fx.listener));
	if (fx.listener == NULL)
		goto out;
	fx.raw_fd = raw_connect(tcp_listener_port(fx.listener), 0);
	CHECK(fx_run_until(&fx, one_server, 5000));
	if (fx.raw_fd < 0 || fx.n_servers != 1)
		goto out;

	fill_body(body, FRAME_MAX, 1);
	encode(&stream, &len, &cap, body, FRAME_MAX);
	encode(&stream, &len, &cap, body, 1);
	encode(&stream, &len, &cap, body, 300);
	/* Dribble it: 1, 2, 3, ... bytes per write, each read by the server alone. */
	for (size_t step = 1; pos < len; step = step < 4096 ? step * 2 + 1 : 1) {
		size_t n = len - pos < step ? len - pos : step;
		raw_send(fx.raw_fd, stream + pos, n);
		pos += n;
		writes++;
		expect_server_bytes = pos;
		CHECK(fx_run_until(&fx, server_read_all, 5000));
		if (!server_read_all(&fx))
			goto out;
	}
	CHECK(writes > 20);
	CHECK_EQ(fx.servers[0].frames, 3);
	CHECK_EQ(fx.servers[0].rx_len, len);
	if (fx.servers[0].rx_len == len)
		CHECK_MEM_EQ(fx.servers[0].rx, stream, len);

	/* 2000 small frames in one write. */
	size_t first = len;
	for (int i = 0; i < 2000; i++) {
		fill_body(body, 1 + (size_t)i % 40, (uint8_t)i);
		encode(&stream, &len, &cap, body, 1 + (size_t)i % 40);
	}
	raw_send(fx.raw_fd, stream + first, len - first);
	expect_len = len;
	CHECK(fx_run_until(&fx, server_got_all, 5000));
	CHECK_EQ(fx.servers[0].frames, 3 + 2000);
	CHECK_EQ(fx.servers[0].rx_len, len);
	if (fx.servers[0].rx_len == len)
		CHECK_MEM_EQ(fx.servers[0].rx, stream, len);
out:
	free(stream);
	fx_finish(&fx);
}

static bool raw_eof(int fd)
{
	uint8_t b[256];

	for (;;) {
		ssize_t r = recv(fd, b, sizeof(b), MSG_DONTWAIT);
		if (r == 0)
			return true;
		if (r < 0)
			return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
	}
}

static bool garbage_closed(struct fx *fx)
{
	return fx->n_servers >= 2 && fx->servers[1].closed == 1;
}

/* A peer sending a zero-length frame is closed; the other connection goes on. */
static void test_garbage_peer(void)
{
	static uint8_t body[100];
	struct fx fx;
	const uint8_t garbage[] = {0x00, 0x03, 'a', 'b', 'c', 0x00, 0x00, 0x00, 0x01, 'z'};
	uint8_t *sent = NULL;
	size_t sent_len = 0, sent_cap = 0;

	fx_init(&fx);
	fx.server_echo = true;
	listen_and_dial(&fx, "127.0.0.1:0", "127.0.0.1");
	CHECK(fx_run_until(&fx, both_open, 5000));
	if (!both_open(&fx))
		goto out;
	fx.raw_fd = raw_connect(tcp_listener_port(fx.listener), 0);
	raw_send(fx.raw_fd, garbage, sizeof(garbage));
	CHECK(fx_run_until(&fx, garbage_closed, 5000));
	if (fx.n_servers < 2)
		goto out;
	/* The frame before the bad header arrived; the one after did not. */
	CHECK_EQ(fx.servers[1].frames, 1);
	CHECK_EQ(fx.servers[1].close_err, PKS_ERR_MALFORMED);
	CHECK(fx.servers[1].c == NULL);
	fx_run_until(&fx, never, 50);
	CHECK(raw_eof(fx.raw_fd));

	/* The good connection is untouched. */
	CHECK(fx.servers[0].c != NULL);
	CHECK(fx.client.c != NULL);
	if (fx.client.c == NULL)
		goto out;
	for (int i = 0; i < 10; i++) {
		fill_body(body, sizeof(body), (uint8_t)i);
		CHECK_OK(tcp_conn_send(fx.client.c, body, sizeof(body)));
		encode(&sent, &sent_len, &sent_cap, body, sizeof(body));
	}
	expect_len = sent_len;
	CHECK(fx_run_until(&fx, client_got_all, 5000));
	CHECK_EQ(fx.client.rx_len, sent_len);
	if (fx.client.rx_len == sent_len)
		CHECK_MEM_EQ(fx.client.rx, sent, sent_len);
	CHECK_EQ(fx.servers[0].closed, 0);
	CHECK_EQ(fx.client.closed, 0);
out:
	free(sent);
	fx_finish(&fx);
}

/* The raw peer reads whatever is there, without blocking. */
static void raw_drain_tick(struct fx *fx)
{
	uint8_t b[65536];

	for (;;) {
		ssize_t r = recv(fx->raw_fd, b, sizeof(b), MSG_DONTWAIT);
		if (r <= 0)
			return;
		append(&fx->raw_rx, &fx->raw_rx_len, &fx->raw_rx_cap, b, (size_t)r);
	}
}

static bool drained_and_read(struct fx *fx)
{
	return fx->servers[0].drained >= 1 && fx->raw_rx_len >= expect_len;
}

static int count_frames(void *user, const uint8_t *body, size_t len)
{
	size_t *n = user;

	(*n)++;
	return len == 60000 ? PKS_OK : PKS_ERR_MALFORMED;
}

static void test_send_queue_busy(void)
{
	static uint8_t body[60000];
	static struct frame_reader reader;
	struct fx fx;
	size_t sent = 0, frames = 0, parsed = 0;
	int r = PKS_OK;

	fx_init(&fx);
	CHECK_OK(tcp_listen(&fx.loop, "127.0.0.1:0", &fx.log, on_accept, &fx, &fx.listener));
	if (fx.listener == NULL)
		goto out;
	/* A peer that does not read yet, with a small receive buffer. */
	fx.raw_fd = raw_connect(tcp_listener_port(fx.listener), 4096);
	CHECK(fx_run_until(&fx, one_server, 5000));
	if (fx.raw_fd < 0 || fx.n_servers != 1)
		goto out;
	fill_body(body, sizeof(body), 9);
	for (int i = 0; i < 1000; i++) {
		r = tcp_conn_send(fx.servers[0].c, body, sizeof(body));
		if (r != PKS_OK)
			break;
		sent += 2 + sizeof(body);
		frames++;
		/* Let some leave so the kernel buffers fill too. */
		if (i % 8 == 0)
			fx_run_until(&fx, never, 5);
	}
	CHECK_EQ(r, PKS_ERR_BUSY);
	size_t queued = tcp_conn_queued(fx.servers[0].c);
	CHECK(queued <= TCP_SEND_QUEUE_MAX);
	CHECK(queued + 2 + sizeof(body) > TCP_SEND_QUEUE_MAX);
	/* Refused again, and nothing was added. */
	CHECK_EQ(tcp_conn_send(fx.servers[0].c, body, sizeof(body)), PKS_ERR_BUSY);
	CHECK_EQ(tcp_conn_queued(fx.servers[0].c), queued);
	CHECK_EQ(fx.servers[0].drained, 0);

	/* The peer starts reading: the queue drains and on_drain fires once. */
	fx.tick_fn = raw_drain_tick;
	expect_len = sent;
	CHECK(fx_run_until(&fx, drained_and_read, 10000));
	CHECK_EQ(fx.servers[0].drained, 1);
	CHECK_EQ(fx.raw_rx_len, sent);
	CHECK(tcp_conn_queued(fx.servers[0].c) <= TCP_SEND_QUEUE_LOW);
	frame_reader_init(&reader);
	CHECK_OK(frame_reader_feed(&reader, fx.raw_rx, fx.raw_rx_len, count_frames, &parsed));
	CHECK_EQ(parsed, frames);
	/* Sending works again. */
	CHECK_OK(tcp_conn_send(fx.servers[0].c, body, sizeof(body)));
	expect_len = sent + 2 + sizeof(body);
	CHECK(fx_run_until(&fx, drained_and_read, 10000));
	CHECK_EQ(fx.raw_rx_len, expect_len);
out:
	fx_finish(&fx);
}

static bool server_closed(struct fx *fx)
{
	return fx->n_servers >= 1 && fx->servers[0].closed == 1;
}

static void test_idle_timeout(void)
{
	struct fx fx;
	uint64_t t0;
	const uint8_t one[] = {0x00, 0x01, 'k'};

	fx_init(&fx);
	fx.server_idle_ms = 300;
	CHECK_OK(tcp_listen(&fx.loop, "127.0.0.1:0", &fx.log, on_accept, &fx, &fx.listener));
	if (fx.listener == NULL)
		goto out;
	fx.raw_fd = raw_connect(tcp_listener_port(fx.listener), 0);
	CHECK(fx_run_until(&fx, one_server, 5000));
	t0 = uv_now(&fx.loop);
	/* Traffic every 50 ms keeps it open past the timeout. */
	for (int i = 0; i < 6; i++) {
		raw_send(fx.raw_fd, one, sizeof(one));
		fx_run_until(&fx, server_closed, 50);
	}
	CHECK_EQ(fx.servers[0].closed, 0);
	CHECK_EQ(fx.servers[0].frames, 6);
	t0 = uv_now(&fx.loop);
	CHECK(fx_run_until(&fx, server_closed, 5000));
	CHECK_EQ(fx.servers[0].close_err, PKS_ERR_TIMEOUT);
	CHECK(uv_now(&fx.loop) - t0 >= 150);
out:
	fx_finish(&fx);
}

static bool client_closed_and_server_saw(struct fx *fx)
{
	return fx->client.closed == 1 && fx->n_servers == 1 && fx->servers[0].closed == 1;
}

/* A local close flushes what was queued, reports PKS_OK, and happens once. */
static void test_local_close(void)
{
	static uint8_t body[60000];
	struct fx fx;
	int frames = 0;

	fx_init(&fx);
	listen_and_dial(&fx, "127.0.0.1:0", "127.0.0.1");
	CHECK(fx_run_until(&fx, both_open, 5000));
	if (!both_open(&fx))
		goto out;
	tcp_dialer_stop(fx.dialer);
	/* Fill the queue: more than the kernel takes at once. */
	for (int i = 0; i < 100; i++) {
		fill_body(body, sizeof(body), (uint8_t)i);
		if (tcp_conn_send(fx.client.c, body, sizeof(body)) != PKS_OK)
			break;
		frames++;
	}
	CHECK(frames > 10);
	CHECK(tcp_conn_queued(fx.client.c) > 0);
	struct tcp_conn *c = fx.client.c;
	tcp_conn_close(c, "test: goodbye");
	tcp_conn_close(c, "test: again");
	CHECK_EQ(tcp_conn_send(c, body, 1), PKS_ERR_CLOSED);
	CHECK(fx_run_until(&fx, client_closed_and_server_saw, 5000));
	CHECK_EQ(fx.client.closed, 1);
	CHECK_EQ(fx.client.close_err, PKS_OK);
	/* Everything queued before the close arrived. */
	CHECK_EQ(fx.servers[0].frames, frames);
	CHECK_EQ(fx.servers[0].close_err, PKS_ERR_CLOSED);
	/* The dialer was stopped: no reconnect. */
	fx_run_until(&fx, never, 700);
	CHECK_EQ(fx.n_servers, 1);
out:
	fx_finish(&fx);
}

static bool raw_closed(struct fx *fx)
{
	raw_drain_tick(fx);
	return fx->n_servers >= 1 && fx->servers[0].closed == 1 && fx->raw_rx_len >= expect_len;
}

/* Frames queued behind a slow reader still leave after tcp_conn_close(). */
static void test_close_flushes(void)
{
	static uint8_t body[60000];
	static struct frame_reader reader;
	struct fx fx;
	size_t frames = 0, parsed = 0, sent = 0;

	fx_init(&fx);
	CHECK_OK(tcp_listen(&fx.loop, "127.0.0.1:0", &fx.log, on_accept, &fx, &fx.listener));
	if (fx.listener == NULL)
		goto out;
	fx.raw_fd = raw_connect(tcp_listener_port(fx.listener), 4096);
	CHECK(fx_run_until(&fx, one_server, 5000));
	if (fx.raw_fd < 0 || fx.n_servers != 1)
		goto out;
	fill_body(body, sizeof(body), 3);
	for (int i = 0; i < 1000; i++) {
		if (tcp_conn_send(fx.servers[0].c, body, sizeof(body)) != PKS_OK)
			break;
		frames++;
		sent += 2 + sizeof(body);
		/* Let writes complete so the kernel's buffers fill first. */
		if (i % 8 == 0)
			fx_run_until(&fx, never, 5);
	}
	CHECK(tcp_conn_queued(fx.servers[0].c) > 0);
	tcp_conn_close(fx.servers[0].c, "test: done sending");
	/* Now read fast enough to finish well within the linger time. */
	int big = 1 << 20;
	setsockopt(fx.raw_fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	fx.tick_fn = raw_drain_tick;
	expect_len = sent;
	CHECK(fx_run_until(&fx, raw_closed, 10000));
	CHECK_EQ(fx.servers[0].close_err, PKS_OK);
	CHECK_EQ(fx.raw_rx_len, sent);
	frame_reader_init(&reader);
	CHECK_OK(frame_reader_feed(&reader, fx.raw_rx, fx.raw_rx_len, count_frames, &parsed));
	CHECK_EQ(parsed, frames);
	CHECK(raw_eof(fx.raw_fd));
out:
	fx_finish(&fx);
}

static bool server_closed_once(struct fx *fx)
{
	return fx->n_servers >= 1 && fx->servers[0].closed == 1;
}

/* Closing from on_frame stops delivery, even of frames already read. */
static void test_close_in_callback(void)
{
	struct fx fx;
	const uint8_t five[] = {0, 1, 'a', 0, 1, 'b', 0, 1, 'c', 0, 1, 'd', 0, 1, 'e'};

	fx_init(&fx);
	fx.server_close_on_frame = true;
	CHECK_OK(tcp_listen(&fx.loop, "127.0.0.1:0", &fx.log, on_accept, &fx, &fx.listener));
	if (fx.listener == NULL)
		goto out;
	fx.raw_fd = raw_connect(tcp_listener_port(fx.listener), 0);
	CHECK(fx_run_until(&fx, one_server, 5000));
	if (fx.raw_fd < 0 || fx.n_servers != 1)
		goto out;
	raw_send(fx.raw_fd, five, sizeof(five));
	CHECK(fx_run_until(&fx, server_closed_once, 5000));
	CHECK_EQ(fx.servers[0].frames, 1);
	CHECK_EQ(fx.servers[0].close_err, PKS_OK);
	fx_run_until(&fx, never, 50);
	CHECK_EQ(fx.servers[0].frames, 1);
	CHECK_EQ(fx.servers[0].closed, 1);
out:
	fx_finish(&fx);
}

struct many {
	struct tcp_conn *conns[TCP_LISTENER_MAX_CONNS + 8];
	size_t accepted;
	size_t live;
};

static void many_on_close(void *user, struct tcp_conn *c, int err)
{
	struct many *m = user;

	for (size_t i = 0; i < m->accepted; i++)
		if (m->conns[i] == c)
			m->conns[i] = NULL;
	m->live--;
}

static const struct tcp_conn_cb many_cb = {NULL, NULL, many_on_close};

static void many_accept(void *user, struct tcp_conn *c)
{
	struct many *m = user;

	if (m->accepted >= sizeof(m->conns) / sizeof(m->conns[0])) {
		CHECK_FAIL_AT("accepted too many");
		tcp_conn_close(c, "test: too many");
		return;
	}
	m->conns[m->accepted++] = c;
	m->live++;
	tcp_conn_set_cb(c, &many_cb, m);
}

static struct many *many_state;

static bool many_settled(struct fx *fx)
{
	return many_state->accepted >= TCP_LISTENER_MAX_CONNS;
}

static bool many_one_more(struct fx *fx)
{
	return many_state->accepted >= TCP_LISTENER_MAX_CONNS + 1;
}

static bool many_none_live(struct fx *fx)
{
	return many_state->live == 0;
}

/* A listener holds at most TCP_LISTENER_MAX_CONNS; extra peers are closed. */
static void test_listener_limit(void)
{
	enum {
		EXTRA = 3,
		N = TCP_LISTENER_MAX_CONNS + EXTRA
	};
	static struct many m;
	struct fx fx;
	int fds[N + 1];
	uint16_t port;

	memset(&m, 0, sizeof(m));
	many_state = &m;
	for (int i = 0; i <= N; i++)
		fds[i] = -1;
	fx_init(&fx);
	CHECK_OK(tcp_listen(&fx.loop, "127.0.0.1:0", &fx.log, many_accept, &m, &fx.listener));
	if (fx.listener == NULL)
		goto out;
	port = tcp_listener_port(fx.listener);
	/* Let the loop accept as we go, so the backlog never overflows. */
	for (int i = 0; i < N; i++) {
		fds[i] = raw_connect(port, 0);
		fx_run_until(&fx, never, 2);
	}
	CHECK(fx_run_until(&fx, many_settled, 5000));
	fx_run_until(&fx, never, 100);
	CHECK_EQ(m.accepted, TCP_LISTENER_MAX_CONNS);
	/* The refused ones see the connection end; the accepted ones do not. */
	int ended = 0;
	for (int i = 0; i < N; i++)
		if (fds[i] >= 0 && raw_eof(fds[i]))
			ended++;
	CHECK_EQ(ended, EXTRA);
	/* A freed slot takes a new peer. */
	tcp_conn_close(m.conns[0], "test: free a slot");
	fx_run_until(&fx, never, 50);
	fds[N] = raw_connect(port, 0);
	CHECK(fx_run_until(&fx, many_one_more, 5000));
	CHECK_EQ(m.accepted, TCP_LISTENER_MAX_CONNS + 1);
	/* Closing the listener leaves accepted connections up. */
	tcp_listener_close(fx.listener);
	fx.listener = NULL;
	fx_run_until(&fx, never, 50);
	CHECK_EQ(m.live, TCP_LISTENER_MAX_CONNS);
	for (size_t i = 0; i < m.accepted; i++)
		tcp_conn_close(m.conns[i], "test done");
	CHECK(fx_run_until(&fx, many_none_live, 5000));
out:
	for (int i = 0; i <= N; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	fx_finish(&fx);
}

static uint32_t rand_zero(void *user)
{
	return 0;
}

static uint64_t fake_clock(void *user)
{
	struct fx *fx = user;

	return fx->fake_now;
}

static bool client_lost(struct fx *fx)
{
	return fx->client.closed >= 1 && fx->client.c == NULL;
}

static bool backoff_at_2000(struct fx *fx)
{
	return tcp_dialer_next_delay_ms(fx->dialer) >= 2000;
}

static bool client_reopened(struct fx *fx)
{
	return fx->client.opened >= 2 && fx->client.c != NULL;
}

/* The dialer reconnects after the listener restarts, and the backoff grows. */
static void test_dialer_reconnect(void)
{
	struct fx fx;
	char addr[64];
	uint16_t port;
	uint64_t t0;

	fx_init(&fx);
	fx.lost_on_close = true;
	listen_and_dial(&fx, "127.0.0.1:0", "127.0.0.1");
	if (fx.dialer == NULL)
		goto out;
	tcp_dialer_set_rand(fx.dialer, rand_zero, NULL);
	tcp_dialer_set_clock(fx.dialer, fake_clock, &fx);
	CHECK(fx_run_until(&fx, both_open, 5000));
	if (!both_open(&fx))
		goto out;
	CHECK_EQ(tcp_dialer_next_delay_ms(fx.dialer), TCP_BACKOFF_MIN_MS);
	port = tcp_listener_port(fx.listener);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)port);

	/* The listener goes away, and so does the connection. */
	tcp_listener_close(fx.listener);
	fx.listener = NULL;
	tcp_conn_close(fx.servers[0].c, "test: server restart");
	t0 = uv_now(&fx.loop);
	CHECK(fx_run_until(&fx, client_lost, 5000));
	CHECK_EQ(fx.client.close_err, PKS_ERR_CLOSED);
	/* A short connection: the retry waits 500 ms and the base doubles. */
	CHECK_EQ(tcp_dialer_next_delay_ms(fx.dialer), 1000);
	/* The first retry (at 500 ms) is refused: the base doubles again. */
	CHECK(fx_run_until(&fx, backoff_at_2000, 5000));
	CHECK(uv_now(&fx.loop) - t0 >= 450);
	CHECK_EQ(tcp_dialer_next_delay_ms(fx.dialer), 2000);
	CHECK(fx.log_connect_failed >= 1);
	CHECK(fx.client.c == NULL);

	/* The listener comes back on the same port; the next retry (1 s) gets in. */
	CHECK_OK(tcp_listen(&fx.loop, addr, &fx.log, on_accept, &fx, &fx.listener));
	t0 = uv_now(&fx.loop);
	CHECK(fx_run_until(&fx, client_reopened, 5000));
	CHECK(uv_now(&fx.loop) - t0 >= 700);
	CHECK_EQ(fx.n_servers, 2);
	/* Success alone does not reset the backoff... */
	CHECK_EQ(tcp_dialer_next_delay_ms(fx.dialer), 2000);
	/* ...a connection that lasted more than 10 s does. */
	fx.fake_now += TCP_BACKOFF_RESET_MS + 1;
	if (fx.client.c != NULL)
		tcp_conn_close(fx.client.c, "test: long connection ends");
	CHECK(fx_run_until(&fx, client_lost, 5000));
	CHECK_EQ(tcp_dialer_next_delay_ms(fx.dialer), 1000);
	tcp_dialer_reset(fx.dialer);
	CHECK_EQ(tcp_dialer_next_delay_ms(fx.dialer), TCP_BACKOFF_MIN_MS);
	/* And it comes back once more. */
	CHECK(fx_run_until(&fx, client_reopened, 5000) && fx.client.opened == 3);
	CHECK_EQ(fx.client.opened, 3);
out:
	fx_finish(&fx);
}

static bool client_lost(struct fx *fx);

static bool client_open(struct fx *fx)
{
	return fx->client.c != NULL;
}

/* Freeing or stopping a dialer mid-connect leaks nothing and calls nothing. */
static void test_dialer_cancel(void)
{
	struct fx fx;
	struct tcp_dialer *d2 = NULL;

	fx_init(&fx);
	CHECK_OK(tcp_listen(&fx.loop, "127.0.0.1:0", &fx.log, on_accept, &fx, &fx.listener));
	if (fx.listener == NULL)
		goto out;
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)tcp_listener_port(fx.listener));
	CHECK_OK(tcp_dialer_new(&fx.loop, addr, &fx.log, on_connect, &fx, &fx.dialer));
	CHECK_OK(tcp_dialer_new(&fx.loop, addr, &fx.log, on_connect, &fx, &d2));
	tcp_dialer_start(fx.dialer);
	tcp_dialer_start(d2);
	tcp_dialer_stop(fx.dialer);
	tcp_dialer_free(d2);
	fx_run_until(&fx, never, 200);
	CHECK_EQ(fx.client.opened, 0);
	/* A stopped dialer starts again. */
	tcp_dialer_start(fx.dialer);
	CHECK(fx_run_until(&fx, client_open, 5000));
	CHECK_EQ(fx.client.opened, 1);
	/* Start is a no-op while the connection is up... */
	tcp_dialer_start(fx.dialer);
	fx_run_until(&fx, never, 100);
	CHECK_EQ(fx.client.opened, 1);
	/* ...and dials again once it ended, even without connection_lost(). */
	if (fx.client.c != NULL)
		tcp_conn_close(fx.client.c, "test: ended quietly");
	CHECK(fx_run_until(&fx, client_lost, 5000));
	tcp_dialer_start(fx.dialer);
	CHECK(fx_run_until(&fx, client_open, 5000));
	CHECK_EQ(fx.client.opened, 2);
	tcp_dialer_free(NULL);
	tcp_listener_close(NULL);
out:
	fx_finish(&fx);
}

static void test_listen_errors(void)
{
	struct fx fx;
	struct tcp_listener *l2 = (struct tcp_listener *)&fx;
	struct tcp_dialer *d = (struct tcp_dialer *)&fx;
	char addr[64];

	fx_init(&fx);
	CHECK_EQ(tcp_listen(&fx.loop, "localhost:0", &fx.log, on_accept, &fx, &l2),
		 PKS_ERR_INVALID);
	CHECK_OK(tcp_listen(&fx.loop, "127.0.0.1:0", &fx.log, on_accept, &fx, &fx.listener));
	if (fx.listener == NULL)
		goto out;
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)tcp_listener_port(fx.listener));
	CHECK_EQ(tcp_listen(&fx.loop, addr, &fx.log, on_accept, &fx, &l2), PKS_ERR_EXISTS);
	CHECK(l2 == (struct tcp_listener *)&fx);
	CHECK_EQ(tcp_dialer_new(&fx.loop, "127.0.0.1:0", &fx.log, on_connect, &fx, &d),
		 PKS_ERR_INVALID);
	CHECK_EQ(tcp_dialer_new(&fx.loop, "[::1]", &fx.log, on_connect, &fx, &d), PKS_ERR_INVALID);
	CHECK(d == (struct tcp_dialer *)&fx);
out:
	fx_finish(&fx);
}

static void test_backoff(void)
{
	uint64_t b = TCP_BACKOFF_MIN_MS;
	uint64_t seen_min = UINT64_MAX, seen_max = 0;
	uint32_t x = 12345;

	CHECK_EQ(tcp_backoff_grow(500), 1000);
	CHECK_EQ(tcp_backoff_grow(16000), 32000);
	CHECK_EQ(tcp_backoff_grow(32000), TCP_BACKOFF_BASE_MAX_MS);
	CHECK_EQ(tcp_backoff_grow(TCP_BACKOFF_BASE_MAX_MS), TCP_BACKOFF_BASE_MAX_MS);
	CHECK_EQ(tcp_backoff_grow(0), 1000);
	CHECK_EQ(tcp_backoff_jitter(500, 0), 500);
	CHECK_EQ(tcp_backoff_jitter(0, 0), TCP_BACKOFF_MIN_MS);
	CHECK_EQ(tcp_backoff_jitter(1000000, 0), TCP_BACKOFF_MAX_MS);
	for (int i = 0; i < 20; i++) {
		for (int k = 0; k < 200; k++) {
			x = x * 1103515245u + 12345u;
			uint64_t dly = tcp_backoff_jitter(b, x);
			CHECK(dly >= b && dly <= b + b / 2);
			CHECK(dly >= TCP_BACKOFF_MIN_MS && dly <= TCP_BACKOFF_MAX_MS);
			if (b == TCP_BACKOFF_BASE_MAX_MS) {
				seen_min = dly < seen_min ? dly : seen_min;
				seen_max = dly > seen_max ? dly : seen_max;
			}
		}
		uint64_t nb = tcp_backoff_grow(b);
		CHECK(nb >= b);
		b = nb;
	}
	CHECK_EQ(b, TCP_BACKOFF_BASE_MAX_MS);
	/* Capped retries are still spread out. */
	CHECK(seen_max - seen_min > 1000);
	CHECK(seen_max <= TCP_BACKOFF_MAX_MS);
}

static void test_parse_addr(void)
{
	static const char *const bad[] = {
	    "",
	    ":7393",
	    "127.0.0.1",
	    "127.0.0.1:",
	    "127.0.0.1:0",
	    "127.0.0.1:65536",
	    "127.0.0.1:99999",
	    "127.0.0.1:123456",
	    "127.0.0.1:007",
	    "127.0.0.1:+80",
	    "127.0.0.1:-1",
	    "127.0.0.1: 80",
	    "127.0.0.1:80 ",
	    " 127.0.0.1:80",
	    "127.1:80",
	    "0x7f.0.0.1:80",
	    "256.1.1.1:80",
	    "1.2.3.4.5:80",
	    "localhost:80",
	    "example.org:7393",
	    "::1:80",
	    "[::1]80",
	    "[::1]:",
	    "[]:80",
	    "[::1:80",
	    "::1]:80",
	    "[127.0.0.1]:80",
	    "[::1]:80]",
	    "[[::1]]:80",
	    "[fe80::1%]:80",
	    "[fe80::1%e$h]:80",
	    "[fe80::1%abcdefghijklmnopq]:80",
	    "[:::1]:80",
	    "[g::1]:80",
	    "1.2.3.4:80:80",
	    "1.2.3.4:8O",
	};
	struct sockaddr_storage ss;
	socklen_t len = 77;
	char big[TCP_ADDR_MAX + 2];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = tcp_parse_addr(bad[i], false, &ss, &len);
		if (r != PKS_ERR_INVALID)
			CHECK_FAIL_AT("\"%s\" gave %d", bad[i], r);
	}
	CHECK_EQ(len, 77);
	CHECK_EQ(tcp_parse_addr(NULL, false, &ss, &len), PKS_ERR_INVALID);
	memset(big, '1', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	memcpy(big + sizeof(big) - 4, ":80", 3);
	CHECK_EQ(tcp_parse_addr(big, false, &ss, &len), PKS_ERR_TOO_LARGE);
	CHECK_EQ(len, 77);

	CHECK_OK(tcp_parse_addr("1.2.3.4:7393", false, &ss, &len));
	CHECK_EQ(len, sizeof(struct sockaddr_in));
	CHECK_EQ(ss.ss_family, AF_INET);
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
	CHECK_EQ(ntohs(sin->sin_port), 7393);
	CHECK_EQ(ntohl(sin->sin_addr.s_addr), 0x01020304);

	CHECK_OK(tcp_parse_addr("[::1]:65535", false, &ss, &len));
	CHECK_EQ(len, sizeof(struct sockaddr_in6));
	CHECK_EQ(ss.ss_family, AF_INET6);
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
	CHECK_EQ(ntohs(sin6->sin6_port), 65535);
	CHECK(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));

	CHECK_EQ(tcp_parse_addr("0.0.0.0:0", false, &ss, &len), PKS_ERR_INVALID);
	CHECK_OK(tcp_parse_addr("0.0.0.0:0", true, &ss, &len));
	CHECK_OK(tcp_parse_addr("[::]:0", true, &ss, &len));
	CHECK_OK(tcp_parse_addr("[::ffff:10.0.0.1]:1", false, &ss, &len));
	CHECK_OK(tcp_parse_addr("255.255.255.255:1", false, &ss, &len));
	/* Link-local with a zone: by name (lo always exists) and by index. */
	CHECK_OK(tcp_parse_addr("[fe80::1%lo]:7393", false, &ss, &len));
	CHECK_EQ(ss.ss_family, AF_INET6);
	CHECK(sin6->sin6_scope_id != 0);
	CHECK_OK(tcp_parse_addr("[fe80::1%1]:7393", false, &ss, &len));
	CHECK_EQ(sin6->sin6_scope_id, 1);
	/* Exactly the limit is fine when it is a real address. */
	char at_limit[TCP_ADDR_MAX + 1];
	snprintf(at_limit, sizeof(at_limit), "%s", "1.2.3.4:1");
	CHECK_OK(tcp_parse_addr(at_limit, false, &ss, &len));
}

CHECK_MAIN({"/tcp/parse-addr", test_parse_addr}, {"/tcp/backoff", test_backoff},
	   {"/tcp/listen-errors", test_listen_errors}, {"/tcp/frames-v4", test_frames_v4},
	   {"/tcp/frames-v6", test_frames_v6}, {"/tcp/split-and-batched", test_split_and_batched},
	   {"/tcp/garbage-peer", test_garbage_peer}, {"/tcp/send-queue-busy", test_send_queue_busy},
	   {"/tcp/idle-timeout", test_idle_timeout}, {"/tcp/close-flushes", test_close_flushes},
	   {"/tcp/close-in-callback", test_close_in_callback},
	   {"/tcp/local-close", test_local_close}, {"/tcp/dialer-reconnect", test_dialer_reconnect},
	   {"/tcp/dialer-cancel", test_dialer_cancel}, {"/tcp/listener-limit", test_listener_limit})
