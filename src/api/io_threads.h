// The threads proxied connections run on. The daemon's state (supervisor, planner, jobs, events)
// lives on its one main thread and is never touched from these; a connection accepted here
// serves proxied requests on its own thread and hands everything else to the main one. Each
// thread runs an io_context of its own, so a connection's socket, its timers and the upstream
// connections it takes from its thread's pool are only ever used by one thread.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

namespace gpuvisor {

class IoThreads {
 public:
  // count threads (at least one), started at once.
  explicit IoThreads(unsigned count);
  ~IoThreads();
  IoThreads(const IoThreads&) = delete;
  IoThreads& operator=(const IoThreads&) = delete;

  // The next thread's executor, round robin: where a new connection goes.
  boost::asio::any_io_executor next();
  boost::asio::any_io_executor executor(size_t i) const;
  size_t size() const { return threads_.size(); }
  // Stops the threads and waits for them: their connections stay as they are, unserved.
  void stop();

  // 1 + the index of the IoThreads thread this runs on; 0 anywhere else (the main thread).
  static size_t current();

  // The number of threads for daemon.io_threads: as configured, or for 0 two per core (at
  // most 16). Measured on 2 cores (bench/proxy.sh): two threads a core keep both cores busy
  // while one thread is in a system call, where one a core left the proxy 3-10% behind nginx.
  static unsigned count_for(unsigned configured);

 private:
  struct Thread {
    boost::asio::io_context io{1};  // one thread runs it: no locking inside Asio for it
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{
        io.get_executor()};
    std::thread thread;
  };
  std::vector<std::unique_ptr<Thread>> threads_;
  size_t next_ = 0;
};

}  // namespace gpuvisor
