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

CHECK_MAIN({"/store/meta-and-versions", test_meta_and_versions},
	   {"/store/transaction-rollback", test_transaction_rollback},
	   {"/store/newer-schema-refused", test_newer_schema_refused},
	   {"/store/file-mode", test_file_mode})
