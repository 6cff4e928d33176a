// Routing.h - which backend runs an op on flagos tensors.
//
// Each op gets a plan the first time it reaches the routing kernel; after
// that a call costs one pointer-keyed lookup. Changing the table (set_route,
// override) bumps a generation counter, and stale plans re-resolve.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <atomic>
#include <string>
#include <utility>
#include <vector>

#include "flagos/flagos.h"

namespace torch_fl {

namespace launcher {
struct OpCache;
}  // namespace launcher

// Which calls a FlagGems kernel gets right, or fast: any; only flat ones
// (every tensor operand contiguous, of one shape); only flat ones of one
// dtype as well.
enum class FlatNeed : uint8_t { None, Flat, FlatOneDtype };

struct OpPlan {
  std::string name;          // "add.Tensor"
  // Read without a lock on every call; re-resolved when routing changes.
  std::atomic<flagos_backend_t> backend;  // resolved: never FLAGOS_BACKEND_DEFAULT
  bool has_native_kernel;
  bool accepts_host_tensors;  // copies: CPU tensors are their inputs
  bool host_dropout;          // native_dropout on the host vendor
  // FlagGems' kernel serves only calls whose tensor operands are flat
  // (FlatOperands); others go to the vendor's kernel.
  std::atomic<FlatNeed> flaggems_flat_operands{FlatNeed::None};
  std::atomic<uint64_t> generation;
  // Counters: a route that hands a call on (BoxedRoute's plan is const) counts it.
  mutable std::atomic<uint64_t> calls[FLAGOS_BACKEND_COUNT_];
  // The FlagGems launcher's records of the op, once it has any: found
  // through the plan, not by a hash per call.
  mutable std::atomic<launcher::OpCache*> launcher_cache{nullptr};
};

OpPlan& plan_for(const c10::OperatorHandle& op);

namespace routing_detail {
extern std::atomic<uint64_t> generation;  // bumped by invalidate_plans()
}  // namespace routing_detail

// The plan of `op`, given one that plan_for() returned for it before: that
// one, while routing has not changed since (plans are never freed, and a
// stale one is re-resolved in place). An op with a kernel of its own
// (Unboxed.cpp) keeps its plan so: no per-thread cache or hash per call.
inline OpPlan& current_plan(OpPlan& known, const c10::OperatorHandle& op) {
  if (C10_LIKELY(known.generation.load(std::memory_order_acquire) ==
                 routing_detail::generation.load(std::memory_order_acquire))) {
    return known;
  }
  return plan_for(op);
}

// The boxed kernel every routed op runs (the PrivateUse1 fallback).
void routing_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack);

// Registers routing_kernel explicitly for ops whose PrivateUse1 kernel would
// otherwise be a composite one (so routing can reach them). Refuses an op
// whose CompositeImplicitAutograd decomposition is also its autograd.
// Returns the names it could not claim, with the reason.
std::vector<std::pair<std::string, std::string>> claim_ops(const std::vector<std::string>& names);
// Names of ops with a direct native kernel that PrivateUse1 would run as a
// composite (structured functional/in-place variants, and decompositions
// such as silu_backward's that the native key bypasses): claiming them lets
// the native route call the vendor's kernel directly, as the vendor's own
// device does.
std::vector<std::string> composite_ops_with_native_kernels();

// The dispatcher's handle of "add.Tensor" / "mm" (aten namespace), if any.
std::optional<c10::OperatorHandle> find_aten_op(const std::string& name);

// "add.Tensor" for aten::add.Tensor, "mm" for aten::mm.
std::string short_op_name(const c10::OperatorName& name);

// Bumped by every change of routing; plans re-resolve lazily.
void invalidate_plans();

// The backend word of the live vendor's own kernels (cuda on CUDA, cpu on host).
flagos_backend_t native_backend();

// Whether the tensor operands seen so far are all contiguous and of one
// shape, and with FlatNeed::FlatOneDtype of one dtype too (undefined ones
// do not count): what a FlagGems kernel that reads its operands as flat
// arrays gets right (OpPlan::flaggems_flat_operands). The boxed FlagGems
// bridge and the unboxed route feed it their arguments.
class FlatOperands {
 public:
  explicit FlatOperands(FlatNeed need) : one_dtype_(need == FlatNeed::FlatOneDtype) {}
  void see(const at::Tensor& t) {
    if (!flat_ || !t.defined()) return;
    if (!t.is_contiguous() || (first_ != nullptr && (!t.sizes().equals(first_->sizes()) ||
                                                     (one_dtype_ && t.scalar_type() != first_->scalar_type())))) {
      flat_ = false;
    }
    if (first_ == nullptr) first_ = &t;
  }
  bool flat() const { return flat_; }

 private:
  const at::Tensor* first_ = nullptr;
  bool one_dtype_;
  bool flat_ = true;
};

// A call counted on `counted` (a FlagGems route) that the vendor's kernel
// serves after all: the counters say where it ran.
inline void count_on_native_instead(const OpPlan& plan, flagos_backend_t counted) {
  plan.calls[counted].fetch_sub(1, std::memory_order_relaxed);
  plan.calls[native_backend()].fetch_add(1, std::memory_order_relaxed);
}

// The backend an op name resolves to now (overrides, table, defaults).
flagos_backend_t resolve_backend(const std::string& op_name, bool has_native_kernel);

bool log_dispatch_enabled();

// Ops with an unboxed PrivateUse1 kernel (Unboxed.cpp); empty when
// FLAGOS_UNBOXED_OPS=0 left every op to the boxed routing kernel.
std::vector<std::string> unboxed_ops();

// Runs an op whose flagos arguments are already aliased as native tensors.
using BoxedRoute = void (*)(const c10::OperatorHandle&, const OpPlan&, torch::jit::Stack*);
// The vendor's own kernel.
void invoke_native(const c10::OperatorHandle& op, const OpPlan& plan, torch::jit::Stack* stack);
// FlagGems routes call FlagGems' Python functions; the Python bridge
// installs the invoker when FlagGems loads. Throws if it is missing.
void set_flaggems_invoker(BoxedRoute invoke);
BoxedRoute flaggems_invoker(const OpPlan& plan);

}  // namespace torch_fl
