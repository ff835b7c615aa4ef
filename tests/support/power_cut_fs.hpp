// A FileSystem for tests that can lose power: the real POSIX one underneath, keeping
// track of what has reached stable storage, and able to bring a data directory back to
// exactly that, as a machine that lost power would find it on reboot.
//
//   kltest::PowerCutFileSystem fs(dir, shadow);  // dir's present state counts as durable
//   options.file_system = &fs;
//   ... writes, compactions ...
//   fs.cut();                 // the power goes: every later call fails, nothing changes
//   store.reset();            // the store's close() fails harmlessly
//   fs.restore(keep);         // the disk as it would be found on reboot
//
// The model, deliberately pessimistic (an ordinary file system with ordered data may keep
// more, never less):
// - a file keeps the bytes it had at its last File::sync(); bytes appended since are
//   lost, except that restore(keep) keeps up to `keep` of them, as a torn last write;
// - the directory keeps the names it had at its last sync_dir(): a file created, renamed
//   or removed since is back as it was then (a file renamed over is restored from a hard
//   link kept in `shadow`, a directory beside `dir` on the same file system).
// restore_scattered(seed) models a disk that writes pages back in any order instead: each
// 4 KiB page holding unsynced bytes is kept or lost (read back as zeros) at random, and
// the file keeps its size, so a lost page can lie before pages that survived.
// cut_after(n) lets n more calls through, then cuts: a power loss at every step of an
// operation is a loop over n. Files are told apart by inode, which renames keep.
// Thread-safe; one data directory, without subdirectories.
#ifndef KEYSTONELIGHT_TESTS_POWER_CUT_FS_HPP
#define KEYSTONELIGHT_TESTS_POWER_CUT_FS_HPP

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kltest {

class PowerCutFileSystem : public keystonelight::FileSystem {
 public:
  PowerCutFileSystem(std::string dir, std::string shadow)
      : dir_(std::move(dir)), shadow_(std::move(shadow)) {
    if (!real_->create_dir(dir_).ok() || !real_->create_dir(shadow_).ok()) {
      throw std::runtime_error("cannot create " + dir_ + " or " + shadow_);
    }
    snapshot_names();
    for (const auto& [name, inode] : durable_names_) synced_[inode] = size_of(path(name));
  }

  // Lets `calls` more calls through, then cuts the power. A large number never cuts.
  void cut_after(std::uint64_t calls) {
    std::unique_lock<std::shared_mutex> lock(power_);
    left_ = calls;
  }
  // Cuts the power now: calls under way finish, every later one fails.
  void cut() {
    std::unique_lock<std::shared_mutex> lock(power_);
    left_ = 0;
  }
  bool power_is_off() {
    std::lock_guard<std::mutex> lock(mu_);
    return left_ == 0;
  }

  // Brings the directory back to what stable storage holds, keeping up to `keep` of each
  // file's unsynced bytes, and turns the power on again. With `zero_rest`, the unsynced
  // bytes past those are not cut off but zeroed, as a file system that had already grown
  // the file may leave them. Call it once the store using this file system is gone.
  void restore(std::uint64_t keep = 0, bool zero_rest = false) {
    std::unique_lock<std::shared_mutex> lock(power_);
    std::map<std::string, ino_t> now = list_names();
    for (const auto& [name, inode] : now) {  // names the directory never made durable
      auto durable = durable_names_.find(name);
      if (durable == durable_names_.end() || durable->second != inode) ::unlink(path(name).c_str());
    }
    for (const auto& [name, inode] : durable_names_) {  // durable names, as they were
      if (now.count(name) == 0 || now[name] != inode) {
        if (::link(shadow_path(inode).c_str(), path(name).c_str()) != 0) {
          throw std::runtime_error("cannot restore " + path(name));
        }
      }
    }
    for (const auto& [name, inode] : list_names()) {
      const std::uint64_t size = size_of(path(name));
      const std::uint64_t synced = synced_.count(inode) ? synced_[inode] : 0;
      const std::uint64_t kept = std::min(size, synced + std::min(keep, size - std::min(size, synced)));
      if (kept < size && zero_rest) {
        std::FILE* file = std::fopen(path(name).c_str(), "r+b");
        const std::string zeros(size - kept, '\0');
        if (file == nullptr || std::fseek(file, static_cast<long>(kept), SEEK_SET) != 0 ||
            std::fwrite(zeros.data(), 1, zeros.size(), file) != zeros.size() ||
            std::fclose(file) != 0) {
          throw std::runtime_error("cannot zero the tail of " + path(name));
        }
      } else if (kept < size && ::truncate(path(name).c_str(), static_cast<off_t>(kept)) != 0) {
        throw std::runtime_error("cannot truncate " + path(name));
      }
    }
    left_ = std::numeric_limits<std::uint64_t>::max();
  }

  // As restore(), but every page with unsynced bytes is kept or zeroed at random (from
  // `seed`), out of order; sizes stay. Returns how many pages were lost.
  std::uint64_t restore_scattered(std::uint32_t seed) {
    restore(std::numeric_limits<std::uint64_t>::max());  // names as durable, bytes all kept
    std::unique_lock<std::shared_mutex> lock(power_);
    std::mt19937 random(seed);
    std::uint64_t lost = 0;
    for (const auto& [name, inode] : list_names()) {
      const std::uint64_t size = size_of(path(name));
      const std::uint64_t synced = synced_.count(inode) ? synced_[inode] : 0;
      std::FILE* file = std::fopen(path(name).c_str(), "r+b");
      if (file == nullptr) throw std::runtime_error("cannot open " + path(name));
      for (std::uint64_t page = synced / kPageBytes * kPageBytes; page < size; page += kPageBytes) {
        if (random() % 2 == 0) continue;  // this page was written back in time
        const std::uint64_t from = std::max(page, synced);
        const std::string zeros(static_cast<std::size_t>(std::min(page + kPageBytes, size) - from), '\0');
        if (std::fseek(file, static_cast<long>(from), SEEK_SET) != 0 ||
            std::fwrite(zeros.data(), 1, zeros.size(), file) != zeros.size()) {
          throw std::runtime_error("cannot zero a page of " + path(name));
        }
        ++lost;
      }
      if (std::fclose(file) != 0) throw std::runtime_error("cannot close " + path(name));
    }
    return lost;
  }

  keystonelight::Status open(const std::string& file_path, bool create,
                             std::unique_ptr<keystonelight::File>* file) override;
  bool exists(const std::string& file_path) override { return real_->exists(file_path); }
  keystonelight::Status rename(const std::string& from, const std::string& to) override {
    return call("rename", from, [&] { return real_->rename(from, to); });
  }
  keystonelight::Status remove(const std::string& file_path) override {
    return call("remove", file_path, [&] { return real_->remove(file_path); });
  }
  keystonelight::Status sync_dir(const std::string& directory) override {
    return call("fsync directory", directory, [&] {
      keystonelight::Status s = real_->sync_dir(directory);
      if (s.ok()) snapshot_names();
      return s;
    });
  }
  keystonelight::Status create_dir(const std::string& directory) override {
    return call("create directory", directory, [&] { return real_->create_dir(directory); });
  }
  keystonelight::Status list_dir(const std::string& directory,
                                 std::vector<std::string>* names) override {
    return call("list directory", directory, [&] { return real_->list_dir(directory, names); });
  }

  // Runs `real` while the power is on, counting it toward cut_after(); fails otherwise.
  template <class F>
  keystonelight::Status call(const char* what, const std::string& file_path, F&& real) {
    std::shared_lock<std::shared_mutex> lock(power_);
    {
      std::lock_guard<std::mutex> count(mu_);
      if (left_ == 0) {
        return keystonelight::Status::io_error(std::string(what) + " " + file_path +
                                               ": the power is off");
      }
      if (left_ != std::numeric_limits<std::uint64_t>::max()) --left_;
    }
    return real();
  }

  // The size a file had at its last sync, by inode: File::sync records it here.
  void synced(ino_t inode, std::uint64_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    synced_[inode] = size;
  }

 private:
  static constexpr std::uint64_t kPageBytes = 4096;

  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::string shadow_path(ino_t inode) const { return shadow_ + "/" + std::to_string(inode); }

  static std::uint64_t size_of(const std::string& file_path) {
    struct stat st;
    return ::stat(file_path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  }

  std::map<std::string, ino_t> list_names() const {
    std::vector<std::string> names;
    std::map<std::string, ino_t> found;
    if (!real_->list_dir(dir_, &names).ok()) throw std::runtime_error("cannot list " + dir_);
    for (const std::string& name : names) {
      struct stat st;
      if (::stat(path(name).c_str(), &st) == 0 && S_ISREG(st.st_mode)) found[name] = st.st_ino;
    }
    return found;
  }

  // The directory's names are durable now: remember them, and keep a hard link to each
  // file so that a later rename over it or removal cannot lose what restore() needs.
  void snapshot_names() {
    std::map<std::string, ino_t> names = list_names();
    std::lock_guard<std::mutex> lock(mu_);
    durable_names_ = names;
    for (const auto& [name, inode] : durable_names_) {
      if (::access(shadow_path(inode).c_str(), F_OK) != 0) {
        ::link(path(name).c_str(), shadow_path(inode).c_str());
      }
    }
  }

  keystonelight::FileSystem* real_ = keystonelight::default_file_system();
  const std::string dir_;
  const std::string shadow_;
  std::shared_mutex power_;  // shared by calls, exclusive for cutting and restoring
  std::mutex mu_;            // guards what follows
  std::uint64_t left_ = std::numeric_limits<std::uint64_t>::max();  // calls before the cut
  std::map<std::string, ino_t> durable_names_;
  std::map<ino_t, std::uint64_t> synced_;
};

class PowerCutFile : public keystonelight::File {
 public:
  PowerCutFile(PowerCutFileSystem* fs, std::unique_ptr<keystonelight::File> real, ino_t inode)
      : fs_(fs), real_(std::move(real)), inode_(inode) {}

  const std::string& path() const override { return real_->path(); }
  keystonelight::Status read_at(std::uint64_t offset, char* buf, std::size_t n,
                                std::size_t* got) override {
    return real_->read_at(offset, buf, n, got);
  }
  keystonelight::Status append(std::string_view data) override {
    return fs_->call("write", path(), [&] { return real_->append(data); });
  }
  keystonelight::Status sync() override {
    return fs_->call("fsync", path(), [&] {
      keystonelight::Status s = real_->sync();
      std::uint64_t size = 0;
      if (s.ok() && real_->size(&size).ok()) fs_->synced(inode_, size);
      return s;
    });
  }
  keystonelight::Status truncate(std::uint64_t size) override {
    return fs_->call("truncate", path(), [&] { return real_->truncate(size); });
  }
  keystonelight::Status size(std::uint64_t* size) override { return real_->size(size); }

 private:
  PowerCutFileSystem* fs_;
  std::unique_ptr<keystonelight::File> real_;
  ino_t inode_;
};

inline keystonelight::Status PowerCutFileSystem::open(const std::string& file_path, bool create,
                                                      std::unique_ptr<keystonelight::File>* file) {
  std::unique_ptr<keystonelight::File> real;
  keystonelight::Status s =
      call("open", file_path, [&] { return real_->open(file_path, create, &real); });
  if (!s.ok()) return s;
  struct stat st;
  if (::stat(file_path.c_str(), &st) != 0) return keystonelight::Status::io_error("stat " + file_path);
  // An empty file has nothing to lose; saying so also forgets what an earlier file with
  // this inode number, since removed, had synced.
  if (st.st_size == 0) synced(st.st_ino, 0);
  file->reset(new PowerCutFile(this, std::move(real), st.st_ino));
  return s;
}

}  // namespace kltest

#endif  // KEYSTONELIGHT_TESTS_POWER_CUT_FS_HPP
