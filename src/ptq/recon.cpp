// Block-wise reconstruction (BRECQ style) with learned rounding (AdaRound's rectified sigmoid,
// generalised to non-uniform levels): per block of the graph (the nodes up to and including each
// add, and the rest), every quantised weight chooses between its two nearest levels of the
// layer's level set, softly while training and then hard, together with the activation alphas,
// so that the block's output on the calibration images matches the full-precision model's.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <sstream>

#include "apot/ptq/ptq.h"

namespace apot::ptq {
namespace {

using torch::indexing::Slice;

constexpr double kZeta = 1.1, kGamma = -0.1;  // the rectified sigmoid's stretch (AdaRound)
constexpr double kRegularisation = 0.01;      // lambda of the rounding regulariser
constexpr double kBetaStart = 20, kBetaEnd = 2;
constexpr double kWarmup = 0.2;  // fraction of iterations without the regulariser

torch::Tensor rectified_sigmoid(const torch::Tensor& v) {
  return (torch::sigmoid(v) * (kZeta - kGamma) + kGamma).clamp(0, 1);
}

// One weight layer's rounding: weight = alpha * (lower + h(v) * step), h(v) in [0, 1].
struct Rounding {
  torch::Tensor* weight = nullptr;
  torch::Tensor* override_ = nullptr;
  torch::Tensor alpha, lower, step, v;

  torch::Tensor soft() const { return alpha * (lower + rectified_sigmoid(v) * step); }
  torch::Tensor hard() const { return alpha * (lower + (rectified_sigmoid(v) >= 0.5).to(torch::kFloat32) * step); }
};

template <typename Layer>
std::optional<Rounding> rounding_of(Layer& layer) {
  const qat::QuantOptions& q = layer.quant_options();
  if (!q.quantizes_weight() || q.int8_weights) return std::nullopt;
  torch::NoGradGuard no_grad;
  const levels::LevelSet set = levels::LevelSet::make(q.kind, q.weight_bits, levels::Role::weight);
  const std::vector<float> values = set.levels();
  const torch::Tensor levels = torch::tensor(values);
  Rounding r;
  r.weight = &layer.weight;
  r.override_ = &layer.weight_override;
  std::vector<int64_t> shape(size_t(layer.weight.dim()), 1);
  shape[0] = layer.weight_alpha.numel() > 1 ? layer.weight_alpha.numel() : 1;
  r.alpha = layer.weight_alpha.detach().reshape(shape).clone();
  const torch::Tensor u = (layer.weight.detach() / r.alpha).clamp(-1, 1);
  const torch::Tensor lower_index =
      (torch::bucketize(u, levels, /*out_int32=*/false, /*right=*/true) - 1).clamp(0, int64_t(values.size()) - 2);
  r.lower = levels.index_select(0, lower_index.flatten()).reshape(u.sizes());
  r.step = levels.index_select(0, (lower_index + 1).flatten()).reshape(u.sizes()) - r.lower;
  const torch::Tensor fraction = ((u - r.lower) / r.step).clamp(0, 1);
  r.v = (-torch::log((kZeta - kGamma) / (fraction - kGamma) - 1)).set_requires_grad(true);
  return r;
}

}  // namespace

std::vector<std::pair<int, int>> reconstruction_blocks(const graph::Graph& g) {
  std::vector<std::pair<int, int>> blocks;
  int start = 1;
  for (int i = 1; i < int(g.size()); ++i)
    if (g[size_t(i)].op == graph::Op::add) blocks.emplace_back(start, i), start = i + 1;
  if (start < int(g.size())) blocks.emplace_back(start, int(g.size()) - 1);
  return blocks;
}

void reconstruct(qat::NetworkImpl& model, qat::NetworkImpl& reference, const torch::Tensor& images, const Options& o,
                 const std::function<void(int, int, const std::string&)>& progress) {
  const graph::Graph& g = model.graph();
  const auto blocks = reconstruction_blocks(g);
  model.eval();
  reference.eval();
  int number = 0;
  for (const auto& [first, last] : blocks) {
    ++number;
    std::vector<Rounding> roundings;
    std::vector<torch::Tensor> alphas;
    std::vector<double*> drops;  // the layers' input_drop, set while the block is learned
    for (int i = first; i <= last; ++i) {
      const graph::Node& node = g[size_t(i)];
      if (!node.quant.quantized()) continue;
      std::optional<Rounding> r;
      if (auto* conv = model.conv(node.name)) {
        r = rounding_of(*conv);
        if (conv->quant_options().quantizes_input()) alphas.push_back(conv->act_alpha);
        drops.push_back(&conv->input_drop);
      } else if (auto* linear = model.linear(node.name)) {
        r = rounding_of(*linear);
        if (linear->quant_options().quantizes_input()) alphas.push_back(linear->act_alpha);
        drops.push_back(&linear->input_drop);
      }
      if (r) roundings.push_back(std::move(*r));
    }
    if (roundings.empty()) continue;
    const auto start = std::chrono::steady_clock::now();
    // What the block reads from before it (through the quantised model so far), and what the
    // full-precision model's block gives.
    std::vector<int> reads;
    for (int i = first; i <= last; ++i)
      for (int input : g[size_t(i)].inputs)
        if (input < first && std::find(reads.begin(), reads.end(), input) == reads.end()) reads.push_back(input);
    std::vector<std::vector<torch::Tensor>> inputs(reads.size());
    std::vector<torch::Tensor> targets;
    {
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> q, f;
      for (int64_t s = 0; s < images.size(0); s += o.batch) {
        const torch::Tensor x = images.index({Slice(s, std::min<int64_t>(images.size(0), s + o.batch))});
        model.forward_all(x, q);
        reference.forward_all(x, f);
        q[0] = x;
        for (size_t k = 0; k < reads.size(); ++k) inputs[k].push_back(q[size_t(reads[k])]);
        targets.push_back(f[size_t(last)]);
      }
    }
    std::vector<torch::Tensor> input_all;
    for (auto& parts : inputs) input_all.push_back(torch::cat(parts));
    const torch::Tensor target_all = torch::cat(targets);

    std::vector<torch::Tensor> vs;
    for (const Rounding& r : roundings) vs.push_back(r.v);
    torch::optim::Adam rounding_optimizer(vs, torch::optim::AdamOptions(o.round_lr));
    std::unique_ptr<torch::optim::Adam> alpha_optimizer;
    if (!alphas.empty())
      alpha_optimizer = std::make_unique<torch::optim::Adam>(alphas, torch::optim::AdamOptions(o.alpha_lr));
    torch::manual_seed(o.seed * 1000003 + uint64_t(number));
    double first_loss = 0, last_loss = 0;
    std::vector<torch::Tensor> values(g.size());
    for (double* d : drops) *d = o.drop;
    for (int it = 0; it < o.iters; ++it) {
      const torch::Tensor pick =
          torch::randint(images.size(0), {std::min<int64_t>(o.recon_batch, images.size(0))}, torch::kLong);
      for (size_t k = 0; k < reads.size(); ++k) values[size_t(reads[k])] = input_all[k].index_select(0, pick);
      for (const Rounding& r : roundings) *r.override_ = r.soft();
      model.run_nodes(values, first, last);
      torch::Tensor out = values[size_t(last)], target = target_all.index_select(0, pick);
      if (out.dim() != target.dim()) out = out.reshape(target.sizes());
      const torch::Tensor error = (out - target).square().flatten(1).sum(1).mean();
      torch::Tensor loss = error;
      const double progress = double(it) / o.iters;
      if (progress >= kWarmup) {
        const double beta = kBetaEnd + (kBetaStart - kBetaEnd) * (1 - (progress - kWarmup) / (1 - kWarmup));
        for (const Rounding& r : roundings)
          loss = loss + kRegularisation * (1 - (2 * rectified_sigmoid(r.v) - 1).abs().pow(beta)).sum();
      }
      rounding_optimizer.zero_grad();
      if (alpha_optimizer) alpha_optimizer->zero_grad();
      loss.backward();
      rounding_optimizer.step();
      if (alpha_optimizer) {
        alpha_optimizer->step();
        torch::NoGradGuard no_grad;
        for (auto& a : alphas) a.clamp_min_(1e-3);
      }
      const double e = error.item<double>();
      if (it == 0) first_loss = e;
      last_loss = e;
    }
    {
      torch::NoGradGuard no_grad;
      for (Rounding& r : roundings) {
        r.weight->copy_(r.hard().reshape(r.weight->sizes()));
        *r.override_ = torch::Tensor();
      }
      for (double* d : drops) *d = 0;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::ostringstream line;
    line.setf(std::ios::fixed);
    line.precision(4);
    line << "block " << g[size_t(first)].name << ".." << g[size_t(last)].name << ": output error " << first_loss
         << " -> " << last_loss;
    line.precision(1);
    line << " (" << seconds << " s)";
    if (progress) progress(number, int(blocks.size()), line.str());
  }
}

}  // namespace apot::ptq
