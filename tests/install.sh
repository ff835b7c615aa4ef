#!/bin/sh
# `make install PREFIX=...` puts the header, without chapter markers, under PREFIX/include,
# the two programs under PREFIX/bin, their man pages, the systemd unit, the CMake package
# and keystonelight.pc under PREFIX/share; a program compiles against the installed copy
# alone, by hand, through pkg-config and through CMake's find_package, and a CMake project
# uses the repository through add_subdirectory; `make uninstall` removes exactly that.
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
check() {
  if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $1"; fi
}
make -s install PREFIX="$work/prefix" >/dev/null
installed="$work/prefix/include/keystonelight.hpp"
check "the header is installed under PREFIX/include, and is what make builds" \
  'cmp -s build/include/keystonelight.hpp "$installed"'
expected_files='./bin/keystonelight-check
./bin/keystonelight-server
./include/keystonelight.hpp
./share/cmake/keystonelight/keystonelightConfig.cmake
./share/cmake/keystonelight/keystonelightConfigVersion.cmake
./share/keystonelight/keystonelight.service
./share/man/man1/keystonelight-check.1
./share/man/man1/keystonelight-server.1
./share/pkgconfig/keystonelight.pc'
check "install put these files and nothing else" \
  '[ "$(cd "$work/prefix" && find . -type f | LC_ALL=C sort)" = "$expected_files" ]'
version=$(sed -n 's/^#define KEYSTONELIGHT_VERSION_STR "\(.*\)"$/\1/p' keystonelight.hpp)
for program in keystonelight-server keystonelight-check; do
  check "the installed $program runs and has the header's version" \
    '[ "$("$work/prefix/bin/$program" --version)" = "$program $version" ]'
  page="$work/prefix/share/man/man1/$program.1"
  check "$program.1 is for version $version" 'grep -q "^\.TH .*\"Keystonelight $version\"" "$page"'
  # Every flag the program's --help lists is described in its man page.
  missing=
  for flag in $("$work/prefix/bin/$program" --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
    grep -q -- "$(printf '%s' "$flag" | sed 's/-/\\\\-/g')" "$page" || missing="$missing $flag"
  done
  check "$program.1 describes every flag of --help (missing:$missing)" '[ -z "$missing" ]'
  if command -v man >/dev/null 2>&1; then
    check "$program.1 formats without a warning" \
      '[ -z "$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)" ]'
  fi
done
check "the installed unit starts the installed server" \
  'grep -qx "ExecStart=$work/prefix/bin/keystonelight-server .*" "$work/prefix/share/keystonelight/keystonelight.service"'
check "the installed header has no chapter marker line" \
  '! grep -nE "^[[:space:]]*(#if 0 |#endif )?//[<>] chapter" "$installed"'
check "the installed header says it is generated and where its source is" \
  'head -n 2 "$installed" | grep -q GENERATED &&
   head -n 2 "$installed" | grep -q "keystonelight.hpp in the Keystonelight"'
cat > "$work/use.cpp" <<'PROGRAM'
#include <keystonelight.hpp>

#include <iostream>
#include <memory>

int main() {
  keystonelight::Store memory;
  if (!memory.set("greeting", "hello").ok()) return 1;
  std::cout << memory.get("greeting").value_or("(nil)") << "\n";
  keystonelight::Options options;
  options.dir = "data";
  std::unique_ptr<keystonelight::Store> disk;
  if (!keystonelight::Store::open(options, &disk).ok()) return 1;
  return disk->set("k", "v").ok() && disk->get("k") == "v" ? 0 : 1;
}
PROGRAM
check "a program compiles against the installed header alone and runs" \
  '${CXX:-g++} -std=c++17 -Wall -Wextra -Werror -pthread -I"$work/prefix/include" \
       "$work/use.cpp" -o "$work/use" && (cd "$work" && ./use) | grep -qx hello'

# pkg-config, from the installed keystonelight.pc (relocatable: found from its own place).
if command -v pkg-config >/dev/null 2>&1; then
  check "pkg-config gives the installed version" \
    '[ "$(PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" pkg-config --modversion keystonelight)" = "$version" ]'
  check "a program builds with pkg-config --cflags --libs keystonelight and runs" \
    'flags=$(PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" pkg-config --cflags --libs keystonelight) &&
     ${CXX:-g++} -std=c++17 -Wall -Werror "$work/use.cpp" $flags -o "$work/use-pc" &&
     (cd "$work" && ./use-pc) | grep -qx hello'
else
  check "pkg-config is installed (apt-get install -y pkgconf)" false
fi

# CMake: find_package against the install, then add_subdirectory of this repository.
if command -v cmake >/dev/null 2>&1; then
  mkdir -p "$work/consumer"
  cp "$work/use.cpp" "$work/consumer/use.cpp"
  cat > "$work/consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.14)
project(consumer LANGUAGES CXX)
if(KL_SOURCE)
  add_subdirectory("${KL_SOURCE}" keystonelight)
elseif(KL_FETCH)
  include(FetchContent)
  FetchContent_Declare(keystonelight SOURCE_DIR "${KL_FETCH}")
  FetchContent_MakeAvailable(keystonelight)
else()
  find_package(keystonelight ${KL_VERSION} CONFIG REQUIRED)
endif()
add_executable(use use.cpp)
target_link_libraries(use PRIVATE keystonelight::keystonelight)
CMAKE
  consume() {  # consume NAME CMAKE-ARGS...: configures, builds and runs the consumer
    name=$1; shift
    cmake -S "$work/consumer" -B "$work/$name" "$@" > "$work/$name.log" 2>&1 &&
      cmake --build "$work/$name" >> "$work/$name.log" 2>&1 &&
      (cd "$work/$name" && ./use) | grep -qx hello
  }
  check "a CMake project builds with find_package(keystonelight $version CONFIG) against the install" \
    'consume found -DCMAKE_PREFIX_PATH="$work/prefix" -DKL_VERSION="$version"'
  check "the found target uses the installed header" \
    'grep -q -- "-I$work/prefix/include\|-isystem $work/prefix/include" "$work/found/CMakeFiles/use.dir/flags.make"'
  check "find_package refuses a version with another major number" \
    '! consume too-new -DCMAKE_PREFIX_PATH="$work/prefix" -DKL_VERSION=99.0'
  check "a CMake project builds with add_subdirectory of this repository" \
    'consume added -DKL_SOURCE="$(pwd)"'
  check "a CMake project builds with FetchContent of this repository" \
    'consume fetched -DKL_FETCH="$(pwd)"'
  check "add_subdirectory builds no program of ours and installs nothing for the parent" \
    '[ ! -e "$work/added/keystonelight/keystonelight-server" ] &&
     ! grep -q keystonelight.hpp "$work/added/keystonelight/cmake_install.cmake" 2>/dev/null'
  # This repository as the top-level CMake project installs what make install does.
  check "cmake --install of this repository installs the same files" \
    'cmake -S . -B "$work/cmake-build" -DCMAKE_INSTALL_PREFIX="$work/cmake-prefix" > "$work/cmake.log" 2>&1 &&
     cmake --build "$work/cmake-build" >> "$work/cmake.log" 2>&1 &&
     cmake --install "$work/cmake-build" >> "$work/cmake.log" 2>&1 &&
     [ "$(cd "$work/cmake-prefix" && find . -type f | LC_ALL=C sort)" = "$expected_files" ] &&
     cmp -s "$installed" "$work/cmake-prefix/include/keystonelight.hpp"'
else
  check "cmake is installed (apt-get install -y cmake)" false
fi

make -s install PREFIX=/usr DESTDIR="$work/stage" >/dev/null
check "DESTDIR stages the install below it" '[ -f "$work/stage/usr/include/keystonelight.hpp" ] &&
  [ -x "$work/stage/usr/bin/keystonelight-server" ]'
check "a staged unit names the final place, not the stage" \
  'grep -q "^ExecStart=/usr/bin/keystonelight-server " "$work/stage/usr/share/keystonelight/keystonelight.service"'
mkdir -p "$work/prefix/share/man/man1/other" && : > "$work/prefix/bin/someone-elses"
make -s uninstall PREFIX="$work/prefix" >/dev/null
check "uninstall removes the header" '[ ! -e "$installed" ]'
check "uninstall removes every file install put" \
  '[ "$(cd "$work/prefix" && find . -type f)" = "./bin/someone-elses" ]'
check "uninstall leaves the folders others may share" '[ -d "$work/prefix/include" ] &&
  [ -d "$work/prefix/share/man/man1/other" ] && [ -d "$work/prefix/share/pkgconfig" ]'
check "uninstall removes the folders only Keystonelight uses" \
  '[ ! -e "$work/prefix/share/keystonelight" ] && [ ! -e "$work/prefix/share/cmake/keystonelight" ]'
echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
