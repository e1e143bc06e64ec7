"""tofu: an on-demand image resizing proxy."""

from tofu.signing import sign, signed_path, url_for

__version__ = "0.1.0"
__all__ = ["__version__", "sign", "signed_path", "url_for"]
