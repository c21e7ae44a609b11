# libvirtio_set_warnings(<target>...)
#
# Adds the project's warning flags to the given targets as PRIVATE compile
# options, so they apply when building libvirtio itself and never leak into the
# usage requirements of installed targets (consumers pick their own warnings).
# LIBVIRTIO_WERROR=ON (CI) adds -Werror.
include_guard(GLOBAL)

function(libvirtio_set_warnings)
  foreach(_target IN LISTS ARGN)
    if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
      target_compile_options(${_target} PRIVATE -Wall -Wextra)
      if(LIBVIRTIO_WERROR)
        target_compile_options(${_target} PRIVATE -Werror)
      endif()
    elseif(MSVC)
      target_compile_options(${_target} PRIVATE /W4 $<$<BOOL:${LIBVIRTIO_WERROR}>:/WX>)
    endif()
  endforeach()
endfunction()
