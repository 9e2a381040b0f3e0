"""The object store: one test body over both backends (the file store in tmp_path, S3 served by
moto's server in a subprocess), plus properties of key validation and URL signing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.settings import Secret, StoreSettings
from pixfleet.store import (
    FileStore,
    InvalidKeyError,
    KeyConflictError,
    ObjectNotFoundError,
    ObjectStore,
    StoredObject,
    open_store,
    validate_key,
)
from pixfleet.store.signing import sign, verify
from tests.helpers import leaked_imports

SIGNING_KEY = "test-signing-key"
TTL = 120


@pytest.fixture(params=["file", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """A fresh store: a file store in tmp_path, or a uniquely named bucket on moto."""
    if request.param == "file":
        settings = StoreSettings(
            backend="file",
            root=str(tmp_path / "store"),
            signing_key=Secret(SIGNING_KEY),
            public_url="http://edge.test/",
            url_ttl=TTL,
        )
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        settings = StoreSettings(
            backend="s3",
            bucket=f"pixfleet-test-{uuid.uuid4().hex[:16]}",
            endpoint_url=endpoint,
            access_key_id=Secret("test"),
            secret_access_key=Secret("test"),
            url_ttl=TTL,
        )
    s = await open_store(settings)
    try:
        yield s
    finally:
        # The bucket goes with the moto process at the end of the module; nothing else
        # shares that server.
        await s.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(os.urandom(300_000))
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_file(store: ObjectStore) -> bool:
    return isinstance(store, FileStore)


async def test_round_trip(store: ObjectStore, source: Path, tmp_path: Path) -> None:
    data = source.read_bytes()
    expected = StoredObject(
        key="uploads/a", size=len(data), sha256=_sha(data), media_type="image/png"
    )

    assert await store.put_file("uploads/a", source, "image/png") == expected
    assert source.exists()  # copied, not moved
    assert await store.head("uploads/a") == expected
    assert await store.get_bytes("uploads/a") == data
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"old")
    await store.download("uploads/a", dest)
    assert dest.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no .part left

    small = await store.put_bytes("results/j/out.txt", b"hello", "text/plain")
    assert small == StoredObject("results/j/out.txt", 5, _sha(b"hello"), "text/plain")
    assert await store.head("results/j/out.txt") == small

    local = store.local_path("uploads/a")
    if _is_file(store):
        assert local is not None and local.read_bytes() == data
    else:
        assert local is None


async def test_overwrite_replaces_data_and_metadata(store: ObjectStore) -> None:
    await store.put_bytes("k/x", b"first", "text/plain")
    second = await store.put_bytes("k/x", b"second!", "application/json")
    assert await store.head("k/x") == second
    assert await store.get_bytes("k/x") == b"second!"
    if isinstance(store, FileStore):
        assert len(list((store.root / "blobs").glob("*/*"))) == 1  # the first blob is gone


async def test_concurrent_overwrites_stay_consistent(store: ObjectStore) -> None:
    bodies = [f"body {i}".encode() * (i + 1) for i in range(8)]
    await asyncio.gather(*(store.put_bytes("k/race", b, "text/plain") for b in bodies))
    head = await store.head("k/race")
    data = await store.get_bytes("k/race")
    assert head is not None and data in bodies
    assert (head.size, head.sha256) == (len(data), _sha(data))
    if isinstance(store, FileStore):  # every replaced blob was removed
        assert len(list((store.root / "blobs").glob("*/*"))) == 1


async def test_large_file_streams_in_parts(store: ObjectStore, tmp_path: Path) -> None:
    # Past aioboto3's 8 MiB threshold: a multipart upload, which must keep the metadata.
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(9):
            f.write(os.urandom(1024 * 1024))
    digest = _sha(big.read_bytes())
    stored = await store.put_file("results/j/big.bin", big, "image/tiff")
    assert stored == StoredObject("results/j/big.bin", 9 * 1024 * 1024, digest, "image/tiff")
    assert await store.head("results/j/big.bin") == stored
    dest = tmp_path / "big.out"
    await store.download("results/j/big.bin", dest)
    assert _sha(dest.read_bytes()) == digest


async def test_move(store: ObjectStore, source: Path) -> None:
    data = source.read_bytes()
    given_sha = _sha(data)
    stored = await store.put_file("uploads/m", source, "image/jpeg", sha256=given_sha, move=True)
    assert stored == StoredObject("uploads/m", len(data), given_sha, "image/jpeg")
    assert not source.exists()  # the caller gave it up
    assert await store.get_bytes("uploads/m") == data
    assert await store.head("uploads/m") == stored


async def test_missing_key(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError):
        await store.get_bytes("uploads/none")
    dest = tmp_path / "dest.bin"
    with pytest.raises(ObjectNotFoundError):
        await store.download("uploads/none", dest)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no .part
    assert await store.head("uploads/none") is None
    assert store.local_path("uploads/none") is None
    await store.delete("uploads/none")  # no error


async def test_delete_and_delete_prefix(store: ObjectStore) -> None:
    for key in ["results/j1/a", "results/j1/b", "results/j1/sub/c", "results/j10/x", "uploads/u"]:
        await store.put_bytes(key, key.encode(), "text/plain")

    assert await store.delete_prefix("results/j1/") == 3
    assert await store.head("results/j1/a") is None
    assert await store.head("results/j1/sub/c") is None
    assert await store.head("results/j10/x") is not None
    assert await store.delete_prefix("results/j1/") == 0
    assert await store.delete_prefix("results/j1") == 1  # a string prefix, as in S3

    await store.delete("uploads/u")
    assert await store.head("uploads/u") is None
    with pytest.raises(InvalidKeyError):
        await store.delete_prefix("")
    if isinstance(store, FileStore):  # emptied prefix directories and blobs are removed
        assert list((store.root / "objects").iterdir()) == []
        assert list((store.root / "blobs").glob("*/*")) == []


async def test_failed_put_leaves_no_object(store: ObjectStore, tmp_path: Path) -> None:
    missing = tmp_path / "missing.bin"
    with pytest.raises(FileNotFoundError):
        await store.put_file("uploads/f", missing, "image/png")
    with pytest.raises(FileNotFoundError):
        await store.put_file("uploads/f", missing, "image/png", sha256="0" * 64, move=True)
    assert await store.head("uploads/f") is None
    with pytest.raises(ObjectNotFoundError):
        await store.get_bytes("uploads/f")
    if isinstance(store, FileStore):
        assert list((store.root / "blobs").glob("*/*")) == []


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "a/", "../x", "a/../b", "a/./b", "a\\b", "a\x00b", "x" * 1025]
)
async def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        await store.put_bytes(key, b"x", "text/plain")
    with pytest.raises(InvalidKeyError):
        await store.head(key)
    with pytest.raises(InvalidKeyError):
        await store.signed_url(key)
    with pytest.raises(InvalidKeyError):
        store.local_path(key)


async def test_signed_url(store: ObjectStore) -> None:
    key, name = "results/j/out put.png", 'résumé "1".png'
    # Stored untyped: the URL's media type must override it.
    await store.put_bytes(key, b"\x89PNG pixels", "application/octet-stream")
    url = await store.signed_url(key, filename=name, media_type="image/png", ttl=60)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}

    if isinstance(store, FileStore):
        assert f"{parts.scheme}://{parts.netloc}" == "http://edge.test"
        assert unquote(parts.path) == f"/v1/files/{key}"
        assert (query["name"], query["type"]) == (name, "image/png")
        exp, sig, now = int(query["exp"]), query["sig"], time.time()
        assert now + 50 < exp <= now + 61
        assert verify(key, exp, sig, SIGNING_KEY, name, "image/png", now=now)
        assert not verify("results/j/other.png", exp, sig, SIGNING_KEY, name, "image/png", now)
        assert not verify(key, exp + 1, sig, SIGNING_KEY, name, "image/png", now)
        assert not verify(key, exp, sig, SIGNING_KEY, "other.png", "image/png", now)
        assert not verify(key, exp, sig, SIGNING_KEY, None, "image/png", now)
        assert not verify(key, exp, sig, SIGNING_KEY, name, "text/html", now)
        assert not verify(
            key,
            exp,
            sig[:-1] + ("0" if sig[-1] != "0" else "1"),
            SIGNING_KEY,
            name,
            "image/png",
            now,
        )
        assert not verify(key, exp, sig, "other-secret", name, "image/png", now)
        assert not verify(key, exp, sig, SIGNING_KEY, name, "image/png", now=exp)  # expired
        plain = urlsplit(await store.signed_url(key)).query
        assert "name=" not in plain and "type=" not in plain
    else:
        # moto checks neither signatures nor expiry: check the URL's shape, then that it serves.
        assert query["X-Amz-Expires"] == "60"
        assert query["X-Amz-Signature"]
        fresh = parse_qs(urlsplit(await store.signed_url(key)).query)
        assert fresh["X-Amz-Expires"] == [str(TTL)]
        async with httpx.AsyncClient(timeout=10.0) as client:
            response = await client.get(url)
        assert response.status_code == 200
        assert response.content == b"\x89PNG pixels"
        assert response.headers["content-type"] == "image/png"
        disposition = response.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="r_sum_ _1_.png"')
        assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.png" in disposition


async def test_file_store_key_conflicts(tmp_path: Path) -> None:
    store = FileStore(tmp_path, SIGNING_KEY, "http://edge.test", TTL)
    await store.open()
    await store.put_bytes("a/b", b"x", "text/plain")
    with pytest.raises(KeyConflictError):
        await store.put_bytes("a", b"x", "text/plain")
    await store.put_bytes("c", b"x", "text/plain")
    with pytest.raises(KeyConflictError):
        await store.put_bytes("c/d", b"x", "text/plain")
    assert await store.get_bytes("a/b") == b"x"
    assert await store.get_bytes("c") == b"x"


def test_importing_the_store_stays_light() -> None:
    s3_clients = {"aioboto3", "aiobotocore", "botocore", "boto3"}
    heavy = s3_clients | {"litestar", "numpy", "scipy", "astropy", "cv2"}
    assert leaked_imports(["pixfleet.store", "pixfleet.store.signing"], heavy) == ""


# -- properties ---------------------------------------------------------------------------

_segment = st.text(
    st.characters(codec="utf-8", exclude_characters="/\\\x00"),  # utf-8: no lone surrogates
    min_size=1,
    max_size=20,
).filter(lambda s: s not in (".", ".."))


@given(st.lists(_segment, min_size=1, max_size=8))
def test_keys_of_valid_segments_are_accepted(segments: list[str]) -> None:
    key = "/".join(segments)
    assert validate_key(key) == key


@given(st.text(max_size=60))
def test_an_accepted_key_stays_inside_the_root(key: str) -> None:
    try:
        validate_key(key)
    except InvalidKeyError:
        return
    root = "/srv/store/objects"
    joined = os.path.join(root, key)
    assert os.path.normpath(joined) == joined  # nothing to normalise: no escape, no alias
    assert joined.startswith(root + "/")


@given(
    st.lists(_segment, min_size=1, max_size=4),
    st.sampled_from(["", ".", "..", "a\\b", "a\x00b"]),
    st.integers(min_value=0, max_value=4),
)
def test_a_bad_segment_anywhere_is_refused(segments: list[str], bad: str, at: int) -> None:
    segments.insert(min(at, len(segments)), bad)
    with pytest.raises(InvalidKeyError):
        validate_key("/".join(segments))


_field = st.none() | st.text(max_size=30)


@given(st.text(min_size=1, max_size=40), st.integers(0, 2**40), _field, _field, st.data())
def test_signatures_bind_every_field(
    key: str, exp: int, name: str | None, media_type: str | None, data: st.DataObject
) -> None:
    sig = sign(key, exp, SIGNING_KEY, name, media_type)
    assert verify(key, exp, sig, SIGNING_KEY, name, media_type, now=exp - 1)
    assert not verify(key, exp, sig, SIGNING_KEY, name, media_type, now=exp)
    other_name = data.draw(_field.filter(lambda v: v != name))
    other_type = data.draw(_field.filter(lambda v: v != media_type))
    other_key = data.draw(st.text(min_size=1, max_size=40).filter(lambda v: v != key))
    assert not verify(key, exp, sig, SIGNING_KEY, other_name, media_type, now=exp - 1)
    assert not verify(key, exp, sig, SIGNING_KEY, name, other_type, now=exp - 1)
    assert not verify(other_key, exp, sig, SIGNING_KEY, name, media_type, now=exp - 1)
    assert not verify(key, exp + 1, sig, SIGNING_KEY, name, media_type, now=exp - 1)
