"""Jobs: what to run on an acquired slot, running it, and what became of it.

:class:`Job`, :class:`JobOptions` and :class:`JobResult` are frozen values;
:func:`run_job` runs one job on a slot through a connector, with its options,
streaming its log (masked) to a sink;
:func:`load_jobs` reads the TOML jobs file of ``fleetkit run``.
"""

from __future__ import annotations

from fleetkit.jobs._job import Job as Job
from fleetkit.jobs._job import JobResult as JobResult
from fleetkit.jobs._job import JobStatus as JobStatus
from fleetkit.jobs._job import Variable as Variable
from fleetkit.jobs._jobs_file import load_jobs as load_jobs
from fleetkit.jobs._jobs_file import parse_jobs as parse_jobs
from fleetkit.jobs._log import OUTPUT_LIMIT as OUTPUT_LIMIT
from fleetkit.jobs._log import FileLog as FileLog
from fleetkit.jobs._log import LogSink as LogSink
from fleetkit.jobs._log import MemoryLog as MemoryLog
from fleetkit.jobs._log import TeeLog as TeeLog
from fleetkit.jobs._mask import MASK as MASK
from fleetkit.jobs._mask import Masker as Masker
from fleetkit.jobs._options import JobOptions as JobOptions
from fleetkit.jobs._run import run_job as run_job
from fleetkit.jobs._slot import JobSlot as JobSlot
from fleetkit.jobs._slot import LosableSlot as LosableSlot

__all__ = [
    "MASK",
    "OUTPUT_LIMIT",
    "FileLog",
    "Job",
    "JobOptions",
    "JobResult",
    "JobSlot",
    "JobStatus",
    "LogSink",
    "LosableSlot",
    "Masker",
    "MemoryLog",
    "TeeLog",
    "Variable",
    "load_jobs",
    "parse_jobs",
    "run_job",
]
