// torchrun's environment variables (include/apot/train/distributed.h); the collectives are in
// communicator.cpp (c10d and Gloo) or communicator_none.cpp (builds without Gloo's headers).
#include <cstdlib>

#include "apot/train/distributed.h"

namespace apot::train {
namespace {

int env_int(const char* name, int fallback, int minimum) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long value = std::strtol(v, &end, 10);
  if (*end != '\0' || value < minimum || value > 1 << 20)
    throw DistributedError(std::string(name) + "=" + v + ": expected an integer >= " + std::to_string(minimum));
  return static_cast<int>(value);
}

}  // namespace

DistributedOptions distributed_from_env() {
  DistributedOptions o;
  o.world_size = env_int("WORLD_SIZE", 1, 1);
  if (o.world_size == 1) return o;
  o.rank = env_int("RANK", -1, 0);
  if (o.rank < 0) throw DistributedError("WORLD_SIZE is set but RANK is not");
  if (o.rank >= o.world_size)
    throw DistributedError("RANK=" + std::to_string(o.rank) +
                           " is not below WORLD_SIZE=" + std::to_string(o.world_size));
  o.local_rank = env_int("LOCAL_RANK", o.rank, 0);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr && *addr) o.master_addr = addr;
  o.master_port = env_int("MASTER_PORT", o.master_port, 1);
  if (o.master_port > 65535) throw DistributedError("MASTER_PORT must be at most 65535");
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  o.agent_store = agent && (std::string(agent) == "True" || std::string(agent) == "true" || std::string(agent) == "1");
  o.restart_count = env_int("TORCHELASTIC_RESTART_COUNT", 0, 0);
  o.timeout = std::chrono::milliseconds(1000LL * env_int("APOT_DIST_TIMEOUT", 60, 1));
  return o;
}

}  // namespace apot::train
