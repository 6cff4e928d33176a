#include "aten/RouteClock.h"

#include <atomic>
#include <chrono>

#include "common.h"

namespace torch_fl {
namespace {

// Relaxed: totals are read after the work they count has returned.
std::atomic<uint64_t> calls{0}, route_ns{0}, vendor_ns_total{0}, aliases{0};

}  // namespace

RouteClockTotals take_route_clock() {
  return RouteClockTotals{calls.exchange(0), route_ns.exchange(0), vendor_ns_total.exchange(0),
                          aliases.exchange(0)};
}

namespace route_clock_detail {

const bool enabled = env_flag("FLAGOS_ROUTE_CLOCK");
thread_local uint64_t vendor_ns = 0;

uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

void add_call(uint64_t total, uint64_t vendor) {
  calls.fetch_add(1, std::memory_order_relaxed);
  // A routed call nested in another's vendor call counts as a call of its
  // own; its time is also part of the outer call's vendor time.
  route_ns.fetch_add(total > vendor ? total - vendor : 0, std::memory_order_relaxed);
  vendor_ns_total.fetch_add(vendor, std::memory_order_relaxed);
}

void add_alias() { aliases.fetch_add(1, std::memory_order_relaxed); }

}  // namespace route_clock_detail
}  // namespace torch_fl
