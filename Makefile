# Keystonelight: one header, a tutorial in chapters, and the programs and tests around them.
#
#   make                 build the examples and every chapter's example
#   make run             build and start the main program
#   make test            build and run every test (installs doctest-dev when it can)
#   make chapters        regenerate chapters/*/keystonelight.hpp and CHANGES.diff
#   make check-chapters  regenerate, and fail if git sees a difference (CI runs this)
#   make check-excerpts  fail if a chapter README quotes code its chapter no longer has,
#                        misses a test, or links a section or chapter that is not there
#   make learn CHAPTER=N write chapter N yourself: learn/NN-name/ gets chapter N-1's header
#                        (yours to change), the tests of chapters 1 to N and a Makefile
#                        whose `make check` says how many pass in each chapter
#   make sanitize        every test, against the final header, under AddressSanitizer and UBSan
#   make tsan            every test, against the final header, under ThreadSanitizer
#   make check-clang     compile every test and program with clang too (warnings as errors)
#   make bench           keystonelight-server beside redis-server and a null server: throughput,
#                        latency, CPU per request, fsync, connections, memory, start;
#                        writes BENCHMARKS.md and bench/benchmarks.svg
#   make fuzz            run every libFuzzer target (parser, recovery, log reader,
#                        dispatcher) for FUZZ_SECONDS (60) each
#   make torture         kill -9 the server TORTURE_TRIALS (210) times under writers; check the data
#   make soak            SECONDS (60) of mixed load; the server's memory, threads, fds must not grow
#   make install         install build/include/keystonelight.hpp (the header without the
#                        chapter markers) as $(DESTDIR)$(PREFIX)/include/keystonelight.hpp
#   make uninstall       remove it again
#   make clean           remove build/

# Every build uses every core unless told otherwise (make -jN; -j1 for one at a time):
# CI and the README run plain `make test`, and the builds are most of its time.
ifeq ($(filter -j%,$(MAKEFLAGS)),)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
endif

CXX      ?= g++
# -g1: line tables, enough for every stack trace a sanitizer or a crash prints, at about
# two thirds of -g's compile time; for a debugger's view of variables, OPT="-O0 -g".
OPT      ?= -O1 -g1
WARNINGS := -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Werror
SANITIZE ?=
CXXFLAGS ?=
FLAGS    := -std=c++17 $(OPT) $(WARNINGS) $(SANITIZE) -pthread $(CXXFLAGS)
BUILD    ?= build
PREFIX   ?= /usr/local
DESTDIR  ?=

HEADER   := keystonelight.hpp
SPLITTER := build/tools/split-chapters
EXCERPTS := build/tools/check-excerpts

# The chapters are the folders chapters/NN-name, in order; chapter N is the Nth of them.
CHAPTERS := $(sort $(patsubst chapters/%/,%,$(wildcard chapters/[0-9][0-9]-*/)))
LAST     := $(words $(CHAPTERS))
NUMBERS  := $(shell seq 1 $(LAST))
number    = $(patsubst 0%,%,$(firstword $(subst -, ,$(1))))
SNAPSHOTS := $(foreach c,$(CHAPTERS),chapters/$(c)/keystonelight.hpp)
DIFFS     := $(foreach c,$(CHAPTERS),chapters/$(c)/CHANGES.diff)

# `make run` starts the server program on its defaults: 127.0.0.1:6380, data in ./data.
# Flags go in RUN_ARGS: make run RUN_ARGS="--port 7000 --fsync always".
RUN_PROGRAM := $(BUILD)/bin/keystonelight-server
RUN_ARGS    ?=

.PHONY: all run learn test check chapters check-chapters check-excerpts check-clang sanitize tsan fuzz fuzz-tools install uninstall clean \
        doctest redis-tools packaging-tools bench torture soak

PROGRAMS := $(patsubst examples/%.cpp,$(BUILD)/bin/%,$(wildcard examples/*.cpp))

# The header users copy or install: the final stage, every chapter marker dropped.
INSTALLED := $(BUILD)/include/keystonelight.hpp

all: $(PROGRAMS) $(foreach c,$(CHAPTERS),$(BUILD)/chapters/$(c)/example) $(INSTALLED)

# Programs for users: examples/NAME.cpp becomes $(BUILD)/bin/NAME.
$(BUILD)/bin/%: examples/%.cpp $(HEADER)
	@mkdir -p $(@D)
	$(CXX) $(FLAGS) -I. $< -o $@

run: $(RUN_PROGRAM)
	$(RUN_PROGRAM) $(RUN_ARGS)

# ---------------------------------------------------------------------------------------
# Chapter snapshots: generated from the one header, never edited by hand.
# ---------------------------------------------------------------------------------------

$(SPLITTER): tools/split-chapters.cpp
	@mkdir -p $(@D)
	$(CXX) -std=c++17 -O1 $(WARNINGS) $< -o $@

chapters: $(SNAPSHOTS) $(DIFFS)

# Every ```cpp and ```diff block of a chapter README is still code of that chapter (see
# tools/check-excerpts.cpp); make test runs it, and tests/check-excerpts/run.sh checks
# that it catches a stale excerpt. tools/check-chapter-readmes.sh checks the rest of what
# a reader relies on: the "Before you start" and "Build it yourself" sections, a line in
# "What the tests prove" for every TEST_CASE, a hint and a worked answer for every
# exercise, links to sections that exist, and links to the previous and next chapter's
# folders as they are numbered now.
$(EXCERPTS): tools/check-excerpts.cpp
	@mkdir -p $(@D)
	$(CXX) -std=c++17 -O1 $(WARNINGS) $< -o $@

check-excerpts: chapters $(EXCERPTS)
	@$(EXCERPTS) $(foreach c,$(CHAPTERS),chapters/$(c))
	@sh tools/check-chapter-readmes.sh $(foreach c,$(CHAPTERS),chapters/$(c))

# Moves $(1).tmp over $(1) only when their contents differ. A fresh clone gives files
# arbitrary times, so a snapshot may look older than keystonelight.hpp: its rule then runs,
# and must leave an unchanged file alone (make re-reads its time, so nothing that depends
# on it is rebuilt). The price is that such a rule runs, quietly, on every make.
replace_if_changed = if cmp -s $(1).tmp $(1); then rm -f $(1).tmp; \
    else mv $(1).tmp $(1) && echo "wrote $(1)"; fi

# The folder names must be numbered 01, 02, ... with no gap, or chapter N would not be
# the folder its markers name.
define chapter_rules
ifneq ($(call number,$(1)),$(2))
$$(error chapters/$(1) is chapter $(2) in order but numbered $(call number,$(1)): renumber the folders)
endif
chapters/$(1)/keystonelight.hpp: $(HEADER) $(SPLITTER)
	@$(SPLITTER) $(HEADER) $(2) $(LAST) > $$@.tmp && $$(call replace_if_changed,$$@)

# CHANGES.diff applies with `patch -p1` inside the previous chapter's folder.
chapters/$(1)/CHANGES.diff: chapters/$(1)/keystonelight.hpp $(3)
	@diff -u --label a/keystonelight.hpp --label b/keystonelight.hpp \
	    $(or $(3),/dev/null) $$< > $$@.tmp; [ $$$$? -le 1 ] && $$(call replace_if_changed,$$@)

$(BUILD)/chapters/$(1)/example: chapters/$(1)/example.cpp chapters/$(1)/keystonelight.hpp
	@mkdir -p $$(@D)
	$(CXX) $(FLAGS) $$< -o $$@
endef
$(foreach n,$(NUMBERS),$(eval $(call chapter_rules,$(word $(n),$(CHAPTERS)),$(n),$(if $(filter 1,$(n)),,chapters/$(word $(shell expr $(n) - 1),$(CHAPTERS))/keystonelight.hpp))))

# ---------------------------------------------------------------------------------------
# The learner's track: make learn CHAPTER=N prepares learn/NN-name/ (tools/learn/), where
# keystonelight.hpp starts as chapter N-1 left it and `make check` runs the tests of
# chapters 1 to N against it. A header already there is the learner's and is kept.
# LEARN_DIR puts the folder elsewhere; LEARN_HEADER copies a header in (make test does,
# with each chapter's snapshot).
# ---------------------------------------------------------------------------------------
CHAPTER    ?=
LEARN_DIR  ?=
LEARN_HEADER ?=
learn: doctest
	@sh tools/learn/prepare.sh "$(CHAPTER)" "$(LEARN_DIR)" "$(LEARN_HEADER)"

check-chapters: chapters
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  stale=$$(git status --porcelain -- chapters); \
	  if [ -n "$$stale" ]; then \
	    echo "error: the chapter snapshots are not what keystonelight.hpp generates:"; \
	    echo "$$stale"; git --no-pager diff --stat -- chapters; \
	    echo "Review 'git diff chapters', then commit the regenerated files."; \
	    exit 1; \
	  fi; \
	  echo "check-chapters: $(LAST) snapshots match keystonelight.hpp"; \
	else \
	  echo "check-chapters: not a git checkout; snapshots regenerated, nothing to compare"; \
	fi

# ---------------------------------------------------------------------------------------
# Tests. Chapter K's test.cpp is cumulative: it is compiled against chapter K's snapshot,
# every later snapshot, and the final header. Each build includes the header under test
# first with -include; the test's own #include "keystonelight.hpp" then finds the include
# guard already defined and adds nothing. A suite named "up to chapter NN" holds a truth of
# the early stages only and is skipped when testing a later chapter.
# ---------------------------------------------------------------------------------------

doctest:
	@sh tools/ensure-package.sh doctest-dev \
	    sh -c 'echo "#include <doctest/doctest.h>" | $(CXX) -std=c++17 -E -x c++ - -o /dev/null'

$(BUILD)/obj/doctest_main.o: tests/doctest_main.cpp | doctest
	@mkdir -p $(@D)
	$(CXX) $(FLAGS) -c $< -o $@

# The test helpers every suite may include; a change to one rebuilds every suite, or two
# suites in one binary could disagree about a helper's layout.
SUPPORT := $(wildcard tests/support/*.hpp)

# $(1) names the header under test ("final" or a chapter), $(2) is its path, $(3) the
# chapters whose tests run against it, $(4) extra test sources, $(5) excluded suites,
# $(6) the compiler flags.
define test_binary
$(BUILD)/obj/$(1)/second_tu.o: tests/second_tu.cpp $(2) | doctest
	@mkdir -p $$(@D)
	$(CXX) $(6) -I. -include $(2) -c $$< -o $$@
$(foreach k,$(3),
$(BUILD)/obj/$(1)/$(k).o: chapters/$(k)/test.cpp $(2) $(SUPPORT) | doctest
	@mkdir -p $$(@D)
	$(CXX) $(6) -I. -include $(2) -c $$< -o $$@
)
$(foreach t,$(4),
$(BUILD)/obj/$(1)/$(notdir $(t:.cpp=.o)): $(t) $(2) $(SUPPORT) | doctest
	@mkdir -p $$(@D)
	$(CXX) $(6) -I. -include $(2) -c $$< -o $$@
)
$(BUILD)/tests/$(1): $(BUILD)/obj/doctest_main.o $(BUILD)/obj/$(1)/second_tu.o \
    $(foreach k,$(3),$(BUILD)/obj/$(1)/$(k).o) $(foreach t,$(4),$(BUILD)/obj/$(1)/$(notdir $(t:.cpp=.o)))
	@mkdir -p $$(@D)
	$(CXX) $(6) $$^ -o $$@
TEST_BINARIES += $(BUILD)/tests/$(1)
TEST_RUNS += "$(1)" "$(BUILD)/tests/$(1) $(if $(5),'--test-suite-exclude=$(5)')"
endef
# The doctest filter that skips the "up to chapter N:" suites of the given chapters; "?"
# stands for the spaces, which would otherwise split the comma-separated list.
comma := ,
space := $(subst ,, )
up_to_list = $(subst $(space),$(comma),$(strip $(foreach c,$(1),up?to?chapter?$(call number,$(c)):*)))
# FINAL_ONLY=1 builds the final header's binary alone: the sanitizer builds use it, since
# the snapshots differ from the final header only in code that it compiles out, and the
# plain build tests each snapshot as printed.
FINAL_ONLY ?=
# The snapshots' test binaries are built without debug information (-g1), which saves
# compile time and costs nothing at run time; the final header's keeps it, and so does
# every sanitizer build: a failure is debugged there, or with OPT="-O0 -g".
SNAPSHOT_FLAGS := $(filter-out -g -g1,$(FLAGS))
# Each snapshot's tests run through the learner's track (tools/learn/): $(BUILD)/learn/NN-name
# is what `make learn CHAPTER=N` prepares, with chapter N's snapshot as the header, and its
# `make check` builds and runs the tests of chapters 1 to N as a learner's does, one line
# per chapter. So every make test checks that the track passes with the book's code, at no
# cost beyond the snapshots' tests. The other half, that it fails before the learner writes
# anything, costs one compile a chapter: in $(BUILD)/learn-before/NN-name, chapter N's own
# test.cpp alone against the header chapter N-1 left must fail (tools/learn/check-before.sh).
# The builds run with the rest (learn-build-*, in parallel); the runs with the other tests.
LEARN_ARGS = CXX='$(CXX)' FLAGS='$(SNAPSHOT_FLAGS)' DOCTEST_MAIN='$(abspath $(BUILD)/obj/doctest_main.o)'
define learn_tests
.PHONY: learn-build-$(1) learn-before-$(1)
learn-build-$(1): $(BUILD)/obj/doctest_main.o chapters/$(1)/keystonelight.hpp | doctest
	@sh tools/learn/prepare.sh $(2) $(BUILD)/learn/$(1) chapters/$(1)/keystonelight.hpp
	+@$(MAKE) -k -s --no-print-directory -C $(BUILD)/learn/$(1) build $(LEARN_ARGS) || true
learn-before-$(1): $(BUILD)/obj/doctest_main.o $(SNAPSHOTS) | doctest
	@sh tools/learn/prepare.sh $(2) $(BUILD)/learn-before/$(1) -
	+@$(MAKE) -k -s --no-print-directory -C $(BUILD)/learn-before/$(1) build ONLY=$(1) $(LEARN_ARGS) || true
LEARN_BUILDS += learn-build-$(1) learn-before-$(1)
TEST_RUNS += "$(1)" "$(MAKE) -s --no-print-directory -C $(BUILD)/learn/$(1) check $(LEARN_ARGS)"
TEST_RUNS += "$(1), before" "sh tools/learn/check-before.sh $(BUILD)/learn-before/$(1) $(1) $(LEARN_ARGS)"
endef
$(if $(FINAL_ONLY),,$(foreach n,$(NUMBERS),$(eval $(call learn_tests,$(word $(n),$(CHAPTERS)),$(n)))))
$(eval $(call test_binary,final,$(HEADER),$(CHAPTERS),$(wildcard tests/*_test.cpp),$(call up_to_list,$(CHAPTERS)),$(FLAGS)))
# From chapter 14 the server has two I/O models, the event loop by default: the final
# header's server suites run once more with thread per connection (tests/support/server_io.hpp).
TEST_RUNS += "final, io threads" "KEYSTONELIGHT_TEST_IO=threads $(BUILD)/tests/final '--test-suite=chapter?8:*,chapter?14:*'"

# Scripts in tests/ that drive the programs: tests/NAME.sh runs with the build folder.
SCRIPT_RUNS := $(foreach t,$(wildcard tests/programs/*.sh),"$(notdir $(t:.sh=))" "sh $(t) $(BUILD)")

EXAMPLE_RUNS := $(foreach c,$(CHAPTERS),$(if $(wildcard chapters/$(c)/example.in),\
    "example $(c)" "sh tools/check-example.sh $(BUILD)/chapters/$(c)/example chapters/$(c)/example.in chapters/$(c)/example.out"))

# The torture of `make torture`, small (6 kill trials, 2 per fsync policy, about 5 s),
# multi-key DEL and MSET included: since chapter 11 each is one batch record.
TORTURE := $(BUILD)/tests/torture
TORTURE_SMALL := "$(TORTURE) $(BUILD)/bin/keystonelight-server --trials 6 --ms 100,400 --ballast 20000"
# The same against the server's other I/O model, thread per connection (chapter 14).
TORTURE_THREADS := "$(TORTURE) $(BUILD)/bin/keystonelight-server --trials 6 --ms 100,400 --ballast 20000 --io threads"

# Runs what is built; `test`, `sanitize` and `tsan` differ in the flags and what they add.
check: $(TEST_BINARIES) $(LEARN_BUILDS) all $(TORTURE)
	+@sh tools/run-tests.sh tests $(TEST_RUNS) $(EXAMPLE_RUNS) $(SCRIPT_RUNS) $(EXTRA_RUNS)

# redis-cli and redis-benchmark, for the interoperability tests: installed when possible;
# without them those tests say they were skipped (CI installs them, so it never skips).
redis-tools:
	@sh tools/ensure-package.sh redis-tools sh -c 'command -v redis-benchmark' || \
	    echo "note: the tests that drive redis-cli and redis-benchmark will be skipped"

# cmake and pkg-config, for the test that builds a consumer of the installed header each
# way (tests/install.sh); it counts a failure when they are missing.
packaging-tools:
	@sh tools/ensure-package.sh cmake sh -c 'command -v cmake' || true
	@sh tools/ensure-package.sh pkgconf sh -c 'command -v pkg-config' || true


# redis-py and Django's cache through django-redis (tests/interop/python.sh) run as any
# other check; without their packages they say they were skipped.
test: doctest redis-tools packaging-tools chapters $(SPLITTER) $(EXCERPTS) $(TORTURE)
	@$(MAKE) --no-print-directory check EXTRA_RUNS='"split-chapters" "sh tests/split-chapters/run.sh $(SPLITTER)" "excerpts" "$(EXCERPTS) $(foreach c,$(CHAPTERS),chapters/$(c))" "check-excerpts" "sh tests/check-excerpts/run.sh $(EXCERPTS)" "chapter-readmes" "sh tools/check-chapter-readmes.sh $(foreach c,$(CHAPTERS),chapters/$(c))" "check-chapter-readmes" "sh tests/check-chapter-readmes/run.sh" "install" "sh tests/install.sh" "check-chapters" "sh tests/check-chapters.sh" "README" "sh tools/check-readme.sh $(CXX)" "torture" $(TORTURE_SMALL) "torture, io threads" $(TORTURE_THREADS) "python-interop" "bash tests/interop/python.sh $(BUILD)/bin/keystonelight-server"'

sanitize: doctest redis-tools chapters
	@$(MAKE) --no-print-directory check BUILD=build/asan FINAL_ONLY=1 \
	    SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	    EXTRA_RUNS='"torture" $$(TORTURE_SMALL) "torture, io threads" $$(TORTURE_THREADS)'

tsan: doctest redis-tools chapters
	@$(MAKE) --no-print-directory check BUILD=build/tsan FINAL_ONLY=1 SANITIZE="-fsanitize=thread" \
	    EXTRA_RUNS='"torture" $$(TORTURE_SMALL) "torture, io threads" $$(TORTURE_THREADS)'

# A second compiler reads the code differently: clang's -Wconversion also flags sign
# conversions that GCC lets pass. Every test and program is checked against the final
# header (syntax and warnings only, so it costs seconds). Skipped where clang is absent.
CLANG ?= clang++
check-clang: doctest
	@if ! command -v $(CLANG) >/dev/null 2>&1; then \
	  echo "check-clang: $(CLANG) not found; skipped (apt-get install clang to run it)"; exit 0; fi; \
	for f in $(foreach c,$(CHAPTERS),chapters/$(c)/test.cpp chapters/$(c)/example.cpp) \
	         $(wildcard tests/*_test.cpp examples/*.cpp) \
	         $(filter-out bench/embedded.cpp,$(wildcard bench/*.cpp)); do \
	  $(CLANG) -std=c++17 $(WARNINGS) -pthread -I. -include $(HEADER) -fsyntax-only $$f || exit 1; \
	done; echo "check-clang: every test and program compiles cleanly with $(CLANG)"

# Fuzzing with libFuzzer (clang), under ASan and UBSan: each target in FUZZ_TARGETS runs
# for FUZZ_SECONDS (60), one after the other. tests/fuzz/NAME_fuzz.cpp is a target; its
# seeds are in FUZZ_SEEDS_NAME, and what a run finds is kept in build/fuzz/corpus-NAME for
# the next run (see fuzz_corpus). A failing input is saved as build/fuzz/NAME-crash-* (or -timeout-*, -oom-*)
# and the message says how to replay it. Each run ends with "fuzz: N passed, F failed".
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := parser recovery log_reader dispatcher
FUZZ_FLAGS := -std=c++17 -g -O1 $(WARNINGS) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -pthread
# Per target: its seeds, its largest input, and its build flags. The dispatcher's target
# lowers the record limits so that small inputs reach them. -timeout catches a run that
# goes quadratic: 10 s for one input of at most 64 KiB is far past any linear cost.
FUZZ_SEEDS_parser := tests/fuzz/corpus
FUZZ_SEEDS_recovery := tests/fuzz/corpus-recovery
FUZZ_SEEDS_log_reader := tests/fuzz/corpus-recovery
FUZZ_SEEDS_dispatcher := tests/fuzz/corpus-dispatcher
FUZZ_MAX_LEN_parser := 4096
FUZZ_MAX_LEN_recovery := 65536
FUZZ_MAX_LEN_log_reader := 65536
FUZZ_MAX_LEN_dispatcher := 8192
FUZZ_DEFINES_dispatcher := -DKEYSTONELIGHT_MAX_KEY_BYTES=64 -DKEYSTONELIGHT_MAX_VALUE_BYTES=512
FUZZ_TIMEOUT ?= 10
# Inputs that once took far too long (tests/fuzz/slow/slow-*): before it fuzzes, a target
# named here replays them, and fails if one takes more than FUZZ_SLOW_MS. They are kept
# out of the seeds: a 64 KiB seed would make every mutation 64 KiB long, and the run crawl.
FUZZ_SLOW_TARGETS := recovery log_reader
FUZZ_SLOW_MS ?= 500
FUZZ_SLOW_INPUTS := $(wildcard tests/fuzz/slow/slow-*)
# Where a run keeps what it found: build/fuzz/corpus-NAME, but the parser's keeps the
# folder chapter 6's README names.
fuzz_corpus = $(if $(filter parser,$(1)),build/fuzz/corpus,build/fuzz/corpus-$(1))
fuzz-tools:
	@sh tools/ensure-package.sh clang sh -c 'command -v $(CLANG)'
	@sh tools/ensure-package.sh libclang-rt-14-dev \
	    sh -c 'echo "extern \"C\" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }" \
	           | $(CLANG) -x c++ -fsanitize=fuzzer - -o /dev/null'

build/fuzz/%_fuzz: tests/fuzz/%_fuzz.cpp $(HEADER) $(wildcard tests/fuzz/*.hpp) | fuzz-tools
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_FLAGS) $(FUZZ_DEFINES_$*) -I. $< -o $@

# One target's run, as shell text ending in ";": it counts in $$passed and $$failed. On
# failure it shows the report from the property or sanitizer message on, and the replay
# command for each input the run saved.
define fuzz_one
mkdir -p $(call fuzz_corpus,$(1)); echo "fuzz: $(1) for $(FUZZ_SECONDS) s"; \
touch build/fuzz/$(1).log.start; : > build/fuzz/$(1).log; \
slow=0; $(if $(and $(filter $(1),$(FUZZ_SLOW_TARGETS)),$(FUZZ_SLOW_INPUTS)),sh tests/fuzz/replay-slow.sh \
    build/fuzz/$(1)_fuzz $(FUZZ_SLOW_MS) $(FUZZ_SLOW_INPUTS) >> build/fuzz/$(1).log 2>&1 || slow=1;) \
if build/fuzz/$(1)_fuzz -max_total_time=$(FUZZ_SECONDS) -timeout=$(FUZZ_TIMEOUT) \
    -max_len=$(FUZZ_MAX_LEN_$(1)) -print_final_stats=1 -artifact_prefix=build/fuzz/$(1)- \
    $(call fuzz_corpus,$(1)) $(FUZZ_SEEDS_$(1)) >> build/fuzz/$(1).log 2>&1 && [ $$slow -eq 0 ]; then \
  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
      build/fuzz/$(1).log; passed=$$((passed + 1)); \
else \
  grep -E '^#[0-9]+[[:space:]]+DONE|^slow input .* (took|failed)' build/fuzz/$(1).log; \
  sed -n '/^property broken\|ERROR: \|^==[0-9]*==ERROR\|^ALARM\|out-of-memory/,$$p' build/fuzz/$(1).log | head -n 30; \
  failed=$$((failed + 1)); echo "fuzz: $(1) failed (whole log: build/fuzz/$(1).log)"; \
  find build/fuzz -maxdepth 1 -name '$(1)-*' -newer build/fuzz/$(1).log.start | \
    sed 's|^|  replay: make build/fuzz/$(1)_fuzz \&\& build/fuzz/$(1)_fuzz |'; \
fi;
endef

fuzz: $(foreach t,$(FUZZ_TARGETS),build/fuzz/$(t)_fuzz)
	@passed=0; failed=0; \
	$(foreach t,$(FUZZ_TARGETS),$(call fuzz_one,$(t))) \
	echo "fuzz: $$passed passed, $$failed failed"; [ $$failed -eq 0 ]

# ---------------------------------------------------------------------------------------
# Torture and soak (tests/torture/torture.cpp), the server program attacked from outside.
# make torture: TORTURE_TRIALS kill -9 trials (default 210) spread over the three fsync
# policies, each checking every acknowledged write after the restart. make soak: SECONDS
# (default 60) of mixed load, checking that the server's memory, threads and descriptors
# do not grow. Neither is part of CI except the small torture that `make test` runs.
# ---------------------------------------------------------------------------------------

TORTURE_TRIALS ?= 210
SECONDS ?= 60

$(TORTURE): tests/torture/torture.cpp $(HEADER)
	@mkdir -p $(@D)
	$(CXX) $(FLAGS) -I. $< -o $@

torture: $(TORTURE) $(BUILD)/bin/keystonelight-server
	@$(TORTURE) $(BUILD)/bin/keystonelight-server --trials $(TORTURE_TRIALS)

soak: $(TORTURE) $(BUILD)/bin/keystonelight-server
	@$(TORTURE) $(BUILD)/bin/keystonelight-server --soak $(SECONDS)

# ---------------------------------------------------------------------------------------
# Benchmarks: figures, never pass/fail. Optimized programs in build/bench, measured beside
# redis-server in the same run (installed when missing, as the tests' packages are).
# ---------------------------------------------------------------------------------------

# The null server and the many-connections client (bench/*.cpp) are built beside the
# server; the figures go to BENCHMARKS.md and the chart to bench/benchmarks.svg, which
# nothing else writes. BENCH_RUNS, BENCH_REQUESTS and the rest size the run (bench/server.sh).
# bench/embedded.cpp (the embedded Store beside LevelDB) needs libleveldb-dev; without it
# that table is left out.
BENCH_PROGRAMS := $(BUILD)/bin/null-server $(BUILD)/bin/connections

$(BENCH_PROGRAMS): $(BUILD)/bin/%: bench/%.cpp
	@mkdir -p $(@D)
	$(CXX) $(FLAGS) $< -o $@

$(BUILD)/bin/embedded: bench/embedded.cpp $(HEADER)
	@mkdir -p $(@D)
	$(CXX) $(FLAGS) -I. $< -o $@ -lleveldb

bench:
	@sh tools/ensure-package.sh redis-server sh -c 'command -v redis-server'
	@sh tools/ensure-package.sh redis-tools sh -c 'command -v redis-benchmark'
	@$(MAKE) --no-print-directory BUILD=build/bench OPT="-O2 -DNDEBUG" build/bench/bin/keystonelight-server \
	    build/bench/bin/null-server build/bench/bin/connections
	@if sh tools/ensure-package.sh libleveldb-dev \
	     sh -c 'echo "#include <leveldb/db.h>" | $(CXX) -std=c++17 -E -x c++ - -o /dev/null'; then \
	  $(MAKE) --no-print-directory BUILD=build/bench OPT="-O2 -DNDEBUG" build/bench/bin/embedded; \
	else rm -f build/bench/bin/embedded; echo "note: without libleveldb-dev, no embedded benchmark"; fi
	@BENCH_CXX="$(CXX)" sh bench/server.sh build/bench BENCHMARKS.md bench/benchmarks.svg

# ---------------------------------------------------------------------------------------
# Installing the header
# ---------------------------------------------------------------------------------------

# keystonelight.hpp at the top is the annotated source; what is installed is the final
# stage without a marker line (the "chapters A-B" blocks, compiled out, dropped whole),
# under a banner that says where its source is.
$(INSTALLED): $(HEADER) $(SPLITTER)
	@mkdir -p $(@D)
	$(SPLITTER) $(HEADER) $(LAST) $(LAST) --installed > $@.tmp && mv $@.tmp $@

# make install puts under $(DESTDIR)$(PREFIX): that header; the two programs, built with
# -O2 in build/release; their man pages; the systemd unit (its ExecStart naming
# PREFIX/bin) under share/keystonelight; the CMake package (find_package(keystonelight
# CONFIG)) and keystonelight.pc, both from the templates in cmake/ that CMakeLists.txt
# fills in too. tests/install.sh checks each, and builds a consumer with each.
VERSION       := $(shell sed -n 's/^\#define KEYSTONELIGHT_VERSION_STR "\(.*\)"$$/\1/p' $(HEADER))
VERSION_MAJOR := $(firstword $(subst ., ,$(VERSION)))
RELEASE       := build/release
INSTALLED_PROGRAMS := keystonelight-server keystonelight-check
MAN_PAGES     := $(foreach p,$(INSTALLED_PROGRAMS),docs/man/$(p).1)
SHARE         := $(DESTDIR)$(PREFIX)/share

install: $(INSTALLED)
	@$(MAKE) --no-print-directory BUILD=$(RELEASE) OPT="-O2 -g" $(foreach p,$(INSTALLED_PROGRAMS),$(RELEASE)/bin/$(p))
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin $(SHARE)/man/man1 \
	    $(SHARE)/keystonelight $(SHARE)/cmake/keystonelight $(SHARE)/pkgconfig
	install -m 644 $(INSTALLED) $(DESTDIR)$(PREFIX)/include/keystonelight.hpp
	install -m 755 $(foreach p,$(INSTALLED_PROGRAMS),$(RELEASE)/bin/$(p)) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(MAN_PAGES) $(SHARE)/man/man1/
	sed 's|/usr/local/bin/|$(PREFIX)/bin/|' examples/keystonelight.service > $(SHARE)/keystonelight/keystonelight.service
	sed 's|@PREFIX_FROM_HERE@|../../..|' cmake/keystonelightConfig.cmake.in \
	    > $(SHARE)/cmake/keystonelight/keystonelightConfig.cmake
	sed -e 's|@VERSION@|$(VERSION)|' -e 's|@VERSION_MAJOR@|$(VERSION_MAJOR)|' \
	    cmake/keystonelightConfigVersion.cmake.in > $(SHARE)/cmake/keystonelight/keystonelightConfigVersion.cmake
	sed 's|@VERSION@|$(VERSION)|' cmake/keystonelight.pc.in > $(SHARE)/pkgconfig/keystonelight.pc

# Only the files install put, and the folders only Keystonelight uses; include, bin and
# the others may hold other projects' files.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/keystonelight.hpp \
	    $(foreach p,$(INSTALLED_PROGRAMS),$(DESTDIR)$(PREFIX)/bin/$(p) $(SHARE)/man/man1/$(p).1) \
	    $(SHARE)/keystonelight/keystonelight.service $(SHARE)/pkgconfig/keystonelight.pc \
	    $(SHARE)/cmake/keystonelight/keystonelightConfig.cmake \
	    $(SHARE)/cmake/keystonelight/keystonelightConfigVersion.cmake
	rmdir $(SHARE)/keystonelight $(SHARE)/cmake/keystonelight 2>/dev/null || true

clean:
	rm -rf build
