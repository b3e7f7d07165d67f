"""Config layers: a later layer's alternative (path: over url:, steps over total_tokens)
replaces the one below instead of sitting beside it; checked on the merge itself and
through real snakemake with `--configfile` over the shipped config.yaml."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading

import pytest
import yaml
from conftest import copy_checkout, snakemake, tiny_config, write_readme_local_yaml

from lm.config_layers import merge_layers
from lm.data.demo import write_corpus

SHIPPED = {
    "datasets": {
        "owt": {
            "train": {"url": "https://example.org/owt_train.txt.gz", "sha256": "ab" * 32},
            "valid": {"url": "https://example.org/owt_valid.txt.gz"},
            "tokenizer": {"vocab_size": 32000},
        }
    },
    "training_defaults": {"training": {"batch_size": 32, "steps": 100}},
    "runs": {"r": {"training": {"total_tokens": 1000}, "optimizer": {"lr": 1e-3}}},
}


def test_path_replaces_url_and_its_checksum():
    merged = merge_layers([SHIPPED, {"datasets": {"owt": {"train": {"path": "/data/t.txt"}}}}])
    assert merged["datasets"]["owt"]["train"] == {"path": "/data/t.txt"}
    # what the layer did not name is kept
    assert merged["datasets"]["owt"]["valid"] == SHIPPED["datasets"]["owt"]["valid"]
    assert merged["datasets"]["owt"]["tokenizer"] == {"vocab_size": 32000}
    assert SHIPPED["datasets"]["owt"]["train"]["url"].endswith(".gz")  # inputs untouched


def test_a_new_url_drops_the_old_checksum_unless_given_with_it():
    new = {"datasets": {"owt": {"train": {"url": "https://mirror/t.txt"}}}}
    assert merge_layers([SHIPPED, new])["datasets"]["owt"]["train"] == {
        "url": "https://mirror/t.txt"
    }
    both = {"datasets": {"owt": {"train": {"url": "https://mirror/t.txt", "sha256": "cd" * 32}}}}
    assert merge_layers([SHIPPED, both])["datasets"]["owt"]["train"]["sha256"] == "cd" * 32
    only_sum = {"datasets": {"owt": {"valid": {"sha256": "ef" * 32}}}}
    assert merge_layers([SHIPPED, only_sum])["datasets"]["owt"]["valid"] == {
        "url": "https://example.org/owt_valid.txt.gz",
        "sha256": "ef" * 32,
    }


def test_url_replaces_path_and_generate_replaces_url():
    local = {"datasets": {"d": {"train": {"path": "a.txt"}}}}
    url = {"datasets": {"d": {"train": {"url": "http://h/a.txt"}}}}
    gen = {"datasets": {"d": {"train": {"generate": {"documents": 3}}}}}
    assert merge_layers([local, url])["datasets"]["d"]["train"] == {"url": "http://h/a.txt"}
    assert merge_layers([local, url, gen])["datasets"]["d"]["train"] == {
        "generate": {"documents": 3}
    }


def test_two_alternatives_in_one_layer_are_kept_for_the_schema_to_reject():
    both = {"datasets": {"owt": {"train": {"path": "a", "url": "b"}}}}
    assert merge_layers([SHIPPED, both])["datasets"]["owt"]["train"] == {"path": "a", "url": "b"}


def test_run_length_and_schedule_alternatives():
    over = {
        "training_defaults": {"training": {"total_tokens": 5000}},
        "runs": {"r": {"training": {"steps": 7}}},
    }
    merged = merge_layers([SHIPPED, over])
    assert merged["training_defaults"]["training"] == {"batch_size": 32, "total_tokens": 5000}
    assert merged["runs"]["r"]["training"] == {"steps": 7}
    assert merged["runs"]["r"]["optimizer"] == {"lr": 1e-3}


def test_other_keys_merge_as_before():
    merged = merge_layers([{"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}}, {"a": {"d": None}}])
    assert merged == {"a": {"b": 1, "c": [3], "d": None}}


# ---- through real snakemake, over the shipped config.yaml ------------------------------


@pytest.mark.slow
def test_configfile_points_owt_at_local_files_and_builds_its_tokenizer(tmp_path):
    """The documented recipe (docs/data.md): local.yaml gives path: for owt; the shipped url: is not used."""
    root = copy_checkout(tmp_path / "repo")
    data = tmp_path / "data"
    write_readme_local_yaml(root, data)
    proc = snakemake(root, "--cores", "8", "results/owt/tokenizer", "--configfile", "local.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "fetch_split" not in out  # nothing downloaded
    stats = json.loads((root / "results/owt/tokenizer/stats.json").read_text())
    assert stats["input"] == str(data / "owt_train.txt")
    assert not (root / "results/owt/raw/train.txt").exists()


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a temporary directory."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_configfile_url_replaces_a_path_split(tmp_path, http_dir):
    served, base = http_dir
    write_corpus(served / "valid.txt", documents=4, seed=3)
    digest = hashlib.sha256((served / "valid.txt").read_bytes()).hexdigest()
    root = copy_checkout(tmp_path / "repo")
    cfg = tiny_config(demo=10)
    cfg["datasets"]["demo"]["valid"] = {"path": str(tmp_path / "absent.txt")}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    (root / "mirror.yaml").write_text(
        yaml.safe_dump(
            {"datasets": {"demo": {"valid": {"url": f"{base}/valid.txt", "sha256": digest}}}}
        )
    )
    proc = snakemake(root, "results/demo/raw/valid.stats.json", "--configfile", "mirror.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fetched = root / "results/demo/raw/valid.txt"
    assert fetched.read_bytes() == (served / "valid.txt").read_bytes()


@pytest.mark.slow
def test_configfile_with_an_unknown_dataset_key_is_named(tmp_path):
    root = copy_checkout(tmp_path / "repo")
    (root / "local.yaml").write_text(
        yaml.safe_dump({"datasets": {"owt": {"trian": {"path": "/data/owt_train.txt"}}}})
    )
    proc = snakemake(root, "-n", "results/owt/tokenizer", "--configfile", "local.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config error at `datasets.owt`" in out and "'trian' was unexpected" in out


@pytest.mark.slow
def test_config_on_the_command_line_is_a_layer_too(tmp_path):
    root = copy_checkout(tmp_path / "repo")
    proc = snakemake(
        root, "-n", "results/owt/tokenizer", "--config", "datasets={owt: {train: {path: x.txt}}}"
    )
    out = proc.stdout + proc.stderr
    # the split now reads x.txt (which does not exist): named, and no schema clash with url:
    assert proc.returncode != 0
    assert "datasets.owt.train.path: file x.txt does not exist" in out
    assert "valid under each of" not in out


def test_command_line_values_get_yaml_types_at_every_depth():
    from lm.config_layers import typed_command_line_config

    # what snakemake hands over for --config 'generation={max_new_tokens: 64, ...}' x=3
    given = {
        "generation": {"max_new_tokens": "64", "temperature": "0.8", "prompts": ["A dog", "3"]},
        "training_defaults": {"training": {"compile": "true", "device": "cuda"}},
        "x": 3,
    }
    assert typed_command_line_config(given) == {
        "generation": {"max_new_tokens": 64, "temperature": 0.8, "prompts": ["A dog", 3]},
        "training_defaults": {"training": {"compile": True, "device": "cuda"}},
        "x": 3,
    }
