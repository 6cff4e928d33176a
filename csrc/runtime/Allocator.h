// Allocator.h - the c10 allocators of flagos device memory and of pinned
// host memory.
#pragma once

#include <c10/core/Allocator.h>
#include <c10/core/Stream.h>

namespace torch_fl {

c10::Allocator* device_allocator();
c10::Allocator* pinned_host_allocator();
bool is_pinned_host_ptr(const void* ptr);
// Keeps the block behind data_ptr from reuse until work queued on `stream`
// (a flagos stream) so far is done.
void record_data_ptr_on_stream(const c10::DataPtr& data_ptr, const c10::Stream& stream);

}  // namespace torch_fl
