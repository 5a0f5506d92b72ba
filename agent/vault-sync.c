/*
 * The vault as a sync replica (struct sync_replica_ops), and the membership
 * changes a device makes: adding a paired device, revoking one.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/hint.h"
#include "agent/vault-internal.h"
#include "common/err.h"

#define VAULT_PSK_CONTEXT "pksync member psk v1"

/* ---- identities and bundles ---- */

int vault_identity_new(struct vault_identity **out)
{
	struct vault_identity *id = sodium_malloc(sizeof(*id));

	if (id == NULL)
		return PKS_ERR_NOMEM;
	crypto_sign_keypair(id->sign_pk, id->sign_sk);
	randombytes_buf(id->dh_sk, sizeof(id->dh_sk));
	crypto_scalarmult_base(id->dh_pk, id->dh_sk);
	*out = id;
	return PKS_OK;
}

void vault_identity_free(struct vault_identity *id)
{
	if (id != NULL)
		sodium_free(id);
}

int vault_join_bundle_new(struct vault *v, struct vault_join_bundle **out)
{
	struct vault_join_bundle *b;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	b = sodium_malloc(sizeof(*b));
	if (b == NULL)
		return PKS_ERR_NOMEM;
	sodium_memzero(b, sizeof(*b));
	memcpy(b->vault_id, v->vault_id, VAULT_ID_LEN);
	memcpy(b->network_key, v->sec->network_key, 32);
	memcpy(b->id_key, v->sec->id_key, 32);
	b->n_epochs = v->sec->n_epochs;
	for (size_t i = 0; i < v->sec->n_epochs; i++) {
		b->epochs[i].epoch = v->sec->epochs[i].epoch;
		memcpy(b->epochs[i].key, v->sec->epochs[i].key, 32);
	}
	*out = b;
	return PKS_OK;
}

void vault_join_bundle_free(struct vault_join_bundle *b)
{
	if (b != NULL)
		sodium_free(b);
}

/* ---- accessors ---- */

const struct membership *vault_membership(const struct vault *v)
{
	return v->memb;
}

int vault_member_psk(const struct vault *v, uint8_t out[32])
{
	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	crypto_generichash(out, 32, (const uint8_t *)VAULT_PSK_CONTEXT,
			   sizeof(VAULT_PSK_CONTEXT) - 1, v->sec->network_key, 32);
	return PKS_OK;
}

int vault_hint_key(const struct vault *v, uint8_t out[HINT_KEY_LEN])
{
	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	hint_key_derive(v->sec->network_key, out);
	return PKS_OK;
}

const uint8_t *vault_dh_pk(const struct vault *v)
{
	return v->sec ? v->sec->dh_pk : NULL;
}

const uint8_t *vault_dh_sk(const struct vault *v)
{
	return v->sec ? v->sec->dh_sk : NULL;
}

uint64_t vault_skipped(const struct vault *v)
{
	return v->skipped;
}

int vault_remember_peer(struct vault *v, const char *addr)
{
	return store_peer_put(v->store, addr, vault_wall_ms());
}

int vault_peers_foreach(struct vault *v, int (*fn)(void *user, const char *addr), void *user)
{
	return store_peers_foreach(v->store, fn, user);
}

struct vault_find_ctx {
	const char *what;
	size_t n;
	bool by_name;
	int matches;
	struct membership_device found;
};

static int vault_find_device_one(void *user, const struct membership_device *d)
{
	struct vault_find_ctx *c = user;
	char hex[2 * DEVICE_ID_LEN + 1];

	if (c->by_name) {
		if (strcmp(d->name, c->what) != 0)
			return PKS_OK;
	} else {
		sodium_bin2hex(hex, sizeof(hex), d->device_id, DEVICE_ID_LEN);
		if (strncasecmp(hex, c->what, c->n) != 0)
			return PKS_OK;
	}
	c->matches++;
	c->found = *d;
	return PKS_OK;
}

int vault_find_device(const struct vault *v, const char *what, struct membership_device *out)
{
	struct vault_find_ctx c;
	int r;

	if (v->memb == NULL)
		return PKS_ERR_LOCKED;
	memset(&c, 0, sizeof(c));
	c.what = what;
	c.n = strlen(what);
	if (c.n == 0 || c.n > 2 * DEVICE_ID_LEN)
		return PKS_ERR_INVALID;
	/* A hex prefix first; a name when no id matches. */
	c.by_name = c.n < 4 || strspn(what, "0123456789abcdefABCDEF") != c.n;
	r = membership_foreach_device(v->memb, vault_find_device_one, &c);
	if (r == PKS_OK && c.matches == 0 && !c.by_name) {
		c.by_name = true;
		r = membership_foreach_device(v->memb, vault_find_device_one, &c);
	}
	if (r != PKS_OK)
		return r;
	if (c.matches == 0)
		return PKS_ERR_NOT_FOUND;
	if (c.matches > 1)
		return PKS_ERR_AMBIGUOUS;
	*out = c.found;
	return PKS_OK;
}

/* ---- membership changes ---- */

/* Opens every epoch key sealed to this device that is not known yet. */
static int vault_open_new_epochs(struct vault *v)
{
	uint32_t top = membership_epoch(v->memb);
	uint8_t *key = sodium_malloc(32);
	int r = PKS_OK;

	if (key == NULL)
		return PKS_ERR_NOMEM;
	for (uint32_t e = 2; e <= top && r == PKS_OK; e++) {
		if (vault_epoch_key(v, e) != NULL)
			continue;
		if (membership_epoch_key(v->memb, e, v->sec->dh_pk, v->sec->dh_sk, key) != PKS_OK)
			continue;
		r = vault_epoch_save(v, e, key);
	}
	sodium_free(key);
	return r;
}

/*
 * Strong remove: a revoked device's versions above its cutoff stop counting.
 * They are not deleted: membership is not monotonic (a revoke stops counting
 * when its author turns out to be strong-removed itself), and a deleted
 * version would then be lost for good. Instead the records are rebuilt from
 * the admissible versions whenever an author's admissible prefix moves;
 * *changed says so. The hidden versions stay stored and are synced on.
 */
static int vault_apply_revocations(struct vault *v, bool *changed)
{
	for (size_t i = 0; i < v->n_authors; i++) {
		struct vault_author *a = &v->authors[i];
		uint64_t p = vault_admissible_prefix(v, a->id, a->seq);
		bool cut = p < a->seq;

		if (cut == a->cut && (!cut || p == a->cutoff))
			continue;
		if (cut)
			pks_log(&v->log, PKS_LOG_INFO,
				"vault: %llu versions a revoked device wrote after its revocation "
				"no longer count",
				(unsigned long long)(a->seq - p));
		else
			pks_log(&v->log, PKS_LOG_INFO,
				"vault: a revocation stopped counting; its device's versions count "
				"again");
		*changed = true;
	}
	return PKS_OK;
}

/* Rotates to a fresh data key when a revoked device may know the current one. */
static int vault_rotate_if_needed(struct vault *v)
{
	uint8_t *key;
	uint8_t *op = NULL;
	size_t op_len = 0;
	int r;

	if (!membership_rotate_needed(v->memb) || !membership_is_member(v->memb, v->device_id))
		return PKS_OK;
	key = sodium_malloc(32);
	if (key == NULL)
		return PKS_ERR_NOMEM;
	randombytes_buf(key, 32);
	r = membership_rotate(v->memb, v->sec->sign_sk, key, vault_wall_ms(), &op, &op_len);
	free(op);
	if (r == PKS_OK)
		r = vault_memb_persist(v);
	/* Of concurrent rotations one wins everywhere; open whichever won. */
	if (r == PKS_OK)
		r = vault_open_new_epochs(v);
	sodium_free(key);
	return r;
}

/* After membership changed: persist, open new epoch keys, strong remove. */
static int vault_after_membership(struct vault *v, bool *reload)
{
	int r = vault_memb_persist(v);

	if (r == PKS_OK)
		r = vault_open_new_epochs(v);
	if (r == PKS_OK)
		r = vault_apply_revocations(v, reload);
	return r;
}

int vault_add_device(struct vault *v, const uint8_t sign_pk[32], const uint8_t dh_pk[32],
		     const char *name, uint8_t device_id[DEVICE_ID_LEN])
{
	uint8_t *op = NULL;
	size_t op_len = 0;
	int r;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	r = store_begin(v->store);
	if (r != PKS_OK)
		return r;
	r = membership_add_device(v->memb, v->sec->sign_sk, sign_pk, dh_pk, name, vault_wall_ms(),
				  &op, &op_len);
	free(op);
	if (r == PKS_OK)
		r = vault_memb_persist(v);
	if (r == PKS_OK)
		r = store_commit(v->store);
	if (r != PKS_OK) {
		store_rollback(v->store);
		return r;
	}
	record_device_id(sign_pk, device_id);
	pks_log(&v->log, PKS_LOG_INFO, "vault: added a device");
	return PKS_OK;
}

int vault_revoke(struct vault *v, const uint8_t device_id[DEVICE_ID_LEN])
{
	uint8_t *op = NULL;
	size_t op_len = 0;
	bool reload = false;
	int r;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	if (sodium_memcmp(device_id, v->device_id, DEVICE_ID_LEN) == 0)
		return PKS_ERR_INVALID;
	if (!membership_is_member(v->memb, device_id))
		return PKS_ERR_NOT_FOUND;
	r = store_begin(v->store);
	if (r != PKS_OK)
		return r;
	r = membership_revoke(v->memb, v->sec->sign_sk, device_id, vault_author_seq(v, device_id),
			      vault_wall_ms(), &op, &op_len);
	free(op);
	if (r == PKS_OK)
		r = vault_after_membership(v, &reload);
	if (r == PKS_OK)
		r = vault_rotate_if_needed(v);
	if (r == PKS_OK)
		r = store_commit(v->store);
	if (r != PKS_OK) {
		store_rollback(v->store);
		/* Memory may be ahead of the store: rebuild membership and records. */
		vault_lock(v);
		pks_log(&v->log, PKS_LOG_ERROR, "vault: revocation failed; vault locked");
		return r;
	}
	if (reload)
		r = vault_reload(v);
	pks_log(&v->log, PKS_LOG_INFO, "vault: revoked a device and rotated the data key");
	return r;
}

/* ---- the replica ---- */

static size_t replica_memb_heads(void *replica, uint8_t heads[][SYNC_ID_LEN], size_t max)
{
	struct vault *v = replica;

	return membership_heads(v->memb, heads, max);
}

static void replica_memb_digest(void *replica, uint8_t out[SYNC_DIGEST_LEN])
{
	struct vault *v = replica;

	membership_digest(v->memb, out);
}

struct replica_emit {
	sync_emit_fn emit;
	void *ctx;
};

static int replica_memb_emit(void *user, const uint8_t id[32], const uint8_t *op, size_t len)
{
	struct replica_emit *e = user;

	(void)id;
	return e->emit(e->ctx, op, len);
}

static int replica_memb_missing(void *replica, const uint8_t (*peer_heads)[SYNC_ID_LEN], size_t n,
				sync_emit_fn emit, void *ctx)
{
	struct vault *v = replica;
	struct replica_emit e = {emit, ctx};
	int r = membership_foreach_missing(v->memb, peer_heads, n, replica_memb_emit, &e);

	return r == 1 ? PKS_OK : r;
}

void vault_sync_idle(struct vault *v)
{
	size_t n;

	if (v->memb == NULL)
		return;
	n = membership_pending_count(v->memb);
	if (n > 0)
		pks_log(&v->log, PKS_LOG_INFO,
			"vault: dropped %zu membership operations still missing their parents", n);
	membership_clear_pending(v->memb);
}

static int replica_memb_apply(void *replica, const struct sync_blob *ops, size_t n)
{
	struct vault *v = replica;
	bool reload = false;
	int r;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	r = store_begin(v->store);
	if (r != PKS_OK)
		return r;
	for (size_t i = 0; i < n; i++) {
		int a = membership_apply(v->memb, ops[i].data, ops[i].len);
		if (a != PKS_OK && a != PKS_ERR_PENDING)
			pks_log(&v->log, PKS_LOG_WARN,
				"vault: refused a membership operation from a peer: %s",
				pks_strerror(a));
	}
	r = vault_after_membership(v, &reload);
	if (r == PKS_OK)
		r = vault_rotate_if_needed(v);
	if (r == PKS_OK)
		r = store_commit(v->store);
	if (r != PKS_OK) {
		store_rollback(v->store);
		vault_lock(v);
		pks_log(&v->log, PKS_LOG_ERROR, "vault: storing membership failed; vault locked");
		return r;
	}
	return reload ? vault_reload(v) : PKS_OK;
}

static bool replica_peer_allowed(void *replica, const uint8_t peer[SYNC_ID_LEN])
{
	struct vault *v = replica;

	return v->memb != NULL && membership_is_member(v->memb, peer) &&
	       membership_is_member(v->memb, v->device_id);
}

static int replica_vector(void *replica, struct sync_vector *out)
{
	struct vault *v = replica;

	out->n = 0;
	for (size_t i = 0; i < v->n_authors; i++) {
		if (v->authors[i].seq == 0)
			continue;
		if (out->n == SYNC_AUTHORS_MAX)
			return PKS_ERR_TOO_LARGE;
		memcpy(out->e[out->n].author, v->authors[i].id, SYNC_ID_LEN);
		out->e[out->n].seq = v->authors[i].seq;
		out->n++;
	}
	return PKS_OK;
}

static int replica_version_emit(void *user, const uint8_t record_id[16], const uint8_t author[32],
				uint64_t seq, uint32_t epoch, const uint8_t *blob, size_t len)
{
	struct replica_emit *e = user;

	(void)record_id, (void)author, (void)seq, (void)epoch;
	return e->emit(e->ctx, blob, len);
}

static int replica_versions_after(void *replica, const uint8_t author[SYNC_ID_LEN],
				  uint64_t after_seq, sync_emit_fn emit, void *ctx)
{
	struct vault *v = replica;
	struct replica_emit e = {emit, ctx};
	int r = store_versions_after(v->store, author, after_seq, replica_version_emit, &e);

	return r == 1 ? PKS_OK : r;
}

/*
 * Opening a batch: signature checks and decryption are most of the cost of a
 * first sync, and independent per version, so they run on every core; what
 * follows (order checks, store, merge) runs on the loop thread, in order.
 * The two overlap: workers take versions to open from a shared counter, the
 * loop thread commits each version as soon as it is open and, when the next
 * one is not open yet, opens one itself instead of waiting.
 */
#define REPLICA_OPEN_THREADS_MAX 4
#define REPLICA_OPEN_PARALLEL_MIN 16

struct replica_slot {
	const uint8_t *blob;
	size_t len;
	struct record_sealed_header h;
	uint8_t sign_pk[32];
	const uint8_t *key;
	struct record_version *ver;
	int err;
	bool hidden;        /* by a revoked author above its cutoff: stored, not merged */
	atomic_bool opened; /* ver and err are final (release by the opener) */
};

struct replica_batch {
	struct replica_slot *slots;
	size_t n;
	atomic_size_t next; /* the next slot nobody has taken to open */
};

/* Takes one slot to open and opens it; false when none is left. */
static bool replica_open_next(struct replica_batch *b)
{
	size_t i = atomic_fetch_add_explicit(&b->next, 1, memory_order_relaxed);
	struct replica_slot *sl;

	if (i >= b->n)
		return false;
	sl = &b->slots[i];
	if (sl->err == PKS_OK)
		sl->err = record_version_open(sl->blob, sl->len, sl->sign_pk, sl->key, &sl->ver);
	atomic_store_explicit(&sl->opened, true, memory_order_release);
	return true;
}

static void *replica_open_worker(void *arg)
{
	while (replica_open_next(arg))
		continue;
	return NULL;
}

/* Waits until slot i is open, opening others meanwhile. */
static void replica_wait_open(struct replica_batch *b, size_t i)
{
	while (!atomic_load_explicit(&b->slots[i].opened, memory_order_acquire))
		if (!replica_open_next(b))
			sched_yield(); /* a worker has it */
}

static size_t replica_threads(size_t n)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < REPLICA_OPEN_PARALLEL_MIN || cpus < 2)
		return 1;
	return cpus > REPLICA_OPEN_THREADS_MAX ? REPLICA_OPEN_THREADS_MAX : (size_t)cpus;
}

/* The clear checks before opening: header, admissible author, keys at hand. */
static void replica_prepare(struct vault *v, struct replica_slot *sl)
{
	struct membership_device d;

	sl->err = record_sealed_peek(sl->blob, sl->len, &sl->h);
	if (sl->err != PKS_OK)
		return;
	if (sl->h.seq <= vault_author_seq(v, sl->h.author)) {
		sl->err = PKS_ERR_EXISTS;
		return;
	}
	if (membership_get(v->memb, sl->h.author, &d) != PKS_OK) {
		sl->err = PKS_ERR_REJECTED;
		return;
	}
	/* Kept, verified, but not merged: the revoke may stop counting later. */
	sl->hidden = !membership_version_admissible(v->memb, sl->h.author, sl->h.seq);
	memcpy(sl->sign_pk, d.sign_pk, 32);
	sl->key = vault_epoch_key(v, sl->h.epoch);
	if (sl->key == NULL)
		sl->err = PKS_ERR_NOT_FOUND;
}

/*
 * Stores and merges one opened version. An error with *fatal false means
 * skip this version; with *fatal true (store, memory) the batch fails.
 */
static int replica_commit_one(struct vault *v, struct replica_slot *sl, bool *fatal)
{
	uint64_t held = vault_author_seq(v, sl->h.author);
	int r = sl->err;

	*fatal = false;
	if (r != PKS_OK)
		return r;
	if (sl->h.seq <= held)
		return PKS_ERR_EXISTS;
	/* Versions of one author apply in order, so the vector stays exact. */
	if (sl->h.seq != held + 1)
		return PKS_ERR_STATE;
	if (sl->ver->op == RECORD_OP_CREATE)
		r = record_version_check_id(sl->ver, v->sec->id_key);
	if (r == PKS_OK)
		r = store_version_put(v->store, sl->h.record_id, sl->h.author, sl->h.seq,
				      sl->h.epoch, sl->blob, sl->len);
	if (r == PKS_OK)
		r = vault_author_set(v, sl->h.author, sl->h.seq);
	if (r == PKS_OK && sl->hidden) {
		vault_author_hide_from(v, sl->h.author, sl->h.seq);
		v->hidden++;
	} else if (r == PKS_OK) {
		r = vault_merge_version(v, sl->ver);
	}
	*fatal = r == PKS_ERR_DB || r == PKS_ERR_NOMEM;
	return r;
}

static int replica_versions_apply(void *replica, const struct sync_blob *versions, size_t n)
{
	struct vault *v = replica;
	struct replica_slot *slots;
	struct replica_batch batch;
	pthread_t th[REPLICA_OPEN_THREADS_MAX];
	bool started[REPLICA_OPEN_THREADS_MAX] = {false};
	size_t skipped = 0, t = replica_threads(n);
	int r;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	slots = calloc(n ? n : 1, sizeof(*slots));
	if (slots == NULL)
		return PKS_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		slots[i].blob = versions[i].data;
		slots[i].len = versions[i].len;
		replica_prepare(v, &slots[i]);
		atomic_init(&slots[i].opened, false);
	}
	batch.slots = slots;
	batch.n = n;
	atomic_init(&batch.next, 0);
	/* Workers start before the transaction does; this thread is one of the t. */
	for (size_t k = 1; k < t; k++)
		started[k] = pthread_create(&th[k], NULL, replica_open_worker, &batch) == 0;
	r = store_begin_refetchable(v->store);
	for (size_t i = 0; i < n && r == PKS_OK; i++) {
		bool fatal = false;
		int a;

		replica_wait_open(&batch, i);
		a = replica_commit_one(v, &slots[i], &fatal);
		if (fatal)
			r = a;
		else if (a != PKS_OK && a != PKS_ERR_EXISTS)
			skipped++;
	}
	/* Every slot open (a failed batch still frees what workers opened). */
	while (replica_open_next(&batch))
		continue;
	for (size_t k = 1; k < t; k++)
		if (started[k])
			pthread_join(th[k], NULL);
	for (size_t i = 0; i < n; i++)
		record_version_free(slots[i].ver);
	free(slots);
	if (r == PKS_OK)
		r = store_commit(v->store);
	if (r != PKS_OK) {
		store_rollback(v->store);
		if (vault_reload(v) != PKS_OK)
			pks_log(&v->log, PKS_LOG_ERROR,
				"vault: reload after a failed batch failed");
		return r;
	}
	if (skipped > 0) {
		v->skipped += skipped;
		pks_log(&v->log, PKS_LOG_WARN,
			"vault: skipped %zu received versions (not admissible, out of order or "
			"not opening)",
			skipped);
	}
	return PKS_OK;
}

static void replica_digest(void *replica, uint8_t out[SYNC_DIGEST_LEN])
{
	vault_digest(replica, out);
}

struct replica_chain {
	uint64_t seq;
	uint8_t hash[32];
};

static int replica_chain_step(void *user, const uint8_t record_id[16], const uint8_t author[32],
			      uint64_t seq, uint32_t epoch, const uint8_t *blob, size_t len)
{
	struct replica_chain *c = user;
	crypto_generichash_state st;
	uint8_t h[32];

	(void)record_id, (void)author, (void)epoch;
	if (seq != c->seq + 1)
		return 1;
	crypto_generichash(h, sizeof(h), blob, len, NULL, 0);
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, c->hash, 32);
	crypto_generichash_update(&st, h, 32);
	crypto_generichash_final(&st, c->hash, 32);
	c->seq = seq;
	return PKS_OK;
}

static int replica_author_summary(void *replica, const uint8_t author[SYNC_ID_LEN], uint64_t *seq,
				  uint8_t hash[SYNC_DIGEST_LEN])
{
	struct vault *v = replica;
	struct replica_chain c;
	int r;

	memset(&c, 0, sizeof(c));
	r = store_versions_after(v->store, author, 0, replica_chain_step, &c);
	if (r != PKS_OK && r != 1)
		return r;
	*seq = c.seq;
	memcpy(hash, c.hash, 32);
	return PKS_OK;
}

/* Every epoch key held, newest first: the peer is an allowed member. */
static int replica_keys_export(void *replica, sync_emit_fn emit, void *ctx)
{
	struct vault *v = replica;
	uint8_t *blob;
	int r = PKS_OK;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	blob = sodium_malloc(SYNC_KEY_BLOB_LEN);
	if (blob == NULL)
		return PKS_ERR_NOMEM;
	for (size_t i = v->sec->n_epochs; i > 0 && r == PKS_OK; i--) {
		uint32_t e = v->sec->epochs[i - 1].epoch;
		blob[0] = (uint8_t)(e >> 24);
		blob[1] = (uint8_t)(e >> 16);
		blob[2] = (uint8_t)(e >> 8);
		blob[3] = (uint8_t)e;
		memcpy(blob + 4, v->sec->epochs[i - 1].key, 32);
		r = emit(ctx, blob, SYNC_KEY_BLOB_LEN);
	}
	sodium_free(blob);
	return r;
}

/*
 * Keys from a member for epochs that membership defines and this device has
 * no key for (it was added concurrently with that epoch's rotation, so the
 * rotation was not sealed to it). Members are trusted with data keys; a
 * wrong key only leaves that epoch's versions unopened here.
 */
static int replica_keys_apply(void *replica, const struct sync_blob *keys, size_t n)
{
	struct vault *v = replica;
	uint32_t top;
	size_t learned = 0;
	int r;

	if (v->sec == NULL)
		return PKS_ERR_LOCKED;
	top = membership_epoch(v->memb);
	r = store_begin(v->store);
	if (r != PKS_OK)
		return r;
	for (size_t i = 0; i < n && r == PKS_OK; i++) {
		const uint8_t *b = keys[i].data;
		uint32_t e;
		if (keys[i].len != SYNC_KEY_BLOB_LEN)
			continue;
		e = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
		if (e == 0 || e > top || vault_epoch_key(v, e) != NULL)
			continue;
		r = vault_epoch_save(v, e, b + 4);
		if (r == PKS_OK)
			learned++;
	}
	if (r == PKS_OK)
		r = store_commit(v->store);
	if (r != PKS_OK) {
		store_rollback(v->store);
		vault_lock(v);
		pks_log(&v->log, PKS_LOG_ERROR, "vault: storing data keys failed; vault locked");
		return r;
	}
	if (learned > 0)
		pks_log(&v->log, PKS_LOG_INFO,
			"vault: a member gave %zu data keys of epochs not sealed to this device",
			learned);
	return PKS_OK;
}

const struct sync_replica_ops vault_replica_ops = {
    .memb_heads = replica_memb_heads,
    .memb_digest = replica_memb_digest,
    .memb_missing = replica_memb_missing,
    .memb_apply = replica_memb_apply,
    .peer_allowed = replica_peer_allowed,
    .vector = replica_vector,
    .versions_after = replica_versions_after,
    .versions_apply = replica_versions_apply,
    .digest = replica_digest,
    .author_summary = replica_author_summary,
    .keys_export = replica_keys_export,
    .keys_apply = replica_keys_apply,
};
