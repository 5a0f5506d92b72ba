/*
 * AvahiPoll over libuv. See avahi-uv.h for the ownership rules.
 */
#include "transport/avahi-uv.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/time.h>

#include "common/err.h"

struct avahi_uv_fd;

struct AvahiWatch {
	struct avahi_uv_fd *fde;
	AvahiWatchEvent events;
	AvahiWatchEvent revents; /* valid during dispatch only */
	AvahiWatchCallback callback;
	void *userdata;
	bool dead; /* freed during a dispatch, unlinked afterwards */
	struct AvahiWatch *next;
};

/* One uv_poll_t shared by every watch on one descriptor. */
struct avahi_uv_fd {
	struct avahi_uv *owner; /* NULL once closing */
	uv_poll_t poll;
	int fd;
	int uv_events; /* what the uv_poll_t currently polls for; 0 = stopped */
	unsigned dispatching;
	struct AvahiWatch *watches;
	struct avahi_uv_fd *next;
};

struct AvahiTimeout {
	struct avahi_uv *owner; /* NULL once closing */
	uv_timer_t timer;
	AvahiTimeoutCallback callback;
	void *userdata;
	struct AvahiTimeout *next;
};

struct avahi_uv {
	AvahiPoll api; /* first: the callbacks get api->userdata anyway */
	uv_loop_t *loop;
	struct avahi_uv_fd *fds;
	struct AvahiTimeout *timeouts;
	size_t live_watches;
	size_t live_timeouts;
};

static int avahi_uv_to_uv_events(AvahiWatchEvent ev)
{
	int r = 0;

	if (ev & AVAHI_WATCH_IN)
		r |= UV_READABLE;
	if (ev & AVAHI_WATCH_OUT)
		r |= UV_WRITABLE;
	if (ev & AVAHI_WATCH_HUP)
		r |= UV_DISCONNECT;
	return r;
}

static void avahi_uv_fd_closed(uv_handle_t *h)
{
	free(h->data);
}

/* Unlinks the descriptor entry from its owner and closes its poll handle. */
static void avahi_uv_fd_close(struct avahi_uv_fd *fde)
{
	struct avahi_uv_fd **pp;

	if (fde->owner == NULL)
		return;
	for (pp = &fde->owner->fds; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == fde) {
			*pp = fde->next;
			break;
		}
	}
	fde->owner = NULL;
	uv_close((uv_handle_t *)&fde->poll, avahi_uv_fd_closed);
}

static void avahi_uv_poll_cb(uv_poll_t *h, int status, int events);

/*
 * Drops dead watches, then polls for the union of the live ones' events, or
 * closes the descriptor entry when none is left. Never runs mid-dispatch.
 */
static void avahi_uv_fd_sync(struct avahi_uv_fd *fde)
{
	struct AvahiWatch **pp = &fde->watches;
	AvahiWatchEvent want = 0;
	int uv_want;

	if (fde->dispatching > 0 || fde->owner == NULL)
		return;
	while (*pp != NULL) {
		struct AvahiWatch *w = *pp;

		if (w->dead) {
			*pp = w->next;
			free(w);
			continue;
		}
		want |= w->events;
		pp = &w->next;
	}
	if (fde->watches == NULL) {
		avahi_uv_fd_close(fde);
		return;
	}
	uv_want = avahi_uv_to_uv_events(want);
	if (uv_want == fde->uv_events)
		return;
	if (uv_want == 0)
		uv_poll_stop(&fde->poll);
	else if (uv_poll_start(&fde->poll, uv_want, avahi_uv_poll_cb) != 0)
		uv_want = 0; /* cannot happen for a valid fd; the watch stays silent */
	fde->uv_events = uv_want;
}

static void avahi_uv_poll_cb(uv_poll_t *h, int status, int events)
{
	struct avahi_uv_fd *fde = h->data;
	AvahiWatchEvent happened = 0;

	if (status < 0)
		happened |= AVAHI_WATCH_ERR;
	if (events & UV_READABLE)
		happened |= AVAHI_WATCH_IN;
	if (events & UV_WRITABLE)
		happened |= AVAHI_WATCH_OUT;
	if (events & UV_DISCONNECT)
		happened |= AVAHI_WATCH_HUP;

	/* Watches added by a callback are prepended and so not visited now;
	   watches freed by a callback are only marked and skipped. */
	fde->dispatching++;
	for (struct AvahiWatch *w = fde->watches; w != NULL; w = w->next) {
		AvahiWatchEvent mine;

		if (w->dead)
			continue;
		mine = happened & (w->events | AVAHI_WATCH_ERR | AVAHI_WATCH_HUP);
		if (mine == 0 || (w->events == 0 && !(mine & AVAHI_WATCH_ERR)))
			continue;
		w->revents = mine;
		w->callback(w, fde->fd, mine, w->userdata);
		w->revents = 0;
	}
	fde->dispatching--;
	avahi_uv_fd_sync(fde);
}

static struct avahi_uv_fd *avahi_uv_fd_get(struct avahi_uv *p, int fd)
{
	struct avahi_uv_fd *fde;

	for (fde = p->fds; fde != NULL; fde = fde->next)
		if (fde->fd == fd)
			return fde;
	fde = calloc(1, sizeof(*fde));
	if (fde == NULL)
		return NULL;
	if (uv_poll_init(p->loop, &fde->poll, fd) != 0) {
		free(fde);
		return NULL;
	}
	fde->poll.data = fde;
	fde->owner = p;
	fde->fd = fd;
	fde->next = p->fds;
	p->fds = fde;
	return fde;
}

static AvahiWatch *avahi_uv_watch_new(const AvahiPoll *api, int fd, AvahiWatchEvent event,
				      AvahiWatchCallback callback, void *userdata)
{
	struct avahi_uv *p = api->userdata;
	struct avahi_uv_fd *fde;
	struct AvahiWatch *w;

	if (fd < 0 || callback == NULL)
		return NULL;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return NULL;
	fde = avahi_uv_fd_get(p, fd);
	if (fde == NULL) {
		free(w);
		return NULL;
	}
	w->fde = fde;
	w->events = event;
	w->callback = callback;
	w->userdata = userdata;
	w->next = fde->watches;
	fde->watches = w;
	p->live_watches++;
	avahi_uv_fd_sync(fde);
	return w;
}

static void avahi_uv_watch_update(AvahiWatch *w, AvahiWatchEvent event)
{
	w->events = event;
	avahi_uv_fd_sync(w->fde);
}

static AvahiWatchEvent avahi_uv_watch_get_events(AvahiWatch *w)
{
	return w->revents;
}

static void avahi_uv_watch_free(AvahiWatch *w)
{
	struct avahi_uv_fd *fde = w->fde;

	if (w->dead)
		return;
	w->dead = true;
	w->events = 0;
	if (fde->owner != NULL)
		fde->owner->live_watches--;
	avahi_uv_fd_sync(fde);
}

/* Milliseconds from now until the absolute gettimeofday() time tv, so that
   the timer never fires before Avahi considers it due. */
static uint64_t avahi_uv_delay_ms(const struct timeval *tv)
{
	struct timeval now;
	int64_t us;

	gettimeofday(&now, NULL);
	us = ((int64_t)tv->tv_sec - (int64_t)now.tv_sec) * 1000000 +
	     ((int64_t)tv->tv_usec - (int64_t)now.tv_usec);
	if (us <= 0)
		return 0;
	/* uv_now() counts whole milliseconds and may lag the real instant by
	   up to one, so one more keeps the timer from firing early. */
	return ((uint64_t)us + 999) / 1000 + 1;
}

static void avahi_uv_timer_cb(uv_timer_t *h)
{
	struct AvahiTimeout *t = h->data;

	/* One shot: Avahi re-arms with timeout_update() when it wants more. The
	   callback may free t; its memory lives until the close callback. */
	t->callback(t, t->userdata);
}

static void avahi_uv_timeout_arm(struct AvahiTimeout *t, const struct timeval *tv)
{
	uv_timer_stop(&t->timer);
	if (tv == NULL)
		return;
	/* uv_now() is cached per loop iteration; refresh it so the relative
	   delay is measured from the same instant as the wall clock. */
	uv_update_time(t->timer.loop);
	uv_timer_start(&t->timer, avahi_uv_timer_cb, avahi_uv_delay_ms(tv), 0);
}

static AvahiTimeout *avahi_uv_timeout_new(const AvahiPoll *api, const struct timeval *tv,
					  AvahiTimeoutCallback callback, void *userdata)
{
	struct avahi_uv *p = api->userdata;
	struct AvahiTimeout *t;

	if (callback == NULL)
		return NULL;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	if (uv_timer_init(p->loop, &t->timer) != 0) {
		free(t);
		return NULL;
	}
	t->timer.data = t;
	t->owner = p;
	t->callback = callback;
	t->userdata = userdata;
	t->next = p->timeouts;
	p->timeouts = t;
	p->live_timeouts++;
	avahi_uv_timeout_arm(t, tv);
	return t;
}

static void avahi_uv_timeout_update(AvahiTimeout *t, const struct timeval *tv)
{
	if (t->owner != NULL)
		avahi_uv_timeout_arm(t, tv);
}

static void avahi_uv_timer_closed(uv_handle_t *h)
{
	free(h->data);
}

static void avahi_uv_timeout_free(AvahiTimeout *t)
{
	struct AvahiTimeout **pp;

	if (t->owner == NULL)
		return;
	for (pp = &t->owner->timeouts; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	t->owner->live_timeouts--;
	t->owner = NULL;
	uv_close((uv_handle_t *)&t->timer, avahi_uv_timer_closed);
}

int avahi_uv_new(uv_loop_t *loop, struct avahi_uv **out)
{
	struct avahi_uv *p = NULL;
	int r = PKS_ERR_INTERNAL;

	if (loop == NULL || out == NULL) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	p->loop = loop;
	p->api.userdata = p;
	p->api.watch_new = avahi_uv_watch_new;
	p->api.watch_update = avahi_uv_watch_update;
	p->api.watch_get_events = avahi_uv_watch_get_events;
	p->api.watch_free = avahi_uv_watch_free;
	p->api.timeout_new = avahi_uv_timeout_new;
	p->api.timeout_update = avahi_uv_timeout_update;
	p->api.timeout_free = avahi_uv_timeout_free;
	*out = p;
	p = NULL;
	r = PKS_OK;
out:
	free(p);
	return r;
}

const AvahiPoll *avahi_uv_poll(struct avahi_uv *p)
{
	return &p->api;
}

size_t avahi_uv_live(const struct avahi_uv *p)
{
	return p->live_watches + p->live_timeouts;
}

void avahi_uv_free(struct avahi_uv *p)
{
	if (p == NULL)
		return;
	while (p->timeouts != NULL)
		avahi_uv_timeout_free(p->timeouts);
	/* Leftover watches are leaked to their poll entry: it closes now and
	   frees itself; the watch structs go with a final sweep. */
	while (p->fds != NULL) {
		struct avahi_uv_fd *fde = p->fds;

		while (fde->watches != NULL) {
			struct AvahiWatch *w = fde->watches;

			fde->watches = w->next;
			free(w);
		}
		avahi_uv_fd_close(fde);
	}
	free(p);
}
