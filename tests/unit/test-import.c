/*
 * agent/import and agent/export: the shared samples parse to the values
 * written in them, exports round-trip, and broken files are refused whole
 * with the place named. Test documents are built here with jansson and fresh
 * keys. Samples come from $PKSYNC_PASSKEY_SAMPLES (set by meson).
 */
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/export.h"
#include "agent/import.h"
#include "agent/passkey.h"
#include "common/err.h"
#include "tests/check.h"

/* ---- helpers ---- */

static uint8_t *read_sample(const char *name, size_t *len)
{
	const char *dir = getenv("PKSYNC_PASSKEY_SAMPLES");
	char path[4096];
	uint8_t *data = NULL;
	FILE *f;
	long n;

	if (dir == NULL) {
		CHECK_FAIL_AT("PKSYNC_PASSKEY_SAMPLES is not set (meson sets it)");
		return NULL;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (f == NULL) {
		CHECK_FAIL_AT("cannot open %s", path);
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
		data = malloc((size_t)n);
		if (data != NULL && fread(data, 1, (size_t)n, f) == (size_t)n)
			*len = (size_t)n;
		else {
			free(data);
			data = NULL;
		}
	}
	fclose(f);
	CHECK(data != NULL);
	return data;
}

/* Parses a NUL-terminated document; returns the code, err holds the sentence. */
static int parse_text(const char *text, enum import_format fmt, struct passkey_list **out,
		      char *err, size_t err_len)
{
	enum import_format det = IMPORT_FORMAT_AUTO;

	*out = NULL;
	return import_parse((const uint8_t *)text, strlen(text), fmt, out, &det, err, err_len);
}

/* Expects text to be refused with code want (0: any) and err containing needle. */
#define CHECK_REFUSED(text, fmt, want, needle)                                                     \
	do {                                                                                       \
		struct passkey_list *l_ = NULL;                                                    \
		char e_[512];                                                                      \
		int r_ = parse_text((text), (fmt), &l_, e_, sizeof(e_));                           \
		CHECK(r_ != PKS_OK);                                                               \
		if ((want) != 0)                                                                   \
			CHECK_EQ(r_, (want));                                                      \
		CHECK(l_ == NULL);                                                                 \
		if (r_ != PKS_OK && strstr(e_, (needle)) == NULL)                                  \
			CHECK_FAIL_AT("error \"%s\" does not contain \"%s\"", e_, (needle));       \
		passkey_list_free(l_);                                                             \
	} while (0)

static char *b64url(const uint8_t *data, size_t len)
{
	size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *s = malloc(cap);

	if (s != NULL)
		sodium_bin2base64(s, cap, data, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return s;
}

/* A fresh key as base64url PKCS#8. */
static char *fresh_key_b64(int alg)
{
	struct passkey_key *k = NULL;
	uint8_t *der = NULL;
	size_t len = 0;
	char *s = NULL;

	if (passkey_key_generate(alg, &k) == PKS_OK && passkey_key_pkcs8(k, &der, &len) == PKS_OK)
		s = b64url(der, len);
	passkey_secret_free(der, len);
	passkey_key_free(k);
	return s;
}

/* An OpenSSL key of another kind (P-384, ...) as base64url PKCS#8. */
static char *foreign_key_b64(const char *type, const char *curve)
{
	EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, type, curve);
	PKCS8_PRIV_KEY_INFO *p8 = pkey ? EVP_PKEY2PKCS8(pkey) : NULL;
	unsigned char *der = NULL;
	int n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &der) : -1;
	char *s = n > 0 ? b64url(der, (size_t)n) : NULL;

	OPENSSL_free(der);
	PKCS8_PRIV_KEY_INFO_free(p8);
	EVP_PKEY_free(pkey);
	return s;
}

static json_t *cxf_passkey(const char *cred_id, const char *rp, const char *user,
			   const char *handle, const char *key)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "type", "passkey", "credentialId",
			 cred_id, "rpId", rp, "username", user, "userDisplayName", user,
			 "userHandle", handle, "key", key);
}

/* A CXF document with one account holding one item per credential. */
static char *cxf_doc(json_t *creds /* taken */)
{
	json_t *items = json_array(), *c, *root;
	size_t i;
	char *text;

	json_array_foreach(creds, i, c)
	{
		json_array_append_new(items, json_pack("{s:s, s:i, s:s, s:[O]}", "id", "aXRlbQ",
						       "creationAt", 1700000000 + (int)i, "title",
						       "t", "credentials", c));
	}
	root = json_pack("{s:{s:i, s:i}, s:s, s:s, s:i, s:[{s:s, s:s, s:s, s:o}]}", "version",
			 "major", 1, "minor", 0, "exporterRpId", "exporter.test",
			 "exporterDisplayName", "Test", "timestamp", 1700000000, "accounts", "id",
			 "YWNj", "username", "", "email", "", "items", items);
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	json_decref(creds);
	return text;
}

static char *bitwarden_doc(json_t *creds /* taken */, const char *notes)
{
	json_t *root = json_pack(
	    "{s:b, s:[], s:[{s:s, s:i, s:s, s:s?, s:{s:o, s:s, s:n}}]}", "encrypted", 0, "folders",
	    "items", "id", "b8e579f0-98c2-4ac9-a126-b212011225f8", "type", 1, "name", "n", "notes",
	    notes, "login", "fido2Credentials", creds, "username", "u", "password");
	char *text = json_dumps(root, JSON_COMPACT);

	json_decref(root);
	return text;
}

static json_t *bitwarden_cred(const char *cred_id, const char *curve, const char *key,
			      const char *counter, const char *date)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
			 "credentialId", cred_id, "keyType", "public-key", "keyAlgorithm", "ECDSA",
			 "keyCurve", curve, "keyValue", key, "rpId", "example.net", "userHandle",
			 "dXNlcg", "userName", "bob", "counter", counter, "rpName", "Example",
			 "userDisplayName", "Bob", "discoverable", "true", "creationDate", date);
}

static char *keepassxc_doc(const char *pem, const char *cred_id)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "credentialId", cred_id,
			      "privateKey", pem, "relyingParty", "example.com", "url",
			      "https://example.com", "userHandle", "dXNlcg", "username", "alice");
	char *text = json_dumps(o, JSON_COMPACT);

	json_decref(o);
	return text;
}

/* The item's key loads, is alg, and its SPKI is the one the item carries. */
static void check_item_key(const struct passkey_item *it, int alg)
{
	struct passkey_key *k = NULL;
	uint8_t *spki = NULL;
	size_t spki_len = 0;

	CHECK_EQ(it->alg, alg);
	CHECK_OK(passkey_key_from_pkcs8(it->private_key, it->private_key_len, &k));
	if (k == NULL)
		return;
	CHECK_EQ(passkey_key_alg(k), alg);
	CHECK_OK(passkey_key_spki(k, &spki, &spki_len));
	CHECK_EQ(spki_len, it->public_key_len);
	if (spki != NULL && spki_len == it->public_key_len)
		CHECK_MEM_EQ(spki, it->public_key, spki_len);
	free(spki);
	passkey_key_free(k);
}

/* ---- the shared samples ---- */

static void test_sample_cxf(void)
{
	size_t len = 0;
	uint8_t *data = read_sample("cxf-example.json", &len);
	struct passkey_list *l = NULL;
	enum import_format det = IMPORT_FORMAT_AUTO;
	char err[256] = "";
	static const uint8_t handle[] = {0x72, 0x71, 0x33, 0x68, 0xd1, 0xd6, 0x71, 0x82,
					 0xb7, 0x72, 0x85, 0x99, 0x8e, 0xfa, 0x1a, 0x57,
					 0x51, 0xe3, 0xf6, 0x09, 0xc8, 0xd7, 0x69, 0x8a,
					 0x7b, 0x67, 0x4b, 0xd8, 0x76, 0x55, 0x16, 0x56};

	if (data == NULL)
		return;
	CHECK_OK(import_parse(data, len, IMPORT_FORMAT_AUTO, &l, &det, err, sizeof(err)));
	if (l == NULL) {
		printf("# %s\n", err);
		goto out;
	}
	CHECK_EQ(det, IMPORT_FORMAT_CXF);
	CHECK_EQ(l->count, 1);
	CHECK_STR_EQ(l->items[0].rp_id, "webauthn.io");
	CHECK_STR_EQ(l->items[0].user_name, "johndoe");
	CHECK_STR_EQ(l->items[0].display_name, "John Doe");
	CHECK_EQ(l->items[0].credential_id_len, 19);
	CHECK_MEM_EQ(l->items[0].credential_id, "credentialIdExample", 19);
	CHECK_EQ(l->items[0].user_handle_len, sizeof(handle));
	CHECK_MEM_EQ(l->items[0].user_handle, handle, sizeof(handle));
	CHECK_EQ(l->items[0].created_at_ms, 1705142400000ull);
	CHECK_STR_EQ(l->items[0].source, "cxf:exporter.example.com");
	CHECK(l->items[0].backup_eligible && l->items[0].backup_state);
	CHECK(l->items[0].notes == NULL);
	check_item_key(&l->items[0], PASSKEY_ALG_ES256);
	/* The same bytes with the format named explicitly. */
	passkey_list_free(l);
	l = NULL;
	CHECK_OK(import_parse(data, len, IMPORT_FORMAT_CXF, &l, NULL, err, sizeof(err)));
	CHECK(l != NULL && l->count == 1);
	/* And refused when read as another format. */
	passkey_list_free(l);
	l = NULL;
	CHECK(import_parse(data, len, IMPORT_FORMAT_BITWARDEN, &l, NULL, err, sizeof(err)) !=
	      PKS_OK);
	CHECK(strstr(err, "items") != NULL);
out:
	passkey_list_free(l);
	free(data);
}

static void test_sample_keepassxc(void)
{
	size_t len = 0;
	uint8_t *data = read_sample("keepassxc-export.passkey", &len);
	struct passkey_list *l = NULL;
	enum import_format det = IMPORT_FORMAT_AUTO;
	char err[256] = "";
	static const uint8_t cred[] = {0xdf, 0x2c, 0x78, 0xd2, 0x97, 0xde, 0x56, 0x1d,
				       0x94, 0x4f, 0x5d, 0xee, 0x95, 0xc0, 0xc8, 0xcb,
				       0x0c, 0xc5, 0xa1, 0x01, 0xa1, 0x60, 0x6b, 0x58,
				       0x3f, 0x31, 0xb3, 0x2d, 0x09, 0xc6, 0xc7, 0xd6};

	if (data == NULL)
		return;
	CHECK_OK(import_parse(data, len, IMPORT_FORMAT_AUTO, &l, &det, err, sizeof(err)));
	if (l == NULL) {
		printf("# %s\n", err);
		goto out;
	}
	CHECK_EQ(det, IMPORT_FORMAT_KEEPASSXC);
	CHECK_EQ(l->count, 1);
	CHECK_STR_EQ(l->items[0].rp_id, "example.com");
	CHECK_STR_EQ(l->items[0].user_name, "alice");
	CHECK_EQ(l->items[0].credential_id_len, sizeof(cred));
	CHECK_MEM_EQ(l->items[0].credential_id, cred, sizeof(cred));
	CHECK_EQ(l->items[0].user_handle_len, 16);
	CHECK_MEM_EQ(l->items[0].user_handle, "user-handle-0001", 16);
	CHECK_STR_EQ(l->items[0].source, "keepassxc");
	CHECK_EQ(l->items[0].created_at_ms, 0);
	CHECK(l->items[0].backup_eligible && l->items[0].backup_state);
	check_item_key(&l->items[0], PASSKEY_ALG_ES256);
out:
	passkey_list_free(l);
	free(data);
}

static void test_sample_bitwarden(void)
{
	size_t len = 0;
	uint8_t *data = read_sample("bitwarden-export.json", &len);
	struct passkey_list *l = NULL;
	enum import_format det = IMPORT_FORMAT_AUTO;
	char err[256] = "";
	static const uint8_t cred[] = {0xa3, 0xe1, 0x5f, 0x8b, 0x27, 0xc1, 0x42, 0xae,
				       0x90, 0xcf, 0xa6, 0x15, 0xad, 0x87, 0x85, 0x4f};
	static const char handle[] = "i1mvag8v-KgqTBto-kHZKXh4zyST-bQRQx6ys2Wkw6k";

	if (data == NULL)
		return;
	CHECK_OK(import_parse(data, len, IMPORT_FORMAT_AUTO, &l, &det, err, sizeof(err)));
	if (l == NULL) {
		printf("# %s\n", err);
		goto out;
	}
	CHECK_EQ(det, IMPORT_FORMAT_BITWARDEN);
	/* Two items, one credential: the UUID and "b64." ids name the same bytes. */
	CHECK_EQ(l->count, 1);
	CHECK_STR_EQ(l->items[0].rp_id, "webauthn.io");
	CHECK_STR_EQ(l->items[0].user_name, "KPXC_BITWARDEN");
	CHECK_STR_EQ(l->items[0].display_name, "KPXC_BITWARDEN");
	CHECK_EQ(l->items[0].credential_id_len, sizeof(cred));
	CHECK_MEM_EQ(l->items[0].credential_id, cred, sizeof(cred));
	CHECK_EQ(l->items[0].user_handle_len, strlen(handle));
	CHECK_MEM_EQ(l->items[0].user_handle, handle, strlen(handle));
	CHECK_EQ(l->items[0].created_at_ms, 1729701488617ull);
	CHECK_STR_EQ(l->items[0].source, "bitwarden");
	CHECK(l->items[0].notes == NULL);
	check_item_key(&l->items[0], PASSKEY_ALG_ES256);
out:
	passkey_list_free(l);
	free(data);
}

static void test_format_names(void)
{
	enum import_format f = IMPORT_FORMAT_AUTO;

	CHECK_STR_EQ(import_format_name(IMPORT_FORMAT_CXF), "cxf");
	CHECK_STR_EQ(import_format_name(IMPORT_FORMAT_KEEPASSXC), "keepassxc");
	CHECK_STR_EQ(import_format_name(IMPORT_FORMAT_BITWARDEN), "bitwarden");
	CHECK_STR_EQ(import_format_name(IMPORT_FORMAT_AUTO), "auto");
	CHECK_OK(import_format_from_name("bitwarden", &f));
	CHECK_EQ(f, IMPORT_FORMAT_BITWARDEN);
	CHECK_OK(import_format_from_name("keepassxc", &f));
	CHECK_EQ(f, IMPORT_FORMAT_KEEPASSXC);
	CHECK_OK(import_format_from_name("cxf", &f));
	CHECK_EQ(f, IMPORT_FORMAT_CXF);
	CHECK_EQ(import_format_from_name("CXF2", &f), PKS_ERR_INVALID);
	CHECK_EQ(f, IMPORT_FORMAT_CXF);
}

/* ---- round trips ---- */

/* Fresh items: both algorithms, every legal BE/BS pair, odd names and notes. */
static struct passkey_item *make_items(size_t n)
{
	struct passkey_item *items = calloc(n, sizeof(*items));

	for (size_t i = 0; items != NULL && i < n; i++) {
		struct passkey_item *it = &items[i];
		struct passkey_key *k = NULL;
		char buf[64];

		it->alg = i % 3 == 2 ? PASSKEY_ALG_EDDSA : PASSKEY_ALG_ES256;
		passkey_key_generate(it->alg, &k);
		passkey_key_pkcs8(k, &it->private_key, &it->private_key_len);
		passkey_key_spki(k, &it->public_key, &it->public_key_len);
		passkey_key_free(k);
		snprintf(buf, sizeof(buf), "site%zu.example", i % 2);
		it->rp_id = strdup(buf);
		it->credential_id_len = 16 + i;
		it->credential_id = malloc(it->credential_id_len);
		randombytes_buf(it->credential_id, it->credential_id_len);
		it->user_handle_len = 1 + (i * 7) % 64;
		it->user_handle = malloc(it->user_handle_len);
		randombytes_buf(it->user_handle, it->user_handle_len);
		snprintf(buf, sizeof(buf), "user%zu \"q\" \xc3\xa9\xe2\x82\xac", i);
		it->user_name = strdup(buf);
		snprintf(buf, sizeof(buf), "Display \\ %zu", i);
		it->display_name = strdup(buf);
		it->backup_eligible = i % 4 != 0;
		it->backup_state = i % 4 == 1 || i % 4 == 3;
		it->created_at_ms = i % 5 == 0 ? 0 : 1600000000000ull + i * 1000;
		it->notes = i % 2 ? strdup("line one\nline two\t\xe2\x9c\x93") : NULL;
	}
	return items;
}

static void free_items(struct passkey_item *items, size_t n)
{
	struct passkey_list l = {items, n, NULL, 0};

	passkey_list_free_items(&l);
	free(items);
}

static void check_same_item(const struct passkey_item *a, const struct passkey_item *b, bool cxf)
{
	CHECK_STR_EQ(a->rp_id, b->rp_id);
	CHECK_EQ(a->credential_id_len, b->credential_id_len);
	if (a->credential_id_len == b->credential_id_len)
		CHECK_MEM_EQ(a->credential_id, b->credential_id, a->credential_id_len);
	CHECK_EQ(a->user_handle_len, b->user_handle_len);
	if (a->user_handle_len == b->user_handle_len)
		CHECK_MEM_EQ(a->user_handle, b->user_handle, a->user_handle_len);
	CHECK_STR_EQ(a->user_name, b->user_name);
	CHECK_EQ(a->alg, b->alg);
	CHECK_EQ(a->private_key_len, b->private_key_len);
	if (a->private_key_len == b->private_key_len)
		CHECK_MEM_EQ(a->private_key, b->private_key, a->private_key_len);
	CHECK_EQ(a->public_key_len, b->public_key_len);
	if (a->public_key_len == b->public_key_len)
		CHECK_MEM_EQ(a->public_key, b->public_key, a->public_key_len);
	CHECK_EQ(a->backup_eligible, b->backup_eligible);
	CHECK_EQ(a->backup_state, b->backup_state);
	if (cxf) {
		CHECK_STR_EQ(a->display_name, b->display_name);
		CHECK_EQ(a->created_at_ms, b->created_at_ms);
		if (a->notes == NULL)
			CHECK(b->notes == NULL);
		else
			CHECK_STR_EQ(a->notes, b->notes);
	} else {
		/* KeePassXC keeps no display name, time or notes. */
		CHECK_STR_EQ(b->display_name, a->user_name);
	}
}

static void test_cxf_round_trip(void)
{
	const size_t n = 12;
	struct passkey_item *items = make_items(n);
	struct passkey_list *l = NULL;
	char *text = NULL, err[256] = "";
	enum import_format det = IMPORT_FORMAT_AUTO;

	CHECK_OK(export_cxf(items, n, "pksync test", 1700000000, &text));
	if (text == NULL)
		goto out;
	CHECK(strstr(text, "\"exporterRpId\":\"pksync.invalid\"") != NULL);
	CHECK(strstr(text, "\"major\":1") != NULL);
	CHECK_OK(import_parse((const uint8_t *)text, strlen(text), IMPORT_FORMAT_AUTO, &l, &det,
			      err, sizeof(err)));
	if (l == NULL) {
		printf("# %s\n", err);
		goto out;
	}
	CHECK_EQ(det, IMPORT_FORMAT_CXF);
	CHECK_EQ(l->count, n);
	for (size_t i = 0; i < n && i < l->count; i++) {
		check_same_item(&items[i], &l->items[i], true);
		CHECK_STR_EQ(l->items[i].source, "cxf:pksync.invalid");
	}
	/* BE=0 records stay BE=0 (items 0, 4, 8). */
	CHECK(!l->items[0].backup_eligible && !l->items[0].backup_state);
	/* Times are whole seconds in CXF. */
	passkey_list_free(l);
	l = NULL;
	items[1].created_at_ms += 999;
	sodium_memzero(text, strlen(text));
	free(text);
	text = NULL;
	CHECK_OK(export_cxf(items, 2, NULL, 1700000000, &text));
	CHECK(text != NULL && strstr(text, "\"exporterDisplayName\":\"pksync\"") != NULL);
	CHECK_OK(parse_text(text ? text : "", IMPORT_FORMAT_CXF, &l, err, sizeof(err)));
	if (l != NULL && l->count == 2)
		CHECK_EQ(l->items[1].created_at_ms, items[1].created_at_ms - 999);
out:
	passkey_list_free(l);
	if (text != NULL) {
		sodium_memzero(text, strlen(text));
		free(text);
	}
	free_items(items, n);
}

static void test_cxf_export_refuses_bad_items(void)
{
	struct passkey_item *items = make_items(2);
	char *text = NULL;

	CHECK_OK(export_cxf(NULL, 0, "x", 1, &text));
	if (text != NULL) {
		/* An export with no passkeys is valid CXF, but an import of it has nothing. */
		CHECK_REFUSED(text, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "no passkeys found");
		free(text);
		text = NULL;
	}
	items[1].backup_eligible = false;
	items[1].backup_state = true;
	CHECK_EQ(export_cxf(items, 2, "x", 1, &text), PKS_ERR_INVALID);
	CHECK_EQ(export_keepassxc(&items[1], &text), PKS_ERR_INVALID);
	CHECK(text == NULL);
	free_items(items, 2);
}

static void test_keepassxc_round_trip(void)
{
	const size_t n = 6;
	struct passkey_item *items = make_items(n);

	for (size_t i = 0; i < n; i++) {
		struct passkey_list *l = NULL;
		char *text = NULL, err[256] = "";
		enum import_format det = IMPORT_FORMAT_AUTO;

		CHECK_OK(export_keepassxc(&items[i], &text));
		if (text == NULL)
			continue;
		CHECK(strstr(text, "-----BEGIN PRIVATE KEY-----\\n") != NULL);
		CHECK(strstr(text, "\"url\": \"https://site") != NULL);
		CHECK_OK(import_parse((const uint8_t *)text, strlen(text), IMPORT_FORMAT_AUTO, &l,
				      &det, err, sizeof(err)));
		if (l == NULL) {
			printf("# %s\n", err);
		} else {
			CHECK_EQ(det, IMPORT_FORMAT_KEEPASSXC);
			CHECK_EQ(l->count, 1);
			check_same_item(&items[i], &l->items[0], false);
			CHECK_STR_EQ(l->items[0].source, "keepassxc");
		}
		passkey_list_free(l);
		sodium_memzero(text, strlen(text));
		free(text);
	}
	free_items(items, n);
}

static void test_keepassxc_array(void)
{
	struct passkey_item *items = make_items(2);
	char *a = NULL, *b = NULL, *doc = NULL;
	struct passkey_list *l = NULL;
	char err[256] = "";

	CHECK_OK(export_keepassxc(&items[0], &a));
	CHECK_OK(export_keepassxc(&items[1], &b));
	if (a != NULL && b != NULL && asprintf(&doc, "[%s, %s]", a, b) > 0) {
		CHECK_OK(parse_text(doc, IMPORT_FORMAT_AUTO, &l, err, sizeof(err)));
		CHECK(l != NULL && l->count == 2);
		if (l != NULL && l->count == 2) {
			check_same_item(&items[0], &l->items[0], false);
			check_same_item(&items[1], &l->items[1], false);
		}
		passkey_list_free(l);
		free(doc);
		if (asprintf(&doc, "[%s, {\"relyingParty\": \"x\"}]", a) > 0)
			CHECK_REFUSED(doc, IMPORT_FORMAT_KEEPASSXC, PKS_ERR_MALFORMED, "[1].url");
	}
	free(doc);
	free(a);
	free(b);
	free_items(items, 2);
}

/* 20,000 passkeys: more than one guarded sodium mapping per key would allow. */
static void test_many_passkeys(void)
{
	const size_t n = 20000, nkeys = 50;
	struct passkey_item *items = make_items(nkeys);
	struct passkey_item *many = calloc(n, sizeof(*many));
	struct passkey_list *l = NULL;
	char *text = NULL, err[256] = "";
	struct timespec t0, t1;

	if (items == NULL || many == NULL)
		goto out;
	/* Shallow copies that share the generated keys: only the credential id differs. */
	for (size_t i = 0; i < n; i++) {
		many[i] = items[i % nkeys];
		many[i].credential_id_len = 8;
		many[i].credential_id = malloc(8);
		memcpy(many[i].credential_id, &i, sizeof(i));
	}
	CHECK_OK(export_cxf(many, n, "bulk", 1, &text));
	for (size_t i = 0; i < n; i++)
		free(many[i].credential_id);
	if (text == NULL)
		goto out;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK_OK(parse_text(text, IMPORT_FORMAT_CXF, &l, err, sizeof(err)));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("# imported %zu passkeys (%zu bytes of CXF) in %.2f s\n", n, strlen(text),
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	if (l == NULL) {
		printf("# %s\n", err);
		goto out;
	}
	CHECK_EQ(l->count, n);
	if (l->count == n) {
		CHECK_MEM_EQ(l->items[n - 1].private_key, items[(n - 1) % nkeys].private_key,
			     items[(n - 1) % nkeys].private_key_len);
	}
out:
	passkey_list_free(l);
	if (text != NULL) {
		sodium_memzero(text, strlen(text));
		free(text);
	}
	free(many);
	free_items(items, nkeys);
}

/* ---- refusals ---- */

static void test_refuse_truncated(void)
{
	static const char *names[] = {"cxf-example.json", "keepassxc-export.passkey",
				      "bitwarden-export.json"};

	for (size_t s = 0; s < 3; s++) {
		size_t len = 0;
		uint8_t *data = read_sample(names[s], &len);

		if (data == NULL)
			continue;
		for (size_t k = 0; k < 10; k++) {
			size_t cut = k == 0 ? 1 : k == 9 ? len - 2 : len * k / 9;
			struct passkey_list *l = NULL;
			char err[256] = "";
			int r =
			    import_parse(data, cut, IMPORT_FORMAT_AUTO, &l, NULL, err, sizeof(err));

			if (r == PKS_OK || l != NULL || strncmp(err, "line ", 5) != 0)
				CHECK_FAIL_AT("%s cut at %zu: r=%d err=\"%s\"", names[s], cut, r,
					      err);
			passkey_list_free(l);
		}
		free(data);
	}
}

static void test_refuse_garbage(void)
{
	uint8_t buf[4096];
	uint32_t seed = 12345;

	for (int round = 0; round < 200; round++) {
		struct passkey_list *l = NULL;
		char err[256] = "";
		size_t n = 1 + (size_t)(seed % sizeof(buf));

		for (size_t i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			buf[i] = (uint8_t)(seed >> 16);
		}
		if (import_parse(buf, n, IMPORT_FORMAT_AUTO, &l, NULL, err, sizeof(err)) ==
			PKS_OK ||
		    err[0] == '\0')
			CHECK_FAIL_AT("garbage round %d (seed %u) not refused with a message",
				      round, seed);
		passkey_list_free(l);
	}
	CHECK_REFUSED("", IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "line ");
	CHECK_REFUSED("{}", IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "not a CXF");
	CHECK_REFUSED("[1, 2]", IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "not a CXF");
	CHECK_REFUSED("{\"a\": 1} x", IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "line 1");
}

static void test_refuse_deep(void)
{
	const size_t depth = 100000;
	char *doc = malloc(2 * depth + 1);
	json_error_t e;
	json_t *j;

	if (doc == NULL)
		return;
	memset(doc, '[', depth);
	memset(doc + depth, ']', depth);
	doc[2 * depth] = '\0';
	/* jansson itself stops at JSON_PARSER_MAX_DEPTH with an error, not a crash. */
	j = json_loads(doc, 0, &e);
	CHECK(j == NULL);
	json_decref(j);
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_TOO_LARGE, "nested deeper than 64");
	/* 64 levels are fine as far as depth goes (then it is not an export). */
	memset(doc, '[', 64);
	memset(doc + 64, ']', 64);
	doc[128] = '\0';
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "not a CXF");
	/* Brackets inside strings do not count. */
	memset(doc, '[', 200);
	doc[0] = '"';
	doc[199] = '"';
	doc[200] = '\0';
	{
		char *wrapped = NULL;
		if (asprintf(&wrapped, "{\"x\": %s}", doc) > 0)
			CHECK_REFUSED(wrapped, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "not a CXF");
		free(wrapped);
	}
	free(doc);
}

static void test_refuse_huge(void)
{
	size_t n = 70u * 1024 * 1024;
	uint8_t *doc = malloc(n);
	struct passkey_list *l = NULL;
	char err[256] = "";

	if (doc == NULL)
		return;
	memset(doc, 'a', n);
	doc[0] = '"';
	doc[n - 1] = '"';
	CHECK_EQ(import_parse(doc, n, IMPORT_FORMAT_AUTO, &l, NULL, err, sizeof(err)),
		 PKS_ERR_TOO_LARGE);
	CHECK(strstr(err, "larger than 64 MiB") != NULL);
	CHECK(l == NULL);
	free(doc);
}

static void test_refuse_field_limits(void)
{
	char *key = fresh_key_b64(PASSKEY_ALG_ES256);
	uint8_t big[2000];
	char *big_b64, *doc, rp[300];

	memset(big, 0xab, sizeof(big));
	big_b64 = b64url(big, sizeof(big));
	doc = cxf_doc(json_pack("[o]", cxf_passkey(big_b64, "a.example", "u", "aGk", key)));
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_TOO_LARGE,
		      "accounts[0].items[0].credentials[0].credentialId: longer than 1023 bytes");
	free(doc);
	free(big_b64);
	/* A user handle of 65 bytes. */
	big_b64 = b64url(big, 65);
	doc = cxf_doc(json_pack("[o]", cxf_passkey("aWQ", "a.example", "u", big_b64, key)));
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_TOO_LARGE, "credentials[0].userHandle");
	free(doc);
	free(big_b64);
	/* An rp id of 254 bytes. */
	memset(rp, 'r', 254);
	rp[254] = '\0';
	doc = cxf_doc(json_pack("[o]", cxf_passkey("aWQ", rp, "u", "aGk", key)));
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_TOO_LARGE, "credentials[0].rpId");
	free(doc);
	/* Empty fields. */
	doc = cxf_doc(json_pack("[o]", cxf_passkey("", "a.example", "u", "aGk", key)));
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "credentialId: empty");
	free(doc);
	doc = cxf_doc(json_pack("[o]", cxf_passkey("aWQ", "", "u", "aGk", key)));
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "rpId: empty");
	free(doc);
	/* A user name of 1025 bytes; 1024 is fine. */
	{
		char name[1026];
		memset(name, 'n', 1025);
		name[1025] = '\0';
		doc = cxf_doc(json_pack("[o]", cxf_passkey("aWQ", "a.example", name, "aGk", key)));
		CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_TOO_LARGE, "username");
		free(doc);
		name[1024] = '\0';
		doc = cxf_doc(json_pack("[o]", cxf_passkey("aWQ", "a.example", name, "aGk", key)));
		{
			struct passkey_list *l = NULL;
			char err[256] = "";
			CHECK_OK(parse_text(doc, IMPORT_FORMAT_AUTO, &l, err, sizeof(err)));
			passkey_list_free(l);
		}
		free(doc);
	}
	/* A member of the wrong type. */
	{
		json_t *c = cxf_passkey("aWQ", "a.example", "u", "aGk", key);
		json_object_set_new(c, "userHandle", json_integer(5));
		doc = cxf_doc(json_pack("[o]", c));
		CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED,
			      "credentials[0].userHandle: not a string");
		free(doc);
		c = cxf_passkey("aWQ", "a.example", "u", "aGk", key);
		json_object_del(c, "key");
		doc = cxf_doc(json_pack("[o]", c));
		CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED,
			      "credentials[0].key: missing");
		free(doc);
	}
	free(key);
}

static void test_base64url(void)
{
	char *key = fresh_key_b64(PASSKEY_ALG_ES256);
	char *doc;
	struct passkey_list *l = NULL;
	char err[256] = "";

	/* "aWQ" and "aWQ=" are both the two bytes "id"; "aGk=" pads "hi". */
	doc = cxf_doc(json_pack("[o]", cxf_passkey("aWQ=", "a.example", "u", "aGk", key)));
	CHECK_OK(parse_text(doc, IMPORT_FORMAT_AUTO, &l, err, sizeof(err)));
	if (l != NULL && l->count == 1) {
		CHECK_EQ(l->items[0].credential_id_len, 2);
		CHECK_MEM_EQ(l->items[0].credential_id, "id", 2);
	}
	passkey_list_free(l);
	free(doc);
	static const char *bad[] = {"aW+Q", "aW/Q", "aW Q", "aWQ==", "a", "aWQ*", "aW=Q", "aWR="};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		doc = cxf_doc(json_pack("[o]", cxf_passkey(bad[i], "a.example", "u", "aGk", key)));
		CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED,
			      "credentials[0].credentialId: not valid base64url");
		free(doc);
	}
	free(key);
}

static void test_refuse_bad_pem(void)
{
	struct passkey_item *items = make_items(1);
	char *good = NULL, *pem = NULL, *doc;
	json_t *j;
	static const struct {
		const char *from, *to, *needle;
	} edits[] = {
	    {"-----BEGIN PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----", "not a PEM block"},
	    {"-----BEGIN PRIVATE KEY-----", "-----BEGIN ENCRYPTED PRIVATE KEY-----", "encrypted"},
	    {"-----END PRIVATE KEY-----", "-----END PUBLIC KEY-----", "not a PEM block"},
	    {"-----BEGIN PRIVATE KEY-----\n", "-----BEGIN PRIVATE KEY-----", "no line break"},
	    {"\n-----END", "\n*-----END", "not a PEM block"},
	    {"-----END PRIVATE KEY-----\n", "-----END PRIVATE KEY-----\nxx", "text after"},
	    {"-----BEGIN PRIVATE KEY-----\nM", "-----BEGIN PRIVATE KEY-----\n\nM",
	     "not a PEM block"},
	};

	CHECK_OK(export_keepassxc(&items[0], &good));
	j = good ? json_loads(good, 0, NULL) : NULL;
	if (j != NULL)
		pem = strdup(json_string_value(json_object_get(j, "privateKey")));
	CHECK(pem != NULL);
	for (size_t i = 0; pem != NULL && i < sizeof(edits) / sizeof(edits[0]); i++) {
		const char *at = strstr(pem, edits[i].from);
		char *edited = NULL;
		CHECK(at != NULL);
		if (at == NULL)
			continue;
		if (asprintf(&edited, "%.*s%s%s", (int)(at - pem), pem, edits[i].to,
			     at + strlen(edits[i].from)) < 0)
			continue;
		doc = keepassxc_doc(edited, "aWQ");
		CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, 0, "privateKey: ");
		CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, 0, edits[i].needle);
		free(doc);
		free(edited);
	}
	/* A good PEM with CRLF line ends is accepted. */
	if (pem != NULL) {
		char crlf[2048];
		size_t k = 0;
		struct passkey_list *l = NULL;
		char err[256] = "";
		for (const char *p = pem; *p && k + 2 < sizeof(crlf); p++) {
			if (*p == '\n')
				crlf[k++] = '\r';
			crlf[k++] = *p;
		}
		crlf[k] = '\0';
		doc = keepassxc_doc(crlf, "aWQ");
		CHECK_OK(parse_text(doc, IMPORT_FORMAT_AUTO, &l, err, sizeof(err)));
		passkey_list_free(l);
		free(doc);
		/* A corrupted body character. */
		crlf[40] = crlf[40] == 'A' ? 'B' : 'A';
		doc = keepassxc_doc(crlf, "aWQ");
		CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, 0, "privateKey: ");
		free(doc);
	}
	json_decref(j);
	if (good != NULL) {
		sodium_memzero(good, strlen(good));
		free(good);
	}
	free(pem);
	free_items(items, 1);
}

static void test_refuse_one_bad_among_good(void)
{
	char *k1 = fresh_key_b64(PASSKEY_ALG_ES256), *k2 = fresh_key_b64(PASSKEY_ALG_EDDSA);
	char *k3 = fresh_key_b64(PASSKEY_ALG_ES256), *bad = strdup(k3);
	char *doc;

	/* Flip a character in the middle of the DER's base64: still base64, not a key. */
	bad[30] = bad[30] == 'A' ? 'B' : 'A';
	doc = cxf_doc(json_pack("[o, o, o]", cxf_passkey("aWQx", "a.example", "u", "aGk", k1),
				cxf_passkey("aWQy", "a.example", "u", "aGk", bad),
				cxf_passkey("aWQz", "b.example", "u", "aGk", k2)));
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED,
		      "accounts[0].items[1].credentials[0].key: not a PKCS#8 P-256 or Ed25519 "
		      "private key");
	free(doc);
	/* The same three with the good key: accepted, in file order. */
	doc = cxf_doc(json_pack("[o, o, o]", cxf_passkey("aWQx", "a.example", "u", "aGk", k1),
				cxf_passkey("aWQy", "a.example", "u", "aGk", k3),
				cxf_passkey("aWQz", "b.example", "u", "aGk", k2)));
	{
		struct passkey_list *l = NULL;
		char err[256] = "";
		CHECK_OK(parse_text(doc, IMPORT_FORMAT_AUTO, &l, err, sizeof(err)));
		CHECK(l != NULL && l->count == 3);
		if (l != NULL && l->count == 3) {
			CHECK_MEM_EQ(l->items[1].credential_id, "id2", 3);
			CHECK_EQ(l->items[2].alg, PASSKEY_ALG_EDDSA);
			CHECK_EQ(l->items[2].created_at_ms, 1700000002000ull);
		}
		passkey_list_free(l);
	}
	free(doc);
	free(k1);
	free(k2);
	free(k3);
	free(bad);
}

static void test_refuse_duplicate_json_keys(void)
{
	CHECK_REFUSED("{\"version\": {\"major\": 1, \"major\": 1}, \"accounts\": []}",
		      IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "line 1, column");
	CHECK_REFUSED("{\"version\": {\"major\": 1, \"major\": 1}, \"accounts\": []}",
		      IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "duplicate");
}

static void test_refuse_nul(void)
{
	char *key = fresh_key_b64(PASSKEY_ALG_ES256);
	char *doc =
	    cxf_doc(json_pack("[o]", cxf_passkey("aWQ", "a.example", "u\\u0000x", "aGk", key)));
	char *at;
	struct passkey_list *l = NULL;
	char err[256] = "";
	uint8_t raw[] = "{\"relyingParty\": \"a\0b\"}";

	/* cxf_doc escapes the backslash; put the escape back so the JSON holds \u0000. */
	at = doc ? strstr(doc, "u\\\\u0000x") : NULL;
	CHECK(at != NULL);
	if (at != NULL) {
		memmove(at + 1, at + 2, strlen(at + 2) + 1);
		CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "line 1");
	}
	/* A raw NUL byte. */
	CHECK(import_parse(raw, sizeof(raw) - 1, IMPORT_FORMAT_AUTO, &l, NULL, err, sizeof(err)) ==
	      PKS_ERR_MALFORMED);
	CHECK(strstr(err, "line 1") != NULL);
	CHECK(l == NULL);
	free(doc);
	free(key);
}

static void test_refuse_encrypted_bitwarden(void)
{
	CHECK_REFUSED(
	    "{\"encrypted\": true, \"passwordProtected\": true, \"salt\": \"c2FsdA==\", "
	    "\"kdfType\": 0, \"kdfIterations\": 600000, \"encKeyValidation_DO_NOT_EDIT\": "
	    "\"2.x\", \"data\": \"2.y\"}",
	    IMPORT_FORMAT_AUTO, PKS_ERR_UNSUPPORTED, "encrypted");
	CHECK_REFUSED("{\"encrypted\": true, \"items\": []}", IMPORT_FORMAT_BITWARDEN,
		      PKS_ERR_UNSUPPORTED, "Bitwarden export is encrypted");
}

static void test_refuse_wrong_curve(void)
{
	char *p384 = foreign_key_b64("EC", "P-384");
	char *p256 = fresh_key_b64(PASSKEY_ALG_ES256);
	char *ed = fresh_key_b64(PASSKEY_ALG_EDDSA);
	char *doc;

	CHECK(p384 != NULL && p256 != NULL && ed != NULL);
	doc = bitwarden_doc(
	    json_pack("[o]", bitwarden_cred("b64.aWQ", "P-384", p384, "0", "2024-01-01T00:00:00Z")),
	    NULL);
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_UNSUPPORTED,
		      "items[0].login.fido2Credentials[0].keyCurve: only P-256");
	free(doc);
	doc = bitwarden_doc(
	    json_pack("[o]", bitwarden_cred("b64.aWQ", "P-256", p384, "0", "2024-01-01T00:00:00Z")),
	    NULL);
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_UNSUPPORTED,
		      "items[0].login.fido2Credentials[0].keyValue: not a P-256 or Ed25519");
	free(doc);
	doc = bitwarden_doc(
	    json_pack("[o]", bitwarden_cred("b64.aWQ", "P-256", ed, "0", "2024-01-01T00:00:00Z")),
	    NULL);
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "keyValue: not a P-256 key");
	free(doc);
	doc = cxf_doc(json_pack("[o]", cxf_passkey("aWQ", "a.example", "u", "aGk", p384)));
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_UNSUPPORTED,
		      "credentials[0].key: not a P-256 or Ed25519 private key");
	free(doc);
	free(p384);
	free(p256);
	free(ed);
}

static void test_refuse_zero_passkeys(void)
{
	size_t len = 0;
	uint8_t *data = read_sample("cxf-example.json", &len);
	json_t *j = data ? json_loadb((const char *)data, len, 0, NULL) : NULL;
	json_t *items = json_object_get(json_array_get(json_object_get(j, "accounts"), 0), "items");
	char *doc;

	CHECK(items != NULL);
	/* The sample without its passkey item: passwords, cards, notes only. */
	json_array_remove(items, 1);
	doc = json_dumps(j, 0);
	CHECK_REFUSED(doc ? doc : "", IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED,
		      "no passkeys found in this CXF file");
	free(doc);
	CHECK_REFUSED("{\"encrypted\": false, \"items\": [{\"type\": 2, \"notes\": \"x\"}, "
		      "{\"login\": {\"fido2Credentials\": []}}, {\"login\": null}]}",
		      IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "no passkeys found in this Bitwarden");
	CHECK_REFUSED("[]", IMPORT_FORMAT_KEEPASSXC, PKS_ERR_MALFORMED, "no passkeys found");
	json_decref(j);
	free(data);
}

static void test_duplicates(void)
{
	char *k1 = fresh_key_b64(PASSKEY_ALG_ES256), *k2 = fresh_key_b64(PASSKEY_ALG_ES256);
	char *doc;
	struct passkey_list *l = NULL;
	char err[256] = "";

	/* Same (rp, credential) and key: one item. Same id on another rp: two. */
	doc = cxf_doc(json_pack("[o, o, o, o]", cxf_passkey("aWQ", "a.example", "u", "aGk", k1),
				cxf_passkey("aWQ", "b.example", "u", "aGk", k2),
				cxf_passkey("aWQ", "a.example", "v", "aGk", k1),
				cxf_passkey("aWQ=", "a.example", "w", "aGk", k1)));
	CHECK_OK(parse_text(doc, IMPORT_FORMAT_AUTO, &l, err, sizeof(err)));
	CHECK(l != NULL && l->count == 2);
	if (l != NULL && l->count == 2) {
		CHECK_STR_EQ(l->items[0].rp_id, "a.example");
		CHECK_STR_EQ(l->items[0].user_name, "u");
		CHECK_STR_EQ(l->items[1].rp_id, "b.example");
	}
	passkey_list_free(l);
	free(doc);
	/* Same (rp, credential), different keys: refused naming both places. */
	doc = cxf_doc(json_pack("[o, o, o]", cxf_passkey("aWQ", "a.example", "u", "aGk", k1),
				cxf_passkey("aWQ", "b.example", "u", "aGk", k2),
				cxf_passkey("aWQ", "a.example", "u", "aGk", k2)));
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED,
		      "accounts[0].items[0].credentials[0]: the same rp id and credential id as "
		      "accounts[0].items[2].credentials[0] but a different private key");
	free(doc);
	free(k1);
	free(k2);
}

static void test_backup_flags(void)
{
	char *key = fresh_key_b64(PASSKEY_ALG_ES256);
	json_t *c;
	char *doc;
	struct passkey_list *l = NULL;
	char err[256] = "";

	c = cxf_passkey("aWQ", "a.example", "u", "aGk", key);
	json_object_set_new(c, "backupEligible", json_false());
	json_object_set_new(c, "backupState", json_true());
	doc = cxf_doc(json_pack("[o]", c));
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED,
		      "credentials[0]: backupState is true while backupEligible is false");
	free(doc);
	c = cxf_passkey("aWQ", "a.example", "u", "aGk", key);
	json_object_set_new(c, "backupEligible", json_false());
	doc = cxf_doc(json_pack("[o]", c));
	CHECK_OK(parse_text(doc, IMPORT_FORMAT_AUTO, &l, err, sizeof(err)));
	if (l != NULL)
		CHECK(!l->items[0].backup_eligible && !l->items[0].backup_state);
	passkey_list_free(l);
	free(doc);
	c = cxf_passkey("aWQ", "a.example", "u", "aGk", key);
	json_object_set_new(c, "backupState", json_string("yes"));
	doc = cxf_doc(json_pack("[o]", c));
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "backupState: not true or false");
	free(doc);
	free(key);
}

static void test_bitwarden_fields(void)
{
	char *key = fresh_key_b64(PASSKEY_ALG_ES256);
	struct passkey_list *l = NULL;
	char err[256] = "";
	char *doc;
	static const struct {
		const char *date;
		uint64_t ms;
	} dates[] = {
	    {"2024-10-23T18:38:08.617+02:00", 1729701488617ull},
	    {"2024-10-23t16:38:08z", 1729701488000ull},
	    {"2024-10-23T16:38:08.6170000Z", 1729701488617ull},
	    {"2000-02-29T00:00:00-00:30", 951784200000ull},
	    {"1970-01-01T00:00:00Z", 0},
	};
	static const char *bad_dates[] = {"2024-02-30T00:00:00Z",  "2023-02-29T00:00:00Z",
					  "2024-10-23 16:38:08Z",  "2024-10-23T16:38:08",
					  "1969-12-31T23:59:59Z",  "2024-13-01T00:00:00Z",
					  "2024-10-23T16:38:08.Z", "2024-10-23T24:00:00Z"};

	for (size_t i = 0; i < sizeof(dates) / sizeof(dates[0]); i++) {
		doc = bitwarden_doc(
		    json_pack("[o]", bitwarden_cred("b64.aWQ", "P-256", key, "7", dates[i].date)),
		    "my note");
		CHECK_OK(parse_text(doc, IMPORT_FORMAT_AUTO, &l, err, sizeof(err)));
		if (l != NULL && l->count == 1) {
			CHECK_EQ(l->items[0].created_at_ms, dates[i].ms);
			CHECK_STR_EQ(l->items[0].notes, "my note");
			CHECK_STR_EQ(l->items[0].user_name, "bob");
			CHECK_STR_EQ(l->items[0].display_name, "Bob");
			CHECK_MEM_EQ(l->items[0].credential_id, "id", 2);
			CHECK(l->items[0].backup_eligible && l->items[0].backup_state);
		} else {
			CHECK_FAIL_AT("%s: %s", dates[i].date, err);
		}
		passkey_list_free(l);
		l = NULL;
		free(doc);
	}
	for (size_t i = 0; i < sizeof(bad_dates) / sizeof(bad_dates[0]); i++) {
		doc = bitwarden_doc(
		    json_pack("[o]", bitwarden_cred("b64.aWQ", "P-256", key, "0", bad_dates[i])),
		    NULL);
		CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED,
			      "items[0].login.fido2Credentials[0].creationDate");
		free(doc);
	}
	doc = bitwarden_doc(
	    json_pack("[o]", bitwarden_cred("b64.aWQ", "P-256", key, "-1", "2024-01-01T00:00:00Z")),
	    NULL);
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED, "counter: not a decimal");
	free(doc);
	static const char *bad_ids[] = {"a3e15f8b-27c1-42ae-90cf-a615ad87854", "b64.",
					"a3e15f8b27c1-42ae-90cf-a615ad87854ff",
					"g3e15f8b-27c1-42ae-90cf-a615ad87854f", "b64.a+b"};
	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		doc = bitwarden_doc(json_pack("[o]", bitwarden_cred(bad_ids[i], "P-256", key, "0",
								    "2024-01-01T00:00:00Z")),
				    NULL);
		CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_MALFORMED,
			      "fido2Credentials[0].credentialId");
		free(doc);
	}
	free(key);
}

static void test_cxf_notes_and_version(void)
{
	char *key = fresh_key_b64(PASSKEY_ALG_ES256);
	json_t *root, *item;
	char *doc;
	struct passkey_list *l = NULL;
	char err[256] = "";

	doc = cxf_doc(json_pack("[o]", cxf_passkey("aWQ", "a.example", "u", "aGk", key)));
	root = json_loads(doc, 0, NULL);
	free(doc);
	item = json_array_get(
	    json_object_get(json_array_get(json_object_get(root, "accounts"), 0), "items"), 0);
	json_array_insert_new(json_object_get(item, "credentials"), 0,
			      json_pack("{s:s, s:{s:s, s:s}}", "type", "note", "content",
					"fieldType", "string", "value", "the note"));
	doc = json_dumps(root, 0);
	CHECK_OK(parse_text(doc, IMPORT_FORMAT_AUTO, &l, err, sizeof(err)));
	if (l != NULL)
		CHECK_STR_EQ(l->items[0].notes, "the note");
	passkey_list_free(l);
	free(doc);
	json_object_set_new(json_object_get(root, "version"), "major", json_integer(2));
	doc = json_dumps(root, 0);
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_UNSUPPORTED, "version.major");
	free(doc);
	json_decref(root);
	free(key);
}

static void test_too_many_passkeys(void)
{
	char *key = fresh_key_b64(PASSKEY_ALG_ES256);
	json_t *one = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "credentialId", "aWQ",
				"privateKey", key, "relyingParty", "a.example", "url", "u",
				"userHandle", "aGk", "username", "u");
	char *obj = json_dumps(one, JSON_COMPACT);
	size_t olen = strlen(obj), n = IMPORT_MAX_PASSKEYS + 1;
	char *doc = malloc(n * (olen + 1) + 2);
	size_t k = 0;

	doc[k++] = '[';
	for (size_t i = 0; i < n; i++) {
		memcpy(doc + k, obj, olen);
		k += olen;
		doc[k++] = i + 1 < n ? ',' : ']';
	}
	doc[k] = '\0';
	CHECK_REFUSED(doc, IMPORT_FORMAT_AUTO, PKS_ERR_TOO_LARGE, "more than 100000 passkeys");
	free(doc);
	free(obj);
	json_decref(one);
	free(key);
}

CHECK_MAIN({"/import/sample_cxf", test_sample_cxf},
	   {"/import/sample_keepassxc", test_sample_keepassxc},
	   {"/import/sample_bitwarden", test_sample_bitwarden},
	   {"/import/format_names", test_format_names},
	   {"/import/cxf_round_trip", test_cxf_round_trip},
	   {"/import/cxf_export_refuses_bad_items", test_cxf_export_refuses_bad_items},
	   {"/import/keepassxc_round_trip", test_keepassxc_round_trip},
	   {"/import/keepassxc_array", test_keepassxc_array},
	   {"/import/many_passkeys", test_many_passkeys},
	   {"/import/refuse_truncated", test_refuse_truncated},
	   {"/import/refuse_garbage", test_refuse_garbage},
	   {"/import/refuse_deep", test_refuse_deep}, {"/import/refuse_huge", test_refuse_huge},
	   {"/import/refuse_field_limits", test_refuse_field_limits},
	   {"/import/base64url", test_base64url}, {"/import/refuse_bad_pem", test_refuse_bad_pem},
	   {"/import/refuse_one_bad_among_good", test_refuse_one_bad_among_good},
	   {"/import/refuse_duplicate_json_keys", test_refuse_duplicate_json_keys},
	   {"/import/refuse_nul", test_refuse_nul},
	   {"/import/refuse_encrypted_bitwarden", test_refuse_encrypted_bitwarden},
	   {"/import/refuse_wrong_curve", test_refuse_wrong_curve},
	   {"/import/refuse_zero_passkeys", test_refuse_zero_passkeys},
	   {"/import/duplicates", test_duplicates}, {"/import/backup_flags", test_backup_flags},
	   {"/import/bitwarden_fields", test_bitwarden_fields},
	   {"/import/cxf_notes_and_version", test_cxf_notes_and_version},
	   {"/import/too_many_passkeys", test_too_many_passkeys})
