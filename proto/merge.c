/*
 * The per-record CRDT. The state is a join-semilattice built from simple
 * pieces, each merged by a commutative, associative, idempotent rule, so the
 * state depends only on the set of versions applied:
 *
 *  - Creates are grouped in classes by their immutable fields. The visible
 *    class is the one holding the earliest create by (hlc, author, ...);
 *    every class keeps its own mutable-field registers, so a conflicting
 *    create that loses contributes nothing, whenever it arrived.
 *  - Mutable fields: one last-writer-wins register per field for updates,
 *    and one per field per create class; the visible value is the larger.
 *  - Trash: a grow-only set of delete tags and a grow-only set of tags
 *    undone by restores; outstanding = deletes minus undone.
 *  - Purge: absorbing; the earliest purge's (hlc, author) is kept.
 */
#include "proto/record.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

/*
 * Only a hostile author produces more than one class; past this many, a
 * create that would not become visible is refused instead of kept.
 */
#define RECORD_STATE_MAX_CLASSES 8
/* Deletes and restored tags kept per record. */
#define RECORD_STATE_MAX_TAGS 65536

static const char record_class_domain[] = "pksync record class v1";
static const char record_digest_domain[] = "pksync record state v1";

struct record_register {
	char *value; /* NULL when never set */
	size_t len;
	hlc_t stamp;
	uint8_t author[DEVICE_ID_LEN];
};

struct record_class {
	uint8_t hash[32];
	uint8_t *credential_id;
	size_t credential_id_len;
	char *rp_id;
	uint8_t *user_handle;
	size_t user_handle_len;
	enum record_alg alg;
	/*
	 * Plain malloc, wiped when freed: a vault holds one key per record, and
	 * sodium_malloc's guard-page mappings per key would run into the
	 * process's mapping limit long before 100,000 records.
	 */
	uint8_t *private_key;
	size_t private_key_len;
	uint8_t *public_key;
	size_t public_key_len;
	bool backup_eligible;
	/* From the earliest create of the class. */
	hlc_t hlc;
	uint8_t author[DEVICE_ID_LEN];
	uint64_t created_at;
	bool backup_state;
	char *source;
	struct record_register reg[RECORD_FIELD_COUNT];
};

struct record_tag_set {
	struct record_delete_tag *tags; /* ascending, distinct */
	size_t count;
	size_t cap;
};

struct record_state {
	uint8_t id[RECORD_ID_LEN];
	bool purged;
	hlc_t purge_hlc;
	uint8_t purge_author[DEVICE_ID_LEN];
	struct record_class *classes[RECORD_STATE_MAX_CLASSES];
	size_t class_count;
	struct record_register reg[RECORD_FIELD_COUNT];
	struct record_tag_set deletes;
	struct record_tag_set undone;
	bool has_restore;
	hlc_t restore_max;
};

/* The ordering key of a create; the smallest create of all wins. */
struct record_create_key {
	hlc_t hlc;
	const uint8_t *author;
	const uint8_t *hash;
	uint64_t created_at;
	bool backup_state;
	const char *source;
};

/* ---- helpers ---- */

static int record_bytes_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int record_create_key_cmp(const struct record_create_key *a,
				 const struct record_create_key *b)
{
	const char *as = a->source ? a->source : "", *bs = b->source ? b->source : "";
	int c;

	if (a->hlc != b->hlc)
		return a->hlc < b->hlc ? -1 : 1;
	if ((c = memcmp(a->author, b->author, DEVICE_ID_LEN)) != 0)
		return c;
	if ((c = memcmp(a->hash, b->hash, 32)) != 0)
		return c;
	if (a->created_at != b->created_at)
		return a->created_at < b->created_at ? -1 : 1;
	if (a->backup_state != b->backup_state)
		return a->backup_state ? 1 : -1;
	return record_bytes_cmp((const uint8_t *)as, strlen(as), (const uint8_t *)bs, strlen(bs));
}

static struct record_create_key record_class_key(const struct record_class *c)
{
	struct record_create_key k = {c->hlc,        c->author,       c->hash,
				      c->created_at, c->backup_state, c->source};
	return k;
}

static void record_hash_be(crypto_generichash_state *h, uint64_t v, size_t n)
{
	uint8_t b[8];

	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	crypto_generichash_update(h, b, n);
}

static void record_hash_lv(crypto_generichash_state *h, const void *p, size_t len)
{
	record_hash_be(h, len, 4);
	if (len > 0)
		crypto_generichash_update(h, p, len);
}

static void record_class_hash(const struct record_version *v, uint8_t out[32])
{
	crypto_generichash_state h;

	crypto_generichash_init(&h, NULL, 0, 32);
	crypto_generichash_update(&h, (const uint8_t *)record_class_domain,
				  sizeof(record_class_domain) - 1);
	record_hash_lv(&h, v->credential_id, v->credential_id_len);
	record_hash_lv(&h, v->rp_id, strlen(v->rp_id));
	record_hash_lv(&h, v->user_handle, v->user_handle_len);
	record_hash_be(&h, (uint32_t)(int32_t)v->alg, 4);
	record_hash_lv(&h, v->private_key, v->private_key_len);
	record_hash_lv(&h, v->public_key, v->public_key_len);
	record_hash_be(&h, v->backup_eligible, 1);
	crypto_generichash_final(&h, out, 32);
	sodium_memzero(&h, sizeof(h));
}

static void record_register_clear(struct record_register *reg)
{
	if (reg->value != NULL) {
		sodium_memzero(reg->value, reg->len);
		free(reg->value);
	}
	sodium_memzero(reg, sizeof(*reg));
}

/* Last writer wins on (stamp, author, value); a never-set register loses. */
static int record_register_cmp(const struct record_register *reg, hlc_t stamp,
			       const uint8_t *author, const char *value)
{
	int c;

	if (reg->value == NULL)
		return -1;
	if (reg->stamp != stamp)
		return reg->stamp < stamp ? -1 : 1;
	if ((c = memcmp(reg->author, author, DEVICE_ID_LEN)) != 0)
		return c;
	return record_bytes_cmp((const uint8_t *)reg->value, reg->len, (const uint8_t *)value,
				strlen(value));
}

/*
 * Merges v's mutable fields into regs, all or nothing: copies are made
 * first, so running out of memory leaves regs untouched.
 */
static int record_registers_merge(struct record_register regs[RECORD_FIELD_COUNT],
				  const struct record_version *v)
{
	char *copy[RECORD_FIELD_COUNT] = {NULL, NULL, NULL};
	int r = PKS_ERR_NOMEM;

	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++) {
		if (!(v->fields & RECORD_FIELD_BIT(f)) ||
		    record_register_cmp(&regs[f], v->field[f].stamp, v->author,
					v->field[f].value) >= 0)
			continue;
		copy[f] = strdup(v->field[f].value);
		if (copy[f] == NULL)
			goto out;
	}
	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++) {
		if (copy[f] == NULL)
			continue;
		record_register_clear(&regs[f]);
		regs[f].value = copy[f];
		regs[f].len = strlen(copy[f]);
		regs[f].stamp = v->field[f].stamp;
		memcpy(regs[f].author, v->author, DEVICE_ID_LEN);
		copy[f] = NULL;
	}
	r = PKS_OK;
out:
	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++)
		free(copy[f]);
	return r;
}

static void record_wipe_free(void *p, size_t len)
{
	if (p != NULL) {
		sodium_memzero(p, len);
		free(p);
	}
}

static void record_class_free(struct record_class *c)
{
	if (c == NULL)
		return;
	record_wipe_free(c->credential_id, c->credential_id_len);
	if (c->rp_id != NULL)
		record_wipe_free(c->rp_id, strlen(c->rp_id));
	record_wipe_free(c->user_handle, c->user_handle_len);
	record_wipe_free(c->private_key, c->private_key_len);
	record_wipe_free(c->public_key, c->public_key_len);
	if (c->source != NULL)
		record_wipe_free(c->source, strlen(c->source));
	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++)
		record_register_clear(&c->reg[f]);
	sodium_memzero(c, sizeof(*c));
	free(c);
}

static void *record_memdup(const void *p, size_t len)
{
	void *q = malloc(len ? len : 1);

	if (q != NULL && len > 0)
		memcpy(q, p, len);
	return q;
}

static int record_class_new(const struct record_version *v, const uint8_t hash[32],
			    struct record_class **out)
{
	struct record_class *c = calloc(1, sizeof(*c));
	int r = PKS_ERR_NOMEM;

	if (c == NULL)
		goto out;
	memcpy(c->hash, hash, 32);
	c->credential_id = record_memdup(v->credential_id, v->credential_id_len);
	c->credential_id_len = v->credential_id_len;
	c->rp_id = strdup(v->rp_id);
	c->user_handle = record_memdup(v->user_handle, v->user_handle_len);
	c->user_handle_len = v->user_handle_len;
	c->alg = v->alg;
	c->private_key = malloc(v->private_key_len);
	c->private_key_len = v->private_key_len;
	c->public_key = record_memdup(v->public_key, v->public_key_len);
	c->public_key_len = v->public_key_len;
	c->backup_eligible = v->backup_eligible;
	c->hlc = v->hlc;
	memcpy(c->author, v->author, DEVICE_ID_LEN);
	c->created_at = v->created_at;
	c->backup_state = v->backup_state;
	c->source = strdup(v->source ? v->source : "");
	if (c->credential_id == NULL || c->rp_id == NULL || c->user_handle == NULL ||
	    c->private_key == NULL || c->public_key == NULL || c->source == NULL)
		goto out;
	memcpy(c->private_key, v->private_key, v->private_key_len);
	r = record_registers_merge(c->reg, v);
	if (r != PKS_OK)
		goto out;
	*out = c;
	c = NULL;
out:
	record_class_free(c);
	return r;
}

/* Index of the visible class (earliest create), or -1 without creates. */
static int record_winner_index(const struct record_state *st)
{
	int best = -1;

	for (size_t i = 0; i < st->class_count; i++) {
		struct record_create_key k = record_class_key(st->classes[i]);
		struct record_create_key b;

		if (best < 0) {
			best = (int)i;
			continue;
		}
		b = record_class_key(st->classes[best]);
		if (record_create_key_cmp(&k, &b) < 0)
			best = (int)i;
	}
	return best;
}

static const struct record_class *record_winner(const struct record_state *st)
{
	int i = st->purged ? -1 : record_winner_index(st);

	return i < 0 ? NULL : st->classes[i];
}

/* The visible register of a field: the larger of the update and class ones. */
static const struct record_register *record_visible_register(const struct record_state *st,
							     size_t f)
{
	const struct record_class *c = record_winner(st);
	const struct record_register *u = &st->reg[f];

	if (st->purged)
		return NULL;
	if (c != NULL && c->reg[f].value != NULL &&
	    (u->value == NULL ||
	     record_register_cmp(u, c->reg[f].stamp, c->reg[f].author, c->reg[f].value) < 0))
		u = &c->reg[f];
	return u->value != NULL ? u : NULL;
}

/* ---- tag sets ---- */

/* Position of t in s, or where it would go; *found tells which. */
static size_t record_tags_find(const struct record_tag_set *s, const struct record_delete_tag *t,
			       bool *found)
{
	size_t lo = 0, hi = s->count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = record_delete_tag_cmp(&s->tags[mid], t);

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

static bool record_tags_contains(const struct record_tag_set *s, const struct record_delete_tag *t)
{
	bool found;

	record_tags_find(s, t, &found);
	return found;
}

/* Makes room for n more tags so the inserts that follow cannot fail. */
static int record_tags_reserve(struct record_tag_set *s, size_t n)
{
	struct record_delete_tag *tags;
	size_t cap;

	if (n > RECORD_STATE_MAX_TAGS - s->count)
		return PKS_ERR_TOO_LARGE;
	if (s->count + n <= s->cap)
		return PKS_OK;
	cap = s->cap ? s->cap * 2 : 4;
	while (cap < s->count + n)
		cap *= 2;
	if (cap > RECORD_STATE_MAX_TAGS)
		cap = RECORD_STATE_MAX_TAGS;
	tags = calloc(cap, sizeof(*tags));
	if (tags == NULL)
		return PKS_ERR_NOMEM;
	if (s->count > 0)
		memcpy(tags, s->tags, s->count * sizeof(*tags));
	free(s->tags);
	s->tags = tags;
	s->cap = cap;
	return PKS_OK;
}

/* Inserts into reserved room. */
static void record_tags_insert(struct record_tag_set *s, const struct record_delete_tag *t)
{
	bool found;
	size_t at = record_tags_find(s, t, &found);

	if (found || s->count >= s->cap)
		return;
	memmove(&s->tags[at + 1], &s->tags[at], (s->count - at) * sizeof(*t));
	s->tags[at] = *t;
	s->count++;
}

static void record_tags_clear(struct record_tag_set *s)
{
	free(s->tags);
	s->tags = NULL;
	s->count = s->cap = 0;
}

static bool record_tag_outstanding(const struct record_state *st, size_t i)
{
	return !record_tags_contains(&st->undone, &st->deletes.tags[i]);
}

/* ---- state ---- */

struct record_state *record_state_new(const uint8_t id[RECORD_ID_LEN])
{
	struct record_state *st = calloc(1, sizeof(*st));

	if (st != NULL)
		memcpy(st->id, id, RECORD_ID_LEN);
	return st;
}

/* Drops everything but the id and the purge stamp. */
static void record_state_wipe(struct record_state *st)
{
	for (size_t i = 0; i < st->class_count; i++) {
		record_class_free(st->classes[i]);
		st->classes[i] = NULL;
	}
	st->class_count = 0;
	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++)
		record_register_clear(&st->reg[f]);
	record_tags_clear(&st->deletes);
	record_tags_clear(&st->undone);
	st->has_restore = false;
	st->restore_max = 0;
}

void record_state_free(struct record_state *st)
{
	if (st == NULL)
		return;
	record_state_wipe(st);
	sodium_memzero(st, sizeof(*st));
	free(st);
}

static int record_apply_create(struct record_state *st, const struct record_version *v)
{
	struct record_class *c = NULL, *fresh = NULL;
	struct record_create_key vk;
	uint8_t hash[32];
	char *source = NULL;
	int evict = -1, r;

	record_class_hash(v, hash);
	vk = (struct record_create_key){.hlc = v->hlc,
					.author = v->author,
					.hash = hash,
					.created_at = v->created_at,
					.backup_state = v->backup_state,
					.source = v->source};
	for (size_t i = 0; i < st->class_count; i++)
		if (memcmp(st->classes[i]->hash, hash, 32) == 0)
			c = st->classes[i];
	if (c == NULL) {
		if (st->class_count == RECORD_STATE_MAX_CLASSES) {
			/* Keep the classes with the earliest creates. */
			struct record_create_key e;

			for (size_t i = 0; i < st->class_count; i++) {
				struct record_create_key k = record_class_key(st->classes[i]);

				if (evict < 0 || record_create_key_cmp(&k, &e) > 0) {
					evict = (int)i;
					e = k;
				}
			}
			if (record_create_key_cmp(&vk, &e) > 0) {
				r = PKS_ERR_REJECTED;
				goto out;
			}
		}
		r = record_class_new(v, hash, &fresh);
		if (r != PKS_OK)
			goto out;
		if (evict >= 0) {
			record_class_free(st->classes[evict]);
			st->classes[evict] = fresh;
		} else {
			st->classes[st->class_count++] = fresh;
		}
		c = fresh;
		fresh = NULL;
	} else {
		struct record_create_key ck = record_class_key(c);
		bool earlier = record_create_key_cmp(&vk, &ck) < 0;

		if (earlier) {
			source = strdup(v->source ? v->source : "");
			if (source == NULL) {
				r = PKS_ERR_NOMEM;
				goto out;
			}
		}
		r = record_registers_merge(c->reg, v);
		if (r != PKS_OK)
			goto out;
		if (earlier) {
			record_wipe_free(c->source, strlen(c->source));
			c->source = source;
			source = NULL;
			c->hlc = v->hlc;
			memcpy(c->author, v->author, DEVICE_ID_LEN);
			c->created_at = v->created_at;
			c->backup_state = v->backup_state;
		}
	}
	r = record_winner(st) == c ? PKS_OK : PKS_ERR_REJECTED;
out:
	free(source);
	record_class_free(fresh);
	return r;
}

static int record_apply_restore(struct record_state *st, const struct record_version *v)
{
	size_t fresh = 0;
	int r;

	for (size_t i = 0; i < v->restore_tag_count; i++)
		if (!record_tags_contains(&st->undone, &v->restore_tags[i]))
			fresh++;
	r = record_tags_reserve(&st->undone, fresh);
	if (r != PKS_OK)
		return r;
	for (size_t i = 0; i < v->restore_tag_count; i++)
		record_tags_insert(&st->undone, &v->restore_tags[i]);
	if (!st->has_restore || v->hlc > st->restore_max)
		st->restore_max = v->hlc;
	st->has_restore = true;
	return PKS_OK;
}

static bool record_purge_earlier(const struct record_state *st, const struct record_version *v)
{
	if (v->hlc != st->purge_hlc)
		return v->hlc < st->purge_hlc;
	return memcmp(v->author, st->purge_author, DEVICE_ID_LEN) < 0;
}

int record_state_apply(struct record_state *st, const struct record_version *v)
{
	struct record_delete_tag tag;
	int r = PKS_ERR_INVALID;

	if (st == NULL || record_version_validate(v) != PKS_OK ||
	    memcmp(v->record_id, st->id, RECORD_ID_LEN) != 0)
		goto out;
	if (st->purged) {
		if (v->op == RECORD_OP_PURGE && record_purge_earlier(st, v)) {
			st->purge_hlc = v->hlc;
			memcpy(st->purge_author, v->author, DEVICE_ID_LEN);
		}
		r = PKS_OK;
		goto out;
	}
	switch (v->op) {
	case RECORD_OP_CREATE:
		r = record_apply_create(st, v);
		break;
	case RECORD_OP_UPDATE:
		r = record_registers_merge(st->reg, v);
		break;
	case RECORD_OP_DELETE:
		tag.hlc = v->hlc;
		memcpy(tag.author, v->author, DEVICE_ID_LEN);
		r = PKS_OK;
		if (!record_tags_contains(&st->deletes, &tag)) {
			r = record_tags_reserve(&st->deletes, 1);
			if (r == PKS_OK)
				record_tags_insert(&st->deletes, &tag);
		}
		break;
	case RECORD_OP_RESTORE:
		r = record_apply_restore(st, v);
		break;
	case RECORD_OP_PURGE:
		record_state_wipe(st);
		st->purged = true;
		st->purge_hlc = v->hlc;
		memcpy(st->purge_author, v->author, DEVICE_ID_LEN);
		r = PKS_OK;
		break;
	}
out:
	return r;
}

bool record_state_dominated(const struct record_state *st, const struct record_version *v)
{
	struct record_delete_tag tag;

	if (st == NULL || record_version_validate(v) != PKS_OK ||
	    memcmp(v->record_id, st->id, RECORD_ID_LEN) != 0)
		return false;
	if (st->purged)
		return !(v->op == RECORD_OP_PURGE && v->hlc == st->purge_hlc &&
			 memcmp(v->author, st->purge_author, DEVICE_ID_LEN) == 0);
	switch (v->op) {
	case RECORD_OP_UPDATE:
		for (size_t f = 0; f < RECORD_FIELD_COUNT; f++)
			if ((v->fields & RECORD_FIELD_BIT(f)) &&
			    record_register_cmp(&st->reg[f], v->field[f].stamp, v->author,
						v->field[f].value) <= 0)
				return false;
		return true;
	case RECORD_OP_DELETE:
		tag.hlc = v->hlc;
		memcpy(tag.author, v->author, DEVICE_ID_LEN);
		return record_tags_contains(&st->undone, &tag);
	case RECORD_OP_CREATE:
	case RECORD_OP_RESTORE:
	case RECORD_OP_PURGE:
		return false;
	}
	return false;
}

hlc_t record_state_updated_at(const struct record_state *st)
{
	const struct record_class *c;
	hlc_t t = 0;

	if (st->purged)
		return st->purge_hlc;
	c = record_winner(st);
	if (c != NULL)
		t = c->hlc;
	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++) {
		const struct record_register *reg = record_visible_register(st, f);

		if (reg != NULL && reg->stamp > t)
			t = reg->stamp;
	}
	for (size_t i = 0; i < st->deletes.count; i++)
		if (st->deletes.tags[i].hlc > t && record_tag_outstanding(st, i))
			t = st->deletes.tags[i].hlc;
	if (st->has_restore && st->restore_max > t)
		t = st->restore_max;
	return t;
}

void record_state_digest(const struct record_state *st, uint8_t out[RECORD_DIGEST_LEN])
{
	const struct record_class *c;
	crypto_generichash_state h;
	size_t outstanding = 0;

	crypto_generichash_init(&h, NULL, 0, RECORD_DIGEST_LEN);
	crypto_generichash_update(&h, (const uint8_t *)record_digest_domain,
				  sizeof(record_digest_domain) - 1);
	crypto_generichash_update(&h, st->id, RECORD_ID_LEN);
	record_hash_be(&h, st->purged, 1);
	if (st->purged) {
		record_hash_be(&h, st->purge_hlc, 8);
		crypto_generichash_update(&h, st->purge_author, DEVICE_ID_LEN);
		goto out;
	}
	c = record_winner(st);
	record_hash_be(&h, c != NULL, 1);
	if (c != NULL) {
		crypto_generichash_update(&h, c->hash, 32);
		record_hash_be(&h, c->hlc, 8);
		crypto_generichash_update(&h, c->author, DEVICE_ID_LEN);
		record_hash_be(&h, c->created_at, 8);
		record_hash_be(&h, c->backup_state, 1);
		record_hash_lv(&h, c->source, strlen(c->source));
	}
	for (size_t f = 0; f < RECORD_FIELD_COUNT; f++) {
		const struct record_register *reg = record_visible_register(st, f);

		record_hash_be(&h, reg != NULL, 1);
		if (reg == NULL)
			continue;
		record_hash_be(&h, reg->stamp, 8);
		crypto_generichash_update(&h, reg->author, DEVICE_ID_LEN);
		record_hash_lv(&h, reg->value, reg->len);
	}
	for (size_t i = 0; i < st->deletes.count; i++)
		if (record_tag_outstanding(st, i))
			outstanding++;
	record_hash_be(&h, outstanding, 4);
	for (size_t i = 0; i < st->deletes.count; i++) {
		if (!record_tag_outstanding(st, i))
			continue;
		record_hash_be(&h, st->deletes.tags[i].hlc, 8);
		crypto_generichash_update(&h, st->deletes.tags[i].author, DEVICE_ID_LEN);
	}
	record_hash_be(&h, record_state_updated_at(st), 8);
out:
	crypto_generichash_final(&h, out, RECORD_DIGEST_LEN);
	sodium_memzero(&h, sizeof(h));
}

/* ---- accessors ---- */

const uint8_t *record_state_id(const struct record_state *st)
{
	return st->id;
}

bool record_state_has_create(const struct record_state *st)
{
	return record_winner(st) != NULL;
}

bool record_state_visible(const struct record_state *st)
{
	return record_winner(st) != NULL;
}

bool record_state_purged(const struct record_state *st)
{
	return st->purged;
}

hlc_t record_state_purged_hlc(const struct record_state *st)
{
	return st->purged ? st->purge_hlc : 0;
}

const uint8_t *record_state_credential_id(const struct record_state *st, size_t *len)
{
	const struct record_class *c = record_winner(st);

	if (len != NULL)
		*len = c ? c->credential_id_len : 0;
	return c ? c->credential_id : NULL;
}

const char *record_state_rp_id(const struct record_state *st)
{
	const struct record_class *c = record_winner(st);

	return c ? c->rp_id : NULL;
}

const uint8_t *record_state_user_handle(const struct record_state *st, size_t *len)
{
	const struct record_class *c = record_winner(st);

	if (len != NULL)
		*len = c ? c->user_handle_len : 0;
	return c ? c->user_handle : NULL;
}

enum record_alg record_state_alg(const struct record_state *st)
{
	const struct record_class *c = record_winner(st);

	return c ? c->alg : (enum record_alg)0;
}

const uint8_t *record_state_public_key(const struct record_state *st, size_t *len)
{
	const struct record_class *c = record_winner(st);

	if (len != NULL)
		*len = c ? c->public_key_len : 0;
	return c ? c->public_key : NULL;
}

bool record_state_backup_eligible(const struct record_state *st)
{
	const struct record_class *c = record_winner(st);

	return c ? c->backup_eligible : false;
}

bool record_state_backup_state(const struct record_state *st)
{
	const struct record_class *c = record_winner(st);

	return c ? c->backup_state : false;
}

uint64_t record_state_created_at(const struct record_state *st)
{
	const struct record_class *c = record_winner(st);

	return c ? c->created_at : 0;
}

const char *record_state_source(const struct record_state *st)
{
	const struct record_class *c = record_winner(st);

	return c ? c->source : NULL;
}

int record_state_private_key(const struct record_state *st, const uint8_t **key, size_t *len)
{
	const struct record_class *c = record_winner(st);

	if (c == NULL)
		return PKS_ERR_STATE;
	*key = c->private_key;
	*len = c->private_key_len;
	return PKS_OK;
}

const char *record_state_field(const struct record_state *st, enum record_field f, hlc_t *stamp,
			       uint8_t author[DEVICE_ID_LEN])
{
	const struct record_register *reg;

	if ((unsigned int)f >= RECORD_FIELD_COUNT)
		return NULL;
	reg = record_visible_register(st, f);
	if (stamp != NULL)
		*stamp = reg ? reg->stamp : 0;
	if (author != NULL) {
		if (reg != NULL)
			memcpy(author, reg->author, DEVICE_ID_LEN);
		else
			memset(author, 0, DEVICE_ID_LEN);
	}
	return reg ? reg->value : NULL;
}

static const char *record_state_field_or_empty(const struct record_state *st, enum record_field f)
{
	const char *s = record_state_field(st, f, NULL, NULL);

	return s ? s : "";
}

const char *record_state_user_name(const struct record_state *st)
{
	return record_state_field_or_empty(st, RECORD_FIELD_USER_NAME);
}

const char *record_state_display_name(const struct record_state *st)
{
	return record_state_field_or_empty(st, RECORD_FIELD_DISPLAY_NAME);
}

const char *record_state_notes(const struct record_state *st)
{
	return record_state_field_or_empty(st, RECORD_FIELD_NOTES);
}

bool record_state_trashed(const struct record_state *st)
{
	if (st->purged)
		return false;
	for (size_t i = 0; i < st->deletes.count; i++)
		if (record_tag_outstanding(st, i))
			return true;
	return false;
}

uint64_t record_state_trashed_at(const struct record_state *st)
{
	/* Tags are ascending, so the last outstanding one is the newest. */
	for (size_t i = st->deletes.count; i > 0 && !st->purged; i--)
		if (record_tag_outstanding(st, i - 1))
			return hlc_wall_ms(st->deletes.tags[i - 1].hlc);
	return 0;
}

size_t record_state_delete_tags(const struct record_state *st, struct record_delete_tag *out,
				size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < st->deletes.count && !st->purged; i++) {
		if (!record_tag_outstanding(st, i))
			continue;
		if (n < cap && out != NULL)
			out[n] = st->deletes.tags[i];
		n++;
	}
	return n;
}
