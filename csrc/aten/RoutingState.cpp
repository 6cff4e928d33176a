#include "aten/RoutingState.h"

#include <mutex>
#include <unordered_set>

#include "common.h"

extern char** environ;

namespace torch_fl::routing_state {
namespace {

std::mutex mutex;
flagos_routing_table_t table = nullptr;
std::unordered_set<std::string> flaggems_ops;
std::unordered_set<std::string> flat_operand_ops, one_dtype_ops;

flagos_routing_table_t table_locked() {
  if (!table) FLAGOS_CHECK(flagos_routing_create(&table));
  return table;
}

}  // namespace

flagos_backend_t explicit_backend(const std::string& op_name) {
  std::lock_guard<std::mutex> lock(mutex);
  flagos_backend_t backend = FLAGOS_BACKEND_DEFAULT;
  FLAGOS_CHECK(flagos_routing_lookup(table_locked(), op_name.c_str(), &backend));
  return backend;
}

bool flaggems_default_for(const std::string& op_name) {
  std::lock_guard<std::mutex> lock(mutex);
  return flaggems_ops.count(op_name) > 0;
}

FlatNeed flaggems_flat_need(const std::string& op_name) {
  std::lock_guard<std::mutex> lock(mutex);
  if (!flat_operand_ops.count(op_name)) return FlatNeed::None;
  return one_dtype_ops.count(op_name) ? FlatNeed::FlatOneDtype : FlatNeed::Flat;
}

void load(const std::string& config_path, bool read_environ) {
  flagos_routing_table_t fresh = nullptr;
  FLAGOS_CHECK(flagos_routing_create(&fresh));
  flagos_status_t status = FLAGOS_SUCCESS;
  if (!config_path.empty()) status = flagos_routing_load_file(fresh, config_path.c_str());
  if (status == FLAGOS_SUCCESS && read_environ) status = flagos_routing_load_environ(fresh, environ);
  if (status != FLAGOS_SUCCESS) {
    std::string message = flagos_last_error();
    flagos_routing_destroy(fresh);
    TORCH_CHECK_VALUE(false, message);
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    std::swap(table, fresh);
  }
  if (fresh) flagos_routing_destroy(fresh);
  invalidate_plans();
}

void restore(const std::vector<Entry>& wanted) {
  // Rebuilds a table holding exactly `wanted`, in order, each entry with its
  // own origin and line (so that entries() reads as before an override).
  flagos_routing_table_t fresh = nullptr;
  FLAGOS_CHECK(flagos_routing_create(&fresh));
  for (const auto& e : wanted) {
    flagos_status_t status = FLAGOS_SUCCESS;
    if (e.line > 0 && e.backend != "default") {
      // A config line: blank lines up to its number keep file:line.
      std::string text(static_cast<size_t>(e.line - 1), '\n');
      text += e.op + " = " + e.backend + "\n";
      status = flagos_routing_load_string(fresh, text.c_str(), e.origin.c_str());
    } else if (e.origin.rfind("FLAGOS_OP_", 0) == 0 && e.backend != "default") {
      std::string var = e.origin + "=" + e.backend;
      char* vars[] = {var.data(), nullptr};
      status = flagos_routing_load_environ(fresh, vars);
    } else {
      flagos_backend_t backend = FLAGOS_BACKEND_DEFAULT;
      if (e.backend != "default") status = flagos_backend_parse(e.backend.c_str(), &backend);
      if (status == FLAGOS_SUCCESS) status = flagos_routing_set(fresh, e.op.c_str(), backend);
    }
    if (status != FLAGOS_SUCCESS) {
      std::string message = flagos_last_error();
      flagos_routing_destroy(fresh);
      TORCH_CHECK_VALUE(false, "restoring the routing table: ", message);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    std::swap(table, fresh);
  }
  if (fresh) flagos_routing_destroy(fresh);
  invalidate_plans();
}

void set(const std::string& op_name, flagos_backend_t backend) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    FLAGOS_CHECK(flagos_routing_set(table_locked(), op_name.c_str(), backend));
  }
  invalidate_plans();
}

std::vector<Entry> entries() {
  std::lock_guard<std::mutex> lock(mutex);
  std::vector<Entry> out;
  size_t count = 0;
  FLAGOS_CHECK(flagos_routing_count(table_locked(), &count));
  for (size_t i = 0; i < count; ++i) {
    const char* op = nullptr;
    const char* origin = nullptr;
    flagos_backend_t backend;
    int line = 0;
    FLAGOS_CHECK(flagos_routing_entry(table_locked(), i, &op, &backend, &origin, &line));
    const char* name = flagos_backend_name(backend);
    out.push_back({op, name ? name : "default", origin ? origin : "", line});
  }
  return out;
}

void set_flaggems_ops(std::vector<std::string> ops) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    flaggems_ops = std::unordered_set<std::string>(ops.begin(), ops.end());
  }
  invalidate_plans();
}

void set_flat_operand_ops(std::vector<std::string> ops, std::vector<std::string> one_dtype) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    flat_operand_ops = std::unordered_set<std::string>(ops.begin(), ops.end());
    one_dtype_ops = std::unordered_set<std::string>(one_dtype.begin(), one_dtype.end());
  }
  invalidate_plans();
}

}  // namespace torch_fl::routing_state
