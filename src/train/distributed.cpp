// torchrun's environment variables (include/apot/train/distributed.h); the collectives are in
// communicator.cpp (c10d and Gloo) or communicator_none.cpp (builds without Gloo's headers).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

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

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string reason = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    throw DistributedError("no free TCP port on 127.0.0.1: " + reason);
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace apot::train
