/*
 * mDNS/DNS-SD discovery of _pksync._tcp on a libuv loop.
 *
 * The module publishes one service instance and browses for the others. It
 * knows nothing of keys: the agent hands it an opaque instance name and TXT
 * rdata (a rotating hint) and gets back what others publish.
 *
 * Backends, chosen at run time:
 *  - "avahi-client": the host's avahi-daemon over the D-Bus system bus.
 *  - "avahi-core": the embedded libavahi-core stack, used when no daemon
 *    answers (AVAHI_ERR_NO_DAEMON) or the daemon went away and did not come
 *    back within MDNS_DAEMON_GRACE_MS. Beside a running daemon it publishes
 *    no address records and points its SRV records at the daemon's host name;
 *    alone it publishes its own host name "pksync-<8 hex>".
 * With the automatic choice the module follows the daemon: it reconnects
 * after the daemon restarts, and while on avahi-core it retries the daemon
 * every MDNS_DAEMON_RETRY_MS and moves back to it. When avahi-core cannot
 * run either, it waits for a daemon to appear. A backend switch reports
 * every tracked instance lost; the new backend finds them again.
 *
 * Publishing and browsing are desired state: mdns_publish() and
 * mdns_browse() may be called at any time and take effect once (and every
 * time) a backend is running.
 *
 * Freeing is libuv style: after mdns_free() the loop must run until the
 * module's handles have closed before uv_loop_close(). No callback fires
 * after mdns_free() returns. Callbacks may call mdns_publish(),
 * mdns_unpublish() and mdns_browse(), but not mdns_free().
 *
 * Limits and caveats:
 *  - avahi-core is loaded with dlopen (see avahi-core-dl.h); it is missing in
 *    AddressSanitizer builds, where only avahi-client works.
 *  - Without a daemon, each embedded stack claims the host's addresses
 *    (A/AAAA and reverse PTR records): two processes using avahi-core on one
 *    host without a daemon fight over them. One agent per host is assumed.
 *  - A link that loses carrier drops the instances seen on it only when the
 *    daemon runs with use-iff-running=yes (the lab does); otherwise they go
 *    when their records expire or a resolver gives up.
 *  - Logs carry no instance names or TXT contents.
 */
#ifndef PKS_TRANSPORT_MDNS_H
#define PKS_TRANSPORT_MDNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "common/log.h"

#define MDNS_SERVICE_TYPE "_pksync._tcp"
/* Longest instance name in bytes (one DNS label). */
#define MDNS_INSTANCE_MAX 63u
/* At most this many (instance, interface, protocol) entries are tracked;
   more are dropped with a log line. */
#define MDNS_TRACK_MAX 256u
/* After the daemon connection fails, wait this long for it to come back
   before switching to avahi-core. */
#define MDNS_DAEMON_GRACE_MS 5000u
/* While on avahi-core (automatic choice), try the daemon again this often. */
#define MDNS_DAEMON_RETRY_MS 10000u

struct mdns; /* opaque */

/* One resolved instance on one interface and address family. All pointers
   are borrowed for the duration of the callback. */
struct mdns_found {
	const char *instance;         /* <= MDNS_INSTANCE_MAX bytes, NUL-terminated */
	const uint8_t *txt;           /* raw TXT rdata (length-prefixed strings), */
	size_t txt_len;               /* already checked with mdns_txt_parse() */
	struct sockaddr_storage addr; /* port set; IPv6 link-local has sin6_scope_id = ifindex */
	socklen_t addr_len;
	uint32_t ifindex;
};

struct mdns_cb {
	/* A new instance, or a new address/TXT for one already reported. The same
	   instance may be reported on several interfaces or address families. */
	void (*found)(void *user, const struct mdns_found *f);
	/* The instance is gone from every interface it was reported on. */
	void (*lost)(void *user, const char *instance);
	/* Optional (may be NULL): our instance is established under this name
	   (the alternative one after a name collision). */
	void (*published)(void *user, const char *instance);
};

enum mdns_backend_choice {
	MDNS_BACKEND_AUTO,   /* avahi-client, else avahi-core (see above) */
	MDNS_BACKEND_CLIENT, /* avahi-client only; follows daemon restarts */
	MDNS_BACKEND_CORE,   /* avahi-core only (tests) */
};

/* Options for mdns_new_opts(); a zeroed struct is the default. */
struct mdns_opts {
	enum mdns_backend_choice backend;
	bool ipv4_only; /* browse and resolve IPv4 only (default: IPv4 and IPv6) */
};

/*
 * Starts the module on loop with the default options. cb is copied, log is
 * copied and may be NULL; user is passed to every callback. The backend is
 * chosen before this returns (avahi_client_new() is synchronous). Errors:
 * PKS_ERR_INVALID, PKS_ERR_NOMEM, PKS_ERR_IO when no backend could start (no
 * system bus for avahi-client, or avahi-core failing to open its sockets),
 * PKS_ERR_UNSUPPORTED for a forced avahi-core that cannot be loaded.
 * *out is written only on success.
 */
int mdns_new(uv_loop_t *loop, const struct pks_logger *log, const struct mdns_cb *cb, void *user,
	     struct mdns **out);

/* As mdns_new() with options (opts NULL: defaults). */
int mdns_new_opts(uv_loop_t *loop, const struct pks_logger *log, const struct mdns_cb *cb,
		  void *user, const struct mdns_opts *opts, struct mdns **out);

/* Withdraws everything and frees asynchronously (see above). NULL is fine. */
void mdns_free(struct mdns *m);

/*
 * Publishes one instance of MDNS_SERVICE_TYPE on port, replacing the previous
 * one (the old name is withdrawn). txt is raw rdata (see mdns-txt.h), copied;
 * NULL/0 means no keys. A name collision silently picks Avahi's alternative
 * name. Errors: PKS_ERR_INVALID (empty or over-long name, port 0, TXT that
 * mdns_txt_parse() rejects), PKS_ERR_TOO_LARGE (TXT over MDNS_TXT_MAX),
 * PKS_ERR_NOMEM. A backend failure later is logged, not returned.
 */
int mdns_publish(struct mdns *m, const char *instance, uint16_t port, const uint8_t *txt,
		 size_t txt_len);

/* Withdraws the published instance, if any. */
void mdns_unpublish(struct mdns *m);

/*
 * Starts (on) or stops browsing and resolving MDNS_SERVICE_TYPE. Stopping
 * forgets tracked instances without reporting them lost. Own instances (those
 * this struct mdns publishes) are never reported. PKS_OK, or PKS_ERR_NOMEM.
 */
int mdns_browse(struct mdns *m, bool on);

/* "avahi-client", "avahi-core" or "none" (between backends). */
const char *mdns_backend(const struct mdns *m);

#endif
