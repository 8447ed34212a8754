"""Safe parsing and building of the flat XML documents WeChat exchanges.

Parsing runs expat directly (the C parser, no element tree) with any document type declaration refused
at its first byte, so there is nothing to expand (billion laughs) and no external entity (XXE) to fetch; a
pay notify is parsed on every request and the pure-Python tree builder of defusedxml cost it ~15 % of
its CPU. The same documents are accepted and refused as with defusedxml's forbid_dtd/entities/external.

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
from xml.parsers import expat

from wechat.errors import WeChatXMLError

_TAG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_XML_ILLEGAL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class _Forbidden(Exception):
    pass


class _Node:
    __slots__ = ("tag", "text", "children")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.text: list[str] = []  # text before the first child element (ElementTree's .text)
        self.children: list[_Node] = []


def _forbid(*_: object) -> int:
    raise _Forbidden("DTDs, entities and external references are forbidden")


def _tag(name: str) -> str:
    # expat with namespace processing gives "uri}local"; ElementTree (and so defusedxml) writes "{uri}local"
    return "{" + name if "}" in name else name


def _parse_root(data: bytes | str) -> _Node:
    """Parse a document with expat (DTDs, entities and external references forbidden) into a small tree."""
    if not data or not data.strip():
        raise WeChatXMLError("empty XML document")
    parser = expat.ParserCreate(None, "}")
    parser.StartDoctypeDeclHandler = _forbid
    parser.EntityDeclHandler = _forbid
    parser.UnparsedEntityDeclHandler = _forbid
    parser.ExternalEntityRefHandler = _forbid
    parser.buffer_text = True
    stack: list[_Node] = []
    roots: list[_Node] = []

    def start(name: str, _attributes: object) -> None:
        node = _Node(_tag(name))
        if stack:
            stack[-1].children.append(node)
        else:
            roots.append(node)
        stack.append(node)

    def end(_name: str) -> None:
        stack.pop()

    def text(chunk: str) -> None:
        if stack and not stack[-1].children:
            stack[-1].text.append(chunk)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except (expat.ExpatError, _Forbidden, ValueError) as exc:
        raise WeChatXMLError(f"invalid or forbidden XML: {exc}") from exc
    return roots[0]


def _leaf_fields(node: _Node) -> dict[str, str]:
    """Return the leaf children of `node` as {tag: stripped text}; duplicate tags are rejected."""
    fields: dict[str, str] = {}
    for child in node.children:
        if child.children:
            continue
        if child.tag in fields:
            raise WeChatXMLError(f"duplicate element <{child.tag}>")
        fields[child.tag] = "".join(child.text).strip()
    return fields


def parse_xml(data: bytes | str) -> dict[str, str]:
    """Parse a WeChat XML body into {tag: text} of the root's leaf children (text stripped)."""
    return _leaf_fields(_parse_root(data))


def parse_xml_list(data: bytes | str, container: str) -> list[dict[str, str]]:
    """Return one {tag: text} dict per child of the top-level `container` element ([] if absent)."""
    root = _parse_root(data)
    found = [child for child in root.children if child.tag == container]
    if len(found) > 1:
        raise WeChatXMLError(f"duplicate element <{container}>")
    if not found:
        return []
    return [_leaf_fields(item) for item in found[0].children]


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
