// A multi-threaded batch loader: worker threads decode and transform images into float
// batches ahead of the consumer. Shuffling and augmentation depend only on (seed, epoch,
// sample), so the same seed gives the same batches whatever the number of workers.
#pragma once

#include <torch/torch.h>

#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "apot/data/dataset.h"
#include "apot/data/transforms.h"

namespace apot::data {

struct LoaderOptions {
  int batch_size = 128;
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  int workers = 2;
  int prefetch = 4;         // batches prepared ahead of the consumer
  bool pin_memory = false;  // page-locked batches (only with a CUDA build)
  // Data parallel: each epoch's order is cut into global batches of batch_size * shard_count
  // examples, and this loader returns part shard_index of each (batch_size examples). With
  // drop_last, the shards of a global batch are the batches that one loader of batch_size *
  // shard_count would return, in order.
  int shard_index = 0, shard_count = 1;
  TransformOptions transform;
};

struct Batch {
  torch::Tensor images;  // [B, C, H, W] float32
  torch::Tensor labels;  // [B] int64
  int64_t index = 0;     // batch number within the epoch
};

class Loader {
 public:
  // indices: the examples of `dataset` to use (empty: all of them).
  Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions options, std::vector<size_t> indices = {});
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  void start_epoch(int64_t epoch);
  // The next batch of the epoch in order; false at the end. Errors of a worker (a corrupt file)
  // are rethrown here.
  bool next(Batch& batch);

  size_t size() const { return indices_.size(); }
  size_t batches_per_epoch() const;
  const Dataset& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return options_; }
  // Shape of one transformed example: {C, H, W}.
  std::vector<int64_t> example_shape() const { return shape_; }

 private:
  void stop_workers();
  void worker_loop();
  Batch build_batch(int64_t b) const;

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
  std::vector<size_t> indices_;
  std::vector<int64_t> shape_;
  // Per epoch:
  int64_t epoch_ = 0;
  std::vector<size_t> order_;
  int64_t num_batches_ = 0, next_to_build_ = 0, next_to_return_ = 0;
  bool stopping_ = false;
  std::map<int64_t, Batch> ready_;
  std::map<int64_t, std::exception_ptr> failed_;
  std::mutex mutex_;
  std::condition_variable work_cv_, ready_cv_;
  std::vector<std::thread> workers_;
};

}  // namespace apot::data
