# Every C++ dependency comes from Debian packages through find_package; nothing downloads.
# scripts/deps installs them (scripts/verify and scripts/test call it).
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(GTest REQUIRED)
find_package(benchmark REQUIRED)
find_package(Threads REQUIRED)
# Boost.Context: the fibers of the SIMT executor (one per CUDA thread).
find_package(Boost 1.74 REQUIRED COMPONENTS context)
