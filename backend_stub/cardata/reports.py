"""The owner's two CarData reports, as JSON-able dicts and as a readable page.

- Data report (the seed: "Zugang zu den aktuellsten Werten der wesentlichen Telematikdaten, die auf
  Servern ... zum Anfragezeitpunkt gespeichert sind"): per vehicle of the account, every last value
  the backend holds now, with the CarData keys it fills, and the account's consents.
- Transaction report ("wann die BMW Group auf Basis des Einverständnisses des Kunden Telematikdaten an
  Dritte übermittelt hat"): every transfer to a third party — who, when, which vehicle, which keys, by
  REST, stream or push — and a summary per client.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any

from backend_stub.cardata.catalogue import CardataCatalogue
from backend_stub.cardata.consents import CardataStore
from backend_stub.cardata.timestamps import iso_z
from backend_stub.store import BackendStore
from telematics_wire.strict_cbor import describe

__all__ = ["data_report", "report_page", "shown_value", "transaction_report"]

_MAX_SHOWN_CHARS = 200


def shown_value(value: object) -> bool | int | float | str | None:
    """A stored value as a report shows it: small scalars as they are, anything else described."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value.bit_length() <= 53:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= _MAX_SHOWN_CHARS:
        return value
    return describe(value, limit=_MAX_SHOWN_CHARS)


def data_report(
    gcid: str, store: CardataStore, records: BackendStore, catalogue: CardataCatalogue, now: datetime
) -> dict[str, Any]:
    vehicles = []
    for vin in store.vehicles_of(gcid):
        link = store.owner_link(vin)
        values = [
            {
                "signal": stored.path,
                "cardataKeys": [entry.key for entry in catalogue.for_signal(stored.path)],
                "value": shown_value(stored.value),
                "timestamp": iso_z(stored.timestamp),
            }
            for stored in records.last_values(vin)
        ]
        vehicles.append(
            {
                "vin": vin,
                "mappedSince": None if link is None else iso_z(link[2]),
                "lastValues": values,
            }
        )
    consents = [
        {
            "vin": consent["vin"],
            "clientId": consent["client_id"],
            "client": _client_name(store, consent["client_id"]),
            "keys": consent["keys"],
            "granted": iso_z(consent["granted"]),
            "ended": None if consent["ended"] is None else iso_z(consent["ended"]),
        }
        for consent in store.consents_of(gcid)
    ]
    return {"gcid": gcid, "created": iso_z(now), "vehicles": vehicles, "consents": consents}


def transaction_report(gcid: str, store: CardataStore, now: datetime) -> dict[str, Any]:
    transfers = store.transfers(gcid)
    names: dict[str, str] = {}
    lines = []
    summary: dict[str, dict[str, Any]] = {}
    for transfer in transfers:
        name = names.setdefault(transfer.client_id, _client_name(store, transfer.client_id))
        lines.append(
            {
                "time": iso_z(transfer.at),
                "clientId": transfer.client_id,
                "client": name,
                "vin": transfer.vin,
                "channel": transfer.channel,
                "keys": sorted(transfer.keys),
            }
        )
        entry = summary.setdefault(
            transfer.client_id,
            {
                "clientId": transfer.client_id,
                "client": name,
                "transfers": 0,
                "first": iso_z(transfer.at),
                "keys": set(),
            },
        )
        entry["transfers"] += 1
        entry["last"] = iso_z(transfer.at)
        entry["keys"].update(transfer.keys)
    clients = [{**entry, "keys": sorted(entry["keys"])} for entry in summary.values()]
    return {"gcid": gcid, "created": iso_z(now), "clients": clients, "transfers": lines}


def _client_name(store: CardataStore, client_id: str) -> str:
    client = store.client(client_id)
    return "(client no longer registered)" if client is None else client.name


def report_page(title: str, report: dict[str, Any]) -> str:
    """A plain HTML page of a report: one table per list in it; every value escaped."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #999;padding:2px 6px;text-align:left;vertical-align:top}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
    ]
    for name, value in report.items():
        if isinstance(value, list):
            parts.append(f"<h2>{html.escape(name)}</h2>")
            parts.append(_table(value))
        else:
            parts.append(f"<p><b>{html.escape(name)}</b>: {html.escape(str(value))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _cell(value: object) -> str:
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return _table(value)
    if isinstance(value, list):
        return "<br>".join(html.escape(str(shown_value(item))) for item in value)
    return html.escape("" if value is None else str(shown_value(value)))


def _table(rows: list[Any]) -> str:
    if not rows:
        return "<p>(none)</p>"
    columns = list(dict.fromkeys(column for row in rows if isinstance(row, dict) for column in row))
    head = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(column))}</td>" for column in columns) + "</tr>"
        for row in rows
        if isinstance(row, dict)
    )
    return f"<table><tr>{head}</tr>{body}</table>"
