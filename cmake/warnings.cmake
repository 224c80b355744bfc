# Applied to every flypg-owned target through flypg_apply_warnings(); never to consumers.
function(flypg_apply_warnings target)
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                                             -Wno-sign-conversion -Wnon-virtual-dtor
                                             # g++ 12 false positive inside Asio's awaitable frames.
                                             -Wno-mismatched-new-delete
                                             # Option structs are meant to be filled in part with
                                             # designated initializers; the rest keep defaults.
                                             -Wno-missing-field-initializers)
    if(FLYPG_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
        # g++ 12's flow analysis is confused by the sanitizers' instrumentation and reports
        # std::variant members as "maybe uninitialized" (a known family of false positives); the same
        # code builds clean without -fsanitize, where the warning stays on.
        target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized)
    endif()
    if(FLYPG_SANITIZE_THREAD AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
        # Asio's fenced blocks use std::atomic_thread_fence, which TSan does not model; g++ says so
        # for every handler. The handlers it fences also pass through the scheduler's mutex, which
        # TSan does see, so the ordering it checks is the real one.
        target_compile_options(${target} PRIVATE -Wno-tsan)
    endif()
    if(FLYPG_WERROR)
        target_compile_options(${target} PRIVATE -Werror)
    endif()
endfunction()

if(FLYPG_SANITIZE)
    add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
    add_link_options(-fsanitize=address,undefined)
endif()
if(FLYPG_SANITIZE_THREAD)
    add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
    add_link_options(-fsanitize=thread)
endif()
if(FLYPG_FUZZ)
    # Coverage feedback for libFuzzer in everything the targets reach (the library too); the
    # targets themselves link the fuzzer's main with -fsanitize=fuzzer.
    add_compile_options(-fsanitize=fuzzer-no-link)
endif()
