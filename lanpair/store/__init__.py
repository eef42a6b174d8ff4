"""SQLite state: pairings, devices, the file index and the audit log, in one WAL database."""

from lanpair.store.database import Store
from lanpair.store.files import FileQuery, FileStat, FileTable, Indexed
from lanpair.store.pairings import ConfirmOutcome, HandoffOutcome, PairingTable
from lanpair.store.schema import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "ConfirmOutcome",
    "FileQuery",
    "FileStat",
    "FileTable",
    "HandoffOutcome",
    "Indexed",
    "PairingTable",
    "Store",
]
