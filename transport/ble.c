#include "transport/ble.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "common/err.h"
#include "transport/ble-adv.h"
#include "transport/ble-frag.h"
#include "transport/frame.h"
#include "transport/sdbus-uv.h"

#define BLUEZ "org.bluez"
#define IFACE_ADAPTER "org.bluez.Adapter1"
#define IFACE_DEVICE "org.bluez.Device1"
#define IFACE_CHAR "org.bluez.GattCharacteristic1"
#define IFACE_SERVICE "org.bluez.GattService1"
#define IFACE_ADV "org.bluez.LEAdvertisement1"
#define IFACE_ADV_MGR "org.bluez.LEAdvertisingManager1"
#define IFACE_GATT_MGR "org.bluez.GattManager1"
#define IFACE_OM "org.freedesktop.DBus.ObjectManager"
#define IFACE_PROPS "org.freedesktop.DBus.Properties"

#define APP_PATH "/org/pksync/ble"
#define SERVICE_PATH APP_PATH "/service0"
#define WRITE_PATH SERVICE_PATH "/char0"
#define NOTIFY_PATH SERVICE_PATH "/char1"
#define ADV_PATH_FMT "/org/pksync/adv%u"

#define BLE_PATH_MAX 128
#define BLE_RECV_BURST 64

/* A polled fd; freed (and the fd closed) from its close callback. */
struct ble_sock {
	uv_poll_t poll;
	int fd;
	int events; /* -1: not started */
	void (*fn)(void *ctx, int status, int events);
	void *ctx;
};

enum ble_link_stage {
	BLE_STAGE_CONNECT, /* Device1.Connect in flight */
	BLE_STAGE_RESOLVE, /* looking for (or waiting for) the characteristics */
	BLE_STAGE_NOTIFY,  /* AcquireNotify in flight */
	BLE_STAGE_WRITE,   /* AcquireWrite in flight */
	BLE_STAGE_OPENING, /* link handshake */
	BLE_STAGE_OPEN,
};

struct ble_link {
	struct ble *b;
	struct ble_link *next;
	bool central;
	enum ble_link_stage stage;
	struct ble_frag *f;
	uint8_t tag;
	unsigned mtu;
	char peer[40];
	char dev_path[BLE_PATH_MAX];
	char write_path[BLE_PATH_MAX];
	char notify_path[BLE_PATH_MAX];
	struct ble_sock *rx, *tx; /* central only */
	sd_bus_slot *call;        /* the D-Bus call in flight, cancelled on finish */
	uint8_t pending[BLE_FRAG_DGRAM_MAX];
	size_t pending_len;
	uv_timer_t timer;
	uint64_t connect_deadline;
	struct ble_link_cb cb;
	void *user;
	ble_connect_fn done;
	void *done_user;
	uint64_t bytes_in, bytes_out;
	bool want_drain;
	bool closing;
	bool finished;
};

struct ble_device {
	bool used;
	char path[BLE_PATH_MAX];
	char address[18];
	int16_t rssi;
	uint8_t svc[BLE_ADV_PAYLOAD_MAX];
	size_t svc_len;
	bool has_svc;
	uint64_t touched;
};

struct ble {
	uv_loop_t *loop;
	struct pks_logger log;
	struct ble_cb cb;
	void *user;
	sd_bus *bus;
	struct sdbus_uv *uv;
	sd_bus_slot *match_added, *match_removed, *match_props, *match_owner;
	sd_bus_slot *refresh_call;
	bool initial_reported;

	bool adapter;
	char adapter_path[64];

	/* advertising */
	bool want_adv;
	uint8_t adv_payload[BLE_ADV_PAYLOAD_MAX];
	size_t adv_len;
	unsigned adv_gen;
	sd_bus_slot *adv_vtable;
	bool adv_registered;
	char adv_path[48];

	/* scanning */
	bool want_scan;
	bool scanning;

	/* serving */
	bool want_serve;
	bool app_registered;
	sd_bus_slot *app_om, *app_svc, *app_write, *app_notify;
	struct ble_sock *per_write;  /* our end of the AcquireWrite socket */
	struct ble_sock *per_notify; /* our end of the AcquireNotify socket */
	unsigned per_mtu;
	bool per_notify_blocked;

	struct ble_link *links;
	struct ble_device devices[BLE_MAX_DEVICES];
	uint64_t device_clock;
	bool freeing;
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t ble_now(const struct ble *b)
{
	return uv_now(b->loop);
}

static void ble_random(void *buf, size_t n)
{
	uint8_t *p = buf;
	size_t got = 0;

	while (got < n) {
		ssize_t r = getrandom(p + got, n - got, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			/* No entropy source: fall back to something that still
			   differs between links (the tag is not a secret). */
			for (; got < n; got++)
				p[got] = (uint8_t)(rand() ^ (int)got);
			return;
		}
		got += (size_t)r;
	}
}

static int ble_error_of(const sd_bus_error *e)
{
	if (e == NULL || e->name == NULL)
		return PKS_ERR_IO;
	if (strcmp(e->name, "org.bluez.Error.DoesNotExist") == 0 ||
	    strcmp(e->name, "org.freedesktop.DBus.Error.UnknownObject") == 0 ||
	    strcmp(e->name, "org.freedesktop.DBus.Error.UnknownMethod") == 0 ||
	    strcmp(e->name, "org.freedesktop.DBus.Error.ServiceUnknown") == 0)
		return PKS_ERR_NOT_FOUND;
	if (strcmp(e->name, "org.bluez.Error.NotReady") == 0)
		return PKS_ERR_STATE;
	if (strcmp(e->name, "org.freedesktop.DBus.Error.NoReply") == 0 ||
	    strcmp(e->name, "org.freedesktop.DBus.Error.Timeout") == 0)
		return PKS_ERR_TIMEOUT;
	return PKS_ERR_IO;
}

static const char *ble_error_name(sd_bus_message *m)
{
	const sd_bus_error *e = sd_bus_message_get_error(m);
	return e != NULL && e->name != NULL ? e->name : "unknown error";
}

/* "AA:BB:CC:DD:EE:FF" only (upper or lower hex). */
static bool ble_valid_address(const char *a)
{
	if (a == NULL || strlen(a) != 17)
		return false;
	for (int i = 0; i < 17; i++) {
		char c = a[i];
		if (i % 3 == 2) {
			if (c != ':')
				return false;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			     (c >= 'A' && c <= 'F'))) {
			return false;
		}
	}
	return true;
}

/* The address from ".../dev_AA_BB_CC_DD_EE_FF"; false when the path is not a device. */
static bool ble_address_from_path(const char *path, char out[18])
{
	const char *p = strrchr(path, '/');

	if (p == NULL || strncmp(p + 1, "dev_", 4) != 0 || strlen(p + 5) != 17)
		return false;
	memcpy(out, p + 5, 17);
	out[17] = '\0';
	for (int i = 2; i < 17; i += 3)
		out[i] = ':';
	return ble_valid_address(out);
}

/* ---- sockets ---------------------------------------------------------- */

static void ble_sock_on_poll(uv_poll_t *h, int status, int events)
{
	struct ble_sock *s = h->data;

	s->fn(s->ctx, status, events);
}

static int ble_sock_new(uv_loop_t *loop, int fd, void (*fn)(void *, int, int), void *ctx,
			struct ble_sock **out)
{
	struct ble_sock *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return PKS_ERR_NOMEM;
	if (uv_poll_init(loop, &s->poll, fd) != 0) {
		free(s);
		return PKS_ERR_IO;
	}
	s->poll.data = s;
	s->fd = fd;
	s->events = -1;
	s->fn = fn;
	s->ctx = ctx;
	*out = s;
	return PKS_OK;
}

static void ble_sock_want(struct ble_sock *s, int events)
{
	if (s == NULL || s->events == events)
		return;
	if (uv_poll_start(&s->poll, events, ble_sock_on_poll) == 0)
		s->events = events;
}

static void ble_sock_on_close(uv_handle_t *h)
{
	struct ble_sock *s = h->data;

	close(s->fd);
	free(s);
}

static void ble_sock_close(struct ble_sock *s)
{
	if (s == NULL)
		return;
	uv_close((uv_handle_t *)&s->poll, ble_sock_on_close);
}

/* Takes a copy of an fd received in a message (the message owns its fd). */
static int ble_take_fd(int fd)
{
	int c = fcntl(fd, F_DUPFD_CLOEXEC, 3);

	if (c >= 0)
		(void)fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
	return c;
}

/* ---- links ------------------------------------------------------------ */

static void ble_link_pump(struct ble_link *l);

static void ble_link_on_timer_close(uv_handle_t *h)
{
	free(h->data);
}

static void ble_link_unlist(struct ble_link *l)
{
	struct ble_link **pp;

	for (pp = &l->b->links; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	l->next = NULL;
}

/*
 * Ends a link once: stops its I/O, cancels its D-Bus call, tells the user
 * (the connect callback if the link was never handed out, else on_close),
 * and frees it when its timer has closed.
 */
static void ble_link_finish(struct ble_link *l, int err)
{
	struct ble *b = l->b;

	if (l->finished)
		return;
	l->finished = true;
	ble_link_unlist(l);
	uv_timer_stop(&l->timer);
	l->call = sd_bus_slot_unref(l->call);
	ble_sock_close(l->rx);
	ble_sock_close(l->tx);
	l->rx = l->tx = NULL;
	if (l->central && l->dev_path[0] != '\0' && b->bus != NULL && !b->freeing)
		(void)sd_bus_call_method_async(b->bus, NULL, BLUEZ, l->dev_path, IFACE_DEVICE,
					       "Disconnect", NULL, NULL, "");
	if (l->stage != BLE_STAGE_OPEN) {
		pks_log(&b->log, PKS_LOG_INFO, "ble: connect to %s failed: %s", l->peer,
			pks_strerror(err));
		if (l->done != NULL)
			l->done(l->done_user, NULL, err);
	} else {
		pks_log(&b->log, err == PKS_OK ? PKS_LOG_DEBUG : PKS_LOG_INFO,
			"ble: link %s closed: %s", l->peer,
			err == PKS_OK ? "closed here" : pks_strerror(err));
		if (l->cb.on_close != NULL)
			l->cb.on_close(l->user, l, err);
	}
	if (l->f != NULL) {
		struct ble_frag_stats st;
		ble_frag_get_stats(l->f, &st);
		pks_log(&b->log, PKS_LOG_DEBUG,
			"ble: link %s: %llu datagrams out, %llu in, %llu resent, %llu duplicates, "
			"srtt %u ms",
			l->peer, (unsigned long long)st.dgrams_out,
			(unsigned long long)st.dgrams_in, (unsigned long long)st.retransmits,
			(unsigned long long)st.dup_in, st.srtt_ms);
	}
	ble_frag_free(l->f);
	l->f = NULL;
	uv_close((uv_handle_t *)&l->timer, ble_link_on_timer_close);
}

static void ble_link_on_timer(uv_timer_t *t)
{
	struct ble_link *l = t->data;

	if (l->connect_deadline != 0 && ble_now(l->b) >= l->connect_deadline &&
	    l->stage != BLE_STAGE_OPEN) {
		ble_link_finish(l, PKS_ERR_TIMEOUT);
		return;
	}
	ble_link_pump(l);
}

static struct ble_link *ble_link_alloc(struct ble *b, bool central)
{
	struct ble_link *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->b = b;
	l->central = central;
	uv_timer_init(b->loop, &l->timer);
	l->timer.data = l;
	l->next = b->links;
	b->links = l;
	return l;
}

/* Writes one datagram; 1 written, 0 would block (or no fd yet), <0 PKS error. */
static int ble_link_write(struct ble_link *l, const uint8_t *d, size_t n)
{
	struct ble *b = l->b;
	int fd = l->central ? (l->tx != NULL ? l->tx->fd : -1)
			    : (b->per_notify != NULL ? b->per_notify->fd : -1);
	ssize_t r;

	if (fd < 0)
		return 0;
	r = send(fd, d, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (r < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			if (l->central)
				ble_sock_want(l->tx, UV_WRITABLE | UV_DISCONNECT);
			else {
				b->per_notify_blocked = true;
				ble_sock_want(b->per_notify, UV_WRITABLE | UV_DISCONNECT);
			}
			return 0;
		}
		/* A peripheral's notify fd going bad is the fd's business (its
		   HUP closes every accepted link); a central's is the link's. */
		return l->central ? PKS_ERR_CLOSED : 0;
	}
	l->bytes_out += (uint64_t)r;
	return 1;
}

static void ble_link_complete_connect(struct ble_link *l)
{
	struct ble *b = l->b;

	l->stage = BLE_STAGE_OPEN;
	l->connect_deadline = 0;
	pks_log(&b->log, PKS_LOG_INFO, "ble: link to %s open (mtu %u)", l->peer, l->mtu);
	if (l->done != NULL) {
		ble_connect_fn done = l->done;
		l->done = NULL;
		done(l->done_user, l, PKS_OK);
	}
}

/* Moves datagrams out while the fd takes them, then re-arms the timer. */
static void ble_link_pump(struct ble_link *l)
{
	struct ble *b = l->b;
	uint64_t now = ble_now(b), deadline;
	int r;

	if (l->finished || l->f == NULL)
		return;
	for (int i = 0; i < 256; i++) {
		if (l->pending_len > 0) {
			r = ble_link_write(l, l->pending, l->pending_len);
			if (r < 0) {
				ble_link_finish(l, r);
				return;
			}
			if (r == 0)
				break;
			l->pending_len = 0;
		}
		size_t n = 0;
		r = ble_frag_output(l->f, now, l->pending, sizeof(l->pending), &n);
		if (r != PKS_OK) {
			ble_link_finish(l, r);
			return;
		}
		if (n == 0)
			break;
		l->pending_len = n;
	}
	if (ble_frag_is_done(l->f) && l->pending_len == 0) {
		ble_link_finish(l, l->closing ? PKS_OK : PKS_ERR_CLOSED);
		return;
	}
	if (l->stage == BLE_STAGE_OPENING && ble_frag_is_open(l->f)) {
		ble_link_complete_connect(l);
		if (l->finished)
			return;
	}
	if (l->want_drain && ble_frag_queued(l->f) <= BLE_SEND_QUEUE_LOW) {
		l->want_drain = false;
		if (l->cb.on_drain != NULL)
			l->cb.on_drain(l->user, l);
		if (l->finished)
			return;
	}
	deadline = ble_frag_deadline(l->f);
	if (l->connect_deadline != 0 && l->connect_deadline < deadline)
		deadline = l->connect_deadline;
	if (deadline == UINT64_MAX)
		uv_timer_stop(&l->timer);
	else
		uv_timer_start(&l->timer, ble_link_on_timer, deadline > now ? deadline - now : 0,
			       0);
}

static int ble_link_on_frame(void *user, const uint8_t *frame, size_t len)
{
	struct ble_link *l = user;

	if (l->finished || l->closing)
		return PKS_ERR_STATE;
	if (l->cb.on_frame != NULL)
		l->cb.on_frame(l->user, l, frame, len);
	return l->finished || l->closing ? PKS_ERR_STATE : PKS_OK;
}

static void ble_link_input(struct ble_link *l, const uint8_t *d, size_t n)
{
	int r;

	if (l->finished)
		return;
	l->bytes_in += n;
	r = ble_frag_input(l->f, d, n, ble_now(l->b), ble_link_on_frame, l);
	if (l->finished)
		return;
	if (r == PKS_ERR_CLOSED) {
		ble_link_finish(l, PKS_ERR_CLOSED);
		return;
	}
	if (r != PKS_OK && r != PKS_ERR_STATE) {
		pks_log(&l->b->log, PKS_LOG_WARN, "ble: link %s: bad datagram (%s)", l->peer,
			pks_strerror(r));
		ble_link_finish(l, r);
		return;
	}
	ble_link_pump(l);
}

static int ble_link_start_frag(struct ble_link *l, bool initiator, uint8_t tag, uint32_t nonce)
{
	struct ble_frag_params p = {
	    .mtu = l->mtu,
	    .tag = tag,
	    .nonce = nonce,
	    .initiator = initiator,
	    .send_queue_max = BLE_SEND_QUEUE_MAX,
	};

	l->tag = tag;
	return ble_frag_new(&p, ble_now(l->b), &l->f);
}

void ble_link_set_cb(struct ble_link *l, const struct ble_link_cb *cb, void *user)
{
	if (l == NULL)
		return;
	if (cb != NULL)
		l->cb = *cb;
	else
		memset(&l->cb, 0, sizeof(l->cb));
	l->user = user;
}

int ble_link_send(struct ble_link *l, const uint8_t *frame, size_t len)
{
	int r;

	if (l == NULL || frame == NULL || len == 0)
		return PKS_ERR_INVALID;
	if (len > FRAME_MAX)
		return PKS_ERR_TOO_LARGE;
	if (l->finished || l->closing)
		return PKS_ERR_CLOSED;
	r = ble_frag_send(l->f, frame, len);
	if (r == PKS_ERR_BUSY)
		l->want_drain = true;
	if (r == PKS_OK)
		ble_link_pump(l);
	return r;
}

size_t ble_link_queued(const struct ble_link *l)
{
	return l != NULL && l->f != NULL ? ble_frag_queued(l->f) : 0;
}

void ble_link_close(struct ble_link *l, const char *reason)
{
	if (l == NULL || l->finished || l->closing)
		return;
	l->closing = true;
	pks_log(&l->b->log, PKS_LOG_DEBUG, "ble: closing link %s: %s", l->peer,
		reason != NULL ? reason : "no reason given");
	ble_frag_close(l->f, ble_now(l->b));
	/* on_close comes from the loop, never from inside this call. */
	uv_timer_start(&l->timer, ble_link_on_timer, 0, 0);
}

const char *ble_link_peer(const struct ble_link *l)
{
	return l->peer;
}

uint64_t ble_link_bytes_in(const struct ble_link *l)
{
	return l->bytes_in;
}

uint64_t ble_link_bytes_out(const struct ble_link *l)
{
	return l->bytes_out;
}

bool ble_link_outbound(const struct ble_link *l)
{
	return l->central;
}

unsigned ble_link_mtu(const struct ble_link *l)
{
	return l->mtu;
}

/* ---- property parsing ------------------------------------------------- */

struct ble_props {
	bool has_address;
	char address[18];
	bool has_rssi;
	int16_t rssi;
	bool has_svc;
	uint8_t svc[BLE_ADV_PAYLOAD_MAX];
	size_t svc_len;
	bool svc_too_long;
	bool has_uuid;
	char uuid[40];
	bool has_connected;
	bool connected;
	bool has_resolved;
	bool resolved;
};

/* Reads a variant holding exactly `sig`, or skips it; 1 when entered. */
static int ble_enter_variant(sd_bus_message *m, const char *sig)
{
	const char *contents = NULL;
	char type;
	int r = sd_bus_message_peek_type(m, &type, &contents);

	if (r < 0)
		return r;
	if (type != SD_BUS_TYPE_VARIANT || contents == NULL || strcmp(contents, sig) != 0) {
		r = sd_bus_message_skip(m, "v");
		return r < 0 ? r : 0;
	}
	r = sd_bus_message_enter_container(m, SD_BUS_TYPE_VARIANT, sig);
	return r < 0 ? r : 1;
}

/* ServiceData a{sv}: keeps our UUID's bytes (ay) only. */
static int ble_read_service_data(sd_bus_message *m, struct ble_props *p)
{
	int r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{sv}");

	if (r < 0)
		return r;
	p->has_svc = true;
	p->svc_len = 0;
	while ((r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "sv")) > 0) {
		const char *key = NULL;
		uint16_t u = 0;

		r = sd_bus_message_read(m, "s", &key);
		if (r < 0)
			return r;
		if (ble_adv_parse_uuid16(key, strnlen(key, BLE_ADV_UUID_TEXT_MAX + 1), &u) ==
			PKS_OK &&
		    u == BLE_ADV_UUID16) {
			r = ble_enter_variant(m, "ay");
			if (r < 0)
				return r;
			if (r > 0) {
				const void *data = NULL;
				size_t n = 0;
				r = sd_bus_message_read_array(m, 'y', &data, &n);
				if (r < 0)
					return r;
				if (n > sizeof(p->svc)) {
					p->svc_too_long = true;
				} else {
					memcpy(p->svc, data, n);
					p->svc_len = n;
					p->svc_too_long = false;
				}
				r = sd_bus_message_exit_container(m);
				if (r < 0)
					return r;
			}
		} else {
			r = sd_bus_message_skip(m, "v");
			if (r < 0)
				return r;
		}
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}

/* Reads an a{sv} of properties, keeping the few this module needs. */
static int ble_read_props(sd_bus_message *m, struct ble_props *p)
{
	int r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{sv}");

	if (r < 0)
		return r;
	while ((r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "sv")) > 0) {
		const char *key = NULL;

		r = sd_bus_message_read(m, "s", &key);
		if (r < 0)
			return r;
		if (strcmp(key, "Address") == 0 || strcmp(key, "UUID") == 0) {
			r = ble_enter_variant(m, "s");
			if (r > 0) {
				const char *s = NULL;
				r = sd_bus_message_read(m, "s", &s);
				if (r >= 0 && key[0] == 'A' && ble_valid_address(s)) {
					p->has_address = true;
					snprintf(p->address, sizeof(p->address), "%s", s);
				} else if (r >= 0 && key[0] == 'U' && strlen(s) < sizeof(p->uuid)) {
					p->has_uuid = true;
					snprintf(p->uuid, sizeof(p->uuid), "%s", s);
				}
				if (r >= 0)
					r = sd_bus_message_exit_container(m);
			}
		} else if (strcmp(key, "RSSI") == 0) {
			r = ble_enter_variant(m, "n");
			if (r > 0) {
				r = sd_bus_message_read(m, "n", &p->rssi);
				p->has_rssi = r >= 0;
				if (r >= 0)
					r = sd_bus_message_exit_container(m);
			}
		} else if (strcmp(key, "Connected") == 0 || strcmp(key, "ServicesResolved") == 0) {
			r = ble_enter_variant(m, "b");
			if (r > 0) {
				int v = 0;
				r = sd_bus_message_read(m, "b", &v);
				if (r >= 0 && key[0] == 'C') {
					p->has_connected = true;
					p->connected = v != 0;
				} else if (r >= 0) {
					p->has_resolved = true;
					p->resolved = v != 0;
				}
				if (r >= 0)
					r = sd_bus_message_exit_container(m);
			}
		} else if (strcmp(key, "ServiceData") == 0) {
			r = ble_enter_variant(m, "a{sv}");
			if (r > 0) {
				r = ble_read_service_data(m, p);
				if (r >= 0)
					r = sd_bus_message_exit_container(m);
			}
		} else {
			r = sd_bus_message_skip(m, "v");
		}
		if (r < 0)
			return r;
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}

typedef void (*ble_object_fn)(struct ble *b, const char *path, const char *iface,
			      const struct ble_props *p, void *ctx);

/* Reads a{sa{sv}} (one object's interfaces) and calls fn per interface. */
static int ble_read_interfaces(struct ble *b, sd_bus_message *m, const char *path, ble_object_fn fn,
			       void *ctx)
{
	int r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{sa{sv}}");

	if (r < 0)
		return r;
	while ((r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "sa{sv}")) > 0) {
		const char *iface = NULL;
		struct ble_props p;

		memset(&p, 0, sizeof(p));
		r = sd_bus_message_read(m, "s", &iface);
		if (r < 0)
			return r;
		if (strcmp(iface, IFACE_ADAPTER) == 0 || strcmp(iface, IFACE_DEVICE) == 0 ||
		    strcmp(iface, IFACE_CHAR) == 0) {
			char iface_copy[64];
			snprintf(iface_copy, sizeof(iface_copy), "%s", iface);
			r = ble_read_props(m, &p);
			if (r < 0)
				return r;
			fn(b, path, iface_copy, &p, ctx);
		} else {
			r = sd_bus_message_skip(m, "a{sv}");
			if (r < 0)
				return r;
		}
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}

/* Reads a GetManagedObjects reply. */
static int ble_read_managed(struct ble *b, sd_bus_message *m, ble_object_fn fn, void *ctx)
{
	int r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{oa{sa{sv}}}");

	if (r < 0)
		return r;
	while ((r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "oa{sa{sv}}")) > 0) {
		const char *path = NULL;
		char path_copy[BLE_PATH_MAX];

		r = sd_bus_message_read(m, "o", &path);
		if (r < 0)
			return r;
		if (strlen(path) >= sizeof(path_copy)) {
			r = sd_bus_message_skip(m, "a{sa{sv}}");
		} else {
			snprintf(path_copy, sizeof(path_copy), "%s", path);
			r = ble_read_interfaces(b, m, path_copy, fn, ctx);
		}
		if (r < 0)
			return r;
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}

/* ---- devices and scan reports ----------------------------------------- */

static struct ble_device *ble_device_get(struct ble *b, const char *path, bool create)
{
	struct ble_device *oldest = NULL;

	for (size_t i = 0; i < BLE_MAX_DEVICES; i++) {
		struct ble_device *d = &b->devices[i];
		if (d->used && strcmp(d->path, path) == 0) {
			d->touched = ++b->device_clock;
			return d;
		}
		if (oldest == NULL || !d->used || (oldest->used && d->touched < oldest->touched))
			oldest = d;
	}
	if (!create || oldest == NULL || strlen(path) >= sizeof(oldest->path))
		return NULL;
	memset(oldest, 0, sizeof(*oldest));
	oldest->used = true;
	snprintf(oldest->path, sizeof(oldest->path), "%s", path);
	oldest->touched = ++b->device_clock;
	if (!ble_address_from_path(path, oldest->address))
		oldest->address[0] = '\0';
	return oldest;
}

static void ble_device_report(struct ble *b, const struct ble_device *d)
{
	struct ble_adv_info info;
	struct ble_peer_info p;

	if (!b->want_scan || !d->has_svc || d->address[0] == '\0' || b->cb.peer == NULL)
		return;
	if (ble_adv_parse(d->svc, d->svc_len, &info) != PKS_OK)
		return;
	memset(&p, 0, sizeof(p));
	memcpy(p.address, d->address, sizeof(p.address));
	p.rssi = d->rssi;
	p.hint = info.hint;
	p.hint_len = info.hint_len;
	p.pairing = info.pairing;
	b->cb.peer(b->user, &p);
}

static void ble_device_update(struct ble *b, const char *path, const struct ble_props *p)
{
	struct ble_device *d;
	bool changed = false;

	/* Only devices under our adapter. */
	if (!b->adapter || strncmp(path, b->adapter_path, strlen(b->adapter_path)) != 0)
		return;
	d = ble_device_get(b, path, p->has_svc || p->has_rssi || p->has_address);
	if (d == NULL)
		return;
	if (p->has_address)
		memcpy(d->address, p->address, sizeof(d->address));
	if (p->has_rssi && p->rssi != d->rssi) {
		d->rssi = p->rssi;
		changed = true;
	}
	if (p->has_svc) {
		if (p->svc_too_long || p->svc_len == 0) {
			d->has_svc = false;
		} else if (!d->has_svc || d->svc_len != p->svc_len ||
			   memcmp(d->svc, p->svc, p->svc_len) != 0) {
			memcpy(d->svc, p->svc, p->svc_len);
			d->svc_len = p->svc_len;
			d->has_svc = true;
			changed = true;
		}
	}
	if (changed)
		ble_device_report(b, d);
}

/* ---- adapter following ------------------------------------------------ */

static void ble_adapter_up(struct ble *b, const char *path);
static void ble_adapter_down(struct ble *b);

static void ble_on_object(struct ble *b, const char *path, const char *iface,
			  const struct ble_props *p, void *ctx)
{
	(void)ctx;
	if (strcmp(iface, IFACE_ADAPTER) == 0) {
		if (!b->adapter)
			ble_adapter_up(b, path);
	} else if (strcmp(iface, IFACE_DEVICE) == 0) {
		ble_device_update(b, path, p);
	}
}

static void ble_report_initial(struct ble *b)
{
	if (b->initial_reported)
		return;
	b->initial_reported = true;
	if (!b->adapter && b->cb.adapter != NULL)
		b->cb.adapter(b->user, false);
}

static int ble_on_managed(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble *b = user;

	(void)e;
	b->refresh_call = sd_bus_slot_unref(b->refresh_call);
	if (sd_bus_message_is_method_error(m, NULL)) {
		pks_log(&b->log, PKS_LOG_DEBUG, "ble: no bluetoothd (%s)", ble_error_name(m));
	} else if (ble_read_managed(b, m, ble_on_object, NULL) < 0) {
		pks_log(&b->log, PKS_LOG_WARN, "ble: cannot read bluetoothd's objects");
	}
	ble_report_initial(b);
	return 0;
}

static void ble_refresh(struct ble *b)
{
	b->refresh_call = sd_bus_slot_unref(b->refresh_call);
	if (sd_bus_call_method_async(b->bus, &b->refresh_call, BLUEZ, "/", IFACE_OM,
				     "GetManagedObjects", ble_on_managed, b, "") < 0)
		ble_report_initial(b);
}

static int ble_on_interfaces_added(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble *b = user;
	const char *path = NULL;
	char path_copy[BLE_PATH_MAX];

	(void)e;
	if (sd_bus_message_read(m, "o", &path) < 0 || strlen(path) >= sizeof(path_copy))
		return 0;
	snprintf(path_copy, sizeof(path_copy), "%s", path);
	(void)ble_read_interfaces(b, m, path_copy, ble_on_object, NULL);
	return 0;
}

static void ble_finish_central_links_of(struct ble *b, const char *dev_path_prefix, int err)
{
	struct ble_link *l = b->links, *next;
	size_t n = strlen(dev_path_prefix);

	for (; l != NULL; l = next) {
		next = l->next;
		if (l->central && strncmp(l->dev_path, dev_path_prefix, n) == 0)
			ble_link_finish(l, err);
	}
}

static int ble_on_interfaces_removed(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble *b = user;
	const char *path = NULL, *iface = NULL;

	(void)e;
	if (sd_bus_message_read(m, "o", &path) < 0)
		return 0;
	if (sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "s") < 0)
		return 0;
	while (sd_bus_message_read(m, "s", &iface) > 0) {
		if (strcmp(iface, IFACE_ADAPTER) == 0 && b->adapter &&
		    strcmp(path, b->adapter_path) == 0) {
			ble_adapter_down(b);
			ble_refresh(b); /* another adapter may remain */
		} else if (strcmp(iface, IFACE_DEVICE) == 0) {
			struct ble_device *d = ble_device_get(b, path, false);
			if (d != NULL)
				d->used = false;
		}
	}
	return 0;
}

static void ble_char_resolved(struct ble *b, const char *dev_path);

static int ble_on_props_changed(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble *b = user;
	const char *iface = NULL, *path = sd_bus_message_get_path(m);
	struct ble_props p;

	(void)e;
	memset(&p, 0, sizeof(p));
	if (path == NULL || sd_bus_message_read(m, "s", &iface) < 0)
		return 0;
	if (strcmp(iface, IFACE_DEVICE) != 0)
		return 0;
	if (ble_read_props(m, &p) < 0)
		return 0;
	ble_device_update(b, path, &p);
	if (p.has_connected && !p.connected)
		ble_finish_central_links_of(b, path, PKS_ERR_CLOSED);
	if (p.has_resolved && p.resolved)
		ble_char_resolved(b, path);
	return 0;
}

static int ble_on_owner_changed(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble *b = user;
	const char *name = NULL, *old_owner = NULL, *new_owner = NULL;

	(void)e;
	if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
		return 0;
	if (strcmp(name, BLUEZ) != 0)
		return 0;
	if (new_owner[0] == '\0') {
		pks_log(&b->log, PKS_LOG_INFO, "ble: bluetoothd went away");
		if (b->adapter)
			ble_adapter_down(b);
	} else {
		pks_log(&b->log, PKS_LOG_INFO, "ble: bluetoothd appeared");
		ble_refresh(b);
	}
	return 0;
}

/* ---- advertising ------------------------------------------------------ */

static int ble_adv_prop_type(sd_bus *bus, const char *path, const char *iface, const char *prop,
			     sd_bus_message *reply, void *user, sd_bus_error *e)
{
	(void)bus, (void)path, (void)iface, (void)prop, (void)user, (void)e;
	return sd_bus_message_append(reply, "s", "peripheral");
}

static int ble_adv_prop_uuids(sd_bus *bus, const char *path, const char *iface, const char *prop,
			      sd_bus_message *reply, void *user, sd_bus_error *e)
{
	(void)bus, (void)path, (void)iface, (void)prop, (void)user, (void)e;
	return sd_bus_message_append(reply, "as", 1, BLE_ADV_UUID16_STR);
}

static int ble_adv_prop_data(sd_bus *bus, const char *path, const char *iface, const char *prop,
			     sd_bus_message *reply, void *user, sd_bus_error *e)
{
	struct ble *b = user;
	int r;

	(void)bus, (void)path, (void)iface, (void)prop, (void)e;
	r = sd_bus_message_open_container(reply, SD_BUS_TYPE_ARRAY, "{sv}");
	if (r >= 0)
		r = sd_bus_message_open_container(reply, SD_BUS_TYPE_DICT_ENTRY, "sv");
	if (r >= 0)
		r = sd_bus_message_append(reply, "s", BLE_ADV_UUID16_STR);
	if (r >= 0)
		r = sd_bus_message_open_container(reply, SD_BUS_TYPE_VARIANT, "ay");
	if (r >= 0)
		r = sd_bus_message_append_array(reply, 'y', b->adv_payload, b->adv_len);
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	return r;
}

static int ble_adv_release(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble *b = user;
	const char *path = sd_bus_message_get_path(m);

	(void)e;
	if (path != NULL && strcmp(path, b->adv_path) == 0)
		b->adv_registered = false;
	return sd_bus_reply_method_return(m, "");
}

static const sd_bus_vtable ble_adv_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Type", "s", ble_adv_prop_type, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("ServiceUUIDs", "as", ble_adv_prop_uuids, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("ServiceData", "a{sv}", ble_adv_prop_data, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_METHOD("Release", "", "", ble_adv_release, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

static int ble_on_adv_registered(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble *b = user;
	const char *path = sd_bus_message_get_path(m);

	(void)e;
	(void)path;
	if (sd_bus_message_is_method_error(m, NULL)) {
		pks_log(&b->log, PKS_LOG_WARN, "ble: advertisement refused: %s", ble_error_name(m));
		return 0;
	}
	pks_log(&b->log, PKS_LOG_DEBUG, "ble: advertising");
	return 0;
}

/* Drops the current advertisement object (and its registration). */
static void ble_adv_withdraw(struct ble *b)
{
	if (b->adv_vtable == NULL)
		return;
	if (b->adapter && b->adv_registered)
		(void)sd_bus_call_method_async(b->bus, NULL, BLUEZ, b->adapter_path, IFACE_ADV_MGR,
					       "UnregisterAdvertisement", NULL, NULL, "o",
					       b->adv_path);
	b->adv_vtable = sd_bus_slot_unref(b->adv_vtable);
	b->adv_registered = false;
}

/* Registers the wanted advertisement on a fresh object path. */
static void ble_adv_register(struct ble *b)
{
	ble_adv_withdraw(b);
	if (!b->want_adv || !b->adapter)
		return;
	snprintf(b->adv_path, sizeof(b->adv_path), ADV_PATH_FMT, ++b->adv_gen);
	if (sd_bus_add_object_vtable(b->bus, &b->adv_vtable, b->adv_path, IFACE_ADV, ble_adv_vtable,
				     b) < 0) {
		pks_log(&b->log, PKS_LOG_WARN, "ble: cannot export the advertisement");
		return;
	}
	if (sd_bus_call_method_async(b->bus, NULL, BLUEZ, b->adapter_path, IFACE_ADV_MGR,
				     "RegisterAdvertisement", ble_on_adv_registered, b, "oa{sv}",
				     b->adv_path, 0) < 0) {
		pks_log(&b->log, PKS_LOG_WARN, "ble: cannot register the advertisement");
		return;
	}
	/* Counted as registered from now: BlueZ reads the properties at once
	   and an unregistration must follow even if the reply is pending. */
	b->adv_registered = true;
}

int ble_advertise(struct ble *b, const uint8_t *hint, size_t len, bool pairing)
{
	uint8_t payload[BLE_ADV_PAYLOAD_MAX];
	size_t n = 0;
	int r;

	if (b == NULL)
		return PKS_ERR_INVALID;
	r = ble_adv_build(hint, len, pairing, payload, sizeof(payload), &n);
	if (r != PKS_OK)
		return r;
	memcpy(b->adv_payload, payload, n);
	b->adv_len = n;
	b->want_adv = true;
	ble_adv_register(b);
	return PKS_OK;
}

void ble_advertise_stop(struct ble *b)
{
	if (b == NULL)
		return;
	b->want_adv = false;
	ble_adv_withdraw(b);
}

/* ---- scanning --------------------------------------------------------- */

static int ble_on_discovery(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble *b = user;

	(void)e;
	if (sd_bus_message_is_method_error(m, NULL)) {
		pks_log(&b->log, PKS_LOG_WARN, "ble: discovery refused: %s", ble_error_name(m));
		b->scanning = false;
		return 0;
	}
	/* Devices BlueZ already knows are reported now. */
	ble_refresh(b);
	return 0;
}

static int ble_scan_start(struct ble *b)
{
	sd_bus_message *m = NULL;
	int r;

	r = sd_bus_message_new_method_call(b->bus, &m, BLUEZ, b->adapter_path, IFACE_ADAPTER,
					   "SetDiscoveryFilter");
	if (r >= 0)
		r = sd_bus_message_append(m, "a{sv}", 3, "UUIDs", "as", 1, BLE_ADV_UUID128_STR,
					  "Transport", "s", "le", "DuplicateData", "b", 1);
	if (r >= 0)
		r = sd_bus_call_async(b->bus, NULL, m, NULL, NULL, 0);
	sd_bus_message_unref(m);
	if (r >= 0)
		r = sd_bus_call_method_async(b->bus, NULL, BLUEZ, b->adapter_path, IFACE_ADAPTER,
					     "StartDiscovery", ble_on_discovery, b, "");
	if (r < 0)
		return sdbus_uv_err(r);
	b->scanning = true;
	return PKS_OK;
}

int ble_scan(struct ble *b, bool on)
{
	if (b == NULL)
		return PKS_ERR_INVALID;
	b->want_scan = on;
	if (!b->adapter)
		return PKS_OK;
	if (on && !b->scanning)
		return ble_scan_start(b);
	if (!on && b->scanning) {
		b->scanning = false;
		(void)sd_bus_call_method_async(b->bus, NULL, BLUEZ, b->adapter_path, IFACE_ADAPTER,
					       "StopDiscovery", NULL, NULL, "");
	}
	return PKS_OK;
}

/* ---- GATT server (peripheral) ----------------------------------------- */

static int ble_prop_uuid(sd_bus *bus, const char *path, const char *iface, const char *prop,
			 sd_bus_message *reply, void *user, sd_bus_error *e)
{
	const char *uuid = strcmp(path, SERVICE_PATH) == 0 ? BLE_SERVICE_UUID
			   : strcmp(path, WRITE_PATH) == 0 ? BLE_WRITE_CHAR_UUID
							   : BLE_NOTIFY_CHAR_UUID;
	(void)bus, (void)iface, (void)prop, (void)user, (void)e;
	return sd_bus_message_append(reply, "s", uuid);
}

static int ble_prop_true(sd_bus *bus, const char *path, const char *iface, const char *prop,
			 sd_bus_message *reply, void *user, sd_bus_error *e)
{
	(void)bus, (void)path, (void)iface, (void)prop, (void)user, (void)e;
	return sd_bus_message_append(reply, "b", 1);
}

static int ble_prop_service(sd_bus *bus, const char *path, const char *iface, const char *prop,
			    sd_bus_message *reply, void *user, sd_bus_error *e)
{
	(void)bus, (void)path, (void)iface, (void)prop, (void)user, (void)e;
	return sd_bus_message_append(reply, "o", SERVICE_PATH);
}

static int ble_prop_flags(sd_bus *bus, const char *path, const char *iface, const char *prop,
			  sd_bus_message *reply, void *user, sd_bus_error *e)
{
	(void)bus, (void)iface, (void)prop, (void)user, (void)e;
	if (strcmp(path, WRITE_PATH) == 0)
		return sd_bus_message_append(reply, "as", 1, "write-without-response");
	return sd_bus_message_append(reply, "as", 1, "notify");
}

static int ble_prop_acquired(sd_bus *bus, const char *path, const char *iface, const char *prop,
			     sd_bus_message *reply, void *user, sd_bus_error *e)
{
	struct ble *b = user;
	bool v = strcmp(path, WRITE_PATH) == 0 ? b->per_write != NULL : b->per_notify != NULL;

	(void)bus, (void)iface, (void)prop, (void)e;
	return sd_bus_message_append(reply, "b", v);
}

/* Reads the "mtu" option (q) from an options a{sv}; 0 when absent. */
static unsigned ble_read_mtu_option(sd_bus_message *m)
{
	unsigned mtu = 0;
	int r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{sv}");

	if (r < 0)
		return 0;
	while (sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "sv") > 0) {
		const char *key = NULL;
		if (sd_bus_message_read(m, "s", &key) < 0)
			return mtu;
		if (strcmp(key, "mtu") == 0 && ble_enter_variant(m, "q") > 0) {
			uint16_t v = 0;
			if (sd_bus_message_read(m, "q", &v) >= 0)
				mtu = v;
			(void)sd_bus_message_exit_container(m);
		} else if (sd_bus_message_skip(m, "v") < 0) {
			return mtu;
		}
		if (sd_bus_message_exit_container(m) < 0)
			return mtu;
	}
	return mtu;
}

/*
 * The MTU accepted links send with. BlueZ calls AcquireNotify once per
 * subscription epoch (the first subscriber after none), so its MTU is the
 * one to use until the fd closes; a central joining later with a smaller
 * MTU would get cut notifications, which its link detects and closes.
 */
static void ble_note_mtu(struct ble *b, unsigned mtu, bool notify)
{
	if (mtu < BLE_FRAG_MTU_MIN)
		mtu = BLE_FRAG_MTU_MIN;
	if (mtu > BLE_FRAG_MTU_MAX)
		mtu = BLE_FRAG_MTU_MAX;
	if (notify || b->per_mtu == 0)
		b->per_mtu = mtu;
}

static void ble_finish_peripheral_links(struct ble *b, int err)
{
	struct ble_link *l = b->links, *next;

	for (; l != NULL; l = next) {
		next = l->next;
		if (!l->central)
			ble_link_finish(l, err);
	}
}

static void ble_per_accept(struct ble *b, const uint8_t *d, size_t n, uint8_t tag, uint32_t nonce)
{
	struct ble_link *l;
	unsigned count = 0;

	for (l = b->links; l != NULL; l = l->next)
		if (!l->central)
			count++;
	if (count >= BLE_MAX_ACCEPTED) {
		pks_log(&b->log, PKS_LOG_WARN, "ble: too many centrals, link refused");
		return;
	}
	l = ble_link_alloc(b, false);
	if (l == NULL)
		return;
	l->mtu = b->per_mtu != 0 ? b->per_mtu : BLE_FRAG_MTU_MIN;
	l->stage = BLE_STAGE_OPEN;
	snprintf(l->peer, sizeof(l->peer), "ble:central/%02x", tag);
	if (ble_link_start_frag(l, false, tag, nonce) != PKS_OK) {
		ble_link_finish(l, PKS_ERR_NOMEM);
		return;
	}
	l->bytes_in += n;
	if (ble_frag_input(l->f, d, n, ble_now(b), NULL, NULL) != PKS_OK) {
		ble_link_finish(l, PKS_ERR_MALFORMED);
		return;
	}
	pks_log(&b->log, PKS_LOG_INFO, "ble: accepted %s (mtu %u)", l->peer, l->mtu);
	if (b->cb.accepted != NULL)
		b->cb.accepted(b->user, l);
	if (!l->finished)
		ble_link_pump(l);
}

/* One datagram a central wrote on our write characteristic. */
static void ble_per_datagram(struct ble *b, const uint8_t *d, size_t n)
{
	struct ble_frag_header h;
	struct ble_link *l;
	uint8_t tag;
	uint32_t nonce;

	if (ble_frag_parse_header(d, n, &h) != PKS_OK)
		return;
	for (l = b->links; l != NULL; l = l->next)
		if (!l->central && l->tag == h.tag)
			break;
	if (h.type == BLE_FRAG_OPEN && ble_frag_parse_open(d, n, &tag, &nonce) == PKS_OK) {
		if (l != NULL && ble_frag_nonce(l->f) == nonce) {
			ble_link_input(l, d, n);
			return;
		}
		/* The same tag with a new nonce: that central started over. */
		if (l != NULL)
			ble_link_finish(l, PKS_ERR_CLOSED);
		ble_per_accept(b, d, n, tag, nonce);
		return;
	}
	if (l != NULL)
		ble_link_input(l, d, n);
}

static void ble_per_write_event(void *ctx, int status, int events)
{
	struct ble *b = ctx;
	uint8_t d[BLE_FRAG_DGRAM_MAX + 1];

	(void)status;
	for (int i = 0; i < BLE_RECV_BURST && b->per_write != NULL; i++) {
		ssize_t n = recv(b->per_write->fd, d, sizeof(d), MSG_DONTWAIT);
		if (n > 0) {
			if ((size_t)n <= BLE_FRAG_DGRAM_MAX)
				ble_per_datagram(b, d, (size_t)n);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) &&
		    !(events & UV_DISCONNECT))
			return;
		/* EOF or error: bluetoothd let go of the fd; it acquires again. */
		ble_sock_close(b->per_write);
		b->per_write = NULL;
		return;
	}
}

static void ble_per_notify_event(void *ctx, int status, int events)
{
	struct ble *b = ctx;
	struct ble_link *l, *next;

	if (status < 0 || (events & UV_DISCONNECT)) {
		/* The last subscriber left: every accepted link is gone. */
		ble_sock_close(b->per_notify);
		b->per_notify = NULL;
		b->per_notify_blocked = false;
		ble_finish_peripheral_links(b, PKS_ERR_CLOSED);
		return;
	}
	if (events & UV_WRITABLE) {
		b->per_notify_blocked = false;
		ble_sock_want(b->per_notify, UV_DISCONNECT);
		for (l = b->links; l != NULL; l = next) {
			next = l->next;
			if (!l->central)
				ble_link_pump(l);
		}
	}
}

/* AcquireWrite/AcquireNotify: a socketpair, one end to bluetoothd. */
static int ble_per_acquire(sd_bus_message *m, struct ble *b, bool write)
{
	struct ble_sock **slot = write ? &b->per_write : &b->per_notify;
	unsigned mtu = ble_read_mtu_option(m);
	int sv[2] = {-1, -1};
	int r;

	ble_note_mtu(b, mtu != 0 ? mtu : BLE_FRAG_MTU_MIN, !write);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
		return sd_bus_reply_method_errorf(m, "org.bluez.Error.Failed", "socketpair: %s",
						  strerror(errno));
	if (*slot != NULL) {
		ble_sock_close(*slot);
		*slot = NULL;
	}
	if (ble_sock_new(b->loop, sv[0], write ? ble_per_write_event : ble_per_notify_event, b,
			 slot) != PKS_OK) {
		close(sv[0]);
		close(sv[1]);
		return sd_bus_reply_method_errorf(m, "org.bluez.Error.Failed", "no memory");
	}
	ble_sock_want(*slot, write ? UV_READABLE | UV_DISCONNECT : UV_DISCONNECT);
	r = sd_bus_reply_method_return(m, "hq", sv[1], (uint16_t)b->per_mtu);
	close(sv[1]);
	pks_log(&b->log, PKS_LOG_DEBUG, "ble: %s acquired (mtu %u)", write ? "write" : "notify",
		mtu);
	if (!write) {
		/* Links waiting for a way to notify can go on. A central's OPEN
		   can arrive on the write fd before bluetoothd has acquired the
		   notify fd of the new subscription epoch, so a link accepted
		   meanwhile took the previous epoch's MTU: it sends with this one
		   from now on. */
		struct ble_link *l, *next;
		for (l = b->links; l != NULL; l = next) {
			next = l->next;
			if (l->central)
				continue;
			if (l->f != NULL && l->mtu != b->per_mtu) {
				l->mtu = b->per_mtu;
				ble_frag_set_mtu(l->f, l->mtu);
			}
			ble_link_pump(l);
		}
	}
	return r;
}

static int ble_method_acquire_write(sd_bus_message *m, void *user, sd_bus_error *e)
{
	(void)e;
	return ble_per_acquire(m, user, true);
}

static int ble_method_acquire_notify(sd_bus_message *m, void *user, sd_bus_error *e)
{
	(void)e;
	return ble_per_acquire(m, user, false);
}

/* BlueZ falls back to WriteValue when AcquireWrite failed: same path. */
static int ble_method_write_value(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble *b = user;
	const void *data = NULL;
	size_t n = 0;
	int r;

	(void)e;
	r = sd_bus_message_read_array(m, 'y', &data, &n);
	if (r < 0)
		return r;
	if (n > 0 && n <= BLE_FRAG_DGRAM_MAX)
		ble_per_datagram(b, data, n);
	return sd_bus_reply_method_return(m, "");
}

static int ble_method_read_value(sd_bus_message *m, void *user, sd_bus_error *e)
{
	(void)user, (void)e;
	return sd_bus_reply_method_return(m, "ay", 0);
}

static int ble_method_not_supported(sd_bus_message *m, void *user, sd_bus_error *e)
{
	(void)user, (void)e;
	return sd_bus_reply_method_errorf(m, "org.bluez.Error.NotSupported", "use AcquireNotify");
}

static const sd_bus_vtable ble_service_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("UUID", "s", ble_prop_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Primary", "b", ble_prop_true, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_VTABLE_END,
};

static const sd_bus_vtable ble_write_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("UUID", "s", ble_prop_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Service", "o", ble_prop_service, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Flags", "as", ble_prop_flags, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("WriteAcquired", "b", ble_prop_acquired, 0, 0),
    SD_BUS_METHOD("AcquireWrite", "a{sv}", "hq", ble_method_acquire_write,
		  SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("WriteValue", "aya{sv}", "", ble_method_write_value, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("ReadValue", "a{sv}", "ay", ble_method_read_value, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

static const sd_bus_vtable ble_notify_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("UUID", "s", ble_prop_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Service", "o", ble_prop_service, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Flags", "as", ble_prop_flags, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("NotifyAcquired", "b", ble_prop_acquired, 0, 0),
    SD_BUS_METHOD("AcquireNotify", "a{sv}", "hq", ble_method_acquire_notify,
		  SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("StartNotify", "", "", ble_method_not_supported, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("StopNotify", "", "", ble_method_not_supported, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("ReadValue", "a{sv}", "ay", ble_method_read_value, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

static int ble_on_app_registered(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble *b = user;

	(void)e;
	if (sd_bus_message_is_method_error(m, NULL)) {
		pks_log(&b->log, PKS_LOG_WARN, "ble: GATT application refused: %s",
			ble_error_name(m));
		b->app_registered = false;
		return 0;
	}
	pks_log(&b->log, PKS_LOG_DEBUG, "ble: GATT service registered");
	return 0;
}

static int ble_app_export(struct ble *b)
{
	if (b->app_om != NULL)
		return PKS_OK;
	if (sd_bus_add_object_manager(b->bus, &b->app_om, APP_PATH) < 0 ||
	    sd_bus_add_object_vtable(b->bus, &b->app_svc, SERVICE_PATH, IFACE_SERVICE,
				     ble_service_vtable, b) < 0 ||
	    sd_bus_add_object_vtable(b->bus, &b->app_write, WRITE_PATH, IFACE_CHAR,
				     ble_write_vtable, b) < 0 ||
	    sd_bus_add_object_vtable(b->bus, &b->app_notify, NOTIFY_PATH, IFACE_CHAR,
				     ble_notify_vtable, b) < 0)
		return PKS_ERR_NOMEM;
	return PKS_OK;
}

static void ble_app_register(struct ble *b)
{
	if (!b->want_serve || !b->adapter || b->app_registered)
		return;
	if (ble_app_export(b) != PKS_OK) {
		pks_log(&b->log, PKS_LOG_WARN, "ble: cannot export the GATT application");
		return;
	}
	if (sd_bus_call_method_async(b->bus, NULL, BLUEZ, b->adapter_path, IFACE_GATT_MGR,
				     "RegisterApplication", ble_on_app_registered, b, "oa{sv}",
				     APP_PATH, 0) >= 0)
		b->app_registered = true;
}

int ble_serve(struct ble *b, bool on)
{
	if (b == NULL)
		return PKS_ERR_INVALID;
	b->want_serve = on;
	if (on) {
		ble_app_register(b);
	} else if (b->app_registered) {
		b->app_registered = false;
		if (b->adapter)
			(void)sd_bus_call_method_async(b->bus, NULL, BLUEZ, b->adapter_path,
						       IFACE_GATT_MGR, "UnregisterApplication",
						       NULL, NULL, "o", APP_PATH);
	}
	return PKS_OK;
}

/* ---- central ---------------------------------------------------------- */

static void ble_central_rx_event(void *ctx, int status, int events)
{
	struct ble_link *l = ctx;
	uint8_t d[BLE_FRAG_DGRAM_MAX + 1];

	if (l->finished)
		return;
	for (int i = 0; i < BLE_RECV_BURST; i++) {
		ssize_t n = recv(l->rx->fd, d, sizeof(d), MSG_DONTWAIT);
		if (n > 0) {
			if ((size_t)n <= BLE_FRAG_DGRAM_MAX)
				ble_link_input(l, d, (size_t)n);
			if (l->finished)
				return;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) &&
		    status >= 0 && !(events & UV_DISCONNECT))
			return;
		/* HUP: the radio link is gone. */
		ble_link_finish(l, PKS_ERR_CLOSED);
		return;
	}
}

static void ble_central_tx_event(void *ctx, int status, int events)
{
	struct ble_link *l = ctx;

	if (l->finished)
		return;
	if (status < 0 || (events & UV_DISCONNECT)) {
		ble_link_finish(l, PKS_ERR_CLOSED);
		return;
	}
	ble_sock_want(l->tx, UV_DISCONNECT);
	ble_link_pump(l);
}

static int ble_on_acquire_write(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble_link *l = user;
	int fd = -1, r;
	uint16_t mtu = 0;
	uint8_t tag = 0;
	uint32_t nonce = 0;

	(void)e;
	l->call = sd_bus_slot_unref(l->call);
	if (sd_bus_message_is_method_error(m, NULL)) {
		ble_link_finish(l, ble_error_of(sd_bus_message_get_error(m)));
		return 0;
	}
	if (sd_bus_message_read(m, "hq", &fd, &mtu) < 0 || (fd = ble_take_fd(fd)) < 0) {
		ble_link_finish(l, PKS_ERR_IO);
		return 0;
	}
	if (ble_sock_new(l->b->loop, fd, ble_central_tx_event, l, &l->tx) != PKS_OK) {
		close(fd);
		ble_link_finish(l, PKS_ERR_NOMEM);
		return 0;
	}
	ble_sock_want(l->tx, UV_DISCONNECT);
	l->mtu = mtu < BLE_FRAG_MTU_MIN ? BLE_FRAG_MTU_MIN
					: (mtu > BLE_FRAG_MTU_MAX ? BLE_FRAG_MTU_MAX : mtu);
	while (tag == 0)
		ble_random(&tag, 1);
	ble_random(&nonce, sizeof(nonce));
	r = ble_link_start_frag(l, true, tag, nonce);
	if (r != PKS_OK) {
		ble_link_finish(l, r);
		return 0;
	}
	l->stage = BLE_STAGE_OPENING;
	ble_link_pump(l);
	return 0;
}

static int ble_on_acquire_notify(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble_link *l = user;
	struct ble *b = l->b;
	int fd = -1;
	uint16_t mtu = 0;

	(void)e;
	l->call = sd_bus_slot_unref(l->call);
	if (sd_bus_message_is_method_error(m, NULL)) {
		ble_link_finish(l, ble_error_of(sd_bus_message_get_error(m)));
		return 0;
	}
	if (sd_bus_message_read(m, "hq", &fd, &mtu) < 0 || (fd = ble_take_fd(fd)) < 0) {
		ble_link_finish(l, PKS_ERR_IO);
		return 0;
	}
	if (ble_sock_new(b->loop, fd, ble_central_rx_event, l, &l->rx) != PKS_OK) {
		close(fd);
		ble_link_finish(l, PKS_ERR_NOMEM);
		return 0;
	}
	ble_sock_want(l->rx, UV_READABLE | UV_DISCONNECT);
	l->stage = BLE_STAGE_WRITE;
	if (sd_bus_call_method_async(b->bus, &l->call, BLUEZ, l->write_path, IFACE_CHAR,
				     "AcquireWrite", ble_on_acquire_write, l, "a{sv}", 0) < 0)
		ble_link_finish(l, PKS_ERR_IO);
	return 0;
}

struct ble_char_search {
	struct ble_link *l;
	bool write_found, notify_found;
};

static void ble_on_char_object(struct ble *b, const char *path, const char *iface,
			       const struct ble_props *p, void *ctx)
{
	struct ble_char_search *s = ctx;
	size_t n = strlen(s->l->dev_path);

	(void)b;
	if (strcmp(iface, IFACE_CHAR) != 0 || !p->has_uuid)
		return;
	if (strncmp(path, s->l->dev_path, n) != 0 || path[n] != '/')
		return;
	if (strcasecmp(p->uuid, BLE_WRITE_CHAR_UUID) == 0) {
		snprintf(s->l->write_path, sizeof(s->l->write_path), "%s", path);
		s->write_found = true;
	} else if (strcasecmp(p->uuid, BLE_NOTIFY_CHAR_UUID) == 0) {
		snprintf(s->l->notify_path, sizeof(s->l->notify_path), "%s", path);
		s->notify_found = true;
	}
}

static int ble_on_chars(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble_link *l = user;
	struct ble_char_search s = {.l = l};

	(void)e;
	l->call = sd_bus_slot_unref(l->call);
	if (sd_bus_message_is_method_error(m, NULL) ||
	    ble_read_managed(l->b, m, ble_on_char_object, &s) < 0) {
		ble_link_finish(l, PKS_ERR_IO);
		return 0;
	}
	if (!s.write_found || !s.notify_found) {
		/* Services may not be resolved yet: ServicesResolved will say. */
		return 0;
	}
	/* Subscribe first, so the peer can answer our OPEN. */
	l->stage = BLE_STAGE_NOTIFY;
	if (sd_bus_call_method_async(l->b->bus, &l->call, BLUEZ, l->notify_path, IFACE_CHAR,
				     "AcquireNotify", ble_on_acquire_notify, l, "a{sv}", 0) < 0)
		ble_link_finish(l, PKS_ERR_IO);
	return 0;
}

static void ble_find_chars(struct ble_link *l)
{
	l->stage = BLE_STAGE_RESOLVE;
	l->call = sd_bus_slot_unref(l->call);
	if (sd_bus_call_method_async(l->b->bus, &l->call, BLUEZ, "/", IFACE_OM, "GetManagedObjects",
				     ble_on_chars, l, "") < 0)
		ble_link_finish(l, PKS_ERR_IO);
}

static void ble_char_resolved(struct ble *b, const char *dev_path)
{
	struct ble_link *l, *next;

	for (l = b->links; l != NULL; l = next) {
		next = l->next;
		if (l->central && l->stage == BLE_STAGE_RESOLVE && l->call == NULL &&
		    strcmp(l->dev_path, dev_path) == 0)
			ble_find_chars(l);
	}
}

static int ble_on_connected(sd_bus_message *m, void *user, sd_bus_error *e)
{
	struct ble_link *l = user;

	(void)e;
	l->call = sd_bus_slot_unref(l->call);
	if (sd_bus_message_is_method_error(m, NULL)) {
		pks_log(&l->b->log, PKS_LOG_DEBUG, "ble: Connect to %s: %s", l->peer,
			ble_error_name(m));
		ble_link_finish(l, ble_error_of(sd_bus_message_get_error(m)));
		return 0;
	}
	ble_find_chars(l);
	return 0;
}

/* Runs from the loop so the done callback never fires inside ble_connect(). */
static void ble_connect_start(uv_timer_t *t)
{
	struct ble_link *l = t->data;
	struct ble *b = l->b;

	if (!b->adapter) {
		ble_link_finish(l, PKS_ERR_STATE);
		return;
	}
	uv_timer_start(&l->timer, ble_link_on_timer, BLE_CONNECT_TIMEOUT_MS, 0);
	if (sd_bus_call_method_async(b->bus, &l->call, BLUEZ, l->dev_path, IFACE_DEVICE, "Connect",
				     ble_on_connected, l, "") < 0)
		ble_link_finish(l, PKS_ERR_IO);
}

int ble_connect(struct ble *b, const char *address, ble_connect_fn done, void *user)
{
	struct ble_link *l;
	char path_addr[18];

	if (b == NULL || done == NULL || !ble_valid_address(address))
		return PKS_ERR_INVALID;
	l = ble_link_alloc(b, true);
	if (l == NULL)
		return PKS_ERR_NOMEM;
	l->done = done;
	l->done_user = user;
	l->stage = BLE_STAGE_CONNECT;
	l->connect_deadline = ble_now(b) + BLE_CONNECT_TIMEOUT_MS;
	for (int i = 0; i < 17; i++) {
		char c = address[i];
		path_addr[i] = c == ':' ? '_' : (c >= 'a' && c <= 'f' ? (char)(c - 32) : c);
	}
	path_addr[17] = '\0';
	snprintf(l->peer, sizeof(l->peer), "ble:%.17s", address);
	for (int i = 4; i < 4 + 17; i++)
		l->peer[i] = path_addr[i - 4] == '_' ? ':' : path_addr[i - 4];
	if (b->adapter)
		snprintf(l->dev_path, sizeof(l->dev_path), "%s/dev_%s", b->adapter_path, path_addr);
	uv_timer_start(&l->timer, ble_connect_start, 0, 0);
	return PKS_OK;
}

/* ---- adapter up/down -------------------------------------------------- */

static void ble_adapter_up(struct ble *b, const char *path)
{
	struct ble_link *l;

	if (strlen(path) >= sizeof(b->adapter_path))
		return;
	snprintf(b->adapter_path, sizeof(b->adapter_path), "%s", path);
	b->adapter = true;
	pks_log(&b->log, PKS_LOG_INFO, "ble: adapter %s", path);
	/* Connects asked for before the adapter was known. */
	for (l = b->links; l != NULL; l = l->next)
		if (l->central && l->dev_path[0] == '\0')
			snprintf(l->dev_path, sizeof(l->dev_path), "%s/dev_%.17s", b->adapter_path,
				 l->peer + 4);
	b->initial_reported = true;
	if (b->cb.adapter != NULL)
		b->cb.adapter(b->user, true);
	if (b->want_serve)
		ble_app_register(b);
	if (b->want_adv)
		ble_adv_register(b);
	if (b->want_scan && !b->scanning)
		(void)ble_scan_start(b);
}

static void ble_adapter_down(struct ble *b)
{
	b->adapter = false;
	b->scanning = false;
	b->app_registered = false;
	b->adv_registered = false;
	b->adv_vtable = sd_bus_slot_unref(b->adv_vtable);
	for (size_t i = 0; i < BLE_MAX_DEVICES; i++)
		b->devices[i].used = false;
	pks_log(&b->log, PKS_LOG_INFO, "ble: adapter %s gone", b->adapter_path);
	ble_finish_central_links_of(b, b->adapter_path, PKS_ERR_CLOSED);
	if (b->cb.adapter != NULL)
		b->cb.adapter(b->user, false);
}

/* ---- lifetime --------------------------------------------------------- */

static void ble_on_bus_error(void *user, int err)
{
	struct ble *b = user;

	pks_log(&b->log, PKS_LOG_WARN, "ble: lost the system bus (%s)", pks_strerror(err));
	if (b->adapter)
		ble_adapter_down(b);
	ble_report_initial(b);
}

int ble_new_on_bus(uv_loop_t *loop, const char *address, const struct pks_logger *log,
		   const struct ble_cb *cb, void *user, struct ble **out)
{
	struct ble *b = NULL;
	int r = PKS_ERR_INVALID;

	if (loop == NULL || out == NULL)
		goto out;
	r = PKS_ERR_NOMEM;
	b = calloc(1, sizeof(*b));
	if (b == NULL)
		goto out;
	b->loop = loop;
	if (log != NULL)
		b->log = *log;
	if (cb != NULL)
		b->cb = *cb;
	b->user = user;
	r = sdbus_uv_open(address, &b->bus);
	if (r != PKS_OK)
		goto out;
	r = PKS_ERR_IO;
	if (sd_bus_match_signal_async(b->bus, &b->match_added, BLUEZ, "/", IFACE_OM,
				      "InterfacesAdded", ble_on_interfaces_added, NULL, b) < 0 ||
	    sd_bus_match_signal_async(b->bus, &b->match_removed, BLUEZ, "/", IFACE_OM,
				      "InterfacesRemoved", ble_on_interfaces_removed, NULL,
				      b) < 0 ||
	    sd_bus_add_match_async(b->bus, &b->match_props,
				   "type='signal',sender='" BLUEZ "',interface='" IFACE_PROPS
				   "',member='PropertiesChanged',path_namespace='/org/bluez'",
				   ble_on_props_changed, NULL, b) < 0 ||
	    sd_bus_add_match_async(b->bus, &b->match_owner,
				   "type='signal',sender='org.freedesktop.DBus',"
				   "interface='org.freedesktop.DBus',member='NameOwnerChanged',"
				   "arg0='" BLUEZ "'",
				   ble_on_owner_changed, NULL, b) < 0)
		goto out;
	r = sdbus_uv_attach(loop, b->bus, ble_on_bus_error, b, &b->uv);
	if (r != PKS_OK)
		goto out;
	ble_refresh(b);
	*out = b;
	b = NULL;
	r = PKS_OK;
out:
	if (b != NULL) {
		sd_bus_slot_unref(b->match_added);
		sd_bus_slot_unref(b->match_removed);
		sd_bus_slot_unref(b->match_props);
		sd_bus_slot_unref(b->match_owner);
		sd_bus_flush_close_unref(b->bus);
		free(b);
	}
	return r;
}

int ble_new(uv_loop_t *loop, const struct pks_logger *log, const struct ble_cb *cb, void *user,
	    struct ble **out)
{
	return ble_new_on_bus(loop, NULL, log, cb, user, out);
}

bool ble_adapter_present(const struct ble *b)
{
	return b != NULL && b->adapter;
}

void ble_free(struct ble *b)
{
	if (b == NULL)
		return;
	/* Radio links we made as central are ours to drop. */
	for (struct ble_link *l = b->links; l != NULL; l = l->next)
		if (l->central && l->dev_path[0] != '\0' && l->stage != BLE_STAGE_CONNECT)
			(void)sd_bus_call_method_async(b->bus, NULL, BLUEZ, l->dev_path,
						       IFACE_DEVICE, "Disconnect", NULL, NULL, "");
	b->freeing = true;
	while (b->links != NULL)
		ble_link_finish(b->links, PKS_ERR_CLOSED);
	ble_sock_close(b->per_write);
	ble_sock_close(b->per_notify);
	b->refresh_call = sd_bus_slot_unref(b->refresh_call);
	b->adv_vtable = sd_bus_slot_unref(b->adv_vtable);
	sd_bus_slot_unref(b->app_om);
	sd_bus_slot_unref(b->app_svc);
	sd_bus_slot_unref(b->app_write);
	sd_bus_slot_unref(b->app_notify);
	sd_bus_slot_unref(b->match_added);
	sd_bus_slot_unref(b->match_removed);
	sd_bus_slot_unref(b->match_props);
	sd_bus_slot_unref(b->match_owner);
	/* Closing the connection makes bluetoothd drop our advertisement and
	   application; the attachment holds the bus until its handles close. */
	/* Hand the last calls (Disconnect, Unregister*) to the daemon; this
	   only waits for the local socket. */
	(void)sd_bus_flush(b->bus);
	sdbus_uv_detach(b->uv);
	sd_bus_unref(b->bus);
	free(b);
}
