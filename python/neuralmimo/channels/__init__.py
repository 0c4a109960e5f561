"""Channel models (one file per model family) and the one table of their names.

* :mod:`.base` -- :class:`ChannelModel`, block-fading processes, :func:`transmit`
* :mod:`.fading` -- i.i.d. Rayleigh, Kronecker, local scattering [HM], time-varying correlated
* :mod:`.deepsic_sed` -- the DeepSIC synthetic channel [MH], users joining and leaving
* :mod:`.umi` -- 3GPP TR 38.901 UMi NLoS tasks [LG] (generation needs Sionna, the lab environment)
* :mod:`.planewave` -- fixed-geometry plane-wave tasks (a site whose scatterers stay put)
* :mod:`.anchored` -- within-task diversity: channels mixed into one fixed channel of their task
* :mod:`.external` -- channels from .mat (v5, v7.3), HDF5 and .npz files through a mapping file
* :mod:`.impairments` -- carrier frequency offset
* :mod:`.registry` -- :data:`CHANNELS`, :class:`ChannelSpec`, :func:`make_channel`
"""

from .anchored import AnchoredChannel, anchor_mix
from .base import BlockFadingProcess, ChannelModel, crandn, empirical_covariance, hermitian_sqrt, transmit, vec_columns
from .deepsic_sed import DeepSICSynthetic, SEDBlock, beamformed_gains, sed_matrix, user_counts
from .fading import (IIDRayleigh, IIDRealGaussian, Kronecker, LocalScattering, TimeVaryingCorrelated,
                     exponential_correlation, jakes_rho, local_scattering_covariance)
from .external import ChannelFileError, ChannelMapping, FileChannel, load_channels
from .impairments import apply_cfo
from .planewave import PlaneWaveTaskChannel, plane_wave_task
from .registry import CHANNELS, ChannelSpec, describe_channels, make_channel

__all__ = ["AnchoredChannel", "anchor_mix", "PlaneWaveTaskChannel", "plane_wave_task", "empirical_covariance",
           "BlockFadingProcess", "ChannelModel", "crandn", "hermitian_sqrt", "transmit", "vec_columns",
           "DeepSICSynthetic", "SEDBlock", "beamformed_gains", "sed_matrix", "user_counts", "IIDRayleigh", "IIDRealGaussian",
           "Kronecker", "LocalScattering", "TimeVaryingCorrelated", "exponential_correlation", "jakes_rho",
           "local_scattering_covariance", "ChannelFileError", "ChannelMapping", "FileChannel", "load_channels", "apply_cfo", "CHANNELS", "ChannelSpec", "describe_channels", "make_channel"]
