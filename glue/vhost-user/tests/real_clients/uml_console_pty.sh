#!/usr/bin/env bash
# rc-timeout: 300
# uml_console.sh with the daemon's pty backend (console,backend=pty): the
# host side opens the pty's terminal (/dev/pts/N, from the daemon's log),
# closes it, lets a short-lived opener write a line, and opens it again.
#
# usage: uml_console_pty.sh PATH/TO/vhost-user-device CACHE_DIR
UML_CONSOLE_BACKEND=pty exec bash "$(dirname "${BASH_SOURCE[0]}")/uml_console.sh" "$@"
