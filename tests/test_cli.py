"""The `moderation` command as operators and scripts use it (exact names and output shapes)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import skops.io as sio
from click.testing import CliRunner, Result
from sklearn.naive_bayes import MultinomialNB
from sqlalchemy import Engine, select, text, update
from sqlalchemy.engine import make_url

from models.db import create_db_engine, make_session_factory
from models.entities import Comment, ModelVersion, OutboxMessage, Site, TrainingLabel
from moderation import callbacks, registry
from moderation.data import CORPUS_DIR
from moderation.decisions import TRIES_BEFORE_HOLDING, hold_unclassified
from moderation.features import CommentText
from moderation.fetch import SOURCES, Source, fetch_all, medquad_rows, unpack_medquad, unpack_sms, unpack_youtube
from moderation.intake import NewComment, accept_comment
from moderation.policy import Thresholds
from moderation.sites import create_site
from server.cli import main
from tests.conftest import TrainedModel
from tests.support.callbacks import NOW, POLICY, decided_comment
from tests.support.models import saved_elsewhere
from tests.support.services import fresh_postgres_database, postgres_reachable
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
    result = run(var_dir, "train", "--data-dir", str(empty), "--folds", "2")  # 2 of 5 fold models: quicker
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].startswith("registered model ")  # the progress bar is on stderr
    assert f"warning: no public data set in {empty} (looked for youtube_spam/, sms_spam/" in result.stderr
    assert "moderators' labels from the database: none\n" in result.stdout
    sessions = make_session_factory(create_db_engine(f"sqlite:///{var_dir / 'moderation.db'}"))
    with sessions.begin() as session:
        assert session.scalars(select(ModelVersion)).one().card["data"]["validation_folds"] == 2
        registry.register(session, trained_model.version, trained_model.artifact, trained_model.model.card)
        registry.activate(session, trained_model.version)
    yield var_dir


def test_train_refuses_fewer_than_two_folds(tmp_path: Path) -> None:
    result = run(tmp_path, "train", "--folds", "1")
    assert result.exit_code == 2
    assert "Invalid value for '--folds': 1 is not in the range x>=2." in result.stderr
    assert not (tmp_path / "models").exists()


def test_train_names_the_public_sets_it_found(capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli.training import _say_what_was_found

    _say_what_was_found({"health_advice": 1200, "sms_spam": 1, "youtube_spam": 2}, Path("data"))
    captured = capsys.readouterr()
    assert captured.out == "public examples from data: health_advice 1,200, sms_spam 1, youtube_spam 2\n"
    assert captured.err == ""

    _say_what_was_found({"sms_spam": 5, "youtube_spam": 0}, Path("data"))  # a folder there, but nothing in it
    captured = capsys.readouterr()
    assert captured.out == "public examples from data: sms_spam 5\n"
    assert captured.err == "warning: youtube_spam/ in data held no examples\n"


def test_train_says_how_many_moderators_labels_it_merged(tmp_path: Path) -> None:
    env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": "", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
    assert CliRunner().invoke(main, ["migrate"], env=env).exit_code == 0
    engine = create_db_engine(f"sqlite:///{tmp_path / 'moderation.db'}")
    with make_session_factory(engine).begin() as session:
        site, _ = create_site(session, "backpain-advisor")
        # The last teaches neither label (a verdict such as off-topic keeps no label; one kept so is not merged).
        for n, (spam, advice) in enumerate([(True, None), (False, False), (None, None)]):
            new = NewComment(external_id=f"c-{n}", article_id="a", body=f"Comment number {n}.")
            comment_id = accept_comment(session, site, f"wh-{n}", new, datetime.now(UTC)).comment_id
            session.add(TrainingLabel(comment_id=comment_id, body=new.body, spam=spam, medical_advice=advice))
    engine.dispose()
    result = CliRunner().invoke(main, ["train", "--folds", "2", "--no-activate"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "moderators' labels from the database: 2"


def test_models_list_of_an_empty_registry_says_so_on_stderr(tmp_path: Path) -> None:
    """Scripts read the list by lines and get none; a person learns which database was looked at."""
    env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": "", "LOG_FORMAT": "text"}
    assert CliRunner().invoke(main, ["migrate"], env=env).exit_code == 0
    listed = CliRunner().invoke(main, ["models", "list"], env=env)
    assert listed.exit_code == 0
    assert listed.stdout == ""
    assert f"no model versions in sqlite:///{tmp_path.resolve() / 'moderation.db'}" in listed.stderr


def test_sites_pause_and_resume_a_sites_callbacks(var_dir: Path) -> None:
    assert run(var_dir, "sites", "add", "paused-site", "--callback-url", "https://site.example/cb").exit_code == 0
    paused = run(var_dir, "sites", "pause", "paused-site")
    assert paused.exit_code == 0
    assert paused.stdout.startswith("callbacks of paused-site paused; 0 waiting callback(s) held back")
    listed = [line.split("\t") for line in run(var_dir, "sites", "list").stdout.splitlines()]
    state = next(fields[2] for fields in listed if fields[0] == "paused-site")
    assert state.startswith("callbacks paused by ") and " (command line) since " in state and state.endswith(" UTC")
    again = run(var_dir, "sites", "pause", "paused-site")
    assert again.exit_code == 0
    assert again.stdout.strip() == f"paused-site was already paused ({state}); 0 more waiting callback(s) held back"

    resumed = run(var_dir, "sites", "resume", "paused-site")
    assert resumed.stdout.strip() == "callbacks of paused-site resumed; 0 held-back callback(s) will be sent"
    listed = [line.split("\t") for line in run(var_dir, "sites", "list").stdout.splitlines()]
    assert ["paused-site", "https://site.example/cb", "ok"] in listed

    unknown = run(var_dir, "sites", "pause", "no-such-site")
    assert unknown.exit_code == 1 and "no-such-site" in unknown.output

    # Nothing to send to: resuming would make everything held back a dead letter at once.
    assert run(var_dir, "sites", "add", "pulling-site").exit_code == 0
    assert run(var_dir, "sites", "pause", "pulling-site").exit_code == 0
    refused = run(var_dir, "sites", "resume", "pulling-site")
    assert refused.exit_code == 1
    assert "pulling-site has no callback URL to send to: save one first with `sites set-callback pulling-site URL`" in (
        refused.output
    )
    listed = [line.split("\t") for line in run(var_dir, "sites", "list").stdout.splitlines()]
    assert next(fields[2] for fields in listed if fields[0] == "pulling-site").startswith("callbacks paused by ")


def test_resuming_callbacks_that_are_not_paused_says_nothing_changed(var_dir: Path) -> None:
    """A new user's report: it answered "resumed; 0 held-back callback(s) will be sent" as if it had done something."""
    assert run(var_dir, "sites", "add", "running-site", "--callback-url", "https://site.example/cb").exit_code == 0
    resumed = run(var_dir, "sites", "resume", "running-site")
    assert resumed.exit_code == 0
    assert resumed.stdout == "callbacks of running-site are not paused (nor disabled by a 410); nothing changed\n"
    listed = [line.split("\t") for line in run(var_dir, "sites", "list").stdout.splitlines()]
    assert ["running-site", "https://site.example/cb", "ok"] in listed


def test_the_commands_that_lock_a_site_work_on_each_database(engine: Engine, database_url: str, tmp_path: Path) -> None:
    """They lock the site's row, which PostgreSQL refuses on the outer join that loads a site's secrets."""
    env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": database_url, "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}

    def cli(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    assert cli("sites", "add", "locked-site").exit_code == 0
    saved = cli("sites", "set-callback", "locked-site", "https://site.example/cb")
    assert saved.stdout.strip() == "callback URL of locked-site saved"
    assert cli("sites", "pause", "locked-site").stdout.startswith("callbacks of locked-site paused; 0 waiting")
    resumed = cli("sites", "resume", "locked-site")
    assert resumed.stdout.strip() == "callbacks of locked-site resumed; 0 held-back callback(s) will be sent"
    refused = cli("sites", "set-callback", "locked-site", "ftp://site.example/cb")
    assert refused.exit_code == 1 and refused.stderr.startswith("Error: ")


def test_a_site_paused_without_a_callback_url_gets_one_and_resumes_from_the_command_line(var_dir: Path) -> None:
    """A command-line-only operator's way out: the pause says what to do, and a saved URL keeps the pause."""
    assert run(var_dir, "sites", "add", "late-url-site").exit_code == 0
    paused = run(var_dir, "sites", "pause", "late-url-site")
    assert paused.exit_code == 0
    assert paused.stdout.splitlines()[1] == (
        "late-url-site has no callback URL yet: save one with `sites set-callback late-url-site URL` before resuming"
    )

    saved = run(var_dir, "sites", "set-callback", "late-url-site", "https://site.example/late")
    assert saved.exit_code == 0
    assert saved.stdout.strip() == (
        "callback URL of late-url-site saved; its callbacks stay paused until `sites resume late-url-site`"
    )
    listed = [line.split("\t") for line in run(var_dir, "sites", "list").stdout.splitlines()]
    row = next(fields for fields in listed if fields[0] == "late-url-site")
    assert row[1] == "https://site.example/late" and row[2].startswith("callbacks paused by ")
    resumed = run(var_dir, "sites", "resume", "late-url-site")
    assert resumed.exit_code == 0 and "resumed" in resumed.stdout

    cleared = run(var_dir, "sites", "set-callback", "late-url-site", "")
    assert cleared.stdout.strip() == "callback URL of late-url-site cleared: its decisions are not sent anywhere"
    listed = [line.split("\t") for line in run(var_dir, "sites", "list").stdout.splitlines()]
    assert ["late-url-site", "-", "ok"] in listed


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://site.example/cb", "callback URL must be an absolute http(s) URL, got 'ftp://site.example/cb'"),
        ("http://169.254.169.254/latest", "must not point at a link-local, unspecified or cloud metadata address"),
    ],
)
def test_set_callback_refuses_what_the_sites_page_refuses(tmp_path: Path, url: str, message: str) -> None:
    assert run(tmp_path, "sites", "add", "strict-url-site", "--callback-url", "https://site.example/ok").exit_code == 0
    refused = run(tmp_path, "sites", "set-callback", "strict-url-site", url)
    assert refused.exit_code == 1 and message in refused.stderr
    listed = [line.split("\t") for line in run(tmp_path, "sites", "list").stdout.splitlines()]
    assert listed == [["strict-url-site", "https://site.example/ok", "ok"]]  # unchanged
    unknown = run(tmp_path, "sites", "set-callback", "no-such-site", "https://site.example/x")
    assert unknown.exit_code == 1 and "no-such-site" in unknown.stderr


def test_sites_list_stars_out_a_password_and_counts_failing_callbacks(tmp_path: Path) -> None:
    assert (
        run(
            tmp_path, "sites", "add", "basic-auth-site", "--callback-url", "https://cb:s3cret@site.example/cb?a=b@c"
        ).exit_code
        == 0
    )
    sessions = make_session_factory(create_db_engine(f"sqlite:///{tmp_path / 'moderation.db'}"))
    with sessions.begin() as session:
        site = session.scalars(select(Site).where(Site.name == "basic-auth-site")).one()
        for n in range(2):
            delivery = decided_comment(session, site, f"c-{n}", NOW)
            assert delivery is not None
            callbacks.record_failed(
                session, delivery, status_code=503, error="unavailable", retry_after=None, now=NOW, policy=POLICY
            )

    listed = run(tmp_path, "sites", "list").stdout.splitlines()
    assert listed == ["basic-auth-site\thttps://cb:***@site.example/cb?a=b@c\tok, 2 failing and being retried"]
    assert "s3cret" not in run(tmp_path, "sites", "list").output


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        ("notanemail", "'notanemail' is not an e-mail address"),
        (
            "a@" + ".".join(["b" * 60] * 6) + ".org",
            "an e-mail address can have at most 310 characters here",
        ),
    ],
)
def test_moderators_add_refuses_an_address_before_it_asks_for_the_password(
    tmp_path: Path, address: str, refusal: str
) -> None:
    """A tester typed `moderators add notanemail` and was told first that no password was piped in."""
    for stdin in ("", "a long enough password\n"):  # none piped in (< /dev/null), and one
        added = run(tmp_path, "moderators", "add", address, stdin=stdin)
        assert added.exit_code == 1
        assert added.stderr == f"Error: {refusal}\n"
    assert list(tmp_path.iterdir()) == []  # refused before any database was made for it


def test_sites_list_of_no_sites_says_so_on_stderr(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").exit_code == 0
    listed = run(tmp_path, "sites", "list")
    assert listed.exit_code == 0 and listed.stdout == ""
    where = f"sqlite:///{tmp_path / 'moderation.db'}"
    assert f"no sites in {where}: `moderation sites add NAME` registers one" in listed.stderr


def test_a_rotation_without_overlap_says_the_old_secret_stops_now(tmp_path: Path) -> None:
    env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": "", "LOG_FORMAT": "text", "SECRET_ROTATION_OVERLAP_HOURS": "0"}
    assert CliRunner().invoke(main, ["sites", "add", "backpain-advisor"], env=env).exit_code == 0
    rotated = CliRunner().invoke(main, ["sites", "rotate-secret", "backpain-advisor"], env=env)
    assert rotated.exit_code == 0
    assert rotated.stdout.splitlines()[0] == (
        "new secret for backpain-advisor; the old one stops verifying (within SITE_CACHE_SECONDS on running web "
        "processes):"
    )


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

    # A password in the callback URL is the site's credential: starred out, as `sites list` shows it.
    with_password = run(var_dir, "sites", "add", "third", "--callback-url", "https://cms:hunter2pass@site.example/cb")
    assert with_password.exit_code == 0 and "hunter2pass" not in with_password.output
    assert with_password.stdout.splitlines()[0] == "site third created; callback URL: https://cms:***@site.example/cb"


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
        assert set(row) == {"line", "spam", "medical_advice", "decision", "reasons", "model_version"}
        assert 0 <= row["spam"] <= 1 and 0 <= row["medical_advice"] <= 1
    assert out[0]["decision"] == "reject" and "spam" in out[0]["reasons"]
    assert out[1]["decision"] == "approve"
    assert out[3]["decision"] == "hold" and "medical_advice" in out[3]["reasons"]


def test_classify_reads_a_file_that_begins_with_a_byte_order_mark(trained: Path) -> None:
    """Windows tools save UTF-8 with one; only the input's very start may have it, as in a file."""
    good = json.dumps({"body": "Thanks, this helped me understand my MRI."}).encode()
    bom = "\ufeff".encode()
    result = CliRunner().invoke(
        main,
        ["classify"],
        input=bom + good + b"\n" + bom + good + b"\n",
        env={"VAR_DIR": str(trained), "DATABASE_URL": "", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"},
        catch_exceptions=False,
    )
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out[0]["line"] == 1 and out[0]["decision"] == "approve"
    assert out[1]["line"] == 2 and out[1]["error"].startswith("not JSON: ")


def test_classify_reports_unreadable_lines_and_goes_on(trained: Path) -> None:
    good = json.dumps({"body": "Thanks, this helped me understand my MRI."}).encode()
    lines = [
        good,
        b'{"body": "lone \\ud800 surrogate"}',  # valid JSON that no UTF-8 encoder takes
        b'{"body": "caf\xe9 latin-1, not UTF-8"}',
        b'{"body": "   "}',
        b'{"body": "fine", "author": "\\udfff"}',
        b"[" * 100_000,  # json.loads gives up with RecursionError, not ValueError
        b'{"body": "\\u200b\\u2060 "}',  # drawn as nothing: blank, as at intake
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
    assert len(out) == 8
    assert out[0]["decision"] == out[7]["decision"] == "approve"
    errors = {row["line"]: row["error"] for row in out[1:7]}
    assert "lone surrogates" in errors[2] and errors[2].startswith("'body'")
    assert errors[3].startswith("not UTF-8")
    assert errors[4] == "'body' must not be blank"
    assert "lone surrogates" in errors[5] and errors[5].startswith("'author'")
    assert "nested too deeply" in errors[6]
    assert errors[7] == "'body' must not be blank"


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
    assert set(metrics["by_source"]["file:labeled"]) == {"spam", "medical_advice"}
    assert metrics["baseline"]["file:labeled"]["n"] == 4
    assert "<script" not in (report / "report.html").read_text()


def test_evaluate_refuses_a_malformed_file(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"body": "x", "spam": "yes"}\n')
    result = run(trained, "evaluate", "--data", str(data))
    assert result.exit_code != 0 and "bad.jsonl:1" in result.output


def test_evaluate_refuses_a_report_folder_it_cannot_create_before_evaluating(trained: Path, tmp_path: Path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    result = run(trained, "evaluate", "--report", str(in_the_way / "report"))
    assert result.exit_code == 1 and result.stdout == ""  # nothing evaluated first
    assert result.stderr == f"Error: cannot create the report folder {in_the_way / 'report'}: Not a directory\n"


@pytest.mark.parametrize(
    "command", [["sites", "add", "backpain-advisor"], ["migrate"], ["train", "--folds", "2"], ["beat"]]
)
def test_a_var_dir_that_cannot_be_created_is_one_line(tmp_path: Path, command: list[str]) -> None:
    """Say a VAR_DIR the service user may not write, or one with a file in its path."""
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    var_dir = in_the_way / "var"
    result = CliRunner().invoke(main, command, env={"VAR_DIR": str(var_dir), "DATABASE_URL": "", "LOG_FORMAT": "text"})
    assert result.exit_code == 1
    assert result.stderr == f"Error: cannot create VAR_DIR {var_dir}: Not a directory\n"


def test_a_serving_command_with_a_var_dir_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """web, worker, beat and run make VAR_DIR's metrics folder before the command line is read."""
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    entry = [sys.executable, "-c", "from server.entry import main; main()", "web"]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {"VAR_DIR": str(in_the_way)}
    result = subprocess.run(entry, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"Error: cannot create VAR_DIR's metrics folder {in_the_way / 'metrics'}: Not a directory\n"


def test_a_serving_commands_metrics_folder_is_in_var_dir_named_in_any_case(tmp_path: Path) -> None:
    """As the settings read ``var_dir=...`` (docs/reference.md: names in any case), not ./var of the folder started in,
    whose counters another run there would share (a cold review's test)."""
    var_dir, started_in = tmp_path / "service-var", tmp_path / "started-here"
    started_in.mkdir()
    entry = [sys.executable, "-c", "from server.entry import main; main()", "web", "--help"]
    env = {k: v for k, v in os.environ.items() if k.upper() not in ("PROMETHEUS_MULTIPROC_DIR", "VAR_DIR")}
    env |= {"var_dir": str(var_dir), "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run(entry, env=env, cwd=started_in, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert (var_dir / "metrics").is_dir()
    assert not (started_in / "var").exists()


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["web", "--port", "0"], "Invalid value for '--port': 0 is not in the range 1<=x<=65535."),
        (["web", "--port", "99999"], "Invalid value for '--port': 99999 is not in the range 1<=x<=65535."),
        (["web", "--workers", "0"], "Invalid value for '--workers': 0 is not in the range x>=1."),
        (["worker", "--concurrency", "0"], "Invalid value for '--concurrency': 0 is not in the range x>=1."),
        (["web", "--host", ""], "Invalid value for '--host': must name an interface: 127.0.0.1, or 0.0.0.0 for all"),
    ],
)
def test_serving_commands_refuse_out_of_range_numbers(tmp_path: Path, command: list[str], message: str) -> None:
    """0 used to mean "not given" (the default was served instead), 99999 was a traceback from bind(), and an
    empty host (a script's unset $HOST) served every interface."""
    result = CliRunner().invoke(main, command, env={"VAR_DIR": str(tmp_path), "DATABASE_URL": "", "LOG_FORMAT": "text"})
    assert result.exit_code == 2 and message in result.stderr


def test_web_on_a_port_that_is_taken_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            main,
            ["web", "--host", "127.0.0.1", "--port", str(port)],
            env={"VAR_DIR": str(tmp_path), "DATABASE_URL": "", "LOG_FORMAT": "text"},
        )
    assert result.exit_code == 1
    assert result.stderr == f"Error: port {port} on 127.0.0.1 is taken: choose a free one with --port or PORT\n"


UNWRITABLE = Path("/proc/sys")  # a folder nobody can create files in, root included (Linux)


def test_evaluate_and_train_refuse_a_folder_they_cannot_write_before_their_work(trained: Path) -> None:
    """An existing folder on a read-only mount or owned by another user passes a mkdir; it is the usual case."""
    evaluated = run(trained, "evaluate", "--report", str(UNWRITABLE))
    assert evaluated.exit_code == 1 and evaluated.stdout == ""
    assert evaluated.stderr.startswith(f"Error: cannot write into the report folder {UNWRITABLE}: ")
    env = {"VAR_DIR": str(trained), "DATABASE_URL": "", "LOG_FORMAT": "text", "MODEL_DIR": str(UNWRITABLE)}
    trained_again = CliRunner().invoke(main, ["train", "--folds", "2"], env=env)
    assert trained_again.exit_code == 1 and "registered" not in trained_again.stdout
    assert trained_again.stderr.startswith(f"Error: cannot write into MODEL_DIR {UNWRITABLE}: ")  # not after training


def test_a_failed_evaluate_leaves_no_empty_report_folder(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"body": "x", "spam": "yes"}\n')
    result = run(trained, "evaluate", "--data", str(data), "--report", str(tmp_path / "report"))
    assert result.exit_code == 1 and not (tmp_path / "report").exists()


def test_evaluate_warns_when_the_data_dir_holds_no_public_set(trained: Path, tmp_path: Path) -> None:
    """As train does: a wrong --data-dir is most likely a typo, not a wish to evaluate on less."""
    result = run(trained, "evaluate", "--data-dir", str(tmp_path), "--report", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert f"warning: no public data set in {tmp_path} (looked for youtube_spam/, sms_spam/" in result.stderr
    assert "evaluating on the shipped corpus's held-out part only" in result.stderr
    assert result.stdout.startswith("model ") and "report: " in result.stdout  # evaluated all the same


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_port_in_use_is_seen_on_either_address_family(family: socket.AddressFamily, host: str) -> None:
    from server.runner import port_in_use

    with socket.socket(family) as taken:
        try:
            taken.bind((host, 0))
        except OSError:
            pytest.skip(f"no {host} on this machine")
        taken.listen()
        port = taken.getsockname()[1]
        assert port_in_use(host, port)
    assert not port_in_use(host, port)
    assert not port_in_use("no-such-host.invalid", port)  # gunicorn's own bind says what is wrong with it


NO_SUCH_FAMILY = 4095


def test_a_port_in_use_is_seen_on_any_address_of_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """``localhost`` can resolve to ``::1`` first and be taken on ``127.0.0.1``: every address is probed."""
    from server.runner import port_in_use

    with socket.socket(socket.AF_INET) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # first an address of a family no kernel has (socket() fails), then a free one, then the taken one
        free_first = [(NO_SUCH_FAMILY, socket.SOCK_STREAM, 0, "", ("x", 0))] + [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
            for address in ("127.0.0.2", "127.0.0.1")
        ]
        monkeypatch.setattr(socket, "getaddrinfo", lambda *_args, **_kwargs: free_first)
        assert port_in_use("both.test", port)


def test_an_ipv6_host_is_bracketed_where_a_port_follows() -> None:
    from server.gunicorn_app import options, url_host

    assert options("::1", 8000, 1)["bind"] == "[::1]:8000"  # gunicorn read "::1:8000" as host "::1:8000"
    assert options("127.0.0.1", 8000, 1)["bind"] == "127.0.0.1:8000"
    assert [url_host(h) for h in ("::", "[::1]", "example.org")] == ["[::]", "[::1]", "example.org"]


def test_evaluate_refuses_a_file_without_labels(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "unlabeled.jsonl"
    data.write_text('{"body": "x"}\n{"body": "Great article"}\n')
    result = run(trained, "evaluate", "--data", str(data))
    assert result.exit_code != 0 and "no labeled comments" in result.output


def test_evaluate_refuses_data_with_data_dir_naming_both(tmp_path: Path) -> None:
    """A new user's report: --data-dir was ignored without a word when --data was given."""
    data = _jsonl(tmp_path / "mine.jsonl", [{"body": "Great article, thank you", "spam": False}])
    result = run(tmp_path, "evaluate", "--data", str(data), "--data-dir", str(tmp_path))
    assert result.exit_code == 2 and result.stdout == ""  # refused before any model is loaded or any work done
    assert result.stderr.endswith(
        "Error: --data-dir is not used with --data (the file is evaluated on its own): give one or the other\n"
    )
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_evaluate_names_a_data_file_without_comments(trained: Path, tmp_path: Path, content: str) -> None:
    """A new user's report: an empty file was refused with "nothing to evaluate on", not saying which."""
    data = tmp_path / "empty.jsonl"
    data.write_text(content)
    result = run(trained, "evaluate", "--data", str(data), "--report", str(tmp_path / "report"))
    assert result.exit_code == 1
    assert result.stderr == f"Error: nothing to evaluate on: {data} holds no comments (one JSON object a line)\n"


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
    """Run from another folder, the default VAR_DIR is new: --help and a command that only reads leave
    nothing; one that stores what it is given makes the database there and says so once."""
    script = Path(sys.executable).with_name("moderation")
    keep = ("PATH", "HOME", "LANG")
    env = {name: value for name, value in os.environ.items() if name in keep} | {"LOG_FORMAT": "text"}

    def moderation(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    assert moderation("--help").returncode == 0
    assert moderation("sites", "--help").returncode == 0
    assert list(tmp_path.iterdir()) == []  # no var/, no metrics folder
    looked = moderation("sites", "list")
    assert looked.returncode == 1 and "no database at" in looked.stderr
    assert list(tmp_path.iterdir()) == []

    first = moderation("sites", "add", "backpain-advisor")
    assert first.returncode == 0, first.stderr
    database = (tmp_path / "var" / "moderation.db").resolve()
    assert f"created a new database {database} (VAR_DIR or DATABASE_URL chooses another)" in first.stderr
    # Its owner's alone: it holds the site's secret (a tester found it 644, readable by every user of the host).
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in database.parent.glob("moderation.db*")}
    assert "moderation.db" in modes and set(modes.values()) == {"0o600"}, modes
    assert not (tmp_path / "var" / "metrics").exists()  # a one-off command's counts are not the service's
    again = moderation("sites", "list")
    assert again.returncode == 0 and "created a new database" not in again.stderr
    assert again.stdout.startswith("backpain-advisor")


# Commands that only read, or change what must already be stored (a site, an account, a model version):
# each with arguments it would otherwise take, and what it reads on stdin.
NEEDS_A_DATABASE = [
    (["classify"], '{"body": "hi"}\n'),
    (["classify", "--explain"], '{"body": "hi"}\n'),
    (["evaluate"], None),
    (["models", "list"], None),
    (["models", "activate", "20261207-203910-704153"], None),
    (["models", "rollback"], None),
    (["export", "--no-progress"], None),
    (["sites", "list"], None),
    (["sites", "rotate-secret", "backpain-advisor"], None),
    (["sites", "set-callback", "backpain-advisor", "https://example.org/hook"], None),
    (["sites", "pause", "backpain-advisor"], None),
    (["sites", "resume", "backpain-advisor"], None),
    (["moderators", "list"], None),
    (["moderators", "deactivate", "jan@example.org"], None),
    (["moderators", "activate", "jan@example.org"], None),
    (["moderators", "set-password", "jan@example.org"], "a-long-enough-password\n"),
    (["reclassify"], None),
    (["authors", "erase", "--site", "backpain-advisor", "--email", "jan@example.org"], None),
]


@pytest.mark.parametrize(("args", "stdin"), NEEDS_A_DATABASE, ids=[" ".join(a) for a, _ in NEEDS_A_DATABASE])
def test_a_command_that_needs_a_database_refuses_where_there_is_none_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], stdin: str | None
) -> None:
    """A new user ran `classify` from /tmp: it made var/moderation.db there, then said there was no model,
    and left the folder behind. Where the default VAR_DIR holds no database, such a command says where it
    looked and how to choose another, in one line."""
    monkeypatch.chdir(tmp_path)
    env = {"VAR_DIR": None, "DATABASE_URL": None, "MODEL_DIR": None, "LOG_FORMAT": "text"}
    answer = CliRunner().invoke(main, args, input=stdin, env=env)
    database = tmp_path.resolve() / "var" / "moderation.db"
    assert answer.exit_code == 1, answer.output
    assert answer.stderr == (
        f"Error: no database at {database} (VAR_DIR is var), and this command creates none: run it in the "
        "service's folder or set VAR_DIR (or DATABASE_URL) to the service's database; `moderation migrate` "
        "creates a new one\n"
    )
    assert answer.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_command_names_the_database_url_that_names_no_file(tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere" / "moderation.db"
    env = {"VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": f"sqlite:///{missing}", "LOG_FORMAT": "text"}
    answer = CliRunner().invoke(main, ["models", "list"], env=env)
    assert answer.exit_code == 1
    assert answer.stderr.startswith(f"Error: no database at {missing} (DATABASE_URL), and this command creates none: ")
    assert "set DATABASE_URL to the service's database" in answer.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not postgres_reachable(), reason="PostgreSQL is not reachable at 127.0.0.1:5432")
def test_a_command_on_an_empty_postgresql_database_says_it_created_the_schema_there(tmp_path: Path) -> None:
    """A mistyped name of another database that exists is noticed, as a new SQLite file is."""
    from models.migrate import head_revision

    with fresh_postgres_database() as url:
        with_password = make_url(url).set(password="s3cret-word")  # trust authentication lets any through
        env = {"VAR_DIR": str(tmp_path), "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
        env["DATABASE_URL"] = with_password.render_as_string(hide_password=False)
        first = CliRunner().invoke(main, ["sites", "list"], env=env)
        assert first.exit_code == 0, first.output
        shown = with_password.render_as_string(hide_password=False).replace("s3cret-word", "***")
        assert f"created the schema ({head_revision()}) in the empty database {shown}" in first.stderr
        assert "s3cret-word" not in first.output
        again = CliRunner().invoke(main, ["sites", "list"], env=env)
        assert again.exit_code == 0 and "created the schema" not in again.stderr


def test_commands_other_than_migrate_leave_an_older_schema_alone(tmp_path: Path, database_url: str) -> None:
    """Looking around before an upgrade (`sites list`) must not upgrade a shared database behind the backup."""
    from models.migrate import downgrade_database, head_revision, schema_revision

    downgrade_database(database_url, "0004")
    script = Path(sys.executable).with_name("moderation")
    env = {"PATH": os.environ["PATH"], "VAR_DIR": str(tmp_path), "DATABASE_URL": database_url, "LOG_FORMAT": "text"}

    def moderation(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *args], env=env, capture_output=True, text=True, timeout=120)

    looked = moderation("sites", "list")
    assert looked.returncode == 1
    assert f"the database schema is at 0004 and this code needs {head_revision()}" in looked.stderr
    assert "take a backup, then run `moderation migrate`" in looked.stderr
    assert schema_revision(database_url) == "0004"
    assert moderation("migrate").returncode == 0
    assert moderation("sites", "list").returncode == 0


def test_migrate_leaves_a_schema_a_later_version_migrated(tmp_path: Path, database_url: str) -> None:
    """After a rollback of the code (or in a rolling upgrade) the schema is ahead: `migrate` must succeed
    without touching it, since compose starts the other services only after it does; `make run` too."""
    from sqlalchemy import create_engine, text

    from models.migrate import head_revision, schema_revision, upgrade_database

    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    try:
        env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": database_url, "LOG_FORMAT": "text"}
        result = CliRunner().invoke(main, ["migrate"], env=env)
        assert result.exit_code == 0, result.output
        assert result.stdout == (
            f"database schema is at 9999, newer than this code's {head_revision()}: left as it is "
            "(this version works with it; its migrations only add)\n"
        )
        upgrade_database(database_url)
        assert schema_revision(database_url) == "9999"

        # An unknown migration without this code's tables is not a later version of this schema.
        other = f"sqlite:///{tmp_path / 'other.db'}"
        upgrade_database(other)
        other_engine = create_engine(other)
        with other_engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
            connection.execute(text("DROP TABLE training_labels"))
        other_engine.dispose()
        refused = CliRunner().invoke(main, ["migrate"], env=env | {"DATABASE_URL": other})
        assert refused.exit_code == 1
        assert "the database schema is at 9999, a migration this code does not know, and lacks training_labels" in (
            refused.stderr
        )
    finally:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head_revision()})
        engine.dispose()


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


def test_migrate_names_allow_entries_that_allow_nobody_since_only_addresses_allow(tmp_path: Path) -> None:
    """An entry allowing an author by name, added when names allowed, silently stopped allowing on upgrade."""
    from sqlalchemy import create_engine, text

    env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": "", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
    assert "note:" not in CliRunner().invoke(main, ["migrate"], env=env).stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'moderation.db'}")
    with engine.begin() as connection:  # as an older version stored them: add_entry refuses a name now
        for value in ("Jan Regular", "jan@example.org", "Ann"):
            connection.execute(
                text(
                    "INSERT INTO list_entries (list_kind, field, value, created_at)"
                    " VALUES ('allow', 'author', :value, CURRENT_TIMESTAMP)"
                ),
                {"value": value},
            )
    engine.dispose()
    again = CliRunner().invoke(main, ["migrate"], env=env)
    assert again.exit_code == 0 and again.stdout.startswith("database is up to date: schema at ")
    assert again.stderr == (
        "note: 2 allow-list entries name an author by something other than a whole e-mail address and allow "
        "nobody (a name is public, anyone can type it): replace them with the authors' addresses on the "
        "dashboard's Lists page: 'Jan Regular' (all sites), 'Ann' (all sites)\n"
    )


def test_reclassify_sends_comments_held_unclassified_back_and_says_how_many(tmp_path: Path) -> None:
    env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": "", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
    assert CliRunner().invoke(main, ["migrate"], env=env).exit_code == 0
    assert CliRunner().invoke(main, ["reclassify"], env=env).stderr.endswith("no comments are held as not_classified\n")
    engine = create_db_engine(f"sqlite:///{tmp_path / 'moderation.db'}")
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        held = []
        for site_name in ("site-a", "site-b"):
            site, _ = create_site(session, site_name)
            new = NewComment(external_id="c-1", article_id="massage-therapy", body="Stretching helped me.")
            comment_id = accept_comment(session, site, f"wh-{site_name}", new, now).comment_id
            session.execute(update(OutboxMessage).values(tries=TRIES_BEFORE_HOLDING + 1))
            assert hold_unclassified(session, comment_id, "v-1", now) is not None
            held.append(comment_id)

    unknown = CliRunner().invoke(main, ["reclassify", "--site", "no-such-site"], env=env)
    assert unknown.exit_code == 1 and "no-such-site" in unknown.stderr
    one = CliRunner().invoke(main, ["reclassify", "--site", "site-b"], env=env)
    assert (one.exit_code, one.stdout) == (0, "sent 1 comment back to the classifiers\n")
    with sessions() as session:
        statuses = [session.get_one(Comment, comment_id).status for comment_id in held]
        assert statuses == ["held", "pending"]
        assert list(session.scalars(select(OutboxMessage.comment_id))) == [held[1]]  # the relay sends it
    engine.dispose()


# --- classify as scripts use it, models list, data fetch offline ----------------------------------

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def classify_answers(var_dir: Path, stdin: bytes, *args: str) -> list[dict[str, object]]:
    env = {"VAR_DIR": str(var_dir), "DATABASE_URL": "", "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"}
    result = CliRunner().invoke(main, ["classify", *args], input=stdin, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


SCORED = {"line", "spam", "medical_advice", "decision", "reasons", "model_version"}


def test_classify_answers_every_input_line_in_order_with_its_number(trained: Path) -> None:
    """Blank lines are answered too, so the n-th answer is always the n-th line's, and says so."""
    stdin = (
        b'{"body": "Thanks, this helped me understand my MRI."}\n'
        b"\n"
        b'{"body": "You should take 800mg ibuprofen every 6 hours."}\n'
        b"  \r\n"
        b"not json\n"
        b'{"body": "Great article, thank you"}'  # the last line may lack its newline
    )
    for batch_size in ("1", "2", "1000"):
        out = classify_answers(trained, stdin, "--batch-size", batch_size)
        assert [row["line"] for row in out] == [1, 2, 3, 4, 5, 6]
        assert {n: set(out[n - 1]) for n in (1, 3, 6)} == {1: SCORED, 3: SCORED, 6: SCORED}
        for blank in (out[1], out[3]):
            assert set(blank) == {"line", "error"} and "blank line" in str(blank["error"])
        assert set(out[4]) == {"line", "error"} and "not JSON" in str(out[4]["error"])
        assert out[2]["decision"] == "hold"

    explained = classify_answers(trained, b'{"body": "Great article"}\n\n', "--explain")
    assert [row["line"] for row in explained] == [1, 2]
    assert set(explained[0]) == SCORED | {"explanation"} and "error" in explained[1]


def test_classify_explains_only_the_scores_a_reader_should_look_at(trained: Path, trained_model: TrainedModel) -> None:
    """A new user saw "the" and "is", with tiny weights, explain a score near nothing: the words of a score
    under half its hold line are left out, as the dashboard leaves them out, and each line keeps its shape."""
    bodies = [
        "The article is good",
        "You should take 800mg ibuprofen every 6 hours.",
        "Thanks, this is the clearest thing I have read about it.",
    ]
    stdin = "".join(json.dumps({"body": body}) + "\n" for body in bodies).encode()
    lines = Thresholds.of_card(trained_model.model.card)
    hold = {"spam": lines.spam_hold, "medical_advice": lines.advice_hold}
    answers = classify_answers(trained, stdin, "--explain")
    left_out = 0
    for body, answer in zip(bodies, answers, strict=True):
        assert list(answer) == ["line", "spam", "medical_advice", "decision", "reasons", "model_version", "explanation"]
        explanation = answer["explanation"]
        assert isinstance(explanation, dict) and list(explanation) == ["spam", "medical_advice"]
        every_word = trained_model.model.explain(CommentText(body=body))
        for label in ("spam", "medical_advice"):
            if float(answer[label]) < hold[label] / 2:  # type: ignore[arg-type]
                assert explanation[label] == []
                left_out += len(every_word[label])
            else:
                assert explanation[label] == every_word[label]
    assert left_out, "no score had words to leave out: nothing was tested"
    assert answers[1]["explanation"]["medical_advice"]  # type: ignore[index]  # advice over its line: its words


def test_classify_answers_each_line_before_the_next_is_written(trained: Path, tmp_path: Path) -> None:
    """A script that waits for each answer before it writes the next line is answered (batch size 1000)."""
    import contextlib
    import queue
    import threading

    env = {
        "PATH": os.environ["PATH"],
        "VAR_DIR": str(trained),
        "DATABASE_URL": "",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "WARNING",
    }
    stderr = (tmp_path / "stderr").open("wb")
    # This checkout's command (cwd is first on the path for -c), exactly what the console script runs.
    process = subprocess.Popen(
        [sys.executable, "-c", "from server.cli import main; main()", "classify"],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    assert process.stdin is not None and process.stdout is not None
    answers: queue.Queue[bytes] = queue.Queue()

    def collect_answers() -> None:
        for line in process.stdout or []:
            answers.put(line)

    collector = threading.Thread(target=collect_answers, daemon=True)
    collector.start()
    try:
        for number, body in enumerate(["Thanks, this helped.", "Take 800mg ibuprofen every 6 hours"], start=1):
            process.stdin.write(json.dumps({"body": body}).encode() + b"\n")
            process.stdin.flush()
            try:
                answer = json.loads(answers.get(timeout=120))  # generous: the model loads first
            except queue.Empty:
                pytest.fail(f"no answer to line {number} while stdin stayed open: {(tmp_path / 'stderr').read_text()}")
            assert answer["line"] == number and set(answer) == SCORED
        process.stdin.close()
        assert process.wait(timeout=60) == 0
        assert answers.empty()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        collector.join(timeout=30)
        for pipe in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):  # BrokenPipeError flushing a stdin whose reader was killed
                pipe.close()
        stderr.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_classify_says_in_one_line_that_it_cannot_write_its_answers(trained: Path) -> None:
    """A full disk under stdout: one line on stderr and status 1, not a traceback (nor a second one at exit)."""
    env = {"PATH": os.environ["PATH"], "VAR_DIR": str(trained), "DATABASE_URL": "", "LOG_FORMAT": "text"}
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-c", "from server.cli import main; main()", "classify"],
            cwd=PROJECT_ROOT,
            env=env,
            input=b'{"body": "Thanks, this helped."}\n',
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == ["Error: cannot write the answers to stdout: No space left on device"]


def test_line_batches_hand_over_what_arrived_without_waiting_for_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read from a real pipe: lines go out as soon as nothing more is waiting; a fast writer fills batches."""
    import concurrent.futures
    import contextlib

    from server.cli.classify import _line_batches, _StdinChunks

    read_end, write_end = os.pipe()
    stdin = io.TextIOWrapper(os.fdopen(read_end, "rb"))
    monkeypatch.setattr(sys, "stdin", stdin)
    batches = _line_batches(_StdinChunks(), 2)
    waiter = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def next_batch() -> list[bytes | None]:
        return waiter.submit(next, batches).result(timeout=30)  # a batch that waits for more input fails here

    try:
        os.write(write_end, b'{"body": "one"}\n{"body": "tw')  # a line and the start of the next
        assert next_batch() == [b'{"body": "one"}']
        os.write(write_end, b'o"}\n3\n4\n5\n')
        assert next_batch() == [b'{"body": "two"}', b"3"]  # at most the batch size
        assert next_batch() == [b"4", b"5"]
        os.write(write_end, b"\nlast, no newline")
        os.close(write_end)
        assert next_batch() == [b"", b"last, no newline"]
        with pytest.raises(StopIteration):
            next_batch()
    finally:
        waiter.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            os.close(write_end)
        stdin.close()


def test_classify_answers_a_line_too_long_for_any_comment_without_keeping_it(trained: Path) -> None:
    """A line past MAX_LINE_BYTES (here across many reads, and last without a newline) is one error answer;
    the lines around it are answered as usual, and a line of exactly the limit is still read."""
    from server.cli.classify import MAX_LINE_BYTES

    def line_of(size: int) -> bytes:
        start = b'{"body": "'
        return start + b"x" * (size - len(start) - 2) + b'"}'

    assert len(line_of(MAX_LINE_BYTES)) == MAX_LINE_BYTES
    stdin = b"".join(
        [
            b'{"body": "Great article"}\n',
            line_of(MAX_LINE_BYTES + 1) + b"\n",
            b'{"body": "Thanks for this"}\n',
            line_of(MAX_LINE_BYTES) + b"\n",
            line_of(3 * MAX_LINE_BYTES),
        ]
    )
    out = classify_answers(trained, stdin)
    too_long = f"line longer than {MAX_LINE_BYTES} bytes, more than any comment intake takes"
    assert [answer["line"] for answer in out] == [1, 2, 3, 4, 5]
    assert set(out[0]) == SCORED and set(out[2]) == SCORED
    assert out[1]["error"] == too_long and out[4]["error"] == too_long
    assert out[3]["error"] == "'body' must be at most 20000 characters"


def test_classify_batches_stop_growing_at_a_byte_budget() -> None:
    """A fast pipe of long lines (each under the line cap) must not fill a 1,000-line batch: that would hold
    gigabytes before scoring any of them."""
    from server.cli.classify import MAX_BATCH_BYTES, READ_CHUNK_BYTES, _line_batches

    long_line = b"x" * (600 * 1024) + b"\n"
    data = long_line * 30

    class Pipe:
        def __init__(self) -> None:
            self.offset = 0

        def read(self) -> bytes:
            chunk = data[self.offset : self.offset + READ_CHUNK_BYTES]
            self.offset += len(chunk)
            return chunk

        def more_ready(self) -> bool:
            return True  # everything is waiting, as in a fast pipe

    batches = list(_line_batches(Pipe(), 1000))  # type: ignore[arg-type]
    assert sum(len(batch) for batch in batches) == 30 and len(batches) > 1
    for batch in batches:
        assert sum(len(line) for line in batch if line is not None) <= MAX_BATCH_BYTES + len(long_line)


def test_classify_refuses_text_longer_than_intake_takes(trained: Path) -> None:
    """The webhook's limits on the body and the author's fields, from the one place both read them."""
    from pydantic import ValidationError

    from moderation import intake
    from webhooks import schemas

    limits = {
        "body": intake.MAX_BODY_CHARS,
        "author": intake.MAX_AUTHOR_NAME_CHARS,
        "email": intake.MAX_EMAIL_CHARS,
        "url": intake.MAX_URL_CHARS,
    }
    assert limits["body"] == 20_000
    rows = [{"body": "x" * 105_000}]
    for field, limit in limits.items():
        rows += [{"body": "Great article", field: "a" * limit}, {"body": "Great article", field: "a" * (limit + 1)}]
    stdin = "".join(json.dumps({"body": "Great article"} | row) + "\n" for row in rows).encode()
    out = classify_answers(trained, stdin)
    assert out[0] == {"line": 1, "error": "'body' must be at most 20000 characters"}
    for index, (field, limit) in enumerate(limits.items()):
        at_limit, over = out[1 + 2 * index], out[2 + 2 * index]
        assert set(at_limit) == SCORED, field
        assert over == {"line": over["line"], "error": f"'{field}' must be at most {limit} characters"}

    # The webhook refuses exactly what classify refuses.
    event = comment_event_for_limits()
    schemas.CommentData.model_validate(event | {"body": "b" * limits["body"]})
    with pytest.raises(ValidationError):
        schemas.CommentData.model_validate(event | {"body": "b" * (limits["body"] + 1)})
    for field, name in (("author", "name"), ("email", "email"), ("url", "url")):
        schemas.CommentData.model_validate(event | {"author": {name: "a" * limits[field]}})
        with pytest.raises(ValidationError):
            schemas.CommentData.model_validate(event | {"author": {name: "a" * (limits[field] + 1)}})


def comment_event_for_limits() -> dict[str, object]:
    return {"comment_id": "c-1", "site": "backpain-advisor", "article": {"id": "massage"}, "body": "Hello"}


def test_the_model_tools_work_without_the_webhook_package() -> None:
    """The CLI takes intake's text rules from moderation/, so a broken Flask intake cannot stop classify."""
    code = "import sys; sys.modules['webhooks'] = None; import server.cli"
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_models_list_shows_dates_held_out_f1_and_versions_never_activated(
    tmp_path: Path, trained_model: TrainedModel
) -> None:
    from models.migrate import upgrade_database

    var = tmp_path / "var"
    var.mkdir()
    url = f"sqlite:///{var / 'moderation.db'}"
    upgrade_database(url)
    card = trained_model.model.card
    with make_session_factory(create_db_engine(url)).begin() as session:
        registry.register(session, "active-one", trained_model.artifact, card)
        registry.activate(session, "active-one")
    as_from_postgresql = {**card, "thresholds": dict(sorted(card["thresholds"].items()))}  # JSONB sorts keys
    with make_session_factory(create_db_engine(url)).begin() as session:
        registry.register(session, "never-used", trained_model.artifact, as_from_postgresql)

    listed = run(var, "models", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    own = card["metrics"]["held_out_by_source"]["own"]
    f1s = f"own_spam_f1={own['spam']['f1']:.3f}  own_advice_f1={own['medical_advice']['f1']:.3f}"
    date = r"\d{4}-\d\d-\d\dT\d\d:\d\dZ"
    # The columns there were come first, in their order; the new ones follow.
    start = r"  leak=\S+  ordinary_held=\S+  thresholds=\{.*\}  features=\S+"
    assert re.fullmatch(rf"  never-used{start}  created={date}  {re.escape(f1s)}  activated=no", lines[0])
    assert re.fullmatch(rf"\* active-one{start}  created={date}  {re.escape(f1s)}  activated={date}", lines[1])
    assert "never" in lines[0] and "never" not in lines[1]
    shown = f"thresholds={ {name: card['thresholds'][name] for name in ('spam_reject', 'spam_hold', 'advice_hold')} }"
    assert shown in lines[0] and shown in lines[1]  # one order for every version


def refused_url() -> str:
    """An http URL on this machine that nothing listens on: downloading fails as it does offline."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/set.zip"


def test_fetch_that_gets_nothing_removes_the_folders_it_made(tmp_path: Path) -> None:
    from moderation.fetch import FetchError

    offline = [Source("youtube_spam", [refused_url()], SOURCES[0].unpack)]
    with pytest.raises(FetchError, match="could not download"):
        fetch_all(tmp_path / "new" / "data", offline)
    assert list(tmp_path.iterdir()) == []

    mine = tmp_path / "mine"  # a folder that was there before is the user's: it stays
    mine.mkdir()
    with pytest.raises(FetchError):
        fetch_all(mine, offline)
    assert list(tmp_path.iterdir()) == [mine] and list(mine.iterdir()) == []


def test_fetch_keeps_whole_sets_and_names_them_when_a_later_one_fails(tmp_path: Path) -> None:
    from moderation.fetch import FetchError

    served = tmp_path / "served"
    served.mkdir()
    _zip(served / "yt.zip", {"Youtube04-Eminem.csv": "COMMENT_ID,AUTHOR,DATE,CONTENT,CLASS\n1,a,d,subscribe pls,1\n"})
    (served / "sms.zip").write_text("<html>Service unavailable</html>")  # an error page saved as the archive
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match=r"sms_spam: a downloaded file is not a zip archive") as failed:
        fetch_all(
            dest,
            [
                Source("youtube_spam", [f"file://{served / 'yt.zip'}"], SOURCES[0].unpack),
                Source("sms_spam", [f"file://{served / 'sms.zip'}"], SOURCES[1].unpack),
            ],
        )
    assert f"already fetched into {dest}: youtube_spam" in str(failed.value)
    assert sorted(p.name for p in dest.iterdir()) == ["youtube_spam"]  # no half-made sms_spam/, no staging


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_models_rollback_refuses_a_version_that_cannot_be_loaded(
    trained_model: TrainedModel, tmp_path: Path, damage: str
) -> None:
    """As `models activate` does: the previous version's file is gone or changed, so the current one stays."""
    var = tmp_path / "var"
    model_dir = var / "models"  # MODEL_DIR's default
    model_dir.mkdir(parents=True)
    assert run(var, "migrate").exit_code == 0
    sessions = make_session_factory(create_db_engine(f"sqlite:///{var / 'moderation.db'}"))
    for version in ("v1", "v2"):
        path = model_dir / f"model-{version}.skops"
        path.write_bytes(trained_model.artifact.path.read_bytes())
        with sessions.begin() as session:
            registry.register(session, version, registry.SavedArtifact(path, trained_model.artifact.sha256), {})
            registry.activate(session, version)
    older = model_dir / "model-v1.skops"
    if damage == "missing":
        older.unlink()
    else:
        older.write_bytes(older.read_bytes()[:-100])

    rolled = run(var, "models", "rollback")

    assert rolled.exit_code != 0
    assert rolled.stderr.startswith("Error: cannot roll back to model version v1: model file ")
    where = f"model-v1.skops is missing: not in MODEL_DIR {model_dir}" if damage == "missing" else str(older)
    assert where in rolled.stderr and rolled.stderr.rstrip().endswith("; model v2 stays active")
    assert versions(var) == [(True, "v2"), (False, "v1")]
    refused = run(var, "models", "activate", "v1")
    assert refused.exit_code != 0 and "model version v1 cannot be activated: model file " in refused.stderr


def model_files(var: Path) -> list[str]:
    model_dir = var / "models"  # MODEL_DIR's default
    return sorted(p.name for p in model_dir.iterdir()) if model_dir.exists() else []


def test_models_import_brings_in_a_model_trained_elsewhere_and_activates_it(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    var = tmp_path / "var"
    assert run(var, "migrate").exit_code == 0
    path = saved_elsewhere(trained_model, tmp_path / "staging", "from-staging")

    imported = run(var, "models", "import", str(path), "--activate")

    assert imported.exit_code == 0, imported.output
    assert imported.stdout.splitlines() == [
        f"imported model from-staging into MODEL_DIR {(var / 'models').resolve()}",
        "model from-staging is active; workers switch within MODEL_CHECK_INTERVAL_SECONDS",
    ]
    assert versions(var) == [(True, "from-staging")]
    assert model_files(var) == ["model-from-staging.card.json", "model-from-staging.skops"]
    shutil.rmtree(tmp_path / "staging")
    comment = json.dumps({"body": "Thanks, this article helped me understand my MRI."}) + "\n"
    assert classify_answers(var, comment.encode())[0]["model_version"] == "from-staging"


def test_models_import_twice_registers_once_and_activates_on_request(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    var = tmp_path / "var"
    assert run(var, "migrate").exit_code == 0
    path = saved_elsewhere(trained_model, tmp_path / "staging", "v7", created_at="2026-01-02T03:04:05+00:00")

    first = run(var, "models", "import", str(path))
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[1] == "activate it with: moderation models activate v7"
    assert versions(var) == [(False, "v7")]

    again = run(var, "models", "import", str(path))
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == [
        "model v7 is already registered with this very file: nothing imported",
        "activate it with: moderation models activate v7",
    ]
    activated = run(var, "models", "import", str(path), "--activate")
    assert activated.exit_code == 0, activated.output
    assert activated.stdout.splitlines()[1] == "model v7 is active; workers switch within MODEL_CHECK_INTERVAL_SECONDS"
    assert versions(var) == [(True, "v7")]
    assert model_files(var) == ["model-v7.card.json", "model-v7.skops"]

    # Lost from MODEL_DIR (a restore, a host's folder): importing it again puts it back, and says so.
    (var / "models" / "model-v7.skops").unlink()
    restored = run(var, "models", "import", str(path))
    assert restored.exit_code == 0, restored.output
    assert restored.stdout.splitlines() == [
        f"model v7 is already registered with this very file; its missing file is back in {(var / 'models').resolve()}"
    ]
    assert model_files(var) == ["model-v7.card.json", "model-v7.skops"]
    # Listed with the date it was trained, from its card, not the date it was imported.
    assert "created=2026-01-02T03:04Z" in run(var, "models", "list").stdout


@pytest.mark.parametrize("problem", ["no-card", "other-features", "same-name-other-file", "untrusted"])
def test_models_import_refuses_in_one_line_and_leaves_nothing_behind(
    trained_model: TrainedModel, tmp_path: Path, problem: str
) -> None:
    var = tmp_path / "var"
    assert run(var, "migrate").exit_code == 0
    staging = tmp_path / "staging"
    older = {"features_version": "2020-01-01"} if problem == "other-features" else {}
    path = saved_elsewhere(trained_model, staging, "v1", **older)
    before: list[tuple[bool, str]] = []
    if problem == "other-features":
        said = "model v1 was trained on features of version 2020-01-01"
    elif problem == "no-card":
        (staging / "model-v1.card.json").unlink()
        said = f"model card {staging / 'model-v1.card.json'} is missing"
    elif problem == "same-name-other-file":
        assert run(var, "models", "import", str(trained_model.artifact.path)).exit_code == 0
        path = saved_elsewhere(trained_model, staging, "test-model")
        path.write_bytes(path.read_bytes() + b"\0")  # another file under the registered version's name
        said = "model version test-model is already registered with another file"
        before = [(False, "test-model")]
    else:
        unreviewed = MultinomialNB()
        sio.dump({"vectorizer": unreviewed, "spam": unreviewed, "medical_advice": unreviewed}, path)
        said = f"model file {path} holds types that are not trusted: sklearn.naive_bayes.MultinomialNB"
    files = model_files(var)

    refused = run(var, "models", "import", str(path), "--activate")

    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"Error: {said}") and refused.stderr.count("\n") == 1
    assert versions(var) == before and model_files(var) == files
    if problem == "other-features":  # what the error offers works
        allowed = run(var, "models", "import", str(path), "--allow-other-features")
        assert allowed.exit_code == 0, allowed.output
        assert versions(var) == [(False, "v1")]


@pytest.mark.parametrize("typo", ["model-v1.skops", "model-v1.skops.bak", "model-v2.skops", "model-v3.skops"])
def test_models_import_of_a_mistyped_path_changes_nothing(tmp_path: Path, typo: str) -> None:
    var = tmp_path / "var"
    assert run(var, "migrate").exit_code == 0
    path = tmp_path / typo
    if typo != "model-v1.skops":
        path.write_bytes(b"a backup, or a model file without its card, or with a card for another version")
    (tmp_path / "model-v3.card.json").write_text('{"version": "v4"}')
    said = {
        "model-v1.skops": f"model file {path} is missing",
        "model-v1.skops.bak": f"{path} is not a model file",
        "model-v2.skops": f"model card {tmp_path / 'model-v2.card.json'} is missing",
        "model-v3.skops": f"model card {tmp_path / 'model-v3.card.json'} names version v4",
    }[typo]

    refused = run(var, "models", "import", str(path))

    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"Error: {said}")
    assert not (var / "models").exists()  # not even an empty MODEL_DIR


def test_models_import_waits_while_another_import_into_the_same_folder_is_under_way(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    """Two imports of one version at once must not both register it, nor one remove the file the other's row
    names (the second found the first's copy, the first's registration then failed): they take turns."""
    var = tmp_path / "var"
    assert run(var, "migrate").exit_code == 0
    path = saved_elsewhere(trained_model, tmp_path / "staging", "v3")
    results: list[Result] = []
    second = threading.Thread(target=lambda: results.append(run(var, "models", "import", str(path))))
    with registry.import_lock(var / "models"):  # the first import, under way
        second.start()
        second.join(timeout=5)  # an import that did not wait takes a second or two here
        assert second.is_alive() and model_files(var) == [] and versions(var) == []
    second.join(timeout=60)
    assert results and results[0].exit_code == 0, results[0].output if results else "still waiting"
    assert versions(var) == [(False, "v3")] and model_files(var) == ["model-v3.card.json", "model-v3.skops"]


def test_models_import_removes_its_copy_when_registration_fails(trained_model: TrainedModel, tmp_path: Path) -> None:
    var = tmp_path / "var"
    assert run(var, "migrate").exit_code == 0
    with create_db_engine(f"sqlite:///{var / 'moderation.db'}").begin() as connection:
        connection.execute(
            text(
                "CREATE TRIGGER refuse_models BEFORE INSERT ON model_versions "
                "BEGIN SELECT RAISE(ABORT, 'no space left on device'); END"
            )
        )

    refused = run(var, "models", "import", str(trained_model.artifact.path), "--activate")

    assert refused.exit_code == 1
    assert refused.stderr == "Error: model version test-model could not be registered: no space left on device\n"
    assert model_files(var) == [] and versions(var) == []


# --- evaluate: what it measures on, which targets, the comments it got wrong ------------------------------


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def _rows_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


TRAINED_ON = CORPUS_DIR / "training_only" / "from_misses.jsonl"  # training-only: in every model's training data
UNSEEN = CORPUS_DIR.parent / "evalsets" / "unseen.jsonl"  # never trained on


def test_evaluate_refuses_a_file_the_model_was_trained_on(trained: Path) -> None:
    result = run(trained, "evaluate", "--data", str(TRAINED_ON))
    assert result.exit_code != 0
    assert f"Error: all {len(_rows_of(TRAINED_ON))} labeled comments were in the training data of model test-model" in (
        result.stderr
    )
    assert "held-out" not in result.output


def test_evaluate_leaves_out_the_comments_the_model_was_trained_on(trained: Path, tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "mixed.jsonl", _rows_of(TRAINED_ON)[:12] + _rows_of(UNSEEN)[:48])
    result = run(trained, "evaluate", "--data", str(data), "--report", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "model test-model: 48 held-out comments; 12 of 60 comments were in this model's training data and are left out"
    )
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert {label: m["n"] for label, m in metrics["by_source"]["file:mixed"].items()} == {
        "spam": 48,
        "medical_advice": 48,
    }
    page = (tmp_path / "report" / "report.html").read_text()
    assert "12 of 60 comments were in this model's training data and are left out" in page
    assert "All data here is held out" not in page


def test_evaluate_with_a_model_saved_before_fingerprints_cannot_tell(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    var = tmp_path / "var"
    assert run(var, "migrate").exit_code == 0
    old = replace(trained_model.model, trained_fingerprints=None)  # saved as every model was before
    artifact = registry.save_artifact(old, var / "models", "old-model")
    sessions = make_session_factory(create_db_engine(f"sqlite:///{var / 'moderation.db'}"))
    with sessions.begin() as session:
        registry.register(session, "old-model", artifact, {**trained_model.model.card, "version": "old-model"})
        registry.activate(session, "old-model")
    data = _jsonl(tmp_path / "mixed.jsonl", _rows_of(TRAINED_ON)[:12] + _rows_of(UNSEEN)[:48])
    result = run(var, "evaluate", "--data", str(data))
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("model old-model: 60 comments;") and "cannot tell which were trained on" in first
    page = Path(result.stdout.strip().splitlines()[-1].removeprefix("report: ")).read_text()
    assert "cannot tell which of these 60 comments were trained on" in page
    assert "held out: never trained on" not in page


@pytest.mark.parametrize("name", ["mine", "sms", "youtube"])
def test_evaluate_checks_a_file_against_the_in_domain_targets_whatever_its_name(
    trained: Path, tmp_path: Path, name: str
) -> None:
    data = _jsonl(tmp_path / f"{name}.jsonl", _rows_of(UNSEEN)[:120])
    result = run(trained, "evaluate", "--data", str(data), "--report", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    checks = [line.split()[1:3] for line in result.stdout.splitlines() if line.startswith(("ok  ", "MISS"))]
    assert checks == [
        [f"file:{name}", "spam"],
        [f"file:{name}", "medical_advice"],
        [f"file:{name}", "leak_rate"],
        [f"file:{name}", "ordinary_rejected"],
        [f"file:{name}", "ordinary_held"],
    ]


def test_evaluate_lists_the_comments_it_got_wrong_escaped(trained: Path, tmp_path: Path) -> None:
    wrongly_labeled = [  # labels a model cannot agree with, so both are mistakes
        {
            "body": '"><img src=x onerror=alert(1)> Thank you for the article, my physio said the same.',
            "spam": True,
            "medical_advice": False,
        },
        {
            "body": "<script>alert(1)</script> CHEAP V1AGRA pills, buy now at www.pill-shop-cheap.xyz !!!",
            "spam": False,
            "medical_advice": False,
        },
    ]
    data = _jsonl(tmp_path / "hostile.jsonl", wrongly_labeled + _rows_of(UNSEEN)[:40])
    result = run(trained, "evaluate", "--data", str(data), "--report", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert re.search(r"^mistakes: spam [1-9]\d* missed, [1-9]\d* wrongly flagged;", result.stdout, re.MULTILINE)
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt; Thank you for the article" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; CHEAP V1AGRA pills" in page
    assert "spam: missed (false negatives)" in page and "Ordinary comments rejected" in page


def test_evaluate_shows_a_dash_without_positives_and_says_why_the_policy_table_is_empty(
    trained: Path, tmp_path: Path
) -> None:
    rows = [{"body": row["body"], "spam": False} for row in _rows_of(UNSEEN) if row["spam"] is False][:30]
    data = _jsonl(tmp_path / "spam_only.jsonl", rows)
    result = run(trained, "evaluate", "--data", str(data), "--report", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert re.search(r"^file:spam_only\s+spam\s+30\s+0\s+-\s+-\s+-\s", result.stdout, re.MULTILINE)
    assert "No policy measures: no comment here carries both labels" in result.stdout
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<td>30</td><td>0</td><td>-</td><td>-</td><td>-</td>" in page
    assert "No policy measures: no comment here carries both labels" in page


def test_matplotlibs_first_font_cache_is_not_logged(tmp_path: Path) -> None:
    """An install's first report builds matplotlib's font cache, which it logs at INFO: chatter in the output."""
    script = (
        "from server.logs import configure_logging; configure_logging('INFO'); "
        "import matplotlib.font_manager as f; f.fontManager; import logging; logging.getLogger('x').info('shown')"
    )
    env = os.environ | {"MPLCONFIGDIR": str(tmp_path), "LOG_FORMAT": "text"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert list(tmp_path.glob("fontlist-*.json")), "matplotlib built no font cache: nothing was tested"
    assert "fontManager" not in done.stderr and "shown" in done.stderr


def test_classify_in_a_folder_without_a_database_says_where_to_run_it_not_to_train(tmp_path: Path) -> None:
    """A new user ran it from another folder: a fresh database was made there, and the advice to train would
    have trained a second model in the wrong place."""
    answer = run(tmp_path / "elsewhere", "classify", stdin='{"body": "hello"}\n')
    assert answer.exit_code == 1
    assert f"no database at {(tmp_path / 'elsewhere' / 'moderation.db').resolve()}" in answer.stderr
    assert "run it in the service's folder or set VAR_DIR (or DATABASE_URL)" in answer.stderr
    assert "train" not in answer.stderr
    assert not (tmp_path / "elsewhere").exists()
    assert run(tmp_path / "elsewhere", "migrate").exit_code == 0
    again = run(tmp_path / "elsewhere", "classify", stdin='{"body": "hello"}\n')  # the database is there now
    assert "no model is active" in again.stderr
