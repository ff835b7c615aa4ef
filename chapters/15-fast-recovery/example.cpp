// Chapter 15's example: where the start-up time goes. It writes a log of KEYS keys (16-byte
// keys, 100-byte values; 100 000 unless given), then times each part of a replay on its
// own: reading the file, the CRC-32C by the table and by the processor's instruction,
// parsing every record, filling a table with and without reserve(), and Store::open
// itself, with the table's CRC and with the instruction. Each figure is the fastest of
// three runs, on standard error; what the log holds goes to standard output, which is the
// same on every machine.
//
//   g++ -std=c++17 -O2 -pthread example.cpp -o example && ./example 1000000
//
// The log lives in a temporary directory that the example removes before it exits.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

int fail(const kl::Status& s) {
  std::fprintf(stderr, "example: %s\n", s.to_string().c_str());
  return 1;
}

kl::Options options_for(const std::string& dir) {
  kl::Options options;
  options.dir = dir;
  options.fsync = kl::FsyncPolicy::kNever;
  options.compact_ratio = 0;
  return options;
}

// Key number i, 16 bytes, and its 100-byte value.
std::string key_of(long i) {
  char key[32];
  std::snprintf(key, sizeof key, "key:%012ld", i);
  return key;
}
std::string value_of(long i) {
  std::string value(100, ' ');
  for (std::size_t j = 0; j < value.size(); ++j) value[j] = static_cast<char>('a' + (i + static_cast<long>(j)) % 26);
  return value;
}

// The fastest of three runs of `step`, in milliseconds, printed with `what`. `clear`, run
// before each run and after the last, untimed, frees what a run built.
double timed(const char* what, const std::function<void()>& step,
             const std::function<void()>& clear = [] {}) {
  double best = 1e300;
  for (int run = 0; run < 3; ++run) {
    clear();
    const auto started = std::chrono::steady_clock::now();
    step();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
  }
  clear();
  std::fprintf(stderr, "  %-46s %8.1f ms\n", what, best);
  return best;
}

// Every byte of the file at `path`, read 256 KiB at a time; *crc (when not null) gets
// their CRC-32C by crc32c_extend().
kl::Status read_all(const std::string& path, std::uint32_t* crc) {
  std::unique_ptr<kl::File> file;
  if (kl::Status s = kl::default_file_system()->open_read_only(path, &file); !s.ok()) return s;
  std::string chunk(256 * 1024, '\0');
  std::uint64_t at = 0;
  for (std::size_t got = chunk.size(); got == chunk.size(); at += got) {
    if (kl::Status s = file->read_at(at, &chunk[0], chunk.size(), &got); !s.ok()) return s;
    if (crc != nullptr) *crc = kl::detail::crc32c_extend(*crc, chunk.data(), got);
  }
  return kl::Status();
}

// The number of records a LogReader finds in the log at `path`.
std::uint64_t walk(const std::string& path) {
  std::unique_ptr<kl::File> file;
  if (!kl::default_file_system()->open_read_only(path, &file).ok()) return 0;
  kl::LogReader reader(file.get());
  kl::LogReader::Header header;
  if (!reader.open(&header).ok()) return 0;
  kl::Record record;
  std::uint64_t records = 0;
  while (reader.next(&record) == kl::LogReader::Result::kRecord) ++records;
  return records;
}

}  // namespace

int main(int argc, char** argv) {
  const long keys = argc > 1 ? std::max(1L, std::atol(argv[1])) : 100000;
  char dir_name[] = "/tmp/keystonelight-example-XXXXXX";
  if (::mkdtemp(dir_name) == nullptr) return 1;
  const std::string dir = dir_name;
  const std::string log = kl::detail::path_in(dir, kl::kLogFileName);
  auto cleanup = [&] {  // the store's two files, then the directory
    ::unlink(log.c_str());
    ::unlink(kl::detail::path_in(dir, kl::kLockFileName).c_str());
    ::rmdir(dir.c_str());
  };

  {
    std::unique_ptr<kl::Store> store;
    kl::Status s = kl::Store::open(options_for(dir), &store);
    for (long i = 0; s.ok() && i < keys; ++i) s = store->set(key_of(i), value_of(i));
    if (s.ok()) s = store->close();
    if (!s.ok()) return cleanup(), fail(s);
  }
  std::uint64_t log_bytes = 0;
  {
    std::unique_ptr<kl::File> file;
    kl::Status s = kl::default_file_system()->open_read_only(log, &file);
    if (s.ok()) s = file->size(&log_bytes);
    if (!s.ok()) return cleanup(), fail(s);
  }
  std::printf("wrote %ld keys of 16 bytes with 100-byte values: a log of %llu bytes\n", keys,
              static_cast<unsigned long long>(log_bytes));

  const bool hardware = kl::detail::has_hardware_crc32c();
  std::fprintf(stderr, "CRC-32C instruction: %s\n", hardware ? "yes" : "no (the table only)");
  std::fprintf(stderr, "the parts of a replay, each the fastest of three runs:\n");
  auto& uses_hardware = kl::detail::crc32c_uses_hardware();
  std::uint32_t crc_table = 0, crc_picked = 0;
  timed("read the log, 256 KiB at a time", [&] { (void)read_all(log, nullptr); });
  uses_hardware = false;
  timed("... and its CRC-32C by the table", [&] { crc_table = 0; (void)read_all(log, &crc_table); });
  uses_hardware = hardware;
  if (hardware) timed("... and its CRC-32C by the instruction", [&] { crc_picked = 0; (void)read_all(log, &crc_picked); });
  else crc_picked = crc_table;
  std::printf("CRC-32C of the whole log: 0x%08x by the table, 0x%08x by crc32c_extend()\n",
              crc_table, crc_picked);

  std::uint64_t records = 0;
  uses_hardware = false;
  timed("LogReader: every record, CRCs by the table", [&] { records = walk(log); });
  uses_hardware = hardware;
  if (hardware) timed("LogReader: every record, by the instruction", [&] { records = walk(log); });
  std::printf("the log holds %llu records\n", static_cast<unsigned long long>(records));

  std::vector<std::string> names, values;
  for (long i = 0; i < keys; ++i) {
    names.push_back(key_of(i));
    values.push_back(value_of(i));
  }
  std::unique_ptr<kl::detail::Table> table;
  auto fill = [&](bool reserve) {
    table.reset(new kl::detail::Table);
    if (reserve) table->reserve(names.size());
    for (std::size_t i = 0; i < names.size(); ++i) table->find_or_add(names[i]).first->second = values[i];
  };
  timed("a Table: every key added, growing as it fills", [&] { fill(false); }, [&] { table.reset(); });
  timed("a Table: every key added, reserved first", [&] { fill(true); }, [&] { table.reset(); });

  std::unique_ptr<kl::Store> store;
  kl::Status opened;
  auto open = [&] { opened = kl::Store::open(options_for(dir), &store); };
  auto close = [&] { store.reset(); };  // the destructor closes it
  uses_hardware = false;
  timed("Store::open, CRCs by the table", open, close);
  uses_hardware = hardware;
  timed("Store::open, as it runs", open, close);
  open();
  if (!opened.ok()) return cleanup(), fail(opened);
  std::printf("Store::open found %zu keys; %s = \"%.10s...\"\n", store->size(),
              key_of(keys / 2).c_str(),
              store->get(key_of(keys / 2)).value_or("(nil)").c_str());
  store.reset();
  cleanup();
  return 0;
}
