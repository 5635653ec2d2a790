"""matplotlib's SVG made fit for a strict Content-Security-Policy: ``style`` attributes and
``<style>`` rules become presentation attributes, metadata goes, a ``<title>`` is added."""

from __future__ import annotations

import xml.etree.ElementTree as ET

_SVG = "http://www.w3.org/2000/svg"
# Serialise SVG as SVG is written (default namespace, xlink:) rather than as ns0:, ns1:.
ET.register_namespace("", _SVG)
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")


def clean_svg(data: bytes, title: str | None = None) -> bytes:
    """The SVG with every ``style`` attribute and ``<style>`` rule turned into presentation
    attributes (matplotlib's properties are all presentation attributes too), without its
    metadata, and with ``title`` as its first child when given."""
    # matplotlib's own output, never outside input; its comments say what each text reads
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))  # noqa: S314
    root = ET.fromstring(data, parser)  # noqa: S314
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag == f"{{{_SVG}}}style":
                for rule in (child.text or "").split("}"):
                    selector, _, body = rule.partition("{")
                    if selector.strip() == "*":
                        _apply(root, body, override=False)
                parent.remove(child)
            elif child.tag == f"{{{_SVG}}}metadata":
                parent.remove(child)
    for element in root.iter():
        style = element.attrib.pop("style", None)
        if style:
            _apply(element, style, override=True)
    if title:
        heading = ET.Element(f"{{{_SVG}}}title")
        heading.text, heading.tail = title, "\n "
        root.insert(0, heading)
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            + ET.tostring(root, encoding="unicode")).encode()


def _apply(element: ET.Element, declarations: str, override: bool) -> None:
    for item in declarations.split(";"):
        key, _, value = item.partition(":")
        if key.strip() and (override or key.strip() not in element.attrib):
            element.set(key.strip(), value.strip())
