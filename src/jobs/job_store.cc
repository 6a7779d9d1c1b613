#include "jobs/job_store.h"

#include <boost/asio/post.hpp>
#include <iterator>

#include "core/json_text.h"

namespace gpuvisor {

namespace {

const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  plugin TEXT NOT NULL,
  input TEXT NOT NULL,
  state TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL DEFAULT 0,
  finished_ms INTEGER NOT NULL DEFAULT 0,
  result TEXT,
  error TEXT NOT NULL DEFAULT '',
  attempts INTEGER NOT NULL DEFAULT 0,
  progress REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
)";

// Each step takes a database from user_version i to i + 1, in one transaction with its bump;
// a database made by an older gpuvisor is brought up to date when it is opened.
const char* const kMigrations[] = {
    "ALTER TABLE jobs ADD COLUMN worker_pid INTEGER NOT NULL DEFAULT 0;",
};

// Finalises the statement whatever happens.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

Error db_error(sqlite3* db, const std::string& what) {
  return make_error(ErrorCode::kFailed, "job store: " + what + ": " + sqlite3_errmsg(db));
}

std::string text_column(sqlite3_stmt* s, int i) {
  const auto* t = sqlite3_column_text(s, i);
  return t == nullptr ? "" : reinterpret_cast<const char*>(t);
}

Job read_row(sqlite3_stmt* s) {
  Job j;
  j.id = sqlite3_column_int64(s, 0);
  j.plugin = text_column(s, 1);
  j.input = nlohmann::json::parse(text_column(s, 2), nullptr, false);
  j.state = parse_job_state(text_column(s, 3)).value_or(JobState::kFailed);
  j.created_ms = sqlite3_column_int64(s, 4);
  j.started_ms = sqlite3_column_int64(s, 5);
  j.finished_ms = sqlite3_column_int64(s, 6);
  if (sqlite3_column_type(s, 7) != SQLITE_NULL) {
    j.result = nlohmann::json::parse(text_column(s, 7), nullptr, false);
  }
  j.error = text_column(s, 8);
  j.attempts = sqlite3_column_int(s, 9);
  j.progress = sqlite3_column_double(s, 10);
  j.worker_pid = static_cast<pid_t>(sqlite3_column_int64(s, 11));
  return j;
}

constexpr const char* kColumns =
    "id, plugin, input, state, created_ms, started_ms, finished_ms, result, error, attempts, "
    "progress, worker_pid";

Status migrate(sqlite3* db) {
  int version = 0;
  {
    Stmt st;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st.s, nullptr) != SQLITE_OK ||
        sqlite3_step(st.s) != SQLITE_ROW) {
      return db_error(db, "read the schema version");
    }
    version = sqlite3_column_int(st.s, 0);
  }
  constexpr int kLatest = static_cast<int>(std::size(kMigrations));
  if (version > kLatest) {
    return make_error(ErrorCode::kFailed, "job store: schema version " + std::to_string(version) +
                                              " is newer than this gpuvisor knows (" +
                                              std::to_string(kLatest) +
                                              "): it was written by a newer release");
  }
  for (; version < kLatest; ++version) {
    const std::string step = std::string("BEGIN IMMEDIATE; ") + kMigrations[version] +
                             " PRAGMA user_version=" + std::to_string(version + 1) + "; COMMIT;";
    if (sqlite3_exec(db, step.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
      Error e = db_error(db, "migrate to schema version " + std::to_string(version + 1));
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      return e;
    }
  }
  return {};
}

}  // namespace

const char* to_string(JobState state) {
  switch (state) {
    case JobState::kPending:
      return "pending";
    case JobState::kRunning:
      return "running";
    case JobState::kCompleted:
      return "completed";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "failed";
}

bool is_final(JobState state) {
  return state == JobState::kCompleted || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

std::optional<JobState> parse_job_state(const std::string& text) {
  for (const auto s : {JobState::kPending, JobState::kRunning, JobState::kCompleted,
                       JobState::kFailed, JobState::kCancelled}) {
    if (text == to_string(s)) return s;
  }
  return std::nullopt;
}

Result<std::unique_ptr<JobStore>> JobStore::open(const std::string& path,
                                                 boost::asio::any_io_executor executor) {
  sqlite3* writer = nullptr;
  sqlite3* reader = nullptr;
  const auto fail = [&](sqlite3* db, const std::string& what) {
    Error e =
        db != nullptr ? db_error(db, what) : make_error(ErrorCode::kFailed, "job store: " + what);
    sqlite3_close(writer);
    sqlite3_close(reader);
    return e;
  };
  if (sqlite3_open_v2(path.c_str(), &writer,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    return fail(writer, "cannot open " + path);
  }
  // WAL: readers never wait for a commit. FULL: a commit is fsynced before it returns, so an
  // acknowledged job survives a power cut, not only a crash.
  char* message = nullptr;
  const std::string setup = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; ") +
                            "PRAGMA busy_timeout=5000; " + kSchema;
  if (sqlite3_exec(writer, setup.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string why = message != nullptr ? message : "unknown error";
    sqlite3_free(message);
    return fail(nullptr, "cannot set up " + path + ": " + why);
  }
  if (auto migrated = migrate(writer); !migrated) {
    sqlite3_close(writer);
    return migrated.error();
  }
  if (sqlite3_open_v2(path.c_str(), &reader, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    return fail(reader, "cannot open " + path + " for reading");
  }
  sqlite3_busy_timeout(reader, 5000);
  return std::unique_ptr<JobStore>(new JobStore(writer, reader, std::move(executor)));
}

JobStore::JobStore(sqlite3* writer, sqlite3* reader, boost::asio::any_io_executor executor)
    : writer_(writer), reader_(reader), executor_(std::move(executor)) {
  thread_ = std::thread([this] { run(); });
}

JobStore::~JobStore() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();  // what was queued is committed first
  sqlite3_close(reader_);
  sqlite3_close(writer_);
}

void JobStore::insert(Job job, std::function<void(Result<Job>)> done) {
  {
    std::lock_guard lock(mutex_);
    ops_.push_back(Op{Op::kInsert, std::move(job), std::move(done), {}});
  }
  wake_.notify_one();
}

void JobStore::update(const Job& job, std::function<void(Status)> done) {
  {
    std::lock_guard lock(mutex_);
    ops_.push_back(Op{Op::kUpdate, job, {}, std::move(done)});
  }
  wake_.notify_one();
}

void JobStore::remove(int64_t id, std::function<void(Status)> done) {
  Job job;
  job.id = id;
  {
    std::lock_guard lock(mutex_);
    ops_.push_back(Op{Op::kRemove, std::move(job), {}, std::move(done)});
  }
  wake_.notify_one();
}

void JobStore::purge(int64_t finished_before_ms, int64_t keep_newest,
                     std::function<void(Result<int64_t>)> done) {
  Job cut;
  cut.finished_ms = finished_before_ms;
  cut.attempts = static_cast<int>(std::clamp<int64_t>(keep_newest, -1, INT32_MAX));
  {
    std::lock_guard lock(mutex_);
    ops_.push_back(Op{Op::kPurge, std::move(cut), {}, {}, std::move(done)});
  }
  wake_.notify_one();
}

Status JobStore::apply(Op& op) {
  Stmt st;
  const Job& j = op.job;
  if (op.kind == Op::kPurge) {
    // LIMIT -1 keeps every one by count; the newest by finished_ms, then id, are kept.
    const char* purge =
        "DELETE FROM jobs WHERE state IN ('completed', 'failed', 'cancelled') AND (finished_ms < "
        "?1 "
        "OR id NOT IN (SELECT id FROM jobs WHERE state IN ('completed', 'failed', 'cancelled') "
        "ORDER BY finished_ms DESC, id DESC LIMIT ?2))";
    if (sqlite3_prepare_v2(writer_, purge, -1, &st.s, nullptr) != SQLITE_OK) {
      return db_error(writer_, "prepare");
    }
    sqlite3_bind_int64(st.s, 1, j.finished_ms);
    sqlite3_bind_int64(st.s, 2, j.attempts);
    if (sqlite3_step(st.s) != SQLITE_DONE) return db_error(writer_, "purge");
    op.job.id = sqlite3_changes(writer_);
    return {};
  }
  const char* sql =
      op.kind == Op::kInsert
          ? "INSERT INTO jobs (plugin, input, state, created_ms) VALUES (?1, ?2, ?3, ?4)"
      : op.kind == Op::kUpdate
          ? "UPDATE jobs SET state=?3, started_ms=?5, finished_ms=?6, result=?7, error=?8, "
            "attempts=?9, progress=?10, worker_pid=?12 WHERE id=?11"
          : "DELETE FROM jobs WHERE id=?11";
  if (sqlite3_prepare_v2(writer_, sql, -1, &st.s, nullptr) != SQLITE_OK) {
    return db_error(writer_, "prepare");
  }
  const std::string input = json_text(j.input);
  const std::string result = j.result.is_null() ? "" : json_text(j.result);
  if (op.kind != Op::kRemove) {
    if (op.kind == Op::kInsert) {
      sqlite3_bind_text(st.s, 1, j.plugin.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(st.s, 2, input.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(st.s, 4, j.created_ms);
    }
    sqlite3_bind_text(st.s, 3, to_string(j.state), -1, SQLITE_STATIC);
  }
  if (op.kind == Op::kUpdate) {
    sqlite3_bind_int64(st.s, 5, j.started_ms);
    sqlite3_bind_int64(st.s, 6, j.finished_ms);
    if (j.result.is_null()) {
      sqlite3_bind_null(st.s, 7);
    } else {
      sqlite3_bind_text(st.s, 7, result.c_str(), -1, SQLITE_TRANSIENT);
    }
    sqlite3_bind_text(st.s, 8, j.error.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st.s, 9, j.attempts);
    sqlite3_bind_double(st.s, 10, j.progress);
    sqlite3_bind_int64(st.s, 12, j.worker_pid);
  }
  if (op.kind != Op::kInsert) sqlite3_bind_int64(st.s, 11, j.id);
  if (sqlite3_step(st.s) != SQLITE_DONE) return db_error(writer_, "write");
  if (op.kind == Op::kInsert) op.job.id = sqlite3_last_insert_rowid(writer_);
  return {};
}

void JobStore::run() {
  for (;;) {
    std::deque<Op> batch;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stop_ || !ops_.empty(); });
      if (ops_.empty()) return;  // stopping, and nothing left to write
      batch.swap(ops_);
    }
    // One transaction, one fsync, for everything that queued up meanwhile.
    std::vector<Status> outcomes;
    outcomes.reserve(batch.size());
    Status begun = sqlite3_exec(writer_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK
                       ? Status{}
                       : Status(db_error(writer_, "begin"));
    for (auto& op : batch) outcomes.push_back(begun ? apply(op) : begun);
    Status committed = begun;
    if (begun && sqlite3_exec(writer_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      committed = db_error(writer_, "commit");
      sqlite3_exec(writer_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      Op& op = batch[i];
      Status outcome = committed ? outcomes[i] : committed;
      if (op.kind == Op::kInsert && op.inserted) {
        Result<Job> r = outcome ? Result<Job>(std::move(op.job)) : Result<Job>(outcome.error());
        boost::asio::post(executor_,
                          [done = std::move(op.inserted), r = std::move(r)]() mutable { done(r); });
      } else if (op.kind == Op::kPurge && op.purged) {
        Result<int64_t> r = outcome ? Result<int64_t>(op.job.id) : Result<int64_t>(outcome.error());
        boost::asio::post(executor_, [done = std::move(op.purged), r]() { done(r); });
      } else if (op.written) {
        boost::asio::post(executor_, [done = std::move(op.written), outcome]() { done(outcome); });
      }
    }
  }
}

Result<Job> JobStore::get(int64_t id) const {
  std::lock_guard lock(read_mutex_);
  Stmt st;
  const std::string sql = std::string("SELECT ") + kColumns + " FROM jobs WHERE id=?1";
  if (sqlite3_prepare_v2(reader_, sql.c_str(), -1, &st.s, nullptr) != SQLITE_OK) {
    return db_error(reader_, "prepare");
  }
  sqlite3_bind_int64(st.s, 1, id);
  const int rc = sqlite3_step(st.s);
  if (rc == SQLITE_ROW) return read_row(st.s);
  if (rc == SQLITE_DONE) return make_error(ErrorCode::kNotFound, "no job " + std::to_string(id));
  return db_error(reader_, "read");
}

Result<std::vector<Job>> JobStore::list(const std::string& state, const std::string& plugin,
                                        size_t limit) const {
  std::lock_guard lock(read_mutex_);
  Stmt st;
  const std::string sql = std::string("SELECT ") + kColumns +
                          " FROM jobs WHERE (?1 = '' OR state = ?1) AND (?2 = '' OR plugin = "
                          "?2) ORDER BY id DESC LIMIT ?3";
  if (sqlite3_prepare_v2(reader_, sql.c_str(), -1, &st.s, nullptr) != SQLITE_OK) {
    return db_error(reader_, "prepare");
  }
  sqlite3_bind_text(st.s, 1, state.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.s, 2, plugin.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st.s, 3, static_cast<int64_t>(limit));
  std::vector<Job> out;
  int rc = SQLITE_OK;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) out.push_back(read_row(st.s));
  if (rc != SQLITE_DONE) return db_error(reader_, "read");
  return out;
}

Result<std::vector<Job>> JobStore::unfinished() const {
  std::lock_guard lock(read_mutex_);
  Stmt st;
  const std::string sql = std::string("SELECT ") + kColumns +
                          " FROM jobs WHERE state IN ('pending', 'running') ORDER BY id";
  if (sqlite3_prepare_v2(reader_, sql.c_str(), -1, &st.s, nullptr) != SQLITE_OK) {
    return db_error(reader_, "prepare");
  }
  std::vector<Job> out;
  int rc = SQLITE_OK;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) out.push_back(read_row(st.s));
  if (rc != SQLITE_DONE) return db_error(reader_, "read");
  return out;
}

Result<std::map<std::string, int64_t>> JobStore::count_by_state() const {
  std::lock_guard lock(read_mutex_);
  Stmt st;
  if (sqlite3_prepare_v2(reader_, "SELECT state, COUNT(*) FROM jobs GROUP BY state", -1, &st.s,
                         nullptr) != SQLITE_OK) {
    return db_error(reader_, "prepare");
  }
  std::map<std::string, int64_t> out;
  for (const auto s : {JobState::kPending, JobState::kRunning, JobState::kCompleted,
                       JobState::kFailed, JobState::kCancelled}) {
    out[to_string(s)] = 0;
  }
  int rc = SQLITE_ROW;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    out[text_column(st.s, 0)] = sqlite3_column_int64(st.s, 1);
  }
  if (rc != SQLITE_DONE) return db_error(reader_, "read");
  return out;
}

Result<int64_t> JobStore::count() const {
  std::lock_guard lock(read_mutex_);
  Stmt st;
  if (sqlite3_prepare_v2(reader_, "SELECT COUNT(*) FROM jobs", -1, &st.s, nullptr) != SQLITE_OK) {
    return db_error(reader_, "prepare");
  }
  if (sqlite3_step(st.s) != SQLITE_ROW) return db_error(reader_, "read");
  return static_cast<int64_t>(sqlite3_column_int64(st.s, 0));
}

}  // namespace gpuvisor
