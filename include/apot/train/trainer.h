// The training loop: SGD with separate parameter groups for the quantiser alphas, warm-up and
// cosine or multi-step schedules, model selection on a validation split, atomic checkpoints
// every epoch, --resume, a live progress bar or one line per epoch, metrics as JSON lines.
#pragma once

#include <iosfwd>
#include <map>
#include <memory>
#include <string>

#include "apot/data/loader.h"
#include "apot/data/spec.h"
#include "apot/qat/network.h"
#include "apot/train/config.h"
#include "apot/train/distributed.h"

namespace apot::train {

class TrainingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What a model needs besides its weights: the data it was made for.
struct ModelInfo {
  int in_channels = 3;
  std::vector<std::string> class_names;
  std::vector<float> mean, std;  // input normalisation
  int height = 32, width = 32;   // input size the model was trained on
};

// The graph a configuration describes (model.arch, or model.file: a model file or an ONNX file;
// without model.file, an ONNX `init` gives the graph too) for the data in `info`; throws
// ConfigError if the file does not fit it (input size, channels, classes).
graph::Graph graph_of(const TrainConfig& config, const ModelInfo& info);
// The model of the configuration (or of `graph`, e.g. a checkpoint's), with its quantisation
// policy applied.
qat::Network build_model(const TrainConfig& config, const ModelInfo& info);
qat::Network build_model(const TrainConfig& config, graph::Graph graph);
qat::QuantPolicy policy_of(const TrainConfig& config);

// The transform of a split as training applies it (the data set's default, the configuration's
// crop, pad, resize, augmentation and normalisation).
data::TransformOptions transform_for(const TrainConfig& config, const data::DataSpec& spec, data::Split split,
                                     const data::Dataset& dataset);

// What a model made for the examples of `loader` needs to know (shape, classes, normalisation).
ModelInfo model_info(const data::Loader& loader);
// Loads the weights of a previous run's checkpoint (.ckpt), an ONNX model (.onnx) or a PyTorch
// state dict (`key`: the entry of a checkpoint dict that holds it, if ambiguous) into `model`,
// and says so on `log`.
void initialise_from(qat::Network& model, const std::string& path, const std::string& key, std::ostream& log);

// The training loss: cross-entropy with labels (label_smoothing as in optim), and with teacher
// logits (defined) (1 - weight) * that + weight * T^2 * KL(softmax(teacher / T) || softmax(student
// / T)), the KL averaged over the batch (Hinton et al. 2015; T^2 keeps the soft term's gradient
// on the scale of the hard one's).
torch::Tensor training_loss(const torch::Tensor& logits, const torch::Tensor& labels, double label_smoothing,
                            const torch::Tensor& teacher_logits = {}, double weight = 0.5, double temperature = 4.0);

// The device of train.device; throws ConfigError naming the key where this LibTorch has no CUDA
// or no such GPU is visible.
torch::Device training_device(const TrainConfig& config);
// The layout of the image batches for train.memory_format on `device` (auto: channels-last on
// the CPU, contiguous on a GPU).
at::MemoryFormat training_memory_format(const TrainConfig& config, const torch::Device& device);
// The convolutions' arithmetic for train.conv_precision on `device` (auto: bf16 on a CPU with
// AVX512_BF16, where oneDNN's bf16 convolutions are about twice as fast; fp32 elsewhere).
qat::ConvPrecision training_conv_precision(const TrainConfig& config, const torch::Device& device);
// A batch of images on `device` (copied without blocking) in `layout` (4-d batches only).
torch::Tensor batch_on(const torch::Tensor& images, const torch::Device& device, at::MemoryFormat layout);
// Makes this process keep the memory it frees (glibc: no trimming, no mmap for large blocks), so
// that the tensors of every training step reuse the pages of the previous one instead of
// faulting fresh zeroed pages in (on the machines measured, the quantised step's allocation
// pattern otherwise costs tens of thousands of page faults per step). run_training calls it
// for CPU training; a no-op where the C library is not glibc.
void keep_freed_memory();

struct EvalResult {
  int64_t count = 0;
  double top1 = 0, top5 = 0, loss = 0;  // accuracies in percent
  std::vector<double> per_class;        // accuracy per class in percent
  std::vector<int64_t> predictions;     // predicted class per example, in loader order
};
// Runs on the device of the model's parameters (batches are copied there, in `layout`).
EvalResult evaluate(qat::Network& model, data::Loader& loader, at::MemoryFormat layout = at::MemoryFormat::Contiguous);

// ---- checkpoints ----
struct Checkpoint {
  TrainConfig config;
  ModelInfo info;
  int64_t epoch = 0;  // the last completed epoch (1-based)
  std::map<std::string, double> metrics;
};
// Writes to a temporary file, fsyncs it and renames it over `path`.
void save_checkpoint(const std::string& path, const qat::Network& model, const torch::optim::Optimizer* optimizer,
                     const Checkpoint& meta);
Checkpoint read_checkpoint_meta(const std::string& path);
// Builds the model of the checkpoint (from the graph stored in it; checkpoints written before
// graphs were stored rebuild it from the configuration) and loads its weights (and the
// optimiser state, if given), on the CPU whatever device trained it.
qat::Network load_checkpoint(const std::string& path, Checkpoint* meta = nullptr,
                             torch::optim::Optimizer* optimizer = nullptr);

// ---- training ----
struct TrainSummary {
  int64_t epochs = 0;
  int64_t best_epoch = 0;
  double best_val_top1 = -1;
  double test_top1_at_best = -1, final_test_top1 = -1;
  double seconds = 0;
  std::string best_checkpoint, last_checkpoint;
};

// With `comm` (data parallel), every rank calls it with the same configuration: each trains on
// its shard of every global batch (data.batch_size per rank), gradients are averaged over the
// ranks, evaluation is sharded and reduced, and rank 0 alone logs and writes the run directory.
TrainSummary run_training(const TrainConfig& config, const std::string& out_dir, bool resume, std::ostream& log,
                          Communicator* comm = nullptr);

}  // namespace apot::train
