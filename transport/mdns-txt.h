/*
 * DNS-SD TXT record data (RFC 6763 §6) for _pksync._tcp: building it from
 * key=value pairs and parsing it strictly. Pure code: no I/O, no allocation.
 *
 * The rdata is a sequence of length-prefixed strings "key" or "key=value".
 * The parser accepts exactly what the builder can produce: keys of 1..9
 * printable ASCII characters (0x20..0x7e, RFC 6763 §6.4) without '=', no duplicate keys
 * (compared case-insensitively, as DNS-SD does), at most 16 strings of at
 * most 255 bytes each and at most MDNS_TXT_MAX bytes in all. Empty rdata and
 * the lone empty string (a single 0 byte, what DNS-SD publishes for "no
 * keys") both mean no pairs. Values are opaque bytes.
 */
#ifndef PKS_TRANSPORT_MDNS_TXT_H
#define PKS_TRANSPORT_MDNS_TXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MDNS_TXT_MAX 1300u
#define MDNS_TXT_KEY_MAX 9u
#define MDNS_TXT_STRINGS_MAX 16u
#define MDNS_TXT_STRING_MAX 255u

/* One pair; a plain value. has_value false is a boolean key ("key" with no
   '='); a key with an empty value ("key=") has has_value true, value_len 0. */
struct mdns_txt_pair {
	char key[MDNS_TXT_KEY_MAX + 1]; /* NUL-terminated */
	bool has_value;
	uint8_t value_len;
	uint8_t value[MDNS_TXT_STRING_MAX];
};

/* A parsed or to-be-built TXT record; a plain value (about 4 KiB). */
struct mdns_txt {
	size_t n;
	struct mdns_txt_pair pairs[MDNS_TXT_STRINGS_MAX];
};

/* Empties t. */
void mdns_txt_init(struct mdns_txt *t);

/*
 * Appends a pair (value NULL: boolean key). PKS_ERR_INVALID for a bad key
 * (empty, too long, '=' or non-printable) or a NULL key, PKS_ERR_EXISTS for a
 * duplicate key, PKS_ERR_TOO_LARGE for a 17th pair or a string over 255
 * bytes. t is unchanged on error.
 */
int mdns_txt_add(struct mdns_txt *t, const char *key, const void *value, size_t value_len);

/* Appends "key=value" or "key" text (value up to the NUL); errors as
   mdns_txt_add(). */
int mdns_txt_add_text(struct mdns_txt *t, const char *key_value);

/*
 * Serializes t in order into out (cap bytes). An empty t gives the single
 * 0 byte DNS-SD requires. PKS_ERR_TOO_LARGE when the result would exceed cap
 * or MDNS_TXT_MAX; *out_len is written only on success.
 */
int mdns_txt_build(const struct mdns_txt *t, uint8_t *out, size_t cap, size_t *out_len);

/*
 * Parses rdata strictly into out (overwritten only on success).
 * PKS_ERR_TOO_LARGE over MDNS_TXT_MAX bytes or MDNS_TXT_STRINGS_MAX strings,
 * PKS_ERR_TRUNCATED when a length prefix runs past the end, PKS_ERR_MALFORMED
 * for an empty string (other than the lone one), a bad key or a duplicate.
 */
int mdns_txt_parse(const uint8_t *data, size_t len, struct mdns_txt *out);

/* The pair with this key (case-insensitive), or NULL. */
const struct mdns_txt_pair *mdns_txt_get(const struct mdns_txt *t, const char *key);

/* True when key is a valid TXT key as described above. */
bool mdns_txt_key_valid(const char *key, size_t len);

#endif
