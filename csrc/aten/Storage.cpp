#include "aten/Storage.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/ops/empty.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <algorithm>
#include <vector>

#include "aten/RouteClock.h"
#include "runtime/Allocator.h"
#include "runtime/HostStreams.h"

namespace torch_fl {
namespace {

void copy_tensor_meta(c10::TensorImpl* dst, const at::Tensor& src) {
  dst->set_sizes_and_strides(src.sizes(), src.strides(), src.storage_offset());
  const auto* s = src.unsafeGetTensorImpl();
  if (s->is_conj()) dst->_set_conj(true);
  if (s->is_neg()) dst->_set_neg(true);
  if (s->is_wrapped_number()) dst->set_wrapped_number(true);
}

c10::Storage new_flagos_storage(size_t nbytes, c10::DeviceIndex device) {
  c10::DeviceGuard guard(flagos_device(device));
  return c10::Storage(c10::make_intrusive<c10::StorageImpl>(
      c10::StorageImpl::use_byte_size_t(), nbytes, device_allocator()->allocate(nbytes),
      device_allocator(), /*resizable=*/true));
}

// The CUDA block of a native storage, labelled flagos; it keeps its deleter.
c10::DataPtr take_cuda_data(c10::StorageImpl* native, c10::DeviceIndex device) {
  c10::DataPtr data = native->set_data_ptr(c10::DataPtr(nullptr, native->device()));
  data.unsafe_set_device(flagos_device(device));
  return data;
}

c10::Storage take_cuda_bytes(c10::StorageImpl* native, c10::DeviceIndex device) {
  return c10::Storage(c10::make_intrusive<c10::StorageImpl>(
      c10::StorageImpl::use_byte_size_t(), native->nbytes(), take_cuda_data(native, device), device_allocator(),
      /*resizable=*/true));
}

// The same for a storage that nothing else refers to: it is relabelled in
// place, a StorageImpl allocated and another freed less per result.
void relabel_cuda_storage(c10::StorageImpl* native, c10::DeviceIndex device) {
  native->set_data_ptr_noswap(take_cuda_data(native, device));
  native->set_allocator(device_allocator());
  native->set_resizable(true);
}

// Holds a native storage alive for as long as a flagos storage uses its
// bytes, when the native storage is shared and its DataPtr cannot be taken.
void release_native_storage(void* ctx) {
  c10::raw::intrusive_ptr::decref(static_cast<c10::StorageImpl*>(ctx));
}

c10::Storage share_cuda_bytes(c10::StorageImpl* native, c10::DeviceIndex device) {
  c10::raw::intrusive_ptr::incref(native);
  c10::DataPtr data(native->mutable_data(), native, &release_native_storage, flagos_device(device));
  return c10::Storage(c10::make_intrusive<c10::StorageImpl>(
      c10::StorageImpl::use_byte_size_t(), native->nbytes(), std::move(data), device_allocator(),
      /*resizable=*/false));
}

c10::Storage copy_host_bytes(const c10::StorageImpl* native, c10::DeviceIndex device) {
  c10::Storage flagos = new_flagos_storage(native->nbytes(), device);
  if (native->nbytes() > 0) {
    FLAGOS_CHECK(flagos_memcpy(flagos.mutable_data(), native->data(), native->nbytes(),
                               FLAGOS_MEMCPY_HOST_TO_DEVICE));
  }
  return flagos;
}

// The first `n` bytes of a flagos storage as a uint8 tensor.
at::Tensor byte_view(const c10::Storage& storage, size_t n) {
  auto t = at::detail::make_tensor<c10::TensorImpl>(
      c10::Storage(storage), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
      caffe2::TypeMeta::Make<uint8_t>());
  t.unsafeGetTensorImpl()->set_sizes_contiguous({static_cast<int64_t>(n)});
  return t;
}

}  // namespace

c10::Allocator* native_allocator() {
  // Aliases are resizable with the native allocator so that an out= kernel
  // can grow them; write_back() then moves the new bytes to flagos.
  return live_vendor() == Vendor::Cuda ? at::detail::getCUDAHooks().getCUDADeviceAllocator()
                                       : c10::GetCPUAllocator();
}

at::Tensor make_flagos_tensor(c10::Storage storage, const at::Tensor& like) {
  auto tensor = at::detail::make_tensor<c10::TensorImpl>(
      std::move(storage), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1), like.dtype());
  copy_tensor_meta(tensor.unsafeGetTensorImpl(), like);
  return tensor;
}

void resize_storage_bytes(c10::StorageImpl* storage, size_t new_bytes) {
  TORCH_CHECK(storage->resizable(), "flagos: trying to resize storage that is not resizable");
  const size_t old_bytes = storage->nbytes();
  if (new_bytes <= old_bytes) {
    storage->set_nbytes(new_bytes);
    return;
  }
  const auto device = storage->device().index() >= 0 ? storage->device().index()
                                                      : current_flagos_device();
  c10::Storage fresh = new_flagos_storage(new_bytes, device);
  const size_t keep = std::min(old_bytes, new_bytes);
  if (keep > 0 && storage->data()) {
    // Copy through the native route so that it is ordered on the current
    // stream after whatever wrote the old bytes.
    c10::Storage old_storage(c10::intrusive_ptr<c10::StorageImpl>::reclaim_copy(storage));
    byte_view(fresh, keep).copy_(byte_view(old_storage, keep));
  }
  storage->set_data_ptr_noswap(fresh.unsafeGetStorageImpl()->set_data_ptr(c10::DataPtr()));
  storage->set_nbytes(new_bytes);
}

namespace {

// Aliases that scopes on this thread have finished with, the most recent
// last. A scope takes the most recent one, whose TensorImpl and StorageImpl
// the last op touched (still in the host's caches), and repoints it in
// full; on a training step's host this costs less than keeping each alias
// for the flagos tensor it stood for, which found a cold one. Per thread,
// so that no alias is ever in two scopes at once. Sized for an optimizer
// step: one foreach call aliases every parameter, gradient and state
// tensor (over 1,500 for Qwen3-0.6B's AdamW) and returns them only when it
// ends; a scope ending with the stack full frees the rest.
constexpr size_t kSpareAliases = 4096;
thread_local std::vector<at::Tensor> spare_aliases;

// A native storage over flagos bytes that it does not own.
c10::Storage native_storage_over(void* data, size_t nbytes, c10::DeviceIndex device) {
  return c10::Storage(c10::make_intrusive<c10::StorageImpl>(c10::StorageImpl::use_byte_size_t(), nbytes,
                                                            c10::DataPtr(data, native_device(device)),
                                                            native_allocator(), /*resizable=*/true));
}

bool same_flags(const c10::TensorImpl* a, const c10::TensorImpl* b) {
  return a->is_conj() == b->is_conj() && a->is_neg() == b->is_neg() &&
         a->is_wrapped_number() == b->is_wrapped_number();
}

}  // namespace

CurrentDevice::CurrentDevice(c10::DeviceIndex device)
    : device_(device), previous_(flagos_guard()->getDevice().index()) {
  if (previous_ != device) flagos_guard()->setDevice(flagos_device(device));
}

CurrentDevice::~CurrentDevice() {
  if (previous_ != device_) flagos_guard()->uncheckedSetDevice(flagos_device(previous_));
}

NativeScope::NativeScope(c10::DeviceIndex device)
    : device_(device), current_(device), host_(live_vendor() == Vendor::Host), spares_(spare_aliases) {
  if (host_) {
    // CPU kernels run on this thread now: earlier work queued on the
    // current stream (async copies) must land first.
    flagos_status_t status = flagos_stream_synchronize(host_streams::current_handle(device));
    // current_, constructed already, sets the device back if this throws.
    if (status != FLAGOS_SUCCESS) raise_status(status, "flagos_stream_synchronize");
  }
}

NativeScope::~NativeScope() {
  for (auto& e : entries_) {
    // Anyone else still holding the alias (a result the caller kept)
    // keeps it out of the cache.
    if (e.alias.use_count() != 1 || spares_.size() >= kSpareAliases) continue;
    spares_.push_back(std::move(e.alias));
  }
  for (const void* ptr : accessed_) flagos_host_access_end(ptr);
}

void NativeScope::begin_access(const void* ptr) {
  // Called once per flagos storage the scope aliases; the runtime counts
  // nested opens, so two storages over one pointer need no search here (a
  // foreach call opens thousands).
  if (!host_ || ptr == nullptr) return;
  FLAGOS_CHECK(flagos_host_access_begin(ptr));
  accessed_.push_back(ptr);
}

at::Tensor NativeScope::alias(const at::Tensor& t) {
  return make_alias(t, [](const at::Tensor& x) { return c10::MaybeOwned<at::Tensor>::owned(std::in_place, x); });
}

at::Tensor NativeScope::alias_borrowed(const at::Tensor& t) {
  return make_alias(t, [](const at::Tensor& x) { return c10::MaybeOwned<at::Tensor>::borrowed(x); });
}

const NativeScope::Entry* NativeScope::find_entry(const void* key) const {
  if (index_) {
    auto it = index_->find(key);
    return it == index_->end() ? nullptr : &entries_[it->second];
  }
  for (const auto& e : entries_) {
    if (e.flagos_tensor->unsafeGetTensorImpl() == key || e.flagos() == key ||
        e.alias.unsafeGetTensorImpl() == key || e.native() == key) {
      return &e;
    }
  }
  return nullptr;
}

void NativeScope::reserve(size_t tensors) {
  const size_t total = entries_.size() + tensors;
  entries_.reserve(total);
  if (total <= kScanEntries) return;
  if (!index_) build_index();
  index_->reserve(4 * total);
}

void NativeScope::build_index() {
  index_.emplace();
  for (size_t i = 0; i < entries_.size(); ++i) index_entry(i);
}

void NativeScope::index_entry(size_t i) {
  // The first entry under a key wins, as it does for the scan.
  const Entry& e = entries_[i];
  for (const void* key : {static_cast<const void*>(e.flagos_tensor->unsafeGetTensorImpl()),
                          static_cast<const void*>(e.flagos()), static_cast<const void*>(e.alias.unsafeGetTensorImpl()),
                          static_cast<const void*>(e.native())}) {
    index_->emplace(key, i);
  }
}

void NativeScope::add_entry(Entry entry) {
  entries_.push_back(std::move(entry));
  if (index_) {
    index_entry(entries_.size() - 1);
  } else if (entries_.size() > kScanEntries) {
    build_index();
  }
}

at::Tensor NativeScope::make_alias(const at::Tensor& t,
                                   c10::MaybeOwned<at::Tensor> (*keep)(const at::Tensor&)) {
  const auto* storage = t.storage().unsafeGetStorageImpl();
  // The keys of flagos and native objects never collide: every entry's
  // alias and native storage are objects of this scope.
  if (const Entry* same = find_entry(t.unsafeGetTensorImpl())) return same->alias;
  count_alias();
  const Entry* shared = find_entry(storage);
  at::Tensor alias = recycled_alias(t);
  auto* impl = alias.defined() ? alias.unsafeGetTensorImpl() : nullptr;
  c10::StorageImpl* recycled_storage = impl ? impl->storage().unsafeGetStorageImpl() : nullptr;
  const c10::Device native = native_device(device_);
  // Arguments over one flagos storage get aliases over one native storage,
  // so the kernel sees that they overlap, as they do. A recycled alias
  // keeps its native storage only while it is over the bytes the tensor has
  // now (set_() and resize_ may have replaced them since), or is repointed
  // there when the alias alone holds it.
  c10::Storage alias_storage;
  if (shared) {
    if (recycled_storage != shared->native()) alias_storage = shared->alias.storage();
  } else {
    void* data = const_cast<c10::StorageImpl*>(storage)->mutable_data();
    begin_access(data);
    if (!recycled_storage || alias.device() != native) {
      alias_storage = native_storage_over(data, storage->nbytes(), device_);
    } else if (recycled_storage->data() != data || recycled_storage->nbytes() != storage->nbytes()) {
      if (c10::raw::intrusive_ptr::use_count(recycled_storage) == 1) {
        recycled_storage->set_data_ptr_noswap(c10::DataPtr(data, native));
        recycled_storage->set_nbytes(storage->nbytes());
      } else {
        alias_storage = native_storage_over(data, storage->nbytes(), device_);
      }
    }
  }
  if (impl) {
    if (alias_storage) {
      impl->set_storage_and_dtype(std::move(alias_storage), t.dtype());
    } else if (alias.dtype() != t.dtype()) {
      impl->set_storage_and_dtype(impl->storage(), t.dtype());
    }
    if (impl->sizes() != t.sizes() || impl->strides() != t.strides() ||
        impl->storage_offset() != t.storage_offset()) {
      impl->set_sizes_and_strides(t.sizes(), t.strides(), t.storage_offset());
    }
  } else {
    alias = at::detail::make_tensor<c10::TensorImpl>(std::move(alias_storage),
                                                     c10::DispatchKeySet(native_dispatch_key()), t.dtype());
    copy_tensor_meta(alias.unsafeGetTensorImpl(), t);
  }
  add_entry(Entry{alias, keep(t)});
  return alias;
}

at::Tensor NativeScope::recycled_alias(const at::Tensor& t) {
  // Any spare alias will do: make_alias() repoints it in full. A fresh
  // activation (a new TensorImpl each call) so pays for neither a
  // TensorImpl nor, when the alias holds its storage alone, a StorageImpl.
  // One with other flags (conjugate, negative, wrapped number) stays.
  if (spares_.empty() || !same_flags(spares_.back().unsafeGetTensorImpl(), t.unsafeGetTensorImpl())) {
    return at::Tensor();
  }
  at::Tensor alias = std::move(spares_.back());
  spares_.pop_back();
  return alias;
}

void NativeScope::write_back(const at::Tensor& flagos_tensor, const at::Tensor& alias) {
  auto* flagos_storage = flagos_tensor.storage().unsafeGetStorageImpl();
  auto* alias_storage = alias.storage().unsafeGetStorageImpl();
  if (alias_storage->data() != flagos_storage->data()) {
    // The kernel gave the alias new bytes (an out= argument was resized).
    c10::Storage moved = host_ ? copy_host_bytes(alias_storage, device_)
                               : take_cuda_bytes(alias_storage, device_);
    flagos_storage->set_data_ptr_noswap(moved.unsafeGetStorageImpl()->set_data_ptr(c10::DataPtr()));
    flagos_storage->set_nbytes(alias_storage->nbytes());
  } else if (alias_storage->nbytes() != flagos_storage->nbytes()) {
    flagos_storage->set_nbytes(alias_storage->nbytes());
  }
  auto* impl = flagos_tensor.unsafeGetTensorImpl();
  if (impl->sizes() != alias.sizes() || impl->strides() != alias.strides() ||
      impl->storage_offset() != alias.storage_offset()) {
    impl->set_sizes_and_strides(alias.sizes(), alias.strides(), alias.storage_offset());
  }
}

c10::Storage NativeScope::adopt(const c10::Storage& native, c10::ArrayRef<at::Tensor> results) {
  auto* impl = native.unsafeGetStorageImpl();
  for (const auto& a : adopted_) {
    if (a.native.unsafeGetStorageImpl() == impl) return a.flagos;
  }
  c10::Storage flagos;
  if (host_) {
    flagos = copy_host_bytes(impl, device_);
  } else {
    // Take the block outright when only the kernel's results refer to it;
    // each distinct result TensorImpl holds one reference.
    size_t owners = 0;
    c10::SmallVector<const c10::TensorImpl*, 4> seen;
    for (const auto& r : results) {
      if (!r.defined() || !r.has_storage() || r.storage().unsafeGetStorageImpl() != impl) continue;
      if (std::find(seen.begin(), seen.end(), r.unsafeGetTensorImpl()) != seen.end()) continue;
      seen.push_back(r.unsafeGetTensorImpl());
      ++owners;
    }
    flagos = c10::raw::intrusive_ptr::use_count(impl) <= owners ? take_cuda_bytes(impl, device_)
                                         : share_cuda_bytes(impl, device_);
  }
  adopted_.push_back(Adopted{native, flagos});
  return flagos;
}

at::Tensor NativeScope::to_flagos(const at::Tensor& result, c10::ArrayRef<at::Tensor> results) {
  if (!result.defined()) return result;
  if (const Entry* e = find_entry(result.unsafeGetTensorImpl())) return *e->flagos_tensor;
  if (result.device().type() != native_device_type()) return result;
  TORCH_CHECK(result.layout() == c10::Layout::Strided && result.has_storage(),
              "flagos: only strided tensors are supported on flagos; the op produced a ",
              result.layout(), " tensor");
  if (const Entry* e = find_entry(result.storage().unsafeGetStorageImpl())) {
    return make_flagos_tensor(e->flagos_tensor->storage(), result);
  }
  return make_flagos_tensor(adopt(result.storage(), results), result);
}

at::Tensor NativeScope::to_flagos(at::Tensor&& result) {
  auto* impl = result.defined() ? result.unsafeGetTensorImpl() : nullptr;
  const bool fresh = impl && result.use_count() == 1 && result.device().type() == native_device_type() &&
                     result.layout() == c10::Layout::Strided && result.has_storage() &&
                     !result.is_quantized() && !impl->_is_zerotensor() && impl->allow_tensor_metadata_change() &&
                     c10::raw::intrusive_ptr::use_count(result.storage().unsafeGetStorageImpl()) == 1;
  auto* storage = fresh ? result.storage().unsafeGetStorageImpl() : nullptr;
  // A storage whose bytes adopt() took already: a list that holds one
  // result twice, mapped once through adopt().
  if (!fresh || (storage->data() == nullptr && storage->nbytes() > 0)) {
    return to_flagos(result, c10::ArrayRef<at::Tensor>(result));
  }
  // No other result can share a storage that only this tensor holds, so
  // adopt()'s searches are skipped (a foreach op returns hundreds).
  if (host_) {
    impl->set_storage_keep_dtype(copy_host_bytes(storage, device_));
  } else {
    relabel_cuda_storage(storage, device_);
    impl->set_storage_keep_dtype(impl->storage());  // device_opt_ follows the storage's new device
  }
  impl->_change_backend_component_keys(flagos_device(device_));
  return std::move(result);
}

}  // namespace torch_fl
