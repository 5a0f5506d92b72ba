/*
 * Writers for passkey export files: FIDO CXF 1.0 and KeePassXC .passkey.
 *
 * The text they return holds private keys: the caller must wipe it
 * (sodium_memzero(text, strlen(text))) before free().
 */
#ifndef PKS_AGENT_EXPORT_H
#define PKS_AGENT_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "agent/passkey.h"

#define EXPORT_CXF_EXPORTER_RP_ID "pksync.invalid"

/*
 * A CXF 1.0 document: header version {1, 0}, exporterRpId
 * EXPORT_CXF_EXPORTER_RP_ID, exporterDisplayName (NULL means "pksync"),
 * timestamp now_unix, one account with one item per passkey (a "passkey"
 * credential, plus a "note" credential when the item has notes, plus our
 * non-standard backupEligible/backupState members so BE=0 survives a round
 * trip). Created times are written in whole seconds. The text is compact
 * JSON (100,000 passkeys stay under the import's 64 MiB limit). n may be 0.
 * *json_out is malloc'd, NUL-terminated, and must be wiped by the caller.
 * PKS_ERR_INVALID when an item lacks a required field.
 */
int export_cxf(const struct passkey_item *items, size_t n, const char *exporter_display_name,
	       uint64_t now_unix, char **json_out);

/*
 * One KeePassXC .passkey object {credentialId, privateKey (PEM PKCS#8),
 * relyingParty, url ("https://" + rp id), userHandle, username} plus our
 * backupEligible/backupState. *json_out is malloc'd and must be wiped.
 */
int export_keepassxc(const struct passkey_item *item, char **json_out);

#endif
