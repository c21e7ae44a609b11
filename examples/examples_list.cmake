# Examples: one line per executable, sources relative to examples/.
#   libvirtio_add_example(<name> <src>...)
#
# libvirtio_add_example(embed_split_queue embed_split_queue.cc)
libvirtio_add_example(mmio_rng mmio_rng.cc)
libvirtio_add_example(kvm_mini_vmm kvm_mini_vmm.cc)
if(LIBVIRTIO_BUILD_TESTS)
  set_tests_properties(example.kvm_mini_vmm PROPERTIES SKIP_RETURN_CODE 77 LABELS "example;kvm")
endif()
