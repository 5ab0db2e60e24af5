"""Redaction: secrets become [REDACTED]; everything else keeps its exact bytes."""

from __future__ import annotations

import orjson

from tape.redact import REDACTED, headers_json, redact_body, redact_form, redact_headers


def test_secret_headers_are_masked_case_insensitively() -> None:
    headers = [
        ("authorization", "Basic abc"),
        ("COOKIE", "JSESSIONID=1"),
        ("Set-Cookie", "a=b"),
        ("X-CSRF-TOKEN", "t0k"),
        ("Content-Type", "application/json"),
    ]
    masked = dict(redact_headers(headers))
    assert masked["Content-Type"] == "application/json"
    assert all(
        masked[k] == REDACTED for k in ("authorization", "COOKIE", "Set-Cookie", "X-CSRF-TOKEN")
    )


def test_the_csrf_header_gws_names_can_be_added() -> None:
    stored = headers_json([("X-My-Csrf", "secret-value"), ("Accept", "*/*")], extra=["x-my-csrf"])
    assert orjson.loads(stored) == [["X-My-Csrf", REDACTED], ["Accept", "*/*"]]


def test_password_fields_in_json_bodies_at_any_depth() -> None:
    body = b'{"user":"agent1","password":"hunter2","ext":{"login":{"passwd":"x","secretKey":"y"}}}'
    doc = orjson.loads(redact_body(body))
    assert doc == {
        "user": "agent1",
        "password": REDACTED,
        "ext": {"login": {"passwd": REDACTED, "secretKey": REDACTED}},
    }
    # a name that is a secret's takes its whole value, an object too
    assert orjson.loads(redact_body(b'{"ext":{"auth":{"user":"a"}}}')) == {
        "ext": {"auth": REDACTED}
    }


def test_bodies_without_secrets_keep_their_exact_bytes() -> None:
    body = b'{ "referenceId" : "123",  "phoneNumber":"3001" }'
    assert redact_body(body) is body
    mentions = b'{"note": "the password policy changed"}'  # a value, not a key
    assert redact_body(mentions) == mentions


def test_form_and_query_strings() -> None:
    assert (
        redact_form("/login?user=a&password=hunter2&x=1") == "/login?user=a&password=[REDACTED]&x=1"
    )
    assert redact_body(b"user=a&pwd=hunter2") == b"user=a&pwd=[REDACTED]"


def test_keys_written_with_escapes_and_non_scalar_secrets() -> None:
    assert orjson.loads(redact_body(b'{"\\u0070assword":"hunter2"}')) == {"password": REDACTED}
    doc = orjson.loads(redact_body(b'{"password":["a"],"ext":{"credentials":{"k":"v"}}}'))
    assert doc == {"password": REDACTED, "ext": {"credentials": REDACTED}}


def test_a_document_too_deep_to_walk_is_still_masked() -> None:
    deep = b'{"password":"hunter2","x":' + b"[" * 1500 + b"]" * 1500 + b"}"
    assert b"hunter2" not in redact_body(deep)


def test_urls_lose_userinfo_and_session_ids() -> None:
    from tape.redact import redact_url

    assert (
        redact_url("https://agent:hunter2@gws:8090/api?token=x")
        == "https://gws:8090/api?token=[REDACTED]"
    )
    assert "ABC" not in redact_form("/api/v2/me;jsessionid=ABC?x=1")


def test_urls_quoted_in_free_text_lose_their_credentials_and_secret_query_fields() -> None:
    from tape.redact import redact_text

    assert (
        redact_text("http://gws/login?access_token=SECRET answered HTTP 404")
        == "http://gws/login?access_token=[REDACTED] answered HTTP 404"
    )
    assert (
        redact_text("upgrade failed: http://TOKEN@127.0.0.1:3128 isn't a valid proxy")
        == "upgrade failed: http://127.0.0.1:3128 isn't a valid proxy"
    )
    assert redact_text("cannot open ws://agent:pw@gws/cometd: refused") == (
        "cannot open ws://gws/cometd: refused"
    )
    assert redact_text("write to bob@example.com, a=b") == "write to bob@example.com, a=b"


def test_url_valued_headers_lose_secret_query_fields() -> None:
    from tape.redact import redact_headers_json

    stored = (
        '[["Location","https://sso/cb?access_token=abc123&x=1"],["Referer","https://a/?apiKey=z"]]'
    )
    assert orjson.loads(redact_headers_json(stored) or "") == [
        ["Location", "https://sso/cb?access_token=[REDACTED]&x=1"],
        ["Referer", "https://a/?apiKey=[REDACTED]"],
    ]


def test_a_session_end_reason_quoting_a_url_is_cleaned() -> None:
    from tape.frame import Session
    from tape.prepare import prepare_session

    session = Session(
        session_id="s",
        end_reason="https://u:hunter2@gws/api/v2/me?token=T1 answered HTTP 404",
    )
    assert (
        prepare_session(session).end_reason
        == "https://gws/api/v2/me?token=[REDACTED] answered HTTP 404"
    )
