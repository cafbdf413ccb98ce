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
};

ArchitectureFamily resnet_family();  // resnet.cpp

}  // namespace apot::graph
