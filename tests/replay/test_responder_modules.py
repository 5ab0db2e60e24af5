"""replay.responder, split into modules of one job, still offers the names its importers use."""

from __future__ import annotations

import replay.exchange
import replay.exchange_loader
import replay.matchers
import replay.responder
import replay.substitution


def test_the_old_names_still_import_from_replay_responder() -> None:
    from replay.responder import (  # noqa: F401
        DEFAULT_MATCHERS,
        REPLAYED_HEADERS,
        FollowUp,
        Incoming,
        Matcher,
        RecordedExchange,
        Responder,
        Served,
        Unmatched,
        body_field,
        load_exchanges,
        path_pattern,
        record_handle,
        substitute,
    )

    assert replay.responder.substitute is replay.substitution.substitute
    assert replay.responder.load_exchanges is replay.exchange_loader.load_exchanges


def test_each_module_says_its_job_in_one_line() -> None:
    for module in (
        replay.exchange,
        replay.exchange_loader,
        replay.matchers,
        replay.responder,
        replay.substitution,
    ):
        doc = (module.__doc__ or "").strip()
        assert doc, module.__name__
        assert "\n" not in doc, module.__name__
