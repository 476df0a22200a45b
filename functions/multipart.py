"""multipart/form-data bodies (OpenAI's /v1/audio/transcriptions), parsed with the stdlib and bounded.

The body has already been size-checked by the adapter; here the number of parts, the size of each
part's headers and the boundary are bounded too, and every malformation (no boundary, no closing
delimiter, a part without a name, a repeated field) is a 400 naming it. File contents are returned
byte for byte (no line-ending or charset rewriting, which the ``email`` parser's payload handling
does not promise), so a recording arrives intact.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from .errors import BadRequest, UnsupportedMediaType

FORM_MEDIA_TYPE = "multipart/form-data"
MAX_PARTS = 32  # the OpenAI client sends at most a handful of fields
MAX_HEADER_BYTES = 8 << 10  # one part's header block


@dataclass(frozen=True)
class FormPart:
    """One field: its value bytes, and for a file its filename and content type."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    def text(self) -> str:
        """The value as text (form fields are UTF-8); 400 when it is not."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"form field {self.name!r} is not valid UTF-8 text") from None


def _header_params(value: str, header: str = "content-type") -> Message:
    message = Message()
    message[header] = value
    return message


def parse_form(content_type: str | None, body: bytes) -> dict[str, FormPart]:
    """The fields of a multipart/form-data body by name; 415 for another content type, 400 when malformed."""
    if not content_type or content_type.split(";", 1)[0].strip().lower() != FORM_MEDIA_TYPE:
        raise UnsupportedMediaType(f"content type {content_type.split(';', 1)[0].strip() if content_type else 'none'!r} "
                                   "is not supported here", hint=f"send {FORM_MEDIA_TYPE}")
    boundary = _header_params(content_type).get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise BadRequest(f"{FORM_MEDIA_TYPE} needs a boundary parameter of 1 to 70 characters")
    try:
        delimiter = b"\r\n--" + boundary.encode("ascii")
    except UnicodeEncodeError:
        raise BadRequest("the multipart boundary must be ASCII") from None
    # A leading CRLF makes the first delimiter look like every other one.
    pieces = (b"\r\n" + body).split(delimiter)
    if len(pieces) < 2:
        raise BadRequest("the form body has no part with the declared boundary")
    fields: dict[str, FormPart] = {}
    closed = False
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            closed = True
            break
        if len(fields) >= MAX_PARTS:
            raise BadRequest(f"the form has more than {MAX_PARTS} parts")
        part = _part(piece)
        if part.name in fields:
            raise BadRequest(f"form field {part.name!r} is repeated")
        fields[part.name] = part
    if not closed:
        raise BadRequest("the form body is truncated: no closing boundary")
    return fields


def _part(piece: bytes) -> FormPart:
    # After the delimiter: optional transport padding, CRLF, headers, an empty line, the content.
    line_end = piece.find(b"\r\n")
    if line_end < 0 or piece[:line_end].strip(b" \t"):
        raise BadRequest("a form part is malformed (no line break after its boundary)")
    head_end = piece.find(b"\r\n\r\n", line_end)
    if head_end < 0 or head_end - line_end > MAX_HEADER_BYTES:
        raise BadRequest("a form part's headers are missing, unterminated or too long")
    headers: dict[str, str] = {}
    if head_end > line_end:
        try:
            lines = piece[line_end + 2:head_end].decode("utf-8").split("\r\n")
        except UnicodeDecodeError:
            raise BadRequest("a form part's headers are not valid UTF-8") from None
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise BadRequest(f"a form part has a malformed header line {line[:60]!r}")
            headers[name.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise BadRequest("a form part has no Content-Disposition header")
    params = _header_params(disposition, "content-disposition")
    if params.get_content_disposition() != "form-data":
        raise BadRequest("a form part's Content-Disposition is not form-data")
    name = params.get_param("name", header="content-disposition")
    if not isinstance(name, str) or not name:
        raise BadRequest("a form part has no field name")
    filename = params.get_filename()
    return FormPart(name=name, data=piece[head_end + 4:], filename=filename, content_type=headers.get("content-type"))


__all__ = ["FORM_MEDIA_TYPE", "FormPart", "parse_form"]
