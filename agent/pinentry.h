/*
 * Asks the person at the desktop through a pinentry program (the prompt
 * program of GnuPG, spoken to in the Assuan protocol on its stdin/stdout):
 * a confirmation (user presence) or a passphrase (user verification).
 *
 * The program runs on the agent's libuv loop; the answer arrives through a
 * callback, exactly once, unless pinentry_cancel() came first. A program
 * that does not answer within the timeout is killed and the answer is
 * PINENTRY_TIMEOUT. Nothing here logs what the person typed.
 */
#ifndef PKS_AGENT_PINENTRY_H
#define PKS_AGENT_PINENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "common/log.h"

/* Longest title or description passed on (longer ones are cut). */
#define PINENTRY_TEXT_MAX 700
/* Longest Assuan line read from the program; a longer one is an error. */
#define PINENTRY_LINE_MAX 2048
/* Longest passphrase taken from GETPIN (the vault's own limit is lower). */
#define PINENTRY_PIN_MAX 1024

enum pinentry_result {
	PINENTRY_ALLOW = 0, /* CONFIRM answered OK; or GETPIN gave a passphrase */
	PINENTRY_DENY,      /* the person said no (cancel, close, "not confirmed") */
	PINENTRY_TIMEOUT,   /* no answer in time (pinentry's own timeout or ours) */
	PINENTRY_ERROR,     /* the program is missing, crashed or spoke nonsense */
};

/*
 * pin is set only for PINENTRY_ALLOW of a passphrase prompt; it lives in
 * wiped memory and is valid only during the call.
 */
typedef void (*pinentry_done_fn)(void *user, enum pinentry_result result, const char *pin,
				 size_t pin_len);

struct pinentry_request {
	const char *program; /* "pinentry" or a path */
	const char *title;
	const char *description; /* what is asked and for which site */
	const char *ok_label, *cancel_label;
	bool want_pin;          /* GETPIN instead of CONFIRM */
	unsigned int timeout_s; /* 1..600 */
};

struct pinentry;

/*
 * Starts the program and the dialogue. PKS_ERR_INVALID for a bad request,
 * PKS_ERR_NOMEM; a program that cannot be started is reported through fn
 * (PINENTRY_ERROR) from the loop, never from inside this call. *out is the
 * handle for pinentry_cancel(); it stays valid until fn ran or cancel was
 * called.
 */
int pinentry_ask(uv_loop_t *loop, const struct pinentry_request *req, const struct pks_logger *log,
		 pinentry_done_fn fn, void *user, struct pinentry **out);

/* Withdraws the prompt (kills the program); fn is not called. NULL is fine. */
void pinentry_cancel(struct pinentry *p);

/*
 * Assuan percent-escaping of a text for SETDESC and friends: '%', CR and LF
 * (and other control characters) become %XX. Writes at most cap bytes with
 * the NUL; PKS_ERR_TOO_LARGE when it does not fit.
 */
int pinentry_escape(const char *in, char *out, size_t cap);

/* Undoes %XX escapes in place (a D line's data); PKS_ERR_MALFORMED for a bad escape. */
int pinentry_unescape(char *s, size_t *len);

#endif
