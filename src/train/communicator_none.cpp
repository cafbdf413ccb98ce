// Builds whose LibTorch comes without c10d's Gloo headers: one process only. Every entry point
// says so (the constructor throws, so the others are never reached).
#include "apot/train/distributed.h"

namespace apot::train {

struct Communicator::Impl {};

Communicator::Communicator(const DistributedOptions& options) : options_(options) {
  throw DistributedError("this build of apot has no data-parallel training (c10d's Gloo headers were not found)");
}
Communicator::~Communicator() = default;
void Communicator::broadcast(const std::vector<torch::Tensor>&) {}
std::vector<double> Communicator::sum(const std::vector<double>& values) { return values; }
void Communicator::sum_in_place(torch::Tensor&) {}
void Communicator::check_same(const std::string&, const std::string&) {}
void Communicator::attach_gradients(const std::vector<torch::Tensor>&, size_t) {}
void Communicator::finish_gradients() {}

}  // namespace apot::train
