// DeviceGuard.cpp - c10's device/stream/event interface for flagos.
//
// On the cuda vendor a flagos device, stream or event *is* a CUDA one: every
// call is forwarded to PyTorch's CUDA guard with the device type swapped.
// Making a flagos stream current therefore makes it torch's current CUDA
// stream, so native kernels, FlagGems' Triton launches and the CUDA caching
// allocator all follow the same stream. On the host vendor the flagos
// runtime's streams and events serve.
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "common.h"
#include "runtime/HostStreams.h"

namespace torch_fl {
namespace {

using c10::Device;
using c10::DeviceIndex;
using c10::DeviceType;
using c10::Stream;

// Every flagos guard call on the cuda vendor (a routed call's device,
// autograd's streams) forwards to it; only called on that vendor.
const c10::impl::DeviceGuardImplInterface* cuda_guard() { return native_guard(); }

// A flagos device with a checked index (-1 means the current device); the
// CUDA guard would index its per-device tables with it unchecked.
Device checked(Device d);

Device to_cuda(Device d) { return Device(DeviceType::CUDA, d.index()); }
Stream to_cuda(const Stream& s) {
  return Stream(Stream::UNSAFE, to_cuda(s.device()), s.id());
}
Device to_flagos(Device d) { return Device(DeviceType::PrivateUse1, d.index()); }
Stream to_flagos(const Stream& s) {
  return Stream(Stream::UNSAFE, to_flagos(s.device()), s.id());
}

bool on_cuda() { return live_vendor() == Vendor::Cuda; }

flagos_event_t as_event(void* event) { return static_cast<flagos_event_t>(event); }

Device checked(Device d) {
  if (!d.has_index()) {
    int current = 0;
    if (live_vendor() == Vendor::Cuda) {
      current = cuda_guard()->getDevice().index();
    } else {
      FLAGOS_CHECK(flagos_get_device(&current));
    }
    return Device(DeviceType::PrivateUse1, static_cast<DeviceIndex>(current));
  }
  check_device_index(d.index());
  return d;
}

struct FlagosGuardImpl final : public c10::impl::DeviceGuardImplInterface {
  DeviceType type() const override { return DeviceType::PrivateUse1; }

  Device exchangeDevice(Device d) const override {
    TORCH_INTERNAL_ASSERT(d.type() == DeviceType::PrivateUse1);
    d = checked(d);
    if (on_cuda()) return to_flagos(cuda_guard()->exchangeDevice(to_cuda(d)));
    int previous = 0;
    FLAGOS_CHECK(flagos_exchange_device(d.index(), &previous));
    return Device(DeviceType::PrivateUse1, static_cast<DeviceIndex>(previous));
  }

  Device getDevice() const override {
    if (on_cuda()) return to_flagos(cuda_guard()->getDevice());
    int device = 0;
    FLAGOS_CHECK(flagos_get_device(&device));
    return Device(DeviceType::PrivateUse1, static_cast<DeviceIndex>(device));
  }

  void setDevice(Device d) const override {
    TORCH_INTERNAL_ASSERT(d.type() == DeviceType::PrivateUse1);
    d = checked(d);
    if (on_cuda()) return cuda_guard()->setDevice(to_cuda(d));
    FLAGOS_CHECK(flagos_set_device(d.index()));
  }

  void uncheckedSetDevice(Device d) const noexcept override {
    if (on_cuda()) return cuda_guard()->uncheckedSetDevice(to_cuda(d));
    flagos_set_device(d.index());
  }

  Stream getStream(Device d) const override {
    d = checked(d);
    if (on_cuda()) return to_flagos(cuda_guard()->getStream(to_cuda(d)));
    return Stream(Stream::UNSAFE, d, host_streams::current(d.index()));
  }

  Stream getDefaultStream(Device d) const override {
    d = checked(d);
    if (on_cuda()) return to_flagos(cuda_guard()->getDefaultStream(to_cuda(d)));
    return Stream(Stream::UNSAFE, d, 0);
  }

  Stream getStreamFromGlobalPool(Device d, bool isHighPriority = false) const override {
    d = checked(d);
    if (on_cuda()) return to_flagos(cuda_guard()->getStreamFromGlobalPool(to_cuda(d), isHighPriority));
    return Stream(Stream::UNSAFE, d, host_streams::from_pool(d.index(), isHighPriority));
  }

  Stream getNewStream(Device d, int priority = 0) const override {
    d = checked(d);
    if (on_cuda()) return to_flagos(cuda_guard()->getNewStream(to_cuda(d), priority));
    return Stream(Stream::UNSAFE, d, host_streams::create(d.index(), priority));
  }

  Stream exchangeStream(Stream s) const override {
    check_device_index(s.device_index());
    if (on_cuda()) return to_flagos(cuda_guard()->exchangeStream(to_cuda(s)));
    Stream previous(Stream::UNSAFE, s.device(), host_streams::current(s.device_index()));
    host_streams::set_current(s.device_index(), s.id());
    return previous;
  }

  void* getStreamNativeHandle(const Stream s) const override {
    if (on_cuda()) return cuda_guard()->getStreamNativeHandle(to_cuda(s));
    void* native = nullptr;
    FLAGOS_CHECK(flagos_stream_native_handle(host_streams::handle(s.device_index(), s.id()), &native));
    return native;
  }

  DeviceIndex deviceCount() const noexcept override { return device_count(); }

  bool queryStream(const Stream& s) const override {
    if (on_cuda()) return cuda_guard()->queryStream(to_cuda(s));
    flagos_status_t status = flagos_stream_query(host_streams::handle(s.device_index(), s.id()));
    if (status == FLAGOS_ERROR_NOT_READY) return false;
    FLAGOS_CHECK(status);
    return true;
  }

  void synchronizeStream(const Stream& s) const override {
    if (on_cuda()) return cuda_guard()->synchronizeStream(to_cuda(s));
    FLAGOS_CHECK(flagos_stream_synchronize(host_streams::handle(s.device_index(), s.id())));
  }

  void synchronizeDevice(const DeviceIndex index) const override {
    check_device_index(index);
    if (on_cuda()) return cuda_guard()->synchronizeDevice(index);
    int previous = 0;
    FLAGOS_CHECK(flagos_exchange_device(index, &previous));
    flagos_status_t status = flagos_device_synchronize();
    flagos_set_device(previous);
    FLAGOS_CHECK(status);
  }

  void record(void** event, const Stream& s, const DeviceIndex index,
              const c10::EventFlag flag) const override {
    if (on_cuda()) return cuda_guard()->record(event, to_cuda(s), index, flag);
    TORCH_CHECK(index == -1 || index == s.device_index(), "flagos: event was recorded on flagos:",
                static_cast<int>(index), " but the stream is on flagos:", static_cast<int>(s.device_index()));
    if (*event == nullptr) {
      flagos_event_t created = nullptr;
      unsigned flags = flag == c10::EventFlag::BACKEND_DEFAULT ? FLAGOS_EVENT_DEFAULT
                                                               : FLAGOS_EVENT_DISABLE_TIMING;
      FLAGOS_CHECK(flagos_event_create(&created, flags));
      *event = created;
    }
    FLAGOS_CHECK(flagos_event_record(as_event(*event), host_streams::handle(s.device_index(), s.id())));
  }

  void block(void* event, const Stream& s) const override {
    if (on_cuda()) return cuda_guard()->block(event, to_cuda(s));
    if (!event) return;
    FLAGOS_CHECK(flagos_stream_wait_event(host_streams::handle(s.device_index(), s.id()), as_event(event)));
  }

  bool queryEvent(void* event) const override {
    if (on_cuda()) return cuda_guard()->queryEvent(event);
    if (!event) return true;
    flagos_status_t status = flagos_event_query(as_event(event));
    if (status == FLAGOS_ERROR_NOT_READY) return false;
    FLAGOS_CHECK(status);
    return true;
  }

  void synchronizeEvent(void* event) const override {
    if (on_cuda()) return cuda_guard()->synchronizeEvent(event);
    if (!event) return;
    FLAGOS_CHECK(flagos_event_synchronize(as_event(event)));
  }

  double elapsedTime(void* start, void* end, const DeviceIndex index) const override {
    if (on_cuda()) return cuda_guard()->elapsedTime(start, end, index);
    TORCH_CHECK(start && end, "flagos: both events must be recorded before elapsed_time");
    float ms = 0;
    FLAGOS_CHECK(flagos_event_elapsed_time(&ms, as_event(start), as_event(end)));
    return ms;
  }

  void destroyEvent(void* event, const DeviceIndex index) const noexcept override {
    if (!event) return;
    try {
      if (on_cuda()) return cuda_guard()->destroyEvent(event, index);
    } catch (...) {
      return;
    }
    flagos_event_destroy(as_event(event));
  }

  void recordDataPtrOnStream(const c10::DataPtr& data_ptr, const Stream& s) const override;
};

}  // namespace

// Defined in Allocator.cpp: the allocator owns the rules for cross-stream use.
void record_data_ptr_on_stream(const c10::DataPtr& data_ptr, const c10::Stream& stream);

void FlagosGuardImpl::recordDataPtrOnStream(const c10::DataPtr& data_ptr, const Stream& s) const {
  record_data_ptr_on_stream(data_ptr, s);
}

C10_REGISTER_GUARD_IMPL(PrivateUse1, FlagosGuardImpl);

// Used by the allocator to reach CUDA's stream handling.
c10::Stream cuda_stream_of(const c10::Stream& s) { return to_cuda(s); }

}  // namespace torch_fl
