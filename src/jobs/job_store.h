// Jobs on disk: SQLite in WAL mode, every write fsynced before it is acknowledged. Writes run on
// a thread of their own and are committed in groups: whatever arrives while one commit is being
// fsynced goes into the next, so throughput grows with load while each acknowledgement still
// means "on disk". Reads use a second connection (WAL lets them run beside a commit).
#pragma once

#include <sqlite3.h>
#include <sys/types.h>

#include <boost/asio/any_io_executor.hpp>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/result.h"

namespace gpuvisor {

enum class JobState { kPending, kRunning, kCompleted, kFailed, kCancelled };
const char* to_string(JobState state);
std::optional<JobState> parse_job_state(const std::string& text);
// Completed, failed or cancelled: nothing more will happen to it.
bool is_final(JobState state);

struct Job {
  int64_t id = 0;
  std::string plugin;
  nlohmann::json input = nlohmann::json::object();
  JobState state = JobState::kPending;
  int64_t created_ms = 0;
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  nlohmann::json result;  // null until completed
  std::string error;
  int attempts = 0;  // starts so far (a daemon restart interrupts one)
  double progress = 0;
  pid_t worker_pid = 0;  // the process that runs it: its worker, or its service's main process
};

class JobStore {
 public:
  // Opens (or creates) the database; done callbacks are posted to executor.
  static Result<std::unique_ptr<JobStore>> open(const std::string& path,
                                                boost::asio::any_io_executor executor);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // Inserts job (its id is assigned) and calls done once it is on disk.
  void insert(Job job, std::function<void(Result<Job>)> done);
  // Writes the job's state, times, result, error, attempts, progress; done may be empty.
  void update(const Job& job, std::function<void(Status)> done = {});
  // Removes it (a cancelled pending job, when the policy is to forget such jobs).
  void remove(int64_t id, std::function<void(Status)> done = {});
  // Deletes the jobs that finished (completed, failed, cancelled) before finished_before_ms,
  // and those past the keep_newest most recently finished (negative: no limit by count); done
  // gets how many went. Pending and running jobs are never deleted.
  void purge(int64_t finished_before_ms, int64_t keep_newest,
             std::function<void(Result<int64_t>)> done);

  // Synchronous reads (an indexed query each), on the caller's thread.
  Result<Job> get(int64_t id) const;
  // Newest first; state/plugin empty: any.
  Result<std::vector<Job>> list(const std::string& state, const std::string& plugin,
                                size_t limit) const;
  // Pending and running jobs, oldest first: what a starting daemon picks up again.
  Result<std::vector<Job>> unfinished() const;
  Result<int64_t> count() const;
  // Every state, with how many jobs are in it (0 included).
  Result<std::map<std::string, int64_t>> count_by_state() const;

 private:
  struct Op {
    enum Kind { kInsert, kUpdate, kRemove, kPurge } kind;
    Job job;  // kPurge: job.finished_ms is the cut-off, job.attempts the count kept, job.id
              // becomes the count deleted
    std::function<void(Result<Job>)> inserted;
    std::function<void(Status)> written;
    std::function<void(Result<int64_t>)> purged{};
  };
  JobStore(sqlite3* writer, sqlite3* reader, boost::asio::any_io_executor executor);
  void run();
  Status apply(Op& op);

  sqlite3* writer_;
  sqlite3* reader_;
  mutable std::mutex read_mutex_;  // the reader connection is used from one thread at a time
  boost::asio::any_io_executor executor_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Op> ops_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace gpuvisor
