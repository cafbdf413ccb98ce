// c10d rendezvous, Gloo collectives and bucketed gradient averaging (include/apot/train/distributed.h).
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <functional>
#include <mutex>

#include "apot/train/distributed.h"

namespace apot::train {
namespace {

// The first line of an exception's text (c10 errors append a backtrace).
std::string first_line(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string text = c10_error ? c10_error->what_without_backtrace() : e.what();
  const size_t newline = text.find('\n');
  return newline == std::string::npos ? text : text.substr(0, newline);
}

bool is_loopback(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1"; }

}  // namespace

struct Communicator::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;

  struct Slot {
    size_t bucket = 0;
    int64_t offset = 0;
    int calls = 0;
  };
  struct Bucket {
    torch::Tensor flat;
    std::vector<size_t> members;
    size_t pending = 0;
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::vector<torch::Tensor> parameters;
  std::vector<Slot> slots;
  std::vector<Bucket> buckets;
  std::mutex mutex;  // hooks may run on the autograd engine's threads

  void launch(Bucket& b) {
    std::vector<at::Tensor> tensors{b.flat};
    b.work = group->allreduce(tensors);
  }

  void ready(size_t index, const torch::Tensor& grad) {
    std::lock_guard<std::mutex> lock(mutex);
    Slot& s = slots[index];
    if (++s.calls > 1)
      throw DistributedError(
          "a parameter received two gradients in one step (used twice in the forward pass); "
          "data-parallel training needs each parameter used once");
    Bucket& b = buckets[s.bucket];
    b.flat.narrow(0, s.offset, grad.numel()).copy_(grad.reshape(-1));
    if (--b.pending == 0) launch(b);
  }
};

Communicator::Communicator(const DistributedOptions& options) : options_(options), impl_(std::make_unique<Impl>()) {
  const std::string where = options.master_addr + ":" + std::to_string(options.master_port);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(options.master_port);
    so.isServer = options.rank == 0 && !options.agent_store;
    so.numWorkers = static_cast<size_t>(options.world_size);
    // As torch.distributed does: every rank counts itself in, and rank 0's store waits for all of
    // them (a rank that only connects is not counted, and the server would wait out its timeout).
    so.waitWorkers = !options.agent_store;
    so.timeout = options.timeout;
    c10::intrusive_ptr<c10d::Store> tcp = c10::make_intrusive<c10d::TCPStore>(options.master_addr, so);
    if (options.agent_store)
      impl_->store =
          c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(options.restart_count), tcp);
    else impl_->store = tcp;
  } catch (const std::exception& e) {
    throw DistributedError("rank " + std::to_string(options.rank) + ": rendezvous at " + where + " failed (" +
                           first_line(e) + ")");
  }
  try {
    auto gloo = c10d::ProcessGroupGloo::Options::create(options.timeout);
    if (const char* iface = std::getenv("GLOO_SOCKET_IFNAME"); iface && *iface)
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
    else if (is_loopback(options.master_addr))
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else gloo->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    gloo->threads = 2;
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, options.rank, options.world_size, gloo);
  } catch (const std::exception& e) {
    throw DistributedError("rank " + std::to_string(options.rank) + ": Gloo process group of " +
                           std::to_string(options.world_size) + " ranks at " + where + " failed (" + first_line(e) +
                           ")");
  }
}

Communicator::~Communicator() = default;

namespace {
void wait_for(c10d::Work& work, int rank, const char* what) {
  try {
    work.wait();
  } catch (const std::exception& e) {
    throw DistributedError("rank " + std::to_string(rank) + ": " + what + " failed: another rank stopped or hangs (" +
                           first_line(e) + ")");
  }
}
}  // namespace

void Communicator::broadcast(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& t : tensors) {
    std::vector<at::Tensor> one{t.contiguous()};
    wait_for(*impl_->group->broadcast(one), rank(), "broadcast");
    if (!one[0].is_same(t)) t.copy_(one[0]);
  }
}

std::vector<double> Communicator::sum(const std::vector<double>& values) {
  std::vector<at::Tensor> one{torch::tensor(values, torch::kFloat64)};
  wait_for(*impl_->group->allreduce(one), rank(), "all-reduce");
  const torch::Tensor& r = one[0];
  return std::vector<double>(r.data_ptr<double>(), r.data_ptr<double>() + r.numel());
}

void Communicator::sum_in_place(torch::Tensor& t) {
  std::vector<at::Tensor> one{t.contiguous()};
  wait_for(*impl_->group->allreduce(one), rank(), "all-reduce");
  if (!one[0].is_same(t)) t.copy_(one[0]);
}

void Communicator::check_same(const std::string& what, const std::string& text) {
  const auto h = static_cast<int64_t>(std::hash<std::string>{}(text) >> 1);
  std::vector<at::Tensor> low{torch::tensor({h})}, high{torch::tensor({h})};
  c10d::AllreduceOptions min_op, max_op;
  min_op.reduceOp = c10d::ReduceOp::MIN;
  max_op.reduceOp = c10d::ReduceOp::MAX;
  wait_for(*impl_->group->allreduce(low, min_op), rank(), "all-reduce");
  wait_for(*impl_->group->allreduce(high, max_op), rank(), "all-reduce");
  if (low[0].item<int64_t>() != high[0].item<int64_t>())
    throw DistributedError("the ranks were started with different " + what);
}

void Communicator::attach_gradients(const std::vector<torch::Tensor>& parameters, size_t bucket_bytes) {
  Impl& s = *impl_;
  s.parameters.clear();
  for (const torch::Tensor& p : parameters)
    if (p.requires_grad()) s.parameters.push_back(p);
  s.slots.assign(s.parameters.size(), {});
  s.buckets.clear();
  // The backward pass produces the last layers' gradients first: fill buckets from the end.
  size_t bytes = 0;
  for (size_t k = s.parameters.size(); k-- > 0;) {
    const torch::Tensor& p = s.parameters[k];
    const size_t size = static_cast<size_t>(p.numel()) * p.element_size();
    if (s.buckets.empty() || bytes + size > bucket_bytes) {
      s.buckets.emplace_back();
      bytes = 0;
    }
    Impl::Bucket& b = s.buckets.back();
    s.slots[k] = {s.buckets.size() - 1, 0, 0};
    for (size_t m : b.members) s.slots[k].offset += s.parameters[m].numel();
    b.members.push_back(k);
    bytes += size;
  }
  for (Impl::Bucket& b : s.buckets) {
    int64_t numel = 0;
    for (size_t m : b.members) numel += s.parameters[m].numel();
    const torch::Tensor& first = s.parameters[b.members.front()];
    b.flat = torch::zeros({numel}, first.options().requires_grad(false));
    b.pending = b.members.size();
  }
  Impl* impl = impl_.get();
  for (size_t k = 0; k < s.parameters.size(); ++k)
    s.parameters[k].register_hook([impl, k](const torch::Tensor& grad) { impl->ready(k, grad); });
}

void Communicator::finish_gradients() {
  Impl& s = *impl_;
  torch::NoGradGuard no_grad;
  // Buckets that are not complete (a parameter that got no gradient this step: an unused layer,
  // or the thresholds of an int8 layer) go last, in order, with zeros in those places, so that
  // every rank issues the same collectives in the same order; those parameters keep no gradient.
  for (Impl::Bucket& b : s.buckets)
    if (!b.work) s.launch(b);
  for (Impl::Bucket& b : s.buckets) {
    wait_for(*b.work, rank(), "gradient all-reduce");
    b.flat.div_(world_size());
    for (size_t m : b.members) {
      torch::Tensor& p = s.parameters[m];
      if (s.slots[m].calls == 0) continue;  // no gradient (a threshold the layer does not use): as one process
      const torch::Tensor average = b.flat.narrow(0, s.slots[m].offset, p.numel()).view_as(p);
      if (p.grad().defined()) p.mutable_grad().copy_(average);
      else p.mutable_grad() = average.clone();
    }
    b.flat.zero_();
    b.pending = b.members.size();
    b.work.reset();
  }
  for (Impl::Slot& slot : s.slots) slot.calls = 0;
}

}  // namespace apot::train
