#include "runtime/HostStreams.h"

#include <array>
#include <atomic>
#include <deque>
#include <mutex>
#include <vector>

namespace torch_fl::host_streams {
namespace {

constexpr int kPoolSize = 8;
constexpr int kMaxDevices = 64;

struct DeviceStreams {
  std::mutex mutex;
  flagos_stream_t default_stream = nullptr;
  std::deque<flagos_stream_t> created;  // id - 1
  std::array<c10::StreamId, kPoolSize> pool_low{};
  std::array<c10::StreamId, kPoolSize> pool_high{};
  std::atomic<uint32_t> next_low{0};
  std::atomic<uint32_t> next_high{0};
};

DeviceStreams& streams_of(c10::DeviceIndex device) {
  static std::array<DeviceStreams, kMaxDevices> all;
  check_device_index(device);
  return all[device];
}

thread_local std::array<c10::StreamId, kMaxDevices> current_ids{};

flagos_stream_t create_on(c10::DeviceIndex device, int priority) {
  int previous = 0;
  FLAGOS_CHECK(flagos_exchange_device(device, &previous));
  flagos_stream_t stream = nullptr;
  flagos_status_t status = flagos_stream_create(&stream, priority);
  flagos_set_device(previous);
  FLAGOS_CHECK(status);
  return stream;
}

c10::StreamId append(DeviceStreams& streams, flagos_stream_t stream) {
  // caller holds streams.mutex
  streams.created.push_back(stream);
  return static_cast<c10::StreamId>(streams.created.size());
}

}  // namespace

flagos_stream_t handle(c10::DeviceIndex device, c10::StreamId id) {
  auto& streams = streams_of(device);
  std::lock_guard<std::mutex> lock(streams.mutex);
  if (id == 0) {
    if (!streams.default_stream) FLAGOS_CHECK(flagos_default_stream(device, &streams.default_stream));
    return streams.default_stream;
  }
  TORCH_CHECK(id > 0 && static_cast<size_t>(id) <= streams.created.size(), "flagos: stream id ", id,
              " does not exist on flagos:", static_cast<int>(device));
  return streams.created[id - 1];
}

c10::StreamId create(c10::DeviceIndex device, int priority) {
  auto& streams = streams_of(device);
  flagos_stream_t stream = create_on(device, priority);
  std::lock_guard<std::mutex> lock(streams.mutex);
  return append(streams, stream);
}

c10::StreamId from_pool(c10::DeviceIndex device, bool high_priority) {
  auto& streams = streams_of(device);
  auto& pool = high_priority ? streams.pool_high : streams.pool_low;
  auto& next = high_priority ? streams.next_high : streams.next_low;
  const size_t slot = next.fetch_add(1) % kPoolSize;
  {
    std::lock_guard<std::mutex> lock(streams.mutex);
    if (pool[slot] != 0) return pool[slot];
  }
  int least = 0, greatest = 0;
  FLAGOS_CHECK(flagos_stream_priority_range(&least, &greatest));
  flagos_stream_t stream = create_on(device, high_priority ? greatest : least);
  std::lock_guard<std::mutex> lock(streams.mutex);
  if (pool[slot] != 0) {
    // Another thread filled the slot first; keep ours as an ordinary stream.
    append(streams, stream);
    return pool[slot];
  }
  pool[slot] = append(streams, stream);
  return pool[slot];
}

c10::StreamId current(c10::DeviceIndex device) {
  check_device_index(device);
  return current_ids[device];
}

void set_current(c10::DeviceIndex device, c10::StreamId id) {
  handle(device, id);  // validates
  current_ids[device] = id;
}

flagos_stream_t current_handle(c10::DeviceIndex device) {
  return handle(device, current(device));
}

}  // namespace torch_fl::host_streams
