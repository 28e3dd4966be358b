"""Content-addressed dataset snapshots and the resolution of a spec's ``data.uri``.

Every dataset a job trains on is first copied to ``DATASETS_DIR/<sha256>.<csv|parquet>`` (with a small
``<sha256>.json`` beside it), so any run can be traced to, and retrained from, the exact bytes it used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import ipaddress
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import pandas as pd

from mlops_common.settings import REPO_ROOT
from mlops_common.spec import ModelSpec
from trainer import production

log = logging.getLogger(__name__)
Format = Literal["csv", "parquet"]
SHA256_RE = re.compile(r"^(?:dataset:(?://)?|ds:)?([0-9a-f]{64})$")
CHUNK = 1024 * 1024


class DatasetError(ValueError):
    """A dataset that cannot be used; the message says why (shown to the user as is)."""


class DatasetNotFound(DatasetError):
    pass


class DatasetTooLarge(DatasetError):
    pass


@dataclass
class Snapshot:
    dataset_id: str
    sha256: str
    format: Format
    path: str
    rows: int
    columns: list[str]
    source: str
    created_at: str
    size_bytes: int
    # Where the rows came from, for a materialised production dataset (versions, window, row count).
    lineage: dict[str, Any] | None = None

    def public(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("path")
        return data


def sniff_format(head: bytes, name: str = "") -> Format:
    if head.startswith(b"PAR1") or name.lower().endswith((".parquet", ".pq")):
        return "parquet"
    return "csv"


def read_frame(path: Path | str, fmt: Format) -> pd.DataFrame:
    """The file as a DataFrame, or :class:`DatasetError` with a readable reason."""
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise DatasetError("the dataset is empty: the file has no header and no rows") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        kind = "Parquet" if fmt == "parquet" else "CSV"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"unreadable {kind} file: {first}") from exc
    except Exception as exc:  # pyarrow raises its own types for corrupt files
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DatasetError(f"unreadable file: {type(exc).__name__}: {first}") from exc


class DatasetStore:
    def __init__(self, root: Path, allowed_roots: list[Path], max_bytes: int, http_timeout: float = 60.0,
                 allowed_hosts: Collection[str] | None = None,
                 restore: Callable[[str, Path], Path | None] | None = None, served_log_url: str = "") -> None:
        self.root = root
        # The predictors' served log (Postgres), for production:<model> datasets; empty: none.
        self.served_log_url = served_log_url
        # Fetches a snapshot this store lacks (e.g. from the MLflow run that trained on it) into a folder.
        self.restore = restore
        self.allowed_roots = allowed_roots
        self.max_bytes = max_bytes
        self.http_timeout = http_timeout
        if allowed_hosts is None:
            from trainer.settings import get_settings

            allowed_hosts = get_settings().data_allowed_hosts
        self.allowed_hosts = [h.strip().lower() for h in allowed_hosts if h.strip()]

    # snapshots
    def _paths(self, sha: str, fmt: Format) -> tuple[Path, Path]:
        return self.root / f"{sha}.{fmt}", self.root / f"{sha}.json"

    def get(self, dataset_id: str) -> Snapshot | None:
        match = SHA256_RE.match(dataset_id.strip().lower())
        if not match:
            return None
        meta = self.root / f"{match.group(1)}.json"
        if not meta.is_file():
            return None
        snap = Snapshot(**json.loads(meta.read_text()))
        snap.path = str(self.root / Path(snap.path).name)  # the same volume may be mounted elsewhere
        return snap

    def find(self, dataset_id: str) -> Snapshot | None:
        """:meth:`get`, or else the snapshot restored through ``restore`` (its sha256 checked)."""
        snap = self.get(dataset_id)
        match = SHA256_RE.match(dataset_id.strip().lower())
        if snap is not None or match is None or self.restore is None:
            return snap
        sha = match.group(1)
        with tempfile.TemporaryDirectory(dir=self._root()) as tmp:
            try:
                found = self.restore(sha, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - a failed restore is a missing dataset
                log.warning("could not restore dataset %s: %s", sha, exc)
                return None
            if found is None:
                return None

            def read_chunks():
                with found.open("rb") as fh:
                    while chunk := fh.read(CHUNK):
                        yield chunk

            restored = self.ingest_stream(read_chunks(), source=f"restored:{sha}", name=found.name)
        if restored.sha256 != sha:
            raise DatasetError(f"data.uri: the restored copy of {sha} has sha256 {restored.sha256}")
        return restored

    def list(self) -> list[Snapshot]:
        if not self.root.is_dir():
            return []
        snaps = [Snapshot(**json.loads(p.read_text())) for p in self.root.glob("*.json")]
        return sorted(snaps, key=lambda s: s.created_at, reverse=True)

    def ingest_file(self, tmp_path: Path, sha: str, size: int, source: str, name: str = "",
                    lineage: dict[str, Any] | None = None) -> Snapshot:
        """Move a downloaded/uploaded temp file into the store (validating it is a readable table)."""
        with tmp_path.open("rb") as fh:
            fmt = sniff_format(fh.read(4), name)
        existing = self.get(sha)
        if existing is not None:
            tmp_path.unlink(missing_ok=True)
            return existing
        frame = read_frame(tmp_path, fmt)
        data_path, meta_path = self._paths(sha, fmt)
        os.replace(tmp_path, data_path)
        snap = Snapshot(dataset_id=sha, sha256=sha, format=fmt, path=str(data_path), rows=int(len(frame)),
                        columns=[str(c) for c in frame.columns], source=source,
                        created_at=datetime.now(UTC).isoformat(), size_bytes=size, lineage=lineage)
        tmp_meta = meta_path.with_suffix(".json.tmp")
        tmp_meta.write_text(json.dumps(asdict(snap)))
        os.replace(tmp_meta, meta_path)
        return snap

    def _temp(self) -> tuple[int, Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        return fd, Path(name)

    def ingest_stream(self, chunks, source: str, name: str = "", lineage: dict[str, Any] | None = None) -> Snapshot:
        fd, tmp = self._temp()
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise DatasetTooLarge(f"the dataset is larger than the limit of {self.max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise DatasetError("the dataset is empty: the file has no bytes")
            return self.ingest_file(tmp, digest.hexdigest(), size, source, name, lineage)
        finally:
            tmp.unlink(missing_ok=True)

    # data.uri
    def check_uri(self, uri: str) -> str:
        """Early check (API side) that a uri is acceptable; returns its kind or raises DatasetError."""
        uri = uri.strip()
        if SHA256_RE.match(uri.lower()):
            if self.find(uri) is None:
                raise DatasetNotFound(f"data.uri: no uploaded dataset with id {uri!r} (see GET /datasets)")
            return "dataset"
        if uri.startswith(production.PREFIX):
            production.parse(uri)
            if not self.served_log_url:
                raise DatasetError("data.uri: production datasets are read from the predictors' served log; set "
                                   "SERVED_LOG_DATABASE_URL for the trainer (the predictors' own setting)")
            return "production"
        if uri.startswith(("http://", "https://")):
            check_host(uri, self.allowed_hosts)
            return "http"
        if uri.startswith("s3://"):
            split_s3(uri)
            if importlib.util.find_spec("boto3") is None:
                raise DatasetError("data.uri: s3:// URIs need boto3 in the trainer image (and the S3 settings "
                                   "of the artifact store: MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); "
                                   "upload the file with POST /datasets or give an http(s) URL instead")
            return "s3"
        if "://" in uri and not uri.startswith("file://"):
            raise DatasetError(f"data.uri: unsupported scheme in {uri!r} (use a dataset id, a path or http(s))")
        path = self.local_path(uri)
        if not path.is_file():
            raise DatasetNotFound(f"data.uri: no file at {uri!r}")
        return "path"

    def local_path(self, uri: str) -> Path:
        if "\x00" in uri:
            raise DatasetError("data.uri: a path cannot contain NUL characters")
        raw = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
        path = (raw if raw.is_absolute() else REPO_ROOT / raw).resolve()
        if not any(path.is_relative_to(root) for root in self.allowed_roots):
            roots = ", ".join(str(r) for r in self.allowed_roots)
            raise DatasetError(f"data.uri: {uri!r} is outside the allowed data folders ({roots})")
        return path

    def snapshot(self, uri: str, spec: ModelSpec | None = None) -> Snapshot:
        """Resolve ``uri`` and return the content-addressed snapshot of its bytes (a ``production:`` uri is
        materialised with ``spec``'s columns first)."""
        uri = uri.strip()
        kind = self.check_uri(uri)
        if kind == "production":
            if spec is None:
                raise DatasetError("data.uri: a production dataset is materialised for a model spec")
            return production.materialise(self, uri, spec)
        if kind == "dataset":
            snap = self.find(uri)
            assert snap is not None
            return snap
        if kind == "http":
            return self._download(uri)
        if kind == "s3":
            return self._download_s3(uri)
        path = self.local_path(uri)

        def read_chunks():
            with path.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk

        return self.ingest_stream(read_chunks(), source=str(path), name=path.name)

    def _download(self, url: str) -> Snapshot:
        try:
            def guard(request: httpx.Request) -> None:  # every hop, redirects included
                check_host(str(request.url), self.allowed_hosts)

            with httpx.Client(timeout=self.http_timeout, follow_redirects=True,
                              event_hooks={"request": [guard]}) as client, client.stream("GET", url) as resp:
                if resp.status_code >= 400:
                    raise DatasetError(f"data.uri: GET {url} answered {resp.status_code}")
                return self.ingest_stream(resp.iter_bytes(CHUNK), source=url, name=url.split("?")[0])
        except httpx.HTTPError as exc:
            raise DatasetError(f"data.uri: could not download {url}: {exc}") from exc

    def _download_s3(self, uri: str) -> Snapshot:
        """One object, streamed through a boto3 client set up as MLflow's S3 artifact store is
        (:func:`s3_client`), so the artifact store's S3 settings apply. The size limit holds before and while
        the bytes arrive; nothing is listed or downloaded besides the key."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        try:
            client, extra = s3_client()
            response = client.get_object(Bucket=bucket, Key=key, **extra)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            raise DatasetError(f"data.uri: could not download {uri}: {code}: {error.get('Message') or exc}") from exc
        except (BotoCoreError, ValueError) as exc:  # no endpoint, no credentials, a malformed bucket name...
            raise DatasetError(f"data.uri: could not download {uri}: {type(exc).__name__}: {exc}") from exc
        body = response["Body"]
        try:
            if int(response.get("ContentLength") or 0) > self.max_bytes:
                raise DatasetTooLarge(f"the dataset is larger than the limit of {self.max_bytes} bytes")

            def read_chunks():
                try:
                    yield from body.iter_chunks(CHUNK)
                except (BotoCoreError, OSError) as exc:  # the connection broke mid-body
                    raise DatasetError(f"data.uri: could not download {uri}: {type(exc).__name__}: {exc}") from exc

            return self.ingest_stream(read_chunks(), source=uri, name=key)
        finally:
            body.close()

    def _root(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    def load(self, snap: Snapshot) -> pd.DataFrame:
        return read_frame(snap.path, snap.format)


def s3_client() -> tuple[Any, dict[str, str]]:
    """(boto3 S3 client, extra GetObject arguments) configured from the settings MLflow documents for its S3
    artifact store (``mlflow.environment_variables``): MLFLOW_S3_ENDPOINT_URL, MLFLOW_S3_IGNORE_TLS,
    MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE, MLFLOW_S3_EXPECTED_BUCKET_OWNER and its signature override; credentials
    and region come from boto3's usual chain (AWS_ACCESS_KEY_ID, AWS_DEFAULT_REGION, profiles, roles)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from mlflow.environment_variables import (
        MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE,
        MLFLOW_S3_ENDPOINT_URL,
        MLFLOW_S3_EXPECTED_BUCKET_OWNER,
        MLFLOW_S3_IGNORE_TLS,
    )

    signature: Any = os.environ.get("MLFLOW_EXPERIMENTAL_S3_SIGNATURE_VERSION", "s3v4")
    if signature.lower() == "unsigned":  # public buckets, as MLflow allows
        signature = UNSIGNED
    client = boto3.client("s3", endpoint_url=MLFLOW_S3_ENDPOINT_URL.get(),
                          verify=False if MLFLOW_S3_IGNORE_TLS.get() else None,
                          config=Config(signature_version=signature,
                                        s3={"addressing_style": MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE.get()}))
    owner = MLFLOW_S3_EXPECTED_BUCKET_OWNER.get()
    return client, ({"ExpectedBucketOwner": owner} if owner else {})


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key); the key is taken as written (``?`` and ``#`` included)."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise DatasetError(f"data.uri: {uri!r} does not name one object; use s3://bucket/path/to/file.csv")
    return bucket, key


def check_host(url: str, allowed_hosts: Collection[str]) -> None:
    """Refuses an http(s) URL whose host resolves to a non-public address (loopback, private, link-local,
    reserved: the services' own internal addresses) unless DATA_ALLOWED_HOSTS names the host, the address or
    a network holding it. An unresolvable host is left to the download to fail."""
    host = (urlsplit(url).hostname or "").lower()
    if not host:
        raise DatasetError(f"data.uri: no host in {url!r}")
    if host in allowed_hosts:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        addr = getattr(addr, "ipv4_mapped", None) or addr
        if addr.is_global or _allowed(addr, allowed_hosts):
            continue
        raise DatasetError(f"data.uri: {host!r} resolves to the internal address {addr}; downloads from internal "
                           f"addresses are refused unless DATA_ALLOWED_HOSTS allows the host")


def _allowed(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, allowed_hosts: Collection[str]) -> bool:
    for entry in allowed_hosts:
        try:
            if addr in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def frame_from_bytes(data: bytes, fmt: Format) -> pd.DataFrame:
    return read_frame(io.BytesIO(data), fmt)  # type: ignore[arg-type]
