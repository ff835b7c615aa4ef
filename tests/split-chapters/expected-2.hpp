// GENERATED from keystonelight.hpp at the top of the repository by tools/split-chapters.
// Do not edit: change keystonelight.hpp, then run `make chapters`.
// A header with every kind of marker, read by tests/split-chapters/run.sh.
int always();

int from_two();

int f() {
  return 1;
}

int only_two();

int end();
