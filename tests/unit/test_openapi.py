"""The OpenAPI document against the code: every /api/v1 route documented, nothing documented that is not served,
and the document valid OpenAPI 3.1 by openapi-spec-validator."""

from __future__ import annotations

import hashlib
import re

from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from blueprints.api.reference import openapi_document
from tests.server import ROOT

# Flask adds these to every rule by itself; the document names the methods a route was written for.
_AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}
# Outside /api/v1 but part of the contract load balancers and supervisors rely on.
_ALSO_DOCUMENTED = {"/livez", "/readyz"}


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def served_operations(app) -> set[tuple[str, str]]:
    operations = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") or rule.rule in _ALSO_DOCUMENTED:
            for method in rule.methods - _AUTOMATIC_METHODS:
                operations.add((method, _openapi_path(rule.rule)))
    return operations


def documented_operations(document) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item if method in methods}


def test_every_api_route_is_documented_and_every_documented_route_exists(app):
    served, documented = served_operations(app), documented_operations(openapi_document(app.config))
    assert served - documented == set(), "routes missing from blueprints/api/openapi.yaml"
    assert documented - served == set(), "blueprints/api/openapi.yaml names routes the app does not serve"
    assert ("POST", "/api/v1/publish") in served and ("GET", "/readyz") in served  # the walk found the app's rules


def test_route_check_sees_a_missing_route(app):
    document = openapi_document(app.config)
    del document["paths"]["/api/v1/tokens"]
    document["paths"]["/api/v1/nowhere"] = {"get": {"responses": {"200": {"description": "no"}}}}
    served, documented = served_operations(app), documented_operations(document)
    assert served - documented == {("POST", "/api/v1/tokens")}
    assert documented - served == {("GET", "/api/v1/nowhere")}


def test_document_is_valid_openapi_3_1(app):
    document = openapi_document(app.config)
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises OpenAPIValidationError naming the first problem


def test_validator_rejects_a_broken_document(app):
    document = openapi_document(app.config)
    document["paths"]["/api/v1/publish"]["post"]["responses"] = {"200": {"content": {}}}  # description missing
    try:
        validate(document)
    except OpenAPIValidationError:
        return
    raise AssertionError("openapi-spec-validator accepted a response without a description")


def test_served_document_carries_the_configured_limits(app, client):
    app.config["TOKEN_MAX_TTL"] = 120
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    ttl = response.get_json()["components"]["schemas"]["TokenRequest"]["properties"]["ttl"]
    assert (ttl["maximum"], ttl["default"]) == (120, 120)
    assert list(response.get_json()) [:2] == ["openapi", "info"]  # written order kept, not sorted


def test_vendored_swagger_ui_matches_its_notes():
    vendor = ROOT / "static" / "vendor"
    assert "`swagger-ui-dist` | 5.35.0 | Apache-2.0" in (vendor / "README.md").read_text()
    assert "Apache License" in (vendor / "swagger-ui" / "LICENSE").read_text()
    digest = hashlib.sha256((vendor / "swagger-ui" / "swagger-ui-bundle.js").read_bytes()).hexdigest()
    assert digest in (vendor / "README.md").read_text()


def test_reference_page_needs_no_key_and_loads_only_local_files(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    html = response.get_data(as_text=True)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html and "<script>" not in html
    assert "http://" not in html and "https://" not in html
