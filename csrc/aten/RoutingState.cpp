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

}  // namespace torch_fl::routing_state
