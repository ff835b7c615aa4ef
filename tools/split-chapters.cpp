// split-chapters: writes one chapter's snapshot of keystonelight.hpp to standard output.
//
//   split-chapters HEADER CHAPTER LAST
//
// HEADER is the annotated source, CHAPTER the stage to extract (1..LAST), LAST the number
// of chapters that exist. The markers it understands, each alone on its line:
//
//   //> chapter N              code from here on appears from chapter N on
//   //< chapter N              ...and ends here
//   #if 0 //> chapters A-B     code that appears in chapters A to B only: a later chapter
//   #endif //< chapters A-B    replaces it, so the final header compiles it out
//
// Text may follow a marker after a space or colon ("//> chapter 3: recovery"). Blocks nest; an inner
// block may not start before its outer one or after the outer one has ended. Any other
// line containing "//>" or "//<" is an error, as is an unbalanced marker: the message
// names the file and line, and nothing is written.
//
// Marker lines are dropped from the snapshot. When a dropped block leaves two blank lines
// in a row, the second goes too, so the snapshot reads as if written for its chapter.

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr const char* kBanner =
    "// GENERATED from keystonelight.hpp at the top of the repository by tools/split-chapters.\n"
    "// Do not edit: change keystonelight.hpp, then run `make chapters`.\n";

constexpr int kForever = 1 << 30;  // the last chapter of a block that is never replaced

struct Block {
  int first;      // first chapter that shows the block
  int last;       // last chapter that shows it (kForever unless replaced)
  bool retired;   // opened with "#if 0 //>": must close with "#endif //<"
  int line;       // where it opened, for error messages
};

struct Marker {
  enum Kind { kNone, kOpen, kClose } kind = kNone;
  Block block{};
};

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  std::cerr << where << ": " << what << "\n";
  std::exit(1);
}

std::string block_name(const Block& b) {
  if (!b.retired) return "chapter " + std::to_string(b.first);
  return "chapters " + std::to_string(b.first) + "-" + std::to_string(b.last);
}

// Recognises a marker line. Returns kNone for ordinary code, and fails on a line that
// mentions a marker token without being a well-formed marker.
Marker parse_marker(const std::string& line, const std::string& where, int last_chapter) {
  static const std::regex added(R"(^\s*//([<>]) chapter ([0-9]+)([:\s].*)?$)");
  static const std::regex retired(R"(^\s*(#if 0|#endif) //([<>]) chapters ([0-9]+)-([0-9]+)([:\s].*)?$)");
  Marker m;
  std::smatch g;
  if (std::regex_match(line, g, added)) {
    m.kind = g[1] == ">" ? Marker::kOpen : Marker::kClose;
    m.block = {std::stoi(g[2]), kForever, false, 0};
  } else if (std::regex_match(line, g, retired)) {
    bool opens = g[1] == "#if 0";
    if (opens != (g[2] == ">")) {
      fail(where, "a replaced block opens with \"#if 0 //>\" and closes with \"#endif //<\"");
    }
    m.kind = opens ? Marker::kOpen : Marker::kClose;
    m.block = {std::stoi(g[3]), std::stoi(g[4]), true, 0};
    if (m.block.last < m.block.first) {
      fail(where, "chapters " + g[3].str() + "-" + g[4].str() + " is an empty range");
    }
    if (m.block.last >= last_chapter) {
      fail(where, "code fenced as chapters " + g[3].str() + "-" + g[4].str() +
                      " would be compiled out of the final header; a replaced block must end"
                      " before the last chapter (" + std::to_string(last_chapter) + ")");
    }
  } else if (line.find("//>") != std::string::npos || line.find("//<") != std::string::npos) {
    fail(where, "unknown marker: \"" + line +
                    "\" (expected \"//> chapter N\", \"//< chapter N\", "
                    "\"#if 0 //> chapters A-B\" or \"#endif //< chapters A-B\")");
  } else {
    return m;
  }
  if (m.block.first < 1 || m.block.first > last_chapter) {
    fail(where, "unknown chapter " + std::to_string(m.block.first) + ": chapters are 1 to " +
                    std::to_string(last_chapter));
  }
  return m;
}

bool is_blank(const std::string& line) {
  return line.find_first_not_of(" \t\r") == std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: split-chapters HEADER CHAPTER LAST\n"
                 "writes chapter CHAPTER's snapshot of HEADER to standard output\n";
    return 2;
  }
  const std::string path = argv[1];
  const int chapter = std::atoi(argv[2]);
  const int last = std::atoi(argv[3]);
  if (last < 1 || chapter < 1 || chapter > last) {
    std::cerr << "split-chapters: CHAPTER must be between 1 and LAST (got " << argv[2] << " and "
              << argv[3] << ")\n";
    return 2;
  }
  std::ifstream in(path);
  if (!in) {
    std::cerr << "split-chapters: cannot read " << path << "\n";
    return 1;
  }

  std::ostringstream out;
  out << kBanner;
  std::vector<Block> open;
  int hidden_depth = 0;         // how many open blocks hide their contents at this chapter
  bool last_was_blank = false;  // the last line written was blank
  bool skipped_since = false;   // lines were dropped since that line
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string where = path + ":" + std::to_string(number);
    Marker m = parse_marker(line, where, last);
    m.block.line = number;
    if (m.kind == Marker::kOpen) {
      if (!open.empty()) {
        const Block& outer = open.back();
        if (m.block.first < outer.first) {
          fail(where, block_name(m.block) + " inside " + block_name(outer) + " (opened at line " +
                          std::to_string(outer.line) + ") could never appear before chapter " +
                          std::to_string(outer.first) + "; mark it chapter " +
                          std::to_string(outer.first) + " or later");
        }
        if (m.block.first > outer.last) {
          fail(where, block_name(m.block) + " inside " + block_name(outer) + " (opened at line " +
                          std::to_string(outer.line) + ") would never appear");
        }
      }
      open.push_back(m.block);
      if (chapter < m.block.first || chapter > m.block.last) ++hidden_depth;
      skipped_since = true;
      continue;
    }
    if (m.kind == Marker::kClose) {
      if (open.empty()) fail(where, "\"" + line + "\" closes a block that was never opened");
      const Block& top = open.back();
      if (top.first != m.block.first || top.last != m.block.last || top.retired != m.block.retired) {
        fail(where, "\"" + line + "\" does not match the innermost open block, " +
                        block_name(top) + " opened at line " + std::to_string(top.line));
      }
      if (chapter < top.first || chapter > top.last) --hidden_depth;
      open.pop_back();
      skipped_since = true;
      continue;
    }
    if (hidden_depth > 0) {
      skipped_since = true;
      continue;
    }
    const bool blank = is_blank(line);
    if (blank && last_was_blank && skipped_since) continue;
    out << line << "\n";
    last_was_blank = blank;
    skipped_since = false;
  }
  if (!open.empty()) {
    fail(path + ":" + std::to_string(open.back().line),
         block_name(open.back()) + " is never closed");
  }
  std::cout << out.str();
  return std::cout ? 0 : 1;
}
