# Every dependency comes from a Debian 12 package (scripts/setup installs them).
find_package(PostgreSQL REQUIRED)
find_package(CapnProto CONFIG REQUIRED)
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    # Cap'n Proto 0.9's headers need two operators back under clang in C++20 (see the header).
    add_compile_options("SHELL:-include ${PROJECT_SOURCE_DIR}/lib/rpc/kj_clang_compat.hpp")
endif()
find_package(absl CONFIG REQUIRED)
find_package(Threads REQUIRED)

# Standalone Asio ships no CMake package: an interface target over its header directory.
find_path(FLYPG_ASIO_INCLUDE_DIR asio.hpp REQUIRED)
add_library(flypg_asio INTERFACE)
target_include_directories(flypg_asio SYSTEM INTERFACE $<BUILD_INTERFACE:${FLYPG_ASIO_INCLUDE_DIR}>)
# Asio 1.22 decides whether its handler memory comes from aligned_alloc() or operator new by
# looking for a macro of libstdc++'s that exists only once a standard header was included: a
# translation unit that includes Asio first gets the other answer, so two definitions of the
# same inline allocator meet at link time (an ODR violation that AddressSanitizer reports as
# "alloc-dealloc-mismatch"). Every unit that links flypg gets the same answer.
target_compile_definitions(flypg_asio INTERFACE ASIO_STANDALONE ASIO_NO_DEPRECATED ASIO_HAS_STD_ALIGNED_ALLOC=1)
# Asio 1.22 looks for clang's coroutines under the Coroutines TS macro (__cpp_coroutines), which
# clang 17 and later no longer define: without this, asio::awaitable does not exist under clang.
# (The generator expression keeps the answer per consumer's compiler, in the installed package too.)
target_compile_definitions(flypg_asio INTERFACE $<$<CXX_COMPILER_ID:Clang>:ASIO_HAS_CO_AWAIT=1>)
target_link_libraries(flypg_asio INTERFACE Threads::Threads)

find_program(FLYPG_PG_CONFIG pg_config)
set(FLYPG_ERRCODES_TXT "/usr/share/postgresql/15/errcodes.txt"
    CACHE FILEPATH "PostgreSQL's errcodes.txt, source of the SQLSTATE name table")
if(NOT EXISTS "${FLYPG_ERRCODES_TXT}")
    message(FATAL_ERROR "FLYPG_ERRCODES_TXT='${FLYPG_ERRCODES_TXT}' does not exist (package postgresql-15)")
endif()
