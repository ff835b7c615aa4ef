// Helpers shared by the tests of chapter 3 on: open a store or fail the test with the
// reason, and read a store's contents into an ordered map to compare with a model.
#ifndef KEYSTONELIGHT_TESTS_STORE_HPP
#define KEYSTONELIGHT_TESTS_STORE_HPP

#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <string>

#include "keystonelight.hpp"

namespace kltest {

using Model = std::map<std::string, std::string>;

inline std::unique_ptr<keystonelight::Store> open_store(const keystonelight::Options& options) {
  std::unique_ptr<keystonelight::Store> store;
  keystonelight::Status s = keystonelight::Store::open(options, &store);
  INFO(s.to_string());
  REQUIRE(s.ok());
  return store;
}

inline Model contents(const keystonelight::Store& store) {
  Model model;
  for (auto& [key, value] : store.entries()) model[key] = value;
  return model;
}

}  // namespace kltest

#endif  // KEYSTONELIGHT_TESTS_STORE_HPP
