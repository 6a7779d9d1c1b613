#include "runtime/proc.h"

#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace gpuvisor {

std::optional<ProcStat> read_proc_stat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  // comm is in parentheses and may itself contain spaces or ')': the last ')' ends it.
  const auto open = line.find('(');
  const auto close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  ProcStat st;
  st.pid = pid;
  st.comm = line.substr(open + 1, close - open - 1);
  std::istringstream rest(line.substr(close + 2));
  // Fields after comm, 1-based from field 3 (state): 3 state, 4 ppid, 5 pgrp, 6 session, ...
  // 22 starttime.
  std::string field;
  for (int index = 3; rest >> field; ++index) {
    if (index == 3) {
      st.state = field.empty() ? '?' : field[0];
    } else if (index == 4) {
      st.ppid = std::stoi(field);
    } else if (index == 5) {
      st.pgid = std::stoi(field);
    } else if (index == 6) {
      st.sid = std::stoi(field);
    } else if (index == 22) {
      st.start_time = std::stoull(field);
      return st;
    }
  }
  return std::nullopt;
}

bool same_process_alive(pid_t pid, uint64_t start_time) {
  const auto st = read_proc_stat(pid);
  return st && st->start_time == start_time && st->state != 'Z' && st->state != 'X';
}

std::vector<ProcStat> list_processes() {
  std::vector<ProcStat> out;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return out;
  while (const dirent* entry = readdir(dir)) {
    pid_t pid = 0;
    const char* name = entry->d_name;
    const char* end = name + std::char_traits<char>::length(name);
    auto [ptr, ec] = std::from_chars(name, end, pid);
    if (ec != std::errc() || ptr != end) continue;
    if (auto st = read_proc_stat(pid)) out.push_back(std::move(*st));
  }
  closedir(dir);
  return out;
}

std::vector<ProcStat> list_service_tree(pid_t root) {
  const auto all = list_processes();
  std::multimap<pid_t, const ProcStat*> children;
  std::vector<const ProcStat*> frontier;
  std::set<pid_t> taken{root};
  const auto take = [&](const ProcStat& st) {
    if (st.state == 'Z' || !taken.insert(st.pid).second) return;
    frontier.push_back(&st);
  };
  for (const auto& st : all) {
    children.emplace(st.ppid, &st);
    if (st.sid == root) take(st);
  }
  for (const auto& st : all) {
    if (st.ppid == root) take(st);
  }
  std::vector<ProcStat> out;
  while (!frontier.empty()) {
    const ProcStat* st = frontier.back();
    frontier.pop_back();
    out.push_back(*st);
    auto [lo, hi] = children.equal_range(st->pid);
    for (auto it = lo; it != hi; ++it) take(*it->second);
  }
  return out;
}

namespace {

std::string pid_namespace(const std::string& proc_dir) {
  std::error_code ec;
  const auto target = std::filesystem::read_symlink(proc_dir + "/ns/pid", ec);
  return ec ? "" : target.string();
}

}  // namespace

std::vector<pid_t> list_namespace_members(pid_t root) {
  const std::string ns = pid_namespace("/proc/" + std::to_string(root));
  if (ns.empty()) return {};
  std::vector<pid_t> out;
  if (ns == pid_namespace("/proc/self")) {
    out.push_back(root);
    for (const auto& p : list_service_tree(root)) out.push_back(p.pid);
    return out;
  }
  for (const auto& p : list_processes()) {
    if (p.state != 'Z' && pid_namespace("/proc/" + std::to_string(p.pid)) == ns) {
      out.push_back(p.pid);
    }
  }
  return out;
}

namespace {

// Socket inodes in LISTEN state on port, from one /proc/net/tcp* table.
void listening_inodes(const std::string& table, unsigned port, std::set<std::string>& out) {
  std::ifstream in(table);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
        timeout >> inode;
    const auto colon = local.rfind(':');
    if (state != "0A" || colon == std::string::npos) continue;  // 0A: TCP_LISTEN
    unsigned local_port = 0;
    const auto hex = local.substr(colon + 1);
    std::from_chars(hex.data(), hex.data() + hex.size(), local_port, 16);
    if (local_port == port) out.insert("socket:[" + inode + "]");
  }
}

}  // namespace

std::optional<pid_t> find_tcp_listener(unsigned port) {
  std::set<std::string> sockets;
  listening_inodes("/proc/net/tcp", port, sockets);
  listening_inodes("/proc/net/tcp6", port, sockets);
  if (sockets.empty()) return std::nullopt;
  std::optional<ProcStat> oldest;
  for (const auto& p : list_processes()) {
    std::error_code ec;
    for (const auto& fd :
         std::filesystem::directory_iterator("/proc/" + std::to_string(p.pid) + "/fd", ec)) {
      std::error_code link_ec;
      const auto target = std::filesystem::read_symlink(fd.path(), link_ec);
      if (link_ec || sockets.count(target.string()) == 0) continue;
      if (!oldest || p.start_time < oldest->start_time) oldest = p;
      break;
    }
  }
  if (!oldest) return std::nullopt;
  return oldest->pid;
}

double start_time_unix_seconds(uint64_t start_time) {
  timespec real{}, boot{};
  clock_gettime(CLOCK_REALTIME, &real);
  clock_gettime(CLOCK_BOOTTIME, &boot);
  const auto seconds = [](const timespec& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
  };
  const double boot_unix = seconds(real) - seconds(boot);
  return boot_unix + static_cast<double>(start_time) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace gpuvisor
