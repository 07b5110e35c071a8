// Fused softmax pixel losses for the CPU: loss and gradient in one pass over the logits.
//
// Serves every loss of SPEC section 2 that is a function of the true class's log-probability of
// (adjusted) logits: CE, Class-Balanced (class weights), Balanced Softmax (a per-class logit offset),
// LDAM (scaled logits and a true-class margin, Cao et al. Eq. 13, with DRW weights), BLV (one normal
// draw per logit, Wang et al. Eq. 5-6), Focal and CB-Focal (Lin et al. Eq. 5) and PAT (paper Eq. 4-5,
// with per-image-and-class weights 1 / (B S_i^l)). For a valid pixel with true class t:
//
//     y_c  = s * z_c + o_c + a_c * min(sigma * |e_c|, 1) - [c = t] * s * m_t,   e_c ~ N(0, 1)
//     nll  = logsumexp_c y_c - y_t,   p_t = exp(-nll)
//     loss = w_t * phi(nll),   phi = nll | beta nll (PAT) | (1 - p_t)^gamma nll (focal)
//     dloss/dz_c = s * w_t * phi'(nll) * (softmax(y)_c - [c = t])
//
// The last line holds because d nll / d y_c = softmax(y)_c - [c = t] and d y_c / d z_c = s (the
// offsets, margins and noise are constants). The returned value is the sum over valid pixels of
// ``loss``; the gradient is written already multiplied by ``grad_factor`` (1 / number of valid
// pixels for the mean losses, 1 for PAT whose weights are normalised), so the backward pass has
// nothing left to compute. Ignored pixels get zero loss and zero gradient and draw no noise.
//
// Layout: logits and gradient [B, L, P] contiguous (P = H * W), labels [B, P] int64. Work is split into
// tiles of kTile consecutive pixels of one image; a tile's adjusted logits, kTile x L floats, stay in
// the core's cache between the three passes (max, exp-sum, gradient), so the logits are read once
// from memory and the gradient written once. Loops run over pixels innermost, so the compiler
// vectorises them; exp, log and erfinv are written here as branch-free polynomials for that reason
// (the C library's are scalar calls).
//
// Noise: counter-based, so it needs no state and does not depend on the number of threads. Logit
// (b, c, p) takes lane c % 4 of Philox4x32-10 (Salmon et al., SC 2011) at counter
// (pixel index low, pixel index high, c / 4, 0) under the 64-bit key ``seed``; the 32 bits become a
// uniform u in (0, 1) (24 bits, centred in its bin) and |e| = sqrt(2) * erfinv(u), because
// P(|e| <= x) = erf(x / sqrt 2). erfinv is Giles's single-precision approximation ("Approximating the
// erfinv function", GPU Computing Gems 2011), relative error below 1.3e-7 for |e| < 5.
//
// exp() of arguments below -87 returns 0 instead of a subnormal: softmax never adds anything that
// small to a sum >= 1, and subnormal arithmetic costs x86 cores a microcode assist per operation
// (LDAM's logits are scaled by 20, so many of its exp() results would otherwise be subnormal).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <new>
#include <thread>
#include <vector>

namespace {

constexpr int64_t kTile = 64;  // pixels per tile: 64 x L floats of work per thread fit in L1/L2

template <typename To, typename From>
inline To bits_as(From value) {
  return __builtin_bit_cast(To, value);
}

// exp(x): 0 below -87 (never a subnormal), +inf above 88.72, NaN for NaN.
inline float exp_float(float x) {
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the mantissa
  const float clamped = x < -88.0f ? -88.0f : (x > 89.0f ? 89.0f : x);  // keeps n in [-127, 128]
  const float t = clamped * 1.44269504088896341f + shifter;
  const int32_t n = static_cast<int32_t>(bits_as<uint32_t>(t) - bits_as<uint32_t>(shifter));  // round(x / ln2)
  const float nf = t - shifter;
  // Cody-Waite reduction r = x - n ln2 with ln2 split into a short high part and a correction.
  const float r = (clamped - nf * 0.693359375f) + nf * 2.12194440e-4f;
  // exp(r) on |r| <= ln2 / 2 by Taylor to degree 7: truncation below 6e-9 relative.
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n as 2^(n/2) * 2^(n - n/2), so that n = 128 (x up to 88.72) does not overflow the exponent field.
  const int32_t half = n >> 1;
  const float scale_a = bits_as<float>(static_cast<uint32_t>(half + 127) << 23);
  const float scale_b = bits_as<float>(static_cast<uint32_t>(n - half + 127) << 23);
  const float result = p * scale_a * scale_b;
  return x < -87.0f ? 0.0f : (x == x ? result : x);
}

// log(x) for a positive normal x (or NaN): x = m 2^k with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s),
// s = (m - 1) / (m + 1), |s| <= 0.172, by its odd series to s^9 (truncation below 1e-9).
inline float log_positive(float x) {
  const int32_t bits = bits_as<int32_t>(x);
  const int32_t k = (bits - 0x3f3504f3) >> 23;  // 0x3f3504f3 = sqrt(1/2)
  const float m = bits_as<float>(bits - static_cast<int32_t>(static_cast<uint32_t>(k) << 23));
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float p = 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  const float result = static_cast<float>(k) * 0.693147180559945f + 2.0f * s * p;
  return x == x ? result : x;  // NaN in, NaN out (the bit manipulation above would make it finite)
}

// erfinv(u) for u in (0, 1) given also v = 1 - u (computed without cancellation by the caller), by
// Giles's two polynomials, both evaluated and one selected (no branch).
inline float erfinv_unit(float u, float v) {
  const float w = -log_positive(v * (1.0f + u));  // -log(1 - u^2)
  const float a = w - 2.5f;
  float p = 2.81022636e-08f;
  p = p * a + 3.43273939e-07f;
  p = p * a - 3.5233877e-06f;
  p = p * a - 4.39150654e-06f;
  p = p * a + 0.00021858087f;
  p = p * a - 0.00125372503f;
  p = p * a - 0.00417768164f;
  p = p * a + 0.246640727f;
  p = p * a + 1.50140941f;
  const float b = std::sqrt(w) - 3.0f;
  float q = -0.000200214257f;
  q = q * b + 0.000100950558f;
  q = q * b + 0.00134934322f;
  q = q * b - 0.00367342844f;
  q = q * b + 0.00573950773f;
  q = q * b - 0.0076224613f;
  q = q * b + 0.00943887047f;
  q = q * b + 1.00167406f;
  q = q * b + 2.83297682f;
  return (w < 5.0f ? p : q) * u;
}

// |e| for e ~ N(0, 1) from 32 random bits: u = (k + 1/2) / 2^24 from the top 24 bits k. 1 - u is
// formed from 2^24 - 1 - k rather than by subtraction, which would round u = 1 - 2^-25 to 1.
inline float half_normal(uint32_t bits) {
  const int32_t k = static_cast<int32_t>(bits >> 8);
  const float u = static_cast<float>(k) * 0x1p-24f + 0x1p-25f;
  const float v = static_cast<float>(0xFFFFFF - k) * 0x1p-24f + 0x1p-25f;
  return 1.41421356237309505f * erfinv_unit(u, v);
}

struct Philox4 {
  uint32_t x0, x1, x2, x3;
};

inline Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

}  // namespace

extern "C" {
// Everything one call needs; mirrored field by field by ``LossArgs`` in softmax_cross_entropy_cpu.py.
struct pat_seg_loss_args {
  const float* logits;         // [B, L, P] contiguous
  const int64_t* target;       // [B, P]
  float* grad;                 // [B, L, P], or null: loss only
  int64_t batch, classes, pixels, ignore_index;
  const float* class_offset;   // o_c, or null
  const float* target_margin;  // m_c (before scaling), or null
  const float* weight;         // w: weight[b * weight_image_stride + t]; null = all 1
  int64_t weight_image_stride; // 0 for per-class weights, L for per-image-and-class weights (PAT)
  const float* noise_scale;    // a_c, or null (no noise)
  uint64_t seed;
  float scale, sigma, grad_factor;
  int32_t pixel_function;      // PixelFunction
  float inv_temperature, epsilon, gamma;  // PAT's 1/T and eps; focal's gamma
  int32_t detach_weight;       // PAT: beta a constant in the backward pass
  int32_t num_threads;
};
}  // extern "C"

namespace {

using Problem = pat_seg_loss_args;

// phi(nll) per valid pixel: the loss is sum_j w_j phi(nll_j) and its gradient w_j phi'(nll_j) d nll_j.
enum PixelFunction : int32_t {
  kLinear = 0,  // phi = nll: cross-entropy and its weighted / adjusted variants
  kPat = 1,     // phi = beta nll, beta = exp((1 - p_t - eps) / T)          (PAT Eq. 4-5)
  kFocal = 2,   // phi = (1 - p_t)^gamma nll                                  (Lin et al. Eq. 5)
};

// phi(nll) and d phi / d nll of one pixel (p_t = exp(-nll)); branch-free per function, so the loop
// over a tile's pixels that calls it vectorises.
template <int32_t kFunction>
inline void pixel_function(const Problem& pr, float nll, float* value, float* slope) {
  if (kFunction == kPat) {
    // d beta / d nll = beta p_t / T, so d (beta nll) / d nll = beta (1 + p_t nll / T).
    const float p_t = exp_float(-nll);
    const float beta = exp_float((1.0f - p_t - pr.epsilon) * pr.inv_temperature);
    *value = beta * nll;
    *slope = pr.detach_weight ? beta : beta * (1.0f + p_t * nll * pr.inv_temperature);
  } else if (kFunction == kFocal) {
    // q = 1 - p_t without cancellation for confident pixels (series of 1 - e^-x below 0.1), clamped to
    // the smallest normal float as the eager loss does. d q / d nll = p_t, so
    // d (q^g nll) / d nll = q^(g-1) (q + g nll p_t).
    const float p_t = exp_float(-nll);
    const float x = nll;
    const float series = x * (1.0f - x * (0.5f - x * (1.0f / 6.0f - x * (1.0f / 24.0f - x * (1.0f / 120.0f)))));
    float q = x < 0.1f ? series : 1.0f - p_t;
    q = q > std::numeric_limits<float>::min() ? q : std::numeric_limits<float>::min();
    const float q_gamma_minus_1 = exp_float((pr.gamma - 1.0f) * log_positive(q));
    *value = q_gamma_minus_1 * q * nll;
    *slope = q_gamma_minus_1 * (q + pr.gamma * nll * p_t);
  } else {
    *value = nll;
    *slope = 1.0f;
  }
}

// Per pixel of a tile: the weighted loss (summed and returned) and the factors of pass 3,
// slope = s * w_t * phi'(nll) * grad_factor and slope / sum_c exp(y_c - max); 0 for ignored pixels.
template <int32_t kFunction>
double pixel_terms(const Problem& pr, int64_t n, const int32_t* label, const float* weight, const float* row_max,
                   const float* row_sum, const float* true_logit, float* slope, float* per_sum) {
  float loss[kTile];
  for (int64_t j = 0; j < n; ++j) {
    float nll = row_max[j] + log_positive(row_sum[j]) - true_logit[j];
    nll = nll < 0.0f ? 0.0f : nll;  // >= 0 exactly (rounding can leave -1e-7); NaN stays NaN
    float value, d_value;
    pixel_function<kFunction>(pr, nll, &value, &d_value);
    const bool valid = label[j] >= 0;  // an ignored pixel's row may hold anything, even NaN: select, not multiply
    loss[j] = valid ? weight[j] * value : 0.0f;
    slope[j] = valid ? pr.scale * weight[j] * d_value * pr.grad_factor : 0.0f;
    per_sum[j] = slope[j] / row_sum[j];
  }
  double total = 0.0;
  for (int64_t j = 0; j < n; ++j) total += loss[j];
  return total;
}

// out[c * kTile + j] = a_c * min(sigma * |e|, 1) for the n pixels starting at global pixel index `first`.
void fill_variation(float* out, int64_t classes, int64_t n, uint64_t first, float sigma, uint64_t seed,
                    const float* noise_scale) {
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int64_t group = 0; group * 4 < classes; ++group) {
    float lane[4][kTile];
    for (int64_t j = 0; j < n; ++j) {
      const uint64_t pixel = first + static_cast<uint64_t>(j);
      const Philox4 r = philox4x32_10(static_cast<uint32_t>(pixel), static_cast<uint32_t>(pixel >> 32),
                                      static_cast<uint32_t>(group), 0u, k0, k1);
      lane[0][j] = half_normal(r.x0);
      lane[1][j] = half_normal(r.x1);
      lane[2][j] = half_normal(r.x2);
      lane[3][j] = half_normal(r.x3);
    }
    for (int64_t l = 0; l < 4 && group * 4 + l < classes; ++l) {
      const int64_t c = group * 4 + l;
      const float a = noise_scale ? noise_scale[c] : 1.0f;
      float* row = out + c * kTile;
      for (int64_t j = 0; j < n; ++j) row[j] = a * std::min(sigma * lane[l][j], 1.0f);
    }
  }
}

// y_c = s z_c + o_c (+ the variation already in `work` when kNoisy) - [c = t] s m_t, into `work`;
// also the per-pixel maximum and true-class value of y.
template <bool kNoisy>
void adjusted_logits(const Problem& pr, const float* z, int64_t n, const int32_t* label, const float* margin,
                     float* work, float* row_max, float* true_logit) {
  for (int64_t c = 0; c < pr.classes; ++c) {
    const float* zc = z + c * pr.pixels;
    float* yc = work + c * kTile;
    const float offset = pr.class_offset ? pr.class_offset[c] : 0.0f;
    const int32_t cls = static_cast<int32_t>(c);
    for (int64_t j = 0; j < n; ++j) {
      const bool is_true = label[j] == cls;
      float y = pr.scale * zc[j] + offset;
      if (kNoisy) y += yc[j];
      y = is_true ? y - margin[j] : y;
      yc[j] = y;
      row_max[j] = y > row_max[j] ? y : row_max[j];
      true_logit[j] += is_true ? y : 0.0f;
    }
  }
}

// One tile: n <= kTile pixels of image b from pixel p0. Returns the tile's summed loss.
double run_tile(const Problem& pr, int64_t b, int64_t p0, int64_t n, float* work, int64_t* bad_labels) {
  const int64_t L = pr.classes, P = pr.pixels;
  const float* z = pr.logits + b * L * P + p0;
  const int64_t* labels = pr.target + b * P + p0;

  int32_t label[kTile];
  float weight[kTile], margin[kTile], row_max[kTile], row_sum[kTile], true_logit[kTile];
  bool any_valid = false;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t t = labels[j];
    const bool in_range = t >= 0 && t < L;
    if (t != pr.ignore_index && !in_range) ++*bad_labels;
    const bool valid = in_range && t != pr.ignore_index;
    any_valid = any_valid || valid;
    label[j] = valid ? static_cast<int32_t>(t) : -1;
    weight[j] = valid ? (pr.weight ? pr.weight[b * pr.weight_image_stride + t] : 1.0f) : 0.0f;
    margin[j] = valid && pr.target_margin ? pr.scale * pr.target_margin[t] : 0.0f;
    row_max[j] = -std::numeric_limits<float>::infinity();
    row_sum[j] = 0.0f;
    true_logit[j] = 0.0f;
  }
  float* g = pr.grad ? pr.grad + b * L * P + p0 : nullptr;
  if (!any_valid) {
    if (g)
      for (int64_t c = 0; c < L; ++c) std::fill(g + c * P, g + c * P + n, 0.0f);
    return 0.0;
  }

  const bool noisy = pr.noise_scale != nullptr;
  if (noisy) fill_variation(work, L, n, static_cast<uint64_t>(b * P + p0), pr.sigma, pr.seed, pr.noise_scale);

  // Pass 1: adjusted logits y into the work tile, their maximum and the true class's y.
  if (noisy)
    adjusted_logits<true>(pr, z, n, label, margin, work, row_max, true_logit);
  else
    adjusted_logits<false>(pr, z, n, label, margin, work, row_max, true_logit);
  // Pass 2: exp(y - max) in place and its sum.
  for (int64_t c = 0; c < L; ++c) {
    float* yc = work + c * kTile;
    for (int64_t j = 0; j < n; ++j) {
      const float e = exp_float(yc[j] - row_max[j]);
      yc[j] = e;
      row_sum[j] += e;
    }
  }
  float slope[kTile], per_sum[kTile];
  const double total =
      pr.pixel_function == kPat     ? pixel_terms<kPat>(pr, n, label, weight, row_max, row_sum, true_logit, slope, per_sum)
      : pr.pixel_function == kFocal ? pixel_terms<kFocal>(pr, n, label, weight, row_max, row_sum, true_logit, slope, per_sum)
                                    : pixel_terms<kLinear>(pr, n, label, weight, row_max, row_sum, true_logit, slope, per_sum);
  if (g) {
    for (int64_t c = 0; c < L; ++c) {
      const float* ec = work + c * kTile;
      float* gc = g + c * P;
      const int32_t cls = static_cast<int32_t>(c);
      for (int64_t j = 0; j < n; ++j) gc[j] = ec[j] * per_sum[j] - (label[j] == cls ? slope[j] : 0.0f);
    }
  }
  return total;
}

// body(first, last) over [0, count) split into `num_threads` contiguous ranges. Built with OpenMP, the
// ranges run on the OpenMP runtime's threads: in a PyTorch process that is PyTorch's own libgomp
// (same soname, loaded once), so the loss runs on the intra-op threads that are already awake from
// the network's last operator instead of competing with them for the cores. Without OpenMP, std::thread.
template <typename Body>
void parallel_over(int64_t count, int num_threads, const Body& body) {
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(num_threads, count));
  const int64_t chunk = (count + workers - 1) / workers;
  if (workers == 1) {
    body(0, count);
    return;
  }
#ifdef _OPENMP
  std::atomic<bool> failed{false};
#pragma omp parallel for schedule(static, 1) num_threads(static_cast<int>(workers))
  for (int64_t worker = 0; worker < workers; ++worker) {
    try {  // an exception must not leave an OpenMP region
      body(worker * chunk, std::min(count, (worker + 1) * chunk));
    } catch (...) {
      failed = true;
    }
  }
  if (failed) throw std::bad_alloc();
#else
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(workers - 1));
  int64_t first = chunk;
  try {
    for (; first < count; first += chunk) threads.emplace_back(body, first, std::min(count, first + chunk));
  } catch (...) {  // no more threads: this thread does the rest
    body(first, count);
  }
  body(0, std::min(count, chunk));
  for (auto& thread : threads) thread.join();
#endif
}

}  // namespace

extern "C" {

// Status codes: 0 ok, 1 a label outside [0, L) that is not ignore_index, 2 out of memory / internal.
int pat_seg_pixel_loss(const pat_seg_loss_args* args, double* loss_sum) {
  try {
    const Problem& pr = *args;
    const int64_t batch = pr.batch, classes = pr.classes, pixels = pr.pixels, num_threads = pr.num_threads;
    const int64_t tiles_per_image = (pixels + kTile - 1) / kTile;
    const int64_t tiles = batch * tiles_per_image;
    std::vector<double> tile_loss(static_cast<size_t>(tiles), 0.0);
    std::atomic<int64_t> bad_labels{0};
    // Below ~32k logits per thread, starting a thread costs more than it saves.
    const int64_t useful = std::max<int64_t>(1, batch * classes * pixels / 32768);
    parallel_over(tiles, static_cast<int>(std::min<int64_t>(num_threads, useful)), [&](int64_t first, int64_t last) {
      std::vector<float> work(static_cast<size_t>(classes * kTile));
      int64_t bad = 0;
      for (int64_t tile = first; tile < last; ++tile) {
        const int64_t b = tile / tiles_per_image;
        const int64_t p0 = (tile % tiles_per_image) * kTile;
        tile_loss[static_cast<size_t>(tile)] = run_tile(pr, b, p0, std::min(kTile, pixels - p0), work.data(), &bad);
      }
      bad_labels += bad;
    });
    double total = 0.0;  // summed in tile order: the same result for any number of threads
    for (double value : tile_loss) total += value;
    *loss_sum = total;
    return bad_labels.load() == 0 ? 0 : 1;
  } catch (...) {
    return 2;
  }
}

// The BLV variation min(sigma * |e|, 1) the loss above draws for logits [B, L, P] (a_c = 1), for tests.
int pat_seg_blv_variation(float* out, int64_t batch, int64_t classes, int64_t pixels, float sigma, uint64_t seed) {
  try {
    std::vector<float> work(static_cast<size_t>(classes * kTile));
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t p0 = 0; p0 < pixels; p0 += kTile) {
        const int64_t n = std::min(kTile, pixels - p0);
        fill_variation(work.data(), classes, n, static_cast<uint64_t>(b * pixels + p0), sigma, seed, nullptr);
        for (int64_t c = 0; c < classes; ++c)
          std::copy(work.data() + c * kTile, work.data() + c * kTile + n, out + (b * classes + c) * pixels + p0);
      }
    return 0;
  } catch (...) {
    return 2;
  }
}

// Philox4x32-10 of one counter under one key, for known-answer tests.
void pat_seg_philox4x32_10(const uint32_t* counter, const uint32_t* key, uint32_t* out) {
  const Philox4 r = philox4x32_10(counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
  out[0] = r.x0;
  out[1] = r.x1;
  out[2] = r.x2;
  out[3] = r.x3;
}

// The vectorised exp/log/half-normal above, element-wise over n floats, for accuracy tests.
void pat_seg_math_exp(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = exp_float(x[i]);
}
void pat_seg_math_log_positive(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = log_positive(x[i]);
}
void pat_seg_math_half_normal(const uint32_t* bits, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = half_normal(bits[i]);
}

}  // extern "C"
