/*
 * CTAP2 command layer. Requests are read by a pull parser over libcbor's
 * streaming decoder that follows the schema of each command, so no tree is
 * built and unknown values are skipped with a depth limit; responses are
 * written key by key in canonical order with shortest heads (the same
 * approach as proto/record-codec.c).
 */
#include "agent/ctap2.h"

#include <cbor.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "agent/passkey.h"
#include "common/bytes.h"
#include "common/err.h"

#define CTAP2_FLAG_UP 0x01
#define CTAP2_FLAG_UV 0x04
#define CTAP2_FLAG_BE 0x08
#define CTAP2_FLAG_BS 0x10
#define CTAP2_FLAG_AT 0x40

/* Nesting below a known parameter that skipping an unknown value accepts. */
#define CTAP2_SKIP_DEPTH 4

#define CTAP2_PUBLIC_KEY "public-key"

/* ---- reading ---- */

enum ctap2_ev_kind {
	CTAP2_EV_NONE = 0,
	CTAP2_EV_UINT,
	CTAP2_EV_NEGINT,
	CTAP2_EV_BYTES,
	CTAP2_EV_TEXT,
	CTAP2_EV_ARRAY,
	CTAP2_EV_MAP,
	CTAP2_EV_BOOL,
	CTAP2_EV_TAG,
	/* null, undefined, floats: valid CBOR, never a CTAP2 parameter. */
	CTAP2_EV_SIMPLE,
	/* An indefinite-length item or break: rejected as invalid CBOR. */
	CTAP2_EV_INDEFINITE,
};

struct ctap2_ev {
	enum ctap2_ev_kind kind;
	uint64_t u; /* integer value, negint's raw n, collection size, bool */
	const uint8_t *p;
	size_t len;
};

struct ctap2_reader {
	const uint8_t *buf;
	size_t len;
	size_t off;
};

static void ctap2_ev_set(void *ctx, enum ctap2_ev_kind kind, uint64_t u, const uint8_t *p,
			 size_t len)
{
	*(struct ctap2_ev *)ctx = (struct ctap2_ev){kind, u, p, len};
}

static void ctap2_cb_u8(void *ctx, uint8_t value)
{
	ctap2_ev_set(ctx, CTAP2_EV_UINT, value, NULL, 0);
}

static void ctap2_cb_u16(void *ctx, uint16_t value)
{
	ctap2_ev_set(ctx, CTAP2_EV_UINT, value, NULL, 0);
}

static void ctap2_cb_u32(void *ctx, uint32_t value)
{
	ctap2_ev_set(ctx, CTAP2_EV_UINT, value, NULL, 0);
}

static void ctap2_cb_u64(void *ctx, uint64_t value)
{
	ctap2_ev_set(ctx, CTAP2_EV_UINT, value, NULL, 0);
}

static void ctap2_cb_n8(void *ctx, uint8_t value)
{
	ctap2_ev_set(ctx, CTAP2_EV_NEGINT, value, NULL, 0);
}

static void ctap2_cb_n16(void *ctx, uint16_t value)
{
	ctap2_ev_set(ctx, CTAP2_EV_NEGINT, value, NULL, 0);
}

static void ctap2_cb_n32(void *ctx, uint32_t value)
{
	ctap2_ev_set(ctx, CTAP2_EV_NEGINT, value, NULL, 0);
}

static void ctap2_cb_n64(void *ctx, uint64_t value)
{
	ctap2_ev_set(ctx, CTAP2_EV_NEGINT, value, NULL, 0);
}

static void ctap2_cb_bytes(void *ctx, cbor_data p, size_t len)
{
	ctap2_ev_set(ctx, CTAP2_EV_BYTES, 0, p, len);
}

static void ctap2_cb_text(void *ctx, cbor_data p, size_t len)
{
	ctap2_ev_set(ctx, CTAP2_EV_TEXT, 0, p, len);
}

static void ctap2_cb_array(void *ctx, size_t n)
{
	ctap2_ev_set(ctx, CTAP2_EV_ARRAY, n, NULL, 0);
}

static void ctap2_cb_map(void *ctx, size_t n)
{
	ctap2_ev_set(ctx, CTAP2_EV_MAP, n, NULL, 0);
}

static void ctap2_cb_bool(void *ctx, bool value)
{
	ctap2_ev_set(ctx, CTAP2_EV_BOOL, value, NULL, 0);
}

static void ctap2_cb_tag(void *ctx, uint64_t value)
{
	ctap2_ev_set(ctx, CTAP2_EV_TAG, value, NULL, 0);
}

static void ctap2_cb_indefinite(void *ctx)
{
	ctap2_ev_set(ctx, CTAP2_EV_INDEFINITE, 0, NULL, 0);
}

static void ctap2_cb_simple(void *ctx)
{
	ctap2_ev_set(ctx, CTAP2_EV_SIMPLE, 0, NULL, 0);
}

static void ctap2_cb_float(void *ctx, float value)
{
	(void)value;
	ctap2_cb_simple(ctx);
}

static void ctap2_cb_double(void *ctx, double value)
{
	(void)value;
	ctap2_cb_simple(ctx);
}

static const struct cbor_callbacks ctap2_callbacks = {
    .uint8 = ctap2_cb_u8,
    .uint16 = ctap2_cb_u16,
    .uint32 = ctap2_cb_u32,
    .uint64 = ctap2_cb_u64,
    .negint8 = ctap2_cb_n8,
    .negint16 = ctap2_cb_n16,
    .negint32 = ctap2_cb_n32,
    .negint64 = ctap2_cb_n64,
    .byte_string_start = ctap2_cb_indefinite,
    .byte_string = ctap2_cb_bytes,
    .string = ctap2_cb_text,
    .string_start = ctap2_cb_indefinite,
    .indef_array_start = ctap2_cb_indefinite,
    .array_start = ctap2_cb_array,
    .indef_map_start = ctap2_cb_indefinite,
    .map_start = ctap2_cb_map,
    .tag = ctap2_cb_tag,
    .float2 = ctap2_cb_float,
    .float4 = ctap2_cb_float,
    .float8 = ctap2_cb_double,
    .undefined = ctap2_cb_simple,
    .null = ctap2_cb_simple,
    .boolean = ctap2_cb_bool,
    .indef_break = ctap2_cb_indefinite,
};

/* Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF). */
static bool ctap2_utf8_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint8_t b = s[i];
		size_t n;
		uint32_t cp, min;

		if (b < 0x80) {
			i++;
			continue;
		} else if ((b & 0xe0) == 0xc0) {
			n = 1, cp = b & 0x1f, min = 0x80;
		} else if ((b & 0xf0) == 0xe0) {
			n = 2, cp = b & 0x0f, min = 0x800;
		} else if ((b & 0xf8) == 0xf0) {
			n = 3, cp = b & 0x07, min = 0x10000;
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
		i += n + 1;
	}
	return true;
}

/*
 * The next item head (with a definite string's payload). Broken, truncated
 * or indefinite CBOR and invalid UTF-8 in a text string are
 * CTAP2_ERR_INVALID_CBOR; the caller checks the kind.
 */
static uint8_t ctap2_next(struct ctap2_reader *rd, struct ctap2_ev *ev)
{
	struct cbor_decoder_result res;
	struct ctap2_ev tmp = {CTAP2_EV_NONE, 0, NULL, 0};

	if (rd->off >= rd->len)
		return CTAP2_ERR_INVALID_CBOR;
	res = cbor_stream_decode(rd->buf + rd->off, rd->len - rd->off, &ctap2_callbacks, &tmp);
	if (res.status != CBOR_DECODER_FINISHED || res.read == 0 || res.read > rd->len - rd->off ||
	    tmp.kind == CTAP2_EV_NONE || tmp.kind == CTAP2_EV_INDEFINITE)
		return CTAP2_ERR_INVALID_CBOR;
	if (tmp.kind == CTAP2_EV_TEXT && !ctap2_utf8_valid(tmp.p, tmp.len))
		return CTAP2_ERR_INVALID_CBOR;
	rd->off += res.read;
	*ev = tmp;
	return CTAP2_OK;
}

static uint8_t ctap2_expect(struct ctap2_reader *rd, enum ctap2_ev_kind want, struct ctap2_ev *ev)
{
	uint8_t st = ctap2_next(rd, ev);

	if (st == CTAP2_OK && ev->kind != want)
		st = CTAP2_ERR_CBOR_UNEXPECTED_TYPE;
	return st;
}

/*
 * Skips one whole value. The declared counts are not trusted: every item
 * consumes at least one byte, so a lying count runs into the end of input.
 */
static uint8_t ctap2_skip(struct ctap2_reader *rd, int depth);

/* Skips what follows the head ev of a collection or tag. */
static uint8_t ctap2_skip_children(struct ctap2_reader *rd, const struct ctap2_ev *ev, int depth)
{
	uint64_t items = 0;
	uint8_t st = CTAP2_OK;

	switch (ev->kind) {
	case CTAP2_EV_ARRAY:
		items = ev->u;
		break;
	case CTAP2_EV_MAP:
		if (ev->u > UINT64_MAX / 2)
			return CTAP2_ERR_INVALID_CBOR;
		items = 2 * ev->u;
		break;
	case CTAP2_EV_TAG:
		items = 1;
		break;
	case CTAP2_EV_NONE:
	case CTAP2_EV_UINT:
	case CTAP2_EV_NEGINT:
	case CTAP2_EV_BYTES:
	case CTAP2_EV_TEXT:
	case CTAP2_EV_BOOL:
	case CTAP2_EV_SIMPLE:
	case CTAP2_EV_INDEFINITE:
		return CTAP2_OK;
	}
	if (items > 0 && depth >= CTAP2_SKIP_DEPTH)
		return CTAP2_ERR_INVALID_CBOR;
	for (uint64_t i = 0; i < items && st == CTAP2_OK; i++)
		st = ctap2_skip(rd, depth + 1);
	return st;
}

static uint8_t ctap2_skip(struct ctap2_reader *rd, int depth)
{
	struct ctap2_ev ev;
	uint8_t st = ctap2_next(rd, &ev);

	return st == CTAP2_OK ? ctap2_skip_children(rd, &ev, depth) : st;
}

/* A map whose contents are ignored (extensions). */
static uint8_t ctap2_skip_map(struct ctap2_reader *rd)
{
	struct ctap2_ev ev;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_MAP, &ev);

	return st == CTAP2_OK ? ctap2_skip_children(rd, &ev, 0) : st;
}

static bool ctap2_text_is(const struct ctap2_ev *ev, const char *s)
{
	size_t n = strlen(s);

	return ev->len == n && memcmp(ev->p, s, n) == 0;
}

/*
 * A text string into out (cap bytes, NUL-terminated). Longer than max: cut
 * at a character boundary when truncate, else CTAP1_ERR_INVALID_LENGTH.
 * Embedded NUL: CTAP1_ERR_INVALID_PARAMETER.
 */
static uint8_t ctap2_read_text(struct ctap2_reader *rd, size_t max, bool truncate, char *out,
			       size_t cap)
{
	struct ctap2_ev ev;
	size_t n;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_TEXT, &ev);

	if (st != CTAP2_OK)
		return st;
	if (ev.len > 0 && memchr(ev.p, 0, ev.len) != NULL)
		return CTAP1_ERR_INVALID_PARAMETER;
	n = ev.len;
	if (n > max) {
		if (!truncate)
			return CTAP1_ERR_INVALID_LENGTH;
		n = max;
		while (n > 0 && (ev.p[n] & 0xc0) == 0x80)
			n--;
	}
	if (n >= cap)
		return CTAP1_ERR_OTHER;
	memcpy(out, ev.p, n);
	out[n] = '\0';
	return CTAP2_OK;
}

/* A byte string of min..max bytes, borrowed from the request. */
static uint8_t ctap2_read_bytes(struct ctap2_reader *rd, size_t min, size_t max, const uint8_t **p,
				size_t *len)
{
	struct ctap2_ev ev;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_BYTES, &ev);

	if (st != CTAP2_OK)
		return st;
	if (ev.len < min || ev.len > max)
		return CTAP1_ERR_INVALID_LENGTH;
	*p = ev.p;
	*len = ev.len;
	return CTAP2_OK;
}

static uint8_t ctap2_read_bool(struct ctap2_reader *rd, bool *out)
{
	struct ctap2_ev ev;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_BOOL, &ev);

	if (st == CTAP2_OK)
		*out = ev.u != 0;
	return st;
}

/* A map key of a sub-map (text), checked against seen for duplicates. */
static uint8_t ctap2_read_text_key(struct ctap2_reader *rd, struct ctap2_ev *key)
{
	return ctap2_expect(rd, CTAP2_EV_TEXT, key);
}

/* Marks bit for a known key; a second time is CTAP2_ERR_INVALID_CBOR. */
static uint8_t ctap2_mark(uint32_t *seen, unsigned int bit)
{
	if (*seen & (UINT32_C(1) << bit))
		return CTAP2_ERR_INVALID_CBOR;
	*seen |= UINT32_C(1) << bit;
	return CTAP2_OK;
}

/* ---- parsed requests ---- */

struct ctap2_options {
	bool has_rk, rk, has_up, up, has_uv, uv;
};

struct ctap2_pin_uv {
	bool has_param, has_protocol;
};

struct ctap2_make_req {
	uint8_t cdh[CTAP2_CLIENT_DATA_HASH_LEN];
	char rp_id[CTAP2_RP_ID_MAX + 1];
	char rp_name[CTAP2_RP_NAME_MAX + 1];
	uint8_t user_id[CTAP2_USER_ID_MAX];
	size_t user_id_len;
	char user_name[CTAP2_NAME_MAX + 1];
	char display_name[CTAP2_NAME_MAX + 1];
	int alg; /* 0: none of the offered ones is supported */
	bool excluded;
	bool uv;
};

struct ctap2 {
	struct ctap2_backend be;
	void *be_user;
	uint8_t aaguid[CTAP2_AAGUID_LEN];
	bool uv_configured;

	enum ctap2_op op; /* the request waiting for ctap2_finish() */
	struct ctap2_make_req make;

	/* getAssertion: the pending one, then the getNextAssertion state. */
	uint8_t cdh[CTAP2_CLIENT_DATA_HASH_LEN];
	char rp_id[CTAP2_RP_ID_MAX + 1];
	bool get_up, get_uv, get_discoverable;
	uint8_t get_flags;        /* flags of the first assertion (UP, UV) */
	struct ctap2_cred *creds; /* CTAP2_ASSERTION_CREDS_MAX */
	size_t n_creds, next;
	bool next_active;
	uint64_t next_at_ms; /* when the previous assertion was answered */
};

static void ctap2_release(struct ctap2 *c, struct ctap2_cred *cred)
{
	if (c->be.release != NULL)
		c->be.release(c->be_user, cred);
	sodium_memzero(cred, sizeof(*cred));
}

static void ctap2_drop_creds(struct ctap2 *c)
{
	for (size_t i = 0; i < c->n_creds; i++)
		ctap2_release(c, &c->creds[i]);
	c->n_creds = 0;
	c->next = 0;
	c->next_active = false;
}

/* Forgets a pending request and the getNextAssertion state. */
static void ctap2_reset_state(struct ctap2 *c)
{
	ctap2_drop_creds(c);
	sodium_memzero(&c->make, sizeof(c->make));
	c->op = CTAP2_OP_NONE;
}

/* What the backend returned must be within the same limits as requests. */
static bool ctap2_cred_valid(struct ctap2_cred *cred)
{
	cred->rp_id[sizeof(cred->rp_id) - 1] = '\0';
	cred->user_name[sizeof(cred->user_name) - 1] = '\0';
	cred->display_name[sizeof(cred->display_name) - 1] = '\0';
	return cred->id_len >= 1 && cred->id_len <= CTAP2_CRED_ID_MAX &&
	       cred->user_id_len <= CTAP2_USER_ID_MAX &&
	       (cred->alg == PASSKEY_ALG_ES256 || cred->alg == PASSKEY_ALG_EDDSA) &&
	       !(cred->bs && !cred->be) &&
	       ctap2_utf8_valid((const uint8_t *)cred->user_name, strlen(cred->user_name)) &&
	       ctap2_utf8_valid((const uint8_t *)cred->display_name, strlen(cred->display_name));
}

static uint8_t ctap2_backend_status(int r)
{
	switch (r) {
	case PKS_OK:
		return CTAP2_OK;
	case PKS_ERR_LOCKED:
		return CTAP2_ERR_NOT_ALLOWED;
	default:
		return CTAP1_ERR_OTHER;
	}
}

/* ---- request parsing ---- */

static uint8_t ctap2_parse_options(struct ctap2_reader *rd, struct ctap2_options *o)
{
	struct ctap2_ev ev, key;
	uint32_t seen = 0;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_MAP, &ev);

	for (uint64_t i = 0; st == CTAP2_OK && i < ev.u; i++) {
		if ((st = ctap2_read_text_key(rd, &key)) != CTAP2_OK)
			break;
		if (ctap2_text_is(&key, "rk")) {
			if ((st = ctap2_mark(&seen, 0)) == CTAP2_OK)
				st = ctap2_read_bool(rd, &o->rk);
			o->has_rk = true;
		} else if (ctap2_text_is(&key, "up")) {
			if ((st = ctap2_mark(&seen, 1)) == CTAP2_OK)
				st = ctap2_read_bool(rd, &o->up);
			o->has_up = true;
		} else if (ctap2_text_is(&key, "uv")) {
			if ((st = ctap2_mark(&seen, 2)) == CTAP2_OK)
				st = ctap2_read_bool(rd, &o->uv);
			o->has_uv = true;
		} else {
			st = ctap2_skip(rd, 1);
		}
	}
	return st;
}

/* One PublicKeyCredentialDescriptor; *id is NULL for a type we ignore. */
static uint8_t ctap2_parse_descriptor(struct ctap2_reader *rd, const uint8_t **id, size_t *id_len)
{
	struct ctap2_ev ev, key, type = {CTAP2_EV_NONE, 0, NULL, 0};
	const uint8_t *p = NULL;
	size_t n = 0;
	uint32_t seen = 0;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_MAP, &ev);

	for (uint64_t i = 0; st == CTAP2_OK && i < ev.u; i++) {
		if ((st = ctap2_read_text_key(rd, &key)) != CTAP2_OK)
			break;
		if (ctap2_text_is(&key, "id")) {
			if ((st = ctap2_mark(&seen, 0)) == CTAP2_OK)
				st = ctap2_read_bytes(rd, 0, CTAP2_CRED_ID_MAX, &p, &n);
		} else if (ctap2_text_is(&key, "type")) {
			if ((st = ctap2_mark(&seen, 1)) == CTAP2_OK)
				st = ctap2_expect(rd, CTAP2_EV_TEXT, &type);
		} else {
			st = ctap2_skip(rd, 2);
		}
	}
	if (st == CTAP2_OK && seen != 3)
		st = CTAP2_ERR_MISSING_PARAMETER;
	if (st == CTAP2_OK) {
		*id = ctap2_text_is(&type, CTAP2_PUBLIC_KEY) ? p : NULL;
		*id_len = n;
	}
	return st;
}

/* An allowList or excludeList; *given says whether it had any entry. */
static uint8_t ctap2_parse_list(struct ctap2_reader *rd, struct ctap2_allow *list, bool *given)
{
	struct ctap2_ev ev;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_ARRAY, &ev);

	if (st != CTAP2_OK)
		return st;
	if (ev.u > CTAP2_LIST_MAX)
		return CTAP2_ERR_LIMIT_EXCEEDED;
	list->count = 0;
	*given = ev.u > 0;
	for (uint64_t i = 0; st == CTAP2_OK && i < ev.u; i++) {
		const uint8_t *id = NULL;
		size_t len = 0;

		st = ctap2_parse_descriptor(rd, &id, &len);
		if (st == CTAP2_OK && id != NULL) {
			list->id[list->count] = id;
			list->id_len[list->count] = len;
			list->count++;
		}
	}
	return st;
}

/* pubKeyCredParams: the first supported algorithm in the caller's order. */
static uint8_t ctap2_parse_params(struct ctap2_reader *rd, int *alg)
{
	struct ctap2_ev ev, key, type = {CTAP2_EV_NONE, 0, NULL, 0}, value;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_ARRAY, &ev);
	int chosen = 0;

	if (st != CTAP2_OK)
		return st;
	if (ev.u > CTAP2_LIST_MAX)
		return CTAP2_ERR_LIMIT_EXCEEDED;
	for (uint64_t i = 0; st == CTAP2_OK && i < ev.u; i++) {
		struct ctap2_ev map;
		uint32_t seen = 0;
		int64_t a = 0;

		if ((st = ctap2_expect(rd, CTAP2_EV_MAP, &map)) != CTAP2_OK)
			break;
		for (uint64_t k = 0; st == CTAP2_OK && k < map.u; k++) {
			if ((st = ctap2_read_text_key(rd, &key)) != CTAP2_OK)
				break;
			if (ctap2_text_is(&key, "alg")) {
				if ((st = ctap2_mark(&seen, 0)) != CTAP2_OK ||
				    (st = ctap2_next(rd, &value)) != CTAP2_OK)
					break;
				if (value.kind == CTAP2_EV_UINT)
					a = value.u > INT32_MAX ? 0 : (int64_t)value.u;
				else if (value.kind == CTAP2_EV_NEGINT)
					a = value.u > INT32_MAX ? 0 : -1 - (int64_t)value.u;
				else
					st = CTAP2_ERR_CBOR_UNEXPECTED_TYPE;
			} else if (ctap2_text_is(&key, "type")) {
				if ((st = ctap2_mark(&seen, 1)) == CTAP2_OK)
					st = ctap2_expect(rd, CTAP2_EV_TEXT, &type);
			} else {
				st = ctap2_skip(rd, 2);
			}
		}
		if (st == CTAP2_OK && seen != 3)
			st = CTAP2_ERR_MISSING_PARAMETER;
		if (st == CTAP2_OK && chosen == 0 && ctap2_text_is(&type, CTAP2_PUBLIC_KEY) &&
		    (a == PASSKEY_ALG_ES256 || a == PASSKEY_ALG_EDDSA))
			chosen = (int)a;
	}
	if (st == CTAP2_OK)
		*alg = chosen;
	return st;
}

static uint8_t ctap2_parse_rp(struct ctap2_reader *rd, struct ctap2_make_req *m)
{
	struct ctap2_ev ev, key;
	uint32_t seen = 0;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_MAP, &ev);

	for (uint64_t i = 0; st == CTAP2_OK && i < ev.u; i++) {
		if ((st = ctap2_read_text_key(rd, &key)) != CTAP2_OK)
			break;
		if (ctap2_text_is(&key, "id")) {
			if ((st = ctap2_mark(&seen, 0)) == CTAP2_OK)
				st = ctap2_read_text(rd, CTAP2_RP_ID_MAX, false, m->rp_id,
						     sizeof(m->rp_id));
		} else if (ctap2_text_is(&key, "name")) {
			if ((st = ctap2_mark(&seen, 1)) == CTAP2_OK)
				st = ctap2_read_text(rd, CTAP2_RP_NAME_MAX, true, m->rp_name,
						     sizeof(m->rp_name));
		} else {
			st = ctap2_skip(rd, 1);
		}
	}
	if (st == CTAP2_OK && !(seen & 1))
		st = CTAP2_ERR_MISSING_PARAMETER;
	if (st == CTAP2_OK && m->rp_id[0] == '\0')
		st = CTAP1_ERR_INVALID_LENGTH;
	return st;
}

static uint8_t ctap2_parse_user(struct ctap2_reader *rd, struct ctap2_make_req *m)
{
	struct ctap2_ev ev, key;
	const uint8_t *id = NULL;
	size_t id_len = 0;
	uint32_t seen = 0;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_MAP, &ev);

	for (uint64_t i = 0; st == CTAP2_OK && i < ev.u; i++) {
		if ((st = ctap2_read_text_key(rd, &key)) != CTAP2_OK)
			break;
		if (ctap2_text_is(&key, "id")) {
			if ((st = ctap2_mark(&seen, 0)) == CTAP2_OK)
				st = ctap2_read_bytes(rd, 1, CTAP2_USER_ID_MAX, &id, &id_len);
		} else if (ctap2_text_is(&key, "name")) {
			if ((st = ctap2_mark(&seen, 1)) == CTAP2_OK)
				st = ctap2_read_text(rd, CTAP2_NAME_MAX, true, m->user_name,
						     sizeof(m->user_name));
		} else if (ctap2_text_is(&key, "displayName")) {
			if ((st = ctap2_mark(&seen, 2)) == CTAP2_OK)
				st = ctap2_read_text(rd, CTAP2_NAME_MAX, true, m->display_name,
						     sizeof(m->display_name));
		} else {
			st = ctap2_skip(rd, 1);
		}
	}
	if (st == CTAP2_OK && !(seen & 1))
		st = CTAP2_ERR_MISSING_PARAMETER;
	if (st == CTAP2_OK) {
		memcpy(m->user_id, id, id_len);
		m->user_id_len = id_len;
	}
	return st;
}

/* The top-level map's next integer key; duplicates are invalid CBOR. */
static uint8_t ctap2_read_param_key(struct ctap2_reader *rd, uint32_t *seen, uint64_t *key)
{
	struct ctap2_ev ev;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_UINT, &ev);

	if (st == CTAP2_OK && ev.u < 32)
		st = ctap2_mark(seen, (unsigned int)ev.u);
	if (st == CTAP2_OK)
		*key = ev.u;
	return st;
}

/* The parameters map; an empty parameter part reads as an empty map. */
static uint8_t ctap2_read_params_head(struct ctap2_reader *rd, uint64_t *n)
{
	struct ctap2_ev ev;
	uint8_t st;

	if (rd->len == 0) {
		*n = 0;
		return CTAP2_OK;
	}
	st = ctap2_expect(rd, CTAP2_EV_MAP, &ev);
	if (st == CTAP2_OK)
		*n = ev.u;
	return st;
}

/* After the parameters map: nothing may follow. */
static uint8_t ctap2_read_end(const struct ctap2_reader *rd)
{
	return rd->off == rd->len ? CTAP2_OK : CTAP2_ERR_INVALID_CBOR;
}

/* pinUvAuthParam (bstr) and pinUvAuthProtocol (uint): no protocol is supported. */
static uint8_t ctap2_pin_uv_status(const struct ctap2_pin_uv *pin)
{
	if (!pin->has_param)
		return CTAP2_OK;
	return pin->has_protocol ? CTAP1_ERR_INVALID_PARAMETER : CTAP2_ERR_MISSING_PARAMETER;
}

static uint8_t ctap2_read_pin_param(struct ctap2_reader *rd, struct ctap2_pin_uv *pin)
{
	const uint8_t *p;
	size_t n;
	uint8_t st = ctap2_read_bytes(rd, 0, 64, &p, &n);

	if (st == CTAP2_OK)
		pin->has_param = true;
	return st;
}

static uint8_t ctap2_read_pin_protocol(struct ctap2_reader *rd, struct ctap2_pin_uv *pin)
{
	struct ctap2_ev ev;
	uint8_t st = ctap2_expect(rd, CTAP2_EV_UINT, &ev);

	if (st == CTAP2_OK)
		pin->has_protocol = true;
	return st;
}

/* ---- encoding ---- */

static int ctap2_enc_head(struct pks_buf *b, size_t n, const unsigned char *head)
{
	return n == 0 ? PKS_ERR_INTERNAL : pks_buf_append(b, head, n);
}

static int ctap2_enc_uint(struct pks_buf *b, uint64_t value)
{
	unsigned char head[9];

	return ctap2_enc_head(b, cbor_encode_uint(value, head, sizeof(head)), head);
}

static int ctap2_enc_int(struct pks_buf *b, int value)
{
	unsigned char head[9];

	if (value >= 0)
		return ctap2_enc_uint(b, (uint64_t)value);
	return ctap2_enc_head(b, cbor_encode_negint((uint64_t)(-1 - (int64_t)value), head, 9),
			      head);
}

static int ctap2_enc_bytes(struct pks_buf *b, const uint8_t *p, size_t len)
{
	unsigned char head[9];
	int r = ctap2_enc_head(b, cbor_encode_bytestring_start(len, head, sizeof(head)), head);

	if (r == PKS_OK && len > 0)
		r = pks_buf_append(b, p, len);
	return r;
}

static int ctap2_enc_text(struct pks_buf *b, const char *s)
{
	size_t len = strlen(s);
	unsigned char head[9];
	int r = ctap2_enc_head(b, cbor_encode_string_start(len, head, sizeof(head)), head);

	if (r == PKS_OK && len > 0)
		r = pks_buf_append(b, s, len);
	return r;
}

static int ctap2_enc_map(struct pks_buf *b, size_t n)
{
	unsigned char head[9];

	return ctap2_enc_head(b, cbor_encode_map_start(n, head, sizeof(head)), head);
}

static int ctap2_enc_array(struct pks_buf *b, size_t n)
{
	unsigned char head[9];

	return ctap2_enc_head(b, cbor_encode_array_start(n, head, sizeof(head)), head);
}

static int ctap2_enc_bool(struct pks_buf *b, bool value)
{
	unsigned char head[1];

	return ctap2_enc_head(b, cbor_encode_bool(value, head, sizeof(head)), head);
}

/* Text key then boolean value (options map). */
static int ctap2_enc_text_bool(struct pks_buf *b, const char *k, bool value)
{
	int r = ctap2_enc_text(b, k);

	return r == PKS_OK ? ctap2_enc_bool(b, value) : r;
}

/* {"alg": alg, "type": "public-key"}: canonical order puts shorter keys first. */
static int ctap2_enc_alg_param(struct pks_buf *b, int alg)
{
	int r;

	if ((r = ctap2_enc_map(b, 2)) != PKS_OK || (r = ctap2_enc_text(b, "alg")) != PKS_OK ||
	    (r = ctap2_enc_int(b, alg)) != PKS_OK || (r = ctap2_enc_text(b, "type")) != PKS_OK)
		return r;
	return ctap2_enc_text(b, CTAP2_PUBLIC_KEY);
}

/* Moves a finished response (status byte first) to the caller. */
static void ctap2_take(struct pks_buf *b, uint8_t **resp, size_t *resp_len)
{
	pks_buf_take(b, resp, resp_len);
}

/* A one-byte error response; on allocation failure *resp stays NULL. */
static void ctap2_error_resp(uint8_t st, uint8_t **resp, size_t *resp_len)
{
	uint8_t *p = malloc(1);

	if (p == NULL)
		return;
	p[0] = st;
	*resp = p;
	*resp_len = 1;
}

/* ---- getInfo ---- */

static uint8_t ctap2_get_info(struct ctap2 *c, uint8_t **resp, size_t *resp_len)
{
	struct pks_buf b;
	int r;

	pks_buf_init(&b, CTAP2_MSG_MAX);
	if ((r = pks_buf_u8(&b, CTAP2_OK)) != PKS_OK || (r = ctap2_enc_map(&b, 8)) != PKS_OK ||
	    /* 0x01 versions */
	    (r = ctap2_enc_uint(&b, 0x01)) != PKS_OK || (r = ctap2_enc_array(&b, 2)) != PKS_OK ||
	    (r = ctap2_enc_text(&b, "FIDO_2_0")) != PKS_OK ||
	    (r = ctap2_enc_text(&b, "FIDO_2_1")) != PKS_OK ||
	    /* 0x03 aaguid */
	    (r = ctap2_enc_uint(&b, 0x03)) != PKS_OK ||
	    (r = ctap2_enc_bytes(&b, c->aaguid, CTAP2_AAGUID_LEN)) != PKS_OK ||
	    /* 0x04 options, keys in canonical order (length, then bytes) */
	    (r = ctap2_enc_uint(&b, 0x04)) != PKS_OK || (r = ctap2_enc_map(&b, 4)) != PKS_OK ||
	    (r = ctap2_enc_text_bool(&b, "rk", true)) != PKS_OK ||
	    (r = ctap2_enc_text_bool(&b, "up", true)) != PKS_OK ||
	    (r = ctap2_enc_text_bool(&b, "uv", c->uv_configured)) != PKS_OK ||
	    (r = ctap2_enc_text_bool(&b, "plat", false)) != PKS_OK ||
	    /* 0x05 maxMsgSize */
	    (r = ctap2_enc_uint(&b, 0x05)) != PKS_OK ||
	    (r = ctap2_enc_uint(&b, CTAP2_MSG_MAX)) != PKS_OK ||
	    /* 0x07 maxCredentialCountInList, 0x08 maxCredentialIdLength */
	    (r = ctap2_enc_uint(&b, 0x07)) != PKS_OK ||
	    (r = ctap2_enc_uint(&b, CTAP2_LIST_MAX)) != PKS_OK ||
	    (r = ctap2_enc_uint(&b, 0x08)) != PKS_OK ||
	    (r = ctap2_enc_uint(&b, CTAP2_CRED_ID_MAX)) != PKS_OK ||
	    /* 0x09 transports */
	    (r = ctap2_enc_uint(&b, 0x09)) != PKS_OK || (r = ctap2_enc_array(&b, 1)) != PKS_OK ||
	    (r = ctap2_enc_text(&b, "usb")) != PKS_OK ||
	    /* 0x0A algorithms */
	    (r = ctap2_enc_uint(&b, 0x0a)) != PKS_OK || (r = ctap2_enc_array(&b, 2)) != PKS_OK ||
	    (r = ctap2_enc_alg_param(&b, PASSKEY_ALG_ES256)) != PKS_OK ||
	    (r = ctap2_enc_alg_param(&b, PASSKEY_ALG_EDDSA)) != PKS_OK)
		goto out;
	ctap2_take(&b, resp, resp_len);
out:
	pks_buf_free(&b);
	return r == PKS_OK ? CTAP2_OK : CTAP1_ERR_OTHER;
}

/* ---- makeCredential ---- */

static uint8_t ctap2_make_begin(struct ctap2 *c, struct ctap2_reader *rd,
				struct ctap2_pending *pending)
{
	struct ctap2_make_req *m = &c->make;
	struct ctap2_options opt = {0};
	struct ctap2_pin_uv pin = {0};
	struct ctap2_allow *exclude = NULL;
	struct ctap2_cred *found = NULL;
	bool exclude_given = false, has_ea = false;
	uint32_t seen = 0;
	uint64_t n = 0, key;
	size_t n_found = 0;
	uint8_t st;

	memset(m, 0, sizeof(*m));
	exclude = calloc(1, sizeof(*exclude));
	if (exclude == NULL) {
		st = CTAP1_ERR_OTHER;
		goto out;
	}
	st = ctap2_read_params_head(rd, &n);
	for (uint64_t i = 0; st == CTAP2_OK && i < n; i++) {
		const uint8_t *p;
		size_t len;

		if ((st = ctap2_read_param_key(rd, &seen, &key)) != CTAP2_OK)
			break;
		switch (key) {
		case 0x01:
			st = ctap2_read_bytes(rd, CTAP2_CLIENT_DATA_HASH_LEN,
					      CTAP2_CLIENT_DATA_HASH_LEN, &p, &len);
			if (st == CTAP2_OK)
				memcpy(m->cdh, p, len);
			break;
		case 0x02:
			st = ctap2_parse_rp(rd, m);
			break;
		case 0x03:
			st = ctap2_parse_user(rd, m);
			break;
		case 0x04:
			st = ctap2_parse_params(rd, &m->alg);
			break;
		case 0x05:
			st = ctap2_parse_list(rd, exclude, &exclude_given);
			break;
		case 0x06: /* extensions: none supported, ignored */
			st = ctap2_skip_map(rd);
			break;
		case 0x07:
			st = ctap2_parse_options(rd, &opt);
			break;
		case 0x08:
			st = ctap2_read_pin_param(rd, &pin);
			break;
		case 0x09:
			st = ctap2_read_pin_protocol(rd, &pin);
			break;
		case 0x0a:
			has_ea = true;
			st = ctap2_skip(rd, 0);
			break;
		default:
			st = ctap2_skip(rd, 0);
			break;
		}
	}
	if (st == CTAP2_OK)
		st = ctap2_read_end(rd);
	if (st != CTAP2_OK)
		goto out;
	if ((seen & 0x1e) != 0x1e) {
		st = CTAP2_ERR_MISSING_PARAMETER;
		goto out;
	}
	if ((st = ctap2_pin_uv_status(&pin)) != CTAP2_OK)
		goto out;
	if (m->alg == 0) {
		st = CTAP2_ERR_UNSUPPORTED_ALGORITHM;
		goto out;
	}
	if (opt.has_up && !opt.up) {
		st = CTAP2_ERR_INVALID_OPTION;
		goto out;
	}
	if (opt.has_uv && opt.uv && !c->uv_configured) {
		st = CTAP2_ERR_UNSUPPORTED_OPTION;
		goto out;
	}
	if (has_ea) {
		st = CTAP1_ERR_INVALID_PARAMETER;
		goto out;
	}
	m->uv = opt.has_uv && opt.uv;
	if (exclude->count > 0) {
		found = calloc(1, sizeof(*found));
		if (found == NULL) {
			st = CTAP1_ERR_OTHER;
			goto out;
		}
		st = ctap2_backend_status(
		    c->be.find(c->be_user, m->rp_id, exclude, found, 1, &n_found));
		if (st != CTAP2_OK)
			goto out;
		if (n_found > 1) {
			st = CTAP1_ERR_OTHER;
			goto out;
		}
		if (n_found == 1)
			ctap2_release(c, found);
		m->excluded = n_found > 0;
	}
	c->op = CTAP2_OP_MAKE;
	pending->needs_up = true;
	pending->needs_uv = m->uv;
	pending->make = true;
	pending->excluded = m->excluded;
	pending->op = CTAP2_OP_MAKE;
	memcpy(pending->rp_id, m->rp_id, sizeof(pending->rp_id));
	memcpy(pending->rp_name, m->rp_name, sizeof(pending->rp_name));
	memcpy(pending->user, m->user_name[0] ? m->user_name : m->display_name,
	       sizeof(pending->user));
out:
	free(exclude);
	free(found);
	return st;
}

/* Attested credential data after the 37-byte header, then the response map. */
static uint8_t ctap2_make_finish(struct ctap2 *c, bool verified, uint8_t **resp, size_t *resp_len)
{
	struct ctap2_make_req *m = &c->make;
	struct ctap2_cred *cred = NULL;
	uint8_t cose[CTAP2_COSE_KEY_MAX];
	uint8_t head[PASSKEY_AUTHDATA_LEN];
	size_t cose_len = 0;
	struct pks_buf ad, b;
	bool created = false;
	uint8_t flags = CTAP2_FLAG_UP | CTAP2_FLAG_AT | CTAP2_FLAG_BE | CTAP2_FLAG_BS;
	uint8_t st = CTAP1_ERR_OTHER;
	int r;

	pks_buf_init(&ad, CTAP2_MSG_MAX);
	pks_buf_init(&b, CTAP2_MSG_MAX);
	cred = calloc(1, sizeof(*cred));
	if (cred == NULL)
		goto out;
	r = c->be.create(c->be_user, m->rp_id, m->rp_name, m->user_id, m->user_id_len, m->user_name,
			 m->display_name, m->alg, cred, cose, sizeof(cose), &cose_len);
	if (r != PKS_OK) {
		st = r == PKS_ERR_TOO_LARGE ? CTAP2_ERR_KEY_STORE_FULL : ctap2_backend_status(r);
		goto out;
	}
	created = true;
	if (!ctap2_cred_valid(cred) || cose_len == 0 || cose_len > sizeof(cose))
		goto out;
	if (verified)
		flags |= CTAP2_FLAG_UV;
	if (passkey_authenticator_data(m->rp_id, flags, 0, head) != PKS_OK)
		goto out;
	if ((r = pks_buf_append(&ad, head, sizeof(head))) != PKS_OK ||
	    (r = pks_buf_append(&ad, c->aaguid, CTAP2_AAGUID_LEN)) != PKS_OK ||
	    (r = pks_buf_be16(&ad, (uint16_t)cred->id_len)) != PKS_OK ||
	    (r = pks_buf_append(&ad, cred->id, cred->id_len)) != PKS_OK ||
	    (r = pks_buf_append(&ad, cose, cose_len)) != PKS_OK)
		goto out;
	if ((r = pks_buf_u8(&b, CTAP2_OK)) != PKS_OK || (r = ctap2_enc_map(&b, 3)) != PKS_OK ||
	    (r = ctap2_enc_uint(&b, 0x01)) != PKS_OK ||
	    (r = ctap2_enc_text(&b, "none")) != PKS_OK ||
	    (r = ctap2_enc_uint(&b, 0x02)) != PKS_OK ||
	    (r = ctap2_enc_bytes(&b, ad.data, ad.len)) != PKS_OK ||
	    (r = ctap2_enc_uint(&b, 0x03)) != PKS_OK || (r = ctap2_enc_map(&b, 0)) != PKS_OK)
		goto out;
	ctap2_take(&b, resp, resp_len);
	st = CTAP2_OK;
out:
	if (created)
		ctap2_release(c, cred);
	free(cred);
	pks_buf_free(&ad);
	pks_buf_free(&b);
	return st;
}

/* ---- getAssertion ---- */

static uint8_t ctap2_get_begin(struct ctap2 *c, struct ctap2_reader *rd,
			       struct ctap2_pending *pending)
{
	struct ctap2_options opt = {0};
	struct ctap2_pin_uv pin = {0};
	struct ctap2_allow *allow = NULL;
	bool allow_given = false;
	uint32_t seen = 0;
	uint64_t n = 0, key;
	size_t found = 0, max = CTAP2_ASSERTION_CREDS_MAX;
	uint8_t st;

	allow = calloc(1, sizeof(*allow));
	if (allow == NULL) {
		st = CTAP1_ERR_OTHER;
		goto out;
	}
	st = ctap2_read_params_head(rd, &n);
	for (uint64_t i = 0; st == CTAP2_OK && i < n; i++) {
		const uint8_t *p;
		size_t len;

		if ((st = ctap2_read_param_key(rd, &seen, &key)) != CTAP2_OK)
			break;
		switch (key) {
		case 0x01:
			st =
			    ctap2_read_text(rd, CTAP2_RP_ID_MAX, false, c->rp_id, sizeof(c->rp_id));
			if (st == CTAP2_OK && c->rp_id[0] == '\0')
				st = CTAP1_ERR_INVALID_LENGTH;
			break;
		case 0x02:
			st = ctap2_read_bytes(rd, CTAP2_CLIENT_DATA_HASH_LEN,
					      CTAP2_CLIENT_DATA_HASH_LEN, &p, &len);
			if (st == CTAP2_OK)
				memcpy(c->cdh, p, len);
			break;
		case 0x03:
			st = ctap2_parse_list(rd, allow, &allow_given);
			break;
		case 0x04:
			st = ctap2_skip_map(rd);
			break;
		case 0x05:
			st = ctap2_parse_options(rd, &opt);
			break;
		case 0x06:
			st = ctap2_read_pin_param(rd, &pin);
			break;
		case 0x07:
			st = ctap2_read_pin_protocol(rd, &pin);
			break;
		default:
			st = ctap2_skip(rd, 0);
			break;
		}
	}
	if (st == CTAP2_OK)
		st = ctap2_read_end(rd);
	if (st != CTAP2_OK)
		goto out;
	if ((seen & 0x06) != 0x06) {
		st = CTAP2_ERR_MISSING_PARAMETER;
		goto out;
	}
	if ((st = ctap2_pin_uv_status(&pin)) != CTAP2_OK)
		goto out;
	if (opt.has_rk || (opt.has_uv && opt.uv && !c->uv_configured)) {
		st = CTAP2_ERR_UNSUPPORTED_OPTION;
		goto out;
	}
	c->get_up = !opt.has_up || opt.up;
	c->get_uv = opt.has_uv && opt.uv;
	c->get_discoverable = !allow_given;
	if (allow_given && allow->count == 0) {
		st = CTAP2_ERR_NO_CREDENTIALS;
		goto out;
	}
	st = ctap2_backend_status(
	    c->be.find(c->be_user, c->rp_id, allow_given ? allow : NULL, c->creds, max, &found));
	if (st != CTAP2_OK)
		goto out;
	if (found > max) {
		st = CTAP1_ERR_OTHER;
		goto out;
	}
	c->n_creds = found;
	for (size_t i = 0; i < found; i++) {
		if (!ctap2_cred_valid(&c->creds[i])) {
			st = CTAP1_ERR_OTHER;
			goto out;
		}
	}
	if (found == 0) {
		st = CTAP2_ERR_NO_CREDENTIALS;
		goto out;
	}
	/* With an allowList the platform learns nothing from more than one. */
	while (!c->get_discoverable && c->n_creds > 1)
		ctap2_release(c, &c->creds[--c->n_creds]);
	c->op = CTAP2_OP_GET;
	pending->needs_up = c->get_up || c->get_uv;
	pending->needs_uv = c->get_uv;
	pending->op = CTAP2_OP_GET;
	pending->n_creds = c->n_creds;
	memcpy(pending->rp_id, c->rp_id, sizeof(pending->rp_id));
	memcpy(pending->user,
	       c->creds[0].user_name[0] ? c->creds[0].user_name : c->creds[0].display_name,
	       sizeof(pending->user));
out:
	if (st != CTAP2_OK)
		ctap2_drop_creds(c);
	free(allow);
	return st;
}

/* The user entity: id, plus names when the platform has to let the person choose. */
static int ctap2_enc_user(struct pks_buf *b, const struct ctap2_cred *cred, bool names)
{
	bool has_name = names && cred->user_name[0] != '\0';
	bool has_display = names && cred->display_name[0] != '\0';
	int r;

	if ((r = ctap2_enc_map(b, 1 + (size_t)has_name + (size_t)has_display)) != PKS_OK ||
	    (r = ctap2_enc_text(b, "id")) != PKS_OK ||
	    (r = ctap2_enc_bytes(b, cred->user_id, cred->user_id_len)) != PKS_OK)
		return r;
	if (has_name && ((r = ctap2_enc_text(b, "name")) != PKS_OK ||
			 (r = ctap2_enc_text(b, cred->user_name)) != PKS_OK))
		return r;
	if (has_display && ((r = ctap2_enc_text(b, "displayName")) != PKS_OK ||
			    (r = ctap2_enc_text(b, cred->display_name)) != PKS_OK))
		return r;
	return PKS_OK;
}

/* The assertion by creds[index]; the first one carries numberOfCredentials. */
static uint8_t ctap2_assertion(struct ctap2 *c, size_t index, uint8_t **resp, size_t *resp_len)
{
	const struct ctap2_cred *cred = &c->creds[index];
	uint8_t msg[PASSKEY_AUTHDATA_LEN + CTAP2_CLIENT_DATA_HASH_LEN];
	uint8_t sig[CTAP2_SIG_MAX];
	size_t sig_len = 0;
	bool several = c->get_discoverable && c->n_creds > 1;
	bool count = several && index == 0;
	uint8_t flags = c->get_flags;
	struct pks_buf b;
	uint8_t st = CTAP1_ERR_OTHER;
	int r;

	pks_buf_init(&b, CTAP2_MSG_MAX);
	if (cred->be)
		flags |= CTAP2_FLAG_BE;
	if (cred->bs)
		flags |= CTAP2_FLAG_BS;
	if (passkey_authenticator_data(c->rp_id, flags, 0, msg) != PKS_OK)
		goto out;
	memcpy(msg + PASSKEY_AUTHDATA_LEN, c->cdh, CTAP2_CLIENT_DATA_HASH_LEN);
	r = c->be.sign(c->be_user, cred, msg, sizeof(msg), sig, sizeof(sig), &sig_len);
	if (r != PKS_OK) {
		st = ctap2_backend_status(r);
		goto out;
	}
	if (sig_len == 0 || sig_len > sizeof(sig))
		goto out;
	if ((r = pks_buf_u8(&b, CTAP2_OK)) != PKS_OK ||
	    (r = ctap2_enc_map(&b, count ? 5 : 4)) != PKS_OK ||
	    (r = ctap2_enc_uint(&b, 0x01)) != PKS_OK || (r = ctap2_enc_map(&b, 2)) != PKS_OK ||
	    (r = ctap2_enc_text(&b, "id")) != PKS_OK ||
	    (r = ctap2_enc_bytes(&b, cred->id, cred->id_len)) != PKS_OK ||
	    (r = ctap2_enc_text(&b, "type")) != PKS_OK ||
	    (r = ctap2_enc_text(&b, CTAP2_PUBLIC_KEY)) != PKS_OK ||
	    (r = ctap2_enc_uint(&b, 0x02)) != PKS_OK ||
	    (r = ctap2_enc_bytes(&b, msg, PASSKEY_AUTHDATA_LEN)) != PKS_OK ||
	    (r = ctap2_enc_uint(&b, 0x03)) != PKS_OK ||
	    (r = ctap2_enc_bytes(&b, sig, sig_len)) != PKS_OK ||
	    (r = ctap2_enc_uint(&b, 0x04)) != PKS_OK ||
	    (r = ctap2_enc_user(&b, cred, several)) != PKS_OK)
		goto out;
	if (count && ((r = ctap2_enc_uint(&b, 0x05)) != PKS_OK ||
		      (r = ctap2_enc_uint(&b, c->n_creds)) != PKS_OK))
		goto out;
	ctap2_take(&b, resp, resp_len);
	st = CTAP2_OK;
out:
	pks_buf_free(&b);
	sodium_memzero(msg, sizeof(msg));
	return st;
}

/* The first assertion; keeps the others for getNextAssertion. */
static uint8_t ctap2_get_respond(struct ctap2 *c, bool verified, uint64_t now_ms, uint8_t **resp,
				 size_t *resp_len)
{
	uint8_t st;

	c->get_flags = (c->get_up ? CTAP2_FLAG_UP : 0) | (verified ? CTAP2_FLAG_UV : 0);
	st = ctap2_assertion(c, 0, resp, resp_len);
	if (st == CTAP2_OK && c->n_creds > 1) {
		c->next = 1;
		c->next_active = true;
		c->next_at_ms = now_ms;
	} else {
		ctap2_drop_creds(c);
	}
	return st;
}

static uint8_t ctap2_get_next(struct ctap2 *c, uint64_t now_ms, uint8_t **resp, size_t *resp_len)
{
	uint8_t st;

	if (!c->next_active || c->next >= c->n_creds || now_ms < c->next_at_ms ||
	    now_ms - c->next_at_ms > CTAP2_NEXT_ASSERTION_MS) {
		ctap2_drop_creds(c);
		return CTAP2_ERR_NOT_ALLOWED;
	}
	st = ctap2_assertion(c, c->next, resp, resp_len);
	c->next++;
	c->next_at_ms = now_ms;
	if (st != CTAP2_OK || c->next >= c->n_creds)
		ctap2_drop_creds(c);
	return st;
}

/* ---- API ---- */

int ctap2_new(const struct ctap2_backend *be, void *be_user, const uint8_t aaguid[CTAP2_AAGUID_LEN],
	      bool uv_configured, struct ctap2 **out)
{
	struct ctap2 *c = NULL;
	int r = PKS_ERR_INVALID;

	if (be == NULL || be->find == NULL || be->create == NULL || be->sign == NULL ||
	    aaguid == NULL || out == NULL)
		goto out;
	r = PKS_ERR_NOMEM;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto out;
	c->creds = calloc(CTAP2_ASSERTION_CREDS_MAX, sizeof(*c->creds));
	if (c->creds == NULL)
		goto out;
	c->be = *be;
	c->be_user = be_user;
	memcpy(c->aaguid, aaguid, CTAP2_AAGUID_LEN);
	c->uv_configured = uv_configured;
	*out = c;
	c = NULL;
	r = PKS_OK;
out:
	ctap2_free(c);
	return r;
}

void ctap2_free(struct ctap2 *c)
{
	if (c == NULL)
		return;
	if (c->creds != NULL) {
		ctap2_reset_state(c);
		free(c->creds);
	}
	sodium_memzero(c, sizeof(*c));
	free(c);
}

void ctap2_cancel(struct ctap2 *c)
{
	if (c != NULL && c->op != CTAP2_OP_NONE)
		ctap2_reset_state(c);
}

uint8_t ctap2_begin(struct ctap2 *c, const uint8_t *req, size_t len, uint64_t now_ms,
		    struct ctap2_pending *pending, uint8_t **resp, size_t *resp_len)
{
	struct ctap2_reader rd;
	uint8_t st = CTAP1_ERR_OTHER;
	uint8_t cmd;

	if (resp == NULL || resp_len == NULL)
		return CTAP1_ERR_OTHER;
	*resp = NULL;
	*resp_len = 0;
	if (pending == NULL || c == NULL)
		goto out;
	memset(pending, 0, sizeof(*pending));
	/* A request still pending was abandoned by the host. */
	if (c->op != CTAP2_OP_NONE)
		ctap2_reset_state(c);
	if (req == NULL || len == 0) {
		st = CTAP1_ERR_INVALID_LENGTH;
		goto out;
	}
	if (len > CTAP2_MSG_MAX) {
		st = CTAP2_ERR_REQUEST_TOO_LARGE;
		ctap2_reset_state(c);
		goto out;
	}
	cmd = req[0];
	if (cmd != CTAP2_CMD_GET_NEXT_ASSERTION)
		ctap2_reset_state(c);
	rd = (struct ctap2_reader){req + 1, len - 1, 0};
	switch (cmd) {
	case CTAP2_CMD_MAKE_CREDENTIAL:
		st = ctap2_make_begin(c, &rd, pending);
		break;
	case CTAP2_CMD_GET_ASSERTION:
		st = ctap2_get_begin(c, &rd, pending);
		if (st == CTAP2_OK && !pending->needs_up) {
			c->op = CTAP2_OP_NONE;
			memset(pending, 0, sizeof(*pending));
			st = ctap2_get_respond(c, false, now_ms, resp, resp_len);
		}
		break;
	case CTAP2_CMD_GET_INFO:
		st = len == 1 ? ctap2_get_info(c, resp, resp_len) : CTAP1_ERR_INVALID_LENGTH;
		break;
	case CTAP2_CMD_GET_NEXT_ASSERTION:
		st =
		    len == 1 ? ctap2_get_next(c, now_ms, resp, resp_len) : CTAP1_ERR_INVALID_LENGTH;
		if (len != 1)
			ctap2_drop_creds(c);
		break;
	case CTAP2_CMD_RESET:
		/* Wiping a synced vault from a browser is never right. */
		st = CTAP2_ERR_NOT_ALLOWED;
		break;
	case CTAP2_CMD_SELECTION:
		if (len != 1) {
			st = CTAP1_ERR_INVALID_LENGTH;
			break;
		}
		c->op = CTAP2_OP_SELECT;
		pending->needs_up = true;
		pending->op = CTAP2_OP_SELECT;
		st = CTAP2_OK;
		break;
	default:
		st = CTAP1_ERR_INVALID_COMMAND;
		break;
	}
out:
	if (st != CTAP2_OK) {
		if (c != NULL && c->op != CTAP2_OP_NONE)
			ctap2_reset_state(c);
		if (pending != NULL)
			memset(pending, 0, sizeof(*pending));
		free(*resp);
		*resp = NULL;
		*resp_len = 0;
		ctap2_error_resp(st, resp, resp_len);
	} else if (pending->needs_up) {
		free(*resp);
		*resp = NULL;
		*resp_len = 0;
	}
	return st;
}

/* The status for the person's answer; CTAP2_OK lets the request go on. */
static uint8_t ctap2_outcome_status(int outcome, bool needs_uv, bool *verified)
{
	*verified = false;
	switch ((enum ctap2_outcome)outcome) {
	case CTAP2_OUTCOME_PRESENT:
		return needs_uv ? CTAP2_ERR_OPERATION_DENIED : CTAP2_OK;
	case CTAP2_OUTCOME_VERIFIED:
		*verified = true;
		return CTAP2_OK;
	case CTAP2_OUTCOME_DENIED:
		return CTAP2_ERR_OPERATION_DENIED;
	case CTAP2_OUTCOME_CANCELLED:
		return CTAP2_ERR_KEEPALIVE_CANCEL;
	case CTAP2_OUTCOME_TIMEOUT:
		return CTAP2_ERR_USER_ACTION_TIMEOUT;
	}
	return CTAP1_ERR_OTHER;
}

uint8_t ctap2_finish(struct ctap2 *c, int outcome, uint64_t now_ms, uint8_t **resp,
		     size_t *resp_len)
{
	enum ctap2_op op;
	bool verified = false, needs_uv;
	uint8_t st;

	if (resp == NULL || resp_len == NULL)
		return CTAP1_ERR_OTHER;
	*resp = NULL;
	*resp_len = 0;
	if (c == NULL || c->op == CTAP2_OP_NONE) {
		st = CTAP2_ERR_NOT_ALLOWED;
		goto out;
	}
	op = c->op;
	c->op = CTAP2_OP_NONE;
	needs_uv = (op == CTAP2_OP_MAKE && c->make.uv) || (op == CTAP2_OP_GET && c->get_uv);
	st = ctap2_outcome_status(outcome, needs_uv, &verified);
	if (st != CTAP2_OK)
		goto out;
	switch (op) {
	case CTAP2_OP_MAKE:
		st = c->make.excluded ? CTAP2_ERR_CREDENTIAL_EXCLUDED
				      : ctap2_make_finish(c, verified, resp, resp_len);
		break;
	case CTAP2_OP_GET:
		st = ctap2_get_respond(c, verified, now_ms, resp, resp_len);
		break;
	case CTAP2_OP_SELECT:
		ctap2_error_resp(CTAP2_OK, resp, resp_len);
		break;
	case CTAP2_OP_NONE:
		st = CTAP1_ERR_OTHER;
		break;
	}
out:
	if (c != NULL) {
		sodium_memzero(&c->make, sizeof(c->make));
		if (st != CTAP2_OK)
			ctap2_drop_creds(c);
	}
	if (st != CTAP2_OK) {
		free(*resp);
		*resp = NULL;
		*resp_len = 0;
		ctap2_error_resp(st, resp, resp_len);
	}
	return st;
}
