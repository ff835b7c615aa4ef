// A second translation unit that includes the header. Every test binary links it beside
// the suites. A function defined in the header without `inline` is emitted as a strong
// symbol by every unit that includes it, so the link fails here, not in a user's project.
#include "keystonelight.hpp"
