// Trained quantised model -> .apot file (docs/FORMAT.md): the model's graph, weight normalisation
// and alphas baked into integer weights, each layer's batch norm (named by its graph node) and
// bias folded into one scale and bias per output channel, int8 layers as int8.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "apot/qat/network.h"

namespace apot::exporter {

struct ExportInfo {
  int height = 32, width = 32;
  std::vector<float> mean, std;
  std::vector<std::string> class_names;
  std::string provenance_json = "{}";  // training configuration, checkpoint, metrics
};

// Throws std::invalid_argument naming the layer if the model cannot be exported (a full
// precision layer, a quantised linear layer, a grouped convolution).
std::vector<uint8_t> export_model(qat::NetworkImpl& model, const ExportInfo& info);
void write_file_atomically(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace apot::exporter
