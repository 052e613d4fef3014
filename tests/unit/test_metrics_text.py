"""The hand-written Prometheus text must read back, through Prometheus' own parser, as
what was meant: names, help, types, label values with quotes, backslashes and line
breaks, and numbers."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from farmhand.shared.metrics import Family, render


def test_what_is_written_reads_back_the_same() -> None:
    tricky = 'desk "7" \\ of\nana'
    text = render([
        Family("farmhand_jobs", "Jobs by status;\nwith a line break.")
        .add(3, status="queued")
        .add(0, status="failed"),
        Family("farmhand_runner_heartbeat_age_seconds", "Age.").add(1.25, name=tricky),
        Family("farmhand_frames_rendered_total", "Frames.", "counter").add(12),
        Family("farmhand_blob_bytes", "Bytes.").add(2**40),
    ])  # fmt: skip
    families = {family.name: family for family in text_string_to_metric_families(text)}

    jobs = families["farmhand_jobs"]
    assert jobs.type == "gauge" and jobs.documentation == "Jobs by status;\nwith a line break."
    assert [(s.labels, s.value) for s in jobs.samples] == [
        ({"status": "queued"}, 3.0),
        ({"status": "failed"}, 0.0),
    ]
    [age] = families["farmhand_runner_heartbeat_age_seconds"].samples
    assert age.labels == {"name": tricky} and age.value == 1.25
    frames = families["farmhand_frames_rendered"]  # the parser strips _total
    assert frames.type == "counter" and frames.samples[0].value == 12
    assert families["farmhand_blob_bytes"].samples[0].value == 2**40
    assert "1099511627776" in text, "large integers are written whole, not as 1.1e+12"
