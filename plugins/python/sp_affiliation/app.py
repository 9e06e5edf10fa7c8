"""sp_affiliation as a Python plugin (contract dlink:pipeline@0.3.0), without an Arrow
library: the change rows arrive as plain lists (`values`, `offsets`, `validity` bytes)
and the keys go back the same way.

Every change row of the first upstream (its `diasng_id`) and of the second (its
`sp_id`) is a key `diasng_id`: inserts, deletes and both images of an update. Built by
`make plugins` with componentize-py into plugins/dist/sp_affiliation_py.wasm; the
`pipeline` resource is the class `Pipeline` in plugin.py (componentize-py looks for an
exported interface's resources in the module named after the interface).
"""

from wit_world import exports


class Plugin(exports.Plugin):
    """The `plugin` interface: only its `pipeline` resource (plugin.py)."""
