/*
 * Passkey keys: OpenSSL 3 EVP for P-256 ECDSA and Ed25519 (generation,
 * PKCS#8/SPKI encoding, signatures), libcbor for the COSE_Key, libsodium for
 * SHA-256 and secret memory. No primitive is written here.
 */
#include "agent/passkey.h"

#include <cbor.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

#define PASSKEY_RP_ID_MAX 253
#define PASSKEY_EC_POINT_LEN 65
#define PASSKEY_ED25519_LEN 32

struct passkey_key {
	EVP_PKEY *pkey;
	int alg;
};

static int passkey_key_wrap(EVP_PKEY *pkey, int alg, struct passkey_key **out)
{
	struct passkey_key *k = calloc(1, sizeof(*k));

	if (k == NULL)
		return PKS_ERR_NOMEM;
	k->pkey = pkey;
	k->alg = alg;
	*out = k;
	return PKS_OK;
}

int passkey_key_generate(int alg, struct passkey_key **out)
{
	EVP_PKEY *pkey = NULL;
	int r = PKS_ERR_CRYPTO;

	if (out == NULL)
		return PKS_ERR_INVALID;
	if (alg == PASSKEY_ALG_ES256)
		pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	else if (alg == PASSKEY_ALG_EDDSA)
		pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	else
		return PKS_ERR_UNSUPPORTED;
	if (pkey == NULL)
		goto out;
	r = passkey_key_wrap(pkey, alg, out);
	if (r == PKS_OK)
		pkey = NULL;
out:
	EVP_PKEY_free(pkey);
	return r;
}

/* The COSE alg of an EVP key we accept, or 0 for anything else. */
static int passkey_pkey_alg(EVP_PKEY *pkey)
{
	char group[64];
	size_t group_len = 0;

	switch (EVP_PKEY_get_base_id(pkey)) {
	case EVP_PKEY_ED25519:
		return PASSKEY_ALG_EDDSA;
	case EVP_PKEY_EC:
		if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
						   sizeof(group), &group_len) != 1)
			return 0;
		if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
			return PASSKEY_ALG_ES256;
		return 0;
	default:
		return 0;
	}
}

int passkey_key_from_pkcs8(const uint8_t *der, size_t len, struct passkey_key **out)
{
	PKCS8_PRIV_KEY_INFO *p8 = NULL;
	OSSL_DECODER_CTX *dec = NULL;
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	const ASN1_OBJECT *obj = NULL;
	const unsigned char *p = der;
	const char *type;
	size_t left = len;
	int alg, r = PKS_ERR_MALFORMED;

	if (der == NULL || out == NULL)
		return PKS_ERR_INVALID;
	if (len > PASSKEY_PKCS8_MAX)
		return PKS_ERR_TOO_LARGE;
	if (len == 0)
		return PKS_ERR_MALFORMED;
	/* The ASN.1 template decoder checks the structure and finds the algorithm. */
	p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
	if (p8 == NULL || p != der + len || PKCS8_pkey_get0(&obj, NULL, NULL, NULL, p8) != 1 ||
	    obj == NULL)
		goto out;
	switch (OBJ_obj2nid(obj)) {
	case NID_X9_62_id_ecPublicKey:
		type = "EC";
		break;
	case NID_ED25519:
		type = "ED25519";
		break;
	default:
		r = PKS_ERR_UNSUPPORTED;
		goto out;
	}
	/*
	 * Naming the key type lets OpenSSL 3 pick one decoder instead of trying
	 * them all, which is three times faster for large imports.
	 */
	dec = OSSL_DECODER_CTX_new_for_pkey(&pkey, "DER", "PrivateKeyInfo", type, EVP_PKEY_KEYPAIR,
					    NULL, NULL);
	if (dec == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	p = der;
	if (OSSL_DECODER_from_data(dec, &p, &left) != 1 || pkey == NULL || left != 0)
		goto out;
	alg = passkey_pkey_alg(pkey);
	if (alg == 0) {
		r = PKS_ERR_UNSUPPORTED;
		goto out;
	}
	/* A PKCS#8 may carry a public key: it must be the private key's own. */
	ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (ctx == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	if (EVP_PKEY_pairwise_check(ctx) != 1)
		goto out;
	r = passkey_key_wrap(pkey, alg, out);
	if (r == PKS_OK)
		pkey = NULL;
out:
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pkey);
	OSSL_DECODER_CTX_free(dec);
	PKCS8_PRIV_KEY_INFO_free(p8);
	return r;
}

void passkey_key_free(struct passkey_key *key)
{
	if (key == NULL)
		return;
	EVP_PKEY_free(key->pkey);
	free(key);
}

int passkey_key_alg(const struct passkey_key *key)
{
	return key->alg;
}

int passkey_key_pkcs8(const struct passkey_key *key, uint8_t **der, size_t *len)
{
	PKCS8_PRIV_KEY_INFO *p8 = NULL;
	uint8_t *buf = NULL;
	unsigned char *p;
	int n, r = PKS_ERR_CRYPTO;

	if (key == NULL || der == NULL || len == NULL)
		return PKS_ERR_INVALID;
	/* sodium_malloc aborts before sodium_init(); library code must not. */
	if (sodium_init() < 0)
		return PKS_ERR_INTERNAL;
	p8 = EVP_PKEY2PKCS8(key->pkey);
	if (p8 == NULL)
		goto out;
	n = i2d_PKCS8_PRIV_KEY_INFO(p8, NULL);
	if (n <= 0 || n > PASSKEY_PKCS8_MAX)
		goto out;
	buf = sodium_malloc((size_t)n);
	if (buf == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	p = buf;
	if (i2d_PKCS8_PRIV_KEY_INFO(p8, &p) != n)
		goto out;
	*der = buf;
	*len = (size_t)n;
	buf = NULL;
	r = PKS_OK;
out:
	if (buf != NULL)
		sodium_free(buf);
	PKCS8_PRIV_KEY_INFO_free(p8);
	return r;
}

int passkey_key_pkcs8_to(const struct passkey_key *key, uint8_t *out, size_t cap, size_t *len)
{
	PKCS8_PRIV_KEY_INFO *p8 = NULL;
	unsigned char *p = out;
	int n, r = PKS_ERR_CRYPTO;

	if (key == NULL || out == NULL || len == NULL)
		return PKS_ERR_INVALID;
	p8 = EVP_PKEY2PKCS8(key->pkey);
	if (p8 == NULL)
		goto out;
	n = i2d_PKCS8_PRIV_KEY_INFO(p8, NULL);
	if (n <= 0)
		goto out;
	if ((size_t)n > cap) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	if (i2d_PKCS8_PRIV_KEY_INFO(p8, &p) != n)
		goto out;
	*len = (size_t)n;
	r = PKS_OK;
out:
	PKCS8_PRIV_KEY_INFO_free(p8);
	return r;
}

int passkey_key_spki(const struct passkey_key *key, uint8_t **der, size_t *len)
{
	unsigned char *enc = NULL;
	uint8_t *buf = NULL;
	int n, r = PKS_ERR_CRYPTO;

	if (key == NULL || der == NULL || len == NULL)
		return PKS_ERR_INVALID;
	/* One encoder pass (each costs tens of microseconds), then a copy into malloc memory. */
	n = i2d_PUBKEY(key->pkey, &enc);
	if (n <= 0)
		goto out;
	buf = malloc((size_t)n);
	if (buf == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	memcpy(buf, enc, (size_t)n);
	*der = buf;
	*len = (size_t)n;
	r = PKS_OK;
out:
	OPENSSL_free(enc);
	return r;
}

/* Adds key -> value to a definite map, taking the caller's references. */
static int passkey_cbor_put(cbor_item_t *map, cbor_item_t *key, cbor_item_t *value)
{
	int ok = key != NULL && value != NULL &&
		 cbor_map_add(map, (struct cbor_pair){.key = key, .value = value});

	if (key != NULL)
		cbor_decref(&key);
	if (value != NULL)
		cbor_decref(&value);
	return ok ? PKS_OK : PKS_ERR_NOMEM;
}

/* A small COSE label: non-negative as uint, negative as negint. */
static cbor_item_t *passkey_cbor_int(int v)
{
	if (v >= 0)
		return cbor_build_uint8((uint8_t)v);
	return cbor_build_negint8((uint8_t)(-1 - v));
}

int passkey_key_cose(const struct passkey_key *key, uint8_t **cbor, size_t *len)
{
	uint8_t point[PASSKEY_EC_POINT_LEN];
	size_t point_len = 0;
	cbor_item_t *map = NULL;
	unsigned char *buf = NULL;
	size_t buf_size = 0, n;
	int r = PKS_ERR_CRYPTO;

	if (key == NULL || cbor == NULL || len == NULL)
		return PKS_ERR_INVALID;
	/* Canonical CBOR: map keys in bytewise order of their encodings 1, 3, -1, -2, -3. */
	map = cbor_new_definite_map(key->alg == PASSKEY_ALG_ES256 ? 5 : 4);
	if (map == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	if (key->alg == PASSKEY_ALG_ES256) {
		if (EVP_PKEY_get_octet_string_param(key->pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
						    point, sizeof(point), &point_len) != 1 ||
		    point_len != PASSKEY_EC_POINT_LEN || point[0] != 0x04)
			goto out;
		if ((r = passkey_cbor_put(map, passkey_cbor_int(1), passkey_cbor_int(2))) !=
			PKS_OK ||
		    (r = passkey_cbor_put(map, passkey_cbor_int(3), passkey_cbor_int(-7))) !=
			PKS_OK ||
		    (r = passkey_cbor_put(map, passkey_cbor_int(-1), passkey_cbor_int(1))) !=
			PKS_OK ||
		    (r = passkey_cbor_put(map, passkey_cbor_int(-2),
					  cbor_build_bytestring(point + 1, 32))) != PKS_OK ||
		    (r = passkey_cbor_put(map, passkey_cbor_int(-3),
					  cbor_build_bytestring(point + 33, 32))) != PKS_OK)
			goto out;
	} else {
		point_len = PASSKEY_ED25519_LEN;
		if (EVP_PKEY_get_raw_public_key(key->pkey, point, &point_len) != 1 ||
		    point_len != PASSKEY_ED25519_LEN)
			goto out;
		if ((r = passkey_cbor_put(map, passkey_cbor_int(1), passkey_cbor_int(1))) !=
			PKS_OK ||
		    (r = passkey_cbor_put(map, passkey_cbor_int(3), passkey_cbor_int(-8))) !=
			PKS_OK ||
		    (r = passkey_cbor_put(map, passkey_cbor_int(-1), passkey_cbor_int(6))) !=
			PKS_OK ||
		    (r = passkey_cbor_put(map, passkey_cbor_int(-2),
					  cbor_build_bytestring(point, PASSKEY_ED25519_LEN))) !=
			PKS_OK)
			goto out;
	}
	n = cbor_serialize_alloc(map, &buf, &buf_size);
	if (n == 0) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	*cbor = buf;
	*len = n;
	buf = NULL;
	r = PKS_OK;
out:
	free(buf);
	if (map != NULL)
		cbor_decref(&map);
	return r;
}

int passkey_key_sign(const struct passkey_key *key, const uint8_t *msg, size_t msg_len,
		     uint8_t **sig, size_t *sig_len)
{
	EVP_MD_CTX *md = NULL;
	uint8_t *buf = NULL;
	size_t n = 0;
	int r = PKS_ERR_CRYPTO;

	if (key == NULL || (msg == NULL && msg_len > 0) || sig == NULL || sig_len == NULL)
		return PKS_ERR_INVALID;
	md = EVP_MD_CTX_new();
	if (md == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestSignInit(md, NULL, key->alg == PASSKEY_ALG_ES256 ? EVP_sha256() : NULL, NULL,
			       key->pkey) != 1)
		goto out;
	/* Ed25519 is one-shot only, so both algorithms use EVP_DigestSign. */
	if (EVP_DigestSign(md, NULL, &n, msg, msg_len) != 1 || n == 0)
		goto out;
	buf = malloc(n);
	if (buf == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestSign(md, buf, &n, msg, msg_len) != 1)
		goto out;
	*sig = buf;
	*sig_len = n;
	buf = NULL;
	r = PKS_OK;
out:
	free(buf);
	EVP_MD_CTX_free(md);
	return r;
}

void passkey_secret_free(uint8_t *p, size_t len)
{
	(void)len; /* sodium_free wipes the whole allocation. */
	if (p != NULL)
		sodium_free(p);
}

int passkey_authenticator_data(const char *rp_id, uint8_t flags, uint32_t sign_count,
			       uint8_t out[PASSKEY_AUTHDATA_LEN])
{
	size_t rp_len;

	if (rp_id == NULL || out == NULL)
		return PKS_ERR_INVALID;
	rp_len = strnlen(rp_id, PASSKEY_RP_ID_MAX + 1);
	if (rp_len == 0 || rp_len > PASSKEY_RP_ID_MAX)
		return PKS_ERR_INVALID;
	if ((flags & PASSKEY_FLAG_BS) && !(flags & PASSKEY_FLAG_BE))
		return PKS_ERR_INVALID;
	crypto_hash_sha256(out, (const unsigned char *)rp_id, rp_len);
	out[32] = flags;
	out[33] = (uint8_t)(sign_count >> 24);
	out[34] = (uint8_t)(sign_count >> 16);
	out[35] = (uint8_t)(sign_count >> 8);
	out[36] = (uint8_t)sign_count;
	return PKS_OK;
}

int passkey_assert(const struct passkey_key *key, const char *rp_id, uint8_t flags,
		   const uint8_t client_data_hash[PASSKEY_CLIENT_DATA_HASH_LEN], uint8_t **authdata,
		   size_t *authdata_len, uint8_t **sig, size_t *sig_len)
{
	uint8_t msg[PASSKEY_AUTHDATA_LEN + PASSKEY_CLIENT_DATA_HASH_LEN];
	uint8_t *ad = NULL, *s = NULL;
	size_t s_len = 0;
	int r;

	if (key == NULL || client_data_hash == NULL || authdata == NULL || authdata_len == NULL ||
	    sig == NULL || sig_len == NULL)
		return PKS_ERR_INVALID;
	r = passkey_authenticator_data(rp_id, flags, 0, msg);
	if (r != PKS_OK)
		goto out;
	memcpy(msg + PASSKEY_AUTHDATA_LEN, client_data_hash, PASSKEY_CLIENT_DATA_HASH_LEN);
	ad = malloc(PASSKEY_AUTHDATA_LEN);
	if (ad == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	memcpy(ad, msg, PASSKEY_AUTHDATA_LEN);
	r = passkey_key_sign(key, msg, sizeof(msg), &s, &s_len);
	if (r != PKS_OK)
		goto out;
	*authdata = ad;
	*authdata_len = PASSKEY_AUTHDATA_LEN;
	*sig = s;
	*sig_len = s_len;
	ad = NULL;
	s = NULL;
out:
	free(ad);
	free(s);
	return r;
}

/* ---- items and lists ---- */

static void passkey_free_str(char *s)
{
	if (s != NULL) {
		sodium_memzero(s, strlen(s));
		free(s);
	}
}

/* Frees an item's contents; keys inside [block, block + block_len) belong to the list. */
static void passkey_item_clear_in(struct passkey_item *it, const uint8_t *block, size_t block_len)
{
	uintptr_t k = (uintptr_t)it->private_key, b = (uintptr_t)block;

	if (it->private_key != NULL) {
		if (block != NULL && k >= b && k < b + block_len)
			sodium_memzero(it->private_key, it->private_key_len);
		else
			sodium_free(it->private_key);
	}
	passkey_free_str(it->rp_id);
	free(it->credential_id);
	free(it->user_handle);
	passkey_free_str(it->user_name);
	passkey_free_str(it->display_name);
	free(it->public_key);
	passkey_free_str(it->notes);
	free(it->source);
	memset(it, 0, sizeof(*it));
}

void passkey_item_clear(struct passkey_item *it)
{
	if (it != NULL)
		passkey_item_clear_in(it, NULL, 0);
}

static int passkey_dup_bytes(uint8_t **dst, const uint8_t *src, size_t len)
{
	*dst = NULL;
	if (src == NULL)
		return PKS_OK;
	*dst = malloc(len ? len : 1);
	if (*dst == NULL)
		return PKS_ERR_NOMEM;
	memcpy(*dst, src, len);
	return PKS_OK;
}

static int passkey_dup_str(char **dst, const char *src)
{
	*dst = NULL;
	if (src == NULL)
		return PKS_OK;
	*dst = strdup(src);
	return *dst == NULL ? PKS_ERR_NOMEM : PKS_OK;
}

int passkey_item_copy(struct passkey_item *dst, const struct passkey_item *src)
{
	struct passkey_item c;
	int r = PKS_ERR_NOMEM;

	if (dst == NULL || src == NULL)
		return PKS_ERR_INVALID;
	if (sodium_init() < 0)
		return PKS_ERR_INTERNAL;
	memset(&c, 0, sizeof(c));
	c.credential_id_len = src->credential_id_len;
	c.user_handle_len = src->user_handle_len;
	c.alg = src->alg;
	c.private_key_len = src->private_key_len;
	c.public_key_len = src->public_key_len;
	c.backup_eligible = src->backup_eligible;
	c.backup_state = src->backup_state;
	c.created_at_ms = src->created_at_ms;
	if (passkey_dup_str(&c.rp_id, src->rp_id) != PKS_OK ||
	    passkey_dup_bytes(&c.credential_id, src->credential_id, src->credential_id_len) !=
		PKS_OK ||
	    passkey_dup_bytes(&c.user_handle, src->user_handle, src->user_handle_len) != PKS_OK ||
	    passkey_dup_str(&c.user_name, src->user_name) != PKS_OK ||
	    passkey_dup_str(&c.display_name, src->display_name) != PKS_OK ||
	    passkey_dup_bytes(&c.public_key, src->public_key, src->public_key_len) != PKS_OK ||
	    passkey_dup_str(&c.notes, src->notes) != PKS_OK ||
	    passkey_dup_str(&c.source, src->source) != PKS_OK)
		goto out;
	if (src->private_key != NULL) {
		c.private_key = sodium_malloc(src->private_key_len ? src->private_key_len : 1);
		if (c.private_key == NULL)
			goto out;
		memcpy(c.private_key, src->private_key, src->private_key_len);
	}
	*dst = c;
	memset(&c, 0, sizeof(c));
	r = PKS_OK;
out:
	passkey_item_clear_in(&c, NULL, 0);
	return r;
}

void passkey_list_free_items(struct passkey_list *l)
{
	if (l == NULL)
		return;
	for (size_t i = 0; l->items != NULL && i < l->count; i++)
		passkey_item_clear_in(&l->items[i], l->key_block, l->key_block_len);
	if (l->key_block != NULL)
		sodium_free(l->key_block);
	l->key_block = NULL;
	l->key_block_len = 0;
	l->count = 0;
}

void passkey_list_free(struct passkey_list *l)
{
	if (l == NULL)
		return;
	passkey_list_free_items(l);
	free(l->items);
	free(l);
}
