"""Every option code of the terms' catalogue, its services per brand and each service's term.

The table below is the catalogue of the terms of service (`connecteddrive-terms.de.txt`,
"Servicebedingungen"), copied line by line from the seed, not from our data file: the test parses it
and checks option_codes.toml against it, both ways. One edit: the entry of 6FV (Online Entertainment)
is a paragraph with no term in brackets; it is checked on its own below.
"""

# ruff: noqa: E501 - the seed's lines, verbatim
from __future__ import annotations

import re

import pytest

from telematics_wire.catalogue import INTELLIGENT_ECALL, LEGAL_ECALL, TELESERVICES, Brand, Catalogue, EntryKind
from telematics_wire.errors import SpecError
from telematics_wire.terms import Term

SEED = """
BMW Assist (612)
- BMW; Concierge Services [Laufzeit 3 Monate/Laufzeit 3 Jahre]
- BMW; Kundenbetreuung [Laufzeit 3 Monate/Laufzeit 3 Jahre]
- BMW; Intelligenter Notruf [Laufzeit 3 Monate/Laufzeit 3 Jahre]
- BMW; Meine Info [Zeitlich unbegrenzt]
- BMW; Online-Streckenführung [Laufzeit 3 Jahre]
- BMW; Remote Services [Laufzeit 3 Monate/Laufzeit 3 Jahre]
- BMW; Real Time Traffic Information (RTTI) [Laufzeit 3 Jahre]
- BMW; Send to Car [Laufzeit 3 Jahre]
- BMW; Teleservices [Zeitlich unbegrenzt]
- BMW; V-Info [Laufzeit 3 Jahre]
Teleservices (6AE)
- BMW; BMW i; MINI; Anonyme Auswertung von Sensordaten und Nutzungsinformationen zur Qualitätsverbesserung und Produktentwicklung [Zeitlich unbegrenzt]
- BMW; BMW i; MINI; Teleservices [Zeitlich unbegrenzt]
- BMW; BMW i; MINI; BMW/MINI Pannenhilfe [Zeitlich unbegrenzt]
- BMW; Intelligente Instandhaltung [Zeitlich unbegrenzt]
- BMW; BMW Teleservice Unfallhilfe [Zeitlich unbegrenzt]
- BMW; Extendable Car Communications [Zeitlich unbegrenzt]
Smartphone Integration (6CP)
- BMW; BMW i; MINI; [Zeitlich unbegrenzt]
Drive Recorder (6DR)
- BMW; [Zeitlich unbegrenzt]
ConnectedDrive Services (6AK)
- BMW; BMW i; MINI; Lademanagement [Laufzeit 3 Jahre]
- BMW; BMW i; MINI; Kundenbetreuung [Zeitlich unbegrenzt]
- BMW; BMW i; MINI; Online-Sprachverarbeitung [Laufzeit 3 Jahre]
- BMW; BMW i; MINI; Meine Info [Zeitlich unbegrenzt]
- BMW; BMW i; MINI; Send to Car [Laufzeit 3 Jahre]
- BMW; BMW i; MINI; Online [Laufzeit 3 Jahre]
BMW/MINI eDrive Services (6AG)
- BMW; BMW i; MINI; BMW/MINI eDrive Services [BMW: Laufzeit 5 Jahre] [BMW i: Laufzeit 5 Jahre] [MINI: Laufzeit 3 Jahre]
- BMW; BMW i; Lademanagement [Laufzeit 3 Jahre]
Intelligenter Notruf (6AC)
- BMW; BMW i; MINI; [Zeitlich unbegrenzt]
Gesetzlicher Notruf (6AF)
- BMW; BMW i; MINI; [Zeitlich unbegrenzt]
Navigationskarten-Update
- BMW; BMW i; MINI; Automatisches Navigationskarten-Update over the Air [Laufzeit 3 Jahre]
- BMW; BMW i; MINI; USB Kartenupdate [Laufzeit 3 Jahre]
Online Entertainment (6FV)
Real Time Traffic Information (6AM)
- BMW; BMW i; MINI; Online-Streckenführung [Laufzeit 3 Jahre]
- BMW; BMW i; MINI; Real Time Traffic Information (RTTI) [Laufzeit 3 Jahre]
- BMW; BMW i; On-Street Parking Information [Laufzeit 3 Jahre]
- BMW; BMW i; ParkNow [Laufzeit 3 Jahre]
Concierge Services (6AN)
- BMW; BMW i; MINI; [Laufzeit 3 Jahre]
Lademanagement (6AP)
- BMW; BMW i; MINI; Lademanagement [Laufzeit 3 Jahre]
- BMW; BMW i; MINI; Remote Services [Zeitlich unbegrenzt]
- BMW; Remote 3D View [Laufzeit 3 Jahre]
WLAN Hotspot (6WD)
- BMW; [Zeitlich unbegrenzt]
Digital Key (enthalten in Komfortzugang) (322)
- BMW; Digital Key [Zeitlich unbegrenzt]
Live Cockpit (6U1)
- BMW; Anonyme Auswertung von Sensordaten und Nutzungsinformationen zur Qualitätsverbesserung und Produktentwicklung [Zeitlich unbegrenzt]
- BMW; Intelligenter Notruf [Zeitlich unbegrenzt]
- BMW; Gesetzlicher Notruf [Zeitlich unbegrenzt]
- BMW; Meine Info [Zeitlich unbegrenzt]
- BMW; Remote Software Upgrade [Zeitlich unbegrenzt]
- BMW; Send to Car [Laufzeit 3 Jahre]
- BMW; Intelligente Instandhaltung [Zeitlich unbegrenzt]
- BMW; Teleservices [Zeitlich unbegrenzt]
- BMW; BMW Teleservice Unfallhilfe [Zeitlich unbegrenzt]
- BMW; Online [Laufzeit 3 Jahre]
- BMW; Extendable Car Communications [Zeitlich unbegrenzt]
Live Cockpit Plus (6U2)
- BMW; Anonyme Auswertung von Sensordaten und Nutzungsinformationen zur Qualitätsverbesserung und Produktentwicklung [Zeitlich unbegrenzt]
- BMW; Intelligenter Notruf [Zeitlich unbegrenzt]
- BMW; Online-Sprachverarbeitung [Laufzeit 3 Jahre]
- BMW; Amazon Alexa Car Integration [Laufzeit 3 Jahre]
- BMW; Gesetzlicher Notruf [Zeitlich unbegrenzt]
- BMW; Meine Info [Zeitlich unbegrenzt]
- BMW; Automatisches Navigationskarten-Update over the Air [Laufzeit 3 Jahre]
- BMW; USB Kartenupdate [Laufzeit 3 Jahre]
- BMW; Remote Software Upgrade [Zeitlich unbegrenzt]
- BMW; Send to Car [Laufzeit 3 Jahre]
- BMW; Intelligente Instandhaltung [Zeitlich unbegrenzt]
- BMW; Teleservices [Zeitlich unbegrenzt]
- BMW; BMW Teleservice Unfallhilfe [Zeitlich unbegrenzt]
- BMW; Online [Laufzeit 3 Jahre]
- BMW; Extendable Car Communications [Zeitlich unbegrenzt]
Live Cockpit Professional (6U3)
- BMW; Anonyme Auswertung von Sensordaten und Nutzungsinformationen zur Qualitätsverbesserung und Produktentwicklung [Zeitlich unbegrenzt]
- BMW; Intelligenter Notruf [Zeitlich unbegrenzt]
- BMW; Online-Sprachverarbeitung [Laufzeit 3 Jahre]
- BMW; Amazon Alexa Car Integration [Laufzeit 3 Jahre]
- BMW; Gesetzlicher Notruf [Zeitlich unbegrenzt]
- BMW; Meine Info [Zeitlich unbegrenzt]
- BMW; Automatisches Navigationskarten-Update over the Air [Laufzeit 3 Jahre]
- BMW; USB Kartenupdate [Laufzeit 3 Jahre]
- BMW; Remote Software Upgrade [Zeitlich unbegrenzt]
- BMW; Send to Car [Laufzeit 3 Jahre]
- BMW; Intelligente Instandhaltung [Zeitlich unbegrenzt]
- BMW; Teleservices [Zeitlich unbegrenzt]
- BMW; BMW Teleservice Unfallhilfe [Zeitlich unbegrenzt]
- BMW; Online [Laufzeit 3 Jahre]
- BMW; Extendable Car Communications [Zeitlich unbegrenzt]
Connected Package (6C1)
- BMW; Concierge Services [Laufzeit 3 Jahre]
- BMW; Remote Services [Laufzeit 3 Jahre]
Connected Package Plus (6C2)
- BMW; Concierge Services [Laufzeit 3 Jahre]
- BMW; Online-Streckenführung [Laufzeit 3 Jahre]
- BMW; Remote Services [Laufzeit 3 Jahre]
- BMW; Real Time Traffic Information (RTTI) [Laufzeit 3 Jahre]
- BMW; Smartphone Integration [Zeitlich unbegrenzt]
Connected Package Professional LBS (6C4)
- BMW; Lademanagement [Laufzeit 3 Jahre]
- BMW; Concierge Services [Laufzeit 3 Jahre]
- BMW; Connected Music and BMW Music [Laufzeit 3 Jahre]
- BMW; On-Street Parking Information [Laufzeit 3 Jahre]
- BMW; Parkplatzassistent [Laufzeit 3 Jahre]
- BMW; ParkNow [Laufzeit 3 Jahre]
- BMW; Parkplatz-Informationen [Laufzeit 3 Jahre]
- BMW; Kundenbetreuung [Zeitlich unbegrenzt]
- BMW; BMW/MINI eDrive Services [Laufzeit 3 Jahre]
- BMW; In-Car Experience [Laufzeit 3 Jahre]
- BMW; Online-Streckenführung [Laufzeit 3 Jahre]
- BMW; Remote Services [Laufzeit 3 Jahre]
- BMW; Real Time Traffic Information (RTTI) [Laufzeit 3 Jahre]
- BMW; Smartphone Integration [Zeitlich unbegrenzt]
Connected Media (7GG)
- MINI; Meine Info [Zeitlich unbegrenzt]
- MINI; Remote Services [Zeitlich unbegrenzt]
- MINI; Online [Laufzeit 3 Jahre]
Connected Navigation (7GH)
- MINI; Meine Info [Zeitlich unbegrenzt]
- MINI; Online-Streckenführung [Laufzeit 3 Jahre]
- MINI; Remote Services [Zeitlich unbegrenzt]
- MINI; Real Time Traffic Information (RTTI) [Laufzeit 3 Jahre]
- MINI; Send to Car [Zeitlich unbegrenzt]
- MINI; Smartphone Integration [Zeitlich unbegrenzt]
- MINI; Online [Laufzeit 3 Jahre]
Connected Navigation Plus (7GK)
- MINI; Concierge Services [Laufzeit 3 Jahre]
- MINI; Amazon Alexa Car Integration [Laufzeit 3 Jahre]
- MINI; Meine Info [Zeitlich unbegrenzt]
- MINI; Online-Streckenführung [Laufzeit 3 Jahre]
- MINI; Remote Services [Zeitlich unbegrenzt]
- MINI; Real Time Traffic Information (RTTI) [Laufzeit 3 Jahre]
- MINI; Send to Car [Zeitlich unbegrenzt]
- MINI; Smartphone Integration [Zeitlich unbegrenzt]
- MINI; Online [Laufzeit 3 Jahre]
Radio MINI Visual Boost (6FP)
- MINI; Kundenbetreuung [Zeitlich unbegrenzt]
- MINI; Intelligenter Notruf [Zeitlich unbegrenzt]
- MINI; Gesetzlicher Notruf [Zeitlich unbegrenzt]
- MINI; Teleservices [Zeitlich unbegrenzt]
Navigation Plus System (6UM)
- MINI; Kundenbetreuung [Zeitlich unbegrenzt]
- MINI; Intelligenter Notruf [Zeitlich unbegrenzt]
- MINI; Online-Sprachverarbeitung [Laufzeit 3 Jahre]
- MINI; Gesetzlicher Notruf [Zeitlich unbegrenzt]
- MINI; Automatisches Navigationskarten-Update over the Air [Laufzeit 3 Jahre]
- MINI; USB Kartenupdate [Laufzeit 3 Jahre]
- MINI; Teleservices [Zeitlich unbegrenzt]
Connected Package (Store)
- BMW; Online-Sprachverarbeitung [Laufzeit 1 Jahr]
- BMW; Remote Services [Laufzeit 1 Jahr]
- BMW; Online [Laufzeit 1 Jahr]
Connected Package Plus (Store)
- BMW; Online-Sprachverarbeitung [Laufzeit 1 Jahr]
- BMW; USB Kartenupdate [Laufzeit 1 Jahr]
- BMW; Online-Streckenführung [Laufzeit 1 Jahr]
- BMW; Remote Services [Laufzeit 1 Jahr]
- BMW; Real Time Traffic Information (RTTI) [Laufzeit 1 Jahr]
- BMW; Online [Laufzeit 1 Jahr]
Connected Package Professional (Store)
- BMW; On-Street Parking Information [Laufzeit 1 Jahr]
- BMW; ParkNow [Laufzeit 1 Jahr]
- BMW; Online-Sprachverarbeitung [Laufzeit 1 Jahr]
- BMW; Automatisches Navigationskarten-Update over the Air [Laufzeit 1 Jahr]
- BMW; USB Kartenupdate [Laufzeit 1 Jahr]
- BMW; Online-Streckenführung [Laufzeit 1 Jahr]
- BMW; Remote Services [Laufzeit 1 Jahr]
- BMW; Real Time Traffic Information (RTTI) [Laufzeit 1 Jahr]
- BMW; Online [Laufzeit 1 Jahr]
Connected Package Excellence (Store)
- BMW; Concierge Services [Laufzeit 1 Jahr]
- BMW; On-Street Parking Information [Laufzeit 1 Jahr]
- BMW; ParkNow [Laufzeit 1 Jahr]
- BMW; Online-Sprachverarbeitung [Laufzeit 1 Jahr]
- BMW; Automatisches Navigationskarten-Update over the Air [Laufzeit 1 Jahr]
- BMW; USB Kartenupdate [Laufzeit 1 Jahr]
- BMW; Online-Streckenführung [Laufzeit 1 Jahr]
- BMW; Remote Services [Laufzeit 1 Jahr]
- BMW; Real Time Traffic Information (RTTI) [Laufzeit 1 Jahr]
- BMW; Online [Laufzeit 1 Jahr]
"""

# Entries the seed lists without an option code: our stable ids.
IDS = {
    "Navigationskarten-Update": "NAV-MAP-UPDATE",
    "Connected Package (Store)": "STORE-CONNECTED",
    "Connected Package Plus (Store)": "STORE-CONNECTED-PLUS",
    "Connected Package Professional (Store)": "STORE-CONNECTED-PROFESSIONAL",
    "Connected Package Excellence (Store)": "STORE-CONNECTED-EXCELLENCE",
}
CATALOGUE = Catalogue.load()
Listed = set[tuple[str, Brand, Term]]  # (service, brand, term)


def _seed() -> dict[str, tuple[str, Listed]]:
    """code -> (name, {(service, brand, term)}) as the seed lists them."""
    codes: dict[str, tuple[str, Listed]] = {}
    name = code = ""
    for line in SEED.strip().splitlines():
        if not line.startswith("- "):
            found = re.fullmatch(r"(.*) \(([0-9A-Z]{3})\)", line)
            code, name = (IDS[line], line.removesuffix(" (Store)")) if line in IDS else (found[2], found[1])  # type: ignore[index]
            codes[code] = (name, set())
            continue
        brands, rest = [], line[2:]
        while (head := re.match(r"(BMW i|BMW|MINI); ?", rest)) is not None:
            brands.append(Brand(head[1]))
            rest = rest[head.end() :]
        per_brand = re.findall(r"\[(BMW i|BMW|MINI): ([^\]]+)\]", rest)
        service = rest[: rest.index("[")].strip() or name
        if per_brand:  # "[BMW: Laufzeit 5 Jahre] [BMW i: ...] [MINI: ...]"
            listed = {(service, Brand(b), Term.of_label(t)) for b, t in per_brand}
        else:
            terms = re.fullmatch(r".*?\[([^\]]+)\]", rest)[1].split("/")  # type: ignore[index]
            listed = {(service, b, Term.of_label(t)) for b in brands for t in terms}
        codes[code][1].update(listed)
    return codes


SEEDED = _seed()


def _data(code: str) -> Listed:
    return {(s.name, b, t) for s in CATALOGUE.services[code].services for b in s.brands for t in s.terms}


def test_the_data_has_every_code_of_the_terms_and_no_other() -> None:
    assert len(SEEDED) == 30  # 25 option codes, the navigation map update, 4 store packages
    assert set(CATALOGUE.services) == set(SEEDED) | {"6FV"}


@pytest.mark.parametrize("code", sorted(SEEDED))
def test_each_code_has_exactly_the_services_brands_and_terms_the_terms_list(code: str) -> None:
    name, listed = SEEDED[code]
    if code == "6FV":  # no term in brackets: our reading of the paragraph, see below
        return
    assert CATALOGUE.services[code].name == name
    assert _data(code) == listed


def test_online_entertainment_is_bmw_and_bmw_i_with_a_one_year_subscription() -> None:
    entry = CATALOGUE.services["6FV"]
    assert entry.name == "Online Entertainment"
    [service] = entry.services
    assert (service.brands, service.terms) == ({Brand.BMW, Brand.BMW_I}, (Term.YEAR_1,))
    assert service.note is not None
    assert "12-month" in service.note


def test_the_codes_the_issue_names() -> None:
    assert "6NR" not in CATALOGUE.services  # invented: real-time traffic is 6AM
    assert CATALOGUE.services["6AM"].name == "Real Time Traffic Information"
    assert _data("6AP") == {  # "Lademanagement", with Remote Services and Remote 3D View in it
        *(("Lademanagement", b, Term.YEARS_2_PLUS_1) for b in Brand),
        *(("Remote Services", b, Term.UNLIMITED) for b in Brand),
        ("Remote 3D View", Brand.BMW, Term.YEARS_2_PLUS_1),
    }
    edrive = {(b, t) for s, b, t in _data("6AG") if s == "BMW/MINI eDrive Services"}
    assert edrive == {(Brand.BMW, Term.YEARS_5), (Brand.BMW_I, Term.YEARS_5), (Brand.MINI, Term.YEARS_2_PLUS_1)}
    assert (LEGAL_ECALL, TELESERVICES, INTELLIGENT_ECALL) == ("6AF", "6AE", "6AC")
    assert CATALOGUE.services[LEGAL_ECALL].legal


@pytest.mark.parametrize(
    ("code", "brand", "terms"),
    [
        # A code with fixed-term services is booked on one of their terms, never "unlimited": its
        # unlimited services (612 Teleservices, 6AP Remote Services) run unlimited anyway.
        ("612", Brand.BMW, (Term.YEARS_2_PLUS_1, Term.MONTHS_3)),
        ("612", Brand.MINI, ()),
        ("6AP", Brand.BMW, (Term.YEARS_2_PLUS_1,)),
        ("6AE", Brand.MINI, (Term.UNLIMITED,)),  # every service unlimited: booked unlimited
        ("6FP", Brand.MINI, (Term.UNLIMITED,)),
        ("6AG", Brand.MINI, (Term.YEARS_2_PLUS_1,)),
        ("6AG", Brand.BMW_I, (Term.YEARS_5, Term.YEARS_2_PLUS_1)),
        ("7GH", Brand.MINI, (Term.YEARS_2_PLUS_1,)),
        ("6U2", Brand.BMW, (Term.YEARS_2_PLUS_1,)),
        ("STORE-CONNECTED-EXCELLENCE", Brand.BMW, (Term.YEAR_1,)),
    ],
)
def test_the_terms_a_booking_may_have_per_code_and_brand(code: str, brand: Brand, terms: tuple[Term, ...]) -> None:
    assert CATALOGUE.services[code].terms_for(brand) == terms


def test_a_paid_package_booked_unlimited_is_refused_naming_the_terms_it_offers() -> None:
    for code in ("6AP", "612", "6U2"):
        refusal = CATALOGUE.booking_refusal(code, Term.UNLIMITED, brand=Brand.BMW, equipment=None)
        assert refusal is not None
        assert "not unlimited" in refusal
        assert "2+1y (Laufzeit 3 Jahre)" in refusal
        assert "its unlimited services run unlimited anyway" in refusal
    assert CATALOGUE.booking_refusal("6AC", Term.UNLIMITED, brand=Brand.BMW, equipment=None) is None


def _included(code: str, brand: Brand, booked: Term) -> dict[str, Term]:
    return {s.name: term for s, term in CATALOGUE.services[code].included_terms(brand, booked)}


def test_each_included_service_runs_on_the_booked_term_if_it_lists_it_else_on_its_own() -> None:
    assert _included("6AP", Brand.BMW, Term.YEARS_2_PLUS_1) == {
        "Lademanagement": Term.YEARS_2_PLUS_1,
        "Remote Services": Term.UNLIMITED,
        "Remote 3D View": Term.YEARS_2_PLUS_1,
    }
    bmw_assist = _included("612", Brand.BMW, Term.MONTHS_3)
    assert bmw_assist["Intelligenter Notruf"] is Term.MONTHS_3  # "[Laufzeit 3 Monate/Laufzeit 3 Jahre]"
    assert bmw_assist["Online-Streckenführung"] is Term.YEARS_2_PLUS_1  # lists only "Laufzeit 3 Jahre"
    assert bmw_assist["Teleservices"] is Term.UNLIMITED
    assert _included("6AG", Brand.BMW, Term.YEARS_5) == {
        "BMW/MINI eDrive Services": Term.YEARS_5,
        "Lademanagement": Term.YEARS_2_PLUS_1,
    }


def test_data_whose_service_term_a_booking_leaves_open_is_refused_at_load() -> None:
    codes = (
        '[codes.6AE]\nname = "x"\nservices = [\n'
        '  { service = "a", brands = ["BMW"], terms = ["Laufzeit 1 Jahr"] },\n'
        '  { service = "b", brands = ["BMW"], terms = ["Laufzeit 3 Monate", "Laufzeit 3 Jahre"] },\n]\n'
    )
    with pytest.raises(SpecError, match="booked 1y, it lists"):
        Catalogue.load("[services.6AE]\ncategories = []\n[categories]\n", codes)


def test_entries_without_an_option_code_are_not_equipment() -> None:
    kinds = {code: entry.kind for code, entry in CATALOGUE.services.items() if entry.kind is not EntryKind.OPTION}
    assert kinds == {
        "NAV-MAP-UPDATE": EntryKind.CODELESS,
        **{code: EntryKind.STORE for code in IDS.values() if code.startswith("STORE-")},
    }
    assert not any(CATALOGUE.services[code].equipment for code in kinds)


def test_every_code_has_its_data_categories_and_a_mismatch_is_refused() -> None:
    text = "[services.6AE]\ncategories = []\n[categories]\n"
    with pytest.raises(
        SpecError, match=r"must list the same codes; only in the first: \[\], only in the second: \['322'"
    ):
        Catalogue.load(text)


def test_a_term_not_of_the_terms_in_the_data_is_refused() -> None:
    codes = (
        '[codes.6AE]\nname = "Teleservices"\nservices = [{ service = "x", brands = ["BMW"], terms = ["3 Jahre"] }]\n'
    )
    with pytest.raises(SpecError, match="'3 Jahre' is not a term of the terms of service"):
        Catalogue.load("[services.6AE]\ncategories = []\n[categories]\n", codes)
