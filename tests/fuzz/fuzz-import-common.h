/*
 * Checks shared by the import harnesses: what import_parse() promises about
 * a list it returns or a refusal it reports. A broken promise aborts, which
 * libFuzzer and the replay suite both report as a failure.
 */
#ifndef PKS_FUZZ_IMPORT_COMMON_H
#define PKS_FUZZ_IMPORT_COMMON_H

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "agent/export.h"
#include "agent/import.h"
#include "agent/passkey.h"
#include "common/err.h"

static void fuzz_import_check_item(const struct passkey_item *it)
{
	struct passkey_key *k = NULL;
	size_t rp_len = strlen(it->rp_id);

	if (rp_len < 1 || rp_len > IMPORT_RP_ID_MAX || it->credential_id_len < 1 ||
	    it->credential_id_len > IMPORT_CREDENTIAL_ID_MAX || it->user_handle_len < 1 ||
	    it->user_handle_len > IMPORT_USER_HANDLE_MAX || it->user_name == NULL ||
	    strlen(it->user_name) > IMPORT_USER_NAME_MAX ||
	    (it->notes != NULL && strlen(it->notes) > IMPORT_NOTES_MAX) ||
	    (it->backup_state && !it->backup_eligible) || it->public_key == NULL)
		abort();
	if (passkey_key_from_pkcs8(it->private_key, it->private_key_len, &k) != PKS_OK ||
	    passkey_key_alg(k) != it->alg)
		abort();
	passkey_key_free(k);
}

/* Parses data as fmt; on success checks the list and that a CXF re-export reads back equal. */
static void fuzz_import_run(const uint8_t *data, size_t size, enum import_format fmt)
{
	struct passkey_list *l = NULL, *again = NULL;
	enum import_format det = IMPORT_FORMAT_AUTO;
	char err[512], err2[512];
	char *text = NULL;

	memset(err, 0x55, sizeof(err));
	if (import_parse(data, size, fmt, &l, &det, err, sizeof(err)) != PKS_OK) {
		/* A refusal always says why, in a terminated sentence. */
		if (l != NULL || memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0')
			abort();
		return;
	}
	if (l == NULL || l->count == 0 || (fmt != IMPORT_FORMAT_AUTO && det != fmt))
		abort();
	for (size_t i = 0; i < l->count; i++)
		fuzz_import_check_item(&l->items[i]);
	if (export_cxf(l->items, l->count, "fuzz", 1, &text) != PKS_OK)
		abort();
	if (import_parse((const uint8_t *)text, strlen(text), IMPORT_FORMAT_CXF, &again, NULL, err2,
			 sizeof(err2)) != PKS_OK ||
	    again->count != l->count)
		abort();
	for (size_t i = 0; i < l->count; i++) {
		const struct passkey_item *a = &l->items[i], *b = &again->items[i];
		if (strcmp(a->rp_id, b->rp_id) != 0 || a->private_key_len != b->private_key_len ||
		    memcmp(a->private_key, b->private_key, a->private_key_len) != 0 ||
		    a->backup_eligible != b->backup_eligible || a->backup_state != b->backup_state)
			abort();
	}
	sodium_memzero(text, strlen(text));
	free(text);
	passkey_list_free(again);
	passkey_list_free(l);
}

#endif
