"""Many MLPs of one shape trained as one network: weights stacked along a leading member axis.

PyTorch's model-ensembling recipe with batched matmuls: ``M`` members of the same shape and
activation are one module whose layer ``i`` holds ``[M, out, in]`` weights and ``[M, out]``
biases, so one forward, one backward and one optimizer step train them all. Every member computes
what it would alone (its own inputs, its own loss, its own gradient); only the order of a few
float sums inside the batched kernels differs (weights agree to about 1e-7 relative after an
epoch of the tutorial).

Optimizer parameter groups: members are stored in *blocks* of consecutive members, each block's
weights its own leaf tensors, so each block can be a parameter group with its own learning rate
and weight decay while the optimizer stays ``torch.optim``'s. Members with the same optimizer
settings share a block (an element-wise optimizer such as Adam updates every element on its own,
so stacking them changes nothing); a scan over K learning rates has K blocks.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim import Optimizer

from mlplab.models.losses import CrossEntropy
from mlplab.models.mlp import MLP

OptimizerFactory = Callable[[Iterable[Any]], Optimizer]

# torch.optim optimizers whose update of an element depends on that element's own gradient and
# state only: members stacked in one tensor are updated exactly as they would be alone. (LBFGS
# and optimizers with per-tensor norms would mix members.)
ELEMENTWISE_OPTIMIZERS = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.Adadelta,
)
# Activation modules that may act on a stacked [M, batch, units] tensor as on [batch, units]:
# element-wise, no parameters, no randomness (RReLU draws random slopes while training).
NOT_STACKABLE_ACTIVATIONS = (nn.PReLU, nn.RReLU)
# Activations whose gradient autograd computes from their output: applied in place on a stacked
# layer's output (which nothing else keeps), they save one [M, batch, units] tensor per layer.
IN_PLACE_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)


def stackable_activation(module: nn.Module) -> bool:
    """Whether an MLP activation module can act on stacked members unchanged."""
    has_state = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
    return not has_state and not isinstance(module, NOT_STACKABLE_ACTIVATIONS)


class BatchedLinear(torch.autograd.Function):
    """``y[m] = x[m] @ weight[m].T + bias[m]`` for every member ``m``, with fast batched matmuls.

    ``x [M, batch, in]``, ``weight [M, out, in]`` (nn.Linear's layout), ``bias [M, out]``.
    On a CPU a batched matmul whose result has a short last axis (``[batch, 4]`` logits, a
    ``[128, 2]`` weight gradient) runs several times slower than the one producing its
    transpose, so each product is computed in the orientation with the long last axis and
    small results are transposed afterwards. Autograd's own backward of ``baddbmm`` would pick
    the slow orientation for the output layer's weight gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        out_features, in_features = weight.shape[1], weight.shape[2]
        if out_features < in_features:  # y^T = W @ x^T, then transpose the small result
            y_t = torch.baddbmm(bias.unsqueeze(2), weight, x.transpose(1, 2))
            return y_t.transpose(1, 2).contiguous()
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        x, weight = ctx.saved_tensors
        out_features, in_features = weight.shape[1], weight.shape[2]
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        if out_features >= in_features:  # dW^T = x^T @ g has the long last axis
            grad_weight = torch.bmm(x.transpose(1, 2), grad).transpose(1, 2).contiguous()
        else:
            grad_weight = torch.bmm(grad.transpose(1, 2), x)
        return grad_x, grad_weight, grad.sum(dim=1)


class StackedMLP(nn.Module):
    """``M`` :class:`~mlplab.models.mlp.MLP` members of one shape, evaluated as one network.

    Args:
        members: MLPs with the same ``activation``, ``in_features``, ``hidden_units`` and
            ``out_features``; their current weights become the stacked weights (copied).
        blocks: Sizes of consecutive member blocks (each block's weights are separate leaf
            tensors, see the module docstring); default one block of all members.
        chunk_size: Members per forward chunk (None: all at once). On a CPU, chunks whose
            activations fit the core's cache run several times faster than one big batch whose
            [M, batch, units] activations spill to main memory; on a GPU leave it None.

    Shapes:
        input ``[M, batch, in_features]`` (any trailing shape is flattened, as in MLP), output
        ``[M, batch, out_features]``; member ``m`` sees only ``input[m]``.

    Raises:
        ValueError: members of different shapes or activations, an activation that is not
            element-wise and parameter-free, or blocks that do not add up to the members.
    """

    def __init__(
        self,
        members: Sequence[MLP],
        blocks: Sequence[int] | None = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if not members:
            raise ValueError("members is empty: a stack needs at least one MLP")
        first = members[0]
        config = first.config()
        for i, member in enumerate(members):
            if not isinstance(member, MLP) or member.config() != config:
                got = member.config() if isinstance(member, MLP) else type(member).__name__
                raise ValueError(f"member {i} is {got}, not an MLP like member 0: {config}")
        blocks = [len(members)] if blocks is None else [int(b) for b in blocks]
        if any(b < 1 for b in blocks) or sum(blocks) != len(members):
            raise ValueError(f"blocks={blocks} must be positive sizes adding up to {len(members)}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) < 1):
            raise ValueError(f"chunk_size={chunk_size!r} is invalid: it must be None or >= 1")
        self.member_config = config
        self.num_members = len(members)
        self.block_sizes = blocks
        self.chunk_size = chunk_size
        # The layer sequence of member 0: ("linear", module name) or ("act", module).
        self.layers: list[tuple[str, str]] = []
        self.activations = nn.ModuleDict()
        for name, module in first.mlp.named_children():
            if isinstance(module, nn.Linear):
                self.layers.append(("linear", name))
            elif stackable_activation(module):
                self.layers.append(("act", name))
                if isinstance(module, IN_PLACE_ACTIVATIONS):
                    module = copy.deepcopy(module)
                    module.inplace = True
                self.activations[name] = module
            else:
                raise ValueError(
                    f"activation {config['activation']!r} cannot be stacked: it has parameters "
                    "or draws random numbers"
                )
        self.linear_names = [name for kind, name in self.layers if kind == "linear"]
        # Weights as [members, out, in] (nn.Linear's layout), see BatchedLinear.
        self.blocks = nn.ModuleList()
        start = 0
        for size in blocks:
            block = nn.Module()
            block.weights = nn.ParameterList()
            block.biases = nn.ParameterList()
            chunk = members[start : start + size]
            for name in self.linear_names:
                linears = [getattr(m.mlp, name) for m in chunk]
                weight = torch.stack([lin.weight.detach() for lin in linears])
                bias = torch.stack([lin.bias.detach() for lin in linears])
                block.weights.append(nn.Parameter(weight))
                block.biases.append(nn.Parameter(bias))
            self.blocks.append(block)
            start += size
        self.block_of = [(k, j) for k, size in enumerate(blocks) for j in range(size)]

    def stacked_parameters(self) -> list[tuple[Tensor, Tensor]]:
        """``(weight [M, out, in], bias [M, out])`` per linear layer, all members in order."""
        if len(self.blocks) == 1:
            block = self.blocks[0]
            return list(zip(block.weights, block.biases, strict=True))
        return [
            (
                torch.cat([block.weights[i] for block in self.blocks]),
                torch.cat([block.biases[i] for block in self.blocks]),
            )
            for i in range(len(self.linear_names))
        ]

    def _forward(self, x: Tensor, params: list[tuple[Tensor, Tensor]]) -> Tensor:
        layer = 0
        for kind, name in self.layers:
            if kind == "linear":
                weight, bias = params[layer]
                x = BatchedLinear.apply(x, weight, bias)
                layer += 1
            else:
                x = self.activations[name](x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[M, batch, out_features]`` of every member on its own input ``x[m]``."""
        x = x.reshape(self.num_members, -1, self.member_config["in_features"])
        params = self.stacked_parameters()
        size = self.chunk_size
        if size is None or size >= self.num_members:
            return self._forward(x, params)
        pieces = zip(
            x.split(size),
            *(zip(w.split(size), b.split(size), strict=True) for w, b in params),
            strict=True,
        )
        return torch.cat([self._forward(xc, list(pc)) for xc, *pc in pieces])

    def member_tensors(self, m: int) -> list[tuple[Tensor, Tensor]]:
        """Member ``m``'s ``(weight [out, in], bias)`` per layer: views of the stacked leaves."""
        k, j = self.block_of[m]
        block = self.blocks[k]
        return [(w[j], b[j]) for w, b in zip(block.weights, block.biases, strict=True)]

    @torch.no_grad()
    def member_state_dict(self, m: int) -> dict[str, Tensor]:
        """Member ``m`` as an MLP state_dict (``mlp.Linear_0.weight``, ...), copied."""
        state = {}
        for name, (weight, bias) in zip(self.linear_names, self.member_tensors(m), strict=True):
            state[f"mlp.{name}.weight"] = weight.clone()
            state[f"mlp.{name}.bias"] = bias.clone()
        return state

    def member(self, m: int) -> MLP:
        """A standalone MLP with member ``m``'s current weights."""
        net = MLP(**self.member_config)
        net.load_state_dict(self.member_state_dict(m))
        return net


def _stacked_custom_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    # mlplab.models.losses.cross_entropy over the last two axes, one mean per member.
    x_of_labels = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    row_max = logits.amax(dim=-1, keepdim=True).detach()
    log_sum_exp = row_max.squeeze(-1) + torch.log(torch.exp(logits - row_max).sum(dim=-1))
    return (log_sum_exp - x_of_labels).mean(dim=-1)


def _stacked_torch_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    members, batch, classes = logits.shape
    losses = F.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1), reduction="none")
    return losses.view(members, batch).mean(dim=-1)


def _default_cross_entropy_loss(loss: nn.Module) -> bool:
    return (
        type(loss) is nn.CrossEntropyLoss
        and loss.weight is None
        and loss.reduction == "mean"
        and loss.label_smoothing == 0.0
    )


def stacked_loss(loss: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-member losses ``[M]`` from logits ``[M, batch, C]`` and labels ``[M, batch]``.

    The two cross-entropies of ``conf/loss`` (mlplab's ``CrossEntropy`` and a default
    ``nn.CrossEntropyLoss``) are computed for all members at once; any other loss
    ``loss(logits, labels) -> scalar`` is called member by member (exact, but one call each).
    """
    if type(loss) is CrossEntropy:
        return _stacked_custom_cross_entropy
    if _default_cross_entropy_loss(loss):
        return _stacked_torch_cross_entropy

    def per_member(logits: Tensor, labels: Tensor) -> Tensor:
        return torch.stack([loss(lg, lb) for lg, lb in zip(logits, labels, strict=True)])

    return per_member


def optimizer_settings(factory: OptimizerFactory) -> tuple[type, dict[str, Any]]:
    """``(optimizer class, keyword arguments)`` of a ``functools.partial`` optimizer factory.

    Raises:
        ValueError: for a factory that is not a partial of an element-wise torch.optim optimizer.
    """
    if not isinstance(factory, functools.partial) or factory.args:
        raise ValueError(
            f"optimizer={factory!r} is invalid: stacking needs functools.partial(<torch.optim "
            "class>, **settings), as Hydra builds it with _partial_: true"
        )
    cls = factory.func
    if not (isinstance(cls, type) and issubclass(cls, ELEMENTWISE_OPTIMIZERS)):
        allowed = ", ".join(c.__name__ for c in ELEMENTWISE_OPTIMIZERS)
        raise ValueError(
            f"optimizer {getattr(cls, '__name__', cls)!r} cannot be stacked: its update is not "
            f"element-wise (stackable: {allowed})"
        )
    return cls, dict(factory.keywords)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(_plain(a[k]) == _plain(b[k]) for k in a)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


class StackMismatchError(ValueError):
    """A checkpoint being loaded was not saved by a stack of these members."""


class StackedClassifier(pl.LightningModule):
    """Train ``M`` MLP classifiers as one stacked LightningModule (automatic optimization).

    A batch is ``(x [M, batch, in_features], y [M, batch])``, member ``m``'s minibatch in
    ``x[m]``; ``training_step`` returns the sum over members of each member's mean loss, so each
    member's gradient is its own single-run gradient, and Lightning steps the optimizer once for
    all. The optimizer has one parameter group per block of consecutive members with the same
    optimizer settings (see :class:`StackedMLP`).

    Per-member records (``M`` columns, no per-member ``self.log``): the loss and accuracy of every
    step, each epoch's training loss and accuracy, and each validation's loss and accuracy, in
    :attr:`history`; they travel in checkpoints, so a resumed run keeps its whole history. A
    member whose loss becomes NaN or infinite is marked failed at the end of that epoch
    (:attr:`failures`, the single run's message) and no longer counts in the returned loss; the
    others go on, and training stops when none is left.

    Args:
        nets: The members (copied into a :class:`StackedMLP`).
        loss: Criterion ``loss(logits, labels) -> scalar`` shared by all members.
        optimizers: One factory per member, ``functools.partial(<torch.optim class>, **settings)``,
            all of the same class.
        num_classes: Number of classes.
        chunk_size: Members per forward chunk (see :class:`StackedMLP`).
        member_ids: Optional names of the members, saved in checkpoints: a checkpoint of
            other members is refused on load.
        member_records: Optional plain-value records of what built each member (class paths
            and arguments), saved in checkpoints for :func:`member_records`.
    """

    HISTORY = (
        "step/loss",  # [steps, M]
        "step/acc",  # [steps, M], percent
        "step/batch_size",  # [steps]
        "epoch/train_loss",  # [epochs, M]
        "epoch/train_acc",  # [epochs, M]
        "epoch/last_step",  # [epochs]: global step index of each epoch's last step
        "val/loss",  # [validations, M]
        "val/acc",  # [validations, M]
        "val/last_step",  # [validations]
    )

    def __init__(
        self,
        nets: Sequence[MLP],
        loss: nn.Module,
        optimizers: Sequence[OptimizerFactory],
        num_classes: int,
        chunk_size: int | None = None,
        member_ids: Sequence[str] | None = None,
        member_records: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if len(optimizers) != len(nets):
            raise ValueError(f"{len(optimizers)} optimizers for {len(nets)} nets: need one each")
        settings = [optimizer_settings(f) for f in optimizers]
        classes = {cls for cls, _ in settings}
        if len(classes) > 1:
            names = sorted(c.__name__ for c in classes)
            raise ValueError(f"members use different optimizers {names}: a stack needs one")
        blocks: list[int] = []
        self.block_settings: list[dict[str, Any]] = []
        for _, kwargs in settings:
            if blocks and _same(self.block_settings[-1], kwargs):
                blocks[-1] += 1
            else:
                blocks.append(1)
                self.block_settings.append(kwargs)
        self.optimizer_class = next(iter(classes))
        self.optimizer_factories = list(optimizers)
        self.net = StackedMLP(nets, blocks, chunk_size)
        self.num_members = len(nets)
        self.num_classes = num_classes
        self.loss_fn = loss
        self.member_loss = stacked_loss(loss)
        self.register_buffer("alive", torch.ones(self.num_members, dtype=torch.bool))
        self.member_ids = None if member_ids is None else [str(i) for i in member_ids]
        self.member_records = None if member_records is None else [dict(r) for r in member_records]
        self.failures: dict[int, str] = {}
        self.failed_step: dict[int, int] = {}
        # Lightning's own fields of the checkpoint last saved or loaded (epoch, loops, ...).
        self.checkpoint_fields: dict[str, Any] = {}
        self.history: dict[str, Tensor] = {
            key: torch.zeros((0,) if key.endswith(("batch_size", "last_step")) else (0, len(nets)))
            for key in self.HISTORY
        }
        self._reset_epoch()
        self._reset_eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def configure_optimizers(self) -> Optimizer:
        groups = [
            {"params": [*block.weights, *block.biases], **kwargs}
            for block, kwargs in zip(self.net.blocks, self.block_settings, strict=True)
        ]
        return self.optimizer_class(groups, **self.block_settings[0])

    # --- training ---------------------------------------------------------------------------

    def _reset_epoch(self) -> None:
        self.epoch_losses: list[Tensor] = []
        self.epoch_hits: list[Tensor] = []
        self.epoch_sizes: list[int] = []

    def on_train_epoch_start(self) -> None:
        self._reset_epoch()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.net(x)
        losses = self.member_loss(logits, y)
        self.epoch_losses.append(losses.detach())
        self.epoch_hits.append((logits.detach().argmax(dim=-1) == y).sum(dim=-1))
        self.epoch_sizes.append(y.shape[1])
        if not self.failures:
            return losses.sum()
        # A failed member's loss (NaN) must not reach the sum: torch.where, not a product.
        return torch.where(self.alive, losses, torch.zeros_like(losses)).sum()

    def on_train_epoch_end(self) -> None:
        if not self.epoch_losses:
            return
        losses = torch.stack(self.epoch_losses).float().cpu()  # [steps, M]
        hits = torch.stack(self.epoch_hits).float().cpu()
        sizes = torch.tensor(self.epoch_sizes, dtype=torch.float32)
        first_step = self.global_step - len(sizes)
        self._mark_diverged(losses, first_step)
        n = sizes.sum()
        epoch_loss = (losses * sizes[:, None]).sum(dim=0) / n
        epoch_acc = 100.0 * hits.sum(dim=0) / n
        self._append("step/loss", losses)
        self._append("step/acc", 100.0 * hits / sizes[:, None])
        self._append("step/batch_size", sizes)
        self._append("epoch/train_loss", epoch_loss[None])
        self._append("epoch/train_acc", epoch_acc[None])
        self._append("epoch/last_step", torch.tensor([float(self.global_step - 1)]))
        alive = self.alive.cpu()
        if alive.any():
            # One number for the progress bar and callbacks: the mean over the members alive.
            self.log("train/loss", epoch_loss[alive].mean(), prog_bar=True)
            self.log("train/acc", epoch_acc[alive].mean())
        else:
            self.trainer.should_stop = True
        self._reset_epoch()

    def _mark_diverged(self, losses: Tensor, first_step: int) -> None:
        bad = ~torch.isfinite(losses) & self.alive.cpu()[None]
        for m in bad.any(dim=0).nonzero().flatten().tolist():
            step = int(bad[:, m].nonzero()[0])
            lr = self.optimizers().param_groups[self.net.block_of[m][0]].get("lr")
            self.failed_step[m] = first_step + step
            self.failures[m] = (
                f"train/loss became {losses[step, m].item()} at step {first_step + step} "
                f"(epoch {self.current_epoch}): training diverged; lower optimizer.lr (now {lr})"
            )
            self.alive[m] = False

    def _append(self, key: str, rows: Tensor) -> None:
        self.history[key] = torch.cat([self.history[key], rows])

    # --- validation and test ----------------------------------------------------------------

    def _reset_eval(self) -> None:
        self.eval_loss_sum = torch.zeros(self.num_members)
        self.eval_hits = torch.zeros(self.num_members)
        self.eval_seen = 0

    def _eval_step(self, batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        logits = self.net(x)
        n = y.shape[1]
        losses = self.member_loss(logits, y).float().cpu()
        hits = (logits.argmax(dim=-1) == y).sum(dim=-1).float().cpu()
        # Lightning's epoch mean of a batch-size-weighted self.log, as the single run logs it.
        self.eval_loss_sum = self.eval_loss_sum + losses * n
        self.eval_hits = self.eval_hits + hits
        self.eval_seen += n

    def eval_metrics(self) -> tuple[Tensor, Tensor]:
        """Loss and accuracy (percent), per member, of the evaluation pass just finished."""
        seen = max(self.eval_seen, 1)
        return self.eval_loss_sum / seen, 100.0 * self.eval_hits / seen

    def on_validation_epoch_start(self) -> None:
        self._reset_eval()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        loss, acc = self.eval_metrics()
        self._append("val/loss", loss[None])
        self._append("val/acc", acc[None])
        self._append("val/last_step", torch.tensor([float(self.global_step - 1)]))
        alive = self.alive.cpu()
        if alive.any():
            self.log("val/loss", loss[alive].mean())
            self.log("val/acc", acc[alive].mean(), prog_bar=True)

    def last_validation(self) -> dict[str, Tensor]:
        """``val/loss`` and ``val/acc`` per member of the last validation; empty without one."""
        if not len(self.history["val/last_step"]):
            return {}
        return {"val/loss": self.history["val/loss"][-1], "val/acc": self.history["val/acc"][-1]}

    def on_test_epoch_start(self) -> None:
        self._reset_eval()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    # --- members ----------------------------------------------------------------------------

    def member_history(self, m: int) -> dict[str, Tensor]:
        """Member ``m``'s column of every :attr:`history` record (1-D tensors)."""
        return {k: v if v.ndim == 1 else v[:, m] for k, v in self.history.items()}

    def member_optimizer_state(self, m: int, net: nn.Module) -> dict[str, Any]:
        """Member ``m``'s optimizer state as a single run's optimizer over ``net`` would save it.

        ``net`` is a standalone MLP (e.g. :meth:`StackedMLP.member`); its optimizer is built
        with the member's own factory, its group settings are the stacked group's (which a
        scheduler may have changed) and its state is the member's slice of the stacked state.
        """
        optimizer = self.optimizer_factories[m](net.parameters())
        stacked = self.optimizers()
        stacked = getattr(stacked, "optimizer", stacked)  # a LightningOptimizer wraps it
        k, j = self.net.block_of[m]
        group = stacked.param_groups[k]
        optimizer.param_groups[0].update({key: v for key, v in group.items() if key != "params"})
        block = self.net.blocks[k]
        # net.parameters() order: Linear_0.weight, Linear_0.bias, Linear_1.weight, ...
        pairs = [p for pair in zip(block.weights, block.biases, strict=True) for p in pair]
        for param, source in zip(net.parameters(), pairs, strict=True):
            state = stacked.state.get(source)
            if not state:
                continue
            member_state = {}
            for key, value in state.items():
                if isinstance(value, Tensor) and value.shape == source.shape:
                    value = value[j]
                member_state[key] = value.clone() if isinstance(value, Tensor) else value
            optimizer.state[param] = member_state
        return optimizer.state_dict()

    # --- checkpoints ------------------------------------------------------------------------

    CHECKPOINT_FIELDS = ("epoch", "global_step", "pytorch-lightning_version", "loops")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain values and tensors only: the checkpoint loads with torch.load(weights_only=True).
        checkpoint["mlplab_stacked"] = {
            "num_members": self.num_members,
            "member_ids": self.member_ids,
            "member_records": self.member_records,
            "failures": {str(m): text for m, text in self.failures.items()},
            "failed_step": {str(m): step for m, step in self.failed_step.items()},
            "history": dict(self.history),
        }
        self.checkpoint_fields = {
            k: checkpoint[k] for k in self.CHECKPOINT_FIELDS if k in checkpoint
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = checkpoint.get("mlplab_stacked")
        if not isinstance(record, dict):
            raise StackMismatchError("it is not a checkpoint of a stack (no mlplab_stacked record)")
        if record.get("num_members") != self.num_members:
            raise StackMismatchError(
                f"it holds {record.get('num_members')} members, this stack {self.num_members}"
            )
        saved = record.get("member_ids")
        if self.member_ids is not None and saved is not None and list(saved) != self.member_ids:
            diff = next(
                i for i, (a, b) in enumerate(zip(saved, self.member_ids, strict=True)) if a != b
            )
            raise StackMismatchError(
                f"it was saved for other members (member {diff}: {saved[diff]} in the file, "
                f"{self.member_ids[diff]} now)"
            )
        self.failures = {int(m): text for m, text in (record.get("failures") or {}).items()}
        self.failed_step = {int(m): int(s) for m, s in (record.get("failed_step") or {}).items()}
        for key, value in (record.get("history") or {}).items():
            if key in self.history:
                self.history[key] = value
        self.checkpoint_fields = {
            k: checkpoint[k] for k in self.CHECKPOINT_FIELDS if k in checkpoint
        }


def member_records(checkpoint: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """What built each member, as a stack's checkpoint records it; None when it records none."""
    record = checkpoint.get("mlplab_stacked")
    records = record.get("member_records") if isinstance(record, Mapping) else None
    return None if records is None else [dict(r) for r in records]


def default_chunk_size(
    batch_size: int, widest: int, device: torch.device | str = "cpu"
) -> int | None:
    """Members per forward chunk: about 1 MiB of activations per chunk on a CPU, None on GPUs.

    On a CPU the batched kernels of a layer are memory-bound; chunks whose [chunk, batch, units]
    activations stay in the cache between kernels ran 25 % faster for 64 tutorial members than
    one batch of all, and smaller chunks pay more Python per step than they save.
    """
    if torch.device(device).type != "cpu":
        return None
    per_member = max(batch_size * max(widest, 1) * 4, 1)
    return max(1, 2 ** int(math.log2(max((1 << 20) // per_member, 1))))
