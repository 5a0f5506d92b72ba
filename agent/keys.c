/*
 * The local key-encryption key and the wrapping of secrets at rest. All
 * cryptography is libsodium's: Argon2id for passphrases, XChaCha20-Poly1305
 * for wrapping (its 24-byte nonces are safe to pick at random).
 */
#include "agent/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bytes.h"
#include "common/err.h"

#define KEYS_NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define KEYS_TAG_BYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
/* Params blob: the part the check value authenticates, before its nonce. */
#define KEYS_PARAMS_HEADER_BYTES (1 + 1 + 4 + 8 + KEYS_SALT_BYTES)
#define KEYS_ALG_ARGON2ID13 2

static const char KEYS_CHECK_LABEL[] = "pksync kek check v1";
/* libsodium wants non-NULL message pointers even for empty messages. */
static const uint8_t keys_empty[1];

_Static_assert(KEYS_PARAMS_BYTES == KEYS_PARAMS_HEADER_BYTES + KEYS_NONCE_BYTES + KEYS_TAG_BYTES,
	       "params blob layout");
_Static_assert(KEYS_WRAP_OVERHEAD == 1 + KEYS_NONCE_BYTES + KEYS_TAG_BYTES, "wrap layout");
_Static_assert(KEYS_KEK_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "KEK size");
_Static_assert(KEYS_SALT_BYTES == crypto_pwhash_SALTBYTES, "salt size");
_Static_assert(KEYS_ALG_ARGON2ID13 == crypto_pwhash_ALG_ARGON2ID13, "Argon2id id");
_Static_assert(KEYS_KDF_OPSLIMIT_MIN >= crypto_pwhash_argon2id_OPSLIMIT_MIN, "opslimit floor");
_Static_assert(KEYS_KDF_MEMLIMIT_MIN >= crypto_pwhash_argon2id_MEMLIMIT_MIN, "memlimit floor");

const struct keys_kdf_params keys_kdf_default = {3, (uint64_t)64 << 20};
const struct keys_kdf_params keys_kdf_fast = {KEYS_KDF_OPSLIMIT_MIN, KEYS_KDF_MEMLIMIT_MIN};

struct keys_kek {
	uint8_t key[KEYS_KEK_BYTES];
};

/* The parsed public part of a params blob. */
struct keys_params {
	struct keys_kdf_params kdf;
	uint8_t salt[KEYS_SALT_BYTES];
	uint8_t nonce[KEYS_NONCE_BYTES];
	uint8_t tag[KEYS_TAG_BYTES];
	uint8_t header[KEYS_PARAMS_HEADER_BYTES];
};

static int keys_kdf_ok(const struct keys_kdf_params *kdf)
{
	return kdf->opslimit >= KEYS_KDF_OPSLIMIT_MIN && kdf->opslimit <= KEYS_KDF_OPSLIMIT_MAX &&
	       kdf->memlimit >= KEYS_KDF_MEMLIMIT_MIN && kdf->memlimit <= KEYS_KDF_MEMLIMIT_MAX;
}

/* A zeroed KEK in guarded memory, or NULL. */
static struct keys_kek *keys_kek_alloc(void)
{
	struct keys_kek *kek;

	if (sodium_init() < 0)
		return NULL;
	kek = sodium_malloc(sizeof(*kek));
	if (kek != NULL)
		sodium_memzero(kek, sizeof(*kek));
	return kek;
}

/* Once filled, the key is never written again: make it read-only. */
static int keys_kek_seal(struct keys_kek *kek)
{
	return sodium_mprotect_readonly(kek) == 0 ? PKS_OK : PKS_ERR_INTERNAL;
}

void keys_kek_free(struct keys_kek *kek)
{
	/* sodium_free makes the pages writable again and wipes them. */
	if (kek != NULL)
		sodium_free(kek);
}

void keys_secret_free(void *p, size_t len)
{
	(void)len;
	if (p != NULL)
		sodium_free(p);
}

static void keys_put_be32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--) {
		p[i] = (uint8_t)(v & 0xff);
		v >>= 8;
	}
}

static void keys_put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)(v & 0xff);
		v >>= 8;
	}
}

static int keys_params_parse(const uint8_t *blob, size_t len, struct keys_params *out)
{
	struct pks_cursor cur = pks_cursor_init(blob, len);
	struct keys_params p;
	uint8_t version = 0, alg = 0;
	uint32_t ops = 0;
	uint64_t mem = 0;
	int r = PKS_ERR_MALFORMED;

	if (blob == NULL)
		goto out;
	if (len > KEYS_PARAMS_BYTES) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	if ((r = pks_cursor_u8(&cur, &version)) != PKS_OK)
		goto out;
	if (version != KEYS_PARAMS_VERSION) {
		r = PKS_ERR_UNSUPPORTED;
		goto out;
	}
	if ((r = pks_cursor_u8(&cur, &alg)) != PKS_OK)
		goto out;
	if (alg != KEYS_ALG_ARGON2ID13) {
		r = PKS_ERR_UNSUPPORTED;
		goto out;
	}
	if ((r = pks_cursor_be32(&cur, &ops)) != PKS_OK ||
	    (r = pks_cursor_be64(&cur, &mem)) != PKS_OK ||
	    (r = pks_cursor_read(&cur, p.salt, sizeof(p.salt))) != PKS_OK ||
	    (r = pks_cursor_read(&cur, p.nonce, sizeof(p.nonce))) != PKS_OK ||
	    (r = pks_cursor_read(&cur, p.tag, sizeof(p.tag))) != PKS_OK)
		goto out;
	if (pks_cursor_left(&cur) != 0) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	p.kdf.opslimit = ops;
	p.kdf.memlimit = mem;
	if (!keys_kdf_ok(&p.kdf)) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	memcpy(p.header, blob, sizeof(p.header));
	*out = p;
	r = PKS_OK;
out:
	return r;
}

int keys_params_info(const uint8_t *params, size_t params_len, struct keys_kdf_params *out)
{
	struct keys_params p;
	int r = keys_params_parse(params, params_len, &p);

	if (r == PKS_OK)
		*out = p.kdf;
	return r;
}

/* The associated data of the check value: label || params header. */
static void keys_check_ad(uint8_t ad[sizeof(KEYS_CHECK_LABEL) - 1 + KEYS_PARAMS_HEADER_BYTES],
			  const uint8_t header[KEYS_PARAMS_HEADER_BYTES])
{
	memcpy(ad, KEYS_CHECK_LABEL, sizeof(KEYS_CHECK_LABEL) - 1);
	memcpy(ad + sizeof(KEYS_CHECK_LABEL) - 1, header, KEYS_PARAMS_HEADER_BYTES);
}

/* Argon2id of the passphrase into kek->key. */
static int keys_derive(struct keys_kek *kek, const char *passphrase, size_t passphrase_len,
		       const struct keys_kdf_params *kdf, const uint8_t salt[KEYS_SALT_BYTES])
{
	if (crypto_pwhash(kek->key, sizeof(kek->key), passphrase, passphrase_len, salt,
			  kdf->opslimit, (size_t)kdf->memlimit, crypto_pwhash_ALG_ARGON2ID13) != 0)
		return PKS_ERR_NOMEM; /* libsodium's only failure here is memory */
	return PKS_OK;
}

int keys_kek_create(const char *passphrase, size_t passphrase_len,
		    const struct keys_kdf_params *kdf, uint8_t **params, size_t *params_len,
		    struct keys_kek **out)
{
	struct keys_kek *kek = NULL;
	uint8_t *blob = NULL;
	uint8_t ad[sizeof(KEYS_CHECK_LABEL) - 1 + KEYS_PARAMS_HEADER_BYTES];
	uint8_t *salt, *nonce, *tag;
	uint8_t empty_out[1];
	int r = PKS_ERR_INVALID;

	if (kdf == NULL)
		kdf = KEYS_KDF_DEFAULT;
	if (passphrase == NULL || passphrase_len == 0 || passphrase_len > KEYS_PASSPHRASE_MAX ||
	    !keys_kdf_ok(kdf) || params == NULL || params_len == NULL || out == NULL)
		goto out;
	kek = keys_kek_alloc();
	blob = malloc(KEYS_PARAMS_BYTES);
	if (kek == NULL || blob == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	salt = blob + 1 + 1 + 4 + 8;
	nonce = blob + KEYS_PARAMS_HEADER_BYTES;
	tag = nonce + KEYS_NONCE_BYTES;
	blob[0] = KEYS_PARAMS_VERSION;
	blob[1] = KEYS_ALG_ARGON2ID13;
	keys_put_be32(blob + 2, kdf->opslimit);
	keys_put_be64(blob + 6, kdf->memlimit);
	randombytes_buf(salt, KEYS_SALT_BYTES);
	randombytes_buf(nonce, KEYS_NONCE_BYTES);

	r = keys_derive(kek, passphrase, passphrase_len, kdf, salt);
	if (r != PKS_OK)
		goto out;
	keys_check_ad(ad, blob);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
		empty_out, tag, NULL, keys_empty, 0, ad, sizeof(ad), NULL, nonce, kek->key) != 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	r = keys_kek_seal(kek);
	if (r != PKS_OK)
		goto out;
	*params = blob;
	*params_len = KEYS_PARAMS_BYTES;
	*out = kek;
	blob = NULL;
	kek = NULL;
	r = PKS_OK;
out:
	free(blob);
	keys_kek_free(kek);
	return r;
}

int keys_kek_unlock(const uint8_t *params, size_t params_len, const char *passphrase,
		    size_t passphrase_len, struct keys_kek **out)
{
	struct keys_kek *kek = NULL;
	struct keys_params p;
	uint8_t ad[sizeof(KEYS_CHECK_LABEL) - 1 + KEYS_PARAMS_HEADER_BYTES];
	uint8_t empty_out[1];
	int r;

	r = keys_params_parse(params, params_len, &p);
	if (r != PKS_OK)
		goto out;
	if (out == NULL) {
		r = PKS_ERR_INVALID;
		goto out;
	}
	if (passphrase == NULL || passphrase_len == 0 || passphrase_len > KEYS_PASSPHRASE_MAX) {
		r = PKS_ERR_PASSPHRASE;
		goto out;
	}
	kek = keys_kek_alloc();
	if (kek == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	r = keys_derive(kek, passphrase, passphrase_len, &p.kdf, p.salt);
	if (r != PKS_OK)
		goto out;
	keys_check_ad(ad, p.header);
	if (crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
		empty_out, NULL, keys_empty, 0, p.tag, ad, sizeof(ad), p.nonce, kek->key) != 0) {
		r = PKS_ERR_PASSPHRASE;
		goto out;
	}
	r = keys_kek_seal(kek);
	if (r != PKS_OK)
		goto out;
	*out = kek;
	kek = NULL;
	r = PKS_OK;
out:
	keys_kek_free(kek);
	return r;
}

static int keys_write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? pks_err_from_errno(errno) : PKS_ERR_IO;
		p += w;
		n -= (size_t)w;
	}
	return PKS_OK;
}

/* fsync of the folder holding path, so the new directory entry is durable too. */
static int keys_sync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = NULL;
	int fd = -1;
	int r = PKS_ERR_NOMEM;

	if (slash == NULL)
		dir = strdup(".");
	else if (slash == path)
		dir = strdup("/");
	else
		dir = strndup(path, (size_t)(slash - path));
	if (dir == NULL)
		goto out;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0) {
		r = pks_err_from_errno(errno);
		goto out;
	}
	r = PKS_OK;
out:
	if (fd >= 0)
		close(fd);
	free(dir);
	return r;
}

int keys_kek_create_file(const char *path, struct keys_kek **out)
{
	struct keys_kek *kek = NULL;
	int fd = -1, created = 0;
	int r = PKS_ERR_INVALID;

	if (path == NULL || path[0] == '\0' || out == NULL)
		goto out;
	kek = keys_kek_alloc();
	if (kek == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	randombytes_buf(kek->key, sizeof(kek->key));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = pks_err_from_errno(errno);
		goto out;
	}
	created = 1;
	r = keys_write_all(fd, kek->key, sizeof(kek->key));
	if (r != PKS_OK)
		goto out;
	if (fsync(fd) != 0) {
		r = pks_err_from_errno(errno);
		goto out;
	}
	r = close(fd) == 0 ? PKS_OK : pks_err_from_errno(errno);
	fd = -1;
	if (r != PKS_OK)
		goto out;
	r = keys_sync_parent(path);
	if (r != PKS_OK)
		goto out;
	r = keys_kek_seal(kek);
	if (r != PKS_OK)
		goto out;
	*out = kek;
	kek = NULL;
	r = PKS_OK;
out:
	if (fd >= 0)
		close(fd);
	if (r != PKS_OK && created)
		unlink(path);
	keys_kek_free(kek);
	return r;
}

int keys_kek_load_file(const char *path, struct keys_kek **out)
{
	struct keys_kek *kek = NULL;
	struct stat st;
	uint8_t extra;
	size_t got = 0;
	int fd = -1;
	int r = PKS_ERR_INVALID;

	if (path == NULL || path[0] == '\0' || out == NULL)
		goto out;
	/* O_NONBLOCK: a FIFO planted at path must not hang us before fstat refuses it. */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		r = errno == ELOOP ? PKS_ERR_PERM : pks_err_from_errno(errno);
		goto out;
	}
	if (fstat(fd, &st) != 0) {
		r = pks_err_from_errno(errno);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	if (st.st_uid != geteuid() || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		r = PKS_ERR_PERM;
		goto out;
	}
	if (st.st_size != KEYS_KEK_BYTES) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	kek = keys_kek_alloc();
	if (kek == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	while (got < sizeof(kek->key)) {
		ssize_t n = read(fd, kek->key + got, sizeof(kek->key) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = pks_err_from_errno(errno);
			goto out;
		}
		if (n == 0) {
			r = PKS_ERR_MALFORMED;
			goto out;
		}
		got += (size_t)n;
	}
	/* The file may have grown since fstat: it must end here. */
	if (read(fd, &extra, 1) != 0) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	r = keys_kek_seal(kek);
	if (r != PKS_OK)
		goto out;
	*out = kek;
	kek = NULL;
	r = PKS_OK;
out:
	if (fd >= 0)
		close(fd);
	keys_kek_free(kek);
	return r;
}

/* The wrap's associated data: version || label. Returns its length, or 0 for a bad label. */
static size_t keys_wrap_ad(uint8_t ad[1 + KEYS_LABEL_MAX], const char *label)
{
	size_t n;

	if (label == NULL)
		return 0;
	n = strnlen(label, KEYS_LABEL_MAX + 1);
	if (n == 0 || n > KEYS_LABEL_MAX)
		return 0;
	ad[0] = KEYS_WRAP_VERSION;
	memcpy(ad + 1, label, n);
	return n + 1;
}

int keys_wrap(const struct keys_kek *kek, const char *label, const uint8_t *pt, size_t pt_len,
	      uint8_t **out, size_t *out_len)
{
	uint8_t ad[1 + KEYS_LABEL_MAX];
	size_t ad_len = keys_wrap_ad(ad, label);
	uint8_t *blob = NULL;
	size_t blob_len;
	int r = PKS_ERR_INVALID;

	if (kek == NULL || ad_len == 0 || (pt == NULL && pt_len > 0) || out == NULL ||
	    out_len == NULL)
		goto out;
	if (pt_len > KEYS_WRAP_PLAINTEXT_MAX) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	blob_len = pt_len + KEYS_WRAP_OVERHEAD;
	blob = malloc(blob_len);
	if (blob == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	blob[0] = KEYS_WRAP_VERSION;
	randombytes_buf(blob + 1, KEYS_NONCE_BYTES);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(blob + 1 + KEYS_NONCE_BYTES, NULL,
						       pt != NULL ? pt : keys_empty, pt_len, ad,
						       ad_len, NULL, blob + 1, kek->key) != 0) {
		r = PKS_ERR_CRYPTO;
		goto out;
	}
	*out = blob;
	*out_len = blob_len;
	blob = NULL;
	r = PKS_OK;
out:
	free(blob);
	return r;
}

int keys_unwrap(const struct keys_kek *kek, const char *label, const uint8_t *blob, size_t blob_len,
		uint8_t **pt, size_t *pt_len)
{
	uint8_t ad[1 + KEYS_LABEL_MAX];
	size_t ad_len = keys_wrap_ad(ad, label);
	uint8_t *plain = NULL;
	size_t plain_len = 0;
	int r = PKS_ERR_INVALID;

	if (kek == NULL || ad_len == 0 || pt == NULL || pt_len == NULL)
		goto out;
	if (blob == NULL || blob_len < KEYS_WRAP_OVERHEAD) {
		r = PKS_ERR_MALFORMED;
		goto out;
	}
	if (blob_len > KEYS_WRAP_PLAINTEXT_MAX + KEYS_WRAP_OVERHEAD) {
		r = PKS_ERR_TOO_LARGE;
		goto out;
	}
	if (blob[0] != KEYS_WRAP_VERSION) {
		r = PKS_ERR_UNSUPPORTED;
		goto out;
	}
	plain_len = blob_len - KEYS_WRAP_OVERHEAD;
	plain = sodium_malloc(plain_len);
	if (plain == NULL) {
		r = PKS_ERR_NOMEM;
		goto out;
	}
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
		plain, NULL, NULL, blob + 1 + KEYS_NONCE_BYTES, blob_len - 1 - KEYS_NONCE_BYTES, ad,
		ad_len, blob + 1, kek->key) != 0) {
		r = PKS_ERR_AUTH;
		goto out;
	}
	*pt = plain;
	*pt_len = plain_len;
	plain = NULL;
	r = PKS_OK;
out:
	keys_secret_free(plain, plain_len);
	return r;
}
