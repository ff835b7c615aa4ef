// Chapter 2: the record format, the CRC, the log writer and the log reader. These tests
// also run against every later chapter and the final header.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <string>
#include <thread>
#include <vector>

#include "../../tests/support/faulty_fs.hpp"
#include "../../tests/support/temp_dir.hpp"
#include "keystonelight.hpp"

namespace kl = keystonelight;
using kl::LogReader;
using kl::RecordType;
using Result = kl::LogReader::Result;

namespace {

struct Written {
  RecordType type;
  std::string key, value;
};

// A varied set of records: binary keys, empty and longer values, deletes.
std::vector<Written> sample_records() {
  std::vector<Written> records;
  for (int i = 0; i < 12; ++i) {
    std::string key = "key" + std::to_string(i % 5);
    if (i % 4 == 3) {
      records.push_back({RecordType::kDelete, key, ""});
    } else {
      records.push_back({RecordType::kPut, key, std::string(static_cast<std::size_t>(i * 7), 'a' + char(i))});
    }
  }
  records.push_back({RecordType::kPut, std::string("\0\r\n", 3), std::string("v\0\xff", 3)});
  return records;
}

std::string write_log(const kltest::TempDir& dir, const std::vector<Written>& records) {
  const std::string path = dir.file("test.log");
  std::unique_ptr<kl::File> file;
  REQUIRE(kl::default_file_system()->open(path, true, &file).ok());
  std::unique_ptr<kl::LogWriter> writer;
  REQUIRE(kl::LogWriter::create(std::move(file), &writer).ok());
  for (const Written& r : records) REQUIRE(writer->append(r.type, r.key, r.value).ok());
  REQUIRE(writer->sync().ok());
  return path;
}

// Reads the whole log at `path`: the records, and the result that stopped the reader.
struct ReadBack {
  std::vector<Written> records;
  std::vector<std::uint64_t> offsets;
  Result stop = Result::kEnd;
  std::uint64_t stop_offset = 0;
};
ReadBack read_log(const std::string& path) {
  std::unique_ptr<kl::File> file;
  REQUIRE(kl::default_file_system()->open(path, false, &file).ok());
  LogReader reader(file.get());
  LogReader::Header header;
  REQUIRE(reader.open(&header).ok());
  REQUIRE(header == LogReader::Header::kValid);
  ReadBack back;
  kl::Record record;
  while ((back.stop = reader.next(&record)) == Result::kRecord) {
    back.records.push_back({record.type, std::string(record.key), std::string(record.value)});
    back.offsets.push_back(record.offset);
  }
  back.stop_offset = reader.offset();
  return back;
}

}  // namespace

TEST_SUITE("chapter 2: append-only log") {

TEST_CASE("CRC-32C matches the published check values") {
  CHECK(kl::detail::crc32c("123456789") == 0xE3069283u);
  CHECK(kl::detail::crc32c(std::string(32, '\0')) == 0x8A9136AAu);
  CHECK(kl::detail::crc32c(std::string(32, '\xff')) == 0x62A8AB43u);
  // Extending in pieces gives the CRC of the whole.
  const std::string text = "keystonelight";
  std::uint32_t crc = kl::detail::crc32c_extend(0, text.data(), 4);
  crc = kl::detail::crc32c_extend(crc, text.data() + 4, text.size() - 4);
  CHECK(crc == kl::detail::crc32c(text));
}

TEST_CASE("a record is laid out byte for byte as docs/log-format.md says") {
  std::string out;
  kl::detail::encode_record(RecordType::kPut, "k", "value", 0, &out);
  REQUIRE(out.size() == kl::kRecordHeaderBytes + 1 + 5);
  CHECK(kl::kRecordHeaderBytes == 25);
  const std::string_view bytes(out);
  CHECK(kl::detail::get_u32(out.data()) == kl::detail::crc32c(bytes.substr(4, 21)));  // header
  CHECK(kl::detail::get_u32(out.data() + 4) == kl::detail::crc32c("kvalue"));        // body
  CHECK(out[8] == 1);                                  // type: put
  CHECK(kl::detail::get_u32(out.data() + 9) == 1);     // key length
  CHECK(kl::detail::get_u32(out.data() + 13) == 5);    // value length
  CHECK(kl::detail::get_u64(out.data() + 17) == 0);    // expiry: none
  CHECK(out.substr(25) == "kvalue");

  const std::string header = kl::detail::encode_file_header();
  REQUIRE(header.size() == kl::kFileHeaderBytes);
  CHECK(header.substr(0, 8) == "KEYSTONE");
  CHECK(kl::detail::get_u32(header.data() + 8) == kl::kLogVersion);
}

TEST_CASE("records written are read back in order, with their offsets, to a clean end") {
  kltest::TempDir dir;
  const auto records = sample_records();
  const std::string path = write_log(dir, records);
  ReadBack back = read_log(path);
  CHECK(back.stop == Result::kEnd);
  REQUIRE(back.records.size() == records.size());
  std::uint64_t offset = kl::kFileHeaderBytes;
  for (std::size_t i = 0; i < records.size(); ++i) {
    CHECK(back.records[i].type == records[i].type);
    CHECK(back.records[i].key == records[i].key);
    CHECK(back.records[i].value == records[i].value);
    CHECK(back.offsets[i] == offset);
    offset += kl::kRecordHeaderBytes + records[i].key.size() + records[i].value.size();
  }
  CHECK(back.stop_offset == offset);
  CHECK(kltest::read_file(path).size() == offset);
}

TEST_CASE("the reader stops at a cut record and says where it starts") {
  kltest::TempDir dir;
  const auto records = sample_records();
  const std::string path = write_log(dir, records);
  const std::string bytes = kltest::read_file(path);
  const std::uint64_t last = read_log(path).offsets.back();
  for (std::uint64_t cut : {last + 1, last + kl::kRecordHeaderBytes, std::uint64_t(bytes.size() - 1)}) {
    kltest::write_file(path, bytes.substr(0, static_cast<std::size_t>(cut)));
    ReadBack back = read_log(path);
    CHECK(back.stop == Result::kIncomplete);
    CHECK(back.stop_offset == last);
    CHECK(back.records.size() == records.size() - 1);
  }
}

TEST_CASE("a flipped bit is a checksum mismatch, and the records after it are still findable") {
  kltest::TempDir dir;
  const std::string path = write_log(dir, sample_records());
  std::string bytes = kltest::read_file(path);
  const ReadBack clean = read_log(path);
  const std::uint64_t third = clean.offsets[2];
  bytes[static_cast<std::size_t>(third + kl::kRecordHeaderBytes)] ^= 0x10;  // in the key
  kltest::write_file(path, bytes);

  ReadBack back = read_log(path);
  CHECK(back.stop == Result::kBadChecksum);
  CHECK(back.stop_offset == third);
  CHECK(back.records.size() == 2);

  std::unique_ptr<kl::File> file;
  REQUIRE(kl::default_file_system()->open(path, false, &file).ok());
  LogReader reader(file.get());
  LogReader::Header header;
  REQUIRE(reader.open(&header).ok());
  CHECK(reader.find_valid_record_after(third) == clean.offsets[3]);
  CHECK(reader.find_valid_record_after(clean.offsets.back()) == std::nullopt);
}

TEST_CASE("a damaged header fails its own CRC before any length is trusted") {
  kltest::TempDir dir;
  const std::string path = write_log(dir, sample_records());
  std::string bytes = kltest::read_file(path);
  bytes[kl::kFileHeaderBytes + 9 + 3] = '\x7f';  // the key length's top byte: about 2 GiB
  kltest::write_file(path, bytes);
  ReadBack back = read_log(path);
  CHECK(back.stop == Result::kBadChecksum);
  CHECK(back.stop_offset == kl::kFileHeaderBytes);
}

TEST_CASE("an unknown type and an impossible length behind a valid header CRC are reported") {
  kltest::TempDir dir;
  const std::string path = write_log(dir, sample_records());
  const std::string bytes = kltest::read_file(path);
  const std::size_t first = kl::kFileHeaderBytes;

  std::string bad_type = bytes;
  bad_type[first + 8] = 9;
  kl::detail::seal_record_header(&bad_type[first]);
  kltest::write_file(path, bad_type);
  CHECK(read_log(path).stop == Result::kBadType);

  // A whole record over the key limit, as a build with larger limits would write it.
  std::string over = kl::detail::encode_file_header();
  kl::detail::encode_record(RecordType::kPut, std::string(kl::kMaxKeyBytes + 1, 'k'), "", 0, &over);
  kltest::write_file(path, over);
  ReadBack back = read_log(path);
  CHECK(back.stop == Result::kBadLength);
  CHECK(back.stop_offset == first);
}

TEST_CASE("a length claiming more than the file holds is incomplete, and nothing is read for it") {
  kltest::TempDir dir;
  const std::string path = dir.file("test.log");
  std::string bytes = kl::detail::encode_file_header();
  kl::detail::encode_record(RecordType::kPut, "k", "v", 0, &bytes);
  // 500 MB is within the value limit, so only the file's size can tell it is a lie.
  bytes[kl::kFileHeaderBytes + 13] = 0;
  bytes[kl::kFileHeaderBytes + 14] = 0x65;
  bytes[kl::kFileHeaderBytes + 15] = static_cast<char>(0xCD);
  bytes[kl::kFileHeaderBytes + 16] = 0x1D;
  kl::detail::seal_record_header(&bytes[kl::kFileHeaderBytes]);
  kltest::write_file(path, bytes);
  ReadBack back = read_log(path);
  CHECK(back.stop == Result::kIncomplete);
  CHECK(back.stop_offset == kl::kFileHeaderBytes);
}

TEST_CASE("the file header is checked: wrong magic, damage and a future version") {
  kltest::TempDir dir;
  const std::string path = dir.file("test.log");
  auto open_with = [&](const std::string& bytes, LogReader::Header* header) {
    kltest::write_file(path, bytes);
    std::unique_ptr<kl::File> file;
    REQUIRE(kl::default_file_system()->open(path, false, &file).ok());
    LogReader reader(file.get());
    return reader.open(header);
  };
  const std::string good = kl::detail::encode_file_header();
  LogReader::Header header;
  REQUIRE(open_with(good, &header).ok());
  CHECK(header == LogReader::Header::kValid);
  REQUIRE(open_with("", &header).ok());
  CHECK(header == LogReader::Header::kMissing);
  REQUIRE(open_with(good.substr(0, 9), &header).ok());
  CHECK(header == LogReader::Header::kTorn);

  kl::Status s = open_with("NOTALOG!" + good.substr(8), &header);
  CHECK(s.code() == kl::Status::Code::kCorruption);
  CHECK(s.message().find("not a Keystonelight log") != std::string::npos);
  CHECK(s.message().find(path) != std::string::npos);

  std::string damaged = good;
  damaged[13] ^= 1;
  CHECK(open_with(damaged, &header).code() == kl::Status::Code::kCorruption);

  std::string future = good.substr(0, 8);
  kl::detail::put_u32(&future, kl::kLogVersion + 1);
  kl::detail::put_u32(&future, kl::detail::crc32c(future));
  s = open_with(future, &header);
  CHECK(s.code() == kl::Status::Code::kNotSupported);
  CHECK(s.message().find("version " + std::to_string(kl::kLogVersion + 1)) != std::string::npos);

  CHECK(open_with("KEYX", &header).code() == kl::Status::Code::kCorruption);
}

TEST_CASE("the writer refuses records over the limits and writes nothing for them") {
  kltest::TempDir dir;
  const std::string path = write_log(dir, {});
  std::unique_ptr<kl::File> file;
  REQUIRE(kl::default_file_system()->open(path, false, &file).ok());
  kl::LogWriter writer(std::move(file), kl::kFileHeaderBytes);
  kl::Status s = writer.append(RecordType::kPut, std::string(kl::kMaxKeyBytes + 1, 'k'), "v");
  CHECK(s.code() == kl::Status::Code::kInvalidArgument);
  CHECK(s.message().find("KEYSTONELIGHT_MAX_KEY_BYTES") != std::string::npos);
  CHECK(writer.append(RecordType::kDelete, "k", "a value").code() ==
        kl::Status::Code::kInvalidArgument);
  CHECK(writer.append(RecordType::kPut, std::string(kl::kMaxKeyBytes, 'k'), "").ok());
  CHECK(writer.size() == kl::kFileHeaderBytes + kl::kRecordHeaderBytes + kl::kMaxKeyBytes);
  CHECK(kltest::read_file(path).size() == writer.size());
}

TEST_CASE("a failed append leaves no half record behind, and the log stays readable") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  const std::string path = dir.file("test.log");
  std::unique_ptr<kl::File> file;
  REQUIRE(fs.open(path, true, &file).ok());
  std::unique_ptr<kl::LogWriter> writer;
  REQUIRE(kl::LogWriter::create(std::move(file), &writer).ok());
  REQUIRE(writer->append(RecordType::kPut, "a", "1").ok());
  fs.arm(kltest::Op::kAppend, 0, kltest::Fault::kPartialAppend, "No space left on device", 10);
  kl::Status s = writer->append(RecordType::kPut, "b", "2");
  CHECK(s.code() == kl::Status::Code::kIOError);
  CHECK(s.message() == "write " + path + ": No space left on device");
  REQUIRE(writer->append(RecordType::kPut, "c", "3").ok());
  ReadBack back = read_log(path);
  CHECK(back.stop == Result::kEnd);
  REQUIRE(back.records.size() == 2);
  CHECK(back.records[1].key == "c");
}

TEST_CASE("a writer that cannot cut back a failed append refuses every later append") {
  kltest::TempDir dir;
  kltest::FaultyFileSystem fs;
  const std::string path = dir.file("test.log");
  std::unique_ptr<kl::File> file;
  REQUIRE(fs.open(path, true, &file).ok());
  std::unique_ptr<kl::LogWriter> writer;
  REQUIRE(kl::LogWriter::create(std::move(file), &writer).ok());
  fs.arm(kltest::Op::kAppend, 0, kltest::Fault::kPartialAppend, "Input/output error", 5);
  REQUIRE_FALSE(writer->append(RecordType::kPut, "a", "1").ok());  // the cut-back works
  REQUIRE(writer->append(RecordType::kPut, "b", "2").ok());
  fs.arm(kltest::Op::kTruncate, 0, kltest::Fault::kFailAlways, "Input/output error");
  fs.arm(kltest::Op::kAppend, 0, kltest::Fault::kPartialAppend, "Input/output error", 5);
  REQUIRE_FALSE(writer->append(RecordType::kPut, "c", "3").ok());
  // The faulty file system fails the cut-back too: the writer must not append after it.
  CHECK(writer->append(RecordType::kPut, "d", "4").code() == kl::Status::Code::kIOError);
  ReadBack back = read_log(path);
  CHECK(back.records.size() == 1);
  CHECK(back.stop == Result::kIncomplete);  // the half record stays a torn tail
}

// Short writes and EINTR are real: a blocking write(2) interrupted by a signal returns
// early, with part of the data written or none. PosixFile::append must finish the job.
TEST_CASE("append finishes writes that signals cut short") {
  kltest::TempDir dir;
  const std::string fifo = dir.file("fifo");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::unique_ptr<kl::File> file;  // O_RDWR: opening a FIFO this way does not block
  REQUIRE(kl::default_file_system()->open(fifo, false, &file).ok());

  std::string data(4 << 20, '\0');  // 64 times a pipe's buffer
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 % 251);

  struct sigaction action {};
  action.sa_handler = [](int) {};  // no SA_RESTART: the signal interrupts write(2)
  struct sigaction previous {};
  REQUIRE(::sigaction(SIGALRM, &action, &previous) == 0);
  std::string received;
  std::thread reader([&] {
    sigset_t block;  // let the writer's thread take every SIGALRM
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &block, nullptr);
    int fd = ::open(fifo.c_str(), O_RDONLY);
    char buf[4096];
    while (received.size() < data.size()) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      received.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
  });
  struct itimerval every_100us {{0, 100}, {0, 100}};
  ::setitimer(ITIMER_REAL, &every_100us, nullptr);
  kl::Status s = file->append(data);
  struct itimerval off {};
  ::setitimer(ITIMER_REAL, &off, nullptr);
  reader.join();
  ::sigaction(SIGALRM, &previous, nullptr);
  CHECK(s.ok());
  CHECK(received.size() == data.size());
  CHECK(received == data);
}

// A backup may be read-only, and checking it must not need write access: open_read_only
// asks the system for read access alone (O_RDONLY), so writes fail even for root, who
// may write whatever the permissions say.
TEST_CASE("a file opened read-only reads, and refuses every change") {
  kltest::TempDir dir;
  const std::string path = write_log(dir, sample_records());
  const std::string before = kltest::read_file(path);
  std::unique_ptr<kl::File> file;
  REQUIRE(kl::default_file_system()->open_read_only(path, &file).ok());
  std::uint64_t size = 0;
  REQUIRE(file->size(&size).ok());
  CHECK(size == before.size());
  std::string head(8, '\0');
  std::size_t got = 0;
  REQUIRE(file->read_at(0, head.data(), head.size(), &got).ok());
  CHECK(head == before.substr(0, 8));
  CHECK(file->append("x").code() == kl::Status::Code::kIOError);
  CHECK(file->truncate(0).code() == kl::Status::Code::kIOError);
  file.reset();
  CHECK(kltest::read_file(path) == before);
  CHECK(read_log(path).records.size() == sample_records().size());

  kl::Status missing = kl::default_file_system()->open_read_only(dir.file("none"), &file);
  CHECK(missing.code() == kl::Status::Code::kIOError);
  CHECK(missing.message() == "open " + dir.file("none") + ": No such file or directory");
  CHECK_FALSE(kl::default_file_system()->exists(dir.file("none")));  // nothing created
}

// A FileSystem written before open_read_only existed overrides open() alone; it keeps
// working, opening the file read-write through open(path, false, ...).
TEST_CASE("a file system without open_read_only of its own opens through open()") {
  struct Recording final : kl::FileSystem {
    std::vector<std::string> opened;  // "path create" for each open()
    kl::FileSystem* real = kl::default_file_system();
    kl::Status open(const std::string& path, bool create, std::unique_ptr<kl::File>* file) override {
      opened.push_back(path + (create ? " create" : " existing"));
      return real->open(path, create, file);
    }
    bool exists(const std::string& path) override { return real->exists(path); }
    kl::Status rename(const std::string& from, const std::string& to) override {
      return real->rename(from, to);
    }
    kl::Status remove(const std::string& path) override { return real->remove(path); }
    kl::Status sync_dir(const std::string& d) override { return real->sync_dir(d); }
    kl::Status create_dir(const std::string& d) override { return real->create_dir(d); }
    kl::Status list_dir(const std::string& d, std::vector<std::string>* names) override {
      return real->list_dir(d, names);
    }
  };
  kltest::TempDir dir;
  const std::string path = write_log(dir, sample_records());
  Recording fs;
  std::unique_ptr<kl::File> file;
  REQUIRE(fs.open_read_only(path, &file).ok());
  CHECK(fs.opened == std::vector<std::string>{path + " existing"});
  std::uint64_t size = 0;
  REQUIRE(file->size(&size).ok());
  CHECK(size == kltest::read_file(path).size());
}

}  // TEST_SUITE
