"""gr-neuralmimo GNU Radio blocks, installed by CMake as ``gnuradio.neuralmimo``.

The blocks are thin adapters (stream I/O, tags, messages, threads) over the core library
:mod:`neuralmimo`, which holds all estimation and detection math.
"""

from neuralmimo import __version__  # noqa: F401
