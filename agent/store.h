/*
 * The agent's SQLite store. It holds only sealed or wrapped blobs and public
 * identifiers: no relying-party id, user name, credential id or key ever
 * reaches it in plaintext. The database runs in WAL mode with
 * secure_delete=ON and temp_store=MEMORY, and its schema is versioned with
 * PRAGMA user_version and migrated forward on open.
 */
#ifndef PKS_AGENT_STORE_H
#define PKS_AGENT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/log.h"

struct store;

#define STORE_META_VALUE_MAX (1024 * 1024)
#define STORE_BLOB_MAX (64 * 1024)

/*
 * Opens (creating if needed, mode 0600) the database at path and migrates it
 * to the current schema. PKS_ERR_UNSUPPORTED when the file has a newer schema
 * than this program knows, PKS_ERR_DB for SQLite failures.
 */
int store_open(const char *path, const struct pks_logger *log, struct store **out);
void store_free(struct store *s);

/* The schema version this program writes. */
int store_schema_version(void);

/* Explicit transactions; store_rollback() is safe to call in any state. */
int store_begin(struct store *s);
/*
 * Like store_begin(), for a transaction whose content can be fetched again
 * (record versions received from a peer): its commit is not flushed to disk
 * on its own (WAL, synchronous NORMAL). A crash of the agent loses nothing
 * committed; a power loss may roll back such transactions together with
 * the vector entries they advanced, so the peer sends them again. The next
 * store_begin() transaction flushes everything before it.
 */
int store_begin_refetchable(struct store *s);
int store_commit(struct store *s);
void store_rollback(struct store *s);

/*
 * Small named values (wrapped identity, vault keys, KEK parameters). get gives
 * a malloc'd copy the caller frees (and wipes if it matters); PKS_ERR_NOT_FOUND
 * when absent.
 */
int store_meta_get(struct store *s, const char *key, uint8_t **val, size_t *len);
int store_meta_put(struct store *s, const char *key, const uint8_t *val, size_t len);
int store_meta_delete(struct store *s, const char *key);

/*
 * Sealed record versions, keyed by (author, seq). Putting the same blob twice
 * is a no-op; a different blob for an existing (author, seq) is
 * PKS_ERR_EXISTS, since versions are immutable.
 */
int store_version_put(struct store *s, const uint8_t record_id[16], const uint8_t author[32],
		      uint64_t seq, uint32_t epoch, const uint8_t *blob, size_t len);
int store_version_delete(struct store *s, const uint8_t author[32], uint64_t seq);

typedef int (*store_version_fn)(void *user_data, const uint8_t record_id[16],
				const uint8_t author[32], uint64_t seq, uint32_t epoch,
				const uint8_t *blob, size_t len);
/* Calls fn for every version; a non-zero return stops the walk and is returned. */
int store_versions_foreach(struct store *s, store_version_fn fn, void *user_data);
/* The highest seq stored for author, 0 when none. */
int store_version_max_seq(struct store *s, const uint8_t author[32], uint64_t *seq);
/* Number of stored versions and the total size of their blobs. */
int store_version_stats(struct store *s, uint64_t *count, uint64_t *bytes);

/* Wrapped data keys by epoch. */
int store_epoch_put(struct store *s, uint32_t epoch, const uint8_t *wrapped, size_t len);
int store_epoch_get(struct store *s, uint32_t epoch, uint8_t **wrapped, size_t *len);
typedef int (*store_epoch_fn)(void *user_data, uint32_t epoch, const uint8_t *wrapped, size_t len);
int store_epochs_foreach(struct store *s, store_epoch_fn fn, void *user_data);

/*
 * The author's versions with seq > after_seq, in seq order; fn may return 1
 * to stop early (returned as is).
 */
int store_versions_after(struct store *s, const uint8_t author[32], uint64_t after_seq,
			 store_version_fn fn, void *user_data);
/* (author, highest seq) for every author, ordered by author bytes. */
typedef int (*store_vector_fn)(void *user_data, const uint8_t author[32], uint64_t seq);
int store_version_vector(struct store *s, store_vector_fn fn, void *user_data);
/* Deletes the author's versions above seq (strong remove of a revoked device). */
int store_versions_delete_above(struct store *s, const uint8_t author[32], uint64_t seq,
				uint64_t *deleted);

/* Membership operations, wrapped, replayed in the order they were first stored. */
typedef int (*store_blob_fn)(void *user_data, const uint8_t *blob, size_t len);
int store_memb_put(struct store *s, const uint8_t id[32], const uint8_t *wrapped, size_t len);
int store_memb_foreach(struct store *s, store_blob_fn fn, void *user_data);

/* Peer addresses remembered from pairing ("ADDR:PORT"). */
typedef int (*store_text_fn)(void *user_data, const char *text);
int store_peer_put(struct store *s, const char *addr, uint64_t now_ms);
int store_peers_foreach(struct store *s, store_text_fn fn, void *user_data);

/* Forces a WAL checkpoint (used before measuring bytes on disk). */
int store_checkpoint(struct store *s);

#endif
