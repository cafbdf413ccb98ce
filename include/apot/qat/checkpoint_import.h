// Import and export of PyTorch state dicts (torch.save zip files, read with torch::pickle_load).
// Names are matched after removing a "module." prefix and mapping between the CIFAR
// ("linear", "shortcut") and torchvision ("fc", "downsample") spellings and the reference
// APoT code's "weight_quant.wgt_alpha".
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

namespace apot::qat {

// Every tensor of a state-dict file, by name. Throws std::runtime_error naming the file if it
// cannot be read or is not a dictionary of tensors.
std::map<std::string, torch::Tensor> read_state_dict(const std::string& path);

// Copies the tensors of `state` into the model's parameters and buffers. Quantiser alphas
// missing from the file keep their values (a full-precision file has none). Missing,
// unexpected or wrongly shaped entries: one std::runtime_error listing all of them.
void load_state_dict(torch::nn::Module& model, const std::map<std::string, torch::Tensor>& state,
                     const std::string& source);
void import_state_dict(torch::nn::Module& model, const std::string& path);

// Writes the model's parameters and buffers as a state dict that torch.load can read.
void export_state_dict(const torch::nn::Module& model, const std::string& path);

}  // namespace apot::qat
