// Balanced ball tree ordering: pure C++17 with OpenMP, no Python, no torch.
//
// A cloud of n points is split recursively at the median along the axis of
// largest spread. The node that holds the run [start, end) of the output at
// depth `level` with index `a` (0 <= a < 2^level) covers
//
//     [floor(a * n / 2^level), floor((a + 1) * n / 2^level))
//
// so the runs of one level differ in size by at most one and their bounds have
// a closed form. Points are compared by (coordinate along the split axis,
// index in the cloud), which makes every split, and therefore the whole
// permutation, unique: the result does not depend on the thread count and a
// slow reference can reproduce it exactly. Spreads are computed in the input
// precision; a tie between axes goes to the lowest axis.
//
// Speed: coordinates become order-preserving integer keys, so comparing
// (coordinate, index) is one integer comparison; a node is split by
// Floyd-Rivest selection over a branch-free block partition, and nodes of at
// most `kRankSelect` points are sorted by counting ranks.
//
// Parallelism: points are copied and checked in parallel; every cloud of a
// batch is an OpenMP task and, inside a cloud, so is every subtree larger than
// `kTaskCutoff` points, so one large cloud uses all threads as well.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#ifndef _WIN32
#include <pthread.h>
#endif
#endif

namespace mspt::balltree {

// Subtrees smaller than this are built by the thread that split their parent.
inline constexpr int64_t kTaskCutoff = 8192;
// Nodes this small are sorted along their axis by counting ranks.
inline constexpr int64_t kRankSelect = 16;
// Ranges this short are finished by std::nth_element.
inline constexpr int64_t kSmallSelect = 24;
// Above this size the pivot is chosen from a recursive sample (Floyd-Rivest).
inline constexpr int64_t kSampleSelect = 600;

// libgomp's thread pool does not survive fork(): a child process (a DataLoader
// worker, say) that opens a parallel region with several threads waits forever
// for threads that were not copied. A child of a fork therefore builds on one
// thread; `install_fork_guard` registers the handler that tells it so.
inline std::atomic<bool>& in_forked_child() {
  static std::atomic<bool> flag{false};
  return flag;
}

inline void install_fork_guard() {
#if defined(_OPENMP) && !defined(_WIN32)
  static const bool installed = [] {
    return pthread_atfork(nullptr, nullptr, [] { in_forked_child().store(true); }) == 0;
  }();
  (void)installed;
#endif
}

inline int max_threads() {
  if (in_forked_child().load()) return 1;
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// First index of run `a` at depth `level` of a cloud of n points: floor(a n / 2^level).
// Exact for n < 2^31 and a <= 2^level <= 2n, since a * n < 2^63.
inline int64_t run_start(int64_t n, int level, int64_t a) {
  return static_cast<int64_t>((static_cast<uint64_t>(a) * static_cast<uint64_t>(n)) >> level);
}

// Coordinates are stored as unsigned integers that sort like the floats
// (sign-magnitude to offset binary; -0.0 is made +0.0 first). Comparing
// (key, index) is then one integer comparison, without the NaN branches of a
// float comparison, and a float is recovered exactly from its key.
template <typename T>
struct Key;
template <>
struct Key<float> {
  using type = uint32_t;
  using wide = uint64_t;  // holds (key, index)
};
template <>
struct Key<double> {
  using type = uint64_t;
  using wide = unsigned __int128;
};

template <typename T>
inline typename Key<T>::type to_key(T v) {
  using K = typename Key<T>::type;
  constexpr K sign = K(1) << (8 * sizeof(K) - 1);
  v += T(0);  // -0.0 -> +0.0
  K bits;
  std::memcpy(&bits, &v, sizeof bits);
  return (bits & sign) ? ~bits : (bits | sign);
}

template <typename T>
inline T from_key(typename Key<T>::type key) {
  using K = typename Key<T>::type;
  constexpr K sign = K(1) << (8 * sizeof(K) - 1);
  const K bits = (key & sign) ? (key & ~sign) : ~key;
  T v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

template <typename T, int D>
struct Item {
  typename Key<T>::type k[D];  // to_key of each coordinate
  int32_t idx;                 // position of the point in its cloud
};

template <typename T, int D>
class Builder {
 public:
  using It = Item<T, D>;

  // Builds the subtree of run `a` at depth `level` of a cloud of `n` points;
  // `items` points at the cloud's first item.
  static void build(It* items, int64_t n, int level, int64_t a) {
    const int64_t start = run_start(n, level, a);
    const int64_t end = run_start(n, level, a + 1);
    if (end - start < 2) return;
    const int64_t mid = run_start(n, level + 1, 2 * a + 1);
    split(items + start, items + mid, items + end);
    if (end - start > kTaskCutoff) {
#pragma omp task default(none) firstprivate(items, n, level, a)
      build(items, n, level + 1, 2 * a);
#pragma omp task default(none) firstprivate(items, n, level, a)
      build(items, n, level + 1, 2 * a + 1);
    } else {
      build(items, n, level + 1, 2 * a);
      build(items, n, level + 1, 2 * a + 1);
    }
  }

 private:
  // Puts the (mid - first) smallest items along the axis of largest spread in
  // [first, mid) and the rest in [mid, last).
  static void split(It* first, It* mid, It* last) {
    using K = typename Key<T>::type;
    K lo[D], hi[D];
    for (int d = 0; d < D; ++d) lo[d] = hi[d] = first->k[d];
    for (const It* p = first + 1; p < last; ++p) {
      for (int d = 0; d < D; ++d) {
        lo[d] = std::min(lo[d], p->k[d]);
        hi[d] = std::max(hi[d], p->k[d]);
      }
    }
    int axis = 0;
    T best = from_key<T>(hi[0]) - from_key<T>(lo[0]);
    for (int d = 1; d < D; ++d) {
      const T spread = from_key<T>(hi[d]) - from_key<T>(lo[d]);
      if (spread > best) {
        best = spread;
        axis = d;
      }
    }
    switch (axis) {
      case 0: select<0>(first, mid, last); break;
      case 1: select<1>(first, mid, last); break;
      default: select<D - 1>(first, mid, last); break;
    }
  }

  template <int Axis>
  static void select(It* first, It* mid, It* last) {
    using W = typename Key<T>::wide;
    const auto less = [](const It& u, const It& v) {
      const W ku = (W(u.k[Axis]) << 32) | static_cast<uint32_t>(u.idx);
      const W kv = (W(v.k[Axis]) << 32) | static_cast<uint32_t>(v.idx);
      return ku < kv;
    };
    const int64_t m = last - first;
    if (m <= kRankSelect) {
      // Small node: sort it by counting each item's rank (branch-free, O(m^2)).
      W key[kRankSelect];
      It tmp[kRankSelect];
      for (int64_t i = 0; i < m; ++i) {
        key[i] = (W(first[i].k[Axis]) << 32) | static_cast<uint32_t>(first[i].idx);
        tmp[i] = first[i];
      }
      for (int64_t i = 0; i < m; ++i) {
        int64_t rank = 0;
        for (int64_t j = 0; j < m; ++j) rank += key[j] < key[i];
        first[rank] = tmp[i];
      }
      return;
    }
    select_rank(first, 0, m - 1, mid - first, less);
  }

  // Quickselect with Floyd and Rivest's pivot (the k-th of a sample around k,
  // chosen recursively) and a block partition. On return a[k]
  // holds the item of rank k in a[left..right], smaller ones before it and
  // larger ones after. The (axis, index) order is strict, so the result is the
  // same as std::nth_element's; that is the fallback after too many rounds.
  template <typename Less>
  static void select_rank(It* a, int64_t left, int64_t right, int64_t k, const Less& less) {
    int rounds = 0;
    while (right - left >= kSmallSelect) {
      const int64_t n = right - left + 1;
      if (++rounds > 64) break;
      if (n > kSampleSelect) {
        const double i = static_cast<double>(k - left + 1);
        const double z = std::log(static_cast<double>(n));
        const double s = 0.5 * std::exp(2.0 * z / 3.0);
        const double sd = 0.5 * std::sqrt(z * s * (n - s) / n) * (i < 0.5 * n ? -1.0 : 1.0);
        const int64_t sub_left = std::max(left, static_cast<int64_t>(k - i * s / n + sd));
        const int64_t sub_right = std::min(right, static_cast<int64_t>(k + (n - i) * s / n + sd));
        select_rank(a, sub_left, sub_right, k, less);
      } else {
        median_of_three(a, left, k, right, less);
      }
      std::swap(a[k], a[right]);
      const int64_t p = partition(a + left, a + right, a[right], less) - a;
      std::swap(a[p], a[right]);
      if (p == k) return;
      if (p < k) left = p + 1;
      else right = p - 1;
    }
    if (right > left) std::nth_element(a + left, a + k, a + right + 1, less);
  }

  // Block partition (Edelkamp and Weiss's BlockQuicksort): classify blocks of
  // kBlock items from both ends without branches, then swap the misplaced ones
  // in pairs. Returns p with [first, p) < pivot <= [p, last).
  template <typename Less>
  static It* partition(It* first, It* last, const It& pivot, const Less& less) {
    constexpr int kBlock = 64;
    uint8_t off_l[kBlock], off_r[kBlock];
    int num_l = 0, num_r = 0, start_l = 0, start_r = 0;
    It* l = first;
    It* r = last;
    while (r - l >= 2 * kBlock) {
      if (num_l == 0) {
        start_l = 0;
        for (int i = 0; i < kBlock; ++i) {
          off_l[num_l] = static_cast<uint8_t>(i);
          num_l += !less(l[i], pivot);
        }
      }
      if (num_r == 0) {
        start_r = 0;
        for (int i = 0; i < kBlock; ++i) {
          off_r[num_r] = static_cast<uint8_t>(i);
          num_r += less(r[-1 - i], pivot);
        }
      }
      const int num = std::min(num_l, num_r);
      for (int j = 0; j < num; ++j) std::swap(l[off_l[start_l + j]], r[-1 - off_r[start_r + j]]);
      num_l -= num;
      num_r -= num;
      start_l += num;
      start_r += num;
      if (num_l == 0) l += kBlock;
      if (num_r == 0) r -= kBlock;
    }
    // What is left, [l, r), is unsorted but bounded by finished parts on both sides.
    return std::partition(l, r, [&](const It& u) { return less(u, pivot); });
  }

  template <typename Less>
  static void median_of_three(It* a, int64_t i, int64_t k, int64_t j, const Less& less) {
    // Moves the median of a[i], a[k], a[j] to a[k].
    if (less(a[k], a[i])) std::swap(a[k], a[i]);
    if (less(a[j], a[k])) {
      std::swap(a[j], a[k]);
      if (less(a[k], a[i])) std::swap(a[k], a[i]);
    }
  }
};

// Builds the ball-tree order of a batch of clouds.
//
// points:    (N, D) row-major coordinates; cloud c is rows [offsets[c], offsets[c+1]).
// offsets:   (num_clouds + 1,) non-decreasing, offsets[0] == 0.
// rotation:  optional (D, D) row-major matrix R; the tree is built on R x
//            (computed in double, rounded to T) instead of x. nullptr: no rotation.
// perm:      (N,) output; rows [offsets[c], offsets[c+1]) receive cloud c's order,
//            as global row numbers if `global_indices`, else as indices in the cloud.
// Throws std::invalid_argument for empty or oversized clouds and non-finite coordinates.
template <typename T, int D>
void build_order(const T* points, const int64_t* offsets, int64_t num_clouds, const double* rotation,
                 int num_threads, bool global_indices, int64_t* perm) {
  using It = Item<T, D>;
  for (int64_t c = 0; c < num_clouds; ++c) {
    const int64_t n = offsets[c + 1] - offsets[c];
    std::ostringstream msg;
    if (n <= 0) msg << "cloud " << c << " is empty";
    if (n > std::numeric_limits<int32_t>::max())
      msg << "cloud " << c << " has " << n << " points; at most 2^31 - 1 are supported";
    if (!msg.str().empty()) throw std::invalid_argument(msg.str());
  }
  const int64_t total = offsets[num_clouds];
  if (num_threads <= 0 || in_forked_child().load()) num_threads = max_threads();
  std::vector<It> items(static_cast<size_t>(total));
  int64_t first_bad = total;  // lowest row with a non-finite coordinate

#pragma omp parallel num_threads(num_threads) default(none) \
    shared(points, offsets, num_clouds, rotation, items, first_bad, total)
  {
    int64_t bad = total;
    for (int64_t c = 0; c < num_clouds; ++c) {
      const int64_t base = offsets[c];
#pragma omp for schedule(static) nowait
      for (int64_t g = base; g < offsets[c + 1]; ++g) {
        const T* x = points + g * D;
        It& it = items[g];
        bool finite = true;
        for (int d = 0; d < D; ++d) finite = finite && std::isfinite(x[d]);
        if (!finite && g < bad) bad = g;
        if (rotation == nullptr) {
          for (int d = 0; d < D; ++d) it.k[d] = to_key<T>(x[d]);
        } else {
          for (int r = 0; r < D; ++r) {
            double s = 0.0;
            for (int d = 0; d < D; ++d) s += rotation[r * D + d] * static_cast<double>(x[d]);
            it.k[r] = to_key<T>(static_cast<T>(s));
          }
        }
        it.idx = static_cast<int32_t>(g - base);
      }
    }
#pragma omp critical(mspt_balltree_bad)
    first_bad = std::min(first_bad, bad);
  }

  if (first_bad < total) {
    const int64_t c = std::upper_bound(offsets, offsets + num_clouds + 1, first_bad) - offsets - 1;
    std::ostringstream msg;
    msg << "cloud " << c << ": point " << (first_bad - offsets[c]) << " has a non-finite coordinate (";
    for (int d = 0; d < D; ++d) msg << (d ? ", " : "") << points[first_bad * D + d];
    msg << ")";
    throw std::invalid_argument(msg.str());
  }

#pragma omp parallel num_threads(num_threads) default(none) shared(offsets, num_clouds, items)
#pragma omp single
  {
    for (int64_t c = 0; c < num_clouds; ++c) {
      It* cloud = items.data() + offsets[c];
      const int64_t n = offsets[c + 1] - offsets[c];
#pragma omp task default(none) firstprivate(cloud, n)
      Builder<T, D>::build(cloud, n, 0, 0);
    }
  }

#pragma omp parallel num_threads(num_threads) default(none) \
    shared(offsets, num_clouds, items, perm, global_indices)
  for (int64_t c = 0; c < num_clouds; ++c) {
    const int64_t shift = global_indices ? offsets[c] : 0;
#pragma omp for schedule(static) nowait
    for (int64_t g = offsets[c]; g < offsets[c + 1]; ++g) perm[g] = shift + items[g].idx;
  }
}

}  // namespace mspt::balltree
