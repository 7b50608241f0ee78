"""Generator architectures, their presets, forward FLOPs and official checkpoints (torch-free).

`generator.arch` names a GeneratorSpec; `generator.preset` names one of its GeneratorPresets.
Every network is built from spandrel's architecture classes (raygrid.nets.generators); this module
holds only plain records so that config validation, the dry run's GPU-hour estimate and the
weights preflight never import torch. docs/generators.md explains where each number comes from.

Checkpoints: `generator.checkpoint` is None (random init), "official" (the preset's warm start: a
PSNR-oriented x4 model trained on DF2K by the architecture's authors), a key of CHECKPOINTS
(e.g. "hat_full_x4.imagenet_df2k"), or a file path ("file:PATH" or a plain path). Keys resolve to
files in the weights dir by raygrid.weights' rules; nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygrid.spec.backbones import FILE_PREFIX, Normalization, WeightFile

OFFICIAL = "official"  # generator.checkpoint value: the preset's warm start
# Generators take RGB in [0, 1] as is; SwinIR and HAT subtract their own DIV2K mean internally.
GENERATOR_INPUT = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@dataclass(frozen=True)
class GeneratorPreset:
    """One configuration of an architecture."""

    name: str
    label: str  # as papers write it, e.g. "SwinIR-M"
    # spandrel constructor keywords other than the scale; read-only by convention (a plain dict so
    # that records pickle; create_generator passes a copy)
    kwargs: Mapping[str, Any]
    source: str  # the official configuration this reproduces, or why the preset exists
    params_m: float  # parameters in millions at x4 (a test recounts them)
    # forward GFLOPs of one LR image of flops_lr_size² pixels at x4, counted with
    # torch.utils.flop_counter.FlopCounterMode (1 multiply-add = 2 FLOPs); bench/flops.py recounts
    gflops: float
    flops_lr_size: int
    warm_start: str | None = None  # CHECKPOINTS key that generator.checkpoint "official" means


@dataclass(frozen=True)
class GeneratorSpec:
    """One architecture: how raygrid names, builds and loads it."""

    arch: str
    label: str
    spandrel_id: str  # spandrel's architecture id, as its state-dict detection reports it
    implementation: str  # the spandrel class that builds it (documentation)
    scales: tuple[int, ...]
    # state-dict keys (suffixes) that are functions of the configuration, not learned: the model's
    # own values are kept and the file's are ignored (SwinIR's attention mask depends on img_size,
    # the patch size a checkpoint was trained at; relative position indices on the window size)
    derived_buffers: tuple[str, ...]
    default_preset: str
    presets: Mapping[str, GeneratorPreset] = field(default_factory=dict)


@dataclass(frozen=True)
class OfficialCheckpoint:
    """A published checkpoint of one preset: its weights-manifest entry and what it holds."""

    weights: WeightFile  # file name, sha256 (full or the prefix a file name embeds), source
    arch: str
    preset: str
    scale: int
    training: str  # what it was trained for and on
    layout: str  # how the file stores the state dict


def _kwargs(**kw: Any) -> dict[str, Any]:
    return kw


_SWINIR_REPO = "https://github.com/JingyunLiang/SwinIR"
_HAT_DRIVE = ("Google Drive folder linked from https://github.com/XPixelGroup/HAT (README, "
              "'pretrained models')")
_BASICSR_ZOO = ("BasicSR model zoo (Google Drive; https://github.com/XPixelGroup/BasicSR, "
                "scripts/download_pretrained_models.py ESRGAN)")

GENERATORS: dict[str, GeneratorSpec] = {
    g.arch: g
    for g in [
        GeneratorSpec(
            arch="swinir",
            label="SwinIR",
            spandrel_id="SwinIR",
            implementation="spandrel.architectures.SwinIR.SwinIR",
            scales=(2, 3, 4, 8),
            derived_buffers=("attn_mask", "relative_position_index"),
            default_preset="m",
            presets={
                "m": GeneratorPreset(
                    "m", "SwinIR-M",
                    _kwargs(img_size=64, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6,
                            window_size=8, mlp_ratio=2.0, upsampler="pixelshuffle",
                            resi_connection="1conv", img_range=1.0, drop_path_rate=0.1),
                    source=f"{_SWINIR_REPO} main_test_swinir.py define_model, classical_sr, "
                    "DF2K s64w8 (training patch 64, window 8)",
                    params_m=11.900, gflops=107.113, flops_lr_size=64,
                    warm_start="swinir_m_x4.classical_df2k",
                ),
                # 0.55 M params; a training step at 1x3x32x32 is ~0.1 s on 2 CPU cores
                "tiny": GeneratorPreset(
                    "tiny", "SwinIR-tiny",
                    _kwargs(img_size=32, embed_dim=60, depths=(2, 2), num_heads=(6, 6),
                            window_size=8, mlp_ratio=2.0, upsampler="pixelshuffle",
                            resi_connection="1conv", img_range=1.0, drop_path_rate=0.0),
                    source="raygrid CPU test/demo preset (no drop-path: a step is deterministic)",
                    params_m=0.554, gflops=2.139, flops_lr_size=32,
                ),
            },
        ),
        GeneratorSpec(
            arch="rrdbnet",
            label="RRDBNet",
            spandrel_id="ESRGAN",
            implementation="spandrel.architectures.ESRGAN.ESRGAN (RRDBNet; growth channels fixed at 32)",
            scales=(2, 3, 4, 8),
            derived_buffers=(),
            default_preset="full",
            presets={
                "full": GeneratorPreset(
                    "full", "RRDBNet (ESRGAN)",
                    _kwargs(num_filters=64, num_blocks=23),
                    source="https://github.com/xinntao/ESRGAN RRDBNet_arch.py RRDBNet(3, 3, 64, 23, "
                    "gc=32); BasicSR/Real-ESRGAN RRDBNet num_feat 64, num_block 23, num_grow_ch 32",
                    params_m=16.698, gflops=146.857, flops_lr_size=64,
                    warm_start="rrdbnet_full_x4.psnr_df2k",
                ),
                "tiny": GeneratorPreset(
                    "tiny", "RRDBNet-tiny",
                    _kwargs(num_filters=32, num_blocks=2),
                    source="raygrid CPU test/demo preset",
                    params_m=0.869, gflops=2.427, flops_lr_size=32,
                ),
            },
        ),
        GeneratorSpec(
            arch="hat",
            label="HAT",
            spandrel_id="HAT",
            implementation="spandrel.architectures.HAT.HAT",
            scales=(2, 3, 4, 8),
            derived_buffers=("relative_position_index_SA", "relative_position_index_OCA"),
            default_preset="full",
            presets={
                # HAT (the paper's base model, between HAT-S and HAT-L), x4 classical SR
                "full": GeneratorPreset(
                    "full", "HAT",
                    _kwargs(img_size=64, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6,
                            window_size=16, compress_ratio=3, squeeze_factor=30, conv_scale=0.01,
                            overlap_ratio=0.5, mlp_ratio=2.0, upsampler="pixelshuffle",
                            resi_connection="1conv", img_range=1.0, drop_path_rate=0.1),
                    source="https://github.com/XPixelGroup/HAT options/test/HAT_SRx4.yml and "
                    "options/train/train_HAT_SRx4_finetune_from_SRx2.yml (network_g)",
                    params_m=20.773, gflops=207.761, flops_lr_size=64,
                    warm_start="hat_full_x4.df2k",
                ),
                "tiny": GeneratorPreset(
                    "tiny", "HAT-tiny",
                    _kwargs(img_size=32, embed_dim=60, depths=(2, 2), num_heads=(6, 6),
                            window_size=8, compress_ratio=3, squeeze_factor=10, conv_scale=0.01,
                            overlap_ratio=0.5, mlp_ratio=2.0, upsampler="pixelshuffle",
                            resi_connection="1conv", img_range=1.0, drop_path_rate=0.0),
                    source="raygrid CPU test/demo preset (window 8 instead of 16 for speed; squeeze 10 keeps "
                    "HAT's 6 channel-attention channels at embed 60)",
                    params_m=0.707, gflops=2.504, flops_lr_size=32,
                ),
            },
        ),
    ]
}


def _checkpoint(arch: str, preset: str, tag: str, file: str, sha256: str | None, source: str,
                **kw: Any) -> OfficialCheckpoint:
    # keys follow the manifest's "<name>.<tag>" form: "<arch>_<preset>_x4.<tag>"
    entry = WeightFile(f"{arch}_{preset}_x4.{tag}", file=file, sha256=sha256, norm=GENERATOR_INPUT,
                        source=source)
    return OfficialCheckpoint(entry, arch=arch, preset=preset, scale=4, **kw)


CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    c.weights.key: c
    for c in [
        _checkpoint(
            "swinir", "m", "classical_df2k", "001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth",
            "4e78e33f22c1aa8a773db0cf4a7381bae97c2362c717f155439ebc690cbd9215",
            f"{_SWINIR_REPO}/releases/download/v0.0/001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth",
            training="L1 (PSNR-oriented), DF2K, bicubic x4, 64 px LR patches",
            layout="{'params': state dict}",
        ),
        # BasicSR names published files <name>-<first 8 hex digits of their sha256>.pth
        _checkpoint(
            "rrdbnet", "full", "psnr_df2k", "ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth", "150ff491",
            _BASICSR_ZOO,
            training="L1 (PSNR-oriented; ESRGAN's RRDB_PSNR_x4), DF2K, bicubic x4",
            layout="{'params': state dict}, BasicSR key names (conv_first, body.N.rdbM, conv_body, "
            "conv_up1/2, conv_hr, conv_last)",
        ),
        _checkpoint(
            "rrdbnet", "full", "rrdb_psnr", "RRDB_PSNR_x4.pth", None,
            "https://github.com/xinntao/ESRGAN (README: Google Drive / Baidu Drive)",
            training="L1 (PSNR-oriented), DF2K, bicubic x4 (the ESRGAN repository's release)",
            layout="bare state dict, ESRGAN repository key names (conv_first, RRDB_trunk.N.RDBM, "
            "trunk_conv, upconv1/2, HRconv, conv_last)",
        ),
        _checkpoint(
            "rrdbnet", "full", "esrgan", "RRDB_ESRGAN_x4.pth", None,
            "https://github.com/xinntao/ESRGAN (README: Google Drive / Baidu Drive)",
            training="ESRGAN (perceptual + relativistic GAN), fine-tuned from RRDB_PSNR_x4",
            layout="bare state dict, ESRGAN repository key names",
        ),
        _checkpoint(
            "rrdbnet", "full", "esrgan_df2kost", "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth", "ff704c30",
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.1/"
            "ESRGAN_SRx4_DF2KOST_official-ff704c30.pth",
            training="ESRGAN (GAN) converted to BasicSR names, DF2K+OST",
            layout="{'params': state dict}, BasicSR key names",
        ),
        _checkpoint(
            "rrdbnet", "full", "realesrgan_plus", "RealESRGAN_x4plus.pth",
            "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
            training="Real-ESRGAN (GAN, synthetic real-world degradations), DF2K+OST",
            layout="{'params_ema': state dict}, BasicSR key names",
        ),
        _checkpoint(
            # sha256 not recorded: the public mirrors that list one disagree with each other
            "hat", "full", "df2k", "HAT_SRx4.pth", None, _HAT_DRIVE,
            training="L1 (PSNR-oriented), DF2K, bicubic x4, fine-tuned from HAT x2",
            layout="{'params_ema': state dict}",
        ),
        _checkpoint(
            "hat", "full", "imagenet_df2k", "HAT_SRx4_ImageNet-pretrain.pth",
            "4ee053c42461187846dc0e93aa5abd34591c0725a8e044a59000e92ee215e833",
            _HAT_DRIVE + "; mirrored at https://huggingface.co/Acly/hat",
            training="L1 (PSNR-oriented), ImageNet pre-training then DF2K, bicubic x4",
            layout="{'params_ema': state dict}",
        ),
    ]
}

# The WeightFile records for raygrid.weights.MANIFEST.
GENERATOR_WEIGHTS: dict[str, WeightFile] = {k: c.weights for k, c in CHECKPOINTS.items()}


# ---------------------------------------------------------------------------------------------
# Lookups (every bad name is one line listing the known ones)
# ---------------------------------------------------------------------------------------------


def get_generator(arch: str) -> GeneratorSpec:
    if arch not in GENERATORS:
        raise ValueError(f"unknown generator.arch {arch!r}; expected one of {', '.join(GENERATORS)}")
    return GENERATORS[arch]


def get_preset(arch: str, preset: str | None = None) -> GeneratorPreset:
    """The preset of arch (None: the architecture's default preset)."""
    spec = get_generator(arch)
    name = spec.default_preset if preset is None else preset
    if name not in spec.presets:
        raise ValueError(
            f"unknown generator.preset {name!r} for arch {arch!r}; expected one of {', '.join(spec.presets)}"
        )
    return spec.presets[name]


def check_scale(arch: str, scale: int) -> None:
    spec = get_generator(arch)
    if scale not in spec.scales:
        raise ValueError(f"generator.scale {scale} is not supported by {spec.label}; expected one of {spec.scales}")


def checkpoints_for(arch: str, preset: str | None = None, scale: int = 4) -> list[str]:
    """CHECKPOINTS keys whose files fit this architecture, preset and scale."""
    p = get_preset(arch, preset)
    return [k for k, c in CHECKPOINTS.items() if (c.arch, c.preset, c.scale) == (arch, p.name, scale)]


def checkpoint_entry(arch: str, preset: str | None, checkpoint: str, scale: int = 4) -> WeightFile | None:
    """The manifest entry a checkpoint name means for this generator; None for a file path."""
    p = get_preset(arch, preset)
    fits = checkpoints_for(arch, p.name, scale)
    if checkpoint == OFFICIAL:
        if p.warm_start is None or p.warm_start not in fits:
            raise ValueError(
                f"generator.checkpoint 'official': {arch}/{p.name} x{scale} has no official warm start "
                f"(give a file path{' or one of ' + ', '.join(fits) if fits else ''})"
            )
        return CHECKPOINTS[p.warm_start].weights
    if checkpoint in CHECKPOINTS:
        if checkpoint not in fits:
            c = CHECKPOINTS[checkpoint]
            raise ValueError(
                f"generator.checkpoint {checkpoint!r} is a {c.arch}/{c.preset} x{c.scale} file; "
                f"{arch}/{p.name} x{scale} takes one of {fits or 'no official checkpoint'}, 'official', or a file path"
            )
        return CHECKPOINTS[checkpoint].weights
    return None


def resolve_checkpoint(
    arch: str,
    preset: str | None,
    checkpoint: str,
    weights_dir: str | os.PathLike | None = None,
    scale: int = 4,
    verify: bool = True,
) -> Path:
    """generator.checkpoint -> an existing local file (hash-checked when verify and known).

    The preflight calls it with verify=False: names and files are checked, nothing is hashed and
    no torch is imported.
    """
    entry = checkpoint_entry(arch, preset, checkpoint, scale)
    if entry is None:
        path = Path(checkpoint.removeprefix(FILE_PREFIX)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"generator.checkpoint {str(path)!r} does not exist (expected a file path, 'file:PATH', "
                f"'official' or one of {checkpoints_for(arch, preset, scale)})"
            )
        return path
    from raygrid.weights import find_file, verify_file  # weights lists these records: import late

    path = find_file(entry, weights_dir)
    if verify:
        verify_file(entry, path)
    return path


# ---------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------


def flop_key(arch: str, preset: str | None = None) -> str:
    """The generator's name in the FLOP table, e.g. "hat_full" (today's "swinir_m" included)."""
    return f"{arch}_{get_preset(arch, preset).name}"


def flop_table() -> dict[str, tuple[float, int]]:
    """{flop_key: (GFLOPs per forward of one LR image, LR pixels)} in raygrid.costs' format."""
    return {
        f"{arch}_{name}": (p.gflops, p.flops_lr_size**2)
        for arch, spec in GENERATORS.items()
        for name, p in spec.presets.items()
    }


def forward_gflops(arch: str, preset: str | None, lr_pixels: int) -> float:
    """Forward GFLOPs of one LR image of lr_pixels pixels. Convolutions and fixed-size attention
    windows make the count linear in the pixel count (inputs are padded to a multiple of the
    window, so sizes that are not multiples count slightly low)."""
    p = get_preset(arch, preset)
    return p.gflops * lr_pixels / p.flops_lr_size**2
