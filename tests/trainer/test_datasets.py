"""The snapshot store on its own: http(s) downloads over a real local HTTP server, content addressing,
format sniffing, and the guard on local paths."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from trainer.datasets import DatasetError, DatasetStore


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def store(tmp_path: Path, **kwargs: object) -> DatasetStore:
    return DatasetStore(tmp_path / "snapshots", [tmp_path / "allowed"], 10_000_000, 10, **kwargs)  # type: ignore[arg-type]


def test_http_download_is_snapshotted_by_content(tmp_path: Path, served: tuple[str, Path]) -> None:
    base, root = served
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["x", "y", "x"]})
    frame.to_csv(root / "one.csv", index=False)
    frame.to_csv(root / "same-bytes.csv", index=False)
    frame.to_parquet(root / "data.bin")
    datasets = store(tmp_path, allowed_hosts=["127.0.0.1"])
    first = datasets.snapshot(f"{base}/one.csv")
    assert first.rows == 3 and first.columns == ["text", "label"] and first.format == "csv"
    assert first.source == f"{base}/one.csv"
    assert datasets.snapshot(f"{base}/same-bytes.csv").sha256 == first.sha256
    assert datasets.snapshot(f"{base}/data.bin").format == "parquet"  # sniffed from the bytes
    assert Path(first.path).read_bytes() == (root / "one.csv").read_bytes()
    assert datasets.find(first.sha256) == datasets.get(first.dataset_id)
    with pytest.raises(DatasetError, match="answered 404"):
        datasets.snapshot(f"{base}/missing.csv")


def test_internal_host_needs_to_be_allowed(tmp_path: Path, served: tuple[str, Path]) -> None:
    base, root = served
    (root / "d.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="internal address"):
        store(tmp_path, allowed_hosts=[]).snapshot(f"{base}/d.csv")


def test_local_paths_stay_inside_the_allowed_roots(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "ok.csv").write_text("a,b\n1,2\n")
    (tmp_path / "secret.csv").write_text("a,b\n1,2\n")
    (allowed / "link.csv").symlink_to(tmp_path / "secret.csv")
    datasets = store(tmp_path, allowed_hosts=[])
    assert datasets.snapshot(str(allowed / "ok.csv")).rows == 1
    for escape in (str(allowed / ".." / "secret.csv"), str(allowed / "link.csv"), "file:///etc/passwd"):
        with pytest.raises(DatasetError, match="outside the allowed data folders"):
            datasets.snapshot(escape)
