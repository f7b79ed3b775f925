"""Prometheus text from the ingress's prediction metrics."""

from __future__ import annotations

from cluster.ingress.metrics import BUCKETS_MS, Metrics


def lines_of(text: str) -> list[str]:
    assert text.endswith("\n")
    return text.splitlines()


def test_empty_render_has_only_type_lines():
    assert lines_of(Metrics().render()) == [
        "# TYPE modelyard_predictions_total counter",
        "# TYPE modelyard_prediction_latency_ms histogram",
    ]


def test_counters_and_cumulative_buckets():
    m = Metrics()
    for latency in (3, 5, 7, 300, 20_000):
        m.observe("emb", "success", latency)
    m.observe("emb", "overloaded", 1)
    m.observe("alpha", "success", 12.5)
    lines = lines_of(m.render())

    assert lines[:4] == [
        "# TYPE modelyard_predictions_total counter",
        'modelyard_predictions_total{deployment="alpha",outcome="success"} 1',
        'modelyard_predictions_total{deployment="emb",outcome="overloaded"} 1',
        'modelyard_predictions_total{deployment="emb",outcome="success"} 5',
    ]
    assert lines[4] == "# TYPE modelyard_prediction_latency_ms histogram"

    def buckets(dep: str) -> dict[str, int]:
        prefix = f'modelyard_prediction_latency_ms_bucket{{deployment="{dep}",le="'
        return {
            line[len(prefix) :].split('"')[0]: int(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith(prefix)
        }

    emb = buckets("emb")
    assert list(emb) == [str(b) for b in BUCKETS_MS] + ["+Inf"]
    # Latencies 1, 3, 5 fall in le=5 (bounds are inclusive); 7 in le=10; 300 in le=500;
    # 20000 only in +Inf. Buckets are cumulative.
    assert emb["5"] == 3
    assert emb["10"] == 4
    assert emb["250"] == 4
    assert emb["500"] == 5
    assert emb["10000"] == 5
    assert emb["+Inf"] == 6
    values = list(emb.values())
    assert values == sorted(values)
    assert 'modelyard_prediction_latency_ms_count{deployment="emb"} 6' in lines
    assert 'modelyard_prediction_latency_ms_sum{deployment="emb"} 20316.000' in lines

    alpha = buckets("alpha")
    assert alpha["10"] == 0
    assert alpha["25"] == 1
    assert alpha["+Inf"] == 1
    assert 'modelyard_prediction_latency_ms_sum{deployment="alpha"} 12.500' in lines
    # Deployments are rendered in name order.
    first_alpha = next(i for i, line in enumerate(lines) if 'deployment="alpha",le=' in line)
    first_emb = next(i for i, line in enumerate(lines) if 'deployment="emb",le=' in line)
    assert first_alpha < first_emb
