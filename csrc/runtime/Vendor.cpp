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

using vendor_detail::LiveVendor;

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

std::mutex start_mutex;

}  // namespace

namespace vendor_detail {

std::atomic<bool> started{false};
LiveVendor value;

const LiveVendor& start() {
  // A failed start is retried on the next call and raises each time, so the
  // user sees the cause instead of a later unrelated error. After a start
  // the answer is read without a lock (live()): it sits on every op's path.
  std::lock_guard<std::mutex> lock(start_mutex);
  if (!started.load(std::memory_order_relaxed)) {
    value = start_runtime();
    started.store(true, std::memory_order_release);
  }
  return value;
}

}  // namespace vendor_detail

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

c10::DeviceIndex device_count() noexcept {
  try {
    return vendor_detail::live().count;
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
