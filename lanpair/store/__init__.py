"""SQLite state: pairings, devices, the file index and the audit log, in one WAL database."""

from lanpair.store.database import MIGRATIONS, ConfirmOutcome, Store
from lanpair.store.files import FileQuery, FileStat, FileTable, Indexed

__all__ = [
    "MIGRATIONS",
    "ConfirmOutcome",
    "FileQuery",
    "FileStat",
    "FileTable",
    "Indexed",
    "Store",
]
