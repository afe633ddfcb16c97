# shellcheck shell=sh
# The architecture and libc of a target, detected by the fast transport
# (plugins/plugin_utils/binary_transport.py, which reads this file and its output, parse_probe):
# plain sh, no Python needed.
echo "arch=$(uname -m 2>/dev/null)"
echo "glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null)"
echo "ldd=$(ldd --version 2>&1 | head -n 2 | tr '\n' ' ')"
