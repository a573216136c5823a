// Marks functions that compile for both the host and the device (nvcc) side.
#pragma once

#if defined(__CUDACC__)
#define V4REF_HD __host__ __device__
#else
#define V4REF_HD
#endif
