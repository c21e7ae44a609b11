# Applies LIBVIRTIO_SANITIZE ("" | "address,undefined" | "thread", or any other
# comma-separated -fsanitize= list) to every target defined after this file is
# included, at compile and link time. Directory-scoped, so the flags are not
# part of any installed target's usage requirements.
#
# Exposes:
#   LIBVIRTIO_SANITIZE_FLAGS  the compile/link flags as a list (empty if none);
#                             also used by the install-consumer test and fuzz/.
include_guard(GLOBAL)

set(LIBVIRTIO_SANITIZE_FLAGS "")
if(NOT LIBVIRTIO_SANITIZE STREQUAL "")
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    message(FATAL_ERROR "LIBVIRTIO_SANITIZE needs GCC or Clang")
  endif()
  if(LIBVIRTIO_SANITIZE MATCHES "thread" AND LIBVIRTIO_SANITIZE MATCHES "address")
    message(FATAL_ERROR "LIBVIRTIO_SANITIZE: 'thread' cannot be combined with 'address'")
  endif()
  list(APPEND LIBVIRTIO_SANITIZE_FLAGS
    "-fsanitize=${LIBVIRTIO_SANITIZE}" -fno-omit-frame-pointer)
  if(LIBVIRTIO_SANITIZE MATCHES "undefined")
    # Make every UBSan report fatal so that it fails the test that hit it.
    list(APPEND LIBVIRTIO_SANITIZE_FLAGS -fno-sanitize-recover=all)
  endif()
  add_compile_options(${LIBVIRTIO_SANITIZE_FLAGS})
  add_link_options(${LIBVIRTIO_SANITIZE_FLAGS})
  message(STATUS "libvirtio: sanitizers: ${LIBVIRTIO_SANITIZE_FLAGS}")
endif()

if(LIBVIRTIO_BUILD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR
      "LIBVIRTIO_BUILD_FUZZ=ON needs clang (libFuzzer), but the C++ compiler is "
      "${CMAKE_CXX_COMPILER_ID} (${CMAKE_CXX_COMPILER}). Use the 'fuzz' preset "
      "or -DCMAKE_CXX_COMPILER=clang++.")
  endif()
  # Coverage instrumentation for library code so libFuzzer can see into it;
  # the fuzzer executables themselves add -fsanitize=fuzzer (fuzz/CMakeLists.txt).
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
