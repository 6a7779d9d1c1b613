#include "runtime/spawn.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <map>
#include <utility>

#include "runtime/child_process.h"

extern char** environ;

namespace gpuvisor {

namespace {

// Only async-signal-safe calls between fork and exec: the daemon may have other threads.
// What the child was doing when it failed, so the error names the step, not only errno.
enum Stage : int { kJoinCgroup, kSetsid, kStdio, kChdir, kExec };
struct ChildFailure {
  int stage;
  int err;
};

// Owns one descriptor the parent opened for the child: every return path closes it.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd& operator=(Fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  explicit operator bool() const { return fd_ >= 0; }
  int get() const { return fd_; }

 private:
  int fd_ = -1;
};

[[noreturn]] void child_fail(int report_fd, Stage stage, int err) {
  const ChildFailure failure{stage, err};
  const ssize_t ignored = write(report_fd, &failure, sizeof failure);
  (void)ignored;  // the parent sees EOF and an exit status 127 either way
  _exit(127);
}

void format_pid(pid_t pid, char* out) {
  char digits[16];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + pid % 10);
    pid /= 10;
  } while (pid > 0 && n < 15);
  for (int i = 0; i < n; ++i) out[i] = digits[n - 1 - i];
  out[n] = '\n';
  out[n + 1] = '\0';
}

// Sockets and files the daemon opened without O_CLOEXEC (Asio's accepted connections among
// them) must not reach the service: a child holding a client's connection keeps that client
// waiting after the daemon is gone. Marked close-on-exec so the failure report pipe still works.
void close_inherited_fds() {
  if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
  // Kernels before 5.11: walk the descriptor table.
  const long limit = sysconf(_SC_OPEN_MAX);
  for (long fd = 3; fd < (limit > 0 ? limit : 1024); ++fd) {
    const int flags = fcntl(static_cast<int>(fd), F_GETFD);
    if (flags >= 0) fcntl(static_cast<int>(fd), F_SETFD, flags | FD_CLOEXEC);
  }
}

// The descriptor limit the daemon started with: services get it back (raise_fd_limit()).
rlimit g_child_nofile{0, 0};

// clone3 puts the child in its cgroup as it is created (CLONE_INTO_CGROUP, Linux 5.7) and hands
// back a pidfd with it. Moving a running process by writing cgroup.procs instead waits for an
// RCU grace period, which cost ~10 ms of every start. Older kernels get fork, and the child
// joins the cgroup itself before exec. No glibc wrapper in Debian 12, hence the raw syscall; the
// child only makes async-signal-safe calls, as after fork.
pid_t fork_child(int cgroup_dir_fd, int& pidfd, bool& in_cgroup) {
  clone_args args{};
  args.flags = CLONE_PIDFD | (cgroup_dir_fd >= 0 ? CLONE_INTO_CGROUP : 0);
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.cgroup = cgroup_dir_fd >= 0 ? static_cast<uint64_t>(cgroup_dir_fd) : 0;
  const long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid >= 0) {
    in_cgroup = cgroup_dir_fd >= 0;
    return static_cast<pid_t>(pid);
  }
  pidfd = -1;
  in_cgroup = false;
  return fork();
}

// The descriptors the parent opens for the child: every return path closes them.
struct ChildFds {
  Fd log;
  // The cgroup directory for clone3, and its cgroup.procs for kernels that cannot clone into it.
  Fd cgroup_dir;
  Fd cgroup_procs;
};

Status open_child_fds(const SpawnRequest& request, ChildFds& fds) {
  const char* log_path = request.log_path.empty() ? "/dev/null" : request.log_path.c_str();
  fds.log = Fd(open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!fds.log) {
    return make_error(ErrorCode::kFailed,
                      std::string("cannot open log ") + log_path + ": " + std::strerror(errno));
  }
  if (!request.cgroup_dir.empty()) {
    fds.cgroup_dir = Fd(open(request.cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    const std::string procs = request.cgroup_dir + "/cgroup.procs";
    fds.cgroup_procs = Fd(open(procs.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fds.cgroup_dir || !fds.cgroup_procs) {
      return make_error(ErrorCode::kUnavailable,
                        "cannot open cgroup " + request.cgroup_dir + ": " + std::strerror(errno));
    }
  }
  return {};
}

// The child's side, between fork and exec: everything it uses was prepared before fork, and it
// makes only async-signal-safe calls. It leaves by exec or _exit: no destructor runs here, and
// none may.
[[noreturn]] void exec_child(const SpawnRequest& request, const ChildFds& fds, bool in_cgroup,
                             int report, char* const argv[], char* const envp[]) {
  if (fds.cgroup_procs && !in_cgroup) {
    char text[18];
    format_pid(getpid(), text);
    if (write(fds.cgroup_procs.get(), text, strlen(text)) < 0) {
      child_fail(report, kJoinCgroup, errno);
    }
  }
  if (setsid() < 0) child_fail(report, kSetsid, errno);
  // Dispositions the daemon set (SIGPIPE ignored) and its signal mask survive exec; reset
  // them so the service starts as it would from a shell.
  for (int sig = 1; sig < NSIG; ++sig) signal(sig, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  const int in_fd = request.stdin_fd >= 0 ? request.stdin_fd : open("/dev/null", O_RDONLY);
  const int out_fd = request.stdout_fd >= 0 ? request.stdout_fd : fds.log.get();
  if (in_fd < 0 || dup2(in_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
      dup2(fds.log.get(), STDERR_FILENO) < 0) {
    child_fail(report, kStdio, errno);
  }
  close_inherited_fds();
  // A server written for select() may break with a huge limit: it gets the usual one.
  if (g_child_nofile.rlim_max != 0) setrlimit(RLIMIT_NOFILE, &g_child_nofile);
  if (!request.cwd.empty() && chdir(request.cwd.c_str()) != 0) {
    child_fail(report, kChdir, errno);
  }
  execvpe(argv[0], argv, envp);
  child_fail(report, kExec, errno);
}

// Spawning without copying the daemon: clone3 with CLONE_VM | CLONE_VFORK, the way posix_spawn
// does it. The child runs exec_child on a stack of its own inside the daemon's address space,
// and the daemon's thread waits until it has exec'd or exited, so no page table is copied and
// no copy-on-write fault taken: on a VM where a page fault costs 10-16 us, fork's copy of the
// daemon cost 2-5 ms of every start, this 0.3-0.6 ms. The child still lands in its cgroup as it
// is created and hands back a pidfd.
//
// A child on a fresh stack cannot return from a libc syscall() wrapper, hence the trampoline:
// clone3, and in the child call fn(arg) on the new stack and exit with what it returns. x86-64
// only; elsewhere, and under the sanitizers (whose instrumented code would run on a stack they
// were never told of), spawn_process forks as before.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define GPUVISOR_VM_SPAWN 1
extern "C" long gpuvisor_clone3_vm(clone_args* args, size_t size, int (*fn)(void*), void* arg);
// rdi: args, rsi: size, rdx: fn, rcx: arg. syscall keeps every register but rax, rcx and r11,
// so arg goes to r8 first; the child starts with the stack the kernel set (16-byte aligned).
__asm__(
    ".text\n"
    ".globl gpuvisor_clone3_vm\n"
    ".type gpuvisor_clone3_vm,@function\n"
    "gpuvisor_clone3_vm:\n"
    "  mov %rcx, %r8\n"
    "  mov $435, %eax\n"  // SYS_clone3
    "  syscall\n"
    "  test %rax, %rax\n"
    "  jz 1f\n"
    "  ret\n"  // the parent: the child's PID, or -errno
    "1:\n"
    "  xor %ebp, %ebp\n"
    "  mov %r8, %rdi\n"
    "  call *%rdx\n"
    "  mov %eax, %edi\n"
    "  mov $60, %eax\n"  // SYS_exit: fn never returns, but the child must not fall through
    "  syscall\n"
    "  hlt\n"
    ".size gpuvisor_clone3_vm, .-gpuvisor_clone3_vm\n");
#endif

struct ExecArgs {
  const SpawnRequest* request;
  const ChildFds* fds;
  bool in_cgroup;
  int report;
  char* const* argv;
  char* const* envp;
};

[[maybe_unused]] int exec_child_on_stack(void* p) {
  const auto* a = static_cast<const ExecArgs*>(p);
  exec_child(*a->request, *a->fds, a->in_cgroup, a->report, a->argv, a->envp);
}

// The child started the cheap way, or -1 with errno set when that cannot be done here (then
// fork_child does it the old way). Every signal is blocked around the clone: until the child has
// reset its dispositions (exec_child), a handler of the daemon's must never run in it.
pid_t vm_spawn([[maybe_unused]] ExecArgs& child, [[maybe_unused]] int cgroup_dir_fd,
               [[maybe_unused]] int& pidfd) {
#ifdef GPUVISOR_VM_SPAWN
  constexpr size_t kGuard = 4096;
  constexpr size_t kStack = 128 * 1024;
  void* map = mmap(nullptr, kGuard + kStack, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (map == MAP_FAILED) return -1;
  mprotect(map, kGuard, PROT_NONE);  // an overflow faults instead of writing the daemon's memory
  clone_args args{};
  args.flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD | (cgroup_dir_fd >= 0 ? CLONE_INTO_CGROUP : 0);
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.cgroup = cgroup_dir_fd >= 0 ? static_cast<uint64_t>(cgroup_dir_fd) : 0;
  args.stack = reinterpret_cast<uint64_t>(static_cast<char*>(map) + kGuard);
  args.stack_size = kStack;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  const long pid = gpuvisor_clone3_vm(&args, sizeof args, exec_child_on_stack, &child);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  munmap(map, kGuard + kStack);  // the child has exec'd or exited: CLONE_VFORK waited for it
  if (pid < 0) {
    pidfd = -1;
    errno = static_cast<int>(-pid);
    return -1;
  }
  return static_cast<pid_t>(pid);
#else
  errno = ENOSYS;
  return -1;
#endif
}

// Blocks only until exec succeeds (EOF through O_CLOEXEC) or the child reports why it failed;
// a child that failed is reaped here.
Status wait_for_exec(int report_read, pid_t pid, const SpawnRequest& request) {
  ChildFailure failure{};
  ssize_t n = 0;
  do {
    n = read(report_read, &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof failure)) return {};
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string why = std::strerror(failure.err);
  switch (failure.stage) {
    case kJoinCgroup:
      return make_error(ErrorCode::kUnavailable,
                        "cannot join cgroup " + request.cgroup_dir + ": " + why);
    case kChdir:
      return make_error(ErrorCode::kFailed,
                        "cannot change to directory '" + request.cwd + "': " + why);
    case kExec:
      return make_error(ErrorCode::kFailed, "cannot execute '" + request.argv[0] + "': " + why);
    default:
      return make_error(ErrorCode::kFailed, "cannot set up the service process: " + why);
  }
}

}  // namespace

void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  g_child_nofile = limit;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

std::vector<std::string> merged_environment(
    const std::vector<std::pair<std::string, std::string>>& overrides) {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry(*e);
    const auto eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  // The daemon's API secret is its own: a service (or anything that reads its environment)
  // must not get it by inheritance. A service that needs it names it in its env.
  env.erase("GPUVISOR_TOKEN");
  for (const auto& [key, value] : overrides) env[key] = value;
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [key, value] : env) out.push_back(std::string(key).append("=").append(value));
  return out;
}

Result<Spawned> spawn_process(const SpawnRequest& request) {
  if (request.argv.empty() || request.argv[0].empty()) {
    return make_error(ErrorCode::kBadRequest, "empty command");
  }
  // Everything the child needs is prepared before fork: no allocation after it.
  std::vector<char*> argv;
  for (const auto& a : request.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : request.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  ChildFds fds;
  if (auto opened = open_child_fds(request, fds); !opened) return opened.error();
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return make_error(ErrorCode::kFailed, std::string("pipe: ") + std::strerror(errno));
  }
  const Fd report_read(pipe_fds[0]);
  Fd report_write(pipe_fds[1]);

  int raw_pidfd = -1;
  bool in_cgroup = fds.cgroup_dir.get() >= 0;
  ExecArgs child{&request, &fds, in_cgroup, report_write.get(), argv.data(), envp.data()};
  pid_t pid = vm_spawn(child, fds.cgroup_dir.get(), raw_pidfd);
  if (pid < 0) {  // an older kernel, another architecture: fork, as everywhere else
    pid = fork_child(fds.cgroup_dir.get(), raw_pidfd, in_cgroup);
    if (pid == 0) exec_child(request, fds, in_cgroup, report_write.get(), argv.data(), envp.data());
  }

  const int fork_errno = errno;
  Pidfd pidfd(raw_pidfd);
  report_write = Fd();  // our copy of the write end must go, or the read below never ends
  if (pid < 0) {
    return make_error(ErrorCode::kFailed, std::string("fork: ") + std::strerror(fork_errno));
  }
  if (auto exec = wait_for_exec(report_read.get(), pid, request); !exec) return exec.error();
  Spawned out;
  out.pid = pid;
  // The child is ours and not reaped, so its PID cannot have been reused yet.
  out.pidfd = pidfd.valid() ? std::move(pidfd) : Pidfd::open(pid);
  return out;
}

}  // namespace gpuvisor
