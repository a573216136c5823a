// Walsh–Hadamard rotation of the indexer (v4-forward.md §2.4):
//   Had(x) = n^{-1/2} · H_n x,  H_1 = [1],  H_{2k} = [[H_k, H_k], [H_k, −H_k]]  (Sylvester order),
// n a power of two (128 in V4). Computed by the in-place butterfly (pairs (i, i+h) for
// h = 1, 2, 4, ..., n/2), then one multiplication by n^{-1/2}. Had is orthogonal and symmetric,
// so Had(Had(x)) = x.
#pragma once

#include <cstdint>
#include <span>

#include "v4ref/ref/linear.hpp"

namespace v4ref::ref {

// In place on x (x.size() = n, a power of two >= 1). ShapeError naming the length otherwise.
void hadamard_inplace(std::span<double> x);

// Had applied to every contiguous block of n columns of every row of x [T, k·n] (per-head
// rotation of indexer queries [T, H_I·D_I] with n = D_I, or keys [n_entries, D_I]).
// ShapeError if n is not a power of two or x.cols() is not a multiple of n.
Mat hadamard_blocks(const Mat& x, std::int64_t n);

}  // namespace v4ref::ref
