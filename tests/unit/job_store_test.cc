// The job store against a real SQLite file: writes acknowledged once durable, retention, and
// databases written by older (and newer) releases.
#include "jobs/job_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "lib/temp_dir.h"

namespace gpuvisor {
namespace {

struct Store {
  boost::asio::io_context io;
  // The store's thread posts its answers later: run_one() waits for them instead of returning.
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> busy{io.get_executor()};
  std::unique_ptr<JobStore> store;

  explicit Store(const std::string& path) {
    auto opened = JobStore::open(path, io.get_executor());
    EXPECT_TRUE(opened) << opened.error().message;
    if (opened) store = std::move(*opened);
  }
  // Runs callbacks until the one we wait for has come.
  template <typename T>
  T wait(std::optional<T>& slot) {
    while (!slot) io.run_one();
    return std::move(*slot);
  }
  Job insert(const std::string& plugin) {
    std::optional<Result<Job>> got;
    Job job;
    job.plugin = plugin;
    job.created_ms = 1;
    store->insert(job, [&](Result<Job> r) { got = std::move(r); });
    return *wait(got);
  }
  void update(const Job& job) {
    std::optional<Status> got;
    store->update(job, [&](Status s) { got = s; });
    EXPECT_TRUE(wait(got).ok());
  }
};

void exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(SQLITE_OK, sqlite3_open(path.c_str(), &db));
  EXPECT_EQ(SQLITE_OK, sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr))
      << sqlite3_errmsg(db);
  sqlite3_close(db);
}

TEST(JobStore, KeepsWhatWasWrittenAndForgetsFinishedJobsPastTheCutOff) {
  const std::string dir = fresh_dir("jobstore");
  Store s(dir + "/jobs.db");
  Job old_done = s.insert("p");
  old_done.state = JobState::kCompleted;
  old_done.finished_ms = 1000;
  old_done.worker_pid = 4711;
  s.update(old_done);
  Job recent_done = s.insert("p");
  recent_done.state = JobState::kFailed;
  recent_done.finished_ms = 5000;
  s.update(recent_done);
  Job running = s.insert("p");
  running.state = JobState::kRunning;
  s.update(running);
  EXPECT_EQ(4711, s.store->get(old_done.id)->worker_pid);

  std::optional<Result<int64_t>> purged;
  s.store->purge(2000, -1, [&](Result<int64_t> n) { purged = n; });
  EXPECT_EQ(1, *s.wait(purged));
  EXPECT_EQ(ErrorCode::kNotFound, s.store->get(old_done.id).error().code);
  EXPECT_TRUE(s.store->get(recent_done.id));
  EXPECT_TRUE(s.store->get(running.id));  // never purged, however old
}

TEST(JobStore, KeepsOnlyTheNewestFinishedJobsByCount) {
  const std::string dir = fresh_dir("jobstorecount");
  Store s(dir + "/jobs.db");
  std::vector<Job> done;
  for (int i = 0; i < 5; ++i) {
    Job j = s.insert("p");
    j.state = JobState::kCompleted;
    j.finished_ms = 1000 + (i * 7 % 5) * 100;  // finished in another order than submitted
    s.update(j);
    done.push_back(j);
  }
  Job pending = s.insert("p");
  std::optional<Result<int64_t>> purged;
  s.store->purge(0, 2, [&](Result<int64_t> n) { purged = n; });
  EXPECT_EQ(3, *s.wait(purged));
  for (const Job& j : done) {  // kept: the two that finished last (1400 and 1300)
    EXPECT_EQ(j.finished_ms >= 1300, s.store->get(j.id).ok()) << j.finished_ms;
  }
  EXPECT_TRUE(s.store->get(pending.id));  // not finished: not counted, not deleted
}

// A service may answer a job with bytes that are not UTF-8 (an image, a cut message): the
// store keeps the job, with those bytes replaced, rather than throwing in its commit.
TEST(JobStore, AResultThatIsNotUtf8IsStoredWithReplacementCharacters) {
  const std::string dir = fresh_dir("jobstore-utf8");
  Store s(dir + "/jobs.db");
  Job job = s.insert("p");
  job.state = JobState::kCompleted;
  job.result = nlohmann::json(std::string("PNG\x89\xff"));
  s.update(job);
  const auto stored = s.store->get(job.id);
  ASSERT_TRUE(stored);
  EXPECT_EQ("PNG\xEF\xBF\xBD\xEF\xBF\xBD", stored->result.get<std::string>());
}

TEST(JobStore, ADatabaseFromTheFirstReleaseIsMigratedInPlace) {
  const std::string dir = fresh_dir("jobstore");
  const std::string path = dir + "/jobs.db";
  // The schema as the first release wrote it, with one job in it.
  exec(path,
       "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, plugin TEXT NOT NULL, input "
       "TEXT NOT NULL, state TEXT NOT NULL, created_ms INTEGER NOT NULL, started_ms INTEGER NOT "
       "NULL DEFAULT 0, finished_ms INTEGER NOT NULL DEFAULT 0, result TEXT, error TEXT NOT NULL "
       "DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0, progress REAL NOT NULL DEFAULT 0);"
       "INSERT INTO jobs (plugin, input, state, created_ms) VALUES ('p', '{}', 'pending', 7);");
  Store s(path);
  auto job = s.store->get(1);
  ASSERT_TRUE(job) << job.error().message;
  EXPECT_EQ(0, job->worker_pid);
  job->worker_pid = 42;
  s.update(*job);
  EXPECT_EQ(42, s.store->get(1)->worker_pid);
}

TEST(JobStore, ADatabaseFromANewerReleaseIsRefusedNotDamaged) {
  const std::string dir = fresh_dir("jobstore");
  const std::string path = dir + "/jobs.db";
  exec(path, "PRAGMA user_version=99;");
  boost::asio::io_context io;
  auto opened = JobStore::open(path, io.get_executor());
  ASSERT_FALSE(opened);
  EXPECT_EQ(
      "job store: schema version 99 is newer than this gpuvisor knows (1): it was written by a "
      "newer release",
      opened.error().message);
}

}  // namespace
}  // namespace gpuvisor
