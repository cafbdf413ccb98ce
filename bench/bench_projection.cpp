// Forward + backward of the RCF quantisers, side by side in one run (interleaved, medians):
//   apot      the fused kernels of src/kernels
//   reference the reference algorithm written with LibTorch ops as the reference code does it
//             (distance matrix [levels x elements] + argmin)
//   clone     a plain copy of the same tensor (the memory-bandwidth floor)
// then the forms a training step runs (float32 or bfloat16 outputs and gradients, preallocated),
// beside copies of the same sizes.
// Usage: bench_projection [--reps N] [--threads T] [--isa scalar|avx2|avx512]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "apot/kernels/projection.h"
#include "apot/kernels/statistics.h"

using apot::kernels::Isa;
using apot::kernels::Projector;
using apot::kernels::SteVariant;
using apot::levels::Kind;
using apot::levels::LevelSet;
using apot::levels::Role;

namespace {

struct Case {
  std::string name;
  std::function<void()> run;
  std::vector<double> ms;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void run_interleaved(std::vector<Case>& cases, int reps) {
  for (Case& c : cases) c.run();  // warm-up
  for (int r = 0; r < reps; ++r) {
    for (Case& c : cases) {
      const auto t0 = std::chrono::steady_clock::now();
      c.run();
      const auto t1 = std::chrono::steady_clock::now();
      c.ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  }
}

torch::Tensor grid_tensor(const LevelSet& set) {
  return torch::tensor(set.magnitudes());  // the reference's grid: non-negative magnitudes
}

// The reference's power_quant: the full distance matrix, then argmin over levels.
torch::Tensor reference_project(const torch::Tensor& x, const torch::Tensor& grid) {
  const torch::Tensor flat = x.reshape(-1);
  const torch::Tensor index = std::get<1>((flat.unsqueeze(0) - grid.unsqueeze(1)).abs().min(0));
  return grid.index_select(0, index).view(x.sizes());
}

void report(const char* title, std::vector<Case>& cases) {
  const double ours = median(cases[0].ms), reference = median(cases[1].ms), clone = median(cases[2].ms);
  std::printf("%s\n", title);
  for (const Case& c : cases) std::printf("  %-34s median %9.3f ms\n", c.name.c_str(), median(c.ms));
  std::printf("  speed-up over reference: %.1fx   time relative to clone: %.2fx\n", reference / ours, ours / clone);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 15, threads = 2;
  Isa isa = apot::kernels::default_isa();
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--reps")) reps = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--isa")) isa = apot::kernels::parse_isa(argv[i + 1]);
  }
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  std::printf("bench_projection: %d threads, ISA %s, %d interleaved repetitions\n", threads,
              apot::kernels::to_string(isa), reps);

  {  // 4-bit APoT activation quantiser on [128, 16, 32, 32]
    const LevelSet set = LevelSet::make(Kind::apot, 4, Role::activation);
    const Projector projector(set);
    const torch::Tensor grid = grid_tensor(set);
    const float alpha = 8.0f;
    const torch::Tensor input = torch::randn({128, 16, 32, 32}).abs_().mul_(4.0f);
    const torch::Tensor grad = torch::randn_like(input);
    const torch::Tensor alpha_t = torch::tensor(alpha);
    double sink = 0.0;
    std::vector<Case> cases{
        {"apot fused forward+backward",
         [&] {
           torch::Tensor out = torch::empty_like(input), grad_in = torch::empty_like(input);
           projector.forward(input.data_ptr<float>(), input.numel(), alpha, out.data_ptr<float>(), isa);
           sink += projector.backward(input.data_ptr<float>(), grad.data_ptr<float>(), input.numel(), alpha,
                                      SteVariant::cifar, grad_in.data_ptr<float>(), isa);
         },
         {}},
        {"reference (distance matrix+argmin)",
         [&] {
           const torch::Tensor x = input.div(alpha_t);
           const torch::Tensor q = reference_project(x.clamp_max(1), grid);
           const torch::Tensor out = q.mul(alpha_t);
           const torch::Tensor above = (x > 1.0).to(torch::kFloat);
           const torch::Tensor grad_alpha = (grad * (above + (q - x) * (1 - above))).sum();
           const torch::Tensor grad_in = grad * (1 - above);
           sink += grad_alpha.item<float>() + out.numel() + grad_in.numel();
         },
         {}},
        {"clone", [&] { sink += input.clone().numel(); }, {}},
    };
    run_interleaved(cases, reps);
    report("4-bit APoT activation quantiser, [128,16,32,32] float32 (8 MiB)", cases);
    if (sink == 42.0) std::printf(" ");
  }

  {  // The training step's forms on preallocated tensors, against the memory passes of the same size
    const LevelSet set = LevelSet::make(Kind::apot, 4, Role::activation);
    const Projector projector(set);
    const float alpha = 3.0f;
    const torch::Tensor input = torch::randn({128, 16, 32, 32}).mul_(2.0f);
    const torch::Tensor grad = torch::randn_like(input), grad16 = grad.to(torch::kBFloat16);
    torch::Tensor out = torch::empty_like(input), out16 = torch::empty_like(grad16), grad_in = torch::empty_like(input);
    const auto n = static_cast<size_t>(input.numel());
    auto* out16_bits = reinterpret_cast<uint16_t*>(out16.data_ptr<at::BFloat16>());
    const auto* grad16_bits = reinterpret_cast<const uint16_t*>(grad16.data_ptr<at::BFloat16>());
    double sink = 0.0;
    std::vector<Case> cases{
        {"forward, float32 out",
         [&] { projector.forward(input.data_ptr<float>(), n, alpha, out.data_ptr<float>(), isa); },
         {}},
        {"forward, bfloat16 out",
         [&] { projector.forward_bf16(input.data_ptr<float>(), n, alpha, out16_bits, isa); },
         {}},
        {"backward, float32 gradient",
         [&] {
           sink += projector.backward(input.data_ptr<float>(), grad.data_ptr<float>(), n, alpha, SteVariant::cifar,
                                      grad_in.data_ptr<float>(), isa);
         },
         {}},
        {"backward, bfloat16 gradient",
         [&] {
           sink += projector.backward_bf16(input.data_ptr<float>(), grad16_bits, n, alpha, SteVariant::cifar,
                                           grad_in.data_ptr<float>(), isa);
         },
         {}},
        {"copy float32 -> float32", [&] { out.copy_(input); }, {}},
        {"copy float32 -> bfloat16", [&] { out16.copy_(input); }, {}},
        {"copy bfloat16 -> float32", [&] { grad_in.copy_(grad16); }, {}},
        {"ReLU (LibTorch, into a tensor)", [&] { torch::relu_out(out, input); }, {}},
    };
    run_interleaved(cases, reps * 4);
    std::printf("4-bit APoT activation quantiser, [128,16,32,32], preallocated outputs (the training step's forms)\n");
    for (const Case& c : cases) std::printf("  %-34s median %9.3f ms\n", c.name.c_str(), median(c.ms));
    if (sink == 42.0) std::printf(" ");
  }

  {  // 4-bit APoT weight quantiser with weight normalisation on [64, 64, 3, 3]
    const LevelSet set = LevelSet::make(Kind::apot, 4, Role::weight);
    const Projector projector(set);
    const torch::Tensor grid = grid_tensor(set);
    const float alpha = 3.0f;
    const torch::Tensor weight = torch::randn({64, 64, 3, 3}).mul_(0.05f);
    const torch::Tensor grad = torch::randn_like(weight);
    const torch::Tensor alpha_t = torch::tensor(alpha);
    double sink = 0.0;
    std::vector<Case> cases{
        {"apot fused normalise+fwd+bwd",
         [&] {
           const auto stats = apot::kernels::mean_std(weight.data_ptr<float>(), weight.numel());
           const apot::kernels::Normalisation norm{float(stats.mean), float(stats.std)};
           torch::Tensor out = torch::empty_like(weight), grad_in = torch::empty_like(weight);
           projector.forward(weight.data_ptr<float>(), weight.numel(), alpha, out.data_ptr<float>(), isa, norm);
           sink += projector.backward(weight.data_ptr<float>(), grad.data_ptr<float>(), weight.numel(), alpha,
                                      SteVariant::cifar, grad_in.data_ptr<float>(), isa, norm);
         },
         {}},
        {"reference (distance matrix+argmin)",
         [&] {
           const torch::Tensor mean = weight.mean(), std = weight.std();
           const torch::Tensor x = weight.sub(mean).div(std).div(alpha_t);
           const torch::Tensor c = x.clamp(-1, 1);
           const torch::Tensor sign = c.sign();
           const torch::Tensor q = reference_project(c.abs(), grid).mul(sign);
           const torch::Tensor out = q.mul(alpha_t);
           const torch::Tensor outside = (x.abs() > 1.0).to(torch::kFloat);
           const torch::Tensor grad_alpha = (grad * (x.sign() * outside + (q - x) * (1 - outside))).sum();
           const torch::Tensor grad_in = grad.div(std);
           sink += grad_alpha.item<float>() + out.numel() + grad_in.numel();
         },
         {}},
        {"clone", [&] { sink += weight.clone().numel(); }, {}},
    };
    run_interleaved(cases, reps * 20);
    report("4-bit APoT weight quantiser + weight normalisation, [64,64,3,3] float32", cases);
    if (sink == 42.0) std::printf(" ");
  }
  return 0;
}
