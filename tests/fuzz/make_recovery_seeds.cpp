// Writes the seed logs of tests/fuzz/corpus-recovery (the recovery and log reader
// targets' seeds): a few valid logs and a few damaged the ways a crash or a disk damages
// them; and the slow input of tests/fuzz/slow, which make fuzz replays against a time
// limit instead. Run it again after a change to the record format:
//
//   g++ -std=c++17 -I. tests/fuzz/make_recovery_seeds.cpp -o build/make_recovery_seeds
//   build/make_recovery_seeds tests/fuzz/corpus-recovery tests/fuzz/slow
#include <fstream>
#include <iostream>
#include <string>

#include "keystonelight.hpp"

namespace kl = keystonelight;
using kl::RecordType;

namespace {

std::string record(RecordType type, std::string_view key, std::string_view value) {
  std::string out;
  kl::detail::encode_record(type, key, value, 0, &out);
  return out;
}

void write(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: make_recovery_seeds SEED_DIR SLOW_DIR\n";
    return 2;
  }
  const std::string dir = argv[1];
  const std::string slow_dir = argv[2];
  const std::string header = kl::detail::encode_file_header();

  const std::string three = header + record(RecordType::kPut, "a", "1") +
                            record(RecordType::kPut, "b", "two") +
                            record(RecordType::kDelete, "a", "");
  std::string many = header;
  for (int i = 0; i < 20; ++i) {
    many += record(RecordType::kPut, "key" + std::to_string(i % 7), std::string(i, 'v'));
  }
  many += record(RecordType::kPut, std::string("bin\0\r\n", 6), std::string("\xff\0\n", 3));
  many += record(RecordType::kDelete, "key3", "");

  write(dir, "valid-empty", header);
  write(dir, "valid-three", three);
  write(dir, "valid-many", many);
  write(dir, "torn-header", header.substr(0, 10));
  write(dir, "torn-tail", three.substr(0, three.size() - 7));
  write(dir, "zeros-after-tail", three + std::string(40, '\0'));

  // Format version 3: expiry times, an expire record and batches (one torn at the end).
  std::string batch;
  kl::detail::encode_batch_entry(RecordType::kPut, "c", "3", 1'800'000'000'000, &batch);
  kl::detail::encode_batch_entry(RecordType::kDelete, "b", "", 0, &batch);
  kl::detail::encode_batch_entry(RecordType::kExpire, "a", "", 1'600'000'000'000, &batch);
  std::string timed = header;
  kl::detail::encode_record(RecordType::kPut, "a", "1", 1'900'000'000'000, &timed);
  timed += record(RecordType::kPut, "b", "two");
  kl::detail::encode_record(RecordType::kExpire, "b", "", 1'900'000'000'000, &timed);
  const std::string batched = timed + record(RecordType::kBatch, "", batch);
  write(dir, "expiry-and-batch", batched);
  write(dir, "torn-batch", batched.substr(0, batched.size() - 20));

  // Format version 4: appends, of their own and inside a batch.
  std::string grown;
  kl::detail::encode_batch_entry(RecordType::kAppend, "b", "-more", 0, &grown);
  kl::detail::encode_batch_entry(RecordType::kAppend, "d", "new", 0, &grown);
  const std::string appended = batched + record(RecordType::kAppend, "a", "+1") +
                               record(RecordType::kBatch, "", grown) +
                               record(RecordType::kAppend, "e", "");
  write(dir, "appends", appended);
  write(dir, "torn-append", appended.substr(0, appended.size() - 3));

  std::string flipped_middle = many;  // a bit of the third record's value: damage, refused
  flipped_middle[header.size() + 2 * (25 + 4) + 25 + 4] ^= 0x10;
  write(dir, "flipped-bit-middle", flipped_middle);
  std::string flipped_last = three;  // a bit of the last record: taken for a torn tail
  flipped_last[flipped_last.size() - 1] ^= 0x01;
  write(dir, "flipped-bit-last", flipped_last);

  // A header whose CRC holds but whose type no build knows: refused, never cut off.
  std::string bad_type = three;
  const std::size_t last = three.size() - 26;
  bad_type[last + 8] = 7;
  kl::detail::seal_record_header(bad_type.data() + last);
  write(dir, "bad-type", bad_type);

  // A value that is itself a log, torn: valid records inside the torn record's body.
  const std::string inner = record(RecordType::kPut, "inner", "x") + record(RecordType::kPut, "k", "v");
  const std::string nested = header + record(RecordType::kPut, "a", "1") +
                             record(RecordType::kPut, "outer", inner + inner);
  write(dir, "torn-value-holding-records", nested.substr(0, nested.size() - 3));
  // A whole log whose last value holds a record: the recovery target tears the last
  // record at a place picked from the input's CRC (check_crash_tear), so the padding is
  // the shortest that makes the cut fall after the inner record. Recovery then finds the
  // inner record after the torn one and refuses to open (see docs/reliability.md).
  const std::string held = record(RecordType::kPut, "k", "");
  for (std::size_t pad = 0;; ++pad) {
    const std::string outer = record(RecordType::kPut, "outer", held + std::string(pad, 'x'));
    const std::string log = header + outer;
    const std::size_t cut = 1 + kl::detail::crc32c(log) % (outer.size() - 1);
    if (cut >= kl::kRecordHeaderBytes + 5 + held.size()) {
      write(dir, "bug-torn-value-holding-a-record-is-refused", log);
      break;
    }
  }

  // Recovery's search after a bad record, at its worst: a torn value made of record
  // headers whose header CRC holds, each claiming a body that reaches to the end of the
  // file, so that every one of them costs a body CRC. 64 KiB, the targets' -max_len.
  constexpr std::size_t kSlowBytes = 65536;
  std::string slow = header + record(RecordType::kPut, "a", "1");
  const std::size_t value_at = slow.size() + kl::kRecordHeaderBytes + 4;  // after key "slow"
  std::string value;
  while (value_at + value.size() + kl::kRecordHeaderBytes <= kSlowBytes) {
    const std::size_t at = value_at + value.size();
    std::string h;
    kl::detail::encode_record(RecordType::kPut, "", "", 0, &h);
    kl::detail::store_u32(h.data() + 4, 0xdeadbeef);  // a body CRC that never matches
    kl::detail::store_u32(h.data() + 13, static_cast<std::uint32_t>(kSlowBytes - at - h.size()));
    kl::detail::seal_record_header(h.data());
    value += h;
  }
  value.resize(kSlowBytes - value_at, 'z');  // the file ends exactly where the claims do
  std::string outer;
  kl::detail::encode_record(RecordType::kPut, "slow", value + "tail", 0, &outer);
  slow += outer;
  write(slow_dir, "slow-torn-value-of-record-headers", slow.substr(0, kSlowBytes));
  return 0;
}
