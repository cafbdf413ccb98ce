// Training configuration: read from a TOML recipe, every key overridable with --set
// section.key=value, stored as JSON in checkpoints. Unknown keys and wrongly typed values are
// errors that name the key.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "apot/graph/graph.h"

namespace apot::train {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TrainConfig {
  // [model]
  std::string arch = "resnet20";
  std::string shortcut = "A";   // A | B (CIFAR family)
  std::string naming = "apot";  // apot | hub: parameter names of the CIFAR ResNets (graph::ArchOptions)
  double width_mult = 1.0;      // MobileNetV2's width multiplier
  std::string model_file;       // a model file (docs/MODELS.md) instead of arch
  // [data]
  std::string data = "fashion-mnist";
  int batch_size = 128;
  int workers = 2;
  int val_size = 5000;                   // examples carved from the training set for model selection (0: none)
  bool augment = true;                   // the data set's training augmentation
  int crop = -1, pad = -1, resize = -1;  // -1: the data set's default
  bool skip_corrupt = false;
  int eval_batch_size = 256;
  // Input normalisation; empty: the data set's. For models imported with another one.
  std::vector<double> norm_mean, norm_std;
  // [quant]
  std::string kind = "apot";  // apot | pot | uniform | fp
  int weight_bits = 4, act_bits = 4;
  std::string variant = "cifar";         // STE variant: cifar | imagenet
  std::string weight_norm = "detached";  // none | detached | through
  bool per_channel = false;
  double weight_alpha_init = 3.0, act_alpha_init = 8.0;
  bool int8_first_last = true;
  std::map<std::string, graph::LayerOverride> layers;  // [quant.layers."name"]: per-layer overrides
  // [init]
  std::string init;      // checkpoint (.ckpt) of a previous run, or a PyTorch state dict (.pt/.pth)
  std::string init_key;  // the entry of a checkpoint dict that holds the state dict (if ambiguous)
  // [optim]
  int epochs = 10;
  double lr = 0.1, momentum = 0.9, weight_decay = 1e-4;
  bool nesterov = false;
  double act_alpha_lr = 0.1, weight_alpha_lr = 0.02, alpha_weight_decay = 1e-4;
  double label_smoothing = 0.0, grad_clip = 0.0;
  // [distill]: knowledge distillation from a full-precision teacher of the same architecture
  // (a checkpoint or state dict, loaded as init.from is): loss = (1 - weight) * cross-entropy
  // + weight * temperature^2 * KL(teacher || student) on logits / temperature.
  std::string teacher, teacher_key;
  double distill_weight = 0.5, temperature = 4.0;
  // [schedule]
  std::string schedule = "cosine";  // cosine | multistep
  std::vector<int> milestones;      // multistep: epochs at which lr *= gamma
  double gamma = 0.1;
  double warmup_epochs = 0.0;
  // [train]
  std::string device = "cpu";  // cpu | cuda | cuda:N: where the model, quantisers, optimiser and loss run
  // auto | channels_last | contiguous: the layout of the image batches (and so of every
  // activation). auto: channels-last on the CPU, where oneDNN's convolutions are faster on it;
  // contiguous (NCHW) on a GPU. Parameters and checkpoints stay NCHW either way.
  std::string memory_format = "auto";
  // fp32 | bf16 | auto: the arithmetic of the convolutions in training steps (evaluation is always
  // float32). bf16: inputs, weights and output gradients rounded to bfloat16, sums in float32
  // (qat::conv2d_bf16). auto: bf16 on a CPU with AVX512_BF16, fp32 elsewhere.
  std::string conv_precision = "fp32";
  // Data parallel: batch norm with the statistics of every rank's batch (N ranks of batch B then
  // train as one process of batch N x B); false: each rank's own statistics, as PyTorch's DDP.
  bool sync_batch_norm = false;
  // [run]
  uint64_t seed = 1;
  int threads = 0;              // 0: all cores
  int max_steps_per_epoch = 0;  // 0: whole epochs (a cap is for smoke tests)
  int stop_after_epoch = 0;     // stop (as if killed) after this epoch; 0: run to the end. --resume continues

  bool quantized() const { return kind != "fp"; }
  void validate() const;  // throws ConfigError naming the offending key
};

// Loads a recipe and applies "section.key=value" overrides (values in TOML syntax; bare words
// are strings).
TrainConfig load_config(const std::string& recipe_path, const std::vector<std::string>& overrides);
TrainConfig config_from_toml_text(const std::string& text, const std::string& source,
                                  const std::vector<std::string>& overrides);
std::string config_to_json(const TrainConfig& c);
TrainConfig config_from_json(const std::string& json);

}  // namespace apot::train
