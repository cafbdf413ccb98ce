// The LibTorch model of any graph: one module that registers each weight layer (QuantConv2d,
// QuantLinear) and batch norm under its node's name ("layer1.0.conv1" as the submodule path
// layer1 / 0 / conv1, so state dicts keep their usual names) and whose forward walks the nodes
// in order. One model serves full precision and every quantisation policy.
#pragma once

#include <torch/torch.h>

#include "apot/graph/architectures.h"
#include "apot/graph/graph.h"
#include "apot/qat/modules.h"
#include "apot/qat/sync_batch_norm.h"

namespace apot::qat {

class NetworkImpl : public torch::nn::Module {
 public:
  // The graph's LayerQuant decides each layer's quantisation (with `training` for the rest of
  // QuantOptions); shapes need not be inferred.
  explicit NetworkImpl(graph::Graph graph, const QuantPolicy& training = QuantPolicy::full_precision());

  torch::Tensor forward(const torch::Tensor& x);
  // forward(), keeping every node's output (outputs[i] for node i; undefined for the input).
  torch::Tensor forward_all(const torch::Tensor& x, std::vector<torch::Tensor>& outputs);
  // The value that node `layer` reads first (its input), running only the nodes before it.
  torch::Tensor input_of(const torch::Tensor& x, const std::string& layer);
  // Computes values[first..last] from the values of the nodes they read (a part of the network,
  // e.g. one block for post-training reconstruction). values has one entry per node.
  void run_nodes(std::vector<torch::Tensor>& values, int first, int last);

  const graph::Graph& graph() const { return graph_; }
  // Re-assigns the quantisation of every layer (graph and modules); weights are kept, alphas
  // re-initialised only where their shape changes.
  void set_policy(const QuantPolicy& policy);
  const QuantPolicy& policy() const { return policy_; }

  // The modules of node `name` (nullptr if it has none of that type).
  QuantConv2dImpl* conv(const std::string& name) const;
  QuantLinearImpl* linear(const std::string& name) const;
  // The batch norm after a weight layer: BatchNorm2d for conv, BatchNorm1d for linear nodes.
  torch::nn::Module* batch_norm(const std::string& name) const;

  // Data parallel: in training mode, every batch norm normalises with the statistics of all
  // replicas, reached through `sum` (sync_batch_norm); an empty function restores local
  // statistics.
  void set_batch_norm_sum(ReplicaSum sum) { batch_norm_sum_ = std::move(sum); }
  // The arithmetic of every convolution in training mode (QuantConv2dImpl::precision).
  void set_conv_precision(ConvPrecision precision);
  // Node i ends in a ReLU that every node reading it can apply in its input quantiser
  // (QuantConv2dImpl::forward_rectified); forward() then does, forward_all() never.
  bool relu_fuses_into_readers(size_t i) const;

  // A deep copy: the same graph, policy, parameters and buffers.
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override;

 private:
  void build();
  // The value of node i from the values of the nodes it reads; rectify_input: its input is a
  // ReLU's before the ReLU (the layer's quantiser applies it); activation false: node i's own
  // activation is left to its readers.
  torch::Tensor compute_node(size_t i, const std::vector<torch::Tensor>& values, bool rectify_input = false,
                             bool activation = true);

  // The batch norm `bn` on x: local statistics, or all replicas' (set_batch_norm_sum).
  template <typename BatchNorm>
  torch::Tensor apply_batch_norm(BatchNorm& bn, const torch::Tensor& x) const;
  // Runs nodes 1..last (all for -1); keeps every value in *keep if given.
  torch::Tensor run(const torch::Tensor& x, std::vector<torch::Tensor>* keep, int last = -1);
  // Registers `module` under a dotted path, creating the containers on the way.
  void register_path(const std::string& path, std::shared_ptr<torch::nn::Module> module);

  graph::Graph graph_;
  QuantPolicy policy_;
  // Per node (null where it has none).
  std::vector<std::shared_ptr<QuantConv2dImpl>> conv_;
  std::vector<std::shared_ptr<QuantLinearImpl>> linear_;
  std::vector<std::shared_ptr<torch::nn::BatchNorm2dImpl>> bn2d_;
  std::vector<std::shared_ptr<torch::nn::BatchNorm1dImpl>> bn1d_;
  std::vector<int> last_use_;              // per node: the last node reading it
  std::vector<std::vector<int>> readers_;  // per node: the nodes reading it
  ReplicaSum batch_norm_sum_;
};
TORCH_MODULE(Network);

// The node's activation (relu, clamp) applied to x.
torch::Tensor activate(const graph::Node& node, torch::Tensor x);
// The value of a node without parameters (add, pools, flatten, shortcut_pad, concat, channel
// slice and shuffle) from the values of the nodes it reads (values[j] for node j), before its
// activation. Shared by the trained model and the LibTorch baselines.
torch::Tensor run_parameter_free(const graph::Node& node, const std::vector<torch::Tensor>& values);

// A full-precision model of a known architecture (graph::known_architectures()).
Network make_network(const std::string& arch, const graph::ArchOptions& options = {});
// A full-precision model of a graph (a model file's).
Network make_network(graph::Graph graph);
// A model of a graph with the policy applied from the start: its clipping thresholds start at
// the policy's weight_alpha_init and act_alpha_init (apply_policy keeps a model's alphas).
Network make_network(graph::Graph graph, const QuantPolicy& policy);

// Applies the policy to every layer (first and last layers per QuantPolicy::int8_first_last).
// Learned alphas are kept (progressive initialisation reuses them), so the policy's initial
// alphas do not reach a model built before: build with make_network(graph, policy) for those.
void apply_policy(NetworkImpl& model, const QuantPolicy& policy);

// A deep copy of a (full-precision) model with the policy applied.
Network quantized_copy(const Network& model, const QuantPolicy& policy);

}  // namespace apot::qat
