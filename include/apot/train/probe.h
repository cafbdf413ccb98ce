// Per-layer statistics of a model on a batch of images, for `apot report` (report/layers.h):
// histograms of what each quantiser sees with its levels, level usage, SQNRs and cost.
#pragma once

#include <string>

#include "apot/qat/network.h"
#include "apot/report/layers.h"

namespace apot::train {

// Runs `images` (N x C x H x W, normalised as the model expects) through the model in eval
// mode and gathers the statistics of every weight layer; the cost of each comes from
// graph::compute_cost on the model's graph at the images' size.
report::LayerReport probe_layers(qat::NetworkImpl& model, const torch::Tensor& images);

// probe_layers on the first `count` test images of `data` (a data spec; empty: the data set the
// checkpoint was trained on), transformed and normalised as for evaluation.
report::LayerReport probe_checkpoint(const std::string& checkpoint, const std::string& data, int count);

}  // namespace apot::train
