// movinet::feature_step: one stream block's feature stage for one frame, in one pass.
//
// The spatial depthwise conv (TF-"same" padding, bias, optional hard-swish) of the expanded frame,
// then, when the block has one, the causal temporal depthwise conv over the buffered frames and the
// new one (bias, optional hard-swish), writing the next buffer as it goes. Channels-last throughout:
//   x      (B, H, W, E)          the expanded frame
//   weight (kh, kw, E), bias (E) the spatial conv, BN folded
//   past   (B, K, OH, OW, E)     the K buffered frames, oldest first (the state's buffer, permuted)
//   taps   (K + 1, E), tbias (E) the temporal conv: taps[K] weighs the new frame
// returns [y (B, OH, OW, E)] or [y, next (B, K, OH, OW, E)], next = past[1:] + the new frame.
//
// Why a kernel of our own: on the small maps of a stream step oneDNN's depthwise conv costs ~40 µs
// a call whatever the size, and the temporal conv as ATen ops is a chain of K + 3 passes over the
// frame plus a concatenation for the buffer. Vectors over channels, two output pixels at a time
// (their independent accumulators hide the FMA latency), rows in parallel.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <vector>

namespace {

typedef float vf __attribute__((vector_size(32), aligned(4)));  // 8 floats; unaligned loads and stores
constexpr int kLanes = 8;

inline vf load(const float* p) { return *reinterpret_cast<const vf*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vf*>(p) = v; }

// ATen's hardswish, x * min(max(x + 3, 0), 6) / 6, in the same order of operations.
inline float hardswish(float v) { return v * std::min(std::max(v + 3.0f, 0.0f), 6.0f) / 6.0f; }
inline vf hardswish(vf v) {
  const vf zero = {}, three = zero + 3.0f, six = zero + 6.0f;
  vf r = v + three;
  r = r < zero ? zero : r;
  r = r > six ? six : r;
  return v * r / six;
}

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

struct Spatial {
  const float* x;  // this clip's (H, W, E)
  const float* w;
  const float* bias;
  int64_t H, W, E, kh, kw, stride, top, left;
  bool act;
};

// Output pixel (oh, ow), channels [c, c + 8U): the bias plus every in-range tap.
template <int U>
inline void pixel(const Spatial& s, int64_t oh, int64_t ow, int64_t c, float* out) {
  const int64_t ih0 = oh * s.stride - s.top, iw0 = ow * s.stride - s.left;
  const int64_t i0 = std::max<int64_t>(0, -ih0), i1 = std::min<int64_t>(s.kh, s.H - ih0);
  const int64_t j0 = std::max<int64_t>(0, -iw0), j1 = std::min<int64_t>(s.kw, s.W - iw0);
  vf acc[U];
  for (int u = 0; u < U; ++u) acc[u] = load(s.bias + c + kLanes * u);
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t j = j0; j < j1; ++j) {
      const float* src = s.x + ((ih0 + i) * s.W + iw0 + j) * s.E + c;
      const float* wt = s.w + (i * s.kw + j) * s.E + c;
      for (int u = 0; u < U; ++u) acc[u] += load(src + kLanes * u) * load(wt + kLanes * u);
    }
  }
  for (int u = 0; u < U; ++u) store(out + c + kLanes * u, s.act ? hardswish(acc[u]) : acc[u]);
}

inline void pixel_scalar(const Spatial& s, int64_t oh, int64_t ow, int64_t c, float* out) {
  const int64_t ih0 = oh * s.stride - s.top, iw0 = ow * s.stride - s.left;
  const int64_t i0 = std::max<int64_t>(0, -ih0), i1 = std::min<int64_t>(s.kh, s.H - ih0);
  const int64_t j0 = std::max<int64_t>(0, -iw0), j1 = std::min<int64_t>(s.kw, s.W - iw0);
  float acc = s.bias[c];
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t j = j0; j < j1; ++j) acc += s.x[((ih0 + i) * s.W + iw0 + j) * s.E + c] * s.w[(i * s.kw + j) * s.E + c];
  out[c] = s.act ? hardswish(acc) : acc;
}

// Output pixels (oh, ow) and (oh, ow + 1), both with every column tap in range: the weights are
// loaded once for the two, and the two sets of accumulators are independent.
template <int U>
inline void pixel_pair(const Spatial& s, int64_t oh, int64_t ow, int64_t c, float* out) {
  const int64_t ih0 = oh * s.stride - s.top, iw0 = ow * s.stride - s.left;
  const int64_t i0 = std::max<int64_t>(0, -ih0), i1 = std::min<int64_t>(s.kh, s.H - ih0);
  const int64_t step = s.stride * s.E;
  vf a0[U], a1[U];
  for (int u = 0; u < U; ++u) a0[u] = a1[u] = load(s.bias + c + kLanes * u);
  for (int64_t i = i0; i < i1; ++i) {
    const float* src = s.x + ((ih0 + i) * s.W + iw0) * s.E + c;
    const float* wt = s.w + i * s.kw * s.E + c;
    for (int64_t j = 0; j < s.kw; ++j, src += s.E, wt += s.E) {
      for (int u = 0; u < U; ++u) {
        const vf wv = load(wt + kLanes * u);
        a0[u] += load(src + kLanes * u) * wv;
        a1[u] += load(src + step + kLanes * u) * wv;
      }
    }
  }
  for (int u = 0; u < U; ++u) {
    store(out + c + kLanes * u, s.act ? hardswish(a0[u]) : a0[u]);
    store(out + s.E + c + kLanes * u, s.act ? hardswish(a1[u]) : a1[u]);
  }
}

// One output row of the spatial conv into ``row`` (OW, E).
void spatial_row(const Spatial& s, int64_t oh, int64_t out_w, float* row) {
  // columns whose taps are all in range: ow * stride - left >= 0 and ow * stride - left + kw <= W
  const int64_t lo = std::min<int64_t>(out_w, floor_div(s.left + s.stride - 1, s.stride));
  const int64_t hi = std::max<int64_t>(lo, std::min<int64_t>(out_w, floor_div(s.W - s.kw + s.left, s.stride) + 1));
  const int64_t pairs_end = lo + (hi - lo) / 2 * 2;
  for (int64_t ow = lo; ow < pairs_end; ow += 2) {
    float* out = row + ow * s.E;
    int64_t c = 0;
    for (; c + 4 * kLanes <= s.E; c += 4 * kLanes) pixel_pair<4>(s, oh, ow, c, out);
    for (; c + kLanes <= s.E; c += kLanes) pixel_pair<1>(s, oh, ow, c, out);
    for (; c < s.E; ++c) {
      pixel_scalar(s, oh, ow, c, out);
      pixel_scalar(s, oh, ow + 1, c, out + s.E);
    }
  }
  for (int64_t ow = 0; ow < out_w; ++ow) {
    if (ow >= lo && ow < pairs_end) continue;
    float* out = row + ow * s.E;
    int64_t c = 0;
    for (; c + 4 * kLanes <= s.E; c += 4 * kLanes) pixel<4>(s, oh, ow, c, out);
    for (; c + kLanes <= s.E; c += kLanes) pixel<1>(s, oh, ow, c, out);
    for (; c < s.E; ++c) pixel_scalar(s, oh, ow, c, out);
  }
}

struct Temporal {
  const float* past;  // this clip's (K, OH, OW, E)
  float* next;        // this clip's (K, OH, OW, E); next[K - 1] already holds the new frame
  const float* taps;
  const float* bias;
  int64_t K, E, plane;  // plane = OH * OW * E
  bool act;
};

// Cell ``off``, channels [c, c + 8U): y = act(bias + sum_t past[t] * taps[t] + frame * taps[K]),
// and next[t - 1] = past[t].
template <int U>
inline void temporal_cells(const Temporal& t, int64_t off, int64_t c, float* y) {
  const float* frame = t.next + (t.K - 1) * t.plane + off;
  vf acc[U];
  for (int u = 0; u < U; ++u)
    acc[u] = load(t.bias + c + kLanes * u) + load(t.past + off + c + kLanes * u) * load(t.taps + c + kLanes * u);
  for (int64_t k = 1; k < t.K; ++k) {
    const float* src = t.past + k * t.plane + off + c;
    float* dst = t.next + (k - 1) * t.plane + off + c;
    const float* wt = t.taps + k * t.E + c;
    for (int u = 0; u < U; ++u) {
      const vf v = load(src + kLanes * u);
      acc[u] += v * load(wt + kLanes * u);
      store(dst + kLanes * u, v);
    }
  }
  for (int u = 0; u < U; ++u) {
    acc[u] += load(frame + c + kLanes * u) * load(t.taps + t.K * t.E + c + kLanes * u);
    store(y + off + c + kLanes * u, t.act ? hardswish(acc[u]) : acc[u]);
  }
}

inline void temporal_scalar(const Temporal& t, int64_t off, int64_t c, float* y) {
  float acc = t.bias[c] + t.past[off + c] * t.taps[c];
  for (int64_t k = 1; k < t.K; ++k) {
    const float v = t.past[k * t.plane + off + c];
    acc += v * t.taps[k * t.E + c];
    t.next[(k - 1) * t.plane + off + c] = v;
  }
  acc += t.next[(t.K - 1) * t.plane + off + c] * t.taps[t.K * t.E + c];
  y[off + c] = t.act ? hardswish(acc) : acc;
}

void temporal_row(const Temporal& t, int64_t oh, int64_t out_w, float* y) {
  for (int64_t ow = 0; ow < out_w; ++ow) {
    const int64_t off = (oh * out_w + ow) * t.E;
    int64_t c = 0;
    for (; c + 4 * kLanes <= t.E; c += 4 * kLanes) temporal_cells<4>(t, off, c, y);
    for (; c + kLanes <= t.E; c += kLanes) temporal_cells<1>(t, off, c, y);
    for (; c < t.E; ++c) temporal_scalar(t, off, c, y);
  }
}

void check_input(const at::Tensor& t, const char* name, std::vector<int64_t> shape) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, "feature_step: ", name, " must be CPU float32");
  TORCH_CHECK(t.is_contiguous(), "feature_step: ", name, " must be contiguous");
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), "feature_step: ", name, " has shape ", t.sizes(),
              ", expected ", at::IntArrayRef(shape));
}

}  // namespace

std::vector<at::Tensor> feature_step(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                     int64_t stride, int64_t top, int64_t left, int64_t out_h, int64_t out_w,
                                     bool spatial_act, const std::optional<at::Tensor>& past,
                                     const std::optional<at::Tensor>& taps, const std::optional<at::Tensor>& tbias,
                                     bool temporal_act) {
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 3, "feature_step: x is (B, H, W, E), weight (kh, kw, E)");
  TORCH_CHECK(stride >= 1 && out_h >= 1 && out_w >= 1, "feature_step: stride and output size must be positive");
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), E = x.size(3);
  const int64_t kh = weight.size(0), kw = weight.size(1);
  check_input(x, "x", {B, H, W, E});
  check_input(weight, "weight", {kh, kw, E});
  check_input(bias, "bias", {E});
  const bool temporal = past.has_value();
  TORCH_CHECK(temporal == taps.has_value() && temporal == tbias.has_value(),
              "feature_step: past, taps and tbias come together");
  const int64_t K = temporal ? past->size(1) : 0;
  if (temporal) {
    TORCH_CHECK(K >= 1, "feature_step: past needs at least one frame");
    check_input(*past, "past", {B, K, out_h, out_w, E});
    check_input(*taps, "taps", {K + 1, E});
    check_input(*tbias, "tbias", {E});
  }
  const int64_t plane = out_h * out_w * E;
  at::Tensor y = at::empty({B, out_h, out_w, E}, x.options());
  at::Tensor next = temporal ? at::empty_like(*past) : at::Tensor();
  float* yp = y.data_ptr<float>();
  float* np = temporal ? next.data_ptr<float>() : nullptr;
  // rows in parallel; a task of at least ~16k multiply-adds is worth a thread
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, out_w * E * kh * kw));
  at::parallel_for(0, B * out_h, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / out_h, oh = task % out_h;
      const Spatial s{x.data_ptr<float>() + b * H * W * E, weight.data_ptr<float>(), bias.data_ptr<float>(),
                      H, W, E, kh, kw, stride, top, left, spatial_act};
      if (!temporal) {
        spatial_row(s, oh, out_w, yp + b * plane + oh * out_w * E);
        continue;
      }
      // the new frame goes straight to its place in the next buffer, the newest frame there
      float* next_b = np + b * K * plane;
      spatial_row(s, oh, out_w, next_b + (K - 1) * plane + oh * out_w * E);
      const Temporal t{past->data_ptr<float>() + b * K * plane, next_b, taps->data_ptr<float>(),
                       tbias->data_ptr<float>(), K, E, plane, temporal_act};
      temporal_row(t, oh, out_w, yp + b * plane);
    }
  });
  if (!temporal) return {y};
  return {y, next};
}

TORCH_LIBRARY(movinet, m) {
  m.def(
      "feature_step(Tensor x, Tensor weight, Tensor bias, int stride, int top, int left, int out_h, int out_w, "
      "bool spatial_act, Tensor? past, Tensor? taps, Tensor? tbias, bool temporal_act) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(movinet, CPU, m) { m.impl("feature_step", feature_step); }
