// The table of architecture families: adding a family is adding its builder file and a row.
#include "families.h"

namespace apot::graph {
namespace {
const std::vector<ArchitectureFamily>& families() {
  static const std::vector<ArchitectureFamily> table{resnet_family()};
  return table;
}
}  // namespace

std::vector<std::string> known_architectures() {
  std::vector<std::string> out;
  for (const ArchitectureFamily& f : families()) out.insert(out.end(), f.names.begin(), f.names.end());
  return out;
}

bool is_known_architecture(const std::string& arch) {
  for (const std::string& n : known_architectures())
    if (n == arch) return true;
  return false;
}

Graph build_architecture(const std::string& arch, const ArchOptions& options) {
  if (options.in_channels < 1 || options.num_classes < 1)
    throw GraphError("a network needs at least one input channel and one class");
  if (options.naming != "apot" && options.naming != "hub")
    throw GraphError("unknown parameter naming '" + options.naming + "' (expected apot or hub)");
  for (const ArchitectureFamily& f : families())
    for (const std::string& n : f.names)
      if (n == arch) {
        Graph g = f.build(arch, options);
        g.arch = arch;
        g.validate();
        return g;
      }
  std::string names;
  for (const std::string& n : known_architectures()) names += (names.empty() ? "" : ", ") + n;
  throw GraphError("unknown architecture '" + arch + "' (known: " + names +
                   "; or describe your own network in a model file, docs/MODELS.md)");
}

}  // namespace apot::graph
