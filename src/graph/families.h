// The builder files' entry points, collected by architectures.cpp into one table.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "apot/graph/architectures.h"

namespace apot::graph {

struct ArchitectureFamily {
  std::vector<std::string> names;
  std::function<Graph(const std::string& arch, const ArchOptions& options)> build;
  bool width_mult = false;  // takes ArchOptions::width_mult
};

ArchitectureFamily resnet_family();      // resnet.cpp
ArchitectureFamily shufflenet_family();  // shufflenet.cpp
ArchitectureFamily mobilenet_family();   // mobilenet.cpp
ArchitectureFamily vgg_family();         // vgg.cpp

// Helpers for the builder files (architectures.cpp). Each appends one node and returns its index.
int add_input(Graph& g, int channels);
struct ConvSpec {
  int out = 0, kernel = 1, stride = 1, padding = 0, groups = 1;
  bool bias = false;
  Activation activation = Activation::none;  // relu, or ReLU6 as clamp(0, 6) with relu6()
  float clamp_hi = 0;
};
ConvSpec relu6(ConvSpec spec);
// A convolution named `name` followed by the batch norm `bn` (none if empty).
int add_conv(Graph& g, const std::string& name, const std::string& bn, int input, const ConvSpec& spec);
int add_linear(Graph& g, const std::string& name, int input, int out, bool relu);
int add_simple(Graph& g, const std::string& name, Op op, std::vector<int> inputs);  // attributes left default
int add_max_pool(Graph& g, const std::string& name, int input, int kernel, int stride, int padding);

}  // namespace apot::graph
