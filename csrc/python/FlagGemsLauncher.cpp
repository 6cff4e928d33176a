// FlagGemsLauncher.cpp - records of FlagGems calls, and their replay.
#include "python/FlagGemsLauncher.h"

#include <ATen/Context.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/enum_tag.h>
#include <ATen/ops/as_strided.h>
#include <c10/core/DefaultDtype.h>
#include <ATen/ops/empty_strided.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/Dtype.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <mutex>
#include <string>
#include <unordered_map>

#include "aten/Storage.h"
#include "common.h"
#include "flagos/flagos.h"

namespace py = pybind11;

namespace torch_fl {
namespace launcher {

enum class Source : uint8_t { Input = 0, Allocation = 1, Copy = 2 };

struct Pointer {
  uint32_t param;   // which kernel parameter
  Source source;
  uint32_t index;   // into the tensor arguments or the allocations
  int64_t offset;   // bytes from that tensor's data pointer
};

struct KernelLaunch {
  void* function;
  unsigned grid[3];
  unsigned block;
  unsigned shared;
  std::vector<uint64_t> bytes;  // one 8-byte slot per parameter
  std::vector<Pointer> pointers;
};

struct Allocation {
  std::vector<int64_t> sizes, strides;
  at::ScalarType dtype;
  bool zeroed;  // filled with zeros before the kernels (they accumulate into it)
};

// A copy (contiguous(), clone()) of an argument, or of a view of one,
// made before the kernels read it.
struct Copy {
  uint32_t input;
  int64_t offset;  // bytes from the argument's data pointer to the view's
  std::vector<int64_t> sizes, view_strides, strides;
  size_t before_launch;  // made after this many launches, as the function did
};

struct Result {
  Source source;
  uint32_t index;
  bool same;  // the argument itself (in-place and out= results)
  int64_t offset;
  std::vector<int64_t> sizes, strides;
};

struct Plan {
  std::vector<Copy> copies;
  std::vector<Allocation> allocations;
  std::vector<KernelLaunch> launches;
  std::vector<Result> results;
  bool returns_arguments = true;  // every result is an argument itself
};

namespace {

// Per op. A new signature past it drops the signatures not recorded yet (a
// long generation makes new ones every token), or, if every one is, all of
// them, rather than leave later ones to Python.
constexpr size_t kMaxSignatures = 1024;
// A record refused for a reason that may not come back (an autotuning first
// call benchmarks its configurations) is retried: a signature is given up
// only after this many refused records.
constexpr int kMaxMisses = 3;

struct KeyHash {
  size_t operator()(const std::vector<int64_t>& key) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t v : key) h = (h ^ static_cast<uint64_t>(v)) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

// Vendor: served by the vendor's kernel so far (`calls` times); Fresh: the
// next call records; Replay: recorded; Python: given up.
enum class State { Vendor, Fresh, Replay, Python };

struct Entry {
  State state = State::Fresh;
  std::shared_ptr<const Plan> plan;
  int misses = 0;
  int64_t calls = 0;  // on the vendor's kernel
};

}  // namespace

// Named, not anonymous: OpPlan::launcher_cache points at one.
struct OpCache {
  const OpPlan* op;
  int random = -1;  // draws random numbers (never recorded): 1, 0, or -1 until known
  std::unordered_map<std::vector<int64_t>, Entry, KeyHash> entries;
  std::atomic<uint64_t> replayed{0}, recorded{0}, python{0}, vendor{0}, flushed{0};
  std::string reason;  // the last refusal
};

namespace {

std::mutex mutex;
// Plans live as long as the process; so do their caches.
auto* caches = new std::unordered_map<const OpPlan*, std::unique_ptr<OpCache>>();
std::atomic<bool> on{env_flag("FLAGOS_FLAGGEMS_LAUNCHER", /*unset=*/true)};
std::atomic<bool> keeping{false};

std::atomic<int64_t> vendor_call_count{kDefaultVendorCalls};  // FLAGOS_FLAGGEMS_VENDOR_CALLS, set at import

// FLAGOS_LAUNCHER_LOG=1: one line per signature given up, with the reason.
bool log_enabled() {
  static const bool value = env_flag("FLAGOS_LAUNCHER_LOG");
  return value;
}
std::mutex kept_mutex;
std::vector<std::tuple<uintptr_t, std::vector<unsigned>, unsigned, unsigned, std::vector<std::string>>> kept;

// A random op draws a new seed or offset at each call, which a replay
// would repeat. A record cannot tell (the caller may re-seed), so random
// ops are known by their schema: a generator argument, the
// nondeterministic_seeded tag (rand_like, randperm), or native_dropout.
bool draws_random_numbers(const c10::OperatorHandle& op) {
  const c10::FunctionSchema& schema = op.schema();
  if (schema.name() == "aten::native_dropout" || op.hasTag(at::Tag::nondeterministic_seeded)) return true;
  for (const auto& arg : schema.arguments()) {
    const c10::Type* type = arg.type().get();
    if (type->kind() == c10::TypeKind::OptionalType) type = type->castRaw<c10::OptionalType>()->getElementType().get();
    if (type->kind() == c10::TypeKind::GeneratorType) return true;
  }
  return false;
}

// Keeps the recorded and given-up signatures (what a steady workload uses)
// while there is room for new ones.
void drop_signatures(OpCache& cache) {
  for (auto it = cache.entries.begin(); it != cache.entries.end();) {
    const State s = it->second.state;
    it = (s == State::Vendor || s == State::Fresh) ? cache.entries.erase(it) : std::next(it);
  }
  if (cache.entries.size() >= kMaxSignatures / 2) cache.entries.clear();
  cache.flushed.fetch_add(1, std::memory_order_relaxed);
}

// The mutex held. The plan keeps its cache: no hash of the plan per call.
OpCache& cache_of(const OpPlan& plan) {
  if (OpCache* known = plan.launcher_cache.load(std::memory_order_relaxed)) return *known;
  auto& slot = (*caches)[&plan];
  if (!slot) {
    slot = std::make_unique<OpCache>();
    slot->op = &plan;
  }
  plan.launcher_cache.store(slot.get(), std::memory_order_relaxed);
  return *slot;
}

c10::DeviceIndex current_native_device() {
  return native_guard()->getDevice().index();
}

std::vector<int64_t> ints(const py::handle& seq) {
  std::vector<int64_t> out;
  for (const py::handle& v : seq) out.push_back(py::cast<int64_t>(v));
  return out;
}

Source source_of(const py::handle& v) {
  const auto s = py::cast<int>(v);
  TORCH_CHECK(s >= 0 && s <= 2, "flagos: a launch record names source ", s);
  return static_cast<Source>(s);
}

// The record made by torch_fl/_launch_capture.py: (allocations, launches,
// results, copies); see that file for each item's form.
std::shared_ptr<const Plan> parse(const py::tuple& record) {
  TORCH_CHECK(record.size() == 4, "flagos: a launch record has ", record.size(), " parts, not 4");
  auto plan = std::make_shared<Plan>();
  for (const py::handle& c : record[3]) {
    auto item = py::cast<py::tuple>(c);
    plan->copies.push_back({py::cast<uint32_t>(item[0]), py::cast<int64_t>(item[1]), ints(item[2]), ints(item[3]),
                            ints(item[4]), py::cast<size_t>(item[5])});
  }
  for (const py::handle& a : record[0]) {
    auto item = py::cast<py::tuple>(a);
    TORCH_CHECK(item.size() == 4, "flagos: a recorded allocation has ", item.size(), " parts, not 4");
    PyObject* dtype = item[2].ptr();
    TORCH_CHECK(THPDtype_Check(dtype), "flagos: a recorded allocation has no dtype");
    plan->allocations.push_back(
        {ints(item[0]), ints(item[1]), reinterpret_cast<THPDtype*>(dtype)->scalar_type, py::cast<bool>(item[3])});
  }
  for (const py::handle& l : record[1]) {
    auto item = py::cast<py::tuple>(l);
    KernelLaunch launch;
    launch.function = reinterpret_cast<void*>(py::cast<uintptr_t>(item[0]));
    auto grid = ints(item[1]);
    TORCH_CHECK(grid.size() == 3, "flagos: a recorded grid has ", grid.size(), " dimensions");
    for (int i = 0; i < 3; ++i) launch.grid[i] = static_cast<unsigned>(grid[i]);
    launch.block = py::cast<unsigned>(item[2]);
    launch.shared = py::cast<unsigned>(item[3]);
    uint32_t param = 0;
    for (const py::handle& p : item[4]) {
      if (py::isinstance<py::bytes>(p)) {
        std::string raw = py::cast<std::string>(p);
        TORCH_CHECK(!raw.empty() && raw.size() <= 8, "flagos: a recorded parameter has ", raw.size(), " bytes");
        uint64_t slot = 0;
        std::memcpy(&slot, raw.data(), raw.size());
        launch.bytes.push_back(slot);
      } else {
        auto ptr = py::cast<py::tuple>(p);
        launch.pointers.push_back({param, source_of(ptr[0]), py::cast<uint32_t>(ptr[1]), py::cast<int64_t>(ptr[2])});
        launch.bytes.push_back(0);
      }
      ++param;
    }
    plan->launches.push_back(std::move(launch));
  }
  for (const py::handle& r : record[2]) {
    auto item = py::cast<py::tuple>(r);
    Result result{source_of(item[0]), py::cast<uint32_t>(item[1]), item[3].is_none(), py::cast<int64_t>(item[2]), {}, {}};
    if (!result.same) {
      result.sizes = ints(item[3]);
      result.strides = ints(item[4]);
    }
    plan->returns_arguments &= result.source == Source::Input && result.same;
    plan->results.push_back(std::move(result));
  }
  auto check = [&](Source source, uint32_t index, const char* what) {
    const size_t count = source == Source::Allocation ? plan->allocations.size()
                         : source == Source::Copy     ? plan->copies.size()
                                                      : SIZE_MAX;  // arguments: checked at replay
    TORCH_CHECK(index < count, "flagos: a launch record's ", what, " names item ", index, " of ", count);
  };
  for (const KernelLaunch& k : plan->launches) {
    for (const Pointer& p : k.pointers) check(p.source, p.index, "pointer");
  }
  for (const Result& r : plan->results) check(r.source, r.index, "result");
  return plan;
}

// `bytes` holds the parameters with this call's pointers patched in.
void launch(const KernelLaunch& k, const uint64_t* bytes, void* stream) {
  c10::SmallVector<void*, 32> params(k.bytes.size());
  for (size_t i = 0; i < k.bytes.size(); ++i) params[i] = const_cast<uint64_t*>(bytes + i);
  if (C10_UNLIKELY(keeping.load(std::memory_order_relaxed))) {
    std::vector<std::string> kept_params;
    for (void* p : params) kept_params.emplace_back(static_cast<const char*>(p), 8);
    std::lock_guard<std::mutex> lock(kept_mutex);
    kept.emplace_back(reinterpret_cast<uintptr_t>(k.function), std::vector<unsigned>{k.grid[0], k.grid[1], k.grid[2]},
                      k.block, k.shared, std::move(kept_params));
    return;
  }
  flagos_kernel_launch_t desc{k.function, {k.grid[0], k.grid[1], k.grid[2]}, {k.block, 1, 1}, k.shared, params.data()};
  FLAGOS_CHECK(flagos_launch_kernel(&desc, stream));
}

}  // namespace

bool enabled() { return on.load(std::memory_order_relaxed); }
void set_enabled(bool value) { on.store(value); }
int64_t vendor_calls() { return vendor_call_count.load(std::memory_order_relaxed); }
void set_vendor_calls(int64_t calls) {
  TORCH_CHECK(calls >= 0, "flagos: the vendor's kernel cannot serve ", calls, " calls of a signature");
  vendor_call_count.store(calls);
}

std::vector<int64_t>& key_buffer() {
  thread_local std::vector<int64_t> buffer;
  return buffer;
}

void start_key(std::vector<int64_t>& key) {
  key.push_back(current_native_device());
  key.push_back(static_cast<int64_t>(c10::typeMetaToScalarType(c10::get_default_dtype())) * 2 +
                at::globalContext().deterministicAlgorithms());
}

void count_python_call(const OpPlan& plan) {
  std::lock_guard<std::mutex> lock(mutex);
  cache_of(plan).python.fetch_add(1, std::memory_order_relaxed);
}

Lookup lookup(const c10::OperatorHandle& op, const OpPlan& plan, const torch::jit::Stack& stack) {
  Lookup out;
  if (!enabled() || plan.backend.load(std::memory_order_relaxed) != FLAGOS_BACKEND_FLAGOS) return out;
  LaunchKey<at::Tensor> key(key_buffer());
  const size_t n = op.schema().arguments().size();
  for (size_t i = stack.size() - n; i < stack.size(); ++i) {
    if (!key.value(stack[i])) return out;
  }
  std::lock_guard<std::mutex> lock(mutex);
  OpCache& cache = cache_of(plan);
  if (cache.random < 0) cache.random = draws_random_numbers(op);
  if (cache.random) return out;
  auto it = cache.entries.find(key.key);
  if (it == cache.entries.end()) {
    if (cache.entries.size() >= kMaxSignatures) drop_signatures(cache);
    const bool on_vendor = vendor_calls() > 0 && plan.has_native_kernel;
    it = cache.entries.emplace(key.key, Entry{on_vendor ? State::Vendor : State::Fresh, nullptr, 0, 0}).first;
  }
  Entry& entry = it->second;
  if (entry.state == State::Vendor) {
    // A record costs FlagGems' Python (~100 us) and a replay saves about a
    // microsecond against the vendor's kernel, so a signature that a few
    // dozen calls use (a decode step's growing KV cache makes new ones
    // every token, used once per layer) is left to the vendor's kernel.
    if (entry.calls < vendor_calls()) {
      ++entry.calls;
      cache.vendor.fetch_add(1, std::memory_order_relaxed);
      out.vendor = true;
      return out;
    }
    entry.state = State::Fresh;
  }
  if (entry.state == State::Replay) {
    out.plan = entry.plan;
    cache.replayed.fetch_add(1, std::memory_order_relaxed);
  } else {
    out.record = entry.state != State::Python;
  }
  if (out.record) out.key = key.key;
  if (out.plan || out.record) out.tensors.assign(std::make_move_iterator(key.tensors.begin()),
                                                std::make_move_iterator(key.tensors.end()));
  return out;
}

void remember(const OpPlan& plan, std::vector<int64_t> key, const py::object& record) {
  std::lock_guard<std::mutex> lock(mutex);
  OpCache& cache = cache_of(plan);
  cache.recorded.fetch_add(1, std::memory_order_relaxed);
  auto it = cache.entries.find(key);
  if (it == cache.entries.end()) return;  // dropped since (forget, or a full cache)
  Entry& entry = it->second;
  if (entry.state == State::Python || entry.state == State::Replay) return;
  std::string why;
  if (py::isinstance<py::str>(record)) {
    why = py::cast<std::string>(record);
  } else {
    // One record is enough: what could differ between two calls with the
    // same signature is refused by the recorder (autotuning, host reads
    // of device data, cached tensors) or never recorded (random ops).
    try {
      entry.plan = parse(py::cast<py::tuple>(record));
      entry.state = State::Replay;
      return;
    } catch (const std::exception& e) {
      why = e.what();
      entry.misses = kMaxMisses - 1;
    }
  }
  entry.state = State::Fresh;
  if (++entry.misses < kMaxMisses) return;
  entry.state = State::Python;
  if (log_enabled()) std::cerr << "[flagos launcher] " << plan.name << " stays in Python: " << why << std::endl;
  cache.reason = std::move(why);
}

namespace {

// While launches are kept: a step of a replay that the vendor's own kernel
// does (a copy, a zero fill), kept in order among the launches as one of
// function 0 with `params`.
void keep_vendor_step(std::vector<std::string> params) {
  std::lock_guard<std::mutex> lock(kept_mutex);
  kept.emplace_back(0, std::vector<unsigned>{0, 0, 0}, 0, 0, std::move(params));
}

const at::Tensor& input_at(const std::vector<at::Tensor>& inputs, size_t i) { return inputs[i]; }
const at::Tensor& input_at(c10::ArrayRef<const at::Tensor*> inputs, size_t i) { return *inputs[i]; }

// Launches a record's kernels on `inputs` and appends the op's results. An
// allocation is released on return, so that a result over it is the only
// holder of its storage (what mapping results to flagos looks for).
template <class Inputs>
void run_plan(const Plan& plan, const Inputs& inputs, c10::SmallVectorImpl<at::Tensor>& results) {
  const c10::DeviceType type = native_device_type();
  const c10::Device device = native_device(current_native_device());
  for (const Copy& c : plan.copies) TORCH_CHECK(c.input < inputs.size(), "flagos: a launch record copies argument ", c.input, " of ", inputs.size());
  c10::SmallVector<at::Tensor, 2> copies;
  auto copy_up_to = [&](size_t launches_done) {
    while (copies.size() < plan.copies.size() && plan.copies[copies.size()].before_launch <= launches_done) {
      const Copy& c = plan.copies[copies.size()];
      const at::Tensor& in = input_at(inputs, c.input);
      at::Tensor view = at::as_strided(in, c.sizes, c.view_strides, in.storage_offset() + c.offset / in.element_size());
      copies.push_back(at::empty_strided(c.sizes, c.strides, in.options()).copy_(view));
      if (C10_UNLIKELY(keeping.load(std::memory_order_relaxed))) keep_vendor_step({});
    }
  };
  // Straight from the vendor's allocator on the current device (the
  // routing kernel set it): a dispatched empty_strided per output cost more
  // than the launch.
  c10::SmallVector<at::Tensor, 4> allocations;
  c10::SmallVector<bool, 4> handed_out(plan.allocations.size(), false);
  for (const Allocation& a : plan.allocations) {
    allocations.push_back(at::detail::empty_strided_generic(a.sizes, a.strides, native_allocator(),
                                                            c10::DispatchKeySet(native_dispatch_key()), a.dtype));
    if (a.zeroed) {
      // The vendor's fill, on the current stream as the launches below.
      allocations.back().zero_();
      if (C10_UNLIKELY(keeping.load(std::memory_order_relaxed))) {
        // Its parameters: the memory's address and size.
        const at::Tensor& z = allocations.back();
        const auto address = reinterpret_cast<uintptr_t>(z.const_data_ptr());
        const uint64_t nbytes = z.storage().nbytes();
        keep_vendor_step({std::string(reinterpret_cast<const char*>(&address), 8),
                          std::string(reinterpret_cast<const char*>(&nbytes), 8)});
      }
    }
  }
  auto base = [&](Source s, uint32_t i) -> const at::Tensor& {
    return s == Source::Input ? input_at(inputs, i) : s == Source::Allocation ? allocations[i] : copies[i];
  };
  void* stream = nullptr;  // the host vendor has none (and no kernels)
  if (type == c10::DeviceType::CUDA && !keeping.load(std::memory_order_relaxed)) {
    const auto* guard = native_guard();
    stream = guard->getStreamNativeHandle(guard->getStream(device));
  }
  for (size_t i = 0; i < plan.launches.size(); ++i) {
    const KernelLaunch& k = plan.launches[i];
    copy_up_to(i);
    c10::SmallVector<uint64_t, 32> bytes(k.bytes.begin(), k.bytes.end());
    for (const Pointer& p : k.pointers) {
      TORCH_CHECK(p.source != Source::Input || p.index < inputs.size(), "flagos: a launch record reads argument ",
                  p.index, " of ", inputs.size());
      bytes[p.param] = reinterpret_cast<uintptr_t>(base(p.source, p.index).const_data_ptr()) + p.offset;
    }
    launch(k, bytes.data(), stream);
  }
  copy_up_to(plan.launches.size());
  for (const Result& r : plan.results) {
    TORCH_CHECK(r.source != Source::Input || r.index < inputs.size(), "flagos: a launch record returns argument ",
                r.index, " of ", inputs.size());
  }
  for (const Result& r : plan.results) {
    const at::Tensor& b = base(r.source, r.index);
    if (r.same) {
      results.push_back(b);
      continue;
    }
    // An output that is a whole allocation is returned as it is, not as a
    // view of it (one dispatch less); once, so that two results never
    // share a TensorImpl.
    if (r.source == Source::Allocation && !handed_out[r.index] && r.offset == 0 && b.sizes().equals(r.sizes) &&
        b.strides().equals(r.strides)) {
      handed_out[r.index] = true;
      results.push_back(b);
      continue;
    }
    const int64_t itemsize = static_cast<int64_t>(b.element_size());
    results.push_back(at::as_strided(b, r.sizes, r.strides, b.storage_offset() + r.offset / itemsize));
  }
}

}  // namespace

void replay(const Plan& plan, const std::vector<at::Tensor>& inputs, const c10::OperatorHandle& op,
            torch::jit::Stack* stack) {
  c10::SmallVector<at::Tensor, 4> results;
  run_plan(plan, inputs, results);
  torch::jit::drop(*stack, op.schema().arguments().size());
  for (at::Tensor& r : results) stack->push_back(std::move(r));
}

bool replay_recorded(const OpPlan& op, const std::vector<int64_t>& key, c10::ArrayRef<const at::Tensor*> inputs,
                     bool writes, c10::SmallVectorImpl<at::Tensor>& results) {
  std::shared_ptr<const Plan> plan;
  {
    std::lock_guard<std::mutex> lock(mutex);
    OpCache& cache = cache_of(op);
    auto it = cache.entries.find(key);
    if (it == cache.entries.end() || it->second.state != State::Replay) return false;
    if (writes && !it->second.plan->returns_arguments) return false;
    plan = it->second.plan;
    cache.replayed.fetch_add(1, std::memory_order_relaxed);
  }
  run_plan(*plan, inputs, results);
  return true;
}

void forget(const std::string& op_name) {
  std::lock_guard<std::mutex> lock(mutex);
  for (auto& [op, cache] : *caches) {
    if (!op_name.empty() && op->name != op_name) continue;
    cache->entries.clear();
  }
}

py::dict stats() {
  py::dict out;
  std::lock_guard<std::mutex> lock(mutex);
  for (const auto& [op, cache] : *caches) {
    size_t replayable = 0;
    for (const auto& [key, entry] : cache->entries) replayable += entry.state == State::Replay;
    py::dict d;
    d["replayed"] = cache->replayed.load();
    d["recorded"] = cache->recorded.load();
    d["python"] = cache->python.load();
    d["vendor"] = cache->vendor.load();
    d["flushed"] = cache->flushed.load();
    d["signatures"] = cache->entries.size();
    d["replayable_signatures"] = replayable;
    d["reason"] = cache->reason;
    out[py::str(op->name)] = d;
  }
  return out;
}

void keep_launches(bool value) {
  std::lock_guard<std::mutex> lock(kept_mutex);
  keeping.store(value);
  kept.clear();
}

py::list recorded_launches() {
  std::lock_guard<std::mutex> lock(kept_mutex);
  py::list out;
  for (const auto& [function, grid, block, shared, params] : kept) {
    py::list bytes;
    for (const std::string& b : params) bytes.append(py::bytes(b));
    out.append(py::make_tuple(function, py::make_tuple(grid[0], grid[1], grid[2]), block, shared, bytes));
  }
  return out;
}

}  // namespace launcher
}  // namespace torch_fl
