// The module that runs a graph.
#include "apot/qat/network.h"

namespace apot::qat {
namespace F = torch::nn::functional;

namespace {
// A submodule that only holds others, so that dotted parameter names become a module tree.
struct ContainerImpl : torch::nn::Module {};

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t dot; (dot = path.find('.', start)) != std::string::npos; start = dot + 1)
    parts.push_back(path.substr(start, dot - start));
  parts.push_back(path.substr(start));
  for (const std::string& p : parts)
    if (p.empty()) throw graph::GraphError("'" + path + "' is not a valid parameter name");
  return parts;
}

}  // namespace

torch::Tensor activate(const graph::Node& n, torch::Tensor x) {
  switch (n.activation) {
    case graph::Activation::relu: return torch::relu(x);
    case graph::Activation::clamp: return torch::clamp(x, n.clamp_lo, n.clamp_hi);
    default: return x;
  }
}

torch::Tensor run_parameter_free(const graph::Node& node, const std::vector<torch::Tensor>& v) {
  const torch::Tensor& in = v[size_t(node.inputs.at(0))];
  switch (node.op) {
    case graph::Op::add: {
      torch::Tensor out = in;
      for (size_t k = 1; k < node.inputs.size(); ++k) out = out + v[size_t(node.inputs[k])];
      return out;
    }
    case graph::Op::max_pool:
      return F::max_pool2d(in, F::MaxPool2dFuncOptions(node.kernel).stride(node.stride).padding(node.padding));
    case graph::Op::avg_pool:
      return F::avg_pool2d(in, F::AvgPool2dFuncOptions(node.kernel).stride(node.stride).padding(node.padding));
    case graph::Op::global_avg_pool: return F::adaptive_avg_pool2d(in, F::AdaptiveAvgPool2dFuncOptions({1, 1}));
    case graph::Op::flatten: return in.flatten(1);
    case graph::Op::shortcut_pad: {
      // Option A: subsample, then zero-pad the channels (half on each side, as the common code).
      const int64_t pad = node.out_channels - in.size(1), before = pad / 2;
      return F::pad(in.slice(2, 0, in.size(2), node.stride).slice(3, 0, in.size(3), node.stride),
                    F::PadFuncOptions({0, 0, 0, 0, before, pad - before}));
    }
    case graph::Op::concat: {
      std::vector<torch::Tensor> parts;
      for (int j : node.inputs) parts.push_back(v[size_t(j)]);
      return torch::cat(parts, 1);
    }
    case graph::Op::channel_slice: return in.slice(1, node.begin, node.begin + node.out_channels);
    case graph::Op::channel_shuffle: {
      const int64_t n = in.size(0), c = in.size(1), h = in.size(2), w = in.size(3);
      if (in.suggest_memory_format() == at::MemoryFormat::ChannelsLast)  // the same shuffle, staying channels-last
        return in.permute({0, 2, 3, 1})
            .reshape({n, h, w, node.groups, c / node.groups})
            .transpose(3, 4)
            .reshape({n, h, w, c})
            .permute({0, 3, 1, 2});
      return in.reshape({n, node.groups, c / node.groups, h, w}).transpose(1, 2).reshape({n, c, h, w});
    }
    default: throw std::invalid_argument("node '" + node.name + "' (" + graph::to_string(node.op) + ") has parameters");
  }
}

NetworkImpl::NetworkImpl(graph::Graph graph, const QuantPolicy& training)
    : graph_(std::move(graph)), policy_(training) {
  graph_.validate();
  build();
}

void NetworkImpl::register_path(const std::string& path, std::shared_ptr<torch::nn::Module> module) {
  const std::vector<std::string> parts = split_path(path);
  torch::nn::Module* parent = this;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    auto children = parent->named_children();
    if (auto* existing = children.find(parts[i])) {
      parent = existing->get();
    } else {
      parent = parent->register_module(parts[i], std::make_shared<ContainerImpl>()).get();
    }
  }
  if (parent->named_children().find(parts.back()) || parent->named_parameters(false).find(parts.back()))
    throw graph::GraphError("two layers are named '" + path + "'");
  parent->register_module(parts.back(), std::move(module));
}

void NetworkImpl::build() {
  const size_t n = graph_.size();
  conv_.assign(n, nullptr);
  linear_.assign(n, nullptr);
  bn2d_.assign(n, nullptr);
  bn1d_.assign(n, nullptr);
  last_use_.assign(n, -1);
  readers_.assign(n, {});
  // Shapes of the layers' inputs, for their weight shapes: at the input size the graph was
  // made for (a linear layer after a flatten depends on it), else at any size it accepts.
  graph::Graph shaped = graph_;
  const graph::Shape& in_shape = graph_.input().shape;
  shaped.infer_shapes(in_shape.height > 0 ? in_shape.height : 64, in_shape.width > 0 ? in_shape.width : 64);
  for (size_t i = 0; i < n; ++i) {
    const graph::Node& node = graph_[i];
    for (int in : node.inputs) {
      last_use_[size_t(in)] = int(i);
      readers_[size_t(in)].push_back(int(i));
    }
    if (!node.has_weights()) continue;
    const QuantOptions q = policy_.options_for(node);
    const int in = shaped.input_shape_of(int(i)).channels;
    if (node.op == graph::Op::conv) {
      auto conv = std::make_shared<QuantConv2dImpl>(torch::nn::Conv2dOptions(in, node.out_channels, node.kernel)
                                                        .stride(node.stride)
                                                        .padding(node.padding)
                                                        .groups(node.groups)
                                                        .bias(node.bias),
                                                    q);
      conv_[i] = conv;
      register_path(node.name, conv);
      if (!node.batch_norm.empty()) {
        auto bn = std::make_shared<torch::nn::BatchNorm2dImpl>(node.out_channels);
        bn2d_[i] = bn;
        register_path(node.batch_norm, bn);
      }
    } else {
      const int features = int(shaped.input_shape_of(int(i)).size());
      auto linear =
          std::make_shared<QuantLinearImpl>(torch::nn::LinearOptions(features, node.out_channels).bias(node.bias), q);
      linear_[i] = linear;
      register_path(node.name, linear);
      if (!node.batch_norm.empty()) {
        auto bn = std::make_shared<torch::nn::BatchNorm1dImpl>(node.out_channels);
        bn1d_[i] = bn;
        register_path(node.batch_norm, bn);
      }
    }
  }
  // He initialisation (fan-out) for convolutions and unit batch norms, in module order, as
  // the common ResNet code does; linear layers keep PyTorch's default.
  torch::NoGradGuard no_grad;
  for (auto& m : modules(false)) {
    if (auto* c = dynamic_cast<QuantConv2dImpl*>(m.get()))
      torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
    if (auto* b = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) {
      b->weight.fill_(1.0);
      b->bias.zero_();
    }
    if (auto* b = dynamic_cast<torch::nn::BatchNorm1dImpl*>(m.get())) {
      b->weight.fill_(1.0);
      b->bias.zero_();
    }
  }
}

torch::Tensor NetworkImpl::forward(const torch::Tensor& x) { return run(x, nullptr); }

torch::Tensor NetworkImpl::forward_all(const torch::Tensor& x, std::vector<torch::Tensor>& outputs) {
  return run(x, &outputs);
}

torch::Tensor NetworkImpl::input_of(const torch::Tensor& x, const std::string& layer) {
  const int node = graph_.find(layer);
  if (node < 1) throw std::invalid_argument(graph_.arch + " has no node '" + layer + "'");
  std::vector<torch::Tensor> v;
  run(x, &v, node - 1);
  return v[size_t(graph_[size_t(node)].inputs.at(0))];
}

template <typename BatchNorm>
torch::Tensor NetworkImpl::apply_batch_norm(BatchNorm& bn, const torch::Tensor& x) const {
  if (!batch_norm_sum_ || !is_training()) return bn.forward(x);
  {
    torch::NoGradGuard no_grad;
    bn.num_batches_tracked += 1;
  }
  // momentum None: the cumulative average, as BatchNorm's.
  const double momentum = bn.options.momentum()
                              ? *bn.options.momentum()
                              : 1.0 / static_cast<double>(bn.num_batches_tracked.template item<int64_t>());
  return sync_batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum, bn.options.eps(),
                         batch_norm_sum_);
}

bool NetworkImpl::relu_fuses_into_readers(size_t i) const {
  if (graph_[i].activation != graph::Activation::relu || readers_[i].empty()) return false;
  for (int j : readers_[i])
    if (!conv_[size_t(j)] || graph_[size_t(j)].inputs.size() != 1 || !conv_[size_t(j)]->can_rectify_input())
      return false;
  return true;
}

torch::Tensor NetworkImpl::compute_node(size_t i, const std::vector<torch::Tensor>& v, bool rectify_input,
                                        bool activation) {
  const graph::Node& node = graph_[i];
  const torch::Tensor& in = v[size_t(node.inputs[0])];
  torch::Tensor out;
  switch (node.op) {
    case graph::Op::input: break;
    case graph::Op::conv:
      out = rectify_input ? conv_[i]->forward_rectified(in) : conv_[i]->forward(in);
      if (bn2d_[i]) out = apply_batch_norm(*bn2d_[i], out);
      break;
    case graph::Op::linear:
      out = linear_[i]->forward(in.flatten(1));
      if (bn1d_[i]) out = apply_batch_norm(*bn1d_[i], out);
      break;
    default: out = run_parameter_free(node, v);
  }
  return activation ? activate(node, out) : out;
}

void NetworkImpl::run_nodes(std::vector<torch::Tensor>& values, int first, int last) {
  if (values.size() != graph_.size() || first < 1 || last >= int(graph_.size()) || first > last)
    throw std::invalid_argument("run_nodes: nodes " + std::to_string(first) + ".." + std::to_string(last) + " of " +
                                std::to_string(graph_.size()));
  for (int i = first; i <= last; ++i) values[size_t(i)] = compute_node(size_t(i), values);
}

torch::Tensor NetworkImpl::run(const torch::Tensor& x, std::vector<torch::Tensor>* keep, int last) {
  const int channels = graph_.input().shape.channels;
  if (x.dim() != 4 || x.size(1) != channels)
    throw std::invalid_argument(graph_.arch + " expects input [N, " + std::to_string(channels) + ", H, W], got " +
                                c10::str(x.sizes()));
  const size_t n = graph_.size();
  std::vector<torch::Tensor> v(n);
  v[0] = x;
  const size_t end = last < 0 ? n : size_t(last) + 1;
  // Where every reader of a ReLU's output quantises it to unsigned levels, the readers' quantisers
  // apply the ReLU (forward_rectified): the same values, two passes over memory fewer. Not where
  // the values are kept (they are the ReLU's outputs there) or a part of the network is run.
  std::vector<char> unrectified(n, 0);
  for (size_t i = 1; i < end; ++i) {
    const graph::Node& node = graph_[i];
    unrectified[i] = !keep && last < 0 && relu_fuses_into_readers(i);
    v[i] = compute_node(i, v, unrectified[size_t(node.inputs[0])] != 0, !unrectified[i]);
    if (!keep)
      for (int input : node.inputs)
        if (last_use_[size_t(input)] == int(i)) v[size_t(input)] = torch::Tensor();
  }
  torch::Tensor result = v[end - 1];
  if (result.dim() == 4 && graph_[end - 1].shape.height <= 1 && result.size(2) == 1 && result.size(3) == 1)
    result = result.flatten(1);
  if (keep) *keep = std::move(v);
  return result;
}

void NetworkImpl::set_policy(const QuantPolicy& policy) {
  graph::Graph g = graph_;
  graph::assign_quantization(g, policy.assignment());
  for (size_t i = 0; i < g.size(); ++i) {
    if (!g[i].has_weights()) continue;
    const QuantOptions q = policy.options_for(g[i]);
    if (conv_[i]) conv_[i]->set_quant_options(q);
    if (linear_[i]) linear_[i]->set_quant_options(q);
  }
  graph_ = std::move(g);
  policy_ = policy;
}

void NetworkImpl::set_conv_precision(ConvPrecision precision) {
  for (auto& c : conv_)
    if (c) c->precision = precision;
}

QuantConv2dImpl* NetworkImpl::conv(const std::string& name) const {
  const int i = graph_.find(name);
  return i < 0 ? nullptr : conv_[size_t(i)].get();
}

QuantLinearImpl* NetworkImpl::linear(const std::string& name) const {
  const int i = graph_.find(name);
  return i < 0 ? nullptr : linear_[size_t(i)].get();
}

torch::nn::Module* NetworkImpl::batch_norm(const std::string& name) const {
  const int i = graph_.find(name);
  if (i < 0) return nullptr;
  if (bn2d_[size_t(i)]) return bn2d_[size_t(i)].get();
  return bn1d_[size_t(i)].get();
}

std::shared_ptr<torch::nn::Module> NetworkImpl::clone(const torch::optional<torch::Device>& device) const {
  torch::NoGradGuard no_grad;
  auto copy = std::make_shared<NetworkImpl>(graph_, policy_);
  auto params = copy->named_parameters(), buffers = copy->named_buffers();
  for (const auto& p : named_parameters()) {
    torch::Tensor& target = params[p.key()];
    target.set_data(device ? p.value().to(*device).clone() : p.value().clone());
  }
  for (const auto& b : named_buffers()) {
    torch::Tensor& target = buffers[b.key()];
    target.set_data(device ? b.value().to(*device).clone() : b.value().clone());
  }
  for (size_t i = 0; i < conv_.size(); ++i)
    if (conv_[i]) copy->conv_[i]->precision = conv_[i]->precision;
  if (!is_training()) copy->eval();
  return copy;
}

Network make_network(const std::string& arch, const graph::ArchOptions& options) {
  return make_network(graph::build_architecture(arch, options));
}

Network make_network(graph::Graph graph) { return make_network(std::move(graph), QuantPolicy::full_precision()); }

Network make_network(graph::Graph graph, const QuantPolicy& policy) {
  graph::assign_quantization(graph, policy.assignment());
  return Network(std::move(graph), policy);
}

void apply_policy(NetworkImpl& model, const QuantPolicy& policy) { model.set_policy(policy); }

Network quantized_copy(const Network& model, const QuantPolicy& policy) {
  auto copy = std::dynamic_pointer_cast<NetworkImpl>(model->clone());
  copy->set_policy(policy);
  return Network(copy);
}

}  // namespace apot::qat
