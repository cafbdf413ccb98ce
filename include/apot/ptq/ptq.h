// Post-training quantisation (`apot quantize`): a trained full-precision model and a few hundred
// calibration images become a quantised checkpoint without training. Methods, each a step on the
// one before:
//   minmax  weight alphas from the largest weight magnitude, activation alphas from the largest
//           input seen on the calibration images;
//   mse     weight alphas (per channel where the recipe says) and activation alphas by a grid
//           search for the least squared quantisation error, layer by layer on the inputs the
//           already-quantised layers before it give, then batch-norm re-estimation on the
//           calibration images and bias correction of layers with a bias and no batch norm;
//   recon   mse's alphas (without the batch-norm and bias steps), then block-wise reconstruction
//           with learned rounding (reconstruct below).
// Weights are quantised without weight normalisation (alphas in weight units): normalising would
// rescale each layer's output and the trained batch norms would no longer fit it.
// The result is an ordinary checkpoint (epoch 0): eval, export, run --compare and train --set
// init= take it.
#pragma once

#include <cmath>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "apot/qat/network.h"
#include "apot/train/config.h"
#include "apot/train/trainer.h"

namespace apot::ptq {

enum class Method { minmax, mse, recon };
Method parse_method(const std::string& name);  // "minmax" | "mse" | "recon"; std::invalid_argument otherwise
const char* to_string(Method method);

struct Options {
  Method method = Method::mse;
  int calib = 1024;             // calibration images, drawn from the training split by the recipe's seed
  int batch = 128;              // images per forward pass
  int grid = 100;               // candidate alphas per search: k / grid of the largest value, k = 1..grid
  bool batch_norm = true;       // mse: re-estimate batch-norm statistics
  bool bias_correction = true;  // mse: correct the mean output error of layers with a bias and no batch norm
  bool sensitivity = false;     // quantize(): also each layer's sensitivity (below)
  // recon:
  int iters = 400;         // optimiser steps per block
  int recon_batch = 32;    // images per step
  double round_lr = 1e-2;  // Adam learning rate of the rounding variables
  double alpha_lr = 1e-3;  // and of the activation alphas
  double drop = 0;         // QDrop: the probability of leaving an input element of a block's layer
                           // unquantised while its rounding is learned (0: off; QDrop uses 0.5)
  uint64_t seed = 1;       // of the images each step draws
};

// What calibration chose for one weight layer.
struct LayerCalibration {
  std::string name, quant;
  double weight_alpha = 0, act_alpha = 0;  // 0 where not quantised; per-channel alphas as their mean
  // Of the chosen alphas (NaN where not quantised, and for recon's learned activation alphas).
  double weight_sqnr_db = NAN, act_sqnr_db = NAN;
};

// Sets the alphas of every quantised layer of `model` (and, for mse, its batch norms and biases)
// from calibration `images` (N x C x H x W, normalised). `progress(done, total, layer)` is called
// after each layer.
std::vector<LayerCalibration> calibrate(qat::NetworkImpl& model, const torch::Tensor& images, const Options& options,
                                        const std::function<void(int, int, const std::string&)>& progress = {});

// One layer quantised alone (the others full precision), calibrated with the same method: its
// output SQNR on the calibration images and the test top-1, to choose mixed precision by.
struct Sensitivity {
  std::string name, quant;
  // change: in points, against every layer in float calibrated alike (Result::sensitivity_baseline_top1)
  double output_sqnr_db = NAN, top1 = 0, top1_change = 0;
};

// The blocks of reconstruction as node ranges [first, last]: the nodes up to and including each
// add node, then the nodes after the last one.
std::vector<std::pair<int, int>> reconstruction_blocks(const graph::Graph& graph);
// Learns the rounding of every quantised weight (between its two nearest levels) and the
// activation alphas, block by block, so that each block of `model` on the calibration images
// (its input from the quantised blocks before it) matches the same block of `reference` (full
// precision, same weights); the weights are then set to their rounded values. `progress(block,
// blocks, what)` after each block.
void reconstruct(qat::NetworkImpl& model, qat::NetworkImpl& reference, const torch::Tensor& images,
                 const Options& options, const std::function<void(int, int, const std::string&)>& progress = {});

struct Result {
  std::vector<LayerCalibration> layers;
  std::vector<Sensitivity> sensitivity;  // with Options::sensitivity
  double sensitivity_baseline_top1 = NAN;
  train::EvalResult test;
  int64_t calibration_images = 0;
  double seconds = 0;  // calibration alone
};

// The whole flow: the data of `config` (calibration images from its training split, evaluation
// on its test split), its model with its quantisation policy, weights from config.init, calibrate,
// evaluate, and write the checkpoint to `out` (atomically; nothing is written on error).
Result quantize(const train::TrainConfig& config, const Options& options, const std::string& out, std::ostream& log);

}  // namespace apot::ptq
