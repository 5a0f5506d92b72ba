#include "transport/ble-frag.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "transport/frame.h"

#define BLE_FRAG_ACK_BYTES 4u
#define BLE_FRAG_OPEN_BYTES 5u
#define BLE_FRAG_NEVER UINT64_MAX

enum ble_frag_state {
	BLE_FRAG_ST_OPENING,
	BLE_FRAG_ST_OPEN,
	BLE_FRAG_ST_CLOSING,
	BLE_FRAG_ST_DONE,
};

/* One sent fragment kept until acked, whole datagram (ack byte refreshed on resend). */
struct ble_frag_tx_slot {
	uint16_t len;
	uint16_t frame_bytes;
	bool sacked;
	bool rexmit;
	bool retransmitted;
	uint64_t sent_at;
	uint64_t order;      /* f->send_order at its first send */
	uint64_t last_order; /* and at its latest send */
	uint8_t data[BLE_FRAG_DGRAM_MAX];
};

/* One received fragment waiting for the ones before it: body after the header. */
struct ble_frag_rx_slot {
	bool present;
	bool start;
	bool end;
	uint16_t len;
	uint8_t data[BLE_FRAG_DGRAM_MAX - BLE_FRAG_HEADER_BYTES];
};

struct ble_frag_qframe {
	struct ble_frag_qframe *next;
	size_t len;
	uint8_t data[];
};

struct ble_frag {
	struct ble_frag_params p;
	size_t dgram_max;
	enum ble_frag_state state;
	int err; /* first failure; PKS_OK while healthy */
	bool peer_closed;
	unsigned peer_window;

	/* opening */
	uint64_t open_next_at;
	uint64_t open_sent_at;
	uint32_t open_rto;
	bool open_retried;
	bool open_reply_pending;

	/* sending */
	struct ble_frag_qframe *q_head, *q_tail;
	size_t q_off;
	size_t queued;
	uint8_t snd_una, snd_nxt;
	struct ble_frag_tx_slot tx[BLE_FRAG_WINDOW_MAX];
	uint32_t srtt, rttvar, rto;
	bool have_rtt;
	/* Loss is inferred from order, not time: a fragment is lost once one
	   sent after it is known delivered (acked or sacked). Queueing on a
	   slow link stretches round trips far past any timer, and resending
	   on time alone fed the queue that made the time (a storm). */
	uint64_t send_order;
	uint64_t delivered_order;
	unsigned rto_streak; /* timeouts in a row with no ack moving */
	uint64_t rto_at;
	uint64_t last_tx;
	uint64_t close_at;

	/* receiving */
	uint64_t last_rx;
	uint8_t rcv_nxt;
	unsigned rx_since_ack;
	bool ack_now;
	uint64_t ack_due;
	struct ble_frag_rx_slot rx[BLE_FRAG_WINDOW_MAX];

	/* reassembly */
	uint8_t *frame;
	size_t frame_cap;
	size_t frame_want;
	size_t frame_got;
	bool in_frame;

	struct ble_frag_stats stats;
};

static uint16_t ble_frag_be16(const uint8_t *p)
{
	return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

static uint32_t ble_frag_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void ble_frag_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

int ble_frag_parse_header(const uint8_t *dgram, size_t len, struct ble_frag_header *out)
{
	struct ble_frag_header h;
	size_t body;
	unsigned type;
	int r = PKS_ERR_INVALID;

	if (out == NULL || (dgram == NULL && len > 0))
		goto out;
	r = PKS_ERR_TRUNCATED;
	if (len < BLE_FRAG_HEADER_BYTES)
		goto out;
	r = PKS_ERR_TOO_LARGE;
	if (len > BLE_FRAG_DGRAM_MAX)
		goto out;
	r = PKS_ERR_UNSUPPORTED;
	if ((dgram[1] >> 5) != BLE_FRAG_VERSION)
		goto out;
	r = PKS_ERR_MALFORMED;
	h.tag = dgram[0];
	if (h.tag == 0)
		goto out;
	type = (dgram[1] >> 2) & 0x7u;
	h.start = (dgram[1] & BLE_FRAG_FLAG_START) != 0;
	h.end = (dgram[1] & BLE_FRAG_FLAG_END) != 0;
	h.seq = dgram[2];
	h.ack = dgram[3];
	body = len - BLE_FRAG_HEADER_BYTES;
	if (type != BLE_FRAG_DATA && (h.start || h.end || h.seq != 0))
		goto out;
	switch (type) {
	case BLE_FRAG_DATA:
		h.type = BLE_FRAG_DATA;
		if (h.start) {
			if (body < BLE_FRAG_START_BYTES + 1)
				goto out;
			if (ble_frag_be16(dgram + BLE_FRAG_HEADER_BYTES) == 0)
				goto out;
			/* A one-fragment frame must carry exactly its length. */
			if (h.end && ble_frag_be16(dgram + BLE_FRAG_HEADER_BYTES) !=
					 body - BLE_FRAG_START_BYTES)
				goto out;
		} else if (body < 1) {
			goto out;
		}
		break;
	case BLE_FRAG_ACK:
		h.type = BLE_FRAG_ACK;
		if (body != BLE_FRAG_ACK_BYTES)
			goto out;
		break;
	case BLE_FRAG_OPEN:
	case BLE_FRAG_OPEN_OK: {
		uint8_t w;

		h.type = type == BLE_FRAG_OPEN ? BLE_FRAG_OPEN : BLE_FRAG_OPEN_OK;
		if (body != BLE_FRAG_OPEN_BYTES)
			goto out;
		w = dgram[BLE_FRAG_HEADER_BYTES + 4];
		if (w < 1 || w > BLE_FRAG_WINDOW_MAX)
			goto out;
		break;
	}
	case BLE_FRAG_CLOSE:
		h.type = BLE_FRAG_CLOSE;
		if (body != 0)
			goto out;
		break;
	default:
		goto out;
	}
	*out = h;
	r = PKS_OK;
out:
	return r;
}

int ble_frag_parse_open(const uint8_t *dgram, size_t len, uint8_t *tag, uint32_t *nonce)
{
	struct ble_frag_header h;
	int r;

	if (tag == NULL || nonce == NULL)
		return PKS_ERR_INVALID;
	r = ble_frag_parse_header(dgram, len, &h);
	if (r != PKS_OK)
		return r;
	if (h.type != BLE_FRAG_OPEN)
		return PKS_ERR_STATE;
	*tag = h.tag;
	*nonce = ble_frag_be32(dgram + BLE_FRAG_HEADER_BYTES);
	return PKS_OK;
}

static uint32_t ble_frag_or(uint32_t v, uint32_t def)
{
	return v != 0 ? v : def;
}

int ble_frag_new(const struct ble_frag_params *p, uint64_t now_ms, struct ble_frag **out)
{
	struct ble_frag *f = NULL;
	int r = PKS_ERR_INVALID;

	if (p == NULL || out == NULL)
		goto out;
	if (p->mtu < BLE_FRAG_MTU_MIN || p->mtu > BLE_FRAG_MTU_MAX || p->tag == 0 ||
	    p->window > BLE_FRAG_WINDOW_MAX)
		goto out;
	if (p->send_queue_max != 0 && p->send_queue_max < FRAME_MAX)
		goto out;
	r = PKS_ERR_NOMEM;
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		goto out;
	f->p = *p;
	f->p.window = p->window != 0 ? p->window : BLE_FRAG_WINDOW_DEFAULT;
	f->p.send_queue_max =
	    p->send_queue_max != 0 ? p->send_queue_max : BLE_FRAG_SEND_QUEUE_DEFAULT;
	f->p.rto_initial_ms = ble_frag_or(p->rto_initial_ms, 1000);
	f->p.rto_min_ms = ble_frag_or(p->rto_min_ms, 200);
	f->p.rto_max_ms = ble_frag_or(p->rto_max_ms, 8000);
	f->p.ack_delay_ms = ble_frag_or(p->ack_delay_ms, 20);
	f->p.keepalive_ms = ble_frag_or(p->keepalive_ms, 4000);
	f->p.dead_ms = ble_frag_or(p->dead_ms, 20000);
	f->p.linger_ms = ble_frag_or(p->linger_ms, 3000);
	r = PKS_ERR_INVALID;
	if (f->p.rto_min_ms > f->p.rto_max_ms)
		goto out;
	if (f->p.rto_initial_ms < f->p.rto_min_ms)
		f->p.rto_initial_ms = f->p.rto_min_ms;
	if (f->p.rto_initial_ms > f->p.rto_max_ms)
		f->p.rto_initial_ms = f->p.rto_max_ms;
	f->dgram_max = p->mtu - 3;
	f->state = BLE_FRAG_ST_OPENING;
	f->rto = f->p.rto_initial_ms;
	f->open_rto = f->p.rto_initial_ms;
	f->open_next_at = now_ms;
	f->rto_at = BLE_FRAG_NEVER;
	f->ack_due = BLE_FRAG_NEVER;
	f->close_at = BLE_FRAG_NEVER;
	f->last_rx = now_ms;
	f->last_tx = now_ms;
	*out = f;
	f = NULL;
	r = PKS_OK;
out:
	free(f);
	return r;
}

void ble_frag_free(struct ble_frag *f)
{
	struct ble_frag_qframe *q, *next;

	if (f == NULL)
		return;
	for (q = f->q_head; q != NULL; q = next) {
		next = q->next;
		free(q);
	}
	free(f->frame);
	free(f);
}

static void ble_frag_fail(struct ble_frag *f, int err)
{
	if (f->err == PKS_OK)
		f->err = err;
	f->state = BLE_FRAG_ST_DONE;
}

int ble_frag_send(struct ble_frag *f, const uint8_t *frame, size_t len)
{
	struct ble_frag_qframe *q;

	if (f == NULL || frame == NULL || len == 0)
		return PKS_ERR_INVALID;
	if (len > FRAME_MAX)
		return PKS_ERR_TOO_LARGE;
	if (f->err != PKS_OK || f->peer_closed || f->state == BLE_FRAG_ST_CLOSING ||
	    f->state == BLE_FRAG_ST_DONE)
		return PKS_ERR_CLOSED;
	if (f->queued + len > f->p.send_queue_max)
		return PKS_ERR_BUSY;
	q = malloc(sizeof(*q) + len);
	if (q == NULL)
		return PKS_ERR_NOMEM;
	q->next = NULL;
	q->len = len;
	memcpy(q->data, frame, len);
	if (f->q_tail != NULL)
		f->q_tail->next = q;
	else
		f->q_head = q;
	f->q_tail = q;
	f->queued += len;
	return PKS_OK;
}

static void ble_frag_rtt_sample(struct ble_frag *f, uint64_t sample64)
{
	uint32_t sample = sample64 > 600000 ? 600000 : (uint32_t)sample64;
	uint64_t rto;

	if (!f->have_rtt) {
		f->srtt = sample;
		f->rttvar = sample / 2;
		f->have_rtt = true;
	} else {
		uint32_t diff = f->srtt > sample ? f->srtt - sample : sample - f->srtt;
		f->rttvar = (3 * f->rttvar + diff) / 4;
		f->srtt = (7 * f->srtt + sample) / 8;
	}
	rto = (uint64_t)f->srtt + (4 * f->rttvar > 10 ? 4 * f->rttvar : 10);
	if (rto < f->p.rto_min_ms)
		rto = f->p.rto_min_ms;
	if (rto > f->p.rto_max_ms)
		rto = f->p.rto_max_ms;
	f->rto = (uint32_t)rto;
}

static unsigned ble_frag_outstanding(const struct ble_frag *f)
{
	return (uint8_t)(f->snd_nxt - f->snd_una);
}

/* A fragment arrived. Order advances by its first send only: when a resent
   one is acked, which copy arrived is unknown (Karn), and taking the resend
   would call everything queued behind the original lost. */
static void ble_frag_delivered(struct ble_frag *f, const struct ble_frag_tx_slot *s)
{
	if (s->order > f->delivered_order)
		f->delivered_order = s->order;
}

/* Takes a cumulative ack: frees acked slots, samples the RTT, re-arms the timer. */
static void ble_frag_take_ack(struct ble_frag *f, uint8_t ack, uint64_t now)
{
	unsigned n = (uint8_t)(ack - f->snd_una);

	if (n == 0 || n > ble_frag_outstanding(f))
		return;
	{
		/* Karn: an ack that a resend made possible says nothing of the
		   round trip, nor does one for a fragment sacked long ago. */
		const struct ble_frag_tx_slot *newest =
		    &f->tx[(uint8_t)(ack - 1) % BLE_FRAG_WINDOW_MAX];
		bool clean = !newest->sacked && now >= newest->sent_at;
		for (unsigned i = 0; i < n && clean; i++)
			if (f->tx[(uint8_t)(f->snd_una + i) % BLE_FRAG_WINDOW_MAX].retransmitted)
				clean = false;
		if (clean)
			ble_frag_rtt_sample(f, now - newest->sent_at);
	}
	for (unsigned i = 0; i < n; i++) {
		struct ble_frag_tx_slot *s =
		    &f->tx[(uint8_t)(f->snd_una + i) % BLE_FRAG_WINDOW_MAX];
		ble_frag_delivered(f, s);
		f->queued -= s->frame_bytes;
		s->len = 0;
		s->frame_bytes = 0;
		s->sacked = false;
		s->rexmit = false;
	}
	f->snd_una = ack;
	f->rto_streak = 0;
	f->rto_at = ble_frag_outstanding(f) > 0 ? now + f->rto : BLE_FRAG_NEVER;
}

/* Marks for resending each outstanding fragment sent before one known to
   have arrived (at most once per send: a resend gets a new order). */
static void ble_frag_mark_lost(struct ble_frag *f)
{
	unsigned out = ble_frag_outstanding(f);

	for (unsigned i = 0; i < out; i++) {
		struct ble_frag_tx_slot *s =
		    &f->tx[(uint8_t)(f->snd_una + i) % BLE_FRAG_WINDOW_MAX];
		if (!s->sacked && !s->rexmit && s->last_order < f->delivered_order)
			s->rexmit = true;
	}
}

static void ble_frag_take_sack(struct ble_frag *f, uint8_t ack, uint32_t bits)
{
	unsigned out = ble_frag_outstanding(f);

	/* The bits are relative to the ack: an older ack (reordered) says
	   nothing reliable about today's window. */
	if (ack != f->snd_una)
		return;
	for (unsigned i = 1; i < out && i <= 32; i++) {
		struct ble_frag_tx_slot *s =
		    &f->tx[(uint8_t)(f->snd_una + i) % BLE_FRAG_WINDOW_MAX];
		if (!(bits & (1u << (i - 1))))
			continue;
		s->sacked = true;
		ble_frag_delivered(f, s);
	}
}

/* Appends a fragment's bytes to the frame being reassembled; delivers it on END. */
static int ble_frag_reassemble(struct ble_frag *f, const struct ble_frag_rx_slot *s,
			       ble_frag_frame_fn fn, void *user)
{
	const uint8_t *d = s->data;
	size_t n = s->len;

	if (s->start) {
		size_t want;

		if (f->in_frame || n < BLE_FRAG_START_BYTES + 1)
			return PKS_ERR_MALFORMED;
		want = ble_frag_be16(d);
		if (want == 0)
			return PKS_ERR_MALFORMED;
		if (f->frame_cap < want) {
			uint8_t *p = realloc(f->frame, want);
			if (p == NULL)
				return PKS_ERR_NOMEM;
			f->frame = p;
			f->frame_cap = want;
		}
		f->frame_want = want;
		f->frame_got = 0;
		f->in_frame = true;
		d += BLE_FRAG_START_BYTES;
		n -= BLE_FRAG_START_BYTES;
	} else if (!f->in_frame) {
		return PKS_ERR_MALFORMED;
	}
	if (n > f->frame_want - f->frame_got)
		return PKS_ERR_MALFORMED;
	memcpy(f->frame + f->frame_got, d, n);
	f->frame_got += n;
	if (s->end != (f->frame_got == f->frame_want))
		return PKS_ERR_MALFORMED;
	if (s->end) {
		f->in_frame = false;
		f->stats.frames_in++;
		if (fn != NULL)
			return fn(user, f->frame, f->frame_want);
	}
	return PKS_OK;
}

static int ble_frag_take_data(struct ble_frag *f, const struct ble_frag_header *h,
			      const uint8_t *body, size_t n, uint64_t now, ble_frag_frame_fn fn,
			      void *user)
{
	unsigned d = (uint8_t)(h->seq - f->rcv_nxt);
	int r = PKS_OK;

	if (d < f->p.window) {
		struct ble_frag_rx_slot *s = &f->rx[h->seq % BLE_FRAG_WINDOW_MAX];
		if (s->present) {
			f->stats.dup_in++;
			f->ack_now = true;
		} else {
			s->present = true;
			s->start = h->start;
			s->end = h->end;
			s->len = (uint16_t)n;
			memcpy(s->data, body, n);
		}
		if (d > 0)
			f->ack_now = true;
	} else {
		/* Already delivered: our ack was lost, say it again. */
		f->stats.dup_in++;
		f->ack_now = true;
	}
	if (f->ack_due == BLE_FRAG_NEVER)
		f->ack_due = now + f->p.ack_delay_ms;
	if (++f->rx_since_ack >= (f->p.window + 1) / 2)
		f->ack_due = now;
	while (f->rx[f->rcv_nxt % BLE_FRAG_WINDOW_MAX].present) {
		struct ble_frag_rx_slot *s = &f->rx[f->rcv_nxt % BLE_FRAG_WINDOW_MAX];
		s->present = false;
		f->rcv_nxt++;
		r = ble_frag_reassemble(f, s, fn, user);
		if (r != PKS_OK)
			break;
	}
	return r;
}

int ble_frag_input(struct ble_frag *f, const uint8_t *dgram, size_t len, uint64_t now_ms,
		   ble_frag_frame_fn fn, void *user)
{
	struct ble_frag_header h;
	const uint8_t *body;
	size_t n;
	int r;

	if (f == NULL || (dgram == NULL && len > 0))
		return PKS_ERR_INVALID;
	if (f->err != PKS_OK)
		return f->err;
	if (f->peer_closed)
		return PKS_ERR_CLOSED;
	if (f->state == BLE_FRAG_ST_DONE)
		return PKS_OK;
	r = ble_frag_parse_header(dgram, len, &h);
	if (r != PKS_OK) {
		/* Only what claims to be ours can fail this link. */
		if (len >= 1 && dgram[0] == f->p.tag) {
			ble_frag_fail(f, r);
			return r;
		}
		return PKS_OK;
	}
	if (h.tag != f->p.tag)
		return PKS_OK;
	body = dgram + BLE_FRAG_HEADER_BYTES;
	n = len - BLE_FRAG_HEADER_BYTES;

	if (h.type == BLE_FRAG_OPEN || h.type == BLE_FRAG_OPEN_OK) {
		bool want_open = !f->p.initiator && h.type == BLE_FRAG_OPEN;
		bool want_ok = f->p.initiator && h.type == BLE_FRAG_OPEN_OK;

		if ((!want_open && !want_ok) || ble_frag_be32(body) != f->p.nonce)
			return PKS_OK;
		f->last_rx = now_ms;
		f->stats.dgrams_in++;
		if (want_open) {
			f->open_reply_pending = true;
			if (f->state == BLE_FRAG_ST_OPENING) {
				f->peer_window = body[4];
				f->state = BLE_FRAG_ST_OPEN;
			}
		} else if (f->state == BLE_FRAG_ST_OPENING) {
			f->peer_window = body[4];
			f->state = BLE_FRAG_ST_OPEN;
			if (!f->open_retried && now_ms >= f->open_sent_at)
				ble_frag_rtt_sample(f, now_ms - f->open_sent_at);
		}
		return PKS_OK;
	}
	if (f->state == BLE_FRAG_ST_OPENING)
		return PKS_OK;
	f->last_rx = now_ms;
	f->stats.dgrams_in++;
	switch (h.type) {
	case BLE_FRAG_CLOSE:
		f->peer_closed = true;
		f->state = BLE_FRAG_ST_DONE;
		return PKS_ERR_CLOSED;
	case BLE_FRAG_ACK:
		ble_frag_take_ack(f, h.ack, now_ms);
		ble_frag_take_sack(f, h.ack, ble_frag_be32(body));
		ble_frag_mark_lost(f);
		return PKS_OK;
	case BLE_FRAG_DATA:
		ble_frag_take_ack(f, h.ack, now_ms);
		ble_frag_mark_lost(f);
		r = ble_frag_take_data(f, &h, body, n, now_ms, fn, user);
		if (r == PKS_ERR_MALFORMED || r == PKS_ERR_NOMEM)
			ble_frag_fail(f, r);
		return r;
	case BLE_FRAG_OPEN:
	case BLE_FRAG_OPEN_OK:
		break;
	}
	return PKS_OK;
}

int ble_frag_check(struct ble_frag *f, uint64_t now_ms)
{
	if (f == NULL)
		return PKS_ERR_INVALID;
	if (f->err != PKS_OK)
		return f->err;
	if (f->state == BLE_FRAG_ST_DONE)
		return PKS_OK;
	if (now_ms >= f->last_rx + f->p.dead_ms) {
		ble_frag_fail(f, PKS_ERR_TIMEOUT);
		return f->err;
	}
	if (f->rto_at != BLE_FRAG_NEVER && now_ms >= f->rto_at) {
		/* Nothing heard for a whole timeout: resend only the oldest
		   fragment still missing. Its ack, when it comes, shows by order
		   which of the others were lost; if the timeout was only a long
		   queue, it cost one datagram, not a window. */
		unsigned out = ble_frag_outstanding(f);
		bool all = ++f->rto_streak >= 2; /* silence again: resend the lot */
		for (unsigned i = 0; i < out; i++) {
			struct ble_frag_tx_slot *s =
			    &f->tx[(uint8_t)(f->snd_una + i) % BLE_FRAG_WINDOW_MAX];
			if (!s->sacked) {
				s->rexmit = true;
				if (!all)
					break;
			}
		}
		f->rto = f->rto * 2 > f->p.rto_max_ms ? f->p.rto_max_ms : f->rto * 2;
		f->rto_at = out > 0 ? now_ms + f->rto : BLE_FRAG_NEVER;
	}
	return PKS_OK;
}

uint64_t ble_frag_deadline(const struct ble_frag *f)
{
	uint64_t t = BLE_FRAG_NEVER;

	if (f == NULL || f->err != PKS_OK || f->state == BLE_FRAG_ST_DONE)
		return BLE_FRAG_NEVER;
#define BLE_FRAG_MIN(x)                                                                            \
	do {                                                                                       \
		if ((x) < t)                                                                       \
			t = (x);                                                                   \
	} while (0)
	BLE_FRAG_MIN(f->last_rx + f->p.dead_ms);
	if (f->state == BLE_FRAG_ST_OPENING) {
		if (f->p.initiator)
			BLE_FRAG_MIN(f->open_next_at);
	} else {
		BLE_FRAG_MIN(f->rto_at);
		BLE_FRAG_MIN(f->ack_due);
		BLE_FRAG_MIN(f->last_tx + f->p.keepalive_ms);
		BLE_FRAG_MIN(f->close_at);
	}
#undef BLE_FRAG_MIN
	return t;
}

/* Fills the 4-byte header; every datagram carries the current cumulative ack. */
static void ble_frag_put_header(struct ble_frag *f, uint8_t *out, enum ble_frag_type type,
				uint8_t flags, uint8_t seq)
{
	out[0] = f->p.tag;
	out[1] = (uint8_t)((BLE_FRAG_VERSION << 5) | ((unsigned)type << 2) | flags);
	out[2] = seq;
	out[3] = f->rcv_nxt;
}

static void ble_frag_put_ack(struct ble_frag *f, uint8_t *out, size_t *out_len)
{
	uint32_t bits = 0;

	for (unsigned i = 1; i <= 32 && i < f->p.window; i++)
		if (f->rx[(uint8_t)(f->rcv_nxt + i) % BLE_FRAG_WINDOW_MAX].present)
			bits |= 1u << (i - 1);
	ble_frag_put_header(f, out, BLE_FRAG_ACK, 0, 0);
	ble_frag_put_be32(out + BLE_FRAG_HEADER_BYTES, bits);
	*out_len = BLE_FRAG_HEADER_BYTES + BLE_FRAG_ACK_BYTES;
}

static void ble_frag_sent(struct ble_frag *f, uint64_t now, bool pure_ack)
{
	f->last_tx = now;
	f->stats.dgrams_out++;
	f->ack_due = BLE_FRAG_NEVER;
	f->rx_since_ack = 0;
	if (pure_ack)
		f->ack_now = false;
}

static bool ble_frag_all_acked(const struct ble_frag *f)
{
	return f->queued == 0 && ble_frag_outstanding(f) == 0;
}

int ble_frag_output(struct ble_frag *f, uint64_t now_ms, uint8_t *out, size_t cap, size_t *out_len)
{
	int r;
	unsigned outstanding;

	if (f == NULL || out == NULL || out_len == NULL)
		return PKS_ERR_INVALID;
	if (cap < f->dgram_max)
		return PKS_ERR_TOO_LARGE;
	r = ble_frag_check(f, now_ms);
	if (r != PKS_OK)
		return r;
	*out_len = 0;
	if (f->state == BLE_FRAG_ST_DONE)
		return PKS_OK;

	if (f->state == BLE_FRAG_ST_OPENING) {
		if (!f->p.initiator || now_ms < f->open_next_at)
			return PKS_OK;
		ble_frag_put_header(f, out, BLE_FRAG_OPEN, 0, 0);
		ble_frag_put_be32(out + BLE_FRAG_HEADER_BYTES, f->p.nonce);
		out[BLE_FRAG_HEADER_BYTES + 4] = (uint8_t)f->p.window;
		*out_len = BLE_FRAG_HEADER_BYTES + BLE_FRAG_OPEN_BYTES;
		if (f->open_sent_at != 0 || f->stats.dgrams_out > 0)
			f->open_retried = true;
		f->open_sent_at = now_ms;
		f->open_next_at = now_ms + f->open_rto;
		f->open_rto = f->open_rto * 2 > f->p.rto_max_ms ? f->p.rto_max_ms : f->open_rto * 2;
		ble_frag_sent(f, now_ms, false);
		return PKS_OK;
	}
	if (f->open_reply_pending) {
		ble_frag_put_header(f, out, BLE_FRAG_OPEN_OK, 0, 0);
		ble_frag_put_be32(out + BLE_FRAG_HEADER_BYTES, f->p.nonce);
		out[BLE_FRAG_HEADER_BYTES + 4] = (uint8_t)f->p.window;
		*out_len = BLE_FRAG_HEADER_BYTES + BLE_FRAG_OPEN_BYTES;
		f->open_reply_pending = false;
		ble_frag_sent(f, now_ms, false);
		return PKS_OK;
	}

	/* Resends first, oldest first. */
	outstanding = ble_frag_outstanding(f);
	for (unsigned i = 0; i < outstanding; i++) {
		uint8_t seq = (uint8_t)(f->snd_una + i);
		struct ble_frag_tx_slot *s = &f->tx[seq % BLE_FRAG_WINDOW_MAX];
		if (!s->rexmit)
			continue;
		memcpy(out, s->data, s->len);
		out[3] = f->rcv_nxt;
		*out_len = s->len;
		s->rexmit = false;
		s->retransmitted = true;
		s->sent_at = now_ms;
		s->last_order = ++f->send_order;
		f->stats.retransmits++;
		if (f->rto_at == BLE_FRAG_NEVER)
			f->rto_at = now_ms + f->rto;
		ble_frag_sent(f, now_ms, false);
		return PKS_OK;
	}

	/* A hole or a duplicate: tell the sender at once, with selective acks. */
	if (f->ack_now) {
		ble_frag_put_ack(f, out, out_len);
		ble_frag_sent(f, now_ms, true);
		return PKS_OK;
	}

	/* Then new data while the peer's window has room. */
	if (f->q_head != NULL && outstanding < f->peer_window) {
		struct ble_frag_qframe *q = f->q_head;
		struct ble_frag_tx_slot *s = &f->tx[f->snd_nxt % BLE_FRAG_WINDOW_MAX];
		bool start = f->q_off == 0;
		size_t hdr = BLE_FRAG_HEADER_BYTES + (start ? BLE_FRAG_START_BYTES : 0);
		size_t n = f->dgram_max - hdr;
		bool end;

		if (n > q->len - f->q_off)
			n = q->len - f->q_off;
		end = f->q_off + n == q->len;
		ble_frag_put_header(
		    f, s->data, BLE_FRAG_DATA,
		    (uint8_t)((start ? BLE_FRAG_FLAG_START : 0) | (end ? BLE_FRAG_FLAG_END : 0)),
		    f->snd_nxt);
		if (start) {
			s->data[BLE_FRAG_HEADER_BYTES] = (uint8_t)(q->len >> 8);
			s->data[BLE_FRAG_HEADER_BYTES + 1] = (uint8_t)q->len;
		}
		memcpy(s->data + hdr, q->data + f->q_off, n);
		s->len = (uint16_t)(hdr + n);
		s->frame_bytes = (uint16_t)n;
		s->sacked = false;
		s->rexmit = false;
		s->retransmitted = false;
		s->sent_at = now_ms;
		s->order = s->last_order = ++f->send_order;
		f->snd_nxt++;
		f->q_off += n;
		if (end) {
			f->q_head = q->next;
			if (f->q_head == NULL)
				f->q_tail = NULL;
			free(q);
			f->q_off = 0;
			f->stats.frames_out++;
		}
		if (f->rto_at == BLE_FRAG_NEVER)
			f->rto_at = now_ms + f->rto;
		memcpy(out, s->data, s->len);
		*out_len = s->len;
		ble_frag_sent(f, now_ms, false);
		return PKS_OK;
	}

	if (f->state == BLE_FRAG_ST_CLOSING && (ble_frag_all_acked(f) || now_ms >= f->close_at)) {
		ble_frag_put_header(f, out, BLE_FRAG_CLOSE, 0, 0);
		*out_len = BLE_FRAG_HEADER_BYTES;
		ble_frag_sent(f, now_ms, true);
		f->state = BLE_FRAG_ST_DONE;
		return PKS_OK;
	}

	if (f->ack_now || now_ms >= f->ack_due || now_ms >= f->last_tx + f->p.keepalive_ms) {
		ble_frag_put_ack(f, out, out_len);
		ble_frag_sent(f, now_ms, true);
	}
	return PKS_OK;
}

void ble_frag_close(struct ble_frag *f, uint64_t now_ms)
{
	if (f == NULL)
		return;
	if (f->state == BLE_FRAG_ST_OPENING) {
		/* The peer never heard of us: nothing to tell it. */
		f->state = BLE_FRAG_ST_DONE;
		return;
	}
	if (f->state != BLE_FRAG_ST_OPEN)
		return;
	f->state = BLE_FRAG_ST_CLOSING;
	f->close_at = now_ms + f->p.linger_ms;
}

bool ble_frag_is_open(const struct ble_frag *f)
{
	return f != NULL && f->peer_window != 0;
}

bool ble_frag_is_done(const struct ble_frag *f)
{
	return f == NULL || f->state == BLE_FRAG_ST_DONE;
}

size_t ble_frag_queued(const struct ble_frag *f)
{
	return f != NULL ? f->queued : 0;
}

uint8_t ble_frag_tag(const struct ble_frag *f)
{
	return f->p.tag;
}

uint32_t ble_frag_nonce(const struct ble_frag *f)
{
	return f->p.nonce;
}

void ble_frag_set_mtu(struct ble_frag *f, unsigned mtu)
{
	if (f == NULL || mtu < BLE_FRAG_MTU_MIN || mtu > BLE_FRAG_MTU_MAX)
		return;
	f->p.mtu = mtu;
	f->dgram_max = mtu - 3;
}

void ble_frag_get_stats(const struct ble_frag *f, struct ble_frag_stats *out)
{
	*out = f->stats;
	out->srtt_ms = f->srtt;
	out->rto_ms = f->rto;
}
