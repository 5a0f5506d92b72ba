#include "agent/store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"

struct store {
	sqlite3 *db;
	struct pks_logger log;
	int in_tx;
};

/*
 * Each entry migrates the schema from version i to i + 1. Entries are never
 * edited once released: a change is a new entry.
 */
static const char *const store_migrations[] = {
    /* 0 -> 1: the first schema. */
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
    "CREATE TABLE epochs (epoch INTEGER PRIMARY KEY, wrapped BLOB NOT NULL);"
    "CREATE TABLE versions ("
    "  author BLOB NOT NULL CHECK (length(author) = 32),"
    "  seq INTEGER NOT NULL CHECK (seq > 0),"
    "  record_id BLOB NOT NULL CHECK (length(record_id) = 16),"
    "  epoch INTEGER NOT NULL,"
    "  blob BLOB NOT NULL,"
    "  PRIMARY KEY (author, seq)) WITHOUT ROWID;"
    "CREATE INDEX versions_by_record ON versions (record_id);",
    /* 1 -> 2: membership operations (wrapped, in the order applied) and remembered peers. */
    "CREATE TABLE memb_ops ("
    "  id BLOB PRIMARY KEY CHECK (length(id) = 32),"
    "  pos INTEGER NOT NULL UNIQUE,"
    "  wrapped BLOB NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE peers (addr TEXT PRIMARY KEY, added_at INTEGER NOT NULL) WITHOUT ROWID;",
};

#define STORE_SCHEMA_VERSION ((int)(sizeof(store_migrations) / sizeof(store_migrations[0])))

int store_schema_version(void)
{
	return STORE_SCHEMA_VERSION;
}

static int store_fail(struct store *s, const char *what)
{
	pks_log(&s->log, PKS_LOG_ERROR, "store: %s: %s", what, sqlite3_errmsg(s->db));
	return PKS_ERR_DB;
}

static int store_exec(struct store *s, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		pks_log(&s->log, PKS_LOG_ERROR, "store: %s", msg ? msg : "exec failed");
		sqlite3_free(msg);
		return PKS_ERR_DB;
	}
	return PKS_OK;
}

static int store_user_version(struct store *s, int *out)
{
	sqlite3_stmt *st = NULL;
	int r = PKS_ERR_DB;

	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		goto out;
	if (sqlite3_step(st) != SQLITE_ROW)
		goto out;
	*out = sqlite3_column_int(st, 0);
	r = PKS_OK;
out:
	sqlite3_finalize(st);
	return r;
}

static int store_migrate(struct store *s)
{
	int version = 0;
	int r = store_user_version(s, &version);
	char sql[64];

	if (r != PKS_OK)
		return store_fail(s, "reading schema version");
	if (version > STORE_SCHEMA_VERSION) {
		pks_log(&s->log, PKS_LOG_ERROR,
			"store: schema version %d is newer than this program's %d", version,
			STORE_SCHEMA_VERSION);
		return PKS_ERR_UNSUPPORTED;
	}
	for (; version < STORE_SCHEMA_VERSION; version++) {
		/* Each step is one transaction: a crash leaves the old or the new schema. */
		r = store_exec(s, "BEGIN IMMEDIATE");
		if (r != PKS_OK)
			return r;
		r = store_exec(s, store_migrations[version]);
		if (r == PKS_OK) {
			snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version + 1);
			r = store_exec(s, sql);
		}
		if (r != PKS_OK) {
			store_exec(s, "ROLLBACK");
			return r;
		}
		r = store_exec(s, "COMMIT");
		if (r != PKS_OK)
			return r;
		pks_log(&s->log, PKS_LOG_INFO, "store: migrated schema to version %d", version + 1);
	}
	return PKS_OK;
}

int store_open(const char *path, const struct pks_logger *log, struct store **out)
{
	struct store *s = NULL;
	int r = PKS_ERR_INTERNAL;
	int fd;

	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return PKS_ERR_NOMEM;
	if (log != NULL)
		s->log = *log;
	/* Create the file ourselves so it is 0600 whatever the umask. */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		r = PKS_ERR_IO;
		pks_log(&s->log, PKS_LOG_ERROR, "store: cannot open the database file");
		goto out;
	}
	close(fd);
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		r = store_fail(s, "open");
		goto out;
	}
	sqlite3_busy_timeout(s->db, 5000);
	r = store_exec(s, "PRAGMA journal_mode = WAL;"
			  "PRAGMA synchronous = FULL;"
			  "PRAGMA secure_delete = ON;"
			  "PRAGMA temp_store = MEMORY;"
			  "PRAGMA foreign_keys = ON;");
	if (r != PKS_OK)
		goto out;
	r = store_migrate(s);
	if (r != PKS_OK)
		goto out;
	*out = s;
	s = NULL;
	r = PKS_OK;
out:
	store_free(s);
	return r;
}

void store_free(struct store *s)
{
	if (s == NULL)
		return;
	if (s->in_tx)
		store_rollback(s);
	sqlite3_close_v2(s->db);
	free(s);
}

int store_begin_refetchable(struct store *s)
{
	int r;

	if (s->in_tx)
		return PKS_ERR_STATE;
	r = store_exec(s, "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE");
	if (r == PKS_OK)
		s->in_tx = 1;
	return r;
}

int store_begin(struct store *s)
{
	int r;

	if (s->in_tx)
		return PKS_ERR_STATE;
	r = store_exec(s, "PRAGMA synchronous = FULL; BEGIN IMMEDIATE");
	if (r == PKS_OK)
		s->in_tx = 1;
	return r;
}

int store_commit(struct store *s)
{
	int r;

	if (!s->in_tx)
		return PKS_ERR_STATE;
	r = store_exec(s, "COMMIT");
	if (r != PKS_OK) {
		store_rollback(s);
		return r;
	}
	s->in_tx = 0;
	return PKS_OK;
}

void store_rollback(struct store *s)
{
	if (s == NULL || !s->in_tx)
		return;
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	s->in_tx = 0;
}

static int store_prepare(struct store *s, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
		return store_fail(s, "prepare");
	return PKS_OK;
}

static int store_copy_blob(sqlite3_stmt *st, int col, uint8_t **val, size_t *len)
{
	const void *p = sqlite3_column_blob(st, col);
	size_t n = (size_t)sqlite3_column_bytes(st, col);
	uint8_t *copy = malloc(n ? n : 1);

	if (copy == NULL)
		return PKS_ERR_NOMEM;
	if (n > 0)
		memcpy(copy, p, n);
	*val = copy;
	*len = n;
	return PKS_OK;
}

int store_meta_get(struct store *s, const char *key, uint8_t **val, size_t *len)
{
	sqlite3_stmt *st = NULL;
	int r = store_prepare(s, "SELECT value FROM meta WHERE key = ?1", &st);
	int rc;

	if (r != PKS_OK)
		goto out;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		r = PKS_ERR_NOT_FOUND;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		r = store_fail(s, "meta get");
		goto out;
	}
	r = store_copy_blob(st, 0, val, len);
out:
	sqlite3_finalize(st);
	return r;
}

int store_meta_put(struct store *s, const char *key, const uint8_t *val, size_t len)
{
	sqlite3_stmt *st = NULL;
	int r;

	if (len > STORE_META_VALUE_MAX)
		return PKS_ERR_TOO_LARGE;
	r = store_prepare(s, "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", &st);
	if (r != PKS_OK)
		goto out;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, len ? (const void *)val : "", (int)len, SQLITE_STATIC);
	r = sqlite3_step(st) == SQLITE_DONE ? PKS_OK : store_fail(s, "meta put");
out:
	sqlite3_finalize(st);
	return r;
}

int store_meta_delete(struct store *s, const char *key)
{
	sqlite3_stmt *st = NULL;
	int r = store_prepare(s, "DELETE FROM meta WHERE key = ?1", &st);

	if (r != PKS_OK)
		goto out;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	r = sqlite3_step(st) == SQLITE_DONE ? PKS_OK : store_fail(s, "meta delete");
out:
	sqlite3_finalize(st);
	return r;
}

int store_version_put(struct store *s, const uint8_t record_id[16], const uint8_t author[32],
		      uint64_t seq, uint32_t epoch, const uint8_t *blob, size_t len)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if (len == 0 || len > STORE_BLOB_MAX || seq == 0 || seq > INT64_MAX)
		return PKS_ERR_INVALID;
	r = store_prepare(s,
			  "INSERT INTO versions (author, seq, record_id, epoch, blob) "
			  "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (author, seq) DO NOTHING",
			  &st);
	if (r != PKS_OK)
		goto out;
	sqlite3_bind_blob(st, 1, author, 32, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
	sqlite3_bind_blob(st, 3, record_id, 16, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, epoch);
	sqlite3_bind_blob(st, 5, blob, (int)len, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		r = store_fail(s, "version put");
		goto out;
	}
	if (sqlite3_changes(s->db) == 0) {
		/* Already there: fine if it is the very same version. */
		sqlite3_finalize(st);
		st = NULL;
		r = store_prepare(s, "SELECT blob FROM versions WHERE author = ?1 AND seq = ?2",
				  &st);
		if (r != PKS_OK)
			goto out;
		sqlite3_bind_blob(st, 1, author, 32, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
		if (sqlite3_step(st) != SQLITE_ROW) {
			r = store_fail(s, "version lookup");
			goto out;
		}
		if ((size_t)sqlite3_column_bytes(st, 0) != len ||
		    memcmp(sqlite3_column_blob(st, 0), blob, len) != 0) {
			r = PKS_ERR_EXISTS;
			goto out;
		}
	}
	r = PKS_OK;
out:
	sqlite3_finalize(st);
	return r;
}

int store_version_delete(struct store *s, const uint8_t author[32], uint64_t seq)
{
	sqlite3_stmt *st = NULL;
	int r = store_prepare(s, "DELETE FROM versions WHERE author = ?1 AND seq = ?2", &st);

	if (r != PKS_OK)
		goto out;
	sqlite3_bind_blob(st, 1, author, 32, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
	r = sqlite3_step(st) == SQLITE_DONE ? PKS_OK : store_fail(s, "version delete");
out:
	sqlite3_finalize(st);
	return r;
}

int store_versions_foreach(struct store *s, store_version_fn fn, void *user_data)
{
	sqlite3_stmt *st = NULL;
	int r = store_prepare(s, "SELECT record_id, author, seq, epoch, blob FROM versions", &st);
	int rc;

	if (r != PKS_OK)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_bytes(st, 0) != 16 || sqlite3_column_bytes(st, 1) != 32) {
			r = PKS_ERR_MALFORMED;
			goto out;
		}
		r = fn(user_data, sqlite3_column_blob(st, 0), sqlite3_column_blob(st, 1),
		       (uint64_t)sqlite3_column_int64(st, 2), (uint32_t)sqlite3_column_int64(st, 3),
		       sqlite3_column_blob(st, 4), (size_t)sqlite3_column_bytes(st, 4));
		if (r != PKS_OK)
			goto out;
	}
	r = rc == SQLITE_DONE ? PKS_OK : store_fail(s, "version walk");
out:
	sqlite3_finalize(st);
	return r;
}

int store_version_max_seq(struct store *s, const uint8_t author[32], uint64_t *seq)
{
	sqlite3_stmt *st = NULL;
	int r =
	    store_prepare(s, "SELECT coalesce(max(seq), 0) FROM versions WHERE author = ?1", &st);

	if (r != PKS_OK)
		goto out;
	sqlite3_bind_blob(st, 1, author, 32, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW) {
		r = store_fail(s, "max seq");
		goto out;
	}
	*seq = (uint64_t)sqlite3_column_int64(st, 0);
out:
	sqlite3_finalize(st);
	return r;
}

int store_version_stats(struct store *s, uint64_t *count, uint64_t *bytes)
{
	sqlite3_stmt *st = NULL;
	int r =
	    store_prepare(s, "SELECT count(*), coalesce(sum(length(blob)), 0) FROM versions", &st);

	if (r != PKS_OK)
		goto out;
	if (sqlite3_step(st) != SQLITE_ROW) {
		r = store_fail(s, "stats");
		goto out;
	}
	*count = (uint64_t)sqlite3_column_int64(st, 0);
	*bytes = (uint64_t)sqlite3_column_int64(st, 1);
out:
	sqlite3_finalize(st);
	return r;
}

int store_epoch_put(struct store *s, uint32_t epoch, const uint8_t *wrapped, size_t len)
{
	sqlite3_stmt *st = NULL;
	int r;

	if (len == 0 || len > STORE_BLOB_MAX)
		return PKS_ERR_INVALID;
	r = store_prepare(s, "INSERT OR REPLACE INTO epochs (epoch, wrapped) VALUES (?1, ?2)", &st);
	if (r != PKS_OK)
		goto out;
	sqlite3_bind_int64(st, 1, epoch);
	sqlite3_bind_blob(st, 2, wrapped, (int)len, SQLITE_STATIC);
	r = sqlite3_step(st) == SQLITE_DONE ? PKS_OK : store_fail(s, "epoch put");
out:
	sqlite3_finalize(st);
	return r;
}

int store_epoch_get(struct store *s, uint32_t epoch, uint8_t **wrapped, size_t *len)
{
	sqlite3_stmt *st = NULL;
	int r = store_prepare(s, "SELECT wrapped FROM epochs WHERE epoch = ?1", &st);
	int rc;

	if (r != PKS_OK)
		goto out;
	sqlite3_bind_int64(st, 1, epoch);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		r = PKS_ERR_NOT_FOUND;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		r = store_fail(s, "epoch get");
		goto out;
	}
	r = store_copy_blob(st, 0, wrapped, len);
out:
	sqlite3_finalize(st);
	return r;
}

int store_epochs_foreach(struct store *s, store_epoch_fn fn, void *user_data)
{
	sqlite3_stmt *st = NULL;
	int r = store_prepare(s, "SELECT epoch, wrapped FROM epochs ORDER BY epoch", &st);
	int rc;

	if (r != PKS_OK)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		r = fn(user_data, (uint32_t)sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 1),
		       (size_t)sqlite3_column_bytes(st, 1));
		if (r != PKS_OK)
			goto out;
	}
	r = rc == SQLITE_DONE ? PKS_OK : store_fail(s, "epoch walk");
out:
	sqlite3_finalize(st);
	return r;
}

int store_checkpoint(struct store *s)
{
	if (sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL) !=
	    SQLITE_OK)
		return store_fail(s, "checkpoint");
	return PKS_OK;
}

int store_versions_after(struct store *s, const uint8_t author[32], uint64_t after_seq,
			 store_version_fn fn, void *user_data)
{
	sqlite3_stmt *st = NULL;
	int r = store_prepare(s,
			      "SELECT record_id, seq, epoch, blob FROM versions "
			      "WHERE author = ?1 AND seq > ?2 ORDER BY seq",
			      &st);
	int rc;

	if (r != PKS_OK)
		goto out;
	sqlite3_bind_blob(st, 1, author, 32, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)after_seq);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_bytes(st, 0) != 16) {
			r = PKS_ERR_MALFORMED;
			goto out;
		}
		r = fn(user_data, sqlite3_column_blob(st, 0), author,
		       (uint64_t)sqlite3_column_int64(st, 1), (uint32_t)sqlite3_column_int64(st, 2),
		       sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3));
		if (r != PKS_OK)
			goto out;
	}
	r = rc == SQLITE_DONE ? PKS_OK : store_fail(s, "version walk");
out:
	sqlite3_finalize(st);
	return r;
}

int store_version_vector(struct store *s, store_vector_fn fn, void *user_data)
{
	sqlite3_stmt *st = NULL;
	int r = store_prepare(
	    s, "SELECT author, max(seq) FROM versions GROUP BY author ORDER BY author", &st);
	int rc;

	if (r != PKS_OK)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_bytes(st, 0) != 32) {
			r = PKS_ERR_MALFORMED;
			goto out;
		}
		r = fn(user_data, sqlite3_column_blob(st, 0),
		       (uint64_t)sqlite3_column_int64(st, 1));
		if (r != PKS_OK)
			goto out;
	}
	r = rc == SQLITE_DONE ? PKS_OK : store_fail(s, "vector");
out:
	sqlite3_finalize(st);
	return r;
}

int store_versions_delete_above(struct store *s, const uint8_t author[32], uint64_t seq,
				uint64_t *deleted)
{
	sqlite3_stmt *st = NULL;
	int r = store_prepare(s, "DELETE FROM versions WHERE author = ?1 AND seq > ?2", &st);

	if (r != PKS_OK)
		goto out;
	sqlite3_bind_blob(st, 1, author, 32, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
	r = sqlite3_step(st) == SQLITE_DONE ? PKS_OK : store_fail(s, "version delete");
	if (r == PKS_OK && deleted != NULL)
		*deleted = (uint64_t)sqlite3_changes(s->db);
out:
	sqlite3_finalize(st);
	return r;
}

int store_memb_put(struct store *s, const uint8_t id[32], const uint8_t *wrapped, size_t len)
{
	sqlite3_stmt *st = NULL;
	int r;

	if (len > STORE_BLOB_MAX)
		return PKS_ERR_TOO_LARGE;
	r = store_prepare(s,
			  "INSERT OR IGNORE INTO memb_ops (id, pos, wrapped) VALUES "
			  "(?1, (SELECT coalesce(max(pos), 0) + 1 FROM memb_ops), ?2)",
			  &st);
	if (r != PKS_OK)
		goto out;
	sqlite3_bind_blob(st, 1, id, 32, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, wrapped, (int)len, SQLITE_STATIC);
	r = sqlite3_step(st) == SQLITE_DONE ? PKS_OK : store_fail(s, "membership put");
out:
	sqlite3_finalize(st);
	return r;
}

int store_memb_foreach(struct store *s, store_blob_fn fn, void *user_data)
{
	sqlite3_stmt *st = NULL;
	int r = store_prepare(s, "SELECT wrapped FROM memb_ops ORDER BY pos", &st);
	int rc;

	if (r != PKS_OK)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		r = fn(user_data, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
		if (r != PKS_OK)
			goto out;
	}
	r = rc == SQLITE_DONE ? PKS_OK : store_fail(s, "membership walk");
out:
	sqlite3_finalize(st);
	return r;
}

int store_peer_put(struct store *s, const char *addr, uint64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	int r;

	if (strlen(addr) > 256)
		return PKS_ERR_TOO_LARGE;
	r = store_prepare(s, "INSERT OR IGNORE INTO peers (addr, added_at) VALUES (?1, ?2)", &st);
	if (r != PKS_OK)
		goto out;
	sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)now_ms);
	r = sqlite3_step(st) == SQLITE_DONE ? PKS_OK : store_fail(s, "peer put");
out:
	sqlite3_finalize(st);
	return r;
}

int store_peers_foreach(struct store *s, store_text_fn fn, void *user_data)
{
	sqlite3_stmt *st = NULL;
	int r = store_prepare(s, "SELECT addr FROM peers ORDER BY added_at", &st);
	int rc;

	if (r != PKS_OK)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *a = (const char *)sqlite3_column_text(st, 0);
		r = fn(user_data, a ? a : "");
		if (r != PKS_OK)
			goto out;
	}
	r = rc == SQLITE_DONE ? PKS_OK : store_fail(s, "peer walk");
out:
	sqlite3_finalize(st);
	return r;
}
