/*
 * Record versions: the plain struct, its setters and validation, record and
 * device ids, and sealing (encrypt under the epoch's data key, sign by the
 * author). The CBOR codec is in record-codec.c, the merge in merge.c.
 */
#include "proto/record.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/err.h"

/* Signed message = this domain string || header || ciphertext. */
static const char record_sig_domain[] = "pksync record version v1";
/* Record id = BLAKE2b-128(key, domain || be16 len || rp id || be16 len || cred id). */
static const char record_id_domain[] = "pksync record id v1";

static const size_t record_field_max[RECORD_FIELD_COUNT] = {
    [RECORD_FIELD_USER_NAME] = RECORD_USER_NAME_MAX,
    [RECORD_FIELD_DISPLAY_NAME] = RECORD_DISPLAY_NAME_MAX,
    [RECORD_FIELD_NOTES] = RECORD_NOTES_MAX,
};

/*
 * Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past
 * U+10FFFF) without NUL, so every string is also a C string.
 */
static bool record_utf8_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		size_t n;
		uint32_t cp, min;

		if (c == 0)
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
		i += n + 1;
	}
	return true;
}

/* PKS_OK, PKS_ERR_TOO_LARGE or PKS_ERR_INVALID for a string member. */
static int record_check_string(const char *s, size_t min, size_t max)
{
	size_t len;

	if (s == NULL)
		return PKS_ERR_INVALID;
	len = strnlen(s, max + 1);
	if (len > max)
		return PKS_ERR_TOO_LARGE;
	if (len < min || !record_utf8_valid((const uint8_t *)s, len))
		return PKS_ERR_INVALID;
	return PKS_OK;
}

static int record_check_bytes(const uint8_t *p, size_t len, size_t min, size_t max)
{
	if (p == NULL)
		return PKS_ERR_INVALID;
	if (len > max)
		return PKS_ERR_TOO_LARGE;
	if (len < min)
		return PKS_ERR_INVALID;
	return PKS_OK;
}

static void record_free_string(char **s)
{
	if (*s != NULL) {
		sodium_memzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

static void record_free_bytes(uint8_t **p, size_t *len)
{
	if (*p != NULL) {
		sodium_memzero(*p, *len);
		free(*p);
	}
	*p = NULL;
	*len = 0;
}

struct record_version *record_version_new(void)
{
	return calloc(1, sizeof(struct record_version));
}

void record_version_free(struct record_version *v)
{
	if (v == NULL)
		return;
	record_free_bytes(&v->credential_id, &v->credential_id_len);
	record_free_string(&v->rp_id);
	record_free_bytes(&v->user_handle, &v->user_handle_len);
	record_free_bytes(&v->private_key, &v->private_key_len);
	record_free_bytes(&v->public_key, &v->public_key_len);
	record_free_string(&v->source);
	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++)
		record_free_string(&v->field[f].value);
	if (v->restore_tags != NULL) {
		sodium_memzero(v->restore_tags, v->restore_tag_count * sizeof(*v->restore_tags));
		free(v->restore_tags);
	}
	sodium_memzero(v, sizeof(*v));
	free(v);
}

static int record_dup_bytes(const uint8_t *src, size_t len, uint8_t **out)
{
	uint8_t *p = malloc(len ? len : 1);

	if (p == NULL)
		return PKS_ERR_NOMEM;
	if (len > 0)
		memcpy(p, src, len);
	*out = p;
	return PKS_OK;
}

static int record_dup_string(const char *src, char **out)
{
	uint8_t *p = NULL;
	int r = record_dup_bytes((const uint8_t *)src, strlen(src) + 1, &p);

	if (r == PKS_OK)
		*out = (char *)p;
	return r;
}

int record_version_set_field(struct record_version *v, enum record_field f, const char *value,
			     hlc_t stamp)
{
	char *copy = NULL;
	int r;

	if (v == NULL || (unsigned int)f >= RECORD_FIELD_COUNT) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	r = record_check_string(value, 0, record_field_max[f]);
	if (r != PKS_OK)
		goto out;
	r = record_dup_string(value, &copy);
	if (r != PKS_OK)
		goto out;
	record_free_string(&v->field[f].value);
	v->field[f].value = copy;
	v->field[f].stamp = stamp;
	v->fields |= RECORD_FIELD_BIT(f);
	copy = NULL;
out:
	return r;
}

int record_version_set_credential(struct record_version *v, const uint8_t *credential_id,
				  size_t credential_id_len, const char *rp_id,
				  const uint8_t *user_handle, size_t user_handle_len)
{
	uint8_t *cred = NULL, *handle = NULL;
	char *rp = NULL;
	int r = PKS_ERR_INVALID;

	if (v == NULL)
		goto out;
	r = record_check_bytes(credential_id, credential_id_len, RECORD_CREDENTIAL_ID_MIN,
			       RECORD_CREDENTIAL_ID_MAX);
	if (r == PKS_OK)
		r = record_check_string(rp_id, RECORD_RP_ID_MIN, RECORD_RP_ID_MAX);
	if (r == PKS_OK)
		r = record_check_bytes(user_handle, user_handle_len, RECORD_USER_HANDLE_MIN,
				       RECORD_USER_HANDLE_MAX);
	if (r != PKS_OK)
		goto out;
	if ((r = record_dup_bytes(credential_id, credential_id_len, &cred)) != PKS_OK ||
	    (r = record_dup_string(rp_id, &rp)) != PKS_OK ||
	    (r = record_dup_bytes(user_handle, user_handle_len, &handle)) != PKS_OK)
		goto out;
	record_free_bytes(&v->credential_id, &v->credential_id_len);
	record_free_string(&v->rp_id);
	record_free_bytes(&v->user_handle, &v->user_handle_len);
	v->credential_id = cred;
	v->credential_id_len = credential_id_len;
	v->rp_id = rp;
	v->user_handle = handle;
	v->user_handle_len = user_handle_len;
	cred = handle = NULL;
	rp = NULL;
out:
	free(cred);
	free(rp);
	free(handle);
	return r;
}

int record_version_set_keys(struct record_version *v, enum record_alg alg,
			    const uint8_t *private_key, size_t private_key_len,
			    const uint8_t *public_key, size_t public_key_len)
{
	uint8_t *sk = NULL, *pk = NULL;
	int r = PKS_ERR_INVALID;

	if (v == NULL || (alg != RECORD_ALG_ES256 && alg != RECORD_ALG_EDDSA))
		goto out;
	r = record_check_bytes(private_key, private_key_len, RECORD_PRIVATE_KEY_MIN,
			       RECORD_PRIVATE_KEY_MAX);
	if (r == PKS_OK)
		r = record_check_bytes(public_key, public_key_len, RECORD_PUBLIC_KEY_MIN,
				       RECORD_PUBLIC_KEY_MAX);
	if (r != PKS_OK)
		goto out;
	sk = malloc(private_key_len);
	if (sk == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	memcpy(sk, private_key, private_key_len);
	r = record_dup_bytes(public_key, public_key_len, &pk);
	if (r != PKS_OK)
		goto out;
	record_free_bytes(&v->private_key, &v->private_key_len);
	record_free_bytes(&v->public_key, &v->public_key_len);
	v->alg = alg;
	v->private_key = sk;
	v->private_key_len = private_key_len;
	v->public_key = pk;
	v->public_key_len = public_key_len;
	sk = pk = NULL;
out:
	if (sk != NULL) {
		sodium_memzero(sk, private_key_len);
		free(sk);
	}
	free(pk);
	return r;
}

int record_version_set_source(struct record_version *v, const char *source)
{
	char *copy = NULL;
	int r = PKS_ERR_INVALID;

	if (v == NULL)
		goto out;
	r = record_check_string(source, 0, RECORD_SOURCE_MAX);
	if (r != PKS_OK)
		goto out;
	r = record_dup_string(source, &copy);
	if (r != PKS_OK)
		goto out;
	record_free_string(&v->source);
	v->source = copy;
out:
	return r;
}

int record_version_add_restore_tag(struct record_version *v, const struct record_delete_tag *tag)
{
	struct record_delete_tag *tags;
	int r = PKS_ERR_INVALID;

	if (v == NULL || tag == NULL)
		goto out;
	if (v->restore_tag_count >= RECORD_RESTORE_TAGS_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	tags = calloc(v->restore_tag_count + 1, sizeof(*tags));
	if (tags == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	if (v->restore_tag_count > 0)
		memcpy(tags, v->restore_tags, v->restore_tag_count * sizeof(*tags));
	tags[v->restore_tag_count] = *tag;
	free(v->restore_tags);
	v->restore_tags = tags;
	v->restore_tag_count++;
	r = PKS_OK;
out:
	return r;
}

/* Members only a CREATE may carry are all empty. */
static bool record_no_create_members(const struct record_version *v)
{
	return v->credential_id == NULL && v->credential_id_len == 0 && v->rp_id == NULL &&
	       v->user_handle == NULL && v->user_handle_len == 0 && v->alg == 0 &&
	       v->private_key == NULL && v->private_key_len == 0 && v->public_key == NULL &&
	       v->public_key_len == 0 && !v->backup_eligible && !v->backup_state &&
	       v->created_at == 0 && v->source == NULL;
}

static bool record_no_fields(const struct record_version *v)
{
	if (v->fields != 0)
		return false;
	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++)
		if (v->field[f].value != NULL || v->field[f].stamp != 0)
			return false;
	return true;
}

static int record_check_fields(const struct record_version *v)
{
	int r = PKS_OK;

	if ((v->fields & ~RECORD_FIELDS_ALL) != 0)
		return PKS_ERR_INVALID;
	for (size_t f = 0; f < RECORD_FIELD_COUNT && r == PKS_OK; f++) {
		if (v->fields & RECORD_FIELD_BIT(f))
			r = record_check_string(v->field[f].value, 0, record_field_max[f]);
		else if (v->field[f].value != NULL || v->field[f].stamp != 0)
			r = PKS_ERR_INVALID;
	}
	return r;
}

int record_delete_tag_cmp(const struct record_delete_tag *a, const struct record_delete_tag *b)
{
	if (a->hlc != b->hlc)
		return a->hlc < b->hlc ? -1 : 1;
	return memcmp(a->author, b->author, DEVICE_ID_LEN);
}

static int record_check_tags(const struct record_version *v)
{
	if (v->restore_tags == NULL || v->restore_tag_count < RECORD_RESTORE_TAGS_MIN)
		return PKS_ERR_INVALID;
	if (v->restore_tag_count > RECORD_RESTORE_TAGS_MAX)
		return PKS_ERR_TOO_LARGE;
	for (size_t i = 0; i < v->restore_tag_count; i++)
		for (size_t k = i + 1; k < v->restore_tag_count; k++)
			if (record_delete_tag_cmp(&v->restore_tags[i], &v->restore_tags[k]) == 0)
				return PKS_ERR_INVALID;
	return PKS_OK;
}

static int record_check_create(const struct record_version *v)
{
	int r;

	r = record_check_bytes(v->credential_id, v->credential_id_len, RECORD_CREDENTIAL_ID_MIN,
			       RECORD_CREDENTIAL_ID_MAX);
	if (r == PKS_OK)
		r = record_check_string(v->rp_id, RECORD_RP_ID_MIN, RECORD_RP_ID_MAX);
	if (r == PKS_OK)
		r = record_check_bytes(v->user_handle, v->user_handle_len, RECORD_USER_HANDLE_MIN,
				       RECORD_USER_HANDLE_MAX);
	if (r == PKS_OK && v->alg != RECORD_ALG_ES256 && v->alg != RECORD_ALG_EDDSA)
		r = PKS_ERR_INVALID;
	if (r == PKS_OK)
		r = record_check_bytes(v->private_key, v->private_key_len, RECORD_PRIVATE_KEY_MIN,
				       RECORD_PRIVATE_KEY_MAX);
	if (r == PKS_OK)
		r = record_check_bytes(v->public_key, v->public_key_len, RECORD_PUBLIC_KEY_MIN,
				       RECORD_PUBLIC_KEY_MAX);
	if (r == PKS_OK && v->source != NULL)
		r = record_check_string(v->source, 0, RECORD_SOURCE_MAX);
	if (r == PKS_OK)
		r = record_check_fields(v);
	return r;
}

int record_version_validate(const struct record_version *v)
{
	bool no_tags;
	int r = PKS_ERR_INVALID;

	if (v == NULL || v->seq == 0)
		goto out;
	no_tags = v->restore_tags == NULL && v->restore_tag_count == 0;
	switch (v->op) {
	case RECORD_OP_CREATE:
		if (!no_tags)
			goto out;
		r = record_check_create(v);
		break;
	case RECORD_OP_UPDATE:
		if (!no_tags || v->hlc != 0 || !record_no_create_members(v) || v->fields == 0)
			goto out;
		r = record_check_fields(v);
		break;
	case RECORD_OP_DELETE:
	case RECORD_OP_PURGE:
		if (!no_tags || !record_no_create_members(v) || !record_no_fields(v))
			goto out;
		r = PKS_OK;
		break;
	case RECORD_OP_RESTORE:
		if (!record_no_create_members(v) || !record_no_fields(v))
			goto out;
		r = record_check_tags(v);
		break;
	default:
		goto out;
	}
out:
	return r;
}

int record_id_derive(const uint8_t id_key[RECORD_ID_KEY_LEN], const char *rp_id,
		     const uint8_t *cred_id, size_t cred_len, uint8_t out[RECORD_ID_LEN])
{
	crypto_generichash_state h;
	uint8_t len_be[2];
	size_t rp_len;
	int r = PKS_ERR_INVALID;

	if (id_key == NULL || out == NULL ||
	    record_check_string(rp_id, RECORD_RP_ID_MIN, RECORD_RP_ID_MAX) != PKS_OK ||
	    record_check_bytes(cred_id, cred_len, RECORD_CREDENTIAL_ID_MIN,
			       RECORD_CREDENTIAL_ID_MAX) != PKS_OK)
		goto out;
	rp_len = strlen(rp_id);
	if (crypto_generichash_init(&h, id_key, RECORD_ID_KEY_LEN, RECORD_ID_LEN) != 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	crypto_generichash_update(&h, (const uint8_t *)record_id_domain,
				  sizeof(record_id_domain) - 1);
	len_be[0] = (uint8_t)(rp_len >> 8);
	len_be[1] = (uint8_t)rp_len;
	crypto_generichash_update(&h, len_be, 2);
	crypto_generichash_update(&h, (const uint8_t *)rp_id, rp_len);
	len_be[0] = (uint8_t)(cred_len >> 8);
	len_be[1] = (uint8_t)cred_len;
	crypto_generichash_update(&h, len_be, 2);
	crypto_generichash_update(&h, cred_id, cred_len);
	crypto_generichash_final(&h, out, RECORD_ID_LEN);
	r = PKS_OK;
out:
	sodium_memzero(&h, sizeof(h));
	return r;
}

int record_version_check_id(const struct record_version *v, const uint8_t id_key[RECORD_ID_KEY_LEN])
{
	uint8_t id[RECORD_ID_LEN];
	int r = PKS_ERR_INVALID;

	if (v == NULL || v->op != RECORD_OP_CREATE)
		goto out;
	r = record_id_derive(id_key, v->rp_id, v->credential_id, v->credential_id_len, id);
	if (r != PKS_OK)
		goto out;
	r = sodium_memcmp(id, v->record_id, RECORD_ID_LEN) == 0 ? PKS_OK : PKS_ERR_REJECTED;
out:
	return r;
}

void record_device_id(const uint8_t sign_pk[32], uint8_t out[DEVICE_ID_LEN])
{
	crypto_generichash(out, DEVICE_ID_LEN, sign_pk, crypto_sign_PUBLICKEYBYTES, NULL, 0);
}

static void record_header_write(const struct record_version *v, const uint8_t nonce[24],
				uint8_t out[RECORD_SEALED_HEADER_LEN])
{
	size_t off = 0;

	out[off++] = RECORD_SEALED_FORMAT;
	memcpy(out + off, v->record_id, RECORD_ID_LEN);
	off += RECORD_ID_LEN;
	memcpy(out + off, v->author, DEVICE_ID_LEN);
	off += DEVICE_ID_LEN;
	for (int i = 7; i >= 0; i--)
		out[off++] = (uint8_t)(v->seq >> (8 * i));
	for (int i = 3; i >= 0; i--)
		out[off++] = (uint8_t)(v->epoch >> (8 * i));
	memcpy(out + off, nonce, RECORD_NONCE_LEN);
}

/* domain || header || ciphertext, the message the author signs. */
static int record_signed_message(const uint8_t *header_and_ct, size_t len, uint8_t **out,
				 size_t *out_len)
{
	size_t dlen = sizeof(record_sig_domain) - 1;
	uint8_t *m = malloc(dlen + len);

	if (m == NULL)
		return PKS_ERR_NOMEM;
	memcpy(m, record_sig_domain, dlen);
	memcpy(m + dlen, header_and_ct, len);
	*out = m;
	*out_len = dlen + len;
	return PKS_OK;
}

int record_version_seal(const struct record_version *v, const uint8_t data_key[RECORD_DATA_KEY_LEN],
			const uint8_t sign_sk[64], const uint8_t nonce[RECORD_NONCE_LEN],
			uint8_t **out, size_t *out_len)
{
	uint8_t author[DEVICE_ID_LEN];
	uint8_t *body = NULL, *blob = NULL, *msg = NULL;
	size_t body_len = 0, blob_len, ct_len, msg_len = 0;
	unsigned long long clen = 0;
	int r = PKS_ERR_INVALID;

	if (v == NULL || data_key == NULL || sign_sk == NULL || nonce == NULL || out == NULL ||
	    out_len == NULL)
		goto out;
	record_device_id(sign_sk + 32, author);
	if (sodium_memcmp(author, v->author, DEVICE_ID_LEN) != 0)
		goto out;
	r = record_version_encode(v, &body, &body_len);
	if (r != PKS_OK)
		goto out;
	ct_len = body_len + RECORD_SEALED_MAC_LEN;
	blob_len = RECORD_SEALED_HEADER_LEN + ct_len + RECORD_SEALED_SIG_LEN;
	blob = malloc(blob_len);
	if (blob == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	record_header_write(v, nonce, blob);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(blob + RECORD_SEALED_HEADER_LEN, &clen, body,
						       body_len, blob, RECORD_SEALED_HEADER_LEN,
						       NULL, nonce, data_key) != 0 ||
	    clen != ct_len) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	r = record_signed_message(blob, RECORD_SEALED_HEADER_LEN + ct_len, &msg, &msg_len);
	if (r != PKS_OK)
		goto out;
	if (crypto_sign_detached(blob + RECORD_SEALED_HEADER_LEN + ct_len, NULL, msg, msg_len,
				 sign_sk) != 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	*out = blob;
	*out_len = blob_len;
	blob = NULL;
	r = PKS_OK;
out:
	if (body != NULL) {
		sodium_memzero(body, body_len);
		free(body);
	}
	free(blob);
	free(msg);
	return r;
}

int record_sealed_peek(const uint8_t *blob, size_t len, struct record_sealed_header *h)
{
	struct pks_cursor c = pks_cursor_init(blob, len);
	struct record_sealed_header tmp;
	int r = PKS_ERR_INVALID;

	if ((blob == NULL && len > 0) || h == NULL)
		goto out;
	if (len < RECORD_SEALED_MIN) {
		r = PKS_ERR_TRUNCATED;
		goto out;
	}
	if (len > RECORD_SEALED_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	if ((r = pks_cursor_u8(&c, &tmp.format)) != PKS_OK ||
	    (r = pks_cursor_read(&c, tmp.record_id, RECORD_ID_LEN)) != PKS_OK ||
	    (r = pks_cursor_read(&c, tmp.author, DEVICE_ID_LEN)) != PKS_OK ||
	    (r = pks_cursor_be64(&c, &tmp.seq)) != PKS_OK ||
	    (r = pks_cursor_be32(&c, &tmp.epoch)) != PKS_OK ||
	    (r = pks_cursor_read(&c, tmp.nonce, RECORD_NONCE_LEN)) != PKS_OK)
		goto out;
	if (tmp.format != RECORD_SEALED_FORMAT || tmp.seq == 0) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	*h = tmp;
	r = PKS_OK;
out:
	return r;
}

int record_version_open(const uint8_t *blob, size_t len, const uint8_t author_pk[32],
			const uint8_t data_key[RECORD_DATA_KEY_LEN], struct record_version **out)
{
	struct record_sealed_header h;
	struct record_version *v = NULL;
	uint8_t author[DEVICE_ID_LEN];
	uint8_t *msg = NULL, *body = NULL;
	size_t msg_len = 0, ct_len, body_len = 0;
	unsigned long long plen = 0;
	int r = PKS_ERR_INVALID;

	if (author_pk == NULL || data_key == NULL || out == NULL)
		goto out;
	r = record_sealed_peek(blob, len, &h);
	if (r != PKS_OK)
		goto out;
	ct_len = len - RECORD_SEALED_HEADER_LEN - RECORD_SEALED_SIG_LEN;
	record_device_id(author_pk, author);
	if (sodium_memcmp(author, h.author, DEVICE_ID_LEN) != 0) {
		r = PKS_ERR_AUTH;
		goto out;
	}
	r = record_signed_message(blob, RECORD_SEALED_HEADER_LEN + ct_len, &msg, &msg_len);
	if (r != PKS_OK)
		goto out;
	if (crypto_sign_verify_detached(blob + RECORD_SEALED_HEADER_LEN + ct_len, msg, msg_len,
					author_pk) != 0) {
		r = PKS_ERR_AUTH;
		goto out;
	}
	body_len = ct_len - RECORD_SEALED_MAC_LEN;
	body = malloc(body_len);
	if (body == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
		body, &plen, NULL, blob + RECORD_SEALED_HEADER_LEN, ct_len, blob,
		RECORD_SEALED_HEADER_LEN, h.nonce, data_key) != 0 ||
	    plen != body_len) {
		r = PKS_ERR_AUTH;
		goto out;
	}
	r = record_version_decode(body, body_len, &v);
	if (r != PKS_OK)
		goto out;
	if (memcmp(v->record_id, h.record_id, RECORD_ID_LEN) != 0 ||
	    memcmp(v->author, h.author, DEVICE_ID_LEN) != 0 || v->seq != h.seq ||
	    v->epoch != h.epoch) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	*out = v;
	v = NULL;
	r = PKS_OK;
out:
	record_version_free(v);
	if (body != NULL) {
		/* The plaintext may hold a private key. */
		sodium_memzero(body, body_len);
		free(body);
	}
	free(msg);
	return r;
}
