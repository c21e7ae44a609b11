# Examples: one line per executable, sources relative to examples/.
#   libvirtio_add_example(<name> [NEEDS_KVM] <src>...)
#
# libvirtio_add_example(embed_split_queue embed_split_queue.cc)
libvirtio_add_example(mmio_rng mmio_rng.cc)
libvirtio_add_example(kvm_mini_vmm NEEDS_KVM kvm_mini_vmm.cc)
