# shellcheck shell=sh
# The architecture and libc of a target, detected the same way by the fast transport
# (plugins/plugin_utils/binary_transport.py, which reads this file) and by the roles
# (veza.pgbackrest.pgbackrest, tasks_from: platform): plain sh, no Python needed.
# Its output is read by parse_probe, the veza.pgbackrest.probe_platform filter.
echo "arch=$(uname -m 2>/dev/null)"
echo "glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null)"
echo "ldd=$(ldd --version 2>&1 | head -n 2 | tr '\n' ' ')"
