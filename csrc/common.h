// common.h - shared helpers of the C++ layer: turning flagos statuses into
// c10 errors, and which vendor (and so which native dispatch key) is live.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/DispatchKey.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Exception.h>

#include <atomic>
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

namespace vendor_detail {
struct LiveVendor {
  Vendor vendor = Vendor::Host;
  const char* name = "host";
  c10::DeviceIndex count = 0;
};
extern std::atomic<bool> started;
extern LiveVendor value;
// Starts the runtime (FLAGOS_VENDOR) unless it has started; throws if it
// cannot.
const LiveVendor& start();
// Inline: every routed call asks several times, and the answer never
// changes once the runtime has started.
inline const LiveVendor& live() {
  if (C10_LIKELY(started.load(std::memory_order_acquire))) return value;
  return start();
}
}  // namespace vendor_detail

// Starts the runtime on first use (FLAGOS_VENDOR) and caches the answer.
inline Vendor live_vendor() { return vendor_detail::live().vendor; }
inline const char* live_vendor_name() { return vendor_detail::live().name; }

// The device type whose kernels serve the native route: CPU for the host
// vendor, CUDA for the cuda vendor.
inline c10::DeviceType native_device_type() {
  return live_vendor() == Vendor::Cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
}
inline c10::DispatchKey native_dispatch_key() {
  return live_vendor() == Vendor::Cuda ? c10::DispatchKey::CUDA : c10::DispatchKey::CPU;
}

inline c10::Device native_device(c10::DeviceIndex index) {
  // The host vendor's devices are all CPU memory; CPU has one device.
  return native_device_type() == c10::DeviceType::CPU
      ? c10::Device(c10::DeviceType::CPU)
      : c10::Device(native_device_type(), index);
}

inline c10::Device flagos_device(c10::DeviceIndex index) {
  return c10::Device(c10::DeviceType::PrivateUse1, index);
}

// c10's guard implementation of flagos, and of the vendor's own device type
// (CUDA's, or the CPU's on the host vendor), each looked up once: routed
// calls read the current device through them.
inline const c10::impl::DeviceGuardImplInterface* flagos_guard() {
  static const auto* const guard = c10::impl::getDeviceGuardImpl(c10::DeviceType::PrivateUse1);
  return guard;
}
inline const c10::impl::DeviceGuardImplInterface* native_guard() {
  static const auto* const guard = c10::impl::getDeviceGuardImpl(native_device_type());
  return guard;
}
inline c10::DeviceIndex current_flagos_device() { return flagos_guard()->getDevice().index(); }

// Number of flagos devices (0 if the runtime failed to start).
c10::DeviceIndex device_count() noexcept;
// Throws an IndexError-like c10 error naming the index and the count.
void check_device_index(c10::DeviceIndex index);

}  // namespace torch_fl
