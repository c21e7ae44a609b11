# FindXen.cmake — Xen's tool libraries for glue/xen (Debian: libxen-dev).
#
# Uses the pkg-config files libxen-dev ships (xendevicemodel.pc,
# xenforeignmemory.pc, xenevtchn.pc, xengnttab.pc, xentoollog.pc, and
# xencontrol.pc for the one getdomaininfo call that tells HVM from PVH).
# Defines Xen_FOUND, Xen_VERSION (of xendevicemodel) and the imported target
# Xen::xen linking all of them.
find_package(PkgConfig QUIET)
set(_xen_modules xendevicemodel xenforeignmemory xenevtchn xengnttab xentoollog
  xencontrol)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(PC_XEN QUIET IMPORTED_TARGET ${_xen_modules})
endif()
include(FindPackageHandleStandardArgs)
if(PC_XEN_FOUND)
  set(Xen_VERSION "${PC_XEN_xendevicemodel_VERSION}")
  find_path(Xen_INCLUDE_DIR xendevicemodel.h HINTS ${PC_XEN_INCLUDE_DIRS})
endif()
find_package_handle_standard_args(Xen
  REQUIRED_VARS PC_XEN_FOUND Xen_INCLUDE_DIR
  VERSION_VAR Xen_VERSION)
if(Xen_FOUND AND NOT TARGET Xen::xen)
  add_library(Xen::xen INTERFACE IMPORTED)
  target_link_libraries(Xen::xen INTERFACE PkgConfig::PC_XEN)
endif()
