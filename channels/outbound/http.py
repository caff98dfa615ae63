"""The SMS gateway's status callbacks (短信回执回调): POST /api/v1/sms/status, as a
Twilio-compatible gateway sends them (form fields MessageSid, MessageStatus, ...), signed with
X-Twilio-Signature by the account's auth token. A wrong or missing signature is a 403 and
changes nothing; a final status (delivered, undelivered, failed) marks the message's part.
"""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from accounts.access import PUBLIC, requires
from channels import sms_signature
from channels.outbound import outbox, twilio
from core.db import transaction
from core.schemas import ErrorBody, Query, Text

sms_status_api = APIBlueprint("sms_status", __name__, url_prefix="/api/v1/sms",
                              abp_tags=[Tag(name="sms", description="短信 SMS")])


class SignatureHeader(Query):
    signature: Text(60) = Field("", alias="X-Twilio-Signature",
                                description="base64 HMAC-SHA1 of the URL and the fields")


class StatusCallback(BaseModel):
    """A status callback's form; other fields the gateway sends are allowed (and signed)."""

    model_config = ConfigDict(extra="allow")
    MessageSid: Text(80, 1)
    MessageStatus: Text(20, 1) = Field(description="queued, sent, delivered, undelivered, "
                                                   "failed ...")


class StatusAnswer(BaseModel):
    recorded: bool = Field(description="a final status that marked a known message")


@sms_status_api.post("/status", summary="A delivery status from the SMS gateway (signed)",
                     responses={200: StatusAnswer, 400: ErrorBody, 403: ErrorBody,
                                404: ErrorBody})
@requires(PUBLIC)  # signed with the gateway account's auth token instead
def status_callback(header: SignatureHeader, form: StatusCallback) -> Any:
    settings = current_app.extensions["hotline.settings"]
    fields = {k: v for k, v in request.form.items()}
    if not sms_signature.valid(settings.sms.twilio_auth_token,
                               sms_signature.public_url(settings.sms.status_callback_url),
                               list(request.form.items(multi=True)), header.signature):
        abort(403, "X-Twilio-Signature: does not match")
    sid, delivered = twilio.status_of(fields)
    if delivered is None:
        return {"recorded": False}
    now = current_app.extensions["hotline.clock"].now()
    with transaction(current_app.extensions["hotline.sessions"]) as session:
        message = outbox.record_receipt(session, "twilio", sid, delivered, now)
    if message is None:
        abort(404, "MessageSid: no message sent with this id")
    return {"recorded": True}
