/*
 * The AvahiPoll adapter on a real libuv loop with pipes: watches fire and
 * report their events, two watches share one descriptor, updates take effect,
 * timeouts fire at their absolute time and can be re-armed or disabled, and
 * freeing from inside callbacks or while pending leaves nothing on the loop.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/err.h"
#include "tests/check.h"
#include "transport/avahi-uv.h"

struct fixture {
	uv_loop_t loop;
	struct avahi_uv *p;
	const AvahiPoll *api;
	int fds[2];
};

static void fixture_init(struct fixture *f)
{
	CHECK_OK(uv_loop_init(&f->loop));
	CHECK_OK(avahi_uv_new(&f->loop, &f->p));
	f->api = avahi_uv_poll(f->p);
	CHECK_OK(pipe(f->fds));
}

/* Frees the adapter, lets every close callback run and checks that the loop
   is left empty. */
static void fixture_done(struct fixture *f)
{
	CHECK_EQ(avahi_uv_live(f->p), 0);
	avahi_uv_free(f->p);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	CHECK_EQ(uv_loop_close(&f->loop), 0);
	close(f->fds[0]);
	close(f->fds[1]);
}

static bool *run_flag;

static void run_guard_cb(uv_timer_t *t)
{
	uv_stop(t->loop);
}

static void run_check_cb(uv_check_t *c)
{
	if (*run_flag)
		uv_stop(c->loop);
}

/* Timer callbacks run before the poll phase: stop before blocking in it. */
static void run_prepare_cb(uv_prepare_t *c)
{
	if (*run_flag)
		uv_stop(c->loop);
}

/* Runs the loop until *flag is set or ms pass; returns *flag. */
static bool run_until(uv_loop_t *loop, bool *flag, uint64_t ms)
{
	uv_timer_t guard;
	uv_check_t check;
	uv_prepare_t prepare;

	run_flag = flag;
	uv_timer_init(loop, &guard);
	uv_timer_start(&guard, run_guard_cb, ms, 0);
	uv_check_init(loop, &check);
	uv_check_start(&check, run_check_cb);
	uv_prepare_init(loop, &prepare);
	uv_prepare_start(&prepare, run_prepare_cb);
	if (!*flag)
		uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_close((uv_handle_t *)&check, NULL);
	uv_close((uv_handle_t *)&prepare, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return *flag;
}

static uint64_t now_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

static struct timeval in_ms(unsigned ms)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	tv.tv_usec += (long)(ms % 1000) * 1000;
	tv.tv_sec += ms / 1000 + tv.tv_usec / 1000000;
	tv.tv_usec %= 1000000;
	return tv;
}

struct watch_state {
	const AvahiPoll *api;
	int calls;
	int fd;
	AvahiWatchEvent event;
	AvahiWatchEvent got_events;
	bool drain;             /* read the pipe dry */
	bool free_self;         /* free the watch from its own callback */
	AvahiWatch *free_other; /* free this watch from the callback */
	bool done;
};

static void watch_cb(AvahiWatch *w, int fd, AvahiWatchEvent event, void *userdata)
{
	struct watch_state *s = userdata;
	char buf[64];

	s->calls++;
	s->fd = fd;
	s->event = event;
	s->got_events = s->api->watch_get_events(w);
	if (s->drain)
		while (read(fd, buf, sizeof(buf)) > 0)
			;
	if (s->free_other != NULL) {
		s->api->watch_free(s->free_other);
		s->free_other = NULL;
	}
	if (s->free_self)
		s->api->watch_free(w);
	s->done = true;
}

static void test_watch_readable(void)
{
	struct fixture f;
	struct watch_state s = {0};
	AvahiWatch *w;

	fixture_init(&f);
	s.api = f.api;
	s.drain = true;
	w = f.api->watch_new(f.api, f.fds[0], AVAHI_WATCH_IN, watch_cb, &s);
	CHECK(w != NULL);
	CHECK_EQ(avahi_uv_live(f.p), 1);
	/* Nothing to read yet: no call within 50 ms. */
	CHECK(!run_until(&f.loop, &s.done, 50));
	CHECK_EQ(s.calls, 0);
	CHECK_EQ(write(f.fds[1], "x", 1), 1);
	CHECK(run_until(&f.loop, &s.done, 2000));
	CHECK_EQ(s.calls, 1);
	CHECK_EQ(s.fd, f.fds[0]);
	CHECK(s.event & AVAHI_WATCH_IN);
	CHECK_EQ(s.got_events, s.event);
	/* Outside a callback no events are pending. */
	CHECK_EQ(f.api->watch_get_events(w), 0);
	/* Drained: level triggered, so no further calls. */
	s.done = false;
	CHECK(!run_until(&f.loop, &s.done, 50));
	CHECK_EQ(s.calls, 1);
	f.api->watch_free(w);
	fixture_done(&f);
}

static void test_watch_update(void)
{
	struct fixture f;
	struct watch_state s = {0};
	AvahiWatch *w;

	fixture_init(&f);
	s.api = f.api;
	/* The write end: asking for IN never fires, OUT fires at once. */
	w = f.api->watch_new(f.api, f.fds[1], AVAHI_WATCH_IN, watch_cb, &s);
	CHECK(w != NULL);
	CHECK(!run_until(&f.loop, &s.done, 50));
	f.api->watch_update(w, AVAHI_WATCH_OUT);
	CHECK(run_until(&f.loop, &s.done, 2000));
	CHECK(s.event & AVAHI_WATCH_OUT);
	/* Disabled: no more calls although the pipe stays writable. */
	f.api->watch_update(w, 0);
	s.done = false;
	s.calls = 0;
	CHECK(!run_until(&f.loop, &s.done, 50));
	CHECK_EQ(s.calls, 0);
	f.api->watch_free(w);
	fixture_done(&f);
}

static void test_watch_shared_fd(void)
{
	struct fixture f;
	struct watch_state a = {0}, b = {0};
	AvahiWatch *wa, *wb;
	int sv[2];

	fixture_init(&f);
	CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	a.api = b.api = f.api;
	a.drain = true;
	/* Two watches on one socket, as D-Bus does: one IN, one OUT. */
	wa = f.api->watch_new(f.api, sv[0], AVAHI_WATCH_IN, watch_cb, &a);
	wb = f.api->watch_new(f.api, sv[0], AVAHI_WATCH_OUT, watch_cb, &b);
	CHECK(wa != NULL && wb != NULL);
	CHECK(run_until(&f.loop, &b.done, 2000));
	CHECK_EQ(a.calls, 0);
	CHECK(b.event & AVAHI_WATCH_OUT);
	CHECK(!(b.event & AVAHI_WATCH_IN));
	f.api->watch_update(wb, 0);
	CHECK_EQ(write(sv[1], "y", 1), 1);
	CHECK(run_until(&f.loop, &a.done, 2000));
	CHECK(a.event & AVAHI_WATCH_IN);
	CHECK(!(a.event & AVAHI_WATCH_OUT));
	/* Freeing one leaves the other working. */
	f.api->watch_free(wb);
	a.done = false;
	CHECK_EQ(write(sv[1], "z", 1), 1);
	CHECK(run_until(&f.loop, &a.done, 2000));
	CHECK_EQ(a.calls, 2);
	f.api->watch_free(wa);
	fixture_done(&f);
	close(sv[0]);
	close(sv[1]);
}

static void test_watch_free_in_callback(void)
{
	struct fixture f;
	struct watch_state a = {0}, b = {0};
	AvahiWatch *wa, *wb;

	fixture_init(&f);
	a.api = b.api = f.api;
	CHECK_EQ(write(f.fds[1], "x", 1), 1);
	wa = f.api->watch_new(f.api, f.fds[0], AVAHI_WATCH_IN, watch_cb, &a);
	/* wb is newer, so it is dispatched first and frees wa (not yet called)
	   and then itself: neither may be called again. */
	wb = f.api->watch_new(f.api, f.fds[0], AVAHI_WATCH_IN, watch_cb, &b);
	CHECK(wa != NULL && wb != NULL);
	b.free_other = wa;
	b.free_self = true;
	CHECK(run_until(&f.loop, &b.done, 2000));
	CHECK_EQ(b.calls, 1);
	CHECK_EQ(a.calls, 0);
	CHECK_EQ(avahi_uv_live(f.p), 0);
	/* The pipe is still readable; nobody may be called. */
	b.done = false;
	CHECK(!run_until(&f.loop, &b.done, 50));
	CHECK_EQ(a.calls + b.calls, 1);
	/* A new watch on the same descriptor after the old entry closed. */
	a.drain = true;
	wa = f.api->watch_new(f.api, f.fds[0], AVAHI_WATCH_IN, watch_cb, &a);
	CHECK(wa != NULL);
	CHECK(run_until(&f.loop, &a.done, 2000));
	CHECK_EQ(a.calls, 1);
	f.api->watch_free(wa);
	fixture_done(&f);
}

struct timeout_state {
	const AvahiPoll *api;
	int calls;
	uint64_t at_us;
	unsigned rearm_ms; /* re-arm this once from the callback */
	bool free_self;
	bool done;
};

static void timeout_cb(AvahiTimeout *t, void *userdata)
{
	struct timeout_state *s = userdata;

	s->calls++;
	s->at_us = now_us();
	if (s->rearm_ms > 0) {
		struct timeval tv = in_ms(s->rearm_ms);

		s->rearm_ms = 0;
		s->api->timeout_update(t, &tv);
		return;
	}
	if (s->free_self)
		s->api->timeout_free(t);
	s->done = true;
}

static void test_timeout_fires(void)
{
	struct fixture f;
	struct timeout_state s = {0};
	struct timeval tv;
	AvahiTimeout *t;
	uint64_t start;

	fixture_init(&f);
	s.api = f.api;
	start = now_us();
	tv = in_ms(80);
	t = f.api->timeout_new(f.api, &tv, timeout_cb, &s);
	CHECK(t != NULL);
	CHECK(run_until(&f.loop, &s.done, 2000));
	CHECK_EQ(s.calls, 1);
	/* Never early against the wall clock Avahi uses. */
	CHECK(s.at_us >= (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec);
	CHECK(s.at_us - start < 1000000u);
	/* One shot: it stays quiet until updated. */
	s.done = false;
	CHECK(!run_until(&f.loop, &s.done, 120));
	CHECK_EQ(s.calls, 1);
	/* A time in the past fires at once. */
	tv = in_ms(0);
	tv.tv_sec -= 5;
	f.api->timeout_update(t, &tv);
	CHECK(run_until(&f.loop, &s.done, 2000));
	CHECK_EQ(s.calls, 2);
	f.api->timeout_free(t);
	fixture_done(&f);
}

static void test_timeout_update_and_disable(void)
{
	struct fixture f;
	struct timeout_state s = {0};
	struct timeval tv;
	AvahiTimeout *t;
	uint64_t start;

	fixture_init(&f);
	s.api = f.api;
	/* Created disabled, then armed; re-armed from its own callback. */
	t = f.api->timeout_new(f.api, NULL, timeout_cb, &s);
	CHECK(t != NULL);
	CHECK(!run_until(&f.loop, &s.done, 50));
	CHECK_EQ(s.calls, 0);
	start = now_us();
	s.rearm_ms = 60;
	tv = in_ms(20);
	f.api->timeout_update(t, &tv);
	CHECK(run_until(&f.loop, &s.done, 2000));
	CHECK_EQ(s.calls, 2);
	CHECK(s.at_us - start >= 80000u);
	/* Armed then disabled: never fires. */
	s.done = false;
	tv = in_ms(30);
	f.api->timeout_update(t, &tv);
	f.api->timeout_update(t, NULL);
	CHECK(!run_until(&f.loop, &s.done, 100));
	CHECK_EQ(s.calls, 2);
	f.api->timeout_free(t);
	fixture_done(&f);
}

static void test_timeout_free_pending(void)
{
	struct fixture f;
	struct timeout_state a = {0}, b = {0};
	struct timeval tv;
	AvahiTimeout *ta, *tb;

	fixture_init(&f);
	a.api = b.api = f.api;
	tv = in_ms(30);
	ta = f.api->timeout_new(f.api, &tv, timeout_cb, &a);
	b.free_self = true;
	tb = f.api->timeout_new(f.api, &tv, timeout_cb, &b);
	CHECK(ta != NULL && tb != NULL);
	CHECK_EQ(avahi_uv_live(f.p), 2);
	/* Freed while pending: never fires. tb frees itself when it fires. */
	f.api->timeout_free(ta);
	CHECK_EQ(avahi_uv_live(f.p), 1);
	CHECK(run_until(&f.loop, &b.done, 2000));
	CHECK_EQ(b.calls, 1);
	a.done = false;
	CHECK(!run_until(&f.loop, &a.done, 80));
	CHECK_EQ(a.calls, 0);
	fixture_done(&f);
}

/* The adapter freed with a watch and a timeout still alive (a caller bug it
   survives): the handles close and the loop ends empty. */
static void test_free_with_leftovers(void)
{
	struct fixture f;
	struct watch_state s = {0};
	struct timeout_state ts = {0};
	struct timeval tv = in_ms(10);

	fixture_init(&f);
	s.api = ts.api = f.api;
	CHECK(f.api->watch_new(f.api, f.fds[0], AVAHI_WATCH_IN, watch_cb, &s) != NULL);
	CHECK(f.api->timeout_new(f.api, &tv, timeout_cb, &ts) != NULL);
	CHECK_EQ(avahi_uv_live(f.p), 2);
	avahi_uv_free(f.p);
	CHECK_EQ(write(f.fds[1], "x", 1), 1);
	uv_run(&f.loop, UV_RUN_DEFAULT);
	CHECK_EQ(s.calls, 0);
	CHECK_EQ(ts.calls, 0);
	CHECK_EQ(uv_loop_close(&f.loop), 0);
	close(f.fds[0]);
	close(f.fds[1]);
}

static void test_bad_args(void)
{
	uv_loop_t loop;
	struct avahi_uv *p = (struct avahi_uv *)&loop;
	struct fixture f;
	struct watch_state s = {0};

	CHECK_EQ(avahi_uv_new(NULL, &p), PKS_ERR_INVALID);
	CHECK(p == (struct avahi_uv *)&loop);
	avahi_uv_free(NULL);
	fixture_init(&f);
	s.api = f.api;
	CHECK(f.api->watch_new(f.api, -1, AVAHI_WATCH_IN, watch_cb, &s) == NULL);
	CHECK(f.api->watch_new(f.api, f.fds[0], AVAHI_WATCH_IN, NULL, &s) == NULL);
	CHECK(f.api->timeout_new(f.api, NULL, NULL, &s) == NULL);
	CHECK_EQ(avahi_uv_live(f.p), 0);
	fixture_done(&f);
}

CHECK_MAIN({"/avahi-uv/watch-readable", test_watch_readable},
	   {"/avahi-uv/watch-update", test_watch_update},
	   {"/avahi-uv/watch-shared-fd", test_watch_shared_fd},
	   {"/avahi-uv/watch-free-in-callback", test_watch_free_in_callback},
	   {"/avahi-uv/timeout-fires", test_timeout_fires},
	   {"/avahi-uv/timeout-update-and-disable", test_timeout_update_and_disable},
	   {"/avahi-uv/timeout-free-pending", test_timeout_free_pending},
	   {"/avahi-uv/free-with-leftovers", test_free_with_leftovers},
	   {"/avahi-uv/bad-args", test_bad_args}, )
