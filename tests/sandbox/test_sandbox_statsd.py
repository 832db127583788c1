"""The StatsD listener the metrics tests read from: its parser, and datagrams from the client Airflow uses."""

from __future__ import annotations

import pytest

from sandbox.statsd import StatsdListener, counter_total, gauge_value, gauge_values, parse_line


def test_parses_plain_dogstatsd_and_influxdb_lines() -> None:
    plain = parse_line("airflow.entra_provisioning.users_added_total.alpha:4|c")
    assert (plain.name, plain.value, plain.kind, plain.rate, dict(plain.tags)) == (
        "airflow.entra_provisioning.users_added_total.alpha",
        4.0,
        "c",
        1.0,
        {},
    )
    dog = parse_line("airflow.entra_provisioning.skipped:2|g|@0.5|#reason:disabled,workspace:alpha")
    assert (dog.name, dog.value, dog.kind, dog.rate) == ("airflow.entra_provisioning.skipped", 2.0, "g", 0.5)
    assert dict(dog.tags) == {"reason": "disabled", "workspace": "alpha"}
    influx = parse_line("airflow.entra_provisioning.drift,workspace=team-a:2|g")
    assert (influx.name, dict(influx.tags)) == ("airflow.entra_provisioning.drift", {"workspace": "team-a"})
    assert parse_line("x:-3|g").delta and parse_line("x:+3|g").delta and not parse_line("x:3|g").delta
    assert not parse_line("x:-3|c").delta  # only gauges have the signed-change rule


@pytest.mark.parametrize(
    "line", ["no-value|c", "x:1", "x:1|q", "x:abc|c", ":1|c", "x:1|c|@2", "x:1|c|?", "x,tag:1|g"]
)
def test_refuses_what_is_not_statsd(line: str) -> None:
    with pytest.raises(ValueError):
        parse_line(line)


def test_gauges_follow_the_signed_change_rule_and_counters_undo_the_sample_rate() -> None:
    samples = [parse_line(line) for line in ("g:5|g", "g:0|g", "g:-2|g", "g:7|g", "c:1|c", "c:2|c|@0.5")]
    assert gauge_values(samples, "g") == [5.0, -2.0, 7.0]
    assert gauge_value(samples, "g") == 7.0 and gauge_value(samples, "missing") is None
    assert counter_total(samples, "c") == 5.0
    tagged = [parse_line("t:1|c|#w:a"), parse_line("t:1|c|#w:b"), parse_line("t:1|c|#w:a")]
    assert counter_total(tagged, "t", {"w": "a"}) == 2.0 and counter_total(tagged, "t") == 0.0


def test_receives_what_the_statsd_client_airflow_uses_sends() -> None:
    import statsd

    with StatsdListener() as listener:
        client = statsd.StatsClient("127.0.0.1", listener.port, prefix="airflow")
        try:
            client.incr("entra_provisioning.users_added_total.alpha", 4)
            client.gauge("entra_provisioning.token_expires_in_days.alpha", -3)  # two lines, one datagram
            client.gauge("entra_provisioning.drift.alpha", 2)
        finally:
            client.close()
        samples = listener.wait_for("three metrics", lambda s: len(s) >= 4 and s, timeout=10)
        assert counter_total(samples, "airflow.entra_provisioning.users_added_total.alpha") == 4
        assert gauge_values(samples, "airflow.entra_provisioning.token_expires_in_days.alpha") == [-3.0]
        assert gauge_value(samples, "airflow.entra_provisioning.drift.alpha") == 2
        assert listener.malformed == []
        mark = len(samples)
        sock_client = statsd.StatsClient("127.0.0.1", listener.port)
        try:
            sock_client._send("not a metric")
            sock_client.incr("later")
        finally:
            sock_client.close()
        later = listener.wait_for("one more", lambda s: s, timeout=10, since=mark)
        assert [s.name for s in later] == ["later"]
        listener.wait_for("the bad line", lambda _: listener.malformed, timeout=10)
        assert listener.malformed == ["not a metric"]


def test_waiting_is_bounded() -> None:
    with StatsdListener() as listener, pytest.raises(TimeoutError, match="nothing"):
        listener.wait_for("nothing", lambda s: False, timeout=0.5)
