"""veza.pgbackrest.pgbackrest_schedule: the fast binary transport.

Every module's action plugin is this one import: the transport is written once, in
plugins/plugin_utils/binary_transport.py.
"""
from ansible_collections.veza.pgbackrest.plugins.plugin_utils.binary_transport import ActionModule

__all__ = ["ActionModule"]
