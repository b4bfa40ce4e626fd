"""The `moderation` command as operators and scripts use it (exact names and output shapes)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from models.db import create_db_engine, make_session_factory
from moderation import registry
from moderation.fetch import SOURCES, Source, fetch_all, medquad_rows, unpack_medquad, unpack_sms, unpack_youtube
from server.cli import main
from tests.conftest import TrainedModel
from tests.support.signing import signed_headers


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-var")


def run(var_dir: Path, *args: str, stdin: str | None = None) -> Result:
    env = {"VAR_DIR": str(var_dir), "DATABASE_URL": "", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
    return CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(var_dir: Path, trained_model: TrainedModel) -> Iterator[Path]:
    """One version trained by `moderation train`, then the session's test model registered and activated."""
    empty = var_dir / "no-data-here"
    empty.mkdir()
    result = run(var_dir, "train", "--data-dir", str(empty))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].startswith("registered model ")  # the progress bar is on stderr
    assert f"warning: no public data set in {empty} (looked for youtube_spam/, sms_spam/" in result.stderr
    sessions = make_session_factory(create_db_engine(f"sqlite:///{var_dir / 'moderation.db'}"))
    with sessions.begin() as session:
        registry.register(session, trained_model.version, trained_model.artifact, trained_model.model.card)
        registry.activate(session, trained_model.version)
    yield var_dir


def test_train_names_the_public_sets_it_found(capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import _say_what_was_found

    _say_what_was_found({"health_advice": 1200, "sms_spam": 1, "youtube_spam": 2}, Path("data"))
    captured = capsys.readouterr()
    assert captured.out == "public examples from data: health_advice 1,200, sms_spam 1, youtube_spam 2\n"
    assert captured.err == ""

    _say_what_was_found({"sms_spam": 5, "youtube_spam": 0}, Path("data"))  # a folder there, but nothing in it
    captured = capsys.readouterr()
    assert captured.out == "public examples from data: sms_spam 5\n"
    assert captured.err == "warning: youtube_spam/ in data held no examples\n"


def test_sites_add_prints_the_secret_last_and_rotation_keeps_both(var_dir: Path) -> None:
    added = run(var_dir, "sites", "add", "backpain-advisor", "--callback-url", "https://site.example/cb")
    assert added.exit_code == 0
    secret = added.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_") and len(secret) > 40

    duplicate = run(var_dir, "sites", "add", "backpain-advisor")
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output

    rotated = run(var_dir, "sites", "rotate-secret", "backpain-advisor")
    new_secret = rotated.stdout.strip().splitlines()[-1]
    assert new_secret.startswith("whsec_") and new_secret != secret
    assert "backpain-advisor" in run(var_dir, "sites", "list").output
    assert run(var_dir, "sites", "add", "Bad Name!").exit_code != 0
    assert run(var_dir, "sites", "add", "other", "--callback-url", "ftp://x").exit_code != 0
    assert signed_headers(new_secret, b"{}")["webhook-signature"].startswith("v1,")


def test_classify_reads_jsonl_and_writes_one_line_each(trained: Path) -> None:
    lines = [
        {"body": "Buy cheap pain pills, no prescription needed, www.rx-deals-online.xyz"},
        {"body": "Thanks, this article helped me understand my MRI.", "author": "Ana"},
        "not json",
        {"body": "You should come off the gabapentin and take 800mg ibuprofen every 6 hours instead."},
    ]
    stdin = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    result = run(trained, "classify", stdin=stdin)
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(out) == 4
    assert out[2] == {"line": 3, "error": out[2]["error"]} and "JSON" in out[2]["error"]
    for row in (out[0], out[1], out[3]):
        assert set(row) == {"spam", "medical_advice", "decision", "reasons", "model_version"}
        assert 0 <= row["spam"] <= 1 and 0 <= row["medical_advice"] <= 1
    assert out[0]["decision"] == "reject" and "spam" in out[0]["reasons"]
    assert out[1]["decision"] == "approve"
    assert out[3]["decision"] == "hold" and "medical_advice" in out[3]["reasons"]


def test_classify_reports_unreadable_lines_and_goes_on(trained: Path) -> None:
    good = json.dumps({"body": "Thanks, this helped me understand my MRI."}).encode()
    lines = [
        good,
        b'{"body": "lone \\ud800 surrogate"}',  # valid JSON that no UTF-8 encoder takes
        b'{"body": "caf\xe9 latin-1, not UTF-8"}',
        b'{"body": "   "}',
        b'{"body": "fine", "author": "\\udfff"}',
        b"[" * 100_000,  # json.loads gives up with RecursionError, not ValueError
        good,
    ]
    result = CliRunner().invoke(
        main,
        ["classify"],
        input=b"\n".join(lines) + b"\n",
        env={"VAR_DIR": str(trained), "DATABASE_URL": "", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(out) == 7
    assert out[0]["decision"] == out[6]["decision"] == "approve"
    errors = {row["line"]: row["error"] for row in out[1:6]}
    assert "lone surrogates" in errors[2] and errors[2].startswith("'body'")
    assert errors[3].startswith("not UTF-8")
    assert errors[4] == "'body' must not be blank"
    assert "lone surrogates" in errors[5] and errors[5].startswith("'author'")
    assert "nested too deeply" in errors[6]


def versions(var_dir: Path) -> list[tuple[bool, str]]:
    """(active, version) per line of `models list`, newest first."""
    return [(line.startswith("*"), line[2:].split()[0]) for line in run(var_dir, "models", "list").stdout.splitlines()]


def test_models_list_activate_and_rollback(trained: Path) -> None:
    listing = versions(trained)
    assert len(listing) == 2 and listing[0] == (True, "test-model")
    older = listing[1][1]
    rolled = run(trained, "models", "rollback")
    assert rolled.exit_code == 0 and older in rolled.output
    assert versions(trained) == [(False, "test-model"), (True, older)]
    assert run(trained, "models", "activate", "test-model").exit_code == 0
    assert versions(trained) == [(True, "test-model"), (False, older)]
    assert run(trained, "models", "activate", "no-such-version").exit_code != 0


def test_evaluate_prints_targets_and_writes_the_report(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "labeled.jsonl"
    data.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {"body": "Great article, thank you", "spam": False, "medical_advice": False},
                {
                    "body": "Cheap v1agra and pain pills at www.pill-shop-cheap.xyz",
                    "spam": True,
                    "medical_advice": False,
                },
                {
                    "body": "Stop the naproxen and take 2000 IU vitamin D daily instead",
                    "spam": False,
                    "medical_advice": True,
                },
                {"body": "My physio gave me stretches and they helped", "spam": False, "medical_advice": False},
            ]
        )
    )
    report = tmp_path / "report"
    result = run(trained, "evaluate", "--data", str(data), "--report", str(report))
    assert result.exit_code == 0, result.output
    assert "leak_rate" in result.output and "F1" in result.output
    assert re.search(r"leak_rate .* \d of 2, \d\.\d{4}-\d\.\d{4}", result.output)  # of how many, and the interval
    assert {p.name for p in report.iterdir()} == {"report.html", "metrics.json", "pr_curves.png", "calibration.png"}
    assert (report / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["by_source"]["labeled"]) == {"spam", "medical_advice"}
    assert metrics["baseline"]["labeled"]["n"] == 4
    assert "<script" not in (report / "report.html").read_text()


def test_evaluate_refuses_a_malformed_file(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"body": "x", "spam": "yes"}\n')
    result = run(trained, "evaluate", "--data", str(data))
    assert result.exit_code != 0 and "bad.jsonl:1" in result.output


def test_evaluate_refuses_a_file_without_labels(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "unlabeled.jsonl"
    data.write_text('{"body": "x"}\n{"body": "Great article"}\n')
    result = run(trained, "evaluate", "--data", str(data))
    assert result.exit_code != 0 and "no labeled comments" in result.output


def test_evaluate_on_a_file_keeps_the_held_out_report(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "extra.jsonl"
    data.write_text(json.dumps({"body": "Great article, thank you", "spam": False, "medical_advice": False}) + "\n")
    result = run(trained, "evaluate", "--data", str(data))
    assert result.exit_code == 0, result.output
    page = Path(result.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert page.parent == trained / "reports" / "test-model-extra"


# --- data fetch, on local files (no network here) -------------------------------------------------


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


MEDQUAD_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000042" source="NIHSeniorHealth" url="https://example.nih.gov/doc">
<Focus>Low Back Pain</Focus>
<QAPairs>
 <QAPair pid="1"><Question qid="0000042-1" qtype="information">What is low back pain?</Question>
  <Answer>Pain in the lower back.</Answer></QAPair>
 <QAPair pid="2"><Question qid="0000042-2" qtype="treatment">What are the treatments for low back pain?</Question>
  <Answer>Most people get better with time, staying active and over-the-counter pain relievers.</Answer></QAPair>
 <QAPair pid="3"><Question qid="0000042-3" qtype="prevention">How to prevent low back pain?</Question>
  <Answer></Answer></QAPair>
</QAPairs></Document>"""


def test_unpackers_build_the_layout_the_loaders_read(tmp_path: Path) -> None:
    youtube = _zip(
        tmp_path / "yt.zip",
        {
            "YouTube-Spam-Collection-v1/Youtube01-Psy.csv": (
                "COMMENT_ID,AUTHOR,DATE,CONTENT,CLASS\n1,a,2013,check my channel,1\n"
            )
        },
    )
    sms = _zip(tmp_path / "sms.zip", {"SMSSpamCollection": "ham\thello\nspam\tWIN cash now\n", "readme": "x"})
    medquad = _zip(tmp_path / "mq.zip", {"MedQuAD-master/4_MPlus_Health_Topics_QA/0000042.xml": MEDQUAD_XML})
    for unpack, archive, name in (
        (unpack_youtube, youtube, "yt"),
        (unpack_sms, sms, "sms"),
        (unpack_medquad, medquad, "mq"),
    ):
        (tmp_path / name).mkdir()
        unpack([archive], tmp_path / name)
    assert (tmp_path / "yt" / "Youtube01-Psy.csv").exists()
    assert (tmp_path / "sms" / "SMSSpamCollection.tsv").read_text().startswith("ham\thello")
    rows = list(
        csv.DictReader(io.StringIO((tmp_path / "mq" / "medquad_treatment_prevention_considerations.csv").read_text()))
    )
    assert [(r["qtype"], r["collection"], r["doc_id"]) for r in rows] == [
        ("treatment", "4_MPlus_Health_Topics_QA", "0000042_2")
    ]


def test_fetch_all_from_file_urls_feeds_the_loaders(tmp_path: Path) -> None:
    from moderation.data import load_public

    served = tmp_path / "served"
    served.mkdir()
    _zip(served / "yt.zip", {"Youtube04-Eminem.csv": "COMMENT_ID,AUTHOR,DATE,CONTENT,CLASS\n1,a,d,subscribe pls,1\n"})
    (served / "askparents_test.tsv").write_text("ID\tMajority_label\tDS_Label\tSentence\nab-1-0\t1\t1\tTalk to her .\n")
    sources = [
        Source("youtube_spam", [f"file://{served / 'yt.zip'}"], SOURCES[0].unpack),
        Source("advice_reddit", [f"file://{served / 'askparents_test.tsv'}"], SOURCES[2].unpack),
    ]
    dest = tmp_path / "data"
    assert fetch_all(dest, sources) == ["youtube_spam", "advice_reddit"]
    found = load_public(dest)
    assert [e.comment.body for e in found["youtube_spam"]] == ["subscribe pls"]
    assert found["advice_reddit"][0].split == "test"
    assert not any(p.name.startswith(".") for p in dest.iterdir())  # staging folders are cleaned up


def test_medquad_rows_rejects_broken_xml() -> None:
    from moderation.fetch import FetchError

    with pytest.raises(FetchError, match="not valid XML"):
        medquad_rows("c", "d", b"<Document><QAPairs>")


def test_worker_refuses_an_unknown_queue(var_dir: Path) -> None:
    result = CliRunner().invoke(main, ["worker", "--queues", "moderation,callbak"], env={"VAR_DIR": str(var_dir)})
    assert result.exit_code == 2
    assert "choose from moderation, callbacks" in result.output and "callbak" in result.output


def test_the_console_script_outside_the_checkout_says_it_made_a_new_database(tmp_path: Path) -> None:
    """Run from another folder, the default VAR_DIR is new: --help leaves nothing, a command says so once."""
    script = Path(sys.executable).with_name("moderation")
    keep = ("PATH", "HOME", "LANG")
    env = {name: value for name, value in os.environ.items() if name in keep} | {"LOG_FORMAT": "text"}

    def moderation(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    assert moderation("--help").returncode == 0
    assert moderation("sites", "--help").returncode == 0
    assert list(tmp_path.iterdir()) == []  # no var/, no metrics folder

    first = moderation("sites", "list")
    assert first.returncode == 0, first.stderr
    database = (tmp_path / "var" / "moderation.db").resolve()
    assert f"created a new database {database} (VAR_DIR or DATABASE_URL chooses another)" in first.stderr
    assert not (tmp_path / "var" / "metrics").exists()  # a one-off command's counts are not the service's
    again = moderation("sites", "list")
    assert again.returncode == 0 and "created a new database" not in again.stderr


def test_migrate_says_what_it_did_to_the_schema(tmp_path: Path) -> None:
    """Created, upgraded or already current: each run names the schema's migration."""
    from models.migrate import schema_revision, upgrade_database

    env = {"VAR_DIR": str(tmp_path / "fresh"), "DATABASE_URL": "", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
    created = CliRunner().invoke(main, ["migrate"], env=env)
    head = schema_revision(f"sqlite:///{tmp_path / 'fresh' / 'moderation.db'}")
    assert head is not None and created.stdout == f"database is up to date: schema created at {head}\n"
    again = CliRunner().invoke(main, ["migrate"], env=env)
    assert again.stdout == f"database is up to date: schema at {head}, nothing to do\n"

    older = f"sqlite:///{tmp_path / 'older.db'}"
    upgrade_database(older, "0004")
    upgraded = CliRunner().invoke(main, ["migrate"], env=env | {"DATABASE_URL": older})
    assert upgraded.stdout == f"database is up to date: schema upgraded from 0004 to {head}\n"
    assert schema_revision(older) == head
