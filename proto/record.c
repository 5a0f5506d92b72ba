/* Records: work in progress; every entry point exists so callers link. */
#include "proto/record.h"

#include <stdlib.h>

#include "common/err.h"

struct record_state {
	uint8_t id[RECORD_ID_LEN];
};

struct record_version *record_version_new(void)
{
	return calloc(1, sizeof(struct record_version));
}

void record_version_free(struct record_version *v)
{
	free(v);
}

int record_version_set_field(struct record_version *v, enum record_field f, const char *value,
			     hlc_t stamp)
{
	return PKS_ERR_UNSUPPORTED;
}

int record_version_set_credential(struct record_version *v, const uint8_t *credential_id,
				  size_t credential_id_len, const char *rp_id,
				  const uint8_t *user_handle, size_t user_handle_len)
{
	return PKS_ERR_UNSUPPORTED;
}

int record_version_set_keys(struct record_version *v, enum record_alg alg,
			    const uint8_t *private_key, size_t private_key_len,
			    const uint8_t *public_key, size_t public_key_len)
{
	return PKS_ERR_UNSUPPORTED;
}

int record_version_set_source(struct record_version *v, const char *source)
{
	return PKS_ERR_UNSUPPORTED;
}

int record_version_add_restore_tag(struct record_version *v, const struct record_delete_tag *tag)
{
	return PKS_ERR_UNSUPPORTED;
}

int record_version_validate(const struct record_version *v)
{
	return PKS_ERR_UNSUPPORTED;
}

int record_id_derive(const uint8_t id_key[RECORD_ID_KEY_LEN], const char *rp_id,
		     const uint8_t *cred_id, size_t cred_len, uint8_t out[RECORD_ID_LEN])
{
	return PKS_ERR_UNSUPPORTED;
}

int record_version_check_id(const struct record_version *v, const uint8_t id_key[RECORD_ID_KEY_LEN])
{
	return PKS_ERR_UNSUPPORTED;
}

void record_device_id(const uint8_t sign_pk[32], uint8_t out[DEVICE_ID_LEN])
{
}

int record_version_encode(const struct record_version *v, uint8_t **out, size_t *out_len)
{
	return PKS_ERR_UNSUPPORTED;
}

int record_version_decode(const uint8_t *buf, size_t len, struct record_version **out)
{
	return PKS_ERR_UNSUPPORTED;
}

int record_version_seal(const struct record_version *v, const uint8_t data_key[RECORD_DATA_KEY_LEN],
			const uint8_t sign_sk[64], const uint8_t nonce[RECORD_NONCE_LEN],
			uint8_t **out, size_t *out_len)
{
	return PKS_ERR_UNSUPPORTED;
}

int record_sealed_peek(const uint8_t *blob, size_t len, struct record_sealed_header *h)
{
	return PKS_ERR_UNSUPPORTED;
}

int record_version_open(const uint8_t *blob, size_t len, const uint8_t author_pk[32],
			const uint8_t data_key[RECORD_DATA_KEY_LEN], struct record_version **out)
{
	return PKS_ERR_UNSUPPORTED;
}

struct record_state *record_state_new(const uint8_t id[RECORD_ID_LEN])
{
	return calloc(1, sizeof(struct record_state));
}

void record_state_free(struct record_state *st)
{
	free(st);
}

int record_state_apply(struct record_state *st, const struct record_version *v)
{
	return PKS_ERR_UNSUPPORTED;
}

bool record_state_dominated(const struct record_state *st, const struct record_version *v)
{
	return false;
}

void record_state_digest(const struct record_state *st, uint8_t out[RECORD_DIGEST_LEN])
{
}

const uint8_t *record_state_id(const struct record_state *st)
{
	return st->id;
}

bool record_state_has_create(const struct record_state *st)
{
	return false;
}

bool record_state_visible(const struct record_state *st)
{
	return false;
}

bool record_state_purged(const struct record_state *st)
{
	return false;
}

hlc_t record_state_purged_hlc(const struct record_state *st)
{
	return 0;
}

const uint8_t *record_state_credential_id(const struct record_state *st, size_t *len)
{
	return NULL;
}

const char *record_state_rp_id(const struct record_state *st)
{
	return NULL;
}

const uint8_t *record_state_user_handle(const struct record_state *st, size_t *len)
{
	return NULL;
}

enum record_alg record_state_alg(const struct record_state *st)
{
	return RECORD_ALG_ES256;
}

const uint8_t *record_state_public_key(const struct record_state *st, size_t *len)
{
	return NULL;
}

bool record_state_backup_eligible(const struct record_state *st)
{
	return false;
}

bool record_state_backup_state(const struct record_state *st)
{
	return false;
}

uint64_t record_state_created_at(const struct record_state *st)
{
	return 0;
}

const char *record_state_source(const struct record_state *st)
{
	return NULL;
}

int record_state_private_key(const struct record_state *st, const uint8_t **key, size_t *len)
{
	return PKS_ERR_STATE;
}

const char *record_state_field(const struct record_state *st, enum record_field f, hlc_t *stamp,
			       uint8_t author[DEVICE_ID_LEN])
{
	return NULL;
}

const char *record_state_user_name(const struct record_state *st)
{
	return "";
}

const char *record_state_display_name(const struct record_state *st)
{
	return "";
}

const char *record_state_notes(const struct record_state *st)
{
	return "";
}

hlc_t record_state_updated_at(const struct record_state *st)
{
	return 0;
}

bool record_state_trashed(const struct record_state *st)
{
	return false;
}

uint64_t record_state_trashed_at(const struct record_state *st)
{
	return 0;
}

size_t record_state_delete_tags(const struct record_state *st, struct record_delete_tag *out,
				size_t cap)
{
	return 0;
}
