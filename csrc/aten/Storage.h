// Storage.h - flagos storages and their aliases as vendor-native tensors.
//
// The native route runs PyTorch's own kernels (CPU on the host vendor, CUDA
// on the cuda vendor) over flagos memory. It never relabels a caller's
// tensor: it builds a separate tensor of the native device type over the
// same bytes (an alias), and maps what the kernel returns back to flagos.
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Storage.h>
#include <c10/util/MaybeOwned.h>
#include <c10/util/SmallVector.h>
#include <c10/util/flat_hash_map.h>

#include <optional>
#include <vector>

#include "common.h"

namespace torch_fl {

inline bool is_flagos(const at::Tensor& t) {
  return t.defined() && t.device().type() == c10::DeviceType::PrivateUse1;
}

// The allocator of the vendor's own device type (CUDA's caching allocator,
// or the CPU's on the host vendor).
c10::Allocator* native_allocator();

// A tensor with the flagos device type over `storage`, shaped like `like`.
at::Tensor make_flagos_tensor(c10::Storage storage, const at::Tensor& like);

// Grows (or shrinks the recorded size of) a flagos storage, keeping its
// bytes; used by resize_ and by Python's storage.resize_().
void resize_storage_bytes(c10::StorageImpl* storage, size_t new_bytes);

// While alive, the current flagos device (and so the vendor's) is
// `device`. Most ops run on the current device: reading it is cheaper than
// exchanging it, and the destructor then has nothing to restore.
class CurrentDevice {
 public:
  explicit CurrentDevice(c10::DeviceIndex device);
  ~CurrentDevice();
  CurrentDevice(const CurrentDevice&) = delete;
  CurrentDevice& operator=(const CurrentDevice&) = delete;

 private:
  c10::DeviceIndex device_;
  c10::DeviceIndex previous_;
};

// While alive: the device is `device`, native kernels may read and write
// the flagos memory of every tensor passed to alias() (on the host vendor
// it is unprotected and the current stream has drained), and results can
// be mapped back. Destruction restores the device and the protection.
class NativeScope {
 public:
  explicit NativeScope(c10::DeviceIndex device);
  ~NativeScope();
  NativeScope(const NativeScope&) = delete;
  NativeScope& operator=(const NativeScope&) = delete;

  c10::DeviceIndex device() const { return device_; }

  // Entries a scope holds before it builds its hash index: a scan of a few
  // is cheaper than hashing.
  static constexpr size_t kScanEntries = 16;

  // Room for `tensors` more aliases, made before a call aliases them: a
  // foreach call's thousand aliases then grow the scope's index once
  // instead of rehashing it at every doubling. Worth calling only for more
  // than kScanEntries tensors.
  void reserve(size_t tensors);

  // Alias of a flagos tensor as a native tensor (zero copy). The scope
  // keeps a reference to the flagos tensor, to map results back. When the
  // scope ends, its aliases are kept as spares for the next scopes on this
  // thread, repointed at whatever tensor they alias then: a TensorImpl and a
  // StorageImpl less per argument. An alias that anyone else still holds
  // then (Python code that kept it included: a tensor's Python object holds
  // a reference) is not.
  at::Tensor alias(const at::Tensor& flagos_tensor);
  // The same, for a flagos tensor that outlives the scope (an argument of
  // an unboxed kernel): the scope borrows it. A second owning reference to
  // a tensor that Python holds would take the GIL twice (PyTorch keeps the
  // Python object alive while C++ shares the tensor).
  at::Tensor alias_borrowed(const at::Tensor& flagos_tensor);
  // An argument of an unboxed kernel as the vendor's kernel takes it: the
  // borrowed alias of a flagos tensor; any other tensor as it is.
  at::Tensor alias_argument(const at::Tensor& t) { return is_flagos(t) ? alias_borrowed(t) : t; }

  // After the kernel: carry storage replacement (out= resizes) and shape
  // changes from alias back to the flagos tensor it stands for.
  void write_back(const at::Tensor& flagos_tensor, const at::Tensor& alias);

  // A kernel result as a flagos tensor: the caller's own tensor when the
  // kernel returned an alias (in-place ops), a view of the flagos storage
  // when it returned a view of an alias, else fresh memory adopted as
  // flagos (zero copy on cuda, one copy into device memory on host).
  // `results` lists every tensor the kernel returned, so that results
  // sharing one fresh storage keep sharing it.
  at::Tensor to_flagos(const at::Tensor& result, c10::ArrayRef<at::Tensor> results);
  // The same for the one result of a vendor kernel, which no one else
  // holds: a fresh result is relabelled flagos in place (its TensorImpl
  // reused) instead of being wrapped in a second one.
  at::Tensor to_flagos(at::Tensor&& result);

 private:
  // Entries own their alias, so an alias storage cannot be freed and its
  // address reused by a fresh result while the scope maps results.
  struct Entry {
    at::Tensor alias;
    c10::MaybeOwned<at::Tensor> flagos_tensor;
    const c10::StorageImpl* native() const { return alias.storage().unsafeGetStorageImpl(); }
    const c10::StorageImpl* flagos() const { return flagos_tensor->storage().unsafeGetStorageImpl(); }
  };
  struct Adopted {
    c10::Storage native;
    c10::Storage flagos;
  };

  at::Tensor make_alias(const at::Tensor& t, c10::MaybeOwned<at::Tensor> (*keep)(const at::Tensor&));
  const Entry* find_entry(const void* key) const;
  void add_entry(Entry entry);
  // The hash index over the entries so far; index_entry() adds one.
  void build_index();
  void index_entry(size_t i);
  c10::Storage adopt(const c10::Storage& native, c10::ArrayRef<at::Tensor> results);
  void begin_access(const void* ptr);

  // The spare alias this thread kept last, if it can stand for `t` once
  // repointed; else undefined.
  at::Tensor recycled_alias(const at::Tensor& t);

  c10::DeviceIndex device_;
  CurrentDevice current_;
  bool host_;
  // This thread's spare aliases: a thread_local of a shared library costs
  // a call to reach, so a scope reaches it once.
  std::vector<at::Tensor>& spares_;
  c10::SmallVector<Entry, 4> entries_;
  // A scope over a tensor list (an optimizer's foreach ops alias every
  // parameter, gradient and state tensor: over a thousand) finds entries by
  // hash instead of scanning them. Keys: the flagos tensor, the flagos
  // storage, the alias and the native storage of each entry. Built only
  // then: an empty flat_hash_map allocates, and most scopes alias a few.
  std::optional<ska::flat_hash_map<const void*, size_t>> index_;
  c10::SmallVector<Adopted, 2> adopted_;
  c10::SmallVector<const void*, 4> accessed_;
};

}  // namespace torch_fl
