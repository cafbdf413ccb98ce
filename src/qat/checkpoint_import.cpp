// PyTorch state-dict import / export with name mapping and complete error reports.
#include "apot/qat/checkpoint_import.h"

#include "apot/qat/torch_file.h"

#include <fstream>
#include <set>
#include <sstream>

namespace apot::qat {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
  return s;
}

// The spellings a file may use for one of our names.
std::vector<std::string> candidate_names(const std::string& ours) {
  std::vector<std::string> names{ours};
  auto add = [&](const std::string& n) {
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  };
  const std::string swapped = ours.rfind("linear.", 0) == 0 ? "fc." + ours.substr(7)
                              : ours.rfind("fc.", 0) == 0   ? "linear." + ours.substr(3)
                                                            : ours;
  add(swapped);
  for (const std::string& n : std::vector<std::string>(names)) {
    add(replace_all(n, ".shortcut.", ".downsample."));
    add(replace_all(n, ".downsample.", ".shortcut."));
  }
  if (ends_with(ours, ".weight_alpha"))
    for (const std::string& n : std::vector<std::string>(names))
      add(n.substr(0, n.size() - 12) + "weight_quant.wgt_alpha");
  return names;
}

std::string join(const std::vector<std::string>& items, size_t limit = 12) {
  std::ostringstream s;
  for (size_t i = 0; i < items.size() && i < limit; ++i) s << (i ? ", " : "") << items[i];
  if (items.size() > limit) s << " ... (" << items.size() << " in all)";
  return s.str();
}

}  // namespace

std::map<std::string, torch::Tensor> read_state_dict(const std::string& path, const std::string& key) {
  return find_state_dict(*read_torch_file(path), key, path);
}

void load_state_dict(torch::nn::Module& model, const std::map<std::string, torch::Tensor>& state,
                     const std::string& source) {
  std::vector<std::string> missing, wrong_shape;
  std::set<std::string> used;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  auto visit = [&](const std::string& name, torch::Tensor& target) {
    for (const std::string& candidate : candidate_names(name)) {
      const auto it = state.find(candidate);
      if (it == state.end()) continue;
      used.insert(candidate);
      if (!it->second.sizes().equals(target.sizes()) && it->second.numel() != target.numel())
        wrong_shape.push_back(name + " (file " + c10::str(it->second.sizes()) + ", model " + c10::str(target.sizes()) +
                              ")");
      else copies.emplace_back(target, it->second);
      return;
    }
    const bool optional = ends_with(name, "_alpha") || ends_with(name, "num_batches_tracked");
    if (!optional) missing.push_back(name);
  };
  for (auto& p : model.named_parameters()) visit(p.key(), p.value());
  for (auto& b : model.named_buffers()) visit(b.key(), b.value());
  std::vector<std::string> unexpected;
  for (const auto& [name, tensor] : state)
    if (!used.count(name) && !ends_with(name, "num_batches_tracked")) unexpected.push_back(name);
  if (!missing.empty() || !unexpected.empty() || !wrong_shape.empty()) {
    std::ostringstream msg;
    msg << source << " does not fit the model:";
    if (!missing.empty()) msg << " missing " << join(missing) << ";";
    if (!unexpected.empty()) msg << " unexpected " << join(unexpected) << ";";
    if (!wrong_shape.empty()) msg << " wrong shape " << join(wrong_shape) << ";";
    throw StateDictError(msg.str());
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, value] : copies) target.copy_(value.reshape(target.sizes()).to(target.dtype()));
}

void import_state_dict(torch::nn::Module& model, const std::string& path, const std::string& key) {
  load_state_dict(model, read_state_dict(path, key), path);
}

void export_state_dict(const torch::nn::Module& model, const std::string& path) {
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& p : model.named_parameters()) dict.insert(p.key(), p.value().detach());
  for (const auto& b : model.named_buffers()) dict.insert(b.key(), b.value().detach());
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error(path + ": cannot write");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error(path + ": cannot rename into place");
}

}  // namespace apot::qat
