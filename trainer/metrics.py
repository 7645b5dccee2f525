"""Run logging on rank 0: ``metrics.jsonl`` (one JSON object per logged optimizer step),
TensorBoard scalars, a console progress bar and, at the end, a PNG of the tanh gates over training."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

METRICS_NAME = "metrics.jsonl"
EVENTS_NAME = "events.jsonl"
GATES_PLOT_NAME = "gates.png"
TENSORBOARD_DIR = "tensorboard"


def gate_values(model: nn.Module) -> dict[str, float]:
    """tanh of every XATTN gate, keyed ``gate/<layer>/attn``, ``gate/<layer>/ff`` (and
    ``gate/<layer>/relative`` with the relative stream; layer = the LM layer the block runs
    before). Under FSDP this gathers: call it on every rank."""
    values: dict[str, float] = {}
    for name, param in model.named_parameters():
        parts = name.split(".")
        leaf = parts[-1]
        if leaf not in ("attn_gate", "ff_gate", "relative_gate"):
            continue
        layer = parts[-2] if len(parts) > 1 else "0"  # xattn.<layer>.attn_gate
        tensor = param.detach()
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        values[f"gate/{layer}/{leaf.removesuffix('_gate')}"] = float(torch.tanh(tensor.float()).mean())
    return values


class RunLogger:
    """Writes one step's metrics to metrics.jsonl, TensorBoard and the progress bar (rank 0 only)."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        start_step: int,
        max_steps: int,
        tensorboard: bool = True,
        progress: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_NAME
        truncate_metrics(self.path, start_step)  # a resumed run rewrites the steps after its checkpoint
        self.file = self.path.open("a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR), purge_step=start_step + 1)
        self.bar = None
        if progress:
            import sys

            from tqdm import tqdm

            # Under Ray (no terminal) every refresh becomes a log line: refresh every few seconds.
            interval = 0.1 if sys.stderr.isatty() else 5.0
            self.bar = tqdm(total=max_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                            mininterval=interval)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record the metrics of optimizer step ``step`` (1-based)."""
        record = {"step": step, **metrics}
        self.file.write(json.dumps(record, sort_keys=True) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
        if self.bar is not None:
            losses = " ".join(
                f"{k.split('/', 1)[1]}={v:.3f}" for k, v in metrics.items() if k.startswith("loss/")
            )
            self.bar.set_postfix_str(losses, refresh=False)

    def event(self, name: str, **fields: Any) -> None:
        """Append a run event (start of an attempt with its resume step, end) to events.jsonl."""
        with (self.run_dir / EVENTS_NAME).open("a") as handle:
            handle.write(json.dumps({"event": name, "time": time.time(), **fields}, sort_keys=True) + "\n")

    def flush(self) -> None:
        """Everything logged so far on disk (before the run folder is copied to object storage)."""
        self.file.flush()
        if self.writer is not None:
            self.writer.flush()

    def advance(self, steps: int = 1) -> None:
        """Move the progress bar."""
        if self.bar is not None:
            self.bar.update(steps)

    def close(self) -> None:
        """Flush and close everything."""
        self.file.close()
        if self.writer is not None:
            self.writer.close()
        if self.bar is not None:
            self.bar.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (an incomplete last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only records with step <= last_step (atomic rewrite)."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    tmp.replace(path)


def plot_gates(metrics_path: str | os.PathLike, out_path: str | os.PathLike) -> bool:
    """Plot every ``gate/*`` series of a metrics.jsonl against the step into a PNG; False when
    there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    keys = sorted({k for r in records for k in r if k.startswith("gate/")})
    if not keys:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for key in keys:
        steps = [r["step"] for r in records if key in r]
        values = [r[key] for r in records if key in r]
        layer, kind = key.split("/")[1:3]
        axis = axes[0] if kind == "attn" else axes[1]
        axis.plot(steps, values, label=f"layer {layer}")
    for axis, title in zip(axes, ("tanh(attn gate)", "tanh(ffn gate)")):
        axis.set_title(title)
        axis.set_xlabel("optimizer step")
        axis.axhline(0.0, color="grey", linewidth=0.5)
        axis.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return True


__all__ = ["EVENTS_NAME", "GATES_PLOT_NAME", "METRICS_NAME", "RunLogger", "gate_values", "plot_gates", "read_metrics"]
