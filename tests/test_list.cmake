# Unit tests: one line per test executable, sources relative to tests/.
#   libvirtio_add_test(<name> <src>...)
# links libvirtio::virtio, libvirtio::testing, GTest::gtest_main, GTest::gmock.
#
# libvirtio_add_test(spec_test spec_test.cc)
# libvirtio_add_test(guest_memory_test guest_memory_test.cc)
# libvirtio_add_test(split_queue_test split_queue_test.cc)
# libvirtio_add_test(packed_queue_test packed_queue_test.cc)
libvirtio_add_test(queue_test queue_test.cc)
libvirtio_add_test(split_queue_test split_queue_test.cc)
libvirtio_add_test(packed_queue_test packed_queue_test.cc)
libvirtio_add_test(spec_test spec_test.cc)
libvirtio_add_test(guest_memory_test guest_memory_test.cc)
libvirtio_add_test(property_test property_test.cc)
libvirtio_add_test(device_core_test device_core_test.cc)
libvirtio_add_test(rng_device_test rng_device_test.cc)
libvirtio_add_test(mmio_transport_test mmio_transport_test.cc)
libvirtio_add_test(pci_transport_test pci_transport_test.cc)
