#include "api/io_threads.h"

#include <sched.h>

#include <algorithm>

namespace gpuvisor {

namespace {
thread_local size_t t_current = 0;
}  // namespace

IoThreads::IoThreads(unsigned count) {
  for (unsigned i = 0; i < std::max(count, 1u); ++i) {
    auto t = std::make_unique<Thread>();
    t->thread = std::thread([io = &t->io, index = i + 1] {
      t_current = index;
      io->run();
    });
    threads_.push_back(std::move(t));
  }
}

IoThreads::~IoThreads() {
  stop();
  // Never destroyed: the main thread's io_context and these hold work for each other at exit
  // (an API call on the main thread reading a connection of theirs; a request of theirs
  // waiting for the main thread), so whichever went first, the other's would reach into it as
  // it is destroyed. Kept reachable, the process's exit reclaims them (and LeakSanitizer,
  // which reports only what nothing points to, says nothing).
  static auto* kept = new std::vector<std::unique_ptr<Thread>>;
  for (auto& t : threads_) kept->push_back(std::move(t));
}

boost::asio::any_io_executor IoThreads::next() {
  const size_t i = next_++ % threads_.size();
  return threads_[i]->io.get_executor();
}

boost::asio::any_io_executor IoThreads::executor(size_t i) const {
  return threads_.at(i)->io.get_executor();
}

void IoThreads::stop() {
  for (auto& t : threads_) {
    t->work.reset();
    t->io.stop();
  }
  for (auto& t : threads_) {
    if (t->thread.joinable()) t->thread.join();
  }
}

size_t IoThreads::current() {
  return t_current;
}

unsigned IoThreads::count_for(unsigned configured) {
  if (configured > 0) return configured;
  // The cores this process may run on (taskset, a cgroup's cpuset), not all the machine's.
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  const int cores = sched_getaffinity(0, sizeof cpus, &cpus) == 0
                        ? CPU_COUNT(&cpus)
                        : static_cast<int>(std::thread::hardware_concurrency());
  return static_cast<unsigned>(std::clamp(2 * cores, 2, 16));
}

}  // namespace gpuvisor
