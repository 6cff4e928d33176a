// RouteClock.h - what the routing layer itself costs per call.
//
// FLAGOS_ROUTE_CLOCK=1 (read when torch_fl loads) times every routed call
// and, inside it, the vendor's kernel call or FlagGems launch it makes; the
// difference is the route's own cost (plan lookup, aliases, mapping results
// back, the device guard). Off, each timer is one test of a constant.
#pragma once

#include <cstdint>

namespace torch_fl {

namespace route_clock_detail {
extern const bool enabled;  // FLAGOS_ROUTE_CLOCK, read once when the library loads
}  // namespace route_clock_detail
// Inline: every routed call asks, twice or more.
inline bool route_clock_enabled() { return route_clock_detail::enabled; }

struct RouteClockTotals {
  uint64_t calls;
  uint64_t route_ns;   // routed calls' time less the vendor's calls within them
  uint64_t vendor_ns;  // the vendor kernels' calls (host time: launching, not running)
  uint64_t aliases;    // flagos tensors the routed calls aliased as native tensors
};
// The totals since the last take, which restarts them.
RouteClockTotals take_route_clock();

namespace route_clock_detail {
uint64_t now_ns();
extern thread_local uint64_t vendor_ns;  // this thread's vendor time so far
void add_call(uint64_t total_ns, uint64_t vendor_ns);
void add_alias();
}  // namespace route_clock_detail

// An alias made (NativeScope), counted while the clock is on.
inline void count_alias() {
  if (route_clock_enabled()) route_clock_detail::add_alias();
}

// A span of host time on this thread, and this thread's vendor time when
// it began; taken only while the clock is on.
class ClockSpan {
 public:
  ClockSpan(const ClockSpan&) = delete;
  ClockSpan& operator=(const ClockSpan&) = delete;

 protected:
  ClockSpan() : on_(route_clock_enabled()) {
    if (on_) {
      vendor_before_ = route_clock_detail::vendor_ns;
      start_ = route_clock_detail::now_ns();
    }
  }
  uint64_t elapsed() const { return route_clock_detail::now_ns() - start_; }

  bool on_;
  uint64_t start_ = 0, vendor_before_ = 0;
};

// Around a routed call, from its entry to its return.
class RouteTimer : ClockSpan {
 public:
  ~RouteTimer() {
    if (on_) route_clock_detail::add_call(elapsed(), route_clock_detail::vendor_ns - vendor_before_);
  }
};

// Around the vendor's kernel call (or FlagGems launch) inside a routed call.
// The whole span counts once: a routed call nested in it (a composite
// kernel dispatching flagos ops) has taken its own share already.
class VendorTimer : ClockSpan {
 public:
  ~VendorTimer() {
    if (on_) route_clock_detail::vendor_ns = vendor_before_ + elapsed();
  }
};

}  // namespace torch_fl
