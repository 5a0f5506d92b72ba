#include "common/err.h"

#include <errno.h>

const char *pks_strerror(int err)
{
	switch (err) {
	case PKS_OK:
		return "success";
#define PKS_ERR_CASE(name, value, text)                                                            \
	case PKS_ERR_##name:                                                                       \
		return text;
		PKS_ERRORS(PKS_ERR_CASE)
#undef PKS_ERR_CASE
	default:
		return "unknown error";
	}
}

int pks_err_from_errno(int errnum)
{
	switch (errnum) {
	case 0:
		return PKS_OK;
	case ENOMEM:
		return PKS_ERR_NOMEM;
	case EACCES:
	case EPERM:
		return PKS_ERR_PERM;
	case ENOENT:
		return PKS_ERR_NOT_FOUND;
	case EEXIST:
		return PKS_ERR_EXISTS;
	case EINVAL:
		return PKS_ERR_INVALID;
	case EAGAIN:
	case EBUSY:
		return PKS_ERR_BUSY;
	case ETIMEDOUT:
		return PKS_ERR_TIMEOUT;
	case EPIPE:
	case ECONNRESET:
		return PKS_ERR_CLOSED;
	case EFBIG:
	case E2BIG:
		return PKS_ERR_TOO_LARGE;
	default:
		return PKS_ERR_IO;
	}
}
