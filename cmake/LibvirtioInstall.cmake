# Installation (the glue binaries, vhost-user-device, virtio-kvm and
# xen-virtio-backend, are installed by their glue/*/CMakeLists.txt; their
# manuals here): headers, libvirtio.a, libvirtio_backends.a,
# libvirtio_testing.a, the vhost-user libraries (libvirtio_vhost_user.a,
# libvirtio_vhost_user_frontend.a), the CMake package (find_package(libvirtio)
# -> libvirtio::virtio, libvirtio::backends, libvirtio::catalog,
# libvirtio::testing, libvirtio::vhost_user, libvirtio::vhost_user_frontend)
# and the pkg-config files libvirtio.pc (the core, no liburing),
# libvirtio-backends.pc (the bundled backends, with liburing),
# libvirtio-vhost-user.pc and libvirtio-vhost-user-frontend.pc.
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

set(LIBVIRTIO_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/libvirtio"
  CACHE STRING "Where to install libvirtioConfig.cmake (relative to prefix)")

# Public headers (recursively, so virtio/<subdir>/*.h is picked up too).
install(DIRECTORY "${PROJECT_SOURCE_DIR}/libvirtio/include/"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
  FILES_MATCHING PATTERN "*.h")
install(DIRECTORY "${PROJECT_SOURCE_DIR}/libvirtio/backends/include/"
  "${PROJECT_SOURCE_DIR}/libvirtio/catalog/include/"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
  FILES_MATCHING PATTERN "*.h")

set(_libvirtio_install_targets virtio virtio_backends virtio_catalog)
if(TARGET virtio_testing)
  list(APPEND _libvirtio_install_targets virtio_testing)
endif()
if(TARGET virtio_testing AND EXISTS "${PROJECT_SOURCE_DIR}/tests/harness/include")
  install(DIRECTORY "${PROJECT_SOURCE_DIR}/tests/harness/include/"
    DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
    FILES_MATCHING PATTERN "*.h")
endif()

# The vhost-user libraries (LIBVIRTIO_VHOST_USER): their public headers only
# (include/vhost_user/...); private headers stay in their src/ folders.
if(TARGET vhost_user)
  list(APPEND _libvirtio_install_targets vhost_user vhost_user_frontend)
  install(DIRECTORY "${PROJECT_SOURCE_DIR}/vhost_user/include/"
    "${PROJECT_SOURCE_DIR}/vhost_user/frontend/include/"
    DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
    FILES_MATCHING PATTERN "*.h")
endif()

install(TARGETS ${_libvirtio_install_targets}
  EXPORT libvirtioTargets
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}"
  INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

install(EXPORT libvirtioTargets
  NAMESPACE libvirtio::
  FILE libvirtioTargets.cmake
  DESTINATION "${LIBVIRTIO_INSTALL_CMAKEDIR}")

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/libvirtioConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/libvirtioConfig.cmake"
  INSTALL_DESTINATION "${LIBVIRTIO_INSTALL_CMAKEDIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/libvirtioConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMinorVersion)  # 0.x: minor bumps may break the API
install(FILES
  "${PROJECT_BINARY_DIR}/libvirtioConfig.cmake"
  "${PROJECT_BINARY_DIR}/libvirtioConfigVersion.cmake"
  "${PROJECT_SOURCE_DIR}/cmake/FindLiburing.cmake"
  DESTINATION "${LIBVIRTIO_INSTALL_CMAKEDIR}")

# pkg-config. The prefix is computed from ${pcfiledir} so the file stays
# correct for `cmake --install --prefix <anything>`.
set(_pc_dir "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
file(RELATIVE_PATH LIBVIRTIO_PC_PREFIX_FROM_PCFILEDIR
  "/prefix/${_pc_dir}" "/prefix")
string(REGEX REPLACE "/$" "" LIBVIRTIO_PC_PREFIX_FROM_PCFILEDIR
  "${LIBVIRTIO_PC_PREFIX_FROM_PCFILEDIR}")
configure_file(
  "${PROJECT_SOURCE_DIR}/cmake/libvirtio.pc.in"
  "${PROJECT_BINARY_DIR}/libvirtio.pc"
  @ONLY)
configure_file(
  "${PROJECT_SOURCE_DIR}/cmake/libvirtio-backends.pc.in"
  "${PROJECT_BINARY_DIR}/libvirtio-backends.pc"
  @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/libvirtio.pc"
  "${PROJECT_BINARY_DIR}/libvirtio-backends.pc" DESTINATION "${_pc_dir}")
if(TARGET vhost_user)
  foreach(_pc IN ITEMS libvirtio-vhost-user libvirtio-vhost-user-frontend)
    configure_file("${PROJECT_SOURCE_DIR}/cmake/${_pc}.pc.in"
      "${PROJECT_BINARY_DIR}/${_pc}.pc" @ONLY)
    install(FILES "${PROJECT_BINARY_DIR}/${_pc}.pc" DESTINATION "${_pc_dir}")
  endforeach()
endif()

# The license and the documents a packager ships beside the library.
install(FILES "${PROJECT_SOURCE_DIR}/LICENSE" "${PROJECT_SOURCE_DIR}/README.md"
              "${PROJECT_SOURCE_DIR}/CHANGELOG.md"
        DESTINATION "${CMAKE_INSTALL_DOCDIR}")

# The glue binaries' manuals (each glue installs its own binary): a README
# per program, in a folder named after it, and the --device syntax they
# share (docs/devices.md), which every one of them refers to.
set(_libvirtio_glue_docs
  "vhost-user-device=glue/vhost-user/README.md"
  "virtio-kvm=glue/kvm/README.md"
  "xen-virtio-backend=glue/xen/README.md")
set(_libvirtio_any_glue OFF)
foreach(_entry IN LISTS _libvirtio_glue_docs)
  string(REPLACE "=" ";" _entry "${_entry}")
  list(GET _entry 0 _program)
  list(GET _entry 1 _readme)
  if(TARGET ${_program})
    install(FILES "${PROJECT_SOURCE_DIR}/${_readme}"
      DESTINATION "${CMAKE_INSTALL_DOCDIR}/${_program}")
    set(_libvirtio_any_glue ON)
  endif()
endforeach()
if(_libvirtio_any_glue)
  install(FILES "${PROJECT_SOURCE_DIR}/docs/devices.md"
    DESTINATION "${CMAKE_INSTALL_DOCDIR}")
endif()
