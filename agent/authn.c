/*
 * Glue between the HID transports, CTAPHID, CTAP2, the person's
 * confirmation and the vault. One request is outstanding at a time (CTAPHID
 * guarantees it); while the person is asked, CTAPHID sends KEEPALIVE with
 * status UPNEEDED, and a CANCEL from the host withdraws the prompt.
 */
#include "agent/authn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/uhid.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/ctap2.h"
#include "agent/ctaphid.h"
#include "agent/passkey.h"
#include "agent/pinentry.h"
#include "common/err.h"
#include "proto/record.h"

const uint8_t authn_aaguid[16] = {0x6a, 0x64, 0x5f, 0x87, 0xfe, 0x63, 0x43, 0xc8,
				  0x83, 0xd4, 0xa3, 0x2c, 0x63, 0xde, 0x40, 0x32};

#define AUTHN_TICK_MS 50
/* Report descriptor of a FIDO security key: usage page 0xF1D0, usage 1
   (CTAPHID), 64-byte input and output reports without report ids. */
static const uint8_t authn_report_descriptor[] = {
    0x06, 0xd0, 0xf1, /* Usage Page (FIDO Alliance) */
    0x09, 0x01,       /* Usage (CTAPHID) */
    0xa1, 0x01,       /* Collection (Application) */
    0x09, 0x20,       /*   Usage (Data In) */
    0x15, 0x00,       /*   Logical Minimum (0) */
    0x26, 0xff, 0x00, /*   Logical Maximum (255) */
    0x75, 0x08,       /*   Report Size (8) */
    0x95, 0x40,       /*   Report Count (64) */
    0x81, 0x02,       /*   Input (Data, Variable, Absolute) */
    0x09, 0x21,       /*   Usage (Data Out) */
    0x15, 0x00,       /*   Logical Minimum (0) */
    0x26, 0xff, 0x00, /*   Logical Maximum (255) */
    0x75, 0x08,       /*   Report Size (8) */
    0x95, 0x40,       /*   Report Count (64) */
    0x91, 0x02,       /*   Output (Data, Variable, Absolute) */
    0xc0,             /* End Collection */
};

struct authn_client {
	struct authn *a;
	int fd;
	uv_poll_t poll;
	bool used;
	/* uv_close() issued, its callback not run yet: the slot is not free. */
	bool closing;
};

struct authn {
	uv_loop_t *loop;
	struct pks_logger log;
	struct vault *vault;
	authn_changed_fn changed;
	void *changed_user;
	struct authn_options opt;
	char *socket_path;
	char *pinentry;
	struct ctaphid *hid;
	struct ctap2 *ctap;
	uv_timer_t tick;
	int open_handles;
	bool freeing;

	/* The test socket. */
	int listen_fd;
	uv_poll_t listen_poll;
	bool listening;
	struct authn_client clients[AUTHN_SOCKET_CLIENTS_MAX];

	/* /dev/uhid. */
	int uhid_fd;
	uv_poll_t uhid_poll;
	bool uhid_on;

	/* The request waiting for the person. */
	bool pending;
	uint32_t pending_cid;
	struct ctap2_pending what;
	bool asked_pin;
	struct pinentry *prompt;

	/* getInfo's uv follows whether the vault has a passphrase now. */
	bool uv_configured;
	/* Wrong passphrases: further verification is refused for a growing time. */
	unsigned int uv_failures;
	uint64_t uv_blocked_until;
};

struct authn_handle {
	uint8_t record_id[RECORD_ID_LEN];
};

static uint64_t authn_now(const struct authn *a)
{
	return uv_now(a->loop);
}

/* ---- the vault behind CTAP2 ---- */

struct authn_find {
	const char *rp_id;
	const struct ctap2_allow *allow;
	struct ctap2_cred *out;
	size_t max, n;
	uint64_t created[CTAP2_ASSERTION_CREDS_MAX];
};

static bool authn_allowed(const struct ctap2_allow *allow, const uint8_t *id, size_t len)
{
	for (size_t i = 0; i < allow->count; i++)
		if (allow->id_len[i] == len && memcmp(allow->id[i], id, len) == 0)
			return true;
	return false;
}

static int authn_fill_cred(const struct record_state *st, struct ctap2_cred *c)
{
	const uint8_t *id, *handle;
	size_t id_len = 0, handle_len = 0;
	const char *name = record_state_user_name(st), *display = record_state_display_name(st);
	struct authn_handle *h;

	id = record_state_credential_id(st, &id_len);
	handle = record_state_user_handle(st, &handle_len);
	if (id == NULL || id_len == 0 || id_len > CTAP2_CRED_ID_MAX || handle == NULL ||
	    handle_len == 0 || handle_len > CTAP2_USER_ID_MAX)
		return PKS_ERR_INVALID;
	h = malloc(sizeof(*h));
	if (h == NULL)
		return PKS_ERR_NOMEM;
	memcpy(h->record_id, record_state_id(st), RECORD_ID_LEN);
	memset(c, 0, sizeof(*c));
	memcpy(c->id, id, id_len);
	c->id_len = id_len;
	snprintf(c->rp_id, sizeof(c->rp_id), "%s", record_state_rp_id(st));
	memcpy(c->user_id, handle, handle_len);
	c->user_id_len = handle_len;
	snprintf(c->user_name, sizeof(c->user_name), "%s", name ? name : "");
	snprintf(c->display_name, sizeof(c->display_name), "%s", display ? display : "");
	c->alg = (int)record_state_alg(st);
	c->be = record_state_backup_eligible(st);
	c->bs = record_state_backup_state(st);
	c->key = h;
	return PKS_OK;
}

static int authn_find_one(void *user, const struct record_state *st)
{
	struct authn_find *f = user;
	const uint8_t *id;
	size_t id_len = 0, pos;
	uint64_t created = record_state_created_at(st);
	struct ctap2_cred tmp;
	int r;

	if (record_state_trashed(st) || strcmp(record_state_rp_id(st), f->rp_id) != 0)
		return PKS_OK;
	id = record_state_credential_id(st, &id_len);
	if (f->allow != NULL && !authn_allowed(f->allow, id, id_len))
		return PKS_OK;
	/* Keep the newest max, newest first. */
	for (pos = 0; pos < f->n && f->created[pos] >= created; pos++)
		;
	if (pos == f->max)
		return PKS_OK;
	r = authn_fill_cred(st, &tmp);
	if (r == PKS_ERR_INVALID)
		return PKS_OK; /* an imported record CTAP cannot carry */
	if (r != PKS_OK)
		return r;
	if (f->n == f->max) {
		free(f->out[f->n - 1].key);
		f->n--;
	}
	memmove(&f->out[pos + 1], &f->out[pos], (f->n - pos) * sizeof(f->out[0]));
	memmove(&f->created[pos + 1], &f->created[pos], (f->n - pos) * sizeof(f->created[0]));
	f->out[pos] = tmp;
	f->created[pos] = created;
	f->n++;
	return PKS_OK;
}

static int authn_be_find(void *user, const char *rp_id, const struct ctap2_allow *allow,
			 struct ctap2_cred *out, size_t max, size_t *n)
{
	struct authn *a = user;
	struct authn_find f = {rp_id, allow, out, max, 0, {0}};
	int r;

	if (vault_is_locked(a->vault) || !vault_is_initialized(a->vault)) {
		pks_log(&a->log, PKS_LOG_WARN,
			"authenticator: the vault is locked; run pksync unlock to sign in");
		return PKS_ERR_LOCKED;
	}
	if (f.max > CTAP2_ASSERTION_CREDS_MAX)
		f.max = CTAP2_ASSERTION_CREDS_MAX;
	r = vault_records_foreach(a->vault, authn_find_one, &f);
	if (r != PKS_OK) {
		for (size_t i = 0; i < f.n; i++)
			free(out[i].key);
		return r;
	}
	*n = f.n;
	return PKS_OK;
}

static int authn_key_of(struct authn *a, const struct record_state *st, struct passkey_key **key)
{
	const uint8_t *der;
	size_t der_len = 0;
	int r = record_state_private_key(st, &der, &der_len);

	(void)a;
	if (r != PKS_OK)
		return r;
	return passkey_key_from_pkcs8(der, der_len, key);
}

static int authn_be_create(void *user, const char *rp_id, const char *rp_name,
			   const uint8_t *user_id, size_t user_id_len, const char *user_name,
			   const char *display_name, int alg, struct ctap2_cred *out, uint8_t *cose,
			   size_t cose_cap, size_t *cose_len)
{
	struct authn *a = user;
	const struct record_state *st = NULL;
	struct passkey_key *key = NULL;
	uint8_t *c = NULL;
	size_t c_len = 0;
	int r;

	(void)rp_name;
	if (vault_is_locked(a->vault))
		return PKS_ERR_LOCKED;
	r = vault_create_passkey(a->vault, rp_id, user_id, user_id_len, user_name, display_name,
				 alg, &st);
	if (r == PKS_OK)
		r = authn_key_of(a, st, &key);
	if (r == PKS_OK)
		r = passkey_key_cose(key, &c, &c_len);
	if (r == PKS_OK && c_len > cose_cap)
		r = PKS_ERR_TOO_LARGE;
	if (r == PKS_OK)
		r = authn_fill_cred(st, out);
	if (r == PKS_OK) {
		memcpy(cose, c, c_len);
		*cose_len = c_len;
		pks_log(&a->log, PKS_LOG_INFO, "authenticator: a new passkey was created");
		if (a->changed != NULL)
			a->changed(a->changed_user);
	}
	free(c);
	passkey_key_free(key);
	return r;
}

static int authn_be_sign(void *user, const struct ctap2_cred *cred, const uint8_t *msg, size_t len,
			 uint8_t *sig, size_t cap, size_t *sig_len)
{
	struct authn *a = user;
	const struct authn_handle *h = cred->key;
	const struct record_state *st = NULL;
	struct passkey_key *key = NULL;
	uint8_t *s = NULL;
	size_t s_len = 0;
	int r;

	if (h == NULL)
		return PKS_ERR_INVALID;
	if (vault_is_locked(a->vault))
		return PKS_ERR_LOCKED;
	/* Looked up again: the record may have changed while the person was asked. */
	r = vault_get(a->vault, h->record_id, &st);
	if (r == PKS_OK && record_state_trashed(st))
		r = PKS_ERR_NOT_FOUND;
	if (r == PKS_OK)
		r = authn_key_of(a, st, &key);
	if (r == PKS_OK)
		r = passkey_key_sign(key, msg, len, &s, &s_len);
	if (r == PKS_OK && s_len > cap)
		r = PKS_ERR_TOO_LARGE;
	if (r == PKS_OK) {
		memcpy(sig, s, s_len);
		*sig_len = s_len;
	}
	free(s);
	passkey_key_free(key);
	return r;
}

static void authn_be_release(void *user, struct ctap2_cred *cred)
{
	(void)user;
	free(cred->key);
	cred->key = NULL;
}

static const struct ctap2_backend authn_backend = {
    authn_be_find,
    authn_be_create,
    authn_be_sign,
    authn_be_release,
};

/* ---- reports out ---- */

static void authn_send_report(void *user, const uint8_t report[CTAPHID_REPORT_LEN])
{
	struct authn *a = user;

	for (size_t i = 0; i < AUTHN_SOCKET_CLIENTS_MAX; i++) {
		struct authn_client *c = &a->clients[i];
		/* Like hidraw: every open client reads every report; a client that
		   does not read loses reports rather than stall the others. */
		if (c->used &&
		    send(c->fd, report, CTAPHID_REPORT_LEN, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 &&
		    errno != EAGAIN && errno != EWOULDBLOCK)
			continue;
	}
	if (a->uhid_on) {
		struct uhid_event ev;
		memset(&ev, 0, sizeof(ev));
		ev.type = UHID_INPUT2;
		ev.u.input2.size = CTAPHID_REPORT_LEN;
		memcpy(ev.u.input2.data, report, CTAPHID_REPORT_LEN);
		if (write(a->uhid_fd, &ev, sizeof(ev)) != (ssize_t)sizeof(ev))
			pks_log(&a->log, PKS_LOG_WARN, "authenticator: writing to uhid failed: %s",
				strerror(errno));
		sodium_memzero(&ev, sizeof(ev));
	}
}

static void authn_respond(struct authn *a, uint32_t cid, uint8_t status, uint8_t *resp,
			  size_t resp_len)
{
	if (resp != NULL) {
		ctaphid_respond(a->hid, cid, CTAPHID_CBOR, resp, resp_len);
		sodium_memzero(resp, resp_len);
		free(resp);
	} else {
		ctaphid_respond(a->hid, cid, CTAPHID_CBOR, &status, 1);
	}
}

/* ---- asking the person ---- */

static void authn_answered(void *user, enum pinentry_result res, const char *pin, size_t pin_len)
{
	struct authn *a = user;
	int outcome = CTAP2_OUTCOME_DENIED;
	uint8_t *resp = NULL, status;
	size_t resp_len = 0;

	a->prompt = NULL;
	switch (res) {
	case PINENTRY_ALLOW:
		if (!a->asked_pin) {
			outcome = CTAP2_OUTCOME_PRESENT;
		} else if (vault_check_passphrase(a->vault, pin, pin_len) == PKS_OK) {
			outcome = CTAP2_OUTCOME_VERIFIED;
			a->uv_failures = 0;
		} else {
			uint64_t wait_ms;
			if (a->uv_failures < 16)
				a->uv_failures++;
			/* 1 s, 2 s, 4 s ... at most a minute, like unlock's delays. */
			wait_ms = (uint64_t)1000u << (a->uv_failures - 1);
			if (wait_ms > 60000u)
				wait_ms = 60000u;
			a->uv_blocked_until = authn_now(a) + wait_ms;
			pks_log(&a->log, PKS_LOG_WARN,
				"authenticator: wrong passphrase; request refused, verification "
				"blocked for %llu s",
				(unsigned long long)(wait_ms / 1000u));
			outcome = CTAP2_OUTCOME_DENIED;
		}
		break;
	case PINENTRY_DENY:
		pks_log(&a->log, PKS_LOG_INFO, "authenticator: the person declined");
		outcome = CTAP2_OUTCOME_DENIED;
		break;
	case PINENTRY_TIMEOUT:
		pks_log(&a->log, PKS_LOG_INFO, "authenticator: no answer in time");
		outcome = CTAP2_OUTCOME_TIMEOUT;
		break;
	case PINENTRY_ERROR:
		pks_log(&a->log, PKS_LOG_WARN,
			"authenticator: the confirmation prompt failed; request refused");
		outcome = CTAP2_OUTCOME_DENIED;
		break;
	}
	a->pending = false;
	status = ctap2_finish(a->ctap, outcome, authn_now(a), &resp, &resp_len);
	authn_respond(a, a->pending_cid, status, resp, resp_len);
}

static void authn_describe(const struct ctap2_pending *p, char *out, size_t cap)
{
	const char *user = p->user[0] ? p->user : "an account";

	switch (p->op) {
	case CTAP2_OP_MAKE:
		if (p->excluded)
			snprintf(out, cap,
				 "%s asks to register a passkey, but one of yours is already "
				 "registered there. Confirm to tell it so.",
				 p->rp_id);
		else
			snprintf(out, cap, "Create a passkey for %s at %s?", user, p->rp_id);
		break;
	case CTAP2_OP_GET:
		if (p->n_creds > 1)
			snprintf(out, cap, "Sign in to %s? (%zu accounts)", p->rp_id, p->n_creds);
		else
			snprintf(out, cap, "Sign in to %s as %s?", p->rp_id, user);
		break;
	case CTAP2_OP_SELECT:
	case CTAP2_OP_NONE:
		snprintf(out, cap, "Use pksync as the security key?");
		break;
	}
}

static void authn_ask(struct authn *a, uint32_t cid)
{
	struct pinentry_request req;
	char desc[1024];
	int r;

	authn_describe(&a->what, desc, sizeof(desc));
	memset(&req, 0, sizeof(req));
	req.program = a->pinentry;
	req.title = "pksync security key";
	req.description = desc;
	req.want_pin = a->what.needs_uv;
	req.ok_label = a->what.op == CTAP2_OP_MAKE ? "Create" : "Allow";
	req.cancel_label = "Deny";
	req.timeout_s = a->opt.up_timeout_s;
	a->asked_pin = req.want_pin;
	a->pending = true;
	a->pending_cid = cid;
	ctaphid_set_status(a->hid, CTAPHID_STATUS_UPNEEDED);
	r = pinentry_ask(a->loop, &req, &a->log, authn_answered, a, &a->prompt);
	if (r != PKS_OK) {
		a->prompt = NULL;
		authn_answered(a, PINENTRY_ERROR, NULL, 0);
	}
}

/* ---- requests in ---- */

static void authn_request(void *user, uint32_t cid, uint8_t cmd, const uint8_t *data, size_t len)
{
	struct authn *a = user;
	uint8_t *resp = NULL, status;
	size_t resp_len = 0;

	if (cmd != CTAPHID_CBOR) {
		uint8_t err = CTAP1_ERR_INVALID_COMMAND;
		ctaphid_respond(a->hid, cid, cmd, &err, 1);
		return;
	}
	/* A passphrase set or removed since: getInfo and uv follow (the
	   getNextAssertion state of the old authenticator goes with it). */
	if (vault_has_passphrase(a->vault) != a->uv_configured) {
		struct ctap2 *fresh = NULL;
		if (ctap2_new(&authn_backend, a, authn_aaguid, vault_has_passphrase(a->vault),
			      &fresh) == PKS_OK) {
			ctap2_free(a->ctap);
			a->ctap = fresh;
			a->uv_configured = vault_has_passphrase(a->vault);
		}
	}
	memset(&a->what, 0, sizeof(a->what));
	status = ctap2_begin(a->ctap, data, len, authn_now(a), &a->what, &resp, &resp_len);
	if (status == CTAP2_OK && a->what.needs_up && resp == NULL) {
		if (a->what.needs_uv && authn_now(a) < a->uv_blocked_until) {
			/* Too many wrong passphrases lately: no prompt at all. */
			status = ctap2_finish(a->ctap, CTAP2_OUTCOME_DENIED, authn_now(a), &resp,
					      &resp_len);
			authn_respond(a, cid, status, resp, resp_len);
			return;
		}
		authn_ask(a, cid);
		return;
	}
	authn_respond(a, cid, status, resp, resp_len);
}

static void authn_cancel(void *user, uint32_t cid)
{
	struct authn *a = user;
	uint8_t *resp = NULL, status;
	size_t resp_len = 0;

	if (!a->pending || cid != a->pending_cid)
		return;
	pinentry_cancel(a->prompt);
	a->prompt = NULL;
	a->pending = false;
	pks_log(&a->log, PKS_LOG_INFO, "authenticator: the browser cancelled the request");
	status = ctap2_finish(a->ctap, CTAP2_OUTCOME_CANCELLED, authn_now(a), &resp, &resp_len);
	authn_respond(a, cid, status, resp, resp_len);
}

static const struct ctaphid_cb authn_hid_cb = {
    authn_send_report,
    authn_request,
    authn_cancel,
    NULL,
};

static void authn_input(struct authn *a, const uint8_t *report, size_t len)
{
	uint8_t buf[CTAPHID_REPORT_LEN];

	/* A hidraw write carries the report id (0) first; accept both forms. */
	if (len == CTAPHID_REPORT_LEN + 1 && report[0] == 0) {
		report++;
		len--;
	}
	if (len != CTAPHID_REPORT_LEN) {
		pks_log(&a->log, PKS_LOG_WARN, "authenticator: ignored a report of %zu bytes", len);
		return;
	}
	memcpy(buf, report, sizeof(buf));
	if (ctaphid_input(a->hid, buf, authn_now(a)) != PKS_OK)
		pks_log(&a->log, PKS_LOG_WARN, "authenticator: out of memory on a report");
	sodium_memzero(buf, sizeof(buf));
}

static void authn_tick(uv_timer_t *t)
{
	struct authn *a = t->data;

	ctaphid_tick(a->hid, authn_now(a));
}

/* ---- the test socket ---- */

static void authn_release(struct authn *a);

static void authn_client_closed(uv_handle_t *h)
{
	struct authn_client *c = h->data;
	struct authn *a = c->a;

	c->closing = false;
	if (--a->open_handles == 0)
		authn_release(a);
}

static void authn_client_drop(struct authn_client *c)
{
	if (!c->used)
		return;
	c->used = false;
	c->closing = true;
	uv_poll_stop(&c->poll);
	uv_close((uv_handle_t *)&c->poll, authn_client_closed);
	close(c->fd);
	c->fd = -1;
}

static void authn_client_readable(uv_poll_t *p, int status, int events)
{
	struct authn_client *c = p->data;
	uint8_t buf[CTAPHID_REPORT_LEN + 2];
	ssize_t n;

	(void)events;
	if (status < 0) {
		authn_client_drop(c);
		return;
	}
	/* A bounded number per wakeup, so one client cannot starve the loop. */
	for (int i = 0; i < 64 && c->used; i++) {
		n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			authn_client_drop(c);
			break;
		}
		authn_input(c->a, buf, (size_t)n);
	}
	sodium_memzero(buf, sizeof(buf));
}

static void authn_accept(uv_poll_t *p, int status, int events)
{
	struct authn *a = p->data;
	struct authn_client *slot = NULL;
	int fd;

	(void)events;
	if (status < 0)
		return;
	fd = accept4(a->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	for (size_t i = 0; i < AUTHN_SOCKET_CLIENTS_MAX && slot == NULL; i++)
		if (!a->clients[i].used && !a->clients[i].closing)
			slot = &a->clients[i];
	if (slot == NULL) {
		pks_log(&a->log, PKS_LOG_WARN,
			"authenticator: too many clients on the socket; one refused");
		close(fd);
		return;
	}
	if (uv_poll_init(a->loop, &slot->poll, fd) != 0) {
		close(fd);
		return;
	}
	slot->a = a;
	slot->fd = fd;
	slot->used = true;
	slot->poll.data = slot;
	a->open_handles++;
	uv_poll_start(&slot->poll, UV_READABLE | UV_DISCONNECT, authn_client_readable);
}

static int authn_listen(struct authn *a)
{
	struct sockaddr_un sa;
	int fd;

	if (strlen(a->socket_path) >= sizeof(sa.sun_path))
		return PKS_ERR_TOO_LARGE;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return PKS_ERR_IO;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, a->socket_path, strlen(a->socket_path));
	/* A socket left behind by a killed agent is replaced. */
	unlink(a->socket_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 8) != 0) {
		int e = errno;
		close(fd);
		pks_log(&a->log, PKS_LOG_ERROR, "authenticator: cannot listen on %s: %s",
			a->socket_path, strerror(e));
		return e == EACCES || e == EPERM ? PKS_ERR_PERM : PKS_ERR_IO;
	}
	/* The umask (077) already keeps it to this user; say so explicitly. */
	chmod(a->socket_path, 0600);
	if (uv_poll_init(a->loop, &a->listen_poll, fd) != 0) {
		close(fd);
		unlink(a->socket_path);
		return PKS_ERR_IO;
	}
	a->listen_fd = fd;
	a->listening = true;
	a->listen_poll.data = a;
	a->open_handles++;
	uv_poll_start(&a->listen_poll, UV_READABLE, authn_accept);
	pks_log(&a->log, PKS_LOG_INFO, "authenticator: CTAPHID on socket %s", a->socket_path);
	return PKS_OK;
}

/* ---- /dev/uhid ---- */

static void authn_uhid_readable(uv_poll_t *p, int status, int events)
{
	struct authn *a = p->data;
	struct uhid_event ev;

	(void)events;
	if (status < 0)
		return;
	for (int i = 0; i < 64; i++) {
		ssize_t n = read(a->uhid_fd, &ev, sizeof(ev));
		if (n < 0)
			break;
		if ((size_t)n < sizeof(ev.type))
			break;
		switch (ev.type) {
		case UHID_OUTPUT:
			if (ev.u.output.size <= sizeof(ev.u.output.data))
				authn_input(a, ev.u.output.data, ev.u.output.size);
			break;
		case UHID_GET_REPORT: {
			/* No feature reports: answer with an error so the kernel does not wait. */
			struct uhid_event re;
			memset(&re, 0, sizeof(re));
			re.type = UHID_GET_REPORT_REPLY;
			re.u.get_report_reply.id = ev.u.get_report.id;
			re.u.get_report_reply.err = EIO;
			if (write(a->uhid_fd, &re, sizeof(re)) < 0)
				pks_log(&a->log, PKS_LOG_WARN, "authenticator: uhid reply failed");
			break;
		}
		case UHID_SET_REPORT: {
			struct uhid_event re;
			memset(&re, 0, sizeof(re));
			re.type = UHID_SET_REPORT_REPLY;
			re.u.set_report_reply.id = ev.u.set_report.id;
			re.u.set_report_reply.err = EIO;
			if (write(a->uhid_fd, &re, sizeof(re)) < 0)
				pks_log(&a->log, PKS_LOG_WARN, "authenticator: uhid reply failed");
			break;
		}
		default:
			break; /* START, STOP, OPEN, CLOSE */
		}
	}
	sodium_memzero(&ev, sizeof(ev));
}

static int authn_uhid_open(struct authn *a)
{
	const char *path = a->opt.uhid_path ? a->opt.uhid_path : "/dev/uhid";
	struct uhid_event ev;
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0) {
		int e = errno;
		pks_log(&a->log, PKS_LOG_ERROR,
			"authenticator: cannot open %s: %s (see \"Use with your browser\" in "
			"README.md)",
			path, strerror(e));
		return e == EACCES || e == EPERM ? PKS_ERR_PERM : PKS_ERR_IO;
	}
	memset(&ev, 0, sizeof(ev));
	ev.type = UHID_CREATE2;
	snprintf((char *)ev.u.create2.name, sizeof(ev.u.create2.name), "pksync security key");
	snprintf((char *)ev.u.create2.phys, sizeof(ev.u.create2.phys), "pksync");
	snprintf((char *)ev.u.create2.uniq, sizeof(ev.u.create2.uniq), "pksync");
	memcpy(ev.u.create2.rd_data, authn_report_descriptor, sizeof(authn_report_descriptor));
	ev.u.create2.rd_size = sizeof(authn_report_descriptor);
	ev.u.create2.bus = 0x06;       /* BUS_VIRTUAL */
	ev.u.create2.vendor = 0x1209;  /* pid.codes open-source vendor id */
	ev.u.create2.product = 0x5053; /* unregistered: "PS" */
	if (write(fd, &ev, sizeof(ev)) != (ssize_t)sizeof(ev)) {
		pks_log(&a->log, PKS_LOG_ERROR,
			"authenticator: creating the uhid device failed: %s", strerror(errno));
		close(fd);
		return PKS_ERR_IO;
	}
	if (uv_poll_init(a->loop, &a->uhid_poll, fd) != 0) {
		close(fd);
		return PKS_ERR_IO;
	}
	a->uhid_fd = fd;
	a->uhid_on = true;
	a->uhid_poll.data = a;
	a->open_handles++;
	uv_poll_start(&a->uhid_poll, UV_READABLE, authn_uhid_readable);
	pks_log(&a->log, PKS_LOG_INFO, "authenticator: HID device created through %s", path);
	return PKS_OK;
}

/* ---- life cycle ---- */

static void authn_release(struct authn *a)
{
	ctaphid_free(a->hid);
	ctap2_free(a->ctap);
	free(a->socket_path);
	free(a->pinentry);
	free(a);
}

static void authn_closed(uv_handle_t *h);

static int authn_start(struct authn *a)
{
	int r = PKS_OK;

	uv_timer_init(a->loop, &a->tick);
	a->tick.data = a;
	a->open_handles++;
	uv_timer_start(&a->tick, authn_tick, AUTHN_TICK_MS, AUTHN_TICK_MS);
	if (a->socket_path != NULL)
		r = authn_listen(a);
	if (r == PKS_OK && a->opt.uhid)
		r = authn_uhid_open(a);
	return r;
}

int authn_new(uv_loop_t *loop, struct vault *vault, const struct authn_options *opt,
	      const struct pks_logger *log, authn_changed_fn changed, void *changed_user,
	      struct authn **out)
{
	struct authn *a;
	int r;

	if (loop == NULL || vault == NULL || opt == NULL || out == NULL ||
	    (opt->socket_path == NULL && !opt->uhid) || opt->up_timeout_s == 0 ||
	    opt->up_timeout_s > 600)
		return PKS_ERR_INVALID;
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return PKS_ERR_NOMEM;
	a->loop = loop;
	if (log != NULL)
		a->log = *log;
	a->vault = vault;
	a->changed = changed;
	a->changed_user = changed_user;
	a->opt = *opt;
	a->listen_fd = -1;
	a->uhid_fd = -1;
	a->socket_path = opt->socket_path ? strdup(opt->socket_path) : NULL;
	a->pinentry = strdup(opt->pinentry ? opt->pinentry : "pinentry");
	if ((opt->socket_path && a->socket_path == NULL) || a->pinentry == NULL) {
		authn_release(a);
		return PKS_ERR_NOMEM;
	}
	a->uv_configured = vault_has_passphrase(vault);
	r = ctaphid_new(&authn_hid_cb, a, &a->hid);
	if (r == PKS_OK)
		r = ctap2_new(&authn_backend, a, authn_aaguid, a->uv_configured, &a->ctap);
	if (r != PKS_OK) {
		authn_release(a);
		return r;
	}
	r = authn_start(a);
	if (r != PKS_OK) {
		authn_free(a);
		return r;
	}
	*out = a;
	return PKS_OK;
}

static void authn_closed(uv_handle_t *h)
{
	struct authn *a = h->data;

	if (--a->open_handles == 0)
		authn_release(a);
}

void authn_free(struct authn *a)
{
	if (a == NULL || a->freeing)
		return;
	a->freeing = true;
	pinentry_cancel(a->prompt);
	a->prompt = NULL;
	a->open_handles++; /* held until every close below is issued */
	for (size_t i = 0; i < AUTHN_SOCKET_CLIENTS_MAX; i++) {
		struct authn_client *c = &a->clients[i];
		if (!c->used)
			continue;
		c->used = false;
		c->closing = true;
		uv_poll_stop(&c->poll);
		uv_close((uv_handle_t *)&c->poll, authn_client_closed);
		close(c->fd);
	}
	if (a->listening) {
		uv_poll_stop(&a->listen_poll);
		uv_close((uv_handle_t *)&a->listen_poll, authn_closed);
		close(a->listen_fd);
		unlink(a->socket_path);
	}
	if (a->uhid_on) {
		struct uhid_event ev;
		memset(&ev, 0, sizeof(ev));
		ev.type = UHID_DESTROY;
		if (write(a->uhid_fd, &ev, sizeof(ev)) < 0)
			pks_log(&a->log, PKS_LOG_WARN, "authenticator: uhid destroy failed");
		uv_poll_stop(&a->uhid_poll);
		uv_close((uv_handle_t *)&a->uhid_poll, authn_closed);
		close(a->uhid_fd);
	}
	if (a->tick.data == a) {
		uv_timer_stop(&a->tick);
		uv_close((uv_handle_t *)&a->tick, authn_closed);
	}
	if (--a->open_handles == 0)
		authn_release(a);
}
