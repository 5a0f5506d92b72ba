/*
 * The vault's insides, shared by vault.c (local use) and vault-sync.c (the
 * replica a sync session reads and writes, pairing, revocation). Nothing
 * outside those two files includes this.
 */
#ifndef PKS_AGENT_VAULT_INTERNAL_H
#define PKS_AGENT_VAULT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "agent/keys.h"
#include "agent/store.h"
#include "agent/vault.h"
#include "proto/hlc.h"
#include "proto/membership.h"
#include "proto/record.h"

#define VAULT_MAX_SKEW_MS (10u * 60u * 1000u)

/* Everything secret, in one sodium_malloc'd block that is wiped on lock. */
struct vault_secrets {
	uint8_t sign_pk[crypto_sign_PUBLICKEYBYTES];
	uint8_t sign_sk[crypto_sign_SECRETKEYBYTES];
	uint8_t dh_pk[crypto_scalarmult_BYTES];
	uint8_t dh_sk[crypto_scalarmult_SCALARBYTES];
	uint8_t network_key[32];
	uint8_t id_key[32];
	/* The current epoch's key: new versions are sealed with it. */
	uint8_t data_key[32];
	uint32_t epoch;
	/* Every epoch key known, to open versions of any epoch. */
	size_t n_epochs;
	struct {
		uint32_t epoch;
		uint8_t key[32];
	} epochs[VAULT_EPOCHS_MAX];
};

/* Highest contiguous seq held per author (the sync vector), sorted by author. */
struct vault_author {
	uint8_t id[DEVICE_ID_LEN];
	uint64_t seq;
	/* Strong remove hides this author's versions above cutoff: they stay
	   stored (and are synced on) but are not folded into the records, so
	   nothing is lost if the revoke later stops counting. */
	bool cut;
	uint64_t cutoff;
};

struct vault_entry {
	uint8_t id[RECORD_ID_LEN];
	struct record_state *st;
};

struct vault {
	struct pks_logger log;
	char *db_path;
	char *key_file;
	bool fast_kdf;
	struct store *store;
	bool initialized;
	bool has_passphrase;
	uint8_t device_id[DEVICE_ID_LEN];
	uint8_t vault_id[VAULT_ID_LEN];
	uint64_t created_at_ms;
	char device_name[VAULT_NAME_MAX + 1];
	/* NULL while locked. */
	struct vault_secrets *sec;
	struct keys_kek *kek;
	struct membership *memb;
	struct vault_author *authors;
	size_t n_authors;
	size_t cap_authors;
	size_t memb_persisted;
	/* Received versions skipped as inadmissible, since start. */
	uint64_t skipped;
	/* Stored versions hidden by strong remove at the last reload. */
	uint64_t hidden;
	struct hlc_clock clock;
	uint64_t seq;
	/* Open addressing on the record id; ids are keyed hashes, so already uniform. */
	struct vault_entry *table;
	size_t table_cap;
	size_t table_count;
	/* XOR of every state's digest, kept current (see vault_state_apply). */
	uint8_t digest[32];
	/* Live and trashed records, kept current the same way (status reads them). */
	size_t n_live, n_trash;
};

uint64_t vault_wall_ms(void);
struct vault_entry *vault_lookup(const struct vault *v, const uint8_t id[RECORD_ID_LEN]);
int vault_state_for(struct vault *v, const uint8_t id[RECORD_ID_LEN], struct record_state **out);
const uint8_t *vault_epoch_key(const struct vault *v, uint32_t epoch);
int vault_epoch_save(struct vault *v, uint32_t epoch, const uint8_t key[32]);
uint64_t vault_author_seq(const struct vault *v, const uint8_t id[DEVICE_ID_LEN]);
int vault_author_set(struct vault *v, const uint8_t id[DEVICE_ID_LEN], uint64_t seq);
/* Marks id's versions from seq on as hidden (not merged), if not already. */
void vault_author_hide_from(struct vault *v, const uint8_t id[DEVICE_ID_LEN], uint64_t seq);
/* The largest seq <= held of id's versions that membership admits. */
uint64_t vault_admissible_prefix(const struct vault *v, const uint8_t id[DEVICE_ID_LEN],
				 uint64_t held);
/* Checks admissibility, finds the author's key and the epoch key, opens. */
int vault_open_sealed(struct vault *v, const uint8_t *blob, size_t len,
		      struct record_sealed_header *h, struct record_version **out);
/* Folds a version into its record's state (merge-rule rejections are logged, not errors). */
int vault_merge_version(struct vault *v, struct record_version *ver);
int vault_reload(struct vault *v);
int vault_memb_persist(struct vault *v);

#endif
