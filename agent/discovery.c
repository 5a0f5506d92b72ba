#include "agent/discovery.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "proto/hint.h"
#include "proto/membership.h"
#include "transport/mdns-txt.h"
#include "transport/tcp.h"

struct discovery {
	uv_loop_t *loop;
	struct vault *vault;
	struct pks_logger log;
	struct discovery_cb cb;
	void *user;
	struct discovery_options opt;
	struct mdns *mdns;
	uv_timer_t *tick;
	/* What is published now. */
	bool published, as_member, as_pairing;
	uint64_t rotated_at;
	/* Devices in pairing mode now, told again at every tick: a join may
	   start after the announcement was first seen. */
	struct {
		char instance[MDNS_INSTANCE_MAX + 1];
		char addr[TCP_ADDR_MAX + 1];
	} sponsors[DISCOVERY_SPONSORS_MAX];
	size_t n_sponsors;
};

/* ---- publishing ---- */

static void discovery_publish(struct discovery *d, bool member, bool pairing)
{
	struct mdns_txt txt;
	uint8_t rdata[MDNS_TXT_MAX], key[HINT_KEY_LEN], nonce[HINT_NONCE_LEN], hint[HINT_LEN],
	    device[32], name_rnd[4];
	char hex[2 * HINT_LEN + 1], instance[32];
	size_t len = 0;
	int r = PKS_OK;

	d->as_member = member;
	d->as_pairing = pairing;
	d->rotated_at = uv_now(d->loop);
	if (!member && !pairing) {
		if (d->published)
			mdns_unpublish(d->mdns);
		d->published = false;
		return;
	}
	mdns_txt_init(&txt);
	r = mdns_txt_add(&txt, "v", "1", 1);
	if (r == PKS_OK && member) {
		vault_device_id(d->vault, device);
		r = vault_hint_key(d->vault, key);
		if (r == PKS_OK) {
			randombytes_buf(nonce, sizeof(nonce));
			hint_make(key, device, nonce, hint);
			hint_to_hex(hint, hex);
			r = mdns_txt_add(&txt, "h", hex, 2 * HINT_LEN);
		}
		sodium_memzero(key, sizeof(key));
	}
	if (r == PKS_OK && pairing)
		r = mdns_txt_add(&txt, "p", "1", 1);
	if (r == PKS_OK)
		r = mdns_txt_build(&txt, rdata, sizeof(rdata), &len);
	if (r == PKS_OK) {
		randombytes_buf(name_rnd, sizeof(name_rnd));
		snprintf(instance, sizeof(instance), "pksync-%02x%02x%02x%02x", name_rnd[0],
			 name_rnd[1], name_rnd[2], name_rnd[3]);
		r = mdns_publish(d->mdns, instance, d->opt.port, rdata, len);
	}
	if (r != PKS_OK) {
		pks_log(&d->log, PKS_LOG_WARN, "discovery: cannot publish: %s", pks_strerror(r));
		return;
	}
	d->published = true;
	pks_log(&d->log, PKS_LOG_DEBUG, "discovery: published a new hint%s",
		pairing ? " (pairing)" : "");
}

static void discovery_check(struct discovery *d, bool force)
{
	uint8_t self[32];
	bool member = false, pairing;

	if (d->opt.port != 0 && vault_is_initialized(d->vault) && !vault_is_locked(d->vault)) {
		vault_device_id(d->vault, self);
		member = membership_is_member(vault_membership(d->vault), self);
	}
	pairing = member && d->cb.pairing != NULL && d->cb.pairing(d->user);

	if (force || member != d->as_member || pairing != d->as_pairing ||
	    (d->published && uv_now(d->loop) - d->rotated_at >= d->opt.rotate_ms))
		discovery_publish(d, member, pairing);
}

static void discovery_tick(uv_timer_t *t)
{
	struct discovery *d = t->data;

	discovery_check(d, false);
	for (size_t i = 0; i < d->n_sponsors && d->cb.sponsor != NULL; i++)
		d->cb.sponsor(d->user, d->sponsors[i].addr);
}

static void discovery_forget_sponsor(struct discovery *d, const char *instance)
{
	for (size_t i = 0; i < d->n_sponsors; i++) {
		if (strcmp(d->sponsors[i].instance, instance) != 0)
			continue;
		d->sponsors[i] = d->sponsors[--d->n_sponsors];
		return;
	}
}

static void discovery_forget_sponsor_at(struct discovery *d, const char *addr)
{
	for (size_t i = 0; i < d->n_sponsors;) {
		if (strcmp(d->sponsors[i].addr, addr) == 0)
			d->sponsors[i] = d->sponsors[--d->n_sponsors];
		else
			i++;
	}
}

static void discovery_remember_sponsor(struct discovery *d, const char *instance, const char *addr)
{
	size_t i;

	for (i = 0; i < d->n_sponsors; i++)
		if (strcmp(d->sponsors[i].instance, instance) == 0)
			break;
	if (i == d->n_sponsors) {
		if (d->n_sponsors == DISCOVERY_SPONSORS_MAX)
			return;
		d->n_sponsors++;
	}
	snprintf(d->sponsors[i].instance, sizeof(d->sponsors[i].instance), "%s", instance);
	snprintf(d->sponsors[i].addr, sizeof(d->sponsors[i].addr), "%s", addr);
}

void discovery_rotate(struct discovery *d)
{
	if (d != NULL)
		discovery_check(d, true);
}

/* ---- browsing ---- */

static int discovery_addr_text(const struct mdns_found *f, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN], ifname[IF_NAMESIZE];

	if (f->addr.ss_family == AF_INET) {
		const struct sockaddr_in *sa = (const struct sockaddr_in *)&f->addr;
		if (inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof(ip)) == NULL)
			return PKS_ERR_INVALID;
		snprintf(out, cap, "%s:%u", ip, ntohs(sa->sin_port));
		return PKS_OK;
	}
	if (f->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *sa = (const struct sockaddr_in6 *)&f->addr;
		if (inet_ntop(AF_INET6, &sa->sin6_addr, ip, sizeof(ip)) == NULL)
			return PKS_ERR_INVALID;
		if (IN6_IS_ADDR_LINKLOCAL(&sa->sin6_addr)) {
			if (sa->sin6_scope_id == 0 ||
			    if_indextoname(sa->sin6_scope_id, ifname) == NULL)
				return PKS_ERR_INVALID;
			snprintf(out, cap, "[%s%%%s]:%u", ip, ifname, ntohs(sa->sin6_port));
		} else {
			snprintf(out, cap, "[%s]:%u", ip, ntohs(sa->sin6_port));
		}
		return PKS_OK;
	}
	return PKS_ERR_INVALID;
}

struct discovery_match {
	const uint8_t *key, *hint, *self;
	uint8_t found[32];
	bool matched;
};

static int discovery_match_one(void *user, const struct membership_device *dev)
{
	struct discovery_match *m = user;

	if (dev->revoked || memcmp(dev->device_id, m->self, 32) == 0)
		return 0;
	if (!hint_matches(m->key, dev->device_id, m->hint))
		return 0;
	memcpy(m->found, dev->device_id, 32);
	m->matched = true;
	return 1;
}

static void discovery_found(void *user, const struct mdns_found *f)
{
	struct discovery *d = user;
	struct mdns_txt txt;
	const struct mdns_txt_pair *v, *h, *p;
	char addr[TCP_ADDR_MAX + 1];
	uint8_t hint[HINT_LEN], key[HINT_KEY_LEN], self[32];
	struct discovery_match m;

	if (mdns_txt_parse(f->txt, f->txt_len, &txt) != PKS_OK)
		return;
	v = mdns_txt_get(&txt, "v");
	if (v == NULL || v->value_len != 1 || v->value[0] != '1')
		return; /* another version of the protocol, or not ours */
	if (discovery_addr_text(f, addr, sizeof(addr)) != PKS_OK)
		return;
	p = mdns_txt_get(&txt, "p");
	if (p != NULL && p->value_len == 1 && p->value[0] == '1') {
		discovery_remember_sponsor(d, f->instance, addr);
		if (d->cb.sponsor != NULL)
			d->cb.sponsor(d->user, addr);
	} else {
		/* Not (or no longer) pairing: also under an older name at this address,
		   since a device renames itself whenever it leaves pairing mode. */
		discovery_forget_sponsor(d, f->instance);
		discovery_forget_sponsor_at(d, addr);
	}
	h = mdns_txt_get(&txt, "h");
	if (h == NULL || hint_from_hex((const char *)h->value, h->value_len, hint) != 0)
		return;
	if (!vault_is_initialized(d->vault) || vault_hint_key(d->vault, key) != PKS_OK)
		return;
	vault_device_id(d->vault, self);
	memset(&m, 0, sizeof(m));
	m.key = key;
	m.hint = hint;
	m.self = self;
	membership_foreach_device(vault_membership(d->vault), discovery_match_one, &m);
	sodium_memzero(key, sizeof(key));
	if (m.matched && d->cb.member != NULL)
		d->cb.member(d->user, m.found, addr);
}

static void discovery_lost(void *user, const char *instance)
{
	/* Member dialers keep their backoff; a device that comes back is found again. */
	discovery_forget_sponsor(user, instance);
}

static const struct mdns_cb discovery_mdns_cb = {discovery_found, discovery_lost, NULL};

/* ---- life cycle ---- */

int discovery_new(uv_loop_t *loop, struct vault *v, const struct pks_logger *log,
		  const struct discovery_options *opt, const struct discovery_cb *cb, void *user,
		  struct discovery **out)
{
	struct discovery *d;
	struct mdns_opts mo;
	int r;

	if (loop == NULL || v == NULL || opt == NULL || cb == NULL || out == NULL)
		return PKS_ERR_INVALID;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return PKS_ERR_NOMEM;
	d->tick = calloc(1, sizeof(*d->tick));
	if (d->tick == NULL) {
		free(d);
		return PKS_ERR_NOMEM;
	}
	d->loop = loop;
	d->vault = v;
	if (log != NULL)
		d->log = *log;
	d->cb = *cb;
	d->user = user;
	d->opt = *opt;
	if (d->opt.rotate_ms == 0)
		d->opt.rotate_ms = DISCOVERY_ROTATE_MS;
	memset(&mo, 0, sizeof(mo));
	mo.backend = opt->backend;
	r = mdns_new_opts(loop, log, &discovery_mdns_cb, d, &mo, &d->mdns);
	if (r == PKS_OK)
		r = mdns_browse(d->mdns, true);
	if (r != PKS_OK) {
		pks_log(&d->log, PKS_LOG_WARN, "discovery: mDNS unavailable: %s", pks_strerror(r));
		mdns_free(d->mdns);
		free(d->tick);
		free(d);
		return r;
	}
	uv_timer_init(loop, d->tick);
	d->tick->data = d;
	uv_timer_start(d->tick, discovery_tick, 0, DISCOVERY_TICK_MS);
	pks_log(&d->log, PKS_LOG_INFO, "discovery: mDNS through %s", mdns_backend(d->mdns));
	*out = d;
	return PKS_OK;
}

static void discovery_tick_closed(uv_handle_t *h)
{
	free(h);
}

void discovery_free(struct discovery *d)
{
	if (d == NULL)
		return;
	uv_timer_stop(d->tick);
	uv_close((uv_handle_t *)d->tick, discovery_tick_closed);
	if (d->published)
		mdns_unpublish(d->mdns);
	mdns_free(d->mdns);
	free(d);
}

const char *discovery_backend(const struct discovery *d)
{
	return d != NULL ? mdns_backend(d->mdns) : "none";
}
