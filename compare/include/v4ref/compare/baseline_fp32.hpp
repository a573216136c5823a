// Plain fp32 ports of the runner's components: the baseline B of the "c x baseline + floor" rule
// (guide/verification.md §4) and the "fp32" implementation of the runner (runner.hpp).
//
// Each port follows the textbook formula of the spec section of its component in float
// arithmetic, accumulating left to right in float, with the storage rounding points of the call's
// PrecisionPolicy applied where the reference applies them (bf16 stores through the project's
// bf16 codec; Q8/Q4 fake-quant through reference/quant.hpp, which is a storage format, not op
// math). It shares no op math with reference/: "how wrong is an honest, simple implementation in
// this precision?" Inputs and outputs use the component's tensor names (components.cpp).
#pragma once

#include "v4ref/compare/runner.hpp"

namespace v4ref::compare::fp32 {

TensorSet rms_norm(const ComponentCall& call);
TensorSet rope(const ComponentCall& call);
TensorSet hadamard(const ComponentCall& call);
TensorSet sinkhorn(const ComponentCall& call);
TensorSet hc_pre(const ComponentCall& call);
TensorSet hc_post(const ComponentCall& call);
TensorSet hc_head(const ComponentCall& call);
TensorSet q_path(const ComponentCall& call);
TensorSet kv_path(const ComponentCall& call);
TensorSet key_window(const ComponentCall& call);
TensorSet sink_attention(const ComponentCall& call);
TensorSet attention_core(const ComponentCall& call);
TensorSet derotate(const ComponentCall& call);
TensorSet grouped_out_proj(const ComponentCall& call);
TensorSet compressor(const ComponentCall& call);  // main and indexer compressor
TensorSet index_query(const ComponentCall& call);
TensorSet index_scores(const ComponentCall& call);
TensorSet router(const ComponentCall& call);
TensorSet hash_router(const ComponentCall& call);
TensorSet expert(const ComponentCall& call);
TensorSet dequant_fp8(const ComponentCall& call);
TensorSet dequant_fp4(const ComponentCall& call);

}  // namespace v4ref::compare::fp32
