#include "runtime/Generator.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/GeneratorImpl.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <deque>
#include <mutex>

#include "common.h"

namespace torch_fl {
namespace {

class FlagosGeneratorImpl final : public c10::GeneratorImpl {
 public:
  FlagosGeneratorImpl(c10::DeviceIndex device, at::Generator inner)
      : c10::GeneratorImpl(flagos_device(device), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1)),
        inner_(std::move(inner)) {}

  const at::Generator& inner() const { return inner_; }

  void set_current_seed(uint64_t seed) override { inner_.set_current_seed(seed); }
  void set_offset(uint64_t offset) override { inner_.set_offset(offset); }
  uint64_t get_offset() const override { return inner_.get_offset(); }
  uint64_t current_seed() const override { return inner_.current_seed(); }
  uint64_t seed() override { return inner_.seed(); }
  void set_state(const c10::TensorImpl& new_state) override {
    inner_.unsafeGetGeneratorImpl()->set_state(new_state);
  }
  c10::intrusive_ptr<c10::TensorImpl> get_state() const override {
    return inner_.unsafeGetGeneratorImpl()->get_state();
  }
  static c10::DeviceType device_type() { return c10::DeviceType::PrivateUse1; }

 private:
  FlagosGeneratorImpl* clone_impl() const override {
    return new FlagosGeneratorImpl(device_.index(), inner_.clone());
  }

  at::Generator inner_;
};

at::Generator make_inner(c10::DeviceIndex device, bool fresh) {
  if (live_vendor() == Vendor::Cuda) {
    auto& hooks = at::detail::getCUDAHooks();
    return fresh ? hooks.getNewGenerator(device) : hooks.getDefaultGenerator(device);
  }
  // Each host device has its own stream of numbers, like each GPU does.
  return at::detail::createCPUGenerator(c10::detail::getNonDeterministicRandom());
}

}  // namespace

const at::Generator& default_generator(c10::DeviceIndex device) {
  static std::mutex mutex;
  static std::deque<at::Generator> generators;  // stable addresses
  if (device < 0) device = current_flagos_device();
  check_device_index(device);
  std::lock_guard<std::mutex> lock(mutex);
  while (generators.size() <= static_cast<size_t>(device)) {
    auto index = static_cast<c10::DeviceIndex>(generators.size());
    auto inner = make_inner(index, /*fresh=*/false);
    auto generator = at::make_generator<FlagosGeneratorImpl>(index, std::move(inner));
    // Match CUDA: a device's default generator starts from seed 67280421310721.
    if (live_vendor() == Vendor::Host) generator.set_current_seed(c10::default_rng_seed_val);
    generators.push_back(std::move(generator));
  }
  return generators[device];
}

at::Generator new_generator(c10::DeviceIndex device) {
  if (device < 0) device = current_flagos_device();
  check_device_index(device);
  return at::make_generator<FlagosGeneratorImpl>(device, make_inner(device, /*fresh=*/true));
}

at::Generator native_generator_of(const at::Generator& generator) {
  TORCH_INTERNAL_ASSERT(generator.device().type() == c10::DeviceType::PrivateUse1);
  return static_cast<FlagosGeneratorImpl*>(generator.unsafeGetGeneratorImpl())->inner();
}

}  // namespace torch_fl
