import json
import subprocess
import sys

import pytest

from leakage.__main__ import main


def test_cli_module_does_not_import_torch():
    code = "import sys, leakage.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_attack_json_output(tmp_path, capsys):
    status = main(["attack", "--attack", "analytic", "--images", "2", "--json",
                   "--out", str(tmp_path), "--no-progress"])
    assert status == 0
    record = json.loads(capsys.readouterr().out)
    assert {"attack", "model", "device", "seconds", "images"} <= record.keys()
    assert record["attack"] == "analytic" and record["model"] == "mlp"
    assert len(record["images"]) == 2
    for row in record["images"]:
        assert {"psnr", "ssim", "mse", "label_true", "label_recovered", "iterations"} <= row.keys()
        assert row["psnr"] > 100 and row["label_true"] == row["label_recovered"]
    assert (tmp_path / "attack_analytic_mlp_b1.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "attack_analytic_mlp_b1.json").read_text())["images"]


def test_attack_table_and_progress(tmp_path, capsys):
    status = main(["attack", "--attack", "dlg", "--images", "2", "--batch", "2",
                   "--iterations", "2", "--restarts", "1", "--resolution", "8",
                   "--out", str(tmp_path)])
    assert status == 0
    captured = capsys.readouterr()
    assert "PSNR" in captured.out and "label accuracy" in captured.out
    assert "2/2" in captured.err  # the progress bar finished


def test_attack_error_is_reported_not_raised(tmp_path, capsys):
    status = main(["attack", "--attack", "analytic", "--model", "lenet", "--images", "1",
                   "--out", str(tmp_path)])
    assert status == 2
    assert "AttackConfigError" in capsys.readouterr().err


def test_missing_data_dir_is_reported(tmp_path, capsys):
    status = main(["attack", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"),
                   "--out", str(tmp_path)])
    assert status == 2
    assert "DatasetNotFoundError" in capsys.readouterr().err


@pytest.mark.slow
def test_dlg_cli_recovers_a_real_32px_image(tmp_path, capsys):
    # images 0 (astronaut, a known-hard crop for DLG) and 1 (chelsea)
    assert main(["attack", "--attack", "dlg", "--images", "2", "--json", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)["images"]
    assert rows[1]["psnr"] >= 30.0 and rows[1]["label_recovered"] == rows[1]["label_true"]
