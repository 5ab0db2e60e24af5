"""Privacy, sans I/O: which names are secrets (the default pattern on word parts, --redact),
masking (HMAC tokens, the shapes GWS writes them in), the writer's paths, and the options."""

from __future__ import annotations

import click
import orjson
import pytest

from tape.frame import Frame, Session
from tape.prepare import clean_deliveries, prepare_frame, prepare_session
from tape.privacy import REDACTED, Privacy, privacy_from_options, split_name
from tape.redact import clean_body, headers_json, redact_body, redact_form, redact_url
from tests.conftest import SAMPLE

KEY = b"k" * 32
OTHER_KEY = b"o" * 32

# What analysis, replay and the projections read from frames (tape/projection.py, tape/gws.py,
# analysis/sql): the default pattern must take none of them.
READ_BY_ANALYSIS = [
    "channel",
    "id",
    "clientId",
    "successful",
    "error",
    "subscription",
    "data",
    "ext",
    "advice",
    "version",
    "minimumVersion",
    "supportedConnectionTypes",
    "connectionType",
    "timestamp",
    "reconnect",
    "interval",
    "timeout",
    "hosts",
    "multiple-clients",
    "messageType",
    "notificationType",
    "referenceId",
    "operationName",
    "recordHandle",
    "record",
    "userData",
    "GSW_RECORD_HANDLE",
    "GSW_USER_EVENT",
    "metrics",
    "eventProcessing",
    "serverGenerationTimestamp",
    "nodeProcessingTimeNanos",
    "serverProcessingTimeTotalMs",
    "campaignName",
    "callingList",
    "applicationId",
    "statusCode",
    "deviceId",
    "devicePath",
    "chainAttribute",
    "GSW_PHONE",
    "phoneNumber",
    "GSW_CALLING_LIST",
    "GSW_CAMPAIGN_NAME",
    "GSW_APPLICATION_ID",
    "GSW_CHAIN_ID",
]


def _keys(doc: object) -> set[str]:
    if isinstance(doc, dict):
        return set(doc) | {k for v in doc.values() for k in _keys(v)}
    if isinstance(doc, list):
        return {k for v in doc for k in _keys(v)}
    return set()


def test_names_split_into_word_parts() -> None:
    assert split_name("X-Auth-Token") == ("x", "auth", "token")
    assert split_name("apiKey") == ("api", "key")
    assert split_name("GSW_SESSION_ID") == ("gsw", "session", "id")
    assert split_name("XMLHttpRequest") == ("xml", "http", "request")
    assert split_name("ext.apiKey2") == ("ext", "api", "key", "2")
    assert split_name("JSESSIONID") == ("jsessionid",)


@pytest.mark.parametrize(
    "name",
    [
        "X-Auth-Token",
        "X-Api-Key",
        "apiKey",
        "api_key",
        "key",
        "session",
        "sessionId",
        "JSESSIONID",
        "PHPSESSID",
        "access_token",
        "accesstoken",
        "refreshToken",
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "password",
        "passwd",
        "client_secret",
        "credentials",
        "X-CSRF-TOKEN",
        "oauth",
        "authToken",
    ],
)
def test_the_default_pattern_takes_secret_names(name: str) -> None:
    assert Privacy().is_secret(name)


@pytest.mark.parametrize(
    "name",
    [
        "keyboard",
        "monkey",
        "turkey",
        "author",
        "possession",
        "tokenizer",
        "passport",
        "X-CSRF-HEADER",
        "Content-Type",
        "BAYEUX_BROWSER",
        *READ_BY_ANALYSIS,
    ],
)
def test_the_default_pattern_spares_other_words_and_what_analysis_reads(name: str) -> None:
    assert not Privacy().is_secret(name)


def test_no_field_of_the_gws_sample_is_taken_by_the_default_pattern() -> None:
    names: set[str] = set()
    for line in SAMPLE.read_bytes().splitlines():
        obj = orjson.loads(line)
        if "raw" in obj:
            names |= _keys(orjson.loads(obj["raw"]))
            names |= {
                name
                for name, _ in obj.get("headers") or []
                if name.lower() not in ("authorization", "cookie", "x-csrf-token")
            }
    assert len(names) > 30
    assert {n for n in names if Privacy().is_secret(n)} == set()


def test_redact_names_match_their_word_parts_in_a_row() -> None:
    p = Privacy(redact=["pin", "X-Agent-Code"])
    assert p.is_secret("pin")
    assert p.is_secret("agentPin")
    assert p.is_secret("PIN_CODE")
    assert p.is_secret("x-agent-code")
    assert p.is_secret("xAgentCode")
    assert not p.is_secret("pinned")
    assert not p.is_secret("agentCode")
    assert not p.is_secret("x")


def test_bayeux_fields_are_never_redacted_and_the_option_says_so() -> None:
    with pytest.raises(click.BadParameter, match="clientId is a Bayeux field"):
        privacy_from_options(["clientId"], [])
    body = b'[{"channel":"/meta/handshake","clientId":"c1","id":"1","advice":{"timeout":0},'
    body += b'"supportedConnectionTypes":["long-polling"],"ext":{"apiKey":"s3cr3t","session":"x"}}]'
    (msg,) = orjson.loads(redact_body(body))
    assert msg["ext"] == {"apiKey": REDACTED, "session": REDACTED}
    assert msg["clientId"] == "c1"
    assert msg["supportedConnectionTypes"] == ["long-polling"]
    assert msg["advice"] == {"timeout": 0}
    assert msg["id"] == "1"


def test_headers_query_form_and_json_bodies_are_redacted_by_the_pattern() -> None:
    p = Privacy(redact=["agentPin"], mask=())
    stored = orjson.loads(
        headers_json(
            [("X-Auth-Token", "t1"), ("X-Api-Key", "k1"), ("X-Agent-Pin", "1234"), ("Accept", "*")],
            privacy=p,
        )
    )
    assert stored == [
        ["X-Auth-Token", REDACTED],
        ["X-Api-Key", REDACTED],
        ["X-Agent-Pin", REDACTED],
        ["Accept", "*"],
    ]
    assert (
        redact_form("/cometd?apiKey=k1&access_token=t1&agent_pin=9&x=1", p)
        == f"/cometd?apiKey={REDACTED}&access_token={REDACTED}&agent_pin={REDACTED}&x=1"
    )
    assert redact_url("http://u:pw@h/p;jsessionid=S1?sessionKey=s2", p) == (
        f"http://h/p;jsessionid={REDACTED}?sessionKey={REDACTED}"
    )
    body = orjson.loads(
        clean_body(b'{"apiKey":"k1","referenceId":"r1","nested":{"agentPin":"9"}}', p, redact=True)
    )
    assert body == {"apiKey": REDACTED, "referenceId": "r1", "nested": {"agentPin": REDACTED}}


def test_a_key_value_pair_is_judged_by_its_name() -> None:
    body = b'{"attributes":[{"key":"apiKey","value":"s3cr3t"},{"key":"referenceId","value":"r1"}]}'
    doc = orjson.loads(redact_body(body))
    assert doc["attributes"] == [
        {"key": "apiKey", "value": REDACTED},
        {"key": "referenceId", "value": "r1"},
    ]
    assert orjson.loads(redact_body(b'{"key":"abc123"}')) == {"key": REDACTED}  # not a pair


def test_masking_tokens_are_keyed_hmacs_equal_for_equal_values() -> None:
    p, same, other = Privacy(key=KEY), Privacy(key=KEY), Privacy(key=OTHER_KEY)
    token = p.token("+15551234")
    assert token.startswith("pii:")
    assert len(token) == 20
    assert int(token[4:], 16) >= 0
    assert token == same.token("+15551234") != other.token("+15551234")
    assert p.token("+15551234") != p.token("+15551235")
    assert p.token(3001) == p.token("3001")  # a number as its JSON text
    assert p.token(token) == token  # masking twice changes nothing
    assert Privacy().token("x") != Privacy().token("x")  # a random key each
    assert "k" * 8 not in repr(p)


def test_masking_handles_the_shapes_gws_writes() -> None:
    p = Privacy(key=KEY)
    t = p.token("+15551234")
    body = orjson.dumps(
        [
            {
                "channel": "/me/internal",
                "data": {
                    "phoneNumber": "+15551234",
                    "userData": {"GSW_PHONE": "+15551234", "GSW_RECORD_HANDLE": 13},
                    "kvlist": [{"key": "GSW_PHONE", "type": "str", "value": "+15551234"}],
                    "flat": ["GSW_CALLING_LIST", "L1", "GSW_PHONE", "+15551234"],
                    "fields": ["GSW_PHONE"],  # a name alone is not a pair
                    "nested": {"phoneNumber": {"home": "+15551234"}},
                    "none": {"phoneNumber": None},
                },
            }
        ]
    )
    (msg,) = orjson.loads(clean_deliveries([body], p)[0])
    data = msg["data"]
    assert data["phoneNumber"] == t
    assert data["userData"] == {
        "GSW_PHONE": t,
        "GSW_RECORD_HANDLE": 13,
    }
    assert data["kvlist"] == [{"key": "GSW_PHONE", "type": "str", "value": t}]
    assert data["flat"] == ["GSW_CALLING_LIST", "L1", "GSW_PHONE", t]
    assert data["fields"] == ["GSW_PHONE"]
    assert data["nested"]["phoneNumber"] == p.token({"home": "+15551234"})
    assert data["none"] == {"phoneNumber": None}
    # the fast way (scalar members in the bytes) gives what the slow way gives
    spaced = b'{ "phoneNumber" :  "+15551234", "n": { "GSW_PHONE":3001 } }'
    assert orjson.loads(clean_deliveries([spaced], p)[0]) == {
        "phoneNumber": t,
        "n": {"GSW_PHONE": p.token(3001)},
    }
    escaped = b'{"phoneNumber":"+1555\\u00201234"}'
    assert orjson.loads(clean_deliveries([escaped], p)[0]) == {"phoneNumber": p.token("+1555 1234")}


def test_masking_in_query_strings_and_forms_and_case_sensitivity() -> None:
    p = Privacy(key=KEY)
    t = p.token("+15551234")
    assert redact_form("/api?phoneNumber=%2B15551234&x=1", p) == f"/api?phoneNumber={t}&x=1"
    assert clean_body(b"phoneNumber=%2B15551234", p, redact=True) == f"phoneNumber={t}".encode()
    assert clean_deliveries([b'{"PhoneNumber":"1"}'], p)[0] == b'{"PhoneNumber":"1"}'


def test_a_masked_frame_stays_valid_json_even_when_it_was_not() -> None:
    p = Privacy(key=KEY)
    broken = b'[{"data":{"phoneNumber":"+15551234"}'  # cut short
    out = prepare_frame(Frame("s", 1, 0, 0, "out", "long-polling", "bayeux", broken), p)
    assert b"+15551234" not in out.raw
    assert out.parse_error is not None


def test_deliveries_without_masked_names_are_passed_as_they_are() -> None:
    p = Privacy(key=KEY)
    raws = [b'[{"channel":"/x","data":{"n":%d}}]' % i for i in range(100)]
    assert clean_deliveries(raws, p) is raws
    frame = Frame("s", 1, 0, 0, "in", "websocket", "bayeux", raws[0], checked=True)
    assert prepare_frame(frame, p) is frame
    # a delivery is masked, not redacted: the events' own names (key, session...) stay
    event = b'[{"channel":"/x","data":{"key":"k","sessionId":"s","phoneNumber":"1"}}]'
    frame = Frame("s", 1, 0, 0, "in", "websocket", "bayeux", event, checked=True)
    (msg,) = orjson.loads(prepare_frame(frame, p).raw)
    assert msg["data"] == {"key": "k", "sessionId": "s", "phoneNumber": p.token("1")}


def test_lifecycle_details_and_session_rows_are_cleaned() -> None:
    p = Privacy(redact=["agentPin"], key=KEY)
    raw = orjson.dumps(
        {"event": "websocket-closed", "path": "/cometd?apiKey=k1&agentPin=9", "token": "t1"}
    )
    out = prepare_frame(Frame("s", 1, 0, 0, "in", "http", "lifecycle", raw), p)
    assert orjson.loads(out.raw) == {
        "event": "websocket-closed",
        "path": f"/cometd?apiKey={REDACTED}&agentPin={REDACTED}",
        "token": REDACTED,
    }
    session = Session(
        "s", endpoint="http://a:b@h/c?agentPin=1", labels={"authToken": "x", "k": "v"}
    )
    cleaned = prepare_session(session, p)
    assert cleaned.endpoint == f"http://h/c?agentPin={REDACTED}"
    assert cleaned.labels == {"authToken": REDACTED, "k": "v"}


def test_the_options_make_one_privacy() -> None:
    p = privacy_from_options(["pin"], [], key_env="K", environ={"K": "secret-key"})
    assert p.redact == ("pin",)
    assert p.mask == ("phoneNumber", "GSW_PHONE")
    assert p.token("1") == Privacy(key=b"secret-key").token("1")
    assert privacy_from_options([], ["email"]).mask == ("email",)
    assert privacy_from_options([], [], no_mask=True).mask == ()
    with pytest.raises(click.BadParameter) as missing:
        privacy_from_options([], [], key_env="NOPE", environ={})
    assert "NOPE" in str(missing.value)
    assert missing.value.param_hint == "--mask-key-env"
    with pytest.raises(click.BadParameter):
        privacy_from_options([], ["email"], no_mask=True)


def test_a_delivery_s_ext_is_redacted_and_its_data_kept() -> None:
    """Faye echoes a publisher's ext to every subscriber: credentials in received frames."""
    p = Privacy(key=KEY)
    echoed = b'[{"channel":"/x","data":{"sessionId":"d1","phoneNumber":"1"},'
    echoed += b'"ext":{"apiKey":"s3cr3t","ack":7,"auth":{"token":"t"}}}]'
    plain = b'[{"channel":"/x","data":{"n":1},"ext":{"ack":7}}]'
    out = clean_deliveries([echoed, plain], p)
    (msg,) = orjson.loads(out[0])
    assert msg["ext"] == {"apiKey": REDACTED, "ack": 7, "auth": REDACTED}
    assert msg["data"] == {"sessionId": "d1", "phoneNumber": p.token("1")}
    assert out[1] is plain
    assert clean_deliveries([echoed], Privacy(mask=()))[0].count(REDACTED.encode()) == 2
