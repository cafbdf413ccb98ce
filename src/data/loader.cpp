// The batch loader: per-epoch worker threads, an ordered hand-over and bounded prefetch.
#include "apot/data/loader.h"

#include <algorithm>

namespace apot::data {

Loader::Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions options, std::vector<size_t> indices)
    : dataset_(std::move(dataset)), options_(std::move(options)), indices_(std::move(indices)) {
  options_.transform.validate();
  if (options_.batch_size < 1) throw DataError("batch size must be at least 1");
  if (options_.shard_count < 1 || options_.shard_index < 0 || options_.shard_index >= options_.shard_count)
    throw DataError("shard " + std::to_string(options_.shard_index) + " of " + std::to_string(options_.shard_count) +
                    " does not exist");
  if (options_.workers < 1) options_.workers = 1;
  if (options_.prefetch < 1) options_.prefetch = 1;
  if (indices_.empty()) {
    indices_.resize(dataset_->size());
    for (size_t i = 0; i < indices_.size(); ++i) indices_[i] = i;
  }
  for (size_t i : indices_)
    if (i >= dataset_->size()) throw DataError(dataset_->description() + ": example index out of range");
  if (indices_.empty()) throw DataError(dataset_->description() + ": no examples");
  const Image first = transform_image(dataset_->get(indices_[0]).image, options_.transform, 0);
  shape_ = {first.channels, first.height, first.width};
}

Loader::~Loader() { stop_workers(); }

size_t Loader::batches_per_epoch() const {
  const size_t b = static_cast<size_t>(options_.batch_size) * static_cast<size_t>(options_.shard_count);
  return options_.drop_last ? indices_.size() / b : (indices_.size() + b - 1) / b;
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

void Loader::start_epoch(int64_t epoch) {
  stop_workers();
  epoch_ = epoch;
  order_ = indices_;
  if (options_.shuffle) {  // Fisher-Yates with our own generator: the same order on every platform
    SampleRng rng(mix_seed(options_.seed, static_cast<uint64_t>(epoch)));
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.next() % i]);
  }
  num_batches_ = static_cast<int64_t>(batches_per_epoch());
  next_to_build_ = next_to_return_ = 0;
  ready_.clear();
  failed_.clear();
  stopping_ = false;
  for (int w = 0; w < options_.workers; ++w) workers_.emplace_back([this] { worker_loop(); });
}

Batch Loader::build_batch(int64_t b) const {
  const size_t shard = static_cast<size_t>(options_.batch_size);
  const size_t begin =
      std::min(order_.size(), (static_cast<size_t>(b) * options_.shard_count + options_.shard_index) * shard);
  const size_t end = std::min(order_.size(), begin + shard);
  const int64_t count = static_cast<int64_t>(end - begin);
  Batch batch;
  batch.index = b;
  batch.images = torch::empty({count, shape_[0], shape_[1], shape_[2]});
  batch.labels = torch::empty({count}, torch::kLong);
  float* images = batch.images.data_ptr<float>();
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  const size_t per_image = static_cast<size_t>(shape_[0] * shape_[1] * shape_[2]);
  for (int64_t k = 0; k < count; ++k) {
    const size_t index = order_[begin + k];
    const Example e = dataset_->get(index);
    const uint64_t seed = mix_seed(mix_seed(options_.seed, static_cast<uint64_t>(epoch_)), index);
    const Image img = transform_image(e.image, options_.transform, seed);
    if (img.channels != shape_[0] || img.height != shape_[1] || img.width != shape_[2])
      throw DataError(dataset_->description() + ": example " + std::to_string(index) + " has shape " +
                      std::to_string(img.channels) + "x" + std::to_string(img.height) + "x" +
                      std::to_string(img.width) + " after the transforms, the first had " + std::to_string(shape_[0]) +
                      "x" + std::to_string(shape_[1]) + "x" + std::to_string(shape_[2]) + " (set a crop size)");
    to_normalised_chw(img, options_.transform, images + k * per_image);
    labels[k] = e.label;
  }
  if (options_.pin_memory && torch::cuda::is_available()) {
    batch.images = batch.images.pin_memory();
    batch.labels = batch.labels.pin_memory();
  }
  return batch;
}

void Loader::worker_loop() {
  for (;;) {
    int64_t b;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_cv_.wait(lock, [&] {
        return stopping_ || next_to_build_ >= num_batches_ || next_to_build_ < next_to_return_ + options_.prefetch;
      });
      if (stopping_ || next_to_build_ >= num_batches_) return;
      b = next_to_build_++;
    }
    try {
      Batch batch = build_batch(b);
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(b, std::move(batch));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      failed_.emplace(b, std::current_exception());
    }
    ready_cv_.notify_all();
  }
}

bool Loader::next(Batch& batch) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (workers_.empty()) throw DataError("Loader::next called before start_epoch");
  if (next_to_return_ >= num_batches_) return false;
  const int64_t want = next_to_return_;
  ready_cv_.wait(lock, [&] { return ready_.count(want) || failed_.count(want); });
  if (auto f = failed_.find(want); f != failed_.end()) {
    const std::exception_ptr error = f->second;
    lock.unlock();
    stop_workers();
    std::rethrow_exception(error);
  }
  batch = std::move(ready_[want]);
  ready_.erase(want);
  ++next_to_return_;
  lock.unlock();
  work_cv_.notify_all();
  return true;
}

}  // namespace apot::data
