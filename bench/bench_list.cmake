# Benchmarks: one line per executable, sources relative to bench/.
#   libvirtio_add_bench(<name> <src>...)   (sources use BENCHMARK_MAIN())
#
# libvirtio_add_bench(ring_bench ring_bench.cc)
libvirtio_add_bench(ring_bench ring_bench.cc)
libvirtio_add_bench(blk_bench blk_bench.cc)
libvirtio_add_bench(net_bench net_bench.cc)
