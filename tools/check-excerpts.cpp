// check-excerpts CHAPTER_DIR...: every code excerpt of a chapter's README is still code of
// that chapter, so that no README can quote what the code no longer says.
//
//   ```cpp              must be a part of the chapter's keystonelight.hpp (its snapshot),
//                       example.cpp or test.cpp
//   ```diff             must be a part of the chapter's CHANGES.diff
//   ```cpp illustration not checked: code written for the text, not taken from the files
//
// "A part" means: the block's lines appear, in order and one after the other, in one of
// those files. Inside a block, a line holding only an elision mark (`...`, `…`, or the same
// after `//`) stands for lines left out: the pieces around it must still come in order in
// the same file. In a diff block a hunk header (`@@ ... @@`) counts as an elision, since
// its line numbers move whenever an earlier chapter grows. Blank lines, and whitespace at
// either end of a line, are not compared (a README may indent or space code for reading).
//
// Prints each stale block with the README line it starts on and the first line that is
// not found where it should be, then "excerpts: P passed, F failed" (one count per block);
// exits 1 when a block is stale or a fence is unknown, 2 on a usage or file error.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using Lines = std::vector<std::string>;

std::string trim(const std::string& s) {
  const std::size_t begin = s.find_first_not_of(" \t\r");
  if (begin == std::string::npos) return std::string();
  return s.substr(begin, s.find_last_not_of(" \t\r") - begin + 1);
}

bool read_lines(const std::string& path, Lines* lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::string line;
  while (std::getline(in, line)) lines->push_back(line);
  return true;
}

// The compared form of a file: trimmed lines, blank ones dropped.
Lines comparable(const Lines& lines) {
  Lines out;
  for (const std::string& line : lines) {
    std::string t = trim(line);
    if (!t.empty()) out.push_back(std::move(t));
  }
  return out;
}

bool is_elision(const std::string& trimmed, bool diff) {
  std::string t = trimmed;
  if (diff && t.rfind("@@", 0) == 0) return true;
  if (diff && !t.empty() && (t[0] == ' ' || t[0] == '+' || t[0] == '-')) t = trim(t.substr(1));
  if (t.rfind("//", 0) == 0) t = trim(t.substr(2));
  return t == "..." || t == "\xE2\x80\xA6";  // ... or the ellipsis character
}

// Splits a block into its pieces: runs of compared lines between elision marks.
std::vector<Lines> pieces_of(const Lines& block, bool diff) {
  std::vector<Lines> pieces(1);
  for (const std::string& line : block) {
    const std::string t = trim(line);
    if (is_elision(t, diff)) {
      if (!pieces.back().empty()) pieces.emplace_back();
    } else if (!t.empty()) {
      pieces.back().push_back(t);
    }
  }
  if (pieces.back().empty()) pieces.pop_back();
  return pieces;
}

// Where `piece` starts in `file` at or after `from`, or npos.
std::size_t find_piece(const Lines& file, const Lines& piece, std::size_t from) {
  for (std::size_t i = from; i + piece.size() <= file.size(); ++i) {
    std::size_t n = 0;
    while (n < piece.size() && file[i + n] == piece[n]) ++n;
    if (n == piece.size()) return i;
  }
  return std::string::npos;
}

// Whether every piece is found in `file`, each after the one before it. When not, *missing
// is the first line of the piece that could not be placed.
bool contains(const Lines& file, const std::vector<Lines>& pieces, std::string* missing) {
  std::size_t from = 0;
  for (const Lines& piece : pieces) {
    const std::size_t at = find_piece(file, piece, from);
    if (at == std::string::npos) {
      *missing = piece.front();
      return false;
    }
    from = at + piece.size();
  }
  return true;
}

struct Source {
  std::string name;
  Lines lines;  // comparable form
};

struct Counts {
  int passed = 0;
  int failed = 0;
};

// Checks the blocks of one chapter's README. False on a file that cannot be read.
bool check_chapter(const std::string& dir, Counts* counts) {
  Lines readme;
  if (!read_lines(dir + "/README.md", &readme)) {
    std::fprintf(stderr, "check-excerpts: cannot read %s/README.md: give a chapter folder\n",
                 dir.c_str());
    return false;
  }
  std::vector<Source> code, diff;
  for (const char* name : {"keystonelight.hpp", "example.cpp", "test.cpp"}) {
    Lines lines;
    if (read_lines(dir + "/" + name, &lines)) code.push_back({name, comparable(lines)});
  }
  Lines changes;
  if (read_lines(dir + "/CHANGES.diff", &changes)) diff.push_back({"CHANGES.diff", comparable(changes)});
  if (code.empty()) {
    std::fprintf(stderr, "check-excerpts: %s has no keystonelight.hpp, example.cpp or test.cpp\n",
                 dir.c_str());
    return false;
  }

  for (std::size_t i = 0; i < readme.size(); ++i) {
    const std::string fence = trim(readme[i]);
    if (fence.rfind("```", 0) != 0 || fence == "```") continue;
    const std::string info = trim(fence.substr(3));
    std::size_t end = i + 1;
    while (end < readme.size() && trim(readme[end]).rfind("```", 0) != 0) ++end;
    const Lines block(readme.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                      readme.begin() + static_cast<std::ptrdiff_t>(end));
    const std::size_t start_line = i + 1;
    i = end;  // the closing fence
    const bool is_cpp = info == "cpp" || info == "c++";
    const bool is_diff = info == "diff";
    if (info.rfind("cpp ", 0) == 0 || info.rfind("c++ ", 0) == 0) {
      if (trim(info.substr(4)) == "illustration") continue;
      std::printf("%s/README.md:%zu: unknown fence '```%s': write ```cpp for code of the "
                  "chapter's files, or ```cpp illustration for code written for the text\n",
                  dir.c_str(), start_line, info.c_str());
      ++counts->failed;
      continue;
    }
    if (!is_cpp && !is_diff) continue;  // text, shell, pictures: not code of the chapter
    const std::vector<Lines> pieces = pieces_of(block, is_diff);
    if (pieces.empty()) continue;
    const std::vector<Source>& sources = is_diff ? diff : code;
    bool found = false;
    std::string missing, first_missing;
    for (const Source& source : sources) {
      if (contains(source.lines, pieces, &missing)) {
        found = true;
        break;
      }
      if (first_missing.empty()) first_missing = missing;
    }
    if (found) {
      ++counts->passed;
      continue;
    }
    ++counts->failed;
    std::printf("%s/README.md:%zu: stale %s excerpt: '%.100s' is not where the excerpt puts it "
                "in %s. Quote the code as it is now (a line '...' may stand for lines left "
                "out), or mark a block written for the text ```cpp illustration\n",
                dir.c_str(), start_line, is_diff ? "diff" : "cpp",
                first_missing.empty() ? pieces.front().front().c_str() : first_missing.c_str(),
                is_diff ? "CHANGES.diff" : "keystonelight.hpp, example.cpp or test.cpp");
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: check-excerpts CHAPTER_DIR...\n");
    return 2;
  }
  Counts counts;
  for (int i = 1; i < argc; ++i) {
    if (!check_chapter(argv[i], &counts)) return 2;
  }
  std::printf("excerpts: %d passed, %d failed\n", counts.passed, counts.failed);
  return counts.failed == 0 ? 0 : 1;
}
