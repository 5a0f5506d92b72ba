/*
 * The control handler: turns each request of docs/control-protocol.md into
 * vault calls and the result into JSON. Sentences returned to the CLI may
 * name records (the user asked about them); log lines never do.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/discovery-ble.h"
#include "agent/discovery.h"
#include "agent/export.h"
#include "agent/net.h"
#include "agent/pairing.h"
#include "agent/passkey.h"
#include "common/err.h"

#define PKSYNC_VERSION "0.1.0"
#define COMMANDS_ARG_MAX (64 * 1024)
#define COMMANDS_UNLOCK_DELAY_MAX_MS 60000

static uint64_t commands_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static json_t *commands_b64(const uint8_t *data, size_t len)
{
	size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *text = malloc(cap);
	json_t *j;

	if (text == NULL)
		return NULL;
	sodium_bin2base64(text, cap, data, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	j = json_string(text);
	sodium_memzero(text, cap);
	free(text);
	return j;
}

static json_t *commands_hex(const uint8_t *data, size_t len)
{
	char text[2 * 64 + 1];

	if (len > 64)
		return NULL;
	sodium_bin2hex(text, sizeof(text), data, len);
	return json_string(text);
}

static json_t *commands_time(uint64_t unix_ms)
{
	time_t secs = (time_t)(unix_ms / 1000);
	struct tm tm;
	char text[40];

	if (unix_ms == 0)
		return json_null();
	gmtime_r(&secs, &tm);
	strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_string(text);
}

/* Reads an optional string argument; PKS_ERR_INVALID when present but not a sane string. */
static int commands_str(json_t *request, const char *key, const char **out)
{
	json_t *j = json_object_get(request, key);

	*out = NULL;
	if (j == NULL || json_is_null(j))
		return PKS_OK;
	if (!json_is_string(j) || json_string_length(j) > COMMANDS_ARG_MAX ||
	    strlen(json_string_value(j)) != json_string_length(j))
		return PKS_ERR_INVALID;
	*out = json_string_value(j);
	return PKS_OK;
}

static void commands_reply_err(struct control_request *req, int err, const char *what)
{
	char msg[512];

	switch (err) {
	case PKS_ERR_LOCKED:
		control_request_reply_error(req, "The vault is locked: run 'pksync unlock'.");
		return;
	case PKS_ERR_STATE:
		control_request_reply_error(
		    req, "The vault is not initialised: run 'pksync init' first.");
		return;
	default:
		snprintf(msg, sizeof(msg), "Could not %s: %s.", what, pks_strerror(err));
		control_request_reply_error(req, msg);
		return;
	}
}

/* A local change: sync sessions push it. */
static void commands_changed(struct agent *a)
{
	if (a->net != NULL)
		net_local_change(a->net);
}

/* Refuses the request unless the vault is initialised and unlocked. */
static int commands_need_unlocked(struct agent *a, struct control_request *req)
{
	if (!vault_is_initialized(a->vault)) {
		commands_reply_err(req, PKS_ERR_STATE, "");
		return 0;
	}
	if (vault_is_locked(a->vault)) {
		commands_reply_err(req, PKS_ERR_LOCKED, "");
		return 0;
	}
	return 1;
}

static int commands_find(struct agent *a, struct control_request *req, json_t *request,
			 const struct record_state **out)
{
	const char *id = NULL;
	char msg[256];
	int r;

	if (commands_str(request, "id", &id) != PKS_OK || id == NULL) {
		control_request_reply_error(req, "Give the id of a passkey (see 'pksync list').");
		return 0;
	}
	r = vault_find(a->vault, id, out);
	if (r == PKS_OK)
		return 1;
	if (r == PKS_ERR_AMBIGUOUS)
		snprintf(msg, sizeof(msg),
			 "The id '%.40s' matches several passkeys; give more characters.", id);
	else if (r == PKS_ERR_INVALID)
		snprintf(msg, sizeof(msg),
			 "'%.40s' is not a passkey id: give at least 4 hex characters.", id);
	else
		snprintf(msg, sizeof(msg), "No passkey has the id '%.40s'.", id);
	control_request_reply_error(req, msg);
	return 0;
}

static json_t *commands_record(const struct record_state *st)
{
	const uint8_t *p;
	size_t n;
	json_t *o = json_object();
	json_t *cred, *handle, *pub;

	if (o == NULL)
		return NULL;
	p = record_state_credential_id(st, &n);
	cred = commands_b64(p, n);
	p = record_state_user_handle(st, &n);
	handle = commands_b64(p, n);
	p = record_state_public_key(st, &n);
	pub = commands_b64(p, n);
	if (json_object_set_new(o, "id", commands_hex(record_state_id(st), RECORD_ID_LEN)) ||
	    json_object_set_new(o, "rp_id", json_string(record_state_rp_id(st))) ||
	    json_object_set_new(o, "user_name", json_string(record_state_user_name(st))) ||
	    json_object_set_new(o, "user_display_name",
				json_string(record_state_display_name(st))) ||
	    json_object_set_new(o, "credential_id", cred) ||
	    json_object_set_new(o, "user_handle", handle) ||
	    json_object_set_new(o, "alg", json_integer(record_state_alg(st))) ||
	    json_object_set_new(o, "public_key", pub) ||
	    json_object_set_new(o, "backup_eligible",
				json_boolean(record_state_backup_eligible(st))) ||
	    json_object_set_new(o, "backup_state", json_boolean(record_state_backup_state(st))) ||
	    json_object_set_new(o, "sign_count", json_integer(0)) ||
	    json_object_set_new(o, "created_at", commands_time(record_state_created_at(st))) ||
	    json_object_set_new(o, "updated_at",
				commands_time(hlc_wall_ms(record_state_updated_at(st)))) ||
	    json_object_set_new(o, "notes", json_string(record_state_notes(st))) ||
	    json_object_set_new(o, "source", json_string(record_state_source(st))) ||
	    json_object_set_new(o, "trashed", json_boolean(record_state_trashed(st)))) {
		json_decref(o);
		return NULL;
	}
	if (record_state_trashed(st) &&
	    json_object_set_new(o, "trashed_at", commands_time(record_state_trashed_at(st)))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static void commands_reply_record(struct control_request *req, const struct record_state *st)
{
	json_t *o = commands_record(st);

	if (o == NULL)
		control_request_reply_error(req, "The agent ran out of memory.");
	else
		control_request_reply_ok(req, o);
}

/* peers, transports and the newest last_sync into a status object. */
static void commands_status_net(struct agent *a, json_t *o)
{
	json_t *peers = a->net ? net_peers_json(a->net) : json_array();
	json_t *transports = json_array();
	const char *last = NULL;
	size_t i;
	json_t *p;

	json_array_foreach(peers, i, p)
	{
		const char *t = json_string_value(json_object_get(p, "last_sync"));
		if (t != NULL && (last == NULL || strcmp(t, last) > 0))
			last = t;
	}
	if (a->net != NULL && net_listen_port(a->net) != 0) {
		char t[32];
		snprintf(t, sizeof(t), "tcp:%u", (unsigned)net_listen_port(a->net));
		json_array_append_new(transports, json_string(t));
	}
	json_object_set_new(o, "last_sync", last ? json_string(last) : json_null());
	json_object_set_new(o, "peers", peers);
	json_object_set_new(o, "transports", transports);
	if (a->net != NULL) {
		uint64_t in = 0, out = 0, sessions = 0;
		net_counters(a->net, &in, &out, &sessions);
		/* Bytes on the member sockets since start, framing included (the benchmark). */
		json_object_set_new(o, "traffic",
				    json_pack("{s:I, s:I, s:I}", "bytes_in", (json_int_t)in,
					      "bytes_out", (json_int_t)out, "sessions",
					      (json_int_t)sessions));
	}
}

static void cmd_status(struct agent *a, struct control_request *req, json_t *request)
{
	uint8_t id[DEVICE_ID_LEN], vid[VAULT_ID_LEN], digest[32];
	size_t live = 0, trash = 0;
	json_t *o = json_object();

	(void)request;
	if (o == NULL) {
		control_request_reply_error(req, "The agent ran out of memory.");
		return;
	}
	json_object_set_new(o, "initialized", json_boolean(vault_is_initialized(a->vault)));
	json_object_set_new(o, "state_dir", json_string(a->paths.state_dir));
	json_object_set_new(o, "version", json_string(PKSYNC_VERSION));
	if (vault_is_initialized(a->vault)) {
		vault_device_id(a->vault, id);
		vault_vault_id(a->vault, vid);
		json_object_set_new(o, "locked", json_boolean(vault_is_locked(a->vault)));
		json_object_set_new(o, "passphrase", json_boolean(vault_has_passphrase(a->vault)));
		json_object_set_new(o, "device_id", commands_hex(id, sizeof(id)));
		json_object_set_new(o, "vault_id", commands_hex(vid, sizeof(vid)));
		json_object_set_new(o, "created_at", commands_time(vault_created_at_ms(a->vault)));
		if (!vault_is_locked(a->vault)) {
			vault_counts(a->vault, &live, &trash);
			vault_digest(a->vault, digest);
			json_object_set_new(o, "device_name",
					    json_string(vault_device_name(a->vault)));
			json_object_set_new(o, "records", json_integer((json_int_t)live));
			json_object_set_new(o, "trash", json_integer((json_int_t)trash));
			json_object_set_new(o, "digest", commands_hex(digest, sizeof(digest)));
		} else {
			json_object_set_new(o, "device_name", json_null());
			json_object_set_new(o, "records", json_null());
			json_object_set_new(o, "digest", json_null());
		}
		commands_status_net(a, o);
	}
	control_request_reply_ok(req, o);
}

static void cmd_init(struct agent *a, struct control_request *req, json_t *request)
{
	const char *name = NULL, *pass = NULL;
	char host[VAULT_NAME_MAX + 1];
	uint8_t id[DEVICE_ID_LEN], vid[VAULT_ID_LEN];
	json_t *nopass = json_object_get(request, "no_passphrase");
	int r;

	if (commands_str(request, "name", &name) != PKS_OK ||
	    commands_str(request, "passphrase", &pass) != PKS_OK) {
		control_request_reply_error(req, "The name or passphrase is not a valid string.");
		return;
	}
	if ((pass == NULL) == !json_is_true(nopass)) {
		control_request_reply_error(
		    req, "Give either a passphrase or no_passphrase, not both or neither.");
		return;
	}
	if (pass != NULL && (strlen(pass) == 0 || strlen(pass) > 1024)) {
		control_request_reply_error(req, "A passphrase must be 1 to 1024 bytes long.");
		return;
	}
	if (name == NULL) {
		if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
			snprintf(host, sizeof(host), "pksync device");
		host[sizeof(host) - 1] = '\0';
		name = host;
	}
	if (strlen(name) == 0 || strlen(name) > VAULT_NAME_MAX) {
		control_request_reply_error(req, "A device name must be 1 to 64 bytes long.");
		return;
	}
	r = vault_init(a->vault, name, pass, pass ? strlen(pass) : 0);
	if (r == PKS_ERR_EXISTS) {
		control_request_reply_error(req, "This state dir already holds a vault.");
		return;
	}
	if (r != PKS_OK) {
		commands_reply_err(req, r, "create the vault");
		return;
	}
	vault_device_id(a->vault, id);
	vault_vault_id(a->vault, vid);
	if (a->net != NULL)
		net_start(a->net);
	control_request_reply_ok(req, json_pack("{s:o, s:s, s:o}", "device_id",
						commands_hex(id, sizeof(id)), "device_name",
						vault_device_name(a->vault), "vault_id",
						commands_hex(vid, sizeof(vid))));
}

struct commands_unlock_delay {
	uv_timer_t timer;
	struct agent *agent;
	struct control_request *req;
};

static void commands_unlock_delay_closed(uv_handle_t *h)
{
	free(h->data);
}

static void commands_unlock_delay_done(uv_timer_t *t)
{
	struct commands_unlock_delay *d = t->data;

	d->agent->unlock_pending = 0;
	control_request_reply_error(d->req, "Wrong passphrase.");
	uv_close((uv_handle_t *)t, commands_unlock_delay_closed);
}

static void cmd_unlock(struct agent *a, struct control_request *req, json_t *request)
{
	const char *pass = NULL;
	uint64_t now = commands_now_ms(), delay;
	struct commands_unlock_delay *d;
	char msg[128];
	int r;

	if (!vault_is_initialized(a->vault)) {
		commands_reply_err(req, PKS_ERR_STATE, "");
		return;
	}
	if (!vault_is_locked(a->vault)) {
		control_request_reply_ok(req, json_object());
		return;
	}
	if (a->unlock_pending || now < a->unlock_blocked_until_ms) {
		snprintf(msg, sizeof(msg), "Too many wrong passphrases: try again in %llu seconds.",
			 (unsigned long long)((a->unlock_blocked_until_ms - now) / 1000 + 1));
		control_request_reply_error(req, msg);
		return;
	}
	if (commands_str(request, "passphrase", &pass) != PKS_OK || pass == NULL) {
		control_request_reply_error(req, "Give the passphrase.");
		return;
	}
	r = vault_unlock(a->vault, pass, strlen(pass));
	if (r == PKS_OK) {
		a->unlock_failures = 0;
		pks_log(&a->log, PKS_LOG_INFO, "vault unlocked");
		if (a->net != NULL)
			net_start(a->net);
		control_request_reply_ok(req, json_object());
		return;
	}
	if (r != PKS_ERR_PASSPHRASE) {
		commands_reply_err(req, r, "unlock the vault");
		return;
	}
	/* 1 s, 2 s, 4 s ... up to a minute; attempts meanwhile are refused unchecked. */
	a->unlock_failures++;
	delay = 1000ull << (a->unlock_failures > 6 ? 6 : a->unlock_failures - 1);
	if (delay > COMMANDS_UNLOCK_DELAY_MAX_MS)
		delay = COMMANDS_UNLOCK_DELAY_MAX_MS;
	a->unlock_blocked_until_ms = now + delay;
	pks_log(&a->log, PKS_LOG_WARN, "wrong passphrase (%u in a row); answering in %llu ms",
		a->unlock_failures, (unsigned long long)delay);
	d = calloc(1, sizeof(*d));
	if (d == NULL) {
		control_request_reply_error(req, "Wrong passphrase.");
		return;
	}
	d->agent = a;
	d->req = req;
	a->unlock_pending = 1;
	uv_timer_init(a->loop, &d->timer);
	d->timer.data = d;
	uv_timer_start(&d->timer, commands_unlock_delay_done, delay, 0);
}

static void cmd_lock(struct agent *a, struct control_request *req, json_t *request)
{
	(void)request;
	if (!vault_is_initialized(a->vault)) {
		commands_reply_err(req, PKS_ERR_STATE, "");
		return;
	}
	if (!vault_has_passphrase(a->vault)) {
		control_request_reply_error(req, "This vault has no passphrase (it was created "
						 "with --no-passphrase), so it cannot be locked.");
		return;
	}
	if (a->net != NULL)
		net_stop_sessions(a->net);
	vault_lock(a->vault);
	pks_log(&a->log, PKS_LOG_INFO, "vault locked");
	control_request_reply_ok(req, json_object());
}

static int commands_device_one(void *user, const struct membership_device *d)
{
	json_t *o = json_pack("{s:o, s:s, s:b, s:o, s:o}", "device_id",
			      commands_hex(d->device_id, DEVICE_ID_LEN), "name", d->name, "revoked",
			      d->revoked, "added_at", commands_time(d->added_at_ms), "added_by",
			      commands_hex(d->added_by, DEVICE_ID_LEN));

	if (o == NULL)
		return PKS_ERR_NOMEM;
	if (d->revoked)
		json_object_set_new(o, "revoked_at", commands_time(d->revoked_at_ms));
	return json_array_append_new(user, o) == 0 ? PKS_OK : PKS_ERR_NOMEM;
}

static void cmd_devices(struct agent *a, struct control_request *req, json_t *request)
{
	json_t *arr = json_array();

	(void)request;
	if (!commands_need_unlocked(a, req)) {
		json_decref(arr);
		return;
	}
	if (arr == NULL || membership_foreach_device(vault_membership(a->vault),
						     commands_device_one, arr) != PKS_OK) {
		json_decref(arr);
		control_request_reply_error(req, "The agent ran out of memory.");
		return;
	}
	control_request_reply_ok(req, arr);
}

static void cmd_new(struct agent *a, struct control_request *req, json_t *request)
{
	const char *rp = NULL, *user = NULL, *display = NULL;
	const struct record_state *st = NULL;
	int r;

	if (!commands_need_unlocked(a, req))
		return;
	if (commands_str(request, "rp", &rp) != PKS_OK || rp == NULL || rp[0] == '\0' ||
	    strlen(rp) > RECORD_RP_ID_MAX) {
		control_request_reply_error(req, "Give a relying party id of 1 to 253 bytes.");
		return;
	}
	if (commands_str(request, "user", &user) != PKS_OK || user == NULL || user[0] == '\0' ||
	    strlen(user) > RECORD_USER_NAME_MAX ||
	    commands_str(request, "display", &display) != PKS_OK ||
	    (display != NULL && strlen(display) > RECORD_USER_NAME_MAX)) {
		control_request_reply_error(req, "Give a user name (and display name) of 1 to "
						 "1024 bytes.");
		return;
	}
	r = vault_create(a->vault, rp, user, display, &st);
	if (r != PKS_OK) {
		commands_reply_err(req, r, "create the passkey");
		return;
	}
	pks_log(&a->log, PKS_LOG_INFO, "created a passkey");
	commands_changed(a);
	commands_reply_record(req, st);
}

struct commands_list {
	json_t *arr;
	const char *rp;
	int trash;
};

static int commands_list_one(void *user_data, const struct record_state *st)
{
	struct commands_list *l = user_data;
	json_t *o;

	if (record_state_trashed(st) != (l->trash != 0))
		return PKS_OK;
	if (l->rp != NULL && strcmp(l->rp, record_state_rp_id(st)) != 0)
		return PKS_OK;
	o = commands_record(st);
	if (o == NULL || json_array_append_new(l->arr, o) != 0)
		return PKS_ERR_NOMEM;
	return PKS_OK;
}

static int commands_list_cmp(const void *x, const void *y)
{
	json_t *a = *(json_t *const *)x, *b = *(json_t *const *)y;
	int c = strcmp(json_string_value(json_object_get(a, "rp_id")),
		       json_string_value(json_object_get(b, "rp_id")));

	if (c == 0)
		c = strcmp(json_string_value(json_object_get(a, "user_name")),
			   json_string_value(json_object_get(b, "user_name")));
	if (c == 0)
		c = strcmp(json_string_value(json_object_get(a, "id")),
			   json_string_value(json_object_get(b, "id")));
	return c;
}

static void cmd_list(struct agent *a, struct control_request *req, json_t *request)
{
	struct commands_list l = {NULL, NULL, 0};
	json_t **items = NULL, *sorted = NULL;
	size_t n;
	int r;

	if (!commands_need_unlocked(a, req))
		return;
	if (commands_str(request, "rp", &l.rp) != PKS_OK) {
		control_request_reply_error(req, "The rp filter is not a valid string.");
		return;
	}
	l.trash = json_is_true(json_object_get(request, "trash"));
	l.arr = json_array();
	if (l.arr == NULL) {
		control_request_reply_error(req, "The agent ran out of memory.");
		return;
	}
	r = vault_records_foreach(a->vault, commands_list_one, &l);
	n = json_array_size(l.arr);
	items = calloc(n ? n : 1, sizeof(*items));
	sorted = json_array();
	if (r != PKS_OK || items == NULL || sorted == NULL) {
		json_decref(l.arr);
		json_decref(sorted);
		free(items);
		control_request_reply_error(req, "The agent ran out of memory.");
		return;
	}
	for (size_t i = 0; i < n; i++)
		items[i] = json_array_get(l.arr, i);
	qsort(items, n, sizeof(*items), commands_list_cmp);
	for (size_t i = 0; i < n; i++)
		json_array_append(sorted, items[i]);
	free(items);
	json_decref(l.arr);
	control_request_reply_ok(req, sorted);
}

static void cmd_show(struct agent *a, struct control_request *req, json_t *request)
{
	const struct record_state *st = NULL;

	if (!commands_need_unlocked(a, req) || !commands_find(a, req, request, &st))
		return;
	commands_reply_record(req, st);
}

static void cmd_edit(struct agent *a, struct control_request *req, json_t *request)
{
	const struct record_state *st = NULL;
	const char *user = NULL, *display = NULL, *notes = NULL;
	int r;

	if (!commands_need_unlocked(a, req) || !commands_find(a, req, request, &st))
		return;
	if (commands_str(request, "user", &user) != PKS_OK ||
	    commands_str(request, "display", &display) != PKS_OK ||
	    commands_str(request, "notes", &notes) != PKS_OK ||
	    (user != NULL && (user[0] == '\0' || strlen(user) > RECORD_USER_NAME_MAX)) ||
	    (display != NULL && strlen(display) > RECORD_USER_NAME_MAX) ||
	    (notes != NULL && strlen(notes) > RECORD_NOTES_MAX)) {
		control_request_reply_error(req, "User and display names are at most 1024 bytes "
						 "(the user name not empty), notes at most 8192.");
		return;
	}
	if (user == NULL && display == NULL && notes == NULL) {
		control_request_reply_error(req, "Nothing to change: give --user, --display or "
						 "--notes.");
		return;
	}
	r = vault_edit(a->vault, st, user, display, notes);
	if (r != PKS_OK) {
		commands_reply_err(req, r, "edit the passkey");
		return;
	}
	commands_changed(a);
	commands_reply_record(req, st);
}

static void cmd_rm_restore(struct agent *a, struct control_request *req, json_t *request,
			   int restore)
{
	const struct record_state *st = NULL;
	int r;

	if (!commands_need_unlocked(a, req) || !commands_find(a, req, request, &st))
		return;
	r = restore ? vault_restore(a->vault, st) : vault_delete(a->vault, st);
	if (r != PKS_OK) {
		commands_reply_err(req, r, restore ? "restore the passkey" : "delete the passkey");
		return;
	}
	commands_changed(a);
	commands_reply_record(req, st);
}

static void commands_import_progress(void *user_data, size_t done, size_t total)
{
	control_request_progress(user_data, "importing", done, total);
}

static void cmd_import(struct agent *a, struct control_request *req, json_t *request)
{
	const char *fmt_name = NULL, *filename = NULL;
	json_t *data = json_object_get(request, "data");
	enum import_format fmt = IMPORT_FORMAT_AUTO, detected = IMPORT_FORMAT_AUTO;
	struct passkey_list *list = NULL;
	struct vault_import_stats stats;
	char err[512], msg[700];
	int r;

	if (!commands_need_unlocked(a, req))
		return;
	if (!json_is_string(data) || commands_str(request, "format", &fmt_name) != PKS_OK ||
	    commands_str(request, "filename", &filename) != PKS_OK) {
		control_request_reply_error(req, "The import request needs the file's text.");
		return;
	}
	if (fmt_name != NULL && import_format_from_name(fmt_name, &fmt) != PKS_OK) {
		control_request_reply_error(req,
					    "Unknown format: use cxf, keepassxc or bitwarden.");
		return;
	}
	err[0] = '\0';
	r = import_parse((const uint8_t *)json_string_value(data), json_string_length(data), fmt,
			 &list, &detected, err, sizeof(err));
	if (r != PKS_OK) {
		snprintf(msg, sizeof(msg), "%s%s%s", filename ? filename : "", filename ? ": " : "",
			 err[0] ? err : pks_strerror(r));
		pks_log(&a->log, PKS_LOG_WARN, "import refused: %s", pks_strerror(r));
		control_request_reply_error(req, msg);
		return;
	}
	err[0] = '\0';
	r = vault_import(a->vault, list, commands_import_progress, req, &stats, err, sizeof(err));
	passkey_list_free(list);
	if (r != PKS_OK) {
		pks_log(&a->log, PKS_LOG_WARN, "import failed: %s", pks_strerror(r));
		control_request_reply_error(req, err[0] ? err : "The import failed.");
		return;
	}
	pks_log(&a->log, PKS_LOG_INFO, "imported %zu passkeys (%zu new)", stats.total, stats.added);
	commands_changed(a);
	control_request_reply_ok(
	    req,
	    json_pack("{s:s, s:I, s:I, s:I, s:I}", "format", import_format_name(detected), "total",
		      (json_int_t)stats.total, "added", (json_int_t)stats.added, "updated",
		      (json_int_t)stats.updated, "unchanged", (json_int_t)stats.unchanged));
}

static json_t *commands_export_file(const char *name, char *text)
{
	json_t *o = json_pack("{s:s, s:s}", "name", name, "data", text);

	sodium_memzero(text, strlen(text));
	free(text);
	return o;
}

static void commands_safe_name(char *out, size_t cap, const struct passkey_item *it, size_t i)
{
	size_t k = 0;

	for (const char *p = it->rp_id; *p != '\0' && k + 1 < cap - 24; p++)
		out[k++] = (isalnum((unsigned char)*p) || *p == '.' || *p == '-') ? *p : '_';
	if (k > 0 && out[0] == '.')
		out[0] = '_';
	snprintf(out + k, cap - k, "-%zu.passkey", i + 1);
}

static void cmd_export(struct agent *a, struct control_request *req, json_t *request)
{
	const char *fmt = NULL, *rp = NULL, *id = NULL;
	const struct record_state *only = NULL;
	struct passkey_list *list = NULL;
	json_t *files = NULL, *f;
	char *text = NULL;
	char name[96];
	int r;

	if (!commands_need_unlocked(a, req))
		return;
	if (commands_str(request, "format", &fmt) != PKS_OK || fmt == NULL ||
	    (strcmp(fmt, "cxf") != 0 && strcmp(fmt, "keepassxc") != 0)) {
		control_request_reply_error(req, "Export formats are cxf and keepassxc.");
		return;
	}
	if (commands_str(request, "rp", &rp) != PKS_OK || commands_str(request, "id", &id)) {
		control_request_reply_error(req, "The rp or id filter is not a valid string.");
		return;
	}
	if (id != NULL && !commands_find(a, req, request, &only))
		return;
	r = vault_export_items(a->vault, rp, only, &list);
	if (r != PKS_OK) {
		commands_reply_err(req, r, "export");
		return;
	}
	if (list->count == 0) {
		passkey_list_free(list);
		control_request_reply_error(req, "No passkeys match: nothing to export.");
		return;
	}
	files = json_array();
	if (strcmp(fmt, "cxf") == 0) {
		r = export_cxf(list->items, list->count, "pksync", (uint64_t)time(NULL), &text);
		if (r == PKS_OK) {
			f = commands_export_file("pksync-export.cxf.json", text);
			if (f == NULL || json_array_append_new(files, f) != 0)
				r = PKS_ERR_NOMEM;
		}
	} else {
		for (size_t i = 0; r == PKS_OK && i < list->count; i++) {
			r = export_keepassxc(&list->items[i], &text);
			if (r != PKS_OK)
				break;
			commands_safe_name(name, sizeof(name), &list->items[i], i);
			f = commands_export_file(name, text);
			if (f == NULL || json_array_append_new(files, f) != 0)
				r = PKS_ERR_NOMEM;
		}
	}
	if (r != PKS_OK) {
		control_json_wipe_decref(files);
		passkey_list_free(list);
		commands_reply_err(req, r, "export");
		return;
	}
	pks_log(&a->log, PKS_LOG_INFO, "exported %zu passkeys", list->count);
	control_request_reply_ok(req, json_pack("{s:s, s:I, s:o}", "format", fmt, "count",
						(json_int_t)list->count, "files", files));
	passkey_list_free(list);
}

struct commands_pick {
	const char *rp;
	const uint8_t *cred;
	size_t cred_len;
	const struct record_state *found;
	int matches;
};

static int commands_pick_one(void *user_data, const struct record_state *st)
{
	struct commands_pick *k = user_data;
	const uint8_t *p;
	size_t n = 0;

	if (record_state_trashed(st) || strcmp(record_state_rp_id(st), k->rp) != 0)
		return PKS_OK;
	if (k->cred != NULL) {
		p = record_state_credential_id(st, &n);
		if (n != k->cred_len || memcmp(p, k->cred, n) != 0)
			return PKS_OK;
	}
	k->found = st;
	k->matches++;
	return PKS_OK;
}

/* Picks the record for assert: by id prefix, by base64url credential id, or the only one. */
static int commands_assert_pick(struct agent *a, struct control_request *req, const char *rp,
				const char *cred, const struct record_state **out)
{
	struct commands_pick k = {rp, NULL, 0, NULL, 0};
	uint8_t raw[RECORD_CREDENTIAL_ID_MAX];
	size_t raw_len = 0;
	char msg[256];

	if (cred != NULL && vault_find(a->vault, cred, out) == PKS_OK &&
	    strcmp(record_state_rp_id(*out), rp) == 0)
		return 1;
	if (cred != NULL) {
		if (sodium_base642bin(raw, sizeof(raw), cred, strlen(cred), NULL, &raw_len, NULL,
				      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
			snprintf(msg, sizeof(msg),
				 "No passkey for %.64s matches the credential '%.40s'.", rp, cred);
			control_request_reply_error(req, msg);
			return 0;
		}
		k.cred = raw;
		k.cred_len = raw_len;
	}
	vault_records_foreach(a->vault, commands_pick_one, &k);
	if (k.matches == 1) {
		*out = k.found;
		return 1;
	}
	if (k.matches == 0)
		snprintf(msg, sizeof(msg), "No passkey for %.64s%s.", rp,
			 cred ? " matches that credential" : " is in the vault");
	else
		snprintf(msg, sizeof(msg),
			 "%d passkeys exist for %.64s: choose one with --credential ID.", k.matches,
			 rp);
	control_request_reply_error(req, msg);
	return 0;
}

static void cmd_assert(struct agent *a, struct control_request *req, json_t *request)
{
	const char *rp = NULL, *hex = NULL, *cred = NULL;
	const struct record_state *st = NULL;
	uint8_t cdh[32];
	size_t cdh_len = 0;
	uint8_t *ad = NULL, *sig = NULL;
	size_t ad_len = 0, sig_len = 0;
	const uint8_t *p;
	size_t n;
	json_t *o;
	int r;

	if (!commands_need_unlocked(a, req))
		return;
	if (commands_str(request, "rp", &rp) != PKS_OK || rp == NULL ||
	    commands_str(request, "credential", &cred) != PKS_OK ||
	    commands_str(request, "client_data_hash", &hex) != PKS_OK || hex == NULL ||
	    strlen(hex) != 64 ||
	    sodium_hex2bin(cdh, sizeof(cdh), hex, 64, NULL, &cdh_len, NULL) != 0 || cdh_len != 32) {
		control_request_reply_error(req, "Give --rp and a --client-data-hash of 64 hex "
						 "characters.");
		return;
	}
	if (!commands_assert_pick(a, req, rp, cred, &st))
		return;
	r = vault_assert(a->vault, st, cdh, &ad, &ad_len, &sig, &sig_len);
	if (r == PKS_ERR_STATE) {
		control_request_reply_error(req, "That passkey is in the trash: restore it first.");
		return;
	}
	if (r != PKS_OK) {
		commands_reply_err(req, r, "sign the assertion");
		return;
	}
	pks_log(&a->log, PKS_LOG_INFO, "signed an assertion");
	p = record_state_credential_id(st, &n);
	o = json_pack("{s:o, s:o, s:o, s:o}", "id",
		      commands_hex(record_state_id(st), RECORD_ID_LEN), "credential_id",
		      commands_b64(p, n), "authenticator_data", commands_b64(ad, ad_len),
		      "signature", commands_b64(sig, sig_len));
	p = record_state_user_handle(st, &n);
	if (o != NULL)
		json_object_set_new(o, "user_handle", commands_b64(p, n));
	free(ad);
	free(sig);
	if (o == NULL)
		control_request_reply_error(req, "The agent ran out of memory.");
	else
		control_request_reply_ok(req, o);
}

/* ---- devices meeting: pair, join, revoke, sync ---- */

struct commands_pair {
	struct agent *agent;
	struct control_request *req;
	uv_timer_t timer;
	bool done;
};

static void commands_pair_closed(uv_handle_t *h)
{
	free(h->data);
}

/* Pairing mode went on or off: announce it now rather than at the next
   discovery tick. Joiners with no address dial whatever is announced as
   pairing, so a sponsor that is done should stop saying so at once (its old
   announcement still lingers about a second at the others; the joiner copes
   with that, see net_join_refuse in net.c). */
static void commands_pairing_changed(struct agent *a)
{
	discovery_rotate(a->discovery);
	discovery_ble_rotate(a->discovery_ble);
}

static void commands_pair_done(void *user, int err, const char *sentence,
			       const uint8_t device_id[32], const char *name)
{
	struct commands_pair *p = user;
	char msg[256];

	p->done = true;
	commands_pairing_changed(p->agent);
	if (err == PKS_OK) {
		pks_log(&p->agent->log, PKS_LOG_INFO, "paired a new device");
		control_request_reply_ok(p->req, json_pack("{s:o, s:s}", "device_id",
							   commands_hex(device_id, DEVICE_ID_LEN),
							   "name", name));
	} else {
		snprintf(msg, sizeof(msg), "%s", sentence ? sentence : "Pairing was cancelled.");
		control_request_reply_error(p->req, msg);
	}
	uv_timer_stop(&p->timer);
	uv_close((uv_handle_t *)&p->timer, commands_pair_closed);
}

/* Cancels the pairing when the person stops waiting (pksync pair interrupted). */
static void commands_pair_watch(uv_timer_t *t)
{
	struct commands_pair *p = t->data;

	if (!p->done && control_request_gone(p->req)) {
		pks_log(&p->agent->log, PKS_LOG_INFO, "pairing cancelled: the CLI went away");
		net_pair_cancel(p->agent->net);
		commands_pair_done(p, PKS_ERR_CLOSED, NULL, NULL, NULL);
	}
}

static void cmd_pair(struct agent *a, struct control_request *req, json_t *request)
{
	json_t *timeout = json_object_get(request, "timeout");
	json_int_t secs = NET_PAIR_DEFAULT_TIMEOUT_S;
	struct commands_pair *p;
	char code[9], qr[PAIRING_QR_MAX];
	json_t *addrs = NULL;
	int r;

	if (!commands_need_unlocked(a, req))
		return;
	if (timeout != NULL) {
		if (!json_is_integer(timeout) || json_integer_value(timeout) < 1 ||
		    json_integer_value(timeout) > 3600) {
			control_request_reply_error(req, "The timeout must be 1 to 3600 seconds.");
			return;
		}
		secs = json_integer_value(timeout);
	}
	if (a->net == NULL || net_listen_port(a->net) == 0) {
		control_request_reply_error(req, "The agent is not listening (started without "
						 "--listen), so no device can reach it.");
		return;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		control_request_reply_error(req, "The agent ran out of memory.");
		return;
	}
	p->agent = a;
	p->req = req;
	r = net_pair_start(a->net, (uint64_t)secs * 1000, commands_pair_done, p, code, qr,
			   sizeof(qr), &addrs);
	if (r != PKS_OK) {
		free(p);
		if (r == PKS_ERR_BUSY)
			control_request_reply_error(req, "A pairing is already in progress.");
		else
			commands_reply_err(req, r, "start pairing");
		return;
	}
	uv_timer_init(a->loop, &p->timer);
	p->timer.data = p;
	uv_timer_start(&p->timer, commands_pair_watch, 500, 500);
	commands_pairing_changed(a);
	control_request_event(req, json_pack("{s:s, s:s, s:o, s:I}", "code", code, "qr", qr,
					     "addresses", addrs, "expires_in", secs));
	sodium_memzero(code, sizeof(code));
	sodium_memzero(qr, sizeof(qr));
}

struct commands_join {
	struct agent *agent;
	struct control_request *req;
};

static void commands_join_done(void *user, int err, const char *sentence)
{
	struct commands_join *c = user;
	struct control_request *req = c->req;
	struct agent *a = c->agent;
	uint8_t id[DEVICE_ID_LEN], vid[VAULT_ID_LEN];

	free(c);
	if (err != PKS_OK) {
		control_request_reply_error(req, sentence ? sentence : "Joining failed.");
		return;
	}
	vault_device_id(a->vault, id);
	vault_vault_id(a->vault, vid);
	pks_log(&a->log, PKS_LOG_INFO, "joined a vault");
	control_request_reply_ok(req, json_pack("{s:o, s:s, s:o}", "device_id",
						commands_hex(id, sizeof(id)), "device_name",
						vault_device_name(a->vault), "vault_id",
						commands_hex(vid, sizeof(vid))));
}

static void cmd_join(struct agent *a, struct control_request *req, json_t *request)
{
	struct net_join_request j;
	struct commands_join *c;
	const char *pass = NULL;
	char host[VAULT_NAME_MAX + 1], err[256] = "";
	json_t *nopass = json_object_get(request, "no_passphrase");

	memset(&j, 0, sizeof(j));
	if (commands_str(request, "code", &j.code) != PKS_OK ||
	    commands_str(request, "qr", &j.qr) != PKS_OK ||
	    commands_str(request, "peer", &j.peer) != PKS_OK ||
	    commands_str(request, "name", &j.name) != PKS_OK ||
	    commands_str(request, "passphrase", &pass) != PKS_OK) {
		control_request_reply_error(req, "A join field is not a valid string.");
		return;
	}
	if ((j.code == NULL) == (j.qr == NULL)) {
		control_request_reply_error(req, "Give the code or the QR text, one of them.");
		return;
	}
	if ((pass == NULL) == !json_is_true(nopass)) {
		control_request_reply_error(
		    req, "Give either a passphrase or no_passphrase, not both or neither.");
		return;
	}
	if (pass != NULL && (strlen(pass) == 0 || strlen(pass) > 1024)) {
		control_request_reply_error(req, "A passphrase must be 1 to 1024 bytes long.");
		return;
	}
	if (j.name == NULL) {
		if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
			snprintf(host, sizeof(host), "pksync device");
		host[sizeof(host) - 1] = '\0';
		j.name = host;
	}
	if (a->net == NULL) {
		control_request_reply_error(req, "The agent's network is off.");
		return;
	}
	j.passphrase = pass;
	j.passphrase_len = pass ? strlen(pass) : 0;
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		control_request_reply_error(req, "The agent ran out of memory.");
		return;
	}
	c->agent = a;
	c->req = req;
	if (net_join(a->net, &j, commands_join_done, c, err, sizeof(err)) != PKS_OK) {
		free(c);
		control_request_reply_error(req, err[0] ? err : "Joining could not start.");
	}
}

static void cmd_revoke(struct agent *a, struct control_request *req, json_t *request)
{
	const char *what = NULL;
	struct membership_device d;
	uint8_t me[DEVICE_ID_LEN];
	char msg[256];
	int r;

	if (!commands_need_unlocked(a, req))
		return;
	if (commands_str(request, "device", &what) != PKS_OK || what == NULL) {
		control_request_reply_error(req, "Give the device to revoke (an id prefix or its "
						 "name; see 'pksync devices').");
		return;
	}
	r = vault_find_device(a->vault, what, &d);
	if (r != PKS_OK) {
		snprintf(msg, sizeof(msg),
			 r == PKS_ERR_AMBIGUOUS ? "'%.64s' matches several devices; give more of "
						  "its id."
						: "No device of this vault is '%.64s'.",
			 what);
		control_request_reply_error(req, msg);
		return;
	}
	vault_device_id(a->vault, me);
	if (memcmp(me, d.device_id, DEVICE_ID_LEN) == 0) {
		control_request_reply_error(req, "A device cannot revoke itself; revoke it from "
						 "another device.");
		return;
	}
	if (d.revoked) {
		control_request_reply_error(req, "That device is already revoked.");
		return;
	}
	r = vault_revoke(a->vault, d.device_id);
	if (r != PKS_OK) {
		commands_reply_err(req, r, "revoke the device");
		return;
	}
	pks_log(&a->log, PKS_LOG_INFO, "revoked a device");
	commands_changed(a);
	control_request_reply_ok(req, json_pack("{s:o, s:s}", "device_id",
						commands_hex(d.device_id, DEVICE_ID_LEN), "name",
						d.name));
}

static void commands_sync_done(void *user, int err, size_t peers)
{
	struct control_request *req = user;

	if (err == PKS_ERR_TIMEOUT) {
		control_request_reply_error(req, "Not every connected device reached the same "
						 "state before the timeout.");
		return;
	}
	control_request_reply_ok(
	    req, json_pack("{s:I, s:b}", "peers", (json_int_t)peers, "in_sync", err == PKS_OK));
}

static void cmd_sync(struct agent *a, struct control_request *req, json_t *request)
{
	json_t *timeout = json_object_get(request, "timeout");
	bool wait = json_is_true(json_object_get(request, "wait"));
	json_int_t secs = 30;
	int r;

	if (!commands_need_unlocked(a, req))
		return;
	if (timeout != NULL) {
		if (!json_is_integer(timeout) || json_integer_value(timeout) < 1 ||
		    json_integer_value(timeout) > 3600) {
			control_request_reply_error(req, "The timeout must be 1 to 3600 seconds.");
			return;
		}
		secs = json_integer_value(timeout);
	}
	if (a->net == NULL) {
		control_request_reply_error(req, "The agent's network is off.");
		return;
	}
	r = net_sync(a->net, wait, (uint64_t)secs * 1000, commands_sync_done, req);
	if (r != PKS_OK)
		commands_reply_err(req, r, "sync");
}

void commands_handle(void *user_data, struct control_request *req, const char *cmd, json_t *request)
{
	static const struct {
		const char *name;
		void (*fn)(struct agent *, struct control_request *, json_t *);
	} table[] = {
	    {"status", cmd_status}, {"init", cmd_init},       {"unlock", cmd_unlock},
	    {"lock", cmd_lock},     {"devices", cmd_devices}, {"new", cmd_new},
	    {"list", cmd_list},     {"show", cmd_show},       {"edit", cmd_edit},
	    {"import", cmd_import}, {"export", cmd_export},   {"assert", cmd_assert},
	    {"pair", cmd_pair},     {"join", cmd_join},       {"revoke", cmd_revoke},
	    {"sync", cmd_sync},
	};
	struct agent *a = user_data;
	char msg[128];

	if (strcmp(cmd, "rm") == 0) {
		cmd_rm_restore(a, req, request, 0);
		return;
	}
	if (strcmp(cmd, "restore") == 0) {
		cmd_rm_restore(a, req, request, 1);
		return;
	}
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (strcmp(cmd, table[i].name) == 0) {
			pks_log(&a->log, PKS_LOG_DEBUG, "control: %s", cmd);
			table[i].fn(a, req, request);
			return;
		}
	}
	snprintf(msg, sizeof(msg), "Unknown command '%.32s'.", cmd);
	control_request_reply_error(req, msg);
}
