"""``not`` in ``when``: three-valued, so a ``not`` of what has no evidence yet never holds;
``holds`` and ``evaluate`` agree on every tree; negated leaves neither corroborate a trigger
nor are judged by verification; ``error_cause`` cannot be negated."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from remediator import corroborate
from remediator.causes import Cause
from remediator.detect import HostReading, Signals, evaluate, holds
from remediator.incident import describe, reading, tripped
from remediator.playbook import (
    AllOf,
    AnyOf,
    Condition,
    ErrorCause,
    HostCondition,
    NotOf,
    ProbeFailing,
    ServiceDown,
    StatusRate,
    Verify,
    positive_conditions,
    walk_conditions,
)
from remediator.verify import Health, Verifier
from tests.wired import load_text

PUBLIC = ProbeFailing(probe="public", consecutive=2)
LOCAL = ProbeFailing(probe="local", consecutive=1)
FRONT = AllOf((PUBLIC, NotOf(LOCAL)))  # public fails while local answers
RATE = StatusRate(
    source="acc", status=frozenset({502}), window=10.0, at_least=1, ratio=0.5, min_sample=5
)


def sig_for(*conds: Condition) -> Signals:
    return Signals.for_conditions([leaf for c in conds for leaf in walk_conditions(c)])


def test_not_of_a_probe_that_never_answered_does_not_hold() -> None:
    sig = sig_for(FRONT)
    sig.probes["public"].record(False, "timed out", 1.0)
    sig.probes["public"].record(False, "timed out", 2.0)
    assert not holds(FRONT, sig, 2.0)
    ok, readings = evaluate(FRONT, sig, 2.0)
    assert not ok
    local = next(r for r in readings if r.detail["probe"] == "local")
    assert local.negated and not local.known
    assert reading(local)["known"] is False and reading(local)["negated"] is True


def test_public_failing_while_local_answers_holds() -> None:
    sig = sig_for(FRONT)
    sig.probes["local"].record(True, "status 200", 1.0)
    sig.probes["public"].record(False, "connection refused", 1.5)
    assert not holds(FRONT, sig, 1.5)  # one public failure: not yet
    sig.probes["public"].record(False, "connection refused", 2.0)
    assert holds(FRONT, sig, 2.0)
    ok, readings = evaluate(FRONT, sig, 2.0)
    assert ok and all(tripped(r) for r in readings)
    assert [describe(r) for r in readings] == [
        "probe public failed 2 times (connection refused)",
        "probe local answers (status 200)",
    ]


def test_when_local_fails_too_it_is_no_longer_something_in_front() -> None:
    sig = sig_for(FRONT)
    sig.probes["local"].record(False, "status 502", 1.0)
    for t in (1.0, 2.0):
        sig.probes["public"].record(False, "status 502", t)
    assert not holds(FRONT, sig, 2.0) and not evaluate(FRONT, sig, 2.0)[0]


def test_not_of_a_quiet_access_log_does_not_hold() -> None:
    cond = NotOf(RATE)
    sig = sig_for(cond)
    assert not holds(cond, sig, 100.0)
    for i in range(4):
        sig.statuses["acc"].add(95.0 + i, 200)
    assert not holds(cond, sig, 100.0)  # 4 requests: fewer than min_sample
    sig.statuses["acc"].add(99.5, 200)
    assert holds(cond, sig, 100.0) and evaluate(cond, sig, 100.0)[0]
    sig.statuses["acc"].add(99.6, 502, 6)
    assert not holds(cond, sig, 100.0)


def test_not_of_a_window_cut_by_since_needs_its_requests_after_it() -> None:
    cond = NotOf(RATE)
    sig = sig_for(cond)
    for i in range(6):
        sig.statuses["acc"].add(91.0 + i, 200)
    assert holds(cond, sig, 98.0)
    assert not holds(cond, sig, 98.0, since=97.0)  # the requests came before the last incident


def test_not_of_service_and_host_need_an_answer() -> None:
    svc = NotOf(ServiceDown(service="fpm", lasting=0.0))
    host = NotOf(HostCondition(load_above=4.0))
    sig = sig_for(svc, host)
    assert not holds(svc, sig, 1.0) and not holds(host, sig, 1.0)
    sig.services["fpm"].record(False, "master 10 running", 1.0)
    sig.host = HostReading(1, 1, 0.0, 0.5)
    assert holds(svc, sig, 1.0) and holds(host, sig, 1.0)


def test_double_negation_is_the_condition_itself_when_known() -> None:
    cond = NotOf(NotOf(LOCAL))
    sig = sig_for(cond)
    assert not holds(cond, sig, 1.0)
    sig.probes["local"].record(False, "status 502", 1.0)
    assert holds(cond, sig, 1.0)
    ok, readings = evaluate(cond, sig, 1.0)
    assert ok and not readings[0].negated
    assert positive_conditions(cond) == [LOCAL]


def test_a_negated_probe_does_not_corroborate_log_lines(tmp_path: Path) -> None:
    """502s in the log while the probe answers is what forged lines look like: the answering
    probe must not count as corroboration."""
    loaded = load_text(
        tmp_path,
        """
        sources:
          access: {type: access_log, path: /var/log/x.log}
          site: {type: probe, url: "http://127.0.0.1:1/"}
        services:
          fpm: {kind: php-fpm, unit: php8.2-fpm.service}
        playbooks:
          - name: odd
            when:
              all:
                - status_rate: {source: access, status: 502, at_least: 1}
                - not: {probe_failing: {probe: site, consecutive: 1}}
            steps: [{restart: fpm}]
        """,
    )
    assert loaded.ok, loaded.all_errors()
    assert loaded.config is not None
    pb = loaded.playbooks[0]
    need = corroborate.need_of(pb, loaded.config)
    assert need is not None
    sig = sig_for(pb.when)
    sig.statuses["access"].add(10.0, 502, 5)
    sig.probes["site"].record(True, "status 200", 10.0)
    ok, readings = evaluate(pb.when, sig, 10.0)
    assert ok
    assert not corroborate.judge(need, readings, sig, 10.0).ok


def test_verification_does_not_judge_a_negated_leaf() -> None:
    when = AllOf((PUBLIC, NotOf(LOCAL)))
    sig = sig_for(when)
    sig.probes["public"].record(True, "status 200", 5.0)
    sig.probes["local"].record(False, "status 502", 5.0)  # its failure is no symptom here
    j = Verifier(sig).judge(Verify(trigger_clear=True), when, 1.0, 6.0)
    assert j.health is Health.HEALTHY and "local" not in j.detail


def test_not_error_cause_is_a_located_error(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        sources:
          errors: {type: error_log, path: /var/log/e.log, format: nginx-error}
        playbooks:
          - name: quiet
            when: {not: {error_cause: {source: errors, cause: upstream_refused}}}
            steps: [{diagnose: localhost}]
        """,
    )
    errors = [str(e) for e in loaded.all_errors()]
    assert any(
        "r.yaml:6:17: playbooks[0].when.not: error_cause cannot be negated" in e for e in errors
    ), errors


def test_not_loads_beside_all_and_any(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
        sources:
          public: {type: probe, url: "http://www.example.test/"}
          local: {type: probe, url: "http://127.0.0.1/"}
        playbooks:
          - name: in-front
            when:
              all:
                - probe_failing: {probe: public, consecutive: 3}
                - not: {probe_failing: {probe: local, consecutive: 1}}
            steps: [{diagnose: www.example.test}]
        """,
    )
    assert loaded.ok, loaded.all_errors()
    pbs = loaded.playbooks
    assert isinstance(pbs[0].when, AllOf) and isinstance(pbs[0].when.conditions[1], NotOf)


# --- holds and evaluate agree on every tree ---------------------------------------------------

CAUSE = ErrorCause(source="err", cause=(Cause.UPSTREAM_REFUSED,), window=10.0, at_least=2)
LEAVES: list[Condition] = [RATE, LOCAL, PUBLIC, ServiceDown(service="fpm", lasting=1.0), CAUSE]


def _trees(depth: int) -> st.SearchStrategy[Condition]:
    leaf = st.sampled_from(LEAVES)
    if depth == 0:
        return leaf
    sub = _trees(depth - 1)
    return st.one_of(
        leaf,
        sub.map(NotOf),
        st.lists(sub, min_size=1, max_size=3).map(lambda cs: AllOf(tuple(cs))),
        st.lists(sub, min_size=1, max_size=3).map(lambda cs: AnyOf(tuple(cs))),
    )


@settings(max_examples=400, deadline=None)
@given(
    tree=_trees(3),
    statuses=st.lists(
        st.tuples(st.floats(0, 20), st.sampled_from([200, 502]), st.integers(1, 4)), max_size=8
    ),
    causes=st.lists(st.floats(0, 20), max_size=4),
    local=st.one_of(st.none(), st.booleans()),
    public=st.lists(st.booleans(), max_size=3),
    fpm=st.one_of(st.none(), st.booleans()),
    since=st.one_of(st.none(), st.floats(0, 20)),
)
def test_holds_and_evaluate_agree_with_not(
    tree: Condition,
    statuses: list[tuple[float, int, int]],
    causes: list[float],
    local: bool | None,
    public: list[bool],
    fpm: bool | None,
    since: float | None,
) -> None:
    sig = sig_for(*LEAVES)
    for t, status, n in sorted(statuses):
        sig.statuses["acc"].add(100 + t, status, n)
    for t in sorted(causes):
        sig.causes["err"].add(100 + t, Cause.UPSTREAM_REFUSED)
    if local is not None:
        sig.probes["local"].record(local, "", 110.0)
    for ok in public:
        sig.probes["public"].record(ok, "", 110.0)
    if fpm is not None:
        sig.services["fpm"].record(fpm, "", 105.0)
    now = 120.0
    at = None if since is None else 100 + since
    fast = holds(tree, sig, now, since=at)
    full, readings = evaluate(tree, sig, now, since=at)
    assert fast == full
    if full:  # a holding trigger always has a reason to show
        assert any(tripped(r) for r in readings)
