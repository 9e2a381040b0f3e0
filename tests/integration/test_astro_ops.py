"""Astronomy operations through the whole stack: datasets, cutouts, previews, composites and
mosaics fanned out over real heavy workers, checked against astropy in the test.

Datasets are registered with the real ``pixfleet datasets add`` command; jobs go through the
edge, RabbitMQ and ``pixfleet worker`` processes; results are fetched by their signed URLs.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.visualization import make_lupton_rgb
from astropy.wcs import WCS, FITSFixedWarning

from tests import astrodata
from tests.helpers import FINAL, Client, fetch_result, fetch_rows, run_pixfleet, upload, wait_for

pytestmark = pytest.mark.slow


def datasets_add(env: dict[str, str], path: Path, dataset_id: str) -> None:
    added = run_pixfleet(env, "datasets", "add", path, "--id", dataset_id)
    assert added.returncode == 0, added.stderr


async def run_job(
    client: Client, headers: dict[str, str], body: dict[str, Any], timeout: float = 120
) -> dict[str, Any]:
    r = await client.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == 202, r.text
    done = await wait_for(client, r.json()["href"], headers, FINAL, timeout=timeout)
    assert done["phase"] in FINAL, done
    return done


def read_fits(data: bytes) -> fits.HDUList:
    return fits.open(io.BytesIO(data))


def celestial(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header).celestial


async def test_cutout_of_a_registered_dataset_equals_cutout2d_on_every_plane(
    client: Client, alice: dict[str, str], start_worker: Any, env: dict[str, str]
) -> None:
    source = astrodata.acs_flt()
    datasets_add(env, source, "hst/acs/j8bt06nyq")
    start_worker()
    with fits.open(source) as hdul:
        wcs = celestial(hdul["SCI"].header)
        centre = wcs.pixel_to_world(400.3, 600.7)
        planes = {h.name: h.data.copy() for h in hdul if h.name in ("SCI", "ERR", "DQ")}
    radius = 2.0 / 3600
    body = {
        "datasets": ["hst/acs/j8bt06nyq"],
        "pipeline": [
            {
                "op": "cutout",
                "stencils": [
                    {
                        "shape": "circle",
                        "ra": centre.ra.deg,
                        "dec": centre.dec.deg,
                        "radius": radius,
                    }
                ],
                "hdus": "all",
            }
        ],
    }
    done = await run_job(client, alice, body)
    assert done["phase"] == "COMPLETED", done
    assert [r["name"] for r in done["results"]] == ["hst_acs_j8bt06nyq.cutout.fits"]
    with read_fits(await fetch_result(client, alice, done["results"][0])) as out:
        assert out[0].header["SRCNAME"] == "hst/acs/j8bt06nyq"
        cut = {h.name: h for h in out[1:]}
        assert set(cut) == {"SCI", "ERR", "DQ"}
        assert cut["DQ"].data.dtype.kind in "iu"  # quality flags stay integers
        x0, x1 = out[0].header["XMIN"] - 1, out[0].header["XMAX"]
        y0, y1 = out[0].header["YMIN"] - 1, out[0].header["YMAX"]
        reference = Cutout2D(
            planes["SCI"], ((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2), (y1 - y0, x1 - x0), wcs=wcs
        )
        assert np.array_equal(cut["SCI"].data, reference.data)
        for name, data in planes.items():
            assert np.array_equal(cut[name].data, data[y0:y1, x0:x1]), name
        # Every corner of the cutout is where it was on the sky.
        out_wcs = celestial(cut["SCI"].header)
        h, w = cut["SCI"].data.shape
        for x, y in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), ((w - 1) / 2, (h - 1) / 2)):
            a = np.array(out_wcs.all_pix2world([[x, y]], 0)[0])
            b = np.array(wcs.all_pix2world([[x + x0, y + y0]], 0)[0])
            assert np.abs(a - b).max() < 1e-10
        # The circle fits in the box and touches it.
        sep = SkyCoord(*out_wcs.all_pix2world([[(w - 1) / 2, (h - 1) / 2]], 0)[0], unit="deg")
        assert sep.separation(centre) < 1 * u.arcsec


async def test_cutout_missing_the_image_fails_naming_the_stencil(
    client: Client, alice: dict[str, str], start_worker: Any, env: dict[str, str]
) -> None:
    datasets_add(env, astrodata.acs_flt(), "acs")
    start_worker()
    body = {
        "datasets": ["acs"],
        "pipeline": [
            {"op": "cutout", "stencils": [{"shape": "circle", "ra": 10, "dec": 10, "radius": 0.01}]}
        ],
    }
    done = await run_job(client, alice, body)
    assert done["phase"] == "ERROR"
    assert done["error"]["code"] == "usage_error"
    assert "CIRCLE 10.0 10.0 0.01" in done["error"]["message"]


async def test_unknown_datasets_and_wrong_kinds_are_refused_before_queueing(
    client: Client, alice: dict[str, str]
) -> None:
    r = await client.post(
        "/v1/jobs", json={"datasets": ["nope"], "pipeline": [{"op": "header"}]}, headers=alice
    )
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("unknown-dataset")
    assert r.json()["errors"][0]["path"] == "$.datasets"
    jpeg = await upload(client, alice)
    r = await client.post(
        "/v1/jobs",
        json={
            "inputs": [jpeg],
            "pipeline": [
                {"op": "cutout", "stencils": [{"shape": "circle", "ra": 1, "dec": 1, "radius": 1}]}
            ],
        },
        headers=alice,
    )
    assert r.status_code == 422, r.text
    assert "needs a FITS file" in r.json()["errors"][0]["message"]
    fits_upload = await upload(client, alice, astrodata.sip_file().read_bytes())
    r = await client.post(
        "/v1/jobs",
        json={"inputs": [fits_upload], "pipeline": [{"op": "thumbnail", "size": 64}]},
        headers=alice,
    )
    assert r.status_code == 422, r.text
    r = await client.post(
        "/v1/jobs",
        json={"inputs": [fits_upload], "pipeline": [{"op": "mosaic"}]},
        headers=alice,
    )
    assert r.status_code == 422, r.text  # one input is no mosaic


async def test_preview_and_header_of_a_fits_upload(
    client: Client, alice: dict[str, str], start_worker: Any
) -> None:
    start_worker()
    up = await upload(client, alice, astrodata.sip_file().read_bytes())
    body = {
        "inputs": [up],
        "pipeline": [
            {
                "op": "branch",
                "branches": [
                    {"name": "png", "pipeline": [{"op": "preview", "size": 64}]},
                    {"name": "hdr", "pipeline": [{"op": "header"}]},
                ],
            }
        ],
    }
    done = await run_job(client, alice, body)
    assert done["phase"] == "COMPLETED", done.get("error")
    png, hdr = done["results"]
    assert png["media_type"] == "image/png" and hdr["media_type"] == "application/json"
    pixels = cv2.imdecode(
        np.frombuffer(await fetch_result(client, alice, png), np.uint8), cv2.IMREAD_UNCHANGED
    )
    assert max(pixels.shape[:2]) == 64  # the file is 100 x 50
    doc = json.loads(await fetch_result(client, alice, hdr))
    assert "A_ORDER" in json.dumps(doc)


async def test_lupton_composite_on_the_heavy_pool_equals_make_lupton_rgb(
    client: Client, alice: dict[str, str], start_worker: Any, tmp_path: Path
) -> None:
    start_worker(pool="heavy")
    paths, _ = astrodata.make_channels(tmp_path, n=3, size=192)
    ups = [await upload(client, alice, p.read_bytes()) for p in paths]
    body = {
        "inputs": ups,
        "pipeline": [{"op": "composite", "lupton": {"stretch": 2000.0, "Q": 8.0}}],
    }
    done = await run_job(client, alice, body)
    assert done["phase"] == "COMPLETED", done
    got = cv2.imdecode(
        np.frombuffer(await fetch_result(client, alice, done["results"][0]), np.uint8),
        cv2.IMREAD_UNCHANGED,
    )
    r, g, b = (fits.getdata(p) for p in paths)  # float32, as stored
    expected = make_lupton_rgb(r, g, b, minimum=0.0, stretch=2000.0, Q=8.0)[::-1]  # north up
    assert np.array_equal(got[:, :, ::-1], expected)


async def test_mosaic_of_the_m1_pair_fans_out_over_heavy_workers(
    client: Client, alice: dict[str, str], start_worker: Any, database: str
) -> None:
    start_worker(pool="heavy")
    start_worker(pool="heavy")
    ups = [
        await upload(client, alice, astrodata.m1_dss().read_bytes()),
        await upload(client, alice, astrodata.m1_ukidss().read_bytes()),
    ]
    done = await run_job(
        client, alice, {"inputs": ups, "pipeline": [{"op": "mosaic", "scale": 2.0}]}
    )
    assert done["phase"] == "COMPLETED", done
    names = [r["name"] for r in done["results"]]
    assert names == ["mosaic.fits", "mosaic.coverage.fits", "mosaic.png"]
    with read_fits(await fetch_result(client, alice, done["results"][0])) as mosaic:
        data = next(h.data for h in mosaic if h.data is not None)
        assert np.isfinite(data).mean() > 0.5
    with read_fits(await fetch_result(client, alice, done["results"][1])) as coverage:
        cov = next(h.data for h in coverage if h.data is not None)
        assert cov.max() == pytest.approx(2.0, abs=0.05)  # UKIDSS lies inside DSS
    tasks = await fetch_rows(database, "SELECT phase FROM job_tasks ORDER BY idx")
    assert [t["phase"] for t in tasks] == ["COMPLETED", "COMPLETED"]
