"""Study names in URLs: whatever a name holds (``/``, ``%``, ``?``, ``#``, spaces, unicode, ``..``), it is
one path segment of the dashboard's URLs and reaches the route as it was written.

Three pieces, one rule:

- :func:`name_segment` writes a name as a segment: percent-encoded with nothing left safe (what the
  page's ``encName`` does with ``encodeURIComponent``); the names ``.`` and ``..`` get a literal ``=``
  after them, since browsers drop dot segments whether they are encoded or not (``%2E%2E`` too), and
  ``=`` is a character both encoders always escape, so a literal one never comes from a name;
- :func:`routing_path` is what the dashboard's ASGI middleware (caviar.web.app) routes on: the *raw*
  path, so an encoded ``/`` (``%2F``) stays inside its segment (servers decode it before routing);
- the ``segment`` path convertor (``{name:segment}`` in a route, caviar.web.app) decodes it back.

No web framework is imported here: the dashboard's data module writes its URLs with it too.
"""

from __future__ import annotations

from urllib.parse import quote, unquote_to_bytes

__all__ = ["DOT_MARK", "name_segment", "routing_path"]

#: Written after the names '.' and '..' in a URL (browsers would remove a dot segment).
DOT_MARK = "="
_DOTS = (".", "..")


def name_segment(name: str) -> str:
    """A study name as one URL path segment (see the module's docstring)."""
    return name + DOT_MARK if name in _DOTS else quote(name, safe="")


def routing_path(raw_path: bytes) -> str:
    """The path routes are matched on: each raw segment decoded, then only ``%`` and ``/`` escaped again,
    so a segment never splits and unquoting it gives back exactly the name."""
    out = []
    for raw in raw_path.split(b"/"):
        text = raw.decode("ascii", "replace")
        if text.removesuffix(DOT_MARK) in _DOTS and text.endswith(DOT_MARK):
            text = text.removesuffix(DOT_MARK)
        else:
            text = unquote_to_bytes(raw).decode("utf-8", "replace")
        out.append(text.replace("%", "%25").replace("/", "%2F"))
    return "/".join(out)
