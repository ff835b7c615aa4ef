// libFuzzer target for recovery (chapter 3), built and run by `make fuzz`.
//
// The input is the whole log file, DIR/keystonelight.log, of a data directory held in a
// MemoryFileSystem; Store::open replays it. Besides "no crash, no sanitizer report":
//
// The oracle. Recovery's contract (Store::open) is: replay the records from the start
// up to the first one that is not whole and valid; if that one is a torn tail, cut it
// off, otherwise refuse and change nothing. So the oracle walks a copy of the input with
// its own LogReader, from offset 16 one record after another, and replays each record
// into a map, the way recovery must. Then:
//   - when open succeeds, the store holds exactly that map (every (key, value) in it was
//     written by a valid record of the walk, and the latest one of its key wins), its
//     report counts the walk's records, and the file is the input cut at the walk's end
//     (or a fresh header, when the input held none or a prefix of one);
//   - a walk that reaches the clean end of the file must open;
//   - a record whose header CRC holds but whose type or length cannot (kBadType,
//     kBadLength) is never cut off: open must fail;
//   - when open fails, the message is not empty, names the log file, and the file holds
//     the input unchanged ("Nothing was changed").
// Whether a bad record with valid bytes after it is a torn tail or damage is the
// diagnosis's call (diagnose()), and is deliberately not checked here beyond the above:
// a valid record somewhere after it may or may not count, depending on where it lies.
// After a successful open, one more write and a reopen must find the map plus that write
// and nothing dropped: the log recovery leaves behind is valid and appendable.
//
// And the crash model (check_crash_tear): when the input is a whole valid log, a crash in
// the middle of its last write leaves a prefix of it, perhaps followed by zeros where the
// file system had already grown the file. Whatever that record's bytes are (a value may
// hold bytes that look like records), such a log must open, with every record but the
// last: "a torn record at the tail (a crash in the middle of a write) is cut off".
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "keystonelight.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "tests/fuzz/memory_fs.hpp"

namespace kl = keystonelight;

namespace {

constexpr std::int64_t kNow = 1'700'000'000'000;  // the stores' clock, ms since the epoch

struct Walk {
  kl::Status header_status;  // LogReader::open's
  kl::LogReader::Header header = kl::LogReader::Header::kMissing;
  std::map<std::string, std::string> state;  // the replay of the records walked
  std::uint32_t version = 0;                 // the log's format version
  std::uint64_t records = 0;
  std::uint64_t end = 0;  // where the walk stopped
  std::uint64_t last = 0;  // where the last record walked starts (0: none)
  kl::LogReader::Result stop = kl::LogReader::Result::kEnd;
};

Walk walk(const std::string& bytes) {
  klfuzz::MemoryFileSystem fs;
  fs.contents("log") = bytes;
  std::unique_ptr<kl::File> file;
  (void)fs.open("log", false, &file);
  kl::LogReader reader(file.get());
  Walk w;
  w.header_status = reader.open(&w.header);
  if (!w.header_status.ok() || w.header != kl::LogReader::Header::kValid) return w;
  w.version = reader.version();
  // Each key's expiry as the records say (0: none); keys whose time is past kNow at the
  // end are left out, as Store::open leaves them out.
  std::map<std::string, std::int64_t> expiry;
  auto apply = [&](const kl::Record& r) {
    const std::string key(r.key);
    const auto when = static_cast<std::int64_t>(r.expiry_ms);
    if (r.type == kl::RecordType::kPut) {
      w.state[key] = std::string(r.value);
      expiry[key] = when;
    } else if (r.type == kl::RecordType::kDelete) {
      w.state.erase(key);
      expiry.erase(key);
    } else if (r.type == kl::RecordType::kExpire && w.state.count(key) != 0) {
      expiry[key] = when;
    } else if (r.type == kl::RecordType::kAppend) {
      w.state[key] += std::string(r.value);  // a missing key starts empty, with no expiry
    }
  };
  kl::Record record;
  while ((w.stop = reader.next(&record)) == kl::LogReader::Result::kRecord) {
    if (record.type == kl::RecordType::kBatch) {
      kl::detail::BatchReader entries(record.value);
      kl::Record entry;
      while (entries.next(&entry)) apply(entry);
    } else {
      apply(record);
    }
    ++w.records;
    w.last = record.offset;
  }
  for (const auto& [key, when] : expiry) {
    if (when != 0 && kNow > when) w.state.erase(key);
  }
  w.end = reader.offset();
  return w;
}

std::map<std::string, std::string> contents(const kl::Store& store) {
  std::map<std::string, std::string> out;
  for (auto& [key, value] : store.entries()) out.emplace(std::move(key), std::move(value));
  return out;
}

kl::Options options_for(klfuzz::MemoryFileSystem* fs, std::string* notes) {
  kl::Options options;
  options.clock = [] { return kNow; };  // expiry the same on every run
  options.active_expiry = false;
  options.dir = klfuzz::lock_dir();
  options.fsync = kl::FsyncPolicy::kNever;  // no flusher thread
  options.compact_ratio = 0;                // no compactor thread
  options.file_system = fs;
  options.info_log = [notes](const std::string& message) { *notes += message + "\n"; };
  return options;
}

// Tears the last record of `input`, a whole valid log, at a place the input picks, and
// checks that the torn log opens with every record but the last.
void check_crash_tear(const std::string& input, const Walk& whole, const kl::Options& options,
                      klfuzz::MemoryFileSystem* fs, const std::string& path) {
  const std::uint64_t record_size = input.size() - whole.last;
  const std::uint64_t pick = std::uint64_t{kl::detail::crc32c(input)};
  const std::size_t cut = static_cast<std::size_t>(whole.last + 1 + pick % (record_size - 1));
  const bool zeros = (pick >> 31) & 1;  // the file keeps its length, the lost bytes zeroed
  std::string torn = input.substr(0, cut);
  if (zeros) torn.resize(input.size(), '\0');
  const Walk before = walk(input.substr(0, static_cast<std::size_t>(whole.last)));
  fs->contents(path) = torn;
  std::unique_ptr<kl::Store> store;
  const kl::Status s = kl::Store::open(options, &store);
  KLFUZZ_CHECK(s.ok(), "a crash in the middle of the last write (the record at offset %llu, "
               "%llu bytes, cut after %zu bytes%s) left a log that does not open: %s",
               static_cast<unsigned long long>(whole.last),
               static_cast<unsigned long long>(record_size),
               cut - static_cast<std::size_t>(whole.last), zeros ? ", the rest zeroed" : "",
               s.to_string().c_str());
  KLFUZZ_CHECK(contents(*store) == before.state, "the torn log opened with other contents");
  KLFUZZ_CHECK(store->recovery().bytes_dropped == torn.size() - whole.last,
               "the torn log dropped %llu bytes, not %llu",
               static_cast<unsigned long long>(store->recovery().bytes_dropped),
               static_cast<unsigned long long>(torn.size() - whole.last));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const Walk expected = walk(input);

  klfuzz::MemoryFileSystem fs;
  std::string notes;
  const kl::Options options = options_for(&fs, &notes);
  const std::string path = options.dir + "/" + kl::kLogFileName;
  fs.contents(path) = input;

  std::unique_ptr<kl::Store> store;
  const kl::Status s = kl::Store::open(options, &store);
  using Result = kl::LogReader::Result;
  const bool valid_header = expected.header_status.ok() && expected.header == kl::LogReader::Header::kValid;

  if (!s.ok()) {
    KLFUZZ_CHECK(!s.message().empty(), "open failed with an empty message");
    KLFUZZ_CHECK(s.message().find(path) != std::string::npos,
                 "the message does not name %s: %s", path.c_str(), s.to_string().c_str());
    KLFUZZ_CHECK(fs.contents(path) == input, "a failed open changed the log: %s",
                 s.to_string().c_str());
    KLFUZZ_CHECK(!expected.header_status.ok() || (valid_header && expected.stop != Result::kEnd),
                 "a log whose every record is valid did not open: %s", s.to_string().c_str());
    return 0;
  }

  KLFUZZ_CHECK(expected.header_status.ok(), "a log with a bad file header opened (%s)",
               expected.header_status.to_string().c_str());
  if (!valid_header) {  // empty, or a torn header: started afresh
    KLFUZZ_CHECK(store->size() == 0, "a log without a whole header opened with %zu keys",
                 store->size());
    KLFUZZ_CHECK(fs.contents(path) == kl::detail::encode_file_header(),
                 "a torn header was not rewritten");
  } else {
    KLFUZZ_CHECK(expected.stop != Result::kBadType && expected.stop != Result::kBadLength,
                 "a record with a valid header CRC but a bad %s was cut off at offset %llu",
                 expected.stop == Result::kBadType ? "type" : "length",
                 static_cast<unsigned long long>(expected.end));
    KLFUZZ_CHECK(contents(*store) == expected.state,
                 "the store holds %zu keys, the walk's replay %zu (or their values differ)",
                 store->size(), expected.state.size());
    KLFUZZ_CHECK(store->recovery().records == expected.records, "replayed %llu records, not %llu",
                 static_cast<unsigned long long>(store->recovery().records),
                 static_cast<unsigned long long>(expected.records));
    KLFUZZ_CHECK(store->recovery().log_bytes == expected.end, "log_bytes %llu, walk ended at %llu",
                 static_cast<unsigned long long>(store->recovery().log_bytes),
                 static_cast<unsigned long long>(expected.end));
    KLFUZZ_CHECK(store->recovery().bytes_dropped == input.size() - expected.end,
                 "bytes_dropped %llu, expected %llu",
                 static_cast<unsigned long long>(store->recovery().bytes_dropped),
                 static_cast<unsigned long long>(input.size() - expected.end));
    if (expected.version == kl::kLogVersion) {
      KLFUZZ_CHECK(fs.contents(path) == input.substr(0, static_cast<std::size_t>(expected.end)),
                   "the log is not the input cut where the walk stopped");
    } else {  // an older format: rewritten in this one, by a compaction
      KLFUZZ_CHECK(fs.contents(path).compare(0, kl::kFileHeaderBytes,
                                             kl::detail::encode_file_header()) == 0,
                   "a version %u log was not rewritten in version %u",
                   static_cast<unsigned>(expected.version), static_cast<unsigned>(kl::kLogVersion));
    }
    KLFUZZ_CHECK(expected.stop == Result::kEnd || !notes.empty(),
                 "a torn tail was cut off without a note");
  }

  // The log left behind is valid and appendable: one more write survives a reopen, and
  // nothing is dropped the second time.
  std::map<std::string, std::string> after = valid_header ? expected.state
                                                          : std::map<std::string, std::string>();
  const kl::Status set = store->set("fuzz:after-recovery", "v");
  KLFUZZ_CHECK(set.ok(), "a write after recovery failed: %s", set.to_string().c_str());
  after["fuzz:after-recovery"] = "v";
  KLFUZZ_CHECK(store->close().ok(), "close failed");
  store.reset();
  const kl::Status again = kl::Store::open(options, &store);
  KLFUZZ_CHECK(again.ok(), "the recovered log did not open again: %s", again.to_string().c_str());
  KLFUZZ_CHECK(store->recovery().bytes_dropped == 0, "the second open dropped %llu bytes",
               static_cast<unsigned long long>(store->recovery().bytes_dropped));
  KLFUZZ_CHECK(contents(*store) == after, "the reopened store differs from the first one");
  store.reset();

  if (valid_header && expected.stop == Result::kEnd && expected.records > 0) {
    check_crash_tear(input, expected, options, &fs, path);
  }
  return 0;
}
