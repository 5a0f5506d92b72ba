/*
 * transport/ble-frag: two links over a simulated datagram channel with
 * virtual time. The channel drops, duplicates and reorders (seeded; the seed
 * is printed on failure and PKSYNC_BLE_FRAG_SEED overrides it); every frame
 * must arrive exactly once, in order, byte for byte, in both directions at
 * once. Also: header parsing, garbage, reassembly violations, bounded send
 * queue, dead peer, graceful close, several centrals sharing one
 * peripheral's notifications.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "tests/check.h"
#include "transport/ble-frag.h"
#include "transport/frame.h"

static uint64_t prng_state;

static uint32_t prng_next(void)
{
	prng_state ^= prng_state >> 12;
	prng_state ^= prng_state << 25;
	prng_state ^= prng_state >> 27;
	return (uint32_t)((prng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static uint64_t seed_for(uint64_t def)
{
	const char *s = getenv("PKSYNC_BLE_FRAG_SEED");

	prng_state = s != NULL ? strtoull(s, NULL, 0) : def;
	if (prng_state == 0)
		prng_state = 1;
	return prng_state;
}

/* A frame's content from (stream, index) alone, so the receiver can rebuild it. */
static size_t frame_len_for(uint32_t stream, uint32_t i, unsigned mtu)
{
	static const size_t fixed[] = {1, 2, 15, 16, 17, 0, 0, 1000, FRAME_MAX, 3, 4096};
	uint64_t x = ((uint64_t)stream << 32 | i) * 0x9E3779B97F4A7C15ULL;
	size_t k = i % (sizeof(fixed) / sizeof(fixed[0]));

	if (k == 5)
		return mtu - 9;
	if (k == 6)
		return mtu - 8;
	if (i % 7 == 6)
		return 1 + (size_t)((x >> 20) % 6000);
	return fixed[k];
}

static void frame_fill(uint32_t stream, uint32_t i, uint8_t *buf, size_t len)
{
	uint64_t x = ((uint64_t)stream << 40) ^ ((uint64_t)i << 8) ^ 0x1234567ULL;

	for (size_t k = 0; k < len; k++) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		buf[k] = (uint8_t)(x >> 56);
	}
}

struct sim_dgram {
	uint64_t at;
	int to; /* endpoint index */
	size_t len;
	uint8_t data[BLE_FRAG_DGRAM_MAX];
};

struct sim_chan {
	struct sim_dgram *q;
	size_t n, cap;
	unsigned drop_pct, dup_pct;
	uint32_t delay_ms, jitter_ms;
	uint32_t rate_bytes_per_ms; /* 0: unshaped; else each direction serialises */
	uint64_t busy_until[2];     /* per direction: when the air is free again */
	uint64_t last_at[2];        /* shaped links deliver in order, as GATT does */
	uint64_t sent, dropped;
};

static void chan_push(struct sim_chan *c, int to, const uint8_t *d, size_t len, uint64_t now)
{
	unsigned copies = 1;
	uint64_t depart = now;

	c->sent++;
	if (c->rate_bytes_per_ms) {
		/* A lost datagram used the air all the same. */
		depart = c->busy_until[to] > now ? c->busy_until[to] : now;
		depart += (len + c->rate_bytes_per_ms - 1) / c->rate_bytes_per_ms;
		c->busy_until[to] = depart;
	}
	if (c->drop_pct && prng_next() % 100 < c->drop_pct) {
		c->dropped++;
		return;
	}
	if (c->dup_pct && prng_next() % 100 < c->dup_pct)
		copies = 2;
	for (unsigned k = 0; k < copies; k++) {
		if (c->n == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 64;
			struct sim_dgram *p = realloc(c->q, cap * sizeof(*p));
			if (p == NULL)
				abort();
			c->q = p;
			c->cap = cap;
		}
		struct sim_dgram *g = &c->q[c->n++];
		g->at = depart + c->delay_ms + (c->jitter_ms ? prng_next() % c->jitter_ms : 0);
		if (c->rate_bytes_per_ms) {
			if (g->at < c->last_at[to])
				g->at = c->last_at[to];
			c->last_at[to] = g->at;
		}
		g->to = to;
		g->len = len;
		memcpy(g->data, d, len);
	}
}

/* Removes and returns the earliest datagram due at or before now. */
static bool chan_pop(struct sim_chan *c, uint64_t now, struct sim_dgram *out)
{
	size_t best = SIZE_MAX;

	for (size_t i = 0; i < c->n; i++)
		if (c->q[i].at <= now && (best == SIZE_MAX || c->q[i].at < c->q[best].at))
			best = i;
	if (best == SIZE_MAX)
		return false;
	*out = c->q[best];
	c->q[best] = c->q[--c->n];
	return true;
}

static uint64_t chan_next(const struct sim_chan *c)
{
	uint64_t t = UINT64_MAX;

	for (size_t i = 0; i < c->n; i++)
		if (c->q[i].at < t)
			t = c->q[i].at;
	return t;
}

struct endpoint {
	struct ble_frag *f;
	uint32_t stream_out, stream_in;
	uint32_t n_frames;
	uint32_t next_send;
	uint32_t next_recv;
	bool bad;
	size_t queued_max_seen;
	uint8_t *scratch;
	unsigned mtu;
};

static int endpoint_frame(void *user, const uint8_t *frame, size_t len)
{
	struct endpoint *e = user;
	size_t want;

	if (e->next_recv >= e->n_frames) {
		printf("# extra frame of %zu bytes\n", len);
		e->bad = true;
		return PKS_OK;
	}
	want = frame_len_for(e->stream_in, e->next_recv, e->mtu);
	frame_fill(e->stream_in, e->next_recv, e->scratch, want);
	if (len != want || memcmp(frame, e->scratch, len) != 0) {
		printf("# frame %u wrong: %zu bytes, wanted %zu\n", e->next_recv, len, want);
		e->bad = true;
	}
	e->next_recv++;
	return PKS_OK;
}

struct run_cfg {
	unsigned mtu;
	unsigned window;
	unsigned drop_pct, dup_pct;
	uint32_t delay_ms, jitter_ms;
	uint32_t frames;
	uint64_t seed;
	uint32_t rate_bytes_per_ms;
	double max_resent_share; /* 0: no bound; else retransmits / datagrams sent */
};

/* Runs both directions to completion; true when all frames arrived intact. */
static bool run_pair(const struct run_cfg *cfg)
{
	struct sim_chan ch = {.drop_pct = cfg->drop_pct,
			      .dup_pct = cfg->dup_pct,
			      .delay_ms = cfg->delay_ms,
			      .jitter_ms = cfg->jitter_ms,
			      .rate_bytes_per_ms = cfg->rate_bytes_per_ms};
	struct endpoint ep[2] = {{0}};
	struct ble_frag_params pa = {.mtu = cfg->mtu,
				     .tag = 0x5a,
				     .nonce = 0xdeadbeef,
				     .initiator = true,
				     .window = cfg->window};
	uint8_t *frame = malloc(FRAME_MAX);
	uint8_t dg[BLE_FRAG_DGRAM_MAX];
	uint64_t now = 0, limit = 3600ull * 1000;
	bool ok = false;
	unsigned long steps = 0;

	seed_for(cfg->seed);
	for (int i = 0; i < 2; i++) {
		ep[i].stream_out = (uint32_t)i + 1;
		ep[i].stream_in = (uint32_t)(2 - i);
		ep[i].n_frames = cfg->frames;
		ep[i].mtu = cfg->mtu;
		ep[i].scratch = malloc(FRAME_MAX);
	}
	if (ble_frag_new(&pa, now, &ep[0].f) != PKS_OK)
		goto out;
	while (now < limit && ++steps < 50000000) {
		if (ep[0].next_recv == cfg->frames && ep[1].next_recv == cfg->frames &&
		    ble_frag_queued(ep[0].f) == 0 && ble_frag_queued(ep[1].f) == 0)
			break;
		for (int i = 0; i < 2; i++) {
			struct endpoint *e = &ep[i];
			if (e->f == NULL)
				continue;
			while (e->next_send < e->n_frames) {
				size_t len = frame_len_for(e->stream_out, e->next_send, cfg->mtu);
				frame_fill(e->stream_out, e->next_send, frame, len);
				int r = ble_frag_send(e->f, frame, len);
				if (r == PKS_ERR_BUSY)
					break;
				if (r != PKS_OK) {
					printf("# send: %d\n", r);
					goto out;
				}
				e->next_send++;
			}
			if (ble_frag_queued(e->f) > e->queued_max_seen)
				e->queued_max_seen = ble_frag_queued(e->f);
			for (;;) {
				size_t n = 0;
				int r = ble_frag_output(e->f, now, dg, sizeof(dg), &n);
				if (r != PKS_OK) {
					printf("# output %d: %d at %llu ms\n", i, r,
					       (unsigned long long)now);
					goto out;
				}
				if (n == 0)
					break;
				chan_push(&ch, 1 - i, dg, n, now);
			}
		}
		uint64_t t = chan_next(&ch);
		for (int i = 0; i < 2; i++)
			if (ep[i].f != NULL && ble_frag_deadline(ep[i].f) < t)
				t = ble_frag_deadline(ep[i].f);
		if (t == UINT64_MAX) {
			printf("# stuck at %llu ms\n", (unsigned long long)now);
			goto out;
		}
		if (t > now)
			now = t;
		struct sim_dgram g;
		while (chan_pop(&ch, now, &g)) {
			struct endpoint *e = &ep[g.to];
			if (e->f == NULL) {
				uint8_t tag;
				uint32_t nonce;
				if (ble_frag_parse_open(g.data, g.len, &tag, &nonce) != PKS_OK)
					continue;
				struct ble_frag_params pb = {.mtu = cfg->mtu,
							     .tag = tag,
							     .nonce = nonce,
							     .window = cfg->window};
				if (ble_frag_new(&pb, now, &e->f) != PKS_OK)
					goto out;
			}
			int r = ble_frag_input(e->f, g.data, g.len, now, endpoint_frame, e);
			if (r != PKS_OK) {
				printf("# input %d: %d\n", g.to, r);
				goto out;
			}
		}
	}
	ok = ep[0].next_recv == cfg->frames && ep[1].next_recv == cfg->frames && !ep[0].bad &&
	     !ep[1].bad;
	if (ok) {
		struct ble_frag_stats s0, s1;
		ble_frag_get_stats(ep[0].f, &s0);
		ble_frag_get_stats(ep[1].f, &s1);
		printf("# mtu %u drop %u%% dup %u%%: %llu ms virtual, %llu dgrams (%llu dropped), "
		       "%llu+%llu resent, srtt %u ms, queue peak %zu\n",
		       cfg->mtu, cfg->drop_pct, cfg->dup_pct, (unsigned long long)now,
		       (unsigned long long)ch.sent, (unsigned long long)ch.dropped,
		       (unsigned long long)s0.retransmits, (unsigned long long)s1.retransmits,
		       s0.srtt_ms, ep[0].queued_max_seen);
		if (ep[0].queued_max_seen > BLE_FRAG_SEND_QUEUE_DEFAULT)
			ok = false;
		if (cfg->max_resent_share > 0 && (double)(s0.retransmits + s1.retransmits) >
						     cfg->max_resent_share * (double)ch.sent) {
			printf("# resent %llu of %llu datagrams: more than %.0f%%\n",
			       (unsigned long long)(s0.retransmits + s1.retransmits),
			       (unsigned long long)ch.sent, 100.0 * cfg->max_resent_share);
			ok = false;
		}
	} else {
		printf("# incomplete: %u and %u of %u frames at %llu ms\n", ep[0].next_recv,
		       ep[1].next_recv, cfg->frames, (unsigned long long)now);
	}
out:
	if (!ok)
		printf("# seed %llu (PKSYNC_BLE_FRAG_SEED)\n", (unsigned long long)cfg->seed);
	for (int i = 0; i < 2; i++) {
		ble_frag_free(ep[i].f);
		free(ep[i].scratch);
	}
	free(ch.q);
	free(frame);
	return ok;
}

static void test_clean(void)
{
	static const unsigned mtus[] = {23, 185, 247};

	for (size_t i = 0; i < 3; i++) {
		struct run_cfg c = {.mtu = mtus[i], .delay_ms = 30, .frames = 24, .seed = 1 + i};
		CHECK(run_pair(&c));
	}
}

static void test_lossy(void)
{
	static const unsigned mtus[] = {23, 185, 247};

	for (size_t i = 0; i < 3; i++) {
		struct run_cfg c = {.mtu = mtus[i],
				    .drop_pct = 10,
				    .dup_pct = 5,
				    .delay_ms = 20,
				    .jitter_ms = 40,
				    .frames = 24,
				    .seed = 100 + i};
		CHECK(run_pair(&c));
	}
}

static void test_heavy_loss(void)
{
	struct run_cfg c = {.mtu = 185,
			    .window = 32,
			    .drop_pct = 30,
			    .dup_pct = 10,
			    .delay_ms = 10,
			    .jitter_ms = 80,
			    .frames = 12,
			    .seed = 777};
	CHECK(run_pair(&c));
}

static void test_many_seeds(void)
{
	for (uint64_t s = 1; s <= 20; s++) {
		struct run_cfg c = {.mtu = s % 2 ? 23 : 247,
				    .window = (unsigned)(1 + s % 32),
				    .drop_pct = (unsigned)(s % 25),
				    .dup_pct = (unsigned)(s % 7),
				    .delay_ms = 5,
				    .jitter_ms = (uint32_t)(s * 3),
				    .frames = 9,
				    .seed = 5000 + s};
		CHECK(run_pair(&c));
	}
}

/* A link slower than the sender: queueing, not loss, makes most of the
   round trip. Losses must be repaired by resending about what was lost, not
   the whole window at every timeout (a storm that feeds its own delay). */
static void test_bandwidth_bound(void)
{
	static const struct {
		unsigned mtu, drop_pct;
		uint32_t rate, delay;
	} cases[] = {
	    {247, 10, 30, 20}, /* phone: 240 kbit/s, 10% of notifications lost */
	    {247, 0, 30, 20},  /* phone, no loss: nothing to resend */
	    {23, 5, 4, 30},    /* worst: 30 kbit/s, MTU 23 */
	    {185, 20, 90, 10}, /* good: 700 kbit/s, heavy loss */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct run_cfg c = {.mtu = cases[i].mtu,
				    .window = 32,
				    .drop_pct = cases[i].drop_pct,
				    .delay_ms = cases[i].delay,
				    .jitter_ms = 20,
				    .frames = 11,
				    .seed = 9000 + i,
				    .rate_bytes_per_ms = cases[i].rate,
				    /* drops plus their resends' own losses, with slack */
				    .max_resent_share = 0.03 + 2.0 * cases[i].drop_pct / 100.0};
		CHECK(run_pair(&c));
	}
}

/* Builds a datagram by hand. */
static size_t mk(uint8_t *d, uint8_t tag, unsigned type, unsigned flags, uint8_t seq, uint8_t ack,
		 const uint8_t *body, size_t n)
{
	d[0] = tag;
	d[1] = (uint8_t)((1u << 5) | (type << 2) | flags);
	d[2] = seq;
	d[3] = ack;
	if (n)
		memcpy(d + 4, body, n);
	return 4 + n;
}

static void test_header(void)
{
	uint8_t d[600];
	struct ble_frag_header h;
	uint8_t open[5] = {1, 2, 3, 4, 16};
	uint8_t tag;
	uint32_t nonce;
	size_t n;

	n = mk(d, 7, 0, 3, 9, 4, (const uint8_t[]){0, 1, 0xaa}, 3);
	CHECK_OK(ble_frag_parse_header(d, n, &h));
	CHECK_EQ(h.tag, 7);
	CHECK_EQ(h.type, BLE_FRAG_DATA);
	CHECK(h.start && h.end);
	CHECK_EQ(h.seq, 9);
	CHECK_EQ(h.ack, 4);
	/* A one-fragment frame whose length disagrees. */
	n = mk(d, 7, 0, 3, 9, 4, (const uint8_t[]){0, 2, 0xaa}, 3);
	CHECK_EQ(ble_frag_parse_header(d, n, &h), PKS_ERR_MALFORMED);
	/* A zero frame length. */
	n = mk(d, 7, 0, 2, 9, 4, (const uint8_t[]){0, 0, 0xaa}, 3);
	CHECK_EQ(ble_frag_parse_header(d, n, &h), PKS_ERR_MALFORMED);
	/* Data without bytes. */
	n = mk(d, 7, 0, 0, 9, 4, NULL, 0);
	CHECK_EQ(ble_frag_parse_header(d, n, &h), PKS_ERR_MALFORMED);
	n = mk(d, 7, 0, 2, 9, 4, (const uint8_t[]){0, 5}, 2);
	CHECK_EQ(ble_frag_parse_header(d, n, &h), PKS_ERR_MALFORMED);
	/* Tag 0, short, long, other version, unknown type, flags on non-data. */
	n = mk(d, 0, 1, 0, 0, 0, (const uint8_t[]){0, 0, 0, 0}, 4);
	CHECK_EQ(ble_frag_parse_header(d, n, &h), PKS_ERR_MALFORMED);
	CHECK_EQ(ble_frag_parse_header(d, 3, &h), PKS_ERR_TRUNCATED);
	CHECK_EQ(ble_frag_parse_header(d, BLE_FRAG_DGRAM_MAX + 1, &h), PKS_ERR_TOO_LARGE);
	n = mk(d, 1, 1, 0, 0, 0, (const uint8_t[]){0, 0, 0, 0}, 4);
	CHECK_OK(ble_frag_parse_header(d, n, &h));
	CHECK_EQ(h.type, BLE_FRAG_ACK);
	d[1] = (uint8_t)((2u << 5) | (1u << 2));
	CHECK_EQ(ble_frag_parse_header(d, n, &h), PKS_ERR_UNSUPPORTED);
	for (unsigned t = 5; t < 8; t++) {
		n = mk(d, 1, t, 0, 0, 0, NULL, 0);
		CHECK_EQ(ble_frag_parse_header(d, n, &h), PKS_ERR_MALFORMED);
	}
	n = mk(d, 1, 1, 1, 0, 0, (const uint8_t[]){0, 0, 0, 0}, 4);
	CHECK_EQ(ble_frag_parse_header(d, n, &h), PKS_ERR_MALFORMED);
	n = mk(d, 1, 1, 0, 0, 0, (const uint8_t[]){0, 0, 0}, 3);
	CHECK_EQ(ble_frag_parse_header(d, n, &h), PKS_ERR_MALFORMED);
	n = mk(d, 1, 4, 0, 0, 0, NULL, 0);
	CHECK_OK(ble_frag_parse_header(d, n, &h));
	CHECK_EQ(h.type, BLE_FRAG_CLOSE);
	/* OPEN: nonce and window 1..32. */
	n = mk(d, 9, 2, 0, 0, 0, open, 5);
	CHECK_OK(ble_frag_parse_open(d, n, &tag, &nonce));
	CHECK_EQ(tag, 9);
	CHECK_EQ(nonce, 0x01020304);
	open[4] = 33;
	n = mk(d, 9, 2, 0, 0, 0, open, 5);
	CHECK_EQ(ble_frag_parse_open(d, n, &tag, &nonce), PKS_ERR_MALFORMED);
	open[4] = 0;
	n = mk(d, 9, 2, 0, 0, 0, open, 5);
	CHECK_EQ(ble_frag_parse_open(d, n, &tag, &nonce), PKS_ERR_MALFORMED);
	n = mk(d, 9, 1, 0, 0, 0, (const uint8_t[]){0, 0, 0, 0}, 4);
	CHECK_EQ(ble_frag_parse_open(d, n, &tag, &nonce), PKS_ERR_STATE);
}

static int count_frame(void *user, const uint8_t *frame, size_t len)
{
	size_t *n = user;
	(void)frame;
	(void)len;
	(*n)++;
	return PKS_OK;
}

/* A responder that has taken an OPEN with tag 3, nonce 7, window 8. */
static struct ble_frag *open_responder(void)
{
	struct ble_frag_params p = {.mtu = 23, .tag = 3, .nonce = 7, .window = 8};
	struct ble_frag *f = NULL;
	uint8_t d[16];
	size_t n = mk(d, 3, 2, 0, 0, 0, (const uint8_t[]){0, 0, 0, 7, 8}, 5);

	if (ble_frag_new(&p, 0, &f) != PKS_OK)
		return NULL;
	if (ble_frag_input(f, d, n, 0, NULL, NULL) != PKS_OK || !ble_frag_is_open(f)) {
		ble_frag_free(f);
		return NULL;
	}
	return f;
}

static void test_reassembly_violations(void)
{
	uint8_t d[32];
	size_t frames = 0, n;
	struct ble_frag *f;

	/* Continuation without a start. */
	f = open_responder();
	CHECK(f != NULL);
	n = mk(d, 3, 0, 0, 0, 0, (const uint8_t[]){1, 2}, 2);
	CHECK_EQ(ble_frag_input(f, d, n, 1, count_frame, &frames), PKS_ERR_MALFORMED);
	CHECK(ble_frag_is_done(f));
	CHECK_EQ(ble_frag_input(f, d, n, 1, count_frame, &frames), PKS_ERR_MALFORMED);
	CHECK_EQ(ble_frag_send(f, d, 1), PKS_ERR_CLOSED);
	ble_frag_free(f);

	/* A start inside a frame. */
	f = open_responder();
	n = mk(d, 3, 0, 2, 0, 0, (const uint8_t[]){0, 9, 1}, 3);
	CHECK_OK(ble_frag_input(f, d, n, 1, count_frame, &frames));
	n = mk(d, 3, 0, 2, 1, 0, (const uint8_t[]){0, 9, 1}, 3);
	CHECK_EQ(ble_frag_input(f, d, n, 1, count_frame, &frames), PKS_ERR_MALFORMED);
	ble_frag_free(f);

	/* More bytes than announced, and an END short of the length. */
	f = open_responder();
	n = mk(d, 3, 0, 2, 0, 0, (const uint8_t[]){0, 2, 1}, 3);
	CHECK_OK(ble_frag_input(f, d, n, 1, count_frame, &frames));
	n = mk(d, 3, 0, 0, 1, 0, (const uint8_t[]){1, 2}, 2);
	CHECK_EQ(ble_frag_input(f, d, n, 1, count_frame, &frames), PKS_ERR_MALFORMED);
	ble_frag_free(f);
	f = open_responder();
	n = mk(d, 3, 0, 2, 0, 0, (const uint8_t[]){0, 4, 1}, 3);
	CHECK_OK(ble_frag_input(f, d, n, 1, count_frame, &frames));
	n = mk(d, 3, 0, 1, 1, 0, (const uint8_t[]){1}, 1);
	CHECK_EQ(ble_frag_input(f, d, n, 1, count_frame, &frames), PKS_ERR_MALFORMED);
	ble_frag_free(f);
	/* Complete without END. */
	f = open_responder();
	n = mk(d, 3, 0, 2, 0, 0, (const uint8_t[]){0, 2, 1, 2}, 4);
	CHECK_EQ(ble_frag_input(f, d, n, 1, count_frame, &frames), PKS_ERR_MALFORMED);
	ble_frag_free(f);
	CHECK_EQ(frames, 0);

	/* In-order pieces across a reorder: 1 before 0 still gives one frame. */
	f = open_responder();
	n = mk(d, 3, 0, 1, 1, 0, (const uint8_t[]){3}, 1);
	CHECK_OK(ble_frag_input(f, d, n, 1, count_frame, &frames));
	CHECK_EQ(frames, 0);
	n = mk(d, 3, 0, 2, 0, 0, (const uint8_t[]){0, 2, 1}, 3);
	CHECK_OK(ble_frag_input(f, d, n, 1, count_frame, &frames));
	CHECK_EQ(frames, 1);
	/* Duplicates of both are ignored. */
	CHECK_OK(ble_frag_input(f, d, n, 1, count_frame, &frames));
	CHECK_EQ(frames, 1);
	/* Far outside the window: ignored as stale, not buffered. */
	n = mk(d, 3, 0, 3, 100, 0, (const uint8_t[]){0, 1, 1}, 3);
	CHECK_OK(ble_frag_input(f, d, n, 1, count_frame, &frames));
	CHECK_EQ(frames, 1);
	ble_frag_free(f);
}

static void test_garbage(void)
{
	uint64_t seed = seed_for(4242);
	uint8_t d[BLE_FRAG_DGRAM_MAX];
	size_t frames = 0;
	unsigned failed = 0;

	for (int round = 0; round < 2000; round++) {
		struct ble_frag *f = open_responder();
		if (f == NULL) {
			CHECK(f != NULL);
			break;
		}
		for (int k = 0; k < 20; k++) {
			size_t n = prng_next() % sizeof(d);
			for (size_t i = 0; i < n; i++)
				d[i] = (uint8_t)prng_next();
			if (n > 1 && (prng_next() & 1)) {
				d[0] = 3;
				d[1] = (uint8_t)((1u << 5) | (d[1] & 0x1f));
			}
			int r = ble_frag_input(f, d, n, (uint64_t)k, count_frame, &frames);
			if (r != PKS_OK) {
				CHECK(r == PKS_ERR_MALFORMED || r == PKS_ERR_CLOSED ||
				      r == PKS_ERR_TOO_LARGE || r == PKS_ERR_TRUNCATED ||
				      r == PKS_ERR_UNSUPPORTED);
				failed++;
				break;
			}
			size_t out_len;
			uint8_t o[BLE_FRAG_DGRAM_MAX];
			while (ble_frag_output(f, (uint64_t)k, o, sizeof(o), &out_len) == PKS_OK &&
			       out_len > 0)
				;
		}
		ble_frag_free(f);
	}
	CHECK(failed > 0);
	if (check_failed_current)
		printf("# seed %llu\n", (unsigned long long)seed);

	/* Datagrams of another tag leave a link untouched. */
	struct ble_frag *f = open_responder();
	for (int k = 0; k < 100; k++) {
		size_t n = 4 + prng_next() % 40;
		for (size_t i = 0; i < n; i++)
			d[i] = (uint8_t)prng_next();
		d[0] = 4;
		CHECK_OK(ble_frag_input(f, d, n, 1, count_frame, &frames));
	}
	CHECK(!ble_frag_is_done(f));
	ble_frag_free(f);
}

static void test_bounded_queue(void)
{
	struct ble_frag_params p = {
	    .mtu = 23, .tag = 1, .nonce = 1, .initiator = true, .send_queue_max = 200000};
	struct ble_frag *f = NULL;
	uint8_t *buf = calloc(1, FRAME_MAX);
	int r = PKS_OK;
	size_t sent = 0;

	CHECK_OK(ble_frag_new(&p, 0, &f));
	while ((r = ble_frag_send(f, buf, FRAME_MAX)) == PKS_OK)
		sent += FRAME_MAX;
	CHECK_EQ(r, PKS_ERR_BUSY);
	CHECK_EQ(sent, 3 * FRAME_MAX);
	CHECK_EQ(ble_frag_queued(f), sent);
	CHECK_OK(ble_frag_send(f, buf, 200000 - sent));
	CHECK_EQ(ble_frag_send(f, buf, 1), PKS_ERR_BUSY);
	CHECK_EQ(ble_frag_send(f, buf, 0), PKS_ERR_INVALID);
	CHECK_EQ(ble_frag_send(f, buf, FRAME_MAX + 1), PKS_ERR_TOO_LARGE);
	ble_frag_free(f);
	p.send_queue_max = 1000;
	CHECK_EQ(ble_frag_new(&p, 0, &f), PKS_ERR_INVALID);
	p.send_queue_max = 0;
	p.mtu = 22;
	CHECK_EQ(ble_frag_new(&p, 0, &f), PKS_ERR_INVALID);
	p.mtu = 518;
	CHECK_EQ(ble_frag_new(&p, 0, &f), PKS_ERR_INVALID);
	p.mtu = 23;
	p.window = 33;
	CHECK_EQ(ble_frag_new(&p, 0, &f), PKS_ERR_INVALID);
	p.window = 0;
	p.tag = 0;
	CHECK_EQ(ble_frag_new(&p, 0, &f), PKS_ERR_INVALID);
	free(buf);
}

static void test_dead_peer(void)
{
	struct ble_frag_params p = {
	    .mtu = 23, .tag = 1, .nonce = 1, .initiator = true, .dead_ms = 5000};
	struct ble_frag *f = NULL;
	uint8_t d[BLE_FRAG_DGRAM_MAX];
	size_t n, opens = 0;
	uint64_t now = 0;
	int r = PKS_OK;

	CHECK_OK(ble_frag_new(&p, 0, &f));
	while (now < 100000) {
		r = ble_frag_output(f, now, d, sizeof(d), &n);
		if (r != PKS_OK)
			break;
		if (n > 0) {
			opens++;
			continue;
		}
		now = ble_frag_deadline(f);
	}
	CHECK_EQ(r, PKS_ERR_TIMEOUT);
	CHECK_EQ(now, 5000);
	/* OPEN backs off: 0, 1 s, 3 s (then 7 s is past the deadline). */
	CHECK_EQ(opens, 3);
	CHECK_EQ(ble_frag_check(f, now), PKS_ERR_TIMEOUT);
	ble_frag_free(f);
}

/* Moves everything between a and b with no loss until both are quiet. */
static void pump(struct ble_frag *a, struct ble_frag *b, uint64_t now, size_t *frames_a,
		 size_t *frames_b, int *ra, int *rb)
{
	uint8_t d[BLE_FRAG_DGRAM_MAX];
	size_t n;
	bool moved = true;

	while (moved) {
		moved = false;
		while (*ra == PKS_OK && ble_frag_output(a, now, d, sizeof(d), &n) == PKS_OK &&
		       n > 0) {
			moved = true;
			*rb = ble_frag_input(b, d, n, now, count_frame, frames_b);
			if (*rb != PKS_OK)
				break;
		}
		while (*rb == PKS_OK && ble_frag_output(b, now, d, sizeof(d), &n) == PKS_OK &&
		       n > 0) {
			moved = true;
			*ra = ble_frag_input(a, d, n, now, count_frame, frames_a);
			if (*ra != PKS_OK)
				break;
		}
	}
}

/* A peripheral's link accepted with the previous epoch's MTU (23) is told
   the new one (247): later fragments are larger, and everything arrives. */
static void test_set_mtu(void)
{
	struct ble_frag_params pa = {.mtu = 23, .tag = 3, .nonce = 7, .initiator = true};
	struct ble_frag_params pb = {.mtu = 247, .tag = 3, .nonce = 7};
	struct ble_frag *a = NULL, *b = NULL;
	uint8_t frame[2000] = {0}, d[BLE_FRAG_DGRAM_MAX];
	size_t fa = 0, fb = 0, n, biggest = 0;
	int ra = PKS_OK, rb = PKS_OK;

	CHECK_OK(ble_frag_new(&pa, 0, &a));
	CHECK_OK(ble_frag_new(&pb, 0, &b));
	CHECK_OK(ble_frag_send(a, frame, sizeof(frame)));
	/* Open, and a few 20-byte fragments go out at the old MTU. */
	CHECK_OK(ble_frag_output(a, 0, d, sizeof(d), &n));
	CHECK_OK(ble_frag_input(b, d, n, 0, count_frame, &fb));
	CHECK_OK(ble_frag_output(b, 0, d, sizeof(d), &n));
	CHECK_OK(ble_frag_input(a, d, n, 0, count_frame, &fa));
	for (int i = 0; i < 3; i++) {
		CHECK_OK(ble_frag_output(a, 0, d, sizeof(d), &n));
		CHECK(n > 0 && n <= 20);
		CHECK_OK(ble_frag_input(b, d, n, 0, count_frame, &fb));
	}
	ble_frag_set_mtu(a, 10);   /* out of range: ignored */
	ble_frag_set_mtu(a, 1000); /* likewise */
	ble_frag_set_mtu(a, 247);
	while (ble_frag_output(a, 1, d, sizeof(d), &n) == PKS_OK && n > 0) {
		if (n > biggest)
			biggest = n;
		CHECK_OK(ble_frag_input(b, d, n, 1, count_frame, &fb));
	}
	CHECK(biggest > 20 && biggest <= 244);
	for (uint64_t now = 2; now < 100 && fb < 1; now += 10)
		pump(a, b, now, &fa, &fb, &ra, &rb);
	CHECK_EQ(fb, 1);
	CHECK_EQ(ra, PKS_OK);
	CHECK_EQ(rb, PKS_OK);
	ble_frag_free(a);
	ble_frag_free(b);
}

static void test_close(void)
{
	struct ble_frag_params pa = {.mtu = 247, .tag = 2, .nonce = 99, .initiator = true};
	struct ble_frag_params pb = {.mtu = 247, .tag = 2, .nonce = 99};
	struct ble_frag *a = NULL, *b = NULL;
	uint8_t frame[3000] = {0};
	size_t fa = 0, fb = 0;
	int ra = PKS_OK, rb = PKS_OK;

	CHECK_OK(ble_frag_new(&pa, 0, &a));
	CHECK_OK(ble_frag_new(&pb, 0, &b));
	CHECK_OK(ble_frag_send(a, frame, sizeof(frame)));
	CHECK_OK(ble_frag_send(a, frame, 1));
	ble_frag_close(a, 0);
	/* Closed while opening: nothing more to say, frames are dropped. */
	CHECK(ble_frag_is_done(a));
	ble_frag_free(a);
	a = NULL;
	CHECK_OK(ble_frag_new(&pa, 0, &a));
	CHECK_OK(ble_frag_send(a, frame, sizeof(frame)));
	CHECK_OK(ble_frag_send(a, frame, 1));
	/* Let the handshake finish first, then close with data queued. */
	{
		uint8_t d[BLE_FRAG_DGRAM_MAX];
		size_t n;
		CHECK_OK(ble_frag_output(a, 0, d, sizeof(d), &n));
		CHECK_OK(ble_frag_input(b, d, n, 0, count_frame, &fb));
		CHECK_OK(ble_frag_output(b, 0, d, sizeof(d), &n));
		CHECK_OK(ble_frag_input(a, d, n, 0, count_frame, &fa));
		CHECK(ble_frag_is_open(a) && ble_frag_is_open(b));
	}
	ble_frag_close(a, 0);
	CHECK_EQ(ble_frag_send(a, frame, 1), PKS_ERR_CLOSED);
	for (uint64_t now = 0; now < 100 && rb == PKS_OK; now += 10)
		pump(a, b, now, &fa, &fb, &ra, &rb);
	CHECK_EQ(fb, 2);
	CHECK_EQ(rb, PKS_ERR_CLOSED);
	CHECK(ble_frag_is_done(a));
	CHECK(ble_frag_is_done(b));
	CHECK_EQ(ble_frag_queued(a), 0);
	ble_frag_free(a);
	ble_frag_free(b);
}

/* Two centrals share one peripheral: both see all notifications. */
static void test_shared_notify(void)
{
	struct ble_frag_params c1 = {.mtu = 185, .tag = 10, .nonce = 1, .initiator = true};
	struct ble_frag_params c2 = {.mtu = 185, .tag = 11, .nonce = 2, .initiator = true};
	struct ble_frag *cen[2] = {NULL, NULL}, *per[2] = {NULL, NULL};
	uint8_t frame[1000], d[BLE_FRAG_DGRAM_MAX];
	size_t got_c[2] = {0, 0}, got_p[2] = {0, 0}, n;
	int r = PKS_OK;

	memset(frame, 0x42, sizeof(frame));
	CHECK_OK(ble_frag_new(&c1, 0, &cen[0]));
	CHECK_OK(ble_frag_new(&c2, 0, &cen[1]));
	for (int i = 0; i < 2; i++)
		CHECK_OK(ble_frag_send(cen[i], frame, sizeof(frame) - (size_t)i));
	for (uint64_t now = 0; now < 2000; now += 10) {
		/* Centrals write to the one peripheral fd; it demuxes by tag. */
		for (int i = 0; i < 2; i++) {
			while (ble_frag_output(cen[i], now, d, sizeof(d), &n) == PKS_OK && n > 0) {
				uint8_t tag;
				uint32_t nonce;
				int k = d[0] == 10 ? 0 : 1;
				if (per[k] == NULL &&
				    ble_frag_parse_open(d, n, &tag, &nonce) == PKS_OK) {
					struct ble_frag_params pp = {
					    .mtu = 185, .tag = tag, .nonce = nonce};
					CHECK_OK(ble_frag_new(&pp, now, &per[k]));
					CHECK_OK(ble_frag_send(per[k], frame, 500 + (size_t)k));
				}
				if (per[k] != NULL)
					CHECK_OK(ble_frag_input(per[k], d, n, now, count_frame,
								&got_p[k]));
			}
		}
		/* Each peripheral link notifies; every central hears it. */
		for (int k = 0; k < 2; k++) {
			while (per[k] != NULL &&
			       ble_frag_output(per[k], now, d, sizeof(d), &n) == PKS_OK && n > 0)
				for (int i = 0; i < 2; i++) {
					r = ble_frag_input(cen[i], d, n, now, count_frame,
							   &got_c[i]);
					CHECK_OK(r);
				}
		}
	}
	CHECK_EQ(got_p[0], 1);
	CHECK_EQ(got_p[1], 1);
	CHECK_EQ(got_c[0], 1);
	CHECK_EQ(got_c[1], 1);
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(ble_frag_queued(cen[i]), 0);
		ble_frag_free(cen[i]);
		ble_frag_free(per[i]);
	}
}

CHECK_MAIN({"/ble_frag/header", test_header}, {"/ble_frag/clean", test_clean},
	   {"/ble_frag/lossy", test_lossy}, {"/ble_frag/heavy_loss", test_heavy_loss},
	   {"/ble_frag/many_seeds", test_many_seeds},
	   {"/ble_frag/bandwidth_bound", test_bandwidth_bound},
	   {"/ble_frag/reassembly_violations", test_reassembly_violations},
	   {"/ble_frag/garbage", test_garbage}, {"/ble_frag/bounded_queue", test_bounded_queue},
	   {"/ble_frag/dead_peer", test_dead_peer}, {"/ble_frag/close", test_close},
	   {"/ble_frag/set_mtu", test_set_mtu}, {"/ble_frag/shared_notify", test_shared_notify})
