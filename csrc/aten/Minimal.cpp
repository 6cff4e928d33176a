// Minimal.cpp - the ops PrivateUse1 must implement itself: allocation,
// views and storage surgery, and copies between devices. Everything else
// goes through the routing kernel (Fallback.cpp).
#include <ATen/EmptyTensor.h>
#include <ATen/native/Resize.h>
#include <ATen/native/TensorFactories.h>
#include <c10/core/DeviceGuard.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include "aten/Storage.h"
#include "runtime/Allocator.h"
#include "runtime/HostStreams.h"

namespace torch_fl {
namespace {

using at::IntArrayRef;

c10::DeviceIndex target_device(std::optional<c10::Device> device) {
  if (device.has_value()) {
    TORCH_CHECK(device->type() == c10::DeviceType::PrivateUse1, "flagos: expected a flagos device, got ",
                *device);
    if (device->has_index()) {
      check_device_index(device->index());
      return device->index();
    }
  }
  return current_flagos_device();
}

void check_layout_and_dtype(std::optional<c10::Layout> layout, c10::ScalarType dtype) {
  TORCH_CHECK(!layout.has_value() || *layout == c10::Layout::Strided,
              "flagos: only the strided layout is supported, got ", *layout);
  TORCH_CHECK_TYPE(!c10::isQIntType(dtype) && dtype != c10::ScalarType::Undefined,
                   "flagos: dtype ", dtype, " is not supported on flagos");
}

at::Tensor empty_memory_format(IntArrayRef size, std::optional<c10::ScalarType> dtype,
                               std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                               std::optional<bool> /*pin_memory*/,
                               std::optional<c10::MemoryFormat> memory_format) {
  const auto index = target_device(device);
  const auto scalar_type = c10::dtype_or_default(dtype);
  check_layout_and_dtype(layout, scalar_type);
  c10::DeviceGuard guard(flagos_device(index));
  return at::detail::empty_generic(size, device_allocator(),
                                   c10::DispatchKeySet(c10::DispatchKey::PrivateUse1), scalar_type,
                                   memory_format);
}

at::Tensor empty_strided(IntArrayRef size, IntArrayRef stride, std::optional<c10::ScalarType> dtype,
                         std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                         std::optional<bool> /*pin_memory*/) {
  const auto index = target_device(device);
  const auto scalar_type = c10::dtype_or_default(dtype);
  check_layout_and_dtype(layout, scalar_type);
  c10::DeviceGuard guard(flagos_device(index));
  return at::detail::empty_strided_generic(size, stride, device_allocator(),
                                           c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                           scalar_type);
}

void ensure_storage_holds(const at::Tensor& self) {
  auto* impl = self.unsafeGetTensorImpl();
  if (impl->numel() == 0) return;
  const size_t needed = at::detail::computeStorageNbytes(impl->sizes(), impl->strides(),
                                                         self.dtype().itemsize(),
                                                         impl->storage_offset());
  auto* storage = impl->storage().unsafeGetStorageImpl();
  if (needed > storage->nbytes()) resize_storage_bytes(storage, needed);
}

const at::Tensor& resize_(const at::Tensor& self, IntArrayRef size,
                          std::optional<c10::MemoryFormat> memory_format) {
  TORCH_CHECK(!memory_format.has_value() || *memory_format != c10::MemoryFormat::Preserve,
              "flagos: unsupported memory format for resize_: ", *memory_format);
  for (auto s : size) TORCH_CHECK(s >= 0, "flagos: resize_ got a negative size ", size);
  auto* impl = self.unsafeGetTensorImpl();
  if (impl->sizes() != size || memory_format.has_value()) {
    impl->set_sizes_contiguous(size);
    if (memory_format.has_value()) impl->empty_tensor_restride(*memory_format);
  }
  ensure_storage_holds(self);
  return self;
}

at::Tensor& set_storage(at::Tensor& self, c10::Storage source, int64_t offset, IntArrayRef size,
                        IntArrayRef stride) {
  at::native::checkSetStorage(self, std::move(source), offset, size, stride);
  auto* impl = self.unsafeGetTensorImpl();
  impl->set_storage_offset(offset);
  if (stride.data() && (!stride.empty() || size.empty())) {
    impl->set_sizes_and_strides(size, stride);
  } else {
    impl->set_sizes_contiguous(size);
  }
  ensure_storage_holds(self);
  return self;
}

at::Tensor& set_source_storage(at::Tensor& self, c10::Storage source) {
  const int64_t numel = static_cast<int64_t>(source.nbytes() / self.dtype().itemsize());
  return set_storage(self, std::move(source), 0, {numel}, {});
}

at::Tensor& set_source_tensor(at::Tensor& self, const at::Tensor& source) {
  if (self.unsafeGetTensorImpl() == source.unsafeGetTensorImpl()) return self;
  return set_storage(self, source.storage(), source.storage_offset(), source.sizes(),
                     source.strides());
}

at::Tensor& set_empty(at::Tensor& self) {
  c10::Storage empty(c10::Storage::use_byte_size_t(), 0, device_allocator(), /*resizable=*/true);
  return set_storage(self, std::move(empty), 0, {0}, {});
}

// Host vendor: a non_blocking copy between pinned host memory and flagos
// memory (or within a device), contiguous and of one dtype, is queued on
// the current stream like a GPU copy engine would do it.
bool try_async_host_copy(const at::Tensor& src, const at::Tensor& dst, bool non_blocking) {
  if (!non_blocking || live_vendor() != Vendor::Host) return false;
  if (src.dtype() != dst.dtype() || src.sizes() != dst.sizes()) return false;
  if (!src.is_contiguous() || !dst.is_contiguous() || src.is_conj() != dst.is_conj() ||
      src.is_neg() != dst.is_neg()) {
    return false;
  }
  flagos_memcpy_kind_t kind;
  if (is_flagos(dst) && is_flagos(src)) {
    if (src.device() != dst.device()) return false;
    kind = FLAGOS_MEMCPY_DEVICE_TO_DEVICE;
  } else if (is_flagos(dst) && src.is_cpu() && is_pinned_host_ptr(src.const_data_ptr())) {
    kind = FLAGOS_MEMCPY_HOST_TO_DEVICE;
  } else if (is_flagos(src) && dst.is_cpu() && is_pinned_host_ptr(dst.const_data_ptr())) {
    kind = FLAGOS_MEMCPY_DEVICE_TO_HOST;
  } else {
    return false;
  }
  const auto device = is_flagos(dst) ? dst.device().index() : src.device().index();
  const size_t nbytes = dst.numel() * dst.dtype().itemsize();
  if (nbytes == 0) return true;
  FLAGOS_CHECK(flagos_memcpy_async(dst.mutable_data_ptr(), src.const_data_ptr(), nbytes, kind,
                                   host_streams::current_handle(device)));
  return true;
}

at::Tensor copy_from(const at::Tensor& src, const at::Tensor& dst, bool non_blocking) {
  TORCH_CHECK(is_flagos(src) || is_flagos(dst), "flagos: _copy_from needs a flagos tensor");
  TORCH_CHECK(src.device().type() == c10::DeviceType::PrivateUse1 ||
                  src.device().type() == c10::DeviceType::CPU || src.device().type() == native_device_type(),
              "flagos: cannot copy from ", src.device(), " to ", dst.device());
  TORCH_CHECK(dst.device().type() == c10::DeviceType::PrivateUse1 ||
                  dst.device().type() == c10::DeviceType::CPU || dst.device().type() == native_device_type(),
              "flagos: cannot copy from ", src.device(), " to ", dst.device());
  if (dst.numel() == 0) return dst;
  if (try_async_host_copy(src, dst, non_blocking)) return dst;
  const auto device = is_flagos(dst) ? dst.device().index() : src.device().index();
  if (live_vendor() == Vendor::Host && is_flagos(src) && is_flagos(dst) &&
      src.device() != dst.device()) {
    // The scope drains the destination device's stream; the source's too.
    FLAGOS_CHECK(flagos_stream_synchronize(host_streams::current_handle(src.device().index())));
  }
  NativeScope scope(device);
  at::Tensor native_dst = scope.alias_argument(dst);
  at::Tensor native_src = scope.alias_argument(src);
  native_dst.copy_(native_src, non_blocking);
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& src, const at::Tensor& dst) {
  if (dst.sizes() != src.sizes()) {
    if (is_flagos(dst)) {
      resize_(dst, src.sizes(), std::nullopt);
    } else {
      dst.resize_(src.sizes());
    }
  }
  return copy_from(src, dst, false);
}

// The gradient of an op whose derivative is zero (sgn, sign, ceil...) is
// an efficient zero tensor: no memory, and the ZeroTensor key, whose
// kernels materialize zeros when needed. Made by the vendor's kernel it
// would be a null pointer of that device, which no flagos op can read.
at::Tensor efficient_zero_tensor(IntArrayRef size, std::optional<at::ScalarType> dtype,
                                 std::optional<at::Layout>, std::optional<c10::Device> device,
                                 std::optional<bool>) {
  const c10::Device flagos_device(c10::DeviceType::PrivateUse1, target_device(device));
  at::native::ZeroTensorAllocator allocator(flagos_device);
  const auto keys = c10::DispatchKeySet(c10::DispatchKey::PrivateUse1) |
                    c10::DispatchKeySet(c10::DispatchKey::ZeroTensor);
  return at::detail::empty_generic(size, &allocator, keys,
                                   dtype.value_or(c10::get_default_dtype_as_scalartype()), std::nullopt);
}

void record_stream(at::Tensor& self, c10::Stream stream) {
  TORCH_CHECK(stream.device_type() == c10::DeviceType::PrivateUse1,
              "flagos: record_stream expects a flagos stream, got a stream of ", stream.device());
  record_data_ptr_on_stream(self.storage().data_ptr(), stream);
}

}  // namespace

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", TORCH_FN(empty_memory_format));
  m.impl("empty_strided", TORCH_FN(empty_strided));
  m.impl("as_strided", TORCH_FN(at::native::as_strided_tensorimpl));
  m.impl("view", TORCH_FN(at::native::view));
  m.impl("_reshape_alias", TORCH_FN(at::native::_reshape_alias));
  m.impl("resize_", TORCH_FN(resize_));
  m.impl("set_.source_Storage_storage_offset", TORCH_FN(set_storage));
  m.impl("set_.source_Storage", TORCH_FN(set_source_storage));
  m.impl("set_.source_Tensor", TORCH_FN(set_source_tensor));
  m.impl("set_", TORCH_FN(set_empty));
  m.impl("_copy_from", TORCH_FN(copy_from));
  m.impl("_copy_from_and_resize", TORCH_FN(copy_from_and_resize));
  m.impl("record_stream", TORCH_FN(record_stream));
  m.impl("_efficientzerotensor", TORCH_FN(efficient_zero_tensor));
}

}  // namespace torch_fl
