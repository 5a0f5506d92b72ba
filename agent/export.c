/*
 * Passkey export: CXF 1.0 and KeePassXC .passkey, written with jansson.
 *
 * The text is rendered with json_dumpb() into one buffer of the exact size,
 * so no growing copy of the keys is left behind in freed memory; the key
 * strings inside the JSON tree are wiped before the tree is freed.
 */
#include "agent/export.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/import.h"
#include "common/err.h"

#define EXPORT_ID_LEN 16
#define EXPORT_PEM_LINE 64

/* Wipes and drops a JSON string that holds key material. */
static void export_wipe_string(json_t *j)
{
	if (json_is_string(j))
		sodium_memzero((char *)json_string_value(j), json_string_length(j));
}

/* A new JSON string of base64url (no padding) of data; NULL when out of memory. */
static json_t *export_b64url(const uint8_t *data, size_t len)
{
	size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *text = sodium_malloc(cap);
	json_t *j = NULL;

	if (text == NULL)
		return NULL;
	sodium_bin2base64(text, cap, data, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	j = json_string(text);
	sodium_free(text);
	return j;
}

/* A PEM "PRIVATE KEY" block with 64-character lines, as a new JSON string. */
static json_t *export_pem(const uint8_t *der, size_t len)
{
	static const char begin[] = "-----BEGIN PRIVATE KEY-----\n";
	static const char end[] = "-----END PRIVATE KEY-----\n";
	size_t b64_cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	size_t b64_len, cap, k = 0;
	char *b64 = NULL, *pem = NULL;
	json_t *j = NULL;

	b64 = sodium_malloc(b64_cap);
	if (b64 == NULL)
		goto out;
	sodium_bin2base64(b64, b64_cap, der, len, sodium_base64_VARIANT_ORIGINAL);
	b64_len = strlen(b64);
	cap = sizeof(begin) + b64_len + b64_len / EXPORT_PEM_LINE + 1 + sizeof(end);
	pem = sodium_malloc(cap);
	if (pem == NULL)
		goto out;
	memcpy(pem, begin, sizeof(begin) - 1);
	k = sizeof(begin) - 1;
	for (size_t i = 0; i < b64_len; i += EXPORT_PEM_LINE) {
		size_t n = b64_len - i < EXPORT_PEM_LINE ? b64_len - i : EXPORT_PEM_LINE;

		memcpy(pem + k, b64 + i, n);
		k += n;
		pem[k++] = '\n';
	}
	memcpy(pem + k, end, sizeof(end));
	j = json_string(pem);
out:
	if (b64 != NULL)
		sodium_free(b64);
	if (pem != NULL)
		sodium_free(pem);
	return j;
}

/* The fields every export needs, within the limits an import accepts. */
static bool export_item_ok(const struct passkey_item *it)
{
	size_t rp_len;

	if (it->rp_id == NULL || it->credential_id == NULL || it->user_handle == NULL ||
	    it->private_key == NULL)
		return false;
	rp_len = strlen(it->rp_id);
	return rp_len >= 1 && rp_len <= IMPORT_RP_ID_MAX && it->credential_id_len >= 1 &&
	       it->credential_id_len <= IMPORT_CREDENTIAL_ID_MAX && it->user_handle_len >= 1 &&
	       it->user_handle_len <= IMPORT_USER_HANDLE_MAX && it->private_key_len >= 1 &&
	       it->private_key_len <= PASSKEY_PKCS8_MAX &&
	       (it->user_name == NULL || strlen(it->user_name) <= IMPORT_USER_NAME_MAX) &&
	       (it->display_name == NULL || strlen(it->display_name) <= IMPORT_USER_NAME_MAX) &&
	       (it->notes == NULL || strlen(it->notes) <= IMPORT_NOTES_MAX) &&
	       !(it->backup_state && !it->backup_eligible);
}

/* Sets obj[name] = value, taking the reference; PKS_ERR_NOMEM when value is NULL. */
static int export_set(json_t *obj, const char *name, json_t *value)
{
	if (value == NULL)
		return PKS_ERR_NOMEM;
	return json_object_set_new(obj, name, value) == 0 ? PKS_OK : PKS_ERR_NOMEM;
}

static const char *export_or_empty(const char *s)
{
	return s != NULL ? s : "";
}

/* Renders j into an exact-size malloc'd buffer. */
static int export_render(const json_t *j, size_t flags, char **out)
{
	size_t n = json_dumpb(j, NULL, 0, flags), m;
	char *text;

	if (n == 0)
		return PKS_ERR_NOMEM;
	text = malloc(n + 1);
	if (text == NULL)
		return PKS_ERR_NOMEM;
	m = json_dumpb(j, text, n, flags);
	if (m != n) {
		sodium_memzero(text, n);
		free(text);
		return PKS_ERR_INTERNAL;
	}
	text[n] = '\0';
	*out = text;
	return PKS_OK;
}

/* The CXF item id: a hash of rp id and credential id, so re-exports keep it. */
static json_t *export_cxf_item_id(const struct passkey_item *it)
{
	uint8_t id[EXPORT_ID_LEN];
	crypto_generichash_state st;

	crypto_generichash_init(&st, (const unsigned char *)"pksync cxf item", 15, sizeof(id));
	crypto_generichash_update(&st, (const unsigned char *)it->rp_id, strlen(it->rp_id) + 1);
	crypto_generichash_update(&st, it->credential_id, it->credential_id_len);
	crypto_generichash_final(&st, id, sizeof(id));
	return export_b64url(id, sizeof(id));
}

static int export_cxf_item(const struct passkey_item *it, json_t *items, json_t **key_str)
{
	json_t *item = NULL, *creds = NULL, *pk = NULL, *note = NULL;
	char *url = NULL;
	int r = PKS_ERR_NOMEM;

	item = json_object();
	creds = json_array();
	pk = json_object();
	if (item == NULL || creds == NULL || pk == NULL)
		goto out;
	if (asprintf(&url, "https://%s", it->rp_id) < 0) {
		url = NULL;
		goto out;
	}
	if ((r = export_set(pk, "type", json_string("passkey"))) != PKS_OK ||
	    (r = export_set(pk, "credentialId",
			    export_b64url(it->credential_id, it->credential_id_len))) != PKS_OK ||
	    (r = export_set(pk, "rpId", json_string(it->rp_id))) != PKS_OK ||
	    (r = export_set(pk, "username", json_string(export_or_empty(it->user_name)))) !=
		PKS_OK ||
	    (r = export_set(pk, "userDisplayName",
			    json_string(export_or_empty(it->display_name)))) != PKS_OK ||
	    (r = export_set(pk, "userHandle",
			    export_b64url(it->user_handle, it->user_handle_len))) != PKS_OK)
		goto out;
	*key_str = export_b64url(it->private_key, it->private_key_len);
	if ((r = export_set(pk, "key", json_incref(*key_str))) != PKS_OK ||
	    (r = export_set(pk, "backupEligible", json_boolean(it->backup_eligible))) != PKS_OK ||
	    (r = export_set(pk, "backupState", json_boolean(it->backup_state))) != PKS_OK)
		goto out;
	r = json_array_append(creds, pk) == 0 ? PKS_OK : PKS_ERR_NOMEM;
	if (r != PKS_OK)
		goto out;
	if (it->notes != NULL && it->notes[0] != '\0') {
		r = PKS_ERR_NOMEM;
		note = json_pack("{s:s, s:{s:s, s:s}}", "type", "note", "content", "fieldType",
				 "string", "value", it->notes);
		if (note == NULL || json_array_append(creds, note) != 0)
			goto out;
	}
	if ((r = export_set(item, "id", export_cxf_item_id(it))) != PKS_OK)
		goto out;
	/* CXF times are whole seconds. */
	if (it->created_at_ms != 0 &&
	    (r = export_set(item, "creationAt",
			    json_integer((json_int_t)(it->created_at_ms / 1000)))) != PKS_OK)
		goto out;
	if ((r = export_set(item, "title", json_string(it->rp_id))) != PKS_OK ||
	    (r = export_set(item, "scope",
			    json_pack("{s:[s], s:[]}", "urls", url, "androidApps"))) != PKS_OK ||
	    (r = export_set(item, "credentials", json_incref(creds))) != PKS_OK)
		goto out;
	r = json_array_append(items, item) == 0 ? PKS_OK : PKS_ERR_NOMEM;
out:
	free(url);
	json_decref(note);
	json_decref(pk);
	json_decref(creds);
	json_decref(item);
	return r;
}

int export_cxf(const struct passkey_item *items, size_t n, const char *exporter_display_name,
	       uint64_t now_unix, char **json_out)
{
	json_t *root = NULL, *account = NULL, *list = NULL, **keys = NULL;
	uint8_t account_id[EXPORT_ID_LEN];
	int r = PKS_ERR_INVALID;

	if ((items == NULL && n > 0) || json_out == NULL || now_unix > INT64_MAX)
		return PKS_ERR_INVALID;
	for (size_t i = 0; i < n; i++)
		if (!export_item_ok(&items[i]))
			return PKS_ERR_INVALID;
	if (sodium_init() < 0)
		return PKS_ERR_INTERNAL;
	r = PKS_ERR_NOMEM;
	keys = calloc(n ? n : 1, sizeof(*keys));
	list = json_array();
	randombytes_buf(account_id, sizeof(account_id));
	account =
	    json_pack("{s:o, s:s, s:s, s:[]}", "id", export_b64url(account_id, sizeof(account_id)),
		      "username", "", "email", "", "collections");
	root = json_pack("{s:{s:i, s:i}, s:s, s:s, s:I, s:[O]}", "version", "major", 1, "minor", 0,
			 "exporterRpId", EXPORT_CXF_EXPORTER_RP_ID, "exporterDisplayName",
			 exporter_display_name != NULL ? exporter_display_name : "pksync",
			 "timestamp", (json_int_t)now_unix, "accounts", account);
	if (keys == NULL || list == NULL || account == NULL || root == NULL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		r = export_cxf_item(&items[i], list, &keys[i]);
		if (r != PKS_OK)
			goto out;
	}
	r = export_set(account, "items", json_incref(list));
	if (r != PKS_OK)
		goto out;
	/*
	 * Compact: pretty printing would make 100,000 passkeys (the import
	 * limit) larger than the 64 MiB an import accepts.
	 */
	r = export_render(root, JSON_COMPACT, json_out);
out:
	for (size_t i = 0; keys != NULL && i < n; i++) {
		export_wipe_string(keys[i]);
		json_decref(keys[i]);
	}
	free(keys);
	json_decref(list);
	json_decref(account);
	json_decref(root);
	return r;
}

int export_keepassxc(const struct passkey_item *item, char **json_out)
{
	json_t *obj = NULL, *pem = NULL;
	char *url = NULL;
	int r = PKS_ERR_INVALID;

	if (item == NULL || json_out == NULL || !export_item_ok(item))
		return PKS_ERR_INVALID;
	if (sodium_init() < 0)
		return PKS_ERR_INTERNAL;
	r = PKS_ERR_NOMEM;
	if (asprintf(&url, "https://%s", item->rp_id) < 0) {
		url = NULL;
		goto out;
	}
	obj = json_object();
	pem = export_pem(item->private_key, item->private_key_len);
	if (obj == NULL || pem == NULL)
		goto out;
	/* KeePassXC writes its members sorted; ours follow the same order. */
	if ((r = export_set(obj, "backupEligible", json_boolean(item->backup_eligible))) !=
		PKS_OK ||
	    (r = export_set(obj, "backupState", json_boolean(item->backup_state))) != PKS_OK ||
	    (r = export_set(obj, "credentialId",
			    export_b64url(item->credential_id, item->credential_id_len))) !=
		PKS_OK ||
	    (r = export_set(obj, "privateKey", json_incref(pem))) != PKS_OK ||
	    (r = export_set(obj, "relyingParty", json_string(item->rp_id))) != PKS_OK ||
	    (r = export_set(obj, "url", json_string(url))) != PKS_OK ||
	    (r = export_set(obj, "userHandle",
			    export_b64url(item->user_handle, item->user_handle_len))) != PKS_OK ||
	    (r = export_set(obj, "username", json_string(export_or_empty(item->user_name)))) !=
		PKS_OK)
		goto out;
	r = export_render(obj, JSON_INDENT(4), json_out);
out:
	free(url);
	export_wipe_string(pem);
	json_decref(pem);
	json_decref(obj);
	return r;
}
