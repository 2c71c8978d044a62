"""Reads the account page (served HTML or a browser's rendered DOM) with html.parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


@dataclass
class AccountPage:
    title: str = ""
    h1: str = ""
    by_id: dict[str, Element] = field(default_factory=dict)
    # the statement table: header cells and body rows (label, cells), with their elements
    header: list[Element] = field(default_factory=list)
    rows: list[tuple[str, list[Element]]] = field(default_factory=list)
    # every table with an id: its rows (header row first), each a list of th/td cells
    tables: dict[str, list[list[Element]]] = field(default_factory=dict)
    circles: list[Element] = field(default_factory=list)
    polylines: list[Element] = field(default_factory=list)
    svg_texts: list[Element] = field(default_factory=list)
    svg: Element | None = None
    meta: list[dict[str, str]] = field(default_factory=list)
    scripts: int = 0
    external_refs: list[str] = field(default_factory=list)

    def row(self, label: str) -> list[str]:
        for name, cells in self.rows:
            if name == label:
                return [cell.text for cell in cells]
        raise KeyError(f"no row {label!r} in {[name for name, _ in self.rows]}")

    @property
    def labels(self) -> list[str]:
        return [name for name, _ in self.rows]

    @property
    def years(self) -> list[str]:
        return [cell.text for cell in self.header[1:]]

    def text_of(self, element_id: str) -> str:
        return self.by_id[element_id].text

    def table(self, table_id: str) -> list[list[str]]:
        """The texts of a table's cells, row by row (header row first)."""
        return [[cell.text for cell in row] for row in self.tables[table_id]]

    @property
    def year_points(self) -> list[Element]:
        return [circle for circle in self.circles if "point" in circle.classes]


_VOID = {"meta", "link", "br", "img", "input", "hr", "col", "base", "source", "wbr"}
_SVG_SELF_CLOSING = {"line", "polyline", "circle", "path", "rect"}


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = AccountPage()
        self.stack: list[Element] = []
        self.in_statement = False
        self.section: str | None = None  # thead / tbody
        self.current_row: list[Element] | None = None
        self.in_svg = False
        self.table_id: str | None = None
        self.table_row: list[Element] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        if tag == "meta":
            self.page.meta.append(element.attrs)
        if tag == "script":
            self.page.scripts += 1
        for name in ("src", "href"):
            if name in element.attrs:
                self.page.external_refs.append(element.attrs[name])
        if tag == "link":
            self.page.external_refs.append(element.attrs.get("href", ""))
        if "id" in element.attrs:
            self.page.by_id[element.attrs["id"]] = element
        if tag == "table" and element.attrs.get("id") == "statement":
            self.in_statement = True
        if tag == "table" and "id" in element.attrs:
            self.table_id = element.attrs["id"]
            self.page.tables[self.table_id] = []
        if self.table_id is not None:
            if tag == "tr":
                self.table_row = []
            elif tag in {"th", "td"} and self.table_row is not None:
                self.table_row.append(element)
        if self.in_statement:
            if tag in {"thead", "tbody"}:
                self.section = tag
            elif tag == "tr":
                self.current_row = []
            elif tag in {"th", "td"} and self.current_row is not None:
                self.current_row.append(element)
        if tag == "svg":
            self.in_svg = True
            self.page.svg = element
        if self.in_svg:
            if tag == "circle":
                self.page.circles.append(element)
            elif tag == "polyline":
                self.page.polylines.append(element)
            elif tag == "text":
                self.page.svg_texts.append(element)
        if tag not in _VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        while self.stack:
            element = self.stack.pop()
            if element.tag == "title" and not self.in_svg and not self.page.title:
                self.page.title = element.text
            if element.tag == "h1":
                self.page.h1 = element.text
            if element.tag == tag:
                break
        if tag == "svg":
            self.in_svg = False
        if self.table_id is not None:
            if tag == "tr" and self.table_row is not None:
                self.page.tables[self.table_id].append(self.table_row)
                self.table_row = None
            elif tag == "table":
                self.table_id = None
        if self.in_statement:
            if tag == "tr" and self.current_row is not None:
                if self.section == "thead":
                    self.page.header = self.current_row
                else:
                    label, *cells = self.current_row
                    self.page.rows.append((label.text, cells))
                self.current_row = None
            elif tag == "table":
                self.in_statement = False

    def handle_data(self, data: str) -> None:
        for element in self.stack:  # every open element gets its descendants' text
            element.text += data


def parse_account_page(document: str) -> AccountPage:
    parser = _Parser()
    parser.feed(document)
    parser.close()
    for element in parser.page.by_id.values():
        element.text = element.text.strip()
    for _, cells in parser.page.rows:
        for cell in cells:
            cell.text = cell.text.strip()
    for cell in parser.page.header:
        cell.text = cell.text.strip()
    for rows in parser.page.tables.values():
        for row in rows:
            for cell in row:
                cell.text = cell.text.strip()
    parser.page.h1 = parser.page.h1.strip()
    return parser.page
