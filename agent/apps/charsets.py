"""Which Python codec turns a declared charset into UTF-8 — shared by the content parsers.

Everything the classifier scans is UTF-8 (or ASCII): parsers transcode declared charsets
with the codec this returns. The GB family maps to gb18030, a superset of GB2312 and GBK,
because servers and mailers routinely label GBK text "gb2312".
"""

from __future__ import annotations

import codecs
from functools import lru_cache

GB_FAMILY = frozenset(("gbk", "gb2312", "gb18030", "x-gbk", "cp936", "euc-cn", "csgb2312", "ms936", "windows-936"))
PASS_THROUGH = frozenset(("utf-8", "utf8", "ascii", "us-ascii", "unicode-1-1-utf-8", "x-user-defined"))


@lru_cache(maxsize=128)
def codec_for(charset: str | None) -> str | None:
    """The Python codec to transcode a charset to UTF-8 with; None: pass the bytes through."""
    if not charset:
        return None
    cs = charset.strip().strip("\"'").lower()
    if cs in PASS_THROUGH:
        return None
    if cs in GB_FAMILY:
        return "gb18030"
    try:
        info = codecs.lookup(cs)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name == "utf-8":
        return None        # bytes-to-bytes codecs (base64, zlib) are not charsets
    return info.name
