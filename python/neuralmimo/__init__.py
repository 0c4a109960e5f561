"""gr-neuralmimo core library: classical and learned MIMO detection in batched PyTorch.

No GNU Radio import anywhere in this package: it runs in the GNU Radio (rx) environment with
numpy < 2 and in the lab environment with numpy 2 and Sionna.
"""

__version__ = "0.1.0"
