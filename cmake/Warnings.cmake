# Compiler warnings and sanitizers, applied through one interface target.
add_library(v4ref_warnings INTERFACE)
target_compile_options(v4ref_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wold-style-cast -Wcast-align -Woverloaded-virtual -Wimplicit-fallthrough
    -Wdouble-promotion -Wformat=2
    # GCC 12 reports -Wrestrict inside libstdc++'s std::string concatenation at -O2
    # (GCC bug 105329, a false positive); our code has no restrict-qualified calls.
    $<$<CXX_COMPILER_ID:GNU>:-Wno-restrict>>
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${V4REF_WERROR}>>:-Werror>
  $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${V4REF_WERROR}>>:-Werror=all-warnings>)

# One rounding contract for host and device: no contraction into FMA and no fast-math in the
# reference, the SIMT executor and everything that includes the kernels' per-thread math (the
# executor's library propagates it to the tests and benches); nvcc compiles the kernels with
# --fmad=false, so a fused multiply-add happens only where the source says fmaf (fp32_rn.hpp).
add_library(v4ref_fp_strict INTERFACE)
target_compile_options(v4ref_fp_strict INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off -fno-fast-math>
  $<$<COMPILE_LANGUAGE:CUDA>:--fmad=false>)

if(V4REF_SANITIZE)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-sanitize-recover=all>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>)
  add_link_options(-fsanitize=address,undefined)
endif()
