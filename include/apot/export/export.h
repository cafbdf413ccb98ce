// Trained quantised model -> .apot file (docs/FORMAT.md): weight normalisation and alphas baked
// into integer weights, batch norm folded into one scale and bias per output channel, first and
// last layers as int8.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "apot/qat/resnet.h"

namespace apot::exporter {

struct ExportInfo {
  int height = 32, width = 32;
  std::vector<float> mean, std;
  std::vector<std::string> class_names;
  std::string provenance_json = "{}";  // training configuration, checkpoint, metrics
};

// Throws std::invalid_argument naming the layer if the model cannot be exported (e.g. full
// precision inner layers, or first/last layers that are not int8).
std::vector<uint8_t> export_model(qat::ResNet& model, const ExportInfo& info);
void write_file_atomically(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace apot::exporter
