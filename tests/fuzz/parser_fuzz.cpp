// libFuzzer target for the request parser (chapter 6), built and run by `make fuzz`.
//
// For every input it checks what the unit tests check for a few hand-made streams:
//   - parsing never crashes, leaks or reads out of bounds (ASan and UBSan are on);
//   - the input parsed whole and the input fed in two pieces, cut at a place the input
//     itself chooses, give the same requests and the same error;
//   - every request parsed runs through a Dispatcher on an in-memory store without harm.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "keystonelight.hpp"

namespace kl = keystonelight;

namespace {

struct Outcome {
  std::vector<std::vector<std::string>> requests;
  std::string error;
  bool operator==(const Outcome& other) const {
    return requests == other.requests && error == other.error;
  }
};

// Small limits, so that the fuzzer reaches every limit with small inputs.
kl::ProtocolLimits small_limits() {
  kl::ProtocolLimits limits;
  limits.max_inline_bytes = 64;
  limits.max_bulk_bytes = 64;
  limits.max_args = 16;
  return limits;
}

Outcome parse_in_pieces(std::string_view input, std::size_t cut) {
  kl::RequestParser parser(small_limits());
  Outcome outcome;
  std::string buffer;
  for (std::string_view piece : {input.substr(0, cut), input.substr(cut)}) {
    buffer.append(piece);
    while (outcome.error.empty()) {
      std::size_t consumed = 0;
      std::vector<std::string> args;
      const kl::RequestParser::Result r = parser.parse(buffer, &consumed, &args);
      if (consumed > buffer.size()) std::abort();  // the contract: never more than given
      buffer.erase(0, consumed);
      if (r == kl::RequestParser::Result::kCommand) {
        if (args.empty()) std::abort();  // a command has at least its name
        outcome.requests.push_back(std::move(args));
      } else if (r == kl::RequestParser::Result::kError) {
        outcome.error = parser.error();
      }
      if (r != kl::RequestParser::Result::kCommand) break;
    }
  }
  return outcome;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte picks where to cut; the rest is the stream.
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::size_t cut = input.empty() ? 0 : data[0] % (input.size() + 1);
  const Outcome whole = parse_in_pieces(input, input.size());
  const Outcome split = parse_in_pieces(input, cut);
  if (!(whole == split)) std::abort();

  kl::Store store;
  kl::Dispatcher dispatcher(&store);
  kl::Session session;
  std::string replies;
  for (const auto& request : whole.requests) {
    if (session.close) break;
    dispatcher.execute(request, &session, &replies);
  }
  return 0;
}
