#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/store.h"
#include "common/err.h"
#include "tests/check.h"

static char *tmp_db(char *dir, size_t cap)
{
	snprintf(dir, cap, "/tmp/pks-test-store-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return NULL;
	strncat(dir, "/vault.db", cap - strlen(dir) - 1);
	return dir;
}

static void cleanup(const char *path)
{
	char buf[512];
	snprintf(buf, sizeof(buf), "rm -rf \"$(dirname '%s')\"", path);
	(void)!system(buf);
}

static void test_meta_and_versions(void)
{
	char path[256];
	struct store *s = NULL;
	uint8_t id[16] = {1}, author[32] = {2}, blob[40] = {3}, other[40] = {4};
	uint8_t *val = NULL;
	size_t len = 0;
	uint64_t seq = 99, count = 0, bytes = 0;

	CHECK(tmp_db(path, sizeof(path)) != NULL);
	CHECK_OK(store_open(path, NULL, &s));
	CHECK_EQ(store_meta_get(s, "missing", &val, &len), PKS_ERR_NOT_FOUND);
	CHECK_OK(store_meta_put(s, "k", (const uint8_t *)"value", 5));
	CHECK_OK(store_meta_get(s, "k", &val, &len));
	CHECK_EQ(len, 5);
	CHECK_MEM_EQ(val, "value", 5);
	free(val);

	CHECK_OK(store_version_max_seq(s, author, &seq));
	CHECK_EQ(seq, 0);
	CHECK_OK(store_version_put(s, id, author, 1, 1, blob, sizeof(blob)));
	/* Same version again: accepted; a different blob under the same key: refused. */
	CHECK_OK(store_version_put(s, id, author, 1, 1, blob, sizeof(blob)));
	CHECK_EQ(store_version_put(s, id, author, 1, 1, other, sizeof(other)), PKS_ERR_EXISTS);
	CHECK_OK(store_version_put(s, id, author, 7, 1, other, sizeof(other)));
	CHECK_OK(store_version_max_seq(s, author, &seq));
	CHECK_EQ(seq, 7);
	CHECK_OK(store_version_stats(s, &count, &bytes));
	CHECK_EQ(count, 2);
	CHECK_EQ(bytes, 80);
	CHECK_EQ(store_version_put(s, id, author, 0, 1, blob, sizeof(blob)), PKS_ERR_INVALID);
	store_free(s);
	cleanup(path);
}

static void test_transaction_rollback(void)
{
	char path[256];
	struct store *s = NULL;
	uint8_t id[16] = {1}, author[32] = {2}, blob[8] = {3};
	uint64_t count = 0, bytes = 0;

	CHECK(tmp_db(path, sizeof(path)) != NULL);
	CHECK_OK(store_open(path, NULL, &s));
	CHECK_OK(store_begin(s));
	CHECK_OK(store_version_put(s, id, author, 1, 1, blob, sizeof(blob)));
	store_rollback(s);
	CHECK_OK(store_version_stats(s, &count, &bytes));
	CHECK_EQ(count, 0);
	CHECK_OK(store_begin(s));
	CHECK_EQ(store_begin(s), PKS_ERR_STATE);
	CHECK_OK(store_version_put(s, id, author, 1, 1, blob, sizeof(blob)));
	CHECK_OK(store_commit(s));
	store_free(s);
	/* Reopen: committed data is there, and the schema is not migrated twice. */
	CHECK_OK(store_open(path, NULL, &s));
	CHECK_OK(store_version_stats(s, &count, &bytes));
	CHECK_EQ(count, 1);
	store_free(s);
	cleanup(path);
}

static void test_newer_schema_refused(void)
{
	char path[256];
	struct store *s = NULL;
	sqlite3 *db = NULL;

	CHECK(tmp_db(path, sizeof(path)) != NULL);
	CHECK_OK(store_open(path, NULL, &s));
	store_free(s);
	s = NULL;
	CHECK_EQ(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_EQ(sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	CHECK_EQ(store_open(path, NULL, &s), PKS_ERR_UNSUPPORTED);
	CHECK(s == NULL);
	cleanup(path);
}

static void test_file_mode(void)
{
	char path[256];
	struct store *s = NULL;
	struct stat st;

	CHECK(tmp_db(path, sizeof(path)) != NULL);
	CHECK_OK(store_open(path, NULL, &s));
	CHECK_EQ(stat(path, &st), 0);
	CHECK_EQ(st.st_mode & 0777, 0600);
	store_free(s);
	cleanup(path);
}

struct walk {
	uint64_t seqs[16];
	size_t n;
	size_t stop_after;
};

static int walk_version(void *user_data, const uint8_t record_id[16], const uint8_t author[32],
			uint64_t seq, uint32_t epoch, const uint8_t *blob, size_t len)
{
	struct walk *w = user_data;

	(void)record_id, (void)author, (void)epoch, (void)blob, (void)len;
	if (w->n < 16)
		w->seqs[w->n++] = seq;
	return w->n == w->stop_after ? 1 : PKS_OK;
}

static int walk_vector(void *user_data, const uint8_t author[32], uint64_t seq)
{
	struct walk *w = user_data;

	if (w->n < 16)
		w->seqs[w->n++] = author[0] * 1000 + seq;
	return PKS_OK;
}

static int walk_blob(void *user_data, const uint8_t *blob, size_t len)
{
	struct walk *w = user_data;

	if (w->n < 16)
		w->seqs[w->n++] = len ? blob[0] : 0;
	return PKS_OK;
}

static int walk_text(void *user_data, const char *text)
{
	struct walk *w = user_data;

	if (w->n < 16)
		w->seqs[w->n++] = strlen(text);
	return PKS_OK;
}

static void test_sync_queries(void)
{
	char path[256];
	struct store *s = NULL;
	uint8_t id[16] = {1}, a[32] = {2}, b[32] = {5}, blob[8] = {3};
	uint8_t op_id1[32] = {1}, op_id2[32] = {2};
	struct walk w;
	uint64_t deleted = 0;

	CHECK(tmp_db(path, sizeof(path)) != NULL);
	CHECK_OK(store_open(path, NULL, &s));
	for (uint64_t q = 1; q <= 5; q++)
		CHECK_OK(store_version_put(s, id, a, q, 1, blob, sizeof(blob)));
	CHECK_OK(store_version_put(s, id, b, 1, 1, blob, sizeof(blob)));

	memset(&w, 0, sizeof(w));
	CHECK_OK(store_versions_after(s, a, 2, walk_version, &w));
	CHECK_EQ(w.n, 3);
	CHECK_EQ(w.seqs[0], 3);
	CHECK_EQ(w.seqs[2], 5);
	memset(&w, 0, sizeof(w));
	w.stop_after = 2;
	CHECK_EQ(store_versions_after(s, a, 0, walk_version, &w), 1);
	CHECK_EQ(w.n, 2);

	memset(&w, 0, sizeof(w));
	CHECK_OK(store_version_vector(s, walk_vector, &w));
	CHECK_EQ(w.n, 2);
	CHECK_EQ(w.seqs[0], 2005);
	CHECK_EQ(w.seqs[1], 5001);

	CHECK_OK(store_versions_delete_above(s, a, 3, &deleted));
	CHECK_EQ(deleted, 2);
	memset(&w, 0, sizeof(w));
	CHECK_OK(store_version_vector(s, walk_vector, &w));
	CHECK_EQ(w.seqs[0], 2003);

	/* Membership ops replay in insertion order; a known id is not stored twice. */
	CHECK_OK(store_memb_put(s, op_id2, (const uint8_t *)"\x09", 1));
	CHECK_OK(store_memb_put(s, op_id1, (const uint8_t *)"\x07", 1));
	CHECK_OK(store_memb_put(s, op_id2, (const uint8_t *)"\x08", 1));
	memset(&w, 0, sizeof(w));
	CHECK_OK(store_memb_foreach(s, walk_blob, &w));
	CHECK_EQ(w.n, 2);
	CHECK_EQ(w.seqs[0], 9);
	CHECK_EQ(w.seqs[1], 7);

	CHECK_OK(store_peer_put(s, "127.0.0.1:7393", 1));
	CHECK_OK(store_peer_put(s, "127.0.0.1:7393", 2));
	CHECK_OK(store_peer_put(s, "[::1]:7", 3));
	memset(&w, 0, sizeof(w));
	CHECK_OK(store_peers_foreach(s, walk_text, &w));
	CHECK_EQ(w.n, 2);
	CHECK_EQ(w.seqs[0], 14);
	CHECK_EQ(w.seqs[1], 7);
	store_free(s);
	cleanup(path);
}

CHECK_MAIN({"/store/meta-and-versions", test_meta_and_versions},
	   {"/store/sync-queries", test_sync_queries},
	   {"/store/transaction-rollback", test_transaction_rollback},
	   {"/store/newer-schema-refused", test_newer_schema_refused},
	   {"/store/file-mode", test_file_mode})
