// keystonelight-check: verifies a data directory's log, on request repairs it, and
// exports its live contents as Redis commands.
//
//   keystonelight-check [--records] [--fix] DIR
//   keystonelight-check --export DIR > dump.resp
//   keystonelight-check --export DIR | redis-cli --pipe
//
// It reads DIR/keystonelight.log from start to end with the engine's own LogReader and
// prints what it holds: records (puts, deletes, expiry changes), live keys, how many bytes are live (the
// latest record of each live key: what compaction keeps) and how many are garbage
// (overwritten and deleted records: what compaction drops), and the first problem, if
// any, with its byte offset. A problem is one of these kinds, told apart exactly as
// Store::open tells them (keystonelight::diagnose):
//
//   torn tail    a write interrupted by a crash: nothing valid follows the bad record, or
//                its header holds and its length runs past the end of the file.
//                Store::open cuts it off by itself and goes on.
//   lost pages   valid records follow, but the bad record lies in a page that reads as
//                zeros: what a power cut leaves of writes not yet fsynced. Store::open
//                cuts it off with what follows, keeps those bytes in a file beside the
//                log, says so, and goes on.
//   corruption   any other damage followed by valid records, which no crash explains.
//                Store::open refuses to open the store.
//
// Without --fix the program changes nothing, not even the LOCK file, and opens the log
// read-only, so it is safe on a copy, a read-only backup, or a directory in use; but a store that is writing at that moment may
// show its record in flight as a torn tail: stop it for a definitive answer.
//
// --fix cuts the log at the end of the last good record, syncs it, and says how many
// bytes it removed from which offset. For a corrupt log that loses the records after the
// damage too (copy the file first to keep them). It takes the directory's lock, as
// Store::open does, so it refuses to touch the log of a running store. It never rewrites
// a damaged file header: that file may not be a Keystonelight log at all.
//
// --export writes what the store holds to standard output as RESP2 commands, one
// `*3 $3 SET $<len> key $<len> value` array per live key, binary-safe, in the order of
// each key's latest record, so that `redis-cli --pipe` loads it into Redis or Valkey. A
// value that APPEND grew since its latest put (format version 4) follows as one
// `APPEND key piece` per append record, in log order, after its SET.
// The output is the data, so every message goes to standard error. Like a check it
// changes nothing and takes no lock: it works on the directory of a running store (and
// shows it as of the moment it starts). It reads the log twice: once to verify all of it
// and find the latest record of each live key, keeping keys and offsets only, and then to
// write those records; so it holds no values in memory, and writes nothing at all unless
// the whole log can be exported. A log that Store::open would open exports exactly what
// Store::open would load:
//
//   torn tail    left out, as Store::open drops it, and named on standard error; exit 0,
//                for the export is complete (a store writing at that moment shows its
//                record in flight this way, and that must not fail every live export)
//   corruption, a record this build does not understand, a damaged file header:
//                nothing is written to standard output and the exit status is 1. An
//                export missing everything after the damage would look complete; the
//                message names the file and offset and says how to export what comes
//                before the damage (--fix on a copy, then --export the copy)
//
// A failed write to standard output (EPIPE, a full disk) is exit 3: the export is then
// incomplete and must not be used. Check the exit status of the exporter, not only of
// the loader: in `--export DIR | redis-cli --pipe` the shell reports redis-cli's alone
// unless `set -o pipefail` is on. A key with an expiry is exported as SET key value PXAT
// time, so that it expires at the same moment in the server that loads it; a key whose
// time has passed by the export is left out, as Store::open leaves it out.
//
// Exit codes (also in --help):
//   0  the log is clean, or --fix repaired it; with --export, the live keys were
//      written (a torn tail left out, as opening the store drops it)
//   1  a problem was found and left as it is (torn tail, corruption, a damaged header);
//      with --export, corruption or a damaged header, and nothing was written
//   2  usage error: an unknown option, a missing or extra DIR, --export with --fix or
//      --records
//   3  the log could not be read or repaired: no such directory or log, an I/O error,
//      a log version this build cannot read, the lock held by a running store; with
//      --export also a failed write to standard output (what was written is incomplete)
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "keystonelight.hpp"

namespace {

using keystonelight::File;
using keystonelight::LogReader;
using keystonelight::Record;
using keystonelight::RecordType;
using keystonelight::Status;

enum ExitCode : int {
  kExitClean = 0,
  kExitProblem = 1,
  kExitUsage = 2,
  kExitFailed = 3,
};

constexpr const char* kUsage =
    "usage: keystonelight-check [--records] [--fix] DIR\n"
    "       keystonelight-check --export DIR\n"
    "       keystonelight-check --help | --version\n"
    "\n"
    "Verifies DIR/keystonelight.log without changing anything and reports its records,\n"
    "live keys, live and garbage bytes, and the first problem: a torn tail (a write cut\n"
    "short by a crash; opening the store drops it) or corruption (damage with valid\n"
    "records after it; the store refuses to open).\n"
    "\n"
    "  --records   also list every record: offset, type, key and value length, key\n"
    "  --fix       cut a damaged log at the end of its last good record (takes DIR/LOCK,\n"
    "              so not while a store has DIR open); a corrupt log loses the records\n"
    "              after the damage too, so copy the file first to keep them\n"
    "  --export    write the live keys to standard output as RESP2 SET commands (and\n"
    "              APPEND for values grown by appends since their SET), for\n"
    "              `keystonelight-check --export DIR | redis-cli --pipe`; changes\n"
    "              nothing, takes no lock (a running store may hold DIR), leaves out a\n"
    "              torn tail as opening the store does (and says so on standard error),\n"
    "              and writes nothing at all for a corrupt log; not with --fix or --records\n"
    "  --help      print this text\n"
    "  --version   print the version of Keystonelight this program was built with\n"
    "\n"
    "Exit codes:\n"
    "  0  the log is clean, or --fix repaired it; --export: the live keys were written\n"
    "  1  a problem was found and left as it is (torn tail, corruption, damaged header);\n"
    "     --export: corruption or a damaged header, and nothing was written\n"
    "  2  usage error\n"
    "  3  the log could not be read or repaired (missing, I/O error, locked by a store);\n"
    "     --export: also standard output could not be written (the export is incomplete)\n";

// Longest key, after escaping, that --records prints in full.
constexpr std::size_t kMaxShownKeyChars = 48;

struct Arguments {
  std::string dir;
  bool records = false;  // --records
  bool fix = false;      // --fix
  bool exports = false;  // --export
  bool help = false;     // --help
  bool version = false;  // --version
};

// Fills *args from the command line. Options may come before or after DIR; "--" ends
// them, for a directory whose name starts with a dash. Returns what is wrong, if anything.
std::optional<std::string> parse_arguments(int argc, char** argv, Arguments* args) {
  bool options_done = false;
  int dirs = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (!options_done && arg == "--") {
      options_done = true;
    } else if (!options_done && arg.size() > 1 && arg[0] == '-') {
      if (arg == "--records") args->records = true;
      else if (arg == "--fix") args->fix = true;
      else if (arg == "--export") args->exports = true;
      else if (arg == "--help" || arg == "-h") args->help = true;
      else if (arg == "--version") args->version = true;
      else return "unknown option '" + arg + "'";
    } else if (++dirs == 1) {
      args->dir = arg;
    } else {
      return "one DIR at a time: '" + args->dir + "' and '" + arg + "' were both given";
    }
  }
  if (args->exports && args->fix) {
    return std::string("--export and --fix cannot be combined: an export changes nothing; "
                       "to export a damaged log, run --fix on a copy, then --export the copy");
  }
  if (args->exports && args->records) {
    return std::string("--export and --records cannot be combined: standard output carries "
                       "the exported data alone");
  }
  if (dirs == 0 && !args->help && !args->version) return std::string("missing DIR");
  return std::nullopt;
}

// A key as a person can read it on a terminal: printable ASCII as it is, any other byte
// (and the backslash and quote, so the form cannot be misread) escaped, and a long key
// cut short with its length, so that one huge key does not flood the listing.
std::string printable_key(std::string_view key) {
  static const char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (std::size_t i = 0; i < key.size(); ++i) {
    if (out.size() > kMaxShownKeyChars) {
      return out + "\"... (" + std::to_string(key.size()) + " bytes)";
    }
    const auto c = static_cast<unsigned char>(key[i]);
    if (c == '\\' || c == '"') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out + "\"";
}

unsigned long long ull(std::uint64_t n) { return static_cast<unsigned long long>(n); }

void print_record(const Record& record) {
  std::printf("  %12llu  %-6s  %10zu  %12zu  %s\n", ull(record.offset),
              record.type == RecordType::kPut      ? "put"
              : record.type == RecordType::kDelete ? "delete"
              : record.type == RecordType::kExpire ? "expire"
              : record.type == RecordType::kAppend ? "append"
                                                   : "batch",
              record.key.size(),
              record.value.size(), printable_key(record.key).c_str());
}

// The first bad record and what follows it.
struct Problem {
  LogReader::Result result = LogReader::Result::kEnd;
  std::uint64_t offset = 0;  // where the bad record starts
  keystonelight::Diagnosis diagnosis;  // what Store::open makes of it
};

// What a walk through the log found. Counts cover the records before the first problem,
// the ones Store::open would replay.
struct Scan {
  LogReader::Header header = LogReader::Header::kMissing;
  std::uint64_t file_size = 0;
  std::uint64_t good_end = 0;  // offset just after the last good record (or the header)
  std::uint64_t puts = 0;
  std::uint64_t deletes = 0;
  std::uint64_t expires = 0;  // records that change only a key's expiry (format version 2)
  std::uint64_t batches = 0;  // batch records (format version 3); their entries count above
  std::uint64_t appends = 0;  // records that add to a value's end (format version 4)
  // Where a record starts; for an entry of a batch record, the record's offset and the
  // entry's number in it.
  struct Place {
    std::uint64_t offset = 0;
    std::size_t entry = 0;  // 0: a record of its own; n: the n-th entry of a batch
  };
  // The latest put of each live key (or the append that made it), and the appends made to
  // it since; the size of the one put a compaction would write for it; and the key's expiry
  // (ms since the epoch, 0: none), from that put or a later change.
  struct Latest {
    Place base;
    std::uint64_t size = 0;
    std::uint64_t expiry_ms = 0;
    std::vector<Place> appended;
  };
  std::unordered_map<std::string, Latest> live;
  std::optional<Problem> problem;

  // Whole records; a batch is one, however many entries it holds.
  std::uint64_t records() const { return puts + deletes + expires + appends + batches - entries; }
  std::uint64_t entries = 0;  // the changes inside batch records (counted in puts, ...)
  std::uint64_t live_bytes() const {
    std::uint64_t sum = 0;
    for (const auto& entry : live) sum += entry.second.size;
    return sum;
  }
  // Records that compaction would drop: overwritten puts, every delete and expiry change.
  std::uint64_t garbage_bytes() const {
    const std::uint64_t records_bytes =
        header == LogReader::Header::kValid ? good_end - keystonelight::kFileHeaderBytes : 0;
    // (A batch entry counts as the record a compaction would write for it, a few bytes
    // more than the entry: hence no less than zero.)
    return records_bytes > live_bytes() ? records_bytes - live_bytes() : 0;
  }
  std::uint64_t damaged_bytes() const { return file_size - good_end; }
};

// Replays one record into the scan's picture of the live keys: for a batch, each of its
// entries, numbered from 1.
void count_record(const Record& record, Scan* scan, std::size_t entry = 0) {
  if (record.type == RecordType::kBatch) {
    ++scan->batches;
    keystonelight::detail::BatchReader entries(record.value);
    Record change;
    for (std::size_t n = 1; entries.next(&change); ++n) {
      change.offset = record.offset;
      change.size = keystonelight::kRecordHeaderBytes + change.key.size() + change.value.size();
      ++scan->entries;
      count_record(change, scan, n);
    }
  } else if (record.type == RecordType::kPut) {
    ++scan->puts;
    scan->live.insert_or_assign(std::string(record.key),
                                Scan::Latest{{record.offset, entry}, record.size, record.expiry_ms, {}});
  } else if (record.type == RecordType::kAppend) {
    ++scan->appends;
    auto [it, made] = scan->live.try_emplace(std::string(record.key));
    if (made) {  // the key starts from empty: this append is all of it so far
      it->second = Scan::Latest{{record.offset, entry}, record.size, 0, {}};
    } else {
      it->second.size += record.value.size();
      it->second.appended.push_back({record.offset, entry});
    }
  } else if (record.type == RecordType::kDelete) {
    ++scan->deletes;
    scan->live.erase(std::string(record.key));
  } else {
    ++scan->expires;
    auto it = scan->live.find(std::string(record.key));
    if (it != scan->live.end()) it->second.expiry_ms = record.expiry_ms;
  }
}

// Reads the whole of `file` into *scan, listing the records on the way when asked. A
// damaged header is Corruption, a newer log version NotSupported, a failed read IOError;
// a bad record is not an error but scan->problem.
Status scan_log(File* file, bool list_records, Scan* scan) {
  LogReader reader(file);
  if (Status s = reader.open(&scan->header); !s.ok()) return s;
  scan->file_size = reader.file_size();
  if (scan->header == LogReader::Header::kTorn) {
    // A crash while the store created the file; Store::open writes the header again.
    scan->problem = Problem{LogReader::Result::kIncomplete, 0, {}};
    return Status();
  }
  if (list_records && scan->header == LogReader::Header::kValid) {
    std::printf("  %12s  %-6s  %10s  %12s  %s\n", "offset", "type", "key bytes", "value bytes",
                "key");
  }
  Record record;
  LogReader::Result result;
  while ((result = reader.next(&record)) == LogReader::Result::kRecord) {
    if (list_records) print_record(record);
    count_record(record, scan);
  }
  if (result == LogReader::Result::kIOError) return reader.status();
  scan->good_end = reader.offset();
  if (result != LogReader::Result::kEnd) {
    Problem problem{result, scan->good_end, {}};
    if (Status s = keystonelight::diagnose(reader, result, &problem.diagnosis); !s.ok()) return s;
    scan->problem = problem;
  }
  return Status();
}

void print_report(const std::string& path, const Scan& scan) {
  std::printf("file:           %s\n", path.c_str());
  std::printf("size:           %llu bytes", ull(scan.file_size));
  if (scan.header == LogReader::Header::kValid) {
    std::printf(" = %zu header + %llu live + %llu garbage", keystonelight::kFileHeaderBytes,
                ull(scan.live_bytes()), ull(scan.garbage_bytes()));
    if (scan.damaged_bytes() > 0) {
      std::printf(" + %llu from the problem on", ull(scan.damaged_bytes()));
    }
  }
  std::printf("\n");
  // Expiry changes, batches and appends only where the log has them (format versions 2 to 4).
  std::string kinds = "puts " + std::to_string(scan.puts) + ", deletes " + std::to_string(scan.deletes);
  if (scan.expires > 0) kinds += ", expiry changes " + std::to_string(scan.expires);
  if (scan.appends > 0) kinds += ", appends " + std::to_string(scan.appends);
  if (scan.batches > 0) {
    kinds += "; " + std::to_string(scan.entries) + " of them in " + std::to_string(scan.batches) +
             " batches";
  }
  std::printf("records:        %llu (%s)%s\n", ull(scan.records()), kinds.c_str(),
              scan.problem ? " before the problem" : "");
  std::printf("live keys:      %zu\n", scan.live.size());
  std::printf("live bytes:     %llu (the latest record of each live key: compaction keeps them)\n",
              ull(scan.live_bytes()));
  std::printf("garbage bytes:  %llu (overwritten and deleted records: compaction drops them)\n",
              ull(scan.garbage_bytes()));

  if (scan.header == LogReader::Header::kMissing) {
    std::printf("problem:        none: the file is empty (a store created it and stopped before "
                "writing its header); Store::open writes one\n");
    return;
  }
  if (!scan.problem) {
    std::printf("problem:        none: the log ends cleanly after %llu records\n",
                ull(scan.records()));
    return;
  }
  const Problem& p = *scan.problem;
  if (scan.header == LogReader::Header::kTorn) {
    std::printf("problem:        incomplete file header (%llu bytes) at byte offset 0\n",
                ull(scan.file_size));
  } else {
    std::printf("problem:        %s at byte offset %llu\n", LogReader::describe(p.result),
                ull(p.offset));
  }
  if (p.diagnosis.damage == keystonelight::Damage::kNotUnderstood) {
    std::printf("kind:           not understood: its header CRC holds, yet its type or length "
                "does not (over this build's KEYSTONELIGHT_MAX_KEY_BYTES or "
                "KEYSTONELIGHT_MAX_VALUE_BYTES?), which a crash cannot write: a build with larger "
                "limits wrote it, or it is damaged; Store::open refuses to open this log\n");
  } else if (p.diagnosis.damage == keystonelight::Damage::kLostPages) {
    std::printf("kind:           lost pages: a valid record follows at offset %llu, but the bad "
                "record lies in a page that reads as zeros, as a power cut leaves writes not "
                "yet fsynced; Store::open would drop the %llu bytes from here on, keeping a copy "
                "in %s.dropped-at-%llu, and go on\n",
                ull(*p.diagnosis.next_valid), ull(scan.damaged_bytes()), keystonelight::kLogFileName,
                ull(p.offset));
  } else if (p.diagnosis.next_valid) {
    std::printf("kind:           corruption: a valid record follows at offset %llu, which "
                "neither a crashed process nor a power cut explains; Store::open refuses to "
                "open this log\n",
                ull(*p.diagnosis.next_valid));
  } else if (p.diagnosis.damage == keystonelight::Damage::kCorruption) {
    std::printf("kind:           corruption: the bytes after it are full of record headers whose "
                "contents do not match, which no crash writes; Store::open refuses to open this "
                "log\n");
  } else {
    std::printf("kind:           torn tail: nothing valid after it; Store::open would drop %llu "
                "bytes%s and go on\n",
                ull(scan.damaged_bytes()),
                scan.header == LogReader::Header::kTorn ? ", write a new file header" : "");
  }
}

// What to do about the problem just reported, for a run without --fix.
void print_advice(const std::string& dir, const Scan& scan) {
  const Problem& p = *scan.problem;
  if (p.diagnosis.damage != keystonelight::Damage::kTornTail &&
      p.diagnosis.damage != keystonelight::Damage::kLostPages) {
    std::printf("what to do:     restore a backup, or run `keystonelight-check --fix %s` to keep "
                "the %llu records before offset %llu and lose the %llu bytes from there on "
                "(copy the file first to keep them)\n",
                dir.c_str(), ull(scan.records()), ull(p.offset), ull(scan.damaged_bytes()));
  } else {
    std::printf("what to do:     open the store, which drops them, or run "
                "`keystonelight-check --fix %s` to cut the %llu bytes now\n",
                dir.c_str(), ull(scan.damaged_bytes()));
  }
}

// Cuts the log after its last good record and syncs it. A torn file header is replaced
// by a whole one, as Store::open would do, so that the result is a log again.
Status fix_log(std::unique_ptr<File> file, const Scan& scan) {
  const std::uint64_t cut = scan.good_end;
  if (Status s = file->truncate(cut); !s.ok()) return s;
  if (scan.header == LogReader::Header::kTorn) {
    std::unique_ptr<keystonelight::LogWriter> writer;
    if (Status s = keystonelight::LogWriter::create(std::move(file), &writer); !s.ok()) return s;
    if (Status s = writer->sync(); !s.ok()) return s;
    std::printf("fixed:          removed %llu bytes from offset %llu and wrote a new file header; "
                "the log is empty\n",
                ull(scan.damaged_bytes()), ull(cut));
    return Status();
  }
  if (Status s = file->sync(); !s.ok()) return s;
  std::printf("fixed:          removed %llu bytes from offset %llu; the log now ends after %llu "
              "whole records (synced)\n",
              ull(scan.damaged_bytes()), ull(cut), ull(scan.records()));
  return Status();
}

// Says on standard error what went wrong and what to do; never touches standard output,
// which may carry an export.
void complain(const std::string& what, const std::string& advice) {
  std::fprintf(stderr, "keystonelight-check: %s\n", what.c_str());
  if (!advice.empty()) std::fprintf(stderr, "keystonelight-check: %s\n", advice.c_str());
}

// Reports a failure that stops the check: what failed, on which file, what to do.
int fail(const Status& s, const std::string& advice) {
  std::fflush(stdout);  // whatever the report said so far comes first
  complain(s.to_string(), advice);
  return kExitFailed;
}

// --- --export -------------------------------------------------------------------------

// Standard output as the sink of an export. The first failed write is kept and every
// later one skipped, so that the caller stops reading the log and reports it once.
class Output {
 public:
  Output() {
    // Fully buffered, in large blocks: one write(2) per 256 KiB, whatever stdout is.
    std::setvbuf(stdout, nullptr, _IOFBF, kBufferBytes);
  }

  bool put(std::string_view bytes) {
    if (status_.ok() && !bytes.empty() &&
        std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size()) {
      failed(errno);
    }
    return status_.ok();
  }

  // Flushes and closes standard output: a full disk or a closed pipe may show only here,
  // and some file systems report errors only at close. Nothing may use stdout after.
  Status finish() {
    if (status_.ok() && (std::fflush(stdout) != 0 || std::ferror(stdout))) failed(errno);
    if (std::fclose(stdout) != 0 && status_.ok()) failed(errno);
    return status_;
  }

  const Status& status() const { return status_; }

 private:
  static constexpr std::size_t kBufferBytes = 256 * 1024;

  void failed(int err) {
    status_ = Status::io_error(std::string("write standard output: ") + std::strerror(err));
  }

  Status status_;
};

// One RESP2 command, SET key value, with PXAT time for a key with an expiry: lengths in
// decimal, bytes as they are, so any key or value (CR, LF, NUL, RESP look-alikes) arrives
// unchanged.
bool put_set(std::string_view key, std::string_view value, std::uint64_t expiry_ms, Output* out) {
  const std::string key_head = std::string(expiry_ms ? "*5" : "*3") + "\r\n$3\r\nSET\r\n$" +
                               std::to_string(key.size()) + "\r\n";
  const std::string value_head = "\r\n$" + std::to_string(value.size()) + "\r\n";
  std::string tail = "\r\n";
  if (expiry_ms) {
    const std::string when = std::to_string(expiry_ms);
    tail += "$4\r\nPXAT\r\n$" + std::to_string(when.size()) + "\r\n" + when + "\r\n";
  }
  return out->put(key_head) && out->put(key) && out->put(value_head) && out->put(value) &&
         out->put(tail);
}

// APPEND key piece, as RESP2.
bool put_append(std::string_view key, std::string_view piece, Output* out) {
  return out->put("*3\r\n$6\r\nAPPEND\r\n$" + std::to_string(key.size()) + "\r\n") &&
         out->put(key) && out->put("\r\n$" + std::to_string(piece.size()) + "\r\n") &&
         out->put(piece) && out->put("\r\n");
}

// Writes the latest record of each live key that `scan` found, in log order, reading the
// log a second time. The first reading found every record before scan.good_end whole, and
// those bytes cannot change under an open file (a store only appends, and compaction
// renames a new file over the log, leaving ours as it was), so a record that no longer
// reads back means the disk returns other bytes than before: an error, not damage to
// diagnose. The export is then incomplete, and so is it after any error returned here.
Status write_export(File* file, const Scan& scan, Output* out) {
  // Each live key's latest put, by offset, with its expiry, then the appends made to it
  // since (written as APPEND, in log order, after the SET); keys whose time has passed by
  // now stay out, as Store::open would leave them out.
  const auto now = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch()).count());
  struct Wanted {
    std::uint64_t offset;
    std::size_t entry;  // 0, or the entry's number in the batch record at offset
    std::uint64_t expiry_ms;
    bool append;  // a later piece of the value: APPEND, not SET
    bool operator<(const Wanted& o) const {
      return offset != o.offset ? offset < o.offset : entry < o.entry;
    }
  };
  std::vector<Wanted> offsets;
  offsets.reserve(scan.live.size());
  for (const auto& entry : scan.live) {
    const std::uint64_t expiry = entry.second.expiry_ms;
    if (expiry != 0 && now > expiry) continue;
    offsets.push_back({entry.second.base.offset, entry.second.base.entry, expiry, false});
    for (const Scan::Place& piece : entry.second.appended) {
      offsets.push_back({piece.offset, piece.entry, 0, true});
    }
  }
  std::sort(offsets.begin(), offsets.end());

  LogReader reader(file);
  LogReader::Header header;
  if (Status s = reader.open(&header); !s.ok()) return s;
  Record record;
  for (std::size_t i = 0; i < offsets.size();) {
    const std::uint64_t at = reader.offset();
    const LogReader::Result result = reader.next(&record);
    if (result == LogReader::Result::kIOError) return reader.status();
    if (result != LogReader::Result::kRecord) {
      return Status::io_error(file->path() + ": " + LogReader::describe(result) +
                              " at byte offset " + std::to_string(at) + " on the second "
                              "reading, where the first found a whole record: the file "
                              "changed while it was read, or the disk is failing");
    }
    if (record.offset != offsets[i].offset) continue;  // overwritten, deleted or expired
    auto put = [&](const Record& change, const Wanted& wanted) {
      return wanted.append ? put_append(change.key, change.value, out)
                           : put_set(change.key, change.value, wanted.expiry_ms, out);
    };
    if (offsets[i].entry == 0) {
      if (!put(record, offsets[i])) return out->status();
      ++i;
      continue;
    }
    // The live puts among a batch's entries, in their order.
    keystonelight::detail::BatchReader entries(record.value);
    Record change;
    for (std::size_t n = 1; entries.next(&change) && i < offsets.size() &&
                            offsets[i].offset == record.offset;
         ++n) {
      if (offsets[i].entry != n) continue;
      if (!put(change, offsets[i])) return out->status();
      ++i;
    }
  }
  return Status();
}

// --export: the whole export or, for a log that cannot be exported whole, nothing at all
// on standard output; what happened is said on standard error.
int export_log(const std::string& dir, File* file) {
  const std::string& path = file->path();
  Scan scan;
  Status s = scan_log(file, /*list_records=*/false, &scan);
  if (s.code() == Status::Code::kCorruption) {
    // The file header: the file may not be a log at all, and --fix would not touch it.
    complain(s.message() + "; nothing was exported",
             "restore a backup: --fix does not rewrite a file header");
    return kExitProblem;
  }
  if (!s.ok()) {
    return fail(s, s.code() == Status::Code::kNotSupported
                       ? "nothing was exported"
                       : "nothing was exported; check the disk and run the export again");
  }

  // A torn tail and a power cut's lost pages are what Store::open drops: the export is
  // what the store would hold. Anything else stops it.
  if (scan.problem && scan.problem->diagnosis.damage != keystonelight::Damage::kTornTail &&
      scan.problem->diagnosis.damage != keystonelight::Damage::kLostPages) {
    const Problem& p = *scan.problem;
    std::string what = path + ": " + LogReader::describe(p.result) + " at byte offset " +
                       std::to_string(p.offset);
    if (p.diagnosis.damage == keystonelight::Damage::kCorruption) {
      what += p.diagnosis.next_valid
                  ? ", yet a valid record follows at offset " +
                        std::to_string(*p.diagnosis.next_valid) + ": the log is corrupt"
                  : std::string(", and the bytes after it are full of record headers whose "
                                "contents do not match: the log is corrupt");
    } else {
      what += ": its header checksum holds, yet its type or length is beyond this build "
              "(written by a build with larger KEYSTONELIGHT_MAX_KEY_BYTES or "
              "KEYSTONELIGHT_MAX_VALUE_BYTES, or damaged)";
    }
    what += ". Nothing was exported: without the records after the damage, an export "
            "would look complete and not be";
    complain(what, "run `keystonelight-check " + dir + "` for a report. To export the " +
                       std::to_string(scan.records()) + " records before offset " +
                       std::to_string(p.offset) + ", copy " + dir + ", run `keystonelight-check "
                       "--fix COPY`, then `keystonelight-check --export COPY`; or restore a "
                       "backup");
    return kExitProblem;
  }

  // Without this, a reader that goes away (`| head`) would kill the program silently,
  // mid-export; ignored, it makes the write fail with EPIPE, reported like any failure.
  std::signal(SIGPIPE, SIG_IGN);
  Output out;
  Status w = write_export(file, scan, &out);
  Status f = out.finish();
  if (!w.ok() || !f.ok()) {
    complain((w.ok() ? f : w).to_string(),
             "the export is incomplete: do not load it (or discard what was loaded), and "
             "run it again");
    return kExitFailed;
  }

  if (scan.problem) {
    // A torn tail: the store holds, and opening it keeps, exactly what was exported.
    if (scan.header == LogReader::Header::kTorn) {
      complain("note: " + path + ": incomplete file header (" + std::to_string(scan.file_size) +
                   " bytes) at byte offset 0, a crash while the log was created: the store "
                   "is empty (opening it writes a new header), so nothing was exported",
               "");
    } else {
      complain("note: " + path + ": " + LogReader::describe(scan.problem->result) +
                   " at byte offset " + std::to_string(scan.problem->offset) +
                   ", a torn tail (a write cut short by a crash, or in flight in a store "
                   "that has " + dir + " open): its " + std::to_string(scan.damaged_bytes()) +
                   " bytes were left out, as opening the store drops them; exported the " +
                   std::to_string(scan.live.size()) + " live keys of the " +
                   std::to_string(scan.records()) + " records before it",
               "");
    }
  }
  return kExitClean;
}

// "DIR/name", or "name" alone when DIR is empty.
std::string path_in(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

int run(const Arguments& args) {
  keystonelight::FileSystem* fs = keystonelight::default_file_system();
  const std::string path = path_in(args.dir, keystonelight::kLogFileName);
  if (!fs->exists(args.dir)) {
    return fail(Status::io_error(args.dir + ": no such directory"),
                "give the data directory of a store (the one holding keystonelight.log)");
  }
  // Checked before the lock is taken, which would create DIR/LOCK in any directory.
  if (!fs->exists(path)) {
    return fail(Status::io_error(path + ": no such file"),
                "is " + args.dir + " a Keystonelight data directory? A store creates the log "
                "when it first opens the directory");
  }

  // With --fix, the lock comes first and is held to the end: nobody may append between
  // our reading the log and our cutting it.
  std::unique_ptr<keystonelight::DirLock> lock;
  if (args.fix) {
    const std::string lock_path = path_in(args.dir, keystonelight::kLockFileName);
    if (Status s = keystonelight::DirLock::acquire(lock_path, &lock); !s.ok()) {
      return fail(s, "nothing was changed; stop the store, then run --fix again");
    }
  }

  // A check or an export only reads, so it works on a read-only copy or backup; only
  // --fix, which may cut the log, asks for write access.
  std::unique_ptr<File> file;
  Status opened = args.fix ? fs->open(path, /*create=*/false, &file)
                           : fs->open_read_only(path, &file);
  if (!opened.ok()) {
    return fail(opened, args.fix ? "check the file's permissions: --fix opens it for reading "
                                   "and writing"
                                 : "check the file's permissions: it is opened for reading");
  }
  if (args.exports) return export_log(args.dir, file.get());

  Scan scan;
  Status s = scan_log(file.get(), args.records, &scan);
  if (s.code() == Status::Code::kCorruption) {
    // The file header itself: there is no telling what the file is, so no guessing.
    std::printf("file:           %s\nproblem:        %s\n", path.c_str(), s.message().c_str());
    std::printf("what to do:     restore a backup; --fix does not rewrite a file header%s\n",
                args.fix ? ", so nothing was changed" : "");
    return kExitProblem;
  }
  if (s.code() == Status::Code::kNotSupported) {
    return fail(s, "nothing was changed");
  }
  if (!s.ok()) return fail(s, "nothing was changed; check the disk and run the check again");

  print_report(path, scan);
  if (!scan.problem) return kExitClean;
  if (!args.fix) {
    print_advice(args.dir, scan);
    return kExitProblem;
  }
  if (Status f = fix_log(std::move(file), scan); !f.ok()) {
    return fail(f, "the log may be cut short or not; run the check again to see");
  }
  return kExitClean;
}

// Points standard input, output and error at /dev/null where they are closed, and says
// whether standard output was. With --fix the log is opened for reading and writing: with
// descriptor 1 or 2 free, it would get that number, and the report would be appended to
// the log itself (read-only, as for a check, the writes would fail instead). Returns 0, or
// the errno of a failed open.
int open_closed_standard_descriptors(bool* stdout_was_closed) {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    if (fd == STDOUT_FILENO) *stdout_was_closed = true;
    const int opened = ::open("/dev/null", O_RDWR);  // the lowest free number: fd itself
    if (opened < 0) return errno;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool stdout_was_closed = false;
  if (int err = open_closed_standard_descriptors(&stdout_was_closed); err != 0) {
    std::fprintf(stderr, "keystonelight-check: open /dev/null in place of a closed standard "
                         "descriptor: %s\n", std::strerror(err));
    return kExitFailed;
  }
  Arguments args;
  if (std::optional<std::string> error = parse_arguments(argc, argv, &args)) {
    std::fprintf(stderr, "keystonelight-check: %s\n\n%s", error->c_str(), kUsage);
    return kExitUsage;
  }
  if (args.help) {
    std::fputs(kUsage, stdout);
    return kExitClean;
  }
  if (args.version) {
    std::printf("keystonelight-check %s\n", KEYSTONELIGHT_VERSION_STR);
    return kExitClean;
  }
  if (args.exports && stdout_was_closed) {
    complain("standard output is closed, so the export would be lost; nothing was exported",
             "send it to a file or a pipe: keystonelight-check --export DIR > dump.resp");
    return kExitFailed;
  }
  return run(args);
}
