# Every third-party library slm uses, found once here.

# LibTorch: from the project's virtualenv (PyPI torch, scripts/setup) unless CMAKE_PREFIX_PATH
# already points at one (the GPU machine's CUDA LibTorch).
find_package(Torch QUIET)
if(NOT Torch_FOUND)
  if(EXISTS "${SLM_PYTHON}")
    execute_process(COMMAND "${SLM_PYTHON}" -c "import torch;print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
    if(_rc EQUAL 0)
      list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
    endif()
  endif()
  find_package(Torch REQUIRED)
endif()
message(STATUS "LibTorch ${Torch_VERSION}: ${TORCH_INSTALL_PREFIX}")

find_package(PkgConfig REQUIRED)
pkg_check_modules(SNDFILE REQUIRED IMPORTED_TARGET sndfile)
pkg_check_modules(SOXR REQUIRED IMPORTED_TARGET soxr)
pkg_check_modules(KISSFFT REQUIRED IMPORTED_TARGET kissfft-float)

# OpenCV: only core/imgproc/imgcodecs are installed (libopencv-dev would pull in VTK, Qt and more),
# and those -dev packages ship neither a CMake config nor a .pc file, so find them directly.
find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs)
if(NOT OpenCV_FOUND)
  find_path(OPENCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
  set(OpenCV_LIBS)
  foreach(_m core imgproc imgcodecs)
    find_library(OPENCV_${_m}_LIBRARY opencv_${_m} REQUIRED)
    list(APPEND OpenCV_LIBS ${OPENCV_${_m}_LIBRARY})
  endforeach()
  set(OpenCV_INCLUDE_DIRS ${OPENCV_INCLUDE_DIR})
endif()
add_library(slm_opencv INTERFACE)
target_include_directories(slm_opencv SYSTEM INTERFACE ${OpenCV_INCLUDE_DIRS})
target_link_libraries(slm_opencv INTERFACE ${OpenCV_LIBS})
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(CLI11 REQUIRED)
find_package(spdlog REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
find_program(PROTOC_PROGRAM protoc REQUIRED)

find_path(ESPEAK_NG_INCLUDE_DIR espeak-ng/speak_lib.h REQUIRED)
find_library(ESPEAK_NG_LIBRARY espeak-ng REQUIRED)
add_library(slm_espeak_ng INTERFACE)
target_include_directories(slm_espeak_ng INTERFACE ${ESPEAK_NG_INCLUDE_DIR})
target_link_libraries(slm_espeak_ng INTERFACE ${ESPEAK_NG_LIBRARY})

# sentencepiece: the static, symbol-hidden build from Debian's source package (scripts/setup).
set(SLM_SENTENCEPIECE_PREFIX "${CMAKE_SOURCE_DIR}/third_party/sentencepiece" CACHE PATH
    "Prefix of the static sentencepiece build")
find_library(SPM_STATIC_LIB NAMES libsentencepiece.a PATHS "${SLM_SENTENCEPIECE_PREFIX}"
             PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH REQUIRED)
find_library(SPM_TRAIN_STATIC_LIB NAMES libsentencepiece_train.a PATHS "${SLM_SENTENCEPIECE_PREFIX}"
             PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH REQUIRED)

if(SLM_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
endif()

find_package(Threads REQUIRED)
# SHA-256 for checkpoint manifests (core/checksum.h); libgrpc++-dev already depends on it.
find_package(OpenSSL REQUIRED)
# The HTTP/WebSocket front-end (http/): Boost.Beast and Boost.Asio, header-only (Debian's libboost-dev).
find_package(Boost 1.74 REQUIRED)

# Hugging Face tokenizer.json support (text/regex.h, text/unicode.h): PCRE2 for the split regexes
# (Unicode properties, lookahead, JIT), ICU for normalization forms and character properties.
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(ICU_UC REQUIRED IMPORTED_TARGET icu-uc)
