/*
 * Passkey import: CXF 1.x, KeePassXC .passkey and Bitwarden JSON, read with
 * jansson (duplicate keys rejected). A file is accepted whole or refused
 * whole, and the refusal names the member at fault.
 *
 * Private keys are decoded into one sodium_malloc'd scratch buffer, checked
 * and normalised through passkey.c, and packed into the list's key block.
 * The JSON tree's strings are wiped before it is freed. jansson's lexer
 * frees its own working buffers without wiping them; only a wiping
 * allocator installed with json_set_alloc_funcs() would close that gap.
 */
#include "agent/import.h"

#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

#define IMPORT_PLACE_MAX 160
#define IMPORT_URL_MAX 2048
#define IMPORT_PEM_MAX 1024
/* Unix seconds of 9999-12-31T23:59:59Z: later creation times are nonsense. */
#define IMPORT_TIME_MAX_S 253402300799ull

struct import_ctx {
	char *err;
	size_t err_len;
	struct passkey_item *items;
	char **places;
	size_t *key_off;
	size_t count, cap;
	size_t found;
	/* All accepted private keys, back to back. */
	uint8_t *keys;
	size_t keys_len, keys_cap;
	/* Working memory for one key: base64 text and DER. */
	uint8_t *scratch;
	const char *source;
};

#define IMPORT_SCRATCH_B64 0
#define IMPORT_SCRATCH_DER (IMPORT_PEM_MAX)
#define IMPORT_SCRATCH_NORM (IMPORT_PEM_MAX + PASSKEY_PKCS8_MAX)
#define IMPORT_SCRATCH_LEN (IMPORT_PEM_MAX + 2 * PASSKEY_PKCS8_MAX)

/* The fields of one passkey while it is being read; the pointers are borrowed. */
struct import_fields {
	const char *rp_id;
	uint8_t *credential_id;
	size_t credential_id_len;
	uint8_t *user_handle;
	size_t user_handle_len;
	const char *user_name;
	const char *display_name;
	const char *notes;
	const uint8_t *key;
	size_t key_len;
	int want_alg; /* 0: any accepted algorithm */
	bool backup_eligible, backup_state;
	uint64_t created_at_ms;
};

__attribute__((format(printf, 4, 5))) static int
import_fail(struct import_ctx *c, int r, const char *place, const char *fmt, ...)
{
	va_list ap;
	size_t k = 0;

	if (c->err == NULL || c->err_len == 0 || c->err[0] != '\0')
		return r;
	if (place != NULL && place[0] != '\0') {
		snprintf(c->err, c->err_len, "%s: ", place);
		k = strlen(c->err);
	}
	if (k < c->err_len) {
		va_start(ap, fmt);
		vsnprintf(c->err + k, c->err_len - k, fmt, ap);
		va_end(ap);
	}
	return r;
}

/*
 * Places are short (the deepest is about 110 bytes with 20-digit indices);
 * should one ever be cut, it ends in "..." rather than silently.
 */
static void import_place_done(char *dst, int n)
{
	if (n < 0 || n >= IMPORT_PLACE_MAX)
		memcpy(dst + IMPORT_PLACE_MAX - 4, "...", 4);
}

/* place + "." + name (or name alone at the top). */
static void import_place_member(char *dst, const char *place, const char *name)
{
	int n;

	if (place[0] == '\0')
		n = snprintf(dst, IMPORT_PLACE_MAX, "%s", name);
	else
		n = snprintf(dst, IMPORT_PLACE_MAX, "%s.%s", place, name);
	import_place_done(dst, n);
}

/* place + "." + name + "[i]". */
static void import_place_index(char *dst, const char *place, const char *name, size_t i)
{
	int n;

	if (place[0] == '\0')
		n = snprintf(dst, IMPORT_PLACE_MAX, "%s[%zu]", name, i);
	else
		n = snprintf(dst, IMPORT_PLACE_MAX, "%s.%s[%zu]", place, name, i);
	import_place_done(dst, n);
}

/* ---- pre-scan ---- */

/*
 * jansson recurses once per nesting level (up to 2048 levels); we refuse
 * anything deeper than IMPORT_MAX_DEPTH before it starts, so neither its
 * parser nor our tree walks can go deep.
 */
static int import_check_depth(struct import_ctx *c, const uint8_t *data, size_t len)
{
	size_t depth = 0, line = 1, col = 0;
	bool in_string = false, escaped = false;

	for (size_t i = 0; i < len; i++) {
		uint8_t ch = data[i];

		col++;
		if (ch == '\n') {
			line++;
			col = 0;
		}
		if (in_string) {
			if (escaped)
				escaped = false;
			else if (ch == '\\')
				escaped = true;
			else if (ch == '"')
				in_string = false;
			continue;
		}
		if (ch == '"') {
			in_string = true;
		} else if (ch == '[' || ch == '{') {
			if (++depth > IMPORT_MAX_DEPTH)
				return import_fail(c, PKS_ERR_TOO_LARGE, NULL,
						   "line %zu, column %zu: JSON nested deeper than "
						   "%d levels",
						   line, col, IMPORT_MAX_DEPTH);
		} else if ((ch == ']' || ch == '}') && depth > 0) {
			depth--;
		}
	}
	return PKS_OK;
}

/* Wipes every string (values and keys) of a tree no deeper than IMPORT_MAX_DEPTH. */
static void import_wipe_json(json_t *j)
{
	const char *k;
	json_t *v;
	size_t i;

	if (json_is_string(j)) {
		sodium_memzero((char *)json_string_value(j), json_string_length(j));
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v) import_wipe_json(v);
	} else if (json_is_object(j)) {
		json_object_foreach(j, k, v) import_wipe_json(v);
	}
}

/* ---- members ---- */

/*
 * A string member: NULL in *out when absent or null and not required.
 * Bounds are in bytes; NUL bytes inside are refused.
 */
static int import_string(struct import_ctx *c, const json_t *obj, const char *place,
			 const char *name, bool required, size_t min, size_t max, const char **out,
			 size_t *out_len)
{
	char where[IMPORT_PLACE_MAX];
	json_t *v = json_object_get(obj, name);
	size_t n;

	import_place_member(where, place, name);
	*out = NULL;
	if (out_len != NULL)
		*out_len = 0;
	if (v == NULL || json_is_null(v)) {
		if (required)
			return import_fail(c, PKS_ERR_MALFORMED, where, "missing");
		return PKS_OK;
	}
	if (!json_is_string(v))
		return import_fail(c, PKS_ERR_MALFORMED, where, "not a string");
	n = json_string_length(v);
	if (strlen(json_string_value(v)) != n)
		return import_fail(c, PKS_ERR_MALFORMED, where, "contains a NUL character");
	if (n < min)
		return import_fail(c, PKS_ERR_MALFORMED, where, "empty");
	if (n > max)
		return import_fail(c, PKS_ERR_TOO_LARGE, where, "longer than %zu bytes", max);
	*out = json_string_value(v);
	if (out_len != NULL)
		*out_len = n;
	return PKS_OK;
}

static int import_bool(struct import_ctx *c, const json_t *obj, const char *place, const char *name,
		       bool dflt, bool *out)
{
	char where[IMPORT_PLACE_MAX];
	json_t *v = json_object_get(obj, name);

	if (v == NULL || json_is_null(v)) {
		*out = dflt;
		return PKS_OK;
	}
	if (!json_is_boolean(v)) {
		import_place_member(where, place, name);
		return import_fail(c, PKS_ERR_MALFORMED, where, "not true or false");
	}
	*out = json_is_true(v);
	return PKS_OK;
}

/*
 * Strict base64 (url alphabet, or the standard one when std is set) of s:
 * padding optional for url, required for std; every other character refused.
 * Returns PKS_ERR_TOO_LARGE when the result would exceed cap.
 */
static int import_base64_decode(const char *s, size_t len, bool std, uint8_t *out, size_t cap,
				size_t *out_len)
{
	size_t n = len, bin_len = 0;

	while (n > 0 && s[n - 1] == '=' && len - n < 2)
		n--;
	if (n != len && len % 4 != 0)
		return PKS_ERR_MALFORMED;
	if (std && len % 4 != 0)
		return PKS_ERR_MALFORMED;
	if (n % 4 == 1)
		return PKS_ERR_MALFORMED;
	if (n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > cap)
		return PKS_ERR_TOO_LARGE;
	if (sodium_base642bin(out, cap, s, n, NULL, &bin_len, NULL,
			      std ? sodium_base64_VARIANT_ORIGINAL_NO_PADDING
				  : sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
		return PKS_ERR_MALFORMED;
	*out_len = bin_len;
	return PKS_OK;
}

/* A base64url member decoded into a new malloc'd buffer of min..max bytes. */
static int import_b64url(struct import_ctx *c, const json_t *obj, const char *place,
			 const char *name, size_t min, size_t max, uint8_t **out, size_t *out_len)
{
	char where[IMPORT_PLACE_MAX];
	const char *s;
	size_t n, bin_len = 0;
	uint8_t *buf = NULL;
	int r;

	/* Length is checked on the decoded bytes, so the message names the real limit. */
	r = import_string(c, obj, place, name, true, 1, IMPORT_MAX_INPUT, &s, &n);
	if (r != PKS_OK)
		return r;
	import_place_member(where, place, name);
	buf = malloc(max);
	if (buf == NULL)
		return import_fail(c, PKS_ERR_NOMEM, where, "out of memory");
	r = import_base64_decode(s, n, false, buf, max, &bin_len);
	if (r == PKS_ERR_TOO_LARGE)
		import_fail(c, r, where, "longer than %zu bytes", max);
	else if (r != PKS_OK)
		import_fail(c, r, where, "not valid base64url");
	else if (bin_len < min)
		r = import_fail(c, PKS_ERR_MALFORMED, where, "empty");
	if (r != PKS_OK) {
		free(buf);
		return r;
	}
	*out = buf;
	*out_len = bin_len;
	return PKS_OK;
}

/* A base64url PKCS#8 member decoded into the scratch DER area. */
static int import_key_b64url(struct import_ctx *c, const json_t *obj, const char *place,
			     const char *name, struct import_fields *f)
{
	char where[IMPORT_PLACE_MAX];
	const char *s;
	size_t n, bin_len = 0;
	int r;

	import_place_member(where, place, name);
	r = import_string(c, obj, place, name, true, 1, IMPORT_MAX_INPUT, &s, &n);
	if (r != PKS_OK)
		return r;
	r = import_base64_decode(s, n, false, c->scratch + IMPORT_SCRATCH_DER, PASSKEY_PKCS8_MAX,
				 &bin_len);
	if (r == PKS_ERR_TOO_LARGE)
		return import_fail(c, r, where, "longer than %d bytes", PASSKEY_PKCS8_MAX);
	if (r != PKS_OK)
		return import_fail(c, r, where, "not valid base64url");
	f->key = c->scratch + IMPORT_SCRATCH_DER;
	f->key_len = bin_len;
	return PKS_OK;
}

static bool import_is_b64_std_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '+' || ch == '/' || ch == '=';
}

/* Length of a line break at s (LF or CRLF), or 0. */
static size_t import_eol(const char *s, size_t left)
{
	if (left >= 1 && s[0] == '\n')
		return 1;
	if (left >= 2 && s[0] == '\r' && s[1] == '\n')
		return 2;
	return 0;
}

/*
 * A PEM "PRIVATE KEY" block: exact markers, base64 lines of at most 76
 * characters, LF or CRLF line ends, one optional line end after the END
 * marker and nothing else. The DER goes to the scratch DER area.
 */
static int import_key_pem(struct import_ctx *c, const json_t *obj, const char *place,
			  const char *name, struct import_fields *f)
{
	static const char begin[] = "-----BEGIN PRIVATE KEY-----";
	static const char end[] = "-----END PRIVATE KEY-----";
	char where[IMPORT_PLACE_MAX];
	char *b64 = (char *)c->scratch + IMPORT_SCRATCH_B64;
	const char *s;
	size_t n, pos, b64_len = 0, bin_len = 0, e;
	int r;

	import_place_member(where, place, name);
	r = import_string(c, obj, place, name, true, 1, IMPORT_PEM_MAX, &s, &n);
	if (r != PKS_OK)
		return r;
	if (n >= 16 && strncmp(s, "-----BEGIN ENCRYPTED PRIVATE KEY", 32) == 0)
		return import_fail(c, PKS_ERR_UNSUPPORTED, where,
				   "an encrypted private key is not supported");
	if (n < sizeof(begin) - 1 || memcmp(s, begin, sizeof(begin) - 1) != 0)
		return import_fail(c, PKS_ERR_MALFORMED, where,
				   "not a PEM block starting with \"%s\"", begin);
	pos = sizeof(begin) - 1;
	e = import_eol(s + pos, n - pos);
	if (e == 0)
		return import_fail(c, PKS_ERR_MALFORMED, where,
				   "no line break after the PEM header");
	pos += e;
	for (;;) {
		size_t line = 0;

		if (n - pos >= sizeof(end) - 1 && memcmp(s + pos, end, sizeof(end) - 1) == 0)
			break;
		while (pos < n && import_is_b64_std_char(s[pos])) {
			if (b64_len >= IMPORT_PEM_MAX - 1 || ++line > 76)
				return import_fail(c, PKS_ERR_MALFORMED, where,
						   "a PEM line is longer than 76 characters");
			b64[b64_len++] = s[pos++];
		}
		e = import_eol(s + pos, n - pos);
		if (line == 0 || e == 0)
			return import_fail(c, PKS_ERR_MALFORMED, where,
					   "not a PEM block: bad character or missing \"%s\"", end);
		pos += e;
	}
	pos += sizeof(end) - 1;
	pos += import_eol(s + pos, n - pos);
	if (pos != n)
		return import_fail(c, PKS_ERR_MALFORMED, where, "text after the PEM END line");
	r = import_base64_decode(b64, b64_len, true, c->scratch + IMPORT_SCRATCH_DER,
				 PASSKEY_PKCS8_MAX, &bin_len);
	sodium_memzero(b64, b64_len);
	if (r == PKS_ERR_TOO_LARGE)
		return import_fail(c, r, where, "the key is longer than %d bytes",
				   PASSKEY_PKCS8_MAX);
	if (r != PKS_OK)
		return import_fail(c, r, where, "the PEM body is not valid base64");
	f->key = c->scratch + IMPORT_SCRATCH_DER;
	f->key_len = bin_len;
	return PKS_OK;
}

/* ---- the list being built ---- */

static char *import_strdup_or_empty(const char *s)
{
	return strdup(s != NULL ? s : "");
}

static int import_keys_append(struct import_ctx *c, const uint8_t *key, size_t len, size_t *off)
{
	if (c->keys_cap - c->keys_len < len) {
		size_t cap = c->keys_cap ? c->keys_cap : 4096;
		uint8_t *grown;

		while (cap - c->keys_len < len)
			cap *= 2;
		grown = sodium_malloc(cap);
		if (grown == NULL)
			return PKS_ERR_NOMEM;
		if (c->keys != NULL) {
			memcpy(grown, c->keys, c->keys_len);
			sodium_free(c->keys);
		}
		c->keys = grown;
		c->keys_cap = cap;
	}
	memcpy(c->keys + c->keys_len, key, len);
	*off = c->keys_len;
	c->keys_len += len;
	return PKS_OK;
}

static int import_grow(struct import_ctx *c)
{
	size_t cap = c->cap ? c->cap * 2 : 16;
	struct passkey_item *items;
	char **places;
	size_t *offs;

	items = realloc(c->items, cap * sizeof(*items));
	if (items == NULL)
		return PKS_ERR_NOMEM;
	c->items = items;
	places = realloc(c->places, cap * sizeof(*places));
	if (places == NULL)
		return PKS_ERR_NOMEM;
	c->places = places;
	offs = realloc(c->key_off, cap * sizeof(*offs));
	if (offs == NULL)
		return PKS_ERR_NOMEM;
	c->key_off = offs;
	c->cap = cap;
	return PKS_OK;
}

/*
 * Checks the key, derives the public key and appends the item. Takes the
 * credential id and user handle buffers in every case.
 */
static int import_add(struct import_ctx *c, const char *place, const char *key_member,
		      struct import_fields *f)
{
	char where[IMPORT_PLACE_MAX];
	struct passkey_item it;
	struct passkey_key *key = NULL;
	size_t norm_len = 0, off = 0;
	int r;

	memset(&it, 0, sizeof(it));
	it.credential_id = f->credential_id;
	it.credential_id_len = f->credential_id_len;
	it.user_handle = f->user_handle;
	it.user_handle_len = f->user_handle_len;
	f->credential_id = NULL;
	f->user_handle = NULL;
	import_place_member(where, place, key_member);
	r = passkey_key_from_pkcs8(f->key, f->key_len, &key);
	if (r == PKS_ERR_UNSUPPORTED) {
		import_fail(c, r, where, "not a P-256 or Ed25519 private key");
		goto out;
	}
	if (r != PKS_OK) {
		r = import_fail(c, r == PKS_ERR_NOMEM ? r : PKS_ERR_MALFORMED, where,
				"not a PKCS#8 P-256 or Ed25519 private key");
		goto out;
	}
	it.alg = passkey_key_alg(key);
	if (f->want_alg != 0 && it.alg != f->want_alg) {
		r = import_fail(c, PKS_ERR_MALFORMED, where,
				"not a P-256 key although keyCurve says P-256");
		goto out;
	}
	if (f->backup_state && !f->backup_eligible) {
		r = import_fail(c, PKS_ERR_MALFORMED, place,
				"backupState is true while backupEligible is false");
		goto out;
	}
	r = passkey_key_pkcs8_to(key, c->scratch + IMPORT_SCRATCH_NORM, PASSKEY_PKCS8_MAX,
				 &norm_len);
	if (r == PKS_OK)
		r = passkey_key_spki(key, &it.public_key, &it.public_key_len);
	if (r != PKS_OK) {
		import_fail(c, r, where, "the key cannot be re-encoded");
		goto out;
	}
	r = PKS_ERR_NOMEM;
	it.rp_id = strdup(f->rp_id);
	it.user_name = import_strdup_or_empty(f->user_name);
	it.display_name = import_strdup_or_empty(f->display_name);
	it.notes = f->notes != NULL ? strdup(f->notes) : NULL;
	it.source = strdup(c->source);
	if (it.rp_id == NULL || it.user_name == NULL || it.display_name == NULL ||
	    (f->notes != NULL && it.notes == NULL) || it.source == NULL) {
		import_fail(c, r, place, "out of memory");
		goto out;
	}
	it.backup_eligible = f->backup_eligible;
	it.backup_state = f->backup_state;
	it.created_at_ms = f->created_at_ms;
	if (c->count == c->cap && import_grow(c) != PKS_OK) {
		import_fail(c, r, place, "out of memory");
		goto out;
	}
	c->places[c->count] = strdup(place);
	if (c->places[c->count] == NULL ||
	    import_keys_append(c, c->scratch + IMPORT_SCRATCH_NORM, norm_len, &off) != PKS_OK) {
		free(c->places[c->count]);
		import_fail(c, r, place, "out of memory");
		goto out;
	}
	it.private_key_len = norm_len;
	c->key_off[c->count] = off;
	c->items[c->count++] = it;
	memset(&it, 0, sizeof(it));
	r = PKS_OK;
out:
	sodium_memzero(c->scratch, IMPORT_SCRATCH_LEN);
	passkey_key_free(key);
	passkey_item_clear(&it);
	return r;
}

/* Counts one more passkey against the limit. */
static int import_count(struct import_ctx *c, const char *place)
{
	if (++c->found > IMPORT_MAX_PASSKEYS)
		return import_fail(c, PKS_ERR_TOO_LARGE, place, "more than %d passkeys in one file",
				   IMPORT_MAX_PASSKEYS);
	return PKS_OK;
}

static void import_fields_clear(struct import_fields *f)
{
	free(f->credential_id);
	free(f->user_handle);
	memset(f, 0, sizeof(*f));
}

/* ---- CXF ---- */

static int import_cxf_time(struct import_ctx *c, const json_t *obj, const char *place,
			   const char *name, uint64_t *ms)
{
	char where[IMPORT_PLACE_MAX];
	json_t *v = json_object_get(obj, name);

	*ms = 0;
	if (v == NULL || json_is_null(v))
		return PKS_OK;
	import_place_member(where, place, name);
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > IMPORT_TIME_MAX_S)
		return import_fail(c, PKS_ERR_MALFORMED, where, "not a time in Unix seconds");
	*ms = (uint64_t)json_integer_value(v) * 1000u;
	return PKS_OK;
}

static int import_cxf_passkey(struct import_ctx *c, const json_t *cred, const char *place,
			      uint64_t created_ms, const char *notes)
{
	struct import_fields f;
	int r;

	memset(&f, 0, sizeof(f));
	f.created_at_ms = created_ms;
	f.notes = notes;
	if ((r = import_count(c, place)) != PKS_OK ||
	    (r = import_b64url(c, cred, place, "credentialId", 1, IMPORT_CREDENTIAL_ID_MAX,
			       &f.credential_id, &f.credential_id_len)) != PKS_OK ||
	    (r = import_string(c, cred, place, "rpId", true, 1, IMPORT_RP_ID_MAX, &f.rp_id,
			       NULL)) != PKS_OK ||
	    (r = import_string(c, cred, place, "username", false, 0, IMPORT_USER_NAME_MAX,
			       &f.user_name, NULL)) != PKS_OK ||
	    (r = import_string(c, cred, place, "userDisplayName", false, 0, IMPORT_USER_NAME_MAX,
			       &f.display_name, NULL)) != PKS_OK ||
	    (r = import_b64url(c, cred, place, "userHandle", 1, IMPORT_USER_HANDLE_MAX,
			       &f.user_handle, &f.user_handle_len)) != PKS_OK ||
	    (r = import_bool(c, cred, place, "backupEligible", true, &f.backup_eligible)) !=
		PKS_OK ||
	    (r = import_bool(c, cred, place, "backupState", f.backup_eligible, &f.backup_state)) !=
		PKS_OK ||
	    (r = import_key_b64url(c, cred, place, "key", &f)) != PKS_OK)
		goto out;
	r = import_add(c, place, "key", &f);
out:
	sodium_memzero(c->scratch, IMPORT_SCRATCH_LEN);
	import_fields_clear(&f);
	return r;
}

/* The text of the item's first "note" credential (content.value), or NULL. */
static int import_cxf_note(struct import_ctx *c, const json_t *creds, const char *place,
			   const char **notes)
{
	char at[IMPORT_PLACE_MAX], where[IMPORT_PLACE_MAX];
	const json_t *cred;
	size_t i;

	*notes = NULL;
	json_array_foreach(creds, i, cred)
	{
		const char *type = json_string_value(json_object_get(cred, "type"));
		json_t *content;

		if (type == NULL || strcmp(type, "note") != 0)
			continue;
		import_place_index(at, place, "credentials", i);
		import_place_member(where, at, "content");
		content = json_object_get(cred, "content");
		if (!json_is_object(content))
			return import_fail(c, PKS_ERR_MALFORMED, where, "not an object");
		return import_string(c, content, where, "value", false, 0, IMPORT_NOTES_MAX, notes,
				     NULL);
	}
	return PKS_OK;
}

static int import_cxf_item(struct import_ctx *c, const json_t *item, const char *place)
{
	char where[IMPORT_PLACE_MAX];
	const json_t *creds, *cred;
	const char *notes = NULL;
	uint64_t created_ms = 0;
	size_t i;
	int r;

	if (!json_is_object(item))
		return import_fail(c, PKS_ERR_MALFORMED, place, "not an object");
	creds = json_object_get(item, "credentials");
	if (!json_is_array(creds)) {
		import_place_member(where, place, "credentials");
		return import_fail(c, PKS_ERR_MALFORMED, where,
				   creds == NULL ? "missing" : "not an array");
	}
	if ((r = import_cxf_time(c, item, place, "creationAt", &created_ms)) != PKS_OK ||
	    (r = import_cxf_note(c, creds, place, &notes)) != PKS_OK)
		return r;
	json_array_foreach(creds, i, cred)
	{
		const char *type;

		import_place_index(where, place, "credentials", i);
		if (!json_is_object(cred))
			return import_fail(c, PKS_ERR_MALFORMED, where, "not an object");
		r = import_string(c, cred, where, "type", true, 1, 256, &type, NULL);
		if (r != PKS_OK)
			return r;
		if (strcmp(type, "passkey") != 0)
			continue;
		r = import_cxf_passkey(c, cred, where, created_ms, notes);
		if (r != PKS_OK)
			return r;
	}
	return PKS_OK;
}

/* "cxf:" + the exporter's rp id, cut at a character boundary to fit. */
static int import_cxf_source(struct import_ctx *c, const json_t *root, char *buf, size_t cap)
{
	const char *rp = NULL;
	size_t n, k;
	int r;

	r = import_string(c, root, "", "exporterRpId", false, 0, 1 << 20, &rp, NULL);
	if (r != PKS_OK)
		return r;
	if (rp == NULL || rp[0] == '\0') {
		snprintf(buf, cap, "cxf");
		return PKS_OK;
	}
	n = (size_t)snprintf(buf, cap, "cxf:%s", rp);
	if (n >= cap) {
		/* buf[k] would have been rp[k - 4]: do not cut inside a UTF-8 sequence. */
		k = cap - 1;
		while (k > 4 && ((uint8_t)rp[k - 4] & 0xc0) == 0x80)
			k--;
		buf[k] = '\0';
	}
	return PKS_OK;
}

static int import_cxf(struct import_ctx *c, const json_t *root)
{
	char where[IMPORT_PLACE_MAX], at[IMPORT_PLACE_MAX];
	char source[IMPORT_SOURCE_MAX];
	const json_t *version, *major, *accounts, *account, *items, *item;
	size_t i, j;
	int r;

	if (!json_is_object(root))
		return import_fail(c, PKS_ERR_MALFORMED, NULL, "a CXF file is a JSON object");
	version = json_object_get(root, "version");
	major = json_object_get(version, "major");
	if (!json_is_object(version) || !json_is_integer(major))
		return import_fail(c, PKS_ERR_MALFORMED, "version",
				   "missing or without an integer \"major\"");
	if (json_integer_value(major) != 1)
		return import_fail(c, PKS_ERR_UNSUPPORTED, "version.major",
				   "CXF version %lld is not supported (only 1)",
				   (long long)json_integer_value(major));
	r = import_cxf_source(c, root, source, sizeof(source));
	if (r != PKS_OK)
		return r;
	c->source = source;
	accounts = json_object_get(root, "accounts");
	if (!json_is_array(accounts))
		return import_fail(c, PKS_ERR_MALFORMED, "accounts",
				   accounts == NULL ? "missing" : "not an array");
	json_array_foreach(accounts, i, account)
	{
		import_place_index(at, "", "accounts", i);
		if (!json_is_object(account))
			return import_fail(c, PKS_ERR_MALFORMED, at, "not an object");
		items = json_object_get(account, "items");
		if (!json_is_array(items)) {
			import_place_member(where, at, "items");
			return import_fail(c, PKS_ERR_MALFORMED, where,
					   items == NULL ? "missing" : "not an array");
		}
		json_array_foreach(items, j, item)
		{
			import_place_index(where, at, "items", j);
			r = import_cxf_item(c, item, where);
			if (r != PKS_OK)
				return r;
		}
	}
	return PKS_OK;
}

/* ---- KeePassXC ---- */

static int import_keepassxc_one(struct import_ctx *c, const json_t *obj, const char *place)
{
	struct import_fields f;
	const char *url = NULL;
	int r;

	memset(&f, 0, sizeof(f));
	if (!json_is_object(obj))
		return import_fail(c, PKS_ERR_MALFORMED, place, "not an object");
	if ((r = import_count(c, place)) != PKS_OK ||
	    (r = import_string(c, obj, place, "relyingParty", true, 1, IMPORT_RP_ID_MAX, &f.rp_id,
			       NULL)) != PKS_OK ||
	    (r = import_string(c, obj, place, "url", true, 0, IMPORT_URL_MAX, &url, NULL)) !=
		PKS_OK ||
	    (r = import_string(c, obj, place, "username", true, 0, IMPORT_USER_NAME_MAX,
			       &f.user_name, NULL)) != PKS_OK ||
	    (r = import_b64url(c, obj, place, "credentialId", 1, IMPORT_CREDENTIAL_ID_MAX,
			       &f.credential_id, &f.credential_id_len)) != PKS_OK ||
	    (r = import_b64url(c, obj, place, "userHandle", 1, IMPORT_USER_HANDLE_MAX,
			       &f.user_handle, &f.user_handle_len)) != PKS_OK ||
	    (r = import_bool(c, obj, place, "backupEligible", true, &f.backup_eligible)) !=
		PKS_OK ||
	    (r = import_bool(c, obj, place, "backupState", f.backup_eligible, &f.backup_state)) !=
		PKS_OK ||
	    (r = import_key_pem(c, obj, place, "privateKey", &f)) != PKS_OK)
		goto out;
	/* KeePassXC keeps no display name: the user name stands in for it. */
	f.display_name = f.user_name;
	r = import_add(c, place, "privateKey", &f);
out:
	sodium_memzero(c->scratch, IMPORT_SCRATCH_LEN);
	import_fields_clear(&f);
	return r;
}

static int import_keepassxc(struct import_ctx *c, const json_t *root)
{
	char where[IMPORT_PLACE_MAX];
	const json_t *obj;
	size_t i;
	int r;

	c->source = "keepassxc";
	if (json_is_object(root))
		return import_keepassxc_one(c, root, "");
	if (!json_is_array(root))
		return import_fail(c, PKS_ERR_MALFORMED, NULL,
				   "a KeePassXC .passkey file is a JSON object");
	json_array_foreach(root, i, obj)
	{
		import_place_done(where, snprintf(where, sizeof(where), "[%zu]", i));
		r = import_keepassxc_one(c, obj, where);
		if (r != PKS_OK)
			return r;
	}
	return PKS_OK;
}

/* ---- Bitwarden ---- */

static int import_hex_nibble(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* A UUID "8-4-4-4-12" of hex digits as 16 bytes. */
static bool import_uuid(const char *s, size_t n, uint8_t out[16])
{
	size_t k = 0;

	if (n != 36)
		return false;
	for (size_t i = 0; i < n;) {
		int hi, lo;

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
			i++;
			continue;
		}
		hi = import_hex_nibble(s[i]);
		lo = import_hex_nibble(s[i + 1]);
		if (hi < 0 || lo < 0 || i + 1 == 8 || i + 1 == 13 || i + 1 == 18 || i + 1 == 23)
			return false;
		out[k++] = (uint8_t)(hi << 4 | lo);
		i += 2;
	}
	return k == 16;
}

static int import_bitwarden_cred_id(struct import_ctx *c, const json_t *cred, const char *place,
				    struct import_fields *f)
{
	char where[IMPORT_PLACE_MAX];
	const char *s;
	size_t n, bin_len = 0;
	uint8_t *buf = NULL;
	int r;

	import_place_member(where, place, "credentialId");
	r = import_string(c, cred, place, "credentialId", true, 1, IMPORT_MAX_INPUT, &s, &n);
	if (r != PKS_OK)
		return r;
	buf = malloc(IMPORT_CREDENTIAL_ID_MAX);
	if (buf == NULL)
		return import_fail(c, PKS_ERR_NOMEM, where, "out of memory");
	if (n > 4 && memcmp(s, "b64.", 4) == 0) {
		r = import_base64_decode(s + 4, n - 4, false, buf, IMPORT_CREDENTIAL_ID_MAX,
					 &bin_len);
		if (r == PKS_ERR_TOO_LARGE)
			import_fail(c, r, where, "longer than %d bytes", IMPORT_CREDENTIAL_ID_MAX);
		else if (r != PKS_OK || bin_len == 0)
			r = import_fail(c, PKS_ERR_MALFORMED, where,
					"not valid base64url after \"b64.\"");
	} else if (import_uuid(s, n, buf)) {
		bin_len = 16;
	} else {
		r = import_fail(c, PKS_ERR_MALFORMED, where,
				"neither a UUID nor \"b64.\" and base64url");
	}
	if (r != PKS_OK) {
		free(buf);
		return r;
	}
	f->credential_id = buf;
	f->credential_id_len = bin_len;
	return PKS_OK;
}

static bool import_digits(const char *s, size_t n, unsigned *out)
{
	unsigned v = 0;

	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*out = v;
	return true;
}

static int64_t import_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	/* Howard Hinnant's days_from_civil: days since 1970-01-01. */
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* RFC 3339 "YYYY-MM-DDTHH:MM:SS[.fff...](Z|+hh:mm|-hh:mm)" to Unix milliseconds. */
static bool import_rfc3339(const char *s, size_t n, uint64_t *ms_out)
{
	static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	unsigned y, mo, d, h, mi, sec, ms = 0, oh = 0, om = 0, dim;
	size_t pos = 19;
	int sign = 0;
	int64_t days, t;

	if (n < 20 || n > 40 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
	    s[13] != ':' || s[16] != ':')
		return false;
	if (!import_digits(s, 4, &y) || !import_digits(s + 5, 2, &mo) ||
	    !import_digits(s + 8, 2, &d) || !import_digits(s + 11, 2, &h) ||
	    !import_digits(s + 14, 2, &mi) || !import_digits(s + 17, 2, &sec))
		return false;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60)
		return false;
	dim = mdays[mo - 1];
	if (mo == 2 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		dim = 28;
	if (d > dim)
		return false;
	if (sec == 60)
		sec = 59; /* a leap second: close enough for a creation time */
	if (s[pos] == '.') {
		size_t digits = 0;

		pos++;
		while (pos < n && s[pos] >= '0' && s[pos] <= '9') {
			if (digits < 3)
				ms = ms * 10 + (unsigned)(s[pos] - '0');
			digits++;
			pos++;
		}
		if (digits == 0 || digits > 9)
			return false;
		for (; digits < 3; digits++)
			ms *= 10;
	}
	if (pos < n && (s[pos] == 'Z' || s[pos] == 'z')) {
		pos++;
	} else if (pos < n && (s[pos] == '+' || s[pos] == '-')) {
		sign = s[pos] == '+' ? 1 : -1;
		if (n - pos != 6 || s[pos + 3] != ':' || !import_digits(s + pos + 1, 2, &oh) ||
		    !import_digits(s + pos + 4, 2, &om) || oh > 23 || om > 59)
			return false;
		pos += 6;
	} else {
		return false;
	}
	if (pos != n)
		return false;
	days = import_days_from_civil(y, mo, d);
	t = days * 86400 + h * 3600 + mi * 60 + sec - sign * (int64_t)(oh * 3600 + om * 60);
	if (t < 0)
		return false;
	*ms_out = (uint64_t)t * 1000u + ms;
	return true;
}

static int import_bitwarden_cred(struct import_ctx *c, const json_t *cred, const char *place,
				 const char *notes)
{
	char where[IMPORT_PLACE_MAX];
	struct import_fields f;
	const char *alg, *curve, *counter, *created;
	size_t n;
	unsigned counter_value;
	int r;

	memset(&f, 0, sizeof(f));
	f.notes = notes;
	f.want_alg = PASSKEY_ALG_ES256;
	/* Bitwarden's exports carry no flags; it is a syncing credential manager. */
	f.backup_eligible = true;
	f.backup_state = true;
	if (!json_is_object(cred))
		return import_fail(c, PKS_ERR_MALFORMED, place, "not an object");
	if ((r = import_count(c, place)) != PKS_OK ||
	    (r = import_string(c, cred, place, "keyAlgorithm", true, 1, 64, &alg, NULL)) !=
		PKS_OK ||
	    (r = import_string(c, cred, place, "keyCurve", true, 1, 64, &curve, NULL)) != PKS_OK)
		goto out;
	if (strcmp(alg, "ECDSA") != 0) {
		import_place_member(where, place, "keyAlgorithm");
		r = import_fail(c, PKS_ERR_UNSUPPORTED, where, "only ECDSA keys are supported");
		goto out;
	}
	if (strcmp(curve, "P-256") != 0) {
		import_place_member(where, place, "keyCurve");
		r = import_fail(c, PKS_ERR_UNSUPPORTED, where, "only P-256 keys are supported");
		goto out;
	}
	if ((r = import_bitwarden_cred_id(c, cred, place, &f)) != PKS_OK ||
	    (r = import_string(c, cred, place, "rpId", true, 1, IMPORT_RP_ID_MAX, &f.rp_id,
			       NULL)) != PKS_OK ||
	    (r = import_string(c, cred, place, "userName", false, 0, IMPORT_USER_NAME_MAX,
			       &f.user_name, NULL)) != PKS_OK ||
	    (r = import_string(c, cred, place, "userDisplayName", false, 0, IMPORT_USER_NAME_MAX,
			       &f.display_name, NULL)) != PKS_OK ||
	    (r = import_b64url(c, cred, place, "userHandle", 1, IMPORT_USER_HANDLE_MAX,
			       &f.user_handle, &f.user_handle_len)) != PKS_OK ||
	    (r = import_string(c, cred, place, "counter", false, 0, 32, &counter, &n)) != PKS_OK)
		goto out;
	/* A counter is accepted and dropped: synced passkeys always count 0. */
	if (counter != NULL && (n > 10 || !import_digits(counter, n, &counter_value))) {
		import_place_member(where, place, "counter");
		r = import_fail(c, PKS_ERR_MALFORMED, where, "not a decimal number");
		goto out;
	}
	if ((r = import_string(c, cred, place, "creationDate", false, 0, 64, &created, &n)) !=
	    PKS_OK)
		goto out;
	if (created != NULL && !import_rfc3339(created, n, &f.created_at_ms)) {
		import_place_member(where, place, "creationDate");
		r = import_fail(c, PKS_ERR_MALFORMED, where, "not an RFC 3339 date after 1970");
		goto out;
	}
	if ((r = import_key_b64url(c, cred, place, "keyValue", &f)) != PKS_OK)
		goto out;
	r = import_add(c, place, "keyValue", &f);
out:
	sodium_memzero(c->scratch, IMPORT_SCRATCH_LEN);
	import_fields_clear(&f);
	return r;
}

static int import_bitwarden(struct import_ctx *c, const json_t *root)
{
	char at[IMPORT_PLACE_MAX], where[IMPORT_PLACE_MAX], list[IMPORT_PLACE_MAX];
	const json_t *items, *item, *login, *creds, *cred, *enc;
	const char *notes;
	size_t i, j;
	int r;

	c->source = "bitwarden";
	if (!json_is_object(root))
		return import_fail(c, PKS_ERR_MALFORMED, NULL,
				   "a Bitwarden export is a JSON object");
	enc = json_object_get(root, "encrypted");
	if (json_is_true(enc))
		return import_fail(c, PKS_ERR_UNSUPPORTED, "encrypted",
				   "this Bitwarden export is encrypted; export again in the "
				   "unencrypted \".json\" format");
	items = json_object_get(root, "items");
	if (!json_is_array(items))
		return import_fail(c, PKS_ERR_MALFORMED, "items",
				   items == NULL ? "missing" : "not an array");
	json_array_foreach(items, i, item)
	{
		import_place_index(at, "", "items", i);
		if (!json_is_object(item))
			return import_fail(c, PKS_ERR_MALFORMED, at, "not an object");
		login = json_object_get(item, "login");
		if (login == NULL || json_is_null(login))
			continue;
		import_place_member(where, at, "login");
		if (!json_is_object(login))
			return import_fail(c, PKS_ERR_MALFORMED, where, "not an object");
		creds = json_object_get(login, "fido2Credentials");
		if (creds == NULL || json_is_null(creds))
			continue;
		import_place_member(list, where, "fido2Credentials");
		if (!json_is_array(creds))
			return import_fail(c, PKS_ERR_MALFORMED, list, "not an array");
		if (json_array_size(creds) == 0)
			continue;
		r = import_string(c, item, at, "notes", false, 0, IMPORT_NOTES_MAX, &notes, NULL);
		if (r != PKS_OK)
			return r;
		json_array_foreach(creds, j, cred)
		{
			char place[IMPORT_PLACE_MAX];

			import_place_index(place, at, "login.fido2Credentials", j);
			r = import_bitwarden_cred(c, cred, place, notes);
			if (r != PKS_OK)
				return r;
		}
	}
	return PKS_OK;
}

/* ---- detection, counting, duplicates, entry point ---- */

/*
 * Counts the passkeys a document claims before any key is parsed, so an
 * oversized file is refused at once. Shapes that are wrong are left for the
 * parsers to report.
 */
static size_t import_precount(const json_t *root, enum import_format f)
{
	const json_t *a, *b, *item, *cred;
	size_t i, j, k, n = 0;

	switch (f) {
	case IMPORT_FORMAT_CXF:
		json_array_foreach(json_object_get(root, "accounts"), i, a)
		{
			json_array_foreach(json_object_get(a, "items"), j, item)
			{
				json_array_foreach(json_object_get(item, "credentials"), k, cred)
				{
					const char *t =
					    json_string_value(json_object_get(cred, "type"));
					n += t != NULL && strcmp(t, "passkey") == 0;
				}
			}
		}
		break;
	case IMPORT_FORMAT_BITWARDEN:
		json_array_foreach(json_object_get(root, "items"), i, item)
		{
			b = json_object_get(json_object_get(item, "login"), "fido2Credentials");
			n += json_array_size(b);
		}
		break;
	case IMPORT_FORMAT_KEEPASSXC:
		n = json_is_array(root) ? json_array_size(root) : 1;
		break;
	case IMPORT_FORMAT_AUTO:
		break;
	}
	return n;
}

static enum import_format import_detect(const json_t *root)
{
	const json_t *first;

	if (json_is_array(root)) {
		first = json_array_get(root, 0);
		if (json_is_object(first) && json_object_get(first, "relyingParty") != NULL &&
		    json_object_get(first, "privateKey") != NULL)
			return IMPORT_FORMAT_KEEPASSXC;
		return IMPORT_FORMAT_AUTO;
	}
	if (!json_is_object(root))
		return IMPORT_FORMAT_AUTO;
	if (json_is_object(json_object_get(root, "version")) &&
	    json_object_get(root, "accounts") != NULL)
		return IMPORT_FORMAT_CXF;
	if (json_object_get(root, "items") != NULL ||
	    json_is_true(json_object_get(root, "encrypted")))
		return IMPORT_FORMAT_BITWARDEN;
	if (json_object_get(root, "relyingParty") != NULL &&
	    json_object_get(root, "privateKey") != NULL)
		return IMPORT_FORMAT_KEEPASSXC;
	return IMPORT_FORMAT_AUTO;
}

static int import_cmp(const void *pa, const void *pb, void *user_data)
{
	const struct import_ctx *c = user_data;
	size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
	const struct passkey_item *x = &c->items[a], *y = &c->items[b];
	int d = strcmp(x->rp_id, y->rp_id);

	if (d == 0 && x->credential_id_len != y->credential_id_len)
		d = x->credential_id_len < y->credential_id_len ? -1 : 1;
	if (d == 0)
		d = memcmp(x->credential_id, y->credential_id, x->credential_id_len);
	if (d == 0 && a != b)
		d = a < b ? -1 : 1;
	return d;
}

static bool import_same_id(const struct passkey_item *x, const struct passkey_item *y)
{
	return strcmp(x->rp_id, y->rp_id) == 0 && x->credential_id_len == y->credential_id_len &&
	       memcmp(x->credential_id, y->credential_id, x->credential_id_len) == 0;
}

/*
 * One item per (rp id, credential id): later copies with the same key are
 * dropped, a copy with another key refuses the file. Items keep file order.
 */
static int import_dedupe(struct import_ctx *c)
{
	size_t *order = NULL, k = 0;
	bool *drop = NULL;
	int r = PKS_ERR_NOMEM;

	order = malloc(c->count * sizeof(*order));
	drop = calloc(c->count, sizeof(*drop));
	if (order == NULL || drop == NULL) {
		import_fail(c, r, NULL, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < c->count; i++)
		order[i] = i;
	qsort_r(order, c->count, sizeof(*order), import_cmp, c);
	for (size_t i = 1; i < c->count; i++) {
		size_t first = order[i - 1], cur = order[i];
		const struct passkey_item *x = &c->items[first], *y = &c->items[cur];

		if (!import_same_id(x, y))
			continue;
		if (x->private_key_len != y->private_key_len ||
		    sodium_memcmp(c->keys + c->key_off[first], c->keys + c->key_off[cur],
				  x->private_key_len) != 0) {
			r = import_fail(c, PKS_ERR_MALFORMED, c->places[first],
					"the same rp id and credential id as %s but a different "
					"private key",
					c->places[cur]);
			goto out;
		}
		drop[cur] = true;
		/* Compare the next copy with the kept first one. */
		order[i] = first;
	}
	for (size_t i = 0; i < c->count; i++) {
		if (drop[i]) {
			passkey_item_clear(&c->items[i]);
			free(c->places[i]);
			continue;
		}
		c->items[k] = c->items[i];
		c->places[k] = c->places[i];
		c->key_off[k] = c->key_off[i];
		k++;
	}
	c->count = k;
	r = PKS_OK;
out:
	free(order);
	free(drop);
	return r;
}

static void import_ctx_free(struct import_ctx *c)
{
	for (size_t i = 0; i < c->count; i++) {
		passkey_item_clear(&c->items[i]);
		free(c->places[i]);
	}
	free(c->items);
	free(c->places);
	free(c->key_off);
	if (c->keys != NULL)
		sodium_free(c->keys);
	if (c->scratch != NULL)
		sodium_free(c->scratch);
	memset(c, 0, sizeof(*c));
}

int import_parse(const uint8_t *data, size_t len, enum import_format fmt, struct passkey_list **out,
		 enum import_format *detected, char *err, size_t err_len)
{
	struct import_ctx c;
	struct passkey_list *l = NULL;
	json_t *root = NULL;
	json_error_t jerr;
	enum import_format f = fmt;
	int r = PKS_ERR_INVALID;

	memset(&c, 0, sizeof(c));
	c.err = err;
	c.err_len = err_len;
	if (err != NULL && err_len > 0)
		err[0] = '\0';
	if ((data == NULL && len > 0) || out == NULL) {
		import_fail(&c, r, NULL, "invalid arguments");
		goto out;
	}
	if (len > IMPORT_MAX_INPUT) {
		r = import_fail(&c, PKS_ERR_TOO_LARGE, NULL, "the file is larger than %u MiB",
				IMPORT_MAX_INPUT / (1024 * 1024));
		goto out;
	}
	if (sodium_init() < 0) {
		r = import_fail(&c, PKS_ERR_INTERNAL, NULL, "libsodium cannot be initialised");
		goto out;
	}
	c.scratch = sodium_malloc(IMPORT_SCRATCH_LEN);
	if (c.scratch == NULL) {
		r = import_fail(&c, PKS_ERR_NOMEM, NULL, "out of memory");
		goto out;
	}
	r = import_check_depth(&c, data, len);
	if (r != PKS_OK)
		goto out;
	root = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		r = import_fail(&c, PKS_ERR_MALFORMED, NULL,
				"line %d, column %d: JSON syntax error: %s", jerr.line, jerr.column,
				jerr.text);
		goto out;
	}
	if (f == IMPORT_FORMAT_AUTO)
		f = import_detect(root);
	if (import_precount(root, f) > IMPORT_MAX_PASSKEYS) {
		r = import_fail(&c, PKS_ERR_TOO_LARGE, NULL, "more than %d passkeys in one file",
				IMPORT_MAX_PASSKEYS);
		goto out;
	}
	switch (f) {
	case IMPORT_FORMAT_CXF:
		r = import_cxf(&c, root);
		break;
	case IMPORT_FORMAT_KEEPASSXC:
		r = import_keepassxc(&c, root);
		break;
	case IMPORT_FORMAT_BITWARDEN:
		r = import_bitwarden(&c, root);
		break;
	case IMPORT_FORMAT_AUTO:
		r = import_fail(&c, PKS_ERR_MALFORMED, NULL,
				"not a CXF, KeePassXC .passkey or Bitwarden JSON export");
		break;
	}
	if (r != PKS_OK)
		goto out;
	if (c.count == 0) {
		r = import_fail(&c, PKS_ERR_MALFORMED, NULL, "no passkeys found in this %s file",
				f == IMPORT_FORMAT_CXF         ? "CXF"
				: f == IMPORT_FORMAT_KEEPASSXC ? "KeePassXC"
							       : "Bitwarden");
		goto out;
	}
	r = import_dedupe(&c);
	if (r != PKS_OK)
		goto out;
	r = PKS_ERR_NOMEM;
	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		import_fail(&c, r, NULL, "out of memory");
		goto out;
	}
	/* The list takes the items and the key block; keys now point into it. */
	for (size_t i = 0; i < c.count; i++) {
		c.items[i].private_key = c.keys + c.key_off[i];
		free(c.places[i]);
	}
	l->items = c.items;
	l->count = c.count;
	l->key_block = c.keys;
	l->key_block_len = c.keys_len;
	c.items = NULL;
	c.count = 0;
	c.keys = NULL;
	*out = l;
	l = NULL;
	if (detected != NULL)
		*detected = f;
	r = PKS_OK;
out:
	if (root != NULL) {
		import_wipe_json(root);
		json_decref(root);
	}
	import_ctx_free(&c);
	free(l);
	return r;
}

const char *import_format_name(enum import_format fmt)
{
	switch (fmt) {
	case IMPORT_FORMAT_AUTO:
		return "auto";
	case IMPORT_FORMAT_CXF:
		return "cxf";
	case IMPORT_FORMAT_KEEPASSXC:
		return "keepassxc";
	case IMPORT_FORMAT_BITWARDEN:
		return "bitwarden";
	}
	return "unknown";
}

int import_format_from_name(const char *name, enum import_format *out)
{
	static const enum import_format all[] = {IMPORT_FORMAT_AUTO, IMPORT_FORMAT_CXF,
						 IMPORT_FORMAT_KEEPASSXC, IMPORT_FORMAT_BITWARDEN};

	if (name == NULL || out == NULL)
		return PKS_ERR_INVALID;
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcmp(name, import_format_name(all[i])) == 0) {
			*out = all[i];
			return PKS_OK;
		}
	}
	return PKS_ERR_INVALID;
}
