"""Principals and their API tokens: creation, listing, revocation, and who a token belongs to.

Tokens are random (``mlops_`` + 32 bytes, URL-safe) and stored only as their sha256: a token is shown once,
when it is created. Plain sha256 suffices because tokens are high-entropy random strings, not passwords
(a slow hash would only slow every request). Every change is written to the audit log.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from mlops_common.auth import Principal, token_digest
from registry_proxy import audit
from registry_proxy.db import ApiToken, PrincipalRow
from registry_proxy.errors import BadRequest, Conflict, NotFound
from registry_proxy.settings import RegistrySettings

log = logging.getLogger(__name__)
TOKEN_PREFIX = "mlops_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# Principals the stack creates for itself, with the setting that holds each one's token.
BOOTSTRAP = (
    ("admin", "admin", "person", "registry_admin_token"),
    ("trainer", "trainer", "service", "registry_service_token"),
    ("alerting", "scientist", "service", "trainer_api_token"),
)
BOOTSTRAP_DESCRIPTION = "bootstrap: from the service's secret"
AUDIT_MODEL = ""  # audit rows about principals belong to no model


def _now() -> datetime:
    return datetime.now(UTC)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def principal_view(row: PrincipalRow) -> dict[str, Any]:
    return {"name": row.name, "role": row.role, "kind": row.kind, "created_at": _iso(row.created_at),
            "created_by": row.created_by, "disabled_at": _iso(row.disabled_at)}


def token_view(row: ApiToken) -> dict[str, Any]:
    return {"id": row.id, "prefix": row.prefix, "description": row.description, "created_at": _iso(row.created_at),
            "created_by": row.created_by, "expires_at": _iso(row.expires_at), "revoked_at": _iso(row.revoked_at),
            "revoked_by": row.revoked_by}


def lookup(session: Session, token: str) -> Principal | None:
    """The principal holding a valid (not revoked, not expired) token, unless the principal is disabled."""
    now, digest = _now(), token_digest(token)
    row = session.execute(
        select(PrincipalRow).join(ApiToken, ApiToken.principal_id == PrincipalRow.id)
        .where(ApiToken.token_sha256 == digest, ApiToken.revoked_at.is_(None),
               or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now), PrincipalRow.disabled_at.is_(None))
    ).scalar_one_or_none()
    if row is None:
        return None
    return Principal(name=row.name, role=row.role, kind=row.kind)


class LocalAuthenticator:
    """registry-proxy checks tokens against its own database (the other services ask it over HTTP)."""

    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def _lookup(self, token: str) -> Principal | None:
        with self.sessions() as session:
            return lookup(session, token)

    async def principal(self, token: str) -> Principal | None:
        return await run_in_threadpool(self._lookup, token)


@dataclass
class Identity:
    sessions: sessionmaker

    def _principal(self, session: Session, name: str) -> PrincipalRow:
        row = session.scalar(select(PrincipalRow).where(PrincipalRow.name == name))
        if row is None:
            raise NotFound(f"principal {name!r} not found")
        return row

    def create_principal(self, name: str, role: str, kind: str, actor: str) -> dict[str, Any]:
        if not NAME.match(name):
            raise BadRequest("name: letters, digits and . _ @ - only, at most 64 characters")
        with self.sessions() as session, session.begin():
            if session.scalar(select(PrincipalRow.id).where(PrincipalRow.name == name)) is not None:
                raise Conflict(f"principal {name!r} already exists")
            row = PrincipalRow(name=name, role=role, kind=kind, created_by=actor)
            session.add(row)
            session.flush()
            audit.record(session, actor=actor, action="principal.create", model=AUDIT_MODEL,
                         details={"principal": name, "role": role, "kind": kind})
            return principal_view(row)

    def list_principals(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            return [principal_view(r) for r in session.scalars(select(PrincipalRow).order_by(PrincipalRow.name))]

    def get_principal(self, name: str) -> dict[str, Any]:
        with self.sessions() as session:
            row = self._principal(session, name)
            tokens = session.scalars(select(ApiToken).where(ApiToken.principal_id == row.id)
                                     .order_by(ApiToken.id)).all()
            return {**principal_view(row), "tokens": [token_view(t) for t in tokens]}

    def disable_principal(self, name: str, actor: str) -> dict[str, Any]:
        with self.sessions() as session, session.begin():
            row = self._principal(session, name)
            if row.name == actor:
                raise Conflict("a principal cannot disable itself")
            if row.disabled_at is None:
                row.disabled_at = _now()
                for token in session.scalars(select(ApiToken).where(ApiToken.principal_id == row.id,
                                                                    ApiToken.revoked_at.is_(None))):
                    token.revoked_at, token.revoked_by = _now(), actor
                audit.record(session, actor=actor, action="principal.disable", model=AUDIT_MODEL,
                             details={"principal": name})
            return principal_view(row)

    def create_token(self, name: str, actor: str, description: str | None = None,
                     expires_at: datetime | None = None) -> dict[str, Any]:
        token = new_token()
        with self.sessions() as session, session.begin():
            row = self._principal(session, name)
            if row.disabled_at is not None:
                raise Conflict(f"principal {name!r} is disabled")
            record = self._add_token(session, row, token, actor, description, expires_at)
            audit.record(session, actor=actor, action="token.create", model=AUDIT_MODEL,
                         details={"principal": name, "token_id": record.id, "prefix": record.prefix,
                                  "expires_at": _iso(expires_at)})
            return {**token_view(record), "principal": name, "token": token}

    @staticmethod
    def _add_token(session: Session, principal: PrincipalRow, token: str, actor: str, description: str | None,
                   expires_at: datetime | None) -> ApiToken:
        record = ApiToken(principal_id=principal.id, token_sha256=token_digest(token), prefix=token[:10],
                          description=description, created_by=actor, expires_at=expires_at)
        session.add(record)
        session.flush()
        return record

    def revoke_token(self, name: str, token_id: int, actor: str) -> dict[str, Any]:
        with self.sessions() as session, session.begin():
            row = self._principal(session, name)
            record = session.get(ApiToken, token_id)
            if record is None or record.principal_id != row.id:
                raise NotFound(f"token {token_id} of principal {name!r} not found")
            if record.revoked_at is None:
                record.revoked_at, record.revoked_by = _now(), actor
                audit.record(session, actor=actor, action="token.revoke", model=AUDIT_MODEL,
                             details={"principal": name, "token_id": token_id, "prefix": record.prefix})
            return token_view(record)

    def bootstrap(self, settings: RegistrySettings) -> None:
        """Makes sure the stack's own principals exist and hold the tokens from the secrets: the first admin,
        the trainer service and the alerting service. A changed secret revokes the token it replaces."""
        with self.sessions() as session, session.begin():
            for name, role, kind, field in BOOTSTRAP:
                token = getattr(settings, field)
                if not token:
                    continue
                row = session.scalar(select(PrincipalRow).where(PrincipalRow.name == name))
                if row is None:
                    row = PrincipalRow(name=name, role=role, kind=kind, created_by="registry-proxy")
                    session.add(row)
                    session.flush()
                    audit.record(session, actor="registry-proxy", action="principal.create", model=AUDIT_MODEL,
                                 details={"principal": name, "role": role, "kind": kind, "bootstrap": True})
                digest = token_digest(token)
                current = session.scalars(select(ApiToken).where(ApiToken.principal_id == row.id,
                                                                 ApiToken.description == BOOTSTRAP_DESCRIPTION,
                                                                 ApiToken.revoked_at.is_(None))).all()
                if any(t.token_sha256 == digest for t in current):
                    continue
                for old in current:
                    old.revoked_at, old.revoked_by = _now(), "registry-proxy"
                if session.scalar(select(ApiToken.id).where(ApiToken.token_sha256 == digest)) is not None:
                    log.warning("the token of %s is already held by another principal: not added", name)
                    continue
                self._add_token(session, row, token, "registry-proxy", BOOTSTRAP_DESCRIPTION, None)
                log.info("principal %s (%s) holds the token from %s", name, role, field.upper())


def expiry(expires_in_days: float | None, expires_at: datetime | None) -> datetime | None:
    if expires_at is not None:
        return expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    if expires_in_days is not None:
        return _now() + timedelta(days=expires_in_days)
    return None
