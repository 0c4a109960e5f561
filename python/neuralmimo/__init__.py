"""gr-neuralmimo core library: classical and learned MIMO detection in batched PyTorch.

No GNU Radio import anywhere in this package: it runs in the GNU Radio (rx) environment with
numpy < 2 and in the lab environment with numpy 2 and Sionna. The rooms are described in
``docs/architecture.md``: cross-cutting leaves at this level, then ``receiver``, ``site``,
``training``, ``channels``, ``datasets``, ``detectors`` and ``lab``.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# Modules that moved into the receiver/ and site/ rooms (release 0.1 -> 0.2). Their old names
# still import, for one release, with a DeprecationWarning; the old name is the new module.
MOVED = {
    "neuralmimo.frames": "neuralmimo.receiver.frames",
    "neuralmimo.estimation": "neuralmimo.receiver.estimation",
    "neuralmimo.sync": "neuralmimo.receiver.alignment",
    "neuralmimo.pulse": "neuralmimo.receiver.pulse",
    "neuralmimo.preamble": "neuralmimo.receiver.preamble",
    "neuralmimo.framesync": "neuralmimo.receiver.framesync",
    "neuralmimo.capture": "neuralmimo.receiver.capture",
    "neuralmimo.csilog": "neuralmimo.site.csilog",
    "neuralmimo.drift": "neuralmimo.site.drift",
    "neuralmimo.retrain": "neuralmimo.site.retrain",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports each old module name of ``table`` (``{old: new}``) as its new module (one object,
    two names) with a ``DeprecationWarning``. :meth:`install` puts one on ``sys.meta_path``."""

    def __init__(self, table: dict[str, str]):
        self.table = dict(table)
        self._specs: dict[str, object] = {}  # new name -> its own spec (per name: imports may run in parallel)

    @classmethod
    def install(cls, table: dict[str, str]) -> None:
        if not any(isinstance(f, cls) and f.table == table for f in sys.meta_path):
            sys.meta_path.append(cls(table))

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.table:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = self.table[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old name goes away in the next release",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs[new] = module.__spec__  # the import machinery writes the old name's spec over it
        return module

    def exec_module(self, module):
        module.__spec__ = self._specs[module.__name__]  # the new module ran when it was imported


MovedModules.install(MOVED)
