// The one main() shared by every test binary; each suite is a translation unit of its own.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
