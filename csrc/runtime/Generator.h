// Generator.h - flagos random generators.
//
// A flagos generator wraps the vendor's own generator (a CPU generator per
// device on host; torch's default CUDA generator of that device on cuda) and
// forwards every call to it. Kernels of every route are handed the inner
// generator, so they all draw from one state: manual_seed on flagos makes
// runs reproducible whichever backend an op takes, and on cuda FlagGems'
// kernels (which use CUDA's default generator) share it too.
#pragma once

#include <ATen/core/Generator.h>

namespace torch_fl {

const at::Generator& default_generator(c10::DeviceIndex device);
at::Generator new_generator(c10::DeviceIndex device);
// The generator a native kernel must receive for a flagos generator.
at::Generator native_generator_of(const at::Generator& flagos_generator);

}  // namespace torch_fl
