"""The receiver front end (no GNU Radio): frame layout and pilots (``frames``), LS channel
estimation (``estimation``), count-framing re-acquisition from the pilot residual
(``alignment``), pulse shaping and interpolation (``pulse``), the Zadoff-Chu preamble and its
thresholds (``preamble``), the preamble frame synchroniser (``framesync``) and SigMF captures
(``capture``). The GNU Radio blocks in ``gnuradio.neuralmimo`` are thin adapters over these.

Import the modules themselves (``from neuralmimo.receiver.frames import FrameLayout``): this
package re-exports nothing, so importing one module loads no other (``capture`` needs ``sigmf``).
"""
