# Tests that need /dev/kvm: run them directly where it is usable, otherwise
# inside a nested KVM (tests/nested/nested-kvm.sh: QEMU TCG emulating AMD
# SVM, Debian's kernel with kvm_amd, the host's root over 9p).
#
#   libvirtio_kvm_test_command(<out-var> <test-name>)
#       the words to put in front of the test's own command (empty when
#       the tests run directly)
#   libvirtio_kvm_test_properties(<test-name>)
#       after add_test: the extra label `nested` and the batch fixture
#
# Nested tests share one outer boot: the fixture test `nested_kvm.batch`
# boots once and runs every test labelled `nested` inside (with an inner
# ctest), recording each one's output and status; each test then reports
# its own recorded result, so pass/fail stays per test (a test run without
# the batch, e.g. `ctest -FS nested_kvm`, boots for itself). The batch saves
# the ~10 s outer boot per test.
#
# LIBVIRTIO_NESTED_KVM: AUTO (nested when /dev/kvm is not a usable device at
# configure time), ON (always through the runner, which still runs tests
# directly if /dev/kvm is usable when they run), OFF (never: without
# /dev/kvm the tests skip).
set(LIBVIRTIO_NESTED_KVM AUTO CACHE STRING
  "Run the KVM tests in a nested KVM under QEMU TCG: AUTO, ON or OFF")
set_property(CACHE LIBVIRTIO_NESTED_KVM PROPERTY STRINGS AUTO ON OFF)
set(LIBVIRTIO_NESTED_CACHE "${CMAKE_BINARY_DIR}/nested_cache"
  CACHE PATH "Where the nested test runner keeps Debian's kernel and its initramfs")

set(_nested_kvm OFF)
if(LIBVIRTIO_NESTED_KVM STREQUAL "ON")
  set(_nested_kvm ON)
elseif(LIBVIRTIO_NESTED_KVM STREQUAL "AUTO")
  # The same test the runner makes: a character device we may open
  # read-write (opening it here could create a plain file).
  execute_process(COMMAND test -c /dev/kvm -a -r /dev/kvm -a -w /dev/kvm
                  RESULT_VARIABLE _kvm_unusable)
  if(_kvm_unusable)
    set(_nested_kvm ON)
  endif()
endif()
set(LIBVIRTIO_NESTED_KVM_ACTIVE ${_nested_kvm})
if(_nested_kvm)
  message(STATUS "KVM tests: nested (QEMU TCG + kvm_amd), label 'nested'")
else()
  message(STATUS "KVM tests: directly on /dev/kvm")
endif()

set(_nested_runner ${CMAKE_CURRENT_LIST_DIR}/../tests/nested/nested-kvm.sh)
cmake_path(NORMAL_PATH _nested_runner)
set(_nested_batch_dir ${CMAKE_BINARY_DIR}/nested_kvm_batch)

function(libvirtio_kvm_test_command out name)
  if(LIBVIRTIO_NESTED_KVM_ACTIVE)
    set(${out} bash ${_nested_runner} --cache ${LIBVIRTIO_NESTED_CACHE}
        --batch ${_nested_batch_dir} --name ${name} -- PARENT_SCOPE)
  else()
    set(${out} "" PARENT_SCOPE)
  endif()
endfunction()

function(libvirtio_kvm_test_properties name)
  if(NOT LIBVIRTIO_NESTED_KVM_ACTIVE)
    return()
  endif()
  set_property(TEST ${name} APPEND PROPERTY LABELS nested)
  set_property(TEST ${name} APPEND PROPERTY FIXTURES_REQUIRED nested_kvm)
  get_property(_have GLOBAL PROPERTY LIBVIRTIO_NESTED_KVM_BATCH_ADDED)
  if(_have)
    return()
  endif()
  set_property(GLOBAL PROPERTY LIBVIRTIO_NESTED_KVM_BATCH_ADDED ON)
  # The inner ctest runs the tests labelled `nested` (one at a time: the
  # outer VM has one vCPU), never this fixture again (-FS).
  add_test(NAME nested_kvm.batch
    COMMAND bash ${_nested_runner} --cache ${LIBVIRTIO_NESTED_CACHE}
            --batch-run ${_nested_batch_dir} --timeout 1500 --
            ${CMAKE_CTEST_COMMAND} --test-dir ${CMAKE_BINARY_DIR}
            -L ^nested$ -FS nested_kvm -j1 --timeout 300)
  # TIMEOUT: a backstop; the runner's own deadlines (boot 120 s, run 1500 s)
  # fire first. A first run also installs QEMU and fetches the kernel.
  # RESOURCE_LOCK: one outer VM at a time (other tests that boot one, such
  # as kvm_linux.*, take the same lock): each keeps a core busy, and two
  # would leave nothing for the rest of ctest -j2.
  set_tests_properties(nested_kvm.batch PROPERTIES
    FIXTURES_SETUP nested_kvm SKIP_RETURN_CODE 77 TIMEOUT 2400
    LABELS nested_setup RESOURCE_LOCK nested_qemu)
endfunction()
