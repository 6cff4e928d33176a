// Hooks.cpp - PrivateUse1 hooks: what PyTorch asks of any accelerator
// (generators, pinned memory, device of a pointer, device count/current).
#include <ATen/Context.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "aten/Storage.h"
#include "common.h"
#include "runtime/Allocator.h"
#include "runtime/Generator.h"

namespace torch_fl {
namespace {

struct FlagosHooks final : public at::PrivateUse1HooksInterface {
  void init() const override {
    live_vendor();
    if (live_vendor() == Vendor::Cuda) {
      // The CUDA caching allocator serves flagos memory; it must be set up
      // before the first flagos allocation.
      at::globalContext().lazyInitDevice(c10::DeviceType::CUDA);
    }
  }
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return device_count() > 0; }
  bool hasPrimaryContext(c10::DeviceIndex device) const override {
    check_device_index(device);
    return true;
  }
  c10::DeviceIndex deviceCount() const override { return device_count(); }
  void setCurrentDevice(c10::DeviceIndex device) const override {
    flagos_guard()->setDevice(flagos_device(device));
  }
  c10::DeviceIndex getCurrentDevice() const override { return current_flagos_device(); }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex device) const override {
    return flagos_guard()->exchangeDevice(flagos_device(device)).index();
  }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex device) const override {
    return exchangeDevice(device);
  }
  const at::Generator& getDefaultGenerator(c10::DeviceIndex device) const override {
    return default_generator(device);
  }
  at::Generator getNewGenerator(c10::DeviceIndex device) const override {
    return new_generator(device);
  }
  at::Device getDeviceFromPtr(void* data) const override {
    if (live_vendor() == Vendor::Cuda) {
      return flagos_device(at::detail::getCUDAHooks().getDeviceFromPtr(data).index());
    }
    flagos_pointer_attributes_t attr;
    FLAGOS_CHECK(flagos_pointer_get_attributes(&attr, data));
    TORCH_CHECK(attr.type == FLAGOS_MEMORY_DEVICE, "flagos: pointer ", data,
                " is not flagos device memory");
    return flagos_device(static_cast<c10::DeviceIndex>(attr.device));
  }
  bool isPinnedPtr(const void* data) const override { return is_pinned_host_ptr(data); }
  at::Allocator* getPinnedMemoryAllocator() const override { return pinned_host_allocator(); }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t new_bytes) const override {
    resize_storage_bytes(storage.unsafeGetStorageImpl(), new_bytes);
  }
};

const bool registered = [] {
  at::RegisterPrivateUse1HooksInterface(new FlagosHooks());
  return true;
}();

}  // namespace
}  // namespace torch_fl
