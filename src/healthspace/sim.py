"""In-process federation: the same analyses over local OMOP folders, no HTTP, no hub.

Each site folder is loaded into its own in-memory DuckDB through the regular ingest path, so
simulation sees exactly what a node would; ``local`` runs per site and ``combine`` merges,
round after round, as the hub would.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from healthspace.analyses import registry
from healthspace.analyses.base import Final, Linkage
from healthspace.analyses.execute import run_local
from healthspace.cdm.ingest import load_into
from healthspace.cdm.store import create_schema, has_table, open_store, state_path
from healthspace.core.clock import SystemClock
from healthspace.core.errors import InvalidInput, Refused
from healthspace.governance.consent import ConsentRecord, read_consent_csv
from healthspace.governance.consent_filter import ConsentFilter
from healthspace.governance.engine import (
    Approval,
    ApprovalStep,
    DecisionContext,
    Outcome,
    StudyRequest,
    decide,
)
from healthspace.governance.policy import (
    Level,
    Purpose,
    UsagePolicy,
    load_policy,
    release_params,
    secure_required,
    site_counts_released,
)
from healthspace.node import consent as node_consent
from healthspace.node.differencing import ReleaseGuard, ReleaseMemory, fingerprint
from healthspace.node.state import NodeState


@dataclass
class Site:
    """One simulated node: its CDM connection, its policy and its patients' consent."""

    con: duckdb.DuckDBPyConnection
    policy: UsagePolicy = field(default_factory=UsagePolicy)
    consent: list[ConsentRecord] = field(default_factory=list)
    # Opt-in differencing defence across a sequence of simulate() calls on this site, as a
    # node would apply it (see healthspace.node.differencing); None keeps no memory.
    releases: ReleaseMemory | None = None
    # The site's identity vault (person_id -> national id) from identity.csv, for PSI linkage.
    identities: dict[int, str] | None = None
    links: list[int] = field(default_factory=list)  # persons a membership PSI found shared
    # Per-record findings an analysis kept on the site (kind -> rows), as in a node's state.
    findings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def load_site(directory: Path) -> Site:
    """An in-memory CDM store loaded from one OMOP CSV folder, with the folder's
    ``policy.yaml`` (or ``policy.json``) and ``consent.csv`` when present; or, given a file,
    that node store itself (:func:`load_store_site`)."""
    directory = Path(directory)
    if directory.is_file():
        return load_store_site(directory)
    if not directory.is_dir():
        raise InvalidInput(f"site folder or store {directory} does not exist", field="site")
    con = duckdb.connect()
    create_schema(con)
    load_into(con, directory)
    site = Site(con)
    for name in ("policy.yaml", "policy.yml", "policy.json"):
        if (directory / name).exists():
            site.policy = load_policy(directory / name)
            break
    if (directory / "consent.csv").exists():
        site.consent = read_consent_csv(directory / "consent.csv")
    if (directory / "identity.csv").exists():
        rows = con.execute("SELECT CAST(person_id AS BIGINT), CAST(national_id AS VARCHAR) "
                           "FROM read_csv(?, header = true, all_varchar = true)",
                           [str(directory / "identity.csv")]).fetchall()
        site.identities = {int(pid): str(nid) for pid, nid in rows if nid}
    return site


def load_store_site(store: Path) -> Site:
    """A node's DuckDB store, opened read-only as the node opens it, with the usage policy,
    consent and identity vault of its state file when one lies beside it."""
    try:
        con = open_store(store, read_only=True)
    except InvalidInput as exc:  # the option is --site here
        raise InvalidInput(exc.message, field="site") from None
    if not has_table(con, "person"):
        con.close()
        raise InvalidInput(f"{store} is not a node store (no person table)", field="site")
    site = Site(con)
    state_file = state_path(store)
    if state_file.exists():
        state = NodeState.open(state_file)
        site.policy = state.policy()
        site.consent = node_consent.records(state)
        with sqlite3.connect(f"file:{state_file}?mode=ro", uri=True) as db:
            vault = db.execute("SELECT person_id, national_id FROM identity_vault").fetchall()
        site.identities = {int(pid): str(nid) for pid, nid in vault} or None
    return site


def _linkage(site: Site, secret: bytes, name: str = "") -> Linkage | None:
    """A site's vault and per-run secrets of its own (from the run's secret and the site's
    name), as a node lends them to record linkage."""
    if site.identities is None:
        return None
    vault = site.identities

    def national_ids(persons: Any) -> dict[int, str]:
        return {p: vault[p] for p in persons if p in vault}

    def study_secret(label: str) -> bytes:
        return hashlib.blake2b(f"{name}\x00{label}".encode(), key=secret,
                               digest_size=32).digest()

    return Linkage(national_ids, study_secret, site.links.extend)


def admit(site: Site, analysis: str, purpose: str, consumer: str = "simulation") -> str | None:
    """The node's policy check in simulation; returns the refusal reason or None.

    Approval steps are taken as granted (the researcher runs this on their own machine); every
    other rule — purpose, analysis, consumer lists, validity window — applies as on a node.
    """
    now = SystemClock().now()
    request = StudyRequest(analysis=analysis, purpose=purpose, consumer=consumer,
                           consumer_org=consumer, submitted_at=now)
    granted = [Approval(step=step, approved=True, by="simulation", at=now, ethics_ref="sim")
               for step in ApprovalStep]
    decision = decide(request, site.policy, DecisionContext(now=now, approvals=granted))
    if decision.outcome == Outcome.DENY:
        return "; ".join(r.message for r in decision.reasons)
    return None


def load_table_site(path: Path) -> Site:
    """An in-memory DuckDB holding one CSV as table ``analysis_data``, with a permissive policy.

    The policy admits every purpose at level L1 (auto approval): the researcher simulates on
    their own data; the node's disclosure checks in ``local`` still apply.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"table file {path} does not exist", field="table")
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE analysis_data AS SELECT * FROM read_csv_auto(?)", [str(path)])
    except duckdb.Error as exc:
        con.close()
        raise InvalidInput(f"cannot read {path}: {exc}", field="table") from None
    return Site(con, policy=UsagePolicy(level=Level.L1, allowed_purposes=list(Purpose)))


def _named_paths(values: list[str], option: str, shape: str) -> dict[str, Path]:
    """Parse repeated ``NAME=PATH`` options; errors name the option."""
    found: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise InvalidInput(f"expected {shape}, got {value!r}", field=option)
        if name in found:
            raise InvalidInput(f"site {name!r} given twice", field=option)
        found[name] = Path(path)
    if not found:
        raise InvalidInput(f"give at least one --{option} {shape}", field=option)
    return found


def parse_table_args(values: list[str]) -> dict[str, Path]:
    """Parse repeated ``--table NAME=FILE.csv`` options."""
    return _named_paths(values, "table", "NAME=FILE.csv")


def parse_site_args(values: list[str]) -> dict[str, Path]:
    """Parse repeated ``--site NAME=DIR`` (an OMOP CSV folder) or ``NAME=STORE`` options."""
    return _named_paths(values, "site", "NAME=DIR or NAME=STORE.duckdb")


def simulate(
    analysis: str,
    sites: Mapping[str, Site],
    *,
    params: dict[str, Any] | None = None,
    cohort: dict[str, Any] | None = None,
    min_cell_size: int = 10,
    purpose: str = "research",
    dataset: dict[str, Any] | None = None,
    on_round: Callable[[int], None] | None = None,
    secure: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``analysis`` over loaded sites as nodes would: policy check, consent, rounds.

    For a table analysis over OMOP sites, ``cohort`` and ``dataset`` build ``analysis_data``
    at each site first, as a node does. With ``secure`` (or a site policy that requires it)
    an analysis that supports secure aggregation masks its sums with real pairwise masks
    (fresh X25519 keys per run) and only their total is combined.
    """
    from healthspace.analyses.execute import check_inputs
    from healthspace.cohort.dataset import load_dataset
    from healthspace.cohort.models import load_cohort

    impl = registry.get(analysis)
    parsed = impl.parse_params(params)
    if cohort is not None:
        load_cohort(cohort)
    if dataset is not None:
        load_dataset(dataset)
    check_inputs(impl, cohort is not None, dataset is not None)
    impl.check_nodes(parsed, sorted(sites))
    refused = {name: why for name, site in sites.items()
               if (why := admit(site, analysis, purpose)) is not None}
    active = {name: site for name, site in sites.items() if name not in refused}
    # Consent is snapshotted once, at the first round, as a node does for a study.
    filters = {name: ConsentFilter.build(site.consent, site.policy.consent_default_tier, purpose)
               for name, site in active.items()}
    keys = {name: site.releases.next_key() for name, site in active.items()
            if site.releases is not None}
    secure = impl.secure and len(active) >= 2 and (
        secure or any(secure_required(site.policy) for site in active.values()))
    if secure:
        from healthspace.analyses.secure import combine_masked
    session = _SimSession(sorted(active)) if secure else None
    run_secret = os.urandom(32)  # each simulation run is its own study
    state: dict[str, Any] = {}
    round_input: dict[str, Any] | None = None
    for round_no in range(1, impl.max_rounds + 1):
        if on_round:
            on_round(round_no)
        partials: dict[str, dict[str, Any]] = {}
        guards: list[ReleaseGuard] = []
        for name, site in active.items():
            k = max(min_cell_size, site.policy.min_cell_size)
            guard = _guard(site, keys.get(name), round_no, k, cohort)
            guards += [guard] if guard is not None else []
            try:
                try:
                    site_params = release_params(site.policy, analysis, dict(params or {}))
                except ValueError as exc:
                    raise Refused(str(exc)) from None
                partials[name] = run_local(
                    site.con,
                    site=name,
                    analysis=analysis,
                    params=site_params,
                    cohort=cohort,
                    round_input=round_input,
                    min_cell_size=k,
                    purpose=purpose,
                    consent=filters[name],
                    dataset=dataset,
                    release_guard=guard,
                    masker=session.masker(name, round_no) if session else None,
                    release_site_counts=site_counts_released(site.policy),
                    linkage=_linkage(site, run_secret, name),
                    findings_sink=site.findings.__setitem__,
                ).partial
            except Refused as exc:
                raise Refused(f"site {name} refused round {round_no}: {exc.message}") from exc
        for guard in guards:  # every site answered: their exact counts are released
            guard.commit()
        if session is not None:
            outcome = combine_masked(impl, partials, parsed, state, round_no)
        else:
            outcome = impl.combine(partials, parsed, state, round_no)
        if on_progress is not None and outcome.progress is not None:
            on_progress(outcome.progress)
        if isinstance(outcome, Final):
            result = dict(outcome.result)
            if outcome.deliveries:  # every site is the researcher's own here
                result["delivered"] = outcome.deliveries
            if refused:
                result["refused"] = refused
            return result
        state, round_input = outcome.state, outcome.round_input
    raise InvalidInput(f"{analysis} did not finish within {impl.max_rounds} rounds")


class _SimSession:
    """Real secure aggregation in one process: fresh node and session keys per run."""

    def __init__(self, names: list[str]) -> None:
        import secrets

        from nacl.signing import SigningKey

        from healthspace.privacy.secagg import Participant

        self.session_id = f"sim-{secrets.token_hex(8)}"
        keys = {name: SigningKey.generate() for name in names}
        self.participants = {name: Participant(self.session_id, name, keys[name])
                             for name in names}
        roster = [p.announcement for p in self.participants.values()]
        registered = {name: key.verify_key.encode().hex() for name, key in keys.items()}
        for participant in self.participants.values():
            participant.accept_roster(roster, registered)

    def masker(self, name: str, round_no: int) -> Any:
        from healthspace.analyses.secure import pack

        def seal(summable: Any) -> dict[str, Any]:
            payload = self.participants[name].mask(round_no, summable.sums,
                                                   compact=summable.compact)
            return pack(summable, payload)

        return seal


def _guard(site: Site, key: tuple[int, int, int] | None, round_no: int, k: int,
           cohort: dict[str, Any] | None) -> ReleaseGuard | None:
    if site.releases is None or key is None or site.policy.differencing == "off":
        return None
    return ReleaseGuard(site.releases, "simulation", (key[0], round_no, key[2]), k,
                        fingerprint(cohort))


def simulate_tables(
    analysis: str, tables: Mapping[str, Path], **kwargs: Any
) -> dict[str, Any]:
    """Run ``analysis`` over CSV tables, one site each, loaded as ``analysis_data``."""
    loaded: dict[str, Site] = {}
    try:
        for name, path in tables.items():
            loaded[name] = load_table_site(path)
        return simulate(analysis, loaded, **kwargs)
    finally:
        for site in loaded.values():
            site.con.close()


def simulate_dirs(
    analysis: str, sites: Mapping[str, Path], **kwargs: Any
) -> dict[str, Any]:
    loaded = {name: load_site(path) for name, path in sites.items()}
    try:
        return simulate(analysis, loaded, **kwargs)
    finally:
        for site in loaded.values():
            site.con.close()
