/* launch.c - launching compiled device kernels (FlagGems' Triton kernels,
 * replayed without Python). Validates what can be checked without the
 * vendor, then hands the launch to it. */
#include "core/internal.h"

FLAGOS_API flagos_status_t flagos_launch_kernel(const flagos_kernel_launch_t *launch,
                                                void *native_stream) {
  NEED_PTR(launch, "flagos_launch_kernel");
  NEED_VENDOR(v);
  if (!launch->function)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_launch_kernel: the kernel handle is NULL");
  for (int i = 0; i < 3; ++i) {
    if (launch->grid[i] == 0 || launch->block[i] == 0)
      return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                              "flagos_launch_kernel: grid %ux%ux%u and block %ux%ux%u must be "
                              "positive in every dimension",
                              launch->grid[0], launch->grid[1], launch->grid[2], launch->block[0],
                              launch->block[1], launch->block[2]);
  }
  if (!v->launch_kernel)
    return flagos_set_error(FLAGOS_ERROR_NOT_SUPPORTED,
                            "flagos_launch_kernel: the %s vendor runs no compiled device kernels",
                            v->name);
  return v->launch_kernel(launch, native_stream);
}
