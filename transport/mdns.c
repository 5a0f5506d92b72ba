/*
 * mDNS discovery over Avahi; see mdns.h for the behaviour.
 *
 * Two backends share the bookkeeping here: avahi-client (the host daemon on
 * the system bus) and avahi-core (an embedded responder). Both run on the
 * libuv loop through avahi-uv. The struct mdns holds the desired state
 * (instance to publish, browsing on/off); a backend applies it whenever it
 * reaches its running state, so daemon restarts and backend switches need no
 * help from the caller.
 *
 * Avahi calls back synchronously from its constructors and does not allow a
 * client or server to be freed from inside its own state callback, so
 * restarts and switches run from a libuv timer (m->timer, one pending action
 * at a time).
 */
#include "transport/mdns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/strlst.h>
#include <sodium.h>

#include "common/err.h"
#include "transport/avahi-core-dl.h"
#include "transport/avahi-uv.h"
#include "transport/mdns-txt.h"

/* How long a failed embedded server waits before it is started again. */
#define MDNS_CORE_RESTART_MS 5000u
/* Alternative names tried at once when adding a service collides locally. */
#define MDNS_RENAME_TRIES 16

enum mdns_backend_kind {
	MDNS_NONE,
	MDNS_CLIENT,
	MDNS_CORE,
};

/* What m->timer does when it fires. */
enum mdns_action {
	MDNS_ACTION_NONE,
	MDNS_ACTION_CLIENT_RESTART, /* the daemon connection failed: reconnect */
	MDNS_ACTION_GRACE,          /* the daemon did not come back: go embedded */
	MDNS_ACTION_RETRY_DAEMON,   /* on avahi-core: is a daemon there now? */
	MDNS_ACTION_CORE_RESTART,   /* the embedded server failed: start it again */
};

/* One (instance, interface, protocol) seen by the browser. */
struct mdns_entry {
	struct mdns *m;
	char instance[MDNS_INSTANCE_MAX + 1];
	AvahiIfIndex ifindex;
	AvahiProtocol proto;
	AvahiServiceResolver *resolver;   /* avahi-client */
	AvahiSServiceResolver *sresolver; /* avahi-core */
	bool reported;                    /* found() was called with addr/txt */
	struct sockaddr_storage addr;
	socklen_t addr_len;
	uint8_t *txt;
	size_t txt_len;
	struct mdns_entry *next;
};

struct mdns {
	uv_loop_t *loop;
	struct pks_logger log;
	struct mdns_cb cb;
	void *user;
	struct mdns_opts opts;
	struct avahi_uv *poll;
	enum mdns_backend_kind backend;

	AvahiClient *client;
	AvahiEntryGroup *group;
	AvahiServiceBrowser *browser;
	bool probing; /* a client made only to see whether a daemon answers */

	const struct avahi_core_dl *core; /* libavahi-core, loaded on first use */
	AvahiServer *server;
	AvahiSEntryGroup *sgroup;
	AvahiSServiceBrowser *sbrowser;
	char *daemon_host; /* SRV target when avahi-core runs beside a daemon */

	/* Desired state. */
	bool want_publish;
	char *name; /* current name, an alternative after collisions */
	uint16_t port;
	AvahiStringList *txt;
	bool want_browse;

	struct mdns_entry *entries;
	size_t n_entries;

	uv_timer_t timer;
	enum mdns_action action;
};

static AvahiProtocol mdns_proto(const struct mdns *m)
{
	return m->opts.ipv4_only ? AVAHI_PROTO_INET : AVAHI_PROTO_UNSPEC;
}

static void mdns_schedule(struct mdns *m, enum mdns_action action, uint64_t ms);

/* ---- tracked instances ------------------------------------------------- */

static bool mdns_name_reported(const struct mdns *m, const char *instance)
{
	for (const struct mdns_entry *e = m->entries; e != NULL; e = e->next)
		if (e->reported && strcmp(e->instance, instance) == 0)
			return true;
	return false;
}

static void mdns_entry_stop_resolver(struct mdns_entry *e)
{
	if (e->resolver != NULL)
		avahi_service_resolver_free(e->resolver);
	if (e->sresolver != NULL)
		e->m->core->avahi_s_service_resolver_free(e->sresolver);
	e->resolver = NULL;
	e->sresolver = NULL;
}

/* Unlinks and frees e; reports the name lost when report is set and no other
   reported entry carries it. */
static void mdns_entry_drop(struct mdns *m, struct mdns_entry *e, bool report)
{
	char name[MDNS_INSTANCE_MAX + 1];
	bool was_reported = e->reported;

	for (struct mdns_entry **pp = &m->entries; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	}
	m->n_entries--;
	mdns_entry_stop_resolver(e);
	memcpy(name, e->instance, sizeof(name));
	free(e->txt);
	free(e);
	if (report && was_reported && !mdns_name_reported(m, name) && m->cb.lost != NULL)
		m->cb.lost(m->user, name);
}

static void mdns_entries_drop_all(struct mdns *m, bool report)
{
	while (m->entries != NULL)
		mdns_entry_drop(m, m->entries, report);
}

static struct mdns_entry *mdns_entry_find(struct mdns *m, const char *instance,
					  AvahiIfIndex ifindex, AvahiProtocol proto)
{
	for (struct mdns_entry *e = m->entries; e != NULL; e = e->next)
		if (e->ifindex == ifindex && e->proto == proto &&
		    strcmp(e->instance, instance) == 0)
			return e;
	return NULL;
}

/* A browser result that is ours (published by this struct mdns) is skipped. */
static bool mdns_is_own(const struct mdns *m, const char *instance, AvahiLookupResultFlags flags)
{
	if (flags & AVAHI_LOOKUP_RESULT_OUR_OWN)
		return true;
	return (flags & AVAHI_LOOKUP_RESULT_LOCAL) && m->want_publish && m->name != NULL &&
	       strcmp(m->name, instance) == 0;
}

/* A new browser result: a tracked entry (without a resolver yet), or NULL
   when it is ours, a duplicate, over a limit or out of memory. */
static struct mdns_entry *mdns_entry_new(struct mdns *m, const char *instance, AvahiIfIndex ifindex,
					 AvahiProtocol proto, AvahiLookupResultFlags flags)
{
	struct mdns_entry *e;
	size_t len = strlen(instance);

	if (mdns_is_own(m, instance, flags))
		return NULL;
	if (len == 0 || len > MDNS_INSTANCE_MAX) {
		pks_log(&m->log, PKS_LOG_WARN, "mdns: instance name of %zu bytes dropped", len);
		return NULL;
	}
	if (mdns_entry_find(m, instance, ifindex, proto) != NULL)
		return NULL;
	if (m->n_entries >= MDNS_TRACK_MAX) {
		pks_log(&m->log, PKS_LOG_WARN, "mdns: %u instances tracked, new one dropped",
			MDNS_TRACK_MAX);
		return NULL;
	}
	e = calloc(1, sizeof(*e));
	if (e == NULL) {
		pks_log(&m->log, PKS_LOG_ERROR, "mdns: out of memory tracking an instance");
		return NULL;
	}
	e->m = m;
	memcpy(e->instance, instance, len + 1);
	e->ifindex = ifindex;
	e->proto = proto;
	e->next = m->entries;
	m->entries = e;
	m->n_entries++;
	return e;
}

static void mdns_entry_remove(struct mdns *m, const char *instance, AvahiIfIndex ifindex,
			      AvahiProtocol proto)
{
	struct mdns_entry *e = mdns_entry_find(m, instance, ifindex, proto);

	if (e != NULL)
		mdns_entry_drop(m, e, true);
}

/* Fills a socket address from an Avahi address; IPv6 link-local addresses
   get the interface as scope id. */
static bool mdns_sockaddr(const AvahiAddress *a, uint16_t port, AvahiIfIndex ifindex,
			  struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (a->proto == AVAHI_PROTO_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr.s_addr = a->data.ipv4.address;
		*len = sizeof(*sin);
		return true;
	}
	if (a->proto == AVAHI_PROTO_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, a->data.ipv6.address, sizeof(sin6->sin6_addr));
		if (IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr) && ifindex > 0)
			sin6->sin6_scope_id = (uint32_t)ifindex;
		*len = sizeof(*sin6);
		return true;
	}
	return false;
}

/* A resolver's answer (first or changed): checks it and reports it when the
   address or TXT differ from what was reported. */
static void mdns_entry_resolved(struct mdns_entry *e, const AvahiAddress *a, uint16_t port,
				AvahiStringList *txt)
{
	struct mdns *m = e->m;
	struct sockaddr_storage ss;
	socklen_t ss_len = 0;
	struct mdns_txt parsed;
	struct mdns_found f;
	uint8_t *raw = NULL;
	size_t raw_len;
	int r;

	if (a == NULL || port == 0 || !mdns_sockaddr(a, port, e->ifindex, &ss, &ss_len)) {
		pks_log(&m->log, PKS_LOG_DEBUG, "mdns: instance without a usable address");
		goto out;
	}
	raw_len = avahi_string_list_serialize(txt, NULL, 0);
	if (raw_len > MDNS_TXT_MAX) {
		pks_log(&m->log, PKS_LOG_WARN, "mdns: TXT of %zu bytes dropped", raw_len);
		goto out;
	}
	raw = malloc(raw_len > 0 ? raw_len : 1);
	if (raw == NULL)
		goto out;
	raw_len = avahi_string_list_serialize(txt, raw, raw_len);
	r = mdns_txt_parse(raw, raw_len, &parsed);
	if (r != PKS_OK) {
		pks_log(&m->log, PKS_LOG_WARN, "mdns: TXT rejected: %s", pks_strerror(r));
		goto out;
	}
	if (e->reported && e->addr_len == ss_len && memcmp(&e->addr, &ss, ss_len) == 0 &&
	    e->txt_len == raw_len && memcmp(e->txt, raw, raw_len) == 0)
		goto out;
	free(e->txt);
	e->txt = raw;
	e->txt_len = raw_len;
	raw = NULL;
	e->addr = ss;
	e->addr_len = ss_len;
	e->reported = true;
	if (m->cb.found != NULL) {
		memset(&f, 0, sizeof(f));
		f.instance = e->instance;
		f.txt = e->txt;
		f.txt_len = e->txt_len;
		f.addr = e->addr;
		f.addr_len = e->addr_len;
		f.ifindex = (uint32_t)e->ifindex;
		/* The callback may change what is tracked: e is not used after. */
		m->cb.found(m->user, &f);
	}
out:
	free(raw);
}

/* The resolver gave up: the instance is no longer resolvable there. */
static void mdns_entry_unresolvable(struct mdns_entry *e)
{
	struct mdns *m = e->m;
	char name[MDNS_INSTANCE_MAX + 1];

	pks_log(&m->log, PKS_LOG_DEBUG, "mdns: an instance could not be resolved");
	mdns_entry_stop_resolver(e);
	if (!e->reported)
		return;
	e->reported = false;
	memcpy(name, e->instance, sizeof(name));
	if (!mdns_name_reported(m, name) && m->cb.lost != NULL)
		m->cb.lost(m->user, name);
}

static void mdns_published(struct mdns *m)
{
	pks_log(&m->log, PKS_LOG_INFO, "mdns: service established (%s)", mdns_backend(m));
	if (m->cb.published != NULL && m->name != NULL)
		m->cb.published(m->user, m->name);
}

/* Moves to Avahi's alternative name after a collision. */
static int mdns_rename(struct mdns *m)
{
	char *alt = avahi_alternative_service_name(m->name);
	char *copy;

	if (alt == NULL)
		return PKS_ERR_NOMEM;
	copy = strdup(alt);
	avahi_free(alt);
	if (copy == NULL)
		return PKS_ERR_NOMEM;
	free(m->name);
	m->name = copy;
	pks_log(&m->log, PKS_LOG_INFO, "mdns: name collision, using an alternative name");
	return PKS_OK;
}

/* ---- avahi-client backend ---------------------------------------------- */

static void mdns_client_apply_publish(struct mdns *m);

static void mdns_client_group_cb(AvahiEntryGroup *g, AvahiEntryGroupState state, void *userdata)
{
	struct mdns *m = userdata;

	switch (state) {
	case AVAHI_ENTRY_GROUP_ESTABLISHED:
		mdns_published(m);
		break;
	case AVAHI_ENTRY_GROUP_COLLISION:
		if (mdns_rename(m) == PKS_OK)
			mdns_client_apply_publish(m);
		break;
	case AVAHI_ENTRY_GROUP_FAILURE:
		pks_log(&m->log, PKS_LOG_WARN, "mdns: publishing failed: %s",
			avahi_strerror(avahi_client_errno(avahi_entry_group_get_client(g))));
		break;
	case AVAHI_ENTRY_GROUP_UNCOMMITED:
	case AVAHI_ENTRY_GROUP_REGISTERING:
		break;
	}
}

static void mdns_client_apply_publish(struct mdns *m)
{
	int err = 0;

	if (m->client == NULL || avahi_client_get_state(m->client) != AVAHI_CLIENT_S_RUNNING)
		return;
	if (!m->want_publish) {
		if (m->group != NULL)
			avahi_entry_group_reset(m->group);
		return;
	}
	if (m->group == NULL) {
		m->group = avahi_entry_group_new(m->client, mdns_client_group_cb, m);
		if (m->group == NULL) {
			pks_log(&m->log, PKS_LOG_WARN, "mdns: cannot create an entry group: %s",
				avahi_strerror(avahi_client_errno(m->client)));
			return;
		}
	}
	avahi_entry_group_reset(m->group);
	for (int i = 0; i < MDNS_RENAME_TRIES; i++) {
		err = avahi_entry_group_add_service_strlst(m->group, AVAHI_IF_UNSPEC, mdns_proto(m),
							   0, m->name, MDNS_SERVICE_TYPE, NULL,
							   NULL, m->port, m->txt);
		if (err != AVAHI_ERR_COLLISION || mdns_rename(m) != PKS_OK)
			break;
	}
	if (err == 0)
		err = avahi_entry_group_commit(m->group);
	if (err != 0)
		pks_log(&m->log, PKS_LOG_WARN, "mdns: cannot publish: %s", avahi_strerror(err));
}

static void mdns_client_resolve_cb(AvahiServiceResolver *r, AvahiIfIndex interface,
				   AvahiProtocol protocol, AvahiResolverEvent event,
				   const char *name, const char *type, const char *domain,
				   const char *host_name, const AvahiAddress *a, uint16_t port,
				   AvahiStringList *txt, AvahiLookupResultFlags flags,
				   void *userdata)
{
	struct mdns_entry *e = userdata;

	AvahiStringList *wire_order;

	switch (event) {
	case AVAHI_RESOLVER_FOUND:
		/* avahi-client hands the strings over in reverse order; put them
		   back as they were on the wire (and as avahi-core gives them). */
		wire_order = avahi_string_list_reverse(avahi_string_list_copy(txt));
		if (wire_order == NULL && txt != NULL) {
			pks_log(&e->m->log, PKS_LOG_ERROR, "mdns: out of memory reading a TXT");
			break;
		}
		mdns_entry_resolved(e, a, port, wire_order);
		avahi_string_list_free(wire_order);
		break;
	case AVAHI_RESOLVER_FAILURE:
		mdns_entry_unresolvable(e);
		break;
	}
}

static void mdns_client_browse_cb(AvahiServiceBrowser *b, AvahiIfIndex interface,
				  AvahiProtocol protocol, AvahiBrowserEvent event, const char *name,
				  const char *type, const char *domain,
				  AvahiLookupResultFlags flags, void *userdata)
{
	struct mdns *m = userdata;
	struct mdns_entry *e;

	switch (event) {
	case AVAHI_BROWSER_NEW:
		e = mdns_entry_new(m, name, interface, protocol, flags);
		if (e == NULL)
			break;
		e->resolver =
		    avahi_service_resolver_new(m->client, interface, protocol, name, type, domain,
					       protocol, 0, mdns_client_resolve_cb, e);
		if (e->resolver == NULL) {
			pks_log(&m->log, PKS_LOG_WARN, "mdns: cannot resolve: %s",
				avahi_strerror(avahi_client_errno(m->client)));
			mdns_entry_drop(m, e, false);
		}
		break;
	case AVAHI_BROWSER_REMOVE:
		mdns_entry_remove(m, name, interface, protocol);
		break;
	case AVAHI_BROWSER_FAILURE:
		/* The client's own failure (daemon gone) follows and restarts
		   everything; otherwise browsing resumes at the next start. */
		pks_log(&m->log, PKS_LOG_WARN, "mdns: browsing failed: %s",
			avahi_strerror(avahi_client_errno(m->client)));
		break;
	case AVAHI_BROWSER_ALL_FOR_NOW:
	case AVAHI_BROWSER_CACHE_EXHAUSTED:
		break;
	}
}

static void mdns_client_apply_browse(struct mdns *m)
{
	if (m->client == NULL || avahi_client_get_state(m->client) != AVAHI_CLIENT_S_RUNNING)
		return;
	if (!m->want_browse) {
		if (m->browser != NULL)
			avahi_service_browser_free(m->browser);
		m->browser = NULL;
		return;
	}
	if (m->browser != NULL)
		return;
	m->browser =
	    avahi_service_browser_new(m->client, AVAHI_IF_UNSPEC, mdns_proto(m), MDNS_SERVICE_TYPE,
				      NULL, 0, mdns_client_browse_cb, m);
	if (m->browser == NULL)
		pks_log(&m->log, PKS_LOG_WARN, "mdns: cannot browse: %s",
			avahi_strerror(avahi_client_errno(m->client)));
}

/* Frees the client and what hangs off it; tracked instances are dropped
   (reported lost when report is set). */
static void mdns_client_stop(struct mdns *m, bool report)
{
	/* Resolvers belong to the client: free them before it. */
	for (struct mdns_entry *e = m->entries; e != NULL; e = e->next) {
		if (e->resolver != NULL)
			avahi_service_resolver_free(e->resolver);
		e->resolver = NULL;
	}
	if (m->browser != NULL)
		avahi_service_browser_free(m->browser);
	if (m->group != NULL)
		avahi_entry_group_free(m->group);
	if (m->client != NULL)
		avahi_client_free(m->client);
	m->browser = NULL;
	m->group = NULL;
	m->client = NULL;
	if (m->backend == MDNS_CLIENT)
		m->backend = MDNS_NONE;
	mdns_entries_drop_all(m, report);
}

static void mdns_client_running(struct mdns *m)
{
	if (m->action == MDNS_ACTION_GRACE) {
		uv_timer_stop(&m->timer);
		m->action = MDNS_ACTION_NONE;
	}
	m->backend = MDNS_CLIENT;
	pks_log(&m->log, PKS_LOG_INFO, "mdns: using the host's avahi-daemon");
	mdns_client_apply_publish(m);
	mdns_client_apply_browse(m);
}

static void mdns_client_cb(AvahiClient *c, AvahiClientState state, void *userdata)
{
	struct mdns *m = userdata;

	/* Called from inside avahi_client_new() before it returns. */
	m->client = c;
	if (m->probing)
		return;
	switch (state) {
	case AVAHI_CLIENT_S_RUNNING:
		mdns_client_running(m);
		break;
	case AVAHI_CLIENT_S_COLLISION:
	case AVAHI_CLIENT_S_REGISTERING:
		/* The daemon's host name changes: records are added again once
		   it runs. */
		if (m->group != NULL)
			avahi_entry_group_reset(m->group);
		break;
	case AVAHI_CLIENT_FAILURE:
		pks_log(&m->log, PKS_LOG_WARN, "mdns: avahi-daemon connection failed: %s",
			avahi_strerror(avahi_client_errno(c)));
		mdns_schedule(m, MDNS_ACTION_CLIENT_RESTART, 0);
		break;
	case AVAHI_CLIENT_CONNECTING:
		pks_log(&m->log, PKS_LOG_INFO, "mdns: waiting for avahi-daemon");
		break;
	}
}

/* Connects to the daemon. Without wait it fails at once when no daemon
   answers; with wait it stays in CONNECTING until one appears. */
static int mdns_client_start(struct mdns *m, bool wait, int *avahi_err)
{
	AvahiClient *c;
	int err = 0;

	c = avahi_client_new(avahi_uv_poll(m->poll), wait ? AVAHI_CLIENT_NO_FAIL : 0,
			     mdns_client_cb, m, &err);
	if (c == NULL) {
		m->client = NULL;
		*avahi_err = err;
		return PKS_ERR_IO;
	}
	m->client = c;
	if (m->backend != MDNS_CLIENT && avahi_client_get_state(c) == AVAHI_CLIENT_S_RUNNING)
		mdns_client_running(m);
	return PKS_OK;
}

/*
 * Asks whether a daemon answers on the system bus without using it: returns
 * true and its host's FQDN in *host (malloc'd, may stay NULL) when it does.
 */
static bool mdns_daemon_probe(struct mdns *m, char **host)
{
	AvahiClient *c;
	const char *fqdn;
	int err = 0;

	m->probing = true;
	c = avahi_client_new(avahi_uv_poll(m->poll), 0, mdns_client_cb, m, &err);
	m->probing = false;
	m->client = NULL;
	if (c == NULL)
		return false;
	fqdn = avahi_client_get_host_name_fqdn(c);
	if (host != NULL && fqdn != NULL)
		*host = strdup(fqdn);
	avahi_client_free(c);
	return true;
}

/* ---- avahi-core backend ------------------------------------------------ */

static void mdns_core_apply_publish(struct mdns *m);

static void mdns_core_group_cb(AvahiServer *s, AvahiSEntryGroup *g, AvahiEntryGroupState state,
			       void *userdata)
{
	struct mdns *m = userdata;

	switch (state) {
	case AVAHI_ENTRY_GROUP_ESTABLISHED:
		mdns_published(m);
		break;
	case AVAHI_ENTRY_GROUP_COLLISION:
		if (mdns_rename(m) == PKS_OK)
			mdns_core_apply_publish(m);
		break;
	case AVAHI_ENTRY_GROUP_FAILURE:
		pks_log(&m->log, PKS_LOG_WARN, "mdns: publishing failed: %s",
			avahi_strerror(m->core->avahi_server_errno(s)));
		break;
	case AVAHI_ENTRY_GROUP_UNCOMMITED:
	case AVAHI_ENTRY_GROUP_REGISTERING:
		break;
	}
}

static void mdns_core_apply_publish(struct mdns *m)
{
	int err = 0;

	if (m->server == NULL || m->core->avahi_server_get_state(m->server) != AVAHI_SERVER_RUNNING)
		return;
	if (!m->want_publish) {
		if (m->sgroup != NULL)
			m->core->avahi_s_entry_group_reset(m->sgroup);
		return;
	}
	if (m->sgroup == NULL) {
		m->sgroup = m->core->avahi_s_entry_group_new(m->server, mdns_core_group_cb, m);
		if (m->sgroup == NULL) {
			pks_log(&m->log, PKS_LOG_WARN, "mdns: cannot create an entry group: %s",
				avahi_strerror(m->core->avahi_server_errno(m->server)));
			return;
		}
	}
	m->core->avahi_s_entry_group_reset(m->sgroup);
	for (int i = 0; i < MDNS_RENAME_TRIES; i++) {
		err = m->core->avahi_server_add_service_strlst(
		    m->server, m->sgroup, AVAHI_IF_UNSPEC, mdns_proto(m), 0, m->name,
		    MDNS_SERVICE_TYPE, NULL, m->daemon_host, m->port, m->txt);
		if (err != AVAHI_ERR_COLLISION || mdns_rename(m) != PKS_OK)
			break;
	}
	if (err == 0)
		err = m->core->avahi_s_entry_group_commit(m->sgroup);
	if (err != 0)
		pks_log(&m->log, PKS_LOG_WARN, "mdns: cannot publish: %s", avahi_strerror(err));
}

static void mdns_core_resolve_cb(AvahiSServiceResolver *r, AvahiIfIndex interface,
				 AvahiProtocol protocol, AvahiResolverEvent event, const char *name,
				 const char *type, const char *domain, const char *host_name,
				 const AvahiAddress *a, uint16_t port, AvahiStringList *txt,
				 AvahiLookupResultFlags flags, void *userdata)
{
	struct mdns_entry *e = userdata;

	switch (event) {
	case AVAHI_RESOLVER_FOUND:
		mdns_entry_resolved(e, a, port, txt);
		break;
	case AVAHI_RESOLVER_FAILURE:
		mdns_entry_unresolvable(e);
		break;
	}
}

static void mdns_core_browse_cb(AvahiSServiceBrowser *b, AvahiIfIndex interface,
				AvahiProtocol protocol, AvahiBrowserEvent event, const char *name,
				const char *type, const char *domain, AvahiLookupResultFlags flags,
				void *userdata)
{
	struct mdns *m = userdata;
	struct mdns_entry *e;

	switch (event) {
	case AVAHI_BROWSER_NEW:
		e = mdns_entry_new(m, name, interface, protocol, flags);
		if (e == NULL)
			break;
		e->sresolver = m->core->avahi_s_service_resolver_new(m->server, interface, protocol,
								     name, type, domain, protocol,
								     0, mdns_core_resolve_cb, e);
		if (e->sresolver == NULL) {
			pks_log(&m->log, PKS_LOG_WARN, "mdns: cannot resolve: %s",
				avahi_strerror(m->core->avahi_server_errno(m->server)));
			mdns_entry_drop(m, e, false);
		}
		break;
	case AVAHI_BROWSER_REMOVE:
		mdns_entry_remove(m, name, interface, protocol);
		break;
	case AVAHI_BROWSER_FAILURE:
		pks_log(&m->log, PKS_LOG_WARN, "mdns: browsing failed: %s",
			avahi_strerror(m->core->avahi_server_errno(m->server)));
		break;
	case AVAHI_BROWSER_ALL_FOR_NOW:
	case AVAHI_BROWSER_CACHE_EXHAUSTED:
		break;
	}
}

static void mdns_core_apply_browse(struct mdns *m)
{
	if (m->server == NULL || m->core->avahi_server_get_state(m->server) != AVAHI_SERVER_RUNNING)
		return;
	if (!m->want_browse) {
		if (m->sbrowser != NULL)
			m->core->avahi_s_service_browser_free(m->sbrowser);
		m->sbrowser = NULL;
		return;
	}
	if (m->sbrowser != NULL)
		return;
	m->sbrowser = m->core->avahi_s_service_browser_new(m->server, AVAHI_IF_UNSPEC,
							   mdns_proto(m), MDNS_SERVICE_TYPE, NULL,
							   0, mdns_core_browse_cb, m);
	if (m->sbrowser == NULL)
		pks_log(&m->log, PKS_LOG_WARN, "mdns: cannot browse: %s",
			avahi_strerror(m->core->avahi_server_errno(m->server)));
}

static void mdns_core_stop(struct mdns *m, bool report)
{
	for (struct mdns_entry *e = m->entries; e != NULL; e = e->next) {
		if (e->sresolver != NULL)
			m->core->avahi_s_service_resolver_free(e->sresolver);
		e->sresolver = NULL;
	}
	if (m->sbrowser != NULL)
		m->core->avahi_s_service_browser_free(m->sbrowser);
	if (m->sgroup != NULL)
		m->core->avahi_s_entry_group_free(m->sgroup);
	if (m->server != NULL)
		m->core->avahi_server_free(m->server);
	m->sbrowser = NULL;
	m->sgroup = NULL;
	m->server = NULL;
	if (m->backend == MDNS_CORE)
		m->backend = MDNS_NONE;
	free(m->daemon_host);
	m->daemon_host = NULL;
	mdns_entries_drop_all(m, report);
}

static void mdns_core_cb(AvahiServer *s, AvahiServerState state, void *userdata)
{
	struct mdns *m = userdata;
	char *alt;

	/* Called from inside m->core->avahi_server_new() before it returns. */
	m->server = s;
	switch (state) {
	case AVAHI_SERVER_RUNNING:
		mdns_core_apply_publish(m);
		mdns_core_apply_browse(m);
		break;
	case AVAHI_SERVER_COLLISION:
		alt = avahi_alternative_host_name(m->core->avahi_server_get_host_name(s));
		pks_log(&m->log, PKS_LOG_INFO, "mdns: host name collision, renaming");
		if (m->sgroup != NULL)
			m->core->avahi_s_entry_group_reset(m->sgroup);
		if (alt != NULL)
			m->core->avahi_server_set_host_name(s, alt);
		avahi_free(alt);
		break;
	case AVAHI_SERVER_REGISTERING:
		if (m->sgroup != NULL)
			m->core->avahi_s_entry_group_reset(m->sgroup);
		break;
	case AVAHI_SERVER_FAILURE:
		pks_log(&m->log, PKS_LOG_WARN, "mdns: embedded mDNS stack failed: %s",
			avahi_strerror(m->core->avahi_server_errno(s)));
		mdns_schedule(m, MDNS_ACTION_CORE_RESTART, MDNS_CORE_RESTART_MS);
		break;
	case AVAHI_SERVER_INVALID:
		break;
	}
}

/*
 * avahi-core logs through one process-wide function without a context
 * pointer; its lines go to the logger of the last embedded stack started, at
 * debug level since they may name hosts and instances.
 */
static struct pks_logger mdns_core_log;

static void mdns_core_log_fn(AvahiLogLevel level, const char *txt)
{
	pks_log(&mdns_core_log, PKS_LOG_DEBUG, "mdns: avahi-core: %s", txt);
}

/*
 * Starts the embedded stack. daemon_host (taken) is the FQDN of a daemon on
 * this host, or NULL when there is none: then the stack publishes its own
 * host name and addresses.
 */
static int mdns_core_start(struct mdns *m, char *daemon_host)
{
	AvahiServerConfig cfg;
	AvahiServer *s;
	char host[32];
	const char *why = "unavailable";
	int err = 0;

	if (m->core == NULL)
		m->core = avahi_core_dl_get(&why);
	if (m->core == NULL) {
		pks_log(&m->log, PKS_LOG_ERROR, "mdns: embedded mDNS stack: %s", why);
		free(daemon_host);
		return PKS_ERR_UNSUPPORTED;
	}
	m->core->avahi_server_config_init(&cfg);
	snprintf(host, sizeof(host), "pksync-%08x", (unsigned)randombytes_random());
	cfg.host_name = avahi_strdup(host);
	cfg.use_ipv4 = 1;
	cfg.use_ipv6 = m->opts.ipv4_only ? 0 : 1;
	cfg.publish_hinfo = 0;
	cfg.publish_workstation = 0;
	cfg.publish_domain = 0;
	cfg.publish_addresses = daemon_host == NULL ? 1 : 0;
	cfg.enable_wide_area = 0;
	cfg.disallow_other_stacks = 0;
	cfg.enable_reflector = 0;
	/* Loopback is no LAN: nothing to find there but ourselves. */
	cfg.deny_interfaces = avahi_string_list_add(NULL, "lo");
	m->core->avahi_set_log_function(mdns_core_log_fn);
	if (m->log.fn != NULL)
		mdns_core_log = m->log;
	m->daemon_host = daemon_host;
	m->backend = MDNS_CORE;
	s = m->core->avahi_server_new(avahi_uv_poll(m->poll), &cfg, mdns_core_cb, m, &err);
	m->core->avahi_server_config_free(&cfg);
	if (s == NULL) {
		pks_log(&m->log, PKS_LOG_ERROR, "mdns: embedded mDNS stack cannot start: %s",
			avahi_strerror(err));
		m->server = NULL;
		m->backend = MDNS_NONE;
		free(m->daemon_host);
		m->daemon_host = NULL;
		return PKS_ERR_IO;
	}
	m->server = s;
	pks_log(&m->log, PKS_LOG_INFO, "mdns: using the embedded mDNS stack (%s)",
		daemon_host != NULL ? "beside a daemon" : "own host name");
	return PKS_OK;
}

/* ---- backend choice and restarts --------------------------------------- */

static void mdns_timer_cb(uv_timer_t *t);

static void mdns_schedule(struct mdns *m, enum mdns_action action, uint64_t ms)
{
	m->action = action;
	uv_timer_start(&m->timer, mdns_timer_cb, ms, 0);
}

/* The automatic choice found no daemon: embedded stack, and look for the
   daemon again later. */
static void mdns_fall_back_to_core(struct mdns *m)
{
	int avahi_err = 0;

	mdns_client_stop(m, true);
	if (mdns_core_start(m, NULL) != PKS_OK) {
		/* No embedded stack either: wait for a daemon to appear. */
		if (mdns_client_start(m, true, &avahi_err) != PKS_OK)
			mdns_schedule(m, MDNS_ACTION_CORE_RESTART, MDNS_CORE_RESTART_MS);
		return;
	}
	mdns_schedule(m, MDNS_ACTION_RETRY_DAEMON, MDNS_DAEMON_RETRY_MS);
}

static void mdns_timer_cb(uv_timer_t *t)
{
	struct mdns *m = t->data;
	enum mdns_action action = m->action;
	int avahi_err = 0;
	char *host = NULL;

	m->action = MDNS_ACTION_NONE;
	switch (action) {
	case MDNS_ACTION_NONE:
		break;
	case MDNS_ACTION_CLIENT_RESTART:
		mdns_client_stop(m, true);
		if (mdns_client_start(m, true, &avahi_err) != PKS_OK) {
			/* Not even a system bus. */
			if (m->opts.backend == MDNS_BACKEND_AUTO)
				mdns_fall_back_to_core(m);
			else
				mdns_schedule(m, MDNS_ACTION_CLIENT_RESTART, MDNS_DAEMON_GRACE_MS);
			break;
		}
		if (m->opts.backend == MDNS_BACKEND_AUTO && m->backend != MDNS_CLIENT)
			mdns_schedule(m, MDNS_ACTION_GRACE, MDNS_DAEMON_GRACE_MS);
		break;
	case MDNS_ACTION_GRACE:
		if (m->backend == MDNS_CLIENT)
			break;
		pks_log(&m->log, PKS_LOG_INFO, "mdns: avahi-daemon did not come back");
		mdns_fall_back_to_core(m);
		break;
	case MDNS_ACTION_RETRY_DAEMON:
		if (!mdns_daemon_probe(m, NULL)) {
			mdns_schedule(m, MDNS_ACTION_RETRY_DAEMON, MDNS_DAEMON_RETRY_MS);
			break;
		}
		pks_log(&m->log, PKS_LOG_INFO, "mdns: avahi-daemon appeared, moving to it");
		mdns_core_stop(m, true);
		if (mdns_client_start(m, false, &avahi_err) != PKS_OK)
			mdns_fall_back_to_core(m);
		break;
	case MDNS_ACTION_CORE_RESTART:
		mdns_core_stop(m, true);
		if (m->opts.backend == MDNS_BACKEND_CORE) {
			if (!mdns_daemon_probe(m, &host))
				host = NULL;
			if (mdns_core_start(m, host) != PKS_OK)
				mdns_schedule(m, MDNS_ACTION_CORE_RESTART, MDNS_CORE_RESTART_MS);
		} else {
			mdns_fall_back_to_core(m);
		}
		break;
	}
}

/* ---- public API -------------------------------------------------------- */

int mdns_new_opts(uv_loop_t *loop, const struct pks_logger *log, const struct mdns_cb *cb,
		  void *user, const struct mdns_opts *opts, struct mdns **out)
{
	struct mdns *m = NULL;
	char *host = NULL;
	int avahi_err = 0;
	int r = PKS_ERR_INTERNAL;

	if (loop == NULL || cb == NULL || out == NULL) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	if (sodium_init() < 0)
		goto out;
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	m->loop = loop;
	if (log != NULL)
		m->log = *log;
	m->cb = *cb;
	m->user = user;
	if (opts != NULL)
		m->opts = *opts;
	if ((r = avahi_uv_new(loop, &m->poll)) != PKS_OK)
		goto out;
	uv_timer_init(loop, &m->timer);
	m->timer.data = m;

	switch (m->opts.backend) {
	case MDNS_BACKEND_AUTO:
		if (mdns_client_start(m, false, &avahi_err) == PKS_OK) {
			r = PKS_OK;
			break;
		}
		pks_log(&m->log, PKS_LOG_INFO, "mdns: no avahi-daemon (%s)",
			avahi_strerror(avahi_err));
		r = mdns_core_start(m, NULL);
		if (r == PKS_OK)
			mdns_schedule(m, MDNS_ACTION_RETRY_DAEMON, MDNS_DAEMON_RETRY_MS);
		else if (mdns_client_start(m, true, &avahi_err) == PKS_OK)
			r = PKS_OK; /* no embedded stack: wait for a daemon */
		break;
	case MDNS_BACKEND_CLIENT:
		r = mdns_client_start(m, true, &avahi_err);
		if (r != PKS_OK)
			pks_log(&m->log, PKS_LOG_ERROR, "mdns: cannot reach avahi-daemon: %s",
				avahi_strerror(avahi_err));
		break;
	case MDNS_BACKEND_CORE:
		/* Beside a daemon publish no addresses (it owns the host name). */
		if (!mdns_daemon_probe(m, &host))
			host = NULL;
		r = mdns_core_start(m, host);
		host = NULL;
		break;
	default:
		r = PKS_ERR_INVALID;
		break;
	}
	if (r != PKS_OK)
		goto out;
	*out = m;
	m = NULL;
out:
	free(host);
	mdns_free(m);
	return r;
}

int mdns_new(uv_loop_t *loop, const struct pks_logger *log, const struct mdns_cb *cb, void *user,
	     struct mdns **out)
{
	return mdns_new_opts(loop, log, cb, user, NULL, out);
}

static void mdns_closed(uv_handle_t *h)
{
	free(h->data);
}

void mdns_free(struct mdns *m)
{
	if (m == NULL)
		return;
	mdns_client_stop(m, false);
	mdns_core_stop(m, false);
	avahi_uv_free(m->poll);
	m->poll = NULL;
	free(m->name);
	avahi_string_list_free(m->txt);
	if (m->timer.loop != NULL) {
		uv_close((uv_handle_t *)&m->timer, mdns_closed);
		return;
	}
	free(m);
}

static void mdns_apply(struct mdns *m)
{
	switch (m->backend) {
	case MDNS_CLIENT:
		mdns_client_apply_publish(m);
		mdns_client_apply_browse(m);
		break;
	case MDNS_CORE:
		mdns_core_apply_publish(m);
		mdns_core_apply_browse(m);
		break;
	case MDNS_NONE:
		break;
	}
}

int mdns_publish(struct mdns *m, const char *instance, uint16_t port, const uint8_t *txt,
		 size_t txt_len)
{
	static const uint8_t empty_txt[1] = {0};
	struct mdns_txt parsed;
	AvahiStringList *list = NULL;
	char *name = NULL;
	size_t len;
	int r = PKS_ERR_INTERNAL;

	if (m == NULL || instance == NULL || port == 0 || (txt == NULL && txt_len != 0)) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	len = strlen(instance);
	if (len == 0 || len > MDNS_INSTANCE_MAX) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	if (txt_len > MDNS_TXT_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	if (txt == NULL || txt_len == 0) {
		txt = empty_txt;
		txt_len = sizeof(empty_txt);
	}
	if (mdns_txt_parse(txt, txt_len, &parsed) != PKS_OK) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	/* The lone empty string is "no keys": an empty Avahi list. */
	if (parsed.n > 0 && avahi_string_list_parse(txt, txt_len, &list) != 0) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	name = strdup(instance);
	if (name == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	free(m->name);
	m->name = name;
	name = NULL;
	avahi_string_list_free(m->txt);
	m->txt = list;
	list = NULL;
	m->port = port;
	m->want_publish = true;
	mdns_apply(m);
	r = PKS_OK;
out:
	free(name);
	avahi_string_list_free(list);
	return r;
}

void mdns_unpublish(struct mdns *m)
{
	if (m == NULL || !m->want_publish)
		return;
	m->want_publish = false;
	mdns_apply(m);
}

int mdns_browse(struct mdns *m, bool on)
{
	if (m == NULL)
		return PKS_ERR_INVALID;
	if (m->want_browse == on)
		return PKS_OK;
	m->want_browse = on;
	if (!on) {
		/* Resolvers first, then the browser (via apply). */
		mdns_entries_drop_all(m, false);
	}
	mdns_apply(m);
	return PKS_OK;
}

const char *mdns_backend(const struct mdns *m)
{
	if (m == NULL)
		return "none";
	switch (m->backend) {
	case MDNS_CLIENT:
		return "avahi-client";
	case MDNS_CORE:
		return "avahi-core";
	case MDNS_NONE:
		break;
	}
	return "none";
}
