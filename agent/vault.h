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
#include "proto/membership.h"
#include "proto/record.h"
#include "proto/sync.h"

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
/* Data-key epochs one vault may have (one per revocation). */
#define VAULT_EPOCHS_MAX 256

/*
 * Opens the store in the state dir. A vault created with --no-passphrase is
 * unlocked at once from its key file; a passphrase vault starts locked.
 */
int vault_open(const struct vault_options *opt, struct vault **out);
void vault_free(struct vault *v);

bool vault_is_initialized(const struct vault *v);
bool vault_is_locked(const struct vault *v);
bool vault_has_passphrase(const struct vault *v);

/* A device identity made before it belongs to a vault (for join); sodium_malloc'd. */
struct vault_identity {
	uint8_t sign_pk[32];
	uint8_t sign_sk[64];
	uint8_t dh_pk[32];
	uint8_t dh_sk[32];
};
int vault_identity_new(struct vault_identity **out);
void vault_identity_free(struct vault_identity *id);

struct vault_blob {
	const uint8_t *data;
	size_t len;
};

/* What a sponsor hands a joining device: the vault's keys and its membership ops. */
struct vault_join_bundle {
	uint8_t vault_id[VAULT_ID_LEN];
	uint8_t network_key[32];
	uint8_t id_key[32];
	size_t n_epochs;
	struct {
		uint32_t epoch;
		uint8_t key[32];
	} epochs[VAULT_EPOCHS_MAX];
	/* Not owned by the bundle. */
	size_t n_ops;
	const struct vault_blob *ops;
};
/* Sponsor side: the keys (ops not filled); sodium_malloc'd. */
int vault_join_bundle_new(struct vault *v, struct vault_join_bundle **out);
void vault_join_bundle_free(struct vault_join_bundle *b);

/*
 * Writes a device identity and a vault in one transaction: a new vault with
 * ident and bundle NULL (vault_init), or joining the bundle's vault with the
 * identity used during pairing. PKS_ERR_REJECTED when the bundle's
 * membership does not list this device.
 */
int vault_create_identity(struct vault *v, const char *name, const char *passphrase,
			  size_t passphrase_len, const struct vault_identity *ident,
			  const struct vault_join_bundle *bundle);

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

/*
 * A passkey made through the authenticator: alg RECORD_ALG_ES256 or
 * RECORD_ALG_EDDSA, the relying party's user handle (1..64 bytes), BE=1 BS=1,
 * a random credential id, source "pksync". A live record of the
 * same rp id and user handle goes to the trash (CTAP: a new discoverable
 * credential for an account replaces the old one).
 */
int vault_create_passkey(struct vault *v, const char *rp_id, const uint8_t *user_handle,
			 size_t user_handle_len, const char *user_name, const char *display_name,
			 int alg, const struct record_state **out);

/* A record by its full id; PKS_ERR_NOT_FOUND. The state is borrowed until
   the next change of the vault. */
int vault_get(const struct vault *v, const uint8_t id[RECORD_ID_LEN],
	      const struct record_state **out);

/*
 * Checks a passphrase against the vault's (user verification), without
 * changing anything: PKS_OK, PKS_ERR_PASSPHRASE when wrong, PKS_ERR_STATE
 * when the vault has no passphrase.
 */
int vault_check_passphrase(const struct vault *v, const char *passphrase, size_t len);

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

/* ---- membership, pairing, sync ---- */

/* NULL while locked. */
const struct membership *vault_membership(const struct vault *v);
/* No member session is open any more: drop membership operations still
   waiting for their parents (any signer can fill that set; peers resend what
   we lack next time). */
void vault_sync_idle(struct vault *v);
/* The key of discovery hints (proto/hint.h), from the network key. PKS_ERR_LOCKED. */
int vault_hint_key(const struct vault *v, uint8_t out[32]);
/* The psk of member sessions, from the network key. PKS_ERR_LOCKED. */
int vault_member_psk(const struct vault *v, uint8_t out[32]);
/* This device's X25519 key pair (Noise static); NULL while locked. */
const uint8_t *vault_dh_pk(const struct vault *v);
const uint8_t *vault_dh_sk(const struct vault *v);
/* Adds a device (an ADD op by this device, stored). */
int vault_add_device(struct vault *v, const uint8_t sign_pk[32], const uint8_t dh_pk[32],
		     const char *name, uint8_t device_id[DEVICE_ID_LEN]);
/*
 * Revokes a device: a REVOKE whose cutoff is the revoked device's highest
 * seq held here, then a ROTATE to a fresh data key sealed to the remaining
 * members, in one transaction.
 */
int vault_revoke(struct vault *v, const uint8_t device_id[DEVICE_ID_LEN]);
/* A device by unique hex prefix of its id (>= 4) or exact name. */
int vault_find_device(const struct vault *v, const char *what, struct membership_device *out);
/* Peer addresses remembered from pairing. */
int vault_remember_peer(struct vault *v, const char *addr);
int vault_peers_foreach(struct vault *v, int (*fn)(void *user, const char *addr), void *user);
/* Received versions skipped as inadmissible since start. */
uint64_t vault_skipped(const struct vault *v);
/* The replica sync sessions use; the replica pointer is the struct vault. */
extern const struct sync_replica_ops vault_replica_ops;

/* Bytes of sealed versions in the store, for the benchmark. */
int vault_store_stats(struct vault *v, uint64_t *versions, uint64_t *bytes);

#endif
