// `apot train RECIPE.toml [--set key=value ...] [--device cpu|cuda|cuda:N] [--nproc N] --out DIR [--resume]`.
// With --nproc N it starts N copies of itself as the ranks of a data-parallel job on this host
// (torchrun's variables: RANK, WORLD_SIZE, ...); a copy started with those variables, by this
// launcher or by torchrun, is one rank.
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include "apot/train/distributed.h"
#include "apot/train/trainer.h"
#include "commands.h"

extern char** environ;

namespace apot::cli {
namespace {

struct TrainOptions {
  std::string recipe, out;
  std::vector<std::string> sets;
  std::string device;
  int nproc = 1;
  bool resume = false;
};

// This process's own command line, without --nproc and its value.
std::vector<std::string> own_arguments_without_nproc() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t begin = 0; begin < all.size();) {
    const size_t end = all.find('\0', begin);
    args.push_back(all.substr(begin, end - begin));
    begin = end == std::string::npos ? all.size() : end + 1;
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--nproc") {
      ++i;
      continue;
    }
    if (args[i].rfind("--nproc=", 0) == 0) continue;
    out.push_back(args[i]);
  }
  return out;
}

// The last "apot: error: " line of a file, without that prefix ("" if none).
std::string last_error_line(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line))
    if (line.rfind("apot: error: ", 0) == 0) last = line.substr(13);
  return last;
}

// Starts the ranks and waits for them. Each rank's stderr goes to a file: the first rank that
// fails stops the others, and its error (or how it died) is the job's one error line; after a
// job that succeeded, the ranks' other messages (warnings) are passed on.
void launch_ranks(int nproc) {
  const std::vector<std::string> args = own_arguments_without_nproc();
  const std::string exe = "/proc/self/exe";
  const int port = train::free_local_port();
  std::vector<pid_t> pids(static_cast<size_t>(nproc), -1);
  std::vector<std::string> stderr_files;
  for (int r = 0; r < nproc; ++r)
    stderr_files.push_back((std::filesystem::temp_directory_path() /
                            ("apot-" + std::to_string(::getpid()) + "-rank" + std::to_string(r) + ".err"))
                               .string());
  struct RemoveFiles {
    const std::vector<std::string>& files;
    ~RemoveFiles() {
      for (const std::string& f : files) std::remove(f.c_str());
    }
  } remove_files{stderr_files};
  auto stop_all = [&] {
    for (pid_t p : pids)
      if (p > 0) ::kill(p, SIGTERM);
  };
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::string> env;
    auto is_rank_variable = [](const std::string& v) {
      for (const char* name :
           {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "MASTER_ADDR=", "MASTER_PORT=", "TORCHELASTIC_USE_AGENT_STORE="})
        if (v.rfind(name, 0) == 0) return true;
      return false;
    };
    for (char** e = environ; *e; ++e)
      if (!is_rank_variable(*e)) env.push_back(*e);
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("LOCAL_RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=" + std::to_string(nproc));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back("MASTER_PORT=" + std::to_string(port));
    std::vector<char*> argv, envp;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_files[static_cast<size_t>(r)].c_str(),
                                       O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), envp.data());
    ::posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      stop_all();
      throw std::runtime_error("cannot start rank " + std::to_string(r) + ": " + std::strerror(rc));
    }
    pids[static_cast<size_t>(r)] = pid;
  }
  std::string failure;
  for (int alive = nproc; alive > 0;) {
    int status = 0;
    const pid_t p = ::waitpid(-1, &status, 0);
    if (p < 0) {
      if (errno == EINTR) continue;
      break;
    }
    int r = 0;
    while (r < nproc && pids[static_cast<size_t>(r)] != p) ++r;
    if (r == nproc) continue;
    pids[static_cast<size_t>(r)] = -1;
    --alive;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && failure.empty()) {
      const std::string said = last_error_line(stderr_files[static_cast<size_t>(r)]);
      failure = "rank " + std::to_string(r) +
                (said.rfind("rank ", 0) == 0 ? said.substr(said.find(':'))  // the rank names itself
                 : !said.empty()             ? ": " + said
                 : WIFSIGNALED(status)       ? " was killed by signal " + std::to_string(WTERMSIG(status))
                                             : " exited with code " + std::to_string(WEXITSTATUS(status))) +
                "; stopped the other ranks (--resume continues from the last checkpoint)";
      stop_all();
    }
  }
  if (!failure.empty()) throw std::runtime_error(failure);
  for (const std::string& f : stderr_files) {
    std::ifstream in(f);
    if (in.peek() != std::char_traits<char>::eof()) std::cerr << in.rdbuf();  // (an empty one sets failbit)
  }
}

void run_train(const TrainOptions& o) {
  train::TrainConfig config;
  try {
    std::vector<std::string> sets = o.sets;
    if (!o.device.empty()) sets.push_back("train.device=" + o.device);
    config = train::load_config(o.recipe, sets);
  } catch (const train::ConfigError& e) {
    throw UsageError(e.what());
  }
  if (o.nproc < 1) throw UsageError("--nproc must be at least 1");
  if (o.nproc > 1) {
    if (std::getenv("WORLD_SIZE")) throw UsageError("--nproc inside a rank of a distributed job (WORLD_SIZE is set)");
    launch_ranks(o.nproc);
    return;
  }
  const train::DistributedOptions dist = train::distributed_from_env();
  std::unique_ptr<train::Communicator> comm;
  if (dist.enabled()) comm = std::make_unique<train::Communicator>(dist);
  // torchrun --max-restarts starts the whole group again after a failure (TORCHELASTIC_RESTART_COUNT
  // counts the attempts): a restarted group continues from the run's last checkpoint, as --resume.
  const bool restarted = dist.restart_count > 0 && std::filesystem::exists(std::filesystem::path(o.out) / "last.ckpt");
  if (restarted && !o.resume && dist.rank == 0)
    fmt::print("restart {} of the job (TORCHELASTIC_RESTART_COUNT): continuing from {}/last.ckpt\n", dist.restart_count,
               o.out);
  const train::TrainSummary s = train::run_training(config, o.out, o.resume || restarted, std::cout, comm.get());
  if (dist.rank != 0) return;
  fmt::print("selected epoch {} (validation top-1 {:.2f} %): test top-1 {:.2f} %; final epoch test top-1 {:.2f} %\n",
             s.best_epoch, s.best_val_top1, s.test_top1_at_best, s.final_test_top1);
  fmt::print("checkpoints: {} (selected), {} (last); {:.0f} s\n", s.best_checkpoint, s.last_checkpoint, s.seconds);
}

}  // namespace

void register_train(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand("train", "Quantisation-aware training from a TOML recipe");
  cmd->add_option("recipe", o->recipe, "recipe file (recipes/*.toml)")->required();
  cmd->add_option("--set", o->sets, "override a recipe key: section.key=value (repeatable), e.g. optim.lr=0.05");
  cmd->add_option("--out", o->out, "output directory (checkpoints, metrics.jsonl, summary.json)")->required();
  cmd->add_option("--device", o->device, "where to train: cpu, cuda or cuda:N (train.device)");
  cmd->add_option("--nproc", o->nproc,
                  "data parallel: start N ranks on this host (c10d, Gloo); data.batch_size is per rank, the global "
                  "batch N times it; APOT_DIST_TIMEOUT (seconds, default 60) bounds a wait for a dead or hung rank");
  cmd->add_flag("--resume", o->resume, "continue the run in --out from its last checkpoint (any number of ranks)");
  cmd->callback([o] { run_train(*o); });
}

}  // namespace apot::cli
