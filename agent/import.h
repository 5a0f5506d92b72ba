/*
 * Parsers for passkey export files: FIDO CXF 1.x, KeePassXC .passkey and
 * Bitwarden's unencrypted JSON export. A file is accepted whole or refused
 * whole; the result is a plain struct passkey_list (agent/passkey.h).
 */
#ifndef PKS_AGENT_IMPORT_H
#define PKS_AGENT_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "agent/passkey.h"

enum import_format {
	IMPORT_FORMAT_AUTO,
	IMPORT_FORMAT_CXF,
	IMPORT_FORMAT_KEEPASSXC,
	IMPORT_FORMAT_BITWARDEN,
};

/* Hard limits; a file beyond any of them is refused. */
#define IMPORT_MAX_INPUT (64u * 1024 * 1024)
#define IMPORT_MAX_PASSKEYS 100000
#define IMPORT_MAX_DEPTH 64
#define IMPORT_RP_ID_MAX 253
#define IMPORT_CREDENTIAL_ID_MAX 1023
#define IMPORT_USER_HANDLE_MAX 64
#define IMPORT_USER_NAME_MAX 1024
#define IMPORT_NOTES_MAX 8192
#define IMPORT_SOURCE_MAX 256

/*
 * Parses data (len bytes, not NUL-terminated, at most IMPORT_MAX_INPUT) in
 * format fmt, or detects it when fmt is IMPORT_FORMAT_AUTO.
 *
 * On success *out is a new list (free with passkey_list_free()) with at least
 * one item, (rp id, credential id) pairs unique, private keys normalised
 * PKCS#8 and public keys derived from them; *detected (may be NULL) is the
 * format read. Sign counters are not kept (a non-zero Bitwarden counter is
 * accepted and dropped: synced passkeys count 0). BE/BS default to 1/1 unless
 * a CXF passkey or KeePassXC object carries our "backupEligible" /
 * "backupState" booleans.
 *
 * On failure nothing is written but err: one sentence naming the place
 * ("accounts[0].items[1].credentials[0].key: ..." or "line 3, column 7: JSON
 * syntax error: ..."). Errors: PKS_ERR_TOO_LARGE (a size or count limit),
 * PKS_ERR_MALFORMED (syntax, a missing or invalid member, zero passkeys,
 * conflicting duplicates), PKS_ERR_UNSUPPORTED (encrypted export, another
 * key algorithm, CXF major version != 1), PKS_ERR_NOMEM.
 */
int import_parse(const uint8_t *data, size_t len, enum import_format fmt, struct passkey_list **out,
		 enum import_format *detected, char *err, size_t err_len);

/* "auto", "cxf", "keepassxc", "bitwarden". */
const char *import_format_name(enum import_format fmt);

/* The reverse of import_format_name(); PKS_ERR_INVALID for unknown names. */
int import_format_from_name(const char *name, enum import_format *out);

#endif
