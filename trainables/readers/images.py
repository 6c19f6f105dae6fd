"""Bounded decoding of user images: size and pixel limits, decoded completely, one line per
damaged file."""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
from typing import TYPE_CHECKING

from trainables.errors import UserInputError
from trainables.readers.files import refused_setting

if TYPE_CHECKING:
    from PIL import Image

#: The largest image file read.
MAX_IMAGE_BYTES = 256 * 2**20
#: The most pixels an image may decode to (8192 x 8192; 256 MiB as RGBA). PIL's own guard only
#: warns below twice its limit; this one is explicit and lower.
MAX_IMAGE_PIXELS = 8192 * 8192


def _image_errors() -> tuple[type[BaseException], ...]:
    import zlib

    from PIL import Image

    # What PIL's decoders raise for damaged data: OSError (truncated, broken streams), SyntaxError
    # (bad headers), ValueError/EOFError/struct.error/zlib.error (inconsistent or cut chunks),
    # IndexError/TypeError (plugins reading fields past a short or mangled header).
    return (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        TypeError,
        struct.error,
        zlib.error,
        Image.DecompressionBombError,
    )


def _as_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB. 16-bit grey (``I;16``, as 16-bit PNGs decode) is scaled to 8
    bits first: PIL's own conversion clips it, turning almost every pixel white."""
    if image.mode.startswith("I;16"):
        import numpy as np
        from PIL import Image

        grey = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image.convert("RGB")


def open_image(data: bytes, where: str, *, field: str) -> Image.Image:
    """The RGB image encoded in ``data``, decoded completely.

    ``where`` names the source (a file, or "N bytes"); a damaged, truncated or unknown image,
    or one of more than :data:`MAX_IMAGE_PIXELS` pixels, raises one line for ``field``.
    """
    from PIL import Image

    readable = "a readable image (PNG, JPEG, ...)"
    side = math.isqrt(MAX_IMAGE_PIXELS)
    too_many = f"an image of at most {MAX_IMAGE_PIXELS:,} pixels ({side} x {side})"
    errors = _image_errors()
    with warnings.catch_warnings():
        # PIL warns about images past its own limit before the lower one here refuses them.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise refused_setting(field, too_many, where, f"{width} x {height} pixels")
                probe.verify()  # checksums and structure, without decoding the pixels
            with Image.open(io.BytesIO(data)) as image:  # verify() leaves the image unusable
                image.load()
                return _as_rgb(image)
        except UserInputError:
            raise
        except Image.DecompressionBombError as error:  # PIL's own guard, far above this one
            counted = re.search(r"\((\d+) pixels\)", str(error))
            shown = f"{int(counted.group(1)):,} pixels" if counted else "more pixels than that"
            raise refused_setting(field, too_many, where, shown) from None
        except Image.UnidentifiedImageError:
            raise refused_setting(field, readable, where, "not an image format PIL knows") from None
        except errors as error:
            reason = " ".join(str(error).split())[:120] or type(error).__name__
            raise refused_setting(
                field, readable, where, f"damaged or truncated ({reason})"
            ) from None
