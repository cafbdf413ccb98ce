// Import and export of PyTorch state dicts (any torch.save file, read by torch_file.h).
// Names are matched after removing a "module." prefix and mapping between the CIFAR
// ("linear", "shortcut") and torchvision ("fc", "downsample") spellings and the reference
// APoT code's "weight_quant.wgt_alpha".
#pragma once

#include <torch/torch.h>

#include <map>
#include <stdexcept>
#include <string>

namespace apot::qat {

// A state dict that does not fit the model (missing, unexpected or wrongly shaped entries): the
// user's choice of architecture, model file or data is wrong, not the file (exit 2 in the CLI).
class StateDictError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Every tensor of the state dict in a torch.save file (zip or legacy; plain, or wrapped in a
// checkpoint: see find_state_dict), by name. `key` picks one of several ("ema", dotted for
// nesting). Throws std::runtime_error naming the file if it cannot be read or holds no (or
// more than one) state dict.
std::map<std::string, torch::Tensor> read_state_dict(const std::string& path, const std::string& key = "");

// Copies the tensors of `state` into the model's parameters and buffers. Quantiser alphas
// missing from the file keep their values (a full-precision file has none). Missing,
// unexpected or wrongly shaped entries: one StateDictError listing all of them.
void load_state_dict(torch::nn::Module& model, const std::map<std::string, torch::Tensor>& state,
                     const std::string& source);
void import_state_dict(torch::nn::Module& model, const std::string& path, const std::string& key = "");

// Writes the model's parameters and buffers as a state dict that torch.load can read.
void export_state_dict(const torch::nn::Module& model, const std::string& path);

}  // namespace apot::qat
