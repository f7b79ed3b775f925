"""The figures the fault-injection test reports: gaps between successes, what the registry lost."""

from __future__ import annotations

from tests.faults_support import (
    STEADY_S,
    Answer,
    Window,
    figures_table,
    longest_gap,
    lost_rows,
    summarize,
)


def test_longest_gap_counts_only_successes_and_the_edges_of_the_window():
    answers = [
        Answer(sent=0.0, done=1.0, status=200),
        Answer(sent=1.0, done=2.0, status="ConnectError"),
        Answer(sent=2.0, done=3.0, status=503),
        Answer(sent=3.0, done=4.5, status=201),
    ]
    # 1.0 -> 4.5 between successes; the failures in between do not shorten it.
    assert longest_gap(answers, start=0.0, end=5.0) == 3.5
    # Nothing succeeded after 4.5 in a window that ends at 10: that silence counts too.
    assert longest_gap(answers, start=0.0, end=10.0) == 5.5
    assert longest_gap([], start=2.0, end=7.0) == 5.0


def test_lost_rows_reports_changed_and_missing_rows_not_new_ones():
    before = {"deployments": {"a": ("ACTIVE", 1)}, "tasks": {"t1": "done", "t2": "pending"}}
    after = {
        "deployments": {"a": ("ACTIVE", 1), "b": ("DEPLOYING", 1)},
        "tasks": {"t1": "done"},
    }
    assert lost_rows(before, after) == {"tasks": {"t2": "pending"}}
    changed = {"deployments": {"a": ("FAILED", 1)}, "tasks": before["tasks"]}
    assert lost_rows(before, changed) == {"deployments": {"a": ("ACTIVE", 1)}}
    assert lost_rows(before, before) == {}


def test_figures_table_has_one_row_per_case():
    row = {
        "case": "proxy",
        "sent": 10,
        "rate_per_s": 30.0,
        "steady_rate_per_s": 29.0,
        "non_2xx": {"ConnectError": 3},
        "longest_gap_s": 1.5,
        "slowest_answer_s": 0.1,
        "back_to_full_capacity_s": 2.0,
        "registry_lost": {},
    }
    lines = figures_table([row, {**row, "case": "ingress"}]).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| proxy | 10 | 30.0 (29.0) |")
    assert '{"ConnectError": 3}' in lines[2] and lines[2].endswith("| nothing |")


def test_summarize_splits_the_rate_before_the_kill_and_counts_failures_by_kind():
    before_kill = [Answer(sent=i / 10, done=i / 10 + 0.01, status=200) for i in range(30)]
    after = [
        Answer(sent=3.5, done=3.6, status="ConnectError", body="refused"),
        Answer(sent=3.6, done=3.7, status="ConnectError", body="refused"),
        Answer(sent=4.0, done=9.0, status=500, body="Internal Server Error"),
        Answer(sent=9.5, done=9.6, status=200),
    ]
    window = Window(start=0.0, killed_at=STEADY_S, recovered_at=STEADY_S + 6.0, end=10.0)
    row = summarize("ingress", before_kill + after, window, lost={})
    assert row["sent"] == 34 and row["rate_per_s"] == 3.4
    assert row["steady_rate_per_s"] == round(30 / STEADY_S, 1)
    assert row["non_2xx"] == {"ConnectError": 2, "500": 1}
    assert row["examples"] == {"ConnectError": "refused", "500": "Internal Server Error"}
    assert row["slowest_answer_s"] == 5.0 and row["back_to_full_capacity_s"] == 6.0
    assert row["longest_gap_s"] == round(9.6 - 2.91, 2)
