// RoutingState.h - the routing table as loaded from config files and the
// environment, plus the ops FlagGems serves on this machine.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "aten/Routing.h"

namespace torch_fl {

void set_log_dispatch(bool on);
void for_each_plan(const std::function<void(const OpPlan&)>& fn);
void reset_plan_counts();

namespace routing_state {

// Explicit choice for an op (exact overload, then bare name), or DEFAULT.
flagos_backend_t explicit_backend(const std::string& op_name);
// True when FlagGems implements this op and its routes are usable here.
bool flaggems_default_for(const std::string& op_name);
// Which calls FlagGems' kernel for this op serves
// (OpPlan::flaggems_flat_operands).
FlatNeed flaggems_flat_need(const std::string& op_name);

// Replaces the whole table: packaged/user config file (may be empty), then
// FLAGOS_OP_* variables. On error the old table stays and it throws.
void load(const std::string& config_path, bool read_environ);
void set(const std::string& op_name, flagos_backend_t backend);
// Entries as (op, backend, origin, line), in the order they were set.
struct Entry {
  std::string op;
  std::string backend;
  std::string origin;
  int line;
};
std::vector<Entry> entries();
// Replaces the table by exactly these entries (origins and lines kept).
void restore(const std::vector<Entry>& entries);
void set_flaggems_ops(std::vector<std::string> ops);
// Ops whose FlagGems kernel serves flat calls only; of those, the ones
// that also need operands of one dtype.
void set_flat_operand_ops(std::vector<std::string> ops, std::vector<std::string> one_dtype);

}  // namespace routing_state
}  // namespace torch_fl
