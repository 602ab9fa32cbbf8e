// The tiny nanobind layer over balltree.hpp: no checks beyond the types, the
// Python wrapper (msptcli/geometry/balltree.py) validates shapes and messages.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>

#include <optional>

#include "balltree.hpp"

namespace nb = nanobind;
namespace bt = mspt::balltree;

template <typename T>
using Points = nb::ndarray<const T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Offsets = nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Rotation = nb::ndarray<const double, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Perm = nb::ndarray<int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

template <typename T>
void build_order(Points<T> points, Offsets offsets, std::optional<Rotation> rotation, int num_threads,
                 bool global_indices, Perm perm) {
  const double* rot = rotation ? rotation->data() : nullptr;
  const int64_t clouds = static_cast<int64_t>(offsets.shape(0)) - 1;
  nb::gil_scoped_release release;
  if (points.shape(1) == 2)
    bt::build_order<T, 2>(points.data(), offsets.data(), clouds, rot, num_threads, global_indices, perm.data());
  else
    bt::build_order<T, 3>(points.data(), offsets.data(), clouds, rot, num_threads, global_indices, perm.data());
}

NB_MODULE(_balltree, m) {
  m.doc() = "Compiled ball-tree ordering (private; use msptcli.geometry.balltree).";
  bt::install_fork_guard();
  m.def("build_order", &build_order<float>, nb::arg("points"), nb::arg("offsets"), nb::arg("rotation").none(),
        nb::arg("num_threads"), nb::arg("global_indices"), nb::arg("perm"));
  m.def("build_order", &build_order<double>, nb::arg("points"), nb::arg("offsets"), nb::arg("rotation").none(),
        nb::arg("num_threads"), nb::arg("global_indices"), nb::arg("perm"));
  m.def("max_threads", &bt::max_threads, "OpenMP's default thread count (1 without OpenMP or after a fork).");
}
