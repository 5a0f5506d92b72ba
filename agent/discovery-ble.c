#include "agent/discovery-ble.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/discovery.h"
#include "common/err.h"
#include "proto/hint.h"
#include "proto/membership.h"

struct discovery_ble {
	uv_loop_t *loop;
	struct vault *vault;
	struct pks_logger log;
	struct discovery_ble_cb cb;
	void *user;
	struct discovery_ble_options opt;
	struct ble *ble;
	uv_timer_t *tick;
	/* What is advertised now. */
	bool advertising, as_member, as_pairing;
	uint64_t rotated_at;
	bool adapter_logged;
	struct {
		char address[18];
		uint64_t seen_ms;
	} sponsors[DISCOVERY_BLE_SPONSORS_MAX];
	size_t n_sponsors;
};

/* ---- advertising ---- */

static void discovery_ble_publish(struct discovery_ble *d, bool member, bool pairing)
{
	uint8_t key[HINT_KEY_LEN], nonce[HINT_NONCE_LEN], hint[HINT_LEN], device[32];
	int r;

	d->as_member = member;
	d->as_pairing = pairing;
	d->rotated_at = uv_now(d->loop);
	if (!member) {
		if (d->advertising)
			ble_advertise_stop(d->ble);
		d->advertising = false;
		ble_serve(d->ble, false);
		return;
	}
	vault_device_id(d->vault, device);
	r = vault_hint_key(d->vault, key);
	if (r == PKS_OK) {
		randombytes_buf(nonce, sizeof(nonce));
		hint_make(key, device, nonce, hint);
		r = ble_advertise(d->ble, hint, sizeof(hint), pairing);
	}
	sodium_memzero(key, sizeof(key));
	if (r != PKS_OK) {
		pks_log(&d->log, PKS_LOG_WARN, "discovery: cannot advertise over BLE: %s",
			pks_strerror(r));
		return;
	}
	d->advertising = true;
	/* Members accept links from centrals (sessions, pairing). */
	ble_serve(d->ble, true);
	pks_log(&d->log, PKS_LOG_DEBUG, "discovery: a new BLE hint%s", pairing ? " (pairing)" : "");
}

static void discovery_ble_check(struct discovery_ble *d, bool force)
{
	uint8_t self[32];
	bool member = false, pairing;

	if (vault_is_initialized(d->vault) && !vault_is_locked(d->vault)) {
		vault_device_id(d->vault, self);
		member = membership_is_member(vault_membership(d->vault), self);
	}
	pairing = member && d->cb.pairing != NULL && d->cb.pairing(d->user);
	if (force || member != d->as_member || pairing != d->as_pairing ||
	    (d->advertising && uv_now(d->loop) - d->rotated_at >= d->opt.rotate_ms))
		discovery_ble_publish(d, member, pairing);
}

static void discovery_ble_tick(uv_timer_t *t)
{
	struct discovery_ble *d = t->data;
	uint64_t now = uv_now(d->loop);
	size_t i = 0;

	discovery_ble_check(d, false);
	while (i < d->n_sponsors) {
		if (now - d->sponsors[i].seen_ms > DISCOVERY_BLE_SPONSOR_TTL_MS) {
			d->sponsors[i] = d->sponsors[--d->n_sponsors];
			continue;
		}
		if (d->cb.sponsor != NULL)
			d->cb.sponsor(d->user, d->sponsors[i].address);
		i++;
	}
}

void discovery_ble_rotate(struct discovery_ble *d)
{
	if (d != NULL)
		discovery_ble_check(d, true);
}

/* ---- scanning ---- */

static void discovery_ble_sponsor(struct discovery_ble *d, const char *address, bool pairing)
{
	size_t i;

	for (i = 0; i < d->n_sponsors; i++)
		if (strcmp(d->sponsors[i].address, address) == 0)
			break;
	if (!pairing) {
		if (i < d->n_sponsors)
			d->sponsors[i] = d->sponsors[--d->n_sponsors];
		return;
	}
	if (i == d->n_sponsors) {
		if (d->n_sponsors == DISCOVERY_BLE_SPONSORS_MAX)
			return;
		d->n_sponsors++;
	}
	snprintf(d->sponsors[i].address, sizeof(d->sponsors[i].address), "%s", address);
	d->sponsors[i].seen_ms = uv_now(d->loop);
}

struct discovery_ble_match {
	const uint8_t *key, *hint, *self;
	uint8_t found[32];
	bool matched;
};

static int discovery_ble_match_one(void *user, const struct membership_device *dev)
{
	struct discovery_ble_match *m = user;

	if (dev->revoked || memcmp(dev->device_id, m->self, 32) == 0)
		return 0;
	if (!hint_matches(m->key, dev->device_id, m->hint))
		return 0;
	memcpy(m->found, dev->device_id, 32);
	m->matched = true;
	return 1;
}

static void discovery_ble_peer(void *user, const struct ble_peer_info *p)
{
	struct discovery_ble *d = user;
	uint8_t key[HINT_KEY_LEN], self[32];
	struct discovery_ble_match m;

	discovery_ble_sponsor(d, p->address, p->pairing);
	if (p->pairing && d->cb.sponsor != NULL)
		d->cb.sponsor(d->user, p->address);
	if (p->hint_len != HINT_LEN || !vault_is_initialized(d->vault) ||
	    vault_hint_key(d->vault, key) != PKS_OK)
		return;
	vault_device_id(d->vault, self);
	memset(&m, 0, sizeof(m));
	m.key = key;
	m.hint = p->hint;
	m.self = self;
	membership_foreach_device(vault_membership(d->vault), discovery_ble_match_one, &m);
	sodium_memzero(key, sizeof(key));
	if (m.matched && d->cb.member != NULL)
		d->cb.member(d->user, m.found, p->address);
}

static void discovery_ble_accepted(void *user, struct ble_link *l)
{
	struct discovery_ble *d = user;

	if (d->cb.accepted != NULL) {
		d->cb.accepted(d->user, l);
	} else {
		ble_link_close(l, "not accepting");
	}
}

static void discovery_ble_adapter(void *user, bool present)
{
	struct discovery_ble *d = user;

	if (present) {
		pks_log(&d->log, PKS_LOG_INFO, "discovery: Bluetooth adapter present");
		d->adapter_logged = false;
	} else if (!d->adapter_logged) {
		/* Once per absence: BLE is simply off until an adapter appears. */
		pks_log(&d->log, PKS_LOG_INFO, "discovery: no Bluetooth adapter; BLE is off");
		d->adapter_logged = true;
	}
}

/* ---- life cycle ---- */

int discovery_ble_new(uv_loop_t *loop, struct vault *v, const struct pks_logger *log,
		      const struct discovery_ble_options *opt, const struct discovery_ble_cb *cb,
		      void *user, struct discovery_ble **out)
{
	static const struct ble_cb bcb = {discovery_ble_peer, discovery_ble_accepted,
					  discovery_ble_adapter};
	struct discovery_ble *d;
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
	r = ble_new_on_bus(loop, opt->bus_address, log, &bcb, d, &d->ble);
	if (r == PKS_OK)
		r = ble_scan(d->ble, true);
	if (r != PKS_OK) {
		pks_log(&d->log, PKS_LOG_INFO, "discovery: BLE unavailable (%s); BLE is off",
			pks_strerror(r));
		ble_free(d->ble);
		free(d->tick);
		free(d);
		return r;
	}
	uv_timer_init(loop, d->tick);
	d->tick->data = d;
	uv_timer_start(d->tick, discovery_ble_tick, 0, DISCOVERY_TICK_MS);
	*out = d;
	return PKS_OK;
}

static void discovery_ble_tick_closed(uv_handle_t *h)
{
	free(h);
}

void discovery_ble_free(struct discovery_ble *d)
{
	if (d == NULL)
		return;
	uv_timer_stop(d->tick);
	uv_close((uv_handle_t *)d->tick, discovery_ble_tick_closed);
	ble_free(d->ble);
	free(d);
}

struct ble *discovery_ble_handle(struct discovery_ble *d)
{
	return d != NULL ? d->ble : NULL;
}
