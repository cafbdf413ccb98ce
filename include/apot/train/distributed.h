// Data-parallel training on torch.distributed (c10d): a TCPStore rendezvous and a Gloo process
// group. Each rank trains on its shard of every global batch; the gradients are averaged over the
// ranks in flattened buckets, each all-reduced asynchronously as soon as the backward pass has
// filled it, so that communication overlaps the rest of the backward pass.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace apot::train {

class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct DistributedOptions {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // torchrun's agent already hosts the store at MASTER_ADDR:MASTER_PORT: every rank connects to
  // it as a client, under torchrun's prefix (TORCHELASTIC_USE_AGENT_STORE=True).
  bool agent_store = false;
  int restart_count = 0;  // TORCHELASTIC_RESTART_COUNT: the attempt, in torchrun's prefix
  std::chrono::milliseconds timeout{60000};
  bool enabled() const { return world_size > 1; }
};

// torchrun's variables: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT,
// TORCHELASTIC_USE_AGENT_STORE, TORCHELASTIC_RESTART_COUNT; and APOT_DIST_TIMEOUT (seconds, default
// 60). Without WORLD_SIZE: one process. Throws DistributedError on malformed values.
DistributedOptions distributed_from_env();

// A TCP port on 127.0.0.1 that is free now (the kernel's choice), for a job on this host.
int free_local_port();

class Communicator {
 public:
  // The rendezvous: rank 0 hosts the store (unless torchrun's agent does), every rank waits for
  // all the others for at most the timeout. Errors (port in use, master unreachable, a rank
  // missing) are one DistributedError line.
  explicit Communicator(const DistributedOptions& options);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  const DistributedOptions& options() const { return options_; }

  // Copies rank 0's values into every rank's tensors (parameters and buffers at the start).
  void broadcast(const std::vector<torch::Tensor>& tensors);
  // Element-wise sums over the ranks.
  std::vector<double> sum(const std::vector<double>& values);
  // Element-wise sums over the ranks, in place (synchronised batch norm; CPU tensors with Gloo).
  void sum_in_place(torch::Tensor& t);
  // Throws DistributedError naming `what` unless every rank passes the same text.
  void check_same(const std::string& what, const std::string& text);

  // Hooks on `parameters` (each used once per forward pass) that all-reduce their gradients in
  // buckets of about `bucket_bytes` as the backward pass produces them.
  void attach_gradients(const std::vector<torch::Tensor>& parameters, size_t bucket_bytes = 25u << 20);
  // After backward(): waits for every bucket and writes the averaged gradients to .grad().
  void finish_gradients();

 private:
  struct Impl;
  DistributedOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace apot::train
