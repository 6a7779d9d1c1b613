// VRAM leases: granted where the fit says, ended by release, by their ttl at its instant (on a
// FakeClock) or by their PID's exit, and seen as holders by the ownership snapshot.
#include "resources/leases.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>

#include "lib/fakes.h"
#include "lib/temp_dir.h"

namespace gpuvisor {
namespace {

using testing::run_until;
constexpr uint64_t kGiB = 1ULL << 30;

class LeasesTest : public ::testing::Test {
 protected:
  std::vector<std::string> ended() const {
    std::vector<std::string> out;
    for (const auto& e : events_.since(0)) {
      if (e.type == "lease.ended") out.push_back(e.data["reason"].get<std::string>());
    }
    return out;
  }
  static Result<unsigned> fits_on_1(uint64_t, std::optional<unsigned>) { return 1u; }

  boost::asio::io_context io_;
  FakeClock clock_;
  EventBus events_;
  Leases leases_{io_.get_executor(), clock_, events_};
};

TEST_F(LeasesTest, ATtlEndsTheLeaseAtItsInstant) {
  const auto lease =
      leases_.grant({8 * kGiB, std::nullopt, Millis(600'000), {}, "notebook"}, fits_on_1);
  ASSERT_TRUE(lease) << lease.error().message;
  EXPECT_EQ(1u, lease->gpu);
  EXPECT_EQ(clock_.unix_ms() + 600'000, lease->expires_unix_ms);
  Ownership owners;
  leases_.add_to(owners);
  ASSERT_EQ(1u, owners.holders().size());
  EXPECT_EQ("lease:1", owners.holders()[0].owner());
  EXPECT_EQ("lease 1 (notebook)", owners.holders()[0].label());
  EXPECT_EQ(8 * kGiB, owners.holders()[0].reserved_bytes);
  clock_.advance(Millis(599'999));
  EXPECT_EQ(1u, leases_.all().size());
  clock_.advance(Millis(1));
  EXPECT_TRUE(leases_.all().empty());
  EXPECT_EQ(std::vector<std::string>{"expired"}, ended());
}

TEST_F(LeasesTest, ALeaseEndsWithItsPidAndOnRelease) {
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sleep", "sleep", "1000", static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_TRUE(leases_.grant({kGiB, 0u, {}, pid, ""}, fits_on_1));
  ASSERT_TRUE(leases_.grant({kGiB, 0u, {}, {}, ""}, fits_on_1));
  Ownership owners;
  leases_.add_to(owners);
  ASSERT_NE(nullptr, owners.find(pid));  // its memory is the lease's, not external
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  ASSERT_TRUE(run_until(io_, [&] { return leases_.all().size() == 1; }));
  EXPECT_EQ(2u, leases_.all()[0].id);
  ASSERT_TRUE(leases_.release(2));
  EXPECT_EQ(ErrorCode::kNotFound, leases_.release(2).error().code);
  EXPECT_EQ((std::vector<std::string>{"pid_exited", "released"}), ended());
}

TEST_F(LeasesTest, ARefusalOrADeadPidGrantsNothing) {
  const auto refused = leases_.grant({kGiB, 0u, {}, {}, ""}, [](uint64_t, std::optional<unsigned>) {
    return Result<unsigned>(make_error(ErrorCode::kConflict, "cannot reserve 1.0 GiB: ..."));
  });
  EXPECT_EQ(ErrorCode::kConflict, refused.error().code);
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  waitpid(pid, nullptr, 0);
  const auto dead = leases_.grant({kGiB, 0u, {}, pid, ""}, fits_on_1);
  EXPECT_EQ(ErrorCode::kNotFound, dead.error().code);
  EXPECT_TRUE(leases_.all().empty());
  EXPECT_TRUE(events_.since(0).empty());
}

// A restarted daemon takes back what still holds: not a lease whose time ran out while no
// daemon watched, nor one whose PID is gone.
TEST_F(LeasesTest, ARestartTakesBackOnlyTheLeasesThatStillHold) {
  const std::string file = fresh_dir("leases") + "/leases.json";
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sleep", "sleep", "1000", static_cast<char*>(nullptr));
    _exit(127);
  }
  const pid_t dead = fork();
  if (dead == 0) {
    execl("/bin/sleep", "sleep", "1000", static_cast<char*>(nullptr));
    _exit(127);
  }
  {
    Leases before(io_.get_executor(), clock_, events_, file);
    ASSERT_TRUE(before.grant({kGiB, 0u, Millis(600'000), pid, "notebook"}, fits_on_1));
    ASSERT_TRUE(before.grant({kGiB, 0u, Millis(60'000), {}, "short"}, fits_on_1));
    ASSERT_TRUE(before.grant({kGiB, 0u, {}, dead, "gone"}, fits_on_1));
  }  // the daemon goes; its leases stay on disk
  kill(dead, SIGKILL);
  waitpid(dead, nullptr, 0);
  clock_.advance(Millis(60'000));  // "short" ran out meanwhile
  Leases after(io_.get_executor(), clock_, events_, file);
  EXPECT_EQ(1u, after.restore());
  ASSERT_EQ(1u, after.all().size());
  EXPECT_EQ("notebook", after.all()[0].holder);
  clock_.advance(Millis(539'999));
  EXPECT_EQ(1u, after.all().size());
  clock_.advance(Millis(1));  // its ttl still counts from when it was granted
  EXPECT_TRUE(after.all().empty());
  const auto next = after.grant({kGiB, 0u, {}, {}, ""}, fits_on_1);
  EXPECT_EQ(4u, next->id);  // ids are never reused
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

}  // namespace
}  // namespace gpuvisor
