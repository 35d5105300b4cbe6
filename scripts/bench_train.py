"""Benchmark: Lightning fits of experiment=tutorial against a bare LightningModule, and processes.

Run: .venv/bin/python scripts/bench_train.py [--repeats 5] [--skip-processes] [--components]
         [--before REF]

Part 1 times the same 2500 optimizer steps (100 epochs x 25 minibatches of 128, Adam 1e-3,
nn.CrossEntropyLoss, the same tensors, the same batch order, the same initial weights), side by
side, repeat by repeat (so a slower spell of the machine hits all of them alike):
  * a plain PyTorch loop (the reference line),
  * a bare LightningModule: automatic optimization over the same in-memory DataLoader, no
    logger, no callbacks, no metrics,
  * the same module under Lightning's own default Trainer (TensorBoardLogger, ModelCheckpoint
    every epoch, ModelSummary; no progress bar): what Lightning's defaults cost, without and
    with the documentation's ``self.log`` of the training loss,
  * mlplab's fit with ``logger=none callbacks=none`` (target: within 1.1x of the bare module),
  * mlplab's default fit: TensorBoard, last.ckpt (every 5 s at an epoch's end, and after the
    last epoch), progress bar, model summary (target: within 1.35x of the bare module),
  * the default fit while one busy process competes for the CPU (target: within 1.5x of the
    idle default fit).
Every fit runs with the intra-op threads that ``threads=auto`` gives this network (one).
``--components`` adds one variant per default logger/callback alone (on top of mlplab's fit with
``logger=none callbacks=none``). Variants rotate: repeat r starts at variant r.
Part 2 times whole processes: `mlplab-train experiment=tutorial` against the tutorial's own
training cell (TensorDataset + DataLoader with 2 workers, re-implemented below); ``--before REF``
also times the process of git revision REF, alternating run by run (see ``benchlib``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from benchlib import console_command, export_revision


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mlplab.tasks.common import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=overrides, return_hydra_config=False)


def plain_loop(datamodule, seed: int) -> float:
    """The same steps in plain PyTorch: the reference."""
    from mlplab.data.datamodule import EpochRandomSampler
    from mlplab.models.mlp import MLP

    torch.manual_seed(seed)
    net = MLP("ReLU()", 2, [128], 4)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    X, y = datamodule.X_train, datamodule.y_train
    sampler = EpochRandomSampler(len(X), seed)
    started = time.perf_counter()
    for epoch in range(100):
        sampler.set_epoch(epoch)
        idx = sampler.permutation()
        for xb, yb in zip(X[idx].split(128), y[idx].split(128), strict=True):
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(net(xb), yb)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def bare_fit(seed: int, log_dir: Path | None = None, log_loss: bool = True) -> float:
    """A bare LightningModule on the same DataLoader: Lightning's own floor for this run.

    With ``log_dir``: the same module as Lightning's documentation writes it (``self.log`` of the
    training loss in ``training_step``) under the Trainer's defaults, each as Lightning makes it
    (TensorBoardLogger, ModelCheckpoint after every epoch, ModelSummary), without the progress
    bar and at mlplab's ``log_every_n_steps``: what a Lightning user pays anyway. With
    ``log_loss=False`` as well: what Lightning's default logger, checkpoint and summary cost alone.
    """
    import pytorch_lightning as pl

    from mlplab.data.datamodule import SpiralDataModule
    from mlplab.models.mlp import MLP

    class Bare(pl.LightningModule):
        def __init__(self, log_loss: bool) -> None:
            super().__init__()
            self.net = MLP("ReLU()", 2, [128], 4)
            self.loss = torch.nn.CrossEntropyLoss()
            self.log_loss = log_loss

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = self.loss(self.net(x), y)
            if self.log_loss:
                self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    pl.seed_everything(seed, verbose=False)
    model = Bare(log_dir is not None and log_loss)
    if log_dir is None:
        off = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False}
    else:
        off = {"default_root_dir": str(log_dir), "log_every_n_steps": 25}
    trainer = pl.Trainer(max_epochs=100, enable_progress_bar=False, deterministic=True, **off)
    started = time.perf_counter()
    trainer.fit(model, datamodule=SpiralDataModule(seed=seed))
    return time.perf_counter() - started


@contextlib.contextmanager
def busy_process() -> Iterator[None]:
    """One other process spinning on the CPU for the duration."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def lightning_fit(overrides: list[str], out: Path) -> tuple[float, float]:
    """trainer.fit of the configured objects; returns (seconds, final train loss)."""
    import hydra
    import pytorch_lightning as pl
    from omegaconf import open_dict

    from mlplab.tasks.runtime import build_callbacks, build_logger, build_trainer
    from mlplab.tasks.train import build_model

    cfg = compose(["experiment=tutorial", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = build_model(cfg)
    logger = build_logger(cfg.get("logger"))
    trainer = build_trainer(cfg.trainer, logger, build_callbacks(cfg.get("callbacks")))
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return time.perf_counter() - started, model.training_losses[-1]


TUTORIAL_SCRIPT = textwrap.dedent(
    """
    import random, numpy as np, torch, torch.nn as nn, torch.optim as optim
    from torch.utils.data import DataLoader, TensorDataset
    from mlplab.data.spiral import make_spiral, shuffle_split
    from mlplab.models.mlp import MLP
    def set_seed(seed):
        random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
    def seed_worker(worker_id):
        s = torch.initial_seed() % 2**32; np.random.seed(s); random.seed(s)
    set_seed(2021)
    X, y = make_spiral(4, 0.16, 1000)
    X_train, y_train, X_test, y_test = shuffle_split(X, y, 0.2, 2021)
    g = torch.Generator(); g.manual_seed(2021)
    test_loader = DataLoader(TensorDataset(X_test, y_test), batch_size=128, shuffle=False,
                             num_workers=2, worker_init_fn=seed_worker, generator=g)
    train_loader = DataLoader(TensorDataset(X_train, y_train), batch_size=128, shuffle=True,
                              num_workers=2, worker_init_fn=seed_worker, generator=g)
    set_seed(2021)
    net = MLP('ReLU()', 2, [128], 4)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for epoch in range(100):
        for inputs, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(net(inputs.float()), labels.long())
            loss.backward()
            optimizer.step()
    net.eval()
    def test(loader):
        correct = total = 0
        for inputs, labels in loader:
            _, predicted = torch.max(net(inputs.float()), 1)
            total += labels.size(0); correct += (predicted == labels).sum().item()
        return 100 * correct / total
    print(f"Accuracy on the {len(X_train)} training samples: {test(train_loader):0.2f}")
    print(f"Accuracy on the {len(X_test)} testing samples: {test(test_loader):0.2f}")
    """
)


def time_process(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{cmd} failed:\n{result.stderr[-2000:]}")
    return elapsed


def time_train(tmp: Path, run: str, revision: Path | None = None) -> float:
    """Wall time of one ``mlplab-train experiment=tutorial`` process (of ``revision`` if given)."""
    command, env = console_command("mlplab-train", revision)
    args = ["experiment=tutorial", f"paths.log_dir={tmp}/{run}"]
    return time_process([*command, *args], tmp, env)


DEFAULT = "mlplab default fit (TensorBoard, last.ckpt/5 s, progress bar, summary)"
QUIET = "mlplab fit, logger=none callbacks=none"
CONTENDED = "mlplab default fit, one busy process competing"
BARE = "bare LightningModule (no logger, callbacks, metrics)"
PLAIN = "plain PyTorch loop (reference)"
LIGHTNING = "bare LightningModule + self.log(loss), Lightning's default logger, checkpoint, summary"
DEFAULTS = "bare LightningModule, Lightning's default logger, checkpoint, summary (no self.log)"


def fit_of(overrides: list[str], tmp: str) -> Callable[[str], float]:
    """A timed mlplab fit with ``overrides``, writing under ``tmp/<run>``."""
    return lambda run: lightning_fit(overrides, Path(tmp) / run)[0]


def contended_fit(tmp: str) -> Callable[[str], float]:
    """The default fit, timed while one busy process competes for the CPU."""

    def run(name: str) -> float:
        with busy_process():
            return lightning_fit([], Path(tmp) / f"busy-{name}")[0]

    return run


def time_fits(repeats: int, components: bool) -> None:
    """Part 1: the fit variants and the plain loop, interleaved, as a Markdown table."""
    import hydra
    from omegaconf import open_dict

    from mlplab.tasks.runtime import count_parameters, set_torch_threads
    from mlplab.tasks.train import build_model

    cfg = compose(["experiment=tutorial"])
    with open_dict(cfg):  # build_model reads the trainer's settings, which name the run folder
        cfg.paths.output_dir = tempfile.gettempdir()
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup()
    threads = set_torch_threads(cfg.threads, count_parameters(build_model(cfg)))
    variants: dict[str, list[str]] = {DEFAULT: [], QUIET: ["logger=none", "callbacks=none"]}
    if components:
        alone = {"TensorBoard logger": ["callbacks=none"]}
        everything = ["model_checkpoint", "rich_progress_bar", "model_summary"]
        for name in everything:
            others = [f"~callbacks.{other}" for other in everything if other != name]
            alone[name.replace("_", " ")] = ["logger=none", *others]
        variants.update({f"mlplab fit + {name} alone": o for name, o in alone.items()})
    times: dict[str, list[float]] = {PLAIN: [], BARE: [], DEFAULTS: [], LIGHTNING: []}
    times.update({k: [] for k in variants})
    times[CONTENDED] = []
    with tempfile.TemporaryDirectory() as tmp:
        runs: list[tuple[str, Callable[[str], float]]] = [
            (PLAIN, lambda _: plain_loop(datamodule, cfg.seed)),
            (BARE, lambda _: bare_fit(cfg.seed)),
            (DEFAULTS, lambda run: bare_fit(cfg.seed, Path(tmp) / f"defaults-{run}", False)),
            (LIGHTNING, lambda run: bare_fit(cfg.seed, Path(tmp) / f"lightning-{run}")),
            *[(name, fit_of(overrides, tmp)) for name, overrides in variants.items()],
            (CONTENDED, contended_fit(tmp)),
        ]
        lightning_fit([], Path(tmp) / "warm-up")  # first-call costs (imports, caches), untimed
        for r in range(repeats):
            # Each repeat starts one variant later, so that none always follows the same one
            # (a fit leaves garbage and threads behind); a collection before each levels it.
            for name, run in runs[r % len(runs) :] + runs[: r % len(runs)]:
                gc.collect()
                times[name].append(run(f"{r}-{len(times[name])}"))
    print(f"\n### Fit of experiment=tutorial (2500 steps, {threads} thread), {repeats} repeats\n")
    print_table(times)


def print_table(times: dict[str, list[float]]) -> None:
    """Each variant's fastest and median time and their ratios to the bare module's, as Markdown.

    The fastest repeat is the cost of the code itself: as Python's ``timeit`` documentation puts
    it, higher values are typically caused by other processes interfering, not by the code. On
    a shared virtual machine one variant's repeats can differ by half, and a ratio of medians
    moves by 0.1-0.2 from run to run (once the contended fit's median came out faster than the
    idle one's), so both are shown; the targets are read on the fastest repeats.
    """
    fastest = {name: min(values) for name, values in times.items()}
    medians = {name: statistics.median(values) for name, values in times.items()}
    header = "fit | fastest (s) | median (s) | slowest (s) | vs bare, fastest | vs bare, median"
    print(f"| {header} | target |")
    print("|---|---:|---:|---:|---:|---:|---|")
    targets = {QUIET: "<= 1.1x", DEFAULT: "<= 1.35x"}
    for name, values in times.items():
        ratios = f"{fastest[name] / fastest[BARE]:.2f}x | {medians[name] / medians[BARE]:.2f}x"
        if name == CONTENDED:
            ratio = fastest[name] / fastest[DEFAULT]
            target = f"{ratio:.2f}x the idle default fit's fastest (<= 1.5x)"
        else:
            target = targets.get(name, "")
        row = f"{fastest[name]:.2f} | {medians[name]:.2f} | {max(values):.2f}"
        print(f"| {name} | {row} | {ratios} | {target} |")
    for name in (DEFAULTS, LIGHTNING):
        ratio = fastest[DEFAULT] / fastest[name]
        print(f"\nmlplab's default fit / {name}: {ratio:.2f}x (fastest repeats)")


def time_processes(repeats: int, before_ref: str | None) -> None:
    """Part 2: whole processes, as a Markdown table."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "tutorial_loop.py"
        script.write_text(TUTORIAL_SCRIPT)
        tutorial = time_process([sys.executable, str(script)], Path(tmp))
        before = export_revision(before_ref, Path(tmp) / "before") if before_ref else None
        ours, theirs = [], []
        for r in range(repeats):  # alternating, so a slow spell hits both
            if before is not None:
                theirs.append(time_train(Path(tmp), f"before{r}", before))
            ours.append(time_train(Path(tmp), f"now{r}"))
    print("\n### Whole process, experiment=tutorial\n")
    print("| process | wall time (s) | speed-up |")
    print("|---|---:|---:|")
    print(f"| tutorial loop (DataLoader, 2 workers) | {tutorial:.1f} | 1.0x |")
    rows = [
        (f"mlplab-train experiment=tutorial at {before_ref}", theirs),
        ("mlplab-train experiment=tutorial", ours),
    ]
    for name, values in rows:
        if values:
            median = statistics.median(values)
            print(f"| {name} | {median:.2f} | {tutorial / median:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-fit", action="store_true", help="only time whole processes")
    parser.add_argument("--skip-processes", action="store_true")
    parser.add_argument("--components", action="store_true", help="time each default alone")
    parser.add_argument("--before", metavar="REF", help="also time the process of git revision REF")
    args = parser.parse_args()
    if not args.skip_fit:
        time_fits(args.repeats, args.components)
    if not args.skip_processes:
        time_processes(args.repeats, args.before)


if __name__ == "__main__":
    main()
