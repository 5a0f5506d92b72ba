/*
 * Canonical CBOR for record versions. The body is one map with integer keys:
 *
 *    1 record id (bstr 16)      9 user handle (bstr)       17 user name [tstr, hlc]
 *    2 author (bstr 32)        10 alg (nint, COSE)         18 display name [tstr, hlc]
 *    3 seq (uint)              11 private key (bstr)       19 notes [tstr, hlc]
 *    4 epoch (uint32)          12 public key (bstr)        20 restore tags
 *    5 op (uint)               13 backup eligible (bool)      [[hlc, author], ...]
 *    6 hlc (uint)              14 backup state (bool)
 *    7 credential id (bstr)    15 created at (uint, ms)
 *    8 rp id (tstr)            16 source (tstr)
 *
 * The encoder writes keys ascending with shortest heads and definite
 * lengths. The decoder is a pull parser over libcbor's streaming decoder that
 * follows the schema, so nesting can never go deeper than three levels and
 * no tree is built; it then re-encodes what it read and compares bytes, which
 * rejects every non-canonical form without a rule per form.
 */
#include "proto/record.h"

#include <cbor.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/err.h"

enum record_key {
	RECORD_KEY_ID = 1,
	RECORD_KEY_AUTHOR = 2,
	RECORD_KEY_SEQ = 3,
	RECORD_KEY_EPOCH = 4,
	RECORD_KEY_OP = 5,
	RECORD_KEY_HLC = 6,
	RECORD_KEY_CREDENTIAL_ID = 7,
	RECORD_KEY_RP_ID = 8,
	RECORD_KEY_USER_HANDLE = 9,
	RECORD_KEY_ALG = 10,
	RECORD_KEY_PRIVATE_KEY = 11,
	RECORD_KEY_PUBLIC_KEY = 12,
	RECORD_KEY_BACKUP_ELIGIBLE = 13,
	RECORD_KEY_BACKUP_STATE = 14,
	RECORD_KEY_CREATED_AT = 15,
	RECORD_KEY_SOURCE = 16,
	RECORD_KEY_USER_NAME = 17,
	RECORD_KEY_DISPLAY_NAME = 18,
	RECORD_KEY_NOTES = 19,
	RECORD_KEY_RESTORE_TAGS = 20,
};
#define RECORD_KEY_LAST 20
#define RECORD_KEY_BIT(k) (UINT32_C(1) << (k))
#define RECORD_KEYS_COMMON                                                                         \
	(RECORD_KEY_BIT(RECORD_KEY_ID) | RECORD_KEY_BIT(RECORD_KEY_AUTHOR) |                       \
	 RECORD_KEY_BIT(RECORD_KEY_SEQ) | RECORD_KEY_BIT(RECORD_KEY_EPOCH) |                       \
	 RECORD_KEY_BIT(RECORD_KEY_OP))
#define RECORD_KEYS_FIELDS                                                                         \
	(RECORD_KEY_BIT(RECORD_KEY_USER_NAME) | RECORD_KEY_BIT(RECORD_KEY_DISPLAY_NAME) |          \
	 RECORD_KEY_BIT(RECORD_KEY_NOTES))
/* Keys 7..16. */
#define RECORD_KEYS_CREATE (((UINT32_C(1) << 17) - 1) & ~((UINT32_C(1) << 7) - 1))

static const size_t record_codec_field_max[RECORD_FIELD_COUNT] = {
    [RECORD_FIELD_USER_NAME] = RECORD_USER_NAME_MAX,
    [RECORD_FIELD_DISPLAY_NAME] = RECORD_DISPLAY_NAME_MAX,
    [RECORD_FIELD_NOTES] = RECORD_NOTES_MAX,
};

/* ---- encoding ---- */

/* Appends one head written by a libcbor cbor_encode_* function. */
static int record_enc_head(struct pks_buf *b, size_t n, const unsigned char *head)
{
	return n == 0 ? PKS_ERR_INTERNAL : pks_buf_append(b, head, n);
}

static int record_enc_uint(struct pks_buf *b, uint64_t value)
{
	unsigned char head[9];

	return record_enc_head(b, cbor_encode_uint(value, head, sizeof(head)), head);
}

static int record_enc_bytes(struct pks_buf *b, const uint8_t *p, size_t len)
{
	unsigned char head[9];
	int r = record_enc_head(b, cbor_encode_bytestring_start(len, head, sizeof(head)), head);

	if (r == PKS_OK && len > 0)
		r = pks_buf_append(b, p, len);
	return r;
}

static int record_enc_text(struct pks_buf *b, const char *s)
{
	size_t len = s ? strlen(s) : 0;
	unsigned char head[9];
	int r = record_enc_head(b, cbor_encode_string_start(len, head, sizeof(head)), head);

	if (r == PKS_OK && len > 0)
		r = pks_buf_append(b, s, len);
	return r;
}

static int record_enc_array(struct pks_buf *b, size_t n)
{
	unsigned char head[9];

	return record_enc_head(b, cbor_encode_array_start(n, head, sizeof(head)), head);
}

static int record_enc_key_uint(struct pks_buf *b, enum record_key k, uint64_t value)
{
	int r = record_enc_uint(b, k);

	return r == PKS_OK ? record_enc_uint(b, value) : r;
}

static int record_enc_key_bytes(struct pks_buf *b, enum record_key k, const uint8_t *p, size_t len)
{
	int r = record_enc_uint(b, k);

	return r == PKS_OK ? record_enc_bytes(b, p, len) : r;
}

static int record_enc_key_bool(struct pks_buf *b, enum record_key k, bool value)
{
	unsigned char head[1];
	int r = record_enc_uint(b, k);

	return r == PKS_OK ? record_enc_head(b, cbor_encode_bool(value, head, 1), head) : r;
}

static int record_enc_create(struct pks_buf *b, const struct record_version *v)
{
	unsigned char head[9];
	int r;

	if ((r = record_enc_key_bytes(b, RECORD_KEY_CREDENTIAL_ID, v->credential_id,
				      v->credential_id_len)) != PKS_OK ||
	    (r = record_enc_uint(b, RECORD_KEY_RP_ID)) != PKS_OK ||
	    (r = record_enc_text(b, v->rp_id)) != PKS_OK ||
	    (r = record_enc_key_bytes(b, RECORD_KEY_USER_HANDLE, v->user_handle,
				      v->user_handle_len)) != PKS_OK ||
	    (r = record_enc_uint(b, RECORD_KEY_ALG)) != PKS_OK ||
	    (r = record_enc_head(
		 b, cbor_encode_negint((uint64_t)(-1 - (int64_t)v->alg), head, sizeof(head)),
		 head)) != PKS_OK ||
	    (r = record_enc_key_bytes(b, RECORD_KEY_PRIVATE_KEY, v->private_key,
				      v->private_key_len)) != PKS_OK ||
	    (r = record_enc_key_bytes(b, RECORD_KEY_PUBLIC_KEY, v->public_key,
				      v->public_key_len)) != PKS_OK ||
	    (r = record_enc_key_bool(b, RECORD_KEY_BACKUP_ELIGIBLE, v->backup_eligible)) !=
		PKS_OK ||
	    (r = record_enc_key_bool(b, RECORD_KEY_BACKUP_STATE, v->backup_state)) != PKS_OK ||
	    (r = record_enc_key_uint(b, RECORD_KEY_CREATED_AT, v->created_at)) != PKS_OK ||
	    (r = record_enc_uint(b, RECORD_KEY_SOURCE)) != PKS_OK)
		return r;
	return record_enc_text(b, v->source);
}

static int record_enc_fields(struct pks_buf *b, const struct record_version *v)
{
	int r = PKS_OK;

	for (size_t f = 0; f < RECORD_FIELD_COUNT && r == PKS_OK; f++) {
		if (!(v->fields & RECORD_FIELD_BIT(f)))
			continue;
		if ((r = record_enc_uint(b, RECORD_KEY_USER_NAME + f)) != PKS_OK ||
		    (r = record_enc_array(b, 2)) != PKS_OK ||
		    (r = record_enc_text(b, v->field[f].value)) != PKS_OK)
			break;
		r = record_enc_uint(b, v->field[f].stamp);
	}
	return r;
}

static int record_tag_qsort_cmp(const void *a, const void *b)
{
	return record_delete_tag_cmp(a, b);
}

static int record_enc_tags(struct pks_buf *b, const struct record_version *v)
{
	struct record_delete_tag *sorted = NULL;
	size_t n = v->restore_tag_count;
	int r = PKS_ERR_NOMEM;

	sorted = calloc(n, sizeof(*sorted));
	if (sorted == NULL)
		goto out;
	memcpy(sorted, v->restore_tags, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), record_tag_qsort_cmp);
	if ((r = record_enc_uint(b, RECORD_KEY_RESTORE_TAGS)) != PKS_OK ||
	    (r = record_enc_array(b, n)) != PKS_OK)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if ((r = record_enc_array(b, 2)) != PKS_OK ||
		    (r = record_enc_uint(b, sorted[i].hlc)) != PKS_OK ||
		    (r = record_enc_bytes(b, sorted[i].author, DEVICE_ID_LEN)) != PKS_OK)
			goto out;
	}
out:
	free(sorted);
	return r;
}

static size_t record_field_count(unsigned int fields)
{
	size_t n = 0;

	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++)
		if (fields & RECORD_FIELD_BIT(f))
			n++;
	return n;
}

int record_version_encode(const struct record_version *v, uint8_t **out, size_t *out_len)
{
	struct pks_buf b;
	unsigned char head[9];
	size_t pairs = 0;
	int r;

	pks_buf_init(&b, RECORD_ENCODED_MAX);
	if (out == NULL || out_len == NULL) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	r = record_version_validate(v);
	if (r != PKS_OK)
		goto out;
	switch (v->op) {
	case RECORD_OP_CREATE:
		pairs = 16 + record_field_count(v->fields);
		break;
	case RECORD_OP_UPDATE:
		pairs = 5 + record_field_count(v->fields);
		break;
	case RECORD_OP_DELETE:
	case RECORD_OP_PURGE:
		pairs = 6;
		break;
	case RECORD_OP_RESTORE:
		pairs = 7;
		break;
	}
	if ((r = record_enc_head(&b, cbor_encode_map_start(pairs, head, sizeof(head)), head)) !=
		PKS_OK ||
	    (r = record_enc_key_bytes(&b, RECORD_KEY_ID, v->record_id, RECORD_ID_LEN)) != PKS_OK ||
	    (r = record_enc_key_bytes(&b, RECORD_KEY_AUTHOR, v->author, DEVICE_ID_LEN)) != PKS_OK ||
	    (r = record_enc_key_uint(&b, RECORD_KEY_SEQ, v->seq)) != PKS_OK ||
	    (r = record_enc_key_uint(&b, RECORD_KEY_EPOCH, v->epoch)) != PKS_OK ||
	    (r = record_enc_key_uint(&b, RECORD_KEY_OP, (uint64_t)v->op)) != PKS_OK)
		goto out;
	if (v->op != RECORD_OP_UPDATE &&
	    (r = record_enc_key_uint(&b, RECORD_KEY_HLC, v->hlc)) != PKS_OK)
		goto out;
	if (v->op == RECORD_OP_CREATE && (r = record_enc_create(&b, v)) != PKS_OK)
		goto out;
	if ((r = record_enc_fields(&b, v)) != PKS_OK)
		goto out;
	if (v->op == RECORD_OP_RESTORE && (r = record_enc_tags(&b, v)) != PKS_OK)
		goto out;
	pks_buf_take(&b, out, out_len);
out:
	pks_buf_free(&b);
	return r;
}

/* ---- decoding ---- */

enum record_ev_kind {
	RECORD_EV_NONE = 0,
	RECORD_EV_UINT,
	RECORD_EV_NEGINT,
	RECORD_EV_BYTES,
	RECORD_EV_TEXT,
	RECORD_EV_ARRAY,
	RECORD_EV_MAP,
	RECORD_EV_BOOL,
	/* An indefinite-length item or break: valid CBOR, never canonical. */
	RECORD_EV_INDEFINITE,
	/* Tags, floats, null, undefined: valid CBOR, never in this schema. */
	RECORD_EV_FOREIGN,
};

struct record_ev {
	enum record_ev_kind kind;
	uint64_t u; /* integer value, negint's raw n, collection size, bool */
	const uint8_t *p;
	size_t len;
};

struct record_reader {
	const uint8_t *buf;
	size_t len;
	size_t off;
};

static void record_cb_u8(void *ctx, uint8_t value)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_UINT, value, NULL, 0};
}

static void record_cb_u16(void *ctx, uint16_t value)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_UINT, value, NULL, 0};
}

static void record_cb_u32(void *ctx, uint32_t value)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_UINT, value, NULL, 0};
}

static void record_cb_u64(void *ctx, uint64_t value)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_UINT, value, NULL, 0};
}

static void record_cb_n8(void *ctx, uint8_t value)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_NEGINT, value, NULL, 0};
}

static void record_cb_n16(void *ctx, uint16_t value)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_NEGINT, value, NULL, 0};
}

static void record_cb_n32(void *ctx, uint32_t value)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_NEGINT, value, NULL, 0};
}

static void record_cb_n64(void *ctx, uint64_t value)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_NEGINT, value, NULL, 0};
}

static void record_cb_bytes(void *ctx, cbor_data p, size_t len)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_BYTES, 0, p, len};
}

static void record_cb_text(void *ctx, cbor_data p, size_t len)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_TEXT, 0, p, len};
}

static void record_cb_array(void *ctx, size_t n)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_ARRAY, n, NULL, 0};
}

static void record_cb_map(void *ctx, size_t n)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_MAP, n, NULL, 0};
}

static void record_cb_bool(void *ctx, bool value)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_BOOL, value, NULL, 0};
}

static void record_cb_indefinite(void *ctx)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_INDEFINITE, 0, NULL, 0};
}

static void record_cb_foreign(void *ctx)
{
	*(struct record_ev *)ctx = (struct record_ev){RECORD_EV_FOREIGN, 0, NULL, 0};
}

static void record_cb_tag(void *ctx, uint64_t value)
{
	record_cb_foreign(ctx);
}

static void record_cb_float(void *ctx, float value)
{
	record_cb_foreign(ctx);
}

static void record_cb_double(void *ctx, double value)
{
	record_cb_foreign(ctx);
}

static const struct cbor_callbacks record_callbacks = {
    .uint8 = record_cb_u8,
    .uint16 = record_cb_u16,
    .uint32 = record_cb_u32,
    .uint64 = record_cb_u64,
    .negint8 = record_cb_n8,
    .negint16 = record_cb_n16,
    .negint32 = record_cb_n32,
    .negint64 = record_cb_n64,
    .byte_string_start = record_cb_indefinite,
    .byte_string = record_cb_bytes,
    .string = record_cb_text,
    .string_start = record_cb_indefinite,
    .indef_array_start = record_cb_indefinite,
    .array_start = record_cb_array,
    .indef_map_start = record_cb_indefinite,
    .map_start = record_cb_map,
    .tag = record_cb_tag,
    .float2 = record_cb_float,
    .float4 = record_cb_float,
    .float8 = record_cb_double,
    .undefined = record_cb_foreign,
    .null = record_cb_foreign,
    .boolean = record_cb_bool,
    .indef_break = record_cb_indefinite,
};

/*
 * Reads the next item head (with a string's payload) and checks its kind:
 * PKS_ERR_NONCANONICAL for indefinite items, PKS_ERR_MALFORMED for another
 * kind or broken CBOR, PKS_ERR_TRUNCATED when the input ends.
 */
static int record_next(struct record_reader *rd, enum record_ev_kind want, struct record_ev *ev)
{
	struct cbor_decoder_result res;
	struct record_ev tmp = {RECORD_EV_NONE, 0, NULL, 0};

	if (rd->off >= rd->len)
		return PKS_ERR_TRUNCATED;
	res = cbor_stream_decode(rd->buf + rd->off, rd->len - rd->off, &record_callbacks, &tmp);
	if (res.status == CBOR_DECODER_NEDATA)
		return PKS_ERR_TRUNCATED;
	if (res.status != CBOR_DECODER_FINISHED || res.read == 0 || res.read > rd->len - rd->off ||
	    tmp.kind == RECORD_EV_NONE)
		return PKS_ERR_MALFORMED;
	rd->off += res.read;
	if (tmp.kind == RECORD_EV_INDEFINITE)
		return PKS_ERR_NONCANONICAL;
	if (tmp.kind != want)
		return PKS_ERR_MALFORMED;
	*ev = tmp;
	return PKS_OK;
}

static int record_read_uint(struct record_reader *rd, uint64_t *out)
{
	struct record_ev ev;
	int r = record_next(rd, RECORD_EV_UINT, &ev);

	if (r == PKS_OK)
		*out = ev.u;
	return r;
}

static int record_read_bool(struct record_reader *rd, bool *out)
{
	struct record_ev ev;
	int r = record_next(rd, RECORD_EV_BOOL, &ev);

	if (r == PKS_OK)
		*out = ev.u != 0;
	return r;
}

/* A byte string of min..max bytes into a fresh malloc (a secret is wiped when freed). */
static int record_read_bytes(struct record_reader *rd, size_t min, size_t max, bool secret,
			     uint8_t **out, size_t *out_len)
{
	struct record_ev ev;
	uint8_t *p;
	int r = record_next(rd, RECORD_EV_BYTES, &ev);

	if (r != PKS_OK)
		return r;
	if (ev.len > max)
		return PKS_ERR_TOO_LARGE;
	if (ev.len < min)
		return PKS_ERR_MALFORMED;
	(void)secret;
	p = malloc(ev.len ? ev.len : 1);
	if (p == NULL)
		return PKS_ERR_NOMEM;
	if (ev.len > 0)
		memcpy(p, ev.p, ev.len);
	*out = p;
	*out_len = ev.len;
	return PKS_OK;
}

static int record_read_fixed(struct record_reader *rd, uint8_t *out, size_t len)
{
	struct record_ev ev;
	int r = record_next(rd, RECORD_EV_BYTES, &ev);

	if (r != PKS_OK)
		return r;
	if (ev.len != len)
		return PKS_ERR_MALFORMED;
	memcpy(out, ev.p, len);
	return PKS_OK;
}

/* A text string without NUL bytes, as a C string (UTF-8 is checked later). */
static int record_read_text(struct record_reader *rd, size_t max, char **out)
{
	struct record_ev ev;
	char *s;
	int r = record_next(rd, RECORD_EV_TEXT, &ev);

	if (r != PKS_OK)
		return r;
	if (ev.len > max)
		return PKS_ERR_TOO_LARGE;
	if (ev.len > 0 && memchr(ev.p, 0, ev.len) != NULL)
		return PKS_ERR_MALFORMED;
	s = malloc(ev.len + 1);
	if (s == NULL)
		return PKS_ERR_NOMEM;
	if (ev.len > 0)
		memcpy(s, ev.p, ev.len);
	s[ev.len] = '\0';
	*out = s;
	return PKS_OK;
}

static int record_read_array_of(struct record_reader *rd, size_t n)
{
	struct record_ev ev;
	int r = record_next(rd, RECORD_EV_ARRAY, &ev);

	if (r == PKS_OK && ev.u != n)
		r = PKS_ERR_MALFORMED;
	return r;
}

static int record_read_field(struct record_reader *rd, struct record_version *v, size_t f)
{
	int r = record_read_array_of(rd, 2);

	if (r == PKS_OK)
		r = record_read_text(rd, record_codec_field_max[f], &v->field[f].value);
	if (r == PKS_OK)
		r = record_read_uint(rd, &v->field[f].stamp);
	if (r == PKS_OK)
		v->fields |= RECORD_FIELD_BIT(f);
	return r;
}

static int record_read_tags(struct record_reader *rd, struct record_version *v)
{
	struct record_ev ev;
	int r = record_next(rd, RECORD_EV_ARRAY, &ev);

	if (r != PKS_OK)
		return r;
	if (ev.u > RECORD_RESTORE_TAGS_MAX)
		return PKS_ERR_TOO_LARGE;
	if (ev.u < RECORD_RESTORE_TAGS_MIN)
		return PKS_ERR_MALFORMED;
	v->restore_tags = calloc(ev.u, sizeof(*v->restore_tags));
	if (v->restore_tags == NULL)
		return PKS_ERR_NOMEM;
	v->restore_tag_count = ev.u;
	for (size_t i = 0; i < v->restore_tag_count && r == PKS_OK; i++) {
		r = record_read_array_of(rd, 2);
		if (r == PKS_OK)
			r = record_read_uint(rd, &v->restore_tags[i].hlc);
		if (r == PKS_OK)
			r = record_read_fixed(rd, v->restore_tags[i].author, DEVICE_ID_LEN);
	}
	return r;
}

static int record_read_alg(struct record_reader *rd, struct record_version *v)
{
	struct record_ev ev;
	int r = record_next(rd, RECORD_EV_NEGINT, &ev);

	if (r != PKS_OK)
		return r;
	/* CBOR negint n is the integer -1 - n. */
	if (ev.u == (uint64_t)(-1 - RECORD_ALG_ES256))
		v->alg = RECORD_ALG_ES256;
	else if (ev.u == (uint64_t)(-1 - RECORD_ALG_EDDSA))
		v->alg = RECORD_ALG_EDDSA;
	else
		r = PKS_ERR_MALFORMED;
	return r;
}

static int record_read_value(struct record_reader *rd, enum record_key k, struct record_version *v)
{
	uint64_t u = 0;
	int r = PKS_ERR_MALFORMED;

	switch (k) {
	case RECORD_KEY_ID:
		return record_read_fixed(rd, v->record_id, RECORD_ID_LEN);
	case RECORD_KEY_AUTHOR:
		return record_read_fixed(rd, v->author, DEVICE_ID_LEN);
	case RECORD_KEY_SEQ:
		return record_read_uint(rd, &v->seq);
	case RECORD_KEY_EPOCH:
		r = record_read_uint(rd, &u);
		if (r == PKS_OK && u > UINT32_MAX)
			r = PKS_ERR_MALFORMED;
		v->epoch = (uint32_t)u;
		return r;
	case RECORD_KEY_OP:
		r = record_read_uint(rd, &u);
		if (r == PKS_OK && (u < RECORD_OP_CREATE || u > RECORD_OP_PURGE))
			r = PKS_ERR_MALFORMED;
		v->op = (enum record_op)u;
		return r;
	case RECORD_KEY_HLC:
		return record_read_uint(rd, &v->hlc);
	case RECORD_KEY_CREDENTIAL_ID:
		return record_read_bytes(rd, RECORD_CREDENTIAL_ID_MIN, RECORD_CREDENTIAL_ID_MAX,
					 false, &v->credential_id, &v->credential_id_len);
	case RECORD_KEY_RP_ID:
		return record_read_text(rd, RECORD_RP_ID_MAX, &v->rp_id);
	case RECORD_KEY_USER_HANDLE:
		return record_read_bytes(rd, RECORD_USER_HANDLE_MIN, RECORD_USER_HANDLE_MAX, false,
					 &v->user_handle, &v->user_handle_len);
	case RECORD_KEY_ALG:
		return record_read_alg(rd, v);
	case RECORD_KEY_PRIVATE_KEY:
		return record_read_bytes(rd, RECORD_PRIVATE_KEY_MIN, RECORD_PRIVATE_KEY_MAX, true,
					 &v->private_key, &v->private_key_len);
	case RECORD_KEY_PUBLIC_KEY:
		return record_read_bytes(rd, RECORD_PUBLIC_KEY_MIN, RECORD_PUBLIC_KEY_MAX, false,
					 &v->public_key, &v->public_key_len);
	case RECORD_KEY_BACKUP_ELIGIBLE:
		return record_read_bool(rd, &v->backup_eligible);
	case RECORD_KEY_BACKUP_STATE:
		return record_read_bool(rd, &v->backup_state);
	case RECORD_KEY_CREATED_AT:
		return record_read_uint(rd, &v->created_at);
	case RECORD_KEY_SOURCE:
		return record_read_text(rd, RECORD_SOURCE_MAX, &v->source);
	case RECORD_KEY_USER_NAME:
		return record_read_field(rd, v, RECORD_FIELD_USER_NAME);
	case RECORD_KEY_DISPLAY_NAME:
		return record_read_field(rd, v, RECORD_FIELD_DISPLAY_NAME);
	case RECORD_KEY_NOTES:
		return record_read_field(rd, v, RECORD_FIELD_NOTES);
	case RECORD_KEY_RESTORE_TAGS:
		return record_read_tags(rd, v);
	}
	return r;
}

/* Which keys an op requires and which it allows. */
static void record_op_keys(enum record_op op, uint32_t *required, uint32_t *allowed)
{
	uint32_t hlc = RECORD_KEY_BIT(RECORD_KEY_HLC);

	*required = RECORD_KEYS_COMMON;
	*allowed = RECORD_KEYS_COMMON;
	switch (op) {
	case RECORD_OP_CREATE:
		*required |= hlc | RECORD_KEYS_CREATE;
		*allowed |= hlc | RECORD_KEYS_CREATE | RECORD_KEYS_FIELDS;
		break;
	case RECORD_OP_UPDATE:
		*allowed |= RECORD_KEYS_FIELDS;
		break;
	case RECORD_OP_DELETE:
	case RECORD_OP_PURGE:
		*required |= hlc;
		*allowed |= hlc;
		break;
	case RECORD_OP_RESTORE:
		*required |= hlc | RECORD_KEY_BIT(RECORD_KEY_RESTORE_TAGS);
		*allowed |= hlc | RECORD_KEY_BIT(RECORD_KEY_RESTORE_TAGS);
		break;
	}
}

int record_version_decode(const uint8_t *buf, size_t len, struct record_version **out)
{
	struct record_reader rd = {buf, len, 0};
	struct record_version *v = NULL;
	struct record_ev ev;
	uint8_t *again = NULL;
	size_t again_len = 0;
	uint32_t seen = 0, required, allowed;
	int r = PKS_ERR_INVALID;

	if ((buf == NULL && len > 0) || out == NULL)
		goto out;
	if (len > RECORD_ENCODED_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	v = record_version_new();
	if (v == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	r = record_next(&rd, RECORD_EV_MAP, &ev);
	if (r != PKS_OK)
		goto out;
	if (ev.u == 0 || ev.u > RECORD_KEY_LAST) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	for (uint64_t i = 0, n = ev.u; i < n; i++) {
		uint64_t key;

		r = record_read_uint(&rd, &key);
		if (r != PKS_OK)
			goto out;
		if (key < RECORD_KEY_ID || key > RECORD_KEY_LAST) {
			r = PKS_ERR_MALFORMED;
			goto out;
		}
		if (seen & RECORD_KEY_BIT(key)) {
			r = PKS_ERR_NONCANONICAL;
			goto out;
		}
		seen |= RECORD_KEY_BIT(key);
		r = record_read_value(&rd, (enum record_key)key, v);
		if (r != PKS_OK)
			goto out;
	}
	if (rd.off != rd.len) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	if (!(seen & RECORD_KEY_BIT(RECORD_KEY_OP))) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	record_op_keys(v->op, &required, &allowed);
	if ((seen & required) != required || (seen & ~allowed) != 0) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	r = record_version_validate(v);
	if (r != PKS_OK) {
		if (r != PKS_ERR_TOO_LARGE)
			r = PKS_ERR_MALFORMED;
		goto out;
	}
	r = record_version_encode(v, &again, &again_len);
	if (r != PKS_OK)
		goto out;
	if (again_len != len || memcmp(again, buf, len) != 0) {
		r = PKS_ERR_NONCANONICAL;
		goto out;
	}
	*out = v;
	v = NULL;
	r = PKS_OK;
out:
	if (again != NULL) {
		sodium_memzero(again, again_len);
		free(again);
	}
	record_version_free(v);
	return r;
}
