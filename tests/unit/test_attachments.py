"""Which attached files the core refuses, and how it names them (services/ingress/core/attachments.py)."""

from __future__ import annotations

import os

import pytest

from schemas.events import Content
from schemas.limits import MB
from services.ingress.core.attachments import Upload, attach, check, check_file
from services.ingress.core.errors import Invalid

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200)
PDF = b"%PDF-1.7\n" + bytes(200)
OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600)  # .doc, .xls, .ppt (and .msi) share it
ZIP = b"PK\x03\x04" + bytes(100)  # .zip, .docx, .xlsx, .odt, .epub...


def file(name: str, content_type: str, data: bytes) -> Upload:
    return Upload("attachments[0]", name, content_type, data)


@pytest.mark.parametrize(
    ("name", "content_type", "data"),
    [
        ("chart.png", "image/png", PNG),
        ("photo.jpg", "image/jpg", JPEG),  # a common alias of image/jpeg
        ("report.pdf", "application/pdf", PDF),
        ("budget.xls", "application/vnd.ms-excel", OLE2),  # the signature cannot tell Office 97 formats apart
        ("letter.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", ZIP),
        ("archive.zip", "application/zip", ZIP),
        ("page.html", "text/plain", b"<!DOCTYPE html><html></html>"),  # text formats are not judged
        ("data.bin", "application/octet-stream", PDF),
        ("unknown.png", "image/png", os.urandom(300)),  # bytes with no known signature: not judged
        ("notes.txt", "text/plain", "Grüße\n".encode()),
    ],
)
def test_files_that_are_what_they_say_pass(name: str, content_type: str, data: bytes) -> None:
    check_file(file(name, content_type, data))


@pytest.mark.parametrize(
    ("name", "content_type", "data", "words"),
    [
        ("setup.EXE", "application/octet-stream", b"x", "files of type .exe are blocked"),
        ("macro.vbs", "text/plain", b"x", "files of type .vbs are blocked"),
        ("tool", "application/x-msdownload", b"x", "files of type application/x-msdownload are blocked"),
        ("invoice.pdf", "application/pdf", b"MZ\x90\x00" + bytes(100), "the content is an executable"),
        (
            "plugin.dat",
            "application/octet-stream",
            b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(100),
            "the content is an executable",
        ),
        ("readme.txt", "text/plain", b"\x7fELF\x02\x01\x01" + bytes(100), "the content is an executable"),
        ("app", "application/octet-stream", b"\xcf\xfa\xed\xfe" + bytes(100), "the content is an executable"),
        ("photo.png", "image/png", PDF, "contentType is image/png but the content is application/pdf"),
        ("scan.pdf", "application/pdf", JPEG, "contentType is application/pdf but the content is image/jpeg"),
    ],
)
def test_blocked_or_mislabelled_files_are_refused_by_name(
    name: str, content_type: str, data: bytes, words: str
) -> None:
    with pytest.raises(Invalid, match=r"^attachments\[0\] \(") as refused:
        check_file(file(name, content_type, data))
    assert words in str(refused.value) and name in str(refused.value)


def test_the_file_that_crosses_25_mb_is_named() -> None:
    files = [
        Upload(f"attachments[{i}]", f"part-{i}.bin", "application/octet-stream", bytes(10 * MB))
        for i in range(3)
    ]
    with pytest.raises(
        Invalid, match=r"^attachments\[2\] \(part-2\.bin\): the attachments come to more than 25 MB"
    ):
        check(files)
    check(files[:2])


def test_a_message_over_10_mb_once_composed_is_refused() -> None:
    content = Content(subject="s", text="t")
    big = Upload(
        "attachments[0]", "video.bin", "application/octet-stream", bytes(8 * MB)
    )  # 10.8 MB in base64
    with pytest.raises(
        Invalid, match=r"^attachments \(video\.bin\): the message would be \d+ bytes once composed"
    ):
        attach(content, [big], "a@x.test", ["b@y.test"])
    attached, files = attach(
        content,
        [big.__class__("attachments[0]", "v.bin", big.content_type, bytes(7 * MB))],
        "a@x.test",
        ["b@y.test"],
    )
    assert [(a.filename, a.size) for a in attached.attachments] == [("v.bin", 7 * MB)]
    assert list(files) == [attached.attachments[0].sha256]


@pytest.mark.parametrize(
    ("name", "blocked"),
    [
        ("run.bat.", "bat"), ("run.bat ", "bat"), ("run.bat. . ", "bat"), ("run.js::$DATA", "js"),
        ("run.JS:hidden", "js"), ("setup\uff0eexe", "exe"), ("invoice.pdf.exe", "exe"), ("tool.EXE\u00a0", "exe"),
    ],
)  # fmt: skip
def test_a_blocked_type_is_judged_by_the_name_a_receiving_system_gives_the_file(name: str, blocked: str) -> None:
    """Trailing dots and spaces, NTFS streams and compatibility forms are dropped as Windows drops them."""
    with pytest.raises(Invalid, match=rf"files of type \.{blocked} are blocked"):
        check_file(file(name, "text/plain", b"echo hi\r\n"))


@pytest.mark.parametrize("name", ["Meeting: notes.txt", "report.pdf.", "v1.2 plan.txt"])
def test_names_that_only_look_odd_pass(name: str) -> None:
    check_file(file(name, "text/plain", b"plain words\n"))
