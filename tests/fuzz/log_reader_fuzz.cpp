// libFuzzer target for LogReader (chapter 2), built and run by `make fuzz`.
//
// The input is a log file. The oracle is a second decoder of the record format, written
// here from docs/log-format.md and sharing only the CRC function with the header: it
// classifies the bytes at any offset as a record or as the reason there is none. Then:
//   - open() accepts the file header exactly when the oracle does;
//   - every next() gives the oracle's verdict for its offset, and a record the oracle's
//     fields (type, key, value, expiry, offset, size); records follow one another;
//   - find_valid_record_after(offset), asked after the walk stops and at an offset the
//     input picks, returns an offset after `offset` where the oracle sees a record, and
//     exactly the first one where no header that holds lies between (see check_search);
//   - asking find_valid_record_after leaves the reader where it was: next() then gives
//     the same verdict as before (its read-ahead buffer is shared with the walk).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "keystonelight.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "tests/fuzz/memory_fs.hpp"

namespace kl = keystonelight;
using Result = kl::LogReader::Result;

namespace {

std::uint32_t u32(const std::string& b, std::size_t at) {
  return static_cast<std::uint32_t>(static_cast<unsigned char>(b[at])) |
         static_cast<std::uint32_t>(static_cast<unsigned char>(b[at + 1])) << 8 |
         static_cast<std::uint32_t>(static_cast<unsigned char>(b[at + 2])) << 16 |
         static_cast<std::uint32_t>(static_cast<unsigned char>(b[at + 3])) << 24;
}
std::uint64_t u64(const std::string& b, std::size_t at) {
  return u32(b, at) | std::uint64_t{u32(b, at + 4)} << 32;
}

struct Decoded {
  Result result = Result::kEnd;
  unsigned char type = 0;
  std::string key, value;
  std::uint64_t expiry = 0, size = 0;
};

// The record format: header CRC (of the 21 bytes after it), body CRC (of key and value),
// type (1 put, 2 delete, and from version 2, 3 expire; version 3, 4 batch; version 4,
// 5 append), key length, value length, expiry, all little-endian; then the key and the
// value. Only a put and an append have a value. Lengths are only believed once the
// header CRC holds.
// A batch record's value: two or more entries, each type (1 put, 2 delete, 3 expire,
// 5 append), key length, value length (0 unless a put or an append), expiry, key, value,
// with the limits of a record of its own, filling the value exactly.
bool entries_add_up(const std::string& v) {
  constexpr std::size_t kEntry = 1 + 4 + 4 + 8;
  std::size_t at = 0, count = 0;
  while (at < v.size()) {
    if (v.size() - at < kEntry) return false;
    const auto type = static_cast<unsigned char>(v[at]);
    const std::uint64_t key = u32(v, at + 1), value = u32(v, at + 5);
    if (type < 1 || type > 5 || type == 4 || key > kl::kMaxKeyBytes || value > kl::kMaxValueBytes ||
        (type != 1 && type != 5 && value != 0) || v.size() - at - kEntry < key + value) {
      return false;
    }
    at += kEntry + key + value;
    ++count;
  }
  return count >= 2;
}

// The file's format version, found by the header check below (one input at a time).
std::uint32_t g_version = kl::kLogVersion;

Decoded decode(const std::string& b, std::size_t at) {
  Decoded d;
  constexpr std::size_t kHeader = 4 + 4 + 1 + 4 + 4 + 8;
  if (at == b.size()) return d;
  d.result = Result::kIncomplete;
  if (b.size() - at < kHeader) return d;
  d.result = Result::kBadChecksum;
  if (u32(b, at) != kl::detail::crc32c(std::string_view(b).substr(at + 4, kHeader - 4))) return d;
  d.type = static_cast<unsigned char>(b[at + 8]);
  const std::uint64_t key = u32(b, at + 9), value = u32(b, at + 13);
  d.expiry = u64(b, at + 17);
  d.result = Result::kBadType;
  if (d.type < 1 || d.type > g_version + 1) return d;  // version N has types 1 to N + 1
  d.result = Result::kBadLength;
  const bool batch = d.type == 4;
  if (batch ? key != 0
            : key > kl::kMaxKeyBytes || value > kl::kMaxValueBytes ||
                  (d.type != 1 && d.type != 5 && value != 0)) {
    return d;
  }
  d.size = kHeader + key + value;
  d.result = Result::kIncomplete;
  if (b.size() - at < d.size) return d;
  d.result = Result::kBadChecksum;
  if (u32(b, at + 4) != kl::detail::crc32c(std::string_view(b).substr(at + kHeader, key + value))) {
    return d;
  }
  d.result = Result::kBadLength;
  if (batch && !entries_add_up(b.substr(at + kHeader, value))) return d;
  d.result = Result::kRecord;
  d.key = b.substr(at + kHeader, key);
  d.value = b.substr(at + kHeader + key, value);
  return d;
}

// Whether the 21 bytes after the header CRC at `at` match it: the first test a record
// passes, and the only one whose cost does not depend on the lengths it claims.
bool header_holds(const std::string& b, std::uint64_t at) {
  return at + 25 <= b.size() &&
         u32(b, static_cast<std::size_t>(at)) ==
             kl::detail::crc32c(std::string_view(b).substr(static_cast<std::size_t>(at) + 4, 21));
}

// What find_valid_record_after(offset) may answer. Any answer must be an offset after
// `offset` where a whole valid record starts. Where to look is the reader's policy, and
// a header whose CRC holds may make it skip the bytes that header claims (they are a
// record's body, not records), so the oracle demands one exact answer only where every
// such policy agrees: the first offset after `offset` whose header CRC holds starts a
// valid record, and the bad record at `offset` (when its own header holds) claims no
// byte past it. There, the answer must be that offset; with no header holding after
// `offset` at all, it must be none. This costs one pass of header CRCs and at most one
// body CRC, whatever the input: the oracle stays linear when the reader is not.
void check_search(kl::LogReader& reader, const std::string& b, std::uint64_t offset) {
  const std::optional<std::uint64_t> found = reader.find_valid_record_after(offset);
  KLFUZZ_CHECK(reader.status().ok(), "a read failed in memory: %s", reader.status().to_string().c_str());
  if (found) {
    KLFUZZ_CHECK(*found > offset && decode(b, static_cast<std::size_t>(*found)).result == Result::kRecord,
                 "find_valid_record_after(%llu) gave %llu, where no valid record starts",
                 static_cast<unsigned long long>(offset), static_cast<unsigned long long>(*found));
  }
  std::optional<std::uint64_t> first;
  for (std::uint64_t p = offset + 1; p + 25 <= b.size(); ++p) {
    if (header_holds(b, p)) {
      first = p;
      break;
    }
  }
  if (!first) {
    KLFUZZ_CHECK(!found, "find_valid_record_after(%llu) gave %llu, yet no header after it holds",
                 static_cast<unsigned long long>(offset), static_cast<unsigned long long>(*found));
    return;
  }
  if (decode(b, static_cast<std::size_t>(*first)).result != Result::kRecord) return;
  const Decoded bad = decode(b, static_cast<std::size_t>(offset));
  const bool claims_past = header_holds(b, offset) && bad.size != 0 && offset + bad.size > *first;
  const bool claims_unknown = header_holds(b, offset) && bad.size == 0;  // bad type or length
  if (claims_past || claims_unknown) return;
  KLFUZZ_CHECK(found == first, "find_valid_record_after(%llu) gave %lld, yet the first header "
               "that holds after it, at %llu, starts a valid record",
               static_cast<unsigned long long>(offset), found ? static_cast<long long>(*found) : -1LL,
               static_cast<unsigned long long>(*first));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  klfuzz::MemoryFileSystem fs;
  fs.contents("keystonelight.log") = bytes;
  std::unique_ptr<kl::File> file;
  (void)fs.open("keystonelight.log", false, &file);
  kl::LogReader reader(file.get());

  kl::LogReader::Header header;
  const kl::Status opened = reader.open(&header);
  // The header of this build's version, or of any older one: each is read.
  std::string expected_header = kl::detail::encode_file_header();
  g_version = kl::kLogVersion;
  const std::size_t have = std::min(bytes.size(), expected_header.size());
  bool header_ok = bytes.compare(0, have, expected_header, 0, have) == 0;
  // (A prefix of one, too: a crash while an older build created its log.)
  for (std::uint32_t older = 1; older < kl::kLogVersion && !header_ok; ++older) {
    std::string header_of(kl::kLogMagic, 8);
    kl::detail::put_u32(&header_of, older);
    kl::detail::put_u32(&header_of, kl::detail::crc32c(header_of));
    if (bytes.compare(0, have, header_of, 0, have) == 0) {
      header_ok = true;
      g_version = older;
    }
  }
  // A whole header with another version is NotSupported, not Corruption; either refuses.
  KLFUZZ_CHECK(opened.ok() == header_ok, "open() said %s", opened.to_string().c_str());
  if (!opened.ok()) return 0;
  if (header != kl::LogReader::Header::kValid) {
    KLFUZZ_CHECK(bytes.size() < expected_header.size(), "a whole header taken for a torn one");
    return 0;
  }

  kl::Record record;
  Result r;
  std::uint64_t at = reader.offset();
  KLFUZZ_CHECK(at == expected_header.size(), "the first record is not at offset 16");
  while (true) {
    const Decoded d = decode(bytes, static_cast<std::size_t>(at));
    r = reader.next(&record);
    KLFUZZ_CHECK(r == d.result, "at offset %llu the reader says \"%s\", the oracle \"%s\"",
                 static_cast<unsigned long long>(at), kl::LogReader::describe(r),
                 kl::LogReader::describe(d.result));
    if (r != Result::kRecord) break;
    KLFUZZ_CHECK(record.offset == at && record.size == d.size &&
                     static_cast<unsigned char>(record.type) == d.type && record.key == d.key &&
                     record.value == d.value && record.expiry_ms == d.expiry,
                 "the record at offset %llu differs from the oracle's", static_cast<unsigned long long>(at));
    at += record.size;
    KLFUZZ_CHECK(reader.offset() == at, "next() did not move past the record");
  }
  KLFUZZ_CHECK(reader.offset() == at, "a failed next() moved the reader");
  if (r == Result::kEnd) {
    KLFUZZ_CHECK(at == bytes.size(), "kEnd before the end of the file");
    return 0;
  }

  // The search recovery makes after a bad record, and one from an offset the input picks
  // (its last two bytes), which may fall inside a record or before the stop.
  check_search(reader, bytes, at);
  const std::uint64_t picked =
      (static_cast<unsigned char>(bytes[bytes.size() - 1]) * 256u +
       static_cast<unsigned char>(bytes[bytes.size() - 2])) % bytes.size();
  check_search(reader, bytes, picked);
  KLFUZZ_CHECK(reader.offset() == at, "the search moved the reader");
  KLFUZZ_CHECK(reader.next(&record) == r, "after a search, next() changed its mind");
  return 0;
}
