// Power loss, simulated: the data directory is brought back to what stable storage holds
// (tests/support/power_cut_fs.hpp), at every step of a compaction and after writes in
// each fsync policy. Where kill -9 tests prove what reaches the file, these prove what
// reaches the disk: the fsync of a compaction's temporary file, the fsync of the
// directory after its rename, and kAlways's fsync before each acknowledgement.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "keystonelight.hpp"
#include "support/power_cut_fs.hpp"
#include "support/store.hpp"
#include "support/temp_dir.hpp"

namespace kl = keystonelight;

namespace {

struct PowerCutStore {
  explicit PowerCutStore(kl::FsyncPolicy policy)
      : fs(temp.file("data"), temp.file("shadow")) {
    options.dir = temp.file("data");
    options.fsync = policy;
    options.compact_ratio = 0;  // compactions happen when a test says, counted exactly
    options.file_system = &fs;
    options.info_log = [](const std::string&) {};
  }
  // Opens the store again, as the machine's next boot would, on the real file system.
  std::unique_ptr<kl::Store> reboot(std::uint64_t keep = 0, bool zero_rest = false) {
    store.reset();  // its close() fails against the dead power, changing nothing
    fs.restore(keep, zero_rest);
    kl::Options plain = options;
    plain.file_system = nullptr;
    return kltest::open_store(plain);
  }

  kltest::TempDir temp;
  kltest::PowerCutFileSystem fs;
  kl::Options options;
  std::unique_ptr<kl::Store> store;
};

// Writes a history with overwrites and deletes, so that a compaction has garbage to
// drop; returns what the store holds afterwards.
kltest::Model write_history(kl::Store* store) {
  kltest::Model model;
  for (int i = 0; i < 60; ++i) {
    const std::string key = "key" + std::to_string(i % 20);
    const std::string value = std::string(static_cast<std::size_t>(i * 7 % 50), 'v') + std::to_string(i);
    REQUIRE(store->set(key, value).ok());
    model[key] = value;
    if (i % 9 == 0) {
      REQUIRE(store->del("key" + std::to_string((i + 3) % 20)).ok());
      model.erase("key" + std::to_string((i + 3) % 20));
    }
  }
  return model;
}

}  // namespace

TEST_SUITE("power loss") {

TEST_CASE("with fsync always, every acknowledged write survives a power cut, torn or not") {
  for (std::uint64_t keep : {0u, 1u, 13u, 100u, 1u << 20}) {
    CAPTURE(keep);
    PowerCutStore t(kl::FsyncPolicy::kAlways);
    t.store = kltest::open_store(t.options);
    const kltest::Model model = write_history(t.store.get());
    t.fs.cut();
    CHECK(kltest::contents(*t.reboot(keep)) == model);
  }
}

TEST_CASE("with fsync everysec, a power cut keeps what sync() made durable, and the log opens") {
  for (std::uint64_t keep : {0u, 1u, 30u, 1u << 20}) for (bool zero_rest : {false, true}) {
    CAPTURE(keep);
    CAPTURE(zero_rest);
    PowerCutStore t(kl::FsyncPolicy::kEverySecond);
    t.store = kltest::open_store(t.options);
    const kltest::Model synced = write_history(t.store.get());
    REQUIRE(t.store->sync().ok());
    // Written after the sync: each may be lost, or kept whole; a torn one is cut off.
    std::vector<kltest::Model> allowed = {synced};
    for (int i = 0; i < 5; ++i) {
      REQUIRE(t.store->set("late" + std::to_string(i), std::string(40, 'x')).ok());
      allowed.push_back(allowed.back());
      allowed.back()["late" + std::to_string(i)] = std::string(40, 'x');
    }
    t.fs.cut();
    const kltest::Model found = kltest::contents(*t.reboot(keep, zero_rest));
    CHECK(std::find(allowed.begin(), allowed.end(), found) != allowed.end());
  }
}

TEST_CASE("a power cut at any step of a compaction leaves every write, in the old log or the new") {
  bool finished = false;
  for (std::uint64_t step = 0; step < 100 && !finished; ++step) {
    for (std::uint64_t keep : {std::uint64_t{0}, std::uint64_t{1} << 20}) {
      CAPTURE(step);
      CAPTURE(keep);
      PowerCutStore t(kl::FsyncPolicy::kAlways);
      t.store = kltest::open_store(t.options);
      const kltest::Model model = write_history(t.store.get());
      t.fs.cut_after(step);
      const kl::Status s = t.store->compact();
      finished = s.ok() && !t.fs.power_is_off();
      t.fs.cut();
      CHECK(kltest::contents(*t.reboot(keep)) == model);
    }
  }
  CHECK(finished);  // the loop reached a compaction that no cut interrupted
}

TEST_CASE("a compaction that finished survives a power cut right after it, and shrank the log") {
  PowerCutStore t(kl::FsyncPolicy::kAlways);
  t.store = kltest::open_store(t.options);
  const kltest::Model model = write_history(t.store.get());
  const std::uint64_t before = t.store->stats().log_bytes;
  REQUIRE(t.store->compact().ok());
  t.fs.cut();
  auto store = t.reboot();
  CHECK(kltest::contents(*store) == model);
  CHECK(store->stats().log_bytes < before);
}

}  // TEST_SUITE
