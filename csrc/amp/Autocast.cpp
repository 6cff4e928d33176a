// Autocast.cpp - torch.autocast("flagos", dtype=float16|bfloat16).
//
// PyTorch gives PrivateUse1 its own autocast key (AutocastPrivateUse1) and
// the wrappers/macros to fill it (KERNEL_PRIVATEUSEONE, the policy lists
// AT_FORALL_*), but registers neither kernels nor a fallthrough for it: with
// autocast on, every op on a flagos tensor would fail with "Could not run
// 'aten::mm' with arguments from the 'Autocastflagos' backend". We register
// the same op policy as CUDA's autocast (aten/src/ATen/autocast_mode.cpp):
//   lower_precision_fp  AT_FORALL_LOWER_PRECISION_FP (mm, linear, conv, sdpa...)
//   fp32                AT_FORALL_FP32 (exp, log, layer_norm, rms_norm, losses...)
//   fp32_set_opt_dtype  AT_FORALL_FP32_SET_OPT_DTYPE (softmax, log_softmax, sum...)
//   fp32_append_dtype   AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE (norm)
//   promote             AT_FORALL_PROMOTE (addcmul, dot, index_put, ...)
//   banned              binary_cross_entropy (as on CUDA)
// Every other op falls through to the next key. The lists come from the
// headers of the torch we build against, so they track that torch's CUDA
// policy. The wrappers cast to torch.get_autocast_dtype("flagos").
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/version.h>

#include <memory>

namespace torch_fl {
namespace {

at::Tensor binary_cross_entropy_banned(const at::Tensor&, const at::Tensor&,
                                       const std::optional<at::Tensor>&, int64_t) {
  TORCH_CHECK(false,
              "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast.\n"
              "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
              "In this case, combine the two layers using torch.nn.functional.binary_cross_entropy_with_logits\n"
              "or torch.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits are\n"
              "safe to autocast.");
}

// Ops without a policy run unchanged. A future torch may register this
// fallthrough itself; a second backend fallback for one key is an error, so
// it is added only when none exists.
struct AutocastFallthrough {
  std::unique_ptr<torch::Library> lib;
  AutocastFallthrough() {
    if (c10::Dispatcher::singleton().hasBackendFallbackForDispatchKey(
            c10::DispatchKey::AutocastPrivateUse1)) {
      return;
    }
    lib = std::make_unique<torch::Library>(torch::Library::IMPL, "_",
                                           c10::DispatchKey::AutocastPrivateUse1, __FILE__, __LINE__);
    lib->fallback(torch::CppFunction::makeFallthrough());
  }
};
AutocastFallthrough autocast_fallthrough;

// The policy lists spell signatures as PyTorch's own file does, inside
// namespace at.
#if TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 13
using at::DimnameList;  // named-tensor overloads are in the lists before 2.13
#endif
using at::IntArrayRef;
using at::Scalar;
using at::ScalarType;
using at::Tensor;

TORCH_LIBRARY_IMPL(aten, AutocastPrivateUse1, m) {
  // lower_precision_fp
#define FLAGOS_KERNEL_LOW_PRECISION_FP(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, lower_precision_fp)
  AT_FORALL_LOWER_PRECISION_FP(FLAGOS_KERNEL_LOW_PRECISION_FP)
#undef FLAGOS_KERNEL_LOW_PRECISION_FP

  // fp32
#define FLAGOS_KERNEL_FP32(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, fp32)
  AT_FORALL_FP32(FLAGOS_KERNEL_FP32)
#undef FLAGOS_KERNEL_FP32

  // fp32_set_opt_dtype
#define FLAGOS_KERNEL_FP32_SET_OPT_DTYPE(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, fp32_set_opt_dtype)
  AT_FORALL_FP32_SET_OPT_DTYPE(FLAGOS_KERNEL_FP32_SET_OPT_DTYPE)
#undef FLAGOS_KERNEL_FP32_SET_OPT_DTYPE

  // fp32_append_dtype (norm)
  AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE(KERNEL_DIFFERENT_REDISPATCH_SIGNATURE_PRIVATEUSEONE)

  // promote
#define FLAGOS_KERNEL_PROMOTE(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, promote)
  AT_FORALL_PROMOTE(FLAGOS_KERNEL_PROMOTE)
#undef FLAGOS_KERNEL_PROMOTE

  m.impl(TORCH_SELECTIVE_NAME("aten::binary_cross_entropy"),
         TORCH_FN((&binary_cross_entropy_banned)));
}

}  // namespace
}  // namespace torch_fl
