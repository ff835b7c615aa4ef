// Chapter 2's example: write a few records to a log, then read the file back and show each
// record twice, as the bytes on disk and as what they mean.
//
//   g++ -std=c++17 example.cpp -o example && ./example
//
// The log lives in a temporary directory that the example removes before it exits.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

// Prints `bytes` as hex, 16 to a line, each line led by its offset in the file.
void hex_dump(std::string_view bytes, std::uint64_t offset) {
  for (std::size_t i = 0; i < bytes.size(); i += 16) {
    std::printf("    %06llx ", static_cast<unsigned long long>(offset + i));
    for (std::size_t j = i; j < i + 16 && j < bytes.size(); ++j) {
      std::printf(" %02x", static_cast<unsigned char>(bytes[j]));
    }
    std::printf("\n");
  }
}

// A key or value as text, with bytes that are not printable shown as \xNN.
std::string printable(std::string_view bytes) {
  std::string out;
  for (char byte : bytes) {
    const auto c = static_cast<unsigned char>(byte);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    }
  }
  return out;
}

int fail(const kl::Status& s) {
  std::fprintf(stderr, "example: %s\n", s.to_string().c_str());
  return 1;
}

}  // namespace

int main() {
  char dir[] = "/tmp/keystonelight-example-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return 1;
  const std::string path = std::string(dir) + "/example.log";
  kl::FileSystem* fs = kl::default_file_system();

  {  // Write: every change is one record appended at the end.
    std::unique_ptr<kl::File> file;
    if (kl::Status s = fs->open(path, true, &file); !s.ok()) return fail(s);
    std::unique_ptr<kl::LogWriter> log;
    if (kl::Status s = kl::LogWriter::create(std::move(file), &log); !s.ok()) return fail(s);
    const struct { kl::RecordType type; std::string key, value; } changes[] = {
        {kl::RecordType::kPut, "greeting", "hello"},
        {kl::RecordType::kPut, "count", "1"},
        {kl::RecordType::kPut, "count", "2"},  // the log keeps both; the last one wins
        {kl::RecordType::kDelete, "greeting", ""},
        {kl::RecordType::kPut, std::string("bin\0ary", 7), "\r\n"},
    };
    for (const auto& c : changes) {
      if (kl::Status s = log->append(c.type, c.key, c.value); !s.ok()) return fail(s);
    }
    if (kl::Status s = log->sync(); !s.ok()) return fail(s);
    std::printf("wrote 5 records, %llu bytes\n\n", static_cast<unsigned long long>(log->size()));
  }

  // Read: the header, then record after record until the reader says why it stopped.
  std::unique_ptr<kl::File> file;
  if (kl::Status s = fs->open(path, false, &file); !s.ok()) return fail(s);
  kl::LogReader reader(file.get());
  kl::LogReader::Header header;
  if (kl::Status s = reader.open(&header); !s.ok()) return fail(s);
  std::printf("file header: magic KEYSTONE, version %u\n", kl::kLogVersion);
  std::string head(kl::kFileHeaderBytes, '\0');
  std::size_t got = 0;
  if (kl::Status s = file->read_at(0, head.data(), head.size(), &got); !s.ok()) return fail(s);
  hex_dump(head, 0);
  kl::Record record;
  kl::LogReader::Result result;
  while ((result = reader.next(&record)) == kl::LogReader::Result::kRecord) {
    std::printf("\nrecord at offset %llu (0x%06llx), %llu bytes: %s \"%s\"",
                static_cast<unsigned long long>(record.offset),
                static_cast<unsigned long long>(record.offset),
                static_cast<unsigned long long>(record.size),
                record.type == kl::RecordType::kPut ? "PUT" : "DELETE",
                printable(record.key).c_str());
    if (record.type == kl::RecordType::kPut) std::printf(" = \"%s\"", printable(record.value).c_str());
    std::printf("\n");
    std::string bytes(static_cast<std::size_t>(record.size), '\0');  // as they lie in the file
    if (kl::Status s = file->read_at(record.offset, bytes.data(), bytes.size(), &got); !s.ok()) {
      return fail(s);
    }
    hex_dump(bytes, record.offset);
  }
  std::printf("\nthe reader stopped: %s at offset %llu\n", kl::LogReader::describe(result),
              static_cast<unsigned long long>(reader.offset()));

  file.reset();
  ::unlink(path.c_str());
  ::rmdir(dir);
  return result == kl::LogReader::Result::kEnd ? 0 : 1;
}
