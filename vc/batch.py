"""The batch driver behind `vc-batch`: plan the jobs, run them in one process or a pool of worker
processes (one model each; Ctrl-C and SIGTERM leave no half-written output), report progress and failures.
The conversion itself is `vc.conversion.convert_file`."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from vc.audio import AUDIO_EXTENSIONS, AudioError
from vc.conversion import convert_file, resolve_request
from vc.model import load_model
from vc.settings import ConversionSettings
from vc.speakers import SpeakerError


class BatchError(ValueError):
    """A batch run that must not start (e.g. output folder inside the input folder)."""


@dataclass
class BatchSummary:
    files: int = 0           # found
    converted: int = 0
    skipped: int = 0         # outputs already present
    failed: list = field(default_factory=list)  # (relative path, reason)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    worker_pids: set = field(default_factory=set)  # the processes that converted files

    @property
    def x_realtime(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def text(self) -> str:
        rtf = self.wall_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0
        return (f"{self.files} file(s): {self.converted} converted, {self.skipped} skipped (output exists), "
                f"{len(self.failed)} failed; {self.audio_seconds:.1f} s of audio in {self.wall_seconds:.1f} s "
                f"(real-time factor {rtf:.3f}, {self.x_realtime:.1f}x real time)")


def check_batch_dirs(in_dir, out_dir) -> tuple[Path, Path]:
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise BatchError(f"{in_dir}: input folder not found")
    in_real, out_real = in_dir.resolve(), out_dir.resolve()
    if out_real == in_real:
        raise BatchError(f"{out_dir}: output folder is the input folder; choose another")
    if in_real in out_real.parents:
        raise BatchError(f"{out_dir}: output folder is inside the input folder {in_dir}; choose another")
    if out_dir.exists() and not out_dir.is_dir():
        raise BatchError(f"{out_dir}: exists and is not a folder")
    return in_dir, out_dir


_TEMP_NAME = re.compile(r"^\..+\.wav\.[A-Za-z0-9_]{8}\.part$")  # vc.audio.write_wav's temporary files


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete temporary files a killed run (SIGKILL, power loss) left behind; returns how many."""
    removed = 0
    if out_dir.is_dir():
        for root, _, files in os.walk(out_dir):
            for name in files:
                if _TEMP_NAME.match(name):
                    try:
                        os.unlink(os.path.join(root, name))
                        removed += 1
                    except FileNotFoundError:
                        pass
    return removed


def plan_batch(in_dir: Path, out_dir: Path) -> tuple[list[tuple[Path, Path, str]], list]:
    """-> [(input, output, relative name)], [(relative name, reason)] for inputs whose output names collide."""
    jobs, clashes, seen = [], [], {}
    in_real = in_dir.resolve()
    # Only possible when in_dir lies inside out_dir: an output path that is itself an input.
    check_inputs = in_real.is_relative_to(out_dir.resolve())
    for root, dirs, files in os.walk(in_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            src = Path(root) / name
            rel = src.relative_to(in_dir)
            out_rel = rel.with_suffix(".wav")
            if out_rel in seen:
                clashes.append((str(rel), f"output {out_rel} would also be written from {seen[out_rel]}"))
                continue
            if check_inputs and (out_dir / out_rel).resolve().is_relative_to(in_real):
                clashes.append((str(rel), f"output {out_dir / out_rel} would be inside the input folder"))
                continue
            seen[out_rel] = rel
            jobs.append((src, out_dir / out_rel, str(rel)))
    return jobs, clashes


# Worker state: one model per process, loaded once.
_worker: dict = {}
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_CAN_BLOCK_SIGNALS = hasattr(signal, "pthread_sigmask")   # not on Windows


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def _numpy_single_threaded():
    """numpy's BLAS gets one thread while files convert: the conversion's matrix products are small and
    ONNX Runtime has the cores. BLAS threads on top of it made 2 jobs slower than 1 (tools/bench_batch.py:
    61x against 65x real time; with one BLAS thread 129x against 68x)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _worker_init(model_dir, device, threads, target, settings, out_sr):
    # Ctrl-C goes to the whole process group: the parent alone decides, then stops the workers with
    # SIGTERM, which becomes SystemExit here so a half-written temporary file is removed on the way out.
    # Both signals were blocked across the fork (_start_worker) so none arrives before these handlers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_exit)
    if _CAN_BLOCK_SIGNALS:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _worker["blas_limit"] = _numpy_single_threaded()   # kept for the worker's life
    _worker["model"] = load_model(model_dir, device=device, threads=threads)
    _worker.update(target=target, settings=settings, out_sr=out_sr)


def _worker_main(conn, parent_end, initargs) -> None:
    """One worker process: convert the jobs that arrive on its own pipe until None (or the pipe closes)."""
    parent_end.close()   # a forked copy of the parent's end would keep this pipe open after the parent died
    _worker_init(*initargs)
    try:
        for job in iter(conn.recv, None):
            conn.send(_worker_convert(job))
    except EOFError:   # the parent has gone
        pass


def _worker_convert(job):
    """-> (relative name, seconds converted, error or None, warnings, process id): warnings (a truncated input) are
    returned, not printed, so that the parent reports them in order with the failures."""
    src, dst, rel = job
    w = _worker
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            seconds = convert_file(src, dst, w["target"], w["model"], settings=w["settings"], out_sr=w["out_sr"])
            error = None
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch; it is reported
            seconds, error = 0.0, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not isinstance(exc, (AudioError, SpeakerError, ValueError, OSError)):
                error = f"{type(exc).__name__}: {error}"
    return rel, seconds, error, [str(warning.message) for warning in caught], os.getpid()


def _size_or_zero(job) -> int:
    try:
        return job[0].stat().st_size
    except OSError:
        return 0   # the worker reports the problem with this file


def _output_identity(path: Path):
    """-> (inode, modification time) of an output, or None: a file renamed into place has a new inode."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _seconds_or_zero(path: Path) -> float:
    import soundfile as sf

    try:
        return sf.info(str(path)).duration
    except (OSError, RuntimeError):
        return 0.0


def default_threads_per_job(jobs: int) -> int:
    from vc.model import default_threads

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(default_threads(), cores // max(1, jobs)))


def _check_settings(jobs: int, out_sr: int | None, settings, knobs) -> ConversionSettings:
    if jobs < 1:
        raise BatchError(f"--jobs must be at least 1, not {jobs}")
    if out_sr is not None and out_sr <= 0:
        raise BatchError(f"--sr must be positive, not {out_sr}")
    try:
        return ConversionSettings.of(settings, **knobs)
    except ValueError as exc:
        raise BatchError(f"--{str(exc).replace('_', '-')}") from None


def _start_worker(ctx, initargs, processes: list):
    """-> the parent's end of a new worker's pipe; the process joins `processes` before a Ctrl-C can arrive.
    Each worker has a pipe of its own, so no lock is shared between processes and an interrupted batch can
    always stop its workers (a shared task queue's lock, held by a worker waiting for work, once left a
    Ctrl-C waiting forever)."""
    parent_end, child_end = ctx.Pipe()
    process = ctx.Process(target=_worker_main, args=(child_end, parent_end, initargs), daemon=True)
    if _CAN_BLOCK_SIGNALS:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        process.start()
        processes.append(process)
        child_end.close()
    finally:
        if _CAN_BLOCK_SIGNALS:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return parent_end


def _stop_workers(processes, *, grace: float = 10.0) -> None:
    """SIGTERM (each worker removes its temporary file and leaves), then SIGKILL for any still there after
    grace seconds (its temporary file is removed by the next run: remove_stale_temporaries)."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()


def _run_pool(todo, jobs: int, initargs, record) -> None:
    from multiprocessing.connection import wait

    # Longest files first: the last busy worker then finishes a short file while the others idle.
    waiting = sorted(todo, key=_size_or_zero)   # popped from the end
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    in_hand = {}   # pipe -> (process, the job it is converting, its output's identity before)
    processes = []

    def lost(process, job, output_before):
        """The worker died (killed, out of memory): its file fails and the rest go on, unless it died between
        writing the file (whole: outputs are renamed into place) and reporting it."""
        process.join()
        if _output_identity(job[1]) not in (None, output_before):
            record((job[2], _seconds_or_zero(job[1]), None, [], process.pid))
        else:
            record((job[2], 0.0, f"worker process ended (exit code {process.exitcode})", [], process.pid))

    def hand_out(conn, process):
        job = waiting.pop() if waiting else None
        output_before = None if job is None else _output_identity(job[1])
        try:
            conn.send(job)
        except OSError:
            if job is not None:
                lost(process, job, output_before)
            return
        if job is not None:
            in_hand[conn] = (process, job, output_before)

    try:
        for _ in range(min(jobs, len(waiting))):
            conn = _start_worker(ctx, initargs, processes)
            hand_out(conn, processes[-1])
        while in_hand:
            for conn in wait(list(in_hand)):
                process, job, output_before = in_hand.pop(conn)
                try:
                    result = conn.recv()
                except (EOFError, OSError):   # OSError: reset, when it died with our job unread
                    lost(process, job, output_before)
                    continue
                record(result)
                hand_out(conn, process)
        for job in reversed(waiting):   # only when every worker has died
            record((job[2], 0.0, "no worker process left", [], os.getpid()))
        for process in processes:   # each was sent None and leaves on its own
            process.join(30.0)
    except BaseException:
        _stop_workers(processes)
        raise
    _stop_workers(processes)   # only a worker that hung on its way out is still there


def batch_convert(in_dir, out_dir, target, *, model_dir=None, settings: ConversionSettings | None = None,
                  jobs: int = 1, overwrite: bool = False, out_sr: int | None = None, device: str = "auto",
                  threads: int | None = None, progress: bool = True, log=None, describe=None,
                  **knobs) -> BatchSummary:
    """Convert every audio file under in_dir into out_dir (same relative paths, .wav).

    settings and knobs: as `vc.convert` takes them (strength=, n_iter=, harmonics=, ...).
    Existing outputs are skipped unless overwrite; one bad file is reported and the rest go on.
    `log(line)` receives one line per failure or warning and `describe(line)` the model/provider line
    (default: nothing; the CLI prints them).
    """
    from tqdm import tqdm

    settings = _check_settings(jobs, out_sr, settings, knobs)
    in_dir, out_dir = check_batch_dirs(in_dir, out_dir)
    threads = threads or default_threads_per_job(jobs)
    # Validate model and target before any work; the workers load their own copies.
    model = load_model(model_dir, device=device, threads=threads)
    settings, target, _ = resolve_request(model, target, None, settings, {})
    if describe is not None:
        describe(model.describe() + (f", {jobs} jobs" if jobs > 1 else ""))

    remove_stale_temporaries(out_dir)
    planned, clashes = plan_batch(in_dir, out_dir)
    summary = BatchSummary(files=len(planned) + len(clashes))
    summary.failed.extend(clashes)
    todo = [job for job in planned if overwrite or not job[1].exists()]
    summary.skipped = len(planned) - len(todo)
    log = log or (lambda line: None)
    for rel, reason in clashes:
        log(f"FAILED {rel}: {reason}")

    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="file", disable=not progress or not todo, dynamic_ncols=True)

    def record(result):
        rel, seconds, error, notes, pid = result
        summary.worker_pids.add(pid)
        for note in notes:
            log(f"warning: {note}")
        if error is None:
            summary.converted += 1
            summary.audio_seconds += seconds
        else:
            summary.failed.append((rel, error))
            log(f"FAILED {rel}: {error}")
        bar.update(1)

    try:
        if jobs == 1 or len(todo) <= 1:
            _worker.update(model=model, target=target, settings=settings, out_sr=out_sr)
            with _numpy_single_threaded():
                for job in todo:
                    record(_worker_convert(job))
        else:
            model_dir = model.model_dir
            # The parent's sessions are dropped before forking so no ONNX Runtime threads exist at fork.
            del model
            _worker.clear()
            _run_pool(todo, jobs, (model_dir, device, threads, target, settings, out_sr), record)
    finally:
        bar.close()
        _worker.clear()
        summary.wall_seconds = time.perf_counter() - start
    return summary
