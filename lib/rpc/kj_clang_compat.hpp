// Cap'n Proto 0.9 (Debian 12) under clang 16 and later in C++20: KJ leaves out its
// `const char* == kj::StringPtr` operators when the compiler has three-way comparison, counting on
// C++20's reversed candidates; clang (P2468R2) no longer considers those for a class that also
// declares operator!=, so capnp/blob.h itself stops compiling. The build force-includes this
// header under clang only (cmake/dependencies.cmake), before any Cap'n Proto header.
#pragma once

#include <kj/string.h>

#if defined(__clang__) && __cpp_impl_three_way_comparison
namespace kj {
inline bool operator==(const char* a, const StringPtr& b) {
    return b == StringPtr(a);
}
inline bool operator!=(const char* a, const StringPtr& b) {
    return b != StringPtr(a);
}
inline bool operator==(const char* a, const String& b) {
    return b == StringPtr(a);
}
inline bool operator!=(const char* a, const String& b) {
    return b != StringPtr(a);
}
}  // namespace kj
#endif
