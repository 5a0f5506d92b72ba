/*
 * The vault as one device sees it: the device identity, the vault keys, and
 * the merged state of every record, kept in memory while unlocked and
 * persisted as sealed record versions in the store. Every change is a signed
 * record version applied through the merge rules, so local edits and (later)
 * synced ones take the same path.
 */
#ifndef PKS_AGENT_VAULT_H
#define PKS_AGENT_VAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/import.h"
#include "common/log.h"
#include "proto/record.h"

struct vault;

struct vault_options {
	const char *state_dir;
	const char *db_path;
	const char *key_file;
	struct pks_logger log;
	/* Cheap Argon2id parameters, for tests only (PKSYNC_TEST_FAST_KDF). */
	bool fast_kdf;
};

#define VAULT_NAME_MAX 64
#define VAULT_ID_LEN 16

/*
 * Opens the store in the state dir. A vault created with --no-passphrase is
 * unlocked at once from its key file; a passphrase vault starts locked.
 */
int vault_open(const struct vault_options *opt, struct vault **out);
void vault_free(struct vault *v);

bool vault_is_initialized(const struct vault *v);
bool vault_is_locked(const struct vault *v);
bool vault_has_passphrase(const struct vault *v);

/*
 * Creates the device identity and a new vault. passphrase NULL means key-file
 * mode. PKS_ERR_EXISTS when already initialised.
 */
int vault_init(struct vault *v, const char *name, const char *passphrase, size_t passphrase_len);
/* PKS_ERR_PASSPHRASE for a wrong passphrase; PKS_OK when already unlocked. */
int vault_unlock(struct vault *v, const char *passphrase, size_t passphrase_len);
/* Wipes every key and record from memory. Key-file vaults cannot be locked. */
int vault_lock(struct vault *v);

/* Identity, available whenever initialised (names only while unlocked). */
void vault_device_id(const struct vault *v, uint8_t out[DEVICE_ID_LEN]);
void vault_vault_id(const struct vault *v, uint8_t out[VAULT_ID_LEN]);
const char *vault_device_name(const struct vault *v);
uint64_t vault_created_at_ms(const struct vault *v);

/* Visible records and records in the trash; a digest of the whole merged state. */
void vault_counts(const struct vault *v, size_t *live, size_t *trash);
void vault_digest(const struct vault *v, uint8_t out[32]);

/* Calls fn for every record that has been created and not purged. */
typedef int (*vault_record_fn)(void *user_data, const struct record_state *st);
int vault_records_foreach(const struct vault *v, vault_record_fn fn, void *user_data);

/*
 * Finds a record by a unique hex prefix of its id (>= 4 characters).
 * PKS_ERR_NOT_FOUND, PKS_ERR_AMBIGUOUS or PKS_ERR_INVALID (not hex / too short).
 */
int vault_find(const struct vault *v, const char *id_prefix, const struct record_state **out);

/* A fresh ES256 passkey, BE=1 BS=1, with random credential id and user handle. */
int vault_create(struct vault *v, const char *rp_id, const char *user_name,
		 const char *display_name, const struct record_state **out);

/* Each of user_name, display_name, notes may be NULL (unchanged). */
int vault_edit(struct vault *v, const struct record_state *st, const char *user_name,
	       const char *display_name, const char *notes);
int vault_delete(struct vault *v, const struct record_state *st);
int vault_restore(struct vault *v, const struct record_state *st);

struct vault_import_stats {
	size_t total;
	size_t added;
	size_t updated;
	size_t unchanged;
};
typedef void (*vault_progress_fn)(void *user_data, size_t done, size_t total);
/*
 * Imports every item in one transaction: all or nothing. A credential already
 * in the vault with a different key refuses the whole import, with a sentence
 * in err naming the item.
 */
int vault_import(struct vault *v, const struct passkey_list *list, vault_progress_fn progress,
		 void *progress_data, struct vault_import_stats *stats, char *err, size_t err_len);

/*
 * Signs a WebAuthn assertion with the record's key: flags UP, plus BE/BS as
 * recorded; sign count 0. Outputs are malloc'd.
 */
int vault_assert(struct vault *v, const struct record_state *st, const uint8_t client_data_hash[32],
		 uint8_t **auth_data, size_t *auth_data_len, uint8_t **signature,
		 size_t *signature_len);

/*
 * The records to export as passkey items (not trashed; rp_id or one record
 * may narrow it). Free with passkey_list_free().
 */
int vault_export_items(const struct vault *v, const char *rp_id, const struct record_state *only,
		       struct passkey_list **out);

/* Bytes of sealed versions in the store, for the benchmark. */
int vault_store_stats(struct vault *v, uint64_t *versions, uint64_t *bytes);

#endif
