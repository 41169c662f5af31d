// Fused CPU kernels for the LFADS recurrences: the bidirectional encoder GRUs and the decoder
// loop (controller GRU -> inferred input -> generator GRU -> factors), forward and a hand-written
// backward. Matrix products go to oneDNN's brgemm or torch's BLAS (gemm below), each gate's
// input and recurrent weights stacked into one product; everything elementwise between them is
// one loop per step instead of a dozen tensor operations; the whole time loop runs in C++, on
// one share of the batch per intra-op thread; weight gradients are one product over all steps.
//
// Every tensor carries a leading stack dimension S (independent cells or models run at once:
// the encoder's directions, or the members of a stacked PBT population). Sequences are
// [S, T, B, X]; states [S, B, X]; weights [S, in, out]. The math is that of lfads_core/model/gru.py
// (LFADS GRU: n = tanh(W x + W_hn (r * h)), h' = z * h + (1 - z) * n, clamped to +-clip where the
// clamp can bind) and lfads_core/model/generator.py; lfads_core/model/fused.py holds the Python
// side and the tests compare both ways to autograd.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/native/CPUBlas.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <cmath>
#include <vector>

using at::Tensor;

// The BLAS torch links (see gemm below); weak: absent symbols read as null.
#if defined(__linux__) && !defined(LFADS_NO_DIRECT_BLAS)
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
}
#endif

namespace {

// ------------------------------------------------------------------------------------------
// Matrix products: C[s] = beta C[s] + alpha A[s] B[s] for each stack s, straight into the BLAS
// torch is linked with (its LP64 sgemm_/dgemm_, as ATen declares them) where the symbols are
// there; else through ATen. A step's products are small: ATen's per-call work (dispatch,
// checks, a new output, views per stack) costs about as much as the arithmetic there.
// ------------------------------------------------------------------------------------------
template <typename T>
using GemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const T*,
                        const T*, const int*, const T*, const int*, const T*, T*, const int*);

// The BLAS routine for T (sgemm_ or dgemm_); null where there is none.
template <typename T>
GemmFn<T> blas_gemm() {
#if defined(__linux__) && !defined(LFADS_NO_DIRECT_BLAS)
  if constexpr (std::is_same_v<T, float>) return sgemm_;
  if constexpr (std::is_same_v<T, double>) return dgemm_;
#endif
  return nullptr;
}

// The BLAS view of a row-major matrix with strides (r, c): untransposed in column-major terms
// when c == 1 (leading dimension r), transposed when r == 1 (leading dimension c).
struct BlasOp {
  char op;
  int64_t ld;
  bool ok;
};
inline BlasOp blas_op(int64_t r, int64_t c, int64_t rows, int64_t cols) {
  if (c == 1 && (rows <= 1 || r >= std::max<int64_t>(1, cols))) return {'N', std::max<int64_t>({r, cols, 1}), true};
  if (r == 1 && (cols <= 1 || c >= std::max<int64_t>(1, rows))) return {'T', std::max<int64_t>({c, rows, 1}), true};
  return {'N', 0, false};
}

template <typename T>
void gemm(const Tensor& C, const Tensor& A, const Tensor& B, double beta = 0.0, double alpha = 1.0) {
  const int64_t S = C.size(0), m = C.size(1), n = C.size(2), k = A.size(2);
  if (m == 0 || n == 0) return;
#if defined(CPUBLAS_BRGEMM_F32F32F32) && !defined(LFADS_NO_BRGEMM)
  // float, C (+)= A B with row-major operands: oneDNN's batch-reduce GEMM (through ATen), a
  // kernel generated for the shape that reads the operands in place (MKL's sgemm copies them
  // into packed panels on every call, a third of its time for these sizes).
  if constexpr (std::is_same_v<T, float>) {
    const int64_t la = A.stride(1), lb = B.stride(1), lc = C.stride(1);
    if (alpha == 1.0 && (beta == 0.0 || beta == 1.0) && k > 0 && A.stride(2) == 1 &&
        B.stride(2) == 1 && C.stride(2) == 1 && (m == 1 || la >= k) && (k == 1 || lb >= n) &&
        (m == 1 || lc >= n)) {
      const float *pa = A.data_ptr<float>(), *pb = B.data_ptr<float>();
      float* pc = C.data_ptr<float>();
      for (int64_t s = 0; s < S; ++s)
        at::native::cpublas::brgemm(m, n, k, std::max(la, k), std::max(lb, n), std::max(lc, n),
                                    beta == 1.0, pa + s * A.stride(0), pb + s * B.stride(0),
                                    pc + s * C.stride(0));
      return;
    }
  }
#endif
  const GemmFn<T> blas = blas_gemm<T>();
  const int64_t lim = std::numeric_limits<int>::max();
  BlasOp oa = blas_op(A.stride(1), A.stride(2), m, k), ob = blas_op(B.stride(1), B.stride(2), k, n);
  BlasOp oc = blas_op(C.stride(1), C.stride(2), m, n);
  if (blas != nullptr && oa.ok && ob.ok && oc.ok && oc.op == 'N' && m < lim && n < lim &&
      k < lim && oa.ld < lim && ob.ld < lim && oc.ld < lim) {
    // Row-major C = A B is column-major C^T = B^T A^T.
    const int im = static_cast<int>(n), in = static_cast<int>(m), ik = static_cast<int>(k);
    const int la = static_cast<int>(ob.ld), lb = static_cast<int>(oa.ld), lc = static_cast<int>(oc.ld);
    const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
    const T *pa = A.data_ptr<T>(), *pb = B.data_ptr<T>();
    T* pc = C.data_ptr<T>();
    for (int64_t s = 0; s < S; ++s) {
      if (k == 0) {  // some BLAS leave C alone for k = 0
        Tensor cs = C.select(0, s);
        if (beta == 0.0) cs.zero_(); else cs.mul_(beta);
        continue;
      }
      blas(&ob.op, &oa.op, &im, &in, &ik, &al, pb + s * B.stride(0), &la,
           pa + s * A.stride(0), &lb, &be, pc + s * C.stride(0), &lc);
    }
    return;
  }
  if (beta == 0.0) {
    at::bmm_out(const_cast<Tensor&>(C), A, B);
    if (alpha != 1.0) C.mul_(alpha);
  }
  else const_cast<Tensor&>(C).baddbmm_(A, B, beta, alpha);
}

// A per-step slice [S, B, X] with contiguous rows (strides ss between stacks, rs between rows).
template <typename T>
struct Sl {
  T* p;
  int64_t ss;
  int64_t rs;
  T* row(int64_t s, int64_t b) const { return p + s * ss + b * rs; }
};

template <typename T>
Sl<T> sl(const Tensor& t) {
  TORCH_CHECK(t.dim() == 3 && t.stride(2) == 1, "lfads_cpu: slice with non-contiguous rows");
  return {t.data_ptr<T>(), t.stride(0), t.stride(1)};
}

// x itself when its rows are contiguous, else a contiguous copy (e.g. an expanded gradient).
Tensor rowwise(const Tensor& x) { return x.stride(-1) == 1 ? x : x.contiguous(); }

// dst = scale * src for [S, B, X] with contiguous rows in dst (src: any strides).
template <typename T>
void copy_rows(const Tensor& dst, const Tensor& src, T scale = T(1)) {
  if (src.stride(2) != 1) {
    const_cast<Tensor&>(dst).copy_(src);
    if (scale != T(1)) const_cast<Tensor&>(dst).mul_(scale);
    return;
  }
  const int64_t S = dst.size(0), B = dst.size(1), X = dst.size(2);
  auto D = sl<T>(dst), Sr = sl<T>(src);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t b = 0; b < B; ++b) {
      if (scale == T(1)) {
        std::copy_n(Sr.row(s, b), X, D.row(s, b));
      } else {
        const T* __restrict__ a = Sr.row(s, b);
        T* __restrict__ o = D.row(s, b);
        for (int64_t j = 0; j < X; ++j) o[j] = scale * a[j];
      }
    }
}

// Row kernels: plain loops over one row of H elements with restrict pointers, so the compiler
// vectorises them (it does not through a lambda). Rows are spread over torch's intra-op threads
// (the extension is built with OpenMP and shares torch's runtime) once there is enough work.
template <typename F>
void for_rows(int64_t S, int64_t B, int64_t H, const F& f) {
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(H, 1));
  at::parallel_for(0, S * B, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) f(i / B, i % B);
  });
}

template <typename T>
void k_mul(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ o, int64_t H) {
  for (int64_t j = 0; j < H; ++j) o[j] = a[j] * b[j];
}

// n = 2 s - 1 from s = sigmoid(2 a) (tanh a; ATen's tanh is 3x slower than its sigmoid here),
// then h' = n + z (h - n), clamped to [lo, hi] (NaN stays NaN) with keep = 1 where inside.
template <typename T>
void k_state(const T* __restrict__ z, T* __restrict__ n, const T* __restrict__ h,
             T* __restrict__ o, T* __restrict__ keep, T lo, T hi, int64_t H) {
  for (int64_t j = 0; j < H; ++j) n[j] = T(2) * n[j] - T(1);
  if (keep == nullptr) {
    for (int64_t j = 0; j < H; ++j) o[j] = n[j] + z[j] * (h[j] - n[j]);
    return;
  }
  for (int64_t j = 0; j < H; ++j) {
    T v = n[j] + z[j] * (h[j] - n[j]);
    keep[j] = (v >= lo && v <= hi) ? T(1) : T(0);
    o[j] = v < lo ? lo : (v > hi ? hi : v);
  }
}

// Backward, first half: g (in: dL/dh_t; out: its part z g for dL/dh_{t-1}), optional keep.
template <typename T>
void k_back_a(T* __restrict__ g, const T* __restrict__ keep, const T* __restrict__ z,
              const T* __restrict__ n, const T* __restrict__ hp, T* __restrict__ dz,
              T* __restrict__ dn, int64_t H) {
  if (keep != nullptr)
    for (int64_t j = 0; j < H; ++j) g[j] *= keep[j];
  for (int64_t j = 0; j < H; ++j) {
    T gj = g[j], zj = z[j], nj = n[j];
    dn[j] = gj * (T(1) - zj) * (T(1) - nj * nj);
    dz[j] = gj * (hp[j] - nj) * zj * (T(1) - zj);
    g[j] = gj * zj;
  }
}

// Backward, second half: d = dL/d(r h_{t-1}); writes dL/da_r and adds d r to g.
template <typename T>
void k_back_b(T* __restrict__ g, const T* __restrict__ r, const T* __restrict__ hp,
              const T* __restrict__ d, T* __restrict__ dr, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    T rj = r[j];
    dr[j] = d[j] * hp[j] * rj * (T(1) - rj);
    g[j] += d[j] * rj;
  }
}

double clip_at(int64_t t, double clip) { return (t == 0 || clip < 1.0) ? clip : 0.0; }

// The rows of a batch are independent in the recurrence: the time loop runs on one share of the
// batch per intra-op thread, each thread's small operations single-threaded (nested parallel
// regions run serially). That replaces a fork and join per operation by one per sequence.
template <typename F>
void chunked(int64_t B, const F& f) {
  const int64_t n = std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(1, B / 16));
  if (n <= 1 || at::in_parallel_region()) {
    f(0, B);
    return;
  }
  const int64_t per = (B + n - 1) / n;
  const at::ThreadLocalState state;  // grad and inference mode are per thread: the caller's
  at::parallel_for(0, n, 1, [&](int64_t lo, int64_t hi) {
    at::ThreadLocalStateGuard guard(state);
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t b0 = i * per, nb = std::min(per, B - b0);
      if (nb > 0) f(b0, nb);
    }
  });
}

// Buffers of a GRU run: full sequences when saved for the backward, else one reused step.
struct GruBuf {
  Tensor zr, n, rh, keep;
  bool full;
  GruBuf(const Tensor& like, int64_t S, int64_t T, int64_t B, int64_t H, double clip, bool save,
         bool with_rh = true)
      : full(save) {
    auto o = like.options();
    int64_t steps = save ? T : 1;
    zr = at::empty({S, steps, B, 2 * H}, o);
    n = at::empty({S, steps, B, H}, o);
    rh = at::empty({S, with_rh ? steps : 0, B, H}, o);
    int64_t kt = clip <= 0 ? 0 : (clip < 1.0 ? steps : 1);
    keep = at::empty({S, kt, B, H}, o);
  }
  int64_t at(int64_t t) const { return full ? t : 0; }
  Tensor zr_t(int64_t t) const { return zr.select(1, at(t)); }
  Tensor n_t(int64_t t) const { return n.select(1, at(t)); }
  Tensor rh_t(int64_t t) const { return rh.select(1, at(t)); }
  Tensor keep_t(int64_t t, double clip) const {
    return keep.select(1, clip < 1.0 ? at(t) : 0);
  }
  // Rows b0 .. b0 + nb of the batch.
  GruBuf rows(int64_t b0, int64_t nb) const {
    GruBuf r = *this;
    r.zr = zr.narrow(2, b0, nb); r.n = n.narrow(2, b0, nb); r.rh = rh.narrow(2, b0, nb);
    r.keep = keep.narrow(2, b0, nb);
    return r;
  }
};

// One forward step. x_zr/x_n: the projected inputs at t (any strides). X1 [S, B, in + H] holds
// [input | h] (in = 0: h alone), X2 [S, B, in + H] the same input (set by the caller) and
// receives r * h in its last H columns; W1 [S, in + H, 2H] and W2x2 [S, in + H, H] (doubled)
// are the input and recurrent weights stacked, so each gate is one matrix product. Writes the gates, the
// candidate, the clamp mask and the new state into h_out.
template <typename T>
void gru_fwd_step(const Tensor& x_zr, const Tensor& x_n, const Tensor& X1, const Tensor& X2,
                  const Tensor& W1, const Tensor& W2x2, const Tensor& h, double clip,
                  const GruBuf& buf, int64_t t, const Tensor& h_out) {
  const int64_t S = h.size(0), B = h.size(1), H = h.size(2), in = X2.size(2) - H;
  Tensor zr = buf.zr_t(t), n = buf.n_t(t);
  copy_rows<T>(zr, x_zr);
  gemm<T>(zr, X1, W1, 1.0);
  zr.sigmoid_();
  {
    auto Z = sl<T>(zr), Hs = sl<T>(h), R = sl<T>(X2);
    for_rows(S, B, H, [&](int64_t s, int64_t b) { k_mul(Z.row(s, b) + H, Hs.row(s, b), R.row(s, b) + in, H); });
  }
  copy_rows<T>(n, x_n, T(2));
  gemm<T>(n, X2, W2x2, 1.0);  // 2 a (W2x2 = 2 W2: doubling is exact)
  n.sigmoid_();                  // sigmoid(2 a): tanh a in k_state
  const double c = clip_at(t, clip);
  auto Z = sl<T>(zr), N = sl<T>(n), Hs = sl<T>(h), O = sl<T>(h_out);
  Sl<T> K = c > 0 ? sl<T>(buf.keep_t(t, clip)) : Sl<T>{nullptr, 0, 0};
  const T lo = static_cast<T>(-c), hi = static_cast<T>(c);
  for_rows(S, B, H, [&](int64_t s, int64_t b) {
    k_state(Z.row(s, b), N.row(s, b), Hs.row(s, b), O.row(s, b), c > 0 ? K.row(s, b) : nullptr,
            lo, hi, H);
  });
}

// dh += d1 (last H columns of D1); din = D1 + D2 (first `in` columns, written into D1).
template <typename T>
void k_split(T* __restrict__ g, T* __restrict__ d1, const T* __restrict__ d2, int64_t in,
             int64_t H) {
  for (int64_t j = 0; j < H; ++j) g[j] += d1[in + j];
  for (int64_t j = 0; j < in; ++j) d1[j] += d2[j];
}

// One backward step. dh [S, B, H] (contiguous) holds dL/dh_t on entry and dL/dh_{t-1} on exit;
// hp is h_{t-1}; writes dL/dx_zr and dL/dx_n of step t into dxzr / dxn. W1t, W2t are the
// transposed stacked weights of gru_fwd_step; D1, D2 [S, B, in + H] are scratch. Returns dL/d
// input [S, B, in], a view of D1 (undefined when in = 0).
template <typename T>
Tensor gru_bwd_step(const Tensor& dh, const GruBuf& buf, int64_t t, double clip, const Tensor& hp,
                    const Tensor& W1t, const Tensor& W2t, const Tensor& dxzr, const Tensor& dxn,
                    const Tensor& D1, const Tensor& D2) {
  const int64_t S = dh.size(0), B = dh.size(1), H = dh.size(2), in = W2t.size(2) - H;
  const double c = clip_at(t, clip);
  auto G = sl<T>(dh), Z = sl<T>(buf.zr_t(t)), N = sl<T>(buf.n_t(t)), P = sl<T>(hp);
  auto DZ = sl<T>(dxzr), DN = sl<T>(dxn);
  const bool masked = c > 0;
  Sl<T> K = masked ? sl<T>(buf.keep_t(t, clip)) : Sl<T>{nullptr, 0, 0};
  for_rows(S, B, H, [&](int64_t s, int64_t b) {
    k_back_a(G.row(s, b), masked ? K.row(s, b) : nullptr, Z.row(s, b), N.row(s, b), P.row(s, b),
             DZ.row(s, b), DN.row(s, b), H);
  });
  gemm<T>(D2, dxn, W2t);  // [d input | d (r h)]
  auto D = sl<T>(D2);
  for_rows(S, B, H, [&](int64_t s, int64_t b) {
    k_back_b(G.row(s, b), Z.row(s, b) + H, P.row(s, b), D.row(s, b) + in, DZ.row(s, b) + H, H);
  });
  if (in == 0) {
    gemm<T>(dh, dxzr, W1t, 1.0);
    return Tensor();
  }
  gemm<T>(D1, dxzr, W1t);  // [d input | d h]
  auto D1s = sl<T>(D1);
  for_rows(S, B, in + H, [&](int64_t s, int64_t b) {
    k_split(G.row(s, b), D1s.row(s, b), D.row(s, b), in, H);
  });
  return D1.narrow(2, 0, in);
}

// Transposed weights, contiguous (bmm with a transposed view takes a slower path here).
Tensor tr(const Tensor& w) { return w.transpose(1, 2).contiguous(); }

// Sum over steps and rows of outer products a^T b for [S, T', B, I] and [S, T', B, O].
Tensor sum_outer(const Tensor& a, const Tensor& b, const Tensor& into = Tensor()) {
  const int64_t S = a.size(0);
  Tensor a2 = a.reshape({S, -1, a.size(-1)}).transpose(1, 2), b2 = b.reshape({S, -1, b.size(-1)});
  const bool add = into.defined();
  Tensor out = add ? into : at::empty({S, a.size(-1), b.size(-1)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "sum_outer", [&] { gemm<scalar_t>(out, a2, b2, add ? 1.0 : 0.0); });
  return out;
}

// Gradient of the recurrent weights given all step input gradients (h_prev = [h0, hs[:-1]]).
std::vector<Tensor> recurrent_grads(const Tensor& h0, const Tensor& hs, const GruBuf& buf,
                                    const Tensor& dxzr, const Tensor& dxn) {
  const int64_t T = hs.size(1);
  Tensor dw_hzr = sum_outer(h0.unsqueeze(1), dxzr.narrow(1, 0, 1));
  if (T > 1) sum_outer(hs.narrow(1, 0, T - 1), dxzr.narrow(1, 1, T - 1), dw_hzr);
  return {dw_hzr, sum_outer(buf.rh, dxn)};
}

// ------------------------------------------------------------------------------------------
// GRU over a sequence (the encoder)
// ------------------------------------------------------------------------------------------

std::vector<Tensor> gru_seq_fwd(const Tensor& x_zr, const Tensor& x_n, const Tensor& h0,
                                const Tensor& w_hzr, const Tensor& w_hn, double clip, bool save) {
  at::NoGradGuard no_grad;  // gradients come from the backward ops (fused.py)
  const int64_t S = x_zr.size(0), T = x_zr.size(1), B = x_zr.size(2), H = h0.size(2);
  Tensor hs = at::empty({S, T, B, H}, h0.options());
  GruBuf buf(h0, S, T, B, H, clip, save);
  const Tensor w_hn2 = (w_hn * 2).contiguous();
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "gru_seq_fwd", [&] {
    chunked(B, [&](int64_t b0, int64_t nb) {
      auto R = [&](const Tensor& x) { return x.narrow(1, b0, nb); };
      GruBuf bb = buf.rows(b0, nb);
      Tensor h = R(h0).contiguous();
      for (int64_t t = 0; t < T; ++t) {
        Tensor out = R(hs.select(1, t));
        gru_fwd_step<scalar_t>(R(x_zr.select(1, t)), R(x_n.select(1, t)), h, bb.rh_t(t), w_hzr,
                               w_hn2, h, clip, bb, t, out);
        h = out;
      }
    });
  });
  return {hs, buf.zr, buf.n, buf.rh, buf.keep};
}

std::vector<Tensor> gru_seq_bwd(const Tensor& d_hs, const Tensor& hs, const Tensor& zr,
                                const Tensor& n, const Tensor& rh, const Tensor& keep,
                                const Tensor& h0, const Tensor& w_hzr, const Tensor& w_hn,
                                double clip) {
  at::NoGradGuard no_grad;  // gradients come from the backward ops (fused.py)
  const int64_t S = hs.size(0), T = hs.size(1), B = hs.size(2), H = hs.size(3);
  GruBuf buf(h0, 0, 0, 0, 0, 0.0, true);
  buf.zr = zr; buf.n = n; buf.rh = rh; buf.keep = keep;
  Tensor dxzr = at::empty({S, T, B, 2 * H}, hs.options());
  Tensor dxn = at::empty({S, T, B, H}, hs.options());
  Tensor dh0 = at::empty({S, B, H}, hs.options());
  Tensor w_hzr_t = tr(w_hzr), w_hn_t = tr(w_hn);
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "gru_seq_bwd", [&] {
    chunked(B, [&](int64_t b0, int64_t nb) {
      auto R = [&](const Tensor& x) { return x.narrow(1, b0, nb); };
      GruBuf bb = buf.rows(b0, nb);
      Tensor dh = at::zeros({S, nb, H}, hs.options());
      Tensor D1 = at::empty({S, nb, H}, hs.options()), D2 = at::empty({S, nb, H}, hs.options());
      for (int64_t t = T - 1; t >= 0; --t) {
        dh.add_(R(d_hs.select(1, t)));
        Tensor hp = t > 0 ? R(hs.select(1, t - 1)) : R(h0).contiguous();
        gru_bwd_step<scalar_t>(dh, bb, t, clip, hp, w_hzr_t, w_hn_t, R(dxzr.select(1, t)),
                               R(dxn.select(1, t)), D1, D2);
      }
      R(dh0).copy_(dh);
    });
  });
  auto dw = recurrent_grads(h0, hs, buf, dxzr, dxn);
  return {dxzr, dxn, dh0, dw[0], dw[1]};
}

// ------------------------------------------------------------------------------------------
// The decoder loop
// ------------------------------------------------------------------------------------------
// seq:  c_zr [S,T,B,2C], c_n [S,T,B,C], g_zr [S,T,B,2G], g_n [S,T,B,G]
// init: g0 [S,B,G], f0 [S,B,F], c0 [S,B,C]
// w:    w_fzr [S,F,2C], w_fn [S,F,C], wc_hzr [S,C,2C], wc_hn [S,C,C], w_co [S,C,2U],
//       b_co [S,1,2U], w_uzr [S,U,2G], w_un [S,U,G], wg_hzr [S,G,2G], wg_hn [S,G,G], w_f [S,G,F]
// eps [S,T,B,U] when sampling; fmask [S,T,B,F], gmask [S,T,B,G] when dropout is on.
// Returns fs, gs, us, means, stds, then what the backward needs: cs, gd, lv, the controller's
// stacked inputs xc1 = [fd | c_{t-1}], xc2 = [fd | r c_{t-1}] and zr, n, keep, the generator's
// xg1 = [u | g_{t-1}], xg2 = [u | r g_{t-1}] and zr, n, keep.

// df += dfs_t, kept in dF_t; dg += dgs_t + dgin (* mask).
template <typename T>
void k_df(T* __restrict__ df, const T* __restrict__ dfs, T* __restrict__ keep, int64_t F) {
  for (int64_t j = 0; j < F; ++j) {
    df[j] += dfs[j];
    keep[j] = df[j];
  }
}

template <typename T>
void k_dg(T* __restrict__ dg, const T* __restrict__ dgs, const T* __restrict__ dgin,
          const T* __restrict__ mask, int64_t G) {
  if (mask != nullptr) {
    for (int64_t j = 0; j < G; ++j) dg[j] += dgs[j] + dgin[j] * mask[j];
  } else {
    for (int64_t j = 0; j < G; ++j) dg[j] += dgs[j] + dgin[j];
  }
}

// [in | h] and [in | .] from the input row and the state row.
template <typename T>
void k_inputs(const T* __restrict__ x, const T* __restrict__ mask, const T* __restrict__ h,
              T* __restrict__ x1, T* __restrict__ x2, int64_t in, int64_t H) {
  if (mask != nullptr) {
    for (int64_t j = 0; j < in; ++j) x1[j] = x[j] * mask[j];
  } else {
    for (int64_t j = 0; j < in; ++j) x1[j] = x[j];
  }
  for (int64_t j = 0; j < in; ++j) x2[j] = x1[j];
  for (int64_t j = 0; j < H; ++j) x1[in + j] = h[j];
}

Tensor stacked(const Tensor& a, const Tensor& b) { return at::cat({a, b}, 1).contiguous(); }

std::vector<Tensor> decoder_fwd(at::TensorList seq, at::TensorList init, at::TensorList w,
                                const std::optional<Tensor>& eps,
                                const std::optional<Tensor>& fmask,
                                const std::optional<Tensor>& gmask, double var_min,
                                double clip_c, double clip_g, bool save) {
  at::NoGradGuard no_grad;  // gradients come from the backward ops (fused.py)
  const Tensor &c_zr = seq[0], &c_n = seq[1], &g_zr = seq[2], &g_n = seq[3];
  const Tensor &w_co = w[4], &b_co = w[5], &w_f = w[10];
  const Tensor W1c = stacked(w[0], w[2]), W2c = stacked(w[1], w[3]) * 2;  // doubled: 2 a
  const Tensor W1g = stacked(w[6], w[8]), W2g = stacked(w[7], w[9]) * 2;
  const int64_t S = c_zr.size(0), T = c_zr.size(1), B = c_zr.size(2);
  const int64_t C = init[2].size(2), G = init[0].size(2), F = init[1].size(2), U = w_co.size(2) / 2;
  auto o = init[0].options();
  Tensor fs = at::empty({S, T, B, F}, o), gs = at::empty({S, T, B, G}, o);
  Tensor us = at::empty({S, T, B, U}, o), means = at::empty({S, T, B, U}, o);
  Tensor stds = at::empty({S, T, B, U}, o), cs = at::empty({S, T, B, C}, o);
  const int64_t ts = save ? T : 1;
  Tensor lv = at::empty({S, ts, B, U}, o);
  Tensor gd = gmask.has_value() ? at::empty({S, ts, B, G}, o) : Tensor();
  Tensor xc1 = at::empty({S, ts, B, F + C}, o), xc2 = at::empty({S, ts, B, F + C}, o);
  Tensor xg1 = at::empty({S, ts, B, U + G}, o), xg2 = at::empty({S, ts, B, U + G}, o);
  GruBuf bc(init[0], S, T, B, C, clip_c, save, false), bg(init[0], S, T, B, G, clip_g, save, false);
  const bool sample = eps.has_value();
  AT_DISPATCH_FLOATING_TYPES(init[0].scalar_type(), "decoder_fwd", [&] {
    using T_ = scalar_t;
    const T_ vmin = static_cast<T_>(var_min);
    chunked(B, [&](int64_t b0, int64_t nb) {
      auto R = [&](const Tensor& x) { return x.narrow(1, b0, nb); };
      GruBuf rc = bc.rows(b0, nb), rg = bg.rows(b0, nb);
      Tensor f = R(init[1]).contiguous(), g = R(init[0]).contiguous(), c = R(init[2]).contiguous();
      Tensor mo = at::empty({S, nb, 2 * U}, o);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t st = save ? t : 0;
        // controller: inputs [f_{t-1} * mask | c_{t-1}]
        Tensor X1 = R(xc1.select(1, st)), X2 = R(xc2.select(1, st));
        {
          Tensor m_t = fmask.has_value() ? rowwise(R(fmask->select(1, t))) : Tensor();
          auto Fs = sl<T_>(f), Cs = sl<T_>(c), A = sl<T_>(X1), Bq = sl<T_>(X2);
          Sl<T_> M = fmask.has_value() ? sl<T_>(m_t) : Sl<T_>{nullptr, 0, 0};
          for_rows(S, nb, F + C, [&](int64_t s, int64_t b) {
            k_inputs(Fs.row(s, b), fmask.has_value() ? M.row(s, b) : nullptr, Cs.row(s, b),
                     A.row(s, b), Bq.row(s, b), F, C);
          });
        }
        Tensor c_out = R(cs.select(1, t));
        gru_fwd_step<T_>(R(c_zr.select(1, t)), R(c_n.select(1, t)), X1, X2, W1c, W2c, c, clip_c,
                         rc, t, c_out);
        c = c_out;
        copy_rows<T_>(mo, b_co.expand({S, nb, 2 * U}));
        gemm<T_>(mo, c, w_co, 1.0);  // [S, nb, 2U]
        Tensor mean_t = R(means.select(1, t)), std_t = R(stds.select(1, t)), u_t = R(us.select(1, t));
        Tensor lv_t = R(lv.select(1, st));
        {
          auto M = sl<T_>(mo), Me = sl<T_>(mean_t), Sd = sl<T_>(std_t), Us = sl<T_>(u_t), L = sl<T_>(lv_t);
          Tensor eps_t = sample ? rowwise(R(eps->select(1, t))) : Tensor();
          Sl<T_> E = sample ? sl<T_>(eps_t) : Sl<T_>{nullptr, 0, 0};
          for_rows(S, nb, U, [&](int64_t s, int64_t b) {
            const T_* m = M.row(s, b);
            T_ *me = Me.row(s, b), *sd = Sd.row(s, b), *u = Us.row(s, b), *l = L.row(s, b);
            const T_* e = sample ? E.row(s, b) : nullptr;
            for (int64_t j = 0; j < U; ++j) {
              T_ mean = m[j], logv = m[U + j];
              T_ sdev = std::sqrt(std::exp(logv) + vmin);
              me[j] = mean;
              l[j] = logv;
              sd[j] = sdev;
              u[j] = sample ? mean + sdev * e[j] : mean;
            }
          });
        }
        // generator: inputs [u_t | g_{t-1}]
        Tensor Y1 = R(xg1.select(1, st)), Y2 = R(xg2.select(1, st));
        {
          auto Us = sl<T_>(u_t), Gs = sl<T_>(g), A = sl<T_>(Y1), Bq = sl<T_>(Y2);
          for_rows(S, nb, U + G, [&](int64_t s, int64_t b) {
            k_inputs(Us.row(s, b), static_cast<const T_*>(nullptr), Gs.row(s, b), A.row(s, b),
                     Bq.row(s, b), U, G);
          });
        }
        Tensor g_out = R(gs.select(1, t));
        gru_fwd_step<T_>(R(g_zr.select(1, t)), R(g_n.select(1, t)), Y1, Y2, W1g, W2g, g, clip_g,
                         rg, t, g_out);
        g = g_out;
        Tensor gin = g;
        if (gmask.has_value()) {
          gin = R(gd.select(1, st));
          at::mul_out(gin, g, R(gmask->select(1, t)));
        }
        Tensor f_t = R(fs.select(1, t));
        gemm<T_>(f_t, gin, w_f);
        f = f_t;
      }
    });
  });
  // gd (the dropped-out generator states) is empty without a mask: gs then (a separate empty
  // tensor, since outputs 5.. are marked non-differentiable and gs must not be).
  return {fs, gs, us, means, stds, cs, gd.defined() ? gd : at::empty({0}, o), lv,
          xc1, xc2, bc.zr, bc.n, bc.keep, xg1, xg2, bg.zr, bg.n, bg.keep};
}

// grads: d fs, gs, us, means, stds. saved: the outputs of decoder_fwd (all 18).
// Returns d c_zr, c_n, g_zr, g_n, g0, f0, c0, then the 11 weight gradients in the order of w.
std::vector<Tensor> decoder_bwd(at::TensorList grads, at::TensorList saved, at::TensorList init,
                                at::TensorList w, const std::optional<Tensor>& eps,
                                const std::optional<Tensor>& fmask,
                                const std::optional<Tensor>& gmask, double var_min, double clip_c,
                                double clip_g) {
  at::NoGradGuard no_grad;  // gradients come from the backward ops (fused.py)
  const Tensor &dfs = grads[0], &dgs = grads[1], &dus = grads[2], &dmeans = grads[3],
               &dstds = grads[4];
  const Tensor &gs = saved[1], &us = saved[2], &stds = saved[4], &cs = saved[5], &lv = saved[7];
  const Tensor& gd = saved[6].numel() ? saved[6] : gs;
  const Tensor &xc1 = saved[8], &xc2 = saved[9], &xg1 = saved[13], &xg2 = saved[14];
  GruBuf bc(init[0], 0, 0, 0, 0, 0.0, true), bg(init[0], 0, 0, 0, 0, 0.0, true);
  bc.zr = saved[10]; bc.n = saved[11]; bc.keep = saved[12];
  bg.zr = saved[15]; bg.n = saved[16]; bg.keep = saved[17];
  const Tensor &g0 = init[0], &c0 = init[2];
  const int64_t S = gs.size(0), T = gs.size(1), B = gs.size(2), G = gs.size(3);
  const int64_t C = cs.size(3), F = xc1.size(3) - C, U = us.size(3);
  auto o = gs.options();
  bc.rh = at::empty({S, 0, B, C}, o);  // (unused: r c_{t-1} lives in xc2)
  bg.rh = at::empty({S, 0, B, G}, o);
  Tensor d_czr = at::empty({S, T, B, 2 * C}, o), d_cn = at::empty({S, T, B, C}, o);
  Tensor d_gzr = at::empty({S, T, B, 2 * G}, o), d_gn = at::empty({S, T, B, G}, o);
  Tensor dmo = at::empty({S, T, B, 2 * U}, o), dF = at::empty({S, T, B, F}, o);
  Tensor dg0 = at::empty({S, B, G}, o), dc0 = at::empty({S, B, C}, o), df0 = at::empty({S, B, F}, o);
  Tensor w_f_t = tr(w[10]), w_co_t = tr(w[4]);
  Tensor W1c_t = tr(stacked(w[0], w[2])), W2c_t = tr(stacked(w[1], w[3]));
  Tensor W1g_t = tr(stacked(w[6], w[8])), W2g_t = tr(stacked(w[7], w[9]));
  const bool sample = eps.has_value();
  AT_DISPATCH_FLOATING_TYPES(gs.scalar_type(), "decoder_bwd", [&] {
    using T_ = scalar_t;
    chunked(B, [&](int64_t b0, int64_t nb) {
      auto R = [&](const Tensor& x) { return x.narrow(1, b0, nb); };
      GruBuf rc = bc.rows(b0, nb), rg = bg.rows(b0, nb);
      Tensor dg = at::zeros({S, nb, G}, o), dc = at::zeros({S, nb, C}, o), df = at::zeros({S, nb, F}, o);
      Tensor dgin = at::empty({S, nb, G}, o);
      Tensor G1 = at::empty({S, nb, U + G}, o), G2 = at::empty({S, nb, U + G}, o);
      Tensor C1 = at::empty({S, nb, F + C}, o), C2 = at::empty({S, nb, F + C}, o);
      for (int64_t t = T - 1; t >= 0; --t) {
        {
          Tensor dfs_t = rowwise(R(dfs.select(1, t)));
          auto DF = sl<T_>(df), DFS = sl<T_>(dfs_t), KEEP = sl<T_>(R(dF.select(1, t)));
          for_rows(S, nb, F, [&](int64_t s, int64_t b) {
            k_df(DF.row(s, b), DFS.row(s, b), KEEP.row(s, b), F);
          });
        }
        gemm<T_>(dgin, df, w_f_t);
        {
          Tensor dgs_t = rowwise(R(dgs.select(1, t)));
          Tensor m_t = gmask.has_value() ? rowwise(R(gmask->select(1, t))) : Tensor();
          auto DG = sl<T_>(dg), DGS = sl<T_>(dgs_t), DGIN = sl<T_>(dgin);
          Sl<T_> M = gmask.has_value() ? sl<T_>(m_t) : Sl<T_>{nullptr, 0, 0};
          for_rows(S, nb, G, [&](int64_t s, int64_t b) {
            k_dg(DG.row(s, b), DGS.row(s, b), DGIN.row(s, b),
                 gmask.has_value() ? M.row(s, b) : static_cast<const T_*>(nullptr), G);
          });
        }
        Tensor gp = t > 0 ? R(gs.select(1, t - 1)) : R(g0).contiguous();
        Tensor dgzr_t = R(d_gzr.select(1, t)), dgn_t = R(d_gn.select(1, t));
        Tensor du = gru_bwd_step<T_>(dg, rg, t, clip_g, gp, W1g_t, W2g_t, dgzr_t, dgn_t, G1, G2);
        Tensor dmo_t = R(dmo.select(1, t));
        {
          Tensor dus_t = rowwise(R(dus.select(1, t)));
          auto DU = sl<T_>(du), DUS = sl<T_>(dus_t), DO = sl<T_>(dmo_t);
          Tensor dm_t = rowwise(R(dmeans.select(1, t))), ds_t = rowwise(R(dstds.select(1, t)));
          Tensor sd_t = R(stds.select(1, t)), lv_t = R(lv.select(1, t));
          Tensor eps_t = sample ? rowwise(R(eps->select(1, t))) : Tensor();
          auto DM = sl<T_>(dm_t), DS = sl<T_>(ds_t), SD = sl<T_>(sd_t), L = sl<T_>(lv_t);
          Sl<T_> E = sample ? sl<T_>(eps_t) : Sl<T_>{nullptr, 0, 0};
          for_rows(S, nb, U, [&](int64_t s, int64_t b) {
            const T_ *d0 = DU.row(s, b), *d1 = DUS.row(s, b), *dm = DM.row(s, b), *ds = DS.row(s, b);
            const T_ *sd = SD.row(s, b), *l = L.row(s, b);
            const T_* e = sample ? E.row(s, b) : nullptr;
            T_* out = DO.row(s, b);
            for (int64_t j = 0; j < U; ++j) {
              T_ d = d0[j] + d1[j];
              T_ dstd = ds[j] + (sample ? d * e[j] : T_(0));
              out[j] = dm[j] + d;
              out[U + j] = dstd * std::exp(l[j]) / (T_(2) * sd[j]);
            }
          });
        }
        gemm<T_>(dc, dmo_t, w_co_t, 1.0);
        Tensor cp = t > 0 ? R(cs.select(1, t - 1)) : R(c0).contiguous();
        Tensor dczr_t = R(d_czr.select(1, t)), dcn_t = R(d_cn.select(1, t));
        Tensor dfd = gru_bwd_step<T_>(dc, rc, t, clip_c, cp, W1c_t, W2c_t, dczr_t, dcn_t, C1, C2);
        if (fmask.has_value()) at::mul_out(df, dfd, R(fmask->select(1, t))); else df.copy_(dfd);
      }
      R(dg0).copy_(dg);
      R(dc0).copy_(dc);
      R(df0).copy_(df);
    });
  });
  // Weight gradients: one product over all steps per stacked weight, split into its parts.
  Tensor dW1c = sum_outer(xc1, d_czr), dW2c = sum_outer(xc2, d_cn);
  Tensor dW1g = sum_outer(xg1, d_gzr), dW2g = sum_outer(xg2, d_gn);
  Tensor db_co = dmo.sum({1, 2}).unsqueeze(1);
  return {d_czr, d_cn, d_gzr, d_gn, dg0, df0, dc0,
          dW1c.narrow(1, 0, F), dW2c.narrow(1, 0, F), dW1c.narrow(1, F, C), dW2c.narrow(1, F, C),
          sum_outer(cs, dmo), db_co,
          dW1g.narrow(1, 0, U), dW2g.narrow(1, 0, U), dW1g.narrow(1, U, G), dW2g.narrow(1, U, G),
          sum_outer(gd, dF)};
}

}  // namespace

TORCH_LIBRARY(lfads_cpu, m) {
  m.def("gru_seq_fwd(Tensor x_zr, Tensor x_n, Tensor h0, Tensor w_hzr, Tensor w_hn, float clip, "
        "bool save) -> Tensor[]");
  m.def("gru_seq_bwd(Tensor d_hs, Tensor hs, Tensor zr, Tensor n, Tensor rh, Tensor keep, "
        "Tensor h0, Tensor w_hzr, Tensor w_hn, float clip) -> Tensor[]");
  m.def("decoder_fwd(Tensor[] seq, Tensor[] init, Tensor[] w, Tensor? eps, Tensor? fmask, "
        "Tensor? gmask, float var_min, float clip_c, float clip_g, bool save) -> Tensor[]");
  m.def("decoder_bwd(Tensor[] grads, Tensor[] saved, Tensor[] init, Tensor[] w, Tensor? eps, "
        "Tensor? fmask, Tensor? gmask, float var_min, float clip_c, float clip_g) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(lfads_cpu, CPU, m) {
  m.impl("gru_seq_fwd", &gru_seq_fwd);
  m.impl("gru_seq_bwd", &gru_seq_bwd);
  m.impl("decoder_fwd", &decoder_fwd);
  m.impl("decoder_bwd", &decoder_bwd);
}
