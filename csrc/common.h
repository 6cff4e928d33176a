// common.h - shared helpers of the C++ layer: turning flagos statuses into
// c10 errors, and which vendor (and so which native dispatch key) is live.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/DispatchKey.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

#include "flagos/flagos.h"

namespace torch_fl {

// Raises a c10 error (Python RuntimeError, or torch.OutOfMemoryError for
// FLAGOS_ERROR_OUT_OF_MEMORY) carrying the runtime's message.
[[noreturn]] void raise_status(flagos_status_t status, const char* call);

#define FLAGOS_CHECK(expr)                                     \
  do {                                                         \
    flagos_status_t flagos_check_status_ = (expr);             \
    if (C10_UNLIKELY(flagos_check_status_ != FLAGOS_SUCCESS))  \
      ::torch_fl::raise_status(flagos_check_status_, #expr);   \
  } while (0)

// An on/off environment variable: `unset` when it is not set or empty,
// off when it is "0", on for anything else.
inline bool env_flag(const char* name, bool unset = false) {
  const char* v = std::getenv(name);
  if (!v || !*v) return unset;
  return std::strcmp(v, "0") != 0;
}

enum class Vendor { Host, Cuda };

// Starts the runtime on first use (FLAGOS_VENDOR) and caches the answer.
Vendor live_vendor();
const char* live_vendor_name();

// The device type whose kernels serve the native route: CPU for the host
// vendor, CUDA for the cuda vendor.
c10::DeviceType native_device_type();
c10::DispatchKey native_dispatch_key();

inline c10::Device native_device(c10::DeviceIndex index) {
  // The host vendor's devices are all CPU memory; CPU has one device.
  return native_device_type() == c10::DeviceType::CPU
      ? c10::Device(c10::DeviceType::CPU)
      : c10::Device(native_device_type(), index);
}

inline c10::Device flagos_device(c10::DeviceIndex index) {
  return c10::Device(c10::DeviceType::PrivateUse1, index);
}

// Number of flagos devices (0 if the runtime failed to start).
c10::DeviceIndex device_count() noexcept;
// Throws an IndexError-like c10 error naming the index and the count.
void check_device_index(c10::DeviceIndex index);

}  // namespace torch_fl
