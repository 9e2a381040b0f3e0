"""The dataset catalogue against the real PostgreSQL, both object stores and the real edge:
``pixfleet datasets`` as an operator runs it on real FITS files, the records they get, sky
queries (overlaps only, nearest first, RA wrap, pages), who sees what, and a FITS upload
recorded as its owner's dataset by the ``catalogue`` job (in-process, and through a real
``pixfleet worker``)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import numpy as np
import pytest
from astropy.io import fits

from cli.datasets import add_dataset
from contracts.astro import Catalogue
from contracts.datasets import DatasetInfo
from contracts.names import dataset_object
from contracts.settings import LimitsSettings
from pixfleet.registry.datasets import (
    DatasetConflictError,
    InvalidDatasetError,
    UnknownDatasetError,
    check_visible,
    list_datasets,
    lookup,
    record_job_datasets,
    remove_dataset,
)
from pixfleet.store import ObjectStore
from tests import astrodata
from tests.helpers import BOTH_STORES, Client, assert_problem, run_pixfleet, wait_for
from tests.images import photo
from worker.ops.api import InputFile, LocalContext
from worker.ops.catalogue import catalogue


def field(
    path: Path,
    centre: tuple[float, float],
    side_deg: float,
    *,
    rotation: float = 0.0,
    size: int = 33,
    wcs: bool = True,
    **cards: Any,
) -> Path:
    """A small float32 TAN image: ``side_deg`` between the centres of its edge pixels."""
    data = np.arange(size * size, dtype=np.float32).reshape(size, size)
    header = fits.Header()
    if wcs:
        scale = side_deg * 3600.0 / (size - 1)
        header = astrodata.tan_wcs(centre, (size, size), scale, rotation).to_header()
    header.update(cards)
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)
    return path


# -- pixfleet datasets: real files -----------------------------------------------------------


def test_the_operator_registers_real_files(env: dict[str, str], tmp_path: Path) -> None:
    rice = astrodata.m13_variants()["RICE_1"]
    files = [astrodata.acs_flt(), astrodata.m1_dss(), astrodata.m1_ukidss(), rice]
    added = run_pixfleet(env, "datasets", "add", *files)
    assert added.returncode == 0, added.stderr
    assert added.stdout.count("added dataset ") == 4
    renamed = run_pixfleet(env, "datasets", "add", astrodata.sip_file(), "--id", "survey/sip:1")
    assert renamed.returncode == 0, renamed.stderr
    listing = run_pixfleet(env, "datasets", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    records = {r["id"]: r for r in json.loads(listing.stdout)}
    assert set(records) == {
        "j8bt06nyq_flt",
        "query_images",
        "image",
        "m13_rice",
        "survey/sip:1",
    }

    acs = records["j8bt06nyq_flt"]
    assert [(h["name"], h["type"], h["shape"], h["bitpix"]) for h in acs["hdus"]] == [
        ("PRIMARY", "PrimaryHDU", [], 16),
        ("SCI", "ImageHDU", [1024, 1024], -32),
        ("ERR", "ImageHDU", [1024, 1024], -32),
        ("DQ", "ImageHDU", [1024, 1024], 16),
    ]
    assert acs["shape"] == [1024, 1024] and acs["owner"] is None and acs["upload_id"] is None
    assert {(b["keyword"], b.get("name")) for b in acs["bands"]} == {
        ("FILTER1", "F606W"),  # FILTER2 is CLEAR2S: an empty wheel position, not a band
        ("PHOTPLAM", None),
    }
    [pivot] = [b["wavelength"] for b in acs["bands"] if b["keyword"] == "PHOTPLAM"]
    assert pivot == pytest.approx(5887.93e-10, rel=1e-5)
    assert acs["wcs"]["hdu"] == 1 and acs["wcs"]["ctype"] == ["RA---TAN", "DEC--TAN"]
    assert (acs["centre_ra"], acs["centre_dec"]) == pytest.approx((6.02714, -72.08351), abs=1e-4)
    assert len(acs["footprint"]) == 4 and 0.005 < acs["radius"] < 0.006
    assert acs["object_key"] == dataset_object(acs["sha256"])
    assert acs["size"] == astrodata.acs_flt().stat().st_size

    m13 = records["m13_rice"]
    assert [(h["type"], h["shape"], h["bitpix"]) for h in m13["hdus"]] == [
        ("PrimaryHDU", [], 16),
        ("CompImageHDU", [300, 300], 16),
    ]
    assert m13["wcs"]["hdu"] == 1 and m13["shape"] == [300, 300]
    assert (m13["centre_ra"], m13["centre_dec"]) == pytest.approx((250.4226, 36.4602), abs=1e-4)
    assert records["image"]["bands"] == [{"hdu": 0, "keyword": "FILTER", "name": "K"}]
    assert records["image"]["wcs"]["ctype"] == ["RA---ZPN", "DEC--ZPN"]
    assert records["survey/sip:1"]["wcs"]["sip"] is True

    table = run_pixfleet(env, "datasets", "list")
    assert table.returncode == 0 and "j8bt06nyq_flt" in table.stdout and "F606W" in table.stdout
    removed = run_pixfleet(env, "datasets", "remove", "image")
    assert removed.returncode == 0 and "removed dataset image" in removed.stdout
    again = run_pixfleet(env, "datasets", "remove", "image")
    assert again.returncode == 1 and "no dataset" in again.stderr


def test_the_operator_is_told_what_is_wrong(env: dict[str, str], tmp_path: Path) -> None:
    flat = field(tmp_path / "flat.fits", (10.0, 10.0), 0.1, wcs=False)
    refused = run_pixfleet(env, "datasets", "add", flat)
    assert refused.returncode == 1 and "celestial WCS" in refused.stderr, refused.stderr
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file\n")
    assert "cannot read the FITS file" in run_pixfleet(env, "datasets", "add", text).stderr
    one = field(tmp_path / "one.fits", (10.0, 10.0), 0.1)
    two = field(tmp_path / "two.fits", (11.0, 10.0), 0.1)
    assert run_pixfleet(env, "datasets", "add", one, two, "--id", "x").returncode == 2
    bad_id = run_pixfleet(env, "datasets", "add", one, "--id", "has space")
    assert bad_id.returncode == 1 and "invalid dataset id" in bad_id.stderr
    missing = run_pixfleet(env, "datasets", "add", tmp_path / "nope.fits")
    assert missing.returncode == 1 and "no such file" in missing.stderr
    assert json.loads(run_pixfleet(env, "datasets", "list", "--json").stdout) == []


# -- records of synthetic files ----------------------------------------------------------------


async def test_mef_cubes_and_compressed_hdus(pool: Any, store: ObjectStore, tmp_path: Path) -> None:
    mef, mef16, _ = astrodata.mef_field(tmp_path, size=48)
    cube, stokes, _ = astrodata.cube_field(tmp_path, size=24)
    packed = astrodata.compressed(mef, tmp_path, ["GZIP_2", "HCOMPRESS_1"])
    rec = await add_dataset(pool, store, mef16, "mef16")
    assert [(h.index, h.name, h.type, h.shape, h.bitpix) for h in rec.hdus] == [
        (0, "PRIMARY", "PrimaryHDU", [], 8),
        (1, "SCI", "ImageHDU", [48, 48], 16),
        (2, "ERR", "ImageHDU", [48, 48], -32),
        (3, "DQ", "ImageHDU", [48, 48], 16),
    ]
    assert rec.wcs is not None and rec.wcs.hdu == 1 and rec.shape == [48, 48]
    assert (rec.centre_ra, rec.centre_dec) == pytest.approx((210.8, 54.35), abs=1e-6)

    rec = await add_dataset(pool, store, cube, "cube")
    assert rec.shape == [5, 24, 24] and rec.hdus[0].shape == [5, 24, 24]
    [band] = rec.bands
    assert (band.keyword, band.hdu) == ("WAVE", 0)
    assert (band.low, band.high) == pytest.approx((5e-7, 7e-7), rel=1e-9)
    assert rec.radius is not None and rec.radius == pytest.approx(
        23 * 0.5 / 3600 / 2**0.5, rel=1e-3
    )
    rec = await add_dataset(pool, store, stokes, "stokes")
    assert rec.shape == [4, 5, 24, 24]
    assert [(b.keyword, b.low, b.high) for b in rec.bands] == [
        ("WAVE", pytest.approx(5e-7), pytest.approx(7e-7))
    ]

    for kind, path in packed.items():
        rec = await add_dataset(pool, store, path, kind.lower())
        assert [(h.type, h.shape) for h in rec.hdus] == [
            ("PrimaryHDU", []),
            ("CompImageHDU", [48, 48]),
        ], kind
        assert rec.wcs is not None and rec.wcs.hdu == 1
        assert (rec.centre_ra, rec.centre_dec) == pytest.approx((210.8, 54.35), abs=1e-6)


@BOTH_STORES
async def test_re_adding_replaces_and_objects_are_shared(
    pool: Any, store: ObjectStore, tmp_path: Path
) -> None:
    a = field(tmp_path / "a.fits", (10.0, 20.0), 0.1)
    b = field(tmp_path / "b.fits", (30.0, -20.0), 0.2, FILTER="r")
    first = await add_dataset(pool, store, a, "x")
    twin = await add_dataset(pool, store, a, "x-twin")
    assert twin.object_key == first.object_key and await store.head(first.object_key)
    second = await add_dataset(pool, store, b, "x", owner="carol")
    assert second.object_key != first.object_key and second.owner == "carol"
    assert second.centre_ra == pytest.approx(30.0) and second.bands[0].name == "r"
    assert await store.head(first.object_key) is not None  # x-twin still uses it
    assert [r.id for r in await list_datasets(pool)] == ["x", "x-twin"]
    await remove_dataset(pool, store, "x-twin")
    assert await store.head(first.object_key) is None
    await remove_dataset(pool, store, "x")
    assert await store.head(second.object_key) is None
    with pytest.raises(UnknownDatasetError):
        await remove_dataset(pool, store, "x")
    with pytest.raises(InvalidDatasetError, match="celestial WCS"):
        await add_dataset(pool, store, field(tmp_path / "c.fits", (0, 0), 1, wcs=False), "c")
    with pytest.raises(InvalidDatasetError, match="invalid dataset id"):
        await add_dataset(pool, store, a, "/leading-slash")


# -- sky queries through the edge ------------------------------------------------------------


async def query(client: Client, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/v1/datasets", params=params, headers=headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_sky_query_finds_exactly_the_overlapping_nearest_first(
    client: Client, alice: dict[str, str], pool: Any, store: ObjectStore, tmp_path: Path
) -> None:
    # Squares of side 0.2 degrees (0.1 from the centre to each edge) along the equator, and a
    # query circle of radius 0.1 at RA 100: "inside" holds its centre, "edge" is 0.05 inside
    # it, "near-miss" stops 0.02 short of it although its centre is within the radius plus
    # its own half diagonal (the SQL prefilter keeps it, the exact test drops it), "far" is
    # nowhere near.
    places = {"inside": 100.01, "edge": 100.15, "near-miss": 100.22, "far": 103.0}
    for name, ra in places.items():
        await add_dataset(pool, store, field(tmp_path / f"{name}.fits", (ra, 0.0), 0.2), name)
    # A diamond (the same square turned 45 degrees) whose corner pokes into the circle.
    diamond = field(tmp_path / "diamond.fits", (99.78, 0.0), 0.2, rotation=45)
    await add_dataset(pool, store, diamond, "diamond")
    found = await query(client, alice, ra=100.0, dec=0.0, radius=0.1)
    assert [d["id"] for d in found] == ["inside", "edge", "diamond"]
    assert [d["distance"] for d in found] == pytest.approx([0.01, 0.15, 0.22], abs=1e-9)
    assert all(d["public"] and d["upload_id"] is None for d in found)
    assert "object_key" not in found[0] and "owner" not in found[0]
    # Every record, by id, without a query; and each one by id.
    everything = await query(client, alice)
    assert [d["id"] for d in everything] == sorted([*places, "diamond"])
    assert all(d.get("distance") is None for d in everything)
    one = (await client.get("/v1/datasets/edge", headers=alice)).json()
    assert one["id"] == "edge" and one["footprint"] and one["shape"] == [33, 33]
    # Pages: nearest first, one at a time, the same three.
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"ra": 100.0, "dec": 0.0, "radius": 0.1, "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/datasets", params=params, headers=alice)).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page.get("next")
        if not cursor:
            break
    assert seen == ["inside", "edge", "diamond"]


async def test_ra_wrap_poles_and_real_neighbours(
    client: Client, alice: dict[str, str], pool: Any, store: ObjectStore, tmp_path: Path
) -> None:
    wrap, _ = astrodata.wrap_field(tmp_path, size=64)  # RA 359.969 to 0.071, Dec 10
    pole, _ = astrodata.pole_field(tmp_path, size=64)  # holds the north pole
    await add_dataset(pool, store, wrap, "wrap")
    await add_dataset(pool, store, pole, "pole")
    await add_dataset(pool, store, astrodata.m1_dss(), "m1/dss")
    await add_dataset(pool, store, astrodata.m1_ukidss(), "m1/ukidss")
    for ra in (359.99, 0.05):
        assert [d["id"] for d in await query(client, alice, ra=ra, dec=10, radius=0.001)] == [
            "wrap"
        ]
    assert await query(client, alice, ra=359.9, dec=10, radius=0.01) == []
    for ra in (0, 123, 300):
        assert [d["id"] for d in await query(client, alice, ra=ra, dec=89.99, radius=1e-3)] == [
            "pole"
        ]
    assert [d["id"] for d in await query(client, alice, ra=0, dec=90, radius=5)] == ["pole"]
    # The UKIDSS stamp lies inside the DSS image: both hold M1's centre, nearest first.
    near = await query(client, alice, ra=83.63321, dec=22.01446, radius=0.001)
    assert [d["id"] for d in near] == ["m1/ukidss", "m1/dss"]
    assert near[0]["distance"] < near[1]["distance"]
    # Out of the small stamp, still in the DSS image.
    assert [d["id"] for d in await query(client, alice, ra=83.61, dec=22.0, radius=1e-3)] == [
        "m1/dss"
    ]


async def test_validation_is_422(client: Client, alice: dict[str, str]) -> None:
    for params, path in (
        ({"ra": 400, "dec": 0, "radius": 1}, "ra"),
        ({"ra": 10, "dec": -91, "radius": 1}, "dec"),
        ({"ra": 10, "dec": 0, "radius": 0}, "radius"),
        ({"ra": 10, "dec": 0, "radius": 181}, "radius"),
        ({"ra": 10}, "dec"),
        ({"ra": 10, "dec": 0, "radius": 1, "limit": 0}, "limit"),
        ({"cursor": "!!"}, "cursor"),
    ):
        r = await client.get("/v1/datasets", params=params, headers=alice)
        doc = assert_problem(r, 422, "invalid-request")
        assert path in {e["path"] for e in doc["errors"]}, (params, doc)
    only_ra = assert_problem(
        await client.get("/v1/datasets", params={"ra": 10}, headers=alice), 422
    )
    assert {e["path"] for e in only_ra["errors"]} == {"dec", "radius"}
    assert (await client.get("/v1/datasets")).status_code == 401


# -- who sees what ---------------------------------------------------------------------------


Output = tuple[str, str, str]


async def catalogue_upload(
    client: Client, headers: dict[str, str], path: Path, owner: str, pool: Any, store: ObjectStore
) -> tuple[dict[str, Any], Output]:
    """Upload a FITS file, then do what its catalogue job does, here: run the operation on the
    stored bytes and call its ``after`` hook; return the upload and the operation's output."""
    r = await client.post("/v1/uploads", content=path.read_bytes(), headers=headers)
    assert r.status_code == 201, r.text
    up: dict[str, Any] = r.json()
    local = path.parent / f"{up['id']}.fits"
    await store.download(f"uploads/{up['id']}", local)
    work = path.parent / f"work-{up['id']}"
    work.mkdir()
    item = InputFile(path=local, media_type="application/fits", name=up["id"])
    out = catalogue(Catalogue(), item, LocalContext(workdir=work, limits=LimitsSettings()))
    assert out.path.name == f"{up['id']}.dataset.json" and out.name == f"{up['id']}.dataset"
    output = (str(out.path), out.name, out.media_type)
    assert await record_job_datasets(pool, owner, up["catalogue_job"], [output]) == [up["id"]]
    return up, output


async def test_uploads_are_their_owners_datasets_only(
    client: Client,
    alice: dict[str, str],
    bob: dict[str, str],
    pool: Any,
    store: ObjectStore,
    tmp_path: Path,
) -> None:
    public = await add_dataset(pool, store, field(tmp_path / "pub.fits", (50.0, 5.0), 0.2), "pub")
    await add_dataset(pool, store, field(tmp_path / "c.fits", (50.05, 5.0), 0.2), "carols", "carol")
    up, output = await catalogue_upload(
        client, alice, field(tmp_path / "mine.fits", (50.1, 5.0), 0.2), "alice", pool, store
    )
    assert up["catalogue_job"] is not None and up["media_type"] == "application/fits"
    circle = {"ra": 50.0, "dec": 5.0, "radius": 0.05}
    mine = await query(client, alice, **circle)
    assert [d["id"] for d in mine] == ["pub", up["id"]]
    assert mine[1]["public"] is False and mine[1]["upload_id"] == up["id"]
    assert datetime.fromisoformat(mine[1]["expires_at"]) == datetime.fromisoformat(up["expires_at"])
    assert [d["id"] for d in await query(client, bob, **circle)] == ["pub"]
    got = await client.get(f"/v1/datasets/{up['id']}", headers=alice)
    assert got.status_code == 200 and got.json()["sha256"] == up["sha256"]
    assert_problem(
        await client.get(f"/v1/datasets/{up['id']}", headers=bob), 404, "unknown-dataset"
    )
    assert_problem(await client.get("/v1/datasets/carols", headers=alice), 404)
    assert_problem(await client.get("/v1/datasets/no/such:thing", headers=alice), 404)

    # What the edge checks job inputs with: the ids not visible, in order.
    await check_visible(pool, "alice", ["pub", up["id"]])
    with pytest.raises(UnknownDatasetError) as unseen:
        await check_visible(pool, "alice", ["pub", up["id"], "carols", "x"])
    assert unseen.value.ids == ("carols", "x")
    with pytest.raises(UnknownDatasetError) as unseen:
        await check_visible(pool, "bob", [up["id"], "pub"])
    assert unseen.value.ids == (up["id"],)
    assert set(await lookup(pool, "carol", ["carols", "pub", up["id"]])) == {"carols", "pub"}
    assert (await lookup(pool, "alice", [up["id"]]))[up["id"]]["object_key"] == (
        f"uploads/{up['id']}"
    )
    # An operator cannot take the id of a user's upload.
    with pytest.raises(DatasetConflictError):
        await add_dataset(pool, store, tmp_path / "pub.fits", up["id"])
    # The hook records nothing for an owner the upload is not of, nor for a non-upload id.
    assert await record_job_datasets(pool, "bob", "job", [output]) == []
    other = tmp_path / "pub.dataset.json"
    other.write_bytes(msgspec.json.encode(DatasetInfo(id="pub", hdus=[], shape=[1, 1])))
    outputs = [(str(other), "pub.dataset", "application/json"), output]
    assert await record_job_datasets(pool, "alice", "job", outputs) == [up["id"]]
    assert public.owner is None and (await lookup(pool, "bob", [up["id"]])) == {}

    # Expired (the record carries its upload's expiry): invisible at once; swept: gone with
    # the upload's row.
    for table, column in (("uploads", "id"), ("datasets", "upload_id")):
        await pool.execute(
            f"UPDATE {table} SET expires_at = now() - interval '1 s' WHERE {column} = $1", up["id"]
        )
    assert [d["id"] for d in await query(client, alice, **circle)] == ["pub"]
    assert_problem(await client.get(f"/v1/datasets/{up['id']}", headers=alice), 404)
    await pool.execute("DELETE FROM uploads WHERE id = $1", up["id"])
    assert await pool.fetchval("SELECT count(*) FROM datasets WHERE upload_id IS NOT NULL") == 0


async def test_an_upload_without_wcs_is_found_by_id_only(
    client: Client, alice: dict[str, str], pool: Any, store: ObjectStore, tmp_path: Path
) -> None:
    up, _ = await catalogue_upload(
        client, alice, field(tmp_path / "flat.fits", (0, 0), 1, wcs=False), "alice", pool, store
    )
    record = (await client.get(f"/v1/datasets/{up['id']}", headers=alice)).json()
    assert record["shape"] == [33, 33] and record.get("footprint") is None
    assert record.get("wcs") is None and record.get("radius") is None
    assert await query(client, alice, ra=0, dec=0, radius=180) == []
    assert [d["id"] for d in await query(client, alice)] == [up["id"]]


async def test_ids_with_slashes_colons_and_query_characters(
    client: Client, alice: dict[str, str], pool: Any, store: ObjectStore, tmp_path: Path
) -> None:
    path = field(tmp_path / "f.fits", (10.0, 10.0), 0.1)
    for ident in ("survey/m1:dss", "ivo://pixfleet.test/m1?dss"):
        await add_dataset(pool, store, path, ident)
        r = await client.get(f"/v1/datasets/{quote(ident, safe='')}", headers=alice)
        assert r.status_code == 200 and r.json()["id"] == ident, (ident, r.text)
    r = await client.get("/v1/datasets/survey/m1:dss", headers=alice)
    assert r.status_code == 200 and r.json()["id"] == "survey/m1:dss"


async def test_a_non_fits_upload_has_no_catalogue_job(
    client: Client, alice: dict[str, str]
) -> None:
    r = await client.post("/v1/uploads", content=photo(), headers=alice)
    assert r.status_code == 201 and r.json()["catalogue_job"] is None


# -- the whole path: a real worker -----------------------------------------------------------


@pytest.mark.slow
async def test_fits_upload_becomes_a_dataset_through_a_worker(
    client: Client,
    alice: dict[str, str],
    bob: dict[str, str],
    start_worker: Any,
    tmp_path: Path,
) -> None:
    start_worker()
    path = field(tmp_path / "up.fits", (120.0, -30.0), 0.3, FILTER="g")
    r = await client.post("/v1/uploads", content=path.read_bytes(), headers=alice)
    assert r.status_code == 201, r.text
    up = r.json()
    job = await wait_for(client, f"/v1/jobs/{up['catalogue_job']}", alice, {"COMPLETED", "ERROR"})
    assert job["phase"] == "COMPLETED", job
    assert [res["name"] for res in job["results"]] == [f"{up['id']}.dataset.json"]
    found = await query(client, alice, ra=120.1, dec=-30.0, radius=0.1)
    assert [d["id"] for d in found] == [up["id"]]
    assert found[0]["bands"] == [{"hdu": 0, "keyword": "FILTER", "name": "g"}]
    assert found[0]["size"] == up["size"] and found[0]["public"] is False
    assert await query(client, bob, ra=120.1, dec=-30.0, radius=0.1) == []
    assert_problem(await client.get(f"/v1/datasets/{up['id']}", headers=bob), 404)
    # The dataset id works as a job input of its owner's, and not of anyone else's.
    body = {"datasets": [up["id"]], "pipeline": [{"op": "header"}]}
    assert (await client.post("/v1/jobs", json=body, headers=bob)).status_code == 422
    accepted = await client.post("/v1/jobs", json=body, headers=alice)
    assert accepted.status_code == 202, accepted.text
