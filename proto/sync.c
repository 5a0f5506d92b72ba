/*
 * The sync engine (DESIGN §6): the message codec and the session state
 * machine described in sync.h.
 *
 * The codec writes canonical CBOR (shortest heads, definite lengths) and
 * reads with libcbor's streaming decoder following the schema, so no tree is
 * built and nesting is fixed by the code; it then re-encodes what it read and
 * compares bytes, which rejects every non-canonical form without a rule per
 * form.
 */
#include "proto/sync.h"

#include <cbor.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/err.h"

/* ---- encoding ---- */

static int sync_enc_head(struct pks_buf *b, size_t n, const unsigned char *head)
{
	return n == 0 ? PKS_ERR_INTERNAL : pks_buf_append(b, head, n);
}

static int sync_enc_uint(struct pks_buf *b, uint64_t value)
{
	unsigned char head[9];

	return sync_enc_head(b, cbor_encode_uint(value, head, sizeof(head)), head);
}

static int sync_enc_bytes(struct pks_buf *b, const uint8_t *p, size_t len)
{
	unsigned char head[9];
	int r = sync_enc_head(b, cbor_encode_bytestring_start(len, head, sizeof(head)), head);

	if (r == PKS_OK && len > 0)
		r = pks_buf_append(b, p, len);
	return r;
}

static int sync_enc_array(struct pks_buf *b, size_t n)
{
	unsigned char head[9];

	return sync_enc_head(b, cbor_encode_array_start(n, head, sizeof(head)), head);
}

static int sync_enc_bool(struct pks_buf *b, bool value)
{
	unsigned char head[1];

	return sync_enc_head(b, cbor_encode_bool(value, head, sizeof(head)), head);
}

static bool sync_author_less(const uint8_t *a, const uint8_t *b)
{
	return memcmp(a, b, SYNC_ID_LEN) < 0;
}

/* The checks the decoder makes on values, so the encoder never writes what it would refuse. */
static int sync_msg_check(const struct sync_msg *m)
{
	switch (m->type) {
	case SYNC_MSG_HELLO:
		if (m->n_heads > SYNC_HEADS_MAX)
			return PKS_ERR_TOO_LARGE;
		return PKS_OK;
	case SYNC_MSG_KEYS:
		if (m->n_blobs > SYNC_KEYS_MAX)
			return PKS_ERR_TOO_LARGE;
		for (size_t i = 0; i < m->n_blobs; i++)
			if (m->blobs[i].len != SYNC_KEY_BLOB_LEN || m->blobs[i].data == NULL)
				return PKS_ERR_MALFORMED;
		return PKS_OK;
	case SYNC_MSG_MEMB_OPS:
	case SYNC_MSG_VERSIONS:
		if (m->n_blobs > SYNC_BLOBS_MAX)
			return PKS_ERR_TOO_LARGE;
		if (m->type == SYNC_MSG_VERSIONS && m->batch == 0)
			return PKS_ERR_MALFORMED;
		for (size_t i = 0; i < m->n_blobs; i++) {
			if (m->blobs[i].len > SYNC_BLOB_MAX)
				return PKS_ERR_TOO_LARGE;
			if (m->blobs[i].len == 0 || m->blobs[i].data == NULL)
				return PKS_ERR_MALFORMED;
		}
		return PKS_OK;
	case SYNC_MSG_STATE:
		if (m->vector.n > SYNC_AUTHORS_MAX)
			return PKS_ERR_TOO_LARGE;
		for (size_t i = 0; i < m->vector.n; i++) {
			if (m->vector.e[i].seq == 0)
				return PKS_ERR_MALFORMED;
			if (i > 0 &&
			    !sync_author_less(m->vector.e[i - 1].author, m->vector.e[i].author))
				return PKS_ERR_MALFORMED;
		}
		return PKS_OK;
	case SYNC_MSG_ACK:
		return m->batch == 0 ? PKS_ERR_MALFORMED : PKS_OK;
	case SYNC_MSG_DONE:
		return PKS_OK;
	case SYNC_MSG_SUMMARY:
		if (m->n_summary > SYNC_AUTHORS_MAX)
			return PKS_ERR_TOO_LARGE;
		for (size_t i = 0; i < m->n_summary; i++) {
			if (m->summary[i].seq == 0)
				return PKS_ERR_MALFORMED;
			if (i > 0 &&
			    !sync_author_less(m->summary[i - 1].author, m->summary[i].author))
				return PKS_ERR_MALFORMED;
		}
		return PKS_OK;
	}
	return PKS_ERR_MALFORMED;
}

static int sync_enc_body(struct pks_buf *b, const struct sync_msg *m)
{
	int r;

	switch (m->type) {
	case SYNC_MSG_HELLO:
		if ((r = sync_enc_array(b, 4)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->version)) != PKS_OK ||
		    (r = sync_enc_array(b, m->n_heads)) != PKS_OK)
			return r;
		for (size_t i = 0; i < m->n_heads; i++)
			if ((r = sync_enc_bytes(b, m->heads[i], SYNC_ID_LEN)) != PKS_OK)
				return r;
		return sync_enc_bytes(b, m->digest, SYNC_DIGEST_LEN);
	case SYNC_MSG_MEMB_OPS:
	case SYNC_MSG_KEYS:
	case SYNC_MSG_VERSIONS:
		if ((r = sync_enc_array(b, m->type == SYNC_MSG_VERSIONS ? 4 : 3)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK)
			return r;
		if (m->type == SYNC_MSG_VERSIONS && (r = sync_enc_uint(b, m->batch)) != PKS_OK)
			return r;
		if ((r = sync_enc_array(b, m->n_blobs)) != PKS_OK)
			return r;
		for (size_t i = 0; i < m->n_blobs; i++)
			if ((r = sync_enc_bytes(b, m->blobs[i].data, m->blobs[i].len)) != PKS_OK)
				return r;
		return sync_enc_bool(b, m->end);
	case SYNC_MSG_STATE:
		if ((r = sync_enc_array(b, 4)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK ||
		    (r = sync_enc_array(b, m->vector.n)) != PKS_OK)
			return r;
		for (size_t i = 0; i < m->vector.n; i++)
			if ((r = sync_enc_array(b, 2)) != PKS_OK ||
			    (r = sync_enc_bytes(b, m->vector.e[i].author, SYNC_ID_LEN)) != PKS_OK ||
			    (r = sync_enc_uint(b, m->vector.e[i].seq)) != PKS_OK)
				return r;
		if ((r = sync_enc_bytes(b, m->digest, SYNC_DIGEST_LEN)) != PKS_OK)
			return r;
		return sync_enc_uint(b, m->records);
	case SYNC_MSG_ACK:
		if ((r = sync_enc_array(b, 2)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK)
			return r;
		return sync_enc_uint(b, m->batch);
	case SYNC_MSG_DONE:
		if ((r = sync_enc_array(b, 2)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK)
			return r;
		return sync_enc_bytes(b, m->digest, SYNC_DIGEST_LEN);
	case SYNC_MSG_SUMMARY:
		if ((r = sync_enc_array(b, 3)) != PKS_OK ||
		    (r = sync_enc_uint(b, m->type)) != PKS_OK ||
		    (r = sync_enc_array(b, m->n_summary)) != PKS_OK)
			return r;
		for (size_t i = 0; i < m->n_summary; i++)
			if ((r = sync_enc_array(b, 3)) != PKS_OK ||
			    (r = sync_enc_bytes(b, m->summary[i].author, SYNC_ID_LEN)) != PKS_OK ||
			    (r = sync_enc_uint(b, m->summary[i].seq)) != PKS_OK ||
			    (r = sync_enc_bytes(b, m->summary[i].hash, SYNC_DIGEST_LEN)) != PKS_OK)
				return r;
		return sync_enc_bool(b, m->end);
	}
	return PKS_ERR_INVALID;
}

int sync_msg_encode(const struct sync_msg *msg, uint8_t **out, size_t *out_len)
{
	struct pks_buf b;
	int r = PKS_ERR_INVALID;

	pks_buf_init(&b, SYNC_MSG_MAX);
	if (msg == NULL || out == NULL || out_len == NULL)
		goto out;
	r = sync_msg_check(msg);
	if (r != PKS_OK)
		goto out;
	r = sync_enc_body(&b, msg);
	if (r != PKS_OK)
		goto out;
	pks_buf_take(&b, out, out_len);
out:
	pks_buf_free(&b);
	return r;
}

/* ---- decoding ---- */

enum sync_ev_kind {
	SYNC_EV_NONE = 0,
	SYNC_EV_UINT,
	SYNC_EV_BYTES,
	SYNC_EV_ARRAY,
	SYNC_EV_BOOL,
	/* An indefinite-length item or break: valid CBOR, never canonical. */
	SYNC_EV_INDEFINITE,
	/* Negative integers, text, maps, tags, floats, null: never in this schema. */
	SYNC_EV_FOREIGN,
};

struct sync_ev {
	enum sync_ev_kind kind;
	uint64_t u; /* integer value, array size, bool */
	const uint8_t *p;
	size_t len;
};

struct sync_reader {
	const uint8_t *buf;
	size_t len;
	size_t off;
};

static void sync_cb_set(void *ctx, enum sync_ev_kind kind, uint64_t u, const uint8_t *p, size_t len)
{
	*(struct sync_ev *)ctx = (struct sync_ev){kind, u, p, len};
}

static void sync_cb_u8(void *ctx, uint8_t value)
{
	sync_cb_set(ctx, SYNC_EV_UINT, value, NULL, 0);
}

static void sync_cb_u16(void *ctx, uint16_t value)
{
	sync_cb_set(ctx, SYNC_EV_UINT, value, NULL, 0);
}

static void sync_cb_u32(void *ctx, uint32_t value)
{
	sync_cb_set(ctx, SYNC_EV_UINT, value, NULL, 0);
}

static void sync_cb_u64(void *ctx, uint64_t value)
{
	sync_cb_set(ctx, SYNC_EV_UINT, value, NULL, 0);
}

static void sync_cb_foreign(void *ctx)
{
	sync_cb_set(ctx, SYNC_EV_FOREIGN, 0, NULL, 0);
}

static void sync_cb_n8(void *ctx, uint8_t value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_n16(void *ctx, uint16_t value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_n32(void *ctx, uint32_t value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_n64(void *ctx, uint64_t value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_bytes(void *ctx, cbor_data p, size_t len)
{
	sync_cb_set(ctx, SYNC_EV_BYTES, 0, p, len);
}

static void sync_cb_text(void *ctx, cbor_data p, size_t len)
{
	(void)p;
	(void)len;
	sync_cb_foreign(ctx);
}

static void sync_cb_array(void *ctx, size_t n)
{
	sync_cb_set(ctx, SYNC_EV_ARRAY, n, NULL, 0);
}

static void sync_cb_map(void *ctx, size_t n)
{
	(void)n;
	sync_cb_foreign(ctx);
}

static void sync_cb_bool(void *ctx, bool value)
{
	sync_cb_set(ctx, SYNC_EV_BOOL, value, NULL, 0);
}

static void sync_cb_indefinite(void *ctx)
{
	sync_cb_set(ctx, SYNC_EV_INDEFINITE, 0, NULL, 0);
}

static void sync_cb_tag(void *ctx, uint64_t value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_float(void *ctx, float value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static void sync_cb_double(void *ctx, double value)
{
	(void)value;
	sync_cb_foreign(ctx);
}

static const struct cbor_callbacks sync_callbacks = {
    .uint8 = sync_cb_u8,
    .uint16 = sync_cb_u16,
    .uint32 = sync_cb_u32,
    .uint64 = sync_cb_u64,
    .negint8 = sync_cb_n8,
    .negint16 = sync_cb_n16,
    .negint32 = sync_cb_n32,
    .negint64 = sync_cb_n64,
    .byte_string_start = sync_cb_indefinite,
    .byte_string = sync_cb_bytes,
    .string = sync_cb_text,
    .string_start = sync_cb_indefinite,
    .indef_array_start = sync_cb_indefinite,
    .array_start = sync_cb_array,
    .indef_map_start = sync_cb_indefinite,
    .map_start = sync_cb_map,
    .tag = sync_cb_tag,
    .float2 = sync_cb_float,
    .float4 = sync_cb_float,
    .float8 = sync_cb_double,
    .undefined = sync_cb_foreign,
    .null = sync_cb_foreign,
    .boolean = sync_cb_bool,
    .indef_break = sync_cb_indefinite,
};

/*
 * Reads the next item head (with a byte string's payload) and checks its
 * kind: PKS_ERR_NONCANONICAL for indefinite items, PKS_ERR_MALFORMED for
 * another kind or broken CBOR, PKS_ERR_TRUNCATED when the input ends.
 */
static int sync_next(struct sync_reader *rd, enum sync_ev_kind want, struct sync_ev *ev)
{
	struct cbor_decoder_result res;
	struct sync_ev tmp = {SYNC_EV_NONE, 0, NULL, 0};

	if (rd->off >= rd->len)
		return PKS_ERR_TRUNCATED;
	res = cbor_stream_decode(rd->buf + rd->off, rd->len - rd->off, &sync_callbacks, &tmp);
	if (res.status == CBOR_DECODER_NEDATA)
		return PKS_ERR_TRUNCATED;
	if (res.status != CBOR_DECODER_FINISHED || res.read == 0 || res.read > rd->len - rd->off ||
	    tmp.kind == SYNC_EV_NONE)
		return PKS_ERR_MALFORMED;
	rd->off += res.read;
	if (tmp.kind == SYNC_EV_INDEFINITE)
		return PKS_ERR_NONCANONICAL;
	if (tmp.kind != want)
		return PKS_ERR_MALFORMED;
	*ev = tmp;
	return PKS_OK;
}

static int sync_read_uint(struct sync_reader *rd, uint64_t *out)
{
	struct sync_ev ev;
	int r = sync_next(rd, SYNC_EV_UINT, &ev);

	if (r == PKS_OK)
		*out = ev.u;
	return r;
}

static int sync_read_bool(struct sync_reader *rd, bool *out)
{
	struct sync_ev ev;
	int r = sync_next(rd, SYNC_EV_BOOL, &ev);

	if (r == PKS_OK)
		*out = ev.u != 0;
	return r;
}

static int sync_read_fixed(struct sync_reader *rd, uint8_t *out, size_t len)
{
	struct sync_ev ev;
	int r = sync_next(rd, SYNC_EV_BYTES, &ev);

	if (r != PKS_OK)
		return r;
	if (ev.len != len)
		return PKS_ERR_MALFORMED;
	memcpy(out, ev.p, len);
	return PKS_OK;
}

/* An array head with n items, exactly (want_max == 0) or at most want_max. */
static int sync_read_array(struct sync_reader *rd, size_t exact, size_t max, size_t *n)
{
	struct sync_ev ev;
	int r = sync_next(rd, SYNC_EV_ARRAY, &ev);

	if (r != PKS_OK)
		return r;
	if (max == 0 && ev.u != exact)
		return PKS_ERR_MALFORMED;
	if (max > 0 && ev.u > max)
		return PKS_ERR_TOO_LARGE;
	if (n != NULL)
		*n = (size_t)ev.u;
	return PKS_OK;
}

static int sync_read_blobs(struct sync_reader *rd, struct sync_msg *m)
{
	struct sync_ev ev;
	size_t n;
	int r = sync_read_array(rd, 0, SYNC_BLOBS_MAX, &n);

	for (size_t i = 0; r == PKS_OK && i < n; i++) {
		r = sync_next(rd, SYNC_EV_BYTES, &ev);
		if (r != PKS_OK)
			break;
		if (ev.len > SYNC_BLOB_MAX)
			r = PKS_ERR_TOO_LARGE;
		else if (ev.len == 0)
			r = PKS_ERR_MALFORMED;
		else
			m->blobs[i] = (struct sync_blob){ev.p, ev.len};
	}
	if (r == PKS_OK)
		m->n_blobs = n;
	return r;
}

/* The body after the type; values are range-checked afterwards by sync_msg_check. */
static int sync_read_body(struct sync_reader *rd, size_t items, struct sync_msg *m)
{
	size_t n;
	int r = PKS_ERR_MALFORMED;

	switch (m->type) {
	case SYNC_MSG_HELLO:
		if (items != 4)
			return PKS_ERR_MALFORMED;
		if ((r = sync_read_uint(rd, &m->version)) != PKS_OK ||
		    (r = sync_read_array(rd, 0, SYNC_HEADS_MAX, &n)) != PKS_OK)
			return r;
		for (size_t i = 0; i < n; i++)
			if ((r = sync_read_fixed(rd, m->heads[i], SYNC_ID_LEN)) != PKS_OK)
				return r;
		m->n_heads = n;
		return sync_read_fixed(rd, m->digest, SYNC_DIGEST_LEN);
	case SYNC_MSG_MEMB_OPS:
	case SYNC_MSG_KEYS:
		if (items != 3)
			return PKS_ERR_MALFORMED;
		if ((r = sync_read_blobs(rd, m)) != PKS_OK)
			return r;
		return sync_read_bool(rd, &m->end);
	case SYNC_MSG_VERSIONS:
		if (items != 4)
			return PKS_ERR_MALFORMED;
		if ((r = sync_read_uint(rd, &m->batch)) != PKS_OK ||
		    (r = sync_read_blobs(rd, m)) != PKS_OK)
			return r;
		return sync_read_bool(rd, &m->end);
	case SYNC_MSG_STATE:
		if (items != 4)
			return PKS_ERR_MALFORMED;
		if ((r = sync_read_array(rd, 0, SYNC_AUTHORS_MAX, &n)) != PKS_OK)
			return r;
		for (size_t i = 0; i < n; i++)
			if ((r = sync_read_array(rd, 2, 0, NULL)) != PKS_OK ||
			    (r = sync_read_fixed(rd, m->vector.e[i].author, SYNC_ID_LEN)) !=
				PKS_OK ||
			    (r = sync_read_uint(rd, &m->vector.e[i].seq)) != PKS_OK)
				return r;
		m->vector.n = n;
		if ((r = sync_read_fixed(rd, m->digest, SYNC_DIGEST_LEN)) != PKS_OK)
			return r;
		return sync_read_uint(rd, &m->records);
	case SYNC_MSG_ACK:
		if (items != 2)
			return PKS_ERR_MALFORMED;
		return sync_read_uint(rd, &m->batch);
	case SYNC_MSG_DONE:
		if (items != 2)
			return PKS_ERR_MALFORMED;
		return sync_read_fixed(rd, m->digest, SYNC_DIGEST_LEN);
	case SYNC_MSG_SUMMARY:
		if (items != 3)
			return PKS_ERR_MALFORMED;
		if ((r = sync_read_array(rd, 0, SYNC_AUTHORS_MAX, &n)) != PKS_OK)
			return r;
		for (size_t i = 0; i < n; i++)
			if ((r = sync_read_array(rd, 3, 0, NULL)) != PKS_OK ||
			    (r = sync_read_fixed(rd, m->summary[i].author, SYNC_ID_LEN)) !=
				PKS_OK ||
			    (r = sync_read_uint(rd, &m->summary[i].seq)) != PKS_OK ||
			    (r = sync_read_fixed(rd, m->summary[i].hash, SYNC_DIGEST_LEN)) !=
				PKS_OK)
				return r;
		m->n_summary = n;
		return sync_read_bool(rd, &m->end);
	}
	return r;
}

int sync_msg_decode(const uint8_t *buf, size_t len, struct sync_msg *msg)
{
	struct sync_reader rd = {buf, len, 0};
	struct sync_msg *m = NULL;
	uint8_t *again = NULL;
	size_t again_len = 0, items;
	uint64_t type;
	int r = PKS_ERR_INVALID;

	if ((buf == NULL && len > 0) || msg == NULL)
		goto out;
	if (len > SYNC_MSG_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	/* Decoded aside so *msg is written only on success. */
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	r = sync_read_array(&rd, 0, 4, &items);
	if (r == PKS_ERR_TOO_LARGE)
		r = PKS_ERR_MALFORMED;
	if (r != PKS_OK)
		goto out;
	if (items < 2) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	r = sync_read_uint(&rd, &type);
	if (r != PKS_OK)
		goto out;
	if (type < SYNC_MSG_HELLO || type > SYNC_MSG_KEYS) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	m->type = (enum sync_msg_type)type;
	r = sync_read_body(&rd, items, m);
	if (r != PKS_OK)
		goto out;
	if (rd.off != rd.len) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	r = sync_msg_check(m);
	if (r != PKS_OK)
		goto out;
	r = sync_msg_encode(m, &again, &again_len);
	if (r != PKS_OK)
		goto out;
	if (again_len != len || memcmp(again, buf, len) != 0) {
		r = PKS_ERR_NONCANONICAL;
		goto out;
	}
	memcpy(msg, m, sizeof(*msg));
	r = PKS_OK;
out:
	/* The re-encoding may hold keys (KEYS). */
	if (again != NULL)
		sodium_memzero(again, again_len);
	free(again);
	free(m);
	return r;
}

/* ---- the session ---- */

/* Messages waiting for the transport: control messages plus at most one batch being built. */
#define SYNC_QUEUE_MAX 4096
/* What the peer is known to hold: its announced authors plus ours. */
#define SYNC_KNOWN_MAX (2 * SYNC_AUTHORS_MAX)

struct sync_outmsg {
	struct sync_outmsg *next;
	uint8_t *data;
	size_t len;
	uint64_t batch; /* a VERSIONS batch number, else 0 */
	uint64_t ack;   /* an ACK's batch number, else 0 */
};

/* One author of an outgoing transfer: its versions after cursor are still to send. */
struct sync_xfer_entry {
	uint8_t author[SYNC_ID_LEN];
	uint64_t cursor;
};

struct sync_session {
	const struct sync_replica_ops *ops;
	void *replica;
	uint8_t peer[SYNC_ID_LEN];
	struct sync_session_cb cb;
	void *cb_user;
	enum sync_phase phase;
	struct sync_stats stats;

	bool started;
	bool in_call;        /* inside a public entry: re-entry is deferred or refused */
	int reentry_error;   /* a refused re-entrant receive fails the outer call */
	bool change_pending; /* local_change arrived during a call */
	bool blocked;        /* the transport said BUSY: wait for drained() */

	/* Phase 1. */
	bool hello_received, memb_end_sent, memb_end_received, memb_dirty;
	bool keys_received;
	size_t n_peer_heads;
	uint8_t peer_heads[SYNC_HEADS_MAX][SYNC_ID_LEN];
	uint8_t local_heads[SYNC_HEADS_MAX][SYNC_ID_LEN];

	/* Phase 2: the peer's vector raised by what was sent to it or received from it. */
	bool state_received;
	size_t n_known;
	struct sync_vector_entry *known;

	/* The outgoing transfer in progress (initial, reconciliation or live). */
	bool xfer_active, xfer_end;
	size_t n_xfer, xfer_pos;
	struct sync_xfer_entry *xfer;
	bool initial_done; /* the initial transfer's end batch is queued */
	bool live_pending; /* versions changed locally: push once no transfer runs */
	uint64_t out_batch, out_sent, out_acked;
	uint64_t in_batch, acks_sent;

	/* Phase 3, per round (the initial one, then each reconciliation). */
	bool own_end_queued, peer_end_expected, peer_end;
	bool done_sent, done_received;
	uint8_t done_digest[SYNC_DIGEST_LEN], peer_done_digest[SYNC_DIGEST_LEN];
	bool reconciling, summary_received;
	/* Live phase: a DONE we sent as a digest probe awaits its answer. */
	bool probe_outstanding;
	size_t n_own_summary, n_peer_summary;
	struct sync_summary_entry *own_summary, *peer_summary;

	/* Outgoing queue. */
	struct sync_outmsg *head, *tail;
	size_t queued;

	/* Blobs being gathered into one VERSIONS batch or MEMB_OPS message. */
	struct pks_buf gather;
	size_t n_gathered;
	size_t gathered_off[SYNC_BLOBS_MAX];
	size_t gathered_len[SYNC_BLOBS_MAX];
	bool gather_full;
	uint64_t gather_added;
	uint64_t ops_emitted;
	int emit_error;

	/* Scratch space too large for the stack. */
	struct sync_msg *scratch, *in;
	struct sync_vector *vec_before, *vec_after;
};

static void sync_gather_reset(struct sync_session *s)
{
	pks_buf_free(&s->gather);
	pks_buf_init(&s->gather, SYNC_BATCH_BYTES);
	s->n_gathered = 0;
	s->gather_full = false;
	s->gather_added = 0;
	s->emit_error = PKS_OK;
}

/* Whether one more blob of len bytes fits the message being gathered. */
static bool sync_gather_fits(const struct sync_session *s, size_t len)
{
	return s->n_gathered < SYNC_BLOBS_MAX && len <= SYNC_BATCH_BYTES - s->gather.len;
}

static int sync_gather_add(struct sync_session *s, const uint8_t *data, size_t len)
{
	int r = pks_buf_append(&s->gather, data, len);

	if (r != PKS_OK)
		return r;
	s->gathered_off[s->n_gathered] = s->gather.len - len;
	s->gathered_len[s->n_gathered] = len;
	s->n_gathered++;
	return PKS_OK;
}

/* Queued messages may carry keys (KEYS): every copy is wiped before it is freed. */
static void sync_wipe_free(uint8_t *data, size_t len)
{
	if (data != NULL)
		sodium_memzero(data, len);
	free(data);
}

static int sync_enqueue(struct sync_session *s, uint8_t *data, size_t len, uint64_t batch,
			uint64_t ack)
{
	struct sync_outmsg *m;

	if (s->queued >= SYNC_QUEUE_MAX) {
		sync_wipe_free(data, len);
		return PKS_ERR_TOO_LARGE;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		sync_wipe_free(data, len);
		return PKS_ERR_NOMEM;
	}
	*m = (struct sync_outmsg){NULL, data, len, batch, ack};
	if (s->tail != NULL)
		s->tail->next = m;
	else
		s->head = m;
	s->tail = m;
	s->queued++;
	return PKS_OK;
}

/* Encodes s->scratch and queues it. */
static int sync_queue_scratch(struct sync_session *s, uint64_t batch, uint64_t ack)
{
	uint8_t *data = NULL;
	size_t len = 0;
	int r = sync_msg_encode(s->scratch, &data, &len);

	if (r != PKS_OK)
		return r;
	return sync_enqueue(s, data, len, batch, ack);
}

/* Queues the gathered blobs as one MEMB_OPS or VERSIONS message, then resets the gathering. */
static int sync_queue_gathered(struct sync_session *s, enum sync_msg_type type, uint64_t batch,
			       bool end)
{
	struct sync_msg *m = s->scratch;
	int r;

	m->type = type;
	m->batch = batch;
	m->end = end;
	m->n_blobs = s->n_gathered;
	for (size_t i = 0; i < s->n_gathered; i++)
		m->blobs[i] =
		    (struct sync_blob){s->gather.data + s->gathered_off[i], s->gathered_len[i]};
	r = sync_queue_scratch(s, batch, 0);
	m->n_blobs = 0;
	sync_gather_reset(s);
	return r;
}

static int sync_emit_op(void *ctx, const uint8_t *data, size_t len)
{
	struct sync_session *s = ctx;
	int r;

	if (data == NULL || len == 0 || len > SYNC_BLOB_MAX) {
		s->emit_error = PKS_ERR_TOO_LARGE;
		return s->emit_error;
	}
	if (!sync_gather_fits(s, len)) {
		uint64_t emitted = s->ops_emitted;
		r = sync_queue_gathered(s, SYNC_MSG_MEMB_OPS, 0, false);
		s->ops_emitted = emitted;
		if (r != PKS_OK) {
			s->emit_error = r;
			return r;
		}
	}
	r = sync_gather_add(s, data, len);
	if (r != PKS_OK) {
		s->emit_error = r;
		return r;
	}
	s->ops_emitted++;
	return PKS_OK;
}

static int sync_emit_version(void *ctx, const uint8_t *data, size_t len)
{
	struct sync_session *s = ctx;
	int r;

	if (data == NULL || len == 0 || len > SYNC_BLOB_MAX) {
		s->emit_error = PKS_ERR_TOO_LARGE;
		return s->emit_error;
	}
	if (s->gather_full || !sync_gather_fits(s, len)) {
		s->gather_full = true;
		return 1;
	}
	r = sync_gather_add(s, data, len);
	if (r != PKS_OK) {
		s->emit_error = r;
		return r;
	}
	s->gather_added++;
	return PKS_OK;
}

/* Index of author in the sorted known vector, or where it would go. */
static size_t sync_known_find(const struct sync_session *s, const uint8_t author[SYNC_ID_LEN],
			      bool *found)
{
	size_t lo = 0, hi = s->n_known;

	*found = false;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = memcmp(s->known[mid].author, author, SYNC_ID_LEN);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static uint64_t sync_known_get(const struct sync_session *s, const uint8_t author[SYNC_ID_LEN])
{
	bool found;
	size_t i = sync_known_find(s, author, &found);

	return found ? s->known[i].seq : 0;
}

/*
 * Records that the peer holds the author's versions up to seq. When the
 * table is full the fact is dropped, which only costs a resend.
 */
static void sync_known_raise(struct sync_session *s, const uint8_t author[SYNC_ID_LEN],
			     uint64_t seq)
{
	bool found;
	size_t i = sync_known_find(s, author, &found);

	if (found) {
		if (seq > s->known[i].seq)
			s->known[i].seq = seq;
		return;
	}
	if (seq == 0 || s->n_known == SYNC_KNOWN_MAX)
		return;
	memmove(&s->known[i + 1], &s->known[i], (s->n_known - i) * sizeof(s->known[0]));
	memcpy(s->known[i].author, author, SYNC_ID_LEN);
	s->known[i].seq = seq;
	s->n_known++;
}

static int sync_local_vector(struct sync_session *s, struct sync_vector *v)
{
	int r = s->ops->vector(s->replica, v);

	if (r == PKS_OK && v->n > SYNC_AUTHORS_MAX)
		r = PKS_ERR_INTERNAL;
	return r;
}

/* Starts a transfer of every local version the peer is not known to hold. */
static int sync_xfer_start_known(struct sync_session *s, bool end)
{
	struct sync_vector *v = s->vec_before;
	int r = sync_local_vector(s, v);

	if (r != PKS_OK)
		return r;
	s->n_xfer = 0;
	for (size_t i = 0; i < v->n; i++) {
		uint64_t known = sync_known_get(s, v->e[i].author);
		if (v->e[i].seq <= known)
			continue;
		memcpy(s->xfer[s->n_xfer].author, v->e[i].author, SYNC_ID_LEN);
		s->xfer[s->n_xfer].cursor = known;
		s->n_xfer++;
	}
	s->xfer_pos = 0;
	s->xfer_end = end;
	s->xfer_active = s->n_xfer > 0 || end;
	return PKS_OK;
}

/*
 * Gathers the next VERSIONS batch of the transfer, author after author,
 * and queues it; *queued says whether there was anything to send.
 * Versions of one author are contiguous, so the cursor advances by the
 * number of versions taken.
 */
static int sync_xfer_next_batch(struct sync_session *s, bool *queued)
{
	bool last;
	int r = PKS_OK;

	*queued = false;
	sync_gather_reset(s);
	while (s->xfer_pos < s->n_xfer && !s->gather_full) {
		struct sync_xfer_entry *e = &s->xfer[s->xfer_pos];
		s->gather_added = 0;
		r = s->ops->versions_after(s->replica, e->author, e->cursor, sync_emit_version, s);
		if (r == PKS_OK && s->emit_error != PKS_OK)
			r = s->emit_error;
		if (r != PKS_OK)
			goto out;
		e->cursor += s->gather_added;
		sync_known_raise(s, e->author, e->cursor);
		if (!s->gather_full)
			s->xfer_pos++;
	}
	last = s->xfer_pos == s->n_xfer;
	if (last)
		s->xfer_active = false;
	if (s->n_gathered == 0 && !(last && s->xfer_end))
		goto out;
	s->stats.versions_out += s->n_gathered;
	r = sync_queue_gathered(s, SYNC_MSG_VERSIONS, ++s->out_batch, last && s->xfer_end);
	if (r != PKS_OK)
		goto out;
	*queued = true;
	if (last && s->xfer_end) {
		s->own_end_queued = true;
		s->initial_done = true;
	}
out:
	sync_gather_reset(s);
	return r;
}

static int sync_read_local_heads(struct sync_session *s, size_t *n)
{
	*n = s->ops->memb_heads(s->replica, s->local_heads, SYNC_HEADS_MAX);
	return *n > SYNC_HEADS_MAX ? PKS_ERR_INTERNAL : PKS_OK;
}

/* Takes the local heads as what the peer holds. */
static int sync_peer_heads_from_local(struct sync_session *s)
{
	size_t n;
	int r = sync_read_local_heads(s, &n);

	if (r == PKS_OK) {
		memcpy(s->peer_heads, s->local_heads, n * SYNC_ID_LEN);
		s->n_peer_heads = n;
	}
	return r;
}

/*
 * Queues the ops the peer lacks given the heads it is known to hold, as
 * MEMB_OPS messages; with end the last one has end = true even if empty.
 */
static int sync_send_memb_missing(struct sync_session *s, bool end, uint64_t *count)
{
	int r;

	sync_gather_reset(s);
	s->ops_emitted = 0;
	r = s->ops->memb_missing(s->replica, (const uint8_t(*)[SYNC_ID_LEN])s->peer_heads,
				 s->n_peer_heads, sync_emit_op, s);
	if (r == PKS_OK && s->emit_error != PKS_OK)
		r = s->emit_error;
	if (r == PKS_OK && (end || s->n_gathered > 0))
		r = sync_queue_gathered(s, SYNC_MSG_MEMB_OPS, 0, end);
	if (r == PKS_OK) {
		s->stats.ops_out += s->ops_emitted;
		*count = s->ops_emitted;
	}
	sync_gather_reset(s);
	return r;
}

/* Live membership push: what the peer lacks, after which it holds our heads. */
static int sync_push_memb(struct sync_session *s)
{
	uint64_t count = 0;
	int r = sync_send_memb_missing(s, false, &count);

	if (r == PKS_OK && count > 0)
		r = sync_peer_heads_from_local(s);
	return r;
}

static int sync_send_state(struct sync_session *s)
{
	struct sync_msg *m = s->scratch;
	uint64_t records = 0;
	int r = sync_local_vector(s, s->vec_before);

	if (r != PKS_OK)
		return r;
	m->type = SYNC_MSG_STATE;
	m->vector.n = 0;
	for (size_t i = 0; i < s->vec_before->n; i++) {
		if (s->vec_before->e[i].seq == 0)
			continue;
		m->vector.e[m->vector.n++] = s->vec_before->e[i];
		records = records + s->vec_before->e[i].seq < records
			      ? UINT64_MAX
			      : records + s->vec_before->e[i].seq;
	}
	/* records is informational: the number of versions held. */
	m->records = records;
	s->ops->digest(s->replica, m->digest);
	r = sync_queue_scratch(s, 0, 0);
	m->vector.n = 0;
	return r;
}

struct sync_keys_ctx {
	uint8_t *buf; /* SYNC_KEYS_MAX blobs, wiped before free */
	size_t n;
};

static int sync_keys_emit(void *ctx, const uint8_t *data, size_t len)
{
	struct sync_keys_ctx *k = ctx;

	if (len != SYNC_KEY_BLOB_LEN)
		return PKS_ERR_INVALID;
	if (k->n == SYNC_KEYS_MAX)
		return 1;
	memcpy(k->buf + k->n * SYNC_KEY_BLOB_LEN, data, len);
	k->n++;
	return PKS_OK;
}

/* One KEYS message with every epoch key the replica holds. */
static int sync_send_keys(struct sync_session *s)
{
	struct sync_msg *m = s->scratch;
	struct sync_keys_ctx k = {NULL, 0};
	int r;

	if (s->ops->keys_export == NULL)
		return PKS_OK;
	k.buf = malloc(SYNC_KEYS_MAX * SYNC_KEY_BLOB_LEN);
	if (k.buf == NULL)
		return PKS_ERR_NOMEM;
	r = s->ops->keys_export(s->replica, sync_keys_emit, &k);
	if (r == 1)
		r = PKS_OK;
	/* Nothing to hand over: no message at all. */
	if (r == PKS_OK && k.n > 0) {
		m->type = SYNC_MSG_KEYS;
		m->end = true;
		m->n_blobs = k.n;
		for (size_t i = 0; i < k.n; i++)
			m->blobs[i] =
			    (struct sync_blob){k.buf + i * SYNC_KEY_BLOB_LEN, SYNC_KEY_BLOB_LEN};
		r = sync_queue_scratch(s, 0, 0);
		m->n_blobs = 0;
	}
	sync_wipe_free(k.buf, SYNC_KEYS_MAX * SYNC_KEY_BLOB_LEN);
	return r;
}

static int sync_on_keys(struct sync_session *s, const struct sync_msg *m)
{
	if (s->ops->keys_apply == NULL || s->keys_received || !s->memb_end_received ||
	    s->state_received || s->phase == SYNC_PHASE_FAILED)
		return PKS_ERR_STATE;
	s->keys_received = true;
	if (!s->ops->peer_allowed(s->replica, s->peer))
		return PKS_ERR_REJECTED;
	return s->ops->keys_apply(s->replica, m->blobs, m->n_blobs);
}

static int sync_membership_settled(struct sync_session *s)
{
	int r;

	if (!s->memb_end_sent || !s->memb_end_received || s->phase != SYNC_PHASE_MEMBERSHIP)
		return PKS_OK;
	if (!s->ops->peer_allowed(s->replica, s->peer))
		return PKS_ERR_REJECTED;
	s->phase = SYNC_PHASE_STATE;
	r = sync_send_keys(s);
	if (r == PKS_OK)
		r = sync_send_state(s);
	if (r != PKS_OK)
		return r;
	/*
	 * Both sides now hold the union, unless ops were made here meanwhile:
	 * then push from the heads the peer announced.
	 */
	if (s->memb_dirty) {
		s->memb_dirty = false;
		return sync_push_memb(s);
	}
	return sync_peer_heads_from_local(s);
}

static int sync_send_summary(struct sync_session *s)
{
	struct sync_msg *m = s->scratch;
	int r = sync_local_vector(s, s->vec_before);

	if (r != PKS_OK)
		return r;
	s->n_own_summary = 0;
	for (size_t i = 0; i < s->vec_before->n; i++) {
		struct sync_summary_entry *e = &s->own_summary[s->n_own_summary];
		memcpy(e->author, s->vec_before->e[i].author, SYNC_ID_LEN);
		r = s->ops->author_summary(s->replica, e->author, &e->seq, e->hash);
		if (r != PKS_OK)
			return r;
		if (e->seq > 0)
			s->n_own_summary++;
	}
	m->type = SYNC_MSG_SUMMARY;
	m->n_summary = s->n_own_summary;
	memcpy(m->summary, s->own_summary, s->n_own_summary * sizeof(m->summary[0]));
	m->end = true;
	r = sync_queue_scratch(s, 0, 0);
	m->n_summary = 0;
	return r;
}

static int sync_start_reconciliation(struct sync_session *s)
{
	s->stats.reconciliations++;
	s->reconciling = true;
	s->phase = SYNC_PHASE_STATE;
	s->done_sent = s->done_received = false;
	s->own_end_queued = s->peer_end = s->peer_end_expected = false;
	s->summary_received = false;
	s->n_peer_summary = 0;
	return sync_send_summary(s);
}

/* Both DONEs are in: synced, reconcile, or give up. */
static int sync_conclude(struct sync_session *s)
{
	bool equal = memcmp(s->done_digest, s->peer_done_digest, SYNC_DIGEST_LEN) == 0;

	if (!equal && s->stats.reconciliations < SYNC_RECONCILE_MAX)
		return sync_start_reconciliation(s);
	s->phase = SYNC_PHASE_LIVE;
	s->reconciling = false;
	if (s->cb.on_synced != NULL)
		s->cb.on_synced(s->cb_user, equal, s->peer_done_digest);
	return PKS_OK;
}

/* Sends DONE once this round's transfers are over both ways. */
static int sync_maybe_done(struct sync_session *s, bool *queued)
{
	struct sync_msg *m = s->scratch;
	int r;

	*queued = false;
	if (s->phase != SYNC_PHASE_STATE || !s->state_received || !s->own_end_queued ||
	    s->xfer_active || s->out_acked != s->out_batch || !s->peer_end || s->done_sent)
		return PKS_OK;
	s->ops->digest(s->replica, s->done_digest);
	m->type = SYNC_MSG_DONE;
	memcpy(m->digest, s->done_digest, SYNC_DIGEST_LEN);
	r = sync_queue_scratch(s, 0, 0);
	if (r != PKS_OK)
		return r;
	*queued = true;
	s->done_sent = true;
	s->phase = SYNC_PHASE_DONE;
	if (s->done_received)
		r = sync_conclude(s);
	return r;
}

/* Produces the next message that is not a direct answer; *queued says whether it did. */
static int sync_progress(struct sync_session *s, bool *queued)
{
	int r;

	*queued = false;
	if (!s->xfer_active && s->live_pending && s->initial_done) {
		s->live_pending = false;
		r = sync_xfer_start_known(s, false);
		if (r != PKS_OK)
			return r;
	}
	while (s->xfer_active && s->out_batch - s->out_acked < SYNC_WINDOW) {
		r = sync_xfer_next_batch(s, queued);
		if (r != PKS_OK || *queued)
			return r;
	}
	return sync_maybe_done(s, queued);
}

/* Hands queued messages to the transport and makes more while it takes them. */
static int sync_pump(struct sync_session *s)
{
	int r = PKS_OK;
	bool queued = true;

	while (queued) {
		while (s->head != NULL && !s->blocked) {
			struct sync_outmsg *m = s->head;
			r = s->cb.send(s->cb_user, m->data, m->len);
			if (r == PKS_ERR_BUSY) {
				s->blocked = true;
				break;
			}
			if (r != PKS_OK)
				return r;
			s->stats.msgs_out++;
			s->stats.bytes_out += m->len;
			if (m->batch != 0)
				s->out_sent = m->batch;
			if (m->ack != 0)
				s->acks_sent = m->ack;
			s->head = m->next;
			if (s->head == NULL)
				s->tail = NULL;
			s->queued--;
			sync_wipe_free(m->data, m->len);
			free(m);
		}
		if (s->head != NULL || s->blocked)
			return PKS_OK;
		r = sync_progress(s, &queued);
		if (r != PKS_OK)
			return r;
	}
	return PKS_OK;
}

/* ---- receiving ---- */

static int sync_on_hello(struct sync_session *s, const struct sync_msg *m)
{
	uint64_t count = 0;
	int r;

	if (s->phase != SYNC_PHASE_MEMBERSHIP || s->hello_received)
		return PKS_ERR_STATE;
	if (m->version != SYNC_PROTOCOL_VERSION)
		return PKS_ERR_UNSUPPORTED;
	s->hello_received = true;
	memcpy(s->peer_heads, m->heads, m->n_heads * SYNC_ID_LEN);
	s->n_peer_heads = m->n_heads;
	r = sync_send_memb_missing(s, true, &count);
	if (r != PKS_OK)
		return r;
	s->memb_end_sent = true;
	return sync_membership_settled(s);
}

static bool sync_heads_equal(const struct sync_session *s, size_t n)
{
	if (n != s->n_peer_heads)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool found = false;
		for (size_t k = 0; k < n && !found; k++)
			found = memcmp(s->local_heads[i], s->peer_heads[k], SYNC_ID_LEN) == 0;
		if (!found)
			return false;
	}
	return true;
}

static int sync_on_memb_ops(struct sync_session *s, const struct sync_msg *m)
{
	bool in_step = false;
	size_t n_heads;
	int r;

	if (s->phase == SYNC_PHASE_MEMBERSHIP) {
		if (!s->hello_received || s->memb_end_received)
			return PKS_ERR_STATE;
	} else if (s->phase == SYNC_PHASE_FAILED || m->end) {
		return PKS_ERR_STATE;
	} else {
		/* Live: when the peer held exactly our heads, it still does after this. */
		r = sync_read_local_heads(s, &n_heads);
		if (r != PKS_OK)
			return r;
		in_step = sync_heads_equal(s, n_heads);
	}
	r = s->ops->memb_apply(s->replica, m->blobs, m->n_blobs);
	if (r != PKS_OK)
		return r;
	s->stats.ops_in += m->n_blobs;
	if (m->n_blobs > 0 && s->cb.on_applied != NULL)
		s->cb.on_applied(s->cb_user, 0, m->n_blobs);
	if (s->phase != SYNC_PHASE_MEMBERSHIP) {
		if (!s->ops->peer_allowed(s->replica, s->peer))
			return PKS_ERR_REJECTED;
		return in_step ? sync_peer_heads_from_local(s) : PKS_OK;
	}
	if (m->end) {
		s->memb_end_received = true;
		r = sync_membership_settled(s);
	}
	return r;
}

static int sync_on_state(struct sync_session *s, const struct sync_msg *m)
{
	if (s->phase != SYNC_PHASE_STATE || s->state_received)
		return PKS_ERR_STATE;
	s->state_received = true;
	s->peer_end_expected = true;
	s->n_known = 0;
	for (size_t i = 0; i < m->vector.n; i++)
		sync_known_raise(s, m->vector.e[i].author, m->vector.e[i].seq);
	return sync_xfer_start_known(s, true);
}

/* Raises the known vector by the authors whose contiguous seq a received batch advanced. */
static void sync_known_raise_applied(struct sync_session *s)
{
	const struct sync_vector *b = s->vec_before, *a = s->vec_after;
	size_t i = 0;

	for (size_t k = 0; k < a->n; k++) {
		int c = 1;
		while (i < b->n && (c = memcmp(b->e[i].author, a->e[k].author, SYNC_ID_LEN)) < 0)
			i++;
		if (i < b->n && c == 0 && b->e[i].seq >= a->e[k].seq)
			continue;
		sync_known_raise(s, a->e[k].author, a->e[k].seq);
	}
}

static int sync_on_versions(struct sync_session *s, const struct sync_msg *m)
{
	struct sync_msg *ack = s->scratch;
	int r;

	if (!s->state_received || s->phase == SYNC_PHASE_FAILED)
		return PKS_ERR_STATE;
	if (m->batch != s->in_batch + 1 || m->batch - s->acks_sent > SYNC_WINDOW)
		return PKS_ERR_STATE;
	if (m->end && !s->peer_end_expected)
		return PKS_ERR_STATE;
	r = sync_local_vector(s, s->vec_before);
	if (r != PKS_OK)
		return r;
	r = s->ops->versions_apply(s->replica, m->blobs, m->n_blobs);
	if (r != PKS_OK)
		return r;
	r = sync_local_vector(s, s->vec_after);
	if (r != PKS_OK)
		return r;
	sync_known_raise_applied(s);
	s->in_batch = m->batch;
	s->stats.versions_in += m->n_blobs;
	if (m->n_blobs > 0 && s->cb.on_applied != NULL)
		s->cb.on_applied(s->cb_user, m->n_blobs, 0);
	ack->type = SYNC_MSG_ACK;
	ack->batch = m->batch;
	r = sync_queue_scratch(s, 0, m->batch);
	if (r != PKS_OK)
		return r;
	if (m->end) {
		s->peer_end = true;
		s->peer_end_expected = false;
	}
	return PKS_OK;
}

static int sync_on_ack(struct sync_session *s, const struct sync_msg *m)
{
	if (m->batch != s->out_acked + 1 || m->batch > s->out_sent)
		return PKS_ERR_STATE;
	s->out_acked = m->batch;
	return PKS_OK;
}

/* Queues DONE with the current digest (phase 3, or a live probe or its answer). */
static int sync_queue_done(struct sync_session *s, uint8_t digest[SYNC_DIGEST_LEN])
{
	struct sync_msg *m = s->scratch;

	s->ops->digest(s->replica, digest);
	m->type = SYNC_MSG_DONE;
	memcpy(m->digest, digest, SYNC_DIGEST_LEN);
	return sync_queue_scratch(s, 0, 0);
}

/*
 * Live phase: a DONE is a digest probe (answered with ours) or the answer to
 * our probe; two probes that cross answer each other. Either way the
 * comparison goes to on_synced, and nothing loops.
 */
static int sync_on_live_done(struct sync_session *s, const struct sync_msg *m)
{
	uint8_t mine[SYNC_DIGEST_LEN];
	int r = PKS_OK;

	if (s->probe_outstanding) {
		s->probe_outstanding = false;
		s->ops->digest(s->replica, mine);
	} else {
		r = sync_queue_done(s, mine);
		if (r != PKS_OK)
			return r;
	}
	memcpy(s->peer_done_digest, m->digest, SYNC_DIGEST_LEN);
	if (s->cb.on_synced != NULL)
		s->cb.on_synced(s->cb_user, sodium_memcmp(mine, m->digest, SYNC_DIGEST_LEN) == 0,
				s->peer_done_digest);
	return PKS_OK;
}

static int sync_on_done(struct sync_session *s, const struct sync_msg *m)
{
	if (s->phase == SYNC_PHASE_LIVE && !s->reconciling)
		return sync_on_live_done(s, m);
	if ((s->phase != SYNC_PHASE_STATE && s->phase != SYNC_PHASE_DONE) || !s->state_received ||
	    s->done_received || (s->reconciling && !s->summary_received))
		return PKS_ERR_STATE;
	s->done_received = true;
	memcpy(s->peer_done_digest, m->digest, SYNC_DIGEST_LEN);
	return s->done_sent ? sync_conclude(s) : PKS_OK;
}

/* Every author whose (seq, chain hash) differs between the two summaries and that we hold. */
static int sync_start_reconcile_transfer(struct sync_session *s)
{
	size_t i = 0, k = 0;

	s->n_xfer = 0;
	while (i < s->n_own_summary) {
		const struct sync_summary_entry *own = &s->own_summary[i];
		int c = k < s->n_peer_summary
			    ? memcmp(s->peer_summary[k].author, own->author, SYNC_ID_LEN)
			    : 1;
		if (c < 0) {
			k++;
			continue;
		}
		if (c > 0 || own->seq != s->peer_summary[k].seq ||
		    memcmp(own->hash, s->peer_summary[k].hash, SYNC_DIGEST_LEN) != 0) {
			memcpy(s->xfer[s->n_xfer].author, own->author, SYNC_ID_LEN);
			s->xfer[s->n_xfer].cursor = 0;
			s->n_xfer++;
		}
		if (c == 0)
			k++;
		i++;
	}
	/* A live transfer in progress gives way; what it did not send is pushed later. */
	if (s->xfer_active && !s->xfer_end)
		s->live_pending = true;
	s->xfer_pos = 0;
	s->xfer_end = true;
	s->xfer_active = true;
	return PKS_OK;
}

static int sync_on_summary(struct sync_session *s, const struct sync_msg *m)
{
	if (!s->reconciling || s->summary_received)
		return PKS_ERR_STATE;
	if (m->n_summary > SYNC_AUTHORS_MAX - s->n_peer_summary)
		return PKS_ERR_TOO_LARGE;
	if (m->n_summary > 0 && s->n_peer_summary > 0 &&
	    memcmp(s->peer_summary[s->n_peer_summary - 1].author, m->summary[0].author,
		   SYNC_ID_LEN) >= 0)
		return PKS_ERR_MALFORMED;
	memcpy(&s->peer_summary[s->n_peer_summary], m->summary,
	       m->n_summary * sizeof(m->summary[0]));
	s->n_peer_summary += m->n_summary;
	if (!m->end)
		return PKS_OK;
	s->summary_received = true;
	s->peer_end_expected = true;
	return sync_start_reconcile_transfer(s);
}

static int sync_dispatch(struct sync_session *s, const struct sync_msg *m)
{
	switch (m->type) {
	case SYNC_MSG_HELLO:
		return sync_on_hello(s, m);
	case SYNC_MSG_MEMB_OPS:
		return sync_on_memb_ops(s, m);
	case SYNC_MSG_STATE:
		return sync_on_state(s, m);
	case SYNC_MSG_VERSIONS:
		return sync_on_versions(s, m);
	case SYNC_MSG_ACK:
		return sync_on_ack(s, m);
	case SYNC_MSG_DONE:
		return sync_on_done(s, m);
	case SYNC_MSG_SUMMARY:
		return sync_on_summary(s, m);
	case SYNC_MSG_KEYS:
		return sync_on_keys(s, m);
	}
	return PKS_ERR_MALFORMED;
}

/* ---- local changes ---- */

static int sync_apply_local_change(struct sync_session *s)
{
	int r;

	if (s->phase == SYNC_PHASE_MEMBERSHIP) {
		/* Versions will go with the initial transfer; ops after phase 1. */
		s->memb_dirty = true;
		return PKS_OK;
	}
	if (!s->ops->peer_allowed(s->replica, s->peer))
		return PKS_ERR_REJECTED;
	r = sync_push_memb(s);
	if (r != PKS_OK)
		return r;
	if (s->state_received)
		s->live_pending = true;
	return PKS_OK;
}

/* ---- entry points ---- */

static int sync_enter(struct sync_session *s)
{
	if (s == NULL)
		return PKS_ERR_INVALID;
	if (s->phase == SYNC_PHASE_FAILED)
		return PKS_ERR_STATE;
	s->in_call = true;
	return PKS_OK;
}

/* Runs deferred local changes, sends what can go, and fails the session on error. */
static int sync_leave(struct sync_session *s, int r)
{
	if (r == PKS_OK && s->reentry_error != PKS_OK)
		r = s->reentry_error;
	/* Bounded: each round only handles changes reported during the previous one. */
	for (int i = 0; r == PKS_OK && s->change_pending && i < 16; i++) {
		s->change_pending = false;
		r = sync_apply_local_change(s);
		if (r == PKS_OK)
			r = sync_pump(s);
	}
	if (r == PKS_OK && s->reentry_error != PKS_OK)
		r = s->reentry_error;
	if (r != PKS_OK)
		s->phase = SYNC_PHASE_FAILED;
	s->in_call = false;
	return r;
}

int sync_session_new(const struct sync_replica_ops *ops, void *replica,
		     const uint8_t peer_device[SYNC_ID_LEN], const struct sync_session_cb *cb,
		     void *cb_user, struct sync_session **out)
{
	struct sync_session *s = NULL;
	int r = PKS_ERR_INVALID;

	if (ops == NULL || peer_device == NULL || cb == NULL || cb->send == NULL || out == NULL ||
	    ops->memb_heads == NULL || ops->memb_digest == NULL || ops->memb_missing == NULL ||
	    ops->memb_apply == NULL || ops->peer_allowed == NULL || ops->vector == NULL ||
	    ops->versions_after == NULL || ops->versions_apply == NULL || ops->digest == NULL ||
	    ops->author_summary == NULL || (ops->keys_export == NULL) != (ops->keys_apply == NULL))
		goto out;
	r = PKS_ERR_NOMEM;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto out;
	s->known = calloc(SYNC_KNOWN_MAX, sizeof(*s->known));
	s->xfer = calloc(SYNC_AUTHORS_MAX, sizeof(*s->xfer));
	s->own_summary = calloc(SYNC_AUTHORS_MAX, sizeof(*s->own_summary));
	s->peer_summary = calloc(SYNC_AUTHORS_MAX, sizeof(*s->peer_summary));
	s->scratch = calloc(1, sizeof(*s->scratch));
	s->in = calloc(1, sizeof(*s->in));
	s->vec_before = calloc(1, sizeof(*s->vec_before));
	s->vec_after = calloc(1, sizeof(*s->vec_after));
	pks_buf_init(&s->gather, SYNC_BATCH_BYTES);
	if (s->known == NULL || s->xfer == NULL || s->own_summary == NULL ||
	    s->peer_summary == NULL || s->scratch == NULL || s->in == NULL ||
	    s->vec_before == NULL || s->vec_after == NULL)
		goto out;
	s->ops = ops;
	s->replica = replica;
	memcpy(s->peer, peer_device, SYNC_ID_LEN);
	s->cb = *cb;
	s->cb_user = cb_user;
	s->phase = SYNC_PHASE_MEMBERSHIP;
	*out = s;
	s = NULL;
	r = PKS_OK;
out:
	sync_session_free(s);
	return r;
}

void sync_session_free(struct sync_session *s)
{
	if (s == NULL)
		return;
	while (s->head != NULL) {
		struct sync_outmsg *m = s->head;
		s->head = m->next;
		sync_wipe_free(m->data, m->len);
		free(m);
	}
	pks_buf_free(&s->gather);
	free(s->known);
	free(s->xfer);
	free(s->own_summary);
	free(s->peer_summary);
	free(s->scratch);
	free(s->in);
	free(s->vec_before);
	free(s->vec_after);
	free(s);
}

int sync_session_start(struct sync_session *s)
{
	struct sync_msg *m;
	size_t n;
	int r = sync_enter(s);

	if (r != PKS_OK)
		return r;
	if (s->started) {
		r = PKS_ERR_STATE;
		goto out;
	}
	s->started = true;
	m = s->scratch;
	m->type = SYNC_MSG_HELLO;
	m->version = SYNC_PROTOCOL_VERSION;
	r = sync_read_local_heads(s, &n);
	if (r != PKS_OK)
		goto out;
	memcpy(m->heads, s->local_heads, n * SYNC_ID_LEN);
	m->n_heads = n;
	s->ops->memb_digest(s->replica, m->digest);
	r = sync_queue_scratch(s, 0, 0);
	m->n_heads = 0;
	if (r != PKS_OK)
		goto out;
	r = sync_pump(s);
out:
	return sync_leave(s, r);
}

int sync_session_receive(struct sync_session *s, const uint8_t *msg, size_t len)
{
	int r;

	if (s != NULL && s->in_call) {
		/* A transport delivering from inside a callback: refuse, and fail the outer call.
		 */
		s->reentry_error = PKS_ERR_STATE;
		return PKS_ERR_STATE;
	}
	r = sync_enter(s);
	if (r != PKS_OK)
		return r;
	s->stats.msgs_in++;
	s->stats.bytes_in += len;
	if (!s->started) {
		r = PKS_ERR_STATE;
		goto out;
	}
	r = sync_msg_decode(msg, len, s->in);
	if (r != PKS_OK)
		goto out;
	r = sync_dispatch(s, s->in);
	if (r != PKS_OK)
		goto out;
	r = sync_pump(s);
out:
	return sync_leave(s, r);
}

int sync_session_drained(struct sync_session *s)
{
	int r;

	if (s != NULL && s->in_call) {
		s->blocked = false;
		return PKS_OK;
	}
	r = sync_enter(s);
	if (r != PKS_OK)
		return r;
	s->blocked = false;
	r = sync_pump(s);
	return sync_leave(s, r);
}

int sync_session_local_change(struct sync_session *s)
{
	int r;

	if (s != NULL && s->in_call) {
		s->change_pending = true;
		return PKS_OK;
	}
	r = sync_enter(s);
	if (r != PKS_OK)
		return r;
	if (s->started)
		r = sync_apply_local_change(s);
	if (r == PKS_OK)
		r = sync_pump(s);
	return sync_leave(s, r);
}

int sync_session_check(struct sync_session *s)
{
	uint8_t digest[SYNC_DIGEST_LEN];
	int r;

	if (s != NULL && s->in_call)
		return PKS_ERR_STATE;
	r = sync_enter(s);
	if (r != PKS_OK)
		return r;
	/* Before the live phase the session's own DONE exchange answers the question. */
	if (s->phase == SYNC_PHASE_LIVE && !s->reconciling && !s->probe_outstanding) {
		r = sync_queue_done(s, digest);
		if (r == PKS_OK)
			s->probe_outstanding = true;
		if (r == PKS_OK)
			r = sync_pump(s);
	}
	return sync_leave(s, r);
}

enum sync_phase sync_session_phase(const struct sync_session *s)
{
	return s != NULL ? s->phase : SYNC_PHASE_FAILED;
}

void sync_session_stats(const struct sync_session *s, struct sync_stats *out)
{
	if (s != NULL && out != NULL)
		*out = s->stats;
}
