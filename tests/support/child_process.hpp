// Starts a test node program (an RPC node in its own process, with real sockets between it and the
// test; the RPC benchmark starts its servers with it too). The program prints
// "LISTENING <port> [<node id>]" once it listens, logs to stderr and exits when its stdin closes.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace flypg::test {

/// A loopback port that was free a moment ago (for nodes that must know each other's ports
/// before they start).
inline std::uint16_t free_port() {
    asio::io_context io;
    asio::ip::tcp::acceptor probe(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    return probe.local_endpoint().port();
}

class child_process {
  public:
    /// Starts `program` with `args` and waits (up to 10 s) until it listens.
    child_process(std::string program, std::vector<std::string> args) {
        static int counter = 0;
        log_path_ =
            "/tmp/flypg_test_child_" + std::to_string(::getpid()) + "_" + std::to_string(++counter) + ".log";
        int in[2];
        int out[2];
        if (::pipe(in) != 0 || ::pipe(out) != 0) throw std::runtime_error("pipe failed");
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
        posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
        posix_spawn_file_actions_addopen(
            &actions, STDERR_FILENO, log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_addclose(&actions, in[1]);
        posix_spawn_file_actions_addclose(&actions, out[0]);
        // Nothing else of this process: Asio opens sockets without O_CLOEXEC, and a child holding
        // a test's socket keeps it open after the test closed or reset it.
        posix_spawn_file_actions_addclosefrom_np(&actions, 3);
        std::vector<std::string> all{program};
        all.insert(all.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (auto& a : all) argv.push_back(a.data());
        argv.push_back(nullptr);
        const int rc = ::posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        ::close(in[0]);
        ::close(out[1]);
        stdin_ = in[1];
        stdout_ = out[0];
        if (rc != 0) throw std::runtime_error("posix_spawn failed");
        const std::string line = read_line(std::chrono::seconds(10));
        std::istringstream words(line);
        std::string tag;
        unsigned port = 0;
        words >> tag >> port >> node_id_;
        if (tag != "LISTENING") throw std::runtime_error("test node did not start: " + line + "\n" + log());
        port_ = static_cast<std::uint16_t>(port);
    }

    ~child_process() {
        if (stdin_ >= 0) ::close(stdin_);  // the node exits when its stdin closes
        if (pid_ > 0 && !wait_exit(std::chrono::seconds(5))) kill_hard();
        if (stdout_ >= 0) ::close(stdout_);
        // A sanitizer's report (a leak found at exit, say) is a failure of the test that ran the
        // child, even though the child exited: it must not vanish with the log.
        const std::string text = log();
        for (const char* mark : {"ERROR: AddressSanitizer",
                                 "ERROR: LeakSanitizer",
                                 "WARNING: ThreadSanitizer",
                                 "runtime error:"}) {
            if (text.find(mark) != std::string::npos) {
                std::fprintf(stderr,
                             "a child process reported a sanitizer error (log kept in %s):\n%s\n",
                             log_path_.c_str(),
                             text.c_str());
                std::abort();
            }
        }
        std::remove(log_path_.c_str());
    }

    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;

    /// SIGKILL, as a crash or an OOM kill would.
    void kill_hard() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
    }

    /// SIGSTOP / SIGCONT, as a frozen host would look to its peers.
    void send_signal(int signal_number) {
        if (pid_ > 0) ::kill(pid_, signal_number);
    }

    /// Whether the process still runs (it has neither exited nor crashed).
    bool running() {
        if (pid_ <= 0) return false;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) != pid_) return true;
        pid_ = -1;
        exit_status_ = status;
        return false;
    }
    /// How it ended, once running() said it did ("killed by signal 11", "exited with 1").
    std::string how_it_ended() const {
        if (WIFSIGNALED(exit_status_)) return "killed by signal " + std::to_string(WTERMSIG(exit_status_));
        return "exited with " + std::to_string(WEXITSTATUS(exit_status_));
    }
    /// Its resident memory in KiB (VmRSS), or 0 when it is gone.
    long rss_kib() const {
        std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
        std::string key;
        while (status >> key) {
            if (key == "VmRSS:") {
                long kib = 0;
                status >> kib;
                return kib;
            }
            status.ignore(4096, '\n');
        }
        return 0;
    }

    std::uint16_t port() const { return port_; }
    const std::string& node_id() const { return node_id_; }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

    /// Everything the node logged so far.
    std::string log() const {
        std::ifstream in(log_path_);
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }

  private:
    std::string read_line(std::chrono::milliseconds limit) {
        std::string line;
        const auto end = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < end) {
            pollfd p{stdout_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            char c = 0;
            if (::read(stdout_, &c, 1) != 1) break;
            if (c == '\n') return line;
            line += c;
        }
        return line;
    }

    bool wait_exit(std::chrono::milliseconds limit) {
        const auto end = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < end) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }

    pid_t pid_ = -1;
    int exit_status_ = 0;
    int stdin_ = -1;
    int stdout_ = -1;
    std::uint16_t port_ = 0;
    std::string node_id_;
    std::string log_path_;
};

}  // namespace flypg::test
