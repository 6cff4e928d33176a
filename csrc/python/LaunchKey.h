// LaunchKey.h - the signature of a call routed to FlagGems' launcher, and
// the replay of a recorded one from an unboxed kernel.
//
// The boxed route keys a call from its stack (the aliases' IValues); an
// unboxed kernel keys it from its C++ arguments, the flagos tensors
// themselves. Both give one key for one call (aliases share their flagos
// tensor's bytes, sizes and strides), so a record made on either route
// replays on both. No pybind11 here: Unboxed.cpp includes it.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <c10/util/OptionalArrayRef.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "aten/Routing.h"
#include "common.h"

namespace torch_fl {
namespace launcher {

bool enabled();

// Kinds of key entries: the argument kind, then its content.
enum KeyTag : int64_t { kUndefined = 1, kTensor, kList, kNone, kInt, kDouble, kBool, kString, kDevice, kComplex };

// This thread's key buffer, cleared for each key: it keeps its capacity,
// so a replayed call allocates no key (a record copies it out). Taken only
// while a key is built and looked up: a call nested in a replay (a copy it
// makes) builds its own over it.
std::vector<int64_t>& key_buffer();

// Starts a key: the native device and the global settings a FlagGems
// function may read (the default dtype of factories without one,
// deterministic algorithms for index_put and scatter).
void start_key(std::vector<int64_t>& key);

// Builds a key and keeps each tensor argument in the order keyed, as
// `Held`: an owned at::Tensor where the key outlives the stack it came
// from (the boxed route's aliases), a pointer where the caller's
// arguments outlive the replay (an unboxed kernel's flagos tensors, which
// Python may hold: copying one would take the GIL).
template <class Held>
struct LaunchKey {
  std::vector<int64_t>& key;
  c10::SmallVector<Held, 8> tensors;
  c10::SmallVector<const void*, 8> pointers, storages;

  explicit LaunchKey(std::vector<int64_t>& buffer) : key(buffer) {
    key.clear();
    start_key(key);
  }

  bool tensor(const at::Tensor& t) {
    if constexpr (std::is_pointer_v<Held>) {
      tensors.push_back(&t);
    } else {
      tensors.push_back(t);
    }
    if (!t.defined()) {
      key.push_back(kUndefined);
      return true;
    }
    if (t.layout() != c10::kStrided) return false;
    const void* p = t.const_data_ptr();
    key.push_back(kTensor);
    key.push_back(static_cast<int64_t>(t.scalar_type()) * 4 + t.is_conj() * 2 + t.is_neg());
    key.push_back(t.dim());
    key.insert(key.end(), t.sizes().begin(), t.sizes().end());
    key.insert(key.end(), t.strides().begin(), t.strides().end());
    // Triton specializes pointers on 16-byte alignment. The whole residue,
    // not just "aligned or not": a kernel may get this pointer plus an
    // offset, whose alignment then depends on it.
    key.push_back(static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) % 16));
    // Tensors over one storage: the first earlier one, and how far apart
    // they start, so a record's pointer attributions hold at every replay.
    const void* storage = t.has_storage() ? t.storage().data() : nullptr;
    int64_t shares = -1, delta = 0;
    for (size_t i = 0; i < storages.size(); ++i) {
      if (storage != nullptr && storages[i] == storage) {
        shares = static_cast<int64_t>(i);
        delta = static_cast<const char*>(p) - static_cast<const char*>(pointers[i]);
        break;
      }
    }
    key.push_back(shares);
    key.push_back(delta);
    pointers.push_back(p);
    storages.push_back(storage);
    // A one-element CPU tensor beside device tensors is a scalar that the
    // function may read into a kernel parameter: its value is signature.
    if (t.device().type() == c10::DeviceType::CPU && native_device_type() != c10::DeviceType::CPU && t.numel() == 1) {
      int64_t bits = 0;
      std::memcpy(&bits, p, std::min<size_t>(sizeof bits, t.element_size()));
      key.push_back(bits);
    }
    return true;
  }

  bool none() {
    key.push_back(kNone);
    return true;
  }

  bool ints(c10::ArrayRef<int64_t> values) {
    key.push_back(kList);
    key.push_back(static_cast<int64_t>(values.size()));
    for (int64_t v : values) key.push_back(kInt), key.push_back(v);
    return true;
  }

  // A boxed argument.
  bool value(const c10::IValue& v) {
    if (v.isTensor()) return tensor(v.toTensor());
    if (v.isNone()) return none();
    if (v.isInt()) return key.push_back(kInt), key.push_back(v.toInt()), true;
    if (v.isBool()) return key.push_back(kBool), key.push_back(v.toBool()), true;
    if (v.isDouble()) {
      double d = v.toDouble();
      int64_t bits;
      std::memcpy(&bits, &d, sizeof bits);
      return key.push_back(kDouble), key.push_back(bits), true;
    }
    if (v.isComplexDouble()) {
      auto c = v.toComplexDouble();
      double parts[2] = {c.real(), c.imag()};
      int64_t bits[2];
      std::memcpy(bits, parts, sizeof bits);
      return key.push_back(kComplex), key.push_back(bits[0]), key.push_back(bits[1]), true;
    }
    if (v.isString()) {
      const std::string& s = v.toStringRef();
      key.push_back(kString);
      key.push_back(static_cast<int64_t>(s.size()));
      for (size_t i = 0; i < s.size(); i += 8) {
        int64_t chunk = 0;
        std::memcpy(&chunk, s.data() + i, std::min<size_t>(8, s.size() - i));
        key.push_back(chunk);
      }
      return true;
    }
    if (v.isDevice()) {
      return key.push_back(kDevice), key.push_back(static_cast<int64_t>(v.toDevice().type())),
             key.push_back(v.toDevice().index()), true;
    }
    if (v.isOptionalTensorList()) {
      // An absent tensor keeps its place among the tensors as an undefined
      // one; only an owning key has one to keep.
      if constexpr (std::is_pointer_v<Held>) {
        return false;
      } else {
        key.push_back(kList);
        key.push_back(static_cast<int64_t>(v.toOptionalTensorList().size()));
        for (const std::optional<at::Tensor>& t : v.toOptionalTensorList()) {
          if (!tensor(t.has_value() ? *t : at::Tensor())) return false;
        }
        return true;
      }
    }
    if (v.isList()) {  // its items are IValues that outlive the key with the list
      auto list = v.toListRef();
      key.push_back(kList);
      key.push_back(static_cast<int64_t>(list.size()));
      for (const c10::IValue& item : list) {
        if (!value(item)) return false;
      }
      return true;
    }
    return false;  // generators, objects: not a signature
  }

  // An unboxed argument, keyed as its IValue would be.
  bool arg(const at::Tensor& t) { return tensor(t); }
  bool arg(const std::optional<at::Tensor>& t) { return t.has_value() ? tensor(*t) : none(); }
  bool arg(const at::ITensorListRef& list) { return tensor_list(list); }
  bool arg(const at::TensorList& list) { return tensor_list(list); }
  bool arg(c10::IntArrayRef values) { return ints(values); }
  bool arg(const at::OptionalIntArrayRef& values) { return values.has_value() ? ints(*values) : none(); }
  template <class T>
  bool arg(const T& v) {
    static_assert(std::is_constructible_v<c10::IValue, const T&>, "this argument type has no launch key");
    return value(c10::IValue(v));
  }

 private:
  template <class List>
  bool tensor_list(const List& list) {
    key.push_back(kList);
    key.push_back(static_cast<int64_t>(list.size()));
    for (const at::Tensor& t : list) {
      if (!tensor(t)) return false;
    }
    return true;
  }
};

// Replays the kernels recorded for `key` on `inputs` (the flagos tensors
// keyed, in order) and leaves the op's results in `results`; false, with
// nothing done, when the signature has no record, or when the op writes
// an argument (`writes`) and its record returns anything but arguments
// themselves (the boxed route copies such results in). The caller holds a
// NativeScope on the call's device, which maps fresh results to flagos.
bool replay_recorded(const OpPlan& plan, const std::vector<int64_t>& key, c10::ArrayRef<const at::Tensor*> inputs,
                     bool writes, c10::SmallVectorImpl<at::Tensor>& results);

}  // namespace launcher
}  // namespace torch_fl
