# Fuzzers: one line per libFuzzer target, source relative to fuzz/.
#   libvirtio_add_fuzzer(<name> <src>)   (<src> defines LLVMFuzzerTestOneInput)
#
# libvirtio_add_fuzzer(split_queue_fuzzer split_queue_fuzzer.cc)
# libvirtio_add_fuzzer(packed_queue_fuzzer packed_queue_fuzzer.cc)
libvirtio_add_fuzzer(ring_fuzzer ring_fuzzer.cc)
libvirtio_add_fuzzer(guest_memory_fuzzer guest_memory_fuzzer.cc)
libvirtio_add_fuzzer(mmio_fuzzer mmio_fuzzer.cc)
libvirtio_add_fuzzer(pci_fuzzer pci_fuzzer.cc)
libvirtio_add_fuzzer(blk_fuzzer blk_fuzzer.cc)
libvirtio_add_fuzzer(console_fuzzer console_fuzzer.cc)
# glue/xen ioreq dispatch (self-contained: compiles the Xen simulator in,
# since the fuzz preset may not build the glue).
libvirtio_add_fuzzer(xen_ioreq_fuzzer xen_ioreq_fuzzer.cc)
target_include_directories(xen_ioreq_fuzzer PRIVATE
  "${PROJECT_SOURCE_DIR}/glue/xen/include" "${PROJECT_SOURCE_DIR}/glue/xen")
foreach(_sim IN ITEMS sim_xen sim_device_model sim_foreign_memory
                      sim_grant_table sim_evtchn sim_vcpu)
  target_sources(xen_ioreq_fuzzer PRIVATE
    "${PROJECT_SOURCE_DIR}/glue/xen/sim/${_sim}.cc")
endforeach()
libvirtio_add_fuzzer(net_fuzzer net_fuzzer.cc)
# vhost-user protocol handler (libvirtio::vhost_user) on the daemon's devices:
# linked with glue/vhost-user's vhost_user_devices
# (target defined later; resolved at generate time).
if(LIBVIRTIO_GLUE_VHOST_USER)
  libvirtio_add_fuzzer(vhost_user_fuzzer vhost_user_fuzzer.cc)
  target_link_libraries(vhost_user_fuzzer PRIVATE vhost_user_devices)
else()
  message(STATUS "fuzz/: vhost_user_fuzzer needs LIBVIRTIO_GLUE_VHOST_USER=ON; "
                 "not built")
endif()
