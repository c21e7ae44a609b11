# Benchmarks: one line per executable, sources relative to bench/.
#   libvirtio_add_bench(<name> <src>...)   (sources use BENCHMARK_MAIN())
#
# libvirtio_add_bench(ring_bench ring_bench.cc)
libvirtio_add_bench(ring_bench ring_bench.cc)
libvirtio_add_bench(blk_bench blk_bench.cc)
libvirtio_add_bench(net_bench net_bench.cc)
libvirtio_add_bench(net_one_way_bench net_one_way_bench.cc)
# vhost-user-blk IOPS through libvirtio::vhost_user_frontend
# (vhost_user/frontend), against the daemon (scripts/bench-vhost-user-blk.sh).
if(LIBVIRTIO_GLUE_VHOST_USER)
  libvirtio_add_bench(vhost_user_blk_bench vhost_user_blk_bench.cc)
  target_link_libraries(vhost_user_blk_bench PRIVATE libvirtio::vhost_user_frontend)
endif()
# CPU-to-CPU cache-line round trip: the placement probe the net/blk
# benchmark scripts print next to each measurement.
libvirtio_add_bench(core_round_trip_bench core_round_trip_bench.cc)
