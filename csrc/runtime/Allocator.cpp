// Allocator.cpp - device and pinned-host allocators.
//
// cuda vendor: device memory comes from PyTorch's CUDA caching allocator, so
// one GPU has one pool shared by every route (native kernels, FlagGems,
// plain torch.cuda code); the DataPtr keeps CUDA's deleter and only its
// device is relabelled, which lets CUDA's record_stream find the block.
// host vendor: the flagos runtime's stream-aware caching allocator.
#include "runtime/Allocator.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>
#if __has_include(<c10/core/CachingDeviceAllocator.h>)
#include <c10/core/CachingDeviceAllocator.h>
#endif
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Logging.h>

#include "common.h"
#include "runtime/HostStreams.h"

namespace torch_fl {

c10::Stream cuda_stream_of(const c10::Stream& s);

namespace {

c10::Allocator* cuda_allocator() {
  return at::detail::getCUDAHooks().getCUDADeviceAllocator();
}

void host_device_delete(void* ptr) {
  if (!ptr) return;
  flagos_status_t status = flagos_caching_free(ptr);
  if (status != FLAGOS_SUCCESS) {
    // A deleter cannot throw; the runtime left no state behind.
    LOG(WARNING) << "flagos: freeing device memory failed: " << flagos_last_error();
  }
}

// torch.accelerator's memory functions need a c10::DeviceAllocator; its
// interface is checked here against torch 2.13 and 2.14.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 13)
#define FLAGOS_HAS_DEVICE_ALLOCATOR 1
using AllocatorBase = c10::DeviceAllocator;
#else
#define FLAGOS_HAS_DEVICE_ALLOCATOR 0
using AllocatorBase = c10::Allocator;
#endif

#if FLAGOS_HAS_DEVICE_ALLOCATOR
c10::DeviceAllocator* cuda_device_allocator() {
  auto* allocator = dynamic_cast<c10::DeviceAllocator*>(cuda_allocator());
  TORCH_CHECK(allocator, "flagos: torch's CUDA allocator is not a DeviceAllocator");
  return allocator;
}

// The flagos runtime's statistics in c10's shape (aggregate pool only).
c10::CachingDeviceAllocator::DeviceStats to_device_stats(const flagos_allocator_stats_t& s) {
  c10::CachingDeviceAllocator::DeviceStats out;
  auto set = [](c10::CachingAllocator::Stat& stat, int64_t current, int64_t peak, int64_t allocated,
                int64_t freed) {
    stat.current = current;
    stat.peak = peak;
    stat.allocated = allocated;
    stat.freed = freed;
  };
  constexpr size_t all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  const auto i64 = [](uint64_t v) { return static_cast<int64_t>(v); };
  set(out.allocated_bytes[all], i64(s.allocated_bytes), i64(s.peak_allocated_bytes), 0, 0);
  set(out.reserved_bytes[all], i64(s.reserved_bytes), i64(s.peak_reserved_bytes), 0, 0);
  set(out.active_bytes[all], i64(s.allocated_bytes), i64(s.peak_allocated_bytes), 0, 0);
  set(out.requested_bytes[all], i64(s.requested_bytes), i64(s.requested_bytes), 0, 0);
  set(out.allocation[all], i64(s.active_blocks), i64(s.active_blocks), i64(s.num_allocs), i64(s.num_frees));
  set(out.active[all], i64(s.active_blocks), i64(s.active_blocks), 0, 0);
  set(out.segment[all], i64(s.segments), i64(s.segments), i64(s.num_device_mallocs),
      i64(s.num_device_frees));
  out.num_alloc_retries = i64(s.num_alloc_retries);
  out.num_ooms = i64(s.num_ooms);
  out.num_device_alloc = i64(s.num_device_mallocs);
  out.num_device_free = i64(s.num_device_frees);
  return out;
}
#endif

struct DeviceAllocator final : public AllocatorBase {
  c10::DataPtr allocate(size_t nbytes) override {
    const auto device = current_flagos_device();
    if (live_vendor() == Vendor::Cuda) {
      c10::DataPtr data = cuda_allocator()->allocate(nbytes);
      data.unsafe_set_device(flagos_device(device));
      return data;
    }
    void* ptr = nullptr;
    if (nbytes > 0) {
      FLAGOS_CHECK(flagos_caching_malloc(&ptr, nbytes, device, host_streams::current_handle(device)));
    }
    return {ptr, ptr, &host_device_delete, flagos_device(device)};
  }

  c10::DeleterFnPtr raw_deleter() const override {
    if (live_vendor() == Vendor::Cuda) return cuda_allocator()->raw_deleter();
    return &host_device_delete;
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    if (live_vendor() == Vendor::Cuda) return cuda_allocator()->copy_data(dest, src, count);
    FLAGOS_CHECK(flagos_memcpy(dest, src, count, FLAGOS_MEMCPY_DEVICE_TO_DEVICE));
  }

#if FLAGOS_HAS_DEVICE_ALLOCATOR
  bool initialized() override { return true; }

  void emptyCache(c10::MempoolId_t mempool_id = {0, 0}) override {
    if (live_vendor() == Vendor::Cuda) return cuda_device_allocator()->emptyCache(mempool_id);
    FLAGOS_CHECK(flagos_caching_empty_cache());
  }

  void recordStream(const c10::DataPtr& ptr, c10::Stream stream) override {
    record_data_ptr_on_stream(ptr, stream);
  }

  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(c10::DeviceIndex device) override {
    check_device_index(device);
    if (live_vendor() == Vendor::Cuda) return cuda_device_allocator()->getDeviceStats(device);
    flagos_allocator_stats_t stats;
    FLAGOS_CHECK(flagos_caching_get_stats(device, &stats));
    return to_device_stats(stats);
  }

  void resetAccumulatedStats(c10::DeviceIndex device) override {
    check_device_index(device);
    if (live_vendor() == Vendor::Cuda) return cuda_device_allocator()->resetAccumulatedStats(device);
    FLAGOS_CHECK(flagos_caching_reset_accumulated_stats(device));
  }

  void resetPeakStats(c10::DeviceIndex device) override {
    check_device_index(device);
    if (live_vendor() == Vendor::Cuda) return cuda_device_allocator()->resetPeakStats(device);
    FLAGOS_CHECK(flagos_caching_reset_peak_stats(device));
  }

  std::pair<size_t, size_t> getMemoryInfo(c10::DeviceIndex device) override {
    check_device_index(device);
    size_t free_bytes = 0, total_bytes = 0;
    FLAGOS_CHECK(flagos_mem_get_info(device, &free_bytes, &total_bytes));
    return {free_bytes, total_bytes};
  }
#endif
};

void host_pinned_delete(void* ptr) {
  if (!ptr) return;
  // A non_blocking copy may still be reading or writing this block on some
  // device's stream; let every device drain first.
  int count = 0, previous = 0;
  if (flagos_device_count(&count) == FLAGOS_SUCCESS && flagos_get_device(&previous) == FLAGOS_SUCCESS) {
    for (int d = 0; d < count; ++d) {
      if (flagos_set_device(d) == FLAGOS_SUCCESS) flagos_device_synchronize();
    }
    flagos_set_device(previous);
  }
  if (flagos_host_free(ptr) != FLAGOS_SUCCESS) {
    LOG(WARNING) << "flagos: freeing pinned memory failed: " << flagos_last_error();
  }
}

struct HostPinnedAllocator final : public c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    void* ptr = nullptr;
    if (nbytes > 0) FLAGOS_CHECK(flagos_host_malloc(&ptr, nbytes));
    return {ptr, ptr, &host_pinned_delete, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &host_pinned_delete; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

DeviceAllocator g_device_allocator;
HostPinnedAllocator g_host_pinned_allocator;

}  // namespace

c10::Allocator* device_allocator() { return &g_device_allocator; }

c10::Allocator* pinned_host_allocator() {
  if (live_vendor() == Vendor::Cuda) return at::detail::getCUDAHooks().getPinnedMemoryAllocator();
  return &g_host_pinned_allocator;
}

bool is_pinned_host_ptr(const void* ptr) {
  if (live_vendor() == Vendor::Cuda) return at::detail::getCUDAHooks().isPinnedPtr(ptr);
  flagos_pointer_attributes_t attr;
  if (flagos_pointer_get_attributes(&attr, ptr) != FLAGOS_SUCCESS) {
    flagos_clear_error();
    return false;
  }
  return attr.type == FLAGOS_MEMORY_HOST;
}

void record_data_ptr_on_stream(const c10::DataPtr& data_ptr, const c10::Stream& stream) {
  if (!data_ptr.get()) return;
  if (live_vendor() == Vendor::Cuda) {
    native_guard()->recordDataPtrOnStream(data_ptr, cuda_stream_of(stream));
    return;
  }
  // Memory adopted from elsewhere is not the caching allocator's to track.
  if (data_ptr.get_deleter() != &host_device_delete) return;
  FLAGOS_CHECK(flagos_caching_record_stream(
      data_ptr.get(), host_streams::handle(stream.device_index(), stream.id())));
}

REGISTER_ALLOCATOR(c10::DeviceType::PrivateUse1, &g_device_allocator);

}  // namespace torch_fl
