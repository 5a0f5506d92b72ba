#include "agent/pairing.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/err.h"

#define PAIRING_SIG_CONTEXT "pksync join v1"
#define PAIRING_VERSION 1
#define PAIRING_OP_MAX 32768

bool pairing_name_valid(const char *name, size_t len)
{
	const unsigned char *p = (const unsigned char *)name;
	size_t i = 0;

	if (len == 0 || len > VAULT_NAME_MAX)
		return false;
	while (i < len) {
		unsigned char c = p[i];
		size_t n;
		uint32_t cp;
		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return false;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, cp = c & 0x07;
		else
			return false;
		if (i + n >= len)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		/* C1 control (U+0080..U+009F), overlong, surrogate or beyond Unicode. */
		if ((n == 1 && cp < 0xa0) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

static void pairing_join_sig_input(crypto_sign_state *st, const uint8_t hash[PAIRING_HASH_LEN],
				   const uint8_t sign_pk[32], const uint8_t dh_pk[32],
				   const char *name, size_t name_len)
{
	crypto_sign_init(st);
	crypto_sign_update(st, (const uint8_t *)PAIRING_SIG_CONTEXT,
			   sizeof(PAIRING_SIG_CONTEXT) - 1);
	crypto_sign_update(st, hash, PAIRING_HASH_LEN);
	crypto_sign_update(st, sign_pk, 32);
	crypto_sign_update(st, dh_pk, 32);
	crypto_sign_update(st, (const uint8_t *)name, name_len);
}

int pairing_join_encode(const struct vault_identity *id, const char *name,
			const uint8_t hash[PAIRING_HASH_LEN], uint8_t **out, size_t *out_len)
{
	size_t name_len = strlen(name);
	crypto_sign_state st;
	uint8_t sig[64];
	struct pks_buf b;
	int r;

	if (!pairing_name_valid(name, name_len))
		return PKS_ERR_INVALID;
	pairing_join_sig_input(&st, hash, id->sign_pk, id->dh_pk, name, name_len);
	crypto_sign_final_create(&st, sig, NULL, id->sign_sk);
	pks_buf_init(&b, PAIRING_MSG_MAX);
	if ((r = pks_buf_u8(&b, PAIRING_JOIN)) != PKS_OK ||
	    (r = pks_buf_u8(&b, PAIRING_VERSION)) != PKS_OK ||
	    (r = pks_buf_append(&b, id->sign_pk, 32)) != PKS_OK ||
	    (r = pks_buf_append(&b, id->dh_pk, 32)) != PKS_OK ||
	    (r = pks_buf_u8(&b, (uint8_t)name_len)) != PKS_OK ||
	    (r = pks_buf_append(&b, name, name_len)) != PKS_OK ||
	    (r = pks_buf_append(&b, sig, sizeof(sig))) != PKS_OK) {
		pks_buf_free(&b);
		return r;
	}
	pks_buf_take(&b, out, out_len);
	return PKS_OK;
}

int pairing_join_decode(const uint8_t *msg, size_t len, const uint8_t hash[PAIRING_HASH_LEN],
			struct pairing_join *out)
{
	struct pks_cursor c = pks_cursor_init(msg, len);
	const uint8_t *name, *sig;
	uint8_t type, version, name_len;
	crypto_sign_state st;
	struct pairing_join j;

	memset(&j, 0, sizeof(j));
	if (pks_cursor_u8(&c, &type) != PKS_OK || type != PAIRING_JOIN ||
	    pks_cursor_u8(&c, &version) != PKS_OK || version != PAIRING_VERSION ||
	    pks_cursor_read(&c, j.sign_pk, 32) != PKS_OK ||
	    pks_cursor_read(&c, j.dh_pk, 32) != PKS_OK || pks_cursor_u8(&c, &name_len) != PKS_OK ||
	    pks_cursor_take(&c, name_len, &name) != PKS_OK ||
	    pks_cursor_take(&c, 64, &sig) != PKS_OK || pks_cursor_left(&c) != 0)
		return PKS_ERR_MALFORMED;
	if (!pairing_name_valid((const char *)name, name_len))
		return PKS_ERR_MALFORMED;
	memcpy(j.name, name, name_len);
	j.name[name_len] = '\0';
	pairing_join_sig_input(&st, hash, j.sign_pk, j.dh_pk, j.name, name_len);
	if (crypto_sign_final_verify(&st, sig, j.sign_pk) != 0)
		return PKS_ERR_AUTH;
	*out = j;
	return PKS_OK;
}

static void pairing_put_be32(uint8_t *p, uint32_t x)
{
	p[0] = (uint8_t)(x >> 24);
	p[1] = (uint8_t)(x >> 16);
	p[2] = (uint8_t)(x >> 8);
	p[3] = (uint8_t)x;
}

#define PAIRING_KEYS_FIXED (2 + VAULT_ID_LEN + 32 + 32 + 2)

int pairing_keys_encode(const struct vault_join_bundle *b, uint8_t **out, size_t *out_len)
{
	size_t len = PAIRING_KEYS_FIXED + b->n_epochs * 36;
	uint8_t *p;
	size_t off = 0;

	if (b->n_epochs == 0 || b->n_epochs > VAULT_EPOCHS_MAX)
		return PKS_ERR_INVALID;
	p = sodium_malloc(len);
	if (p == NULL)
		return PKS_ERR_NOMEM;
	p[off++] = PAIRING_KEYS;
	p[off++] = PAIRING_VERSION;
	memcpy(p + off, b->vault_id, VAULT_ID_LEN);
	off += VAULT_ID_LEN;
	memcpy(p + off, b->network_key, 32);
	off += 32;
	memcpy(p + off, b->id_key, 32);
	off += 32;
	p[off++] = (uint8_t)(b->n_epochs >> 8);
	p[off++] = (uint8_t)b->n_epochs;
	for (size_t i = 0; i < b->n_epochs; i++) {
		pairing_put_be32(p + off, b->epochs[i].epoch);
		memcpy(p + off + 4, b->epochs[i].key, 32);
		off += 36;
	}
	*out = p;
	*out_len = len;
	return PKS_OK;
}

void pairing_secret_free(uint8_t *p)
{
	if (p != NULL)
		sodium_free(p);
}

int pairing_keys_decode(const uint8_t *msg, size_t len, struct vault_join_bundle *b)
{
	struct pks_cursor c = pks_cursor_init(msg, len);
	uint8_t type, version;
	uint16_t n;

	if (pks_cursor_u8(&c, &type) != PKS_OK || type != PAIRING_KEYS ||
	    pks_cursor_u8(&c, &version) != PKS_OK || version != PAIRING_VERSION ||
	    pks_cursor_read(&c, b->vault_id, VAULT_ID_LEN) != PKS_OK ||
	    pks_cursor_read(&c, b->network_key, 32) != PKS_OK ||
	    pks_cursor_read(&c, b->id_key, 32) != PKS_OK || pks_cursor_be16(&c, &n) != PKS_OK)
		return PKS_ERR_MALFORMED;
	if (n == 0 || n > VAULT_EPOCHS_MAX || pks_cursor_left(&c) != (size_t)n * 36)
		return PKS_ERR_MALFORMED;
	for (size_t i = 0; i < n; i++) {
		uint32_t e;
		if (pks_cursor_be32(&c, &e) != PKS_OK || e == 0 ||
		    pks_cursor_read(&c, b->epochs[i].key, 32) != PKS_OK)
			return PKS_ERR_MALFORMED;
		for (size_t k = 0; k < i; k++)
			if (b->epochs[k].epoch == e)
				return PKS_ERR_MALFORMED;
		b->epochs[i].epoch = e;
	}
	b->n_epochs = n;
	return PKS_OK;
}

int pairing_ops_decode(const uint8_t *msg, size_t len, struct vault_blob *ops, size_t cap,
		       size_t *n_out)
{
	struct pks_cursor c = pks_cursor_init(msg, len);
	uint8_t type;
	uint16_t n;

	if (pks_cursor_u8(&c, &type) != PKS_OK || type != PAIRING_OPS ||
	    pks_cursor_be16(&c, &n) != PKS_OK || n == 0 || n > PAIRING_OPS_PER_MSG || n > cap)
		return PKS_ERR_MALFORMED;
	for (size_t i = 0; i < n; i++) {
		uint16_t l;
		const uint8_t *p;
		if (pks_cursor_be16(&c, &l) != PKS_OK || l == 0 || l > PAIRING_OP_MAX ||
		    pks_cursor_take(&c, l, &p) != PKS_OK)
			return PKS_ERR_MALFORMED;
		ops[i].data = p;
		ops[i].len = l;
	}
	if (pks_cursor_left(&c) != 0)
		return PKS_ERR_MALFORMED;
	*n_out = n;
	return PKS_OK;
}

int pairing_end_decode(const uint8_t *msg, size_t len, uint32_t *total)
{
	struct pks_cursor c = pks_cursor_init(msg, len);
	uint8_t type;

	if (pks_cursor_u8(&c, &type) != PKS_OK || type != PAIRING_END ||
	    pks_cursor_be32(&c, total) != PKS_OK || pks_cursor_left(&c) != 0)
		return PKS_ERR_MALFORMED;
	return PKS_OK;
}

int pairing_fail_decode(const uint8_t *msg, size_t len, char *out, size_t cap)
{
	if (len < 2 || msg[0] != PAIRING_FAIL || len - 1 > PAIRING_REASON_MAX || cap < len)
		return PKS_ERR_MALFORMED;
	for (size_t i = 1; i < len; i++)
		if (msg[i] < 0x20 || msg[i] > 0x7e)
			return PKS_ERR_MALFORMED;
	memcpy(out, msg + 1, len - 1);
	out[len - 1] = '\0';
	return PKS_OK;
}

void pairing_new_code(char out[PAIRING_CODE_DIGITS + 1])
{
	for (int i = 0; i < PAIRING_CODE_DIGITS; i++)
		out[i] = (char)('0' + randombytes_uniform(10));
	out[PAIRING_CODE_DIGITS] = '\0';
}

int pairing_parse_code(const char *text, char out[PAIRING_CODE_DIGITS + 1])
{
	size_t n = 0, seps = 0;

	if (strlen(text) > PAIRING_CODE_DIGITS + 1)
		return PKS_ERR_INVALID;
	for (const char *p = text; *p != '\0'; p++) {
		if (*p >= '0' && *p <= '9') {
			if (n == PAIRING_CODE_DIGITS)
				return PKS_ERR_INVALID;
			out[n++] = *p;
		} else if ((*p == ' ' || *p == '-') && n == PAIRING_CODE_DIGITS / 2 && seps == 0) {
			seps++;
		} else {
			return PKS_ERR_INVALID;
		}
	}
	if (n != PAIRING_CODE_DIGITS)
		return PKS_ERR_INVALID;
	out[n] = '\0';
	return PKS_OK;
}

#define PAIRING_QR_PREFIX "pksync1:"
#define PAIRING_QR_ADDRS_MAX 4

int pairing_qr_format(const char *secret_hex, const char *const *addrs, size_t n_addrs, char *out,
		      size_t cap)
{
	size_t off;
	int w = snprintf(out, cap, "%s%s", PAIRING_QR_PREFIX, secret_hex);

	if (w < 0 || (size_t)w >= cap)
		return PKS_ERR_TOO_LARGE;
	off = (size_t)w;
	for (size_t i = 0; i < n_addrs && i < PAIRING_QR_ADDRS_MAX; i++) {
		w = snprintf(out + off, cap - off, "%c%s", i == 0 ? '@' : ',', addrs[i]);
		if (w < 0 || (size_t)w >= cap - off)
			return PKS_ERR_TOO_LARGE;
		off += (size_t)w;
	}
	return PKS_OK;
}

int pairing_qr_parse(const char *text, char secret_hex[2 * PAIRING_QR_SECRET_LEN + 1], char *addr,
		     size_t addr_cap)
{
	size_t plen = sizeof(PAIRING_QR_PREFIX) - 1, n = strlen(text);
	const char *p, *end, *first, *first_end;

	if (n > PAIRING_QR_MAX || strncasecmp(text, PAIRING_QR_PREFIX, plen) != 0)
		return PKS_ERR_INVALID;
	p = text + plen;
	for (int i = 0; i < 2 * PAIRING_QR_SECRET_LEN; i++) {
		if (!isxdigit((unsigned char)p[i]))
			return PKS_ERR_INVALID;
		secret_hex[i] = (char)tolower((unsigned char)p[i]);
	}
	secret_hex[2 * PAIRING_QR_SECRET_LEN] = '\0';
	p += 2 * PAIRING_QR_SECRET_LEN;
	if (addr_cap > 0)
		addr[0] = '\0';
	if (*p == '\0')
		return PKS_OK;
	if (*p != '@')
		return PKS_ERR_INVALID;
	p++;
	/* Every address is checked (1..4, non-empty, printable); the first is returned. */
	first = p;
	first_end = NULL;
	for (int i = 0;; i++) {
		end = strchr(p, ',');
		if (end == NULL)
			end = p + strlen(p);
		if (i == PAIRING_QR_ADDRS_MAX || end == p)
			return PKS_ERR_INVALID;
		for (const char *q = p; q < end; q++)
			if (*q <= 0x20 || *q > 0x7e)
				return PKS_ERR_INVALID;
		if (first_end == NULL)
			first_end = end;
		if (*end == '\0')
			break;
		p = end + 1;
	}
	if ((size_t)(first_end - first) >= addr_cap)
		return PKS_ERR_INVALID;
	memcpy(addr, first, (size_t)(first_end - first));
	addr[first_end - first] = '\0';
	return PKS_OK;
}
