"""gr-neuralmimo GNU Radio blocks, installed by CMake as ``gnuradio.neuralmimo``.

The blocks are thin adapters (stream I/O, tags, messages, threads) over the core library
:mod:`neuralmimo`, which holds all estimation and detection math. The tag contract between
them is :mod:`gnuradio.neuralmimo.tags`; the tools built from the blocks (demos, benchmarks,
fault injection) are :mod:`gnuradio.neuralmimo.apps`.
"""

from neuralmimo import MovedModules, __version__  # noqa: F401

# the tools moved into apps/ (release 0.1 -> 0.2): their old names import them, for one release,
# with a DeprecationWarning
MovedModules.install({f"gnuradio.neuralmimo.{m}": f"gnuradio.neuralmimo.apps.{m}"
                      for m in ("harness", "loopback", "stress", "adapt_demo", "faults")})

from .background_retrainer import background_retrainer  # noqa: F401
from .csi_logger import csi_logger  # noqa: F401
from .error_rate_probe import error_rate_probe  # noqa: F401
from .frame_recorder import frame_recorder  # noqa: F401
from .frame_sync import frame_sync  # noqa: F401
from .linear_detector import linear_detector  # noqa: F401
from .ls_channel_estimator import ls_channel_estimator  # noqa: F401
from .mimo_channel import mimo_channel  # noqa: F401
from .mimo_frame_source import mimo_frame_source  # noqa: F401
from .neural_detector import neural_detector  # noqa: F401
from .pulse_shaping import rrc_matched_filter, rrc_pulse_shaper  # noqa: F401
from .radio_impairments import radio_impairments  # noqa: F401
from .sigmf_source import sigmf_source  # noqa: F401
