"""Limits every dialect shares (SPEC 3.3): what a message may carry, stated once."""

from __future__ import annotations

MB = 1024 * 1024
CALLER_ATTACHMENTS_MAX = 25 * MB  # the files a caller attaches to one message, decoded
FINAL_MIME_MAX = 10 * MB  # the composed message as handed to the relay
ATTACHMENTS_MAX_COUNT = 100
FILENAME_MAX = 255
MAX_RECIPIENTS = 100  # To, Cc and Bcc of one message, in all

DEFAULT_DAILY_CAP = 150  # SPEC 2: an identity's daily cap unless set (every dialect's identities)
DEFAULT_HOURLY_LIMIT = 600  # a mailbox's sends in an hour unless set (its relay's usual allowance)
SCHEDULE_AHEAD_MAX_DAYS = 365  # SPEC 3.5: how far ahead a send may be scheduled

# Extensions mail providers refuse to carry (Gmail's list): executables, scripts, installers, disk
# images and shortcuts. Compared case-insensitively with the name's last extension.
BLOCKED_EXTENSIONS = frozenset(
    [
        "ade",
        "adp",
        "apk",
        "appx",
        "appxbundle",
        "bat",
        "cab",
        "chm",
        "cmd",
        "com",
        "cpl",
        "diagcab",
        "diagcfg",
        "diagpack",
        "dll",
        "dmg",
        "ex",
        "ex_",
        "exe",
        "hta",
        "img",
        "ins",
        "iso",
        "isp",
        "jar",
        "jnlp",
        "js",
        "jse",
        "lib",
        "lnk",
        "mde",
        "msc",
        "msi",
        "msix",
        "msixbundle",
        "msp",
        "mst",
        "nsh",
        "pif",
        "ps1",
        "scr",
        "sct",
        "shb",
        "sys",
        "vb",
        "vbe",
        "vbs",
        "vhd",
        "vxd",
        "wsc",
        "wsf",
        "wsh",
        "xll",
    ]
)
# Content types that are executables whatever the file is called.
BLOCKED_TYPES = frozenset(
    {
        "application/vnd.microsoft.portable-executable",
        "application/x-msdownload",
        "application/x-msdos-program",
        "application/x-dosexec",
        "application/x-executable",
        "application/x-elf",
        "application/x-mach-binary",
        "application/x-msi",
        "application/x-ms-shortcut",
        "application/java-archive",
        "application/x-sh",
        "application/x-bat",
        "application/hta",
        "application/javascript",
        "text/javascript",
        "application/x-javascript",
        "application/vbscript",
        "text/vbscript",
    }
)

# What a request body may carry beyond the configured limit for its files: the base64 (4 bytes for
# every 3) of half as much again as the files may be, so a set somewhat over the limit is answered
# with a 400 naming the file that crosses it, and a far larger body is a 413 read no further.
ATTACHMENTS_BODY = 4 * (CALLER_ATTACHMENTS_MAX * 3 // 2 // 3 + 1)
