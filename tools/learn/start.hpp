// keystonelight.hpp: the key-value store you are about to write, in one C++17 header.
//
// Chapter 1 (chapters/01-in-memory-map/README.md) says what goes in here first: Status and
// Store. `make check` in this folder builds the chapter's tests against this file and
// says how many pass; before you write anything, none does.
#ifndef KEYSTONELIGHT_HPP
#define KEYSTONELIGHT_HPP

namespace keystonelight {

}  // namespace keystonelight

#endif  // KEYSTONELIGHT_HPP
