// One GRU layer-direction on CPU, forward and backward through time, with nn.GRU's math:
//   r = sigmoid(xr + hr),  z = sigmoid(xz + hz),  n = tanh(xn + r * hn),  h' = n + z * (h - n)
// where x = input @ W_ih^T + b_ih (computed for all steps at once by the caller, autograd
// included) and h = h_prev @ W_hh^T + b_hh. PyTorch's own CPU GRU records ~15 autograd ops
// per time step; here a step is one GEMM plus one loop over the gates, and the backward
// pass is one GEMM plus one loop per step, with the weight gradients as two large GEMMs
// after the loop.
#include <c10/util/ParallelGuard.h>
#include <torch/extension.h>

#include <cmath>
#include <vector>

// GCC 12+ on x86-64 builds the gate loops for AVX-512, AVX2 and any x86-64, and picks the
// best the CPU has at load time (AVX-512 runs them 3.5x faster than the SSE baseline).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__)
#define GATE_LOOP \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GATE_LOOP
#endif

namespace {

// Runs f over all batch rows on the calling thread, with ATen's parallel loops inside it kept
// inline (c10::ParallelGuard), as at::parallel_for does in a build without OpenMP, which this
// extension is: a time step opens no parallel region of its own, so no barrier that a thread
// descheduled by another process would hold up. (Rows are independent through time, so f
// could take blocks of rows on several threads; that needs OpenMP and ATen's thread-local
// state carried into the workers, and has not been measured.)
template <typename F>
void run_serially(int64_t rows, const F& f) {
  const c10::ParallelGuard serial(true);
  f(0, rows);
}

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// The gate loops of one batch row, kept apart from ATen calls (which can throw) so that GCC
// vectorises them; with -ffast-math on Linux it calls glibc's vector exp/tanh (libmvec).
template <typename T>
GATE_LOOP void gates_forward(
    int64_t H, const T* __restrict x, const T* __restrict g, const T* __restrict h,
    T* __restrict out, T* __restrict acts) {
  for (int64_t j = 0; j < H; ++j) {
    const T r = sigmoid(x[j] + g[j]);
    const T z = sigmoid(x[H + j] + g[H + j]);
    const T n = std::tanh(x[2 * H + j] + r * g[2 * H + j]);
    out[j] = n + z * (h[j] - n);
    acts[j] = r;
    acts[H + j] = z;
    acts[2 * H + j] = n;
    acts[3 * H + j] = g[2 * H + j];
  }
}

// grad_h = dh + grad_out (the gradient reaching this step's output); writes the gradients of
// the step's input projection (gx) and of its recurrent projection (gg), and grad_h * z.
template <typename T>
GATE_LOOP void gates_backward(
    int64_t H, const T* __restrict h, const T* __restrict acts, const T* __restrict grad_out,
    const T* __restrict dh, T* __restrict dh_direct, T* __restrict gx, T* __restrict gg) {
  for (int64_t j = 0; j < H; ++j) {
    const T grad_h = dh[j] + grad_out[j];
    const T r = acts[j], z = acts[H + j], n = acts[2 * H + j], hn = acts[3 * H + j];
    const T dn = grad_h * (T(1) - z) * (T(1) - n * n);
    const T dz = grad_h * (h[j] - n) * z * (T(1) - z);
    const T dr = dn * hn * r * (T(1) - r);
    gx[j] = dr;
    gx[H + j] = dz;
    gx[2 * H + j] = dn;
    gg[j] = dr;
    gg[H + j] = dz;
    gg[2 * H + j] = dn * r;
    dh_direct[j] = grad_h * z;
  }
}

// Forward. x_proj: [T, B, 3H] (last dim contiguous, any outer strides), h0: [B, H],
// w_hh: [3H, H], b_hh: [3H]. Returns out [T, B, H] (the hidden state after each step, in
// time order) and, when `save` is set, the activations backward needs: [T, B, 4H] holding
// r, z, n and hn per step.
std::vector<at::Tensor> forward(const at::Tensor& x_proj, const at::Tensor& h0,
                                const at::Tensor& w_hh, const at::Tensor& b_hh, bool reverse,
                                bool save) {
  TORCH_CHECK(x_proj.dim() == 3 && x_proj.stride(2) == 1, "x_proj must be [T, B, 3H], rows contiguous");
  const int64_t steps = x_proj.size(0), batch = x_proj.size(1), hidden = h0.size(1);
  TORCH_CHECK(x_proj.size(2) == 3 * hidden && h0.size(0) == batch, "GRU shapes do not match");
  auto h_init = h0.contiguous();
  auto out = at::empty({steps, batch, hidden}, h0.options());
  auto acts = at::empty({save ? steps : 1, batch, 4 * hidden}, h0.options());
  const auto w_t = w_hh.t();
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "gru_cpu_forward", [&] {
    const int64_t sxt = x_proj.stride(0), sxb = x_proj.stride(1), H = hidden;
    run_serially(batch, [&](int64_t begin, int64_t end) {
      const int64_t rows = end - begin;
      auto gh = at::empty({rows, 3 * hidden}, h0.options());
      at::Tensor h = h_init.slice(0, begin, end);
      for (int64_t s = 0; s < steps; ++s) {
        const int64_t t = reverse ? steps - 1 - s : s;
        at::addmm_out(gh, b_hh, h, w_t);
        const scalar_t* xs = x_proj.data_ptr<scalar_t>() + t * sxt + begin * sxb;
        const scalar_t* gs = gh.data_ptr<scalar_t>();
        const scalar_t* hs = h.data_ptr<scalar_t>();
        scalar_t* os = out.data_ptr<scalar_t>() + (t * batch + begin) * H;
        // Without `save`, acts is one step of scratch rows.
        scalar_t* as = acts.data_ptr<scalar_t>() + ((save ? t * batch : 0) + begin) * 4 * H;
        for (int64_t b = 0; b < rows; ++b) {
          gates_forward(H, xs + b * sxb, gs + b * 3 * H, hs + b * H, os + b * H, as + b * 4 * H);
        }
        h = out.select(0, t).slice(0, begin, end);
      }
    });
  });
  return {out, acts};
}

// Backward. grad_out: [T, B, H], the gradient reaching each step's output (the final state
// is the last step's output). Returns the gradients of x_proj, h0, w_hh and b_hh.
std::vector<at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& acts,
                                 const at::Tensor& h0, const at::Tensor& w_hh, bool reverse) {
  const int64_t steps = out.size(0), batch = out.size(1), hidden = out.size(2);
  auto grad_x = at::empty({steps, batch, 3 * hidden}, out.options());
  auto grad_gh = at::empty({steps, batch, 3 * hidden}, out.options());
  auto dh = at::zeros({batch, hidden}, out.options());
  auto dh_direct = at::empty({batch, hidden}, out.options());
  const auto h_init = h0.contiguous();
  const auto go = grad_out.contiguous();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "gru_cpu_backward", [&] {
    const int64_t H = hidden;
    run_serially(batch, [&](int64_t begin, int64_t end) {
      const int64_t rows = end - begin;
      at::Tensor dh_rows = dh.slice(0, begin, end);
      const at::Tensor dd_rows = dh_direct.slice(0, begin, end);
      for (int64_t s = steps - 1; s >= 0; --s) {
        const int64_t t = reverse ? steps - 1 - s : s;
        const int64_t t_prev = reverse ? t + 1 : t - 1;
        const int64_t row0 = t * batch + begin;
        const scalar_t* hs = s == 0 ? h_init.data_ptr<scalar_t>() + begin * H
                                    : out.data_ptr<scalar_t>() + (t_prev * batch + begin) * H;
        const scalar_t* as = acts.data_ptr<scalar_t>() + row0 * 4 * H;
        const scalar_t* gos = go.data_ptr<scalar_t>() + row0 * H;
        scalar_t* dhs = dh_rows.data_ptr<scalar_t>();
        scalar_t* dds = dh_direct.data_ptr<scalar_t>() + begin * H;
        scalar_t* gxs = grad_x.data_ptr<scalar_t>() + row0 * 3 * H;
        scalar_t* ggs = grad_gh.data_ptr<scalar_t>() + row0 * 3 * H;
        for (int64_t b = 0; b < rows; ++b) {
          gates_backward(H, hs + b * H, as + b * 4 * H, gos + b * H, dhs + b * H, dds + b * H,
                         gxs + b * 3 * H, ggs + b * 3 * H);
        }
        // dh_prev = grad_h * z + grad_gh[t] @ W_hh
        at::addmm_out(dh_rows, dd_rows, grad_gh.select(0, t).slice(0, begin, end), w_hh);
      }
    });
  });
  // Each step's input state, in the same time order as out.
  const auto first = h_init.unsqueeze(0);
  const auto h_prev = steps == 1 ? first
                      : reverse ? at::cat({out.slice(0, 1), first})
                                : at::cat({first, out.slice(0, 0, steps - 1)});
  const auto gh_flat = grad_gh.view({steps * batch, 3 * hidden});
  auto grad_w_hh = gh_flat.t().mm(h_prev.reshape({steps * batch, hidden}));
  auto grad_b_hh = gh_flat.sum(0);
  return {grad_x, dh, grad_w_hh, grad_b_hh};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "GRU layer forward through time (CPU)");
  m.def("backward", &backward, "GRU layer backward through time (CPU)");
}
