// A FileSystem held in memory, for the fuzz targets: every file is a std::string, so a run
// costs no system call and leaves nothing behind. Paths are plain strings: a directory is
// a name that create_dir() was given, a file is in a directory when its path starts with
// the directory and a slash. Not thread-safe: the fuzz targets open their stores with the
// background threads off (FsyncPolicy::kNever, compact_ratio 0).
//
// What it does not model: the LOCK file. Store::open takes it with flock(2) on the real
// file system, outside FileSystem, so a target still needs a real directory to open a
// store in; only the log and the compaction's temporary file live here.
#ifndef KEYSTONELIGHT_TESTS_FUZZ_MEMORY_FS_HPP
#define KEYSTONELIGHT_TESTS_FUZZ_MEMORY_FS_HPP

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace klfuzz {

class MemoryFile final : public keystonelight::File {
 public:
  MemoryFile(std::string path, std::shared_ptr<std::string> data)
      : path_(std::move(path)), data_(std::move(data)) {}

  const std::string& path() const override { return path_; }
  keystonelight::Status read_at(std::uint64_t offset, char* buf, std::size_t n,
                                std::size_t* got) override {
    *got = 0;
    if (offset >= data_->size()) return keystonelight::Status();
    *got = static_cast<std::size_t>(std::min<std::uint64_t>(n, data_->size() - offset));
    std::memcpy(buf, data_->data() + offset, *got);
    return keystonelight::Status();
  }
  keystonelight::Status append(std::string_view data) override {
    data_->append(data);
    return keystonelight::Status();
  }
  keystonelight::Status sync() override { return keystonelight::Status(); }
  keystonelight::Status truncate(std::uint64_t size) override {
    data_->resize(static_cast<std::size_t>(size), '\0');  // grows with zeros, as ftruncate
    return keystonelight::Status();
  }
  keystonelight::Status size(std::uint64_t* size) override {
    *size = data_->size();
    return keystonelight::Status();
  }

 private:
  std::string path_;
  std::shared_ptr<std::string> data_;  // shared with the file system: renames keep it
};

class MemoryFileSystem final : public keystonelight::FileSystem {
 public:
  // The bytes of the file at `path`, created empty when missing; for setting up a run
  // and for looking at what the store left.
  std::string& contents(const std::string& path) {
    auto& data = files_[path];
    if (!data) data = std::make_shared<std::string>();
    return *data;
  }
  bool has(const std::string& path) const { return files_.count(path) != 0; }

  keystonelight::Status open(const std::string& path, bool create,
                             std::unique_ptr<keystonelight::File>* file) override {
    auto it = files_.find(path);
    if (it == files_.end()) {
      if (!create) return keystonelight::Status::io_error("open " + path + ": No such file or directory");
      it = files_.emplace(path, std::make_shared<std::string>()).first;
    }
    file->reset(new MemoryFile(path, it->second));
    return keystonelight::Status();
  }
  bool exists(const std::string& path) override {
    return files_.count(path) != 0 || dirs_.count(path) != 0;
  }
  keystonelight::Status rename(const std::string& from, const std::string& to) override {
    auto it = files_.find(from);
    if (it == files_.end()) return keystonelight::Status::io_error("rename " + from + ": No such file or directory");
    std::shared_ptr<std::string> data = it->second;
    files_.erase(it);
    files_[to] = std::move(data);  // a File still open on `to` keeps the old bytes, as an inode would
    return keystonelight::Status();
  }
  keystonelight::Status remove(const std::string& path) override {
    if (files_.erase(path) == 0) return keystonelight::Status::io_error("remove " + path + ": No such file or directory");
    return keystonelight::Status();
  }
  keystonelight::Status sync_dir(const std::string&) override { return keystonelight::Status(); }
  keystonelight::Status create_dir(const std::string& dir) override {
    dirs_.insert(dir);
    return keystonelight::Status();
  }
  keystonelight::Status list_dir(const std::string& dir, std::vector<std::string>* names) override {
    names->clear();
    const std::string prefix = dir + "/";
    for (const auto& [path, data] : files_) {
      if (path.compare(0, prefix.size(), prefix) == 0 &&
          path.find('/', prefix.size()) == std::string::npos) {
        names->push_back(path.substr(prefix.size()));
      }
    }
    return keystonelight::Status();
  }

 private:
  std::map<std::string, std::shared_ptr<std::string>> files_;
  std::set<std::string> dirs_;
};

}  // namespace klfuzz

#endif  // KEYSTONELIGHT_TESTS_FUZZ_MEMORY_FS_HPP
