/* Passkey import parsers (in progress: the API in import.h is final). */
#include "agent/import.h"

#include <stdio.h>
#include <string.h>

#include "common/err.h"

int import_parse(const uint8_t *data, size_t len, enum import_format fmt, struct passkey_list **out,
		 enum import_format *detected, char *err, size_t err_len)
{
	(void)data;
	(void)len;
	(void)fmt;
	(void)out;
	(void)detected;
	if (err != NULL && err_len > 0)
		snprintf(err, err_len, "import is not implemented yet");
	return PKS_ERR_UNSUPPORTED;
}

const char *import_format_name(enum import_format fmt)
{
	switch (fmt) {
	case IMPORT_FORMAT_AUTO:
		return "auto";
	case IMPORT_FORMAT_CXF:
		return "cxf";
	case IMPORT_FORMAT_KEEPASSXC:
		return "keepassxc";
	case IMPORT_FORMAT_BITWARDEN:
		return "bitwarden";
	}
	return "unknown";
}

int import_format_from_name(const char *name, enum import_format *out)
{
	static const enum import_format all[] = {IMPORT_FORMAT_AUTO, IMPORT_FORMAT_CXF,
						 IMPORT_FORMAT_KEEPASSXC, IMPORT_FORMAT_BITWARDEN};

	if (name == NULL || out == NULL)
		return PKS_ERR_INVALID;
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcmp(name, import_format_name(all[i])) == 0) {
			*out = all[i];
			return PKS_OK;
		}
	}
	return PKS_ERR_INVALID;
}
