#include "agent/vault.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/keys.h"
#include "agent/vault-internal.h"
#include "agent/passkey.h"
#include "agent/store.h"
#include "common/err.h"
#include "proto/hlc.h"
#include "proto/membership.h"

/* Labels bind each wrapped blob to its purpose: one cannot be unwrapped as another. */
#define VAULT_LABEL_IDENTITY "pksync identity v1"
#define VAULT_LABEL_VAULT_KEYS "pksync vault keys v1"
#define VAULT_LABEL_DATA_KEY "pksync data key v1"
#define VAULT_LABEL_MEMB_OP "pksync membership op v1"

#define VAULT_CREDENTIAL_ID_LEN 32
#define VAULT_USER_HANDLE_LEN 16

/*
 * Wall time in ms. PKSYNC_CLOCK_OFFSET_MS (signed) shifts it: the tests use it
 * to give one device a wrong clock; nothing else should set it.
 */
uint64_t vault_wall_ms(void)
{
	static int64_t offset;
	static bool offset_read;
	struct timespec ts;
	int64_t now;

	if (!offset_read) {
		const char *e = getenv("PKSYNC_CLOCK_OFFSET_MS");
		offset = e != NULL ? strtoll(e, NULL, 10) : 0;
		offset_read = true;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + offset;
	return now > 0 ? (uint64_t)now : 1;
}

/* ---- the in-memory record table ---- */

static size_t vault_slot(const struct vault *v, const uint8_t id[RECORD_ID_LEN])
{
	uint64_t h;

	memcpy(&h, id, sizeof(h));
	return (size_t)(h & (v->table_cap - 1));
}

struct vault_entry *vault_lookup(const struct vault *v, const uint8_t id[RECORD_ID_LEN])
{
	size_t i;

	if (v->table_cap == 0)
		return NULL;
	for (i = vault_slot(v, id);; i = (i + 1) & (v->table_cap - 1)) {
		struct vault_entry *e = &v->table[i];
		if (e->st == NULL)
			return NULL;
		if (memcmp(e->id, id, RECORD_ID_LEN) == 0)
			return e;
	}
}

static int vault_table_grow(struct vault *v)
{
	size_t cap = v->table_cap ? v->table_cap * 2 : 1024;
	struct vault_entry *old = v->table;
	size_t old_cap = v->table_cap;
	struct vault_entry *t = calloc(cap, sizeof(*t));

	if (t == NULL)
		return PKS_ERR_NOMEM;
	v->table = t;
	v->table_cap = cap;
	for (size_t i = 0; i < old_cap; i++) {
		size_t j;
		if (old[i].st == NULL)
			continue;
		for (j = vault_slot(v, old[i].id); t[j].st != NULL; j = (j + 1) & (cap - 1))
			;
		t[j] = old[i];
	}
	free(old);
	return PKS_OK;
}

static void vault_digest_fold(struct vault *v, const struct record_state *st, int sign);
static int vault_state_apply(struct vault *v, struct record_state *st,
			     const struct record_version *ver);

/* The state for id, created empty when absent. */
int vault_state_for(struct vault *v, const uint8_t id[RECORD_ID_LEN], struct record_state **out)
{
	struct vault_entry *e = vault_lookup(v, id);
	struct record_state *st = NULL;
	size_t i;
	int r;

	if (e != NULL) {
		*out = e->st;
		return PKS_OK;
	}
	if ((v->table_count + 1) * 2 > v->table_cap) {
		r = vault_table_grow(v);
		if (r != PKS_OK)
			return r;
	}
	st = record_state_new(id);
	if (st == NULL)
		return PKS_ERR_NOMEM;
	for (i = vault_slot(v, id); v->table[i].st != NULL; i = (i + 1) & (v->table_cap - 1))
		;
	memcpy(v->table[i].id, id, RECORD_ID_LEN);
	v->table[i].st = st;
	v->table_count++;
	vault_digest_fold(v, st, +1);
	*out = st;
	return PKS_OK;
}

static void vault_table_clear(struct vault *v)
{
	for (size_t i = 0; i < v->table_cap; i++)
		record_state_free(v->table[i].st);
	free(v->table);
	v->table = NULL;
	v->table_cap = 0;
	v->table_count = 0;
	memset(v->digest, 0, sizeof(v->digest));
	v->n_live = 0;
	v->n_trash = 0;
}

/* ---- open, init, unlock, lock ---- */

static int vault_meta_fixed(struct vault *v, const char *key, uint8_t *out, size_t len)
{
	uint8_t *val = NULL;
	size_t n = 0;
	int r = store_meta_get(v->store, key, &val, &n);

	if (r == PKS_OK && n != len)
		r = PKS_ERR_MALFORMED;
	if (r == PKS_OK)
		memcpy(out, val, len);
	free(val);
	return r;
}

static void vault_put_be64(uint8_t out[8], uint64_t x)
{
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(x >> (56 - 8 * i));
}

static uint64_t vault_get_be64(const uint8_t in[8])
{
	uint64_t x = 0;

	for (int i = 0; i < 8; i++)
		x = (x << 8) | in[i];
	return x;
}

int vault_open(const struct vault_options *opt, struct vault **out)
{
	struct vault *v = NULL;
	uint8_t created[8];
	uint8_t mode = 0;
	int r = PKS_ERR_NOMEM;

	v = calloc(1, sizeof(*v));
	if (v == NULL)
		return PKS_ERR_NOMEM;
	v->log = opt->log;
	v->fast_kdf = opt->fast_kdf;
	v->db_path = strdup(opt->db_path);
	v->key_file = strdup(opt->key_file);
	if (v->db_path == NULL || v->key_file == NULL)
		goto out;
	r = store_open(v->db_path, &v->log, &v->store);
	if (r != PKS_OK)
		goto out;
	r = vault_meta_fixed(v, "device_id", v->device_id, sizeof(v->device_id));
	if (r == PKS_ERR_NOT_FOUND) {
		*out = v;
		return PKS_OK;
	}
	if (r != PKS_OK)
		goto out;
	if ((r = vault_meta_fixed(v, "vault_id", v->vault_id, sizeof(v->vault_id))) != PKS_OK ||
	    (r = vault_meta_fixed(v, "created_at", created, sizeof(created))) != PKS_OK ||
	    (r = vault_meta_fixed(v, "kek_mode", &mode, 1)) != PKS_OK)
		goto out;
	v->created_at_ms = vault_get_be64(created);
	v->initialized = true;
	v->has_passphrase = mode == 'p';
	if (!v->has_passphrase) {
		r = vault_unlock(v, NULL, 0);
		if (r != PKS_OK)
			goto out;
	}
	*out = v;
	v = NULL;
	r = PKS_OK;
out:
	vault_free(v);
	return r;
}

void vault_free(struct vault *v)
{
	if (v == NULL)
		return;
	if (v->sec != NULL)
		vault_lock(v);
	vault_table_clear(v);
	store_free(v->store);
	free(v->db_path);
	free(v->key_file);
	free(v);
}

bool vault_is_initialized(const struct vault *v)
{
	return v->initialized;
}

bool vault_is_locked(const struct vault *v)
{
	return v->sec == NULL;
}

bool vault_has_passphrase(const struct vault *v)
{
	return v->has_passphrase;
}

/* Identity blob: sign_sk (64) || dh_sk (32) || name (rest). */
static int vault_save_identity(struct vault *v, const struct keys_kek *kek)
{
	size_t name_len = strlen(v->device_name);
	size_t len = crypto_sign_SECRETKEYBYTES + crypto_scalarmult_SCALARBYTES + name_len;
	uint8_t *pt = sodium_malloc(len);
	uint8_t *wrapped = NULL;
	size_t wrapped_len = 0;
	int r;

	if (pt == NULL)
		return PKS_ERR_NOMEM;
	memcpy(pt, v->sec->sign_sk, crypto_sign_SECRETKEYBYTES);
	memcpy(pt + crypto_sign_SECRETKEYBYTES, v->sec->dh_sk, crypto_scalarmult_SCALARBYTES);
	memcpy(pt + crypto_sign_SECRETKEYBYTES + crypto_scalarmult_SCALARBYTES, v->device_name,
	       name_len);
	r = keys_wrap(kek, VAULT_LABEL_IDENTITY, pt, len, &wrapped, &wrapped_len);
	sodium_free(pt);
	if (r == PKS_OK)
		r = store_meta_put(v->store, "identity", wrapped, wrapped_len);
	free(wrapped);
	return r;
}

static int vault_load_identity(struct vault *v, const struct keys_kek *kek)
{
	uint8_t *wrapped = NULL, *pt = NULL;
	size_t wrapped_len = 0, len = 0, name_len;
	uint8_t id[DEVICE_ID_LEN];
	int r = store_meta_get(v->store, "identity", &wrapped, &wrapped_len);

	if (r != PKS_OK)
		goto out;
	r = keys_unwrap(kek, VAULT_LABEL_IDENTITY, wrapped, wrapped_len, &pt, &len);
	if (r != PKS_OK)
		goto out;
	r = PKS_ERR_MALFORMED;
	if (len < crypto_sign_SECRETKEYBYTES + crypto_scalarmult_SCALARBYTES)
		goto out;
	name_len = len - crypto_sign_SECRETKEYBYTES - crypto_scalarmult_SCALARBYTES;
	if (name_len > VAULT_NAME_MAX)
		goto out;
	memcpy(v->sec->sign_sk, pt, crypto_sign_SECRETKEYBYTES);
	memcpy(v->sec->dh_sk, pt + crypto_sign_SECRETKEYBYTES, crypto_scalarmult_SCALARBYTES);
	memcpy(v->device_name, pt + crypto_sign_SECRETKEYBYTES + crypto_scalarmult_SCALARBYTES,
	       name_len);
	v->device_name[name_len] = '\0';
	crypto_sign_ed25519_sk_to_pk(v->sec->sign_pk, v->sec->sign_sk);
	crypto_scalarmult_base(v->sec->dh_pk, v->sec->dh_sk);
	/* The stored device id must be the hash of this signing key. */
	crypto_generichash(id, sizeof(id), v->sec->sign_pk, sizeof(v->sec->sign_pk), NULL, 0);
	r = sodium_memcmp(id, v->device_id, sizeof(id)) == 0 ? PKS_OK : PKS_ERR_AUTH;
out:
	if (pt != NULL)
		keys_secret_free(pt, len);
	free(wrapped);
	return r;
}

/* Vault keys blob: network_key (32) || id_key (32). Data keys live in the epochs table. */
static int vault_save_keys(struct vault *v, const struct keys_kek *kek)
{
	uint8_t *pt = sodium_malloc(64);
	uint8_t *wrapped = NULL;
	size_t wrapped_len = 0;
	int r;

	if (pt == NULL)
		return PKS_ERR_NOMEM;
	memcpy(pt, v->sec->network_key, 32);
	memcpy(pt + 32, v->sec->id_key, 32);
	r = keys_wrap(kek, VAULT_LABEL_VAULT_KEYS, pt, 64, &wrapped, &wrapped_len);
	sodium_free(pt);
	if (r == PKS_OK)
		r = store_meta_put(v->store, "vault_keys", wrapped, wrapped_len);
	free(wrapped);
	if (r != PKS_OK)
		return r;
	return vault_epoch_save(v, v->sec->epoch, v->sec->data_key);
}

/* Adds an epoch key to memory (no-op when known); the highest epoch becomes current. */
static int vault_epoch_add(struct vault *v, uint32_t epoch, const uint8_t key[32])
{
	struct vault_secrets *sec = v->sec;

	for (size_t i = 0; i < sec->n_epochs; i++)
		if (sec->epochs[i].epoch == epoch)
			return PKS_OK;
	if (sec->n_epochs == VAULT_EPOCHS_MAX || epoch == 0)
		return PKS_ERR_TOO_LARGE;
	sec->epochs[sec->n_epochs].epoch = epoch;
	memcpy(sec->epochs[sec->n_epochs].key, key, 32);
	sec->n_epochs++;
	if (epoch > sec->epoch) {
		sec->epoch = epoch;
		memcpy(sec->data_key, key, 32);
	}
	return PKS_OK;
}

const uint8_t *vault_epoch_key(const struct vault *v, uint32_t epoch)
{
	for (size_t i = 0; i < v->sec->n_epochs; i++)
		if (v->sec->epochs[i].epoch == epoch)
			return v->sec->epochs[i].key;
	return NULL;
}

/* Wraps and stores an epoch key, and adds it to memory. */
int vault_epoch_save(struct vault *v, uint32_t epoch, const uint8_t key[32])
{
	uint8_t *wrapped = NULL;
	size_t wrapped_len = 0;
	int r = keys_wrap(v->kek, VAULT_LABEL_DATA_KEY, key, 32, &wrapped, &wrapped_len);

	if (r == PKS_OK)
		r = store_epoch_put(v->store, epoch, wrapped, wrapped_len);
	free(wrapped);
	if (r == PKS_OK)
		r = vault_epoch_add(v, epoch, key);
	return r;
}

static int vault_load_epoch(void *user_data, uint32_t epoch, const uint8_t *wrapped, size_t len)
{
	struct vault *v = user_data;
	uint8_t *pt = NULL;
	size_t n = 0;
	int r = keys_unwrap(v->kek, VAULT_LABEL_DATA_KEY, wrapped, len, &pt, &n);

	if (r != PKS_OK)
		return r;
	r = n == 32 ? vault_epoch_add(v, epoch, pt) : PKS_ERR_MALFORMED;
	keys_secret_free(pt, n);
	return r;
}

static int vault_load_keys(struct vault *v, const struct keys_kek *kek)
{
	uint8_t *wrapped = NULL, *pt = NULL;
	size_t wrapped_len = 0, len = 0;
	int r = store_meta_get(v->store, "vault_keys", &wrapped, &wrapped_len);

	if (r != PKS_OK)
		goto out;
	r = keys_unwrap(kek, VAULT_LABEL_VAULT_KEYS, wrapped, wrapped_len, &pt, &len);
	if (r != PKS_OK)
		goto out;
	if (len != 64) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	memcpy(v->sec->network_key, pt, 32);
	memcpy(v->sec->id_key, pt + 32, 32);
	v->sec->epoch = 0;
	v->sec->n_epochs = 0;
	r = store_epochs_foreach(v->store, vault_load_epoch, v);
	if (r == PKS_OK && v->sec->epoch == 0)
		r = PKS_ERR_MALFORMED;
out:
	if (pt != NULL)
		keys_secret_free(pt, len);
	free(wrapped);
	return r;
}

static hlc_t vault_version_max_hlc(const struct record_version *ver)
{
	hlc_t m = ver->hlc;

	for (int f = 0; f < RECORD_FIELD_COUNT; f++)
		if ((ver->fields & RECORD_FIELD_BIT(f)) && ver->field[f].stamp > m)
			m = ver->field[f].stamp;
	return m;
}

/* ---- the per-author vector ---- */

static size_t vault_author_pos(const struct vault *v, const uint8_t id[DEVICE_ID_LEN], bool *found)
{
	size_t lo = 0, hi = v->n_authors;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = memcmp(v->authors[mid].id, id, DEVICE_ID_LEN);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

uint64_t vault_author_seq(const struct vault *v, const uint8_t id[DEVICE_ID_LEN])
{
	bool found;
	size_t i = vault_author_pos(v, id, &found);

	return found ? v->authors[i].seq : 0;
}

int vault_author_set(struct vault *v, const uint8_t id[DEVICE_ID_LEN], uint64_t seq)
{
	bool found;
	size_t i = vault_author_pos(v, id, &found);

	if (!found) {
		if (v->n_authors == v->cap_authors) {
			size_t cap = v->cap_authors ? v->cap_authors * 2 : 8;
			struct vault_author *a = realloc(v->authors, cap * sizeof(*a));
			if (a == NULL)
				return PKS_ERR_NOMEM;
			v->authors = a;
			v->cap_authors = cap;
		}
		memmove(&v->authors[i + 1], &v->authors[i],
			(v->n_authors - i) * sizeof(v->authors[0]));
		memcpy(v->authors[i].id, id, DEVICE_ID_LEN);
		v->authors[i].cut = false;
		v->authors[i].cutoff = 0;
		v->n_authors++;
	}
	v->authors[i].seq = seq;
	if (sodium_memcmp(id, v->device_id, DEVICE_ID_LEN) == 0)
		v->seq = seq;
	return PKS_OK;
}

void vault_author_hide_from(struct vault *v, const uint8_t id[DEVICE_ID_LEN], uint64_t seq)
{
	bool found;
	size_t i = vault_author_pos(v, id, &found);

	if (!found || v->authors[i].cut)
		return;
	v->authors[i].cut = true;
	v->authors[i].cutoff = seq - 1;
}

uint64_t vault_admissible_prefix(const struct vault *v, const uint8_t id[DEVICE_ID_LEN],
				 uint64_t held)
{
	uint64_t lo = 0, hi = held;

	if (held == 0 || membership_version_admissible(v->memb, id, held))
		return held;
	/* Versions are admissible up to a cutoff: the largest admissible seq. */
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo + 1) / 2;
		if (membership_version_admissible(v->memb, id, mid))
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

static int vault_vector_entry(void *user_data, const uint8_t author[32], uint64_t seq)
{
	return vault_author_set(user_data, author, seq);
}

/* ---- opening versions of any member ---- */

int vault_open_sealed(struct vault *v, const uint8_t *blob, size_t len,
		      struct record_sealed_header *h, struct record_version **out)
{
	struct membership_device d;
	const uint8_t *key;
	int r = record_sealed_peek(blob, len, h);

	if (r != PKS_OK)
		return r;
	if (!membership_version_admissible(v->memb, h->author, h->seq))
		return PKS_ERR_REJECTED;
	r = membership_get(v->memb, h->author, &d);
	if (r != PKS_OK)
		return PKS_ERR_REJECTED;
	key = vault_epoch_key(v, h->epoch);
	if (key == NULL)
		return PKS_ERR_NOT_FOUND;
	return record_version_open(blob, len, d.sign_pk, key, out);
}

int vault_merge_version(struct vault *v, struct record_version *ver)
{
	struct record_state *st = NULL;
	int r = vault_state_for(v, ver->record_id, &st);

	if (r != PKS_OK)
		return r;
	/* A stamp beyond the skew limit is refused by the clock, never adopted. */
	hlc_clock_observe(&v->clock, vault_version_max_hlc(ver), vault_wall_ms());
	r = vault_state_apply(v, st, ver);
	if (r == PKS_ERR_REJECTED) {
		pks_log(&v->log, PKS_LOG_WARN, "vault: a version was rejected by the merge rules");
		r = PKS_OK;
	}
	return r;
}

/* Opens one stored version and folds it into its record's state. */
static int vault_load_version(void *user_data, const uint8_t record_id[16],
			      const uint8_t author[32], uint64_t seq, uint32_t epoch,
			      const uint8_t *blob, size_t len)
{
	struct vault *v = user_data;
	struct record_version *ver = NULL;
	struct record_sealed_header h;
	int r;

	(void)record_id, (void)author, (void)seq, (void)epoch;
	r = vault_open_sealed(v, blob, len, &h, &ver);
	if (r == PKS_ERR_REJECTED) {
		/* Hidden by a revoke (kept in case the revoke stops counting). */
		v->hidden++;
		return PKS_OK;
	}
	if (r != PKS_OK) {
		pks_log(&v->log, PKS_LOG_WARN, "vault: skipping a stored version: %s",
			pks_strerror(r));
		return PKS_OK;
	}
	r = vault_merge_version(v, ver);
	record_version_free(ver);
	return r;
}

/*
 * Rebuilds the in-memory records from the store: at unlock, and after a
 * failed transaction left memory ahead of what was committed.
 */
int vault_reload(struct vault *v)
{
	int r;

	vault_table_clear(v);
	v->n_authors = 0;
	v->seq = 0;
	v->hidden = 0;
	hlc_clock_init(&v->clock, 0, VAULT_MAX_SKEW_MS);
	r = store_version_vector(v->store, vault_vector_entry, v);
	if (r == PKS_OK && v->memb != NULL) {
		for (size_t i = 0; i < v->n_authors; i++) {
			struct vault_author *a = &v->authors[i];
			a->cutoff = vault_admissible_prefix(v, a->id, a->seq);
			a->cut = a->cutoff < a->seq;
		}
	}
	if (r == PKS_OK)
		r = store_versions_foreach(v->store, vault_load_version, v);
	if (r == PKS_OK && v->hidden > 0)
		pks_log(&v->log, PKS_LOG_INFO,
			"vault: %llu stored versions by revoked devices are kept but not applied",
			(unsigned long long)v->hidden);
	return r;
}

/* ---- membership at rest ---- */

static int vault_memb_put(void *user_data, const uint8_t id[32], const uint8_t *op, size_t len)
{
	struct vault *v = user_data;
	uint8_t *wrapped = NULL;
	size_t wrapped_len = 0;
	int r = keys_wrap(v->kek, VAULT_LABEL_MEMB_OP, op, len, &wrapped, &wrapped_len);

	if (r == PKS_OK)
		r = store_memb_put(v->store, id, wrapped, wrapped_len);
	free(wrapped);
	return r;
}

/* Stores every applied op not stored yet (ops applied from the pending set included). */
int vault_memb_persist(struct vault *v)
{
	int r;

	if (membership_op_count(v->memb) == v->memb_persisted)
		return PKS_OK;
	r = membership_foreach_op(v->memb, vault_memb_put, v);
	if (r == PKS_OK)
		v->memb_persisted = membership_op_count(v->memb);
	return r;
}

static int vault_memb_load_one(void *user_data, const uint8_t *blob, size_t len)
{
	struct vault *v = user_data;
	uint8_t *pt = NULL;
	size_t n = 0;
	int r = keys_unwrap(v->kek, VAULT_LABEL_MEMB_OP, blob, len, &pt, &n);

	if (r != PKS_OK)
		return r;
	r = membership_apply(v->memb, pt, n);
	if (r != PKS_OK)
		pks_log(&v->log, PKS_LOG_WARN, "vault: a stored membership operation: %s",
			pks_strerror(r));
	keys_secret_free(pt, n);
	return PKS_OK;
}

static int vault_load_membership(struct vault *v)
{
	uint8_t *op = NULL;
	size_t op_len = 0;
	int r = membership_new(&v->memb);

	if (r != PKS_OK)
		return r;
	r = store_memb_foreach(v->store, vault_memb_load_one, v);
	if (r != PKS_OK)
		return r;
	v->memb_persisted = membership_op_count(v->memb);
	if (membership_has_genesis(v->memb))
		return PKS_OK;
	/* A vault made before membership existed: its device founds the membership now. */
	r = membership_genesis(v->memb, v->vault_id, v->sec->sign_sk, v->sec->dh_pk, v->device_name,
			       v->created_at_ms, &op, &op_len);
	free(op);
	if (r == PKS_OK)
		r = vault_memb_persist(v);
	return r;
}

/* Takes kek on success. */
static int vault_unlock_with(struct vault *v, struct keys_kek *kek)
{
	int r;

	v->sec = sodium_malloc(sizeof(*v->sec));
	if (v->sec == NULL)
		return PKS_ERR_NOMEM;
	sodium_memzero(v->sec, sizeof(*v->sec));
	v->kek = kek;
	r = vault_load_identity(v, kek);
	if (r == PKS_OK)
		r = vault_load_keys(v, kek);
	if (r == PKS_OK)
		r = vault_load_membership(v);
	if (r == PKS_OK)
		r = vault_reload(v);
	if (r != PKS_OK) {
		v->kek = NULL;
		vault_lock(v);
	}
	return r;
}

int vault_unlock(struct vault *v, const char *passphrase, size_t passphrase_len)
{
	struct keys_kek *kek = NULL;
	uint8_t *params = NULL;
	size_t params_len = 0;
	int r;

	if (!v->initialized)
		return PKS_ERR_STATE;
	if (v->sec != NULL)
		return PKS_OK;
	if (v->has_passphrase) {
		if (passphrase == NULL)
			return PKS_ERR_PASSPHRASE;
		r = store_meta_get(v->store, "kek_params", &params, &params_len);
		if (r == PKS_OK)
			r = keys_kek_unlock(params, params_len, passphrase, passphrase_len, &kek);
	} else {
		r = keys_kek_load_file(v->key_file, &kek);
	}
	if (r == PKS_OK) {
		r = vault_unlock_with(v, kek);
		if (r == PKS_OK)
			kek = NULL;
	}
	keys_kek_free(kek);
	free(params);
	return r;
}

int vault_lock(struct vault *v)
{
	vault_table_clear(v);
	membership_free(v->memb);
	v->memb = NULL;
	v->memb_persisted = 0;
	free(v->authors);
	v->authors = NULL;
	v->n_authors = v->cap_authors = 0;
	keys_kek_free(v->kek);
	v->kek = NULL;
	if (v->sec != NULL)
		sodium_free(v->sec);
	v->sec = NULL;
	sodium_memzero(v->device_name, sizeof(v->device_name));
	return PKS_OK;
}

/*
 * Writes a new device's identity and vault in one transaction. With bundle
 * NULL the vault is new (fresh keys, a genesis); otherwise the device joins
 * the bundle's vault and applies its membership ops.
 */
int vault_create_identity(struct vault *v, const char *name, const char *passphrase,
			  size_t passphrase_len, const struct vault_identity *ident,
			  const struct vault_join_bundle *bundle)
{
	struct keys_kek *kek = NULL;
	uint8_t *params = NULL;
	size_t params_len = 0;
	uint8_t created[8];
	uint8_t *op = NULL;
	size_t op_len = 0;
	uint8_t mode;
	int r;

	if (v->initialized)
		return PKS_ERR_EXISTS;
	if (name == NULL || name[0] == '\0' || strlen(name) > VAULT_NAME_MAX)
		return PKS_ERR_INVALID;
	if (passphrase != NULL) {
		r = keys_kek_create(passphrase, passphrase_len,
				    v->fast_kdf ? KEYS_KDF_FAST : KEYS_KDF_DEFAULT, &params,
				    &params_len, &kek);
	} else {
		unlink(v->key_file);
		r = keys_kek_create_file(v->key_file, &kek);
	}
	if (r != PKS_OK)
		goto out;

	v->sec = sodium_malloc(sizeof(*v->sec));
	if (v->sec == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	sodium_memzero(v->sec, sizeof(*v->sec));
	v->kek = kek;
	kek = NULL;
	r = membership_new(&v->memb);
	if (r != PKS_OK)
		goto out;
	if (ident != NULL) {
		memcpy(v->sec->sign_pk, ident->sign_pk, 32);
		memcpy(v->sec->sign_sk, ident->sign_sk, 64);
		memcpy(v->sec->dh_pk, ident->dh_pk, 32);
		memcpy(v->sec->dh_sk, ident->dh_sk, 32);
	} else {
		crypto_sign_keypair(v->sec->sign_pk, v->sec->sign_sk);
		randombytes_buf(v->sec->dh_sk, sizeof(v->sec->dh_sk));
		crypto_scalarmult_base(v->sec->dh_pk, v->sec->dh_sk);
	}
	crypto_generichash(v->device_id, sizeof(v->device_id), v->sec->sign_pk,
			   sizeof(v->sec->sign_pk), NULL, 0);
	snprintf(v->device_name, sizeof(v->device_name), "%s", name);
	v->created_at_ms = vault_wall_ms();
	vault_put_be64(created, v->created_at_ms);
	hlc_clock_init(&v->clock, 0, VAULT_MAX_SKEW_MS);
	v->seq = 0;
	mode = passphrase != NULL ? 'p' : 'f';

	/* All of the identity lands in one transaction, or none of it. */
	r = store_begin(v->store);
	if (r != PKS_OK)
		goto out;
	if (bundle == NULL) {
		randombytes_buf(v->sec->network_key, sizeof(v->sec->network_key));
		randombytes_buf(v->sec->id_key, sizeof(v->sec->id_key));
		randombytes_buf(v->sec->data_key, sizeof(v->sec->data_key));
		v->sec->epoch = 1;
		randombytes_buf(v->vault_id, sizeof(v->vault_id));
		r = vault_save_keys(v, v->kek);
		if (r == PKS_OK)
			r = membership_genesis(v->memb, v->vault_id, v->sec->sign_sk, v->sec->dh_pk,
					       v->device_name, v->created_at_ms, &op, &op_len);
	} else {
		memcpy(v->sec->network_key, bundle->network_key, 32);
		memcpy(v->sec->id_key, bundle->id_key, 32);
		memcpy(v->vault_id, bundle->vault_id, VAULT_ID_LEN);
		r = bundle->n_epochs > 0 ? PKS_OK : PKS_ERR_INVALID;
		for (size_t i = 0; i < bundle->n_epochs && r == PKS_OK; i++)
			r = vault_epoch_add(v, bundle->epochs[i].epoch, bundle->epochs[i].key);
		if (r == PKS_OK)
			r = vault_save_keys(v, v->kek);
		for (size_t i = 0; i < bundle->n_epochs && r == PKS_OK; i++)
			r = vault_epoch_save(v, bundle->epochs[i].epoch, bundle->epochs[i].key);
		for (size_t i = 0; i < bundle->n_ops && r == PKS_OK; i++) {
			r = membership_apply(v->memb, bundle->ops[i].data, bundle->ops[i].len);
			if (r == PKS_ERR_PENDING)
				r = PKS_OK;
		}
		/* The vault we join must list this device. */
		if (r == PKS_OK && !membership_is_member(v->memb, v->device_id))
			r = PKS_ERR_REJECTED;
		if (r == PKS_OK) {
			uint8_t vid[16];
			membership_vault_id(v->memb, vid);
			if (memcmp(vid, v->vault_id, 16) != 0)
				r = PKS_ERR_REJECTED;
		}
	}
	if (r == PKS_OK)
		r = vault_memb_persist(v);
	if (r != PKS_OK || (r = vault_save_identity(v, v->kek)) != PKS_OK ||
	    (params != NULL &&
	     (r = store_meta_put(v->store, "kek_params", params, params_len)) != PKS_OK) ||
	    (r = store_meta_put(v->store, "vault_id", v->vault_id, sizeof(v->vault_id))) !=
		PKS_OK ||
	    (r = store_meta_put(v->store, "created_at", created, sizeof(created))) != PKS_OK ||
	    (r = store_meta_put(v->store, "kek_mode", &mode, 1)) != PKS_OK ||
	    (r = store_meta_put(v->store, "device_id", v->device_id, sizeof(v->device_id))) !=
		PKS_OK) {
		store_rollback(v->store);
		goto out;
	}
	r = store_commit(v->store);
	if (r != PKS_OK)
		goto out;
	v->initialized = true;
	v->has_passphrase = passphrase != NULL;
	pks_log(&v->log, PKS_LOG_INFO,
		bundle ? "vault: joined a vault as a new device"
		       : "vault: created a new vault and device identity");
out:
	free(op);
	if (r != PKS_OK && v->sec != NULL)
		vault_lock(v);
	keys_kek_free(kek);
	free(params);
	return r;
}

int vault_init(struct vault *v, const char *name, const char *passphrase, size_t passphrase_len)
{
	return vault_create_identity(v, name, passphrase, passphrase_len, NULL, NULL);
}

void vault_device_id(const struct vault *v, uint8_t out[DEVICE_ID_LEN])
{
	memcpy(out, v->device_id, DEVICE_ID_LEN);
}

void vault_vault_id(const struct vault *v, uint8_t out[VAULT_ID_LEN])
{
	memcpy(out, v->vault_id, VAULT_ID_LEN);
}

const char *vault_device_name(const struct vault *v)
{
	return v->device_name;
}

uint64_t vault_created_at_ms(const struct vault *v)
{
	return v->created_at_ms;
}

/* ---- reading ---- */

void vault_counts(const struct vault *v, size_t *live, size_t *trash)
{
	*live = v->n_live;
	*trash = v->n_trash;
}

/* XOR of per-record digests: independent of order, kept up to date as states change. */
void vault_digest(const struct vault *v, uint8_t out[32])
{
	memcpy(out, v->digest, 32);
}

/* Takes a state out of (sign -1) or into (+1) the digest and the counts. */
static void vault_digest_fold(struct vault *v, const struct record_state *st, int sign)
{
	uint8_t d[32];

	record_state_digest(st, d);
	for (int k = 0; k < 32; k++)
		v->digest[k] ^= d[k];
	if (!record_state_has_create(st) || record_state_purged(st))
		return;
	if (record_state_trashed(st))
		v->n_trash += (size_t)sign;
	else
		v->n_live += (size_t)sign;
}

/* Applies a version to a state, keeping the vault digest current. */
static int vault_state_apply(struct vault *v, struct record_state *st,
			     const struct record_version *ver)
{
	int r;

	vault_digest_fold(v, st, -1);
	r = record_state_apply(st, ver);
	vault_digest_fold(v, st, +1);
	return r;
}

int vault_records_foreach(const struct vault *v, vault_record_fn fn, void *user_data)
{
	for (size_t i = 0; i < v->table_cap; i++) {
		const struct record_state *st = v->table[i].st;
		int r;
		if (st == NULL || !record_state_has_create(st) || record_state_purged(st))
			continue;
		r = fn(user_data, st);
		if (r != PKS_OK)
			return r;
	}
	return PKS_OK;
}

int vault_find(const struct vault *v, const char *id_prefix, const struct record_state **out)
{
	size_t n = strlen(id_prefix);
	const struct record_state *found = NULL;
	char hex[2 * RECORD_ID_LEN + 1];

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	if (n < 4 || n > 2 * RECORD_ID_LEN)
		return PKS_ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		char c = id_prefix[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return PKS_ERR_INVALID;
	}
	for (size_t i = 0; i < v->table_cap; i++) {
		const struct record_state *st = v->table[i].st;
		if (st == NULL || !record_state_has_create(st) || record_state_purged(st))
			continue;
		sodium_bin2hex(hex, sizeof(hex), v->table[i].id, RECORD_ID_LEN);
		if (strncasecmp(hex, id_prefix, n) != 0)
			continue;
		if (found != NULL)
			return PKS_ERR_AMBIGUOUS;
		found = st;
	}
	if (found == NULL)
		return PKS_ERR_NOT_FOUND;
	*out = found;
	return PKS_OK;
}

/* ---- writing: every change is a sealed version, stored, then merged ---- */

/*
 * Seals v (which must have author, seq and epoch filled here), stores it and
 * applies it. With batch set, the caller owns the transaction and applies
 * later; the sealed blob is not needed after storing.
 */
static int vault_commit_version(struct vault *v, struct record_version *ver, bool apply)
{
	uint8_t nonce[24];
	uint8_t *blob = NULL;
	size_t len = 0;
	struct record_state *st = NULL;
	int r;

	/* An update carries its stamps per field only. */
	if (ver->op == RECORD_OP_UPDATE)
		ver->hlc = 0;
	randombytes_buf(nonce, sizeof(nonce));
	r = record_version_seal(ver, v->sec->data_key, v->sec->sign_sk, nonce, &blob, &len);
	if (r != PKS_OK)
		goto out;
	r = store_version_put(v->store, ver->record_id, v->device_id, ver->seq, ver->epoch, blob,
			      len);
	if (r != PKS_OK)
		goto out;
	r = vault_author_set(v, v->device_id, ver->seq);
	if (r != PKS_OK)
		goto out;
	if (apply) {
		r = vault_state_for(v, ver->record_id, &st);
		if (r == PKS_OK)
			r = vault_state_apply(v, st, ver);
	}
out:
	free(blob);
	return r;
}

static void vault_version_start(struct vault *v, struct record_version *ver,
				const uint8_t record_id[RECORD_ID_LEN], enum record_op op)
{
	memcpy(ver->record_id, record_id, RECORD_ID_LEN);
	memcpy(ver->author, v->device_id, DEVICE_ID_LEN);
	ver->seq = v->seq + 1;
	ver->epoch = v->sec->epoch;
	ver->op = op;
	ver->hlc = hlc_clock_now(&v->clock, vault_wall_ms());
}

/* Fills a CREATE version from an item; key bytes are copied into secure memory. */
static int vault_version_from_item(struct vault *v, struct record_version *ver,
				   const struct passkey_item *it,
				   const uint8_t record_id[RECORD_ID_LEN])
{
	int r;

	vault_version_start(v, ver, record_id, RECORD_OP_CREATE);
	ver->backup_eligible = it->backup_eligible;
	ver->backup_state = it->backup_state;
	ver->created_at = it->created_at_ms ? it->created_at_ms : vault_wall_ms();
	r = record_version_set_credential(ver, it->credential_id, it->credential_id_len, it->rp_id,
					  it->user_handle, it->user_handle_len);
	if (r == PKS_OK)
		r = record_version_set_keys(ver, (enum record_alg)it->alg, it->private_key,
					    it->private_key_len, it->public_key,
					    it->public_key_len);
	if (r == PKS_OK)
		r = record_version_set_source(ver, it->source ? it->source : "");
	if (r == PKS_OK)
		r = record_version_set_field(ver, RECORD_FIELD_USER_NAME, it->user_name, ver->hlc);
	if (r == PKS_OK)
		r = record_version_set_field(ver, RECORD_FIELD_DISPLAY_NAME,
					     it->display_name ? it->display_name : "", ver->hlc);
	if (r == PKS_OK && it->notes != NULL && it->notes[0] != '\0')
		r = record_version_set_field(ver, RECORD_FIELD_NOTES, it->notes, ver->hlc);
	if (r == PKS_OK)
		r = record_version_validate(ver);
	return r;
}

struct vault_account_match {
	const char *rp_id;
	const uint8_t *handle;
	size_t handle_len;
	const uint8_t *keep;
	size_t n;
	uint8_t ids[8][RECORD_ID_LEN];
};

static int vault_account_match(void *user_data, const struct record_state *st)
{
	struct vault_account_match *m = user_data;
	const uint8_t *h;
	size_t h_len = 0;

	if (record_state_trashed(st) || memcmp(record_state_id(st), m->keep, RECORD_ID_LEN) == 0 ||
	    strcmp(record_state_rp_id(st), m->rp_id) != 0)
		return PKS_OK;
	h = record_state_user_handle(st, &h_len);
	if (h == NULL || h_len != m->handle_len || memcmp(h, m->handle, h_len) != 0)
		return PKS_OK;
	if (m->n == 8)
		return 1; /* enough for one call; a next registration trashes more */
	memcpy(m->ids[m->n++], record_state_id(st), RECORD_ID_LEN);
	return PKS_OK;
}

/* Moves live records of rp_id with this user handle, but keep, to the trash. */
static int vault_replace_account(struct vault *v, const char *rp_id, const uint8_t *handle,
				 size_t handle_len, const uint8_t keep[RECORD_ID_LEN])
{
	struct vault_account_match m = {rp_id, handle, handle_len, keep, 0, {{0}}};
	int r = vault_records_foreach(v, vault_account_match, &m);

	if (r == 1)
		r = PKS_OK;
	for (size_t i = 0; i < m.n && r == PKS_OK; i++) {
		struct vault_entry *e = vault_lookup(v, m.ids[i]);
		if (e != NULL)
			r = vault_delete(v, e->st);
	}
	if (r == PKS_OK && m.n > 0)
		pks_log(
		    &v->log, PKS_LOG_INFO,
		    "vault: a new passkey replaced %zu of the same account (moved to the trash)",
		    m.n);
	return r;
}

int vault_get(const struct vault *v, const uint8_t id[RECORD_ID_LEN],
	      const struct record_state **out)
{
	struct vault_entry *e = vault_lookup(v, id);

	if (e == NULL || e->st == NULL || !record_state_has_create(e->st) ||
	    record_state_purged(e->st))
		return PKS_ERR_NOT_FOUND;
	*out = e->st;
	return PKS_OK;
}

int vault_check_passphrase(const struct vault *v, const char *passphrase, size_t len)
{
	struct keys_kek *kek = NULL;
	uint8_t *params = NULL;
	size_t params_len = 0;
	int r;

	if (!v->initialized || !v->has_passphrase)
		return PKS_ERR_STATE;
	r = store_meta_get(v->store, "kek_params", &params, &params_len);
	if (r == PKS_OK)
		r = keys_kek_unlock(params, params_len, passphrase, len, &kek);
	keys_kek_free(kek);
	free(params);
	return r;
}

int vault_create_passkey(struct vault *v, const char *rp_id, const uint8_t *user_handle,
			 size_t user_handle_len, const char *user_name, const char *display_name,
			 int alg, const struct record_state **out)
{
	struct passkey_key *key = NULL;
	struct passkey_item item;
	struct record_version *ver = NULL;
	uint8_t cred_id[VAULT_CREDENTIAL_ID_LEN], handle[VAULT_USER_HANDLE_LEN];
	uint8_t record_id[RECORD_ID_LEN];
	uint8_t *pkcs8 = NULL, *spki = NULL;
	size_t pkcs8_len = 0, spki_len = 0;
	struct vault_entry *e;
	int r;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	if (alg != RECORD_ALG_ES256 && alg != RECORD_ALG_EDDSA)
		return PKS_ERR_UNSUPPORTED;
	if (user_handle != NULL && (user_handle_len == 0 || user_handle_len > 64))
		return PKS_ERR_INVALID;
	memset(&item, 0, sizeof(item));
	r = passkey_key_generate(alg, &key);
	if (r != PKS_OK)
		goto out;
	if ((r = passkey_key_pkcs8(key, &pkcs8, &pkcs8_len)) != PKS_OK ||
	    (r = passkey_key_spki(key, &spki, &spki_len)) != PKS_OK)
		goto out;
	randombytes_buf(cred_id, sizeof(cred_id));
	if (user_handle == NULL) {
		randombytes_buf(handle, sizeof(handle));
		user_handle = handle;
		user_handle_len = sizeof(handle);
	}
	r = record_id_derive(v->sec->id_key, rp_id, cred_id, sizeof(cred_id), record_id);
	if (r != PKS_OK)
		goto out;
	item.rp_id = (char *)rp_id;
	item.credential_id = cred_id;
	item.credential_id_len = sizeof(cred_id);
	item.user_handle = (uint8_t *)user_handle;
	item.user_handle_len = user_handle_len;
	item.user_name = (char *)user_name;
	item.display_name = (char *)(display_name && display_name[0] ? display_name : user_name);
	item.alg = alg;
	item.private_key = pkcs8;
	item.private_key_len = pkcs8_len;
	item.public_key = spki;
	item.public_key_len = spki_len;
	item.backup_eligible = true;
	item.backup_state = true;
	item.source = (char *)"pksync";
	ver = record_version_new();
	if (ver == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	r = vault_version_from_item(v, ver, &item, record_id);
	if (r != PKS_OK)
		goto out;
	r = vault_commit_version(v, ver, true);
	if (r != PKS_OK)
		goto out;
	r = vault_replace_account(v, rp_id, user_handle, user_handle_len, record_id);
	if (r != PKS_OK)
		goto out;
	e = vault_lookup(v, record_id);
	*out = e->st;
out:
	record_version_free(ver);
	passkey_key_free(key);
	if (pkcs8 != NULL)
		passkey_secret_free(pkcs8, pkcs8_len);
	free(spki);
	return r;
}

int vault_create(struct vault *v, const char *rp_id, const char *user_name,
		 const char *display_name, const struct record_state **out)
{
	return vault_create_passkey(v, rp_id, NULL, 0, user_name, display_name, RECORD_ALG_ES256,
				    out);
}

static bool vault_str_eq(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

int vault_edit(struct vault *v, const struct record_state *st, const char *user_name,
	       const char *display_name, const char *notes)
{
	struct record_version *ver = NULL;
	int r = PKS_OK;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	ver = record_version_new();
	if (ver == NULL)
		return PKS_ERR_NOMEM;
	vault_version_start(v, ver, record_state_id(st), RECORD_OP_UPDATE);
	if (user_name != NULL && !vault_str_eq(user_name, record_state_user_name(st)))
		r = record_version_set_field(ver, RECORD_FIELD_USER_NAME, user_name, ver->hlc);
	if (r == PKS_OK && display_name != NULL &&
	    !vault_str_eq(display_name, record_state_display_name(st)))
		r = record_version_set_field(ver, RECORD_FIELD_DISPLAY_NAME, display_name,
					     ver->hlc);
	if (r == PKS_OK && notes != NULL && !vault_str_eq(notes, record_state_notes(st)))
		r = record_version_set_field(ver, RECORD_FIELD_NOTES, notes, ver->hlc);
	if (r == PKS_OK && ver->fields != 0) {
		r = vault_commit_version(v, ver, true);
	}
	record_version_free(ver);
	return r;
}

int vault_delete(struct vault *v, const struct record_state *st)
{
	struct record_version *ver = NULL;
	int r;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	if (record_state_trashed(st))
		return PKS_OK;
	ver = record_version_new();
	if (ver == NULL)
		return PKS_ERR_NOMEM;
	vault_version_start(v, ver, record_state_id(st), RECORD_OP_DELETE);
	r = vault_commit_version(v, ver, true);
	record_version_free(ver);
	return r;
}

static int vault_restore_tags(struct record_version *ver, const struct record_state *st)
{
	struct record_delete_tag tags[RECORD_RESTORE_TAGS_MAX];
	size_t n = record_state_delete_tags(st, tags, RECORD_RESTORE_TAGS_MAX);
	int r = PKS_OK;

	/* More outstanding deletes than one restore may carry: undo the newest ones. */
	if (n > RECORD_RESTORE_TAGS_MAX) {
		record_state_delete_tags(st, NULL, 0);
		n = RECORD_RESTORE_TAGS_MAX;
	}
	for (size_t i = 0; i < n && r == PKS_OK; i++)
		r = record_version_add_restore_tag(ver, &tags[i]);
	return r;
}

int vault_restore(struct vault *v, const struct record_state *st)
{
	struct record_version *ver = NULL;
	int r;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	if (!record_state_trashed(st))
		return PKS_OK;
	ver = record_version_new();
	if (ver == NULL)
		return PKS_ERR_NOMEM;
	vault_version_start(v, ver, record_state_id(st), RECORD_OP_RESTORE);
	/* A restore undoes exactly the deletes this device has seen. */
	r = vault_restore_tags(ver, st);
	if (r == PKS_OK)
		r = vault_commit_version(v, ver, true);
	record_version_free(ver);
	return r;
}

/* ---- import ---- */

/* Same credential, same key: the public keys are equal (no secret is compared). */
static bool vault_same_key(const struct record_state *st, const struct passkey_item *it)
{
	size_t n = 0;
	const uint8_t *pk = record_state_public_key(st, &n);

	return pk != NULL && n == it->public_key_len && memcmp(pk, it->public_key, n) == 0 &&
	       (int)record_state_alg(st) == it->alg;
}

enum vault_import_action {
	VAULT_IMPORT_ADD,
	VAULT_IMPORT_UPDATE,
	VAULT_IMPORT_UNCHANGED,
};

/* Which of user name, display name and notes an import would change. */
static unsigned int vault_import_changes(const struct record_state *st,
					 const struct passkey_item *it)
{
	unsigned int fields = 0;

	if (!vault_str_eq(it->user_name, record_state_user_name(st)))
		fields |= RECORD_FIELD_BIT(RECORD_FIELD_USER_NAME);
	if (it->display_name != NULL &&
	    !vault_str_eq(it->display_name, record_state_display_name(st)))
		fields |= RECORD_FIELD_BIT(RECORD_FIELD_DISPLAY_NAME);
	if (it->notes != NULL && it->notes[0] != '\0' &&
	    !vault_str_eq(it->notes, record_state_notes(st)))
		fields |= RECORD_FIELD_BIT(RECORD_FIELD_NOTES);
	return fields;
}

/* Builds, seals, stores and applies the version one item asks for. */
static int vault_import_one(struct vault *v, const struct passkey_item *it,
			    const uint8_t record_id[RECORD_ID_LEN], enum vault_import_action action,
			    unsigned int fields)
{
	struct record_version *ver = record_version_new();
	const char *values[RECORD_FIELD_COUNT] = {it->user_name, it->display_name, it->notes};
	int r = PKS_OK;

	if (ver == NULL)
		return PKS_ERR_NOMEM;
	if (action == VAULT_IMPORT_ADD) {
		r = vault_version_from_item(v, ver, it, record_id);
	} else {
		vault_version_start(v, ver, record_id, RECORD_OP_UPDATE);
		for (int f = 0; f < RECORD_FIELD_COUNT && r == PKS_OK; f++)
			if (fields & RECORD_FIELD_BIT(f))
				r = record_version_set_field(ver, (enum record_field)f, values[f],
							     ver->hlc);
	}
	if (r == PKS_OK)
		r = vault_commit_version(v, ver, true);
	record_version_free(ver);
	return r;
}

int vault_import(struct vault *v, const struct passkey_list *list, vault_progress_fn progress,
		 void *progress_data, struct vault_import_stats *stats, char *err, size_t err_len)
{
	uint8_t(*ids)[RECORD_ID_LEN] = NULL;
	unsigned char *actions = NULL;
	unsigned int *changes = NULL;
	struct vault_import_stats s;
	int r = PKS_OK;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	memset(&s, 0, sizeof(s));
	s.total = list->count;
	ids = calloc(list->count ? list->count : 1, sizeof(*ids));
	actions = calloc(list->count ? list->count : 1, sizeof(*actions));
	changes = calloc(list->count ? list->count : 1, sizeof(*changes));
	if (ids == NULL || actions == NULL || changes == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}

	/* Check every item against the vault before writing anything. */
	for (size_t i = 0; i < list->count; i++) {
		const struct passkey_item *it = &list->items[i];
		struct vault_entry *e;

		r = record_id_derive(v->sec->id_key, it->rp_id, it->credential_id,
				     it->credential_id_len, ids[i]);
		if (r != PKS_OK) {
			snprintf(err, err_len,
				 "Passkey %zu of the file (rp id %.64s) is invalid: %s.", i + 1,
				 it->rp_id, pks_strerror(r));
			goto out;
		}
		e = vault_lookup(v, ids[i]);
		if (e == NULL || !record_state_has_create(e->st)) {
			actions[i] = VAULT_IMPORT_ADD;
			s.added++;
			continue;
		}
		if (record_state_purged(e->st) || !vault_same_key(e->st, it)) {
			snprintf(err, err_len,
				 "Passkey %zu of the file (rp id %.64s) has the credential id of a "
				 "passkey already in the vault but a different key; nothing was "
				 "imported.",
				 i + 1, it->rp_id);
			r = PKS_ERR_EXISTS;
			goto out;
		}
		changes[i] = vault_import_changes(e->st, it);
		actions[i] = changes[i] ? VAULT_IMPORT_UPDATE : VAULT_IMPORT_UNCHANGED;
		if (changes[i])
			s.updated++;
		else
			s.unchanged++;
	}

	/*
	 * One transaction: a crash or an error leaves the store as it was. Versions
	 * are made and applied one at a time, so memory stays flat however large the
	 * file; if the transaction fails, memory is rebuilt from the store.
	 */
	r = store_begin(v->store);
	if (r != PKS_OK)
		goto out;
	for (size_t i = 0; i < list->count; i++) {
		if (actions[i] != VAULT_IMPORT_UNCHANGED)
			r = vault_import_one(v, &list->items[i], ids[i],
					     (enum vault_import_action)actions[i], changes[i]);
		if (r != PKS_OK) {
			snprintf(err, err_len,
				 "Passkey %zu of the file (rp id %.64s) could not be "
				 "stored: %s; nothing was imported.",
				 i + 1, list->items[i].rp_id, pks_strerror(r));
			break;
		}
		if (progress != NULL && (i % 256 == 255 || i + 1 == list->count))
			progress(progress_data, i + 1, list->count);
	}
	if (r == PKS_OK) {
		r = store_commit(v->store);
		if (r != PKS_OK)
			snprintf(err, err_len, "Could not store the imported passkeys: %s.",
				 pks_strerror(r));
	} else {
		store_rollback(v->store);
	}
	if (r != PKS_OK && vault_reload(v) != PKS_OK)
		pks_log(&v->log, PKS_LOG_ERROR, "vault: reloading after a failed import failed");
	if (r == PKS_OK)
		*stats = s;
out:
	free(ids);
	free(actions);
	free(changes);
	return r;
}

/* ---- using keys ---- */

int vault_assert(struct vault *v, const struct record_state *st, const uint8_t client_data_hash[32],
		 uint8_t **auth_data, size_t *auth_data_len, uint8_t **signature,
		 size_t *signature_len)
{
	struct passkey_key *key = NULL;
	const uint8_t *pkcs8;
	size_t pkcs8_len;
	uint8_t flags = PASSKEY_FLAG_UP;
	int r;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	if (record_state_trashed(st) || record_state_purged(st))
		return PKS_ERR_STATE;
	r = record_state_private_key(st, &pkcs8, &pkcs8_len);
	if (r != PKS_OK)
		return r;
	r = passkey_key_from_pkcs8(pkcs8, pkcs8_len, &key);
	if (r != PKS_OK)
		return r;
	if (record_state_backup_eligible(st))
		flags |= PASSKEY_FLAG_BE;
	if (record_state_backup_state(st))
		flags |= PASSKEY_FLAG_BS;
	r = passkey_assert(key, record_state_rp_id(st), flags, client_data_hash, auth_data,
			   auth_data_len, signature, signature_len);
	passkey_key_free(key);
	return r;
}

static int vault_dup(const uint8_t *p, size_t n, uint8_t **out)
{
	*out = malloc(n ? n : 1);
	if (*out == NULL)
		return PKS_ERR_NOMEM;
	memcpy(*out, p, n);
	return PKS_OK;
}

/* A deep copy of a record as an export item; the private key goes to secure memory. */
static int vault_state_to_item(const struct record_state *st, struct passkey_item *it)
{
	const uint8_t *p;
	size_t n = 0;
	int r = PKS_ERR_NOMEM;

	memset(it, 0, sizeof(*it));
	it->alg = (int)record_state_alg(st);
	it->backup_eligible = record_state_backup_eligible(st);
	it->backup_state = record_state_backup_state(st);
	it->created_at_ms = record_state_created_at(st);
	it->rp_id = strdup(record_state_rp_id(st));
	it->user_name = strdup(record_state_user_name(st));
	it->display_name = strdup(record_state_display_name(st));
	it->notes = strdup(record_state_notes(st));
	it->source = strdup(record_state_source(st));
	if (it->rp_id == NULL || it->user_name == NULL || it->display_name == NULL ||
	    it->notes == NULL || it->source == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	p = record_state_credential_id(st, &n);
	if ((r = vault_dup(p, n, &it->credential_id)) != PKS_OK)
		goto out;
	it->credential_id_len = n;
	p = record_state_user_handle(st, &n);
	if ((r = vault_dup(p, n, &it->user_handle)) != PKS_OK)
		goto out;
	it->user_handle_len = n;
	p = record_state_public_key(st, &n);
	if ((r = vault_dup(p, n, &it->public_key)) != PKS_OK)
		goto out;
	it->public_key_len = n;
	r = record_state_private_key(st, &p, &n);
	if (r != PKS_OK)
		goto out;
	it->private_key = sodium_malloc(n);
	if (it->private_key == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	memcpy(it->private_key, p, n);
	it->private_key_len = n;
	r = PKS_OK;
out:
	if (r != PKS_OK)
		passkey_item_clear(it);
	return r;
}

int vault_export_items(const struct vault *v, const char *rp_id, const struct record_state *only,
		       struct passkey_list **out)
{
	struct passkey_list *l = NULL;
	size_t n = 0;
	int r = PKS_ERR_NOMEM;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return PKS_ERR_NOMEM;
	l->items = calloc(v->table_count ? v->table_count : 1, sizeof(*l->items));
	if (l->items == NULL)
		goto out;
	for (size_t i = 0; i < v->table_cap; i++) {
		const struct record_state *st = v->table[i].st;
		if (st == NULL || !record_state_has_create(st) || record_state_purged(st) ||
		    record_state_trashed(st))
			continue;
		if (only != NULL && st != only)
			continue;
		if (rp_id != NULL && strcmp(rp_id, record_state_rp_id(st)) != 0)
			continue;
		r = vault_state_to_item(st, &l->items[n]);
		if (r != PKS_OK)
			goto out;
		n++;
		l->count = n;
	}
	*out = l;
	l = NULL;
	r = PKS_OK;
out:
	passkey_list_free(l);
	return r;
}

int vault_store_stats(struct vault *v, uint64_t *versions, uint64_t *bytes)
{
	return store_version_stats(v->store, versions, bytes);
}
