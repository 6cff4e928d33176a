// HostStreams.h - c10::Stream ids <-> flagos stream handles for vendors whose
// streams live in the flagos runtime (host now; MetaX/Ascend later).
//
// Id 0 is a device's default stream; other ids index the streams this
// process created. Streams live until exit, as in CUDA's stream pool, so an
// id held by a c10::Stream never dangles.
#pragma once

#include <c10/core/Stream.h>

#include "common.h"

namespace torch_fl::host_streams {

flagos_stream_t handle(c10::DeviceIndex device, c10::StreamId id);
c10::StreamId create(c10::DeviceIndex device, int priority);
// Round-robin over a small pool per device and priority, as CUDA does.
c10::StreamId from_pool(c10::DeviceIndex device, bool high_priority);
c10::StreamId current(c10::DeviceIndex device);
void set_current(c10::DeviceIndex device, c10::StreamId id);
// The current stream's handle of the calling thread's current device.
flagos_stream_t current_handle(c10::DeviceIndex device);

}  // namespace torch_fl::host_streams
