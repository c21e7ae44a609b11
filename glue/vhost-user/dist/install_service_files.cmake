# Run by `cmake --install` (glue/vhost-user/CMakeLists.txt): the files that
# must name the installed daemon by its absolute path, which is known only
# now (`cmake --install --prefix` may differ from the configured prefix).
# DESTDIR is prepended to where files go, never to the paths inside them.
#
# Input variables: VU_DIST (this folder), VU_BINDIR, VU_LIBEXECDIR,
# VU_DATADIR, VU_SYSTEMD_UNITDIR (relative to the prefix, or absolute).
# Installs:
#   LIBEXECDIR/libvirtio/vhost-user-{blk,net,console,rng}: links to the
#     daemon; run under such a name it serves (and --print-capabilities
#     reports) that device type: QEMU's backend program conventions name
#     backends vhost-user-$device.
#   DATADIR/qemu/vhost-user/50-libvirtio-vhost-user-TYPE.json: QEMU's
#     vhost-user.json discovery files, one per type, naming those links.
#   SYSTEMD_UNITDIR/vhost-user-device@.{socket,service}: the sample units.
function(vu_absolute out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

vu_absolute(bindir "${VU_BINDIR}")
vu_absolute(libexecdir "${VU_LIBEXECDIR}/libvirtio")
vu_absolute(discoverydir "${VU_DATADIR}/qemu/vhost-user")
vu_absolute(unitdir "${VU_SYSTEMD_UNITDIR}")
set(daemon "${bindir}/vhost-user-device")

file(MAKE_DIRECTORY "$ENV{DESTDIR}${libexecdir}" "$ENV{DESTDIR}${discoverydir}"
  "$ENV{DESTDIR}${unitdir}")
# Relative, so the tree still works when moved (or staged with DESTDIR).
file(RELATIVE_PATH link_target "${libexecdir}" "${daemon}")

foreach(pair IN ITEMS "blk;block;block device" "net;net;network device"
                      "console;console;console" "rng;rng;entropy source")
  list(GET pair 0 TYPE)
  list(GET pair 1 QEMU_TYPE)
  list(GET pair 2 TYPE_DESCRIPTION)
  set(link "${libexecdir}/vhost-user-${TYPE}")
  message(STATUS "Installing: $ENV{DESTDIR}${link} -> ${link_target}")
  file(REMOVE "$ENV{DESTDIR}${link}")
  file(CREATE_LINK "${link_target}" "$ENV{DESTDIR}${link}" SYMBOLIC)
  set(BINARY "${link}")
  set(json "${discoverydir}/50-libvirtio-vhost-user-${TYPE}.json")
  message(STATUS "Installing: $ENV{DESTDIR}${json}")
  configure_file("${VU_DIST}/vhost-user.json.in" "$ENV{DESTDIR}${json}" @ONLY)
endforeach()

set(VHOST_USER_DEVICE_BINARY "${daemon}")
message(STATUS "Installing: $ENV{DESTDIR}${unitdir}/vhost-user-device@.service")
configure_file("${VU_DIST}/vhost-user-device@.service.in"
  "$ENV{DESTDIR}${unitdir}/vhost-user-device@.service" @ONLY)
message(STATUS "Installing: $ENV{DESTDIR}${unitdir}/vhost-user-device@.socket")
configure_file("${VU_DIST}/vhost-user-device@.socket"
  "$ENV{DESTDIR}${unitdir}/vhost-user-device@.socket" COPYONLY)
