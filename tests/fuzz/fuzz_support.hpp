// What the fuzz targets share: a real directory for the LOCK file, and a check that stops
// the run with a message (libFuzzer then saves the input and says how to replay it).
#ifndef KEYSTONELIGHT_TESTS_FUZZ_SUPPORT_HPP
#define KEYSTONELIGHT_TESTS_FUZZ_SUPPORT_HPP

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace klfuzz {

// Store::open takes DIR/LOCK with flock(2) on the real file system (it does not go
// through FileSystem), so every target opens its stores in one real, empty directory,
// made once per process and removed at exit. Everything else lives in a MemoryFileSystem.
inline const std::string& lock_dir() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/keystonelight-fuzz-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    static std::string removed;
    removed = pattern;
    std::atexit([] {
      ::unlink((removed + "/LOCK").c_str());
      ::rmdir(removed.c_str());
    });
    return pattern;
  }();
  return dir;
}

// Like assert, but never compiled out, and it says which property broke.
#define KLFUZZ_CHECK(condition, ...)                                       \
  do {                                                                     \
    if (!(condition)) {                                                    \
      std::fprintf(stderr, "\nproperty broken at %s:%d: %s\n", __FILE__,   \
                   __LINE__, #condition);                                  \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
      std::abort();                                                        \
    }                                                                      \
  } while (0)

}  // namespace klfuzz

#endif  // KEYSTONELIGHT_TESTS_FUZZ_SUPPORT_HPP
