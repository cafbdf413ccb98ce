// torch.save files without Python: the two containers (zip and legacy) and their storages
// around the pickle machine (pickle_machine.h), and the search for the state dict in a
// checkpoint. Everything read from the file is untrusted: every length is checked against the
// bytes left, and every failure is one std::runtime_error line naming the file.
#include "apot/qat/torch_file.h"

#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>

#include "pickle_machine.h"

namespace apot::qat {

using Kind = PickleValue::Kind;
using detail::ends_with;
using detail::fail;
using detail::printable;
using detail::read_le;
using detail::starts_with;

namespace {

// The element type of a storage class: torch.FloatStorage, torch.cuda.HalfStorage (legacy
// files from a GPU), torch.UntypedStorage / torch.storage.UntypedStorage (bytes, PyTorch 2.x).
std::optional<c10::ScalarType> storage_scalar_type(std::string name) {
  for (const char* prefix : {"torch.cuda.", "torch.storage.", "torch."})
    if (starts_with(name, prefix)) {
      name = name.substr(std::strlen(prefix));
      break;
    }
  static const std::map<std::string, c10::ScalarType> types{{"FloatStorage", c10::kFloat},
                                                            {"DoubleStorage", c10::kDouble},
                                                            {"HalfStorage", c10::kHalf},
                                                            {"BFloat16Storage", c10::kBFloat16},
                                                            {"LongStorage", c10::kLong},
                                                            {"IntStorage", c10::kInt},
                                                            {"ShortStorage", c10::kShort},
                                                            {"CharStorage", c10::kChar},
                                                            {"ByteStorage", c10::kByte},
                                                            {"BoolStorage", c10::kBool},
                                                            {"ComplexFloatStorage", c10::kComplexFloat},
                                                            {"ComplexDoubleStorage", c10::kComplexDouble},
                                                            {"UntypedStorage", c10::kByte}};
  const auto it = types.find(name);
  if (it == types.end()) return std::nullopt;
  return it->second;
}

// A storage's bytes copied into memory the tensor owns. Bool elements are normalised to 0/1:
// any other byte would be undefined behaviour once read as bool.
torch::Tensor storage_from_bytes(const uint8_t* bytes, int64_t numel, c10::ScalarType type) {
  torch::Tensor storage = torch::empty({numel}, torch::TensorOptions().dtype(type));
  const size_t nbytes = static_cast<size_t>(numel) * c10::elementSize(type);
  auto* out = static_cast<uint8_t*>(storage.data_ptr());
  if (nbytes) std::memcpy(out, bytes, nbytes);
  if (type == c10::kBool)
    for (size_t i = 0; i < nbytes; ++i) out[i] = out[i] != 0;
  return storage;
}

PickleValuePtr storage_value(torch::Tensor storage) {
  auto v = std::make_shared<PickleValue>();
  v->kind = Kind::Storage;
  v->tensor = std::move(storage);
  return v;
}

// The parts of a persistent id that name a storage: ('storage', storage_type, key, location,
// numel) in zip files, with a sixth element view_metadata in legacy ones.
struct StorageId {
  std::string key;
  c10::ScalarType type;
  int64_t numel;
  const PickleValue* view = nullptr;  // legacy: (view_key, offset, size) or None
};

StorageId parse_storage_id(const PickleValue& id, const std::string& source) {
  const auto& f = id.items;
  if (id.kind != Kind::Tuple || f.size() < 5 || (f[0]->kind != Kind::String && f[0]->kind != Kind::Bytes))
    fail(source, "corrupt pickle: a persistent id that is not ('storage', type, key, location, size)");
  if (f[0]->text != "storage") fail(source, "unsupported persistent id '" + printable(f[0]->text, 40) + "'");
  if (f[1]->kind != Kind::Global) fail(source, "corrupt pickle: a storage whose type is " + f[1]->describe());
  const auto type = storage_scalar_type(f[1]->text);
  if (!type) fail(source, "unsupported storage type " + printable(f[1]->text));
  StorageId s{"", *type, 0};
  if (f[2]->kind == Kind::String) s.key = f[2]->text;
  else if (f[2]->kind == Kind::Int) s.key = std::to_string(f[2]->integer);
  else fail(source, "corrupt pickle: a storage key that is " + f[2]->describe());
  if (f[4]->kind != Kind::Int || f[4]->integer < 0)
    fail(source, "corrupt pickle: storage " + printable(s.key) + " has a bad size");
  s.numel = f[4]->integer;
  if (f.size() > 5 && f[5]->kind != Kind::None) s.view = f[5].get();
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// The two containers.

namespace {

// caffe2's MemoryReadAdapter copies whatever it is asked for; this one stays inside the buffer.
class BoundedMemoryAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  BoundedMemoryAdapter(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t size() const override { return size_; }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= size_) return 0;
    n = std::min<uint64_t>(n, size_ - pos);
    std::memcpy(buf, data_ + pos, n);
    return n;
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

// PyTorchStreamReader allocates a record's uncompressed size, as the zip directory states it,
// before reading it; a forged directory could ask for terabytes. Deflate expands at most
// 1032-fold, so a record claiming more than that of its compressed size is refused first.
void check_zip_record_sizes(const uint8_t* data, size_t size, const std::string& source) {
  if (size < 22) return;  // PyTorchStreamReader reports it
  size_t eocd = size - 22;
  const size_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
  while (read_le(data + eocd, 4) != 0x06054b50) {
    if (eocd == lowest) return;
    --eocd;
  }
  uint64_t count = read_le(data + eocd + 10, 2), offset = read_le(data + eocd + 16, 4);
  if (offset == 0xffffffff && eocd >= 20 && read_le(data + eocd - 20, 4) == 0x07064b50) {  // zip64
    const uint64_t at = read_le(data + eocd - 12, 8);
    if (at > size || size - at < 56 || read_le(data + at, 4) != 0x06064b50) return;
    count = read_le(data + at + 32, 8);
    offset = read_le(data + at + 48, 8);
  }
  for (uint64_t i = 0; i < count && offset <= size && size - offset >= 46; ++i) {
    const uint8_t* h = data + offset;
    if (read_le(h, 4) != 0x02014b50) return;
    const uint64_t name_len = read_le(h + 28, 2), extra_len = read_le(h + 30, 2), comment_len = read_le(h + 32, 2);
    if (size - offset - 46 < name_len + extra_len) return;
    uint64_t compressed = read_le(h + 20, 4), uncompressed = read_le(h + 24, 4);
    // Zip64: the sizes that did not fit in 32 bits follow in extra field 0x0001, in this order.
    for (const uint8_t *e = h + 46 + name_len, *e_end = e + extra_len; e_end - e >= 4;) {
      const uint64_t id = read_le(e, 2), len = read_le(e + 2, 2);
      if (static_cast<uint64_t>(e_end - e - 4) < len) break;
      const uint8_t* field = e + 4;
      if (id == 1) {
        size_t used = 0;
        if (uncompressed == 0xffffffff && len >= used + 8) uncompressed = read_le(field + used, 8), used += 8;
        if (compressed == 0xffffffff && len >= used + 8) compressed = read_le(field + used, 8), used += 8;
      }
      e = field + len;
    }
    if (uncompressed / 1032 > compressed + 1024)
      fail(source, "corrupt zip: record " +
                       printable(std::string(reinterpret_cast<const char*>(h + 46), name_len), 80) + " claims " +
                       std::to_string(uncompressed) + " bytes, more than its " + std::to_string(compressed) +
                       " compressed bytes can hold");
    offset += 46 + name_len + extra_len + comment_len;
  }
}

std::string c10_message(const c10::Error& e) { return printable(e.what_without_backtrace()); }

PickleValuePtr read_zip(const uint8_t* data, size_t size, const std::string& source) {
  check_zip_record_sizes(data, size, source);
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  std::vector<std::string> records;
  try {
    // (LibTorch 1.13 leaks a few hundred bytes when this constructor throws: a fuzzer of this
    // code needs leak detection off or a suppression for libtorch_cpu.)
    reader =
        std::make_unique<caffe2::serialize::PyTorchStreamReader>(std::make_shared<BoundedMemoryAdapter>(data, size));
    records = reader->getAllRecords();
  } catch (const c10::Error& e) {
    fail(source, "truncated or corrupt zip file (" + c10_message(e) + ")");
  }
  // TorchScript archives hold a data.pkl too, but of scripted module objects.
  if (std::any_of(records.begin(), records.end(),
                  [](const std::string& r) { return r == "constants.pkl" || starts_with(r, "code/"); }))
    fail(source, "a TorchScript module (torch.jit.save); save its state_dict() with torch.save instead");
  // The reader strips the archive's top folder (the saved file's name, or "archive"); data.pkl
  // sits right below it in every torch.save file, but a deeper one is accepted too.
  std::string pickle;
  for (const std::string& r : records)
    if ((r == "data.pkl" || ends_with(r, "/data.pkl")) && (pickle.empty() || r.size() < pickle.size())) pickle = r;
  if (pickle.empty()) fail(source, "a zip file without data.pkl, not written by torch.save");
  const std::string prefix = pickle.substr(0, pickle.size() - 8);  // "" or "folder/"
  auto get_record = [&](const std::string& name) {
    try {
      return reader->getRecord(name);
    } catch (const c10::Error& e) {
      fail(source, "cannot read " + printable(name) + " (" + c10_message(e) + ")");
    }
  };
  if (reader->hasRecord(prefix + "byteorder")) {
    auto [bytes, n] = get_record(prefix + "byteorder");
    if (std::string(static_cast<const char*>(bytes.get()), n) == "big")
      fail(source, "saved on a big-endian machine, which this reader does not support");
  }
  std::map<std::string, PickleValuePtr> storages;
  auto load = [&](const PickleValue& id) -> PickleValuePtr {
    const StorageId s = parse_storage_id(id, source);
    if (const auto it = storages.find(s.key); it != storages.end()) return it->second;
    const std::string name = prefix + "data/" + s.key;
    if (!reader->hasRecord(name))
      fail(source, "storage key " + printable(s.key) + " missing (no record " + printable(name) + ")");
    auto [bytes, n] = get_record(name);
    const size_t element = c10::elementSize(s.type);
    if (static_cast<uint64_t>(s.numel) > n / element)
      fail(source, "storage " + printable(s.key) + " holds " + std::to_string(n) + " bytes, " +
                       std::to_string(s.numel) + " elements were promised");
    return storages[s.key] =
               storage_value(storage_from_bytes(static_cast<const uint8_t*>(bytes.get()), s.numel, s.type));
  };
  auto [bytes, n] = get_record(pickle);
  detail::PickleMachine machine(static_cast<const uint8_t*>(bytes.get()), n, source, " of " + printable(pickle), load);
  size_t pos = 0;
  return machine.run(pos);
}

// The legacy format (PyTorch < 1.6, or _use_new_zipfile_serialization=False): pickles of the
// magic number, the protocol version, sys_info, the object, the list of storage keys; then
// for each key its element count (int64) and raw little-endian bytes.
PickleValuePtr read_legacy(const uint8_t* data, size_t size, const std::string& source) {
  size_t pos = 0;
  auto next = [&](const detail::PickleMachine::PersistentLoad& load) {
    return detail::PickleMachine(data, size, source, "", load).run(pos);
  };
  // 0x1950a86a20f9469cfc6c, little-endian.
  static const std::string kMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
  const PickleValuePtr magic = next(nullptr);
  if (magic->kind != Kind::BigInt || magic->text != kMagic)
    fail(source, "not a torch.save file (a pickle without torch's magic number)");
  const PickleValuePtr version = next(nullptr);
  if (version->kind != Kind::Int || version->integer != 1001)
    fail(source, "unsupported legacy torch.save protocol " + version->describe());
  const PickleValuePtr sys_info = next(nullptr);
  if (const PickleValue* little = sys_info->get("little_endian");
      little && little->kind == Kind::Bool && !little->boolean)
    fail(source, "saved on a big-endian machine, which this reader does not support");

  struct Root {
    torch::Tensor storage;  // zeros until its bytes are read
    bool filled = false;
  };
  std::map<std::string, Root> roots;
  std::map<std::string, PickleValuePtr> values;  // root and view keys -> storage value
  uint64_t budget = size;                        // every storage's bytes must still be in the file
  auto load = [&](const PickleValue& id) -> PickleValuePtr {
    const StorageId s = parse_storage_id(id, source);
    const size_t element = c10::elementSize(s.type);
    auto root = roots.find(s.key);
    if (root == roots.end()) {
      if (static_cast<uint64_t>(s.numel) > budget / element)
        fail(source, "truncated: storage " + printable(s.key) + " needs more bytes than the file has");
      budget -= static_cast<uint64_t>(s.numel) * element;
      root = roots.emplace(s.key, Root{torch::zeros({s.numel}, torch::TensorOptions().dtype(s.type))}).first;
      values[s.key] = storage_value(root->second.storage);
    }
    if (root->second.storage.scalar_type() != s.type || root->second.storage.numel() != s.numel)
      fail(source, "corrupt pickle: storage " + printable(s.key) + " used with two types or sizes");
    if (!s.view) return values[s.key];
    // Storage views of PyTorch < 0.4: (view_key, offset, size) inside the root storage.
    const auto& v = s.view->items;
    if (s.view->kind != Kind::Tuple || v.size() != 3 || v[0]->kind != Kind::String || v[1]->kind != Kind::Int ||
        v[2]->kind != Kind::Int || v[1]->integer < 0 || v[2]->integer < 0 || v[1]->integer > s.numel ||
        v[2]->integer > s.numel - v[1]->integer)
      fail(source, "corrupt pickle: a storage view outside storage " + printable(s.key));
    PickleValuePtr& view = values[v[0]->text];
    if (!view) view = storage_value(root->second.storage.narrow(0, v[1]->integer, v[2]->integer));
    return view;
  };
  const PickleValuePtr root_object = next(load);
  const PickleValuePtr keys = next(nullptr);
  if (keys->kind != Kind::List) fail(source, "corrupt: the list of storage keys is " + keys->describe());
  for (const PickleValuePtr& key : keys->items) {
    if (key->kind != Kind::String) fail(source, "corrupt: a storage key that is " + key->describe());
    const auto it = roots.find(key->text);
    if (it == roots.end() || it->second.filled)
      fail(source, "corrupt: storage key " + printable(key->text) + " listed twice, or by no tensor");
    torch::Tensor& storage = it->second.storage;
    if (size - pos < 8) fail(source, "truncated: storage " + printable(key->text) + " is missing");
    const uint64_t count = read_le(data + pos, 8);
    pos += 8;
    if (count != static_cast<uint64_t>(storage.numel()))
      fail(source, "corrupt: storage " + printable(key->text) + " holds " + std::to_string(count) + " elements, " +
                       std::to_string(storage.numel()) + " were promised");
    const size_t nbytes = count * storage.element_size();
    if (size - pos < nbytes) fail(source, "truncated: storage " + printable(key->text) + " is cut short");
    storage.copy_(storage_from_bytes(data + pos, storage.numel(), storage.scalar_type()));
    pos += nbytes;
    it->second.filled = true;
  }
  for (const auto& [key, root] : roots)
    if (!root.filled) fail(source, "corrupt: storage " + printable(key) + " has no data");
  return root_object;
}

}  // namespace

PickleValuePtr read_torch_bytes(const void* data, size_t size, const std::string& source) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  try {
    if (size == 0) fail(source, "empty file, not a torch.save file");
    if (size >= 4 && bytes[0] == 'P' && bytes[1] == 'K' &&
        ((bytes[2] == 3 && bytes[3] == 4) || (bytes[2] == 5 && bytes[3] == 6)))
      return read_zip(bytes, size, source);
    // Legacy files start with the magic number: PROTO and LONG1 from protocol 2 on, a text
    // LONG with protocol 1.
    static const char kTextMagic[] = "L119547037146038801333356L\n";
    if (bytes[0] == 0x80 ||
        (size >= sizeof kTextMagic - 1 && std::memcmp(bytes, kTextMagic, sizeof kTextMagic - 1) == 0))
      return read_legacy(bytes, size, source);
    if (size > 262 && std::memcmp(bytes + 257, "ustar", 5) == 0)
      fail(source, "a tar-format torch.save file (PyTorch < 0.4), which this reader does not support");
    fail(source, "not a torch.save file (neither a zip archive nor a pickle)");
  } catch (const c10::Error& e) {
    fail(source, "corrupt (" + c10_message(e) + ")");
  } catch (const std::bad_alloc&) {
    fail(source, "corrupt: asks for more memory than there is");
  }
}

PickleValuePtr read_torch_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(path, "cannot read");
  return read_torch_bytes(bytes.data(), bytes.size(), path);
}

// ---------------------------------------------------------------------------------------
// Values and the state dict.

const PickleValue* PickleValue::get(const std::string& key) const {
  if (kind != Kind::Dict) return nullptr;
  for (const auto& [k, v] : entries)
    if (k->kind == Kind::String && k->text == key) return v.get();
  return nullptr;
}

std::string PickleValue::describe() const {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return boolean ? "True" : "False";
    case Kind::Int: return std::to_string(integer);
    case Kind::BigInt: return "an integer of " + std::to_string(text.size()) + " bytes";
    case Kind::Float: return c10::str(number);
    case Kind::String: return "'" + printable(text, 40) + "'";
    case Kind::Bytes: return "bytes (" + std::to_string(text.size()) + ")";
    case Kind::List: return "list (" + std::to_string(items.size()) + " items)";
    case Kind::Tuple: return "tuple (" + std::to_string(items.size()) + " items)";
    case Kind::Dict: return "dict (" + std::to_string(entries.size()) + " entries)";
    case Kind::Tensor:
      return "tensor " + std::string(c10::toString(tensor.scalar_type())) + " " + c10::str(tensor.sizes());
    case Kind::Storage:
      return "storage " + std::string(c10::toString(tensor.scalar_type())) + " (" + std::to_string(tensor.numel()) +
             ")";
    case Kind::Global: return printable(text);
    case Kind::Object: return printable(text) + " object";
  }
  return "?";
}

namespace {

const char* const kWrapperKeys[] = {"state_dict", "model_state_dict", "model", "net", "state", "network"};

// A state dict: string keys, tensor values, apart from what torch may keep beside them
// (_metadata, a module's _extra_state). A quantised or sparse tensor (read as an opaque
// object) in an otherwise plain state dict is reported rather than silently dropped.
bool is_state_dict(const PickleValue& v, const std::string& source) {
  if (v.kind != Kind::Dict) return false;
  size_t tensors = 0;
  std::string unsupported;
  for (const auto& [k, value] : v.entries) {
    if (k->kind != Kind::String) return false;
    if (value->kind == Kind::Tensor) ++tensors;
    else if (value->kind == Kind::Object && starts_with(value->text, "torch._utils._rebuild") && unsupported.empty())
      unsupported = "'" + printable(k->text) + "' is a tensor of a kind this reader does not support (" +
                    printable(value->text) + ")";
    else if (k->text != "_metadata" && !ends_with(k->text, "_extra_state")) return false;
  }
  if (tensors && !unsupported.empty()) fail(source, unsupported);
  return tensors > 0;
}

std::string list_keys(const PickleValue& dict) {
  std::vector<std::string> keys;
  for (const auto& entry : dict.entries)
    if (entry.first->kind == Kind::String) keys.push_back(printable(entry.first->text, 40));
  std::ostringstream s;
  for (size_t i = 0; i < keys.size() && i < 12; ++i) s << (i ? ", " : "") << keys[i];
  if (keys.size() > 12) s << " ... (" << keys.size() << " in all)";
  return keys.empty() ? "none" : s.str();
}

// The state dicts among a dictionary's entries, and below the usual wrapper keys.
void collect_state_dicts(const PickleValue& v, const std::string& path, int depth, const std::string& source,
                         std::vector<std::pair<std::string, const PickleValue*>>& found) {
  if (v.kind != Kind::Dict) return;
  for (const auto& [k, value] : v.entries) {
    if (k->kind != Kind::String) continue;
    const std::string name = path.empty() ? k->text : path + "." + k->text;
    if (is_state_dict(*value, source)) found.emplace_back(name, value.get());
    else if (depth < 2 &&
             std::find(std::begin(kWrapperKeys), std::end(kWrapperKeys), k->text) != std::end(kWrapperKeys))
      collect_state_dicts(*value, name, depth + 1, source, found);
  }
}

// `key` as an entry of `v`, or dotted ("checkpoint.model") through nested dictionaries.
const PickleValue& resolve_key(const PickleValue& v, const std::string& key, const std::string& full,
                               const std::string& source) {
  if (v.kind != Kind::Dict)
    fail(source, "has no entry '" + full + "' (the value there is " + v.describe() + "); check --key");
  if (const PickleValue* direct = v.get(key)) return *direct;
  for (size_t dot = key.find('.'); dot != std::string::npos; dot = key.find('.', dot + 1))
    if (const PickleValue* head = v.get(key.substr(0, dot)))
      return resolve_key(*head, key.substr(dot + 1), full, source);
  fail(source, "has no entry '" + full + "' (keys there: " + list_keys(v) + "); check --key");
}

}  // namespace

std::map<std::string, torch::Tensor> find_state_dict(const PickleValue& root, const std::string& key,
                                                     const std::string& source) {
  const PickleValue& start = key.empty() ? root : resolve_key(root, key, key, source);
  const PickleValue* state = &start;
  if (!is_state_dict(start, source)) {
    std::vector<std::pair<std::string, const PickleValue*>> found;
    collect_state_dicts(start, key, 0, source, found);
    if (found.size() > 1) {
      std::string names;
      for (size_t i = 0; i < found.size() && i < 12; ++i) names += (i ? ", " : "") + printable(found[i].first);
      if (found.size() > 12) names += " ... (" + std::to_string(found.size()) + " in all)";
      fail(source, "holds several state dicts (" + names + "); pick one with --key");
    }
    if (found.empty())
      fail(source, "holds no state dict (a dictionary of tensors)" + (key.empty() ? "" : " under '" + key + "'") +
                       ": found " + start.describe() +
                       (start.kind == Kind::Dict ? " with keys " + list_keys(start) : ""));
    state = found.front().second;
  }
  std::map<std::string, torch::Tensor> out;
  for (const auto& [k, value] : state->entries) {
    if (value->kind != Kind::Tensor) continue;
    const std::string name = starts_with(k->text, "module.") ? k->text.substr(7) : k->text;
    if (!out.emplace(name, value->tensor).second) fail(source, "holds '" + printable(name) + "' twice");
  }
  return out;
}

}  // namespace apot::qat
