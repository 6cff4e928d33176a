// FlagGemsBridge.cpp - calls FlagGems' Python functions from the routing
// kernel. The routing kernel has already aliased the flagos arguments as
// CUDA tensors; this converts the boxed arguments into Python ones the way
// torch.library's Python kernels receive them (positional, then kwarg-only
// by name, trailing defaults left out), calls the function and pushes its
// results back.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/Resize.h>
#include <pybind11/pybind11.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/jit/python/pybind_utils.h>
#include <torch/csrc/utils/tensor_memoryformats.h>

#include <cstdlib>
#include <mutex>
#include <unordered_set>
#include <unordered_map>

#include "aten/Routing.h"
#include "common.h"
#include "python/FlagGemsBridge.h"
#include "python/FlagGemsLauncher.h"

namespace py = pybind11;

namespace torch_fl {
namespace {

std::mutex functions_mutex;
// Owned Python references; released never (process lifetime), as the
// interpreter may be gone at static destruction.
auto* functions = new std::unordered_map<std::string, PyObject*>();
// torch_fl._launch_capture.capture, once FlagGems functions are installed.
PyObject* recorder = nullptr;

PyObject* function_for(const OpPlan& plan) {
  std::lock_guard<std::mutex> lock(functions_mutex);
  auto it = functions->find(plan.name);
  TORCH_CHECK(it != functions->end(), "flagos: ", plan.name, " is routed to ",
              flagos_backend_name(plan.backend), " but FlagGems has no function for it");
  return it->second;
}

bool is_default(const c10::Argument& arg, const c10::IValue& value) {
  return arg.default_value().has_value() && *arg.default_value() == value;
}

// Like torch::jit::toPyObject, but dtype, layout and memory_format
// arguments (ints in an IValue) become torch.dtype/layout/memory_format, as
// torch.library's Python kernels receive them.
py::object to_py(const c10::Argument& arg, c10::IValue&& v) {
  if (v.isNone()) return py::none();
  const c10::Type* type = arg.real_type().get();
  if (type->kind() == c10::TypeKind::OptionalType) {
    type = type->castRaw<c10::OptionalType>()->getElementType().get();
  }
  if (v.isInt()) {
    switch (type->kind()) {
      case c10::TypeKind::ScalarTypeType:
        return py::reinterpret_borrow<py::object>(
            reinterpret_cast<PyObject*>(torch::getTHPDtype(static_cast<c10::ScalarType>(v.toInt()))));
      case c10::TypeKind::LayoutType:
        return py::reinterpret_borrow<py::object>(
            reinterpret_cast<PyObject*>(torch::getTHPLayout(static_cast<c10::Layout>(v.toInt()))));
      case c10::TypeKind::MemoryFormatType:
        return py::reinterpret_borrow<py::object>(
            torch::utils::getTHPMemoryFormat(static_cast<c10::MemoryFormat>(v.toInt())));
      default:
        break;
    }
  }
  return torch::jit::toPyObject(std::move(v));
}

std::pair<py::tuple, py::dict> to_python(const c10::FunctionSchema& schema, torch::jit::Stack* stack) {
  const auto& args = schema.arguments();
  const size_t n = args.size();
  const size_t begin = stack->size() - n;
  size_t positional_end = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!args[i].kwarg_only()) positional_end = i + 1;
  }
  while (positional_end > 0 && is_default(args[positional_end - 1], (*stack)[begin + positional_end - 1])) {
    --positional_end;
  }
  py::tuple positional(positional_end);
  py::dict kwargs;
  for (size_t i = 0; i < n; ++i) {
    c10::IValue& v = (*stack)[begin + i];
    if (!args[i].kwarg_only()) {
      if (i < positional_end) positional[i] = to_py(args[i], std::move(v));
    } else if (!is_default(args[i], v)) {
      kwargs[py::str(args[i].name())] = to_py(args[i], std::move(v));
    }
  }
  torch::jit::drop(*stack, n);
  return {std::move(positional), std::move(kwargs)};
}

void push_results(const c10::FunctionSchema& schema, torch::jit::Stack* stack, const py::object& out) {
  const auto& returns = schema.returns();
  if (returns.empty()) return;
  if (returns.size() == 1) {
    stack->push_back(torch::jit::toIValue(out, returns[0].real_type()));
    return;
  }
  auto items = py::cast<py::tuple>(out);
  TORCH_CHECK(items.size() == returns.size(), "flagos: FlagGems returned ", items.size(),
              " values for ", schema.name(), ", which has ", returns.size());
  for (size_t i = 0; i < returns.size(); ++i) {
    stack->push_back(torch::jit::toIValue(items[i], returns[i].real_type()));
  }
}

// The index of the argument a return of the schema aliases and writes
// (`Tensor(a!)`, of in-place and out= ops), or -1.
int written_argument(const c10::FunctionSchema& schema, size_t ret) {
  const auto* info = schema.returns()[ret].alias_info();
  if (!info || !info->isWrite()) return -1;
  for (size_t i = 0; i < schema.arguments().size(); ++i) {
    const auto* arg_info = schema.arguments()[i].alias_info();
    if (arg_info && arg_info->isWrite() && arg_info->beforeSets() == info->beforeSets()) return static_cast<int>(i);
  }
  return -1;
}

// An in-place or out= function must leave its result in the written
// argument. Some FlagGems functions return a new tensor instead on some
// paths (scatter_add_ on float32 along a non-last dim computes in a
// permuted copy), which would drop the result: copy it in.
void keep_results_in_written_arguments(const c10::FunctionSchema& schema, const std::vector<c10::IValue>& args,
                                       torch::jit::Stack* stack) {
  const size_t num_returns = schema.returns().size();
  const size_t begin = stack->size() - num_returns;
  for (size_t r = 0; r < num_returns; ++r) {
    const int arg = written_argument(schema, r);
    c10::IValue& result = (*stack)[begin + r];
    if (arg < 0 || !args[arg].isTensor() || !result.isTensor()) continue;
    const at::Tensor& target = args[arg].toTensor();
    const at::Tensor& got = result.toTensor();
    if (got.is_same(target) || (got.data_ptr() == target.data_ptr() && got.sizes().equals(target.sizes()) &&
                                got.strides().equals(target.strides()))) {
      continue;
    }
    if (schema.arguments()[arg].kwarg_only()) {
      at::native::resize_output(target, got.sizes());  // out=: as ATen's own out= kernels do
    } else {
      TORCH_CHECK(got.sizes().equals(target.sizes()), "flagos: FlagGems' ", schema.name(), " returned shape ",
                  got.sizes(), " for its in-place argument of shape ", target.sizes());
    }
    at::Tensor(target).copy_(got);
    result = target;
  }
}

bool strict() {
  static const bool value = env_flag("FLAGOS_FLAGGEMS_STRICT");
  return value;
}

void warn_once(const OpPlan& plan, const std::string& message) {
  static std::mutex mutex;
  static std::unordered_set<std::string> warned;
  std::lock_guard<std::mutex> lock(mutex);
  if (!warned.insert(plan.name).second) return;
  TORCH_WARN("flagos: FlagGems could not run ", plan.name, " for these arguments (",
             message.substr(0, 300), "); running the vendor's kernel instead. "
             "FLAGOS_FLAGGEMS_STRICT=1 makes this an error.");
}

// Runs the FlagGems function of the op (under the recorder when the
// launcher asks for a record of these arguments); the results replace the
// arguments on the stack.
void call_function(const c10::OperatorHandle& op, const OpPlan& plan, launcher::Lookup& look,
                   torch::jit::Stack* stack) {
  PyObject* fn = function_for(plan);
  if (!look.record || !recorder) {
    auto [args, kwargs] = to_python(op.schema(), stack);
    py::object out = py::reinterpret_borrow<py::object>(fn)(*args, **kwargs);
    launcher::count_python_call(plan);
    return push_results(op.schema(), stack, out);
  }
  py::list inputs;
  for (const at::Tensor& t : look.tensors) inputs.append(py::cast(t));
  auto [args, kwargs] = to_python(op.schema(), stack);
  auto recorded = py::cast<py::tuple>(py::reinterpret_borrow<py::object>(recorder)(
      py::reinterpret_borrow<py::object>(fn), args, kwargs, inputs, op.schema().returns().size()));
  launcher::remember(plan, std::move(look.key), recorded[1]);
  push_results(op.schema(), stack, recorded[0]);
}

// Whether a return of the schema writes an argument (in-place, out=).
bool writes_arguments(const c10::FunctionSchema& schema) {
  for (size_t r = 0; r < schema.returns().size(); ++r) {
    if (written_argument(schema, r) >= 0) return true;
  }
  return false;
}

// FlatOperands over the op's arguments on the stack.
bool flat_operands(FlatNeed need, const torch::jit::Stack& stack, size_t base) {
  FlatOperands operands(need);
  for (size_t i = base; i < stack.size(); ++i) {
    if (stack[i].isTensor()) operands.see(stack[i].toTensor());
  }
  return operands.flat();
}

// A call routed to FlagGems that the vendor's kernel serves: the counters
// say so.
void serve_on_vendor(const c10::OperatorHandle& op, const OpPlan& plan, torch::jit::Stack* stack) {
  invoke_native(op, plan, stack);
  count_on_native_instead(plan, plan.backend.load(std::memory_order_relaxed));
}

void restore(torch::jit::Stack* stack, size_t base, const std::vector<c10::IValue>& saved) {
  stack->erase(stack->begin() + std::min(base, stack->size()), stack->end());
  stack->insert(stack->end(), saved.begin(), saved.end());
}

void invoke_flaggems(const c10::OperatorHandle& op, const OpPlan& plan, torch::jit::Stack* stack) {
  const size_t n = op.schema().arguments().size();
  const size_t base = stack->size() - n;
  const FlatNeed need = plan.flaggems_flat_operands.load(std::memory_order_relaxed);
  if (need != FlatNeed::None && !flat_operands(need, *stack, base)) {
    return serve_on_vendor(op, plan, stack);
  }
  launcher::Lookup look = launcher::lookup(op, plan, *stack);
  if (look.plan) {
    if (!writes_arguments(op.schema())) return launcher::replay(*look.plan, look.tensors, op, stack);
    std::vector<c10::IValue> args(stack->begin() + base, stack->end());
    launcher::replay(*look.plan, look.tensors, op, stack);
    return keep_results_in_written_arguments(op.schema(), args, stack);
  }
  // Kept so that a call FlagGems refuses (unsupported dtype, layout, shape),
  // or a first call the vendor's kernel refuses, can run on the other.
  std::vector<c10::IValue> saved(stack->begin() + base, stack->end());
  if (look.vendor) {
    try {
      return serve_on_vendor(op, plan, stack);
    } catch (const c10::Error&) {
      restore(stack, base, saved);  // FlagGems may serve what the vendor does not
    }
  }
  std::string failure;
  {
    py::gil_scoped_acquire gil;
    try {
      call_function(op, plan, look, stack);
      keep_results_in_written_arguments(op.schema(), saved, stack);
      return;
    } catch (py::error_already_set& e) {
      failure = e.what();
    }
  }
  TORCH_CHECK(!strict(), "flagos: FlagGems (", flagos_backend_name(plan.backend), ") failed on ",
              plan.name, ": ", failure);
  warn_once(plan, failure);
  restore(stack, base, saved);
  invoke_native(op, plan, stack);
}

}  // namespace

void set_flaggems_function(const std::string& op_name, py::object fn) {
  std::lock_guard<std::mutex> lock(functions_mutex);
  auto& slot = (*functions)[op_name];
  Py_XDECREF(slot);
  slot = fn.release().ptr();
  launcher::forget(op_name);
  set_flaggems_invoker(&invoke_flaggems);
}

void set_launch_recorder(py::object fn) {
  Py_XDECREF(recorder);
  recorder = fn.is_none() ? nullptr : fn.release().ptr();
}

}  // namespace torch_fl
