#include "transport/sdbus-uv.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "common/err.h"

/*
 * The three handles live inside the struct; it is freed once all three close
 * callbacks have run (closing counts them down).
 */
struct sdbus_uv {
	uv_loop_t *loop;
	sd_bus *bus;
	uv_prepare_t prepare;
	uv_poll_t poll;
	uv_timer_t timer;
	int fd;
	int poll_events; /* what the uv_poll_t currently waits for; -1 = stopped */
	sdbus_uv_error_fn err_fn;
	void *user;
	bool failed;
	bool detached;
	bool processing;
	int closing; /* handles still to close */
};

int sdbus_uv_err(int negative_errno)
{
	int e = negative_errno < 0 ? -negative_errno : negative_errno;

	if (e == ECONNREFUSED || e == ENOTCONN || e == ECONNRESET || e == EPIPE)
		return e == ECONNREFUSED ? PKS_ERR_IO : PKS_ERR_CLOSED;
	return pks_err_from_errno(e);
}

int sdbus_uv_open(const char *address, sd_bus **out)
{
	sd_bus *bus = NULL;
	int r = PKS_ERR_INVALID;
	int e;

	if (out == NULL)
		goto out;
	if (address == NULL) {
		e = sd_bus_open_system(&bus);
		if (e < 0) {
			r = sdbus_uv_err(e);
			goto out;
		}
	} else {
		e = sd_bus_new(&bus);
		if (e >= 0)
			e = sd_bus_set_address(bus, address);
		if (e >= 0)
			e = sd_bus_set_bus_client(bus, 1);
		if (e >= 0)
			e = sd_bus_start(bus);
		if (e < 0) {
			r = sdbus_uv_err(e);
			goto out;
		}
	}
	*out = bus;
	bus = NULL;
	r = PKS_OK;
out:
	sd_bus_unref(bus);
	return r;
}

static void sdbus_uv_fail(struct sdbus_uv *s, int err)
{
	if (s->failed || s->detached)
		return;
	s->failed = true;
	if (s->poll_events >= 0) {
		uv_poll_stop(&s->poll);
		s->poll_events = -1;
	}
	uv_timer_stop(&s->timer);
	if (s->err_fn != NULL)
		s->err_fn(s->user, err);
}

/* Dispatches until sd-bus has nothing more; callbacks run in here. */
static void sdbus_uv_process(struct sdbus_uv *s)
{
	int e = 0;

	if (s->failed || s->detached || s->processing)
		return;
	s->processing = true;
	/* Bounded so one busy connection cannot starve the rest of the loop;
	   the zero timeout re-arms at once when work remains. */
	for (int i = 0; i < 256 && !s->detached; i++) {
		e = sd_bus_process(s->bus, NULL);
		if (e <= 0)
			break;
	}
	s->processing = false;
	if (e < 0 && !s->detached)
		sdbus_uv_fail(s, sdbus_uv_err(e));
}

static void sdbus_uv_on_poll(uv_poll_t *h, int status, int events)
{
	struct sdbus_uv *s = h->data;

	/* On an error of the fd too: sd_bus_process() finds out what it was. */
	(void)status;
	(void)events;
	sdbus_uv_process(s);
}

static void sdbus_uv_on_timer(uv_timer_t *h)
{
	sdbus_uv_process(h->data);
}

static uint64_t sdbus_uv_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Before the loop blocks: flush and dispatch, then re-arm poll and timer. */
static void sdbus_uv_on_prepare(uv_prepare_t *h)
{
	struct sdbus_uv *s = h->data;
	uint64_t until = UINT64_MAX;
	int ev, want = 0;

	sdbus_uv_process(s);
	if (s->failed || s->detached)
		return;
	ev = sd_bus_get_events(s->bus);
	if (ev < 0) {
		sdbus_uv_fail(s, sdbus_uv_err(ev));
		return;
	}
	if (ev & POLLIN)
		want |= UV_READABLE;
	if (ev & POLLOUT)
		want |= UV_WRITABLE;
	/* Always watch for a hang-up, even when nothing is to be read. */
	if (want == 0)
		want = UV_DISCONNECT;
	if (want != s->poll_events) {
		if (uv_poll_start(&s->poll, want, sdbus_uv_on_poll) != 0) {
			sdbus_uv_fail(s, PKS_ERR_IO);
			return;
		}
		s->poll_events = want;
	}
	if (sd_bus_get_timeout(s->bus, &until) < 0)
		until = UINT64_MAX;
	if (until == UINT64_MAX) {
		uv_timer_stop(&s->timer);
	} else {
		uint64_t now = sdbus_uv_now_usec();
		uint64_t ms = until <= now ? 0 : (until - now + 999) / 1000;
		uv_timer_start(&s->timer, sdbus_uv_on_timer, ms, 0);
	}
}

int sdbus_uv_attach(uv_loop_t *loop, sd_bus *bus, sdbus_uv_error_fn err_fn, void *user,
		    struct sdbus_uv **out)
{
	struct sdbus_uv *s = NULL;
	int r = PKS_ERR_INVALID;
	int fd;

	if (loop == NULL || bus == NULL || out == NULL)
		goto out;
	fd = sd_bus_get_fd(bus);
	if (fd < 0)
		goto out;
	r = PKS_ERR_NOMEM;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto out;
	s->loop = loop;
	s->fd = fd;
	s->poll_events = -1;
	s->err_fn = err_fn;
	s->user = user;
	r = PKS_ERR_IO;
	if (uv_poll_init(loop, &s->poll, fd) != 0)
		goto out;
	/* From here the handles exist and must be closed, not freed. */
	uv_prepare_init(loop, &s->prepare);
	uv_timer_init(loop, &s->timer);
	s->prepare.data = s;
	s->poll.data = s;
	s->timer.data = s;
	s->bus = sd_bus_ref(bus);
	uv_prepare_start(&s->prepare, sdbus_uv_on_prepare);
	/* Wake the loop once so the first prepare runs even if nothing else is due. */
	uv_timer_start(&s->timer, sdbus_uv_on_timer, 0, 0);
	*out = s;
	s = NULL;
	r = PKS_OK;
out:
	free(s);
	return r;
}

static void sdbus_uv_on_close(uv_handle_t *h)
{
	struct sdbus_uv *s = h->data;

	if (--s->closing == 0) {
		sd_bus_unref(s->bus);
		free(s);
	}
}

void sdbus_uv_detach(struct sdbus_uv *s)
{
	if (s == NULL || s->detached)
		return;
	s->detached = true;
	s->closing = 3;
	uv_close((uv_handle_t *)&s->prepare, sdbus_uv_on_close);
	uv_close((uv_handle_t *)&s->poll, sdbus_uv_on_close);
	uv_close((uv_handle_t *)&s->timer, sdbus_uv_on_close);
}

sd_bus *sdbus_uv_bus(const struct sdbus_uv *s)
{
	return s->bus;
}
