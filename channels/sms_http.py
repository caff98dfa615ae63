"""HTTP adapter of the SMS channel: the gateway's inbound webhook (POST /api/v1/sms/inbound),
in the widely used Twilio-compatible form.

The gateway posts a form (`From`, `To`, `Body`, `MessageSid`; other fields are signed but
otherwise ignored) signed with `X-Twilio-Signature` (channels.sms_signature). No account
calls it: the signature, keyed by `sms.twilio_auth_token`, is its authority; a missing or
wrong one is a 403 and nothing is stored. The URL it signs is `sms.webhook_url` when set
(the URL exactly as configured at the gateway), else the public URL rebuilt from the request
and a reverse proxy's `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Port`
(trusting them lets nobody in: they only say which URL the signature must sign).

Rate limits: per address before anything is read (`sms.inbound_per_address`), per sender
once the signature holds (`sms.inbound_per_number`: a forged post cannot use up a citizen's
allowance). The body is parsed here, strictly: not form-encoded 415, over 16 KiB 413, not
UTF-8 400. The answer is an empty TwiML `<Response/>`: replies go through the outbox, where
they are retried and recorded (channels.sms_inbound).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from flask import Response, abort, current_app, request
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.models import RawModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from accounts.access import PUBLIC, requires
from channels import sms_inbound, sms_signature
from core import limits, phones
from core.db import transaction
from core.schemas import ErrorBody, Query, Text
from tickets.policy import Policy

FORM = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 16 * 1024  # a gateway's post is about 1 KiB; a 500-character Body fits
MAX_FIELDS = 100
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
INBOUND = "/api/v1/sms/inbound"

sms_api = APIBlueprint("sms", __name__, url_prefix="/api/v1/sms", abp_tags=[Tag(name="sms")])
BLUEPRINTS = (sms_api,)


class InboundSms(BaseModel):
    """The form fields the hotline reads; the gateway's other fields are signed, not read."""

    model_config = ConfigDict(extra="ignore")

    From: Text(32, min_length=1) = Field(description="the sender's number (E.164)")
    To: Text(32) = Field("", description="the hotline's number it was sent to")
    Body: Text(sms_inbound.sms.MAX_TEXT) = Field("", description="the message's text")
    MessageSid: Text(80, min_length=1) = Field(
        description="the gateway's id of the message: a repeat is taken once")


class SignatureHeader(Query):
    signature: Text(200) = Field("", alias="X-Twilio-Signature",
                                 description="base64 HMAC-SHA1 of the URL and sorted fields, "
                                             "keyed by the gateway account's auth token")


class SignedForm(RawModel):
    mimetypes = [FORM]  # noqa: RUF012


def _form() -> list[tuple[str, str]]:
    if request.mimetype != FORM:
        abort(415, f"Content-Type: {FORM}")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        abort(413, f"body: at most {MAX_BODY_BYTES} bytes")
    raw = request.stream.read(MAX_BODY_BYTES + 1)  # chunked: stop one past
    if len(raw) > MAX_BODY_BYTES:
        abort(413, f"body: at most {MAX_BODY_BYTES} bytes")
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, encoding="utf-8",
                         errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        abort(400, "body: the form's text is not UTF-8")
    except ValueError:
        abort(400, f"body: at most {MAX_FIELDS} fields")


def _fields(params: list[tuple[str, str]]) -> InboundSms:
    given: dict[str, str] = {}
    for name, value in params:
        if name in InboundSms.model_fields and name in given:
            abort(400, f"{name}: given twice")
        given[name] = value
    try:
        return InboundSms.model_validate(given)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        names = ".".join(str(part) for part in first.get("loc", ()))
        text = "required" if first.get("type") == "missing" else str(first.get("msg", ""))
        abort(400, f"{names}: {text.removeprefix('Value error, ')}")


@sms_api.post("/inbound", summary="A citizen's text message from the SMS gateway (signed)",
              description="Twilio-compatible webhook: form fields `From`, `To`, `Body`, "
                          "`MessageSid`, signed with `X-Twilio-Signature`. Idempotent by "
                          "`MessageSid`. Answers an empty TwiML `<Response/>`; replies are "
                          "sent through the outbox.",
              responses={200: {"description": "taken (or a repeat): empty TwiML",
                               "content": {"text/xml": {"schema": {"type": "string"}}}},
                         **{code: ErrorBody for code in (400, 403, 413, 415, 429, 503)}})
@requires(PUBLIC)  # signed by the gateway instead: checked below, before anything is stored
def inbound(header: SignatureHeader, raw: SignedForm) -> Any:
    settings = current_app.extensions["hotline.settings"].sms
    limits.enforce(settings.inbound_per_address, scope="sms-address")
    params = _form()
    if not settings.twilio_auth_token:
        abort(403, "no SMS gateway is set up (sms.twilio_auth_token)")
    url = sms_signature.public_url(settings.webhook_url)
    if not sms_signature.valid(settings.twilio_auth_token, url, params, header.signature):
        abort(403, "X-Twilio-Signature: missing or wrong for this URL and form")
    fields = _fields(params)
    try:
        sender = phones.normalise(fields.From)
    except phones.PhoneError as exc:
        abort(400, f"From: {str(exc).removeprefix('phone: ')}")
    limits.enforce(settings.inbound_per_number, scope="sms-sender", key=sender)
    sms_inbound.check_text(fields.Body)
    sessions: sessionmaker[Session] = current_app.extensions["hotline.sessions"]
    rules = sms_inbound.Rules(settings.opt_out_words, settings.resubscribe_words,
                              settings.report_appeal_type)
    with transaction(sessions) as session:
        sms_inbound.take_in(session, phone=sender, text=fields.Body,
                            gateway_id=fields.MessageSid, rules=rules,
                            policy=Policy.of_app(current_app.extensions),
                            now=current_app.extensions["hotline.clock"].now())
    return Response(EMPTY_TWIML, 200, content_type="text/xml; charset=utf-8")


def _document_the_form() -> None:
    """The form's fields in the OpenAPI document (flask-openapi3 shows a raw body as a
    bare string): the request body refers to InboundSms's schema."""
    from flask_openapi3.models import Schema

    schema = InboundSms.model_json_schema(ref_template="#/components/schemas/{model}")
    sms_api.components_schemas["InboundSms"] = Schema(**schema)
    body = sms_api.paths[INBOUND].post.requestBody  # type: ignore[union-attr]
    body.content[FORM].media_type_schema = Schema(**{"$ref": "#/components/schemas/InboundSms"})
    body.required = True


_document_the_form()
