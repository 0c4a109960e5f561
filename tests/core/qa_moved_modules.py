"""Modules that moved into receiver/ and site/ keep their old names for one release: the old
name imports the new module itself (one object, so state and isinstance checks are shared) with
a DeprecationWarning that names the new place; the new names import without a warning."""

import importlib
import subprocess
import sys
import warnings

import pytest

import neuralmimo


@pytest.mark.parametrize("old,new", sorted(neuralmimo.MOVED.items()))
def test_an_old_name_is_the_new_module_with_a_deprecation_warning(old, new):
    module = importlib.import_module(new)
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alias = importlib.import_module(old)
    assert alias is module and alias.__name__ == new and alias.__spec__.name == new
    assert [w.category for w in caught] == [DeprecationWarning] and new in str(caught[0].message)


def test_from_imports_of_old_names_work_in_a_fresh_interpreter_and_new_names_warn_nothing():
    code = ("import warnings\nwarnings.simplefilter('error')\n"
            "from neuralmimo.receiver.frames import FrameLayout\nfrom neuralmimo.site.drift import DriftWatch\n"
            "warnings.simplefilter('ignore')\n"
            "from neuralmimo.frames import FrameLayout as F\nfrom neuralmimo import drift\n"
            "from neuralmimo.sync import PilotAligner\n"
            "assert F is FrameLayout and drift.DriftWatch is DriftWatch\n"
            "assert PilotAligner.__module__ == 'neuralmimo.receiver.alignment'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
