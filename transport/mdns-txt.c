/*
 * Strict DNS-SD TXT building and parsing; see mdns-txt.h.
 */
#include "transport/mdns-txt.h"

#include <string.h>
#include <strings.h>

#include "common/bytes.h"
#include "common/err.h"

void mdns_txt_init(struct mdns_txt *t)
{
	memset(t, 0, sizeof(*t));
}

bool mdns_txt_key_valid(const char *key, size_t len)
{
	if (key == NULL || len < 1 || len > MDNS_TXT_KEY_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)key[i];

		if (c < 0x20 || c > 0x7e || c == '=')
			return false;
	}
	return true;
}

static bool mdns_txt_has_key(const struct mdns_txt *t, const char *key, size_t len)
{
	for (size_t i = 0; i < t->n; i++)
		if (strlen(t->pairs[i].key) == len && strncasecmp(t->pairs[i].key, key, len) == 0)
			return true;
	return false;
}

/* Appends a pair whose key is key[0..key_len), validated here. */
static int mdns_txt_append(struct mdns_txt *t, const char *key, size_t key_len, bool has_value,
			   const uint8_t *value, size_t value_len, int dup_err)
{
	struct mdns_txt_pair *p;

	if (!mdns_txt_key_valid(key, key_len))
		return PKS_ERR_INVALID;
	if (key_len + (has_value ? 1 + value_len : 0) > MDNS_TXT_STRING_MAX)
		return PKS_ERR_TOO_LARGE;
	if (mdns_txt_has_key(t, key, key_len))
		return dup_err;
	if (t->n >= MDNS_TXT_STRINGS_MAX)
		return PKS_ERR_TOO_LARGE;
	p = &t->pairs[t->n];
	memset(p, 0, sizeof(*p));
	memcpy(p->key, key, key_len);
	p->has_value = has_value;
	if (has_value && value_len > 0)
		memcpy(p->value, value, value_len);
	p->value_len = (uint8_t)value_len;
	t->n++;
	return PKS_OK;
}

int mdns_txt_add(struct mdns_txt *t, const char *key, const void *value, size_t value_len)
{
	if (t == NULL || key == NULL || (value == NULL && value_len != 0))
		return PKS_ERR_INVALID;
	return mdns_txt_append(t, key, strlen(key), value != NULL, value,
			       value != NULL ? value_len : 0, PKS_ERR_EXISTS);
}

int mdns_txt_add_text(struct mdns_txt *t, const char *key_value)
{
	const char *eq;

	if (t == NULL || key_value == NULL)
		return PKS_ERR_INVALID;
	eq = strchr(key_value, '=');
	if (eq == NULL)
		return mdns_txt_append(t, key_value, strlen(key_value), false, NULL, 0,
				       PKS_ERR_EXISTS);
	return mdns_txt_append(t, key_value, (size_t)(eq - key_value), true,
			       (const uint8_t *)eq + 1, strlen(eq + 1), PKS_ERR_EXISTS);
}

int mdns_txt_build(const struct mdns_txt *t, uint8_t *out, size_t cap, size_t *out_len)
{
	struct pks_buf b;
	int r = PKS_ERR_INTERNAL;
	size_t limit = cap < MDNS_TXT_MAX ? cap : MDNS_TXT_MAX;

	if (t == NULL || out == NULL || out_len == NULL || t->n > MDNS_TXT_STRINGS_MAX)
		return PKS_ERR_INVALID;
	if (cap == 0)
		return PKS_ERR_TOO_LARGE;
	if (t->n == 0) {
		if (cap < 1)
			return PKS_ERR_TOO_LARGE;
		out[0] = 0;
		*out_len = 1;
		return PKS_OK;
	}
	pks_buf_init(&b, limit);
	for (size_t i = 0; i < t->n; i++) {
		const struct mdns_txt_pair *p = &t->pairs[i];
		size_t klen = strnlen(p->key, sizeof(p->key));
		size_t slen = klen + (p->has_value ? 1u + p->value_len : 0u);

		if (!mdns_txt_key_valid(p->key, klen) || slen > MDNS_TXT_STRING_MAX) {
			r = PKS_ERR_INVALID;
			goto out;
		}
		if ((r = pks_buf_u8(&b, (uint8_t)slen)) != PKS_OK ||
		    (r = pks_buf_append(&b, p->key, klen)) != PKS_OK)
			goto out;
		if (p->has_value && ((r = pks_buf_u8(&b, '=')) != PKS_OK ||
				     (r = pks_buf_append(&b, p->value, p->value_len)) != PKS_OK))
			goto out;
	}
	memcpy(out, b.data, b.len);
	*out_len = b.len;
	r = PKS_OK;
out:
	pks_buf_free(&b);
	return r;
}

int mdns_txt_parse(const uint8_t *data, size_t len, struct mdns_txt *out)
{
	struct mdns_txt t;
	struct pks_cursor c;
	int r = PKS_ERR_INTERNAL;

	if (out == NULL || (data == NULL && len != 0))
		return PKS_ERR_INVALID;
	if (len > MDNS_TXT_MAX)
		return PKS_ERR_TOO_LARGE;
	mdns_txt_init(&t);
	if (len == 0 || (len == 1 && data[0] == 0))
		goto done;
	c = pks_cursor_init(data, len);
	while (pks_cursor_left(&c) > 0) {
		const uint8_t *s, *eq;
		uint8_t slen;

		if ((r = pks_cursor_u8(&c, &slen)) != PKS_OK ||
		    (r = pks_cursor_take(&c, slen, &s)) != PKS_OK)
			goto out;
		if (slen == 0) {
			r = PKS_ERR_MALFORMED;
			goto out;
		}
		if (t.n >= MDNS_TXT_STRINGS_MAX) {
			r = PKS_ERR_TOO_LARGE;
			goto out;
		}
		eq = memchr(s, '=', slen);
		if (eq == NULL)
			r = mdns_txt_append(&t, (const char *)s, slen, false, NULL, 0,
					    PKS_ERR_MALFORMED);
		else
			r = mdns_txt_append(&t, (const char *)s, (size_t)(eq - s), true, eq + 1,
					    (size_t)(s + slen - eq - 1), PKS_ERR_MALFORMED);
		if (r != PKS_OK) {
			r = PKS_ERR_MALFORMED;
			goto out;
		}
	}
done:
	memcpy(out, &t, sizeof(t));
	r = PKS_OK;
out:
	return r;
}

const struct mdns_txt_pair *mdns_txt_get(const struct mdns_txt *t, const char *key)
{
	if (t == NULL || key == NULL)
		return NULL;
	for (size_t i = 0; i < t->n; i++)
		if (strcasecmp(t->pairs[i].key, key) == 0)
			return &t->pairs[i];
	return NULL;
}
