"""`moderation data fetch`: download the public data sets from their public homes into the layout the
loaders read (see ``../shared/data/README.md``). ``file://`` sources work too, for offline mirrors."""

from __future__ import annotations

import csv
import io
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

import httpx
from tqdm import tqdm

GITHUB_RAW = "https://raw.githubusercontent.com"
ADVICE_FILES = [f"{forum}_{split}.tsv" for forum in ("askparents", "needadvice") for split in ("train", "dev", "test")]
HEALTH_ADVICE_FILES = [
    f"annotations_{part}.csv" for part in ("discussion", "structured_abstract", "unstructured_abstract")
]
MEDQUAD_QTYPES = {"treatment", "prevention", "considerations"}
MEDQUAD_COLUMNS = ["collection", "doc_id", "source", "url", "focus", "qid", "qtype", "question", "answer"]


@dataclass(frozen=True)
class Source:
    name: str
    urls: list[str]
    unpack: Callable[[list[Path], Path], None]


class FetchError(RuntimeError):
    """A download or an archive that could not be turned into a data set."""


def download(url: str, dest: Path, client: httpx.Client) -> Path:
    """Fetch one URL to ``dest`` with a progress bar; ``file://`` URLs are copied."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    parts = urlsplit(url)
    if parts.scheme == "file":
        shutil.copyfile(parts.path, dest)
        return dest
    try:
        with client.stream("GET", url, follow_redirects=True, timeout=60) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
            with dest.open("wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in response.iter_bytes(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
    except httpx.HTTPError as error:
        raise FetchError(f"could not download {url}: {error}") from error
    return dest


def unpack_youtube(files: list[Path], target: Path) -> None:
    with zipfile.ZipFile(files[0]) as archive:
        members = [m for m in archive.namelist() if Path(m).name.startswith("Youtube") and m.endswith(".csv")]
        if not members:
            raise FetchError(f"{files[0]} holds no Youtube*.csv files")
        for member in members:
            (target / Path(member).name).write_bytes(archive.read(member))


def unpack_sms(files: list[Path], target: Path) -> None:
    with zipfile.ZipFile(files[0]) as archive:
        member = next((m for m in archive.namelist() if Path(m).name == "SMSSpamCollection"), None)
        if member is None:
            raise FetchError(f"{files[0]} holds no SMSSpamCollection file")
        (target / "SMSSpamCollection.tsv").write_bytes(archive.read(member))


def copy_files(files: list[Path], target: Path) -> None:
    for path in files:
        shutil.move(str(path), target / path.name)


def unpack_medquad(files: list[Path], target: Path) -> None:
    """The repository's XML documents, reduced to treatment / prevention / considerations answers."""
    rows = []
    with zipfile.ZipFile(files[0]) as archive:
        for member in sorted(m for m in archive.namelist() if m.endswith(".xml")):
            rows += medquad_rows(Path(member).parent.name, Path(member).stem, archive.read(member))
    if not rows:
        raise FetchError(f"{files[0]} holds no MedQuAD answers")
    with (target / "medquad_treatment_prevention_considerations.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=MEDQUAD_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def medquad_rows(collection: str, doc_stem: str, xml: bytes) -> list[dict[str, str]]:
    try:
        document = ElementTree.parse(io.BytesIO(xml)).getroot()  # noqa: S314 - files from the data set's own repository
    except ElementTree.ParseError as error:
        raise FetchError(f"{collection}/{doc_stem}.xml is not valid XML: {error}") from error
    rows = []
    for pair in document.iter("QAPair"):
        question, answer = pair.find("Question"), pair.find("Answer")
        if question is None or answer is None or not (answer.text or "").strip():
            continue
        qtype = question.get("qtype", "")
        if qtype not in MEDQUAD_QTYPES:
            continue
        rows.append(
            {
                "collection": collection,
                "doc_id": f"{document.get('id', doc_stem)}_{pair.get('pid', '')}",
                "source": document.get("source", ""),
                "url": document.get("url", ""),
                "focus": (document.findtext("Focus") or "").strip(),
                "qid": question.get("qid", ""),
                "qtype": qtype,
                "question": (question.text or "").strip(),
                "answer": (answer.text or "").strip(),
            }
        )
    return rows


SOURCES = [
    Source(
        "youtube_spam", ["https://archive.ics.uci.edu/static/public/380/youtube+spam+collection.zip"], unpack_youtube
    ),
    Source("sms_spam", ["https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"], unpack_sms),
    Source(
        "advice_reddit", [f"{GITHUB_RAW}/venkatasg/Advice-EMNLP2020/main/Dataset/{f}" for f in ADVICE_FILES], copy_files
    ),
    Source(
        "health_advice",
        [f"{GITHUB_RAW}/junwang4/detecting-health-advice/master/data/{f}" for f in HEALTH_ADVICE_FILES],
        copy_files,
    ),
    Source("medquad", ["https://github.com/abachaa/MedQuAD/archive/refs/heads/master.zip"], unpack_medquad),
]


def fetch_all(dest: Path, sources: list[Source] = SOURCES, client: httpx.Client | None = None) -> list[str]:
    """Download and unpack every source into ``dest/<name>/``; returns the names fetched.

    When nothing could be fetched (no internet, say), the folders made for it are removed again: an empty
    ``dest`` left behind would look like a download that found nothing. A source that fails leaves no part
    of its set behind; the sets fetched before it stay, and the error names them.
    """
    made = _folders_to_make(dest)
    done: list[str] = []
    try:
        with client or httpx.Client() as http:
            for source in sources:
                fetch_one(source, dest, http)
                done.append(source.name)
    except (FetchError, OSError) as error:
        if not done:
            raise
        raise FetchError(f"{error} (already fetched into {dest}: {', '.join(done)})") from error
    finally:
        if not done:
            _remove_if_empty(made)
    return done


def fetch_one(source: Source, dest: Path, http: httpx.Client) -> None:
    """One data set into ``dest/<name>/``, downloaded beside it first; a failure leaves no half-made set."""
    staging = dest / f".{source.name}.download"
    target = dest / source.name
    made = _folders_to_make(target)
    staging.mkdir(parents=True, exist_ok=True)
    try:
        files = [download(url, staging / Path(urlsplit(url).path).name, http) for url in source.urls]
        target.mkdir(parents=True, exist_ok=True)
        try:
            source.unpack(files, target)
        except zipfile.BadZipFile as error:  # a server's error page saved in the archive's place, say
            raise FetchError(f"{source.name}: a downloaded file is not a zip archive ({error})") from error
    except BaseException:
        if target in made:
            shutil.rmtree(target, ignore_errors=True)  # made just now: only this attempt's files are in it
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _folders_to_make(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove folders this run made, innermost first, but never one that holds anything (rmdir refuses)."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue  # never made: the run failed before it got that far
        except OSError:
            return  # something else is in it now: keep it, and so its parents
