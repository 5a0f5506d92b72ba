#include "proto/membership.h"

#include <sodium.h>

#include "common/err.h"
#include "tests/check.h"

static void test_new(void)
{
	struct membership *m = NULL;

	CHECK_OK(membership_new(&m));
	CHECK(!membership_has_genesis(m));
	membership_free(m);
}

CHECK_MAIN({"/membership/new", test_new})
