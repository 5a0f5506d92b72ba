/*
 * ble-probe: exercises transport/ble.c against BlueZ (or tools/bluez-sim).
 *
 *   ble-probe [--bus ADDR] [-v] serve [--hint HEX] [--pairing] [--for S]
 *       advertise, accept links and echo every frame back
 *   ble-probe [--bus ADDR] [-v] scan [--for S]
 *       print every pksync advertisement seen
 *   ble-probe [--bus ADDR] [-v] echo ADDRESS|any [--size N] [--count K]
 *             [--retries R] [--for S]
 *       connect (to the first pksync peer seen with "any"), send K frames of
 *       N bytes, check each echo byte for byte and in order; after a link
 *       drops, reconnect (up to R times) and resend what was not echoed
 *
 * Output is one event per line ("key=value ..."), for tests to read.
 * Exit 0 on success, 1 on failure, 2 on usage errors.
 */
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/err.h"
#include "common/log.h"
#include "transport/ble.h"
#include "transport/frame.h"

struct probe {
	uv_loop_t *loop;
	struct ble *ble;
	const char *mode;
	const char *target;
	bool any;
	size_t size;
	unsigned count;
	unsigned retries;
	int result; /* exit code once done; -1 while running */
	uv_timer_t deadline;
	uv_signal_t sigint, sigterm;

	/* echo client */
	struct ble_link *link;
	bool connecting;
	unsigned next_send, next_recv;
	uint8_t *expect;
	uint64_t start_ms;
	uint64_t bytes_echoed;
	unsigned reconnects;
	uv_timer_t retry;
	char address[18];
};

static void probe_frame(uint8_t *buf, size_t len, unsigned index)
{
	uint64_t x = 0x9E3779B97F4A7C15ULL * (index + 1);

	for (size_t i = 0; i < len; i++) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		buf[i] = (uint8_t)(x >> 56);
	}
	if (len >= 4) {
		buf[0] = (uint8_t)(index >> 24);
		buf[1] = (uint8_t)(index >> 16);
		buf[2] = (uint8_t)(index >> 8);
		buf[3] = (uint8_t)index;
	}
}

static void probe_finish(struct probe *p, int code)
{
	if (p->result >= 0)
		return;
	p->result = code;
	uv_stop(p->loop);
}

/* ---- serve: echo everything ---- */

static void serve_on_frame(void *user, struct ble_link *l, const uint8_t *frame, size_t len)
{
	int r = ble_link_send(l, frame, len);

	(void)user;
	if (r != PKS_OK) {
		/* The peer sends no faster than echoes drain in this test; a
		   full queue here is a failure of flow control worth showing. */
		printf("event=echo-dropped peer=%s err=%s\n", ble_link_peer(l), pks_strerror(r));
		fflush(stdout);
	}
}

static void serve_on_close(void *user, struct ble_link *l, int err)
{
	(void)user;
	printf("event=closed peer=%s err=%d in=%llu out=%llu\n", ble_link_peer(l), err,
	       (unsigned long long)ble_link_bytes_in(l), (unsigned long long)ble_link_bytes_out(l));
	fflush(stdout);
}

static void serve_on_accepted(void *user, struct ble_link *l)
{
	static const struct ble_link_cb cb = {
	    .on_frame = serve_on_frame,
	    .on_close = serve_on_close,
	};

	printf("event=accepted peer=%s mtu=%u\n", ble_link_peer(l), ble_link_mtu(l));
	fflush(stdout);
	ble_link_set_cb(l, &cb, user);
}

/* ---- echo client ---- */

static void echo_connect(struct probe *p);

static void echo_pump(struct probe *p)
{
	uint8_t *buf;

	if (p->link == NULL)
		return;
	buf = malloc(p->size);
	if (buf == NULL) {
		probe_finish(p, 1);
		return;
	}
	while (p->next_send < p->count) {
		probe_frame(buf, p->size, p->next_send);
		int r = ble_link_send(p->link, buf, p->size);
		if (r == PKS_ERR_BUSY)
			break;
		if (r != PKS_OK) {
			printf("event=send-failed err=%s\n", pks_strerror(r));
			break;
		}
		p->next_send++;
	}
	free(buf);
}

static void echo_on_frame(void *user, struct ble_link *l, const uint8_t *frame, size_t len)
{
	struct probe *p = user;

	(void)l;
	probe_frame(p->expect, p->size, p->next_recv);
	if (len != p->size || memcmp(frame, p->expect, len) != 0) {
		printf("event=mismatch index=%u len=%zu\n", p->next_recv, len);
		probe_finish(p, 1);
		return;
	}
	p->next_recv++;
	p->bytes_echoed += len;
	if (p->next_recv == p->count) {
		double secs = (double)(uv_now(p->loop) - p->start_ms) / 1000.0;
		if (secs <= 0)
			secs = 0.001;
		/* Bytes moved each way; the link carries them both ways at once. */
		printf("event=done frames=%u bytes=%llu seconds=%.3f kbit_per_s=%.1f "
		       "reconnects=%u in=%llu out=%llu\n",
		       p->count, (unsigned long long)p->bytes_echoed, secs,
		       (double)p->bytes_echoed * 8.0 / 1000.0 / secs, p->reconnects,
		       (unsigned long long)ble_link_bytes_in(l),
		       (unsigned long long)ble_link_bytes_out(l));
		fflush(stdout);
		ble_link_close(l, "echo done");
		return;
	}
}

static void echo_on_drain(void *user, struct ble_link *l)
{
	(void)l;
	echo_pump(user);
}

static void echo_retry(uv_timer_t *t)
{
	echo_connect(t->data);
}

static void echo_on_close(void *user, struct ble_link *l, int err)
{
	struct probe *p = user;

	(void)l;
	p->link = NULL;
	printf("event=closed err=%d echoed=%u\n", err, p->next_recv);
	fflush(stdout);
	if (p->next_recv == p->count) {
		probe_finish(p, 0);
		return;
	}
	if (p->reconnects >= p->retries) {
		probe_finish(p, 1);
		return;
	}
	p->reconnects++;
	/* Resend what the peer did not echo. */
	p->next_send = p->next_recv;
	uv_timer_start(&p->retry, echo_retry, 500, 0);
}

static void echo_on_connected(void *user, struct ble_link *l, int err)
{
	struct probe *p = user;
	static const struct ble_link_cb cb = {
	    .on_frame = echo_on_frame,
	    .on_drain = echo_on_drain,
	    .on_close = echo_on_close,
	};

	p->connecting = false;
	if (err != PKS_OK) {
		printf("event=connect-failed err=%s\n", pks_strerror(err));
		fflush(stdout);
		if (p->reconnects >= p->retries) {
			probe_finish(p, 1);
			return;
		}
		p->reconnects++;
		uv_timer_start(&p->retry, echo_retry, 1000, 0);
		return;
	}
	printf("event=connected peer=%s mtu=%u\n", ble_link_peer(l), ble_link_mtu(l));
	fflush(stdout);
	p->link = l;
	ble_link_set_cb(l, &cb, p);
	if (p->start_ms == 0)
		p->start_ms = uv_now(p->loop);
	echo_pump(p);
}

static void echo_connect(struct probe *p)
{
	if (p->connecting || p->link != NULL || p->address[0] == '\0')
		return;
	p->connecting = true;
	if (ble_connect(p->ble, p->address, echo_on_connected, p) != PKS_OK) {
		p->connecting = false;
		probe_finish(p, 1);
	}
}

/* ---- discovery ---- */

static void on_peer(void *user, const struct ble_peer_info *info)
{
	struct probe *p = user;
	char hint[2 * 18 + 1];

	for (size_t i = 0; i < info->hint_len && i < 18; i++)
		snprintf(hint + 2 * i, 3, "%02x", info->hint[i]);
	hint[2 * (info->hint_len < 18 ? info->hint_len : 18)] = '\0';
	printf("event=peer address=%s rssi=%d hint=%s pairing=%d\n", info->address, info->rssi,
	       hint, info->pairing);
	fflush(stdout);
	if (strcmp(p->mode, "echo") == 0 && p->any && p->address[0] == '\0') {
		memcpy(p->address, info->address, sizeof(p->address));
		ble_scan(p->ble, false);
		echo_connect(p);
	}
}

static void on_adapter(void *user, bool present)
{
	struct probe *p = user;

	printf("event=adapter present=%d\n", present);
	fflush(stdout);
	if (present && strcmp(p->mode, "echo") == 0 && !p->any)
		echo_connect(p);
}

static void on_deadline(uv_timer_t *t)
{
	struct probe *p = t->data;

	printf("event=deadline\n");
	/* serve and scan run for a while and succeed; echo must have finished. */
	probe_finish(p, strcmp(p->mode, "echo") == 0 ? 1 : 0);
}

static void on_signal(uv_signal_t *s, int sig)
{
	(void)sig;
	probe_finish(s->data, 0);
}

static int parse_hex(const char *s, uint8_t *out, size_t cap, size_t *n)
{
	size_t len = strlen(s);

	if (len % 2 != 0 || len / 2 > cap)
		return -1;
	for (size_t i = 0; i < len / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	*n = len / 2;
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: ble-probe [--bus ADDR] [-v] serve [--hint HEX] [--pairing] "
			"[--for S]\n"
			"       ble-probe [--bus ADDR] [-v] scan [--for S]\n"
			"       ble-probe [--bus ADDR] [-v] echo ADDRESS|any [--size N] "
			"[--count K] [--retries R] [--for S]\n");
}

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"bus", required_argument, NULL, 'b'},
	    {"hint", required_argument, NULL, 'h'},
	    {"pairing", no_argument, NULL, 'p'},
	    {"for", required_argument, NULL, 'f'},
	    {"size", required_argument, NULL, 's'},
	    {"count", required_argument, NULL, 'c'},
	    {"retries", required_argument, NULL, 'r'},
	    {"verbose", no_argument, NULL, 'v'},
	    {NULL, 0, NULL, 0},
	};
	struct probe p = {.size = 1024, .count = 16, .result = -1};
	struct pks_logger log = {NULL, NULL};
	struct ble_cb cb = {.peer = on_peer, .accepted = serve_on_accepted, .adapter = on_adapter};
	const char *bus = NULL;
	uint8_t hint[18] = {0x70, 0x6b};
	size_t hint_len = 2;
	bool pairing = false;
	double secs = 60;
	uv_loop_t loop;
	int c, r;

	while ((c = getopt_long(argc, argv, "+v", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			bus = optarg;
			break;
		case 'v':
			log.fn = pks_log_stderr;
			break;
		default:
			usage();
			return 2;
		}
	}
	if (optind >= argc) {
		usage();
		return 2;
	}
	p.mode = argv[optind++];
	if (strcmp(p.mode, "echo") == 0) {
		if (optind >= argc) {
			usage();
			return 2;
		}
		p.target = argv[optind++];
		p.any = strcmp(p.target, "any") == 0;
		if (!p.any)
			snprintf(p.address, sizeof(p.address), "%s", p.target);
	} else if (strcmp(p.mode, "serve") != 0 && strcmp(p.mode, "scan") != 0) {
		usage();
		return 2;
	}
	/* Options after the mode: parse the rest as its own command line. */
	int base = optind - 1;
	argv[base] = argv[0];
	optind = 0;
	while ((c = getopt_long(argc - base, argv + base, "v", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			if (parse_hex(optarg, hint, sizeof(hint), &hint_len) != 0) {
				usage();
				return 2;
			}
			break;
		case 'p':
			pairing = true;
			break;
		case 'f':
			secs = atof(optarg);
			break;
		case 's':
			p.size = (size_t)strtoul(optarg, NULL, 10);
			break;
		case 'c':
			p.count = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'r':
			p.retries = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'v':
			log.fn = pks_log_stderr;
			break;
		default:
			usage();
			return 2;
		}
	}
	if (p.size == 0 || p.size > FRAME_MAX || p.count == 0 || secs <= 0) {
		usage();
		return 2;
	}
	p.expect = malloc(p.size);
	if (p.expect == NULL)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&loop);
	p.loop = &loop;
	r = ble_new_on_bus(&loop, bus, &log, &cb, &p, &p.ble);
	if (r != PKS_OK) {
		printf("event=no-ble err=%s\n", pks_strerror(r));
		free(p.expect);
		return 1;
	}
	uv_timer_init(&loop, &p.deadline);
	uv_timer_init(&loop, &p.retry);
	p.deadline.data = &p;
	p.retry.data = &p;
	uv_timer_start(&p.deadline, on_deadline, (uint64_t)(secs * 1000), 0);
	uv_signal_init(&loop, &p.sigint);
	uv_signal_init(&loop, &p.sigterm);
	p.sigint.data = p.sigterm.data = &p;
	uv_signal_start(&p.sigint, on_signal, SIGINT);
	uv_signal_start(&p.sigterm, on_signal, SIGTERM);

	if (strcmp(p.mode, "serve") == 0) {
		ble_serve(p.ble, true);
		if (ble_advertise(p.ble, hint, hint_len, pairing) != PKS_OK) {
			usage();
			return 2;
		}
	} else if (strcmp(p.mode, "scan") == 0 || p.any) {
		ble_scan(p.ble, true);
	}
	printf("event=started mode=%s\n", p.mode);
	fflush(stdout);
	uv_run(&loop, UV_RUN_DEFAULT);

	ble_free(p.ble);
	uv_walk(&loop, close_walk, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	free(p.expect);
	return p.result < 0 ? 1 : p.result;
}
