"""The TimbreCLIP trainer: CLIP-style contrastive learning against a frozen text encoder, multi-positive.

Each batch's text set is the union of its sounds' texts; a sound's positives are all of its texts (title,
instrument, category, source, timbre words, combinations) and a text's positives are all the sounds it describes.
The loss is the two-way multi-positive InfoNCE (SupCon form): for each audio, the mean over its positive texts of
-log softmax over the batch's texts, and the same for each text over the batch's sounds, averaged; the temperature
is learned (CLIP's logit scale, capped at 100).

Model selection and early stopping use validation retrieval only (held-out GM programs of the training fonts):
the selection score is the mean of R@1, R@5 and R@10 over both directions and the title, title + category and
category queries.

Direction loss (``direction_weight`` > 0; what text-steered EQ needs): a steering word must not only match sounds,
its similarity must move the way the word says when an EQ changes the sound. For ``direction_pairs`` clips per
batch, two versions of the clip (flat or a random parametric EQ with the steering EQ's band layout, each) are
embedded; for each direction word (``labels.DIRECTION_WORDS``: "bright" -> spectral centroid up, "warm" -> down,
"bass-heavy" -> energy share below 250 Hz up, ...) whose descriptor changed by more than a small margin, a logistic
loss asks the word's similarity to rank the two versions as the descriptor does:
``softplus(-sign * scale * (sim(z_b, word) - sim(z_a, word)))``. The descriptors are measured on the clip's own
band powers (``RandomEQ.descriptors``). The steering benchmark measures the same descriptors, on notes of fonts the
model never heard, after an EQ the optimiser found. The best checkpoint is kept; ``last/`` holds what resuming
needs (weights, optimiser state, epoch, every rank's numpy and torch RNG states), all in safetensors/JSON.

Distributed: the same code runs under ``torchrun`` with DistributedDataParallel (gloo on CPU, NCCL on GPU); each
rank takes its share of every global batch (negatives are those of its share), rank 0 validates and saves.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from timbreclip.dsp.errors import TimbreclipError
from timbreclip.neural.encoder import AudioEncoderConfig
from timbreclip.neural.frontend import FrontEnd
from timbreclip.neural.model import ModelConfig, TimbreCLIP, resolve_device

from .data import (TEXT_SETS, RandomEQ, augment_batch, random_crop, build_note_set, mel_cache, read_any,
                   select_notes, split_validation)
from .evaluation import QUERY_TYPES, evaluate_embeddings, load_eval_set, timbre_word_accuracy
from .labels import DIRECTION_WORDS, EQ_ARCHETYPES, sample_texts

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class TrainConfig:
    name: str = "scratch-cpu"
    model: str = "cpu"  # ModelConfig preset
    width: int | None = None  # overrides of the preset's audio encoder
    init: str = "random"  # "random", "wav2clip" (needs --init wav2clip FILE) or "model" (--init model DIR)
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 2e-5
    warmup_epochs: float = 2.0
    weight_decay: float = 1e-4
    crop_frames: int | None = 160
    p_eq: float = 0.35
    freq_masks: int = 2
    freq_mask_width: int = 8
    patience: int = 10
    val_programs_per_family: int = 1
    val_synth_share: float = 0.1  # share of synth name groups held out (notes without a GM program)
    texts_per_step: int | None = None  # texts sampled per sound per step (labels.sample_texts); None = all
    seed: int = 0
    direction_weight: float = 0.0  # weight of the direction loss (module docstring); 0 = off
    direction_pairs: int = 32  # clips per batch that get the direction loss
    steps_per_epoch: int | None = None  # cap (quick runs and tests)
    # share of every batch drawn from notes with a GM program (soundfonts) when the data also holds synth patches;
    # None = one shuffled pool. An epoch is then one pass over the GM training notes at that share.
    batch_gm_share: float | None = None
    # A final fit replays a validated run's schedule (``epochs`` long) up to the epoch its validation chose, on data
    # that now includes the GM validation programs (``val_programs_per_family`` 0): it stops after this many epochs
    # and keeps the last one (``keep`` "last": there is no GM validation left to select with).
    stop_after_epochs: int | None = None
    # what the run reads and says: "full" texts (names, timbre words, descriptions) or "plain" (names only); only
    # these sources / GM banks (None = all); the synth's pitch-shift variants or not; a mel-bin shift augmentation
    texts: str = "full"
    sources: list | None = None
    banks: list | None = None
    pitch_variants: bool = True
    mel_roll: int = 0
    keep: str = "best"  # "best": the best validation score's epoch; "last": the last epoch run
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, name_or_path: str) -> "TrainConfig":
        """A shipped config by name (``paper``, ``scratch-cpu``) or a JSON file."""
        path = Path(name_or_path)
        if not path.is_file():
            path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            shipped = ", ".join(p.stem for p in CONFIG_DIR.glob("*.json"))
            raise TimbreclipError(f"{name_or_path}: no such training config (shipped: {shipped})")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise TimbreclipError(f"{path}: malformed JSON ({err.msg})") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TimbreclipError(f"{path}: unknown field(s) {', '.join(unknown)}")
        return cls(**data)


class ContrastiveModule(nn.Module):
    """The trainable parts (audio encoder, text head, temperature), as one module for DDP."""

    def __init__(self, model: TimbreCLIP) -> None:
        super().__init__()
        self.audio = model.audio
        self.head = model.text.head
        self.logit_scale = model.logit_scale

    def forward(self, features: torch.Tensor, frozen_text: torch.Tensor):
        za = self.audio(features)
        zt = F.normalize(self.head(frozen_text), dim=-1)
        return za, zt, self.logit_scale.exp().clamp(max=100.0)


def multi_positive_loss(za: torch.Tensor, zt: torch.Tensor, scale: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Two-way multi-positive InfoNCE. ``positives (B, M)`` bool: text j describes sound i."""
    logits = scale * za @ zt.T
    pos = positives.to(logits.dtype)
    loss_audio = -(logits.log_softmax(dim=1) * pos).sum(1) / pos.sum(1).clamp(min=1)
    loss_text = -(logits.log_softmax(dim=0) * pos).sum(0) / pos.sum(0).clamp(min=1)
    return 0.5 * (loss_audio.mean() + loss_text.mean())


DIRECTION_MIN_CENTS = 10.0  # smaller descriptor changes are not asked about
DIRECTION_MIN_SHARE = 0.002


DIRECTION_TEXTS = [w for w, _, _ in DIRECTION_WORDS]


def direction_signs(before: dict, after: dict, words=DIRECTION_WORDS) -> torch.Tensor:
    """``(clips, words)`` +1 / -1 where the word's descriptor moved its way / the other way from ``before`` to
    ``after`` (``RandomEQ.descriptors`` of two versions of the same clips), 0 where it barely moved."""
    cents = 1200 * torch.log2(after["centroid"] / before["centroid"].clamp(min=1e-9))
    share = after["low_share"] - before["low_share"]
    moved = {"centroid": torch.where(cents.abs() > DIRECTION_MIN_CENTS, cents.sign(), torch.zeros_like(cents)),
             "low_share": torch.where(share.abs() > DIRECTION_MIN_SHARE, share.sign(), torch.zeros_like(share))}
    return torch.stack([sign * moved[kind] for _, kind, sign in words], dim=1).float()


def direction_loss(za: torch.Tensor, zb: torch.Tensor, zt_words: torch.Tensor, signs: torch.Tensor,
                   scale: torch.Tensor) -> torch.Tensor:
    """Logistic ranking loss: each word's similarity must rise from ``za`` to ``zb`` where ``signs`` is +1, fall
    where it is -1 (see module docstring)."""
    delta = (zb - za) @ zt_words.T
    mask = signs != 0
    if not mask.any():
        return delta.sum() * 0.0
    return F.softplus(-signs[mask] * scale * delta[mask]).mean()


def _direction_batch(logmel: torch.Tensor, rng: np.random.Generator, random_eq: RandomEQ, count: int,
                     crop_frames: int | None):
    """Two versions (flat or a random parametric EQ each) of ``count`` clips: features a, b and the word signs."""
    picks = rng.choice(len(logmel), min(count, len(logmel)), replace=False)
    x = random_crop(logmel[torch.from_numpy(picks)], rng, crop_frames)
    gains = random_eq.parametric_log_gain(2 * len(x), rng)
    gains[rng.random(2 * len(x)) < 0.25] = 0.0  # some versions stay flat
    a, b = x + gains[: len(x), :, None], x + gains[len(x):, :, None]
    signs = direction_signs(random_eq.descriptors(a), random_eq.descriptors(b))
    return FrontEnd.standardise(a), FrontEnd.standardise(b), signs


def _lr_at(step: int, total: int, warmup: int, cfg: TrainConfig) -> float:
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def _dist():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    from safetensors.torch import save_file

    state = opt.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for pid, entries in state["state"].items():
        for k, v in entries.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta["scalars"][f"{pid}.{k}"] = v
    save_file(tensors, str(path), metadata={"meta": json.dumps(meta)})


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["meta"])
        state: dict[int, dict] = {}
        for key in f.keys():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = f.get_tensor(key)
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _param_digest(module: nn.Module) -> str:
    """sha256 of the trainable parameters (batch-norm running statistics are per replica between forwards:
    DDP re-broadcasts them from rank 0 at every forward)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


@dataclass
class _Run:
    """Everything one training run sets up before its first epoch (``_set_up``)."""

    cfg: TrainConfig
    rank: int
    world: int
    out: Path
    data_dir: str
    notes: list
    note_set: object
    train_base: list[int]
    val_base: list[int]
    val_groups: dict  # selection group ("GM", "synth") -> positions in val_base; one group = plain score
    model: TimbreCLIP
    trainable: ContrastiveModule
    wrapped: nn.Module
    opt: torch.optim.Optimizer
    random_eq: RandomEQ
    cache: object
    rng: np.random.Generator
    init_provenance: dict
    steps_per_epoch: int
    total_steps: int
    warmup: int
    device: torch.device = torch.device("cpu")
    start_epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    step: int = 0


def _rng_file(last: Path, rank: int) -> Path:
    return last / f"rng-rank{rank}.json"


def _save_rng(run: _Run, last: Path) -> None:
    """Each rank's numpy generator and torch CPU generator, so a resumed run draws what it would have drawn."""
    import base64

    state = {"numpy": run.rng.bit_generator.state,
             "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    tmp = _rng_file(last, run.rank).with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, _rng_file(last, run.rank))


def _load_rng(run: _Run, last: Path, trainer_state: dict) -> None:
    import base64

    path = _rng_file(last, run.rank)
    if path.is_file():
        state = json.loads(path.read_text())
        run.rng.bit_generator.state = state["numpy"]
        torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(state["torch"]), np.uint8).copy()))
    elif run.rank == 0 and "numpy_rng" in trainer_state:  # a checkpoint from before per-rank states were kept
        run.rng.bit_generator.state = trainer_state["numpy_rng"]


def _gm_groups(notes) -> dict[str, list[int]]:
    """Positions of notes with a GM program ("GM") and without ("synth"); only the groups that occur."""
    groups: dict[str, list[int]] = {}
    for k, n in enumerate(notes):
        groups.setdefault("GM" if n.extra.get("program") not in (None, "") else "synth", []).append(k)
    return groups


def _epoch_order(run: "_Run", rng: np.random.Generator) -> np.ndarray:
    """Positions in train_base for one epoch: one shuffled pool, or batches with ``batch_gm_share`` GM notes
    (the GM pool is passed once, synth notes are drawn from a fresh shuffle, wrapping round if the epoch needs more)."""
    cfg = run.cfg
    if cfg.batch_gm_share is None:
        return rng.permutation(len(run.train_base))
    pools = _gm_groups([run.notes[i] for i in run.train_base])
    gm, synth = np.asarray(pools["GM"]), np.asarray(pools["synth"])
    n_gm = max(1, int(round(cfg.batch_size * cfg.batch_gm_share)))
    n_synth = cfg.batch_size - n_gm
    gm_order = gm[rng.permutation(len(gm))]
    synth_order = synth[rng.permutation(len(synth))]
    batches = []
    for b in range(run.steps_per_epoch):
        g = gm_order[np.arange(b * n_gm, (b + 1) * n_gm) % len(gm_order)]
        o = synth_order[np.arange(b * n_synth, (b + 1) * n_synth) % len(synth_order)]  # reshuffled every epoch
        batches.append(np.concatenate([g, o]))
    return np.concatenate(batches)


def _set_up(cfg: TrainConfig, data_dir, out_dir, resume: bool, init_wav2clip, init_model, cache_dir,
            progress: bool, log, device: str | None = "auto") -> _Run:
    """Data, split, model (fresh, Wav2CLIP or a TimbreCLIP start), feature cache, optimiser; resumed state."""
    # the config's own ranges first: a bad one costs no data reading and leaves no output folder
    if cfg.stop_after_epochs is not None and not 1 <= cfg.stop_after_epochs <= cfg.epochs:
        raise TimbreclipError(f"config {cfg.name}: stop_after_epochs must be between 1 and epochs ({cfg.epochs})")
    if cfg.keep not in ("best", "last"):
        raise TimbreclipError(f"config {cfg.name}: keep must be \"best\" or \"last\", not {cfg.keep!r}")
    if cfg.batch_gm_share is not None and not 0.0 < cfg.batch_gm_share < 1.0:
        raise TimbreclipError(f"config {cfg.name}: batch_gm_share must be between 0 and 1 (exclusive)")
    if cfg.texts not in TEXT_SETS:
        raise TimbreclipError(f"config {cfg.name}: texts must be one of {', '.join(TEXT_SETS)}, not {cfg.texts!r}")
    if not 0 <= cfg.mel_roll <= 16:
        raise TimbreclipError(f"config {cfg.name}: mel_roll must be between 0 and 16 bins")
    rank, world = _dist()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, rank])
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TimbreclipError(f"{out_dir}: exists and is not a folder")
    notes = select_notes(read_any(data_dir), cfg.sources, cfg.banks, cfg.pitch_variants)  # bad data: no run folder
    out.mkdir(parents=True, exist_ok=True)

    train_idx, val_idx = split_validation(notes, cfg.seed, cfg.val_programs_per_family, cfg.val_synth_share)
    note_set = build_note_set(notes, cfg.texts)
    train_set, val_set = set(train_idx), set(val_idx)
    train_base = [i for i in note_set.base if i in train_set]
    val_base = [i for i in note_set.base if i in val_set]
    val_groups = _gm_groups([notes[i] for i in val_base])

    model_cfg = ModelConfig.preset(cfg.model)
    if cfg.width:
        model_cfg.audio = AudioEncoderConfig(**{**model_cfg.audio.as_dict(), "width": cfg.width})
    model = TimbreCLIP(model_cfg)
    init_provenance: dict = {}
    if cfg.init == "wav2clip":
        if not init_wav2clip:
            raise TimbreclipError(f"config {cfg.name} fine-tunes Wav2CLIP: pass --init wav2clip FILE")
        model.load_wav2clip(init_wav2clip)
    elif cfg.init == "model":
        if not init_model:
            raise TimbreclipError(f"config {cfg.name} fine-tunes a TimbreCLIP model: pass --init model DIR")
        start = TimbreCLIP.load(init_model, text_encoder=model.text.frozen)

        def architecture(c):
            return {k: v for k, v in c.to_dict().items() if k != "provenance"}

        if architecture(start.config) != architecture(model_cfg):
            raise TimbreclipError(f"{init_model}: its model config differs from the training config's ({cfg.model})")
        trained = start.config.provenance.get("training", {}).get("config", {})
        for key in ("seed", "val_programs_per_family", "val_synth_share"):  # the split depends on these
            final_fit = key == "val_programs_per_family" and cfg.val_programs_per_family == 0  # no GM validation
            if key in trained and trained[key] != getattr(cfg, key) and not final_fit:
                raise TimbreclipError(f"{init_model}: was trained with {key}={trained[key]}, this config has "
                                      f"{getattr(cfg, key)}: its validation notes would include training notes")
        model.load_state_dict(start.state_dict())
        init_provenance = {"init_model": {"path": str(init_model), **start.config.provenance}}
    fe_cfg = model_cfg.frontend
    cache_folder = cache_dir or (out / "cache")
    if rank == 0:  # one process builds the cache; the others open it when it is done
        cache = mel_cache(notes, fe_cfg, cache_folder, progress=progress)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        cache = mel_cache(notes, fe_cfg, cache_folder, progress=False)

    # frozen text embeddings of every text the run can use, computed once
    all_texts = sorted({t for ts in note_set.texts for t in ts} | {w for a in EQ_ARCHETYPES for w in a.words}
                       | {f"{a.words[0]} {n.category}" for a in EQ_ARCHETYPES for n in notes}
                       | set(DIRECTION_TEXTS))
    model.text.encode_frozen(all_texts)
    dev = resolve_device(device)
    model.to(dev)

    trainable = ContrastiveModule(model)
    wrapped: nn.Module = trainable
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(trainable, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.AdamW(trainable.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    if cfg.batch_gm_share is not None:
        pools = _gm_groups([notes[i] for i in train_base])
        if len(pools) < 2:
            raise TimbreclipError(f"config {cfg.name}: batch_gm_share needs both soundfont (GM) and synth notes "
                                  "in the training data")
        steps_per_epoch = max(1, int(len(pools["GM"]) / (cfg.batch_size * cfg.batch_gm_share)))
    else:
        steps_per_epoch = max(1, len(train_base) // cfg.batch_size)
    if cfg.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.steps_per_epoch)
    data_label = "+".join(map(str, data_dir)) if isinstance(data_dir, (list, tuple)) else str(data_dir)
    run = _Run(cfg, rank, world, out, data_label, notes, note_set, train_base, val_base, val_groups, model,
               trainable, wrapped,
               opt, RandomEQ(fe_cfg), cache, rng, init_provenance, steps_per_epoch, steps_per_epoch * cfg.epochs,
               int(cfg.warmup_epochs * steps_per_epoch), dev)
    if resume:
        last = out / "last"
        state_file = last / "trainer_state.json"
        if not state_file.is_file():
            raise TimbreclipError(f"{last}: nothing to resume (no trainer_state.json)")
        loaded = TimbreCLIP.load(last, text_encoder=model.text.frozen)
        model.load_state_dict(loaded.state_dict())
        model.to(dev)
        _load_optimizer(opt, last / "optimizer.safetensors")
        st = json.loads(state_file.read_text())
        run.start_epoch, run.best_score, run.best_epoch, run.step = (st["epoch"] + 1, st["best_score"],
                                                                     st["best_epoch"], st["step"])
        _load_rng(run, last, st)
        log(f"resuming at epoch {run.start_epoch} (best {run.best_score:.3f} at epoch {run.best_epoch})")
    return run


def _train_epoch(run: _Run, epoch: int, progress: bool) -> dict:
    """One pass over the training programs; returns the epoch's loss record."""
    from tqdm import tqdm

    cfg, rng, note_set, notes = run.cfg, run.rng, run.note_set, run.notes
    run.trainable.train()
    # every rank the same order when distributed (each takes its share of every batch)
    order = _epoch_order(run, rng if run.world == 1 else np.random.default_rng([cfg.seed, epoch]))
    losses, dlosses = [], []
    bar = tqdm(range(run.steps_per_epoch), desc=f"epoch {epoch}", leave=False,
               disable=not (progress and run.rank == 0))
    for b in bar:
        window = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        batch_base = [run.train_base[j] for j in window][run.rank::run.world]
        picks = [int(rng.choice(note_set.variants[i])) for i in batch_base]
        logmel = torch.from_numpy(np.asarray(run.cache[sorted(picks)], dtype=np.float32))
        if run.device.type == "cuda":
            logmel = logmel.pin_memory()
        order_back = np.argsort(np.argsort(picks))
        logmel = logmel[torch.from_numpy(order_back)]
        texts = [note_set.texts[i] for i in picks]
        features, texts = augment_batch(logmel, texts, [notes[i].category for i in picks], rng, run.random_eq,
                                        cfg.p_eq, cfg.crop_frames, cfg.freq_masks, cfg.freq_mask_width,
                                        cfg.mel_roll)
        shown = texts
        if cfg.texts_per_step:  # a few texts per sound: title and category weighted up, an EQ's words kept
            shown = []
            for i, ts in zip(picks, texts):
                own = set(note_set.texts[i])
                chosen = sample_texts(ts, notes[i].title, notes[i].category, rng, cfg.texts_per_step)
                eq_words = [t for t in ts if t not in own and t not in chosen]
                shown.append(chosen + eq_words[:1])
        batch_texts = sorted({t for ts in shown for t in ts})
        index = {t: j for j, t in enumerate(batch_texts)}
        positives = torch.zeros(len(texts), len(batch_texts), dtype=torch.bool)
        for i, ts in enumerate(texts):  # every text in the batch that describes the sound is a positive
            positives[i, [index[t] for t in ts if t in index]] = True
        for g in run.opt.param_groups:
            g["lr"] = _lr_at(run.step, run.total_steps, run.warmup, cfg)
        extra_texts, pairs = [], 0
        if cfg.direction_weight > 0:  # one forward for both losses (DDP wants one per backward)
            fa, fb, signs = _direction_batch(logmel, rng, run.random_eq, cfg.direction_pairs, cfg.crop_frames)
            features, extra_texts, pairs = torch.cat([features, fa, fb]), DIRECTION_TEXTS, len(fa)
        dev = run.device
        features = features.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            za, zt, scale = run.wrapped(features, run.model.text.encode_frozen(batch_texts + extra_texts).to(dev))
        za, zt = za.float(), zt.float()
        n, m = len(za) - 2 * pairs, len(batch_texts)
        loss = multi_positive_loss(za[:n], zt[:m], scale, positives.to(dev))
        if pairs:
            dloss = direction_loss(za[n:n + pairs], za[n + pairs:], zt[m:], signs.to(dev), scale.detach())
            loss = loss + cfg.direction_weight * dloss
            dlosses.append(dloss.item())
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.step += 1
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return {"epoch": epoch, "step": run.step, "train_loss": float(np.mean(losses)),
            **({"direction_loss": float(np.mean(dlosses))} if dlosses else {}), "lr": run.opt.param_groups[0]["lr"],
            "temperature": float(1.0 / run.trainable.logit_scale.detach().exp())}


def _selection_score(report: dict) -> float:
    return float(np.mean([report[d][q][f"R@{k}"] for d in report for q in QUERY_TYPES for k in (1, 5, 10)]))


def _validate(run: _Run, val_set, val_features: torch.Tensor, val_words,
              group_sets: dict | None = None) -> tuple[float, dict, dict, dict]:
    """Validation retrieval: the selection score, the report, the timbre-word accuracy and the per-group scores.

    With soundfont and synth notes both in the validation split (``group_sets``: group -> (EvalSet, positions)),
    the selection score is the mean of the two groups' scores, each group retrieving among its own patches, so the
    many synth patches cannot outvote the GM programs (or the reverse)."""
    model = run.model
    model.eval()
    dev = run.device
    with torch.no_grad():
        val_emb = torch.cat([model.audio(val_features[i:i + 256].to(dev)).float().cpu()
                             for i in range(0, len(val_features), 256)]).numpy()

    def encode(ts):
        return model.encode_text(ts).detach().float().cpu().numpy()

    report = evaluate_embeddings(val_set, val_emb, encode)
    groups = {}
    for name, (group_set, positions) in (group_sets or {}).items():
        groups[name] = round(_selection_score(evaluate_embeddings(group_set, val_emb[positions], encode)), 3)
    score = float(np.mean(list(groups.values()))) if groups else _selection_score(report)
    return score, report, timbre_word_accuracy(val_emb, val_words, encode), groups


def _checkpoint(run: _Run, epoch: int, score: float, improved: bool) -> None:
    """``best/`` when the score improved; ``last/`` (weights, optimiser, trainer state) every epoch."""
    if improved:
        run.model.save(run.out / "best", extra_provenance={"training": {
            "config": asdict(run.cfg), "epoch": epoch, "val_score": round(score, 3), "data": run.data_dir,
            **run.init_provenance}})
    last = run.out / "last"
    run.model.save(last)
    _save_optimizer(run.opt, last / "optimizer.safetensors")
    (last / "trainer_state.json").write_text(json.dumps({
        "epoch": epoch, "step": run.step, "best_score": run.best_score, "best_epoch": run.best_epoch}))


def train(cfg: TrainConfig, data_dir, out_dir: str | os.PathLike, resume: bool = False,
          init_wav2clip: str | None = None, init_model: str | None = None, cache_dir: str | os.PathLike | None = None,
          progress: bool = True, log=print, device: str | None = "auto") -> dict:
    """Train on ``data_dir`` (one folder or a list read as one set); writes ``out_dir/best`` (model dir),
    ``out_dir/last`` and ``out_dir/log.jsonl``. ``device``: auto (CUDA where present), cpu or cuda."""
    run = _set_up(cfg, data_dir, out_dir, resume, init_wav2clip, init_model, cache_dir, progress, log, device)
    val_set = load_eval_set(run.data_dir, [run.notes[i] for i in run.val_base])  # same order as val_base
    val_features = FrontEnd.standardise(torch.from_numpy(np.asarray(run.cache[run.val_base], dtype=np.float32)))
    val_words = [run.note_set.words[i] for i in run.val_base]
    group_sets = {}
    if len(run.val_groups) > 1:
        group_sets = {name: (load_eval_set(run.data_dir, [run.notes[run.val_base[k]] for k in positions]),
                             np.asarray(positions)) for name, positions in run.val_groups.items()}
    history = []
    started = time.time()

    def report_line(epoch, score, v, groups, tail=""):
        parts = "  ".join(f"{g} {x:5.2f}" for g, x in groups.items())
        return (f"epoch {epoch:3d}  val score {score:6.2f}{'  (' + parts + ')' if parts else ''}  "
                f"title T→P R@1 {v['text_to_patch']['title']['R@1']:5.1f}  "
                f"cat T→P R@1 {v['text_to_patch']['category']['R@1']:5.1f}  "
                f"A→T title R@1 {v['audio_to_text']['title']['R@1']:5.1f}  "
                f"A→T cat R@1 {v['audio_to_text']['category']['R@1']:5.1f}{tail}")

    if cfg.init == "model" and run.start_epoch == 0 and run.rank == 0:
        # the starting model is the score to beat: best/ holds it until an epoch does better
        score, v, words, groups = _validate(run, val_set, val_features, val_words, group_sets)
        run.best_score, run.best_epoch = score, -1
        run.model.save(run.out / "best", extra_provenance={"training": {
            "config": asdict(cfg), "epoch": -1, "val_score": round(score, 3), "data": run.data_dir,
            "note": "the starting model: no epoch beat it yet", **run.init_provenance}})
        with open(run.out / "log.jsonl", "a") as f:
            f.write(json.dumps({"epoch": -1, "val_score": round(score, 3), "val_groups": groups, "val": v,
                                "val_timbre_words": words}) + "\n")
        log(report_line(-1, score, v, groups, "  (the starting model)"))
    for epoch in range(run.start_epoch, cfg.epochs):
        record = _train_epoch(run, epoch, progress)
        record["elapsed_s"] = round(time.time() - started, 1)
        stop = torch.zeros(1)
        (run.out / "last").mkdir(parents=True, exist_ok=True)
        _save_rng(run, run.out / "last")  # every rank its own generators
        if run.rank == 0:
            score, v, words, groups = _validate(run, val_set, val_features, val_words, group_sets)
            record.update({"val_score": round(score, 3), "val_groups": groups, "val": v, "val_timbre_words": words})
            improved = score > run.best_score or cfg.keep == "last"
            if improved:
                run.best_score, run.best_epoch = score, epoch
            _checkpoint(run, epoch, score, improved)
            with open(run.out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            log(report_line(epoch, score, v, groups, f"  loss {record['train_loss']:.3f}"
                            f"{'  *best*' if improved else ''}  ({record['elapsed_s']:.0f} s)"))
            if epoch - run.best_epoch >= cfg.patience:
                log(f"early stop: no improvement for {cfg.patience} epochs (best epoch {run.best_epoch})")
                stop[0] = 1
            if cfg.stop_after_epochs is not None and epoch + 1 >= cfg.stop_after_epochs:
                log(f"stopped after {cfg.stop_after_epochs} epochs of the {cfg.epochs}-epoch schedule")
                stop[0] = 1
        history.append(record)
        if run.world > 1:
            torch.distributed.all_reduce(stop)
        if stop.item():
            break
    if run.world > 1:
        (run.out / f"replica-{run.rank}.sha256").write_text(_param_digest(run.trainable) + "\n")
        torch.distributed.barrier()
    return {"best_score": run.best_score, "best_epoch": run.best_epoch, "epochs_run": len(history),
            "train_notes": len(run.train_base), "val_notes": len(run.val_base)}
