"""users.email: every stored address in its normal form (trimmed, lower case, NFC)

Revision ID: 0023
Revises: 0022

Addresses are stored and compared in `auth/emails.normal_email`'s form, but those
stored before NFC was part of it may hold "é" as "e" plus a combining accent. Finding
them meant reading every account with an e-mail whenever an address outside ASCII
matched nothing as typed; rewritten here, an address is found by one indexed lookup
(`accounts.find_by_email`).

Two accounts whose addresses have one normal form (one stored NFC, one NFD, say) would
collide on the unique column: neither is changed, and a warning names them, for an
admin to give all but one another address (`farmhand users set-email`). Until then the
address signs in as the one stored in the normal form, if any; once all but one have
moved, the last is rewritten to the normal form (`accounts.settle_email_forms`). An
address whose normal
form is longer than the column holds is left too (and said).
Downgrading keeps the normal forms: every version reads them.
"""

import unicodedata
from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
import structlog
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = structlog.get_logger("farmhand.manager.db.migrate")

EMAIL_COLUMN_LENGTH = 320

users = sa.table(
    "users",
    sa.column("id", sa.Integer()),
    sa.column("name", sa.String()),
    sa.column("email", sa.String()),
)


def _normal_email(email: str) -> str:
    """The normal form this migration writes: trimmed, lower case, Unicode NFC, NFC last.

    A copy of `auth/emails.normal_email` as it was when this migration was written, not
    a call to it: a migration must do on every database what it did when it was
    written, and the app's normaliser may change later (another rule for addresses,
    say). Called live, 0023 would rewrite the addresses of a database upgraded after
    such a change to the later form, ahead of the migration that brings that change,
    which would then meet data it was not written for, and two databases at the same
    revision could hold different addresses. Do not change it to follow the app's."""
    return unicodedata.normalize("NFC", email.strip().lower())


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(users.c.id, users.c.name, users.c.email)
        .where(users.c.email.is_not(None))
        .order_by(users.c.id)
    ).all()
    holders: defaultdict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for account_id, name, email in rows:
        holders[_normal_email(email)].append((account_id, name, email))
    for address, accounts in holders.items():
        if all(email == address for _, _, email in accounts):
            continue
        if len(accounts) > 1:
            log.warning(
                "accounts hold one e-mail address written in different forms (case or "
                "Unicode): left as they are; give all but one of them another address "
                "(farmhand users set-email NAME ADDRESS)",
                account_ids=[account_id for account_id, _, _ in accounts],
                accounts=[name for _, name, _ in accounts],
            )
            continue
        ((account_id, name, _),) = accounts
        if len(address) > EMAIL_COLUMN_LENGTH:
            log.warning(
                "an account's e-mail address is longer than it may be in its normal form: "
                "left as it is; give the account another address",
                account_ids=[account_id],
                accounts=[name],
            )
            continue
        bind.execute(sa.update(users).where(users.c.id == account_id).values(email=address))


def downgrade() -> None:
    pass
