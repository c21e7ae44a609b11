#!/usr/bin/env bash
# rc-timeout: 600
# qemu_migrate.sh with a packed ring (QEMU packed=on): live migration with
# the dirty log covering the descriptor-ring slots the device writes.
#
# usage: qemu_migrate_packed.sh PATH/TO/vhost-user-device CACHE_DIR
RC_MIGRATE_RING=packed
source "$(dirname "${BASH_SOURCE[0]}")/qemu_migrate.sh"
