"""Find a dataset archive and prove it is the right one before anything reads it.

With ``DFML_DATA_MIRROR`` set, archives are read from
``<mirror>/<dataset>/<official archive name>`` and checked against the
``SHA256SUMS`` file beside them (a mirror may hold rebuilt archives whose bytes
differ from the official ones). Without it, the official URL is downloaded into
``<downloads>/<dataset>/`` and checked against the official checksum.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DataError

MIRROR_ENV = "DFML_DATA_MIRROR"


@dataclass(frozen=True)
class Archive:
    """One archive: file name, official URL and checksum (``md5:...`` or ``sha256:...``).

    ``url`` and ``checksum`` are None for a dataset with no official download (MiniImageNet): it is read
    from the mirror only, checked against the mirror's ``SHA256SUMS``, or from a path the user names.
    """

    name: str
    url: str | None
    checksum: str | None
    fix: str = ""  # what to do when there is no mirror and no official URL


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_sums(sums: Path) -> dict[str, str]:
    out = {}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def _verify(path: Path, algo: str, expected: str, where: str, fix: str) -> None:
    got = file_digest(path, algo)
    if got != expected.lower():
        raise DataError(
            f"{path.name}: {algo} checksum mismatch ({where}).\n"
            f"  file:     {path}\n  expected: {expected}\n  got:      {got}\n"
            f"  The archive is truncated, corrupt or a different file. Fix: {fix}"
        )


def locate(dataset: str, archive: Archive, downloads: Path) -> Path:
    """Return a verified local path for `archive` of `dataset`, or raise DataError."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        folder = Path(mirror) / dataset
        path = folder / archive.name
        sums = folder / "SHA256SUMS"
        if not path.is_file():
            other = (f"unset {MIRROR_ENV} to download it from {archive.url}" if archive.url else archive.fix)
            raise DataError(
                f"{archive.name}: not found in the data mirror.\n  looked for: {path.resolve()}\n"
                f"  ({MIRROR_ENV}={mirror})\n  Fix: put {archive.name} there with a SHA256SUMS "
                f"file beside it, or {other}"
            )
        if sums.is_file():
            table = _read_sums(sums)
            if archive.name not in table:
                raise DataError(f"{archive.name}: no line for it in {sums.resolve()}; add `<sha256>  {archive.name}`")
            _verify(path, "sha256", table[archive.name], f"mirror, against {sums}",
                    f"replace {path} with a good copy (sha256 {table[archive.name]})")
        elif archive.checksum is None:
            raise DataError(f"{archive.name}: no SHA256SUMS beside it in the data mirror ({sums.resolve()}) and "
                            f"no official checksum to check it against; add `<sha256>  {archive.name}` there")
        else:
            algo, expected = archive.checksum.split(":", 1)
            _verify(path, algo, expected, "mirror without SHA256SUMS, against the official checksum",
                    f"replace {path} with the official archive from {archive.url}")
        return path

    if archive.url is None or archive.checksum is None:
        raise DataError(f"{archive.name}: {dataset} has no official download and {MIRROR_ENV} is not set.\n"
                        f"  Fix: set {MIRROR_ENV} to a folder holding {dataset}/{archive.name} with a SHA256SUMS "
                        f"file beside it, or {archive.fix}")
    algo, expected = archive.checksum.split(":", 1)
    path = downloads / dataset / archive.name
    if path.is_file():
        try:
            _verify(path, algo, expected, "cached download", "")
            return path
        except DataError:
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    os.close(fd)
    try:
        try:  # torchvision's downloader (redirects, progress); the checksum is ours (md5 or sha256)
            from torchvision.datasets.utils import download_url

            download_url(archive.url, str(path.parent), Path(tmp).name)
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataError(
                f"{archive.name}: download failed from {archive.url}: {exc}.\n"
                f"  Fix: check the network, or set {MIRROR_ENV} to a folder holding {dataset}/{archive.name}"
            ) from exc
        _verify(Path(tmp), algo, expected, f"downloaded from {archive.url}",
                f"retry the download, or set {MIRROR_ENV} to a folder with a good copy")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
