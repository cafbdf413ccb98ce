// The training loop.
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>
#include <thread>

#include "apot/onnx/onnx_import.h"
#include "apot/qat/checkpoint_import.h"
#include "apot/train/trainer.h"

namespace apot::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Learning-rate factor at a (fractional) epoch position.
double schedule_factor(const TrainConfig& c, double epoch_position) {
  double factor = 1.0;
  if (c.warmup_epochs > 0 && epoch_position < c.warmup_epochs) factor = (epoch_position + 1e-9) / c.warmup_epochs;
  if (c.schedule == "cosine") {
    const double t =
        std::clamp((epoch_position - c.warmup_epochs) / std::max(1e-9, c.epochs - c.warmup_epochs), 0.0, 1.0);
    factor *= 0.5 * (1.0 + std::cos(M_PI * t));
  } else {
    for (int m : c.milestones)
      if (epoch_position >= m) factor *= c.gamma;
  }
  return factor;
}

struct Groups {
  std::vector<torch::Tensor> weights, act_alphas, weight_alphas;
};

enum class ParameterRole { weight, act_alpha, weight_alpha };

ParameterRole role_of(const std::string& name) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with("act_alpha")      ? ParameterRole::act_alpha
         : ends_with("weight_alpha") ? ParameterRole::weight_alpha
                                     : ParameterRole::weight;
}

Groups split_parameters(qat::Network& model) {
  Groups g;
  for (auto& p : model->named_parameters()) {
    switch (role_of(p.key())) {
      case ParameterRole::act_alpha: g.act_alphas.push_back(p.value()); break;
      case ParameterRole::weight_alpha: g.weight_alphas.push_back(p.value()); break;
      case ParameterRole::weight: g.weights.push_back(p.value()); break;
    }
  }
  return g;
}

std::unique_ptr<torch::optim::SGD> make_optimizer(qat::Network& model, const TrainConfig& c) {
  const Groups g = split_parameters(model);
  auto options = [&](double lr, double wd) {
    return std::make_unique<torch::optim::SGDOptions>(
        torch::optim::SGDOptions(lr).momentum(c.momentum).nesterov(c.nesterov).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(g.weights, options(c.lr, c.weight_decay));
  groups.emplace_back(g.act_alphas, options(c.act_alpha_lr, c.alpha_weight_decay));
  groups.emplace_back(g.weight_alphas, options(c.weight_alpha_lr, c.alpha_weight_decay));
  return std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(c.lr));
}

// Every clipping threshold by parameter name ("layer1.0.conv1.act_alpha"), per-channel ones as
// their mean: how the alphas move over training (metrics.jsonl, `apot report`).
nlohmann::json alpha_values(torch::nn::Module& model) {
  nlohmann::json out = nlohmann::json::object();
  torch::NoGradGuard no_grad;
  for (const auto& p : model.named_parameters())
    if (role_of(p.key()) != ParameterRole::weight && p.value().numel() > 0)
      out[p.key()] = p.value().mean().item<double>();
  return out;
}

// Projected SGD for the clipping thresholds: an alpha that a step drives to zero or below would
// make the quantiser meaningless (the reference code lets it happen); keep it at a small floor.
constexpr double kAlphaFloor = 1e-3;
void clamp_alphas(torch::optim::SGD& sgd) {
  torch::NoGradGuard no_grad;
  for (size_t g = 1; g < sgd.param_groups().size(); ++g)
    for (auto& p : sgd.param_groups()[g].params()) p.clamp_min_(kAlphaFloor);
}

void set_learning_rates(torch::optim::SGD& sgd, const TrainConfig& c, double factor) {
  const double base[3] = {c.lr, c.act_alpha_lr, c.weight_alpha_lr};
  for (size_t i = 0; i < sgd.param_groups().size(); ++i)
    static_cast<torch::optim::SGDOptions&>(sgd.param_groups()[i].options()).lr(base[i] * factor);
}

// After Optimizer::load, whose state tensors are on the CPU: onto the parameters' device.
void move_optimizer_state(torch::optim::SGD& sgd, const torch::Device& device) {
  for (auto& [key, state] : sgd.state()) {
    auto& s = static_cast<torch::optim::SGDParamState&>(*state);
    if (s.momentum_buffer().defined()) s.momentum_buffer(s.momentum_buffer().to(device));
  }
}

// A rank's share of a data set: every world-th example.
std::vector<size_t> shard_of(const std::vector<size_t>& indices, int rank, int world) {
  std::vector<size_t> out;
  for (size_t k = static_cast<size_t>(rank); k < indices.size(); k += static_cast<size_t>(world))
    out.push_back(indices[k]);
  return out;
}

// Accuracy and loss over every rank's shard (per-class accuracies and predictions stay local).
EvalResult reduced(Communicator* comm, EvalResult r) {
  if (!comm) return r;
  const auto t = comm->sum({r.top1 * r.count / 100, r.top5 * r.count / 100, r.loss * r.count, double(r.count)});
  r.count = static_cast<int64_t>(t[3]);
  r.top1 = r.count ? 100 * t[0] / t[3] : 0;
  r.top5 = r.count ? 100 * t[1] / t[3] : 0;
  r.loss = r.count ? t[2] / t[3] : 0;
  return r;
}

std::string bar(double fraction, int width) {
  const int filled = static_cast<int>(std::round(fraction * width));
  return std::string(filled, '#') + std::string(width - filled, '.');
}

}  // namespace

void initialise_from(qat::Network& model, const std::string& path, const std::string& key, std::ostream& log) {
  if (path.empty()) return;
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".ckpt") {
    Checkpoint meta;
    qat::Network source = load_checkpoint(path, &meta);
    std::map<std::string, torch::Tensor> state;
    for (const auto& p : source->named_parameters()) state[p.key()] = p.value();
    for (const auto& b : source->named_buffers()) state[b.key()] = b.value();
    qat::load_state_dict(*model, state, path);
    log << "initialised from " << path << " (" << meta.config.kind << " W" << meta.config.weight_bits << "A"
        << meta.config.act_bits << ", epoch " << meta.epoch << ")\n";
  } else if (onnx_import::is_onnx_path(path)) {
    std::map<std::string, torch::Tensor> state;
    for (auto& [name, a] : onnx_import::read_onnx(path).weights)
      state[name] = torch::from_blob(a.values.data(), a.shape, torch::kFloat32).clone();
    qat::load_state_dict(*model, state, path);
    log << "initialised from the ONNX model " << path << "\n";
  } else {
    qat::import_state_dict(*model, path, key);
    log << "initialised from the state dict " << path << "\n";
  }
}

data::TransformOptions transform_for(const TrainConfig& c, const data::DataSpec& spec, data::Split split,
                                     const data::Dataset& ds) {
  data::TransformOptions t = data::default_transform(spec, split, &ds);
  if (split == data::Split::train && !c.augment) {
    t.random_crop = false;
    t.hflip = false;
  }
  if (c.crop >= 0) t.crop = c.crop;
  if (c.pad >= 0) t.pad = c.pad;
  if (c.resize >= 0) t.resize_shorter = c.resize;
  if (t.channels == 0 && ds.channels() == 0) t.channels = 3;
  if (!c.norm_mean.empty()) {  // the normalisation an imported model was trained with
    t.mean.assign(c.norm_mean.begin(), c.norm_mean.end());
    t.std.assign(c.norm_std.begin(), c.norm_std.end());
  }
  return t;
}

at::MemoryFormat training_memory_format(const TrainConfig& c, const torch::Device& device) {
  if (c.memory_format == "channels_last" || (c.memory_format == "auto" && device.is_cpu()))
    return at::MemoryFormat::ChannelsLast;
  return at::MemoryFormat::Contiguous;
}

qat::ConvPrecision training_conv_precision(const TrainConfig& c, const torch::Device& device) {
  if (c.conv_precision == "bf16" || (c.conv_precision == "auto" && device.is_cpu() && qat::cpu_has_native_bf16()))
    return qat::ConvPrecision::bf16;
  return qat::ConvPrecision::fp32;
}

torch::Tensor batch_on(const torch::Tensor& images, const torch::Device& device, at::MemoryFormat layout) {
  const torch::Tensor on_device = images.to(device, /*non_blocking=*/true);
  return on_device.dim() == 4 ? on_device.contiguous(layout) : on_device;
}

void keep_freed_memory() {
#ifdef __GLIBC__
  // Blocks below 1 GiB come from the heap, which is not trimmed while less than 1 GiB is free.
  // mallopt(3) documents 32 MiB as the largest mmap threshold on 64-bit systems: where 1 GiB is
  // refused, 32 MiB (blocks above it are still mapped and unmapped each time).
  constexpr int kGiB = 1 << 30, kLargestDocumented = 32 << 20;
  if (mallopt(M_MMAP_THRESHOLD, kGiB) == 0) mallopt(M_MMAP_THRESHOLD, kLargestDocumented);
  mallopt(M_TRIM_THRESHOLD, kGiB);
#endif
}

torch::Device training_device(const TrainConfig& c) {
  const torch::Device device(c.device);
  if (!device.is_cuda()) return device;
  if (!torch::cuda::is_available())
    throw ConfigError("train.device = " + c.device + ": this LibTorch has no CUDA, or no GPU is visible (use cpu)");
  if (device.has_index() && device.index() >= static_cast<int>(torch::cuda::device_count()))
    throw ConfigError("train.device = " + c.device + ": only " + std::to_string(torch::cuda::device_count()) +
                      " GPU(s) visible");
  return device;
}

ModelInfo model_info(const data::Loader& loader) {
  ModelInfo info;
  const auto shape = loader.example_shape();
  info.in_channels = static_cast<int>(shape[0]);
  info.height = static_cast<int>(shape[1]);
  info.width = static_cast<int>(shape[2]);
  info.class_names = loader.dataset().class_names();
  info.mean = loader.options().transform.mean;
  info.std = loader.options().transform.std;
  return info;
}

torch::Tensor training_loss(const torch::Tensor& logits, const torch::Tensor& labels, double label_smoothing,
                            const torch::Tensor& teacher_logits, double weight, double temperature) {
  namespace F = torch::nn::functional;
  const torch::Tensor hard =
      F::cross_entropy(logits, labels, F::CrossEntropyFuncOptions().label_smoothing(label_smoothing));
  if (!teacher_logits.defined()) return hard;
  const torch::Tensor soft =
      F::kl_div(F::log_softmax(logits / temperature, 1), F::log_softmax(teacher_logits / temperature, 1),
                F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true));
  return (1 - weight) * hard + weight * temperature * temperature * soft;
}

TrainSummary run_training(const TrainConfig& c, const std::string& out_dir, bool resume, std::ostream& all_log,
                          Communicator* comm) {
  c.validate();
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world_size() : 1;
  const bool leader = rank == 0;
  std::ostream null_log(nullptr);
  std::ostream& log = leader ? all_log : null_log;  // rank 0 alone reports and writes files
  if (comm) comm->check_same("recipes, options or resume flags", config_to_json(c) + (resume ? " resume" : ""));
  torch::set_num_threads(
      c.threads > 0 ? c.threads
                    : std::max(1, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) / world));
  const torch::Device device = training_device(c);
  const at::MemoryFormat layout = training_memory_format(c, device);
  if (device.is_cpu()) keep_freed_memory();
  torch::manual_seed(c.seed);
  fs::create_directories(out_dir);
  const Clock::time_point start = Clock::now();

  // Data: a seeded validation split carved from the training set.
  const data::DataSpec spec = data::parse_data_spec(c.data);
  data::ImageFolderOptions folder_options;
  folder_options.skip_corrupt = c.skip_corrupt;
  const auto train_set = data::open_dataset(spec, data::Split::train, folder_options);
  const auto test_set = data::open_dataset(spec, data::Split::test, folder_options);
  const data::TransformOptions train_t = transform_for(c, spec, data::Split::train, *train_set);
  const data::TransformOptions eval_t = transform_for(c, spec, data::Split::test, *train_set);
  if (static_cast<size_t>(c.val_size) >= train_set->size())
    throw ConfigError("data.val_size " + std::to_string(c.val_size) + " leaves no training examples");
  std::vector<size_t> order(train_set->size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  data::SampleRng split_rng(data::mix_seed(c.seed, 0x5EED));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[split_rng.next() % i]);
  std::vector<size_t> val_indices(order.end() - c.val_size, order.end()),
      train_indices(order.begin(), order.end() - c.val_size);
  std::sort(val_indices.begin(), val_indices.end());

  data::LoaderOptions train_lo;
  train_lo.batch_size = c.batch_size;
  train_lo.seed = c.seed;
  train_lo.workers = c.workers;
  train_lo.shuffle = true;
  train_lo.drop_last = true;
  train_lo.transform = train_t;
  train_lo.pin_memory = device.is_cuda();  // so that copies to the GPU do not block
  data::LoaderOptions eval_lo = train_lo;  // evaluation is sharded by example, below
  eval_lo.batch_size = c.eval_batch_size;
  eval_lo.shuffle = false;
  eval_lo.drop_last = false;
  eval_lo.transform = eval_t;
  train_lo.shard_index = rank;
  train_lo.shard_count = world;
  data::Loader train_loader(train_set, train_lo, train_indices);
  std::unique_ptr<data::Loader> val_loader;
  if (c.val_size > 0)
    val_loader = std::make_unique<data::Loader>(train_set, eval_lo, shard_of(val_indices, rank, world));
  std::vector<size_t> test_indices(test_set->size());
  for (size_t i = 0; i < test_indices.size(); ++i) test_indices[i] = i;
  data::Loader test_loader(test_set, eval_lo, shard_of(test_indices, rank, world));

  const ModelInfo info = model_info(train_loader);

  qat::Network model = build_model(c, info);
  std::unique_ptr<torch::optim::SGD> sgd;
  const std::string last_path = (fs::path(out_dir) / "last.ckpt").string();
  const std::string best_path = (fs::path(out_dir) / "best.ckpt").string();
  const std::string metrics_path = (fs::path(out_dir) / "metrics.jsonl").string();

  TrainSummary summary;
  summary.best_checkpoint = best_path;
  summary.last_checkpoint = last_path;
  int64_t first_epoch = 1;
  if (resume) {
    Checkpoint meta;
    model = load_checkpoint(last_path, &meta);
    model->to(device);
    sgd = make_optimizer(model, c);
    load_checkpoint(last_path, nullptr, sgd.get());  // the optimiser state (momentum buffers)
    move_optimizer_state(*sgd, device);
    first_epoch = meta.epoch + 1;
    summary.best_epoch = static_cast<int64_t>(meta.metrics["best_epoch"]);
    summary.best_val_top1 = meta.metrics["best_val_top1"];
    summary.test_top1_at_best = meta.metrics["test_top1_at_best"];
    summary.final_test_top1 = meta.metrics["test_top1"];
    log << "resuming " << last_path << " after epoch " << meta.epoch << "\n";
  } else {
    initialise_from(model, c.init, c.init_key, log);
    model->to(device);
    sgd = make_optimizer(model, c);
    if (leader) std::ofstream(metrics_path, std::ios::trunc);
  }
  if (comm) {  // rank 0's weights everywhere, then gradients averaged as the backward pass goes
    std::vector<torch::Tensor> state = model->parameters();
    for (const auto& b : model->buffers()) state.push_back(b);
    comm->broadcast(state);
    comm->attach_gradients(model->parameters());
    if (c.sync_batch_norm) model->set_batch_norm_sum([comm](torch::Tensor& t) { comm->sum_in_place(t); });
  }
  const qat::ConvPrecision precision = training_conv_precision(c, device);
  model->set_conv_precision(precision);
  model->train();
  // The teacher: the configuration's architecture in full precision, frozen, in eval mode.
  qat::Network teacher{nullptr};
  if (!c.teacher.empty()) {
    TrainConfig fp = c;
    fp.kind = "fp";
    fp.layers.clear();
    teacher = build_model(fp, info);
    log << "teacher: ";
    initialise_from(teacher, c.teacher, c.teacher_key, log);
    teacher->to(device);
    teacher->eval();
    for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  }

  const int64_t steps_per_epoch = c.max_steps_per_epoch > 0
                                      ? std::min<int64_t>(c.max_steps_per_epoch, train_loader.batches_per_epoch())
                                      : static_cast<int64_t>(train_loader.batches_per_epoch());
  const bool tty = ::isatty(STDOUT_FILENO);
  log << "training " << model->graph().arch << " "
      << (c.quantized() ? c.kind + " W" + std::to_string(c.weight_bits) + "A" + std::to_string(c.act_bits) : "fp32")
      << " on " << spec.text() << ": " << train_indices.size() << " train / " << val_indices.size() << " validation / "
      << test_set->size() << " test examples, " << c.epochs << " epochs of " << steps_per_epoch << " steps"
      << (device.is_cuda() ? ", on " + device.str() : std::string())
      << (precision == qat::ConvPrecision::bf16 ? ", convolutions in bfloat16" : "")
      << (teacher ? ", distilled from " + c.teacher : std::string())
      << (comm ? ", " + std::to_string(world) + " ranks x batch " + std::to_string(c.batch_size) + " = global batch " +
                     std::to_string(world * c.batch_size) + (c.sync_batch_norm ? " (synchronised batch norm)" : "")
               : std::string());
  if (teacher) log << " (weight " << c.distill_weight << ", temperature " << c.temperature << ")";
  log << std::endl;

  for (int64_t epoch = first_epoch; epoch <= c.epochs; ++epoch) {
    const Clock::time_point epoch_start = Clock::now();
    train_loader.start_epoch(epoch);
    double loss_sum = 0;
    int64_t seen = 0, step = 0;
    torch::Tensor correct_on_device = torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device));
    auto correct = [&] { return correct_on_device.item<int64_t>(); };  // read only to print: it waits for a GPU
    double lr_now = c.lr;
    data::Batch batch;
    while (step < steps_per_epoch && train_loader.next(batch)) {
      const double factor = schedule_factor(c, (epoch - 1) + double(step) / steps_per_epoch);
      set_learning_rates(*sgd, c, factor);
      lr_now = c.lr * factor;
      sgd->zero_grad();
      const torch::Tensor images = batch_on(batch.images, device, layout);
      const torch::Tensor labels = batch.labels.to(device, /*non_blocking=*/true);
      const torch::Tensor logits = model(images);
      torch::Tensor teacher_logits;
      if (teacher) {
        torch::NoGradGuard no_grad;
        teacher_logits = teacher(images);
      }
      const torch::Tensor loss =
          training_loss(logits, labels, c.label_smoothing, teacher_logits, c.distill_weight, c.temperature);
      loss.backward();
      if (comm) comm->finish_gradients();
      const double local_loss = loss.item<double>();
      // Every rank sees the same value, so that all stop together on a NaN.
      const double loss_value = comm ? comm->sum({local_loss})[0] / world : local_loss;
      if (!std::isfinite(loss_value))
        throw TrainingError("the loss became " + std::to_string(loss_value) + " at epoch " + std::to_string(epoch) +
                            ", step " + std::to_string(step + 1) + "; stopped; the last good checkpoint is " +
                            (epoch > 1 || resume ? last_path : std::string("(none yet)")) +
                            " (try a lower optim.lr or optim.grad_clip)");
      if (c.grad_clip > 0) torch::nn::utils::clip_grad_norm_(model->parameters(), c.grad_clip);
      sgd->step();
      clamp_alphas(*sgd);
      loss_sum += local_loss * batch.labels.numel();
      correct_on_device += logits.argmax(1).eq(labels).sum();
      seen += batch.labels.numel();
      ++step;
      if (tty && (step % 5 == 0 || step == steps_per_epoch)) {
        const double elapsed = seconds_since(epoch_start);
        const double eta = elapsed / step * (steps_per_epoch - step);
        std::ostringstream line;
        line << "\repoch " << epoch << "/" << c.epochs << " [" << bar(double(step) / steps_per_epoch, 24) << "] "
             << step << "/" << steps_per_epoch << " loss " << std::fixed << std::setprecision(3) << loss_sum / seen
             << " acc " << std::setprecision(1) << 100.0 * correct() / seen << "% lr " << std::setprecision(4) << lr_now
             << " " << std::setprecision(0) << seen / elapsed << " img/s eta " << eta << "s   ";
        log << line.str() << std::flush;
      }
    }
    const double train_seconds = seconds_since(epoch_start);
    if (comm) {  // the epoch's training numbers over every rank
      const auto t = comm->sum({loss_sum, double(correct()), double(seen)});
      loss_sum = t[0];
      correct_on_device.fill_(static_cast<int64_t>(t[1]));
      seen = static_cast<int64_t>(t[2]);
    }
    // Local batch norm leaves each rank its own running statistics: every rank evaluates rank 0's,
    // the ones its checkpoint keeps (as DDP's broadcast_buffers), so that the reported accuracy is
    // the checkpoint's and a resumed job reports what an uninterrupted one does.
    if (comm && !c.sync_batch_norm) comm->broadcast(model->buffers());
    const EvalResult val = val_loader ? reduced(comm, evaluate(model, *val_loader, layout)) : EvalResult{};
    const EvalResult test = reduced(comm, evaluate(model, test_loader, layout));
    const double selection = val_loader ? val.top1 : test.top1;
    const bool improved = selection > summary.best_val_top1;
    if (improved) {
      summary.best_val_top1 = selection;
      summary.best_epoch = epoch;
      summary.test_top1_at_best = test.top1;
    }
    summary.final_test_top1 = test.top1;
    Checkpoint meta{c, info, epoch, {}};
    meta.metrics = {{"val_top1", val.top1},
                    {"test_top1", test.top1},
                    {"best_val_top1", summary.best_val_top1},
                    {"best_epoch", double(summary.best_epoch)},
                    {"test_top1_at_best", summary.test_top1_at_best}};
    if (leader) {
      save_checkpoint(last_path, model, sgd.get(), meta);
      if (improved) save_checkpoint(best_path, model, nullptr, meta);
    }
    nlohmann::json line{{"epoch", epoch},
                        {"train_loss", seen ? loss_sum / seen : 0.0},
                        {"train_top1", seen ? 100.0 * correct() / seen : 0.0},
                        {"val_top1", val.top1},
                        {"val_loss", val.loss},
                        {"test_top1", test.top1},
                        {"test_top5", test.top5},
                        {"lr", lr_now},
                        {"train_seconds", train_seconds},
                        {"images_per_second", train_seconds > 0 ? seen / train_seconds : 0.0},
                        {"elapsed_seconds", seconds_since(start)},
                        {"ranks", world},
                        {"alphas", alpha_values(*model)}};
    if (leader) std::ofstream(metrics_path, std::ios::app) << line.dump() << "\n";
    std::ostringstream msg;
    msg << (tty ? "\r" : "") << "epoch " << epoch << "/" << c.epochs << ": loss " << std::fixed << std::setprecision(4)
        << (seen ? loss_sum / seen : 0.0) << " train " << std::setprecision(2)
        << (seen ? 100.0 * correct() / seen : 0.0) << "% val " << val.top1 << "% test " << test.top1 << "% lr "
        << std::setprecision(5) << lr_now << " (" << std::setprecision(0) << train_seconds << " s, "
        << (train_seconds > 0 ? seen / train_seconds : 0.0) << " img/s)" << (improved ? " *" : "") << "          \n";
    log << msg.str() << std::flush;
    if (c.stop_after_epoch > 0 && epoch >= c.stop_after_epoch && epoch < c.epochs) {
      log << "stopping after epoch " << epoch << " (run.stop_after_epoch); continue with --resume\n";
      break;
    }
  }
  summary.epochs = c.epochs;
  summary.seconds = seconds_since(start);
  nlohmann::json s{{"config", nlohmann::json::parse(config_to_json(c))},
                   {"epochs", summary.epochs},
                   {"best_epoch", summary.best_epoch},
                   {"selected_on", val_loader ? "validation" : "test"},
                   {"best_val_top1", summary.best_val_top1},
                   {"test_top1_at_best", summary.test_top1_at_best},
                   {"final_test_top1", summary.final_test_top1},
                   {"seconds", summary.seconds},
                   {"best_checkpoint", best_path},
                   {"last_checkpoint", last_path}};
  const std::string summary_path = (fs::path(out_dir) / "summary.json").string();
  if (leader) {
    std::ofstream(summary_path + ".tmp") << s.dump(2) << "\n";
    fs::rename(summary_path + ".tmp", summary_path);
  }
  return summary;
}

}  // namespace apot::train
