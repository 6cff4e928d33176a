// FlagGemsLauncher.h - FlagGems' kernels without FlagGems' Python.
//
// A FlagGems function spends ~70 us of Python per call (argument checks,
// dtype promotion, its kernel cache, Triton's launcher) to launch kernels
// that take a few. For an argument signature it has seen (op, dtypes,
// shapes, strides, pointer alignment, aliasing, scalar values, device),
// the launcher allocates what the function allocated and launches the
// kernels it launched, with the new pointers, from C++. The first
// vendor_calls() calls of a new signature run on the vendor's kernel (none
// for an op the vendor lacks); the next runs the Python function under
// torch_fl/_launch_capture.py, which records it; later calls replay.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "aten/Routing.h"
#include "python/LaunchKey.h"

namespace torch_fl {
namespace launcher {

struct Plan;

// What to do with one call routed to FlagGems.
struct Lookup {
  std::shared_ptr<const Plan> plan;  // set: replay it
  bool record = false;               // run the function under the recorder
  bool vendor = false;               // run the vendor's kernel: one of a signature's first calls
  std::vector<int64_t> key;
  // With a plan or a record: the tensor arguments in stack order (lists
  // flattened, an absent optional tensor undefined), as records index them.
  std::vector<at::Tensor> tensors;
};

void set_enabled(bool on);  // enabled(): LaunchKey.h

// How many calls of a new signature the vendor's kernel serves before the
// next is recorded: a signature used less never pays for FlagGems' Python.
// 0: the first call is recorded, and every call runs a FlagGems kernel.
constexpr int64_t kDefaultVendorCalls = 64;
int64_t vendor_calls();
void set_vendor_calls(int64_t calls);  // throws for a negative count

// The arguments are the last schema().arguments().size() entries of stack.
Lookup lookup(const c10::OperatorHandle& op, const OpPlan& plan, const torch::jit::Stack& stack);

// Replaces the arguments on the stack by the results; `tensors` is
// Lookup::tensors.
void replay(const Plan& plan, const std::vector<at::Tensor>& tensors, const c10::OperatorHandle& op,
            torch::jit::Stack* stack);

// Stores a record (a plan tuple, or the reason as a str). GIL held.
void remember(const OpPlan& plan, std::vector<int64_t> key, const pybind11::object& record);

// Drops the records of one op (its function changed), or all ("").
void forget(const std::string& op_name);

// {op: {"replayed", "recorded", "python", "vendor", "flushed", "signatures",
// "replayable_signatures", "reason"}}.
pybind11::dict stats();

void count_python_call(const OpPlan& plan);

// Tests: instead of launching, keep each launch as (function, grid, block,
// shared bytes, [parameter bytes]) for `recorded_launches`, and each copy of
// an argument, in order, as (0, (0, 0, 0), 0, 0, []).
void keep_launches(bool on);
pybind11::list recorded_launches();

}  // namespace launcher
}  // namespace torch_fl
