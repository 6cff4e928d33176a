#include "aten/Routing.h"

#include <array>
#include <cstdlib>
#include <memory>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>

#include "aten/RoutingState.h"
#include <torch/library.h>
#include "common.h"

namespace torch_fl {
namespace {

std::shared_mutex plans_mutex;
std::unordered_map<const void*, std::unique_ptr<OpPlan>> plans;
std::atomic<bool> log_dispatch{env_flag("FLAGOS_LOG_DISPATCH")};
std::atomic<BoxedRoute> flaggems_route{nullptr};

bool has_native_kernel(const c10::OperatorHandle& op) {
  return op.hasComputedKernelForDispatchKey(native_dispatch_key());
}

}  // namespace

namespace routing_detail {
std::atomic<uint64_t> generation{1};
}  // namespace routing_detail
using routing_detail::generation;

std::string short_op_name(const c10::OperatorName& name) {
  std::string out = name.name;
  if (out.rfind("aten::", 0) == 0) out = out.substr(6);
  if (!name.overload_name.empty()) out += "." + name.overload_name;
  return out;
}

void invalidate_plans() { generation.fetch_add(1, std::memory_order_acq_rel); }

bool log_dispatch_enabled() { return log_dispatch.load(std::memory_order_relaxed); }
void set_log_dispatch(bool on) { log_dispatch.store(on); }

flagos_backend_t native_backend() {
  return live_vendor() == Vendor::Cuda ? FLAGOS_BACKEND_CUDA : FLAGOS_BACKEND_CPU;
}

flagos_backend_t resolve_backend(const std::string& op_name, bool native_kernel) {
  flagos_backend_t chosen = routing_state::explicit_backend(op_name);
  if (chosen == FLAGOS_BACKEND_FLAGGEMS) chosen = FLAGOS_BACKEND_FLAGOS;  // one path, two names
  const flagos_backend_t native = native_backend();
  // Asking for the vendor's kernel of an op it has none for means the CPU.
  if (chosen == native && !native_kernel) return FLAGOS_BACKEND_CPU;
  const bool flaggems_has_op = routing_state::flaggems_default_for(op_name);
  // A bare-name entry ("add = flagos") covers the overloads FlagGems serves;
  // the others take the defaults below instead of failing at every call.
  const bool on_flaggems = chosen == FLAGOS_BACKEND_FLAGOS || chosen == FLAGOS_BACKEND_FLAGOS_PYTHON;
  if (chosen != FLAGOS_BACKEND_DEFAULT && !(on_flaggems && !flaggems_has_op)) return chosen;
  if (flaggems_has_op) return FLAGOS_BACKEND_FLAGOS;
  return native_kernel ? native : FLAGOS_BACKEND_CPU;
}

static OpPlan& plan_for_slow(const c10::OperatorHandle& op, const void* key, uint64_t now);

OpPlan& plan_for(const c10::OperatorHandle& op) {
  const void* key = &op.schema();
  const uint64_t now = generation.load(std::memory_order_acquire);
  // A small per-thread cache in front of the shared map: the common call
  // costs a few loads, no lock. Plans are never freed, so cached pointers
  // stay valid; a routing change bumps `generation` and misses here.
  struct CacheSlot {
    const void* key = nullptr;
    OpPlan* plan = nullptr;
  };
  thread_local std::array<CacheSlot, 256> cache;
  CacheSlot& hit = cache[(reinterpret_cast<uintptr_t>(key) >> 4) & 255];
  if (C10_LIKELY(hit.key == key && hit.plan->generation.load(std::memory_order_acquire) == now)) {
    return *hit.plan;
  }
  OpPlan& plan = plan_for_slow(op, key, now);
  hit.key = key;
  hit.plan = &plan;
  return plan;
}

static OpPlan& plan_for_slow(const c10::OperatorHandle& op, const void* key, uint64_t now) {
  {
    std::shared_lock<std::shared_mutex> lock(plans_mutex);
    auto it = plans.find(key);
    if (C10_LIKELY(it != plans.end() && it->second->generation == now)) return *it->second;
  }
  std::unique_lock<std::shared_mutex> lock(plans_mutex);
  auto& slot = plans[key];
  if (!slot) {
    slot = std::make_unique<OpPlan>();
    slot->name = short_op_name(op.operator_name());
    slot->has_native_kernel = has_native_kernel(op);
    const auto& n = slot->name;
    // Copies take CPU tensors; CTC losses take their lengths on any device.
    slot->accepts_host_tensors = n.rfind("copy", 0) == 0 || n.rfind("_copy", 0) == 0 ||
                                 n.rfind("_to_copy", 0) == 0 || n.rfind("to.", 0) == 0 ||
                                 n.rfind("_ctc_loss", 0) == 0;
    slot->host_dropout = n == "native_dropout" && live_vendor() == Vendor::Host;
    for (auto& c : slot->calls) c.store(0);
  }
  slot->backend = resolve_backend(slot->name, slot->has_native_kernel);
  slot->flaggems_flat_operands.store(routing_state::flaggems_flat_need(slot->name));
  slot->generation = now;
  return *slot;
}

void for_each_plan(const std::function<void(const OpPlan&)>& fn) {
  std::shared_lock<std::shared_mutex> lock(plans_mutex);
  for (const auto& [key, plan] : plans) fn(*plan);
}

void reset_plan_counts() {
  std::shared_lock<std::shared_mutex> lock(plans_mutex);
  for (const auto& [key, plan] : plans) {
    for (auto& c : plan->calls) c.store(0);
  }
}

void set_flaggems_invoker(BoxedRoute invoke) { flaggems_route.store(invoke); }

BoxedRoute flaggems_invoker(const OpPlan& plan) {
  BoxedRoute invoke = flaggems_route.load();
  TORCH_CHECK(invoke != nullptr, "flagos: ", plan.name, " is routed to ",
              flagos_backend_name(plan.backend),
              " but FlagGems is not loaded (pip install flag-gems, or route the op elsewhere)");
  return invoke;
}

}  // namespace torch_fl

namespace torch_fl {

std::optional<c10::OperatorHandle> find_aten_op(const std::string& name) {
  auto dot = name.find('.');
  return c10::Dispatcher::singleton().findOp(
      {"aten::" + name.substr(0, dot), dot == std::string::npos ? "" : name.substr(dot + 1)});
}

namespace {

// A CompositeImplicitAutograd op takes a backend kernel on flagos only
// where the vendor's own device has one (silu_backward on CUDA and CPU):
// flagos then dispatches it as that device does, autograd included.
// Elsewhere (linear, softmax.int) the decomposition is what autograd
// differentiates, and a backend kernel would hide it.
bool decomposition_is_its_autograd(const c10::OperatorHandle& op) {
  return op.hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd) &&
         !op.hasKernelForDispatchKey(native_dispatch_key());
}

torch::Library& claimed_library() {
  static auto* lib = new torch::Library(torch::Library::IMPL, "aten", c10::DispatchKey::PrivateUse1,
                                        __FILE__, __LINE__);
  return *lib;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> claim_ops(const std::vector<std::string>& names) {
  std::vector<std::pair<std::string, std::string>> refused;
  for (const auto& name : names) {
    auto op = find_aten_op(name);
    if (!op) {
      refused.emplace_back(name, "no such ATen operator in this torch");
      continue;
    }
    if (decomposition_is_its_autograd(*op)) {
      refused.emplace_back(name, "decomposes above the backend key (CompositeImplicitAutograd)");
      continue;
    }
    if (op->hasKernelForDispatchKey(c10::DispatchKey::PrivateUse1)) continue;  // ours already
    if (!op->hasComputedKernelForDispatchKey(c10::DispatchKey::PrivateUse1)) continue;  // fallback
    claimed_library().impl(name.c_str(), torch::CppFunction::makeFromBoxedFunction<&routing_kernel>());
  }
  invalidate_plans();
  return refused;
}

std::vector<std::string> composite_ops_with_native_kernels() {
  const auto key = native_dispatch_key();
  std::vector<std::string> out;
  for (const auto& name : c10::Dispatcher::singleton().getAllOpNames()) {
    if (name.name.rfind("aten::", 0) != 0) continue;
    auto op = c10::Dispatcher::singleton().findOp(name);
    if (!op || !op->hasKernelForDispatchKey(key)) continue;
    if (op->hasKernelForDispatchKey(c10::DispatchKey::PrivateUse1)) continue;
    if (decomposition_is_its_autograd(*op)) continue;
    // The native key's own kernel wins over a CompositeImplicitAutograd
    // decomposition (silu_backward: one kernel on CUDA, five ops on a
    // backend without a kernel of its own).
    if (!op->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd) &&
        !op->hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutograd) &&
        !op->hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutogradNonFunctional)) {
      continue;
    }
    out.push_back(short_op_name(name));
  }
  return out;
}

}  // namespace torch_fl
