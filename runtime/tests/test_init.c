/* test_init.c - status strings, error messages, vendor choice, lazy init. */
#include <stdlib.h>

#include "check.h"

static void status_strings(void) {
  CHECK(!strcmp(flagos_status_string(FLAGOS_SUCCESS), "FLAGOS_SUCCESS"));
  CHECK(!strcmp(flagos_status_string(FLAGOS_ERROR_INVALID_DEVICE), "FLAGOS_ERROR_INVALID_DEVICE"));
  CHECK(!strcmp(flagos_status_string(FLAGOS_ERROR_INTERNAL), "FLAGOS_ERROR_INTERNAL"));
  for (int s = 0; s <= FLAGOS_ERROR_INTERNAL; s++)
    CHECK(!strncmp(flagos_status_string((flagos_status_t)s), "FLAGOS_", 7));
  CHECK(flagos_status_string((flagos_status_t)999) != NULL);
  CHECK(!strcmp(flagos_last_error(), ""));
}

static void bad_choices(void) {
  /* Before any success: every failure leaves flagos uninitialized. */
  setenv("FLAGOS_VENDOR", "bogus", 1);
  int n = -1;
  CHECK_ERR(flagos_device_count(&n), FLAGOS_ERROR_INVALID_ARGUMENT, "'bogus' (from FLAGOS_VENDOR)");
  CHECK(strstr(flagos_last_error(), "auto, host, cuda, metax, ascend") != NULL);
  CHECK_EQ(n, -1); /* outputs untouched on failure */
  flagos_clear_error();
  CHECK(!strcmp(flagos_last_error(), ""));
  CHECK_ERR(flagos_init("Host"), FLAGOS_ERROR_INVALID_ARGUMENT, "unknown vendor 'Host'");
  CHECK_ERR(flagos_init("metax"), FLAGOS_ERROR_VENDOR_UNAVAILABLE, "'metax'");
  CHECK_ERR(flagos_init("ascend"), FLAGOS_ERROR_VENDOR_UNAVAILABLE, "'ascend'");
  setenv("FLAGOS_HOST_DEVICES", "0", 1);
  CHECK_ERR(flagos_init("host"), FLAGOS_ERROR_INVALID_ARGUMENT, "FLAGOS_HOST_DEVICES='0'");
  setenv("FLAGOS_HOST_DEVICES", "65", 1);
  CHECK_ERR(flagos_init("host"), FLAGOS_ERROR_INVALID_ARGUMENT, "from 1 to 64");
  setenv("FLAGOS_HOST_DEVICES", "2x", 1);
  CHECK_ERR(flagos_init("host"), FLAGOS_ERROR_INVALID_ARGUMENT, "FLAGOS_HOST_DEVICES='2x'");
  setenv("FLAGOS_HOST_DEVICES", "3", 1);
  setenv("FLAGOS_HOST_MEMORY_LIMIT", "12Q", 1);
  CHECK_ERR(flagos_init("host"), FLAGOS_ERROR_INVALID_ARGUMENT, "FLAGOS_HOST_MEMORY_LIMIT='12Q'");
  setenv("FLAGOS_HOST_MEMORY_LIMIT", "-5M", 1);
  CHECK_ERR(flagos_init("host"), FLAGOS_ERROR_INVALID_ARGUMENT, "FLAGOS_HOST_MEMORY_LIMIT");
  setenv("FLAGOS_HOST_MEMORY_LIMIT", "96M", 1);
  flagos_vendor_kind_t kind;
  CHECK_ERR(flagos_vendor(&kind), FLAGOS_ERROR_INVALID_ARGUMENT, "'bogus'");
}

static void lazy_init_and_reinit(void) {
  setenv("FLAGOS_VENDOR", "host", 1);
  int n = 0;
  CHECK_OK(flagos_device_count(&n)); /* first call initializes from the environment */
  CHECK_EQ(n, 3);
  flagos_vendor_kind_t kind = FLAGOS_VENDOR_CUDA;
  CHECK_OK(flagos_vendor(&kind));
  CHECK_EQ(kind, FLAGOS_VENDOR_HOST);
  const char *name = NULL;
  CHECK_OK(flagos_vendor_name(&name));
  CHECK(name && !strcmp(name, "host"));
  flagos_device_properties_t p;
  CHECK_OK(flagos_get_device_properties(2, &p));
  CHECK_EQ(p.total_memory, 96u << 20);

  CHECK_OK(flagos_init("host"));
  CHECK_OK(flagos_init("auto"));
  CHECK_OK(flagos_init(NULL));
  CHECK_ERR(flagos_init("cuda"), FLAGOS_ERROR_INVALID_ARGUMENT, "already initialized with vendor 'host'");
  CHECK_ERR(flagos_init("metax"), FLAGOS_ERROR_INVALID_ARGUMENT, "cannot switch to 'metax'");
  CHECK_ERR(flagos_init("nope"), FLAGOS_ERROR_INVALID_ARGUMENT, "unknown vendor 'nope'");
  CHECK_ERR(flagos_vendor(NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "kind is NULL");
  CHECK_ERR(flagos_vendor_name(NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "name is NULL");
  CHECK_ERR(flagos_device_count(NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "count is NULL");
}

int main(void) {
  unsetenv("FLAGOS_HOST_MEMORY_LIMIT");
  status_strings();
  bad_choices();
  lazy_init_and_reinit();
  return check_report();
}
