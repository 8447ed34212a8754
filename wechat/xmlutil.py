"""Safe parsing and building of the flat XML documents WeChat exchanges.

Parsing goes through defusedxml with DTDs forbidden, so entity expansion (billion laughs) and
external entities (XXE) are refused before any content is read.

`parse_xml` returns the root's *leaf* children only, as ``{tag: stripped text}``. Nested
elements (``<SubscribeMsgPopupEvent><List>..</List></SubscribeMsgPopupEvent>``, reply bodies
such as ``<Image><MediaId>..</MediaId></Image>``) are left out of that dict so its type stays
``dict[str, str]``; read them with `parse_xml_list`, which returns one flat dict per child of
the named container. A top-level leaf tag that appears twice is rejected: WeChat never sends one,
and accepting it would let "first" and "last" readers of the same body disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.etree.ElementTree import Element, ParseError

from defusedxml.ElementTree import fromstring

from wechat.errors import WeChatXMLError

_TAG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_XML_ILLEGAL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _parse_root(data: bytes | str) -> Element:
    """Parse a document with defusedxml (DTDs, entities and external references forbidden)."""
    if not data or not data.strip():
        raise WeChatXMLError("empty XML document")
    try:
        return fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    # defusedxml's DTDForbidden / EntitiesForbidden are ValueErrors, as are bad encodings.
    except (ParseError, ValueError) as exc:
        raise WeChatXMLError(f"invalid or forbidden XML: {exc}") from exc


def _leaf_fields(element: Element) -> dict[str, str]:
    """Return the leaf children of `element` as {tag: stripped text}; duplicate tags are rejected."""
    fields: dict[str, str] = {}
    for child in element:
        if len(child):
            continue
        if child.tag in fields:
            raise WeChatXMLError(f"duplicate element <{child.tag}>")
        fields[child.tag] = (child.text or "").strip()
    return fields


def parse_xml(data: bytes | str) -> dict[str, str]:
    """Parse a WeChat XML body into {tag: text} of the root's leaf children (text stripped)."""
    return _leaf_fields(_parse_root(data))


def parse_xml_list(data: bytes | str, container: str) -> list[dict[str, str]]:
    """Return one {tag: text} dict per child of the top-level `container` element ([] if absent)."""
    root = _parse_root(data)
    found = root.findall(container)
    if len(found) > 1:
        raise WeChatXMLError(f"duplicate element <{container}>")
    if not found:
        return []
    return [_leaf_fields(item) for item in found[0]]


def cdata(text: str) -> str:
    """Wrap text in CDATA, splitting any "]]>" so the section cannot be closed early."""
    if _XML_ILLEGAL_CHARS.search(text):
        raise ValueError("text contains characters that XML 1.0 cannot carry")
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _element(tag: str, value: object) -> str:
    """Render one element: str as CDATA, int bare, Mapping nested, list/tuple as repeated tags."""
    if not _TAG_NAME.match(tag):
        raise ValueError(f"invalid XML tag name: {tag!r}")
    if isinstance(value, bool):
        raise TypeError(f"<{tag}>: bool is ambiguous in WeChat XML; pass an int or a str")
    if isinstance(value, int):
        return f"<{tag}>{value}</{tag}>"
    if isinstance(value, str):
        return f"<{tag}>{cdata(value)}</{tag}>"
    if isinstance(value, Mapping):
        inner = "".join(_element(str(key), item) for key, item in value.items())
        return f"<{tag}>{inner}</{tag}>"
    if isinstance(value, list | tuple):
        return "".join(_element(tag, item) for item in value)
    raise TypeError(f"<{tag}>: unsupported value type {type(value).__name__}")


def to_xml(data: Mapping[str, object], root: str = "xml") -> str:
    """Build a compact WeChat XML document: str values as CDATA, ints bare, mappings nested."""
    return _element(root, data)
