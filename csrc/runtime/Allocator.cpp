// Allocator.cpp - device and pinned-host allocators.
//
// cuda vendor: device memory comes from PyTorch's CUDA caching allocator, so
// one GPU has one pool shared by every route (native kernels, FlagGems,
// plain torch.cuda code); the DataPtr keeps CUDA's deleter and only its
// device is relabelled, which lets CUDA's record_stream find the block.
// host vendor: the flagos runtime's stream-aware caching allocator.
#include "runtime/Allocator.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Logging.h>

#include "common.h"
#include "runtime/HostStreams.h"

namespace torch_fl {

c10::Stream cuda_stream_of(const c10::Stream& s);

namespace {

c10::DeviceIndex current_device_index() {
  return c10::impl::getDeviceGuardImpl(c10::DeviceType::PrivateUse1)->getDevice().index();
}

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

struct DeviceAllocator final : public c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    const auto device = current_device_index();
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
    c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)
        ->recordDataPtrOnStream(data_ptr, cuda_stream_of(stream));
    return;
  }
  // Memory adopted from elsewhere is not the caching allocator's to track.
  if (data_ptr.get_deleter() != &host_device_delete) return;
  FLAGOS_CHECK(flagos_caching_record_stream(
      data_ptr.get(), host_streams::handle(stream.device_index(), stream.id())));
}

REGISTER_ALLOCATOR(c10::DeviceType::PrivateUse1, &g_device_allocator);

}  // namespace torch_fl
