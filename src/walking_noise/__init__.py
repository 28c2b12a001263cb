"""walking-noise: how robust is a network, layer by layer, to noisy (analog, optical, in-memory) computation?

Reproduces and extends "Walking Noise" (Borras, Klein, Fröning): Gaussian noise injected into the activations
after every layer, globally or at one walking injection point, and robustness measured as the midpoint noise level.
"""

__version__ = "0.1.0"
