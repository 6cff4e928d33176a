// Special.cpp - ops that need more than the generic routing kernel:
//  - convolution: PyTorch picks convolution_overrideable for PrivateUse1;
//    we run the vendor's own backend selection (cuDNN, CPU) on aliases;
//  - copies of lazy conj/neg views: the Conjugate/Negative fallbacks would
//    materialise by calling copy_ again, recursing forever; our copy carries
//    the conj/neg bits to its aliases, so those keys fall through;
//  - quantized dtypes: one clear error instead of a dispatcher dump.
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <torch/library.h>

#include "aten/Storage.h"

namespace torch_fl {
namespace {

at::Tensor convolution_overrideable(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
                                    at::IntArrayRef output_padding, int64_t groups) {
  NativeScope scope(input.device().index());
  std::optional<at::Tensor> native_bias;
  if (bias.has_value() && bias->defined()) native_bias = scope.alias_argument(*bias);
  at::Tensor out = at::convolution(scope.alias_argument(input), scope.alias_argument(weight),
                                   native_bias, stride, padding, dilation, transposed, output_padding,
                                   groups);
  return scope.to_flagos(std::move(out));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward_overrideable(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool transposed,
    at::IntArrayRef output_padding, int64_t groups, std::array<bool, 3> output_mask) {
  NativeScope scope(input.device().index());
  // Output channels: weight is [out, in/groups, ...], or [in, out/groups, ...]
  // when transposed.
  const int64_t out_channels = transposed ? weight.size(1) * groups : weight.size(0);
  std::vector<int64_t> bias_sizes{out_channels};
  auto [gi, gw, gb] = at::convolution_backward(
      scope.alias_argument(grad_output), scope.alias_argument(input),
      scope.alias_argument(weight), output_mask[2] ? at::OptionalIntArrayRef(bias_sizes) : std::nullopt,
      stride, padding, dilation, transposed, output_padding, groups, output_mask);
  std::vector<at::Tensor> all{gi, gw, gb};
  return {scope.to_flagos(gi, all), scope.to_flagos(gw, all), scope.to_flagos(gb, all)};
}

at::Tensor reject_quantized(at::IntArrayRef, std::optional<c10::ScalarType> dtype,
                            std::optional<c10::Layout>, std::optional<c10::Device>, std::optional<bool>,
                            std::optional<c10::MemoryFormat>) {
  TORCH_CHECK_TYPE(false, "flagos: dtype ", c10::dtype_or_default(dtype),
                   " is not supported on flagos (quantized tensors are not implemented)");
}

at::Tensor reject_quantized_strided(at::IntArrayRef, at::IntArrayRef,
                                    std::optional<c10::ScalarType> dtype, std::optional<c10::Layout>,
                                    std::optional<c10::Device>, std::optional<bool>) {
  TORCH_CHECK_TYPE(false, "flagos: dtype ", c10::dtype_or_default(dtype),
                   " is not supported on flagos (quantized tensors are not implemented)");
}

}  // namespace

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("convolution_overrideable", TORCH_FN(convolution_overrideable));
  m.impl("convolution_backward_overrideable", TORCH_FN(convolution_backward_overrideable));
}

TORCH_LIBRARY_IMPL(aten, Conjugate, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(aten, Negative, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(aten, QuantizedPrivateUse1, m) {
  m.impl("empty.memory_format", TORCH_FN(reject_quantized));
  m.impl("empty_strided", TORCH_FN(reject_quantized_strided));
}

}  // namespace torch_fl
