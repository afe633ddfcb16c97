"""Filters for the roles, which install module binaries as programs: the build of a module that
the fast transport would run on a host, chosen by the transport's own functions
(plugins/plugin_utils/binary_transport.py), and the platform read from the transport's probe.
"""

import os

from ansible.errors import AnsibleFilterError
from ansible_collections.veza.pgbackrest.plugins.plugin_utils.binary_transport import (
    BUILDS, as_platform, available_builds, no_build_message, parse_probe, pick_build)

#: This collection's root, plugins/modules (NAME: the default build) and the builds
#: (files/bin/<rust target>/NAME).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES_DIR = os.path.join(ROOT, "plugins", "modules")
BIN_DIR = os.path.join(ROOT, BUILDS)


def module_build(name, platform=None):
    """The controller path of module `name`'s build for `platform`, as the transport picks it.

    Without a platform: plugins/modules/NAME (the default build), which is what the transport
    falls back to, through Ansible's normal path, when it cannot detect the target.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise AnsibleFilterError(f"module_build: {name!r} is not a module name")
    given = as_platform(platform)
    if given is None:
        if platform:
            raise AnsibleFilterError(f"module_build: {platform!r} is not a platform "
                                     "({arch, libc, libc_version})")
        return os.path.join(MODULES_DIR, name)
    builds = available_builds(BIN_DIR, name)
    path = pick_build(builds, given)
    if path is None:
        raise AnsibleFilterError(no_build_message(f"veza.pgbackrest.{name}", given, builds))
    return path


def probe_platform(stdout):
    """The platform {arch, libc, libc_version} from files/platform-probe.sh's output, or None."""
    return parse_probe(stdout or "")


class FilterModule:
    def filters(self):
        return {"module_build": module_build, "probe_platform": probe_platform}
