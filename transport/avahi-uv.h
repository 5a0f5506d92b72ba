/*
 * An AvahiPoll (avahi-common/watch.h) driven by a libuv loop, so avahi-client
 * and the embedded avahi-core stack run on the agent's loop.
 *
 * Each AvahiTimeout is one uv_timer_t. Watches are grouped per file
 * descriptor: libuv allows only one uv_poll_t per descriptor, while D-Bus
 * (under avahi-client) watches one socket twice (readable, writable), so all
 * AvahiWatch objects on one fd share one uv_poll_t that polls for the union
 * of their events and dispatches to each.
 *
 * Freeing follows libuv: watch_free() and timeout_free() may be called from
 * any callback (their own included); the uv handles close asynchronously and
 * their memory is released in the close callbacks, which never touch the
 * struct avahi_uv. So the loop must run once more before uv_loop_close().
 */
#ifndef PKS_TRANSPORT_AVAHI_UV_H
#define PKS_TRANSPORT_AVAHI_UV_H

#include <stddef.h>

#include <avahi-common/watch.h>
#include <uv.h>

struct avahi_uv; /* opaque, owns the AvahiPoll vtable */

/* PKS_ERR_NOMEM on allocation failure; *out is written only on success. */
int avahi_uv_new(uv_loop_t *loop, struct avahi_uv **out);

/* The vtable to hand to avahi_client_new() / avahi_server_new(); borrowed,
   valid until avahi_uv_free(). */
const AvahiPoll *avahi_uv_poll(struct avahi_uv *p);

/* Watches plus timeouts created and not yet freed (tests use it to see that
   Avahi released everything). */
size_t avahi_uv_live(const struct avahi_uv *p);

/*
 * Frees the adapter. Every Avahi object using it (client, server) must have
 * been freed first; watches or timeouts still alive are closed here anyway so
 * no handle stays on the loop, but Avahi must not touch them afterwards.
 * NULL is fine.
 */
void avahi_uv_free(struct avahi_uv *p);

#endif
