# Helpers shared by the per-folder CMakeLists.

set(SLM_WARNINGS -Wall -Wextra -Wno-unused-parameter)

# The PyPI wheel's libtorch.so / libtorch_cpu.so export their own statically linked copies of
# std::filesystem (an older libstdc++); listed before libstdc++.so they interpose on the system's
# and e.g. std::filesystem::remove_all jumps to a null pointer. Naming libstdc++ first on every
# link line makes it the first DT_NEEDED entry, so the system's definitions win.
add_link_options(-Wl,--push-state,--no-as-needed -lstdc++ -Wl,--pop-state)

# One precompiled header for every LibTorch-using target (REUSE_FROM needs identical flags, so every
# such target gets the same options through slm_torch_flags).
add_library(slm_torch_flags INTERFACE)
# Threads::Threads (-pthread defines _REENTRANT): OpenCV, gRPC and soxr add it to their users, and
# GCC ignores a precompiled header built without the same macro, so every target gets it.
target_link_libraries(slm_torch_flags INTERFACE ${TORCH_LIBRARIES} nlohmann_json::nlohmann_json
                                                Threads::Threads)
target_include_directories(slm_torch_flags INTERFACE ${CMAKE_SOURCE_DIR})
target_compile_options(slm_torch_flags INTERFACE ${SLM_WARNINGS} -pthread)

add_library(slm_pch OBJECT ${CMAKE_SOURCE_DIR}/cmake/pch_anchor.cpp)
target_link_libraries(slm_pch PRIVATE slm_torch_flags)
target_precompile_headers(slm_pch PRIVATE ${CMAKE_SOURCE_DIR}/core/pch.h)

# slm_add_library(NAME SOURCES ... DEPS ...): a static library using LibTorch and the shared PCH.
function(slm_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_link_libraries(${name} PUBLIC slm_torch_flags ${ARG_DEPS})
  target_precompile_headers(${name} REUSE_FROM slm_pch)
endfunction()

# slm_add_test(NAME SOURCES ... DEPS ...): a gtest executable. Tests whose suite or name contains
# "Slow" get the ctest label `slow`; the rest get the folder's label.
function(slm_add_test name)
  cmake_parse_arguments(ARG "" "LABEL" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE slm_torch_flags ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  target_precompile_headers(${name} REUSE_FROM slm_pch)
  target_compile_definitions(${name} PRIVATE SLM_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
                                             SLM_BINARY_DIR="${CMAKE_BINARY_DIR}")
  # Listing the tests loads LibTorch; on a cold page cache that alone can pass CMake's 5 s default.
  gtest_discover_tests(${name} TEST_FILTER "-*Slow*" DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 120
                       PROPERTIES LABELS "${ARG_LABEL}" TIMEOUT 300)
  # Slow tests run as one ctest entry per executable: gtest_discover_tests flattens a property
  # list such as "audio;slow", so the two labels could not be attached to discovered tests.
  add_test(NAME ${name}_slow COMMAND ${name} --gtest_filter=*Slow*)
  set_tests_properties(${name}_slow PROPERTIES LABELS "${ARG_LABEL};slow" TIMEOUT 1800)
endfunction()
