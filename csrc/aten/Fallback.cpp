// Fallback.cpp - the routing kernel: every op on flagos tensors that has no
// kernel of its own for PrivateUse1 arrives here, boxed.
//
// native: alias the flagos arguments as vendor tensors over the same memory,
// redispatch to the vendor's kernel, map the results back (Storage.h).
// cpu: PyTorch's own boxed CPU fallback (copy in, compute, copy back).
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/CPUFallback.h>
#include <c10/util/Logging.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/bernoulli.h>
#include <ATen/ops/clone.h>
#include <ATen/ops/_to_copy.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <iostream>
#include <sstream>
#include <mutex>
#include <unordered_set>

#include "aten/RouteClock.h"
#include "aten/Routing.h"
#include "aten/Storage.h"
#include "runtime/Generator.h"

namespace torch_fl {

void invoke_native(const c10::OperatorHandle& op, const OpPlan&, torch::jit::Stack* stack) {
  op.redispatchBoxed(c10::DispatchKeySet(native_dispatch_key()), stack);
}

namespace {

bool is_optional_generator(const c10::Argument& arg) {
  const auto& type = arg.type();
  if (type->kind() != c10::TypeKind::OptionalType) return false;
  return type->castRaw<c10::OptionalType>()->getElementType()->kind() == c10::TypeKind::GeneratorType;
}

// The one device all flagos arguments are on; an error names the op and the
// two devices when they disagree, as CUDA does for cuda:0 vs cuda:1.
struct DeviceFinder {
  const OpPlan& plan;
  c10::DeviceIndex device = -1;

  // A CPU tensor among flagos ones is refused as CUDA refuses it (CPU
  // scalars, i.e. 0-dim tensors, are fine there too; copies take CPU
  // tensors). Checked here for every vendor: the host vendor's CPU kernels
  // would accept it silently, and CUDA's error would name cuda:N, a device
  // the caller never used.
  void see_other(const at::Tensor& t) {
    if (!t.defined() || t.dim() == 0 || t.device().type() != c10::DeviceType::CPU) return;
    if (plan.accepts_host_tensors) return;
    TORCH_CHECK(false, "Expected all tensors to be on the same device, but found at least two devices, ",
                device >= 0 ? "flagos:" + std::to_string(device) : std::string("flagos"),
                " and cpu! (flagos op ", plan.name, ")");
  }

  void see(const at::Tensor& t) {
    if (!is_flagos(t)) return;
    see(t.device().index());
  }
  void see(c10::DeviceIndex index) {
    if (device < 0) {
      device = index;
      return;
    }
    TORCH_CHECK(device == index, "flagos: ", plan.name,
                " expected all tensors to be on the same device, but found at least two devices, "
                "flagos:", static_cast<int>(device), " and flagos:", static_cast<int>(index), "!");
  }
};

// Calls f on each defined tensor an argument holds: itself, or the
// tensors of a tensor list.
template <class F>
void each_tensor(const c10::IValue& v, F&& f) {
  if (v.isTensor()) {
    f(v.toTensor());
  } else if (v.isTensorList()) {
    for (const at::Tensor& t : v.toTensorList()) f(t);
  } else if (v.isOptionalTensorList()) {
    for (const std::optional<at::Tensor>& t : v.toOptionalTensorList()) {
      if (t.has_value()) f(*t);
    }
  }
}

c10::DeviceIndex find_device(const OpPlan& plan, const torch::jit::Stack& stack, size_t begin) {
  DeviceFinder finder{plan};
  for (size_t i = begin; i < stack.size(); ++i) {
    const auto& v = stack[i];
    each_tensor(v, [&](const at::Tensor& t) { finder.see(t); });
    if (v.isDevice() && v.toDevice().type() == c10::DeviceType::PrivateUse1) {
      finder.see(v.toDevice().has_index()
                     ? v.toDevice().index()
                     : current_flagos_device());
    }
  }
  if (finder.device < 0) {
    finder.device = current_flagos_device();
  }
  // Then the other devices' tensors, against the device found.
  for (size_t i = begin; i < stack.size(); ++i) {
    each_tensor(stack[i], [&](const at::Tensor& t) {
      if (!is_flagos(t)) finder.see_other(t);
    });
  }
  return finder.device;
}

// A mutated argument and the alias the kernel saw, to copy changes back.
struct MutatedArg {
  at::Tensor flagos;
  at::Tensor alias;
};

// native_dropout(input, p, train) has no generator argument, so the CPU
// kernel would draw from the global CPU generator; on the host vendor draw
// from the flagos device's generator instead, with the CPU kernel's formula.
void invoke_host_dropout(const c10::OperatorHandle&, const OpPlan&, torch::jit::Stack* stack) {
  auto train = torch::jit::pop(*stack).toOptional<bool>();
  const double p = torch::jit::pop(*stack).toDouble();
  at::Tensor input = torch::jit::pop(*stack).toTensor();
  at::Tensor output, mask;
  if (!train.value_or(true) || p == 0) {
    output = input.clone();
    mask = at::ones_like(input, input.options().dtype(at::kBool));
  } else {
    auto device = current_flagos_device();
    at::Tensor keep = at::empty_like(input).bernoulli_(1 - p, native_generator_of(default_generator(device)));
    output = p == 1 ? at::zeros_like(input) : at::mul(at::mul(input, keep), 1.0 / (1 - p));
    mask = keep.to(at::kBool);
  }
  torch::jit::push(*stack, std::move(output), std::move(mask));
}

bool writes_non_contiguous(c10::ArrayRef<MutatedArg> mutated) {
  for (const auto& m : mutated) {
    if (!m.alias.is_contiguous()) return true;
  }
  return false;
}

// Aliases the flagos arguments as native tensors, lets `invoke` run the op
// on them (the vendor's kernel, or a FlagGems function), then carries
// mutations back and maps the results to flagos.
void run_on_aliases(const c10::OperatorHandle& op, OpPlan& plan, torch::jit::Stack* stack,
                    BoxedRoute invoke) {
  const auto& args = op.schema().arguments();
  const size_t num_args = args.size();
  const size_t begin = stack->size() - num_args;
  NativeScope scope(find_device(plan, *stack, begin));
  c10::SmallVector<MutatedArg, 2> mutated;
  bool keep_results = false;
  bool complex_tensors = false;

  for (size_t i = 0; i < num_args; ++i) {
    c10::IValue& v = (*stack)[begin + i];
    const bool writes = args[i].alias_info() && args[i].alias_info()->isWrite();
    if (v.isTensor()) {
      const at::Tensor& t = v.toTensor();
      if (!is_flagos(t)) continue;
      complex_tensors |= t.is_complex();
      at::Tensor alias = scope.alias(t);
      if (writes) mutated.push_back({t, alias});
      v = std::move(alias);
    } else if (v.isTensorList()) {
      auto list = v.toTensorList();
      c10::List<at::Tensor> aliased;  // a new list: the caller's is shared
      aliased.reserve(list.size());
      for (const at::Tensor& t : list) {
        if (!is_flagos(t)) {
          aliased.push_back(t);
          continue;
        }
        complex_tensors |= t.is_complex();
        at::Tensor alias = scope.alias(t);
        if (writes) mutated.push_back({t, alias});
        aliased.push_back(std::move(alias));
      }
      v = std::move(aliased);
    } else if (v.isOptionalTensorList()) {
      auto list = v.toOptionalTensorList();
      c10::List<std::optional<at::Tensor>> aliased;
      aliased.reserve(list.size());
      for (const std::optional<at::Tensor>& t : list) {
        if (t.has_value() && is_flagos(*t)) {
          aliased.push_back(scope.alias(*t));
        } else {
          aliased.push_back(t);
        }
      }
      v = std::move(aliased);
    } else if (v.isDevice()) {
      if (v.toDevice().type() == c10::DeviceType::PrivateUse1) {
        v = native_device(scope.device());
      } else {
        // The op was asked for results on another device (e.g. _to_copy
        // to cpu): they are not flagos memory.
        keep_results = true;
      }
    } else if (v.isGenerator()) {
      const at::Generator& g = v.toGenerator();
      if (g.defined() && g.device().type() == c10::DeviceType::PrivateUse1) v = native_generator_of(g);
    } else if (v.isNone() && live_vendor() == Vendor::Host && is_optional_generator(args[i])) {
      // CPU kernels would draw from the global CPU generator; flagos ops
      // draw from the flagos device's own.
      v = native_generator_of(default_generator(scope.device()));
    }
  }

  // The vendor's kernel serves three kinds of call routed to FlagGems, and
  // the counters say so: an op asked for results on another device
  // (FlagGems kernels make flagos results); an in-place or out= call whose
  // written tensor is a strided view (FlagGems' fill_, zero_, ... index it
  // as a flat array from its data pointer and would write other elements);
  // and a call on complex tensors (Triton has no complex type: FlagGems'
  // div_ gave wrong values in linalg.eig's gradient).
  if (invoke != &invoke_native && (keep_results || complex_tensors || writes_non_contiguous(mutated))) {
    invoke = &invoke_native;
    count_on_native_instead(plan, plan.backend);
  }
  if (invoke == &invoke_native && plan.host_dropout) invoke = &invoke_host_dropout;
  {
    VendorTimer vendor;
    invoke(op, plan, stack);
  }

  for (const auto& m : mutated) scope.write_back(m.flagos, m.alias);
  if (keep_results) return;

  const size_t num_returns = op.schema().returns().size();
  const size_t ret_begin = stack->size() - num_returns;
  c10::SmallVector<at::Tensor, 4> results;
  for (size_t i = ret_begin; i < stack->size(); ++i) {
    const auto& v = (*stack)[i];
    if (v.isTensor()) {
      results.push_back(v.toTensor());
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorList()) results.push_back(t);
    }
  }
  for (size_t i = ret_begin; i < stack->size(); ++i) {
    c10::IValue& v = (*stack)[i];
    if (v.isTensor()) {
      v = scope.to_flagos(v.toTensor(), results);
    } else if (v.isTensorList()) {
      auto list = v.toTensorList();
      c10::List<at::Tensor> mapped;
      mapped.reserve(list.size());
      for (const at::Tensor& t : list) mapped.push_back(scope.to_flagos(t, results));
      v = std::move(mapped);
    }
  }
}

void warn_cpu_fallback_once(const OpPlan& plan) {
  static std::mutex mutex;
  static std::unordered_set<std::string> warned;
  std::lock_guard<std::mutex> lock(mutex);
  if (!warned.insert(plan.name).second) return;
  TORCH_WARN("flagos: ", plan.name, " has no ", live_vendor_name(),
             " kernel; running it on the CPU (copies to host and back). "
             "Set FLAGOS_OP_", plan.name, "=cpu to silence this.");
}

// "[flagos dispatch] add.Tensor -> flagos [4, 4] [4, 4]": the op, its
// backend and the shapes of its tensor arguments.
void log_dispatch(const c10::OperatorHandle& op, const OpPlan& plan, const torch::jit::Stack& stack) {
  std::ostringstream line;
  line << "[flagos dispatch] " << plan.name << " -> " << flagos_backend_name(plan.backend);
  const size_t n = op.schema().arguments().size();
  for (size_t i = stack.size() - n; i < stack.size(); ++i) {
    if (stack[i].isTensor() && stack[i].toTensor().defined()) {
      line << " " << stack[i].toTensor().sizes();
    } else if (stack[i].isTensorList()) {
      line << " [" << stack[i].toTensorList().size() << " tensors]";
    }
  }
  std::cerr << line.str() << std::endl;
}

}  // namespace

void routing_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  RouteTimer timer;
  OpPlan& plan = plan_for(op);
  plan.calls[plan.backend].fetch_add(1, std::memory_order_relaxed);
  if (C10_UNLIKELY(log_dispatch_enabled())) log_dispatch(op, plan, *stack);
  switch (plan.backend) {
    case FLAGOS_BACKEND_CPU:
      // On the host vendor the CPU kernels are the native ones: run them in
      // place over flagos memory instead of copying.
      if (live_vendor() == Vendor::Host) return run_on_aliases(op, plan, stack, &invoke_native);
      if (!plan.has_native_kernel) warn_cpu_fallback_once(plan);
      // The route clock counts all of it as route time: the copies to the
      // CPU and back are the route's, and its CPU kernel is no vendor's.
      return at::native::cpu_fallback(op, stack);
    case FLAGOS_BACKEND_FLAGOS:
    case FLAGOS_BACKEND_FLAGGEMS:
    case FLAGOS_BACKEND_FLAGOS_PYTHON:
      return run_on_aliases(op, plan, stack, flaggems_invoker(plan));
    default:
      return run_on_aliases(op, plan, stack, &invoke_native);
  }
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&routing_kernel>());
}

}  // namespace torch_fl
