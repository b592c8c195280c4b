"""stylecam: real-time video stylization (webcam or clip in, stylized frames out).

Heavy libraries (torch, diffusers, mediapipe, av, pyvirtualcam) are imported lazily by the modules that need them,
so ``stylecam --help`` stays fast.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stylecam")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
