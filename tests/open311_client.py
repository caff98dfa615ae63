"""An Open311 GeoReport v2 client written from the specification alone
(http://wiki.open311.org/GeoReport_v2 and its Service Discovery page), with httpx and
xml.etree: it imports nothing of this project and knows nothing of it but a discovery URL
and an API key. It is strict where the specification is: UTF-8 with an XML declaration
naming it, JSON answers as arrays, W3C times with a zone, the error bodies, a POST answered
with a service_request_id or a token and never both."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import httpx

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
W3C_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)")
# Elements whose children repeat: the lists of the specification's documents.
LISTS = {"services", "service_requests", "attributes", "values", "endpoints", "formats",
         "errors"}
BOOLEANS = {"metadata", "variable", "required"}
NUMBERS = {"lat": float, "long": float, "order": int}
TIMES = {"requested_datetime", "updated_datetime", "expected_datetime", "changeset"}


class GeoReportError(Exception):
    """An error answer: its HTTP status and the (code, description) pairs of its body."""

    def __init__(self, status: int, errors: list[tuple[int, str]]) -> None:
        super().__init__(f"{status}: {errors}")
        self.status, self.errors = status, errors


def _element(node: ET.Element) -> Any:
    if node.tag in LISTS:
        return [_element(child) for child in node]
    if len(node):
        return {child.tag: _element(child) for child in node}
    return node.text or ""


def _typed(value: Any, name: str = "") -> Any:
    """XML's text as the specification's types (JSON's values are checked the same way)."""
    if isinstance(value, list):
        return [_typed(item) for item in value]
    if isinstance(value, dict):
        return {key: _typed(item, key) for key, item in value.items()}
    if name in BOOLEANS:
        if isinstance(value, bool):
            return value
        assert value in ("true", "false"), (name, value)
        return value == "true"
    if name in NUMBERS:
        return None if value in ("", None) else NUMBERS[name](value)
    if name in TIMES and value not in ("", None):
        assert W3C_TIME.fullmatch(value), (name, value)
    return None if value == "" else value


class GeoReportClient:
    def __init__(self, discovery_url: str, api_key: str, fmt: str = "xml") -> None:
        self.http = httpx.Client(timeout=15)
        self.api_key, self.fmt = api_key, fmt
        self.discovery = self._read(discovery_url.replace(".xml", f".{fmt}"), "discovery")
        endpoint = next(e for e in self.discovery["endpoints"]
                        if e["specification"] == SPECIFICATION and e["type"] == "production")
        wanted = "text/xml" if fmt == "xml" else "application/json"
        assert wanted in endpoint["formats"], endpoint
        self.endpoint = endpoint["url"].rstrip("/")

    def close(self) -> None:
        self.http.close()

    # --- the wire -----------------------------------------------------------------------------

    def _parse(self, response: httpx.Response, document: str) -> Any:
        kind = response.headers.get("content-type", "")
        assert "charset=utf-8" in kind.lower().replace(" ", ""), kind
        raw = response.content
        raw.decode("utf-8")  # UTF-8 everywhere, or this raises
        if self.fmt == "xml":
            assert kind.startswith("text/xml"), kind
            assert raw.startswith(b'<?xml version="1.0" encoding="UTF-8"?>'), raw[:60]
            root = ET.fromstring(raw)
            if response.is_error:
                assert root.tag == "errors", raw[:200]
            else:
                assert root.tag == document, (root.tag, document)
            body = _element(root)
        else:
            assert kind.startswith("application/json"), kind
            body = response.json()
            if document in LISTS or response.is_error:
                assert isinstance(body, list), body  # arrays, even of one
        if response.is_error:
            raise GeoReportError(response.status_code, [
                (int(e["code"]), str(e["description"])) for e in body])
        return _typed(body)

    def _read(self, url: str, document: str, params: dict[str, str] | None = None) -> Any:
        return self._parse(self.http.get(url, params=params), document)

    # --- the methods of the specification -------------------------------------------------------

    def services(self) -> list[dict[str, Any]]:
        return self._read(f"{self.endpoint}/services.{self.fmt}", "services")

    def definition(self, service_code: str) -> dict[str, Any]:
        return self._read(f"{self.endpoint}/services/{service_code}.{self.fmt}",
                          "service_definition")

    def post(self, service_code: str, *, attributes: dict[str, str | list[str]] | None = None,
             **fields: str) -> dict[str, Any]:
        """POST a service request, form-encoded; attribute[code]=value, and for several
        values attribute[code][]=value each."""
        form: list[tuple[str, str]] = [("api_key", self.api_key),
                                       ("service_code", service_code)]
        form += [(name, value) for name, value in fields.items()]
        for code, value in (attributes or {}).items():
            if isinstance(value, list):
                form += [(f"attribute[{code}][]", v) for v in value]
            else:
                form.append((f"attribute[{code}]", value))
        response = self.http.post(
            f"{self.endpoint}/requests.{self.fmt}", content=urlencode(form).encode("ascii"),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        answers = self._parse(response, "service_requests")
        assert len(answers) == 1, answers
        answer = answers[0]
        has_id = answer.get("service_request_id") not in (None, "")
        has_token = answer.get("token") not in (None, "")
        assert has_id != has_token, answer  # one or the other, never both
        return answer

    def token(self, token: str) -> list[dict[str, Any]]:
        return self._read(f"{self.endpoint}/tokens/{token}.{self.fmt}", "service_requests")

    def requests(self, **filters: str) -> list[dict[str, Any]]:
        return self._read(f"{self.endpoint}/requests.{self.fmt}", "service_requests",
                          params=filters)

    def request(self, service_request_id: str) -> dict[str, Any]:
        found = self._read(f"{self.endpoint}/requests/{service_request_id}.{self.fmt}",
                           "service_requests")
        assert len(found) == 1, found
        return found[0]

    def answer_definition(self, service_code: str) -> dict[str, str | list[str]]:
        """Answers to a service's attributes as a person picking the first choices would
        give them: every variable one, from its values for the lists."""
        answers: dict[str, str | list[str]] = {}
        for attribute in sorted(self.definition(service_code)["attributes"] or [],
                                key=lambda a: a["order"]):
            if not attribute["variable"]:
                continue
            keys = [str(v["key"]) for v in attribute["values"] or []]
            answers[attribute["code"]] = {
                "singlevaluelist": lambda k: k[0], "multivaluelist": lambda k: k[:2],
                "number": lambda k: "12", "datetime": lambda k: "2026-11-24T20:00:00+08:00",
            }.get(attribute["datatype"], lambda k: "见描述")(keys)
        return answers

