"""feedparser on bytes already in memory: what `feedparser.parse` returns, for less work.

`parse_bytes(data, headers)` gives what ``feedparser.parse(data, response_headers=headers,
sanitize_html=False, resolve_relative_uris=False)`` gives (`tests/test_parse.py` compares the two on
every file of ``../shared/feeds`` and on the hostile bodies of the tests). It drives feedparser's
own classes (encoding detection, DOCTYPE handling, the strict SAX parser, the loose fallback) as
`feedparser.api.parse` does, with two costs removed, measured with callgrind on the 57 real feeds
(7.1 billion instructions for `parse_feed` before, 5.0 after):

* expat reports each run of text once (``buffer_text``) instead of once per line and per entity:
  a third of feedparser's Python calls (14 % of the instructions);
* in feedparser's ``_FeedParserMixin.pop``, copied below from feedparser 6.0 (pyproject.toml keeps
  6.0.x) with two changes marked (1) and (2): the cp1252 fix-up (``str.translate`` with a dict, a
  lookup and a caught KeyError per character of every non-ASCII text) runs only on a text that
  holds a character it changes (U+0080 to U+009F), 15 % of the instructions; and the content
  parameters kept with a text are copied as a dict, not through ``copy.deepcopy``: their values
  are strings, so the copies are the same.

Bytes are also never taken for a file name or a URL, as `feedparser.parse` takes a `bytes` body
that names an existing file (it reads that file instead).
"""

# pop() below is feedparser's code as it is, so that a diff against feedparser shows the two changes.
# ruff: noqa: SIM102, SIM105, SIM201

from __future__ import annotations

import base64
import binascii
import io
import re
import xml.sax
import xml.sax.expatreader
import xml.sax.handler
import xml.sax.xmlreader
from collections.abc import Mapping
from typing import Any

from feedparser.api import LooseFeedParser, StrictFeedParser
from feedparser.encodings import convert_to_utf8
from feedparser.html import _cp1252
from feedparser.sanitizer import replace_doctype
from feedparser.util import FeedParserDict

__all__ = ["parse_bytes"]

# What _cp1252 maps: the C1 controls that cp1252 text read as Latin-1 leaves.
_C1_RE = re.compile("[\u0080-\u009f]")
# expat's text buffer, in characters: a longer text still arrives in pieces, joined by feedparser.
_TEXT_BUFFER = 1 << 16


class _ExpatReader(xml.sax.expatreader.ExpatParser):
    """The SAX reader `xml.sax.make_parser` gives feedparser, with expat's text buffered."""

    def reset(self) -> None:
        super().reset()
        parser = self._parser  # type: ignore[attr-defined]  # typeshed does not list it
        parser.buffer_size = _TEXT_BUFFER
        parser.buffer_text = True


class _StrictParser(StrictFeedParser):  # type: ignore[misc]  # feedparser has no type information
    # feedparser 6.0's _FeedParserMixin.pop with changes (1) and (2) (see the module docstring), and
    # without the sanitiser and relative-URI branches, which parse_bytes turns off.
    def pop(self, element: str, strip_whitespace: int = 1) -> Any:
        if not self.elementstack:
            return None
        if self.elementstack[-1][0] != element:
            return None

        element, expecting_text, pieces = self.elementstack.pop()

        # Ensure each piece is a str for Python 3
        for (i, v) in enumerate(pieces):
            if isinstance(v, bytes):
                pieces[i] = v.decode('utf-8')

        if self.version == 'atom10' and self.contentparams.get('type', 'text') == 'application/xhtml+xml':
            # remove enclosing child element, but only if it is a <div> and
            # only if all the remaining content is nested underneath it.
            # This means that the divs would be retained in the following:
            #    <div>foo</div><div>bar</div>
            while pieces and len(pieces) > 1 and not pieces[-1].strip():
                del pieces[-1]
            while pieces and len(pieces) > 1 and not pieces[0].strip():
                del pieces[0]
            if pieces and (pieces[0] == '<div>' or pieces[0].startswith('<div ')) and pieces[-1] == '</div>':
                depth = 0
                for piece in pieces[:-1]:
                    if piece.startswith('</'):
                        depth -= 1
                        if depth == 0:
                            break
                    elif piece.startswith('<') and not piece.endswith('/>'):
                        depth += 1
                else:
                    pieces = pieces[1:-1]

        output = ''.join(pieces)
        if strip_whitespace:
            output = output.strip()
        if not expecting_text:
            return output

        # decode base64 content
        if base64 and self.contentparams.get('base64', 0):
            try:
                output = base64.decodebytes(output.encode('utf8')).decode('utf8')
            except (binascii.Error, binascii.Incomplete, UnicodeDecodeError):
                pass

        # resolve relative URIs
        if (element in self.can_be_relative_uri) and output:
            # do not resolve guid elements with isPermalink="false"
            if not element == 'id' or self.guidislink:
                output = self.resolve_uri(output)

        # decode entities within embedded markup
        if not self.contentparams.get('base64', 0):
            output = self.decode_entities(element, output)

        # some feed formats require consumers to guess
        # whether the content is html or plain text
        if not self.version.startswith('atom') and self.contentparams.get('type') == 'text/plain':
            if self.looks_like_html(output):
                self.contentparams['type'] = 'text/html'

        # remove temporary cruft from contentparams
        try:
            del self.contentparams['mode']
        except KeyError:
            pass
        try:
            del self.contentparams['base64']
        except KeyError:
            pass

        # (feedparser resolves relative URIs in and sanitises embedded markup here: both off.)

        if self.encoding and isinstance(output, bytes):
            output = output.decode(self.encoding, 'ignore')

        # address common error where people take data that is already
        # utf-8, presume that it is iso-8859-1, and re-encode it.
        if self.encoding in ('utf-8', 'utf-8_INVALID_PYTHON_3') and not isinstance(output, bytes):
            try:
                output = output.encode('iso-8859-1').decode('utf-8')
            except (UnicodeEncodeError, UnicodeDecodeError):
                pass

        # map win-1252 extensions to the proper code points
        if not isinstance(output, bytes) and not output.isascii() and _C1_RE.search(output):  # (1)
            output = output.translate(_cp1252)

        # categories/tags/keywords/whatever are handled in _end_category or
        # _end_tags or _end_itunes_keywords
        if element in ('category', 'tags', 'itunes_keywords'):
            return output

        if element == 'title' and -1 < self.title_depth <= self.depth:
            return output

        # store output in appropriate place(s)
        if self.inentry and not self.insource:
            if element == 'content':
                self.entries[-1].setdefault(element, [])
                contentparams = FeedParserDict(self.contentparams)  # (2)
                contentparams['value'] = output
                self.entries[-1][element].append(contentparams)
            elif element == 'link':
                if not self.inimage:
                    # query variables in urls in link elements are improperly
                    # converted from `?a=1&b=2` to `?a=1&b;=2` as if they're
                    # unhandled character references. fix this special case.
                    output = output.replace('&amp;', '&')
                    output = re.sub("&([A-Za-z0-9_]+);", r"&\g<1>", output)
                    self.entries[-1][element] = output
                    if output:
                        self.entries[-1]['links'][-1]['href'] = output
            else:
                if element == 'description':
                    element = 'summary'
                old_value_depth = self.property_depth_map.setdefault(self.entries[-1], {}).get(element)
                if old_value_depth is None or self.depth <= old_value_depth:
                    self.property_depth_map[self.entries[-1]][element] = self.depth
                    self.entries[-1][element] = output
                if self.incontent:
                    contentparams = FeedParserDict(self.contentparams)  # (2)
                    contentparams['value'] = output
                    self.entries[-1][element + '_detail'] = contentparams
        elif self.infeed or self.insource:  # and (not self.intextinput) and (not self.inimage):
            context = self._get_context()
            if element == 'description':
                element = 'subtitle'
            context[element] = output
            if element == 'link':
                # fix query variables; see above for the explanation
                output = re.sub("&([A-Za-z0-9_]+);", r"&\g<1>", output)
                context[element] = output
                context['links'][-1]['href'] = output
            elif self.incontent:
                contentparams = FeedParserDict(self.contentparams)  # (2)
                contentparams['value'] = output
                context[element + '_detail'] = contentparams
        return output


def parse_bytes(data: bytes, headers: Mapping[str, str]) -> Any:
    """``feedparser.parse(data, response_headers=headers, sanitize_html=False,
    resolve_relative_uris=False)``, for less work (see the module docstring); a FeedParserDict."""
    result = FeedParserDict(bozo=False, entries=[], feed=FeedParserDict(), headers={})
    if not data:
        return result
    result['headers'].update(headers)
    data = convert_to_utf8(result['headers'], data, result)
    use_strict_parser = bool(result['encoding'])
    result['version'], data, entities = replace_doctype(data)
    # No href and no Content-Location: feedparser's base URI is then "".
    baselang = result['headers'].get('content-language', None)
    parser: Any = None
    if use_strict_parser:
        parser = _StrictParser('', baselang, 'utf-8')
        parser.resolve_relative_uris = False
        parser.sanitize_html = False
        reader = _ExpatReader()
        reader.setFeature(xml.sax.handler.feature_namespaces, 1)
        reader.setFeature(xml.sax.handler.feature_external_ges, 0)
        reader.setContentHandler(parser)
        reader.setErrorHandler(parser)
        source = xml.sax.xmlreader.InputSource()
        source.setByteStream(io.BytesIO(data))
        try:
            reader.parse(source)
        except xml.sax.SAXException as e:
            result['bozo'] = 1
            result['bozo_exception'] = parser.exc or e
            use_strict_parser = False
    if not use_strict_parser:
        parser = LooseFeedParser('', baselang, 'utf-8', entities)
        parser.resolve_relative_uris = False
        parser.sanitize_html = False
        parser.feed(data.decode('utf-8', 'replace'))
    result['feed'] = parser.feeddata
    result['entries'] = parser.entries
    result['version'] = result['version'] or parser.version
    result['namespaces'] = parser.namespaces_in_use
    return result
