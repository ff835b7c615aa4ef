// A FileSystem for tests: the real POSIX one underneath, with one fault armed on cue.
//
//   kltest::FaultyFileSystem fs;
//   fs.arm(kltest::Op::kAppend, 0, kltest::Fault::kFail, "No space left on device");
//   options.file_system = &fs;   // the next append fails as a full disk would
//
// A fault fires on the (skip + 1)-th call of its operation after arm(). kFail fails that
// call once; kFailAlways fails it and every later one; kPartialAppend writes the first
// `partial_bytes` of an append for real, then fails; kCrashBefore and kCrashAfter end the
// process with _exit(kCrashExitCode) just before or just after the operation, for tests
// that fork a child to crash at a named step. Thread-safe.
#ifndef KEYSTONELIGHT_TESTS_FAULTY_FS_HPP
#define KEYSTONELIGHT_TESTS_FAULTY_FS_HPP

#include <unistd.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kltest {

enum class Op { kOpen, kAppend, kSync, kTruncate, kRename, kRemove, kSyncDir, kCreateDir, kListDir };
enum class Fault { kNone, kFail, kFailAlways, kPartialAppend, kCrashBefore, kCrashAfter };

inline constexpr int kCrashExitCode = 77;

class FaultyFileSystem : public keystonelight::FileSystem {
 public:
  // Arms one more fault; faults on different operations are independent.
  void arm(Op op, int skip, Fault fault, std::string reason = "Input/output error",
           std::size_t partial_bytes = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    armed_.push_back({op, skip, fault, std::move(reason), partial_bytes});
  }
  void disarm() {
    std::lock_guard<std::mutex> lock(mu_);
    armed_.clear();
  }

  // Makes every file sync take at least this long, as a slow disk would: tests of group
  // commit use it so that concurrent writers really do meet at an fsync.
  void slow_sync(std::chrono::microseconds delay) {
    std::lock_guard<std::mutex> lock(mu_);
    sync_delay_ = delay;
  }
  std::chrono::microseconds sync_delay() {
    std::lock_guard<std::mutex> lock(mu_);
    return sync_delay_;
  }

  // How many times `op` was called since construction.
  int calls(Op op) {
    std::lock_guard<std::mutex> lock(mu_);
    return counts_[static_cast<std::size_t>(op)];
  }

  // Decides the fate of one call: go ahead (kNone), or the fault that fires, with the
  // failure to report. Partial appends and crashes after the call are the caller's to do.
  Fault check(Op op, keystonelight::Status* failure, std::size_t* partial_bytes,
              const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    ++counts_[static_cast<std::size_t>(op)];
    for (auto it = armed_.begin(); it != armed_.end(); ++it) {
      if (it->op != op) continue;
      if (it->skip > 0) {
        --it->skip;
        continue;
      }
      const Armed fired = *it;
      if (fired.fault != Fault::kFailAlways) armed_.erase(it);
      if (fired.fault == Fault::kCrashBefore) ::_exit(kCrashExitCode);
      *failure = keystonelight::Status::io_error(std::string(name(op)) + " " + path + ": " +
                                                 fired.reason);
      *partial_bytes = fired.partial_bytes;
      return fired.fault;
    }
    return Fault::kNone;
  }

  keystonelight::Status open(const std::string& path, bool create,
                             std::unique_ptr<keystonelight::File>* file) override;
  bool exists(const std::string& path) override { return real_->exists(path); }
  keystonelight::Status rename(const std::string& from, const std::string& to) override {
    return run(Op::kRename, from, [&] { return real_->rename(from, to); });
  }
  keystonelight::Status remove(const std::string& path) override {
    return run(Op::kRemove, path, [&] { return real_->remove(path); });
  }
  keystonelight::Status sync_dir(const std::string& dir) override {
    return run(Op::kSyncDir, dir, [&] { return real_->sync_dir(dir); });
  }
  keystonelight::Status create_dir(const std::string& dir) override {
    return run(Op::kCreateDir, dir, [&] { return real_->create_dir(dir); });
  }
  keystonelight::Status list_dir(const std::string& dir, std::vector<std::string>* names) override {
    return run(Op::kListDir, dir, [&] { return real_->list_dir(dir, names); });
  }

  // Runs `real` unless a fault fires first; crashes after it when so armed.
  template <class F>
  keystonelight::Status run(Op op, const std::string& path, F&& real) {
    keystonelight::Status failure;
    std::size_t partial = 0;
    Fault fault = check(op, &failure, &partial, path);
    if (fault == Fault::kFail || fault == Fault::kFailAlways) return failure;
    keystonelight::Status s = real();
    if (fault == Fault::kCrashAfter) ::_exit(kCrashExitCode);
    return s;
  }

  static const char* name(Op op) {
    static const char* const names[] = {"open", "write", "fsync", "truncate", "rename",
                                        "remove", "fsync directory", "create directory",
                                        "list directory"};
    return names[static_cast<std::size_t>(op)];
  }

 private:
  struct Armed {
    Op op;
    int skip;
    Fault fault;
    std::string reason;
    std::size_t partial_bytes;
  };

  keystonelight::FileSystem* real_ = keystonelight::default_file_system();
  std::mutex mu_;
  std::vector<Armed> armed_;
  std::chrono::microseconds sync_delay_{0};
  int counts_[9] = {};
};

class FaultyFile : public keystonelight::File {
 public:
  FaultyFile(FaultyFileSystem* fs, std::unique_ptr<keystonelight::File> real)
      : fs_(fs), real_(std::move(real)) {}

  const std::string& path() const override { return real_->path(); }
  keystonelight::Status read_at(std::uint64_t offset, char* buf, std::size_t n,
                                std::size_t* got) override {
    return real_->read_at(offset, buf, n, got);
  }
  keystonelight::Status append(std::string_view data) override {
    keystonelight::Status failure;
    std::size_t partial = 0;
    Fault fault = fs_->check(Op::kAppend, &failure, &partial, path());
    if (fault == Fault::kPartialAppend) {
      (void)real_->append(data.substr(0, std::min(partial, data.size())));
      return failure;
    }
    if (fault == Fault::kFail || fault == Fault::kFailAlways) return failure;
    keystonelight::Status s = real_->append(data);
    if (fault == Fault::kCrashAfter) ::_exit(kCrashExitCode);
    return s;
  }
  keystonelight::Status sync() override {
    return fs_->run(Op::kSync, path(), [&] {
      std::this_thread::sleep_for(fs_->sync_delay());
      return real_->sync();
    });
  }
  keystonelight::Status truncate(std::uint64_t size) override {
    return fs_->run(Op::kTruncate, path(), [&] { return real_->truncate(size); });
  }
  keystonelight::Status size(std::uint64_t* size) override { return real_->size(size); }

 private:
  FaultyFileSystem* fs_;
  std::unique_ptr<keystonelight::File> real_;
};

inline keystonelight::Status FaultyFileSystem::open(const std::string& path, bool create,
                                                    std::unique_ptr<keystonelight::File>* file) {
  std::unique_ptr<keystonelight::File> real;
  keystonelight::Status s = run(Op::kOpen, path, [&] { return real_->open(path, create, &real); });
  if (s.ok()) file->reset(new FaultyFile(this, std::move(real)));
  return s;
}

}  // namespace kltest

#endif  // KEYSTONELIGHT_TESTS_FAULTY_FS_HPP
