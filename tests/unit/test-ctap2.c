/*
 * CTAP2 command layer against an in-test vault built on agent/passkey.h.
 * Signatures are verified with OpenSSL from the COSE key the authenticator
 * returned (not from the backend's key), and every successful response is
 * re-encoded canonically by an encoder written here and compared byte for
 * byte.
 */
#include "agent/ctap2.h"

#include <cbor.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "agent/passkey.h"
#include "common/bytes.h"
#include "common/err.h"
#include "tests/check.h"

static const uint8_t test_aaguid[16] = {0x70, 0x6b, 0x73, 0x79, 0x6e, 0x63, 0x2d, 0x74,
					0x65, 0x73, 0x74, 0x2d, 0x61, 0x61, 0x67, 0x31};

#define F_UP 0x01
#define F_UV 0x04
#define F_BE 0x08
#define F_BS 0x10
#define F_AT 0x40

/* ---- the in-test vault ---- */

#define TB_MAX 40

struct tb_entry {
	struct ctap2_cred cred;
	struct passkey_key *key;
};

struct test_backend {
	struct tb_entry e[TB_MAX];
	size_t n;
	unsigned int next_id;
	int find_error, create_error, sign_error;
	long handles; /* find/create fills minus releases */
	int finds;
};

static int tb_find(void *user, const char *rp_id, const struct ctap2_allow *allow,
		   struct ctap2_cred *out, size_t max, size_t *n)
{
	struct test_backend *tb = user;
	size_t k = 0;

	tb->finds++;
	if (tb->find_error != 0)
		return tb->find_error;
	for (size_t i = tb->n; i-- > 0 && k < max;) {
		const struct ctap2_cred *c = &tb->e[i].cred;
		bool hit = allow == NULL;

		if (strcmp(c->rp_id, rp_id) != 0)
			continue;
		for (size_t a = 0; allow != NULL && a < allow->count; a++)
			if (allow->id_len[a] == c->id_len &&
			    memcmp(allow->id[a], c->id, c->id_len) == 0)
				hit = true;
		if (!hit)
			continue;
		out[k] = *c;
		out[k].key = tb->e[i].key;
		k++;
		tb->handles++;
	}
	*n = k;
	return PKS_OK;
}

static int tb_create(void *user, const char *rp_id, const char *rp_name, const uint8_t *user_id,
		     size_t user_id_len, const char *user_name, const char *display_name, int alg,
		     struct ctap2_cred *out, uint8_t *cose, size_t cose_cap, size_t *cose_len)
{
	struct test_backend *tb = user;
	struct tb_entry *e;
	uint8_t *c = NULL;
	size_t c_len = 0;
	int r;

	(void)rp_name;
	if (tb->create_error != 0)
		return tb->create_error;
	if (tb->n == TB_MAX)
		return PKS_ERR_TOO_LARGE;
	e = &tb->e[tb->n];
	memset(e, 0, sizeof(*e));
	if ((r = passkey_key_generate(alg, &e->key)) != PKS_OK)
		return r;
	if ((r = passkey_key_cose(e->key, &c, &c_len)) != PKS_OK || c_len > cose_cap) {
		free(c);
		passkey_key_free(e->key);
		return r != PKS_OK ? r : PKS_ERR_TOO_LARGE;
	}
	memcpy(cose, c, c_len);
	*cose_len = c_len;
	free(c);
	tb->next_id++;
	/* Ids of different lengths, as other authenticators make them. */
	e->cred.id_len = 16 + tb->next_id % 7;
	memset(e->cred.id, 0xc0 + (int)(tb->next_id & 0x0f), e->cred.id_len);
	e->cred.id[0] = (uint8_t)tb->next_id;
	snprintf(e->cred.rp_id, sizeof(e->cred.rp_id), "%s", rp_id);
	memcpy(e->cred.user_id, user_id, user_id_len);
	e->cred.user_id_len = user_id_len;
	snprintf(e->cred.user_name, sizeof(e->cred.user_name), "%s", user_name);
	snprintf(e->cred.display_name, sizeof(e->cred.display_name), "%s", display_name);
	e->cred.alg = alg;
	e->cred.be = true;
	e->cred.bs = true;
	tb->n++;
	*out = e->cred;
	out->key = e->key;
	tb->handles++;
	return PKS_OK;
}

static int tb_sign(void *user, const struct ctap2_cred *cred, const uint8_t *msg, size_t len,
		   uint8_t *sig, size_t cap, size_t *sig_len)
{
	struct test_backend *tb = user;
	uint8_t *s = NULL;
	size_t s_len = 0;
	int r;

	if (tb->sign_error != 0)
		return tb->sign_error;
	if ((r = passkey_key_sign(cred->key, msg, len, &s, &s_len)) != PKS_OK)
		return r;
	if (s_len > cap) {
		free(s);
		return PKS_ERR_TOO_LARGE;
	}
	memcpy(sig, s, s_len);
	*sig_len = s_len;
	free(s);
	return PKS_OK;
}

static void tb_release(void *user, struct ctap2_cred *cred)
{
	struct test_backend *tb = user;

	(void)cred;
	tb->handles--;
}

static const struct ctap2_backend tb_ops = {tb_find, tb_create, tb_sign, tb_release};

static void tb_clear(struct test_backend *tb)
{
	for (size_t i = 0; i < tb->n; i++)
		passkey_key_free(tb->e[i].key);
	free(tb);
}

struct fixture {
	struct test_backend *tb;
	struct ctap2 *c;
	uint64_t now;
};

static void fx_init(struct fixture *fx, bool uv)
{
	memset(fx, 0, sizeof(*fx));
	fx->tb = calloc(1, sizeof(*fx->tb));
	CHECK(fx->tb != NULL);
	CHECK_OK(ctap2_new(&tb_ops, fx->tb, test_aaguid, uv, &fx->c));
	fx->now = 1000000;
}

static void fx_done(struct fixture *fx)
{
	ctap2_free(fx->c);
	/* Every credential handle given out was given back. */
	CHECK_EQ(fx->tb->handles, 0);
	tb_clear(fx->tb);
}

/* ---- request encoding ---- */

static void e_head(struct pks_buf *b, size_t n, const unsigned char *h)
{
	CHECK(n > 0);
	CHECK_OK(pks_buf_append(b, h, n));
}

static void e_uint(struct pks_buf *b, uint64_t v)
{
	unsigned char h[9];

	e_head(b, cbor_encode_uint(v, h, 9), h);
}

static void e_int(struct pks_buf *b, int64_t v)
{
	unsigned char h[9];

	if (v >= 0)
		e_uint(b, (uint64_t)v);
	else
		e_head(b, cbor_encode_negint((uint64_t)(-1 - v), h, 9), h);
}

static void e_bytes(struct pks_buf *b, const void *p, size_t n)
{
	unsigned char h[9];

	e_head(b, cbor_encode_bytestring_start(n, h, 9), h);
	if (n > 0)
		CHECK_OK(pks_buf_append(b, p, n));
}

static void e_textn(struct pks_buf *b, const char *s, size_t n)
{
	unsigned char h[9];

	e_head(b, cbor_encode_string_start(n, h, 9), h);
	if (n > 0)
		CHECK_OK(pks_buf_append(b, s, n));
}

static void e_text(struct pks_buf *b, const char *s)
{
	e_textn(b, s, strlen(s));
}

static void e_map(struct pks_buf *b, size_t n)
{
	unsigned char h[9];

	e_head(b, cbor_encode_map_start(n, h, 9), h);
}

static void e_array(struct pks_buf *b, size_t n)
{
	unsigned char h[9];

	e_head(b, cbor_encode_array_start(n, h, 9), h);
}

static void e_bool(struct pks_buf *b, bool v)
{
	unsigned char h[1];

	e_head(b, cbor_encode_bool(v, h, 1), h);
}

#define OPT_ABSENT (-1)

struct id_ref {
	const uint8_t *id;
	size_t len;
	const char *type; /* NULL: "public-key" */
};

struct mc_args {
	const char *rp_id, *rp_name;
	const uint8_t *user_id;
	size_t user_id_len;
	const char *user_name, *display_name;
	int64_t algs[4];
	const char *alg_type; /* NULL: "public-key" */
	size_t n_algs;
	struct id_ref excl[2];
	size_t n_excl;
	int rk, up, uv;
	unsigned int omit; /* bit k: leave out key k */
	bool pin_param, pin_proto, ext;
};

static const uint8_t cdh_a[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
				  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t uid_alice[] = {0xa1, 0x1c, 0xe0, 0x01};
static const uint8_t uid_bob[] = {0xb0, 0xb0, 0x02};

static struct mc_args mc_default(void)
{
	struct mc_args a = {0};

	a.rp_id = "example.com";
	a.rp_name = "Example";
	a.user_id = uid_alice;
	a.user_id_len = sizeof(uid_alice);
	a.user_name = "alice@example.com";
	a.display_name = "Alice";
	a.algs[0] = -7;
	a.n_algs = 1;
	a.rk = a.up = a.uv = OPT_ABSENT;
	return a;
}

static void e_descriptor(struct pks_buf *b, const struct id_ref *d)
{
	e_map(b, 2);
	e_text(b, "id");
	e_bytes(b, d->id, d->len);
	e_text(b, "type");
	e_text(b, d->type ? d->type : "public-key");
}

static size_t e_options_count(int rk, int up, int uv)
{
	return (size_t)(rk != OPT_ABSENT) + (size_t)(up != OPT_ABSENT) + (size_t)(uv != OPT_ABSENT);
}

static void e_options(struct pks_buf *b, int rk, int up, int uv)
{
	e_map(b, e_options_count(rk, up, uv));
	if (rk != OPT_ABSENT) {
		e_text(b, "rk");
		e_bool(b, rk);
	}
	if (up != OPT_ABSENT) {
		e_text(b, "up");
		e_bool(b, up);
	}
	if (uv != OPT_ABSENT) {
		e_text(b, "uv");
		e_bool(b, uv);
	}
}

/* A makeCredential request (command byte included) into b. */
static void mc_build(struct pks_buf *b, const struct mc_args *a)
{
	bool has[10] = {false};
	size_t n = 0;

	pks_buf_init(b, 0);
	has[1] = has[2] = has[3] = has[4] = true;
	has[5] = a->n_excl > 0;
	has[6] = a->ext;
	has[7] = e_options_count(a->rk, a->up, a->uv) > 0;
	has[8] = a->pin_param;
	has[9] = a->pin_proto;
	for (int k = 1; k < 10; k++) {
		if (a->omit & (1u << k))
			has[k] = false;
		n += has[k];
	}
	CHECK_OK(pks_buf_u8(b, CTAP2_CMD_MAKE_CREDENTIAL));
	e_map(b, n);
	if (has[1]) {
		e_uint(b, 1);
		e_bytes(b, cdh_a, 32);
	}
	if (has[2]) {
		e_uint(b, 2);
		e_map(b, a->rp_name ? 2 : 1);
		e_text(b, "id");
		e_text(b, a->rp_id);
		if (a->rp_name) {
			e_text(b, "name");
			e_text(b, a->rp_name);
		}
	}
	if (has[3]) {
		e_uint(b, 3);
		e_map(b, 3);
		e_text(b, "id");
		e_bytes(b, a->user_id, a->user_id_len);
		e_text(b, "name");
		e_text(b, a->user_name);
		e_text(b, "displayName");
		e_text(b, a->display_name);
	}
	if (has[4]) {
		e_uint(b, 4);
		e_array(b, a->n_algs);
		for (size_t i = 0; i < a->n_algs; i++) {
			e_map(b, 2);
			e_text(b, "alg");
			e_int(b, a->algs[i]);
			e_text(b, "type");
			e_text(b, a->alg_type ? a->alg_type : "public-key");
		}
	}
	if (has[5]) {
		e_uint(b, 5);
		e_array(b, a->n_excl);
		for (size_t i = 0; i < a->n_excl; i++)
			e_descriptor(b, &a->excl[i]);
	}
	if (has[6]) {
		e_uint(b, 6);
		e_map(b, 1);
		e_text(b, "credProtect");
		e_uint(b, 2);
	}
	if (has[7]) {
		e_uint(b, 7);
		e_options(b, a->rk, a->up, a->uv);
	}
	if (has[8]) {
		e_uint(b, 8);
		e_bytes(b, cdh_a, 16);
	}
	if (has[9]) {
		e_uint(b, 9);
		e_uint(b, 1);
	}
}

struct ga_args {
	const char *rp_id;
	struct id_ref allow[2];
	size_t n_allow;
	int rk, up, uv;
	unsigned int omit;
};

static struct ga_args ga_default(void)
{
	struct ga_args a = {0};

	a.rp_id = "example.com";
	a.rk = a.up = a.uv = OPT_ABSENT;
	return a;
}

static void ga_build(struct pks_buf *b, const struct ga_args *a)
{
	bool has[6] = {false};
	size_t n = 0;

	pks_buf_init(b, 0);
	has[1] = has[2] = true;
	has[3] = a->n_allow > 0;
	has[5] = e_options_count(a->rk, a->up, a->uv) > 0;
	for (int k = 1; k < 6; k++) {
		if (a->omit & (1u << k))
			has[k] = false;
		n += has[k];
	}
	CHECK_OK(pks_buf_u8(b, CTAP2_CMD_GET_ASSERTION));
	e_map(b, n);
	if (has[1]) {
		e_uint(b, 1);
		e_text(b, a->rp_id);
	}
	if (has[2]) {
		e_uint(b, 2);
		e_bytes(b, cdh_a, 32);
	}
	if (has[3]) {
		e_uint(b, 3);
		e_array(b, a->n_allow);
		for (size_t i = 0; i < a->n_allow; i++)
			e_descriptor(b, &a->allow[i]);
	}
	if (has[5]) {
		e_uint(b, 5);
		e_options(b, a->rk, a->up, a->uv);
	}
}

/* ---- canonical re-encoding of responses ---- */

static void canon_item(struct pks_buf *b, const cbor_item_t *it);

struct canon_pair {
	struct pks_buf k, v;
};

static int canon_pair_cmp(const void *pa, const void *pb)
{
	const struct canon_pair *x = pa, *y = pb;

	if (x->k.len != y->k.len)
		return x->k.len < y->k.len ? -1 : 1;
	return memcmp(x->k.data, y->k.data, x->k.len);
}

static void canon_item(struct pks_buf *b, const cbor_item_t *it)
{
	unsigned char h[9];

	switch (cbor_typeof(it)) {
	case CBOR_TYPE_UINT:
		e_uint(b, cbor_get_int(it));
		break;
	case CBOR_TYPE_NEGINT:
		e_head(b, cbor_encode_negint(cbor_get_int(it), h, 9), h);
		break;
	case CBOR_TYPE_BYTESTRING:
		CHECK(cbor_bytestring_is_definite(it));
		if (cbor_bytestring_is_definite(it))
			e_bytes(b, cbor_bytestring_handle(it), cbor_bytestring_length(it));
		break;
	case CBOR_TYPE_STRING:
		CHECK(cbor_string_is_definite(it));
		if (cbor_string_is_definite(it))
			e_textn(b, (const char *)cbor_string_handle(it), cbor_string_length(it));
		break;
	case CBOR_TYPE_ARRAY:
		CHECK(cbor_array_is_definite(it));
		e_array(b, cbor_array_size(it));
		for (size_t i = 0; i < cbor_array_size(it); i++)
			canon_item(b, cbor_array_handle(it)[i]);
		break;
	case CBOR_TYPE_MAP: {
		size_t n = cbor_map_size(it);
		struct canon_pair *p = calloc(n ? n : 1, sizeof(*p));
		struct cbor_pair *src = cbor_map_handle(it);

		CHECK(cbor_map_is_definite(it));
		CHECK(p != NULL);
		if (p == NULL)
			break;
		for (size_t i = 0; i < n; i++) {
			pks_buf_init(&p[i].k, 0);
			pks_buf_init(&p[i].v, 0);
			canon_item(&p[i].k, src[i].key);
			canon_item(&p[i].v, src[i].value);
		}
		qsort(p, n, sizeof(*p), canon_pair_cmp);
		e_map(b, n);
		for (size_t i = 0; i < n; i++) {
			CHECK_OK(pks_buf_append(b, p[i].k.data, p[i].k.len));
			CHECK_OK(pks_buf_append(b, p[i].v.data, p[i].v.len));
			pks_buf_free(&p[i].k);
			pks_buf_free(&p[i].v);
		}
		free(p);
		break;
	}
	case CBOR_TYPE_FLOAT_CTRL:
		CHECK(cbor_is_bool(it));
		if (cbor_is_bool(it))
			e_bool(b, cbor_get_bool(it));
		break;
	case CBOR_TYPE_TAG:
		CHECK_FAIL_AT("tag in a response");
		break;
	}
}

/* Loads a successful response's CBOR and checks it is canonical. */
static cbor_item_t *load_resp(const uint8_t *resp, size_t len)
{
	struct cbor_load_result res;
	cbor_item_t *it;
	struct pks_buf b;

	CHECK(resp != NULL && len >= 1);
	if (resp == NULL || len < 2)
		return NULL;
	CHECK_EQ(resp[0], CTAP2_OK);
	it = cbor_load(resp + 1, len - 1, &res);
	CHECK(it != NULL);
	if (it == NULL)
		return NULL;
	CHECK_EQ(res.read, len - 1);
	CHECK(cbor_isa_map(it));
	pks_buf_init(&b, 0);
	canon_item(&b, it);
	CHECK_EQ(b.len, len - 1);
	if (b.len == len - 1)
		CHECK_MEM_EQ(b.data, resp + 1, b.len);
	pks_buf_free(&b);
	return it;
}

static cbor_item_t *map_get_uint(const cbor_item_t *map, uint64_t k)
{
	struct cbor_pair *p = cbor_map_handle(map);

	for (size_t i = 0; i < cbor_map_size(map); i++)
		if (cbor_isa_uint(p[i].key) && cbor_get_int(p[i].key) == k)
			return p[i].value;
	return NULL;
}

static cbor_item_t *map_get_text(const cbor_item_t *map, const char *k)
{
	struct cbor_pair *p;

	if (map == NULL || !cbor_isa_map(map))
		return NULL;
	p = cbor_map_handle(map);
	for (size_t i = 0; i < cbor_map_size(map); i++)
		if (cbor_isa_string(p[i].key) && cbor_string_length(p[i].key) == strlen(k) &&
		    memcmp(cbor_string_handle(p[i].key), k, strlen(k)) == 0)
			return p[i].value;
	return NULL;
}

static int64_t item_int(const cbor_item_t *it)
{
	if (it == NULL)
		return INT64_MIN;
	if (cbor_isa_uint(it))
		return (int64_t)cbor_get_int(it);
	if (cbor_isa_negint(it))
		return -1 - (int64_t)cbor_get_int(it);
	return INT64_MIN;
}

static bool item_text_is(const cbor_item_t *it, const char *s)
{
	return it != NULL && cbor_isa_string(it) && cbor_string_length(it) == strlen(s) &&
	       memcmp(cbor_string_handle(it), s, strlen(s)) == 0;
}

static bool item_bytes_is(const cbor_item_t *it, const uint8_t *p, size_t n)
{
	return it != NULL && cbor_isa_bytestring(it) && cbor_bytestring_length(it) == n &&
	       memcmp(cbor_bytestring_handle(it), p, n) == 0;
}

/* ---- verification from the COSE key ---- */

static const uint8_t p256_spki_prefix[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
					   0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
					   0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04};

/* An OpenSSL public key from a COSE_Key (EC2 P-256 or OKP Ed25519). */
static EVP_PKEY *cose_to_pkey(const uint8_t *cose, size_t len, int *alg)
{
	struct cbor_load_result res;
	cbor_item_t *it = cbor_load(cose, len, &res);
	EVP_PKEY *pk = NULL;
	cbor_item_t *x, *y;

	if (it == NULL)
		return NULL;
	x = NULL;
	y = NULL;
	*alg = (int)item_int(NULL);
	if (cbor_isa_map(it)) {
		struct cbor_pair *p = cbor_map_handle(it);

		for (size_t i = 0; i < cbor_map_size(it); i++) {
			int64_t k = item_int(p[i].key);

			if (k == 3)
				*alg = (int)item_int(p[i].value);
			else if (k == -2)
				x = p[i].value;
			else if (k == -3)
				y = p[i].value;
		}
	}
	if (*alg == -8 && x != NULL && cbor_isa_bytestring(x) && cbor_bytestring_length(x) == 32) {
		pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, cbor_bytestring_handle(x),
						 32);
	} else if (*alg == -7 && x != NULL && y != NULL && cbor_isa_bytestring(x) &&
		   cbor_isa_bytestring(y) && cbor_bytestring_length(x) == 32 &&
		   cbor_bytestring_length(y) == 32) {
		uint8_t der[sizeof(p256_spki_prefix) + 64];
		const uint8_t *q = der;

		memcpy(der, p256_spki_prefix, sizeof(p256_spki_prefix));
		memcpy(der + sizeof(p256_spki_prefix), cbor_bytestring_handle(x), 32);
		memcpy(der + sizeof(p256_spki_prefix) + 32, cbor_bytestring_handle(y), 32);
		pk = d2i_PUBKEY(NULL, &q, (long)sizeof(der));
	}
	cbor_decref(&it);
	return pk;
}

static bool verify_sig(EVP_PKEY *pk, int alg, const uint8_t *ad, size_t ad_len, const uint8_t *sig,
		       size_t sig_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t msg[512];
	bool ok = false;

	if (ctx == NULL || ad_len + 32 > sizeof(msg))
		goto out;
	memcpy(msg, ad, ad_len);
	memcpy(msg + ad_len, cdh_a, 32);
	if (EVP_DigestVerifyInit(ctx, NULL, alg == -7 ? EVP_sha256() : NULL, NULL, pk) != 1)
		goto out;
	ok = EVP_DigestVerify(ctx, sig, sig_len, msg, ad_len + 32) == 1;
out:
	EVP_MD_CTX_free(ctx);
	return ok;
}

/* ---- steps ---- */

/* begin; returns the status and frees any response. */
static uint8_t run_begin(struct fixture *fx, const struct pks_buf *req, struct ctap2_pending *p)
{
	uint8_t *resp = NULL;
	size_t len = 0;
	uint8_t st = ctap2_begin(fx->c, req->data, req->len, fx->now, p, &resp, &len);

	if (st != CTAP2_OK) {
		/* An error response is exactly its status byte. */
		CHECK(resp != NULL);
		CHECK_EQ(len, 1);
		if (resp != NULL)
			CHECK_EQ(resp[0], st);
	}
	free(resp);
	return st;
}

/* A begin expected to fail with want. */
static void expect_begin(struct fixture *fx, const struct pks_buf *req, uint8_t want)
{
	struct ctap2_pending p;

	CHECK_EQ(run_begin(fx, req, &p), want);
	CHECK(!p.needs_up);
}

static uint8_t run_finish(struct fixture *fx, int outcome, uint8_t **resp, size_t *len)
{
	uint8_t st = ctap2_finish(fx->c, outcome, fx->now, resp, len);

	CHECK(*resp != NULL);
	if (*resp != NULL)
		CHECK_EQ((*resp)[0], st);
	if (st != CTAP2_OK)
		CHECK_EQ(*len, 1);
	return st;
}

struct made {
	uint8_t id[CTAP2_CRED_ID_MAX];
	size_t id_len;
	uint8_t cose[CTAP2_COSE_KEY_MAX];
	size_t cose_len;
	uint8_t flags;
	int alg;
};

/* makeCredential with a; checks the attestation object; fills *out. */
static void make_ok(struct fixture *fx, const struct mc_args *a, int outcome, struct made *out)
{
	struct ctap2_pending p;
	struct pks_buf req;
	uint8_t *resp = NULL, rpid_hash[32];
	size_t len = 0;
	cbor_item_t *m = NULL, *ad;
	const uint8_t *d;
	size_t ad_len;
	uint8_t *cose_ref = NULL;
	size_t cose_ref_len = 0;

	memset(out, 0, sizeof(*out));
	mc_build(&req, a);
	CHECK_EQ(run_begin(fx, &req, &p), CTAP2_OK);
	pks_buf_free(&req);
	CHECK(p.needs_up);
	CHECK(p.make);
	CHECK_EQ(p.op, CTAP2_OP_MAKE);
	CHECK(!p.excluded);
	CHECK_STR_EQ(p.rp_id, a->rp_id);
	CHECK_EQ(run_finish(fx, outcome, &resp, &len), CTAP2_OK);
	m = load_resp(resp, len);
	if (m == NULL)
		goto out;
	CHECK_EQ(cbor_map_size(m), 3);
	CHECK(item_text_is(map_get_uint(m, 1), "none"));
	CHECK(map_get_uint(m, 3) != NULL && cbor_isa_map(map_get_uint(m, 3)) &&
	      cbor_map_size(map_get_uint(m, 3)) == 0);
	ad = map_get_uint(m, 2);
	CHECK(ad != NULL && cbor_isa_bytestring(ad));
	if (ad == NULL || !cbor_isa_bytestring(ad))
		goto out;
	d = cbor_bytestring_handle(ad);
	ad_len = cbor_bytestring_length(ad);
	CHECK(ad_len > 37 + 16 + 2);
	if (ad_len <= 37 + 16 + 2)
		goto out;
	crypto_hash_sha256(rpid_hash, (const uint8_t *)a->rp_id, strlen(a->rp_id));
	CHECK_MEM_EQ(d, rpid_hash, 32);
	out->flags = d[32];
	CHECK_EQ(d[33] | d[34] | d[35] | d[36], 0); /* signCount 0 */
	CHECK_MEM_EQ(d + 37, test_aaguid, 16);
	out->id_len = (size_t)d[53] << 8 | d[54];
	CHECK(out->id_len >= 1 && 55 + out->id_len < ad_len);
	if (out->id_len == 0 || 55 + out->id_len >= ad_len)
		goto out;
	memcpy(out->id, d + 55, out->id_len);
	out->cose_len = ad_len - 55 - out->id_len;
	CHECK(out->cose_len <= sizeof(out->cose));
	memcpy(out->cose, d + 55 + out->id_len, out->cose_len);
	/* The stored credential is the one attested, with the same COSE key. */
	CHECK(fx->tb->n > 0);
	if (fx->tb->n > 0) {
		const struct tb_entry *e = &fx->tb->e[fx->tb->n - 1];

		CHECK_EQ(e->cred.id_len, out->id_len);
		CHECK_MEM_EQ(e->cred.id, out->id, out->id_len);
		CHECK_OK(passkey_key_cose(e->key, &cose_ref, &cose_ref_len));
		CHECK_EQ(cose_ref_len, out->cose_len);
		if (cose_ref != NULL && cose_ref_len == out->cose_len)
			CHECK_MEM_EQ(cose_ref, out->cose, cose_ref_len);
		out->alg = e->cred.alg;
	}
out:
	free(cose_ref);
	if (m != NULL)
		cbor_decref(&m);
	free(resp);
}

struct got {
	uint8_t flags;
	uint8_t id[CTAP2_CRED_ID_MAX];
	size_t id_len;
	int64_t count; /* numberOfCredentials, -1 absent */
	bool has_name, has_display;
	char name[300];
	uint8_t user_id[64];
	size_t user_id_len;
	bool sig_ok;
};

/* Checks an assertion response and verifies it with the COSE key of made. */
static void check_assertion(const uint8_t *resp, size_t len, const char *rp_id,
			    const struct made *creds, size_t n_creds, struct got *g)
{
	cbor_item_t *m = load_resp(resp, len), *cred, *ad, *sig, *user, *count;
	uint8_t h[32];

	memset(g, 0, sizeof(*g));
	g->count = -1;
	if (m == NULL)
		return;
	cred = map_get_uint(m, 1);
	ad = map_get_uint(m, 2);
	sig = map_get_uint(m, 3);
	user = map_get_uint(m, 4);
	count = map_get_uint(m, 5);
	CHECK(item_text_is(map_get_text(cred, "type"), "public-key"));
	CHECK(ad != NULL && cbor_isa_bytestring(ad) && cbor_bytestring_length(ad) == 37);
	CHECK(sig != NULL && cbor_isa_bytestring(sig));
	CHECK(user != NULL && cbor_isa_map(user));
	if (count != NULL)
		g->count = item_int(count);
	if (map_get_text(cred, "id") == NULL || ad == NULL || cbor_bytestring_length(ad) != 37 ||
	    sig == NULL || user == NULL)
		goto out;
	g->id_len = cbor_bytestring_length(map_get_text(cred, "id"));
	memcpy(g->id, cbor_bytestring_handle(map_get_text(cred, "id")), g->id_len);
	crypto_hash_sha256(h, (const uint8_t *)rp_id, strlen(rp_id));
	CHECK_MEM_EQ(cbor_bytestring_handle(ad), h, 32);
	g->flags = cbor_bytestring_handle(ad)[32];
	CHECK_EQ(cbor_bytestring_handle(ad)[33] | cbor_bytestring_handle(ad)[34] |
		     cbor_bytestring_handle(ad)[35] | cbor_bytestring_handle(ad)[36],
		 0);
	if (map_get_text(user, "id") != NULL) {
		g->user_id_len = cbor_bytestring_length(map_get_text(user, "id"));
		memcpy(g->user_id, cbor_bytestring_handle(map_get_text(user, "id")),
		       g->user_id_len);
	}
	g->has_name = map_get_text(user, "name") != NULL;
	g->has_display = map_get_text(user, "displayName") != NULL;
	if (g->has_name && cbor_string_length(map_get_text(user, "name")) < sizeof(g->name)) {
		memcpy(g->name, cbor_string_handle(map_get_text(user, "name")),
		       cbor_string_length(map_get_text(user, "name")));
	}
	for (size_t i = 0; i < n_creds; i++) {
		EVP_PKEY *pk;
		int alg = 0;

		if (creds[i].id_len != g->id_len || memcmp(creds[i].id, g->id, g->id_len) != 0)
			continue;
		pk = cose_to_pkey(creds[i].cose, creds[i].cose_len, &alg);
		CHECK(pk != NULL);
		CHECK_EQ(alg, creds[i].alg);
		if (pk != NULL) {
			uint8_t bad[37];

			g->sig_ok =
			    verify_sig(pk, alg, cbor_bytestring_handle(ad), 37,
				       cbor_bytestring_handle(sig), cbor_bytestring_length(sig));
			/* The verifier can fail: other authenticator data does not verify. */
			memcpy(bad, cbor_bytestring_handle(ad), 37);
			bad[32] ^= F_UV;
			CHECK(!verify_sig(pk, alg, bad, 37, cbor_bytestring_handle(sig),
					  cbor_bytestring_length(sig)));
		}
		EVP_PKEY_free(pk);
	}
out:
	cbor_decref(&m);
}

/* getAssertion expecting success after outcome; fills *g. */
static void get_ok(struct fixture *fx, const struct ga_args *a, int outcome,
		   const struct made *creds, size_t n_creds, size_t want_n, struct got *g)
{
	struct ctap2_pending p;
	struct pks_buf req;
	uint8_t *resp = NULL;
	size_t len = 0;
	uint8_t st;

	ga_build(&req, a);
	st = ctap2_begin(fx->c, req.data, req.len, fx->now, &p, &resp, &len);
	pks_buf_free(&req);
	CHECK_EQ(st, CTAP2_OK);
	CHECK_EQ(p.n_creds, want_n);
	if (p.needs_up) {
		CHECK(resp == NULL);
		CHECK_EQ(p.op, CTAP2_OP_GET);
		CHECK(!p.make);
		CHECK_STR_EQ(p.rp_id, a->rp_id);
		st = run_finish(fx, outcome, &resp, &len);
		CHECK_EQ(st, CTAP2_OK);
	}
	check_assertion(resp, len, a->rp_id, creds, n_creds, g);
	CHECK(g->sig_ok);
	free(resp);
}

static uint8_t simple_cmd(struct fixture *fx, uint8_t cmd, uint8_t **resp, size_t *len)
{
	struct ctap2_pending p;

	return ctap2_begin(fx->c, &cmd, 1, fx->now, &p, resp, len);
}

/* ---- cases ---- */

static void check_info(bool uv)
{
	struct fixture fx;
	uint8_t *resp = NULL;
	size_t len = 0;
	cbor_item_t *m, *v, *o, *algs;

	fx_init(&fx, uv);
	CHECK_EQ(simple_cmd(&fx, CTAP2_CMD_GET_INFO, &resp, &len), CTAP2_OK);
	m = load_resp(resp, len);
	CHECK(m != NULL);
	if (m != NULL) {
		v = map_get_uint(m, 1);
		CHECK(v != NULL && cbor_isa_array(v) && cbor_array_size(v) == 2);
		if (v != NULL && cbor_isa_array(v) && cbor_array_size(v) == 2) {
			CHECK(item_text_is(cbor_array_handle(v)[0], "FIDO_2_0"));
			CHECK(item_text_is(cbor_array_handle(v)[1], "FIDO_2_1"));
		}
		CHECK(item_bytes_is(map_get_uint(m, 3), test_aaguid, 16));
		o = map_get_uint(m, 4);
		CHECK(cbor_get_bool(map_get_text(o, "rk")));
		CHECK(cbor_get_bool(map_get_text(o, "up")));
		CHECK(map_get_text(o, "uv") != NULL);
		if (map_get_text(o, "uv") != NULL)
			CHECK_EQ(cbor_get_bool(map_get_text(o, "uv")), uv);
		CHECK(map_get_text(o, "plat") != NULL && !cbor_get_bool(map_get_text(o, "plat")));
		CHECK_EQ(item_int(map_get_uint(m, 5)), 7609);
		v = map_get_uint(m, 9);
		CHECK(v != NULL && cbor_isa_array(v) && cbor_array_size(v) == 1 &&
		      item_text_is(cbor_array_handle(v)[0], "usb"));
		algs = map_get_uint(m, 10);
		CHECK(algs != NULL && cbor_isa_array(algs) && cbor_array_size(algs) == 2);
		if (algs != NULL && cbor_isa_array(algs) && cbor_array_size(algs) == 2) {
			CHECK_EQ(item_int(map_get_text(cbor_array_handle(algs)[0], "alg")), -7);
			CHECK_EQ(item_int(map_get_text(cbor_array_handle(algs)[1], "alg")), -8);
			CHECK(item_text_is(map_get_text(cbor_array_handle(algs)[1], "type"),
					   "public-key"));
		}
		cbor_decref(&m);
	}
	free(resp);
	/* getInfo takes no parameters. */
	resp = NULL;
	{
		uint8_t req[2] = {CTAP2_CMD_GET_INFO, 0xa0};
		struct ctap2_pending p;

		CHECK_EQ(ctap2_begin(fx.c, req, 2, fx.now, &p, &resp, &len),
			 CTAP1_ERR_INVALID_LENGTH);
		free(resp);
	}
	fx_done(&fx);
}

static void test_info(void)
{
	check_info(false);
	check_info(true);
}

static void make_then_get(int alg)
{
	struct fixture fx;
	struct mc_args a = mc_default();
	struct ga_args g = ga_default();
	struct made mk;
	struct got got;

	fx_init(&fx, false);
	a.algs[0] = alg;
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	CHECK_EQ(mk.flags, F_UP | F_AT | F_BE | F_BS);
	CHECK_EQ(mk.alg, alg);
	CHECK_EQ(fx.tb->e[0].cred.alg, alg);
	CHECK_STR_EQ(fx.tb->e[0].cred.user_name, "alice@example.com");
	CHECK_STR_EQ(fx.tb->e[0].cred.display_name, "Alice");
	g.allow[0] = (struct id_ref){mk.id, mk.id_len, NULL};
	g.n_allow = 1;
	get_ok(&fx, &g, CTAP2_OUTCOME_PRESENT, &mk, 1, 1, &got);
	CHECK_EQ(got.flags, F_UP | F_BE | F_BS);
	CHECK_EQ(got.id_len, mk.id_len);
	CHECK_MEM_EQ(got.id, mk.id, mk.id_len);
	CHECK_EQ(got.count, -1);
	CHECK_EQ(got.user_id_len, sizeof(uid_alice));
	CHECK_MEM_EQ(got.user_id, uid_alice, sizeof(uid_alice));
	/* Discoverable with one credential: same key, no count. */
	g.n_allow = 0;
	get_ok(&fx, &g, CTAP2_OUTCOME_PRESENT, &mk, 1, 1, &got);
	CHECK_EQ(got.count, -1);
	CHECK(got.sig_ok);
	fx_done(&fx);
}

static void test_make_get_es256(void)
{
	make_then_get(-7);
}

static void test_make_get_eddsa(void)
{
	make_then_get(-8);
}

static void test_alg_choice(void)
{
	struct fixture fx;
	struct mc_args a = mc_default();
	struct made mk;
	struct pks_buf req;

	fx_init(&fx, false);
	/* The caller's order decides; unsupported entries are passed over. */
	a.algs[0] = -257;
	a.algs[1] = -8;
	a.algs[2] = -7;
	a.n_algs = 3;
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	CHECK_EQ(mk.alg, -8);
	a.algs[0] = -7;
	a.algs[1] = -8;
	a.n_algs = 2;
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	CHECK_EQ(mk.alg, -7);
	/* Only unsupported ones, another type, or none at all. */
	a.algs[0] = -257;
	a.algs[1] = 1000000;
	a.n_algs = 2;
	mc_build(&req, &a);
	expect_begin(&fx, &req, CTAP2_ERR_UNSUPPORTED_ALGORITHM);
	pks_buf_free(&req);
	a.algs[0] = -7;
	a.n_algs = 1;
	a.alg_type = "secret-key";
	mc_build(&req, &a);
	expect_begin(&fx, &req, CTAP2_ERR_UNSUPPORTED_ALGORITHM);
	pks_buf_free(&req);
	a.alg_type = NULL;
	a.n_algs = 0;
	mc_build(&req, &a);
	expect_begin(&fx, &req, CTAP2_ERR_UNSUPPORTED_ALGORITHM);
	pks_buf_free(&req);
	/* Nothing was created for the refused requests. */
	CHECK_EQ(fx.tb->n, 2);
	fx_done(&fx);
}

static void test_exclude(void)
{
	struct fixture fx;
	struct mc_args a = mc_default();
	struct ctap2_pending p;
	struct made mk, other;
	struct pks_buf req;
	uint8_t *resp = NULL;
	size_t len = 0;
	static const uint8_t unknown[20] = {0xee};

	fx_init(&fx, false);
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	/* An unknown id, and a known id of another type, exclude nothing. */
	a.excl[0] = (struct id_ref){unknown, sizeof(unknown), NULL};
	a.excl[1] = (struct id_ref){mk.id, mk.id_len, "other-type"};
	a.n_excl = 2;
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &other);
	CHECK_EQ(fx.tb->n, 2);
	/* A hit: presence is asked, then CREDENTIAL_EXCLUDED. */
	a.excl[1] = (struct id_ref){mk.id, mk.id_len, NULL};
	mc_build(&req, &a);
	CHECK_EQ(run_begin(&fx, &req, &p), CTAP2_OK);
	CHECK(p.needs_up);
	CHECK(p.excluded);
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_PRESENT, &resp, &len),
		 CTAP2_ERR_CREDENTIAL_EXCLUDED);
	free(resp);
	resp = NULL;
	/* Denied instead: the denial is what the platform hears. */
	CHECK_EQ(run_begin(&fx, &req, &p), CTAP2_OK);
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_DENIED, &resp, &len), CTAP2_ERR_OPERATION_DENIED);
	free(resp);
	pks_buf_free(&req);
	/* Excluded for another rp id does not count. */
	a.rp_id = "other.example";
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &other);
	CHECK_EQ(fx.tb->n, 3);
	fx_done(&fx);
}

static void test_options(void)
{
	struct fixture fx;
	struct mc_args a = mc_default();
	struct ga_args g = ga_default();
	struct ctap2_pending p;
	struct made mk;
	struct got got;
	struct pks_buf req;
	uint8_t *resp = NULL;
	size_t len = 0;

	fx_init(&fx, false);
	/* rk true and false are both accepted (every credential is resident). */
	a.rk = 1;
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	a.rk = 0;
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	a.rk = OPT_ABSENT;
	/* uv without a configured method, up false. */
	a.uv = 1;
	mc_build(&req, &a);
	expect_begin(&fx, &req, CTAP2_ERR_UNSUPPORTED_OPTION);
	pks_buf_free(&req);
	a.uv = 0;
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	a.uv = OPT_ABSENT;
	a.up = 0;
	mc_build(&req, &a);
	expect_begin(&fx, &req, CTAP2_ERR_INVALID_OPTION);
	pks_buf_free(&req);
	a.up = 1;
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	/* getAssertion: rk is not an option there; uv needs a method. */
	g.rk = 1;
	ga_build(&req, &g);
	expect_begin(&fx, &req, CTAP2_ERR_UNSUPPORTED_OPTION);
	pks_buf_free(&req);
	g.rk = OPT_ABSENT;
	g.uv = 1;
	ga_build(&req, &g);
	expect_begin(&fx, &req, CTAP2_ERR_UNSUPPORTED_OPTION);
	pks_buf_free(&req);
	fx_done(&fx);

	/* With user verification configured. */
	fx_init(&fx, true);
	a = mc_default();
	a.uv = 1;
	mc_build(&req, &a);
	CHECK_EQ(run_begin(&fx, &req, &p), CTAP2_OK);
	CHECK(p.needs_uv);
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_PRESENT, &resp, &len), CTAP2_ERR_OPERATION_DENIED);
	free(resp);
	resp = NULL;
	pks_buf_free(&req);
	CHECK_EQ(fx.tb->n, 0);
	make_ok(&fx, &a, CTAP2_OUTCOME_VERIFIED, &mk);
	CHECK_EQ(mk.flags, F_UP | F_UV | F_AT | F_BE | F_BS);
	g = ga_default();
	g.uv = 1;
	get_ok(&fx, &g, CTAP2_OUTCOME_VERIFIED, &mk, 1, 1, &got);
	CHECK_EQ(got.flags, F_UP | F_UV | F_BE | F_BS);
	/* uv not asked for: presence alone, no UV flag. */
	g.uv = OPT_ABSENT;
	get_ok(&fx, &g, CTAP2_OUTCOME_PRESENT, &mk, 1, 1, &got);
	CHECK_EQ(got.flags, F_UP | F_BE | F_BS);
	fx_done(&fx);
}

static void test_up_false(void)
{
	struct fixture fx;
	struct mc_args a = mc_default();
	struct ga_args g = ga_default();
	struct made mk;
	struct got got;

	fx_init(&fx, false);
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	/* A silent probe: no prompt, answered at once, UP clear. */
	g.up = 0;
	g.allow[0] = (struct id_ref){mk.id, mk.id_len, NULL};
	g.n_allow = 1;
	get_ok(&fx, &g, -1, &mk, 1, 0, &got);
	CHECK_EQ(got.flags, F_BE | F_BS);
	fx_done(&fx);
}

static void test_outcomes(void)
{
	static const struct {
		int outcome;
		uint8_t want;
	} cases[] = {
	    {CTAP2_OUTCOME_DENIED, CTAP2_ERR_OPERATION_DENIED},
	    {CTAP2_OUTCOME_CANCELLED, CTAP2_ERR_KEEPALIVE_CANCEL},
	    {CTAP2_OUTCOME_TIMEOUT, CTAP2_ERR_USER_ACTION_TIMEOUT},
	    {99, CTAP1_ERR_OTHER},
	};
	struct fixture fx;
	struct mc_args a = mc_default();
	struct ga_args g = ga_default();
	struct ctap2_pending p;
	struct made mk;
	struct pks_buf mreq, greq;
	uint8_t *resp = NULL;
	size_t len = 0;

	fx_init(&fx, false);
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	mc_build(&mreq, &a);
	ga_build(&greq, &g);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK_EQ(run_begin(&fx, &mreq, &p), CTAP2_OK);
		CHECK_EQ(run_finish(&fx, cases[i].outcome, &resp, &len), cases[i].want);
		free(resp);
		resp = NULL;
		CHECK_EQ(run_begin(&fx, &greq, &p), CTAP2_OK);
		CHECK_EQ(run_finish(&fx, cases[i].outcome, &resp, &len), cases[i].want);
		free(resp);
		resp = NULL;
	}
	/* Nothing created by the refused requests; nothing pending now. */
	CHECK_EQ(fx.tb->n, 1);
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_PRESENT, &resp, &len), CTAP2_ERR_NOT_ALLOWED);
	free(resp);
	resp = NULL;
	/* A second finish for one begin is refused too. */
	CHECK_EQ(run_begin(&fx, &greq, &p), CTAP2_OK);
	ctap2_cancel(fx.c);
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_PRESENT, &resp, &len), CTAP2_ERR_NOT_ALLOWED);
	free(resp);
	resp = NULL;
	/* A new request replaces one left pending. */
	CHECK_EQ(run_begin(&fx, &greq, &p), CTAP2_OK);
	CHECK_EQ(run_begin(&fx, &mreq, &p), CTAP2_OK);
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_PRESENT, &resp, &len), CTAP2_OK);
	free(resp);
	CHECK_EQ(fx.tb->n, 2);
	pks_buf_free(&mreq);
	pks_buf_free(&greq);
	fx_done(&fx);
}

static void test_next_assertion(void)
{
	struct fixture fx;
	struct mc_args a = mc_default();
	struct ga_args g = ga_default();
	struct made mk[3];
	struct got got;
	uint8_t *resp = NULL;
	size_t len = 0;

	fx_init(&fx, false);
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk[0]);
	a.user_id = uid_bob;
	a.user_id_len = sizeof(uid_bob);
	a.user_name = "bob@example.com";
	a.display_name = "Bob";
	a.algs[0] = -8;
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk[1]);
	a.rp_id = "other.example";
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk[2]);

	for (int round = 0; round < 4; round++) {
		get_ok(&fx, &g, CTAP2_OUTCOME_PRESENT, mk, 3, 2, &got);
		/* Newest first, with the count and the names to choose from. */
		CHECK_EQ(got.count, 2);
		CHECK_EQ(got.id_len, mk[1].id_len);
		CHECK_MEM_EQ(got.id, mk[1].id, mk[1].id_len);
		CHECK(got.has_name && got.has_display);
		CHECK_STR_EQ(got.name, "bob@example.com");
		CHECK_EQ(got.user_id_len, sizeof(uid_bob));
		if (round == 1)
			fx.now += CTAP2_NEXT_ASSERTION_MS + 1;
		else if (round == 2)
			CHECK_EQ(simple_cmd(&fx, CTAP2_CMD_GET_INFO, &resp, &len), CTAP2_OK);
		else if (round == 3)
			ctap2_cancel(fx.c); /* nothing pending: keeps the state */
		free(resp);
		resp = NULL;
		if (round == 1 || round == 2) {
			/* Too late, or another command came between. */
			CHECK_EQ(simple_cmd(&fx, CTAP2_CMD_GET_NEXT_ASSERTION, &resp, &len),
				 CTAP2_ERR_NOT_ALLOWED);
			free(resp);
			resp = NULL;
			continue;
		}
		fx.now += CTAP2_NEXT_ASSERTION_MS;
		CHECK_EQ(simple_cmd(&fx, CTAP2_CMD_GET_NEXT_ASSERTION, &resp, &len), CTAP2_OK);
		check_assertion(resp, len, "example.com", mk, 3, &got);
		free(resp);
		resp = NULL;
		CHECK(got.sig_ok);
		CHECK_EQ(got.count, -1);
		CHECK_EQ(got.id_len, mk[0].id_len);
		CHECK_MEM_EQ(got.id, mk[0].id, mk[0].id_len);
		CHECK_EQ(got.flags, F_UP | F_BE | F_BS);
		CHECK_STR_EQ(got.name, "alice@example.com");
		/* All given out. */
		CHECK_EQ(simple_cmd(&fx, CTAP2_CMD_GET_NEXT_ASSERTION, &resp, &len),
			 CTAP2_ERR_NOT_ALLOWED);
		free(resp);
		resp = NULL;
	}
	/* With an allowList naming both, one assertion, no count, no names. */
	g.allow[0] = (struct id_ref){mk[0].id, mk[0].id_len, NULL};
	g.allow[1] = (struct id_ref){mk[1].id, mk[1].id_len, NULL};
	g.n_allow = 2;
	get_ok(&fx, &g, CTAP2_OUTCOME_PRESENT, mk, 3, 1, &got);
	CHECK_EQ(got.count, -1);
	CHECK(!got.has_name && !got.has_display);
	CHECK_EQ(simple_cmd(&fx, CTAP2_CMD_GET_NEXT_ASSERTION, &resp, &len), CTAP2_ERR_NOT_ALLOWED);
	free(resp);
	fx_done(&fx);
}

static void test_no_credentials(void)
{
	struct fixture fx;
	struct mc_args a = mc_default();
	struct ga_args g = ga_default();
	struct made mk;
	struct pks_buf req;
	static const uint8_t unknown[16] = {0x55};

	fx_init(&fx, false);
	ga_build(&req, &g);
	expect_begin(&fx, &req, CTAP2_ERR_NO_CREDENTIALS);
	pks_buf_free(&req);
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	g.rp_id = "elsewhere.example";
	ga_build(&req, &g);
	expect_begin(&fx, &req, CTAP2_ERR_NO_CREDENTIALS);
	pks_buf_free(&req);
	g.rp_id = "example.com";
	g.allow[0] = (struct id_ref){unknown, sizeof(unknown), NULL};
	g.n_allow = 1;
	ga_build(&req, &g);
	expect_begin(&fx, &req, CTAP2_ERR_NO_CREDENTIALS);
	pks_buf_free(&req);
	/* The right id but another type is not a match. */
	g.allow[0] = (struct id_ref){mk.id, mk.id_len, "not-public-key"};
	ga_build(&req, &g);
	expect_begin(&fx, &req, CTAP2_ERR_NO_CREDENTIALS);
	pks_buf_free(&req);
	fx_done(&fx);
}

static void test_commands(void)
{
	struct fixture fx;
	struct ctap2_pending p;
	uint8_t *resp = NULL;
	size_t len = 0;
	uint8_t big[CTAP2_MSG_MAX + 1];

	fx_init(&fx, false);
	CHECK_EQ(simple_cmd(&fx, CTAP2_CMD_RESET, &resp, &len), CTAP2_ERR_NOT_ALLOWED);
	CHECK(resp != NULL && len == 1 && resp[0] == CTAP2_ERR_NOT_ALLOWED);
	free(resp);
	resp = NULL;
	CHECK_EQ(simple_cmd(&fx, CTAP2_CMD_CLIENT_PIN, &resp, &len), CTAP1_ERR_INVALID_COMMAND);
	free(resp);
	resp = NULL;
	CHECK_EQ(simple_cmd(&fx, 0x42, &resp, &len), CTAP1_ERR_INVALID_COMMAND);
	free(resp);
	resp = NULL;
	CHECK_EQ(simple_cmd(&fx, 0x00, &resp, &len), CTAP1_ERR_INVALID_COMMAND);
	free(resp);
	resp = NULL;
	CHECK_EQ(ctap2_begin(fx.c, big, 0, fx.now, &p, &resp, &len), CTAP1_ERR_INVALID_LENGTH);
	free(resp);
	resp = NULL;
	memset(big, 0, sizeof(big));
	big[0] = CTAP2_CMD_GET_INFO;
	CHECK_EQ(ctap2_begin(fx.c, big, sizeof(big), fx.now, &p, &resp, &len),
		 CTAP2_ERR_REQUEST_TOO_LARGE);
	free(resp);
	resp = NULL;
	/* authenticatorSelection: a touch, then an empty success. */
	CHECK_EQ(simple_cmd(&fx, CTAP2_CMD_SELECTION, &resp, &len), CTAP2_OK);
	CHECK(resp == NULL);
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_PRESENT, &resp, &len), CTAP2_OK);
	CHECK_EQ(len, 1);
	free(resp);
	resp = NULL;
	CHECK_EQ(simple_cmd(&fx, CTAP2_CMD_SELECTION, &resp, &len), CTAP2_OK);
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_TIMEOUT, &resp, &len),
		 CTAP2_ERR_USER_ACTION_TIMEOUT);
	free(resp);
	fx_done(&fx);
}

/* Every strict prefix of a valid request is broken, never accepted. */
static void check_prefixes(struct fixture *fx, const struct pks_buf *req)
{
	for (size_t n = 1; n < req->len; n++) {
		struct pks_buf cut = {req->data, n, n, n};

		expect_begin(fx, &cut,
			     n == 1 ? CTAP2_ERR_MISSING_PARAMETER : CTAP2_ERR_INVALID_CBOR);
	}
}

static void test_malformed(void)
{
	static const uint8_t garbage[][8] = {
	    {0x01, 0xff},                               /* break outside anything */
	    {0x01, 0x1c},                               /* reserved additional info */
	    {0x01, 0xbf, 0x01, 0x40, 0xff},             /* indefinite map */
	    {0x02, 0xa1, 0x01, 0x7f, 0x60, 0xff},       /* indefinite text */
	    {0x01, 0xa1, 0x01, 0x5a, 0xff},             /* truncated length */
	    {0x02, 0xa1, 0x01, 0x62, 0xc3, 0x28},       /* invalid UTF-8 */
	    {0x02, 0xa1, 0x01, 0x63, 0xed, 0xa0, 0x80}, /* surrogate */
	};
	static const size_t garbage_len[] = {2, 2, 5, 6, 5, 6, 7};
	struct fixture fx;
	struct mc_args a = mc_default();
	struct ga_args g = ga_default();
	struct made mk;
	struct pks_buf req, b;
	uint8_t st;

	fx_init(&fx, false);
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	for (size_t i = 0; i < sizeof(garbage_len) / sizeof(garbage_len[0]); i++) {
		struct pks_buf gb = {(uint8_t *)garbage[i], garbage_len[i], 8, 8};

		expect_begin(&fx, &gb, CTAP2_ERR_INVALID_CBOR);
	}
	a.n_excl = 1;
	a.excl[0] = (struct id_ref){mk.id, mk.id_len, NULL};
	a.ext = true;
	a.rk = 1;
	mc_build(&req, &a);
	check_prefixes(&fx, &req);
	/* Trailing bytes after the map. */
	CHECK_OK(pks_buf_u8(&req, 0x00));
	expect_begin(&fx, &req, CTAP2_ERR_INVALID_CBOR);
	pks_buf_free(&req);
	g.allow[0] = (struct id_ref){mk.id, mk.id_len, NULL};
	g.n_allow = 1;
	g.up = 1;
	ga_build(&req, &g);
	check_prefixes(&fx, &req);
	pks_buf_free(&req);
	/* Not a map at the top; a text key; a duplicate key. */
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_array(&b, 0);
	expect_begin(&fx, &b, CTAP2_ERR_CBOR_UNEXPECTED_TYPE);
	pks_buf_free(&b);
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_map(&b, 1);
	e_text(&b, "rpId");
	e_text(&b, "example.com");
	expect_begin(&fx, &b, CTAP2_ERR_CBOR_UNEXPECTED_TYPE);
	pks_buf_free(&b);
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_map(&b, 3);
	e_uint(&b, 1);
	e_text(&b, "example.com");
	e_uint(&b, 2);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 1);
	e_text(&b, "example.com");
	expect_begin(&fx, &b, CTAP2_ERR_INVALID_CBOR);
	pks_buf_free(&b);
	/* Unknown keys and deep but bounded extensions are skipped... */
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_map(&b, 4);
	e_uint(&b, 1);
	e_text(&b, "example.com");
	e_uint(&b, 2);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 4);
	e_map(&b, 1);
	e_text(&b, "x");
	e_array(&b, 1);
	e_array(&b, 1);
	e_uint(&b, 7);
	e_uint(&b, 99);
	e_array(&b, 0);
	{
		struct ctap2_pending p;

		st = run_begin(&fx, &b, &p);
		CHECK_EQ(st, CTAP2_OK);
		ctap2_cancel(fx.c);
	}
	pks_buf_free(&b);
	/* ...but nesting beyond the limit is refused. */
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_map(&b, 3);
	e_uint(&b, 1);
	e_text(&b, "example.com");
	e_uint(&b, 2);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 4);
	e_map(&b, 1);
	e_text(&b, "x");
	for (int i = 0; i < 10; i++)
		e_array(&b, 1);
	e_uint(&b, 0);
	expect_begin(&fx, &b, CTAP2_ERR_INVALID_CBOR);
	pks_buf_free(&b);
	fx_done(&fx);
}

static void test_missing(void)
{
	struct fixture fx;
	struct mc_args a = mc_default();
	struct ga_args g = ga_default();
	struct pks_buf req, b;

	fx_init(&fx, false);
	for (int k = 1; k <= 4; k++) {
		a.omit = 1u << k;
		mc_build(&req, &a);
		expect_begin(&fx, &req, CTAP2_ERR_MISSING_PARAMETER);
		pks_buf_free(&req);
	}
	for (int k = 1; k <= 2; k++) {
		g.omit = 1u << k;
		ga_build(&req, &g);
		expect_begin(&fx, &req, CTAP2_ERR_MISSING_PARAMETER);
		pks_buf_free(&req);
	}
	/* A descriptor without its type; a parameter without its alg. */
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_map(&b, 3);
	e_uint(&b, 1);
	e_text(&b, "example.com");
	e_uint(&b, 2);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 3);
	e_array(&b, 1);
	e_map(&b, 1);
	e_text(&b, "id");
	e_bytes(&b, cdh_a, 16);
	expect_begin(&fx, &b, CTAP2_ERR_MISSING_PARAMETER);
	pks_buf_free(&b);
	a = mc_default();
	mc_build(&req, &a);
	pks_buf_init(&b, 0);
	{
		/* Same request, pubKeyCredParams replaced by [{"type": "public-key"}]. */
		CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_MAKE_CREDENTIAL));
		e_map(&b, 4);
		e_uint(&b, 1);
		e_bytes(&b, cdh_a, 32);
		e_uint(&b, 2);
		e_map(&b, 1);
		e_text(&b, "id");
		e_text(&b, "example.com");
		e_uint(&b, 3);
		e_map(&b, 1);
		e_text(&b, "id");
		e_bytes(&b, uid_alice, sizeof(uid_alice));
		e_uint(&b, 4);
		e_array(&b, 1);
		e_map(&b, 1);
		e_text(&b, "type");
		e_text(&b, "public-key");
	}
	expect_begin(&fx, &b, CTAP2_ERR_MISSING_PARAMETER);
	pks_buf_free(&b);
	pks_buf_free(&req);
	/* rp without id, user without id. */
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_MAKE_CREDENTIAL));
	e_map(&b, 4);
	e_uint(&b, 1);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 2);
	e_map(&b, 1);
	e_text(&b, "name");
	e_text(&b, "Example");
	e_uint(&b, 3);
	e_map(&b, 1);
	e_text(&b, "id");
	e_bytes(&b, uid_alice, sizeof(uid_alice));
	e_uint(&b, 4);
	e_array(&b, 0);
	expect_begin(&fx, &b, CTAP2_ERR_MISSING_PARAMETER);
	pks_buf_free(&b);
	/* pinUvAuthParam without its protocol, and with an unsupported one. */
	a = mc_default();
	a.pin_param = true;
	mc_build(&req, &a);
	expect_begin(&fx, &req, CTAP2_ERR_MISSING_PARAMETER);
	pks_buf_free(&req);
	a.pin_proto = true;
	mc_build(&req, &a);
	expect_begin(&fx, &req, CTAP1_ERR_INVALID_PARAMETER);
	pks_buf_free(&req);
	CHECK_EQ(fx.tb->n, 0);
	fx_done(&fx);
}

/* A makeCredential whose key k holds the value written by put. */
static void mc_with(struct pks_buf *b, int k, void (*put)(struct pks_buf *))
{
	pks_buf_init(b, 0);
	CHECK_OK(pks_buf_u8(b, CTAP2_CMD_MAKE_CREDENTIAL));
	e_map(b, 4);
	e_uint(b, 1);
	if (k == 1)
		put(b);
	else
		e_bytes(b, cdh_a, 32);
	e_uint(b, 2);
	if (k == 2) {
		put(b);
	} else {
		e_map(b, 1);
		e_text(b, "id");
		e_text(b, "example.com");
	}
	e_uint(b, 3);
	if (k == 3) {
		put(b);
	} else {
		e_map(b, 1);
		e_text(b, "id");
		e_bytes(b, uid_alice, sizeof(uid_alice));
	}
	e_uint(b, 4);
	if (k == 4) {
		put(b);
	} else {
		e_array(b, 1);
		e_map(b, 2);
		e_text(b, "alg");
		e_int(b, -7);
		e_text(b, "type");
		e_text(b, "public-key");
	}
}

static void put_text(struct pks_buf *b)
{
	e_text(b, "not this");
}

static void put_array(struct pks_buf *b)
{
	e_array(b, 0);
}

static void put_user_text_id(struct pks_buf *b)
{
	e_map(b, 1);
	e_text(b, "id");
	e_text(b, "alice");
}

static void put_rp_int_id(struct pks_buf *b)
{
	e_map(b, 1);
	e_text(b, "id");
	e_uint(b, 5);
}

static void put_alg_text(struct pks_buf *b)
{
	e_array(b, 1);
	e_map(b, 2);
	e_text(b, "alg");
	e_text(b, "ES256");
	e_text(b, "type");
	e_text(b, "public-key");
}

static void put_params_map(struct pks_buf *b)
{
	e_map(b, 0);
}

static void put_rp_null(struct pks_buf *b)
{
	CHECK_OK(pks_buf_u8(b, 0xf6));
}

static void test_types(void)
{
	static const struct {
		int key;
		void (*put)(struct pks_buf *);
	} cases[] = {
	    {1, put_text},     {2, put_array},      {3, put_user_text_id}, {2, put_rp_int_id},
	    {4, put_alg_text}, {4, put_params_map}, {2, put_rp_null},      {3, put_array},
	};
	struct fixture fx;
	struct ga_args g = ga_default();
	struct pks_buf b;

	fx_init(&fx, false);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		mc_with(&b, cases[i].key, cases[i].put);
		expect_begin(&fx, &b, CTAP2_ERR_CBOR_UNEXPECTED_TYPE);
		pks_buf_free(&b);
	}
	/* An option that is not a boolean. */
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_map(&b, 3);
	e_uint(&b, 1);
	e_text(&b, g.rp_id);
	e_uint(&b, 2);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 5);
	e_map(&b, 1);
	e_text(&b, "up");
	e_uint(&b, 0);
	expect_begin(&fx, &b, CTAP2_ERR_CBOR_UNEXPECTED_TYPE);
	pks_buf_free(&b);
	fx_done(&fx);
}

static void put_cdh_31(struct pks_buf *b)
{
	e_bytes(b, cdh_a, 31);
}

static void put_rp_254(struct pks_buf *b)
{
	char s[255];

	memset(s, 'a', 254);
	s[254] = '\0';
	e_map(b, 1);
	e_text(b, "id");
	e_text(b, s);
}

static void put_rp_empty(struct pks_buf *b)
{
	e_map(b, 1);
	e_text(b, "id");
	e_text(b, "");
}

static void put_user_65(struct pks_buf *b)
{
	uint8_t id[65] = {0};

	e_map(b, 1);
	e_text(b, "id");
	e_bytes(b, id, sizeof(id));
}

static void put_user_0(struct pks_buf *b)
{
	e_map(b, 1);
	e_text(b, "id");
	e_bytes(b, NULL, 0);
}

static void put_params_65(struct pks_buf *b)
{
	e_array(b, 65);
	for (int i = 0; i < 65; i++) {
		e_map(b, 2);
		e_text(b, "alg");
		e_int(b, -7);
		e_text(b, "type");
		e_text(b, "public-key");
	}
}

static void put_name_nul(struct pks_buf *b)
{
	e_map(b, 2);
	e_text(b, "id");
	e_bytes(b, uid_alice, sizeof(uid_alice));
	e_text(b, "name");
	e_textn(b, "al\0ice", 6);
}

static void test_limits(void)
{
	static const struct {
		int key;
		void (*put)(struct pks_buf *);
		uint8_t want;
	} cases[] = {
	    {1, put_cdh_31, CTAP1_ERR_INVALID_LENGTH},
	    {2, put_rp_254, CTAP1_ERR_INVALID_LENGTH},
	    {2, put_rp_empty, CTAP1_ERR_INVALID_LENGTH},
	    {3, put_user_65, CTAP1_ERR_INVALID_LENGTH},
	    {3, put_user_0, CTAP1_ERR_INVALID_LENGTH},
	    {4, put_params_65, CTAP2_ERR_LIMIT_EXCEEDED},
	    {3, put_name_nul, CTAP1_ERR_INVALID_PARAMETER},
	};
	struct fixture fx;
	struct mc_args a = mc_default();
	struct ga_args g = ga_default();
	struct ctap2_pending p;
	struct made mk;
	struct pks_buf b;
	char rp253[254], longname[600];
	uint8_t id1024[1024] = {0}, uid64[64];

	fx_init(&fx, false);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		mc_with(&b, cases[i].key, cases[i].put);
		expect_begin(&fx, &b, cases[i].want);
		pks_buf_free(&b);
	}
	/* The largest accepted values. */
	memset(rp253, 'r', 253);
	rp253[253] = '\0';
	memset(uid64, 0x64, sizeof(uid64));
	a.rp_id = rp253;
	a.user_id = uid64;
	a.user_id_len = sizeof(uid64);
	/* 300 two-byte characters: cut to at most 255 bytes, whole characters. */
	for (int i = 0; i < 300; i++)
		memcpy(longname + 2 * i, "\xc3\xa9", 2);
	longname[600 - 1] = '\0';
	longname[598] = '\0';
	a.user_name = longname;
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	CHECK_EQ(strlen(fx.tb->e[0].cred.user_name), 254);
	CHECK_EQ(fx.tb->e[0].cred.user_id_len, 64);
	mc_build(&b, &a);
	CHECK_EQ(run_begin(&fx, &b, &p), CTAP2_OK);
	CHECK_EQ(strlen(p.user), 254);
	CHECK_EQ(strlen(p.rp_id), 253);
	ctap2_cancel(fx.c);
	pks_buf_free(&b);
	/* allowList over the limit, and a credential id over 1023 bytes. */
	g.rp_id = rp253;
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_map(&b, 3);
	e_uint(&b, 1);
	e_text(&b, g.rp_id);
	e_uint(&b, 2);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 3);
	e_array(&b, 65);
	for (int i = 0; i < 65; i++) {
		struct id_ref d = {mk.id, mk.id_len, NULL};

		e_descriptor(&b, &d);
	}
	expect_begin(&fx, &b, CTAP2_ERR_LIMIT_EXCEEDED);
	pks_buf_free(&b);
	g.allow[0] = (struct id_ref){id1024, sizeof(id1024), NULL};
	g.n_allow = 1;
	ga_build(&b, &g);
	expect_begin(&fx, &b, CTAP1_ERR_INVALID_LENGTH);
	pks_buf_free(&b);
	/* 64 entries are fine. */
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_map(&b, 3);
	e_uint(&b, 1);
	e_text(&b, g.rp_id);
	e_uint(&b, 2);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 3);
	e_array(&b, 64);
	for (int i = 0; i < 64; i++) {
		struct id_ref d = {mk.id, mk.id_len, NULL};

		e_descriptor(&b, &d);
	}
	CHECK_EQ(run_begin(&fx, &b, &p), CTAP2_OK);
	CHECK_EQ(p.n_creds, 1);
	ctap2_cancel(fx.c);
	pks_buf_free(&b);
	fx_done(&fx);
}

static void test_backend_errors(void)
{
	struct fixture fx;
	struct mc_args a = mc_default();
	struct ga_args g = ga_default();
	struct ctap2_pending p;
	struct made mk;
	struct pks_buf req;
	uint8_t *resp = NULL;
	size_t len = 0;

	fx_init(&fx, false);
	make_ok(&fx, &a, CTAP2_OUTCOME_PRESENT, &mk);
	ga_build(&req, &g);
	fx.tb->find_error = PKS_ERR_LOCKED;
	expect_begin(&fx, &req, CTAP2_ERR_NOT_ALLOWED);
	fx.tb->find_error = PKS_ERR_DB;
	expect_begin(&fx, &req, CTAP1_ERR_OTHER);
	fx.tb->find_error = 0;
	fx.tb->sign_error = PKS_ERR_CRYPTO;
	CHECK_EQ(run_begin(&fx, &req, &p), CTAP2_OK);
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_PRESENT, &resp, &len), CTAP1_ERR_OTHER);
	free(resp);
	resp = NULL;
	fx.tb->sign_error = 0;
	pks_buf_free(&req);
	mc_build(&req, &a);
	fx.tb->create_error = PKS_ERR_TOO_LARGE;
	CHECK_EQ(run_begin(&fx, &req, &p), CTAP2_OK);
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_PRESENT, &resp, &len), CTAP2_ERR_KEY_STORE_FULL);
	free(resp);
	resp = NULL;
	fx.tb->create_error = PKS_ERR_LOCKED;
	CHECK_EQ(run_begin(&fx, &req, &p), CTAP2_OK);
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_PRESENT, &resp, &len), CTAP2_ERR_NOT_ALLOWED);
	free(resp);
	pks_buf_free(&req);
	/* A credential the backend broke (BS without BE) is not used. */
	fx.tb->create_error = 0;
	fx.tb->e[0].cred.be = false;
	ga_build(&req, &g);
	expect_begin(&fx, &req, CTAP1_ERR_OTHER);
	pks_buf_free(&req);
	fx.tb->e[0].cred.be = true;
	/* Bad arguments. */
	{
		struct ctap2 *c = NULL;
		struct ctap2_backend none = {0};

		CHECK_EQ(ctap2_new(&none, NULL, test_aaguid, false, &c), PKS_ERR_INVALID);
		CHECK(c == NULL);
		CHECK_EQ(ctap2_new(NULL, NULL, test_aaguid, false, &c), PKS_ERR_INVALID);
		ctap2_free(NULL);
		ctap2_cancel(NULL);
	}
	fx_done(&fx);
}

/* What browsers send that this layer ignores, and the rarer refusals. */
static void test_ignored_and_rare(void)
{
	struct fixture fx;
	struct ctap2_pending p;
	struct pks_buf b;
	uint8_t *resp = NULL;
	size_t len = 0;

	fx_init(&fx, false);
	/* Unknown members everywhere (icon, transports, extra keys), 4-byte
	   characters, a tagged unknown value: accepted. */
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_MAKE_CREDENTIAL));
	e_map(&b, 7);
	e_uint(&b, 1);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 2);
	e_map(&b, 2);
	e_text(&b, "id");
	e_text(&b, "example.com");
	e_text(&b, "icon");
	e_text(&b, "https://example.com/i.png");
	e_uint(&b, 3);
	e_map(&b, 3);
	e_text(&b, "id");
	e_bytes(&b, uid_alice, sizeof(uid_alice));
	e_text(&b, "icon");
	e_map(&b, 0);
	e_text(&b, "displayName");
	e_text(&b, "Alice \xf0\x9f\x94\x91");
	e_uint(&b, 4);
	e_array(&b, 1);
	e_map(&b, 3);
	e_text(&b, "alg");
	e_int(&b, -8);
	e_text(&b, "type");
	e_text(&b, "public-key");
	e_text(&b, "extra");
	e_array(&b, 1);
	e_bool(&b, true);
	e_uint(&b, 5);
	e_array(&b, 1);
	e_map(&b, 3);
	e_text(&b, "id");
	e_bytes(&b, cdh_a, 16);
	e_text(&b, "type");
	e_text(&b, "public-key");
	e_text(&b, "transports");
	e_array(&b, 2);
	e_text(&b, "usb");
	e_text(&b, "nfc");
	e_uint(&b, 7);
	e_map(&b, 2);
	e_text(&b, "rk");
	e_bool(&b, true);
	e_text(&b, "future");
	e_bool(&b, true);
	e_uint(&b, 31);
	CHECK_OK(pks_buf_u8(&b, 0xc1)); /* tag 1 */
	e_uint(&b, 1700000000);
	CHECK_EQ(run_begin(&fx, &b, &p), CTAP2_OK);
	CHECK_STR_EQ(p.user, "Alice \xf0\x9f\x94\x91");
	CHECK_EQ(run_finish(&fx, CTAP2_OUTCOME_PRESENT, &resp, &len), CTAP2_OK);
	free(resp);
	resp = NULL;
	CHECK_EQ(fx.tb->n, 1);
	CHECK_EQ(fx.tb->e[0].cred.alg, -8);
	pks_buf_free(&b);
	/* enterpriseAttestation is not offered. */
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_MAKE_CREDENTIAL));
	e_map(&b, 5);
	e_uint(&b, 1);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 2);
	e_map(&b, 1);
	e_text(&b, "id");
	e_text(&b, "example.com");
	e_uint(&b, 3);
	e_map(&b, 1);
	e_text(&b, "id");
	e_bytes(&b, uid_alice, sizeof(uid_alice));
	e_uint(&b, 4);
	e_array(&b, 1);
	e_map(&b, 2);
	e_text(&b, "alg");
	e_int(&b, -7);
	e_text(&b, "type");
	e_text(&b, "public-key");
	e_uint(&b, 10);
	e_uint(&b, 1);
	expect_begin(&fx, &b, CTAP1_ERR_INVALID_PARAMETER);
	pks_buf_free(&b);
	/* getAssertion: pinUvAuthParam without protocol, empty rp id. */
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_map(&b, 3);
	e_uint(&b, 1);
	e_text(&b, "example.com");
	e_uint(&b, 2);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 6);
	e_bytes(&b, NULL, 0);
	expect_begin(&fx, &b, CTAP2_ERR_MISSING_PARAMETER);
	pks_buf_free(&b);
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_map(&b, 4);
	e_uint(&b, 1);
	e_text(&b, "example.com");
	e_uint(&b, 2);
	e_bytes(&b, cdh_a, 32);
	e_uint(&b, 6);
	e_bytes(&b, cdh_a, 16);
	e_uint(&b, 7);
	e_uint(&b, 2);
	expect_begin(&fx, &b, CTAP1_ERR_INVALID_PARAMETER);
	pks_buf_free(&b);
	pks_buf_init(&b, 0);
	CHECK_OK(pks_buf_u8(&b, CTAP2_CMD_GET_ASSERTION));
	e_map(&b, 2);
	e_uint(&b, 1);
	e_text(&b, "");
	e_uint(&b, 2);
	e_bytes(&b, cdh_a, 32);
	expect_begin(&fx, &b, CTAP1_ERR_INVALID_LENGTH);
	pks_buf_free(&b);
	/* Commands without parameters take none. */
	{
		uint8_t next[2] = {CTAP2_CMD_GET_NEXT_ASSERTION, 0xa0};
		uint8_t sel[2] = {CTAP2_CMD_SELECTION, 0xa0};
		struct pks_buf nb = {next, 2, 2, 2}, sb = {sel, 2, 2, 2};

		expect_begin(&fx, &nb, CTAP1_ERR_INVALID_LENGTH);
		expect_begin(&fx, &sb, CTAP1_ERR_INVALID_LENGTH);
	}
	fx_done(&fx);
}

CHECK_MAIN({"/ctap2/info", test_info}, {"/ctap2/make-get-es256", test_make_get_es256},
	   {"/ctap2/make-get-eddsa", test_make_get_eddsa}, {"/ctap2/alg-choice", test_alg_choice},
	   {"/ctap2/exclude", test_exclude}, {"/ctap2/options", test_options},
	   {"/ctap2/up-false", test_up_false}, {"/ctap2/outcomes", test_outcomes},
	   {"/ctap2/next-assertion", test_next_assertion},
	   {"/ctap2/no-credentials", test_no_credentials}, {"/ctap2/commands", test_commands},
	   {"/ctap2/malformed", test_malformed}, {"/ctap2/missing", test_missing},
	   {"/ctap2/types", test_types}, {"/ctap2/limits", test_limits},
	   {"/ctap2/backend-errors", test_backend_errors},
	   {"/ctap2/ignored-and-rare", test_ignored_and_rare})
