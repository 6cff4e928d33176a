// Vendor.cpp - starts the C runtime and records which vendor is live.
//
// The runtime picks a vendor by FLAGOS_VENDOR; this layer adds the one fact
// the C runtime cannot know: the native route needs PyTorch's kernels for
// the vendor, so a CPU-only torch can only serve the host vendor.
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>

#include "common.h"

namespace torch_fl {
namespace {

struct LiveVendor {
  Vendor vendor = Vendor::Host;
  const char* name = "host";
  c10::DeviceIndex count = 0;
};

bool torch_has_cuda_kernels() {
  return at::detail::getCUDAHooks().hasCUDA();
}

LiveVendor start_runtime() {
  const char* env = std::getenv("FLAGOS_VENDOR");
  std::string wanted = (env && *env) ? env : "auto";
  if (wanted == "auto" && !torch_has_cuda_kernels()) {
    // A GPU may be present, but without CUDA kernels in torch the native
    // route could not run on it.
    wanted = "host";
  }
  if (wanted == "cuda") {
    TORCH_CHECK(torch_has_cuda_kernels(),
                "flagos: FLAGOS_VENDOR=cuda needs a CUDA build of PyTorch and a visible GPU; "
                "this torch has none (set FLAGOS_VENDOR=host or auto)");
  }
  FLAGOS_CHECK(flagos_init(wanted.c_str()));
  LiveVendor live;
  flagos_vendor_kind_t kind;
  FLAGOS_CHECK(flagos_vendor(&kind));
  FLAGOS_CHECK(flagos_vendor_name(&live.name));
  switch (kind) {
    case FLAGOS_VENDOR_HOST: live.vendor = Vendor::Host; break;
    case FLAGOS_VENDOR_CUDA: live.vendor = Vendor::Cuda; break;
    default:
      TORCH_CHECK(false, "flagos: vendor '", live.name,
                  "' has no native route in this build of torch_fl");
  }
  int count = 0;
  FLAGOS_CHECK(flagos_device_count(&count));
  live.count = static_cast<c10::DeviceIndex>(count);
  return live;
}

const LiveVendor& live() {
  // A failed start is retried on the next call and raises each time, so the
  // user sees the cause instead of a later unrelated error. After a start
  // the answer is read without a lock: it sits on every op's path.
  static std::mutex mutex;
  static LiveVendor value;
  static std::atomic<bool> started{false};
  if (C10_LIKELY(started.load(std::memory_order_acquire))) return value;
  std::lock_guard<std::mutex> lock(mutex);
  if (!started.load(std::memory_order_relaxed)) {
    value = start_runtime();
    started.store(true, std::memory_order_release);
  }
  return value;
}

}  // namespace

[[noreturn]] void raise_status(flagos_status_t status, const char* /*call*/) {
  const char* message = flagos_last_error();
  std::string text = (message && *message) ? message : flagos_status_string(status);
  if (status == FLAGOS_ERROR_OUT_OF_MEMORY) {
    TORCH_CHECK_WITH(OutOfMemoryError, false, text);
  }
  if (status == FLAGOS_ERROR_INVALID_DEVICE) {
    TORCH_CHECK_INDEX(false, text);
  }
  TORCH_CHECK(false, text, " [", flagos_status_string(status), "]");
}

Vendor live_vendor() { return live().vendor; }
const char* live_vendor_name() { return live().name; }

c10::DeviceType native_device_type() {
  return live().vendor == Vendor::Cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
}

c10::DispatchKey native_dispatch_key() {
  return live().vendor == Vendor::Cuda ? c10::DispatchKey::CUDA : c10::DispatchKey::CPU;
}

c10::DeviceIndex device_count() noexcept {
  try {
    return live().count;
  } catch (...) {
    return 0;
  }
}

void check_device_index(c10::DeviceIndex index) {
  auto count = device_count();
  TORCH_CHECK_INDEX(index >= 0 && index < count, "flagos: device index ", static_cast<int>(index),
                    " is out of range: flagos has ", static_cast<int>(count), " device",
                    count == 1 ? "" : "s", " (vendor ", live_vendor_name(), ")");
}

}  // namespace torch_fl
