/*
 * Drives an sd-bus connection from a libuv loop. Before each loop iteration
 * (a uv_prepare_t) the bus is processed until it has nothing left to do and
 * its fd events and timeout are read again: a uv_poll_t waits for the fd and
 * a uv_timer_t for the timeout, and either wakes the loop to process again.
 * So messages queued from anywhere (a callback, a libuv handler) go out on
 * the next iteration, and replies, signals and method calls are dispatched
 * on the loop thread; nothing ever blocks in here.
 *
 * Handles are closed asynchronously, libuv style: after sdbus_uv_detach()
 * the loop must run until the close callbacks fire before uv_loop_close().
 */
#ifndef PKS_TRANSPORT_SDBUS_UV_H
#define PKS_TRANSPORT_SDBUS_UV_H

#include <systemd/sd-bus.h>
#include <uv.h>

struct sdbus_uv; /* opaque */

/*
 * Called once when the connection fails (the daemon went away, the socket
 * broke: sd_bus_process() or the poll reported an error). err is a
 * PKS_ERR_* code. The attachment stops watching the bus; the owner should
 * sdbus_uv_detach() it (it may do so from inside the callback).
 */
typedef void (*sdbus_uv_error_fn)(void *user, int err);

/*
 * Opens a bus connection as a bus client: address NULL means the system bus
 * (sd_bus_open_system(), which honours DBUS_SYSTEM_BUS_ADDRESS), otherwise
 * a D-Bus address such as "unix:path=/run/x/bus". The connection is started
 * but the Hello exchange completes on the loop. *out gets one reference.
 * Errors: PKS_ERR_NOT_FOUND when the socket does not exist, PKS_ERR_IO
 * when it refuses (no daemon), PKS_ERR_PERM, PKS_ERR_INVALID for a bad
 * address, PKS_ERR_NOMEM.
 */
int sdbus_uv_open(const char *address, sd_bus **out);

/*
 * Starts driving bus on loop. Takes its own reference on bus (the caller
 * keeps its own). err_fn may be NULL. PKS_ERR_INVALID when the bus has no
 * single pollable fd, PKS_ERR_NOMEM, PKS_ERR_IO.
 */
int sdbus_uv_attach(uv_loop_t *loop, sd_bus *bus, sdbus_uv_error_fn err_fn, void *user,
		    struct sdbus_uv **out);

/*
 * Stops driving the bus: nothing more is read or written (messages still
 * queued are not flushed; a daemon cleans up after a closed connection),
 * handles close from the loop, and the reference taken by attach is
 * dropped once they have. No callback of this module
 * runs afterwards. NULL is fine; safe from inside any bus callback.
 */
void sdbus_uv_detach(struct sdbus_uv *s);

/* The attached bus (borrowed). */
sd_bus *sdbus_uv_bus(const struct sdbus_uv *s);

/* Maps a negative errno from sd-bus to a PKS_ERR_* code. */
int sdbus_uv_err(int negative_errno);

#endif
