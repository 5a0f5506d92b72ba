/*
 * Deterministic simulation of pksync devices: 3..5 replicas (more join
 * later, up to 7) make local changes (create, edit, delete, restore, purge,
 * bulk imports, the same credential imported on two devices), add, revoke,
 * rename and rotate, restart, drift their clocks by hours and sync with the
 * real engine (proto/sync) over a faulty in-memory channel (drops,
 * duplicates, reordering, cuts at frame boundaries, BUSY back-pressure),
 * through partitions. After N random steps the network heals and the run
 * checks:
 *   - every live member holds the same membership and the same records;
 *   - merge laws: the union of their versions folded in three random orders
 *     with duplicates gives the same digest;
 *   - no admitted CREATE's key material is gone or changed without a PURGE
 *     (and nothing is trashed without a DELETE) by an authorised author;
 *   - no version by a revoked device above its cutoff is merged anywhere;
 *   - no session sends versions to a peer its replica counts as no member;
 *   - a reconnect with nothing changed moves no version, op or
 *     reconciliation and at most SIM_QUIET_MSGS_MAX messages a side, and a
 *     change then reaches every member through live pushes alone.
 *
 * Everything is driven by one seed: the simulation's own generator and
 * libsodium's randombytes (replaced by a seeded stream), so `--seed N`
 * replays a failing run exactly (with the trace).
 *
 *   pksync-sim [--seed N | --runs K --first-seed S | --seeds A,B,...] [--steps N] [--direct]
 *              [--keyshare] [--hide] [--calm-revokes] [--harsh] [--verbose]
 *
 * The replica is the one briefed (drop a revoked author's versions above the
 * cutoff; open epoch keys only from ROTATE ops). Two switches change it:
 *   --keyshare  members that meet hand each other every epoch key they
 *               hold. Without it, a device added concurrently with a ROTATE
 *               (or revoked by a revoke that later stops counting) can never
 *               open that epoch, so the versions sealed under it never reach
 *               it: the protocol has no way to re-seal old epoch keys.
 *   --hide      keep a revoked author's versions (stored and synced, not
 *               merged) instead of dropping them. Membership is not
 *               monotonic (a revoke stops counting when its author turns
 *               out to be strong-removed), and a dropped version is lost for
 *               good when that happens.
 * The unit test runs with both; the 'sim' suite also runs without them.
 * --direct replaces the engine by a perfect exchange through the same
 * replica ops: a baseline that tells replica or merge faults from engine
 * ones. --calm-revokes keeps revoked devices and revokers out of further
 * revokes. --harsh makes most links faulty at four times the fault rates.
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "proto/hlc.h"
#include "proto/membership.h"
#include "proto/record.h"
#include "proto/sync.h"

#define SIM_MAX_REPLICAS 7
#define SIM_START_MIN 3
#define SIM_START_MAX 5
#define SIM_MAX_KEYS 64
#define SIM_DEFAULT_STEPS 300
#define SIM_STEPS_MAX 1000000
#define SIM_HEAL_DELIVERIES_MAX 2000000
#define SIM_HEAL_ROUNDS 3
#define SIM_QUEUE_MAX 4096
#define SIM_RP_POOL 12
#define SIM_ORDERS 3
#define SIM_SEED_LIST_MAX 64
/* Messages one side of a session may send when both already agree. */
#define SIM_QUIET_MSGS_MAX 8
#define SIM_EPOCH_T0_MS UINT64_C(1790000000000)
#define SIM_HOUR_MS (UINT64_C(3600) * 1000)

/* xoshiro256** seeded by splitmix64: small, fast, and the same everywhere. */
struct sim_rng {
	uint64_t s[4];
};

static uint64_t sim_splitmix(uint64_t *x)
{
	uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static void sim_rng_seed(struct sim_rng *g, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		g->s[i] = sim_splitmix(&seed);
}

static uint64_t sim_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t sim_rng_next(struct sim_rng *g)
{
	uint64_t *s = g->s;
	uint64_t result = sim_rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = sim_rotl(s[3], 45);
	return result;
}

/* Uniform in [0, n); n > 0. The modulo bias is irrelevant here. */
static uint64_t sim_rng_below(struct sim_rng *g, uint64_t n)
{
	return sim_rng_next(g) % n;
}

/* True with probability permille / 1000. */
static bool sim_rng_chance(struct sim_rng *g, unsigned int permille)
{
	return sim_rng_below(g, 1000) < permille;
}

static void sim_rng_bytes(struct sim_rng *g, uint8_t *buf, size_t n)
{
	while (n > 0) {
		uint64_t x = sim_rng_next(g);
		size_t k = n < 8 ? n : 8;

		memcpy(buf, &x, k);
		buf += k;
		n -= k;
	}
}

/*
 * libsodium's randomness (crypto_box_seal's ephemeral keys inside ROTATE
 * ops, sodium_malloc canaries) comes from this seeded stream, so a seed
 * replays bit for bit.
 */
static struct sim_rng sim_sodium_rng;

static const char *sim_randombytes_name(void)
{
	return "pksync-sim";
}

static uint32_t sim_randombytes_random(void)
{
	return (uint32_t)sim_rng_next(&sim_sodium_rng);
}

static void sim_randombytes_buf(void *buf, size_t n)
{
	sim_rng_bytes(&sim_sodium_rng, buf, n);
}

static struct randombytes_implementation sim_randombytes = {
    .implementation_name = sim_randombytes_name,
    .random = sim_randombytes_random,
    .stir = NULL,
    .uniform = NULL,
    .buf = sim_randombytes_buf,
    .close = NULL,
};

static void *sim_xalloc(size_t n)
{
	void *p = calloc(1, n == 0 ? 1 : n);

	if (p == NULL) {
		fprintf(stderr, "sim: out of memory\n");
		exit(2);
	}
	return p;
}

static void *sim_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n == 0 ? 1 : n);

	if (q == NULL) {
		fprintf(stderr, "sim: out of memory\n");
		exit(2);
	}
	return q;
}

static uint8_t *sim_xdup(const uint8_t *p, size_t n)
{
	uint8_t *q = sim_xalloc(n);

	memcpy(q, p, n);
	return q;
}

struct sim_bytes {
	uint8_t *p;
	size_t n;
};

static void sim_bytes_wipe_free(struct sim_bytes *b)
{
	if (b->p != NULL) {
		sodium_memzero(b->p, b->n);
		free(b->p);
	}
	b->p = NULL;
	b->n = 0;
}

/* One author's sealed versions in seq order: v[i] has seq i + 1. */
struct sim_author {
	uint8_t id[DEVICE_ID_LEN];
	struct sim_bytes *v;
	size_t n, cap;
	size_t merged; /* v[0..merged) are in the states; < n only with --hide */
};

struct sim_record {
	uint8_t id[RECORD_ID_LEN];
	struct record_state *st;
};

/* An epoch key this replica learned (several per epoch after concurrent rotations). */
struct sim_key {
	uint32_t epoch;
	uint8_t key[RECORD_DATA_KEY_LEN];
};

/* A replica's secrets, in one sodium_malloc block. */
struct sim_secrets {
	uint8_t sign_sk[64];
	uint8_t dh_sk[32];
	uint8_t id_key[RECORD_ID_KEY_LEN];
	struct sim_key keys[SIM_MAX_KEYS];
};

struct sim;

struct sim_replica {
	struct sim *sim;
	int idx;
	uint8_t sign_pk[32], dh_pk[32], id[DEVICE_ID_LEN];
	struct sim_secrets *sec;
	size_t n_keys;
	struct membership *memb;
	/* Persisted membership ops (what a restart re-applies) and their ids. */
	struct sim_bytes *ops;
	uint8_t (*op_ids)[MEMBERSHIP_OP_ID_LEN];
	size_t n_ops, cap_ops;
	/* Persisted versions, by author, sorted by author id. */
	struct sim_author *authors;
	size_t n_authors, cap_authors;
	/* Merged states, sorted by record id. */
	struct sim_record *recs;
	size_t n_recs, cap_recs;
	struct hlc_clock clock;
	int64_t skew_ms;
	uint64_t my_seq; /* persisted: never reused, even after a revoke truncates */
	bool dirty;      /* changed: push to every session */
	uint64_t skipped, undecryptable, dropped;
};

struct sim_msg {
	uint8_t *p;
	size_t n;
};

struct sim_queue {
	struct sim_msg *m;
	size_t n, cap;
};

struct sim_link;

struct sim_end {
	struct sim_link *link;
	int side;
};

/* A connection between replicas a < b; side 0 is a, side 1 is b. */
struct sim_link {
	struct sim *sim;
	int a, b;
	bool up;
	struct sync_session *s[2];
	struct sim_end end[2];
	struct sim_queue q[2]; /* q[side]: sent by side, not yet delivered */
	bool busy[2];
	size_t cap; /* queue length at which send() says BUSY, 0 = never */
	unsigned int p_drop, p_dup, p_reorder, p_cut; /* permille per message */
	bool synced[2], equal[2];
	bool shared; /* keys shared once both sessions were live */
	/*
	 * 1 + the side whose session failed and closes gracefully, 0 when
	 * none: what it sent still reaches the peer (see sim_link_fail()).
	 */
	int closing;
	char close_why[96];
};

/* A CREATE the simulation authored, to check that key material stays. */
struct sim_truth {
	uint8_t record_id[RECORD_ID_LEN];
	uint8_t author[DEVICE_ID_LEN];
	uint64_t seq;
	char rp_id[32];
	uint8_t cred[16], handle[16], priv[48], pub[65];
	bool be;
	unsigned int accepted_by; /* bit per replica that ever admitted it */
};

struct sim_stats {
	uint64_t local_ops, connects, closes_error, closes_timeout, closes_fault, closes_other;
	uint64_t msgs, dropped, duplicated, reordered, cut, busy;
	uint64_t adds, revokes, rotates, renames, restarts, partitions, imports;
	uint64_t records; /* records held by the first live member at the check */
	uint64_t bulk_imports;
	uint64_t quiet_sessions, quiet_msgs, quiet_unequal;
	uint64_t edits, shadowed_edits;
	uint64_t reconciliations, live_members, synced_unequal, empty_vaults, heal_rounds;
};

struct sim {
	uint64_t seed;
	struct sim_rng rng;
	bool verbose;
	bool healing;
	bool direct;   /* engine-free baseline: pairs exchange through the replica ops directly */
	bool keyshare; /* members hand each other their epoch keys when they meet */
	int heal_rounds;
	/*
	 * --calm-revokes: no device that was revoked (by anyone, known or not)
	 * authors membership ops, and no device that revoked is revoked, so
	 * no revoke is ever concurrent with a revoke of its author.
	 */
	bool calm;
	unsigned int revoked_mask, revoker_mask;
	/*
	 * --hide: a replica keeps a revoked author's versions above its cutoff
	 * (stored, synced, not merged) instead of dropping them, so a
	 * revocation that a later op undoes (strong remove of the revoker)
	 * loses nothing.
	 */
	bool hide;
	bool harsh; /* --harsh: most links faulty, four times the fault rates */
	struct sim_replica *r[SIM_MAX_REPLICAS];
	int n;
	struct sim_link link[SIM_MAX_REPLICAS][SIM_MAX_REPLICAS];
	int group[SIM_MAX_REPLICAS];
	uint64_t partition_until;
	uint64_t now_ms;
	uint64_t step;
	struct sim_truth *truth;
	size_t n_truth, cap_truth;
	struct sim_stats st;
	bool failed;
	char fail[512];
	uint8_t vault_id[16];
};

static void sim_log(struct sim *sim, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sim_log(struct sim *sim, const char *fmt, ...)
{
	va_list ap;

	if (!sim->verbose)
		return;
	printf("# [%" PRIu64 "] ", sim->step);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static void sim_failf(struct sim *sim, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records the first failure of a run; the run stops at the next check. */
static void sim_failf(struct sim *sim, const char *fmt, ...)
{
	va_list ap;

	if (sim->failed)
		return;
	sim->failed = true;
	va_start(ap, fmt);
	vsnprintf(sim->fail, sizeof(sim->fail), fmt, ap);
	va_end(ap);
}

static const char *sim_hex8(const uint8_t *p, char out[17])
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < 8; i++) {
		out[2 * i] = hex[p[i] >> 4];
		out[2 * i + 1] = hex[p[i] & 15];
	}
	out[16] = '\0';
	return out;
}

/* ---- replica storage ---------------------------------------------------- */

static struct sim_author *sim_author_find(struct sim_replica *rep, const uint8_t id[DEVICE_ID_LEN],
					  bool create)
{
	size_t lo = 0, hi = rep->n_authors;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = memcmp(rep->authors[mid].id, id, DEVICE_ID_LEN);

		if (c == 0)
			return &rep->authors[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!create)
		return NULL;
	if (rep->n_authors == rep->cap_authors) {
		rep->cap_authors = rep->cap_authors ? 2 * rep->cap_authors : 8;
		rep->authors =
		    sim_xrealloc(rep->authors, rep->cap_authors * sizeof(rep->authors[0]));
	}
	memmove(&rep->authors[lo + 1], &rep->authors[lo],
		(rep->n_authors - lo) * sizeof(rep->authors[0]));
	memset(&rep->authors[lo], 0, sizeof(rep->authors[0]));
	memcpy(rep->authors[lo].id, id, DEVICE_ID_LEN);
	rep->n_authors++;
	return &rep->authors[lo];
}

static void sim_author_push(struct sim_author *a, const uint8_t *blob, size_t len)
{
	if (a->n == a->cap) {
		a->cap = a->cap ? 2 * a->cap : 16;
		a->v = sim_xrealloc(a->v, a->cap * sizeof(a->v[0]));
	}
	a->v[a->n].p = sim_xdup(blob, len);
	a->v[a->n].n = len;
	a->n++;
}

static void sim_authors_free(struct sim_author *authors, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < authors[i].n; j++)
			sim_bytes_wipe_free(&authors[i].v[j]);
		free(authors[i].v);
	}
	free(authors);
}

/* Finds or creates the state of a record in a sorted array. */
static struct sim_record *sim_record_find(struct sim_record **recs, size_t *n, size_t *cap,
					  const uint8_t id[RECORD_ID_LEN], bool create)
{
	size_t lo = 0, hi = *n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = memcmp((*recs)[mid].id, id, RECORD_ID_LEN);

		if (c == 0)
			return &(*recs)[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!create)
		return NULL;
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 16;
		*recs = sim_xrealloc(*recs, *cap * sizeof((*recs)[0]));
	}
	memmove(&(*recs)[lo + 1], &(*recs)[lo], (*n - lo) * sizeof((*recs)[0]));
	memset(&(*recs)[lo], 0, sizeof((*recs)[0]));
	memcpy((*recs)[lo].id, id, RECORD_ID_LEN);
	(*recs)[lo].st = record_state_new(id);
	if ((*recs)[lo].st == NULL) {
		fprintf(stderr, "sim: out of memory\n");
		exit(2);
	}
	(*n)++;
	return &(*recs)[lo];
}

static void sim_records_free(struct sim_record *recs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		record_state_free(recs[i].st);
	free(recs);
}

/* BLAKE2b-256 over (record id, state digest) of every record, ascending by id. */
static void sim_records_digest(const struct sim_record *recs, size_t n, uint8_t out[32])
{
	crypto_generichash_state h;
	uint8_t d[RECORD_DIGEST_LEN];

	crypto_generichash_init(&h, NULL, 0, 32);
	for (size_t i = 0; i < n; i++) {
		record_state_digest(recs[i].st, d);
		crypto_generichash_update(&h, recs[i].id, RECORD_ID_LEN);
		crypto_generichash_update(&h, d, sizeof(d));
	}
	crypto_generichash_final(&h, out, 32);
}

static void sim_key_add(struct sim_replica *rep, uint32_t epoch, const uint8_t key[32])
{
	for (size_t i = 0; i < rep->n_keys; i++)
		if (rep->sec->keys[i].epoch == epoch &&
		    sodium_memcmp(rep->sec->keys[i].key, key, 32) == 0)
			return;
	if (rep->n_keys == SIM_MAX_KEYS) {
		sim_failf(rep->sim, "replica %d: more than %d epoch keys", rep->idx, SIM_MAX_KEYS);
		return;
	}
	rep->sec->keys[rep->n_keys].epoch = epoch;
	memcpy(rep->sec->keys[rep->n_keys].key, key, 32);
	rep->n_keys++;
}

/* Opens every ROTATE key sealed to us that we do not hold yet. */
static void sim_keys_refresh_upto(struct sim_replica *rep, uint32_t want)
{
	uint32_t top = membership_epoch(rep->memb);
	uint8_t key[32];

	/*
	 * Every accepted ROTATE's key, losers of concurrent rotations included,
	 * and epochs past the current one: a ROTATE whose author was later
	 * strong-removed no longer counts, but versions were sealed under it.
	 */
	if (want > top)
		top = want;
	for (uint32_t e = 2; e <= top && e < 1000; e++) {
		for (size_t n = 0; n < SIM_MAX_KEYS; n++) {
			int r = membership_epoch_key_nth(rep->memb, e, n, rep->dh_pk,
							 rep->sec->dh_sk, key);

			if (r == PKS_ERR_NOT_FOUND)
				break;
			if (r == PKS_OK)
				sim_key_add(rep, e, key);
		}
	}
	sodium_memzero(key, sizeof(key));
}

static void sim_keys_refresh(struct sim_replica *rep)
{
	sim_keys_refresh_upto(rep, 0);
}

static bool sim_has_key(const struct sim_replica *rep, uint32_t epoch, const uint8_t key[32])
{
	for (size_t i = 0; i < rep->n_keys; i++)
		if (rep->sec->keys[i].epoch == epoch &&
		    sodium_memcmp(rep->sec->keys[i].key, key, 32) == 0)
			return true;
	return false;
}

static bool sim_has_epoch(const struct sim_replica *rep, uint32_t epoch)
{
	for (size_t i = 0; i < rep->n_keys; i++)
		if (rep->sec->keys[i].epoch == epoch)
			return true;
	return false;
}

/* Opens a sealed version with any key this replica knows for its epoch. */
static int sim_open(const struct sim_replica *rep, const uint8_t *blob, size_t len,
		    const uint8_t sign_pk[32], uint32_t epoch, struct record_version **out)
{
	int r = PKS_ERR_NOT_FOUND;

	for (size_t i = 0; i < rep->n_keys; i++) {
		if (rep->sec->keys[i].epoch != epoch)
			continue;
		r = record_version_open(blob, len, sign_pk, rep->sec->keys[i].key, out);
		if (r == PKS_OK)
			break;
	}
	return r;
}

static void sim_truth_accepted(struct sim *sim, const struct record_version *v, int idx)
{
	if (v->op != RECORD_OP_CREATE)
		return;
	for (size_t i = 0; i < sim->n_truth; i++) {
		struct sim_truth *t = &sim->truth[i];

		if (t->seq == v->seq && memcmp(t->author, v->author, DEVICE_ID_LEN) == 0)
			t->accepted_by |= 1u << idx;
	}
}

static void sim_observe(struct sim_replica *rep, const struct record_version *v)
{
	uint64_t wall = (uint64_t)((int64_t)rep->sim->now_ms + rep->skew_ms);

	if (v->hlc != 0)
		(void)hlc_clock_observe(&rep->clock, v->hlc, wall);
	for (int f = 0; f < RECORD_FIELD_COUNT; f++)
		if (v->fields & RECORD_FIELD_BIT(f))
			(void)hlc_clock_observe(&rep->clock, v->field[f].stamp, wall);
}

/*
 * The replica's admission of one sealed version (sync's versions_apply, a
 * local change, or a restart): the checks an agent makes, then store and
 * merge. Returns PKS_OK when stored, 1 when skipped, 2 when skipped because
 * no key we hold opens it, or an error.
 */
static int sim_admit(struct sim_replica *rep, const uint8_t *blob, size_t len)
{
	struct record_sealed_header h;
	struct membership_device dev;
	struct record_version *v = NULL;
	struct sim_author *a;
	struct sim_record *rec;
	const char *why = "malformed";
	bool admissible;
	uint64_t held = 0;
	int r;

	if (record_sealed_peek(blob, len, &h) != PKS_OK)
		goto skip;
	a = sim_author_find(rep, h.author, false);
	held = a != NULL ? a->n : 0;
	why = "not the next seq";
	if (h.seq != held + 1)
		goto skip;
	why = "unknown author";
	if (membership_get(rep->memb, h.author, &dev) != PKS_OK)
		goto skip;
	why = "inadmissible";
	admissible = membership_version_admissible(rep->memb, h.author, h.seq);
	if (!admissible && !rep->sim->hide)
		goto skip;
	if (!sim_has_epoch(rep, h.epoch))
		sim_keys_refresh_upto(rep, h.epoch);
	if (sim_open(rep, blob, len, dev.sign_pk, h.epoch, &v) != PKS_OK) {
		if (rep->sim->verbose) {
			char hex[17];
			uint8_t k[32];
			int r0 = h.epoch > 1
				     ? membership_epoch_key_nth(rep->memb, h.epoch, 0, rep->dh_pk,
								rep->sec->dh_sk, k)
				     : PKS_OK;

			sodium_memzero(k, sizeof(k));
			sim_log(rep->sim,
				"replica %d cannot open %s seq %" PRIu64 " (epoch %" PRIu32
				", current %" PRIu32 ", winner key: %s)",
				rep->idx, sim_hex8(h.author, hex), h.seq, h.epoch,
				membership_epoch(rep->memb), pks_strerror(r0));
		}
		rep->undecryptable++;
		record_version_free(v);
		rep->skipped++;
		return 2;
	}
	why = "record id does not match";
	if (v->op == RECORD_OP_CREATE && record_version_check_id(v, rep->sec->id_key) != PKS_OK)
		goto skip;
	sim_observe(rep, v);
	a = sim_author_find(rep, h.author, true);
	sim_author_push(a, blob, len);
	if (!admissible || a->merged != a->n - 1) {
		/* Hidden: kept for a later un-revoke, not merged. */
		record_version_free(v);
		return PKS_OK;
	}
	rec = sim_record_find(&rep->recs, &rep->n_recs, &rep->cap_recs, v->record_id, true);
	r = record_state_apply(rec->st, v);
	if (r != PKS_OK && r != PKS_ERR_REJECTED) {
		sim_failf(rep->sim, "replica %d: record_state_apply of an opened version: %s",
			  rep->idx, pks_strerror(r));
		record_version_free(v);
		return r;
	}
	a->merged = a->n;
	sim_truth_accepted(rep->sim, v, rep->idx);
	record_version_free(v);
	return PKS_OK;
skip:
	if (rep->sim->verbose && h.seq > held) {
		char hex[17];

		sim_log(rep->sim, "replica %d skips %s seq %" PRIu64 " (holds %" PRIu64 "): %s",
			rep->idx, sim_hex8(h.author, hex), h.seq, held, why);
	}
	record_version_free(v);
	rep->skipped++;
	return 1;
}

/*
 * --hide: the store keeps every version it verified once; the states are
 * the fold of each author's admissible prefix. A version that is hidden now
 * (its author revoked or, for the moment, not a device at all) stays stored
 * for the day membership undoes that.
 */
static void sim_merge_stored(struct sim_replica *rep)
{
	for (size_t i = 0; i < rep->n_authors; i++) {
		struct sim_author *a = &rep->authors[i];
		struct membership_device dev;

		a->merged = 0;
		if (membership_get(rep->memb, a->id, &dev) != PKS_OK)
			continue;
		for (size_t j = 0; j < a->n; j++) {
			struct record_sealed_header h;
			struct record_version *v = NULL;
			struct sim_record *rec;
			int r;

			if (!membership_version_admissible(rep->memb, a->id, j + 1) ||
			    record_sealed_peek(a->v[j].p, a->v[j].n, &h) != PKS_OK)
				break;
			if (!sim_has_epoch(rep, h.epoch))
				sim_keys_refresh_upto(rep, h.epoch);
			if (sim_open(rep, a->v[j].p, a->v[j].n, dev.sign_pk, h.epoch, &v) !=
			    PKS_OK) {
				rep->undecryptable++;
				break;
			}
			rec = sim_record_find(&rep->recs, &rep->n_recs, &rep->cap_recs,
					      v->record_id, true);
			r = record_state_apply(rec->st, v);
			if (r != PKS_OK && r != PKS_ERR_REJECTED)
				sim_failf(rep->sim, "replica %d: record_state_apply: %s", rep->idx,
					  pks_strerror(r));
			sim_truth_accepted(rep->sim, v, rep->idx);
			record_version_free(v);
			a->merged = j + 1;
		}
	}
}

/* Rebuilds every record state from the stored versions (after a revoke truncated some). */
static void sim_rebuild_states(struct sim_replica *rep)
{
	struct sim_author *old = rep->authors;
	size_t n_old = rep->n_authors;

	sim_records_free(rep->recs, rep->n_recs);
	rep->recs = NULL;
	rep->n_recs = rep->cap_recs = 0;
	if (rep->sim->hide) {
		sim_merge_stored(rep);
		return;
	}
	rep->authors = NULL;
	rep->n_authors = rep->cap_authors = 0;
	for (size_t i = 0; i < n_old; i++) {
		for (size_t j = 0; j < old[i].n; j++) {
			int r = sim_admit(rep, old[i].v[j].p, old[i].v[j].n);

			/* A stored version that no longer opens is lost: the check says so. */
			if (r == 2)
				rep->dropped++;
			if (r != PKS_OK)
				break;
		}
	}
	sim_authors_free(old, n_old);
}

/* Strong remove: drops each revoked author's versions above its cutoff. */
static void sim_enforce_revokes(struct sim_replica *rep)
{
	bool changed = false;

	if (rep->sim->hide) {
		/* Merge exactly each author's admissible prefix. */
		for (size_t i = 0; i < rep->n_authors && !changed; i++) {
			struct sim_author *a = &rep->authors[i];
			size_t want = a->n;

			while (want > 0 && !membership_version_admissible(rep->memb, a->id, want))
				want--;
			changed = want != a->merged;
		}
		if (changed)
			sim_rebuild_states(rep);
		return;
	}

	for (size_t i = 0; i < rep->n_authors; i++) {
		struct sim_author *a = &rep->authors[i];
		size_t keep = a->n;

		while (keep > 0 && !membership_version_admissible(rep->memb, a->id, keep))
			keep--;
		if (keep == a->n)
			continue;
		sim_log(rep->sim, "replica %d drops %zu versions of a revoked author", rep->idx,
			a->n - keep);
		for (size_t j = keep; j < a->n; j++)
			sim_bytes_wipe_free(&a->v[j]);
		a->n = keep;
		changed = true;
	}
	if (changed)
		sim_rebuild_states(rep);
}

static bool sim_has_op(const struct sim_replica *rep, const uint8_t id[MEMBERSHIP_OP_ID_LEN])
{
	for (size_t i = 0; i < rep->n_ops; i++)
		if (memcmp(rep->op_ids[i], id, MEMBERSHIP_OP_ID_LEN) == 0)
			return true;
	return false;
}

static void sim_store_op(struct sim_replica *rep, const uint8_t *op, size_t len)
{
	uint8_t id[MEMBERSHIP_OP_ID_LEN];

	membership_op_id(op, len, id);
	if (sim_has_op(rep, id))
		return;
	if (rep->n_ops == rep->cap_ops) {
		rep->cap_ops = rep->cap_ops ? 2 * rep->cap_ops : 16;
		rep->ops = sim_xrealloc(rep->ops, rep->cap_ops * sizeof(rep->ops[0]));
		rep->op_ids = sim_xrealloc(rep->op_ids, rep->cap_ops * sizeof(rep->op_ids[0]));
	}
	rep->ops[rep->n_ops].p = sim_xdup(op, len);
	rep->ops[rep->n_ops].n = len;
	memcpy(rep->op_ids[rep->n_ops], id, MEMBERSHIP_OP_ID_LEN);
	rep->n_ops++;
}

/* After any membership change: new epoch keys, strong remove. */
static void sim_membership_changed(struct sim_replica *rep)
{
	sim_keys_refresh(rep);
	sim_enforce_revokes(rep);
}

static int sim_apply_op(struct sim_replica *rep, const uint8_t *op, size_t len)
{
	int r = membership_apply(rep->memb, op, len);

	switch (r) {
	case PKS_OK:
	case PKS_ERR_PENDING:
		sim_store_op(rep, op, len);
		return PKS_OK;
	case PKS_ERR_NOMEM:
		return r;
	default:
		rep->skipped++;
		return PKS_OK;
	}
}

/* ---- sync_replica_ops ----------------------------------------------------- */

static size_t sim_ops_memb_heads(void *replica, uint8_t heads[][SYNC_ID_LEN], size_t max)
{
	struct sim_replica *rep = replica;
	size_t n = membership_heads(rep->memb, heads, max);

	return n < max ? n : max;
}

static void sim_ops_memb_digest(void *replica, uint8_t out[SYNC_DIGEST_LEN])
{
	struct sim_replica *rep = replica;

	membership_digest(rep->memb, out);
}

struct sim_emit {
	sync_emit_fn emit;
	void *ctx;
};

static int sim_emit_op(void *user, const uint8_t id[32], const uint8_t *op, size_t len)
{
	struct sim_emit *e = user;

	return e->emit(e->ctx, op, len);
}

static int sim_ops_memb_missing(void *replica, const uint8_t (*peer_heads)[SYNC_ID_LEN], size_t n,
				sync_emit_fn emit, void *ctx)
{
	struct sim_replica *rep = replica;
	struct sim_emit e = {emit, ctx};
	int r = membership_foreach_missing(rep->memb, peer_heads, n, sim_emit_op, &e);

	return r == 1 ? PKS_OK : r;
}

static int sim_ops_memb_apply(void *replica, const struct sync_blob *ops, size_t n)
{
	struct sim_replica *rep = replica;
	int r = PKS_OK;

	for (size_t i = 0; i < n && r == PKS_OK; i++)
		r = sim_apply_op(rep, ops[i].data, ops[i].len);
	sim_membership_changed(rep);
	return r;
}

static bool sim_ops_peer_allowed(void *replica, const uint8_t peer[SYNC_ID_LEN])
{
	struct sim_replica *rep = replica;

	return membership_is_member(rep->memb, peer);
}

static int sim_ops_vector(void *replica, struct sync_vector *out)
{
	struct sim_replica *rep = replica;

	out->n = 0;
	for (size_t i = 0; i < rep->n_authors; i++) {
		if (rep->authors[i].n == 0)
			continue;
		if (out->n == SYNC_AUTHORS_MAX)
			return PKS_ERR_TOO_LARGE;
		memcpy(out->e[out->n].author, rep->authors[i].id, SYNC_ID_LEN);
		out->e[out->n].seq = rep->authors[i].n;
		out->n++;
	}
	return PKS_OK;
}

static int sim_ops_versions_after(void *replica, const uint8_t author[SYNC_ID_LEN],
				  uint64_t after_seq, sync_emit_fn emit, void *ctx)
{
	struct sim_replica *rep = replica;
	struct sim_author *a = sim_author_find(rep, author, false);

	if (a == NULL)
		return PKS_OK;
	for (uint64_t s = after_seq; s < a->n; s++) {
		int r = emit(ctx, a->v[s].p, a->v[s].n);

		if (r == 1)
			break;
		if (r != PKS_OK)
			return r;
	}
	return PKS_OK;
}

static int sim_ops_versions_apply(void *replica, const struct sync_blob *versions, size_t n)
{
	struct sim_replica *rep = replica;

	for (size_t i = 0; i < n; i++) {
		int r = sim_admit(rep, versions[i].data, versions[i].len);

		if (r < 0)
			return r;
	}
	return PKS_OK;
}

static void sim_ops_digest(void *replica, uint8_t out[SYNC_DIGEST_LEN])
{
	struct sim_replica *rep = replica;

	sim_records_digest(rep->recs, rep->n_recs, out);
}

static void sim_chain_hash(const struct sim_bytes *v, size_t n, uint8_t hash[32])
{
	uint8_t h[64];

	memset(h, 0, 32);
	for (size_t i = 0; i < n; i++) {
		crypto_generichash(h + 32, 32, v[i].p, v[i].n, NULL, 0);
		crypto_generichash(h, 32, h, 64, NULL, 0);
	}
	memcpy(hash, h, 32);
}

static int sim_ops_author_summary(void *replica, const uint8_t author[SYNC_ID_LEN], uint64_t *seq,
				  uint8_t hash[SYNC_DIGEST_LEN])
{
	struct sim_replica *rep = replica;
	struct sim_author *a = sim_author_find(rep, author, false);

	sim_chain_hash(a != NULL ? a->v : NULL, a != NULL ? a->n : 0, hash);
	*seq = a != NULL ? a->n : 0;
	return PKS_OK;
}

static const struct sync_replica_ops sim_replica_ops = {
    .memb_heads = sim_ops_memb_heads,
    .memb_digest = sim_ops_memb_digest,
    .memb_missing = sim_ops_memb_missing,
    .memb_apply = sim_ops_memb_apply,
    .peer_allowed = sim_ops_peer_allowed,
    .vector = sim_ops_vector,
    .versions_after = sim_ops_versions_after,
    .versions_apply = sim_ops_versions_apply,
    .digest = sim_ops_digest,
    .author_summary = sim_ops_author_summary,
};

/* ---- replicas ------------------------------------------------------------- */

static uint64_t sim_wall(const struct sim_replica *rep)
{
	int64_t w = (int64_t)rep->sim->now_ms + rep->skew_ms;

	return w > 0 ? (uint64_t)w : 1;
}

static struct sim_replica *sim_replica_new(struct sim *sim)
{
	struct sim_replica *rep = sim_xalloc(sizeof(*rep));
	uint8_t seed[32];

	rep->sim = sim;
	rep->idx = sim->n;
	rep->sec = sodium_malloc(sizeof(*rep->sec));
	if (rep->sec == NULL) {
		fprintf(stderr, "sim: out of memory\n");
		exit(2);
	}
	memset(rep->sec, 0, sizeof(*rep->sec));
	sim_rng_bytes(&sim->rng, seed, sizeof(seed));
	crypto_sign_seed_keypair(rep->sign_pk, rep->sec->sign_sk, seed);
	sim_rng_bytes(&sim->rng, seed, sizeof(seed));
	crypto_box_seed_keypair(rep->dh_pk, rep->sec->dh_sk, seed);
	sodium_memzero(seed, sizeof(seed));
	record_device_id(rep->sign_pk, rep->id);
	if (membership_new(&rep->memb) != PKS_OK) {
		fprintf(stderr, "sim: out of memory\n");
		exit(2);
	}
	/* Most clocks are right; some are hours off either way. */
	if (sim_rng_chance(&sim->rng, 300))
		rep->skew_ms = ((int64_t)sim_rng_below(&sim->rng, 5 * SIM_HOUR_MS) -
				(int64_t)(5 * SIM_HOUR_MS / 2));
	hlc_clock_init(&rep->clock, 0, 0);
	sim->r[sim->n++] = rep;
	return rep;
}

static void sim_replica_free(struct sim_replica *rep)
{
	if (rep == NULL)
		return;
	membership_free(rep->memb);
	for (size_t i = 0; i < rep->n_ops; i++)
		sim_bytes_wipe_free(&rep->ops[i]);
	free(rep->ops);
	free(rep->op_ids);
	sim_authors_free(rep->authors, rep->n_authors);
	sim_records_free(rep->recs, rep->n_recs);
	sodium_free(rep->sec);
	free(rep);
}

static int sim_replica_of(const struct sim *sim, const uint8_t id[DEVICE_ID_LEN])
{
	for (int i = 0; i < sim->n; i++)
		if (memcmp(sim->r[i]->id, id, DEVICE_ID_LEN) == 0)
			return i;
	return -1;
}

static bool sim_self_member(const struct sim_replica *rep)
{
	return membership_is_member(rep->memb, rep->id);
}

/*
 * The protocol has no way to hand an epoch key to a member that cannot open
 * the ROTATE that carries it (a device added concurrently with the rotation,
 * or any member after two concurrent rotations to one epoch, whose versions
 * under the losing key no member that only knows the winner can open). With
 * --keyshare two replicas that count each other as members exchange every
 * epoch key they hold when they meet, as a fixed protocol would have to.
 */
static void sim_keyshare(struct sim *sim, struct sim_replica *x, struct sim_replica *y)
{
	struct sim_replica *pair[2] = {x, y};

	if (!sim->keyshare || !sim_self_member(x) || !sim_self_member(y) ||
	    !membership_is_member(x->memb, y->id) || !membership_is_member(y->memb, x->id))
		return;
	for (int d = 0; d < 2; d++)
		for (size_t i = 0; i < pair[d]->n_keys; i++)
			sim_key_add(pair[1 - d], pair[d]->sec->keys[i].epoch,
				    pair[d]->sec->keys[i].key);
}

/* ---- links ---------------------------------------------------------------- */

static void sim_queue_clear(struct sim_queue *q)
{
	for (size_t i = 0; i < q->n; i++)
		free(q->m[i].p);
	free(q->m);
	memset(q, 0, sizeof(*q));
}

static void sim_queue_push(struct sim_queue *q, uint8_t *p, size_t n, bool front)
{
	if (q->n == q->cap) {
		q->cap = q->cap ? 2 * q->cap : 16;
		q->m = sim_xrealloc(q->m, q->cap * sizeof(q->m[0]));
	}
	if (front) {
		memmove(&q->m[1], &q->m[0], q->n * sizeof(q->m[0]));
		q->m[0].p = p;
		q->m[0].n = n;
	} else {
		q->m[q->n].p = p;
		q->m[q->n].n = n;
	}
	q->n++;
}

static struct sim_msg sim_queue_pop(struct sim_queue *q)
{
	struct sim_msg m = q->m[0];

	q->n--;
	memmove(&q->m[0], &q->m[1], q->n * sizeof(q->m[0]));
	return m;
}

static struct sim_link *sim_link_get(struct sim *sim, int i, int j)
{
	return i < j ? &sim->link[i][j] : &sim->link[j][i];
}

static void sim_link_close(struct sim_link *l, const char *why)
{
	if (!l->up)
		return;
	sim_log(l->sim, "link %d-%d closed: %s (phases %d/%d)", l->a, l->b, why,
		(int)sync_session_phase(l->s[0]), (int)sync_session_phase(l->s[1]));
	for (int s = 0; s < 2; s++) {
		struct sync_stats st;

		sync_session_stats(l->s[s], &st);
		l->sim->st.reconciliations += st.reconciliations;
		sync_session_free(l->s[s]);
		l->s[s] = NULL;
		sim_queue_clear(&l->q[s]);
		l->busy[s] = false;
	}
	l->up = false;
	l->closing = 0;
}

/*
 * A session failed on side k (a refused peer, a protocol error): its owner
 * closes the connection as transport/tcp.c's tcp_conn_close() does. It
 * stops reading (what the peer sent and did not get through is lost, as is
 * anything the peer sends now) but lets what it already queued leave
 * (uv_shutdown after the queue, within a linger time). The refusal of a
 * revoked peer is the way it learns of its revocation: the refusing side
 * has sent the MEMB_OPS it lacks before it checks peer_allowed, and
 * dropping them with the refusal (as an abrupt close did here) left the
 * revoked device counting itself a member for good when every member
 * refused it before those ops arrived. The link closes for good once the
 * queue is delivered (or a fault cuts it).
 */
static void sim_link_fail(struct sim_link *l, int k, const char *why)
{
	if (!l->up || l->closing != 0)
		return;
	l->sim->st.closes_error++;
	sim_log(l->sim, "link %d-%d: %d closes: %s (phases %d/%d, %zu messages to deliver)", l->a,
		l->b, k == 0 ? l->a : l->b, why, (int)sync_session_phase(l->s[0]),
		(int)sync_session_phase(l->s[1]), l->q[k].n);
	snprintf(l->close_why, sizeof(l->close_why), "%s", why);
	sim_queue_clear(&l->q[1 - k]);
	l->busy[0] = l->busy[1] = false;
	l->closing = 1 + k;
	if (l->q[k].n == 0)
		sim_link_close(l, l->close_why);
}

/*
 * Revocation (DESIGN §1, journey 4): once a replica counts its peer as no
 * member, its session must not hand that peer record versions.
 */
static void sim_check_sent(struct sim_link *l, int side, const uint8_t *msg, size_t len)
{
	struct sim_replica *me = l->sim->r[side == 0 ? l->a : l->b];
	struct sim_replica *peer = l->sim->r[side == 0 ? l->b : l->a];
	struct sync_msg *m;

	if (membership_is_member(me->memb, peer->id))
		return;
	m = sim_xalloc(sizeof(*m));
	if (sync_msg_decode(msg, len, m) != PKS_OK)
		sim_failf(l->sim, "replica %d sent a message that does not decode", me->idx);
	else if (m->type == SYNC_MSG_VERSIONS && m->n_blobs > 0)
		sim_failf(l->sim,
			  "replica %d sent %zu versions to replica %d, which it counts as no "
			  "member",
			  me->idx, m->n_blobs, peer->idx);
	free(m);
}

static int sim_cb_send(void *user, const uint8_t *msg, size_t len)
{
	struct sim_end *e = user;
	struct sim_link *l = e->link;

	if (len > SYNC_MSG_MAX)
		sim_failf(l->sim, "link %d-%d: a %zu-byte message exceeds SYNC_MSG_MAX", l->a, l->b,
			  len);
	if (l->closing != 0) {
		/* Written to a connection its peer no longer reads: lost. */
		sim_check_sent(l, e->side, msg, len);
		return PKS_OK;
	}
	if (l->q[e->side].n >= SIM_QUEUE_MAX || (l->cap != 0 && l->q[e->side].n >= l->cap)) {
		l->busy[e->side] = true;
		l->sim->st.busy++;
		return PKS_ERR_BUSY;
	}
	sim_check_sent(l, e->side, msg, len);
	sim_queue_push(&l->q[e->side], sim_xdup(msg, len), len, false);
	return PKS_OK;
}

static void sim_cb_on_synced(void *user, bool equal, const uint8_t peer_digest[SYNC_DIGEST_LEN])
{
	struct sim_end *e = user;

	e->link->synced[e->side] = true;
	e->link->equal[e->side] = equal;
	if (!equal)
		e->link->sim->st.synced_unequal++;
}

static void sim_cb_on_applied(void *user, size_t versions, size_t ops)
{
	struct sim_end *e = user;
	struct sim_link *l = e->link;

	l->sim->r[e->side == 0 ? l->a : l->b]->dirty = true;
}

static const struct sync_session_cb sim_session_cb = {
    .send = sim_cb_send,
    .on_synced = sim_cb_on_synced,
    .on_applied = sim_cb_on_applied,
};

static bool sim_can_connect(const struct sim *sim, int i, int j)
{
	return sim->partition_until <= sim->step || sim->group[i] == sim->group[j];
}

static void sim_link_open(struct sim *sim, int i, int j, bool perfect)
{
	struct sim_link *l = sim_link_get(sim, i, j);
	int r;

	if (l->up)
		return;
	memset(l, 0, sizeof(*l));
	l->sim = sim;
	l->a = i < j ? i : j;
	l->b = i < j ? j : i;
	for (int s = 0; s < 2; s++) {
		l->end[s].link = l;
		l->end[s].side = s;
	}
	l->cap = sim_rng_chance(&sim->rng, 500) ? 1 + sim_rng_below(&sim->rng, 12) : 0;
	if (!perfect && sim_rng_chance(&sim->rng, sim->harsh ? 800 : 500)) {
		uint64_t scale = sim->harsh ? 4 : 1;

		l->p_drop = (unsigned int)sim_rng_below(&sim->rng, 30 * scale);
		l->p_dup = (unsigned int)sim_rng_below(&sim->rng, 30 * scale);
		l->p_reorder = (unsigned int)sim_rng_below(&sim->rng, 30 * scale);
		l->p_cut = (unsigned int)sim_rng_below(&sim->rng, 20 * scale);
	}
	for (int s = 0; s < 2; s++) {
		struct sim_replica *me = sim->r[s == 0 ? l->a : l->b];
		struct sim_replica *peer = sim->r[s == 0 ? l->b : l->a];

		r = sync_session_new(&sim_replica_ops, me, peer->id, &sim_session_cb, &l->end[s],
				     &l->s[s]);
		if (r != PKS_OK) {
			sim_failf(sim, "sync_session_new: %s", pks_strerror(r));
			for (int k = 0; k < s; k++)
				sync_session_free(l->s[k]);
			return;
		}
	}
	l->up = true;
	sim->st.connects++;
	sim_keyshare(sim, sim->r[l->a], sim->r[l->b]);
	sim_log(sim, "link %d-%d open%s cap=%zu drop=%u dup=%u reorder=%u cut=%u", l->a, l->b,
		perfect ? " (perfect)" : "", l->cap, l->p_drop, l->p_dup, l->p_reorder, l->p_cut);
	for (int s = 0; s < 2; s++) {
		r = sync_session_start(l->s[s]);
		if (r != PKS_OK) {
			sim->st.closes_error++;
			sim_link_close(l, pks_strerror(r));
			return;
		}
	}
}

static void sim_close_links_of(struct sim *sim, int idx, const char *why)
{
	for (int j = 0; j < sim->n; j++)
		if (j != idx)
			sim_link_close(sim_link_get(sim, idx, j), why);
}

/* Pushes local changes of dirty replicas to each of their sessions. */
static void sim_push_dirty(struct sim *sim)
{
	for (int round = 0; round < 4; round++) {
		bool any = false;

		for (int i = 0; i < sim->n; i++) {
			if (!sim->r[i]->dirty)
				continue;
			sim->r[i]->dirty = false;
			any = true;
			for (int j = 0; j < sim->n; j++) {
				struct sim_link *l;
				int r, side;

				if (j == i)
					continue;
				l = sim_link_get(sim, i, j);
				side = i == l->a ? 0 : 1;
				/* A session that failed gets nothing; its peer runs on. */
				if (!l->up || l->closing == 1 + side)
					continue;
				r = sync_session_local_change(l->s[side]);
				if (r != PKS_OK && sim->healing && r != PKS_ERR_REJECTED)
					sim_failf(sim, "heal: local_change on %d->%d: %s", i, j,
						  pks_strerror(r));
				if (r != PKS_OK) {
					char why[96];

					snprintf(why, sizeof(why), "local_change on %d->%d: %s", i,
						 j, pks_strerror(r));
					if (l->closing != 0) {
						/* Both ends gave up. */
						sim->st.closes_error++;
						sim_link_close(l, why);
					} else {
						sim_link_fail(l, side, why);
					}
				}
			}
		}
		if (!any)
			break;
	}
}

static bool sim_link_pending(const struct sim_link *l)
{
	return l->up && (l->q[0].n > 0 || l->q[1].n > 0);
}

static bool sim_link_live(const struct sim_link *l)
{
	return l->up && l->closing == 0 && sync_session_phase(l->s[0]) == SYNC_PHASE_LIVE &&
	       sync_session_phase(l->s[1]) == SYNC_PHASE_LIVE;
}

/* Delivers the head message of one direction of a link, with the link's faults. */
static void sim_deliver(struct sim *sim, struct sim_link *l, int side)
{
	struct sim_queue *q = &l->q[side];
	struct sim_msg m;
	int r;

	if (q->n == 0)
		return;
	if (l->p_cut != 0 && sim_rng_chance(&sim->rng, l->p_cut)) {
		sim->st.cut++;
		sim->st.closes_fault++;
		sim_link_close(l, "cut at a frame boundary");
		return;
	}
	if (l->p_reorder != 0 && q->n >= 2 && sim_rng_chance(&sim->rng, l->p_reorder)) {
		struct sim_msg t = q->m[0];

		q->m[0] = q->m[1];
		q->m[1] = t;
		sim->st.reordered++;
	}
	m = sim_queue_pop(q);
	if (l->p_drop != 0 && sim_rng_chance(&sim->rng, l->p_drop)) {
		sim->st.dropped++;
		free(m.p);
		goto drained;
	}
	if (l->p_dup != 0 && sim_rng_chance(&sim->rng, l->p_dup)) {
		sim_queue_push(q, sim_xdup(m.p, m.n), m.n, true);
		sim->st.duplicated++;
	}
	sim->st.msgs++;
	r = sync_session_receive(l->s[1 - side], m.p, m.n);
	free(m.p);
	if (r != PKS_OK) {
		char why[96];

		snprintf(why, sizeof(why), "receive by %d failed: %s", side == 0 ? l->b : l->a,
			 pks_strerror(r));
		if (sim->healing && r != PKS_ERR_REJECTED)
			sim_failf(sim, "heal: session %d-%d, perfect channel: %s", l->a, l->b, why);
		if (l->closing != 0) {
			/* Both ends gave up; the other stopped reading already. */
			sim->st.closes_error++;
			sim_link_close(l, why);
		} else {
			sim_link_fail(l, 1 - side, why);
		}
		return;
	}
drained:
	if (l->up && l->closing != 0) {
		if (l->q[l->closing - 1].n == 0)
			sim_link_close(l, l->close_why);
		return;
	}
	if (l->up && !l->shared && sim_link_live(l)) {
		l->shared = true;
		sim_keyshare(sim, sim->r[l->a], sim->r[l->b]);
	}
	if (l->up && l->busy[side] && (l->cap == 0 || q->n < l->cap)) {
		l->busy[side] = false;
		r = sync_session_drained(l->s[side]);
		if (r != PKS_OK && sim->healing)
			sim_failf(sim, "heal: drained on %d-%d: %s", l->a, l->b, pks_strerror(r));
		if (r != PKS_OK)
			sim_link_fail(l, side, "drained failed");
	}
}

/* Delivers one message on a random busy link; false when nothing is in flight. */
static bool sim_deliver_one(struct sim *sim)
{
	struct sim_link *cand[SIM_MAX_REPLICAS * SIM_MAX_REPLICAS];
	size_t n = 0;
	struct sim_link *l;
	int side;

	for (int i = 0; i < sim->n; i++)
		for (int j = i + 1; j < sim->n; j++)
			if (sim_link_pending(&sim->link[i][j]))
				cand[n++] = &sim->link[i][j];
	if (n == 0)
		return false;
	l = cand[sim_rng_below(&sim->rng, n)];
	if (l->q[0].n > 0 && l->q[1].n > 0)
		side = (int)sim_rng_below(&sim->rng, 2);
	else
		side = l->q[0].n > 0 ? 0 : 1;
	sim_deliver(sim, l, side);
	sim_push_dirty(sim);
	return true;
}

/*
 * A link with nothing in flight whose sessions are not both live will never
 * move again: the transport's idle timeout closes it. During the heal, with
 * a perfect channel, that is a failure of the engine.
 */
static void sim_close_stalled(struct sim *sim)
{
	for (int i = 0; i < sim->n; i++) {
		for (int j = i + 1; j < sim->n; j++) {
			struct sim_link *l = &sim->link[i][j];

			if (!l->up || sim_link_pending(l) || l->busy[0] || l->busy[1] ||
			    sim_link_live(l))
				continue;
			sim->st.closes_timeout++;
			sim_link_close(l, "idle timeout");
		}
	}
}

/* ---- the engine-free baseline --------------------------------------------- */

struct sim_collect {
	struct sync_blob *b;
	size_t n, cap;
};

static int sim_collect_emit(void *ctx, const uint8_t *data, size_t len)
{
	struct sim_collect *c = ctx;

	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->b = sim_xrealloc(c->b, c->cap * sizeof(c->b[0]));
	}
	c->b[c->n].data = sim_xdup(data, len);
	c->b[c->n].len = len;
	c->n++;
	return PKS_OK;
}

static void sim_collect_free(struct sim_collect *c)
{
	for (size_t i = 0; i < c->n; i++)
		free((void *)c->b[i].data);
	free(c->b);
	memset(c, 0, sizeof(*c));
}

/*
 * What a perfect session would exchange, applied through the same replica
 * ops without the engine: when this baseline converges and the engine runs
 * do not, the engine is at fault.
 */
static void sim_direct_sync(struct sim *sim, int i, int j)
{
	struct sim_replica *pair[2] = {sim->r[i], sim->r[j]};
	uint8_t heads[SYNC_HEADS_MAX][SYNC_ID_LEN];
	struct sync_vector *vec = sim_xalloc(sizeof(*vec));
	struct sim_collect c;
	int r;

	memset(&c, 0, sizeof(c));
	for (int d = 0; d < 2; d++) {
		struct sim_replica *src = pair[d], *dst = pair[1 - d];
		size_t n = sim_ops_memb_heads(dst, heads, SYNC_HEADS_MAX);

		r = sim_ops_memb_missing(src, (const uint8_t(*)[SYNC_ID_LEN])heads, n,
					 sim_collect_emit, &c);
		if (r == PKS_OK)
			r = sim_ops_memb_apply(dst, c.b, c.n);
		sim_collect_free(&c);
		if (r != PKS_OK)
			sim_failf(sim, "direct sync %d-%d: membership: %s", i, j, pks_strerror(r));
	}
	if (!sim_ops_peer_allowed(pair[0], pair[1]->id) ||
	    !sim_ops_peer_allowed(pair[1], pair[0]->id))
		goto out;
	sim_keyshare(sim, pair[0], pair[1]);
	for (int d = 0; d < 2; d++) {
		struct sim_replica *src = pair[d], *dst = pair[1 - d];

		if (sim_ops_vector(dst, vec) != PKS_OK)
			break;
		for (size_t a = 0; a < src->n_authors; a++) {
			uint64_t after = 0;

			for (size_t k = 0; k < vec->n; k++)
				if (memcmp(vec->e[k].author, src->authors[a].id, SYNC_ID_LEN) == 0)
					after = vec->e[k].seq;
			r = sim_ops_versions_after(src, src->authors[a].id, after, sim_collect_emit,
						   &c);
			if (r == PKS_OK)
				r = sim_ops_versions_apply(dst, c.b, c.n);
			sim_collect_free(&c);
			if (r != PKS_OK)
				sim_failf(sim, "direct sync %d-%d: versions: %s", i, j,
					  pks_strerror(r));
		}
	}
out:
	free(vec);
}

static void sim_fingerprint(struct sim *sim, uint8_t out[32])
{
	crypto_generichash_state h;
	uint8_t d[32];

	crypto_generichash_init(&h, NULL, 0, 32);
	for (int i = 0; i < sim->n; i++) {
		membership_digest(sim->r[i]->memb, d);
		crypto_generichash_update(&h, d, 32);
		sim_records_digest(sim->r[i]->recs, sim->r[i]->n_recs, d);
		crypto_generichash_update(&h, d, 32);
	}
	crypto_generichash_final(&h, out, 32);
}

static void sim_direct_heal(struct sim *sim)
{
	uint8_t before[32], after[32];

	for (int round = 0; round < 4 * SIM_MAX_REPLICAS && !sim->failed; round++) {
		sim_fingerprint(sim, before);
		for (int i = 0; i < sim->n; i++)
			for (int j = i + 1; j < sim->n; j++)
				sim_direct_sync(sim, i, j);
		sim_fingerprint(sim, after);
		if (memcmp(before, after, 32) == 0)
			return;
	}
	sim_failf(sim, "direct heal did not settle");
}

/* ---- local operations ----------------------------------------------------- */

static struct sim_replica *sim_pick_member(struct sim *sim)
{
	int cand[SIM_MAX_REPLICAS], n = 0;

	for (int i = 0; i < sim->n; i++)
		if (sim_self_member(sim->r[i]) && !(sim->calm && (sim->revoked_mask & (1u << i))))
			cand[n++] = i;
	if (n == 0)
		return NULL;
	return sim->r[cand[sim_rng_below(&sim->rng, (uint64_t)n)]];
}

/* The newest epoch this replica can seal under. */
/*
 * The key to seal under: the winning ROTATE's key of the newest epoch this
 * replica can open (an agent never seals under a losing rotation's key),
 * else the vault's epoch 1 key.
 */
static uint32_t sim_seal_key(struct sim_replica *rep, uint8_t key[32])
{
	for (uint32_t e = membership_epoch(rep->memb); e > 1; e--) {
		if (membership_epoch_key(rep->memb, e, rep->dh_pk, rep->sec->dh_sk, key) ==
		    PKS_OK) {
			sim_key_add(rep, e, key);
			return e;
		}
	}
	for (size_t i = 0; i < rep->n_keys; i++) {
		if (rep->sec->keys[i].epoch == 1) {
			memcpy(key, rep->sec->keys[i].key, 32);
			return 1;
		}
	}
	return 0;
}

/* Some key of the epoch, or NULL. */
static const uint8_t *sim_epoch_key(const struct sim_replica *rep, uint32_t epoch)
{
	for (size_t i = 0; i < rep->n_keys; i++)
		if (rep->sec->keys[i].epoch == epoch)
			return rep->sec->keys[i].key;
	return NULL;
}

/* Seals, admits and announces a version the replica authored. v is consumed. */
static void sim_author(struct sim_replica *rep, struct record_version *v)
{
	struct sim *sim = rep->sim;
	uint8_t nonce[RECORD_NONCE_LEN], *blob = NULL, key[RECORD_DATA_KEY_LEN];
	size_t len = 0;
	int r;

	memcpy(v->author, rep->id, DEVICE_ID_LEN);
	v->seq = ++rep->my_seq;
	v->epoch = sim_seal_key(rep, key);
	sim_rng_bytes(&sim->rng, nonce, sizeof(nonce));
	if (v->epoch == 0) {
		sim_failf(sim, "replica %d holds no key to seal under", rep->idx);
		goto out;
	}
	r = record_version_seal(v, key, rep->sec->sign_sk, nonce, &blob, &len);
	if (r != PKS_OK) {
		sim_failf(sim, "replica %d: seal op %d: %s", rep->idx, (int)v->op, pks_strerror(r));
		goto out;
	}
	r = sim_admit(rep, blob, len);
	if (r != PKS_OK)
		sim_failf(sim, "replica %d refused its own version seq %" PRIu64, rep->idx, v->seq);
	rep->dirty = true;
	sim->st.local_ops++;
out:
	sodium_memzero(key, sizeof(key));
	free(blob);
	record_version_free(v);
}

static struct record_version *sim_version_new(void)
{
	struct record_version *v = record_version_new();

	if (v == NULL) {
		fprintf(stderr, "sim: out of memory\n");
		exit(2);
	}
	return v;
}

static void sim_random_text(struct sim_rng *g, char *out, size_t cap)
{
	static const char *const words[] = {"alice", "bob", "work", "home", "é", "x", "", "Ω"};
	size_t n = 0;
	uint64_t k = 1 + sim_rng_below(g, 3);

	out[0] = '\0';
	for (uint64_t i = 0; i < k; i++) {
		int w = snprintf(out + n, cap - n, "%s%" PRIu64, words[sim_rng_below(g, 8)],
				 sim_rng_below(g, 100));
		if (w < 0 || (size_t)w >= cap - n)
			break;
		n += (size_t)w;
	}
}

static void sim_truth_add(struct sim *sim, const struct sim_truth *t)
{
	if (sim->n_truth == sim->cap_truth) {
		sim->cap_truth = sim->cap_truth ? 2 * sim->cap_truth : 32;
		sim->truth = sim_xrealloc(sim->truth, sim->cap_truth * sizeof(sim->truth[0]));
	}
	sim->truth[sim->n_truth++] = *t;
}

static void sim_op_create(struct sim_replica *rep)
{
	struct sim *sim = rep->sim;
	struct record_version *v = sim_version_new();
	struct sim_truth t;
	hlc_t now = hlc_clock_now(&rep->clock, sim_wall(rep));
	char name[64];

	memset(&t, 0, sizeof(t));
	if (sim->n_truth > 0 && sim_rng_chance(&sim->rng, 150)) {
		/* The same credential imported on a second device. */
		t = sim->truth[sim_rng_below(&sim->rng, sim->n_truth)];
		sim->st.imports++;
	} else {
		snprintf(t.rp_id, sizeof(t.rp_id), "rp%" PRIu64 ".example",
			 sim_rng_below(&sim->rng, SIM_RP_POOL));
		sim_rng_bytes(&sim->rng, t.cred, sizeof(t.cred));
		sim_rng_bytes(&sim->rng, t.handle, sizeof(t.handle));
		sim_rng_bytes(&sim->rng, t.priv, sizeof(t.priv));
		sim_rng_bytes(&sim->rng, t.pub, sizeof(t.pub));
		t.be = sim_rng_chance(&sim->rng, 800);
	}
	t.accepted_by = 0;
	v->op = RECORD_OP_CREATE;
	v->hlc = now;
	if (record_id_derive(rep->sec->id_key, t.rp_id, t.cred, sizeof(t.cred), v->record_id) !=
		PKS_OK ||
	    record_version_set_credential(v, t.cred, sizeof(t.cred), t.rp_id, t.handle,
					  sizeof(t.handle)) != PKS_OK ||
	    record_version_set_keys(v, RECORD_ALG_ES256, t.priv, sizeof(t.priv), t.pub,
				    sizeof(t.pub)) != PKS_OK ||
	    record_version_set_source(v, "sim") != PKS_OK) {
		sim_failf(sim, "building a CREATE failed");
		record_version_free(v);
		return;
	}
	v->backup_eligible = t.be;
	v->backup_state = t.be;
	v->created_at = sim_wall(rep);
	sim_random_text(&sim->rng, name, sizeof(name));
	if (record_version_set_field(v, RECORD_FIELD_USER_NAME, name, now) != PKS_OK) {
		sim_failf(sim, "setting a field failed");
		record_version_free(v);
		return;
	}
	memcpy(t.record_id, v->record_id, RECORD_ID_LEN);
	memcpy(t.author, rep->id, DEVICE_ID_LEN);
	t.seq = rep->my_seq + 1;
	sim_truth_add(sim, &t);
	sim_log(sim, "replica %d creates seq %" PRIu64, rep->idx, t.seq);
	sim_author(rep, v);
}

/* A random record of the replica's for which want() holds, or NULL. */
static struct sim_record *sim_pick_record(struct sim_replica *rep,
					  bool (*want)(const struct record_state *))
{
	size_t n = 0, k;

	for (size_t i = 0; i < rep->n_recs; i++)
		n += want(rep->recs[i].st);
	if (n == 0)
		return NULL;
	k = sim_rng_below(&rep->sim->rng, n);
	for (size_t i = 0; i < rep->n_recs; i++)
		if (want(rep->recs[i].st) && k-- == 0)
			return &rep->recs[i];
	return NULL;
}

static bool sim_want_visible(const struct record_state *st)
{
	return record_state_visible(st);
}

static bool sim_want_trashed(const struct record_state *st)
{
	return record_state_visible(st) && record_state_trashed(st);
}

static void sim_op_edit(struct sim_replica *rep)
{
	struct sim_record *rec = sim_pick_record(rep, sim_want_visible);
	struct record_version *v;
	uint8_t id[RECORD_ID_LEN];
	unsigned int mask;
	static char text[RECORD_NOTES_MAX + 1];

	if (rec == NULL)
		return;
	v = sim_version_new();
	v->op = RECORD_OP_UPDATE;
	memcpy(v->record_id, rec->id, RECORD_ID_LEN);
	mask = 1 + (unsigned int)sim_rng_below(&rep->sim->rng, RECORD_FIELDS_ALL);
	for (int f = 0; f < RECORD_FIELD_COUNT; f++) {
		if (!(mask & RECORD_FIELD_BIT(f)))
			continue;
		sim_random_text(&rep->sim->rng, text, 64);
		if (f == RECORD_FIELD_NOTES && sim_rng_chance(&rep->sim->rng, 150)) {
			/* Long notes fill sync batches sooner. */
			size_t n = 1000 + sim_rng_below(&rep->sim->rng, RECORD_NOTES_MAX - 1000);

			memset(text, 'a' + (int)sim_rng_below(&rep->sim->rng, 26), n);
			text[n] = '\0';
		}
		if (record_version_set_field(v, (enum record_field)f, text,
					     hlc_clock_now(&rep->clock, sim_wall(rep))) != PKS_OK) {
			sim_failf(rep->sim, "setting a field failed");
			record_version_free(v);
			return;
		}
	}
	sim_log(rep->sim, "replica %d edits (fields %#x)", rep->idx, mask);
	memcpy(id, rec->id, RECORD_ID_LEN);
	rep->sim->st.edits++;
	sim_author(rep, v);
	/*
	 * The user's own edit should show at once. It does not when a device
	 * whose clock runs ahead (beyond the HLC's max skew, so never observed)
	 * wrote the field: last-writer-wins keeps the future stamp.
	 */
	rec = sim_record_find(&rep->recs, &rep->n_recs, &rep->cap_recs, id, false);
	for (int f = 0; f < RECORD_FIELD_COUNT && rec != NULL; f++) {
		uint8_t who[DEVICE_ID_LEN];

		if ((mask & RECORD_FIELD_BIT(f)) &&
		    record_state_field(rec->st, (enum record_field)f, NULL, who) != NULL &&
		    memcmp(who, rep->id, DEVICE_ID_LEN) != 0) {
			rep->sim->st.shadowed_edits++;
			sim_log(rep->sim, "replica %d: its edit of field %d is shadowed", rep->idx,
				f);
		}
	}
}

static void sim_op_simple(struct sim_replica *rep, enum record_op op)
{
	struct sim_record *rec = sim_pick_record(rep, sim_want_visible);
	struct record_version *v;

	if (rec == NULL)
		return;
	v = sim_version_new();
	v->op = op;
	memcpy(v->record_id, rec->id, RECORD_ID_LEN);
	v->hlc = hlc_clock_now(&rep->clock, sim_wall(rep));
	sim_log(rep->sim, "replica %d %s", rep->idx, op == RECORD_OP_DELETE ? "deletes" : "purges");
	sim_author(rep, v);
}

static void sim_op_restore(struct sim_replica *rep)
{
	struct record_delete_tag tags[RECORD_RESTORE_TAGS_MAX];
	struct sim_record *rec = sim_pick_record(rep, sim_want_trashed);
	struct record_version *v;
	size_t n;

	if (rec == NULL)
		return;
	n = record_state_delete_tags(rec->st, tags, RECORD_RESTORE_TAGS_MAX);
	if (n > RECORD_RESTORE_TAGS_MAX)
		n = RECORD_RESTORE_TAGS_MAX;
	if (n == 0)
		return;
	v = sim_version_new();
	v->op = RECORD_OP_RESTORE;
	memcpy(v->record_id, rec->id, RECORD_ID_LEN);
	v->hlc = hlc_clock_now(&rep->clock, sim_wall(rep));
	for (size_t i = 0; i < n; i++) {
		if (record_version_add_restore_tag(v, &tags[i]) != PKS_OK) {
			sim_failf(rep->sim, "adding a restore tag failed");
			record_version_free(v);
			return;
		}
	}
	sim_log(rep->sim, "replica %d restores (%zu tags)", rep->idx, n);
	sim_author(rep, v);
}

static int sim_copy_op(void *user, const uint8_t id[32], const uint8_t *op, size_t len)
{
	struct sim_replica *rep = user;
	int r = membership_apply(rep->memb, op, len);

	if (r != PKS_OK) {
		sim_failf(rep->sim, "a sponsor's op does not apply at the new device: %s",
			  pks_strerror(r));
		return r;
	}
	sim_store_op(rep, op, len);
	return 0;
}

/* A new device joins through sponsor: the ADD, then the vault handed over directly. */
static void sim_op_add_device(struct sim *sim, struct sim_replica *sponsor)
{
	struct sim_replica *dev;
	uint8_t *op = NULL;
	size_t len = 0;
	char name[32];
	int r;

	if (sim->n >= SIM_MAX_REPLICAS)
		return;
	dev = sim_replica_new(sim);
	snprintf(name, sizeof(name), "device %d", dev->idx);
	r = membership_add_device(sponsor->memb, sponsor->sec->sign_sk, dev->sign_pk, dev->dh_pk,
				  name, sim_wall(sponsor), &op, &len);
	if (r != PKS_OK) {
		sim_failf(sim, "replica %d cannot add a device: %s", sponsor->idx, pks_strerror(r));
		return;
	}
	sim_store_op(sponsor, op, len);
	free(op);
	if (membership_foreach_op(sponsor->memb, sim_copy_op, dev) != PKS_OK)
		return;
	memcpy(dev->sec->id_key, sponsor->sec->id_key, RECORD_ID_KEY_LEN);
	for (size_t i = 0; i < sponsor->n_keys; i++)
		sim_key_add(dev, sponsor->sec->keys[i].epoch, sponsor->sec->keys[i].key);
	sim_keys_refresh(dev);
	sim->group[dev->idx] = sim->group[sponsor->idx];
	if (!sim_self_member(dev))
		sim_failf(sim, "a freshly added device is not a member of its own view");
	sponsor->dirty = true;
	sim->st.adds++;
	sim_log(sim, "replica %d adds device %d", sponsor->idx, dev->idx);
}

static int sim_log_device(void *user, const struct membership_device *d)
{
	struct sim_replica *rep = user;
	char hex[17];
	int who = -1;

	for (int i = 0; i < rep->sim->n; i++)
		if (memcmp(rep->sim->r[i]->id, d->device_id, 32) == 0)
			who = i;
	sim_log(rep->sim, "  view of %d: device %d (%s) %s", rep->idx, who,
		sim_hex8(d->device_id, hex), d->revoked ? "revoked" : "member");
	return 0;
}

static void sim_log_devices(struct sim_replica *rep)
{
	(void)membership_foreach_device(rep->memb, sim_log_device, rep);
}

static void sim_op_rotate(struct sim_replica *rep)
{
	uint8_t key[32], *op = NULL;
	size_t len = 0;
	int r;

	sim_rng_bytes(&rep->sim->rng, key, sizeof(key));
	r = membership_rotate(rep->memb, rep->sec->sign_sk, key, sim_wall(rep), &op, &len);
	if (r == PKS_OK) {
		sim_store_op(rep, op, len);
		sim_key_add(rep, membership_epoch(rep->memb), key);
		sim_membership_changed(rep);
		rep->dirty = true;
		rep->sim->st.rotates++;
		sim_log(rep->sim, "replica %d rotates to epoch %" PRIu32, rep->idx,
			membership_epoch(rep->memb));
	} else {
		sim_failf(rep->sim,
			  "replica %d: membership_rotate: %s (epoch %" PRIu32 ", %zu members, "
			  "rotate_needed %d)",
			  rep->idx, pks_strerror(r), membership_epoch(rep->memb),
			  membership_member_count(rep->memb),
			  (int)membership_rotate_needed(rep->memb));
		sim_log_devices(rep);
	}
	sodium_memzero(key, sizeof(key));
	free(op);
}

struct sim_pick_dev {
	struct sim_replica *rep;
	uint8_t ids[MEMBERSHIP_MEMBERS_MAX][32];
	size_t n;
};

static int sim_collect_member(void *user, const struct membership_device *d)
{
	struct sim_pick_dev *p = user;

	struct sim *sim = p->rep->sim;

	if (d->revoked || memcmp(d->device_id, p->rep->id, 32) == 0 ||
	    p->n == MEMBERSHIP_MEMBERS_MAX)
		return 0;
	if (sim->calm)
		for (int i = 0; i < sim->n; i++)
			if (memcmp(sim->r[i]->id, d->device_id, 32) == 0 &&
			    ((sim->revoked_mask | sim->revoker_mask) & (1u << i)))
				return 0;
	memcpy(p->ids[p->n++], d->device_id, 32);
	return 0;
}

/* REVOKE with cutoff = the target's highest seq we hold, then ROTATE. */
static void sim_op_revoke(struct sim_replica *rep)
{
	struct sim_pick_dev *p = sim_xalloc(sizeof(*p));
	struct sim_author *a;
	uint8_t *op = NULL, target[32];
	size_t len = 0;
	uint64_t cutoff;
	int r;

	p->rep = rep;
	if (membership_member_count(rep->memb) < 3 ||
	    membership_foreach_device(rep->memb, sim_collect_member, p) != 0 || p->n == 0)
		goto out;
	memcpy(target, p->ids[sim_rng_below(&rep->sim->rng, p->n)], 32);
	a = sim_author_find(rep, target, false);
	cutoff = a != NULL ? a->n : 0;
	r = membership_revoke(rep->memb, rep->sec->sign_sk, target, cutoff, sim_wall(rep), &op,
			      &len);
	if (r != PKS_OK) {
		sim_failf(rep->sim, "replica %d: membership_revoke: %s", rep->idx, pks_strerror(r));
		goto out;
	}
	sim_store_op(rep, op, len);
	rep->sim->st.revokes++;
	{
		char hex[17];
		int who = -1;

		for (int i = 0; i < rep->sim->n; i++)
			if (memcmp(rep->sim->r[i]->id, target, 32) == 0)
				who = i;
		if (who >= 0)
			rep->sim->revoked_mask |= 1u << who;
		rep->sim->revoker_mask |= 1u << rep->idx;
		sim_log(rep->sim, "replica %d revokes replica %d (%s) cutoff %" PRIu64, rep->idx,
			who, sim_hex8(target, hex), cutoff);
	}
	sim_membership_changed(rep);
	sim_op_rotate(rep);
	rep->dirty = true;
out:
	free(op);
	free(p);
}

static void sim_op_rename(struct sim_replica *rep)
{
	uint8_t *op = NULL;
	size_t len = 0;
	char name[40];
	int r;

	snprintf(name, sizeof(name), "device %d/%" PRIu64, rep->idx,
		 sim_rng_below(&rep->sim->rng, 1000));
	r = membership_rename(rep->memb, rep->sec->sign_sk, rep->id, name, sim_wall(rep), &op,
			      &len);
	if (r != PKS_OK) {
		sim_failf(rep->sim, "replica %d: membership_rename: %s", rep->idx, pks_strerror(r));
		return;
	}
	sim_store_op(rep, op, len);
	free(op);
	rep->dirty = true;
	rep->sim->st.renames++;
}

/*
 * Restart: the in-memory membership and states are dropped and rebuilt from
 * what the replica persisted (its ops, versions, epoch keys, clock, seq).
 */
static void sim_op_restart(struct sim_replica *rep)
{
	struct sim *sim = rep->sim;
	struct sim_bytes *ops = rep->ops;
	uint8_t(*ids)[MEMBERSHIP_OP_ID_LEN] = rep->op_ids;
	size_t n_ops = rep->n_ops;
	hlc_t last = hlc_clock_last(&rep->clock);

	sim_close_links_of(sim, rep->idx, "restart");
	membership_free(rep->memb);
	if (membership_new(&rep->memb) != PKS_OK) {
		fprintf(stderr, "sim: out of memory\n");
		exit(2);
	}
	rep->ops = NULL;
	rep->op_ids = NULL;
	rep->n_ops = rep->cap_ops = 0;
	for (size_t i = 0; i < n_ops; i++) {
		(void)sim_apply_op(rep, ops[i].p, ops[i].n);
		sim_bytes_wipe_free(&ops[i]);
	}
	free(ops);
	free(ids);
	sim_keys_refresh(rep);
	hlc_clock_init(&rep->clock, last, 0);
	sim_rebuild_states(rep);
	sim_enforce_revokes(rep);
	sim->st.restarts++;
	sim_log(sim, "replica %d restarts", rep->idx);
}

/* ---- the run -------------------------------------------------------------- */

static void sim_genesis(struct sim *sim)
{
	struct sim_replica *g = sim_replica_new(sim);
	uint8_t *op = NULL, key[32];
	size_t len = 0;
	int r, n;

	sim_rng_bytes(&sim->rng, sim->vault_id, sizeof(sim->vault_id));
	r = membership_genesis(g->memb, sim->vault_id, g->sec->sign_sk, g->dh_pk, "device 0",
			       sim_wall(g), &op, &len);
	if (r != PKS_OK) {
		sim_failf(sim, "membership_genesis: %s", pks_strerror(r));
		return;
	}
	sim_store_op(g, op, len);
	free(op);
	sim_rng_bytes(&sim->rng, g->sec->id_key, RECORD_ID_KEY_LEN);
	sim_rng_bytes(&sim->rng, key, sizeof(key));
	sim_key_add(g, 1, key);
	sodium_memzero(key, sizeof(key));
	n = SIM_START_MIN + (int)sim_rng_below(&sim->rng, SIM_START_MAX - SIM_START_MIN + 1);
	/* One device sets the household up; the others learn of each other by syncing. */
	while (sim->n < n && !sim->failed)
		sim_op_add_device(sim, g);
}

static void sim_partition(struct sim *sim)
{
	uint64_t len = 5 + sim_rng_below(&sim->rng, 60);

	for (int i = 0; i < sim->n; i++)
		sim->group[i] = (int)sim_rng_below(&sim->rng, 2);
	sim->partition_until = sim->step + len;
	for (int i = 0; i < sim->n; i++)
		for (int j = i + 1; j < sim->n; j++)
			if (!sim_can_connect(sim, i, j))
				sim_link_close(&sim->link[i][j], "partition");
	sim->st.partitions++;
	sim_log(sim, "partition for %" PRIu64 " steps", len);
}

static void sim_local_record_op(struct sim_replica *rep)
{
	uint64_t k = sim_rng_below(&rep->sim->rng, 100);

	if (k < 2) {
		/* A bulk import: more versions than SYNC_WINDOW batches carry. */
		uint64_t n = 20 + sim_rng_below(&rep->sim->rng, 230);

		sim_log(rep->sim, "replica %d imports %" PRIu64 " records", rep->idx, n);
		for (uint64_t i = 0; i < n && !rep->sim->failed; i++)
			sim_op_create(rep);
		rep->sim->st.bulk_imports++;
	} else if (k < 30)
		sim_op_create(rep);
	else if (k < 70)
		sim_op_edit(rep);
	else if (k < 82)
		sim_op_simple(rep, RECORD_OP_DELETE);
	else if (k < 95)
		sim_op_restore(rep);
	else
		sim_op_simple(rep, RECORD_OP_PURGE);
}

static void sim_step(struct sim *sim)
{
	uint64_t k = sim_rng_below(&sim->rng, 1000);
	struct sim_replica *rep;

	sim->now_ms += 1 + sim_rng_below(&sim->rng, 3000);
	if (k < 550) {
		uint64_t burst = 1 + sim_rng_below(&sim->rng, 8);

		for (uint64_t i = 0; i < burst; i++)
			if (!sim_deliver_one(sim))
				break;
	} else if (k < 780) {
		/* A device that knows it was revoked stops; one that does not goes on. */
		rep = sim->r[sim_rng_below(&sim->rng, (uint64_t)sim->n)];
		if (sim_self_member(rep))
			sim_local_record_op(rep);
	} else if (k < 880) {
		int i = (int)sim_rng_below(&sim->rng, (uint64_t)sim->n);
		int j = (int)sim_rng_below(&sim->rng, (uint64_t)sim->n);

		if (i != j && sim_can_connect(sim, i, j)) {
			if (sim->direct)
				sim_direct_sync(sim, i, j);
			else
				sim_link_open(sim, i, j, false);
		}
	} else if (k < 900) {
		int i = (int)sim_rng_below(&sim->rng, (uint64_t)sim->n);
		int j = (int)sim_rng_below(&sim->rng, (uint64_t)sim->n);

		if (i != j) {
			if (sim_link_get(sim, i, j)->up)
				sim->st.closes_other++;
			sim_link_close(sim_link_get(sim, i, j), "disconnect");
		}
	} else if (k < 912) {
		rep = sim_pick_member(sim);
		if (rep != NULL)
			sim_op_add_device(sim, rep);
	} else if (k < 918) {
		rep = sim_pick_member(sim);
		if (rep != NULL)
			sim_op_revoke(rep);
	} else if (k < 930) {
		for (int i = 0; i < 8 && sim_deliver_one(sim); i++)
			continue;
	} else if (k < 940) {
		rep = sim_pick_member(sim);
		if (rep != NULL)
			sim_op_rename(rep);
	} else if (k < 955) {
		rep = sim_pick_member(sim);
		if (rep != NULL && membership_rotate_needed(rep->memb))
			sim_op_rotate(rep);
	} else if (k < 970) {
		sim_op_restart(sim->r[sim_rng_below(&sim->rng, (uint64_t)sim->n)]);
	} else if (k < 980) {
		if (sim->partition_until <= sim->step)
			sim_partition(sim);
	} else if (k < 985) {
		rep = sim->r[sim_rng_below(&sim->rng, (uint64_t)sim->n)];
		rep->skew_ms =
		    (int64_t)sim_rng_below(&sim->rng, 6 * SIM_HOUR_MS) - (int64_t)(3 * SIM_HOUR_MS);
		sim_log(sim, "replica %d clock skew %" PRId64 " ms", rep->idx, rep->skew_ms);
	}
	sim_push_dirty(sim);
	if (sim->step % 8 == 0)
		sim_close_stalled(sim);
}

static bool sim_live(const struct sim *sim, int i)
{
	return sim_self_member(sim->r[i]);
}

/* Whether every live member holds the same membership and records. */
static bool sim_converged(struct sim *sim)
{
	uint8_t m0[32], d0[32], m[32], d[32];
	int first = -1;

	for (int i = 0; i < sim->n; i++) {
		if (!sim_live(sim, i))
			continue;
		membership_digest(sim->r[i]->memb, m);
		sim_records_digest(sim->r[i]->recs, sim->r[i]->n_recs, d);
		if (first < 0) {
			first = i;
			memcpy(m0, m, 32);
			memcpy(d0, d, 32);
		} else if (memcmp(m, m0, 32) != 0 || memcmp(d, d0, 32) != 0) {
			return false;
		}
	}
	return true;
}

/* Whether every two live members hold a LIVE session. */
static bool sim_live_pairs_live(struct sim *sim)
{
	for (int i = 0; i < sim->n; i++)
		for (int j = i + 1; j < sim->n; j++)
			if (sim_live(sim, i) && sim_live(sim, j) &&
			    !sim_link_live(sim_link_get(sim, i, j)))
				return false;
	return true;
}

/*
 * Heal: every pair connects over a perfect channel until all is quiet. When
 * the live members still differ, or two of them hold no LIVE session (a
 * peer refused while its membership view was incomplete), everyone
 * reconnects (at most SIM_HEAL_ROUNDS times): a key shared or a device
 * learned late may need a second session. On the perfect channel a session
 * may fail only by refusing a peer (PKS_ERR_REJECTED); any other error is a
 * failure. The check then wants every session between live members LIVE
 * and every digest equal.
 */
static void sim_heal(struct sim *sim)
{
	sim->healing = true;
	sim->partition_until = 0;
	if (sim->direct) {
		sim_direct_heal(sim);
		return;
	}
	for (int round = 0; round < SIM_HEAL_ROUNDS && !sim->failed; round++) {
		uint64_t n = 0;

		for (int i = 0; i < sim->n; i++)
			for (int j = i + 1; j < sim->n; j++)
				sim_link_close(&sim->link[i][j], "heal");
		for (int i = 0; i < sim->n; i++)
			for (int j = i + 1; j < sim->n; j++)
				sim_link_open(sim, i, j, true);
		while (sim_deliver_one(sim)) {
			if (++n > SIM_HEAL_DELIVERIES_MAX) {
				sim_failf(sim, "heal: still busy after %d messages (livelock?)",
					  SIM_HEAL_DELIVERIES_MAX);
				return;
			}
		}
		sim->heal_rounds = round + 1;
		sim_log(sim, "heal round %d: %" PRIu64 " messages", round, n);
		if (sim_converged(sim) && sim_live_pairs_live(sim))
			break;
	}
}

/* Whether any live member's final store holds an admissible version of op on rid. */
static bool sim_union_has_op(struct record_version **u, size_t n, const uint8_t *rid,
			     enum record_op op)
{
	for (size_t i = 0; i < n; i++)
		if (u[i]->op == op && memcmp(u[i]->record_id, rid, RECORD_ID_LEN) == 0)
			return true;
	return false;
}

static void sim_fold(struct sim *sim, struct record_version **u, size_t n, uint8_t out[32])
{
	struct sim_record *recs = NULL;
	size_t n_recs = 0, cap = 0;
	size_t *order = sim_xalloc((2 * n + 1) * sizeof(size_t));
	size_t m = 0;

	for (size_t i = 0; i < n; i++) {
		order[m++] = i;
		if (sim_rng_chance(&sim->rng, 200))
			order[m++] = i; /* a duplicate delivery */
	}
	for (size_t i = m; i > 1; i--) {
		size_t j = sim_rng_below(&sim->rng, i);
		size_t t = order[i - 1];

		order[i - 1] = order[j];
		order[j] = t;
	}
	for (size_t i = 0; i < m; i++) {
		struct record_version *v = u[order[i]];
		struct sim_record *rec = sim_record_find(&recs, &n_recs, &cap, v->record_id, true);
		int r = record_state_apply(rec->st, v);

		if (r != PKS_OK && r != PKS_ERR_REJECTED)
			sim_failf(sim, "merge laws: record_state_apply: %s", pks_strerror(r));
	}
	sim_records_digest(recs, n_recs, out);
	sim_records_free(recs, n_recs);
	free(order);
}

/*
 * Which epoch keys a replica lacks and why: "not sealed" (the winning ROTATE
 * of that epoch was not sealed to it: it joined concurrently) or "loser key"
 * (it holds one key of the epoch, other members another: concurrent
 * ROTATEs).
 */
static void sim_describe_keys(const struct sim *sim, const struct sim_replica *rep, char *out,
			      size_t cap)
{
	uint32_t top = membership_epoch(rep->memb);
	size_t n = 0;
	uint8_t key[32];

	out[0] = '\0';
	n += (size_t)snprintf(out, cap, "epochs 1..%" PRIu32, top);
	for (uint32_t e = 1; e <= top && e < 64 && n < cap; e++) {
		const uint8_t *mine = sim_epoch_key(rep, e);
		bool other = false;

		for (int i = 0; i < sim->n && mine != NULL; i++)
			for (size_t k = 0; k < sim->r[i]->n_keys; k++)
				if (sim->r[i]->sec->keys[k].epoch == e &&
				    !sim_has_key(rep, e, sim->r[i]->sec->keys[k].key))
					other = true;
		if (mine == NULL) {
			int r = e > 1 ? membership_epoch_key(rep->memb, e, rep->dh_pk,
							     rep->sec->dh_sk, key)
				      : PKS_ERR_NOT_FOUND;

			n += (size_t)snprintf(out + n, cap - n, ", no key for %" PRIu32 " (%s)", e,
					      r == PKS_ERR_NOT_FOUND ? "not sealed to it"
								     : pks_strerror(r));
		} else if (other) {
			n += (size_t)snprintf(
			    out + n, cap - n,
			    ", epoch %" PRIu32 " has keys it lacks (concurrent ROTATEs)", e);
		}
	}
	sodium_memzero(key, sizeof(key));
}

static void sim_check(struct sim *sim)
{
	int live[SIM_MAX_REPLICAS], n_live = 0, first;
	uint8_t md0[32], md[32], d0[32], d[32];
	struct record_version **u = NULL;
	size_t n_u = 0, cap_u = 0;
	struct sim_replica *ref;
	char hex[17];

	for (int i = 0; i < sim->n; i++)
		if (sim_live(sim, i))
			live[n_live++] = i;
	if (n_live == 0) {
		/* Concurrent revokes removed everyone: a legal, if sad, outcome. */
		sim->st.empty_vaults++;
		sim_log(sim, "no live member left");
		return;
	}
	first = live[0];
	ref = sim->r[first];
	sim->st.live_members += (uint64_t)n_live;
	sim->st.records += ref->n_recs;
	membership_digest(ref->memb, md0);
	sim_records_digest(ref->recs, ref->n_recs, d0);
	for (int a = 0; a < n_live && !sim->failed; a++) {
		struct sim_replica *rep = sim->r[live[a]];

		for (int b = 0; b < n_live; b++)
			if (!membership_is_member(rep->memb, sim->r[live[b]]->id))
				sim_failf(sim,
					  "membership views disagree: %d does not count %d as "
					  "a member",
					  live[a], live[b]);
		membership_digest(rep->memb, md);
		if (memcmp(md, md0, 32) != 0)
			sim_failf(sim,
				  "membership digests differ: replica %d vs %d (%zu vs %zu ops)",
				  first, live[a], membership_op_count(ref->memb),
				  membership_op_count(rep->memb));
		for (int b = a + 1; b < n_live; b++) {
			struct sim_link *l = sim_link_get(sim, live[a], live[b]);

			if (!sim->direct && !sim_link_live(l))
				sim_failf(sim,
					  "heal: session %d-%d between live members is not LIVE",
					  live[a], live[b]);
		}
		sim_records_digest(rep->recs, rep->n_recs, d);
		if (memcmp(d, d0, 32) != 0) {
			char keys[2][160];

			sim_describe_keys(sim, ref, keys[0], sizeof(keys[0]));
			sim_describe_keys(sim, rep, keys[1], sizeof(keys[1]));
			sim_failf(sim,
				  "digests differ after heal: replica %d (%zu records, %zu "
				  "authors, %" PRIu64 " undecryptable; %s) vs %d (%zu records, %zu "
				  "authors, %" PRIu64 " undecryptable; %s)",
				  first, ref->n_recs, ref->n_authors, ref->undecryptable, keys[0],
				  live[a], rep->n_recs, rep->n_authors, rep->undecryptable,
				  keys[1]);
		}
		if (rep->dropped != 0)
			sim_failf(sim,
				  "replica %d lost %" PRIu64 " stored versions that no longer open",
				  live[a], rep->dropped);
		/* Strong remove: nothing above a revoked author's cutoff is merged. */
		for (size_t i = 0; i < rep->n_authors; i++)
			if (rep->authors[i].merged > 0 &&
			    !membership_version_admissible(rep->memb, rep->authors[i].id,
							   rep->authors[i].merged))
				sim_failf(sim,
					  "replica %d merges %s seq %zu, above its revoke cutoff",
					  live[a], sim_hex8(rep->authors[i].id, hex),
					  rep->authors[i].merged);
	}
	if (sim->failed)
		return;

	/* The union of every live member's versions, opened; forks are failures. */
	for (int a = 0; a < n_live && !sim->failed; a++) {
		struct sim_replica *rep = sim->r[live[a]];

		for (size_t i = 0; i < rep->n_authors; i++) {
			struct sim_author *ra = &rep->authors[i];
			struct sim_author *fa = sim_author_find(ref, ra->id, false);
			struct membership_device dev;

			for (size_t s = 0; s < ra->n; s++) {
				if (!membership_version_admissible(rep->memb, ra->id, s + 1))
					break; /* hidden (--hide): not part of the state */
				struct record_sealed_header h;
				struct record_version *v = NULL;

				if (fa != NULL && s < fa->n) {
					if (fa->v[s].n != ra->v[s].n ||
					    memcmp(fa->v[s].p, ra->v[s].p, ra->v[s].n) != 0)
						sim_failf(
						    sim, "fork: two versions of one (author, seq)");
					if (a > 0)
						continue;
				}
				if (record_sealed_peek(ra->v[s].p, ra->v[s].n, &h) != PKS_OK ||
				    membership_get(rep->memb, ra->id, &dev) != PKS_OK ||
				    sim_open(rep, ra->v[s].p, ra->v[s].n, dev.sign_pk, h.epoch,
					     &v) != PKS_OK) {
					sim_failf(sim, "a stored version no longer opens");
					continue;
				}
				if (n_u == cap_u) {
					cap_u = cap_u ? 2 * cap_u : 64;
					u = sim_xrealloc(u, cap_u * sizeof(u[0]));
				}
				u[n_u++] = v;
			}
		}
	}
	/* Merge laws: any order, with duplicates, gives the live digest. */
	for (int k = 0; k < SIM_ORDERS && !sim->failed; k++) {
		sim_fold(sim, u, n_u, d);
		if (memcmp(d, d0, 32) != 0)
			sim_failf(
			    sim,
			    "merge laws: order %d of the %zu-version union gives another digest", k,
			    n_u);
	}
	/* Key material: every admitted CREATE's key is still there, unless deleted or purged. */
	for (size_t i = 0; i < sim->n_truth && !sim->failed; i++) {
		struct sim_truth *t = &sim->truth[i];
		unsigned int live_mask = 0;

		for (int a = 0; a < n_live; a++)
			live_mask |= 1u << live[a];
		if (!(t->accepted_by & live_mask) ||
		    !membership_version_admissible(ref->memb, t->author, t->seq))
			continue;
		for (int a = 0; a < n_live && !sim->failed; a++) {
			struct sim_replica *rep = sim->r[live[a]];
			struct sim_record *rec = sim_record_find(
			    &rep->recs, &rep->n_recs, &rep->cap_recs, t->record_id, false);
			const uint8_t *key = NULL;
			size_t key_len = 0;

			if (rec == NULL || !record_state_has_create(rec->st)) {
				if (rec != NULL && record_state_purged(rec->st) &&
				    sim_union_has_op(u, n_u, t->record_id, RECORD_OP_PURGE))
					continue;
				sim_failf(sim,
					  "replica %d lost a record (truth %zu: created by %d seq "
					  "%" PRIu64 ", admitted by mask %#x) without a purge (%s)",
					  live[a], i, sim_replica_of(sim, t->author), t->seq,
					  t->accepted_by,
					  rec == NULL ? "no state" : "state without its create");
				continue;
			}
			if (record_state_private_key(rec->st, &key, &key_len) != PKS_OK ||
			    key_len != sizeof(t->priv) || memcmp(key, t->priv, key_len) != 0)
				sim_failf(sim,
					  "replica %d: a record's private key changed or vanished",
					  live[a]);
			if (record_state_trashed(rec->st) &&
			    !sim_union_has_op(u, n_u, t->record_id, RECORD_OP_DELETE))
				sim_failf(sim, "replica %d: a record is trashed without a DELETE",
					  live[a]);
		}
	}
	for (size_t i = 0; i < n_u; i++)
		record_version_free(u[i]);
	free(u);
}

/*
 * After convergence, two engine properties (DESIGN §6): a reconnect with
 * nothing changed moves no version or op and only a handful of small
 * messages; and one local change then reaches every live member through
 * live pushes alone, without a new session.
 */
static void sim_check_quiet(struct sim *sim)
{
	int live[SIM_MAX_REPLICAS], n_live = 0;
	bool same[SIM_MAX_REPLICAS][SIM_MAX_REPLICAS];
	struct sync_vector *va, *vb;
	uint64_t n = 0;

	if (sim->direct || sim->failed)
		return;
	for (int i = 0; i < sim->n; i++)
		if (sim_live(sim, i))
			live[n_live++] = i;
	if (n_live < 2)
		return;
	for (int i = 0; i < sim->n; i++)
		for (int j = i + 1; j < sim->n; j++)
			sim_link_close(&sim->link[i][j], "quiet check");
	/*
	 * Equal states may sit on unequal stores (with --hide a replica keeps
	 * versions its peers refuse); only pairs with equal vectors must be
	 * silent.
	 */
	va = sim_xalloc(sizeof(*va));
	vb = sim_xalloc(sizeof(*vb));
	for (int a = 0; a < n_live; a++) {
		for (int b = a + 1; b < n_live; b++) {
			same[a][b] = sim_ops_vector(sim->r[live[a]], va) == PKS_OK &&
				     sim_ops_vector(sim->r[live[b]], vb) == PKS_OK &&
				     va->n == vb->n &&
				     memcmp(va->e, vb->e, va->n * sizeof(va->e[0])) == 0;
			sim_link_open(sim, live[a], live[b], true);
		}
	}
	free(va);
	free(vb);
	while (sim_deliver_one(sim) && ++n < SIM_HEAL_DELIVERIES_MAX)
		continue;
	for (int a = 0; a < n_live && !sim->failed; a++) {
		for (int b = a + 1; b < n_live && !sim->failed; b++) {
			struct sim_link *l = sim_link_get(sim, live[a], live[b]);

			if (!sim_link_live(l)) {
				sim_failf(sim, "quiet reconnect: session %d-%d is not LIVE",
					  live[a], live[b]);
				break;
			}
			for (int side = 0; side < 2; side++) {
				struct sync_stats st, peer;

				sync_session_stats(l->s[side], &st);
				sync_session_stats(l->s[1 - side], &peer);
				/* Over a perfect channel every message sent was received. */
				if (st.msgs_out != peer.msgs_in || st.bytes_out != peer.bytes_in)
					sim_failf(
					    sim,
					    "stats: %d sent %" PRIu64 " messages (%" PRIu64
					    " bytes), %d counted %" PRIu64 " (%" PRIu64 " bytes)",
					    side == 0 ? l->a : l->b, st.msgs_out, st.bytes_out,
					    side == 0 ? l->b : l->a, peer.msgs_in, peer.bytes_in);
				sim->st.quiet_sessions++;
				sim->st.quiet_msgs += st.msgs_out;
				if (!same[a][b]) {
					sim->st.quiet_unequal++;
					continue;
				}
				if (st.versions_out != 0 || st.ops_out != 0 ||
				    st.reconciliations != 0 || st.msgs_out > SIM_QUIET_MSGS_MAX)
					sim_failf(sim,
						  "quiet reconnect: %d sent %d %" PRIu64
						  " messages (%" PRIu64 " bytes), %" PRIu64
						  " versions, %" PRIu64 " ops, %" PRIu64
						  " reconciliations with nothing to say",
						  side == 0 ? l->a : l->b, side == 0 ? l->b : l->a,
						  st.msgs_out, st.bytes_out, st.versions_out,
						  st.ops_out, st.reconciliations);
			}
		}
	}
	if (sim->failed)
		return;
	sim_op_create(sim->r[live[sim_rng_below(&sim->rng, (uint64_t)n_live)]]);
	sim_push_dirty(sim);
	n = 0;
	while (sim_deliver_one(sim) && ++n < SIM_HEAL_DELIVERIES_MAX)
		continue;
	if (!sim_converged(sim))
		sim_failf(sim, "live push: a change did not reach every live member");
	for (int a = 0; a < n_live; a++)
		for (int b = a + 1; b < n_live; b++)
			if (!sim_link_live(sim_link_get(sim, live[a], live[b])))
				sim_failf(sim, "live push: session %d-%d is no longer LIVE",
					  live[a], live[b]);
}

static void sim_free(struct sim *sim)
{
	for (int i = 0; i < sim->n; i++)
		for (int j = i + 1; j < sim->n; j++)
			sim_link_close(&sim->link[i][j], "end");
	for (int i = 0; i < sim->n; i++)
		sim_replica_free(sim->r[i]);
	free(sim->truth);
}

static void sim_print_stats(const struct sim *sim)
{
	const struct sim_stats *s = &sim->st;

	printf("# seed %" PRIu64 ": replicas %d, local ops %" PRIu64 ", msgs %" PRIu64
	       ", connects %" PRIu64 ", closes err/timeout/fault/other %" PRIu64 "/%" PRIu64
	       "/%" PRIu64 "/%" PRIu64 ", faults drop/dup/reorder/cut/busy %" PRIu64 "/%" PRIu64
	       "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 ", adds %" PRIu64 " revokes %" PRIu64
	       " rotates %" PRIu64 " renames %" PRIu64 " restarts %" PRIu64 " partitions %" PRIu64
	       " imports %" PRIu64 ", reconciliations %" PRIu64 ", unequal syncs %" PRIu64 "\n",
	       sim->seed, sim->n, s->local_ops, s->msgs, s->connects, s->closes_error,
	       s->closes_timeout, s->closes_fault, s->closes_other, s->dropped, s->duplicated,
	       s->reordered, s->cut, s->busy, s->adds, s->revokes, s->rotates, s->renames,
	       s->restarts, s->partitions, s->imports, s->reconciliations, s->synced_unequal);
}

/* One seed: returns true when every check passed. */
struct sim_opts {
	uint64_t steps;
	bool verbose, direct, keyshare, calm, hide, harsh;
};

static bool sim_run(uint64_t seed, const struct sim_opts *o, struct sim_stats *total)
{
	uint64_t steps = o->steps;
	struct sim *sim = sim_xalloc(sizeof(*sim));
	bool ok;

	sim->seed = seed;
	sim->verbose = o->verbose;
	sim->direct = o->direct;
	sim->keyshare = o->keyshare;
	sim->calm = o->calm;
	sim->hide = o->hide;
	sim->harsh = o->harsh;
	sim_rng_seed(&sim->rng, seed);
	sim_rng_seed(&sim_sodium_rng, seed ^ UINT64_C(0x5eed5eed5eed5eed));
	sim->now_ms = SIM_EPOCH_T0_MS + sim_rng_below(&sim->rng, 1000000);
	sim_genesis(sim);
	for (sim->step = 0; sim->step < steps && !sim->failed; sim->step++)
		sim_step(sim);
	if (!sim->failed)
		sim_heal(sim);
	if (!sim->failed)
		sim_check(sim);
	sim_check_quiet(sim);
	ok = !sim->failed;
	if (!ok)
		printf("sim: FAIL seed=%" PRIu64 " step=%" PRIu64 "%s: %s\n", seed, sim->step,
		       sim->healing ? " (heal)" : "", sim->fail);
	if (o->verbose || !ok)
		sim_print_stats(sim);
	if (total != NULL) {
		total->local_ops += sim->st.local_ops;
		total->msgs += sim->st.msgs;
		total->revokes += sim->st.revokes;
		total->adds += sim->st.adds;
		total->restarts += sim->st.restarts;
		total->partitions += sim->st.partitions;
		total->reconciliations += sim->st.reconciliations;
		total->synced_unequal += sim->st.synced_unequal;
		total->dropped += sim->st.dropped;
		total->duplicated += sim->st.duplicated;
		total->reordered += sim->st.reordered;
		total->cut += sim->st.cut;
		total->busy += sim->st.busy;
		total->closes_error += sim->st.closes_error;
		total->imports += sim->st.imports;
		total->empty_vaults += sim->st.empty_vaults;
		total->live_members += sim->st.live_members;
		total->bulk_imports += sim->st.bulk_imports;
		total->quiet_sessions += sim->st.quiet_sessions;
		total->quiet_msgs += sim->st.quiet_msgs;
		total->quiet_unequal += sim->st.quiet_unequal;
		total->edits += sim->st.edits;
		total->shadowed_edits += sim->st.shadowed_edits;
		total->records += sim->st.records;
		total->heal_rounds += (uint64_t)sim->heal_rounds;
	}
	sim_free(sim);
	free(sim);
	return ok;
}

static int sim_parse_u64(const char *s, uint64_t *out)
{
	char *end = NULL;
	unsigned long long v;

	if (s == NULL || *s == '\0' || *s == '-')
		return -1;
	v = strtoull(s, &end, 10);
	if (*end != '\0')
		return -1;
	*out = v;
	return 0;
}

/* "a,b,c" into at most max seeds. */
static int sim_parse_list(const char *s, uint64_t *out, size_t max, size_t *n)
{
	char buf[1024], *save = NULL, *tok;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	*n = 0;
	for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (*n == max || sim_parse_u64(tok, &out[*n]) != 0)
			return -1;
		(*n)++;
	}
	return *n > 0 ? 0 : -1;
}

static void sim_usage(void)
{
	fprintf(stderr,
		"usage: pksync-sim [--seed N | --runs K [--first-seed S] | --seeds "
		"A,B,...] [--steps N] "
		"[--direct] [--keyshare] [--hide] [--calm-revokes] [--harsh] [--verbose]\n");
}

int main(int argc, char **argv)
{
	uint64_t first = 1, runs = 1, steps = SIM_DEFAULT_STEPS, failures = 0;
	struct sim_opts o;
	uint64_t list[SIM_SEED_LIST_MAX];
	size_t n_list = 0;
	bool single = false;
	struct sim_stats total;
	struct timespec t0, t1;
	double secs;

	memset(&o, 0, sizeof(o));
	/* Line by line, so a soak's log shows progress and a killed run its last seed. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--seed") == 0 && sim_parse_u64(v, &first) == 0) {
			runs = 1;
			single = true;
			i++;
		} else if (strcmp(a, "--runs") == 0 && sim_parse_u64(v, &runs) == 0) {
			i++;
		} else if (strcmp(a, "--first-seed") == 0 && sim_parse_u64(v, &first) == 0) {
			i++;
		} else if (strcmp(a, "--seeds") == 0 && v != NULL &&
			   sim_parse_list(v, list, SIM_SEED_LIST_MAX, &n_list) == 0) {
			runs = n_list;
			i++;
		} else if (strcmp(a, "--steps") == 0 && sim_parse_u64(v, &steps) == 0 &&
			   steps <= SIM_STEPS_MAX) {
			i++;
		} else if (strcmp(a, "--calm-revokes") == 0) {
			o.calm = true;
		} else if (strcmp(a, "--keyshare") == 0) {
			o.keyshare = true;
		} else if (strcmp(a, "--hide") == 0) {
			o.hide = true;
		} else if (strcmp(a, "--harsh") == 0) {
			o.harsh = true;
		} else if (strcmp(a, "--direct") == 0) {
			o.direct = true;
		} else if (strcmp(a, "--soak-gate") == 0) {
			/* The soak is long: it runs only when asked for. */
			if (getenv("PKSYNC_SIM_SOAK") == NULL) {
				printf("sim: soak skipped: set PKSYNC_SIM_SOAK=1 (meson test "
				       "--setup simsoak --suite sim)\n");
				return 77;
			}
		} else if (strcmp(a, "--verbose") == 0) {
			o.verbose = true;
		} else {
			sim_usage();
			return 2;
		}
	}
	o.steps = steps;
	o.verbose = o.verbose || single;
	randombytes_set_implementation(&sim_randombytes);
	if (sodium_init() < 0) {
		fprintf(stderr, "sim: sodium_init failed\n");
		return 2;
	}
	memset(&total, 0, sizeof(total));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (uint64_t k = 0; k < runs; k++)
		failures += !sim_run(n_list > 0 ? list[k] : first + k, &o, &total);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("# totals: local ops %" PRIu64 " (bulk imports %" PRIu64
	       ", same-credential imports %" PRIu64 "), adds %" PRIu64 ", revokes %" PRIu64
	       ", restarts %" PRIu64 ", partitions %" PRIu64 "\n",
	       total.local_ops, total.bulk_imports, total.imports, total.adds, total.revokes,
	       total.restarts, total.partitions);
	printf("# totals: edits %" PRIu64 ", of which shadowed at once by a future stamp %" PRIu64
	       "\n",
	       total.edits, total.shadowed_edits);
	printf("# totals: messages %" PRIu64 ", session errors %" PRIu64
	       ", faults drop/dup/reorder/cut/busy %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64
	       "/%" PRIu64 ", reconciliations %" PRIu64 ", unequal syncs %" PRIu64 "\n",
	       total.msgs, total.closes_error, total.dropped, total.duplicated, total.reordered,
	       total.cut, total.busy, total.reconciliations, total.synced_unequal);
	printf("# totals: checked %" PRIu64 " live members holding %" PRIu64
	       " records, vaults left empty %" PRIu64 ", heal rounds %" PRIu64
	       ", quiet reconnects %" PRIu64 " (%.1f messages per side; %" PRIu64
	       " between unequal stores)\n",
	       total.live_members, total.records, total.empty_vaults, total.heal_rounds,
	       total.quiet_sessions,
	       total.quiet_sessions ? (double)total.quiet_msgs / (double)total.quiet_sessions : 0.0,
	       total.quiet_unequal);
	if (n_list > 0)
		printf("sim: %s runs=%" PRIu64 " failed=%" PRIu64 " seeds=list steps=%" PRIu64
		       " seconds=%.2f runs/s=%.2f\n",
		       failures ? "FAIL" : "ok", runs, failures, steps, secs,
		       secs > 0 ? (double)runs / secs : 0.0);
	else
		printf("sim: %s runs=%" PRIu64 " failed=%" PRIu64 " seeds=%" PRIu64 "..%" PRIu64
		       " steps=%" PRIu64 " seconds=%.2f runs/s=%.2f\n",
		       failures ? "FAIL" : "ok", runs, failures, first, first + runs - 1, steps,
		       secs, secs > 0 ? (double)runs / secs : 0.0);
	return failures ? 1 : 0;
}
