// The pickle virtual machine behind torch_file.h (private to src/qat): it runs one pickle of
// the protocols torch.save uses into PickleValues, rebuilding tensors from the storages its
// caller resolves. Untrusted input: every length is checked against the bytes left, and the
// value graph is kept acyclic and shallow (see adopt), so that walking it always ends.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "apot/qat/torch_file.h"

namespace apot::qat::detail {

// Throws the std::runtime_error "<source>: <what>".
[[noreturn]] void fail(const std::string& source, const std::string& what);
// Text from the file (or from LibTorch's messages) made fit for a one-line error: the first
// line only, control bytes escaped, the length capped.
std::string printable(const std::string& s, size_t limit = 80);
uint64_t read_le(const uint8_t* p, size_t n);
bool starts_with(const std::string& s, const std::string& prefix);
bool ends_with(const std::string& s, const std::string& suffix);

class PickleMachine {
 public:
  // Resolves a persistent id (torch.save's storages) to a PickleValue of kind Storage.
  using PersistentLoad = std::function<PickleValuePtr(const PickleValue& id)>;

  // `where` follows byte positions in errors (" of data.pkl"); without `load` a persistent id
  // is an error.
  PickleMachine(const uint8_t* data, size_t size, std::string source, std::string where, PersistentLoad load);

  // Runs the pickle that starts at `pos` up to its STOP; returns its object and moves `pos`
  // past the STOP. Memo and stack start empty, as for each pickle.load.
  PickleValuePtr run(size_t& pos);

 private:
  using Kind = PickleValue::Kind;

  [[noreturn]] void corrupt(const std::string& what) const;
  const uint8_t* take(uint64_t n);
  uint64_t take_le(size_t n) { return read_le(take(n), n); }
  std::string take_string(uint64_t n);
  std::string take_line();

  PickleValuePtr make(Kind kind);
  PickleValuePtr make_bool(bool b);
  PickleValuePtr make_int(int64_t i);
  PickleValuePtr make_float(double d);
  PickleValuePtr make_text(Kind kind, std::string text);
  PickleValuePtr make_tuple(const std::vector<PickleValuePtr>& items);
  PickleValuePtr make_long(const std::string& bytes);
  PickleValuePtr parse_text_int(std::string line);
  PickleValuePtr persistent_load(const PickleValuePtr& id);

  void adopt(PickleValue& parent, const PickleValuePtr& child);
  PickleValue& mutable_container(const PickleValuePtr& v);
  void add_items(PickleValue& list, const std::vector<PickleValuePtr>& items);
  void add_entries(PickleValue& dict, const std::vector<PickleValuePtr>& flat);

  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  PickleValuePtr pop();
  const PickleValuePtr& top() const;
  std::vector<PickleValuePtr> pop_to_mark();
  void push(PickleValuePtr v) { stack_.push_back(std::move(v)); }
  void memo_put(uint64_t index);
  void memo_get(uint64_t index);

  void step(uint8_t op);
  PickleValuePtr call(const PickleValuePtr& func, const PickleValuePtr& args);
  PickleValuePtr rebuild_tensor(const std::vector<PickleValuePtr>& args, std::optional<c10::ScalarType> type);

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t op_at_ = 0;  // where the opcode being run starts, for errors
  std::string source_, where_;
  PersistentLoad load_;
  std::vector<PickleValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValuePtr> memo_;
  size_t values_made_ = 0;
};

}  // namespace apot::qat::detail
