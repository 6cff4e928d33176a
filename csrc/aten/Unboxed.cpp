// Unboxed.cpp - unboxed kernels for the ops models call most.
//
// Every other op reaches the routing kernel boxed (Fallback.cpp): the
// dispatcher copies its arguments into a stack. Copying a tensor that
// Python holds makes PyTorch take the GIL to keep the Python object alive,
// and again to let it go: twice per tensor argument, about a microsecond
// per op. These kernels take their arguments by reference. On the native
// and FlagGems routes they alias the arguments themselves, borrowing the
// caller's tensors, then call the vendor's kernel unboxed, or box the
// aliases (tensors Python never saw) for FlagGems. Every other case (the
// CPU route, mixed devices, CPU tensors, dispatch logging) boxes the
// original arguments into the routing kernel, as the fallback would.
//
// FLAGOS_UNBOXED_OPS=0 leaves every op to the boxed routing kernel.
#include <ATen/core/boxing/impl/boxing.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/Operators.h>
#include <ATen/ops/_to_copy_native.h>
#include <ATen/ops/copy_native.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <array>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "aten/RouteClock.h"
#include "aten/Routing.h"
#include "aten/Storage.h"
#include "python/LaunchKey.h"

namespace torch_fl {
namespace {

// Calls f on each tensor an argument holds (a tensor, an optional tensor,
// a tensor list); arguments of other types hold none.
template <class F>
void each_tensor(const at::Tensor& t, F&& f) {
  f(t);
}
template <class F>
void each_tensor(const std::optional<at::Tensor>& t, F&& f) {
  if (t.has_value()) f(*t);
}
template <class F>
void each_tensor(const at::ITensorListRef& list, F&& f) {
  for (const at::Tensor& t : list) f(t);
}
template <class F>
void each_tensor(const at::TensorList& list, F&& f) {
  for (const at::Tensor& t : list) f(t);
}
template <class T, class F>
void each_tensor(const T&, F&&) {
  using D = std::decay_t<T>;
  static_assert(!std::is_same_v<D, c10::List<std::optional<at::Tensor>>> &&
                    !std::is_same_v<D, std::optional<at::Generator>>,
                "this argument type has no unboxed route: leave the op to the routing kernel");
}

// The device of the call, and whether the unboxed route may take it.
struct Scan {
  c10::DeviceIndex device = -1;
  bool fast = true;
  bool complex = false;
  size_t tensors = 0;

  void see_tensor(const at::Tensor& t) {
    if (!t.defined()) return;
    ++tensors;
    if (t.device().type() == c10::DeviceType::PrivateUse1) {
      const auto index = t.device().index();
      if (device < 0) {
        device = index;
      } else if (device != index) {
        fast = false;  // the routing kernel names both devices
      }
      complex |= t.is_complex();
    } else if (t.dim() != 0 || !t.is_cpu()) {
      fast = false;  // likewise for a tensor of another device
    }
  }
  template <class T>
  void see(const T& arg) {
    each_tensor(arg, [this](const at::Tensor& t) { see_tensor(t); });
  }
  // A device named in the call would reach the vendor's kernel unmapped:
  // the routing kernel maps it. Only an absent one takes the unboxed route.
  void see(const std::optional<c10::Device>& named) {
    if (named.has_value()) fast = false;
  }
};

// FlatOperands over the unboxed arguments.
template <class... Args>
bool flat_operands(FlatNeed need, const Args&... args) {
  FlatOperands operands(need);
  (each_tensor(args, [&operands](const at::Tensor& t) { operands.see(t); }), ...);
  return operands.flat();
}

// A tensor list's aliases, passed on as the list type the op takes. Inline
// room for a KV-cache cat's few tensors: no heap allocation per call.
struct AliasedList {
  c10::SmallVector<at::Tensor, 8> tensors;
  operator at::ITensorListRef() const { return at::ITensorListRef(at::ArrayRef<at::Tensor>(tensors)); }
  operator at::TensorList() const { return at::ArrayRef<at::Tensor>(tensors); }
};

// What an argument becomes for the vendor's kernel: tensors become aliases,
// everything else passes as it is.
template <class Arg>
struct Aliased {
  using type = Arg;
};
template <>
struct Aliased<const at::Tensor&> {
  using type = at::Tensor;
};
template <>
struct Aliased<at::Tensor&> {
  using type = at::Tensor;
};
template <>
struct Aliased<const std::optional<at::Tensor>&> {
  using type = std::optional<at::Tensor>;
};
template <>
struct Aliased<const at::ITensorListRef&> {
  using type = AliasedList;
};
template <>
struct Aliased<at::TensorList> {
  using type = AliasedList;
};

template <class Arg>
typename Aliased<Arg>::type alias_arg(NativeScope& scope, Arg arg) {
  using D = std::decay_t<Arg>;
  if constexpr (std::is_same_v<D, at::Tensor>) {
    return scope.alias_argument(arg);
  } else if constexpr (std::is_same_v<D, std::optional<at::Tensor>>) {
    if (!arg.has_value()) return std::nullopt;
    return scope.alias_argument(*arg);
  } else if constexpr (std::is_same_v<D, at::ITensorListRef> || std::is_same_v<D, at::TensorList>) {
    AliasedList list;
    list.tensors.reserve(arg.size());
    for (const at::Tensor& t : arg) list.tensors.push_back(scope.alias_argument(t));
    return list;
  } else {
    return arg;
  }
}

// Arguments of type Tensor& are the ones the op writes (self of an
// in-place op, out= tensors).
template <class Arg>
constexpr bool is_written = std::is_same_v<Arg, at::Tensor&>;

// An in-place foreach op (its name ends in '_') writes the tensors of its
// first argument, a TensorList: the C++ type does not say so.
constexpr bool ends_with_underscore(const char* name) {
  const char* last = name;
  while (*name) last = name++;
  return *last == '_';
}
constexpr bool starts_with(const char* s, const char* prefix) {
  while (*prefix) {
    if (*s++ != *prefix++) return false;
  }
  return true;
}
// A foreach op (aten::_foreach_*).
template <class Op>
constexpr bool is_foreach = starts_with(Op::name, "aten::_foreach_");

template <class Op, size_t I, class Arg>
constexpr bool writes_list = I == 0 && std::is_same_v<Arg, at::TensorList> && ends_with_underscore(Op::name);

template <class Arg>
at::Tensor* written_tensor(Arg&& arg) {
  if constexpr (is_written<Arg&&>) {
    return &arg;
  } else {
    return nullptr;
  }
}

// The argument an op returning Tensor& returns: the one it writes.
template <class... Args>
at::Tensor& first_written(Args&&... args) {
  at::Tensor* found = nullptr;
  ((found = found ? found : written_tensor<Args>(std::forward<Args>(args))), ...);
  return *found;
}

template <class Ret>
struct ReturnKind {
  static constexpr bool supported = std::is_same_v<Ret, at::Tensor> || std::is_same_v<Ret, at::Tensor&> ||
                                    std::is_same_v<Ret, std::vector<at::Tensor>> || std::is_void_v<Ret>;
};
template <class... Ts>
struct ReturnKind<std::tuple<Ts...>> {
  static constexpr bool supported = (std::is_same_v<Ts, at::Tensor> && ...);
};

template <class Op>
const c10::OperatorHandle& op_handle() {
  static const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow(Op::name, Op::overload_name);
  return op;
}

template <class Op>
OpPlan& op_plan() {
  static OpPlan& known = plan_for(op_handle<Op>());
  return current_plan(known, op_handle<Op>());
}

// A copy or cast served by the vendor's kernel below counts in
// routing.stats() on the vendor's route, as every routed call does;
// without it a bf16 forward's copies and casts (about a third of its
// routed calls) went uncounted.
template <class Op>
void count_native_call() {
  op_plan<Op>().calls[native_backend()].fetch_add(1, std::memory_order_relaxed);
}

template <class Op, class Sig = typename Op::schema>
struct UnboxedRoute;

template <class Op, class Ret, class... Args>
struct UnboxedRoute<Op, Ret(Args...)> {
  static_assert(ReturnKind<Ret>::supported, "this return type has no unboxed route");
  using AliasedArgs = std::tuple<typename Aliased<Args>::type...>;

  static Ret boxed(const c10::OperatorHandle& op, c10::DispatchKeySet ks, Args... args) {
    return c10::impl::BoxedKernelWrapper<Ret(Args...)>::call(
        c10::BoxedKernel::makeFromFunction<&routing_kernel>(), op, ks, std::forward<Args>(args)...);
  }

  static Ret call(c10::DispatchKeySet ks, Args... args) {
    const c10::OperatorHandle& op = op_handle<Op>();
    OpPlan& plan = op_plan<Op>();
    const flagos_backend_t backend = plan.backend.load(std::memory_order_relaxed);
    const bool native = backend == native_backend();
    const bool flaggems = backend == FLAGOS_BACKEND_FLAGOS || backend == FLAGOS_BACKEND_FLAGGEMS ||
                          backend == FLAGOS_BACKEND_FLAGOS_PYTHON;
    Scan scan;
    (scan.see(args), ...);
    if (!(native || flaggems) || !scan.fast || scan.device < 0 || plan.host_dropout ||
        C10_UNLIKELY(log_dispatch_enabled())) {
      return boxed(op, ks, std::forward<Args>(args)...);
    }
    plan.calls[backend].fetch_add(1, std::memory_order_relaxed);
    RouteTimer timer;
    BoxedRoute invoke = flaggems ? flaggems_invoker(plan) : nullptr;
    // As the boxed route does: complex tensors and strided written tensors
    // go to the vendor's kernel (Fallback.cpp says why); so do calls of an
    // op whose FlagGems kernel needs flat operands, when they are not (as
    // the FlagGems bridge would decide, but unboxed: a broadcast mul of a
    // decoder layer skips boxing its arguments twice).
    const FlatNeed flat_need = plan.flaggems_flat_operands.load(std::memory_order_relaxed);
    if (invoke && (scan.complex || writes_strided(std::index_sequence_for<Args...>{}, args...) ||
                   (flat_need != FlatNeed::None && !flat_operands(flat_need, args...)))) {
      invoke = nullptr;
      count_on_native_instead(plan, backend);
    }
    if constexpr (is_foreach<Op> && ends_with_underscore(Op::name)) {
      // CUDA's in-place foreach kernels read only data pointers, sizes and
      // strides, allocate nothing, and send what their fused kernel cannot
      // take (mixed dtypes, strided tensors) back through the dispatcher
      // one tensor at a time. So they take the flagos tensors themselves:
      // an optimizer step's in-place calls alias no parameter, gradient or
      // state tensor. Out-of-place ones may allocate their results as CUDA
      // tensors (_foreach_norm does), so they take aliases.
      if (!invoke && live_vendor() == Vendor::Cuda) {
        CurrentDevice on(scan.device);
        VendorTimer vendor;
        return Op::redispatch(c10::DispatchKeySet(native_dispatch_key()), std::forward<Args>(args)...);
      }
    }
    NativeScope scope(scan.device);
    // A call with more tensors than a scope scans (a foreach call's lists)
    // reserves its scope's room first.
    if (scan.tensors > NativeScope::kScanEntries) scope.reserve(scan.tensors);
    if constexpr (kReplaysOnFlagos) {
      if (invoke && backend == FLAGOS_BACKEND_FLAGOS && launcher::enabled()) {
        c10::SmallVector<at::Tensor, 2> results;
        if (replay_recorded(plan, results, args...)) {
          if constexpr (std::is_void_v<Ret>) {
            return;
          } else if constexpr (std::is_same_v<Ret, at::Tensor> || std::is_same_v<Ret, at::Tensor&>) {
            return to_flagos(scope, std::move(results[0]), args...);
          } else {
            return to_flagos(scope, as_tuple(results, std::make_index_sequence<std::tuple_size_v<Ret>>{}), args...);
          }
        }
      }
    }
    AliasedArgs aliased{alias_arg<Args>(scope, args)...};
    if (!invoke) {
      const c10::DispatchKeySet native_keys(native_dispatch_key());
      if constexpr (std::is_void_v<Ret>) {
        {
          VendorTimer vendor;
          std::apply([&](auto&... a) { Op::redispatch(native_keys, a...); }, aliased);
        }
        write_back(scope, aliased, std::index_sequence_for<Args...>{}, args...);
      } else {
        auto result = [&] {
          VendorTimer vendor;
          return std::apply([&](auto&... a) -> std::decay_t<Ret> { return Op::redispatch(native_keys, a...); },
                            aliased);
        }();
        write_back(scope, aliased, std::index_sequence_for<Args...>{}, args...);
        return to_flagos(scope, std::move(result), args...);
      }
    } else {
      torch::jit::Stack stack = std::apply([](auto&... a) { return c10::impl::boxArgs<Args...>(a...); }, aliased);
      {
        VendorTimer vendor;
        invoke(op, plan, &stack);
      }
      write_back(scope, aliased, std::index_sequence_for<Args...>{}, args...);
      if constexpr (std::is_same_v<Ret, at::Tensor&>) {
        return first_written<Args...>(std::forward<Args>(args)...);
      } else if constexpr (!std::is_void_v<Ret>) {
        return to_flagos(scope, c10::impl::PopResult<Ret>::call(stack), args...);
      }
    }
  }

  // Ops whose recorded FlagGems calls replay on the flagos tensors
  // themselves. A foreach call's key would cover every tensor of its lists:
  // those take the boxed stack.
  static constexpr bool kReplaysOnFlagos = !is_foreach<Op>;

  static constexpr size_t returns() {
    if constexpr (std::is_void_v<Ret>) {
      return 0;
    } else if constexpr (std::is_same_v<std::decay_t<Ret>, at::Tensor>) {
      return 1;
    } else {
      return std::tuple_size_v<Ret>;
    }
  }

  // A FlagGems call whose signature the launcher has recorded, replayed on
  // the caller's flagos tensors (kernels take only their pointers): no
  // aliases, no boxed stack, no write-back.
  static bool replay_recorded(const OpPlan& plan, c10::SmallVectorImpl<at::Tensor>& results, const Args&... args) {
    launcher::LaunchKey<const at::Tensor*> key(launcher::key_buffer());
    if (!(key.arg(args) && ...)) return false;
    VendorTimer vendor;
    if (!launcher::replay_recorded(plan, key.key, key.tensors, (is_written<Args> || ...), results)) return false;
    TORCH_CHECK(results.size() == returns(), "flagos: the launch record of ", plan.name, " returns ", results.size(),
                " tensors; the op returns ", returns());
    return true;
  }

  template <size_t... I>
  static auto as_tuple(c10::SmallVectorImpl<at::Tensor>& results, std::index_sequence<I...>) {
    return std::decay_t<Ret>{std::move(results[I])...};
  }

  template <size_t... I>
  static bool writes_strided(std::index_sequence<I...>, Args&... args) {
    auto originals = std::forward_as_tuple(args...);
    return ([&] {
      if constexpr (is_written<Args>) {
        return !std::get<I>(originals).is_contiguous();
      } else if constexpr (writes_list<Op, I, Args>) {
        for (const at::Tensor& t : std::get<I>(originals)) {
          if (!t.is_contiguous()) return true;
        }
        return false;
      } else {
        return false;
      }
    }() || ...);
  }

  template <size_t... I>
  static void write_back(NativeScope& scope, const AliasedArgs& aliased, std::index_sequence<I...>,
                          Args&... args) {
    auto originals = std::forward_as_tuple(args...);
    (
        [&] {
          if constexpr (is_written<Args>) {
            scope.write_back(std::get<I>(originals), std::get<I>(aliased));
          } else if constexpr (writes_list<Op, I, Args>) {
            const auto& aliases = std::get<I>(aliased).tensors;
            for (size_t k = 0; k < aliases.size(); ++k) scope.write_back(std::get<I>(originals)[k], aliases[k]);
          }
        }(),
        ...);
  }

  // The kernel's result as the op returns it on flagos.
  template <class R>
  static Ret to_flagos(NativeScope& scope, R&& result, Args&... args) {
    if constexpr (std::is_same_v<Ret, at::Tensor&>) {
      return first_written<Args...>(std::forward<Args>(args)...);
    } else if constexpr (std::is_same_v<Ret, at::Tensor>) {
      return scope.to_flagos(std::move(result));
    } else if constexpr (std::is_same_v<Ret, std::vector<at::Tensor>>) {
      // A foreach op's results: each is fresh unless the kernel returned one
      // tensor twice or views of one buffer; scope.to_flagos() sorts that out.
      for (at::Tensor& r : result) r = scope.to_flagos(std::move(r));
      return std::move(result);
    } else {
      // A tuple of tensors: results sharing one fresh storage keep sharing it.
      return std::apply(
          [&](auto&... r) {
            const std::array<at::Tensor, sizeof...(r)> all{r...};
            return Ret{scope.to_flagos(r, all)...};
          },
          result);
    }
  }
};

std::vector<std::string>& registered() {
  static std::vector<std::string> names;
  return names;
}

template <class Op>
void register_unboxed(torch::Library& m) {
  std::string name = Op::name;
  name = name.substr(std::strlen("aten::"));
  if (*Op::overload_name) name += std::string(".") + Op::overload_name;
  m.impl(name.c_str(), TORCH_FN(UnboxedRoute<Op>::call));
  registered().push_back(name);
}

// copy_ is composite for every device: it calls _copy_from (Minimal.cpp)
// for a flagos tensor, a second dispatch per cast. A copy within one
// device goes to the vendor's copy_ directly; every other copy (between
// devices, or queued on a host-vendor stream) still takes _copy_from.
at::Tensor& copy_(at::Tensor& self, const at::Tensor& src, bool non_blocking) {
  if (is_flagos(self) && is_flagos(src) && self.device() == src.device() &&
      !(non_blocking && live_vendor() == Vendor::Host)) {
    count_native_call<at::_ops::copy_>();
    RouteTimer timer;
    NativeScope scope(self.device().index());
    at::Tensor dst = scope.alias_borrowed(self);
    at::Tensor src_alias = scope.alias_borrowed(src);
    {
      VendorTimer vendor;
      at::_ops::copy_::redispatch(c10::DispatchKeySet(native_dispatch_key()), dst, src_alias, non_blocking);
    }
    scope.write_back(self, dst);
    return self;
  }
  return at::native::copy_(self, src, non_blocking);
}

// _to_copy (tensor.to(dtype), autocast's casts) is composite for every
// device: an empty flagos tensor, then copy_ into it, two dispatches and
// two aliases per cast. A cast within one device is a routed call of its
// own instead: the vendor's _to_copy on one alias, or FlagGems' to_copy
// (replayed, as any recorded FlagGems call), counted under _to_copy. The
// device argument is left out for it: the same device, and a flagos one
// the vendor's kernel could not take. On the host vendor a fresh native
// result would be copied into flagos memory, so its native casts stay
// composite. (A negative or conjugate view never gets here: PyTorch's
// fallbacks for those bits resolve _to_copy's input first.)
at::Tensor to_copy(c10::DispatchKeySet ks, const at::Tensor& self, std::optional<at::ScalarType> dtype,
                   std::optional<at::Layout> layout, std::optional<at::Device> device,
                   std::optional<bool> pin_memory, bool non_blocking, std::optional<at::MemoryFormat> memory_format) {
  using Cast = at::_ops::_to_copy;
  if (is_flagos(self) && (!device || *device == self.device()) && layout.value_or(at::kStrided) == at::kStrided &&
      !pin_memory.value_or(false) &&
      (live_vendor() == Vendor::Cuda || op_plan<Cast>().backend.load(std::memory_order_relaxed) != native_backend())) {
    return UnboxedRoute<Cast>::call(ks, self, dtype, layout, std::nullopt, pin_memory, non_blocking, memory_format);
  }
  return at::native::_to_copy(self, dtype, layout, device, pin_memory, non_blocking, memory_format);
}

}  // namespace

std::vector<std::string> unboxed_ops() { return registered(); }

// The ops of a transformer's forward and backward passes that reach the
// routing kernel most often, and an optimizer's foreach ops. Each must take
// only tensors, optional tensors, tensor lists and plain values (the
// static_asserts say so).
TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  if (!env_flag("FLAGOS_UNBOXED_OPS", /*unset=*/true)) return;
  m.impl("copy_", TORCH_FN(copy_));
  registered().push_back("copy_");
  m.impl("_to_copy", TORCH_FN(to_copy));
  registered().push_back("_to_copy");
  register_unboxed<at::_ops::add_Tensor>(m);
  register_unboxed<at::_ops::add__Tensor>(m);
  register_unboxed<at::_ops::sub_Tensor>(m);
  register_unboxed<at::_ops::mul_Tensor>(m);
  register_unboxed<at::_ops::mul__Tensor>(m);
  register_unboxed<at::_ops::div_Tensor>(m);
  register_unboxed<at::_ops::div_Scalar>(m);       // scaled dot-product attention's backward
  register_unboxed<at::_ops::slice_backward>(m);   // every q/k/v slice and rotary half
  register_unboxed<at::_ops::neg>(m);
  register_unboxed<at::_ops::rsqrt>(m);
  register_unboxed<at::_ops::sqrt>(m);
  register_unboxed<at::_ops::exp>(m);
  register_unboxed<at::_ops::pow_Tensor_Scalar>(m);
  register_unboxed<at::_ops::mean_dim>(m);
  register_unboxed<at::_ops::sum_dim_IntList>(m);
  register_unboxed<at::_ops::argmax>(m);
  register_unboxed<at::_ops::mm>(m);
  register_unboxed<at::_ops::bmm>(m);
  register_unboxed<at::_ops::addmm>(m);
  register_unboxed<at::_ops::cat>(m);
  register_unboxed<at::_ops::where_self>(m);
  register_unboxed<at::_ops::index_select>(m);
  register_unboxed<at::_ops::silu>(m);
  register_unboxed<at::_ops::silu_backward>(m);
  register_unboxed<at::_ops::_softmax>(m);
  register_unboxed<at::_ops::_softmax_backward_data>(m);
  register_unboxed<at::_ops::_log_softmax>(m);
  register_unboxed<at::_ops::_log_softmax_backward_data>(m);
  register_unboxed<at::_ops::nll_loss_forward>(m);
  register_unboxed<at::_ops::nll_loss_backward>(m);
  register_unboxed<at::_ops::embedding_dense_backward>(m);
  register_unboxed<at::_ops::threshold_backward>(m);
  register_unboxed<at::_ops::fill__Scalar>(m);
  register_unboxed<at::_ops::zero_>(m);
  // Optimizers (AdamW, Adam, SGD with foreach), zero_grad and
  // clip_grad_norm_: each call passes every parameter, gradient and state.
  register_unboxed<at::_ops::_foreach_add__Scalar>(m);
  register_unboxed<at::_ops::_foreach_add__List>(m);
  register_unboxed<at::_ops::_foreach_add__ScalarList>(m);
  register_unboxed<at::_ops::_foreach_add__Tensor>(m);
  register_unboxed<at::_ops::_foreach_sub__Scalar>(m);
  register_unboxed<at::_ops::_foreach_mul__Scalar>(m);
  register_unboxed<at::_ops::_foreach_mul__List>(m);
  register_unboxed<at::_ops::_foreach_mul__ScalarList>(m);
  register_unboxed<at::_ops::_foreach_mul__Tensor>(m);
  register_unboxed<at::_ops::_foreach_div__Scalar>(m);
  register_unboxed<at::_ops::_foreach_div__List>(m);
  register_unboxed<at::_ops::_foreach_div__ScalarList>(m);
  register_unboxed<at::_ops::_foreach_lerp__Scalar>(m);
  register_unboxed<at::_ops::_foreach_lerp__List>(m);
  register_unboxed<at::_ops::_foreach_addcmul__Scalar>(m);
  register_unboxed<at::_ops::_foreach_addcmul__ScalarList>(m);
  register_unboxed<at::_ops::_foreach_addcdiv__Scalar>(m);
  register_unboxed<at::_ops::_foreach_addcdiv__ScalarList>(m);
  register_unboxed<at::_ops::_foreach_sqrt>(m);
  register_unboxed<at::_ops::_foreach_sqrt_>(m);
  register_unboxed<at::_ops::_foreach_zero_>(m);
  register_unboxed<at::_ops::_foreach_copy_>(m);
  register_unboxed<at::_ops::_foreach_norm_Scalar>(m);
  register_unboxed<at::_ops::_foreach_add_List>(m);          // Adam's weight decay
  register_unboxed<at::_ops::_foreach_addcmul_Scalar>(m);    // RMSprop, NAdam
  register_unboxed<at::_ops::_foreach_mul_ScalarList>(m);    // RAdam
  register_unboxed<at::_ops::_foreach_maximum__List>(m);     // Adam's amsgrad
  register_unboxed<at::_ops::_foreach_reciprocal_>(m);       // RAdam
}

}  // namespace torch_fl
