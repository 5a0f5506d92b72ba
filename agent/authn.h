/*
 * The agent as a FIDO2 security key: the vault's passkeys behind CTAP 2.1
 * (agent/ctap2) over CTAPHID (agent/ctaphid), carried by the kernel's
 * /dev/uhid in production or by a Unix SOCK_SEQPACKET socket of 64-byte
 * reports in tests -- the same framing and command code either way.
 *
 * Every makeCredential and getAssertion is confirmed by the person through
 * a pinentry prompt; user verification is the vault passphrase (GETPIN),
 * offered only when the vault has one. Passkeys made here are ordinary
 * vault records: they sync, list and export like imported ones.
 */
#ifndef PKS_AGENT_AUTHN_H
#define PKS_AGENT_AUTHN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "agent/vault.h"
#include "common/log.h"

/* pksync's AAGUID: 6a645f87-fe63-43c8-83d4-a32c63de4032. */
extern const uint8_t authn_aaguid[16];

/* Clients of the test socket at once (like processes holding the hidraw node open). */
#define AUTHN_SOCKET_CLIENTS_MAX 8
#define AUTHN_UP_TIMEOUT_DEFAULT_S 30

struct authn_options {
	const char *socket_path; /* --ctaphid-socket: listen here (NULL: no socket) */
	bool uhid;               /* --uhid: create a HID device through /dev/uhid */
	const char *uhid_path;   /* default "/dev/uhid" (tests may point elsewhere) */
	const char *pinentry;    /* program asked for presence; default "pinentry" */
	unsigned int up_timeout_s;
};

struct authn;

/* Called after a passkey was created here, so the agent pushes it to peers. */
typedef void (*authn_changed_fn)(void *user);

/*
 * Starts serving on loop. PKS_ERR_INVALID for bad options; PKS_ERR_IO /
 * PKS_ERR_PERM / PKS_ERR_EXISTS when the socket or /dev/uhid cannot be
 * opened (the error is logged with the path); PKS_ERR_NOMEM.
 */
int authn_new(uv_loop_t *loop, struct vault *vault, const struct authn_options *opt,
	      const struct pks_logger *log, authn_changed_fn changed, void *changed_user,
	      struct authn **out);

/* Withdraws any prompt, closes the socket (and unlinks it) and the uhid
   device; frees asynchronously. NULL is fine. */
void authn_free(struct authn *a);

#endif
