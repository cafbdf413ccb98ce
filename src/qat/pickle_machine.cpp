// The pickle virtual machine: opcodes of protocols 0 to 5 into PickleValues, and the few
// functions a checkpoint's contents are made with (tensor rebuilds, OrderedDict, ...).
#include "pickle_machine.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>

namespace apot::qat::detail {

namespace {

// Far beyond any checkpoint, small enough that a hostile file cannot exhaust memory with them.
constexpr size_t kMaxValues = size_t{1} << 22;
constexpr size_t kMaxStack = size_t{1} << 20;
constexpr size_t kMaxDims = 64;

// torch.float32 and its aliases, as _rebuild_tensor_v3 names the element type.
std::optional<c10::ScalarType> dtype_scalar_type(const std::string& name) {
  static const std::map<std::string, c10::ScalarType> types{{"torch.float32", c10::kFloat},
                                                            {"torch.float", c10::kFloat},
                                                            {"torch.float64", c10::kDouble},
                                                            {"torch.double", c10::kDouble},
                                                            {"torch.float16", c10::kHalf},
                                                            {"torch.half", c10::kHalf},
                                                            {"torch.bfloat16", c10::kBFloat16},
                                                            {"torch.int64", c10::kLong},
                                                            {"torch.long", c10::kLong},
                                                            {"torch.int32", c10::kInt},
                                                            {"torch.int", c10::kInt},
                                                            {"torch.int16", c10::kShort},
                                                            {"torch.short", c10::kShort},
                                                            {"torch.int8", c10::kChar},
                                                            {"torch.uint8", c10::kByte},
                                                            {"torch.bool", c10::kBool},
                                                            {"torch.complex64", c10::kComplexFloat},
                                                            {"torch.complex128", c10::kComplexDouble}};
  const auto it = types.find(name);
  if (it == types.end()) return std::nullopt;
  return it->second;
}

}  // namespace

void fail(const std::string& source, const std::string& what) { throw std::runtime_error(source + ": " + what); }

std::string printable(const std::string& s, size_t limit) {
  std::string out;
  for (const char ch : s.substr(0, s.find('\n'))) {
    if (out.size() >= limit) return out + "...";
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c != 0x7f) {
      out += ch;
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    }
  }
  return out;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

uint64_t read_le(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

PickleMachine::PickleMachine(const uint8_t* data, size_t size, std::string source, std::string where,
                             PersistentLoad load)
    : data_(data), size_(size), source_(std::move(source)), where_(std::move(where)), load_(std::move(load)) {}

PickleValuePtr PickleMachine::run(size_t& pos) {
  pos_ = pos;
  stack_.clear();
  marks_.clear();
  memo_.clear();
  while (true) {
    if (pos_ >= size_) fail(source_, "truncated: the pickle" + where_ + " ends before its STOP opcode");
    op_at_ = pos_;
    const uint8_t op = data_[pos_++];
    if (op == '.') {  // STOP
      PickleValuePtr result = pop();
      pos = pos_;
      return result;
    }
    step(op);
    if (stack_.size() + marks_.size() > kMaxStack) corrupt("more values on the stack than any checkpoint needs");
  }
}

void PickleMachine::corrupt(const std::string& what) const {
  fail(source_, "corrupt pickle: " + what + " (at byte " + std::to_string(op_at_) + where_ + ")");
}

const uint8_t* PickleMachine::take(uint64_t n) {
  if (n > size_ - pos_)
    fail(source_, "truncated: an opcode at byte " + std::to_string(op_at_) + where_ + " needs " + std::to_string(n) +
                      " bytes, " + std::to_string(size_ - pos_) + " are left");
  const uint8_t* p = data_ + pos_;
  pos_ += static_cast<size_t>(n);
  return p;
}

std::string PickleMachine::take_string(uint64_t n) {
  const uint8_t* p = take(n);
  return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
}

std::string PickleMachine::take_line() {  // the text opcodes of protocols 0 and 1
  const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
  if (!nl) fail(source_, "truncated: a text opcode at byte " + std::to_string(op_at_) + where_ + " has no end of line");
  const size_t n = static_cast<size_t>(static_cast<const uint8_t*>(nl) - (data_ + pos_));
  std::string line = take_string(n);
  ++pos_;
  return line;
}

PickleValuePtr PickleMachine::make(Kind kind) {
  if (++values_made_ > kMaxValues) corrupt("more values than any checkpoint holds");
  auto v = std::make_shared<PickleValue>();
  v->kind = kind;
  return v;
}

PickleValuePtr PickleMachine::make_int(int64_t i) {
  auto v = make(Kind::Int);
  v->integer = i;
  return v;
}

PickleValuePtr PickleMachine::make_text(Kind kind, std::string text) {
  auto v = make(kind);
  v->text = std::move(text);
  return v;
}

// Every child enters a container through here. A contained value never changes again
// (mutable_container refuses), so a container can only receive values that cannot reach it: the
// object graph stays acyclic and its recorded heights stay exact.
void PickleMachine::adopt(PickleValue& parent, const PickleValuePtr& child) {
  if (child.get() == &parent) corrupt("a container that contains itself");
  child->contained_ = true;
  parent.height_ = std::max(parent.height_, child->height_ + 1);
  if (parent.height_ > kMaxPickleDepth)
    corrupt("containers nested more than " + std::to_string(kMaxPickleDepth) + " deep");
}

PickleValue& PickleMachine::mutable_container(const PickleValuePtr& v) {
  if (v->contained_) corrupt("a container changed after it was placed in another (a cycle)");
  return *v;
}

void PickleMachine::add_items(PickleValue& list, const std::vector<PickleValuePtr>& items) {
  for (const auto& item : items) {
    adopt(list, item);
    list.items.push_back(item);
  }
}

void PickleMachine::add_entries(PickleValue& dict, const std::vector<PickleValuePtr>& flat) {
  if (flat.size() % 2) corrupt("a dictionary update with a key and no value");
  for (size_t i = 0; i < flat.size(); i += 2) {
    adopt(dict, flat[i]);
    adopt(dict, flat[i + 1]);
    dict.entries.emplace_back(flat[i], flat[i + 1]);
  }
}

PickleValuePtr PickleMachine::pop() {
  if (stack_.size() <= floor()) corrupt("stack underflow");
  PickleValuePtr v = std::move(stack_.back());
  stack_.pop_back();
  return v;
}

const PickleValuePtr& PickleMachine::top() const {
  if (stack_.size() <= floor()) corrupt("stack underflow");
  return stack_.back();
}

std::vector<PickleValuePtr> PickleMachine::pop_to_mark() {
  if (marks_.empty()) corrupt("an opcode that needs a MARK without one");
  std::vector<PickleValuePtr> items(
      std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back())),
      std::make_move_iterator(stack_.end()));
  stack_.resize(marks_.back());
  marks_.pop_back();
  return items;
}

void PickleMachine::memo_put(uint64_t index) {
  if (memo_.size() >= kMaxValues) corrupt("more memo entries than any checkpoint holds");
  memo_[index] = top();
}

void PickleMachine::memo_get(uint64_t index) {
  const auto it = memo_.find(index);
  if (it == memo_.end()) corrupt("memo entry " + std::to_string(index) + " read before it was written");
  push(it->second);
}

PickleValuePtr PickleMachine::make_tuple(const std::vector<PickleValuePtr>& items) {
  auto t = make(Kind::Tuple);
  add_items(*t, items);
  return t;
}

// Python's int from little-endian two's complement bytes (LONG1 / LONG4).
PickleValuePtr PickleMachine::make_long(const std::string& bytes) {
  size_t n = bytes.size();
  const bool negative = n && (static_cast<uint8_t>(bytes[n - 1]) & 0x80);
  const char fill = negative ? '\xff' : '\0';
  while (n > 8 && bytes[n - 1] == fill && ((static_cast<uint8_t>(bytes[n - 2]) & 0x80) != 0) == negative) --n;
  if (n > 8) return make_text(Kind::BigInt, bytes.substr(0, n));
  uint64_t v = read_le(reinterpret_cast<const uint8_t*>(bytes.data()), n);
  if (negative && n < 8) v |= ~uint64_t{0} << (8 * n);
  return make_int(static_cast<int64_t>(v));
}

// INT and LONG of protocols 0 and 1, in decimal (the legacy magic number among them).
PickleValuePtr PickleMachine::parse_text_int(std::string line) {
  if (!line.empty() && line.back() == 'L') line.pop_back();
  if (line == "01") return make_bool(true);  // protocol 0 spells True and False as INT
  if (line == "00") return make_bool(false);
  const bool negative = !line.empty() && line[0] == '-';
  const std::string digits = line.substr(negative ? 1 : 0);
  if (digits.empty() || digits.size() > 1000 || digits.find_first_not_of("0123456789") != std::string::npos)
    corrupt("a text integer that is not a number");
  errno = 0;
  const long long v = std::strtoll(line.c_str(), nullptr, 10);
  if (errno != ERANGE) return make_int(v);
  std::string bytes;  // the magnitude, little-endian, then two's complement
  for (const char c : digits) {
    unsigned carry = static_cast<unsigned>(c - '0');
    for (char& byte : bytes) {
      const unsigned x = static_cast<uint8_t>(byte) * 10u + carry;
      byte = static_cast<char>(x & 0xff);
      carry = x >> 8;
    }
    if (carry) bytes += static_cast<char>(carry);
  }
  bytes += '\0';
  if (negative) {
    unsigned carry = 1;
    for (char& byte : bytes) {
      const unsigned x = (~static_cast<uint8_t>(byte) & 0xffu) + carry;
      byte = static_cast<char>(x & 0xff);
      carry = x >> 8;
    }
  }
  return make_long(bytes);
}

PickleValuePtr PickleMachine::make_bool(bool b) {
  auto v = make(Kind::Bool);
  v->boolean = b;
  return v;
}

PickleValuePtr PickleMachine::make_float(double d) {
  auto v = make(Kind::Float);
  v->number = d;
  return v;
}

PickleValuePtr PickleMachine::persistent_load(const PickleValuePtr& id) {
  if (!load_) corrupt("a persistent id (a storage) where none can be");
  return load_(*id);
}

void PickleMachine::step(uint8_t op) {
  switch (op) {
    case 0x80: take(1); return;  // PROTO: every protocol is read the same way here
    case 0x95: take(8); return;  // FRAME: only a buffering hint
    case 'N': push(make(Kind::None)); return;
    case 0x88: push(make_bool(true)); return;
    case 0x89: push(make_bool(false)); return;
    case 'J': push(make_int(static_cast<int32_t>(take_le(4)))); return;  // BININT
    case 'K': push(make_int(static_cast<int64_t>(take_le(1)))); return;  // BININT1
    case 'M': push(make_int(static_cast<int64_t>(take_le(2)))); return;  // BININT2
    case 0x8a: push(make_long(take_string(take_le(1)))); return;         // LONG1
    case 0x8b: {                                                         // LONG4
      const auto n = static_cast<int32_t>(take_le(4));
      if (n < 0) corrupt("a negative length");
      push(make_long(take_string(static_cast<uint64_t>(n))));
      return;
    }
    case 'I':
    case 'L': push(parse_text_int(take_line())); return;  // INT, LONG
    case 'G': {                                           // BINFLOAT: big-endian
      const uint8_t* p = take(8);
      uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = bits << 8 | p[i];
      double d;
      std::memcpy(&d, &bits, sizeof d);
      push(make_float(d));
      return;
    }
    case 'F': push(make_float(std::strtod(take_line().c_str(), nullptr))); return;  // FLOAT
    case 'X': push(make_text(Kind::String, take_string(take_le(4)))); return;       // BINUNICODE
    case 0x8c: push(make_text(Kind::String, take_string(take_le(1)))); return;      // SHORT_BINUNICODE
    case 0x8d: push(make_text(Kind::String, take_string(take_le(8)))); return;      // BINUNICODE8
    case 'V': push(make_text(Kind::String, take_line())); return;                   // UNICODE (escapes kept)
    case 'U': push(make_text(Kind::String, take_string(take_le(1)))); return;       // SHORT_BINSTRING
    case 'T': {                                                                     // BINSTRING
      const auto n = static_cast<int32_t>(take_le(4));
      if (n < 0) corrupt("a negative length");
      push(make_text(Kind::String, take_string(static_cast<uint64_t>(n))));
      return;
    }
    case 'S': {  // STRING: a quoted repr (escapes kept)
      std::string s = take_line();
      if (s.size() >= 2 && (s[0] == '\'' || s[0] == '"') && s.back() == s[0]) s = s.substr(1, s.size() - 2);
      push(make_text(Kind::String, s));
      return;
    }
    case 'C': push(make_text(Kind::Bytes, take_string(take_le(1)))); return;  // SHORT_BINBYTES
    case 'B': push(make_text(Kind::Bytes, take_string(take_le(4)))); return;  // BINBYTES
    case 0x8e:
    case 0x96: push(make_text(Kind::Bytes, take_string(take_le(8)))); return;  // BINBYTES8, BYTEARRAY8
    case '(': marks_.push_back(stack_.size()); return;                         // MARK
    case '0':  // POP: a value, or the mark when none is above it
      if (stack_.size() > floor()) stack_.pop_back();
      else if (!marks_.empty()) marks_.pop_back();
      else corrupt("stack underflow");
      return;
    case '1': pop_to_mark(); return;                                                          // POP_MARK
    case '2': push(top()); return;                                                            // DUP
    case 'q': memo_put(take_le(1)); return;                                                   // BINPUT
    case 'r': memo_put(take_le(4)); return;                                                   // LONG_BINPUT
    case 0x94: memo_put(memo_.size()); return;                                                // MEMOIZE
    case 'p': memo_put(static_cast<uint64_t>(parse_text_int(take_line())->integer)); return;  // PUT
    case 'h': memo_get(take_le(1)); return;                                                   // BINGET
    case 'j': memo_get(take_le(4)); return;                                                   // LONG_BINGET
    case 'g': memo_get(static_cast<uint64_t>(parse_text_int(take_line())->integer)); return;  // GET
    case '}': push(make(Kind::Dict)); return;                                                 // EMPTY_DICT
    case ']':
    case 0x8f: push(make(Kind::List)); return;  // EMPTY_LIST, EMPTY_SET (a set is read as a list)
    case ')': push(make(Kind::Tuple)); return;  // EMPTY_TUPLE
    case 'd': {
      auto d = make(Kind::Dict);
      add_entries(*d, pop_to_mark());
      push(d);
      return;
    }  // DICT
    case 'l':
    case 0x91: {
      auto l = make(Kind::List);
      add_items(*l, pop_to_mark());
      push(l);
      return;
    }                                                   // LIST, FROZENSET
    case 't': push(make_tuple(pop_to_mark())); return;  // TUPLE
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1, TUPLE2, TUPLE3
      std::vector<PickleValuePtr> items(static_cast<size_t>(op - 0x84));
      for (size_t i = items.size(); i-- > 0;) items[i] = pop();
      push(make_tuple(std::move(items)));
      return;
    }
    case 'a':
    case 'e':
    case 0x90: {  // APPEND, APPENDS, ADDITEMS
      std::vector<PickleValuePtr> items;
      if (op == 'a') items.push_back(pop());
      else items = pop_to_mark();
      const PickleValuePtr& target = top();
      if (target->kind == Kind::List) add_items(mutable_container(target), items);
      else if (target->kind != Kind::Object) corrupt("APPEND to " + target->describe());
      // An instance of a list subclass: its items are not kept (no checkpoint needs them).
      return;
    }
    case 's':
    case 'u': {  // SETITEM, SETITEMS
      std::vector<PickleValuePtr> flat;
      if (op == 's') {
        flat.resize(2);
        flat[1] = pop();
        flat[0] = pop();
      } else {
        flat = pop_to_mark();
      }
      const PickleValuePtr& target = top();
      if (target->kind != Kind::Dict && target->kind != Kind::Object) corrupt("SETITEM on " + target->describe());
      add_entries(mutable_container(target), flat);
      return;
    }
    case 'c': {  // GLOBAL
      std::string module = take_line();
      push(make_text(Kind::Global, module + "." + take_line()));
      return;
    }
    case 0x93: {  // STACK_GLOBAL
      const PickleValuePtr name = pop(), module = pop();
      if (name->kind != Kind::String || module->kind != Kind::String) corrupt("STACK_GLOBAL without two strings");
      push(make_text(Kind::Global, module->text + "." + name->text));
      return;
    }
    case 'R': {  // REDUCE
      const PickleValuePtr args = pop(), func = pop();
      push(call(func, args));
      return;
    }
    case 0x81:
    case 0x92: {              // NEWOBJ, NEWOBJ_EX: cls.__new__(cls, *args[, **kwargs])
      if (op == 0x92) pop();  // the keyword arguments
      const PickleValuePtr args = pop(), cls = pop();
      if (args->kind != Kind::Tuple) corrupt("NEWOBJ with arguments that are not a tuple");
      if (cls->kind == Kind::Global && cls->text == "collections.OrderedDict") {
        push(make(Kind::Dict));
        return;
      }
      auto object = make_text(Kind::Object, cls->kind == Kind::Global ? cls->text : "?");
      add_items(*object, args->items);
      push(object);
      return;
    }
    case 'i': {  // INST (protocol 0): module, name, then the arguments above a mark
      std::string module = take_line();
      auto object = make_text(Kind::Object, module + "." + take_line());
      add_items(*object, pop_to_mark());
      push(object);
      return;
    }
    case 'o': {  // OBJ (protocol 1): the class and its arguments above a mark
      std::vector<PickleValuePtr> items = pop_to_mark();
      if (items.empty()) corrupt("OBJ without a class");
      auto object = make_text(Kind::Object, items[0]->kind == Kind::Global ? items[0]->text : "?");
      add_items(*object, std::vector<PickleValuePtr>(items.begin() + 1, items.end()));
      push(object);
      return;
    }
    case 'b': {  // BUILD: the state of an object made by REDUCE or NEWOBJ
      const PickleValuePtr state = pop();
      const PickleValuePtr& target = top();
      // OrderedDict's state is its _metadata attribute and a tensor's its Python attributes:
      // neither matters here. An object keeps the first state it gets.
      if (target->kind == Kind::Object && !target->contained_ && !target->state) {
        adopt(*target, state);
        target->state = state;
      }
      return;
    }
    case 'Q': push(persistent_load(pop())); return;                                 // BINPERSID
    case 'P': push(persistent_load(make_text(Kind::String, take_line()))); return;  // PERSID
    case 0x82:
    case 0x83:
    case 0x84: corrupt("an EXT opcode (copyreg's extension registry), which torch.save never writes");
    case 0x97:
    case 0x98: corrupt("an out-of-band buffer (pickle protocol 5), which torch.save never writes");
    default: {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", op);
      corrupt(std::string("unknown opcode ") + hex);
    }
  }
}

// REDUCE: the few functions a checkpoint's contents are made with; anything else becomes an
// opaque object that remembers its class and arguments.
PickleValuePtr PickleMachine::call(const PickleValuePtr& func, const PickleValuePtr& args) {
  if (args->kind != Kind::Tuple) corrupt("REDUCE with arguments that are not a tuple");
  const std::vector<PickleValuePtr>& a = args->items;
  const std::string name = func->kind == Kind::Global ? func->text : "";
  if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor")
    return rebuild_tensor(a, std::nullopt);
  if (name == "torch._utils._rebuild_tensor_v3") {  // (..., hooks, dtype[, metadata]) on bytes
    if (a.size() < 7 || a[6]->kind != Kind::Global || !dtype_scalar_type(a[6]->text))
      corrupt("_rebuild_tensor_v3 without an element type");
    return rebuild_tensor(a, dtype_scalar_type(a[6]->text));
  }
  if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
    if (a.empty() || a[0]->kind != Kind::Tensor) corrupt("a parameter without its tensor");
    return a[0];
  }
  if (name == "torch._tensor._rebuild_from_type_v2" || name == "torch._tensor._rebuild_from_type") {
    // (function, tensor subclass, its arguments, attributes): the plain tensor is enough.
    if (a.size() < 3) corrupt("_rebuild_from_type without its arguments");
    return call(a[0], a[2]);
  }
  if (name == "collections.OrderedDict" || name == "collections.defaultdict") {
    auto dict = make(Kind::Dict);
    if (name == "collections.OrderedDict" && !a.empty() && a[0]->kind == Kind::List)
      for (const auto& pair : a[0]->items) {  // OrderedDict([(key, value), ...])
        if (pair->items.size() != 2) corrupt("OrderedDict made from something other than pairs");
        add_entries(*dict, pair->items);
      }
    return dict;
  }
  if (name == "torch.jit._pickle.restore_type_tag" ||
      (starts_with(name, "torch.jit._pickle.build_") && name != "torch.jit._pickle.build_tensor_from_id")) {
    // LibTorch's pickler (torch::pickle_save) tags containers with their TorchScript types.
    if (a.empty()) corrupt(printable(name) + " without arguments");
    return a[0];
  }
  if (name == "torch.Size" && !a.empty() && (a[0]->kind == Kind::Tuple || a[0]->kind == Kind::List))
    return make_tuple(a[0]->items);
  if ((name == "builtins.set" || name == "builtins.frozenset" || name == "__builtin__.set") && !a.empty() &&
      a[0]->kind == Kind::List) {
    auto list = make(Kind::List);
    add_items(*list, a[0]->items);
    return list;
  }
  if (name == "_codecs.encode" && a.size() == 2 && a[0]->kind == Kind::String) {
    // How protocol 2 writes bytes: _codecs.encode(text, 'latin1'), text holding code points < 256.
    std::string bytes;
    const std::string& s = a[0]->text;
    for (size_t i = 0; i < s.size(); ++i) {
      const auto c = static_cast<uint8_t>(s[i]);
      if (c < 0x80) bytes += static_cast<char>(c);
      else if ((c & 0xe0) == 0xc0 && i + 1 < s.size())
        bytes += static_cast<char>(((c & 0x1f) << 6) | (static_cast<uint8_t>(s[++i]) & 0x3f));
      else corrupt("bytes encoded as text outside latin-1");
    }
    return make_text(Kind::Bytes, bytes);
  }
  auto object = make_text(Kind::Object, name.empty() ? "?" : name);
  add_items(*object, a);
  return object;
}

// torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks): a view
// of the storage, checked to lie inside it.
PickleValuePtr PickleMachine::rebuild_tensor(const std::vector<PickleValuePtr>& a,
                                             std::optional<c10::ScalarType> type) {
  if (a.size() < 4 || a[0]->kind != Kind::Storage || a[1]->kind != Kind::Int)
    corrupt("a tensor without (storage, offset, size, stride)");
  auto int_list = [&](const PickleValue& v, const char* what) {
    if ((v.kind != Kind::Tuple && v.kind != Kind::List) || v.items.size() > kMaxDims)
      corrupt(std::string("a tensor whose ") + what + " is not a list of at most 64 integers");
    std::vector<int64_t> out;
    for (const auto& item : v.items) {
      if (item->kind != Kind::Int || item->integer < 0 || item->integer > (int64_t{1} << 48))
        corrupt(std::string("a tensor whose ") + what + " holds " + item->describe());
      out.push_back(item->integer);
    }
    return out;
  };
  const std::vector<int64_t> sizes = int_list(*a[2], "size"), strides = int_list(*a[3], "stride");
  if (sizes.size() != strides.size()) corrupt("a tensor with as many strides as dimensions");
  const torch::Tensor& storage = a[0]->tensor;
  const c10::ScalarType scalar = type.value_or(storage.scalar_type());
  const int64_t element = static_cast<int64_t>(c10::elementSize(scalar));
  const int64_t base_bytes = storage.storage_offset() * storage.element_size();
  const int64_t storage_bytes = storage.numel() * storage.element_size();
  if (base_bytes % element) corrupt("a tensor misaligned in its storage");
  // The last element any index reaches, in elements from the offset; sizes and strides are
  // below 2^48 and at most 64 of them, so this sum cannot overflow 128 bits.
  __int128 last = a[1]->integer, numel = 1;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] > 0) last += static_cast<__int128>(sizes[d] - 1) * strides[d];
    numel = std::min<__int128>(numel * sizes[d], __int128{1} << 48);  // stride 0 repeats elements
  }
  if (numel >= (__int128{1} << 48)) corrupt("a tensor of more than 2^48 elements");
  const __int128 end = numel == 0 ? a[1]->integer : last + 1;
  if (a[1]->integer < 0 || end * element > storage_bytes)
    fail(source_, "a tensor (size " + c10::str(c10::IntArrayRef(sizes)) + ", offset " + std::to_string(a[1]->integer) +
                      ") lies outside its storage of " + std::to_string(storage_bytes / element) + " elements");
  torch::Tensor t = torch::empty({0}, torch::TensorOptions().dtype(scalar));
  t.set_(storage.storage(), base_bytes / element + a[1]->integer, sizes, strides);
  auto v = make(Kind::Tensor);
  v->tensor = t;
  return v;
}

}  // namespace apot::qat::detail
