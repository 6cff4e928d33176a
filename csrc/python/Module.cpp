// Module.cpp - torch_fl._C: the few functions the Python package needs
// from the runtime and the routing layer. Python builds the user API.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/Generator.h>
#include <torch/csrc/utils/pybind.h>

#include <unordered_set>

#include "aten/RouteClock.h"
#include "aten/Routing.h"
#include "aten/RoutingState.h"
#include "common.h"
#include "python/FlagGemsBridge.h"
#include "python/FlagGemsLauncher.h"
#include "runtime/Generator.h"

namespace py = pybind11;

namespace torch_fl {
namespace {

void init_runtime() {
  at::detail::getPrivateUse1Hooks().init();
}

py::dict device_properties(int device) {
  check_device_index(static_cast<c10::DeviceIndex>(device));
  flagos_device_properties_t props;
  FLAGOS_CHECK(flagos_get_device_properties(device, &props));
  py::dict d;
  d["name"] = std::string(props.name);
  d["total_memory"] = props.total_memory;
  d["multi_processor_count"] = props.multi_processor_count;
  d["major"] = props.major;
  d["minor"] = props.minor;
  return d;
}

py::tuple mem_get_info(int device) {
  check_device_index(static_cast<c10::DeviceIndex>(device));
  size_t free_bytes = 0, total_bytes = 0;
  FLAGOS_CHECK(flagos_mem_get_info(device, &free_bytes, &total_bytes));
  return py::make_tuple(free_bytes, total_bytes);
}

py::dict allocator_stats(int device) {
  check_device_index(static_cast<c10::DeviceIndex>(device));
  flagos_allocator_stats_t s;
  FLAGOS_CHECK(flagos_caching_get_stats(device, &s));
  py::dict d;
  d["allocated_bytes"] = s.allocated_bytes;
  d["reserved_bytes"] = s.reserved_bytes;
  d["peak_allocated_bytes"] = s.peak_allocated_bytes;
  d["peak_reserved_bytes"] = s.peak_reserved_bytes;
  d["requested_bytes"] = s.requested_bytes;
  d["active_blocks"] = s.active_blocks;
  d["segments"] = s.segments;
  d["num_allocs"] = s.num_allocs;
  d["num_frees"] = s.num_frees;
  d["num_device_mallocs"] = s.num_device_mallocs;
  d["num_device_frees"] = s.num_device_frees;
  d["num_alloc_retries"] = s.num_alloc_retries;
  d["num_ooms"] = s.num_ooms;
  return d;
}

flagos_backend_t parse_backend(const std::string& word) {
  flagos_backend_t backend;
  FLAGOS_CHECK(flagos_backend_parse(word.c_str(), &backend));
  return backend;
}

const std::unordered_set<std::string>& aten_op_names() {
  // "add", "add.Tensor", ... for every aten op registered now.
  static const std::unordered_set<std::string> names = [] {
    std::unordered_set<std::string> out;
    for (const auto& op : c10::Dispatcher::singleton().getAllOpNames()) {
      if (op.name.rfind("aten::", 0) != 0) continue;
      out.insert(op.name.substr(6));
      out.insert(short_op_name(op));
    }
    return out;
  }();
  return names;
}

py::dict routing_stats() {
  py::dict out;
  for_each_plan([&](const OpPlan& plan) {
    py::dict counts;
    for (int b = 0; b < FLAGOS_BACKEND_COUNT_; ++b) {
      uint64_t n = plan.calls[b].load(std::memory_order_relaxed);
      if (n) counts[flagos_backend_name(static_cast<flagos_backend_t>(b))] = n;
    }
    if (py::len(counts)) out[py::str(plan.name)] = counts;
  });
  return out;
}

}  // namespace
}  // namespace torch_fl

PYBIND11_MODULE(_C, m) {
  using namespace torch_fl;
  m.doc() = "torch_fl native core";
  m.def("_init", [] {
    init_runtime();
    return std::string(live_vendor_name());
  });
  m.def("_vendor", [] { return std::string(live_vendor_name()); });
  m.def("_native_backend", [] { return std::string(flagos_backend_name(native_backend())); });
  m.def("_device_count", [] { return static_cast<int>(device_count()); });
  m.def("_get_device", [] { return static_cast<int>(current_flagos_device()); });
  m.def("_set_device", [](int device) {
    check_device_index(static_cast<c10::DeviceIndex>(device));
    flagos_guard()->setDevice(flagos_device(static_cast<c10::DeviceIndex>(device)));
  });
  m.def("_synchronize", [](int device) {
    check_device_index(static_cast<c10::DeviceIndex>(device));
    py::gil_scoped_release no_gil;
    flagos_guard()->synchronizeDevice(static_cast<c10::DeviceIndex>(device));
  });
  m.def("_get_device_properties", &device_properties);
  // Streams as (stream_id, device_index, device_type) triples, the form
  // torch.Stream takes.
  m.def("_current_stream", [](int device) {
    auto s = flagos_guard()->getStream(flagos_device(static_cast<c10::DeviceIndex>(device)));
    return py::make_tuple(s.id(), static_cast<int>(s.device_index()), static_cast<int>(s.device_type()));
  });
  m.def("_default_stream", [](int device) {
    auto s = flagos_guard()->getDefaultStream(flagos_device(static_cast<c10::DeviceIndex>(device)));
    return py::make_tuple(s.id(), static_cast<int>(s.device_index()), static_cast<int>(s.device_type()));
  });
  m.def("_set_stream", [](int64_t stream_id, int device) {
    check_device_index(static_cast<c10::DeviceIndex>(device));
    c10::Stream s(c10::Stream::UNSAFE, flagos_device(static_cast<c10::DeviceIndex>(device)), stream_id);
    flagos_guard()->exchangeStream(s);
  });
  m.def("_mem_get_info", &mem_get_info);
  m.def("_allocator_stats", &allocator_stats);
  m.def("_empty_cache", [] { FLAGOS_CHECK(flagos_caching_empty_cache()); });
  m.def("_reset_peak_stats", [](int device) { FLAGOS_CHECK(flagos_caching_reset_peak_stats(device)); });
  m.def("_reset_accumulated_stats",
        [](int device) { FLAGOS_CHECK(flagos_caching_reset_accumulated_stats(device)); });
  m.def("_default_generator", [](int device) {
    return py::reinterpret_steal<py::object>(
        THPGenerator_initDefaultGenerator(default_generator(static_cast<c10::DeviceIndex>(device))));
  });

  // Routing.
  // Config errors reach Python as ValueError with just the message (file:line, ...).
  m.def("_routing_load", [](const std::string& path, bool read_environ) {
    try {
      routing_state::load(path, read_environ);
    } catch (const c10::Error& e) {
      throw py::value_error(e.what_without_backtrace());
    }
  });
  m.def("_routing_set", [](const std::string& op, const std::string& backend) {
    routing_state::set(op, backend == "default" ? FLAGOS_BACKEND_DEFAULT : parse_backend(backend));
  });
  m.def("_routing_entries", [] {
    py::list out;
    for (const auto& e : routing_state::entries()) {
      out.append(py::make_tuple(e.op, e.backend, e.origin, e.line));
    }
    return out;
  });
  m.def("_routing_restore", [](const std::vector<std::tuple<std::string, std::string, std::string, int>>& items) {
    std::vector<routing_state::Entry> wanted;
    wanted.reserve(items.size());
    for (const auto& [op, backend, origin, line] : items) wanted.push_back({op, backend, origin, line});
    try {
      routing_state::restore(wanted);
    } catch (const c10::Error& e) {
      throw py::value_error(e.what_without_backtrace());
    }
  });
  m.def("_routing_resolve", [](const std::string& op) {
    // Ops that have no native kernel resolve to cpu; asking the dispatcher
    // needs the overload, so a bare name is answered for "has a kernel".
    bool native = true;
    auto handle = find_aten_op(op);
    if (handle) native = handle->hasComputedKernelForDispatchKey(native_dispatch_key());
    return std::string(flagos_backend_name(resolve_backend(op, native)));
  });
  m.def("_routing_stats", &routing_stats);
  m.def("_routing_reset_stats", &reset_plan_counts);
  m.def("_set_flaggems_ops", &routing_state::set_flaggems_ops);
  m.def("_set_flaggems_flat_operand_ops", &routing_state::set_flat_operand_ops, py::arg("ops"),
        py::arg("one_dtype") = std::vector<std::string>{});
  m.def("_set_log_dispatch", &set_log_dispatch);
  m.def("_set_flaggems_function", &set_flaggems_function);
  m.def("_set_launch_recorder", &set_launch_recorder);
  m.def("_launcher_enabled", &launcher::enabled);
  m.def("_launcher_set_enabled", &launcher::set_enabled);
  m.def("_launcher_stats", &launcher::stats);
  m.def("_launcher_vendor_calls", &launcher::vendor_calls);
  m.def("_launcher_set_vendor_calls", &launcher::set_vendor_calls);
  m.def("_launcher_forget", &launcher::forget, py::arg("op") = "");
  m.def("_launcher_keep_launches", &launcher::keep_launches);
  m.def("_launcher_kept_launches", &launcher::recorded_launches);
  m.def("_claim_ops", &claim_ops);
  m.def("_unboxed_ops", &unboxed_ops);
  m.def("_route_clock_enabled", &route_clock_enabled);
  m.def("_take_route_clock", [] {
    const RouteClockTotals t = take_route_clock();
    return std::make_tuple(t.calls, t.route_ns, t.vendor_ns, t.aliases);
  });
  m.def("_composite_ops_with_native_kernels", &composite_ops_with_native_kernels);
  m.def("_op_exists", [](const std::string& op) {
    std::string name = op.rfind("aten::", 0) == 0 ? op.substr(6) : op;
    return aten_op_names().count(name) > 0;
  });
}
