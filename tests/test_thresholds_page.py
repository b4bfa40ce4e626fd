"""The admin's thresholds page: what a save stores, so a site follows the model wherever the admin left it.

Through Flask's test client on SQLite and PostgreSQL, with model versions registered and activated through
the registry as `moderation models activate` does. The forms posted are the ones the page renders.
"""

# Rows looked up by id are there (a None fails the test anyway): no narrowing at every lookup.
# mypy: disable-error-code="union-attr"

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from models.entities import Site
from moderation import evaluation, registry
from moderation.policy import Thresholds
from moderation.sites import create_site
from server.settings import Settings
from tests.support.dashboard import add_moderator, csrf_token, held_comment, sign_in

Sessions = sessionmaker[Session]

THRESHOLD_NAMES = ("spam_reject", "spam_hold", "advice_hold")

MODEL_A = {"spam_reject": 0.75, "spam_hold": 0.03, "advice_hold": 0.09}
MODEL_B = {"spam_reject": 0.8, "spam_hold": 0.2, "advice_hold": 0.4}

# Held-out scores for the what-if: ordinary comments with low scores, which model A's low hold lines hold.
ORDINARY_SPAM = [0.01, 0.02, 0.04, 0.05, 0.06, 0.1, 0.15, 0.25, 0.3, 0.5]
ORDINARY_ADVICE = [0.02, 0.05, 0.1, 0.12, 0.2, 0.3, 0.05, 0.02, 0.01, 0.03]
EVALUATION_SCORES = {
    "spam": [*ORDINARY_SPAM, 0.95, 0.85, 0.1],
    "medical_advice": [*ORDINARY_ADVICE, 0.01, 0.02, 0.9],
    "links": [0] * 13,
    "is_spam": [False] * 10 + [True, True, False],
    "is_medical_advice": [False] * 12 + [True],
}


def card(version: str, thresholds: dict[str, float]) -> dict[str, Any]:
    return {"version": version, "thresholds": thresholds, "evaluation_scores": EVALUATION_SCORES}


@pytest.fixture
def versions(sessions: Sessions, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Model versions A (active) and B: the dashboard reads their cards, activation needs their files."""
    cards = {"model-a": card("model-a", MODEL_A), "model-b": card("model-b", MODEL_B)}
    with sessions.begin() as session:
        for version, its_card in cards.items():
            path = tmp_path / f"model-{version}.skops"
            path.write_bytes(version.encode())
            registry.register(session, version, registry.SavedArtifact(path, registry.file_sha256(path)), its_card)
        registry.activate(session, "model-a")
    return cards


def activate(sessions: Sessions, version: str) -> None:
    with sessions.begin() as session:
        registry.activate(session, version)


@pytest.fixture
def sites(sessions: Sessions) -> dict[str, int]:
    with sessions.begin() as session:
        return {name: create_site(session, name)[0].id for name in ("edited", "untouched")}


@pytest.fixture
def admin_client(client: FlaskClient, sessions: Sessions) -> Iterator[FlaskClient]:
    with sessions.begin() as session:
        add_moderator(session, "admin@example.org", "admin")
    assert sign_in(client, "admin@example.org").status_code == 302
    yield client


def set_own(sessions: Sessions, site_id: int, reject: float | None, hold: float | None, advice: float | None) -> None:
    with sessions.begin() as session:
        site = session.get(Site, site_id)
        site.spam_reject_threshold, site.spam_hold_threshold, site.advice_hold_threshold = reject, hold, advice


def stored(sessions: Sessions, site_id: int) -> tuple[float | None, float | None, float | None]:
    with sessions() as session:
        site = session.get(Site, site_id)
        return site.spam_reject_threshold, site.spam_hold_threshold, site.advice_hold_threshold


class SaveFormFields(HTMLParser):
    """What the browser would post from the page's save form (or another of its forms): its inputs' values
    (as written in the page, before a browser would clamp a slider's) and the boxes checked."""

    def __init__(self, form_id: str = "save-form") -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._form_id = form_id
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form":
            self._inside = found.get("id") == self._form_id
        elif tag == "input" and self._inside and found.get("name"):
            if found.get("type") == "checkbox" and "checked" not in found:
                return
            self.fields[found["name"] or ""] = found.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def page(client: FlaskClient, site_id: int, query: str = "") -> str:
    response = client.get(f"/dashboard/admin/sites/{site_id}/thresholds{query}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def save_form(client: FlaskClient, site_id: int, query: str = "") -> dict[str, str]:
    parser = SaveFormFields()
    parser.feed(page(client, site_id, query))
    return parser.fields


def sliders(page_html: str) -> dict[str, tuple[str, str]]:
    """Per threshold, the value its slider is given and the text its output shows."""
    parser = SaveFormFields("threshold-form")
    parser.feed(page_html)
    shown = dict(re.findall(r'<output id="(\w+)-out">([^<]*)</output>', page_html))
    return {name: (parser.fields[name], html.unescape(shown[name])) for name in THRESHOLD_NAMES}


def save(client: FlaskClient, site_id: int, fields: dict[str, str]) -> str:
    response = client.post(f"/dashboard/admin/sites/{site_id}/thresholds", data=fields, follow_redirects=True)
    assert response.status_code == 200
    return response.get_data(as_text=True)


# A refusal answers 422, not 200: a script or a test posting the form can tell it from a save (the browser still
# shows the page, which says why).
REFUSED = 422


def refused_page(client: FlaskClient, site_id: int, query: str) -> str:
    """The page for values the form's own preview (its GET, without the page's script) refused."""
    response = client.get(f"/dashboard/admin/sites/{site_id}/thresholds{query}")
    assert response.status_code == REFUSED
    return response.get_data(as_text=True)


def refused_save(client: FlaskClient, site_id: int, fields: dict[str, str]) -> str:
    """The page a refused save renders (no redirect: that would show the saved values)."""
    response = client.post(f"/dashboard/admin/sites/{site_id}/thresholds", data=fields)
    assert response.status_code == REFUSED
    return response.get_data(as_text=True)


def preview(client: FlaskClient, site_id: int, query: str) -> Any:
    return client.get(f"/dashboard/admin/sites/{site_id}/thresholds/preview?{query}")


def sources(page_html: str) -> dict[str, tuple[str, str]]:
    """Per threshold, the page's "now" and "once saved" cells."""
    now = dict(re.findall(r'data-now-source="(\w+)">([^<]*)<', page_html))
    saved = dict(re.findall(r'data-saved-source="(\w+)">([^<]*)<', page_html))
    return {name: (html.unescape(now[name]), html.unescape(saved[name])) for name in now}


# --- a save stores only what the admin changed --------------------------------------------------------


def test_moving_one_threshold_leaves_the_others_following_the_next_model(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    # The tester's case: only "reject as spam" moved from the model's 0.75 to 0.90, previewed, saved.
    fields = save_form(admin_client, sites["edited"], "?spam_reject=0.90&spam_hold=0.03&advice_hold=0.09")
    assert (fields["spam_reject"], fields["spam_hold"], fields["advice_hold"]) == ("0.90", "0.03", "0.09")
    assert "saved" in save(admin_client, sites["edited"], fields)
    assert stored(sessions, sites["edited"]) == (0.9, None, None)

    activate(sessions, "model-b")
    untouched = preview(admin_client, sites["untouched"], "").get_json()["current"]
    edited = preview(admin_client, sites["edited"], "").get_json()["current"]
    model_b = versions["model-b"]
    assert untouched == evaluation.what_if(model_b, Thresholds(**MODEL_B))
    assert edited == evaluation.what_if(model_b, Thresholds(0.9, MODEL_B["spam_hold"], MODEL_B["advice_hold"]))
    pinned = evaluation.what_if(model_b, Thresholds(**{**MODEL_A, "spam_reject": 0.9}))
    assert edited["ordinary_held"] == untouched["ordinary_held"] != pinned["ordinary_held"]
    assert sources(page(admin_client, sites["edited"]))["spam_hold"][0] == "0.20, the model's"
    listed = " ".join(admin_client.get("/dashboard/admin/sites").get_data(as_text=True).split())
    assert "0.9 / model&#39;s / model&#39;s" in listed  # the Sites page says whose they are


def test_a_post_of_all_three_values_stores_only_the_changed_one(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    # As a page without the "use the model's" boxes posts: all three values, nothing else.
    token = csrf_token(admin_client, "/dashboard/admin/sites")
    values = {"spam_reject": "0.75", "spam_hold": "0.03", "advice_hold": "0.12"}
    save(admin_client, sites["edited"], {"csrf_token": token, **values})
    assert stored(sessions, sites["edited"]) == (None, None, 0.12)


def test_a_value_moved_back_onto_the_models_keeps_following_it(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    fields = save_form(admin_client, sites["edited"], "?spam_reject=0.75&spam_hold=0.03&advice_hold=0.09")
    token = fields["csrf_token"]
    # The model's value was moved off and back before saving: the same as not moved at all.
    save(admin_client, sites["edited"], {"csrf_token": token, "spam_reject": "0.75", "spam_hold": "0.30"})
    assert stored(sessions, sites["edited"]) == (None, 0.3, None)


def test_an_own_value_left_alone_is_kept_exactly(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    # The page shows and sends two decimals; the row keeps the value set elsewhere (e.g. in the database).
    set_own(sessions, sites["edited"], 0.905, None, 0.125)
    fields = save_form(admin_client, sites["edited"], "?spam_reject=0.91&spam_hold=0.05&advice_hold=0.12")
    assert "follow_spam_reject" not in fields and "follow_spam_hold" not in fields
    save(admin_client, sites["edited"], fields)
    assert stored(sessions, sites["edited"]) == (0.905, 0.05, 0.125)


# --- going back to the model's values -------------------------------------------------------------------


def test_use_the_models_puts_back_one_threshold(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    set_own(sessions, sites["edited"], 0.9, 0.2, 0.5)
    fields = save_form(admin_client, sites["edited"])
    assert not any(name.startswith("follow_") for name in fields)  # every box unchecked: all three the site's own
    fields["follow_spam_hold"] = "1"  # the admin ticks "use the model's" for the spam hold
    save(admin_client, sites["edited"], fields)
    assert stored(sessions, sites["edited"]) == (0.9, None, 0.5)

    activate(sessions, "model-b")
    assert sources(page(admin_client, sites["edited"])) == {
        "spam_reject": ("0.90, the site's own", "0.90, the site's own"),
        "spam_hold": ("0.20, the model's", "0.20, the model's"),
        "advice_hold": ("0.50, the site's own", "0.50, the site's own"),
    }


def test_use_the_models_defaults_puts_back_all_three(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    set_own(sessions, sites["edited"], 0.9, 0.2, 0.5)
    fields = save_form(admin_client, sites["edited"])
    assert "default thresholds again" in save(admin_client, sites["edited"], {**fields, "reset": "1"})
    assert stored(sessions, sites["edited"]) == (None, None, None)


def test_stored_values_out_of_range_are_said_and_mended_from_the_pages_that_would_fail_on_them(
    admin_client: FlaskClient, versions: dict[str, dict[str, Any]], sites: dict[str, int], sessions: Sessions
) -> None:
    """Only a hand edit of the database stores them; the policy refuses them (the site's comments are held as
    not_classified), and the queue, the comment and this page must still show, so the admin can mend them."""
    set_own(sessions, sites["edited"], None, None, 1.5)
    with sessions.begin() as session:
        comment_id, _ = held_comment(session, session.get_one(Site, sites["edited"]), "c-1", reasons=["not_classified"])
    for path in ("/dashboard/queue", f"/dashboard/comments/{comment_id}"):
        assert admin_client.get(path).status_code == 200, path
    shown = html.unescape(page(admin_client, sites["edited"]))
    assert "stored thresholds cannot be used (advice_hold must be between 0 and 1, got 1.5)" in shown
    assert preview(admin_client, sites["edited"], "advice_hold=0.4").status_code == 200
    assert "moderation reclassify --site edited" in shown
    fields = save_form(admin_client, sites["edited"])
    assert "saved" in save(admin_client, sites["edited"], fields)  # as the page shows it: the model's lines
    assert stored(sessions, sites["edited"]) == (None, None, None)
    assert "cannot be used" not in page(admin_client, sites["edited"])


def test_preview_says_what_saving_would_store(
    admin_client: FlaskClient, versions: dict[str, dict[str, Any]], sites: dict[str, int], sessions: Sessions
) -> None:
    set_own(sessions, sites["edited"], None, 0.2, 0.5)
    answer = preview(
        admin_client, sites["edited"], "spam_reject=0.75&spam_hold=0.25&advice_hold=0.5&follow_advice_hold=1"
    )
    assert answer.status_code == 200
    data = answer.get_json()
    assert data["own"] == {"spam_reject": None, "spam_hold": 0.25, "advice_hold": None}
    assert data["proposed"] == {"spam_reject": 0.75, "spam_hold": 0.25, "advice_hold": 0.09}
    assert data["effect"] == evaluation.what_if(versions["model-a"], Thresholds(0.75, 0.25, 0.09))


def test_page_shows_whose_each_threshold_is_beside_the_models(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    set_own(sessions, sites["edited"], None, 0.2, None)
    shown = page(admin_client, sites["edited"], "?spam_reject=0.75&spam_hold=0.20&advice_hold=0.30")
    assert sources(shown) == {
        "spam_reject": ("0.75, the model's", "0.75, the model's"),
        "spam_hold": ("0.20, the site's own", "0.20, the site's own"),
        "advice_hold": ("0.09, the model's", "0.30, the site's own"),
    }
    parser = SaveFormFields()
    parser.feed(shown)
    assert {name for name in parser.fields if name.startswith("follow_")} == {"follow_spam_reject"}
    assert re.findall(r'name="follow_(\w+)" value="1" data-model="([\d.]+)"', shown) == [
        ("spam_reject", "0.75"),
        ("spam_hold", "0.03"),
        ("advice_hold", "0.09"),
    ]


def test_a_hold_set_above_the_reject_line_is_refused_unless_reject_follows_the_model(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    assert preview(admin_client, sites["edited"], "spam_reject=0.50&spam_hold=0.60").status_code == 400
    answer = preview(admin_client, sites["edited"], "spam_reject=0.75&spam_hold=0.95&follow_spam_reject=1")
    assert answer.status_code == 200
    assert answer.get_json()["own"]["spam_reject"] is None
    assert answer.get_json()["proposed"]["spam_reject"] == 0.95  # never auto-reject below the hold
    set_own(sessions, sites["edited"], None, 0.95, None)
    assert sources(page(admin_client, sites["edited"]))["spam_reject"][0] == "0.95, the model's, raised to the hold"


def test_a_sites_own_reject_line_raised_to_a_newer_models_hold_is_said_to_be_raised(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    """The site saved its own reject line, 0.10, under model A (hold 0.03); model B holds from 0.20, so the site
    rejects from max(0.10, 0.20) (Thresholds.overridden). The page said "0.20, the site's own": not the site's
    value, and not said to be raised, as a line following the model is (a cold review's test)."""
    set_own(sessions, sites["edited"], 0.10, None, None)
    activate(sessions, "model-b")
    raised = "0.20, the site's own 0.10, raised to the hold"
    assert sources(page(admin_client, sites["edited"]))["spam_reject"] == (raised, raised)
    # The page's script builds "once saved" from its preview's answer (thresholds.js source()): the same parts.
    fields = save_form(admin_client, sites["edited"])
    query = "&".join(f"{name}={value}" for name, value in fields.items() if name != "csrf_token")
    answer = preview(admin_client, sites["edited"], query).get_json()
    assert (answer["proposed"]["spam_reject"], answer["own"]["spam_reject"]) == (0.2, 0.1)
    save(admin_client, sites["edited"], fields)  # left as shown: the site's own value is kept, not 0.20
    assert stored(sessions, sites["edited"]) == (0.10, None, None)


def test_whose_a_line_is_is_told_from_the_values_not_from_their_two_decimals(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    """A review's finding: the page compared the line in force with the site's own value and the model's as
    two-decimal texts. A site's own reject line 0.199 raised to model B's hold 0.20 was "0.20, the site's own",
    and model B's reject line 0.80 raised to a site's own hold 0.804 "0.80, the model's": both raised, neither
    said so. The values are compared as they are, and shown with the decimals that tell them apart."""
    set_own(sessions, sites["edited"], 0.199, None, None)
    set_own(sessions, sites["untouched"], None, 0.804, 0.404)
    activate(sessions, "model-b")
    expected = {
        "edited": {"spam_reject": "0.200, the site's own 0.199, raised to the hold"},
        "untouched": {
            "spam_reject": "0.804, the model's 0.800, raised to the hold",
            "spam_hold": "0.80, the site's own",  # not compared with anything: two decimals as ever
            "advice_hold": "0.40, the site's own",
        },
    }
    for name, lines in expected.items():
        shown = sources(page(admin_client, sites[name]))
        assert {key: shown[key] for key in lines} == {key: (text, text) for key, text in lines.items()}
        # The page's script shows, once previewed, the text its preview's answer gives: the same.
        fields = save_form(admin_client, sites[name])
        query = "&".join(f"{key}={value}" for key, value in fields.items() if key != "csrf_token")
        answer = preview(admin_client, sites[name], query).get_json()
        assert {key: answer["sources"][key] for key in lines} == lines
    model_b = {key: f"{value:.2f}" for key, value in MODEL_B.items()}
    assert sources(page(admin_client, sites["untouched"], "?spam_reject=0.80&spam_hold=0.20&advice_hold=0.40")) == {
        "spam_reject": ("0.804, the model's 0.800, raised to the hold", f"{model_b['spam_reject']}, the model's"),
        "spam_hold": ("0.80, the site's own", "0.20, the site's own"),
        "advice_hold": ("0.40, the site's own", "0.40, the site's own"),
    }


def test_every_bad_value_sent_is_named_at_once(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    """An admin who typed two bad values learns of both from one answer, not of the second after mending the first."""
    answer = preview(admin_client, sites["edited"], "spam_reject=abc&spam_hold=5&advice_hold=nan")
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    for label in (
        "“Reject as spam” must be a number between 0 and 1, got abc",
        "“Hold as possible spam” must be between 0 and 1, got 5",
    ):
        assert label in error
    assert "“Hold as medical advice” must be between 0 and 1, got nan" in error
    error = preview(admin_client, sites["edited"], "spam_reject=0.3&spam_hold=0.9&advice_hold=x").get_json()["error"]
    assert "“Hold as possible spam” must not be above “Reject as spam”" in error and "got x" in error
    error = preview(admin_client, sites["edited"], f"spam_reject={'9' * 5000}").get_json()["error"]
    assert len(error) < 200
    token = csrf_token(admin_client, "/dashboard/admin/sites")
    fields = {"csrf_token": token, "spam_reject": "-1", "spam_hold": "0.03", "advice_hold": "2"}
    shown = html.unescape(refused_save(admin_client, sites["edited"], fields))
    assert "“Reject as spam” must be between 0 and 1, got -1" in shown
    assert "“Hold as medical advice” must be between 0 and 1, got 2" in shown
    assert stored(sessions, sites["edited"]) == (None, None, None)


def test_values_refused_in_a_preview_stay_in_the_sliders_to_be_corrected(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    """Previewed without the page's script (the form's own GET), a hold above the reject line was named, and
    the sliders jumped back to the saved values: the admin had to find and set again what they had tried."""
    shown = refused_page(admin_client, sites["edited"], "?spam_reject=0.50&spam_hold=0.60&advice_hold=0.20")
    assert "“Hold as possible spam” must not be above “Reject as spam”" in html.unescape(shown)
    assert sliders(shown) == {
        "spam_reject": ("0.50", "0.50"),
        "spam_hold": ("0.60", "0.60"),
        "advice_hold": ("0.20", "0.20"),
    }
    assert re.search(r'id="save-thresholds" disabled', shown)
    assert stored(sessions, sites["edited"]) == (None, None, None)


def test_a_refused_save_shows_the_values_sent_escaped_and_stores_nothing(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    """After a refused save the page showed the saved values again, so the bad one could not be seen and
    corrected; what was sent comes back as a text field would give it back, as text and never as markup."""
    hostile = '0.9"><script>alert(1)</script>'
    token = csrf_token(admin_client, "/dashboard/admin/sites")
    fields = {"csrf_token": token, "spam_reject": hostile, "spam_hold": "0.60", "advice_hold": "0.20"}
    shown = refused_save(admin_client, sites["edited"], fields)
    assert "<script>alert(1)" not in shown
    assert '“Reject as spam” must be a number between 0 and 1, got 0.9"><script>' in html.unescape(shown)
    assert sliders(shown) == {
        "spam_reject": (hostile, hostile),
        "spam_hold": ("0.60", "0.60"),
        "advice_hold": ("0.20", "0.20"),
    }
    assert re.search(r'id="save-thresholds" disabled', shown)
    assert stored(sessions, sites["edited"]) == (None, None, None)


def ticked(page_html: str) -> set[str]:
    """The thresholds whose "use the model's" box the page renders ticked."""
    parser = SaveFormFields()
    parser.feed(page_html)
    return {name.removeprefix("follow_") for name in parser.fields if name.startswith("follow_")}


def test_a_refused_page_ticks_use_the_models_as_the_values_sent_would_save(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    """Refused by the form's own preview (no script), the page unticked every "use the model's" box, even for the
    values sent that were the model's on a site that follows it: read as sent, the page said every threshold
    would become the site's own, and a save from it would make them so. A value moved, or no number, is unticked."""
    shown = refused_page(admin_client, sites["edited"], "?spam_reject=0.75&spam_hold=0.03&advice_hold=x")
    assert ticked(shown) == {"spam_reject", "spam_hold"}
    shown = refused_page(admin_client, sites["edited"], "?spam_reject=0.50&spam_hold=0.60&advice_hold=0.09")
    assert ticked(shown) == {"advice_hold"}
    # The site's own value, sent unchanged, stays its own; a valid preview of the same values says the same.
    set_own(sessions, sites["edited"], None, 0.2, None)
    shown = refused_page(admin_client, sites["edited"], "?spam_reject=0.75&spam_hold=0.20&advice_hold=x")
    assert ticked(shown) == {"spam_reject"}
    assert ticked(page(admin_client, sites["edited"], "?spam_reject=0.75&spam_hold=0.20&advice_hold=0.09")) == {
        "spam_reject",
        "advice_hold",
    }


def test_a_refused_save_keeps_the_use_the_models_boxes_as_they_were_sent(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    """Posted from the page without its script: a box ticked comes back ticked, one unticked (pinned) unticked."""
    fields = save_form(admin_client, sites["edited"])
    assert {name for name in fields if name.startswith("follow_")} == {
        "follow_spam_reject",
        "follow_spam_hold",
        "follow_advice_hold",
    }
    del fields["follow_spam_reject"], fields["follow_advice_hold"]  # the admin unticks two and mistypes one
    fields.update(spam_reject="abc", pin_advice_hold="1")
    shown = refused_save(admin_client, sites["edited"], fields)
    assert ticked(shown) == {"spam_hold"}
    assert stored(sessions, sites["edited"]) == (None, None, None)


def test_saving_needs_the_csrf_token(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    fields = save_form(admin_client, sites["edited"], "?spam_reject=0.90&spam_hold=0.03&advice_hold=0.09")
    del fields["csrf_token"]
    response = admin_client.post(f"/dashboard/admin/sites/{sites['edited']}/thresholds", data=fields)
    assert response.status_code == 400
    assert stored(sessions, sites["edited"]) == (None, None, None)


def test_the_models_page_activates_a_version_whose_file_is_in_this_hosts_model_dir(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], settings: Settings
) -> None:
    """The registry remembers where the file was saved; the web host finds it by name in its MODEL_DIR."""
    saved = settings.var_dir.parent / "model-model-b.skops"
    model_dir = settings.effective_model_dir
    model_dir.mkdir(parents=True, exist_ok=True)
    saved.rename(model_dir / saved.name)
    token = csrf_token(admin_client, "/dashboard/admin/models")
    answer = admin_client.post("/dashboard/admin/models/model-b/activate", data={"csrf_token": token})
    assert answer.status_code == 302
    with sessions() as session:
        active = registry.active_version(session)
        assert active is not None and active.version == "model-b"


def test_activating_a_model_version_with_a_nul_in_its_name_says_there_is_no_such_version(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]]
) -> None:
    """The version in the URL went straight into a query, which PostgreSQL refuses with a NUL in it: a 500. No
    stored version holds one, and the page says so as for any version it does not know (a cold review's test)."""
    token = csrf_token(admin_client, "/dashboard/admin/models")
    answer = admin_client.post("/dashboard/admin/models/v%00x/activate", data={"csrf_token": token})
    assert answer.status_code == 302 and answer.headers["Location"] == "/dashboard/admin/models"
    assert "no model version &#39;v\\x00x&#39;" in admin_client.get("/dashboard/admin/models").get_data(as_text=True)
    with sessions() as session:
        active = registry.active_version(session)
        assert active is not None and active.version == "model-a"


def test_unticking_use_the_models_keeps_todays_value_against_the_next_model(
    admin_client: FlaskClient, sessions: Sessions, versions: dict[str, dict[str, Any]], sites: dict[str, int]
) -> None:
    fields = save_form(admin_client, sites["edited"])
    assert fields["follow_advice_hold"] == "1" and fields["pin_advice_hold"] == ""  # following the model
    del fields["follow_advice_hold"]  # the admin unticks the box and moves nothing
    fields["pin_advice_hold"] = "1"
    query = "?spam_reject=0.75&spam_hold=0.03&advice_hold=0.09&pin_advice_hold=1"
    assert preview(admin_client, sites["edited"], query).get_json()["own"]["advice_hold"] == 0.09
    save(admin_client, sites["edited"], fields)
    assert stored(sessions, sites["edited"]) == (None, None, MODEL_A["advice_hold"])

    activate(sessions, "model-b")
    assert sources(page(admin_client, sites["edited"]))["advice_hold"][0] == "0.09, the site's own"
