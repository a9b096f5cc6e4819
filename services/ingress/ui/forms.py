"""The dashboard's forms (WTForms): their fields, their validation, and the CSRF token every one carries
(WTForms' SessionCSRF, keyed by the session's seed; services/ingress/ui/sessions.py)."""

from __future__ import annotations

from typing import Any

from wtforms import Form, HiddenField, PasswordField, StringField, TextAreaField
from wtforms.csrf.session import SessionCSRF
from wtforms.validators import DataRequired, Length, Optional

from services.ingress.ui.sessions import TTL


class Protected(Form):
    """A form with nothing but its CSRF token (approve, cancel, retry, remove, log out)."""

    class Meta:
        csrf = True
        csrf_class = SessionCSRF
        csrf_field_name = "csrf_token"
        csrf_time_limit = TTL


class Login(Protected):
    api_key = PasswordField("API key", [DataRequired("api_key: is required")])


class Approve(Protected):
    if_updated_at = HiddenField("", [DataRequired("if_updated_at: is required"), Length(max=64)])


class Reject(Protected):
    reason = StringField(
        "Reason", [DataRequired("reason: is required"), Length(max=1000, message="reason: at most 1000 characters")]
    )


class EditDraft(Protected):
    subject = StringField("Subject", [Optional(), Length(max=998, message="subject: at most 998 characters")])
    text = TextAreaField("Text", [Optional()])
    html = TextAreaField("HTML", [Optional()])


class Reply(Protected):
    """A person's reply in a conversation. Its Idempotency-Key is made when the form is shown, so a form
    sent twice (a double click, a resubmission) sends once."""

    text = TextAreaField("Reply", [DataRequired("text: is required")])
    idempotency_key = HiddenField("", [DataRequired("idempotency_key: is required"), Length(max=255)])


class AddSuppression(Protected):
    address = StringField("Address", [DataRequired("address: is required")])


def bind(form: type[Protected], secret: bytes, context: dict[str, str], data: Any = None, **values: Any) -> Protected:
    """`form` bound to what was posted (`data`: aiohttp's MultiDict) or to `values`, and to a CSRF context."""
    return form(data, meta={"csrf_secret": secret, "csrf_context": context}, **values)


def csrf_refused(form: Protected) -> bool:
    return bool(form.csrf_token.errors)
