/*
 * agent/passkey: keys are generated, encoded and used here, and every
 * signature is checked with OpenSSL directly (d2i_PUBKEY + EVP_DigestVerify),
 * not through the module under test. Sample keys come from
 * $PKSYNC_PASSKEY_SAMPLES (shared/samples/passkeys, set by meson).
 */
#include <cbor.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/passkey.h"
#include "common/err.h"
#include "tests/check.h"

/* Verifies sig over msg with the SPKI public key, through OpenSSL only. */
static int verify_spki(const uint8_t *spki, size_t spki_len, int alg, const uint8_t *msg,
		       size_t msg_len, const uint8_t *sig, size_t sig_len)
{
	const unsigned char *p = spki;
	EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)spki_len);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = 0;

	if (pub != NULL && md != NULL && p == spki + spki_len &&
	    EVP_DigestVerifyInit(md, NULL, alg == PASSKEY_ALG_ES256 ? EVP_sha256() : NULL, NULL,
				 pub) == 1)
		ok = EVP_DigestVerify(md, sig, sig_len, msg, msg_len) == 1;
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pub);
	return ok;
}

/* Asserts with key and checks everything a relying party would. */
static void check_assert(const struct passkey_key *key, int alg)
{
	uint8_t cdh[32], msg[PASSKEY_AUTHDATA_LEN + 32], rp_hash[32];
	uint8_t *ad = NULL, *sig = NULL, *spki = NULL;
	size_t ad_len = 0, sig_len = 0, spki_len = 0;
	const char *rp = "login.example.com";

	randombytes_buf(cdh, sizeof(cdh));
	CHECK_OK(passkey_key_spki(key, &spki, &spki_len));
	CHECK_OK(passkey_assert(key, rp, PASSKEY_FLAG_UP | PASSKEY_FLAG_BE | PASSKEY_FLAG_BS, cdh,
				&ad, &ad_len, &sig, &sig_len));
	if (ad == NULL || sig == NULL || spki == NULL)
		goto out;
	CHECK_EQ(ad_len, PASSKEY_AUTHDATA_LEN);
	SHA256((const unsigned char *)rp, strlen(rp), rp_hash);
	CHECK_MEM_EQ(ad, rp_hash, 32);
	CHECK_EQ(ad[32], PASSKEY_FLAG_UP | PASSKEY_FLAG_BE | PASSKEY_FLAG_BS);
	CHECK_EQ(ad[33] | ad[34] | ad[35] | ad[36], 0);
	if (alg == PASSKEY_ALG_EDDSA)
		CHECK_EQ(sig_len, 64);
	else
		CHECK(sig_len >= 8 && sig_len <= 72 && sig[0] == 0x30);
	memcpy(msg, ad, PASSKEY_AUTHDATA_LEN);
	memcpy(msg + PASSKEY_AUTHDATA_LEN, cdh, 32);
	CHECK(verify_spki(spki, spki_len, alg, msg, sizeof(msg), sig, sig_len));
	/* The signature must not verify over anything else. */
	msg[sizeof(msg) - 1] ^= 1;
	CHECK(!verify_spki(spki, spki_len, alg, msg, sizeof(msg), sig, sig_len));
out:
	free(ad);
	free(sig);
	free(spki);
}

static void test_generate_sign(int alg)
{
	struct passkey_key *key = NULL;

	CHECK_OK(passkey_key_generate(alg, &key));
	if (key == NULL)
		return;
	CHECK_EQ(passkey_key_alg(key), alg);
	check_assert(key, alg);
	passkey_key_free(key);
}

static void test_es256(void)
{
	test_generate_sign(PASSKEY_ALG_ES256);
}

static void test_eddsa(void)
{
	test_generate_sign(PASSKEY_ALG_EDDSA);
}

static void test_generate_unknown(void)
{
	struct passkey_key *key = NULL;

	CHECK_EQ(passkey_key_generate(-257, &key), PKS_ERR_UNSUPPORTED);
	CHECK(key == NULL);
	passkey_key_free(NULL);
	passkey_secret_free(NULL, 0);
}

static void test_pkcs8_round_trip_alg(int alg)
{
	struct passkey_key *a = NULL, *b = NULL;
	uint8_t *der = NULL, *der2 = NULL, *spki = NULL, *spki2 = NULL;
	uint8_t buf[PASSKEY_PKCS8_MAX];
	size_t der_len = 0, der2_len = 0, spki_len = 0, spki2_len = 0, buf_len = 0;

	CHECK_OK(passkey_key_generate(alg, &a));
	CHECK_OK(passkey_key_pkcs8(a, &der, &der_len));
	CHECK_OK(passkey_key_spki(a, &spki, &spki_len));
	if (der == NULL || spki == NULL)
		goto out;
	CHECK_OK(passkey_key_from_pkcs8(der, der_len, &b));
	if (b == NULL)
		goto out;
	CHECK_EQ(passkey_key_alg(b), alg);
	CHECK_OK(passkey_key_pkcs8(b, &der2, &der2_len));
	CHECK_OK(passkey_key_spki(b, &spki2, &spki2_len));
	CHECK_EQ(der_len, der2_len);
	CHECK_EQ(spki_len, spki2_len);
	if (der2 != NULL && der_len == der2_len)
		CHECK_MEM_EQ(der, der2, der_len);
	if (spki2 != NULL && spki_len == spki2_len)
		CHECK_MEM_EQ(spki, spki2, spki_len);
	CHECK_OK(passkey_key_pkcs8_to(b, buf, sizeof(buf), &buf_len));
	CHECK_EQ(buf_len, der_len);
	CHECK_MEM_EQ(buf, der, der_len);
	CHECK_EQ(passkey_key_pkcs8_to(b, buf, der_len - 1, &buf_len), PKS_ERR_TOO_LARGE);
	/* The reloaded key signs for the original public key. */
	check_assert(b, alg);
out:
	passkey_secret_free(der, der_len);
	passkey_secret_free(der2, der2_len);
	free(spki);
	free(spki2);
	passkey_key_free(a);
	passkey_key_free(b);
}

static void test_pkcs8_round_trip(void)
{
	test_pkcs8_round_trip_alg(PASSKEY_ALG_ES256);
	test_pkcs8_round_trip_alg(PASSKEY_ALG_EDDSA);
}

/* Looks up an integer-keyed entry of a COSE map. */
static cbor_item_t *cose_get(cbor_item_t *map, int label)
{
	struct cbor_pair *pairs = cbor_map_handle(map);

	for (size_t i = 0; i < cbor_map_size(map); i++) {
		cbor_item_t *k = pairs[i].key;
		int v;
		if (cbor_isa_uint(k))
			v = (int)cbor_get_int(k);
		else if (cbor_isa_negint(k))
			v = -1 - (int)cbor_get_int(k);
		else
			continue;
		if (v == label)
			return pairs[i].value;
	}
	return NULL;
}

static void test_cose(void)
{
	struct passkey_key *ec = NULL, *ed = NULL;
	uint8_t *cbor = NULL, *cbor2 = NULL;
	size_t len = 0, len2 = 0, point_len = 0, raw_len = 32;
	uint8_t point[65], raw[32];
	struct cbor_load_result res;
	cbor_item_t *map = NULL, *x, *y;
	static const uint8_t ec_head[] = {0xa5, 0x01, 0x02, 0x03, 0x26,
					  0x20, 0x01, 0x21, 0x58, 0x20};
	static const uint8_t ed_head[] = {0xa4, 0x01, 0x01, 0x03, 0x27,
					  0x20, 0x06, 0x21, 0x58, 0x20};
	EVP_PKEY *pub = NULL;
	uint8_t *spki = NULL;
	size_t spki_len = 0;
	const unsigned char *p;

	CHECK_OK(passkey_key_generate(PASSKEY_ALG_ES256, &ec));
	CHECK_OK(passkey_key_cose(ec, &cbor, &len));
	CHECK_OK(passkey_key_spki(ec, &spki, &spki_len));
	if (cbor == NULL || spki == NULL)
		goto out;
	/* Canonical: map keys 1, 3, -1, -2, -3 in this order, shortest forms. */
	CHECK_EQ(len, 77);
	CHECK_MEM_EQ(cbor, ec_head, sizeof(ec_head));
	CHECK_EQ(cbor[42], 0x22);
	map = cbor_load(cbor, len, &res);
	CHECK(map != NULL && res.error.code == CBOR_ERR_NONE && cbor_isa_map(map));
	p = spki;
	pub = d2i_PUBKEY(NULL, &p, (long)spki_len);
	CHECK(pub != NULL);
	if (map == NULL || pub == NULL)
		goto out;
	CHECK(EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
					      sizeof(point), &point_len) == 1);
	x = cose_get(map, -2);
	y = cose_get(map, -3);
	CHECK(x != NULL && y != NULL && cbor_bytestring_length(x) == 32 &&
	      cbor_bytestring_length(y) == 32);
	if (x != NULL && y != NULL && point_len == 65) {
		CHECK_MEM_EQ(cbor_bytestring_handle(x), point + 1, 32);
		CHECK_MEM_EQ(cbor_bytestring_handle(y), point + 33, 32);
	}
	cbor_decref(&map);
	EVP_PKEY_free(pub);
	pub = NULL;
	free(spki);
	spki = NULL;

	CHECK_OK(passkey_key_generate(PASSKEY_ALG_EDDSA, &ed));
	CHECK_OK(passkey_key_cose(ed, &cbor2, &len2));
	CHECK_OK(passkey_key_spki(ed, &spki, &spki_len));
	if (cbor2 == NULL || spki == NULL)
		goto out;
	CHECK_EQ(len2, 42);
	CHECK_MEM_EQ(cbor2, ed_head, sizeof(ed_head));
	p = spki;
	pub = d2i_PUBKEY(NULL, &p, (long)spki_len);
	CHECK(pub != NULL && EVP_PKEY_get_raw_public_key(pub, raw, &raw_len) == 1);
	if (len2 == 42)
		CHECK_MEM_EQ(cbor2 + 10, raw, 32);
out:
	if (map != NULL)
		cbor_decref(&map);
	EVP_PKEY_free(pub);
	free(spki);
	free(cbor);
	free(cbor2);
	passkey_key_free(ec);
	passkey_key_free(ed);
}

static void test_authenticator_data(void)
{
	uint8_t ad[PASSKEY_AUTHDATA_LEN], h[32];
	char long_rp[300];

	CHECK_OK(passkey_authenticator_data("example.com", PASSKEY_FLAG_UP | PASSKEY_FLAG_UV,
					    0x01020304u, ad));
	SHA256((const unsigned char *)"example.com", 11, h);
	CHECK_MEM_EQ(ad, h, 32);
	CHECK_EQ(ad[32], 0x05);
	CHECK_EQ(ad[33], 1);
	CHECK_EQ(ad[34], 2);
	CHECK_EQ(ad[35], 3);
	CHECK_EQ(ad[36], 4);
	CHECK_OK(passkey_authenticator_data("example.com", PASSKEY_FLAG_BE, 0, ad));
	CHECK_EQ(ad[32], 0x08);
	CHECK_EQ(
	    passkey_authenticator_data("example.com", PASSKEY_FLAG_UP | PASSKEY_FLAG_BS, 0, ad),
	    PKS_ERR_INVALID);
	CHECK_EQ(passkey_authenticator_data("", PASSKEY_FLAG_UP, 0, ad), PKS_ERR_INVALID);
	memset(long_rp, 'a', 254);
	long_rp[254] = '\0';
	CHECK_EQ(passkey_authenticator_data(long_rp, PASSKEY_FLAG_UP, 0, ad), PKS_ERR_INVALID);
	long_rp[253] = '\0';
	CHECK_OK(passkey_authenticator_data(long_rp, PASSKEY_FLAG_UP, 0, ad));
}

static void test_assert_refuses_bs_without_be(void)
{
	struct passkey_key *key = NULL;
	uint8_t cdh[32] = {0}, *ad = NULL, *sig = NULL;
	size_t ad_len = 0, sig_len = 0;

	CHECK_OK(passkey_key_generate(PASSKEY_ALG_ES256, &key));
	CHECK_EQ(passkey_assert(key, "example.com", PASSKEY_FLAG_UP | PASSKEY_FLAG_BS, cdh, &ad,
				&ad_len, &sig, &sig_len),
		 PKS_ERR_INVALID);
	CHECK(ad == NULL && sig == NULL);
	passkey_key_free(key);
}

/* PKCS#8 DER of an OpenSSL key (generated here, not by the module). */
static int pkcs8_of(EVP_PKEY *pkey, uint8_t **der, size_t *len)
{
	PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(pkey);
	unsigned char *buf = NULL;
	int n;

	if (p8 == NULL)
		return -1;
	n = i2d_PKCS8_PRIV_KEY_INFO(p8, &buf);
	PKCS8_PRIV_KEY_INFO_free(p8);
	if (n <= 0)
		return -1;
	*der = buf;
	*len = (size_t)n;
	return 0;
}

static void check_refused(EVP_PKEY *pkey, int want)
{
	struct passkey_key *key = NULL;
	uint8_t *der = NULL;
	size_t len = 0;

	CHECK(pkey != NULL);
	if (pkey == NULL)
		return;
	CHECK_EQ(pkcs8_of(pkey, &der, &len), 0);
	if (der != NULL) {
		int r = passkey_key_from_pkcs8(der, len, &key);
		if (want == PKS_ERR_TOO_LARGE && len <= PASSKEY_PKCS8_MAX)
			want = PKS_ERR_UNSUPPORTED;
		CHECK_EQ(r, want);
		CHECK(key == NULL);
	}
	OPENSSL_free(der);
	EVP_PKEY_free(pkey);
}

static void test_refuse_other_curves(void)
{
	check_refused(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384"), PKS_ERR_UNSUPPORTED);
	check_refused(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1"), PKS_ERR_UNSUPPORTED);
	check_refused(EVP_PKEY_Q_keygen(NULL, NULL, "X25519"), PKS_ERR_UNSUPPORTED);
	check_refused(EVP_PKEY_Q_keygen(NULL, NULL, "ED448"), PKS_ERR_UNSUPPORTED);
	/* RSA-1024 PKCS#8 is over 600 bytes: refused by size before parsing. */
	check_refused(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024), PKS_ERR_TOO_LARGE);
	/* A 512-bit RSA key fits under the size limit: refused as an algorithm. */
	check_refused(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)512), PKS_ERR_TOO_LARGE);
}

static void test_refuse_bad_der(void)
{
	struct passkey_key *gen = NULL, *key = NULL;
	uint8_t *der = NULL, big[PASSKEY_PKCS8_MAX + 1];
	uint8_t tmp[PASSKEY_PKCS8_MAX + 1];
	size_t len = 0;
	unsigned char *sec1 = NULL;
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	BUF_MEM *mem = NULL;
	int n;

	CHECK_OK(passkey_key_generate(PASSKEY_ALG_ES256, &gen));
	CHECK_OK(passkey_key_pkcs8(gen, &der, &len));
	if (der == NULL)
		goto out;
	/* Every truncation is refused. */
	for (size_t cut = 0; cut < len; cut++) {
		memcpy(tmp, der, cut);
		if (passkey_key_from_pkcs8(tmp, cut, &key) == PKS_OK) {
			CHECK_FAIL_AT("a PKCS#8 cut to %zu of %zu bytes was accepted", cut, len);
			passkey_key_free(key);
			key = NULL;
		}
	}
	/* Trailing bytes are refused. */
	memcpy(tmp, der, len);
	tmp[len] = 0;
	CHECK_EQ(passkey_key_from_pkcs8(tmp, len + 1, &key), PKS_ERR_MALFORMED);
	/* Oversize input is refused by size. */
	memset(big, 0, sizeof(big));
	memcpy(big, der, len);
	CHECK_EQ(passkey_key_from_pkcs8(big, sizeof(big), &key), PKS_ERR_TOO_LARGE);
	/* A flipped bit in the private scalar no longer matches the embedded public key. */
	memcpy(tmp, der, len);
	tmp[40] ^= 0x01;
	CHECK_EQ(passkey_key_from_pkcs8(tmp, len, &key), PKS_ERR_MALFORMED);
	/* Garbage. */
	randombytes_buf(tmp, 100);
	CHECK(passkey_key_from_pkcs8(tmp, 100, &key) != PKS_OK);
	CHECK(key == NULL);

	/* SEC1 "EC PRIVATE KEY" DER is not PKCS#8. */
	pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	CHECK(pkey != NULL);
	n = pkey != NULL ? i2d_PrivateKey(pkey, &sec1) : -1;
	CHECK(n > 0);
	if (n > 0)
		CHECK_EQ(passkey_key_from_pkcs8(sec1, (size_t)n, &key), PKS_ERR_MALFORMED);
	/* Encrypted PKCS#8 is refused. */
	bio = BIO_new(BIO_s_mem());
	CHECK(bio != NULL && pkey != NULL &&
	      i2d_PKCS8PrivateKey_bio(bio, pkey, EVP_aes_128_cbc(), "pw", 2, NULL, NULL) == 1);
	if (bio != NULL && BIO_get_mem_ptr(bio, &mem) == 1 && mem != NULL && mem->length > 0) {
		int r = passkey_key_from_pkcs8((const uint8_t *)mem->data, mem->length, &key);
		CHECK(r == PKS_ERR_MALFORMED || r == PKS_ERR_TOO_LARGE);
	}
	CHECK(key == NULL);
out:
	BIO_free(bio);
	OPENSSL_free(sec1);
	EVP_PKEY_free(pkey);
	passkey_secret_free(der, len);
	passkey_key_free(gen);
}

/* ---- the shared sample files ---- */

static char *sample_path(const char *name)
{
	const char *dir = getenv("PKSYNC_PASSKEY_SAMPLES");
	char *path = NULL;

	if (dir == NULL) {
		CHECK_FAIL_AT("PKSYNC_PASSKEY_SAMPLES is not set (meson sets it)");
		return NULL;
	}
	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return NULL;
	return path;
}

static json_t *sample_json(const char *name)
{
	char *path = sample_path(name);
	json_error_t e;
	json_t *j = path ? json_load_file(path, 0, &e) : NULL;

	if (path != NULL && j == NULL)
		CHECK_FAIL_AT("cannot read %s: %s", path, e.text);
	free(path);
	return j;
}

/* Loads a base64url PKCS#8 and checks it signs for ES256. */
static void check_sample_key_b64url(const char *b64)
{
	uint8_t der[PASSKEY_PKCS8_MAX];
	size_t len = 0;
	struct passkey_key *key = NULL;

	CHECK(b64 != NULL);
	if (b64 == NULL)
		return;
	CHECK_EQ(sodium_base642bin(der, sizeof(der), b64, strlen(b64), NULL, &len, NULL,
				   sodium_base64_VARIANT_URLSAFE_NO_PADDING),
		 0);
	CHECK_OK(passkey_key_from_pkcs8(der, len, &key));
	if (key != NULL) {
		CHECK_EQ(passkey_key_alg(key), PASSKEY_ALG_ES256);
		check_assert(key, PASSKEY_ALG_ES256);
	}
	passkey_key_free(key);
}

static void test_sample_keys(void)
{
	json_t *cxf = sample_json("cxf-example.json");
	json_t *bw = sample_json("bitwarden-export.json");
	json_t *kp = sample_json("keepassxc-export.passkey");
	json_t *creds;
	const char *pem;
	BIO *bio = NULL;
	EVP_PKEY *pkey = NULL;
	uint8_t *der = NULL;
	size_t len = 0, i, found = 0;
	struct passkey_key *key = NULL;
	json_t *item, *cred;

	/* CXF: the one passkey credential's key. */
	json_array_foreach(
	    json_object_get(json_array_get(json_object_get(cxf, "accounts"), 0), "items"), i, item)
	{
		size_t j;
		json_array_foreach(json_object_get(item, "credentials"), j, cred)
		{
			const char *t = json_string_value(json_object_get(cred, "type"));
			if (t != NULL && strcmp(t, "passkey") == 0) {
				check_sample_key_b64url(
				    json_string_value(json_object_get(cred, "key")));
				found++;
			}
		}
	}
	CHECK_EQ(found, 1);
	/* Bitwarden: keyValue of both credentials. */
	found = 0;
	json_array_foreach(json_object_get(bw, "items"), i, item)
	{
		creds = json_object_get(json_object_get(item, "login"), "fido2Credentials");
		cred = json_array_get(creds, 0);
		check_sample_key_b64url(json_string_value(json_object_get(cred, "keyValue")));
		found++;
	}
	CHECK_EQ(found, 2);
	/* KeePassXC: PEM, read by OpenSSL's PEM reader, then through PKCS#8. */
	pem = json_string_value(json_object_get(kp, "privateKey"));
	CHECK(pem != NULL);
	if (pem != NULL) {
		bio = BIO_new_mem_buf(pem, -1);
		pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
		CHECK(pkey != NULL);
		if (pkey != NULL && pkcs8_of(pkey, &der, &len) == 0) {
			CHECK_OK(passkey_key_from_pkcs8(der, len, &key));
			if (key != NULL) {
				CHECK_EQ(passkey_key_alg(key), PASSKEY_ALG_ES256);
				check_assert(key, PASSKEY_ALG_ES256);
			}
		}
	}
	passkey_key_free(key);
	OPENSSL_free(der);
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	json_decref(cxf);
	json_decref(bw);
	json_decref(kp);
}

static void test_item_copy_and_free(void)
{
	struct passkey_item a, b;
	struct passkey_key *key = NULL;
	struct passkey_list *l;

	memset(&a, 0, sizeof(a));
	CHECK_OK(passkey_key_generate(PASSKEY_ALG_ES256, &key));
	CHECK_OK(passkey_key_pkcs8(key, &a.private_key, &a.private_key_len));
	CHECK_OK(passkey_key_spki(key, &a.public_key, &a.public_key_len));
	a.rp_id = strdup("example.org");
	a.credential_id = malloc(4);
	a.credential_id_len = 4;
	memcpy(a.credential_id, "abcd", 4);
	a.user_handle = malloc(1);
	a.user_handle_len = 1;
	a.user_handle[0] = 7;
	a.user_name = strdup("u");
	a.alg = PASSKEY_ALG_ES256;
	a.backup_eligible = true;
	CHECK_OK(passkey_item_copy(&b, &a));
	CHECK_STR_EQ(b.rp_id, "example.org");
	CHECK(b.private_key != a.private_key && b.private_key_len == a.private_key_len);
	CHECK_MEM_EQ(b.private_key, a.private_key, a.private_key_len);
	CHECK_MEM_EQ(b.credential_id, "abcd", 4);
	CHECK(b.display_name == NULL && b.notes == NULL && b.backup_eligible && !b.backup_state);
	passkey_item_clear(&a);
	CHECK(a.rp_id == NULL && a.private_key == NULL);
	l = calloc(1, sizeof(*l));
	l->items = calloc(1, sizeof(*l->items));
	l->items[0] = b;
	l->count = 1;
	passkey_list_free(l);
	passkey_list_free(NULL);
	passkey_item_clear(NULL);
	passkey_key_free(key);
}

CHECK_MAIN({"/passkey/es256_sign_verify", test_es256}, {"/passkey/eddsa_sign_verify", test_eddsa},
	   {"/passkey/generate_unknown_alg", test_generate_unknown},
	   {"/passkey/pkcs8_round_trip", test_pkcs8_round_trip}, {"/passkey/cose_key", test_cose},
	   {"/passkey/authenticator_data", test_authenticator_data},
	   {"/passkey/assert_bs_without_be", test_assert_refuses_bs_without_be},
	   {"/passkey/refuse_other_curves", test_refuse_other_curves},
	   {"/passkey/refuse_bad_der", test_refuse_bad_der},
	   {"/passkey/sample_keys", test_sample_keys},
	   {"/passkey/item_copy_and_free", test_item_copy_and_free})
