# cuda/ is built when nvcc is present (V4REF_CUDA=AUTO) or required (ON). Kernels target
# Hopper only: -gencode=arch=compute_90a,code=sm_90a.
set(V4REF_HAVE_CUDA OFF)
if(NOT V4REF_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_ARCHITECTURES 90a-real)  # SASS for sm_90a only (-gencode=arch=compute_90a,code=sm_90a)
    enable_language(CUDA)
    # CMake 3.25 does not know nvcc 13's C++20 flag; teach it, so C++20 targets that mix in
    # CUDA sources get -std=c++20.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(V4REF_HAVE_CUDA ON)
  elseif(V4REF_CUDA STREQUAL "ON")
    message(FATAL_ERROR "V4REF_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()
message(STATUS "v4ref: cuda/ ${V4REF_HAVE_CUDA}")

# GPU tests and benches run on machines without this one's shared libraries (HDF5 and its
# dependencies, OpenMP): scripts/gpu --build-only copies them into <build>/runtime-libs, and the
# binaries search there first. DT_RPATH (not RUNPATH) so the libraries' own dependencies are found
# there too.
function(v4ref_gpu_runtime_rpath target)
  set_target_properties(${target} PROPERTIES BUILD_RPATH "\$ORIGIN/../runtime-libs")
  target_link_options(${target} PRIVATE "LINKER:--disable-new-dtags")
endfunction()
