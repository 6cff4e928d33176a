// Routing.h - which backend runs an op on flagos tensors.
//
// Each op gets a plan the first time it reaches the routing kernel; after
// that a call costs one pointer-keyed lookup. Changing the table (set_route,
// override) bumps a generation counter, and stale plans re-resolve.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <atomic>
#include <string>

#include "flagos/flagos.h"

namespace torch_fl {

struct OpPlan {
  std::string name;          // "add.Tensor"
  flagos_backend_t backend;  // resolved: never FLAGOS_BACKEND_DEFAULT
  bool has_native_kernel;
  uint64_t generation;
  std::atomic<uint64_t> calls[FLAGOS_BACKEND_COUNT_];
};

OpPlan& plan_for(const c10::OperatorHandle& op);

// "add.Tensor" for aten::add.Tensor, "mm" for aten::mm.
std::string short_op_name(const c10::OperatorName& name);

// Bumped by every change of routing; plans re-resolve lazily.
void invalidate_plans();

// The backend an op name resolves to now (overrides, table, defaults).
flagos_backend_t resolve_backend(const std::string& op_name, bool has_native_kernel);

bool log_dispatch_enabled();

// FlagGems routes are served from Python (torch_fl/flaggems.py), which
// installs the handler at import; without it such a route is an error.
using BoxedRoute = void (*)(const c10::OperatorHandle&, const OpPlan&, torch::jit::Stack*);
void set_flaggems_route(BoxedRoute route);
void run_flaggems_route(const c10::OperatorHandle& op, const OpPlan& plan, torch::jit::Stack* stack);

}  // namespace torch_fl
