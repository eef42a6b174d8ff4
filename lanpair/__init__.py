"""lanpair: photos and files from your phone to your PC over the local network."""

__version__ = "0.1.0"
