// Reading what torch.save writes, without Python: a small, tolerant pickle machine that knows
// the few classes a checkpoint's tensors are made of (storages, _rebuild_tensor_v2,
// OrderedDict) and keeps every other class as an opaque object, so that an optimiser state,
// an argparse.Namespace or a numpy scalar in a checkpoint never makes reading fail. Both
// containers torch.save has used are read: the zip file (PyTorch >= 1.6) and the legacy
// sequence of pickles followed by raw storages. Then find_state_dict picks the state dict out
// of whatever wraps it ({'state_dict': ...}, {'model': ...}, DataParallel's "module." names).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace apot::qat {

namespace detail {
class PickleMachine;
}

struct PickleValue;
using PickleValuePtr = std::shared_ptr<PickleValue>;

// One value of an unpickled object graph. Containers may share children (the pickle memo)
// but never form cycles, and nest at most kMaxPickleDepth deep: the reader rejects both, so
// walking a value recursively always ends.
struct PickleValue {
  enum class Kind {
    None,
    Bool,
    Int,
    BigInt,
    Float,
    String,
    Bytes,
    List,
    Tuple,
    Dict,
    Tensor,   // a tensor (always on the CPU, owning or sharing its storage)
    Storage,  // a storage that no tensor wrapped; `tensor` is a 1-D tensor over all of it
    Global,   // a class or function named by the pickle ("collections.OrderedDict")
    Object,   // an instance of any other class, kept opaque
  };
  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0.0;
  // String: UTF-8. Bytes: raw. BigInt (an int beyond 64 bits): little-endian two's complement.
  // Global: "module.name". Object: "module.name" of the class or function that made it.
  std::string text;
  std::vector<PickleValuePtr> items;                               // List, Tuple; Object: its arguments
  std::vector<std::pair<PickleValuePtr, PickleValuePtr>> entries;  // Dict (in order); Object: items set on it
  PickleValuePtr state;                                            // Object: what BUILD gave it
  torch::Tensor tensor;                                            // Tensor, Storage

  // The value under a string key of a Dict; nullptr if there is none or this is not a Dict.
  const PickleValue* get(const std::string& key) const;
  // For error messages: "dict (12 entries)", "tensor Float [8, 1, 3, 3]", "argparse.Namespace".
  std::string describe() const;

 private:
  friend class detail::PickleMachine;
  int height_ = 0;          // levels of containers below this one
  bool contained_ = false;  // inside another container: no longer mutable (no cycles)
};

constexpr int kMaxPickleDepth = 200;

// What torch.load(path, map_location="cpu") returns. Throws std::runtime_error, one line
// naming the file and what is wrong (not a torch.save file, truncated, unknown opcode, ...).
PickleValuePtr read_torch_file(const std::string& path);
// The same for a file's bytes in memory; `source` names them in errors.
PickleValuePtr read_torch_bytes(const void* data, size_t size, const std::string& source);

// The state dict (parameter and buffer name -> tensor) in what read_torch_file returned: the
// value itself if it is a dictionary of tensors, otherwise the one dictionary of tensors
// among its entries or under the usual wrapper keys (state_dict, model_state_dict, model,
// net, state, network). `key` picks one explicitly ("ema", or dotted: "checkpoint.model");
// several candidates without a key is an error listing them. One leading "module." is
// removed from every name (DataParallel, DistributedDataParallel). Errors name `source`.
std::map<std::string, torch::Tensor> find_state_dict(const PickleValue& root, const std::string& key,
                                                     const std::string& source);

}  // namespace apot::qat
