"""Received HTML made safe to show a person (the dashboard's message frame).

Mail is hostile until proven otherwise: it may carry scripts, event handlers, `javascript:` links,
refreshes, forms, and remote content that tells its sender the mail was opened. The HTML is cleaned by
ammonia (through nh3), a maintained sanitiser, to a list of presentational tags and attributes, and
remote images are dropped unless the person asked for them. What is shown is also served under a
Content-Security-Policy that loads nothing (services/ingress/ui): this is the first of two fences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import nh3

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup", "dd", "del", "div", "dl",
    "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p", "pre",
    "q", "s", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
    "tr", "tt", "u", "ul",
}  # fmt: skip
ATTRIBUTES = {
    "*": {"align", "dir", "lang", "title", "style", "valign", "width", "height"},
    "a": {"href"},
    "img": {"src", "alt", "border"},
    "font": {"color", "face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "bgcolor"},
    "td": {"colspan", "rowspan", "bgcolor", "nowrap"},
    "th": {"colspan", "rowspan", "bgcolor", "nowrap"},
    "tr": {"bgcolor"},
    "ol": {"start", "type"},
    "col": {"span"},
}
# Inline style properties kept: layout, colour and type. None of them takes a URL (no `background`,
# `background-image`, `list-style-image`, `border-image`, `content`, `cursor`), so no style loads anything.
STYLE_PROPERTIES = {
    "background-color", "border", "border-bottom", "border-collapse", "border-color", "border-left",
    "border-radius", "border-right", "border-spacing", "border-style", "border-top", "border-width", "color",
    "display", "font", "font-family", "font-size", "font-style", "font-weight", "height", "letter-spacing",
    "line-height", "margin", "margin-bottom", "margin-left", "margin-right", "margin-top", "max-width",
    "min-width", "padding", "padding-bottom", "padding-left", "padding-right", "padding-top", "text-align",
    "text-decoration", "text-transform", "vertical-align", "white-space", "width", "word-break",
}  # fmt: skip
# The cleaner's time grows with the square of how deep tags nest (20,000 levels: about a second), and
# depth is at most the number of tags: past this many, a message's HTML is not shown (its text is).
MAX_TAGS = 20_000
OPENING_TAG = re.compile(r"<[A-Za-z]")
LINK_SCHEMES = ("http:", "https:", "mailto:")
REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
INLINE_IMAGE = re.compile(r"^data:image/(png|gif|jpeg|webp);base64,[a-z0-9+/=\s]*$", re.IGNORECASE)


@dataclass(frozen=True)
class Cleaned:
    html: str
    remote_images: int  # remote images found (dropped unless they were asked for)
    too_complex: bool = False  # more than MAX_TAGS tags: nothing is shown of it


def clean(html: str, *, remote_images: bool = False) -> Cleaned:
    """`html` with nothing that runs, navigates by itself or submits; remote images kept only if asked.
    It takes up to about a second of CPU (with Python's GIL released): call it off an event loop."""
    if len(OPENING_TAG.findall(html)) > MAX_TAGS:
        return Cleaned("", 0, too_complex=True)
    found = 0

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal found
        if attribute == "href":
            return value if value.strip().lower().startswith(LINK_SCHEMES) else None
        if tag == "img" and attribute == "src":
            if REMOTE.match(value):
                found += 1
                return value if remote_images else None
            return value if INLINE_IMAGE.match(value) else None
        return value

    cleaned = nh3.clean(
        html,
        tags=TAGS,
        clean_content_tags={"script", "style", "title", "head", "noscript", "template", "iframe", "object"},
        attributes=ATTRIBUTES,
        attribute_filter=keep,
        url_schemes={"http", "https", "mailto", "data"},
        filter_style_properties=STYLE_PROPERTIES,
        set_tag_attribute_values={"a": {"target": "_blank"}},
        link_rel="noopener noreferrer",
    )
    return Cleaned(cleaned, found)
