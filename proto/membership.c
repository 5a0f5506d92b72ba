/*
 * The membership DAG. Ops are kept in the order they were applied, which is
 * always a topological order (an op is applied only once its parents are),
 * and each op carries the bitset of its ancestors, so "is a an ancestor of
 * b" is one bit test.
 *
 * Acceptance (membership_apply) solves the view of the op's causal past,
 * which is fixed once the op is applied, so it is decided once. Whether an
 * op counts (strong remove) depends on concurrent ops too and is solved
 * again over all ops after every change: a three-valued (Kleene) least
 * fixpoint, where an op is IN when the ADD of its author it descends from
 * is IN and no IN REVOKE of its author is concurrent with it, OUT when
 * either is certainly false. What stays undecided waits on a cycle through
 * REVOKEs; the REVOKEs on such cycles (found with Tarjan's algorithm) are
 * set IN and the fixpoint runs again. The result depends only on the set.
 */
#include "proto/membership.h"

#include <cbor.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/err.h"
#include "proto/record.h"

#define MEMB_SIGN_DOMAIN "pksync membership op v1"
#define MEMB_DIGEST_DOMAIN "pksync membership digest v1"
#define MEMB_WORDS (MEMBERSHIP_OPS_MAX / 64)
#define MEMB_TABLE_SIZE (MEMBERSHIP_OPS_MAX * 2)
#define MEMB_SIG_LEN 64
#define MEMB_NONE UINT32_MAX

enum memb_key {
	MEMB_KEY_KIND = 1,
	MEMB_KEY_VAULT = 2,
	MEMB_KEY_AUTHOR = 3,
	MEMB_KEY_PARENTS = 4,
	MEMB_KEY_DEPTH = 5,
	MEMB_KEY_TIME = 6,
	MEMB_KEY_SIGN_PK = 7,
	MEMB_KEY_DH_PK = 8,
	MEMB_KEY_NAME = 9,
	MEMB_KEY_TARGET = 10,
	MEMB_KEY_CUTOFF = 11,
	MEMB_KEY_EPOCH = 12,
	MEMB_KEY_SEALS = 13,
};
#define MEMB_KEY_LAST 13
#define MEMB_BIT(k) (1u << (k))
#define MEMB_KEYS_COMMON                                                                           \
	(MEMB_BIT(MEMB_KEY_KIND) | MEMB_BIT(MEMB_KEY_VAULT) | MEMB_BIT(MEMB_KEY_AUTHOR) |          \
	 MEMB_BIT(MEMB_KEY_PARENTS) | MEMB_BIT(MEMB_KEY_DEPTH) | MEMB_BIT(MEMB_KEY_TIME))

struct memb_seal {
	uint8_t device_id[32];
	uint8_t box[MEMBERSHIP_SEALED_KEY_LEN];
};

/* One decoded op. */
struct memb_op {
	enum membership_kind kind;
	uint8_t vault_id[MEMBERSHIP_VAULT_ID_LEN];
	uint8_t author_pk[32];
	uint8_t parents[MEMBERSHIP_PARENTS_MAX][32];
	size_t n_parents;
	uint64_t depth;
	uint64_t time_ms;
	uint8_t dev_sign_pk[32]; /* ADD */
	uint8_t dev_dh_pk[32];   /* GENESIS, ADD */
	char name[MEMBERSHIP_NAME_MAX + 1];
	uint8_t target[32]; /* REVOKE, RENAME */
	uint64_t cutoff;
	uint32_t epoch;
	struct memb_seal *seals; /* ROTATE, malloc */
	size_t n_seals;
};

enum memb_status {
	MEMB_UNDEC = 0,
	MEMB_IN,
	MEMB_OUT,
};

struct memb_node {
	uint8_t id[32];
	uint8_t author_id[32];
	uint8_t *raw;
	size_t raw_len;
	struct memb_op op;
	uint32_t parent_idx[MEMBERSHIP_PARENTS_MAX];
	uint64_t anc[MEMB_WORDS];
	uint32_t author_dev;
	uint32_t target_dev;
	bool has_child;
};

struct memb_u32v {
	uint32_t *v;
	size_t n, cap;
};

struct memb_dev {
	uint8_t device_id[32];
	uint8_t sign_pk[32];
	struct memb_u32v adds, revokes, renames;
	/* Derived by memb_recompute(). */
	bool visible, member, revoked;
	uint32_t best_add, best_rename, first_revoke;
	uint64_t cutoff;
};

struct memb_pending {
	uint8_t id[32];
	uint8_t *raw;
	size_t len;
	struct memb_op op;
};

/* Scratch arrays for memb_solve(), one entry per node. */
struct memb_work {
	int32_t *index, *low;
	uint32_t *stack;
	uint8_t *on, *force;
	size_t cap;
};

struct membership {
	bool has_genesis;
	struct memb_work *work;
	uint8_t vault_id[MEMBERSHIP_VAULT_ID_LEN];
	struct memb_node **nodes;
	size_t n_nodes, cap_nodes;
	uint8_t *st;   /* status of each node in the full view */
	bool st_fresh; /* st is solved for the current nodes */
	size_t cap_st;
	uint32_t *table; /* op id hash -> node index + 1 */
	struct memb_dev **devs;
	size_t n_devs, cap_devs;
	struct memb_u32v rotates;
	size_t n_heads;
	struct memb_pending *pending[MEMBERSHIP_PENDING_MAX];
	size_t n_pending;
	/* Derived. */
	uint32_t epoch;
	uint32_t *sorted_devs; /* visible devices ascending by id */
	size_t n_sorted, cap_sorted;
	size_t n_members;
};

/* ---- small helpers ---- */

static bool memb_bit(const uint64_t *set, size_t i)
{
	return (set[i / 64] >> (i % 64)) & 1u;
}

static void memb_set_bit(uint64_t *set, size_t i)
{
	set[i / 64] |= UINT64_C(1) << (i % 64);
}

/*
 * An array of items of size bytes with room for need of them: arr itself,
 * or a larger copy (*cap updated), NULL when out of memory (arr untouched).
 */
static void *memb_grow(void *arr, size_t size, size_t need, size_t *cap)
{
	void *p;
	size_t c;

	if (need <= *cap)
		return arr;
	c = *cap ? *cap * 2 : 16;
	while (c < need)
		c *= 2;
	p = realloc(arr, c * size);
	if (p != NULL)
		*cap = c;
	return p;
}

static int memb_u32v_reserve(struct memb_u32v *v, size_t extra)
{
	uint32_t *p;
	size_t cap;

	if (v->n + extra <= v->cap)
		return PKS_OK;
	cap = v->cap ? v->cap * 2 : 4;
	while (cap < v->n + extra)
		cap *= 2;
	p = realloc(v->v, cap * sizeof(*p));
	if (p == NULL)
		return PKS_ERR_NOMEM;
	v->v = p;
	v->cap = cap;
	return PKS_OK;
}

static void memb_op_clear(struct memb_op *op)
{
	free(op->seals);
	memset(op, 0, sizeof(*op));
}

static bool memb_utf8_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		size_t n;
		uint32_t cp, min;

		/* Device names end up on terminals: no C0 controls, no DEL. */
		if (c < 0x20 || c == 0x7f)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			n = 1;
			cp = c & 0x1f;
			min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2;
			cp = c & 0x0f;
			min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3;
			cp = c & 0x07;
			min = 0x10000;
		} else {
			return false;
		}
		if (len - i - 1 < n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		if (cp >= 0x80 && cp <= 0x9f) /* C1 controls (CSI is U+009B) */
			return false;
		i += n + 1;
	}
	return true;
}

/* ---- encoding ---- */

static int memb_enc_head(struct pks_buf *b, size_t n, const unsigned char *head)
{
	return n == 0 ? PKS_ERR_INTERNAL : pks_buf_append(b, head, n);
}

static int memb_enc_uint(struct pks_buf *b, uint64_t value)
{
	unsigned char head[9];

	return memb_enc_head(b, cbor_encode_uint(value, head, sizeof(head)), head);
}

static int memb_enc_bytes(struct pks_buf *b, const uint8_t *p, size_t len)
{
	unsigned char head[9];
	int r = memb_enc_head(b, cbor_encode_bytestring_start(len, head, sizeof(head)), head);

	if (r == PKS_OK && len > 0)
		r = pks_buf_append(b, p, len);
	return r;
}

static int memb_enc_array(struct pks_buf *b, size_t n)
{
	unsigned char head[9];

	return memb_enc_head(b, cbor_encode_array_start(n, head, sizeof(head)), head);
}

static int memb_enc_key_uint(struct pks_buf *b, enum memb_key k, uint64_t value)
{
	int r = memb_enc_uint(b, k);

	return r == PKS_OK ? memb_enc_uint(b, value) : r;
}

static int memb_enc_key_bytes(struct pks_buf *b, enum memb_key k, const uint8_t *p, size_t len)
{
	int r = memb_enc_uint(b, k);

	return r == PKS_OK ? memb_enc_bytes(b, p, len) : r;
}

static int memb_enc_key_name(struct pks_buf *b, const char *name)
{
	size_t len = strlen(name);
	unsigned char head[9];
	int r = memb_enc_uint(b, MEMB_KEY_NAME);

	if (r == PKS_OK)
		r = memb_enc_head(b, cbor_encode_string_start(len, head, sizeof(head)), head);
	if (r == PKS_OK && len > 0)
		r = pks_buf_append(b, name, len);
	return r;
}

static size_t memb_kind_extra_keys(enum membership_kind kind)
{
	switch (kind) {
	case MEMBERSHIP_GENESIS:
		return 2;
	case MEMBERSHIP_ADD:
		return 3;
	case MEMBERSHIP_REVOKE:
	case MEMBERSHIP_RENAME:
	case MEMBERSHIP_ROTATE:
		return 2;
	}
	return 0;
}

static uint32_t memb_kind_keys(enum membership_kind kind)
{
	switch (kind) {
	case MEMBERSHIP_GENESIS:
		return MEMB_KEYS_COMMON | MEMB_BIT(MEMB_KEY_DH_PK) | MEMB_BIT(MEMB_KEY_NAME);
	case MEMBERSHIP_ADD:
		return MEMB_KEYS_COMMON | MEMB_BIT(MEMB_KEY_SIGN_PK) | MEMB_BIT(MEMB_KEY_DH_PK) |
		       MEMB_BIT(MEMB_KEY_NAME);
	case MEMBERSHIP_REVOKE:
		return MEMB_KEYS_COMMON | MEMB_BIT(MEMB_KEY_TARGET) | MEMB_BIT(MEMB_KEY_CUTOFF);
	case MEMBERSHIP_RENAME:
		return MEMB_KEYS_COMMON | MEMB_BIT(MEMB_KEY_NAME) | MEMB_BIT(MEMB_KEY_TARGET);
	case MEMBERSHIP_ROTATE:
		return MEMB_KEYS_COMMON | MEMB_BIT(MEMB_KEY_EPOCH) | MEMB_BIT(MEMB_KEY_SEALS);
	}
	return 0;
}

/* The canonical body of op, appended to b. */
static int memb_enc_body(struct pks_buf *b, const struct memb_op *op)
{
	unsigned char head[9];
	int r;

	if ((r = memb_enc_head(
		 b, cbor_encode_map_start(6 + memb_kind_extra_keys(op->kind), head, sizeof(head)),
		 head)) != PKS_OK ||
	    (r = memb_enc_key_uint(b, MEMB_KEY_KIND, op->kind)) != PKS_OK ||
	    (r = memb_enc_key_bytes(b, MEMB_KEY_VAULT, op->vault_id, sizeof(op->vault_id))) !=
		PKS_OK ||
	    (r = memb_enc_key_bytes(b, MEMB_KEY_AUTHOR, op->author_pk, 32)) != PKS_OK ||
	    (r = memb_enc_uint(b, MEMB_KEY_PARENTS)) != PKS_OK ||
	    (r = memb_enc_array(b, op->n_parents)) != PKS_OK)
		return r;
	for (size_t i = 0; i < op->n_parents; i++)
		if ((r = memb_enc_bytes(b, op->parents[i], 32)) != PKS_OK)
			return r;
	if ((r = memb_enc_key_uint(b, MEMB_KEY_DEPTH, op->depth)) != PKS_OK ||
	    (r = memb_enc_key_uint(b, MEMB_KEY_TIME, op->time_ms)) != PKS_OK)
		return r;
	switch (op->kind) {
	case MEMBERSHIP_GENESIS:
		if ((r = memb_enc_key_bytes(b, MEMB_KEY_DH_PK, op->dev_dh_pk, 32)) != PKS_OK)
			return r;
		return memb_enc_key_name(b, op->name);
	case MEMBERSHIP_ADD:
		if ((r = memb_enc_key_bytes(b, MEMB_KEY_SIGN_PK, op->dev_sign_pk, 32)) != PKS_OK ||
		    (r = memb_enc_key_bytes(b, MEMB_KEY_DH_PK, op->dev_dh_pk, 32)) != PKS_OK)
			return r;
		return memb_enc_key_name(b, op->name);
	case MEMBERSHIP_REVOKE:
		if ((r = memb_enc_key_bytes(b, MEMB_KEY_TARGET, op->target, 32)) != PKS_OK)
			return r;
		return memb_enc_key_uint(b, MEMB_KEY_CUTOFF, op->cutoff);
	case MEMBERSHIP_RENAME:
		if ((r = memb_enc_key_name(b, op->name)) != PKS_OK)
			return r;
		return memb_enc_key_bytes(b, MEMB_KEY_TARGET, op->target, 32);
	case MEMBERSHIP_ROTATE:
		if ((r = memb_enc_key_uint(b, MEMB_KEY_EPOCH, op->epoch)) != PKS_OK ||
		    (r = memb_enc_uint(b, MEMB_KEY_SEALS)) != PKS_OK ||
		    (r = memb_enc_array(b, op->n_seals)) != PKS_OK)
			return r;
		for (size_t i = 0; i < op->n_seals; i++)
			if ((r = memb_enc_array(b, 2)) != PKS_OK ||
			    (r = memb_enc_bytes(b, op->seals[i].device_id, 32)) != PKS_OK ||
			    (r = memb_enc_bytes(b, op->seals[i].box, MEMBERSHIP_SEALED_KEY_LEN)) !=
				PKS_OK)
				return r;
		return PKS_OK;
	}
	return PKS_ERR_INTERNAL;
}

/* [body, signature] into b. */
static int memb_enc_signed(struct pks_buf *b, const uint8_t *body, size_t body_len,
			   const uint8_t sig[MEMB_SIG_LEN])
{
	int r;

	if ((r = memb_enc_array(b, 2)) != PKS_OK ||
	    (r = memb_enc_bytes(b, body, body_len)) != PKS_OK)
		return r;
	return memb_enc_bytes(b, sig, MEMB_SIG_LEN);
}

/* domain || body, malloc'd, for signing and verifying. */
static int memb_sign_input(const uint8_t *body, size_t body_len, uint8_t **out, size_t *out_len)
{
	size_t n = sizeof(MEMB_SIGN_DOMAIN) + body_len;
	uint8_t *p = malloc(n);

	if (p == NULL)
		return PKS_ERR_NOMEM;
	memcpy(p, MEMB_SIGN_DOMAIN, sizeof(MEMB_SIGN_DOMAIN));
	memcpy(p + sizeof(MEMB_SIGN_DOMAIN), body, body_len);
	*out = p;
	*out_len = n;
	return PKS_OK;
}

/* ---- decoding ---- */

enum memb_ev_kind {
	MEMB_EV_NONE = 0,
	MEMB_EV_UINT,
	MEMB_EV_BYTES,
	MEMB_EV_TEXT,
	MEMB_EV_ARRAY,
	MEMB_EV_MAP,
	MEMB_EV_INDEFINITE,
	MEMB_EV_FOREIGN,
};

struct memb_ev {
	enum memb_ev_kind kind;
	uint64_t u;
	const uint8_t *p;
	size_t len;
};

struct memb_reader {
	const uint8_t *buf;
	size_t len;
	size_t off;
};

static void memb_cb_u8(void *ctx, uint8_t value)
{
	*(struct memb_ev *)ctx = (struct memb_ev){MEMB_EV_UINT, value, NULL, 0};
}

static void memb_cb_u16(void *ctx, uint16_t value)
{
	*(struct memb_ev *)ctx = (struct memb_ev){MEMB_EV_UINT, value, NULL, 0};
}

static void memb_cb_u32(void *ctx, uint32_t value)
{
	*(struct memb_ev *)ctx = (struct memb_ev){MEMB_EV_UINT, value, NULL, 0};
}

static void memb_cb_u64(void *ctx, uint64_t value)
{
	*(struct memb_ev *)ctx = (struct memb_ev){MEMB_EV_UINT, value, NULL, 0};
}

static void memb_cb_foreign(void *ctx)
{
	*(struct memb_ev *)ctx = (struct memb_ev){MEMB_EV_FOREIGN, 0, NULL, 0};
}

static void memb_cb_n8(void *ctx, uint8_t value)
{
	(void)value;
	memb_cb_foreign(ctx);
}

static void memb_cb_n16(void *ctx, uint16_t value)
{
	(void)value;
	memb_cb_foreign(ctx);
}

static void memb_cb_n32(void *ctx, uint32_t value)
{
	(void)value;
	memb_cb_foreign(ctx);
}

static void memb_cb_n64(void *ctx, uint64_t value)
{
	(void)value;
	memb_cb_foreign(ctx);
}

static void memb_cb_bytes(void *ctx, cbor_data p, size_t len)
{
	*(struct memb_ev *)ctx = (struct memb_ev){MEMB_EV_BYTES, 0, p, len};
}

static void memb_cb_text(void *ctx, cbor_data p, size_t len)
{
	*(struct memb_ev *)ctx = (struct memb_ev){MEMB_EV_TEXT, 0, p, len};
}

static void memb_cb_array(void *ctx, size_t n)
{
	*(struct memb_ev *)ctx = (struct memb_ev){MEMB_EV_ARRAY, n, NULL, 0};
}

static void memb_cb_map(void *ctx, size_t n)
{
	*(struct memb_ev *)ctx = (struct memb_ev){MEMB_EV_MAP, n, NULL, 0};
}

static void memb_cb_bool(void *ctx, bool value)
{
	(void)value;
	memb_cb_foreign(ctx);
}

static void memb_cb_indefinite(void *ctx)
{
	*(struct memb_ev *)ctx = (struct memb_ev){MEMB_EV_INDEFINITE, 0, NULL, 0};
}

static void memb_cb_tag(void *ctx, uint64_t value)
{
	(void)value;
	memb_cb_foreign(ctx);
}

static void memb_cb_float(void *ctx, float value)
{
	(void)value;
	memb_cb_foreign(ctx);
}

static void memb_cb_double(void *ctx, double value)
{
	(void)value;
	memb_cb_foreign(ctx);
}

static const struct cbor_callbacks memb_callbacks = {
    .uint8 = memb_cb_u8,
    .uint16 = memb_cb_u16,
    .uint32 = memb_cb_u32,
    .uint64 = memb_cb_u64,
    .negint8 = memb_cb_n8,
    .negint16 = memb_cb_n16,
    .negint32 = memb_cb_n32,
    .negint64 = memb_cb_n64,
    .byte_string_start = memb_cb_indefinite,
    .byte_string = memb_cb_bytes,
    .string = memb_cb_text,
    .string_start = memb_cb_indefinite,
    .indef_array_start = memb_cb_indefinite,
    .array_start = memb_cb_array,
    .indef_map_start = memb_cb_indefinite,
    .map_start = memb_cb_map,
    .tag = memb_cb_tag,
    .float2 = memb_cb_float,
    .float4 = memb_cb_float,
    .float8 = memb_cb_double,
    .undefined = memb_cb_foreign,
    .null = memb_cb_foreign,
    .boolean = memb_cb_bool,
    .indef_break = memb_cb_indefinite,
};

/*
 * The next item head (with a string's payload), of kind want:
 * PKS_ERR_NONCANONICAL for indefinite items, PKS_ERR_MALFORMED for another
 * kind or broken CBOR, PKS_ERR_TRUNCATED when the input ends.
 */
static int memb_next(struct memb_reader *rd, enum memb_ev_kind want, struct memb_ev *ev)
{
	struct cbor_decoder_result res;
	struct memb_ev tmp = {MEMB_EV_NONE, 0, NULL, 0};

	if (rd->off >= rd->len)
		return PKS_ERR_TRUNCATED;
	res = cbor_stream_decode(rd->buf + rd->off, rd->len - rd->off, &memb_callbacks, &tmp);
	if (res.status == CBOR_DECODER_NEDATA)
		return PKS_ERR_TRUNCATED;
	if (res.status != CBOR_DECODER_FINISHED || res.read == 0 || res.read > rd->len - rd->off ||
	    tmp.kind == MEMB_EV_NONE)
		return PKS_ERR_MALFORMED;
	rd->off += res.read;
	if (tmp.kind == MEMB_EV_INDEFINITE)
		return PKS_ERR_NONCANONICAL;
	if (tmp.kind != want)
		return PKS_ERR_MALFORMED;
	*ev = tmp;
	return PKS_OK;
}

static int memb_read_uint(struct memb_reader *rd, uint64_t *out)
{
	struct memb_ev ev;
	int r = memb_next(rd, MEMB_EV_UINT, &ev);

	if (r == PKS_OK)
		*out = ev.u;
	return r;
}

static int memb_read_fixed(struct memb_reader *rd, uint8_t *out, size_t len)
{
	struct memb_ev ev;
	int r = memb_next(rd, MEMB_EV_BYTES, &ev);

	if (r != PKS_OK)
		return r;
	if (ev.len != len)
		return PKS_ERR_MALFORMED;
	memcpy(out, ev.p, len);
	return PKS_OK;
}

static int memb_read_array(struct memb_reader *rd, size_t max, size_t *n)
{
	struct memb_ev ev;
	int r = memb_next(rd, MEMB_EV_ARRAY, &ev);

	if (r != PKS_OK)
		return r;
	if (ev.u > max)
		return PKS_ERR_TOO_LARGE;
	*n = (size_t)ev.u;
	return PKS_OK;
}

static int memb_read_name(struct memb_reader *rd, char out[MEMBERSHIP_NAME_MAX + 1])
{
	struct memb_ev ev;
	int r = memb_next(rd, MEMB_EV_TEXT, &ev);

	if (r != PKS_OK)
		return r;
	if (ev.len > MEMBERSHIP_NAME_MAX)
		return PKS_ERR_TOO_LARGE;
	if (!memb_utf8_valid(ev.p, ev.len))
		return PKS_ERR_MALFORMED;
	if (ev.len > 0)
		memcpy(out, ev.p, ev.len);
	out[ev.len] = '\0';
	return PKS_OK;
}

static int memb_read_parents(struct memb_reader *rd, struct memb_op *op)
{
	size_t n;
	int r = memb_read_array(rd, MEMBERSHIP_PARENTS_MAX, &n);

	for (size_t i = 0; r == PKS_OK && i < n; i++) {
		r = memb_read_fixed(rd, op->parents[i], 32);
		if (r == PKS_OK && i > 0 && memcmp(op->parents[i - 1], op->parents[i], 32) >= 0)
			r = PKS_ERR_NONCANONICAL;
	}
	if (r == PKS_OK)
		op->n_parents = n;
	return r;
}

static int memb_read_seals(struct memb_reader *rd, struct memb_op *op)
{
	size_t n, two;
	int r = memb_read_array(rd, MEMBERSHIP_MEMBERS_MAX, &n);

	if (r != PKS_OK)
		return r;
	if (n == 0)
		return PKS_ERR_MALFORMED;
	op->seals = calloc(n, sizeof(*op->seals));
	if (op->seals == NULL)
		return PKS_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		if ((r = memb_read_array(rd, 2, &two)) != PKS_OK)
			return r == PKS_ERR_TOO_LARGE ? PKS_ERR_MALFORMED : r;
		if (two != 2)
			return PKS_ERR_MALFORMED;
		if ((r = memb_read_fixed(rd, op->seals[i].device_id, 32)) != PKS_OK ||
		    (r = memb_read_fixed(rd, op->seals[i].box, MEMBERSHIP_SEALED_KEY_LEN)) !=
			PKS_OK)
			return r;
		op->n_seals = i + 1;
		if (i > 0 && memcmp(op->seals[i - 1].device_id, op->seals[i].device_id, 32) >= 0)
			return PKS_ERR_NONCANONICAL;
	}
	return PKS_OK;
}

static int memb_read_value(struct memb_reader *rd, enum memb_key key, struct memb_op *op)
{
	uint64_t u;
	int r;

	switch (key) {
	case MEMB_KEY_KIND:
		if ((r = memb_read_uint(rd, &u)) != PKS_OK)
			return r;
		if (u < MEMBERSHIP_GENESIS || u > MEMBERSHIP_ROTATE)
			return PKS_ERR_MALFORMED;
		op->kind = (enum membership_kind)u;
		return PKS_OK;
	case MEMB_KEY_VAULT:
		return memb_read_fixed(rd, op->vault_id, sizeof(op->vault_id));
	case MEMB_KEY_AUTHOR:
		return memb_read_fixed(rd, op->author_pk, 32);
	case MEMB_KEY_PARENTS:
		return memb_read_parents(rd, op);
	case MEMB_KEY_DEPTH:
		return memb_read_uint(rd, &op->depth);
	case MEMB_KEY_TIME:
		return memb_read_uint(rd, &op->time_ms);
	case MEMB_KEY_SIGN_PK:
		return memb_read_fixed(rd, op->dev_sign_pk, 32);
	case MEMB_KEY_DH_PK:
		return memb_read_fixed(rd, op->dev_dh_pk, 32);
	case MEMB_KEY_NAME:
		return memb_read_name(rd, op->name);
	case MEMB_KEY_TARGET:
		return memb_read_fixed(rd, op->target, 32);
	case MEMB_KEY_CUTOFF:
		return memb_read_uint(rd, &op->cutoff);
	case MEMB_KEY_EPOCH:
		if ((r = memb_read_uint(rd, &u)) != PKS_OK)
			return r;
		if (u < 2 || u > UINT32_MAX)
			return PKS_ERR_MALFORMED;
		op->epoch = (uint32_t)u;
		return PKS_OK;
	case MEMB_KEY_SEALS:
		return memb_read_seals(rd, op);
	}
	return PKS_ERR_MALFORMED;
}

/* Decodes a body map into op (cleared first; the caller clears on error). */
static int memb_decode_body(const uint8_t *body, size_t len, struct memb_op *op)
{
	struct memb_reader rd = {body, len, 0};
	struct memb_ev ev;
	uint32_t seen = 0;
	uint64_t key, last = 0;
	int r;

	if ((r = memb_next(&rd, MEMB_EV_MAP, &ev)) != PKS_OK)
		return r;
	if (ev.u > MEMB_KEY_LAST)
		return PKS_ERR_MALFORMED;
	for (uint64_t i = 0; i < ev.u; i++) {
		if ((r = memb_read_uint(&rd, &key)) != PKS_OK)
			return r;
		if (key < 1 || key > MEMB_KEY_LAST)
			return PKS_ERR_MALFORMED;
		if (key <= last)
			return PKS_ERR_NONCANONICAL;
		last = key;
		seen |= MEMB_BIT(key);
		if ((r = memb_read_value(&rd, (enum memb_key)key, op)) != PKS_OK)
			return r;
	}
	if (rd.off != rd.len)
		return PKS_ERR_MALFORMED;
	if (!(seen & MEMB_BIT(MEMB_KEY_KIND)) || seen != memb_kind_keys(op->kind))
		return PKS_ERR_MALFORMED;
	if ((op->kind == MEMBERSHIP_GENESIS) != (op->n_parents == 0))
		return PKS_ERR_MALFORMED;
	if (op->kind == MEMBERSHIP_GENESIS && op->depth != 0)
		return PKS_ERR_MALFORMED;
	return PKS_OK;
}

/*
 * Decodes and verifies one signed op into *op (caller clears it), with its
 * id. Errors as membership_apply().
 */
static int memb_decode(const uint8_t *buf, size_t len, struct memb_op *op, uint8_t id[32])
{
	struct memb_reader rd = {buf, len, 0};
	struct memb_ev ev, body;
	struct pks_buf again;
	uint8_t sig[MEMB_SIG_LEN];
	uint8_t *msg = NULL;
	size_t msg_len = 0;
	int r;

	pks_buf_init(&again, MEMBERSHIP_OP_MAX);
	memset(op, 0, sizeof(*op));
	if (len > MEMBERSHIP_OP_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	if ((r = memb_next(&rd, MEMB_EV_ARRAY, &ev)) != PKS_OK)
		goto out;
	if (ev.u != 2) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	if ((r = memb_next(&rd, MEMB_EV_BYTES, &body)) != PKS_OK ||
	    (r = memb_read_fixed(&rd, sig, sizeof(sig))) != PKS_OK)
		goto out;
	if (rd.off != rd.len) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	if ((r = memb_decode_body(body.p, body.len, op)) != PKS_OK)
		goto out;
	/* Re-encoding what was read rejects every non-canonical form. */
	if ((r = memb_enc_body(&again, op)) != PKS_OK)
		goto out;
	if (again.len != body.len || memcmp(again.data, body.p, body.len) != 0) {
		r = PKS_ERR_NONCANONICAL;
		goto out;
	}
	pks_buf_free(&again);
	pks_buf_init(&again, MEMBERSHIP_OP_MAX + 16);
	if ((r = memb_enc_signed(&again, body.p, body.len, sig)) != PKS_OK)
		goto out;
	if (again.len != len || memcmp(again.data, buf, len) != 0) {
		r = PKS_ERR_NONCANONICAL;
		goto out;
	}
	if ((r = memb_sign_input(body.p, body.len, &msg, &msg_len)) != PKS_OK)
		goto out;
	if (crypto_sign_verify_detached(sig, msg, msg_len, op->author_pk) != 0) {
		r = PKS_ERR_AUTH;
		goto out;
	}
	membership_op_id(buf, len, id);
	r = PKS_OK;
out:
	free(msg);
	pks_buf_free(&again);
	return r;
}

void membership_op_id(const uint8_t *op, size_t len, uint8_t out[MEMBERSHIP_OP_ID_LEN])
{
	crypto_generichash(out, MEMBERSHIP_OP_ID_LEN, op, len, NULL, 0);
}

/* ---- the store ---- */

int membership_new(struct membership **out)
{
	struct membership *m = calloc(1, sizeof(*m));
	int r = PKS_ERR_NOMEM;

	if (m == NULL)
		goto out;
	m->table = calloc(MEMB_TABLE_SIZE, sizeof(*m->table));
	m->work = calloc(1, sizeof(*m->work));
	if (m->table == NULL || m->work == NULL)
		goto out;
	m->epoch = 1;
	*out = m;
	m = NULL;
	r = PKS_OK;
out:
	membership_free(m);
	return r;
}

static void memb_work_free(struct memb_work *w)
{
	if (w == NULL)
		return;
	free(w->index);
	free(w->low);
	free(w->stack);
	free(w->on);
	free(w->force);
	free(w);
}

/* Room for n nodes in every scratch array; NOMEM leaves w usable. */
static int memb_work_reserve(struct memb_work *w, size_t n)
{
	size_t cap = w->cap, c;
	void *p;

	if (n <= w->cap)
		return PKS_OK;
	c = cap;
	if ((p = memb_grow(w->index, sizeof(*w->index), n, &c)) == NULL)
		return PKS_ERR_NOMEM;
	w->index = p;
	c = cap;
	if ((p = memb_grow(w->low, sizeof(*w->low), n, &c)) == NULL)
		return PKS_ERR_NOMEM;
	w->low = p;
	c = cap;
	if ((p = memb_grow(w->stack, sizeof(*w->stack), n, &c)) == NULL)
		return PKS_ERR_NOMEM;
	w->stack = p;
	c = cap;
	if ((p = memb_grow(w->on, 1, n, &c)) == NULL)
		return PKS_ERR_NOMEM;
	w->on = p;
	c = cap;
	if ((p = memb_grow(w->force, 1, n, &c)) == NULL)
		return PKS_ERR_NOMEM;
	w->force = p;
	w->cap = c;
	return PKS_OK;
}

static void memb_pending_free(struct memb_pending *p)
{
	if (p == NULL)
		return;
	memb_op_clear(&p->op);
	free(p->raw);
	free(p);
}

void membership_free(struct membership *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->n_nodes; i++) {
		memb_op_clear(&m->nodes[i]->op);
		free(m->nodes[i]->raw);
		free(m->nodes[i]);
	}
	free(m->nodes);
	free(m->st);
	for (size_t i = 0; i < m->n_devs; i++) {
		free(m->devs[i]->adds.v);
		free(m->devs[i]->revokes.v);
		free(m->devs[i]->renames.v);
		free(m->devs[i]);
	}
	free(m->devs);
	for (size_t i = 0; i < m->n_pending; i++)
		memb_pending_free(m->pending[i]);
	free(m->rotates.v);
	free(m->sorted_devs);
	free(m->table);
	memb_work_free(m->work);
	free(m);
}

static size_t memb_slot(const uint8_t id[32])
{
	uint64_t h;

	memcpy(&h, id, sizeof(h));
	return (size_t)(h % MEMB_TABLE_SIZE);
}

static uint32_t memb_find_node(const struct membership *m, const uint8_t id[32])
{
	for (size_t s = memb_slot(id), n = 0; n < MEMB_TABLE_SIZE;
	     s = (s + 1) % MEMB_TABLE_SIZE, n++) {
		uint32_t v = m->table[s];

		if (v == 0)
			return MEMB_NONE;
		if (memcmp(m->nodes[v - 1]->id, id, 32) == 0)
			return v - 1;
	}
	return MEMB_NONE;
}

static void memb_table_insert(struct membership *m, const uint8_t id[32], uint32_t idx)
{
	size_t s = memb_slot(id);

	while (m->table[s] != 0)
		s = (s + 1) % MEMB_TABLE_SIZE;
	m->table[s] = idx + 1;
}

static uint32_t memb_find_dev(const struct membership *m, const uint8_t device_id[32])
{
	for (size_t i = 0; i < m->n_devs; i++)
		if (memcmp(m->devs[i]->device_id, device_id, 32) == 0)
			return (uint32_t)i;
	return MEMB_NONE;
}

/* ---- evaluation ---- */

/*
 * A view: the ops in mask (a causally closed set; NULL means all) and their
 * statuses st (enum memb_status), indexed by node.
 */
struct memb_view {
	const uint64_t *mask;
	uint8_t *st;
};

static bool memb_in_view(const struct memb_view *v, uint32_t i)
{
	return v->mask == NULL || memb_bit(v->mask, i);
}

/*
 * Whether REVOKE rv (of i's author) removes op i when it counts: it is in
 * the view, is not i, is not a descendant of i, and is not the other half
 * of a concurrent mutual revoke.
 */
static bool memb_may_remove(const struct membership *m, const struct memb_view *v, uint32_t i,
			    uint32_t rv)
{
	const struct memb_node *n = m->nodes[i], *rn = m->nodes[rv];

	if (rv == i || !memb_in_view(v, rv) || memb_bit(rn->anc, i))
		return false;
	/* Concurrent mutual revokes do not cancel each other. */
	return !(n->op.kind == MEMBERSHIP_REVOKE && n->target_dev == rn->author_dev);
}

static enum memb_status memb_eval(const struct membership *m, const struct memb_view *v, uint32_t i)
{
	const struct memb_node *n = m->nodes[i];
	const struct memb_dev *dev = m->devs[n->author_dev];
	enum memb_status chain = MEMB_OUT, removal = MEMB_OUT;

	if (n->op.kind == MEMBERSHIP_GENESIS)
		return MEMB_IN;
	for (size_t k = 0; k < dev->adds.n && chain != MEMB_IN; k++) {
		uint32_t a = dev->adds.v[k];

		if (!memb_bit(n->anc, a))
			continue;
		if (v->st[a] == MEMB_IN)
			chain = MEMB_IN;
		else if (v->st[a] == MEMB_UNDEC)
			chain = MEMB_UNDEC;
	}
	if (chain == MEMB_OUT)
		return MEMB_OUT;
	for (size_t k = 0; k < dev->revokes.n && removal != MEMB_IN; k++) {
		uint32_t rv = dev->revokes.v[k];

		if (!memb_may_remove(m, v, i, rv))
			continue;
		if (v->st[rv] == MEMB_IN)
			removal = MEMB_IN;
		else if (v->st[rv] == MEMB_UNDEC)
			removal = MEMB_UNDEC;
	}
	if (removal == MEMB_IN)
		return MEMB_OUT;
	if (chain == MEMB_IN && removal == MEMB_OUT)
		return MEMB_IN;
	return MEMB_UNDEC;
}

/* Returns whether some op of the view is still undecided. */
static bool memb_fixpoint(const struct membership *m, struct memb_view *v)
{
	bool changed = true, undecided = true;

	/* Storage order is topological, so one pass decides all but waits on
	   later concurrent revokes. */
	while (changed && undecided) {
		changed = false;
		undecided = false;
		for (uint32_t i = 0; i < m->n_nodes; i++) {
			enum memb_status s;

			if (v->st[i] != MEMB_UNDEC)
				continue;
			s = memb_eval(m, v, i);
			if (s != MEMB_UNDEC) {
				v->st[i] = (uint8_t)s;
				changed = true;
			} else {
				undecided = true;
			}
		}
	}
	return undecided;
}

/*
 * Tarjan's strongly connected components over the undecided ops, an edge
 * going from an op to each undecided op its status waits for. Every cycle
 * holds a REVOKE (ancestry alone is acyclic); those get force[] set.
 */
struct memb_tarjan {
	const struct membership *m;
	const struct memb_view *v;
	int32_t next;
	size_t sp;
};

static void memb_strongconnect(struct memb_tarjan *t, uint32_t i);

static void memb_tarjan_edge(struct memb_tarjan *t, uint32_t i, uint32_t j)
{
	struct memb_work *w = t->m->work;

	if (w->index[j] < 0) {
		memb_strongconnect(t, j);
		if (w->low[j] < w->low[i])
			w->low[i] = w->low[j];
	} else if (w->on[j] && w->index[j] < w->low[i]) {
		w->low[i] = w->index[j];
	}
}

static void memb_strongconnect(struct memb_tarjan *t, uint32_t i)
{
	const struct membership *m = t->m;
	const struct memb_view *v = t->v;
	const struct memb_node *n = m->nodes[i];
	const struct memb_dev *dev = m->devs[n->author_dev];
	struct memb_work *w = m->work;
	size_t base;

	w->index[i] = w->low[i] = t->next++;
	base = t->sp;
	w->stack[t->sp++] = i;
	w->on[i] = 1;
	if (n->op.kind != MEMBERSHIP_GENESIS) {
		for (size_t k = 0; k < dev->adds.n; k++) {
			uint32_t a = dev->adds.v[k];

			if (memb_bit(n->anc, a) && v->st[a] == MEMB_UNDEC)
				memb_tarjan_edge(t, i, a);
		}
		for (size_t k = 0; k < dev->revokes.n; k++) {
			uint32_t rv = dev->revokes.v[k];

			if (memb_may_remove(m, v, i, rv) && v->st[rv] == MEMB_UNDEC)
				memb_tarjan_edge(t, i, rv);
		}
	}
	if (w->low[i] != w->index[i])
		return;
	/* i roots a component: the stack above base (i first). */
	for (size_t k = base; k < t->sp; k++) {
		uint32_t j = w->stack[k];

		w->on[j] = 0;
		w->force[j] = t->sp - base > 1 && m->nodes[j]->op.kind == MEMBERSHIP_REVOKE;
	}
	t->sp = base;
}

/*
 * Decides every op of the view: the least fixpoint, then, for revokes
 * waiting on each other in a cycle (a revoked device's concurrent revoke of
 * its revoker, through puppets or not), removal wins: every REVOKE on a
 * cycle counts, and the rest follows.
 */
static void memb_solve(const struct membership *m, struct memb_view *v)
{
	struct memb_work *w = m->work;
	bool undecided;

	for (uint32_t i = 0; i < m->n_nodes; i++)
		v->st[i] = memb_in_view(v, i) ? MEMB_UNDEC : MEMB_OUT;
	undecided = memb_fixpoint(m, v);
	while (undecided) {
		struct memb_tarjan t = {m, v, 0, 0};
		bool forced = false;

		for (uint32_t i = 0; i < m->n_nodes; i++) {
			w->index[i] = -1;
			w->on[i] = 0;
			w->force[i] = 0;
		}
		for (uint32_t i = 0; i < m->n_nodes; i++)
			if (v->st[i] == MEMB_UNDEC && w->index[i] < 0)
				memb_strongconnect(&t, i);
		for (uint32_t i = 0; i < m->n_nodes; i++) {
			if (w->force[i]) {
				v->st[i] = MEMB_IN;
				forced = true;
			}
		}
		if (!forced)
			break;
		undecided = memb_fixpoint(m, v);
	}
	for (uint32_t i = 0; i < m->n_nodes; i++)
		if (v->st[i] == MEMB_UNDEC)
			v->st[i] = MEMB_OUT;
}

static bool memb_view_any(const struct memb_view *v, const struct memb_u32v *list)
{
	for (size_t k = 0; k < list->n; k++)
		if (memb_in_view(v, list->v[k]) && v->st[list->v[k]] == MEMB_IN)
			return true;
	return false;
}

static bool memb_view_member(const struct membership *m, const struct memb_view *v, uint32_t dev)
{
	return dev != MEMB_NONE && memb_view_any(v, &m->devs[dev]->adds) &&
	       !memb_view_any(v, &m->devs[dev]->revokes);
}

/*
 * The acceptance rules of an op whose parents are all applied, judged on
 * the view of its causal past anc.
 */
static int memb_check(const struct membership *m, const struct memb_op *op, const uint64_t *anc,
		      bool anc_is_all, uint32_t author_dev, uint32_t target_dev)
{
	struct memb_view v = {anc, NULL};
	uint8_t *own = NULL;
	size_t members = 0;
	uint32_t newest = 1;
	int r = PKS_ERR_NOMEM;

	if (anc_is_all && m->st_fresh) {
		/* The causal past is everything: its view is the current one. */
		v.st = m->st;
	} else {
		own = malloc(m->n_nodes ? m->n_nodes : 1);
		if (own == NULL)
			goto out;
		v.st = own;
		memb_solve(m, &v);
	}
	r = PKS_ERR_REJECTED;
	if (!memb_view_member(m, &v, author_dev))
		goto out;
	switch (op->kind) {
	case MEMBERSHIP_GENESIS:
		goto out;
	case MEMBERSHIP_ADD:
		/* A member, or revoked: never (re-)added. */
		if (target_dev != MEMB_NONE && (memb_view_any(&v, &m->devs[target_dev]->adds) ||
						memb_view_any(&v, &m->devs[target_dev]->revokes)))
			goto out;
		for (size_t i = 0; i < m->n_devs; i++)
			members += memb_view_member(m, &v, (uint32_t)i);
		r = members >= MEMBERSHIP_MEMBERS_MAX ? PKS_ERR_TOO_LARGE : PKS_OK;
		break;
	case MEMBERSHIP_REVOKE:
	case MEMBERSHIP_RENAME:
		if (memb_view_member(m, &v, target_dev))
			r = PKS_OK;
		break;
	case MEMBERSHIP_ROTATE:
		for (size_t k = 0; k < m->rotates.n; k++) {
			uint32_t i = m->rotates.v[k];

			if (memb_in_view(&v, i) && v.st[i] == MEMB_IN &&
			    m->nodes[i]->op.epoch > newest)
				newest = m->nodes[i]->op.epoch;
		}
		if (op->epoch != (uint64_t)newest + 1)
			goto out;
		for (size_t k = 0; k < op->n_seals; k++)
			if (!memb_view_member(m, &v, memb_find_dev(m, op->seals[k].device_id)))
				goto out;
		r = PKS_OK;
		break;
	}
out:
	free(own);
	return r;
}

/*
 * Applies a decoded op (moved into m on success; op->seals then belongs to
 * m). PKS_ERR_PENDING when a parent is missing; m is unchanged on error.
 */
static int memb_insert(struct membership *m, const uint8_t *raw, size_t len, const uint8_t id[32],
		       struct memb_op *op)
{
	struct memb_node *node = NULL;
	struct memb_dev *new_dev = NULL;
	uint8_t author_id[32], target_id[32];
	uint32_t author_dev, target_dev = MEMB_NONE, idx = (uint32_t)m->n_nodes;
	struct memb_u32v *list = NULL;
	void *grown;
	size_t heads_after;
	int r = PKS_ERR_NOMEM;

	if (memb_find_node(m, id) != MEMB_NONE)
		return PKS_OK;
	if (m->has_genesis && memcmp(op->vault_id, m->vault_id, sizeof(m->vault_id)) != 0)
		return PKS_ERR_REJECTED;
	if (op->kind == MEMBERSHIP_GENESIS && m->has_genesis)
		return PKS_ERR_REJECTED;
	if (m->n_nodes >= MEMBERSHIP_OPS_MAX)
		return PKS_ERR_TOO_LARGE;
	node = calloc(1, sizeof(*node));
	if (node == NULL)
		goto out;
	heads_after = m->n_heads + 1;
	for (size_t i = 0; i < op->n_parents; i++) {
		uint32_t p = memb_find_node(m, op->parents[i]);

		if (p == MEMB_NONE) {
			r = PKS_ERR_PENDING;
			goto out;
		}
		node->parent_idx[i] = p;
		for (size_t w = 0; w < MEMB_WORDS; w++)
			node->anc[w] |= m->nodes[p]->anc[w];
		memb_set_bit(node->anc, p);
		if (m->nodes[p]->op.depth + 1 > node->op.depth)
			node->op.depth = m->nodes[p]->op.depth + 1;
		heads_after -= !m->nodes[p]->has_child;
	}
	if (node->op.depth != op->depth) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	if (heads_after > MEMBERSHIP_HEADS_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	record_device_id(op->author_pk, author_id);
	author_dev = memb_find_dev(m, author_id);
	switch (op->kind) {
	case MEMBERSHIP_GENESIS:
		memcpy(target_id, author_id, 32);
		break;
	case MEMBERSHIP_ADD:
		record_device_id(op->dev_sign_pk, target_id);
		break;
	case MEMBERSHIP_REVOKE:
	case MEMBERSHIP_RENAME:
		memcpy(target_id, op->target, 32);
		break;
	case MEMBERSHIP_ROTATE:
		memset(target_id, 0, 32);
		break;
	}
	if (op->kind != MEMBERSHIP_ROTATE)
		target_dev = memb_find_dev(m, target_id);
	if (op->kind != MEMBERSHIP_GENESIS &&
	    (r = memb_check(m, op, node->anc, heads_after == 1, author_dev, target_dev)) != PKS_OK)
		goto out;

	/* Reserve everything, then commit without a failure point. */
	r = PKS_ERR_NOMEM;
	if ((op->kind == MEMBERSHIP_GENESIS || op->kind == MEMBERSHIP_ADD) &&
	    target_dev == MEMB_NONE) {
		new_dev = calloc(1, sizeof(*new_dev));
		if (new_dev == NULL)
			goto out;
		grown = memb_grow(m->devs, sizeof(*m->devs), m->n_devs + 1, &m->cap_devs);
		if (grown == NULL)
			goto out;
		m->devs = grown;
		memcpy(new_dev->device_id, target_id, 32);
		memcpy(new_dev->sign_pk,
		       op->kind == MEMBERSHIP_GENESIS ? op->author_pk : op->dev_sign_pk, 32);
		list = &new_dev->adds;
	} else {
		switch (op->kind) {
		case MEMBERSHIP_GENESIS:
		case MEMBERSHIP_ADD:
			list = &m->devs[target_dev]->adds;
			break;
		case MEMBERSHIP_REVOKE:
			list = &m->devs[target_dev]->revokes;
			break;
		case MEMBERSHIP_RENAME:
			list = &m->devs[target_dev]->renames;
			break;
		case MEMBERSHIP_ROTATE:
			list = &m->rotates;
			break;
		}
	}
	if (memb_u32v_reserve(list, 1) != PKS_OK)
		goto out;
	grown = memb_grow(m->nodes, sizeof(*m->nodes), m->n_nodes + 1, &m->cap_nodes);
	if (grown == NULL)
		goto out;
	m->nodes = grown;
	if (memb_work_reserve(m->work, m->n_nodes + 1) != PKS_OK)
		goto out;
	grown = memb_grow(m->st, 1, m->n_nodes + 1, &m->cap_st);
	if (grown == NULL)
		goto out;
	m->st = grown;
	grown = memb_grow(m->sorted_devs, sizeof(*m->sorted_devs), m->n_devs + 1, &m->cap_sorted);
	if (grown == NULL)
		goto out;
	m->sorted_devs = grown;
	node->raw = malloc(len);
	if (node->raw == NULL)
		goto out;

	memcpy(node->raw, raw, len);
	node->raw_len = len;
	memcpy(node->id, id, 32);
	memcpy(node->author_id, author_id, 32);
	node->op = *op;
	memset(op, 0, sizeof(*op));
	if (new_dev != NULL) {
		target_dev = (uint32_t)m->n_devs;
		m->devs[m->n_devs++] = new_dev;
		new_dev = NULL;
	}
	if (node->op.kind == MEMBERSHIP_GENESIS) {
		author_dev = target_dev;
		m->has_genesis = true;
		memcpy(m->vault_id, node->op.vault_id, sizeof(m->vault_id));
	}
	node->author_dev = author_dev;
	node->target_dev = target_dev;
	list->v[list->n++] = idx;
	for (size_t i = 0; i < node->op.n_parents; i++) {
		if (!m->nodes[node->parent_idx[i]]->has_child)
			m->n_heads--;
		m->nodes[node->parent_idx[i]]->has_child = true;
	}
	m->n_heads++;
	m->nodes[m->n_nodes++] = node;
	m->st_fresh = false;
	memb_table_insert(m, id, idx);
	node = NULL;
	r = PKS_OK;
out:
	free(new_dev);
	if (node != NULL) {
		free(node->raw);
		free(node);
	}
	return r;
}

/* (depth, id) order: a < b */
static bool memb_before(const struct memb_node *a, const struct memb_node *b)
{
	if (a->op.depth != b->op.depth)
		return a->op.depth < b->op.depth;
	return memcmp(a->id, b->id, 32) < 0;
}

static int memb_dev_cmp(const void *a, const void *b, void *ctx)
{
	const struct membership *m = ctx;
	const struct memb_dev *x = m->devs[*(const uint32_t *)a];
	const struct memb_dev *y = m->devs[*(const uint32_t *)b];

	return memcmp(x->device_id, y->device_id, 32);
}

static void memb_recompute(struct membership *m)
{
	struct memb_view v = {NULL, m->st};

	memb_solve(m, &v);
	m->st_fresh = true;

	m->n_sorted = 0;
	m->n_members = 0;
	for (uint32_t d = 0; d < m->n_devs; d++) {
		struct memb_dev *dev = m->devs[d];

		dev->best_add = dev->best_rename = dev->first_revoke = MEMB_NONE;
		dev->cutoff = UINT64_MAX;
		for (size_t k = 0; k < dev->adds.n; k++) {
			uint32_t a = dev->adds.v[k];

			if (m->st[a] == MEMB_IN &&
			    (dev->best_add == MEMB_NONE ||
			     memb_before(m->nodes[a], m->nodes[dev->best_add])))
				dev->best_add = a;
		}
		for (size_t k = 0; k < dev->renames.n; k++) {
			uint32_t a = dev->renames.v[k];

			if (m->st[a] == MEMB_IN &&
			    (dev->best_rename == MEMB_NONE ||
			     memb_before(m->nodes[dev->best_rename], m->nodes[a])))
				dev->best_rename = a;
		}
		for (size_t k = 0; k < dev->revokes.n; k++) {
			uint32_t a = dev->revokes.v[k];

			if (m->st[a] != MEMB_IN)
				continue;
			if (dev->first_revoke == MEMB_NONE ||
			    memb_before(m->nodes[a], m->nodes[dev->first_revoke]))
				dev->first_revoke = a;
			if (m->nodes[a]->op.cutoff < dev->cutoff)
				dev->cutoff = m->nodes[a]->op.cutoff;
		}
		dev->visible = dev->best_add != MEMB_NONE;
		dev->revoked = dev->first_revoke != MEMB_NONE;
		dev->member = dev->visible && !dev->revoked;
		m->n_members += dev->member;
		if (dev->visible)
			m->sorted_devs[m->n_sorted++] = d;
	}
	qsort_r(m->sorted_devs, m->n_sorted, sizeof(*m->sorted_devs), memb_dev_cmp, m);

	m->epoch = 1;
	for (size_t k = 0; k < m->rotates.n; k++) {
		const struct memb_node *n = m->nodes[m->rotates.v[k]];

		if (m->st[m->rotates.v[k]] == MEMB_IN && n->op.epoch > m->epoch)
			m->epoch = n->op.epoch;
	}
}

static void memb_pending_remove(struct membership *m, size_t i)
{
	memb_pending_free(m->pending[i]);
	m->pending[i] = m->pending[--m->n_pending];
}

/* Applies every pending op whose parents have arrived, until none can. */
static void memb_drain_pending(struct membership *m)
{
	bool progress = true;

	while (progress) {
		progress = false;
		for (size_t i = 0; i < m->n_pending;) {
			struct memb_pending *p = m->pending[i];
			int r = memb_insert(m, p->raw, p->len, p->id, &p->op);

			if (r == PKS_ERR_PENDING || r == PKS_ERR_NOMEM) {
				i++;
				continue;
			}
			if (r == PKS_OK)
				progress = true;
			memb_pending_remove(m, i);
		}
	}
}

static int memb_add_pending(struct membership *m, const uint8_t *raw, size_t len,
			    const uint8_t id[32], struct memb_op *op)
{
	struct memb_pending *p = NULL;
	int r = PKS_ERR_NOMEM;

	for (size_t i = 0; i < m->n_pending; i++)
		if (memcmp(m->pending[i]->id, id, 32) == 0)
			return PKS_ERR_PENDING;
	if (m->n_pending >= MEMBERSHIP_PENDING_MAX)
		return PKS_ERR_BUSY;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		goto out;
	p->raw = malloc(len);
	if (p->raw == NULL)
		goto out;
	memcpy(p->raw, raw, len);
	p->len = len;
	memcpy(p->id, id, 32);
	p->op = *op;
	memset(op, 0, sizeof(*op));
	m->pending[m->n_pending++] = p;
	p = NULL;
	r = PKS_ERR_PENDING;
out:
	memb_pending_free(p);
	return r;
}

int membership_apply(struct membership *m, const uint8_t *op, size_t len)
{
	struct memb_op d;
	uint8_t id[32];
	int r;

	if (m == NULL || (op == NULL && len > 0))
		return PKS_ERR_INVALID;
	if ((r = memb_decode(op, len, &d, id)) != PKS_OK)
		goto out;
	r = memb_insert(m, op, len, id, &d);
	if (r == PKS_ERR_PENDING)
		r = memb_add_pending(m, op, len, id, &d);
	if (r != PKS_OK)
		goto out;
	memb_drain_pending(m);
	memb_recompute(m);
out:
	memb_op_clear(&d);
	return r;
}

size_t membership_pending_count(const struct membership *m)
{
	return m != NULL ? m->n_pending : 0;
}

void membership_clear_pending(struct membership *m)
{
	if (m == NULL)
		return;
	while (m->n_pending > 0)
		memb_pending_remove(m, m->n_pending - 1);
}

/* ---- authoring ---- */

static const struct memb_dev *memb_member_dev(const struct membership *m,
					      const uint8_t device_id[32])
{
	uint32_t d = memb_find_dev(m, device_id);

	return d != MEMB_NONE && m->devs[d]->member ? m->devs[d] : NULL;
}

static int memb_head_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

/*
 * Fills the common fields of op (kind and kind fields set by the caller),
 * encodes, signs and applies it.
 */
static int memb_author(struct membership *m, const uint8_t sign_sk[64], struct memb_op *op,
		       uint64_t now_ms, uint8_t **out, size_t *out_len)
{
	struct pks_buf body, signed_op;
	uint8_t(*heads)[32] = NULL;
	uint8_t author_id[32], sig[MEMB_SIG_LEN];
	uint8_t *msg = NULL, *result = NULL;
	size_t msg_len = 0, n_heads, result_len = 0;
	int r = PKS_ERR_STATE;

	pks_buf_init(&body, MEMBERSHIP_OP_MAX);
	pks_buf_init(&signed_op, MEMBERSHIP_OP_MAX);
	memcpy(op->author_pk, sign_sk + 32, 32);
	op->time_ms = now_ms;
	if (op->kind != MEMBERSHIP_GENESIS) {
		if (!m->has_genesis)
			goto out;
		record_device_id(op->author_pk, author_id);
		r = PKS_ERR_REJECTED;
		if (memb_member_dev(m, author_id) == NULL)
			goto out;
		memcpy(op->vault_id, m->vault_id, sizeof(op->vault_id));
		r = PKS_ERR_NOMEM;
		heads = calloc(MEMBERSHIP_HEADS_MAX, 32);
		if (heads == NULL)
			goto out;
		n_heads = membership_heads(m, heads, MEMBERSHIP_HEADS_MAX);
		if (n_heads > MEMBERSHIP_PARENTS_MAX)
			n_heads = MEMBERSHIP_PARENTS_MAX;
		op->n_parents = n_heads;
		op->depth = 0;
		for (size_t i = 0; i < n_heads; i++) {
			const struct memb_node *p = m->nodes[memb_find_node(m, heads[i])];

			memcpy(op->parents[i], heads[i], 32);
			if (p->op.depth + 1 > op->depth)
				op->depth = p->op.depth + 1;
		}
	}
	if ((r = memb_enc_body(&body, op)) != PKS_OK ||
	    (r = memb_sign_input(body.data, body.len, &msg, &msg_len)) != PKS_OK)
		goto out;
	if (crypto_sign_detached(sig, NULL, msg, msg_len, sign_sk) != 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	if ((r = memb_enc_signed(&signed_op, body.data, body.len, sig)) != PKS_OK)
		goto out;
	pks_buf_take(&signed_op, &result, &result_len);
	if ((r = membership_apply(m, result, result_len)) != PKS_OK)
		goto out;
	*out = result;
	*out_len = result_len;
	result = NULL;
out:
	free(result);
	free(msg);
	free(heads);
	pks_buf_free(&body);
	pks_buf_free(&signed_op);
	return r;
}

static bool memb_name_ok(const char *name)
{
	size_t len;

	if (name == NULL)
		return false;
	len = strnlen(name, MEMBERSHIP_NAME_MAX + 1);
	return len <= MEMBERSHIP_NAME_MAX && memb_utf8_valid((const uint8_t *)name, len);
}

int membership_genesis(struct membership *m, const uint8_t vault_id[16], const uint8_t sign_sk[64],
		       const uint8_t dh_pk[32], const char *name, uint64_t now_ms, uint8_t **op,
		       size_t *op_len)
{
	struct memb_op d;
	int r;

	memset(&d, 0, sizeof(d));
	if (m == NULL || vault_id == NULL || sign_sk == NULL || dh_pk == NULL || op == NULL ||
	    op_len == NULL || !memb_name_ok(name)) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	if (m->has_genesis || m->n_nodes > 0) {
		r = PKS_ERR_STATE;
		goto out;
	}
	d.kind = MEMBERSHIP_GENESIS;
	memcpy(d.vault_id, vault_id, sizeof(d.vault_id));
	memcpy(d.dev_dh_pk, dh_pk, 32);
	strcpy(d.name, name);
	r = memb_author(m, sign_sk, &d, now_ms, op, op_len);
out:
	memb_op_clear(&d);
	return r;
}

int membership_add_device(struct membership *m, const uint8_t author_sign_sk[64],
			  const uint8_t sign_pk[32], const uint8_t dh_pk[32], const char *name,
			  uint64_t now_ms, uint8_t **op, size_t *op_len)
{
	struct memb_op d;
	uint8_t device_id[32];
	uint32_t d_idx;
	int r;

	memset(&d, 0, sizeof(d));
	if (m == NULL || author_sign_sk == NULL || sign_pk == NULL || dh_pk == NULL || op == NULL ||
	    op_len == NULL || !memb_name_ok(name)) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	record_device_id(sign_pk, device_id);
	d_idx = memb_find_dev(m, device_id);
	if (d_idx != MEMB_NONE && (m->devs[d_idx]->visible || m->devs[d_idx]->revoked)) {
		r = PKS_ERR_EXISTS;
		goto out;
	}
	for (size_t i = 0; i < m->n_devs; i++) {
		if (m->devs[i]->member && m->devs[i]->best_add != MEMB_NONE &&
		    memcmp(m->nodes[m->devs[i]->best_add]->op.dev_dh_pk, dh_pk, 32) == 0) {
			r = PKS_ERR_EXISTS;
			goto out;
		}
	}
	d.kind = MEMBERSHIP_ADD;
	memcpy(d.dev_sign_pk, sign_pk, 32);
	memcpy(d.dev_dh_pk, dh_pk, 32);
	strcpy(d.name, name);
	r = memb_author(m, author_sign_sk, &d, now_ms, op, op_len);
out:
	memb_op_clear(&d);
	return r;
}

int membership_revoke(struct membership *m, const uint8_t author_sign_sk[64],
		      const uint8_t device_id[32], uint64_t cutoff_seq, uint64_t now_ms,
		      uint8_t **op, size_t *op_len)
{
	struct memb_op d;
	int r;

	memset(&d, 0, sizeof(d));
	if (m == NULL || author_sign_sk == NULL || device_id == NULL || op == NULL ||
	    op_len == NULL) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	if (memb_member_dev(m, device_id) == NULL) {
		r = m->has_genesis ? PKS_ERR_NOT_FOUND : PKS_ERR_STATE;
		goto out;
	}
	d.kind = MEMBERSHIP_REVOKE;
	memcpy(d.target, device_id, 32);
	d.cutoff = cutoff_seq;
	r = memb_author(m, author_sign_sk, &d, now_ms, op, op_len);
out:
	memb_op_clear(&d);
	return r;
}

int membership_rename(struct membership *m, const uint8_t author_sign_sk[64],
		      const uint8_t device_id[32], const char *name, uint64_t now_ms, uint8_t **op,
		      size_t *op_len)
{
	struct memb_op d;
	int r;

	memset(&d, 0, sizeof(d));
	if (m == NULL || author_sign_sk == NULL || device_id == NULL || op == NULL ||
	    op_len == NULL || !memb_name_ok(name)) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	if (memb_member_dev(m, device_id) == NULL) {
		r = m->has_genesis ? PKS_ERR_NOT_FOUND : PKS_ERR_STATE;
		goto out;
	}
	d.kind = MEMBERSHIP_RENAME;
	memcpy(d.target, device_id, 32);
	strcpy(d.name, name);
	r = memb_author(m, author_sign_sk, &d, now_ms, op, op_len);
out:
	memb_op_clear(&d);
	return r;
}

int membership_rotate(struct membership *m, const uint8_t author_sign_sk[64], const uint8_t key[32],
		      uint64_t now_ms, uint8_t **op, size_t *op_len)
{
	struct memb_op d;
	uint32_t newest = 1;
	int r;

	memset(&d, 0, sizeof(d));
	if (m == NULL || author_sign_sk == NULL || key == NULL || op == NULL || op_len == NULL) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	if (!m->has_genesis) {
		r = PKS_ERR_STATE;
		goto out;
	}
	if (m->n_members > MEMBERSHIP_MEMBERS_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	newest = m->epoch;
	if (newest == UINT32_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	d.kind = MEMBERSHIP_ROTATE;
	d.epoch = newest + 1;
	d.seals = calloc(m->n_members ? m->n_members : 1, sizeof(*d.seals));
	if (d.seals == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	for (size_t k = 0; k < m->n_sorted; k++) {
		const struct memb_dev *dev = m->devs[m->sorted_devs[k]];

		if (!dev->member)
			continue;
		memcpy(d.seals[d.n_seals].device_id, dev->device_id, 32);
		if (crypto_box_seal(d.seals[d.n_seals].box, key, 32,
				    m->nodes[dev->best_add]->op.dev_dh_pk) != 0) {
			r = PKS_ERR_CRYPTO;
			goto out;
		}
		d.n_seals++;
	}
	r = memb_author(m, author_sign_sk, &d, now_ms, op, op_len);
out:
	memb_op_clear(&d);
	return r;
}

/* ---- queries ---- */

bool membership_has_genesis(const struct membership *m)
{
	return m != NULL && m->has_genesis;
}

void membership_vault_id(const struct membership *m, uint8_t out[16])
{
	if (m != NULL && m->has_genesis)
		memcpy(out, m->vault_id, MEMBERSHIP_VAULT_ID_LEN);
	else
		memset(out, 0, MEMBERSHIP_VAULT_ID_LEN);
}

bool membership_is_member(const struct membership *m, const uint8_t device_id[32])
{
	return m != NULL && device_id != NULL && memb_member_dev(m, device_id) != NULL;
}

static void memb_fill_device(const struct membership *m, const struct memb_dev *dev,
			     struct membership_device *out)
{
	const struct memb_node *add = m->nodes[dev->best_add];

	memset(out, 0, sizeof(*out));
	memcpy(out->device_id, dev->device_id, 32);
	memcpy(out->sign_pk, dev->sign_pk, 32);
	memcpy(out->dh_pk, add->op.dev_dh_pk, 32);
	strcpy(out->name,
	       dev->best_rename != MEMB_NONE ? m->nodes[dev->best_rename]->op.name : add->op.name);
	out->added_at_ms = add->op.time_ms;
	memcpy(out->added_by, add->author_id, 32);
	out->revoked = dev->revoked;
	out->revoked_at_ms = dev->revoked ? m->nodes[dev->first_revoke]->op.time_ms : 0;
}

int membership_find_by_dh(const struct membership *m, const uint8_t dh_pk[32],
			  struct membership_device *out)
{
	if (m == NULL || dh_pk == NULL || out == NULL)
		return PKS_ERR_INVALID;
	for (size_t k = 0; k < m->n_sorted; k++) {
		const struct memb_dev *dev = m->devs[m->sorted_devs[k]];

		if (dev->member && memcmp(m->nodes[dev->best_add]->op.dev_dh_pk, dh_pk, 32) == 0) {
			memb_fill_device(m, dev, out);
			return PKS_OK;
		}
	}
	return PKS_ERR_NOT_FOUND;
}

int membership_get(const struct membership *m, const uint8_t device_id[32],
		   struct membership_device *out)
{
	uint32_t d;

	if (m == NULL || device_id == NULL || out == NULL)
		return PKS_ERR_INVALID;
	d = memb_find_dev(m, device_id);
	if (d == MEMB_NONE || !m->devs[d]->visible)
		return PKS_ERR_NOT_FOUND;
	memb_fill_device(m, m->devs[d], out);
	return PKS_OK;
}

int membership_foreach_device(const struct membership *m, membership_device_fn fn, void *user)
{
	struct membership_device dev;
	int r = PKS_OK;

	if (m == NULL || fn == NULL)
		return PKS_ERR_INVALID;
	for (size_t k = 0; k < m->n_sorted && r == PKS_OK; k++) {
		memb_fill_device(m, m->devs[m->sorted_devs[k]], &dev);
		r = fn(user, &dev);
	}
	return r;
}

size_t membership_member_count(const struct membership *m)
{
	return m != NULL ? m->n_members : 0;
}

bool membership_version_admissible(const struct membership *m, const uint8_t author[32],
				   uint64_t seq)
{
	uint32_t d;

	if (m == NULL || author == NULL)
		return false;
	d = memb_find_dev(m, author);
	if (d == MEMB_NONE || !m->devs[d]->visible)
		return false;
	return !m->devs[d]->revoked || seq <= m->devs[d]->cutoff;
}

size_t membership_heads(const struct membership *m, uint8_t heads[][32], size_t max)
{
	size_t n = 0;

	if (m == NULL)
		return 0;
	for (size_t i = 0; i < m->n_nodes; i++) {
		if (m->nodes[i]->has_child)
			continue;
		if (n < max)
			memcpy(heads[n], m->nodes[i]->id, 32);
		n++;
	}
	if (heads != NULL)
		qsort(heads, n < max ? n : max, 32, memb_head_cmp);
	return n;
}

void membership_digest(const struct membership *m, uint8_t out[32])
{
	crypto_generichash_state st;
	uint8_t(*ids)[32] = NULL;
	size_t n = m != NULL ? m->n_nodes : 0;
	uint8_t count[8];

	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)MEMB_DIGEST_DOMAIN,
				  sizeof(MEMB_DIGEST_DOMAIN));
	for (size_t i = 0; i < 8; i++)
		count[i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
	crypto_generichash_update(&st, count, sizeof(count));
	if (n > 0)
		ids = malloc(n * 32);
	if (ids != NULL) {
		for (size_t i = 0; i < n; i++)
			memcpy(ids[i], m->nodes[i]->id, 32);
		qsort(ids, n, 32, memb_head_cmp);
		crypto_generichash_update(&st, (const uint8_t *)ids, n * 32);
	} else if (n > 0) {
		/* Out of memory: a digest that matches no real state. */
		memset(count, 0xff, sizeof(count));
		crypto_generichash_update(&st, count, sizeof(count));
	}
	crypto_generichash_final(&st, out, 32);
	free(ids);
}

size_t membership_op_count(const struct membership *m)
{
	return m != NULL ? m->n_nodes : 0;
}

int membership_foreach_op(const struct membership *m, membership_op_fn fn, void *user)
{
	int r = PKS_OK;

	if (m == NULL || fn == NULL)
		return PKS_ERR_INVALID;
	for (size_t i = 0; i < m->n_nodes && r == PKS_OK; i++)
		r = fn(user, m->nodes[i]->id, m->nodes[i]->raw, m->nodes[i]->raw_len);
	return r;
}

int membership_foreach_missing(const struct membership *m, const uint8_t (*peer_heads)[32],
			       size_t n_heads, membership_op_fn fn, void *user)
{
	uint64_t *known = NULL;
	int r = PKS_ERR_INVALID;

	if (m == NULL || fn == NULL || (peer_heads == NULL && n_heads > 0))
		goto out;
	r = PKS_ERR_NOMEM;
	known = calloc(MEMB_WORDS, sizeof(*known));
	if (known == NULL)
		goto out;
	for (size_t h = 0; h < n_heads; h++) {
		uint32_t i = memb_find_node(m, peer_heads[h]);

		if (i == MEMB_NONE)
			continue;
		for (size_t w = 0; w < MEMB_WORDS; w++)
			known[w] |= m->nodes[i]->anc[w];
		memb_set_bit(known, i);
	}
	r = PKS_OK;
	for (size_t i = 0; i < m->n_nodes && r == PKS_OK; i++)
		if (!memb_bit(known, i))
			r = fn(user, m->nodes[i]->id, m->nodes[i]->raw, m->nodes[i]->raw_len);
out:
	free(known);
	return r;
}

bool membership_has_op(const struct membership *m, const uint8_t id[32])
{
	return m != NULL && id != NULL && memb_find_node(m, id) != MEMB_NONE;
}

uint32_t membership_epoch(const struct membership *m)
{
	return m != NULL ? m->epoch : 1;
}

/* The winning rotate of an epoch: IN, smallest op id. */
static const struct memb_node *memb_epoch_winner(const struct membership *m, uint32_t epoch)
{
	const struct memb_node *best = NULL;

	for (size_t k = 0; k < m->rotates.n; k++) {
		const struct memb_node *n = m->nodes[m->rotates.v[k]];

		if (m->st[m->rotates.v[k]] == MEMB_IN && n->op.epoch == epoch &&
		    (best == NULL || memcmp(n->id, best->id, 32) < 0))
			best = n;
	}
	return best;
}

/* Whether device d was ever added with dh key dh_pk. */
static bool memb_dev_has_dh(const struct membership *m, uint32_t d, const uint8_t dh_pk[32])
{
	if (d == MEMB_NONE)
		return false;
	for (size_t k = 0; k < m->devs[d]->adds.n; k++)
		if (memcmp(m->nodes[m->devs[d]->adds.v[k]]->op.dev_dh_pk, dh_pk, 32) == 0)
			return true;
	return false;
}

/* Opens rot's key for the device with my_dh_pk: PKS_ERR_PERM when none is sealed to it. */
static int memb_open_rotate(const struct membership *m, const struct memb_node *rot,
			    const uint8_t my_dh_pk[32], const uint8_t my_dh_sk[32],
			    uint8_t key_out[32])
{
	uint8_t *key = NULL;
	int r = PKS_ERR_PERM;

	for (size_t s = 0; s < rot->op.n_seals; s++) {
		if (!memb_dev_has_dh(m, memb_find_dev(m, rot->op.seals[s].device_id), my_dh_pk))
			continue;
		r = PKS_ERR_NOMEM;
		key = sodium_malloc(32);
		if (key == NULL)
			goto out;
		r = PKS_ERR_AUTH;
		if (crypto_box_seal_open(key, rot->op.seals[s].box, MEMBERSHIP_SEALED_KEY_LEN,
					 my_dh_pk, my_dh_sk) != 0)
			goto out;
		memcpy(key_out, key, 32);
		r = PKS_OK;
		goto out;
	}
out:
	sodium_free(key);
	return r;
}

int membership_epoch_key(const struct membership *m, uint32_t epoch, const uint8_t my_dh_pk[32],
			 const uint8_t my_dh_sk[32], uint8_t key_out[32])
{
	const struct memb_node *win;
	int r;

	if (m == NULL || my_dh_pk == NULL || my_dh_sk == NULL || key_out == NULL)
		return PKS_ERR_INVALID;
	win = memb_epoch_winner(m, epoch);
	if (win == NULL)
		return PKS_ERR_NOT_FOUND;
	r = memb_open_rotate(m, win, my_dh_pk, my_dh_sk, key_out);
	return r == PKS_ERR_PERM ? PKS_ERR_NOT_FOUND : r;
}

int membership_epoch_key_nth(const struct membership *m, uint32_t epoch, size_t n,
			     const uint8_t my_dh_pk[32], const uint8_t my_dh_sk[32],
			     uint8_t key_out[32])
{
	const struct memb_node *win, *pick = NULL;

	if (m == NULL || my_dh_pk == NULL || my_dh_sk == NULL || key_out == NULL)
		return PKS_ERR_INVALID;
	win = memb_epoch_winner(m, epoch);
	if (win != NULL && n == 0) {
		pick = win;
	} else {
		/* The others ascending by op id: take the next larger id n times. */
		const struct memb_node *prev = NULL;
		size_t skip = win != NULL ? n - 1 : n;

		for (size_t step = 0; step <= skip; step++) {
			const struct memb_node *next = NULL;

			for (size_t k = 0; k < m->rotates.n; k++) {
				const struct memb_node *c = m->nodes[m->rotates.v[k]];

				if (c == win || c->op.epoch != epoch ||
				    (prev != NULL && memcmp(c->id, prev->id, 32) <= 0))
					continue;
				if (next == NULL || memcmp(c->id, next->id, 32) < 0)
					next = c;
			}
			if (next == NULL)
				return PKS_ERR_NOT_FOUND;
			prev = next;
		}
		pick = prev;
	}
	return memb_open_rotate(m, pick, my_dh_pk, my_dh_sk, key_out);
}

bool membership_rotate_needed(const struct membership *m)
{
	const struct memb_node *win;

	if (m == NULL || !m->has_genesis)
		return false;
	if (m->epoch == 1) {
		for (size_t d = 0; d < m->n_devs; d++)
			if (m->devs[d]->visible && m->devs[d]->revoked)
				return true;
		return false;
	}
	win = memb_epoch_winner(m, m->epoch);
	if (win == NULL)
		return false;
	for (size_t s = 0; s < win->op.n_seals; s++)
		if (!membership_is_member(m, win->op.seals[s].device_id))
			return true;
	return false;
}
