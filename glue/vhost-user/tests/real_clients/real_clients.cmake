# Real vhost-user front-ends against vhost-user-device, as ctest tests
# labelled `real_client` (run only them: ctest -L real_client).
# Included from glue/vhost-user/CMakeLists.txt:
#   include(tests/real_clients/real_clients.cmake)
#
# Each script installs the Debian packages it needs when missing
# (apt-get install --no-install-recommends; root), exits 77 = SKIP with a
# printed reason when something cannot be had, and keeps downloads (the
# Debian kernel) in LIBVIRTIO_REAL_CLIENTS_CACHE (default
# ${CMAKE_BINARY_DIR}/real_clients_cache; point two presets at one dir to
# fetch once).
# The tests share one RESOURCE_LOCK: each wants both cores (QEMU TCG,
# testpmd's busy-polling lcore), so ctest -j runs them one at a time.
if(NOT TARGET vhost-user-device)
  return()
endif()

set(_vu_rc_dir ${CMAKE_CURRENT_LIST_DIR})
set(LIBVIRTIO_REAL_CLIENTS_CACHE "${CMAKE_BINARY_DIR}/real_clients_cache"
  CACHE PATH "Where the real-client tests keep the Debian kernel they fetch")
set(_vu_rc_cache ${LIBVIRTIO_REAL_CLIENTS_CACHE})
# Every NAME.sh here except common.sh is a test, vhost_user_real_NAME. A
# script states its ctest TIMEOUT in a header line `# rc-timeout: SECONDS`
# (default 600). The TIMEOUT is only a backstop: each script bounds every
# step with `timeout` and stops a guest early once a log shows it can only
# hang. It is generous for a first run, which installs packages and fetches
# the kernel (~1-2 min).
file(GLOB _vu_rc_scripts CONFIGURE_DEPENDS ${_vu_rc_dir}/*.sh)
list(SORT _vu_rc_scripts)
foreach(_script IN LISTS _vu_rc_scripts)
  get_filename_component(_name ${_script} NAME_WE)
  if(_name STREQUAL "common")
    continue()
  endif()
  set(_timeout 600)
  file(STRINGS ${_script} _timeout_line LIMIT_COUNT 1
    REGEX "^# rc-timeout: [0-9]+$")
  if(_timeout_line)
    string(REGEX REPLACE "^# rc-timeout: " "" _timeout "${_timeout_line}")
  endif()
  add_test(NAME vhost_user_real_${_name}
    COMMAND bash ${_script} $<TARGET_FILE:vhost-user-device> ${_vu_rc_cache})
  set_tests_properties(vhost_user_real_${_name} PROPERTIES
    TIMEOUT ${_timeout}
    SKIP_RETURN_CODE 77
    LABELS real_client
    RESOURCE_LOCK vhost_user_real_client)
endforeach()
