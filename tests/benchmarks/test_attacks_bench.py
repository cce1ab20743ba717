"""benchmarks.attacks: the speed ratios and the reach table have the documented keys and
the targets are computed from the measured figures (tiny, seeded runs)."""

from __future__ import annotations

import torch

from benchmarks.attacks import _speed_targets, held_out, reach, speed_ratios


def test_held_out_images_are_the_tail_of_the_spread_order() -> None:
    data = held_out(8, 3)
    assert data.images.shape == (3, 3, 8, 8)
    assert len(set(data.labels.tolist())) == 3  # distinct classes


def test_speed_ratios_and_their_targets() -> None:
    torch.set_num_threads(1)
    speed = speed_ratios(held_out(8, 1), torch.device("cpu"), steps=3, restarts=2)
    row = speed["per_image"][0]
    assert {"reference", "ours_same_steps", "ours_default"} <= set(row)
    assert row["ours_same_steps"]["steps"] == 3  # no early stop: same steps
    assert 1 <= row["ours_default"]["steps"] <= 3  # the steps it actually ran
    assert speed["speedup_same_steps"] > 0 and set(speed["restart_cpu_seconds"]) == {"1", "2"}
    targets = _speed_targets(speed)
    assert targets["dlg_speed_target_met"] == (
        speed["speedup_default"] >= 2.0
        and speed["median_psnr"]["ours_default"] >= speed["median_psnr"]["reference"]
    )
    assert targets["dlg_steps_run_default"] == [row["ours_default"]["steps"]]
    recovered = row["reference"]["psnr"] >= 30.0
    assert speed["reference_recovered_images"] == int(recovered)
    assert (speed["speedup_default_where_reference_recovers"] is None) == (not recovered)
    assert targets["restarts_target_met"] == (speed["restarts_time_ratio"] <= 3.0)


def test_reach_table_scales_the_budget_with_the_batch() -> None:
    torch.set_num_threads(1)
    table = reach(batches=[2], resolutions=[8], steps_per_image=3, restarts=1,
                  images_per_resolution=1, device=torch.device("cpu"))
    (row,) = table["batches"]
    assert row["batch"] == 2 and row["steps"] == 6 and len(row["psnr"]) == 2
    assert 0 <= row["recovered_20db"] <= 2 and 0.0 <= row["label_multiset_accuracy"] <= 1.0
    assert table["resolutions"][0]["resolution"] == 8
    assert table["targets"] == {}  # no batch 8, no 64x64 in this run: nothing claimed
