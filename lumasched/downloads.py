"""The old home of ``lumasched.engine.downloads``, kept so existing imports keep working
(see docs/architecture.md for where everything lives now)."""

from lumasched.engine.downloads import *  # noqa: F403
from lumasched.engine.downloads import __all__ as __all__

# also importable from here in 0.1.0
from lumasched.errors import AssetTooLargeError as AssetTooLargeError
from lumasched.errors import DownloadError as DownloadError
from lumasched.errors import TooManyRedirects as TooManyRedirects
